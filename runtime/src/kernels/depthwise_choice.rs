//! The choice between a dense depthwise conv's kernels, the same on every target: the
//! lane kernel (Armv7E-M, `depthwise_lanes`) where its tables fit the op, else the
//! block kernel ([`super::depthwise`]). A module of its own, so that the two kernels
//! read it instead of each other.

use super::ConvGeometry;

/// Taps of the largest window the lane kernel takes (3×3, the MLPerf Tiny models'
/// depthwise kernel); larger ones go to the block kernel, which needs no per-tap table.
pub(crate) const LANE_TAPS_CAP: usize = 9;

/// Channels per pass of the lane kernel, one `SXTB16` pair's worth.
pub(crate) const LANES: usize = 4;

kernel_family! {
    /// The kernel a dense depthwise conv runs, chosen per op from its geometry, depth
    /// multiplier and input offset (none changes when a band of rows is streamed), so
    /// that a [`crate::Model`]'s op set can leave the other out (bits 30 and 31). The
    /// choice is the same on every target; where there is no lane kernel, the block
    /// kernel runs both.
    pub enum DepthwiseKernel, DEPTHWISE_KERNELS, bits from 30;
    {
        /// Four channels per pass in 16-bit lanes: depth multiplier 1, at most nine taps
        /// (`LANE_TAPS_CAP`), channels in whole groups of four (every MLPerf Tiny
        /// depthwise conv), an offset whose negation fits a byte.
        Lanes,
        /// Blocks of channels accumulated on the stack: everything else.
        Blocks,
    }
}

impl DepthwiseKernel {
    /// The kernel for a depthwise conv with geometry `g`, `depth_multiplier` and
    /// `input_offset`.
    pub fn of(g: &ConvGeometry, depth_multiplier: usize, input_offset: i32) -> Self {
        let pad_byte = input_offset
            .checked_neg()
            .is_some_and(|p| i8::try_from(p).is_ok());
        let whole_groups = g.out_c.is_multiple_of(LANES) && g.out_c > 0;
        match depth_multiplier == 1
            && g.kernel_h.saturating_mul(g.kernel_w) <= LANE_TAPS_CAP
            && whole_groups
            && g.in_c == g.out_c
            && pad_byte
        {
            true => Self::Lanes,
            false => Self::Blocks,
        }
    }
}
