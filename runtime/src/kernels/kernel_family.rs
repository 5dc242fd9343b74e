//! `kernel_family!`: the kernels an op kind chooses among, as an enum with op-set bits.
//!
//! Each family (a fused sparse conv + pool's kernels, a dense conv's paths, ...) is a
//! `#[repr(u32)]` enum whose variants take consecutive op-set bits from `first`; a set
//! naming none of a family's bits links all of them. The macro writes the enum, the
//! family's mask and `ALL` / `index` / `bit` / `is_in`; the family's module writes its `of`,
//! the choice itself.

/// `kernel_family! { /// docs  pub enum Name, MASK, first bit; { /// docs  A, B, } }`
macro_rules! kernel_family {
    (
        $(#[$doc:meta])*
        pub enum $name:ident, $mask:ident, bits from $first:literal;
        { $($(#[$variant_doc:meta])* $variant:ident,)+ }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[cfg_attr(feature = "defmt", derive(defmt::Format))]
        #[repr(u32)]
        pub enum $name {
            $($(#[$variant_doc])* $variant,)+
        }

        #[doc = concat!(
            "The op-set bits of every [`", stringify!($name), "`], from bit ",
            stringify!($first), ". A set with none of them links all of them (the ",
            "default, and every set written before they existed)."
        )]
        pub const $mask: $crate::format::OpSet = ((1 << $name::ALL.len()) - 1) << $first;

        impl $name {
            /// Every one, in bit order.
            pub const ALL: [$name; [$($name::$variant),+].len()] = [$($name::$variant),+];

            #[doc = concat!("The number of its bit in an op set: ", stringify!($first), " + its place.")]
            pub const fn index(self) -> u32 {
                $first + self as u32
            }

            /// Its bit in an op set.
            pub const fn bit(self) -> $crate::format::OpSet {
                1 << self.index()
            }

            /// Whether op set `set` links it: the set names it, or none of its family.
            pub const fn is_in(self, set: $crate::format::OpSet) -> bool {
                set & $mask == 0 || $crate::format::tags::holds(set, self.index())
            }
        }
    };
}
