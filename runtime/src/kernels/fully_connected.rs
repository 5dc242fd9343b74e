//! Fully connected, int8 (TFLite's `reference_integer_ops::FullyConnected`, per
//! output channel).

use super::{
    accumulate_offset, channels_offset, channels_prepacked, dot, offset_into, pack_input,
    small_offset, ChannelQuant, OutputStage, OFFSET_CAP, PACKED, PACK_SCRATCH, QUANT_BLOCK,
};
use crate::error::Error;
use crate::format::OpSet;

/// Ops with at most this many weights skip the offset buffer (see [`fully_connected`]).
const SMALL_FC: usize = 512;

/// Sizes of a fully connected op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FcShape {
    /// Rows (product of the leading dimensions).
    pub batch: usize,
    /// Inputs per row (last input dimension).
    pub in_features: usize,
    /// Outputs per row (last output dimension).
    pub out_features: usize,
}

impl FcShape {
    /// Whether `input`/`output` lengths agree with this shape and no size is 0 (the
    /// checks every fully connected kernel starts with).
    pub(crate) fn fits(&self, input_len: usize, output_len: usize) -> bool {
        self.batch > 0
            && self.in_features > 0
            && self.out_features > 0
            && self.batch.checked_mul(self.in_features) == Some(input_len)
            && self.batch.checked_mul(self.out_features) == Some(output_len)
    }
}

/// `output[b, o] = stage(Σ_i (input[b, i] + input_offset) · weights[o, i])`.
///
/// The path is [`DenseFcKernel::of`]'s choice, every path linked; a `Model` links only
/// its op set's ([`fully_connected_by`]).
pub fn fully_connected(
    shape: &FcShape,
    input_offset: i32,
    stage: &OutputStage<'_>,
    weights: &[i8],
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    fully_connected_by::<DENSE_FC_KERNELS>(shape, input_offset, stage, weights, input, output)
}

kernel_family! {
    /// The path a dense fully connected op runs, chosen per op from its shape and input
    /// offset, so that a [`crate::Model`]'s op set can leave the others out (bits 32 to
    /// 34).
    pub enum DenseFcKernel, DENSE_FC_KERNELS, bits from 32;
    {
        /// Each row offset once into a buffer of at most 512 inputs (`OFFSET_CAP`), then
        /// four outputs per pass: more than 512 weights (`SMALL_FC`).
        Buffered,
        /// Rows longer than the buffer (ad01's 640 inputs), summed in pieces of it where
        /// `SMLAD` packs them; the plain loop elsewhere.
        Pieces,
        /// One dot product per output: tiny ops (sine's), offsets beyond ±256.
        Plain,
    }
}

impl DenseFcKernel {
    /// The path for a fully connected op of `shape` with `input_offset`.
    pub fn of(shape: &FcShape, input_offset: i32) -> Self {
        let weights = shape.in_features.saturating_mul(shape.out_features);
        match small_offset(input_offset) {
            Some(_) if shape.in_features <= OFFSET_CAP && weights > SMALL_FC => Self::Buffered,
            Some(_) if shape.in_features > OFFSET_CAP => Self::Pieces,
            _ => Self::Plain,
        }
    }
}

/// [`fully_connected`] with the path [`DenseFcKernel::of`] chooses, referencing only
/// the paths op set `SET` links; another is `KernelArgs` on every target (the loader
/// has refused such a model).
pub fn fully_connected_by<const SET: OpSet>(
    shape: &FcShape,
    input_offset: i32,
    stage: &OutputStage<'_>,
    weights: &[i8],
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    stage.check()?;
    let FcShape {
        batch,
        in_features,
        out_features,
    } = *shape;
    let ok = batch > 0
        && in_features > 0
        && out_features > 0
        && batch.checked_mul(in_features) == Some(input.len())
        && batch.checked_mul(out_features) == Some(output.len())
        && out_features.checked_mul(in_features) == Some(weights.len())
        && stage.channels == out_features;
    if !ok {
        return Err(Error::KernelArgs);
    }
    // Refused on every target alike, the host's AVX2 kernels included.
    let kernel = DenseFcKernel::of(shape, input_offset);
    if !kernel.is_in(SET) {
        return Err(Error::KernelArgs);
    }
    // x86_64 hosts: the AVX2 kernels (same results), unless the CPU lacks AVX2.
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if let Some(offset) = small_offset(input_offset) {
        // (No closure here: it would stay out of line, a call per op on tiny models.)
        if let Some(done) =
            super::x86::fully_connected(shape, offset, stage, weights, input, output)
        {
            return done;
        }
    }
    // Tiny ops (sine: 16, 256 and 16 weights) take the plain loop below: the buffered
    // path zeroes 2 KiB of stack per call, more than such an op's products cost.
    // Each path's set test is a constant: a path the set leaves out is not referenced.
    use DenseFcKernel::{Buffered, Pieces, Plain};
    let buffered = Buffered.is_in(SET) && kernel == Buffered;
    if let Some(offset) = small_offset(input_offset).filter(|_| buffered) {
        // Offset each row once into an `i16` buffer, then four outputs per pass.
        let mut buf = [0i16; OFFSET_CAP];
        let mut scratch = PACK_SCRATCH;
        let x = buf.get_mut(..in_features).ok_or(Error::KernelArgs)?;
        for (row, out_row) in input
            .chunks_exact(in_features)
            .zip(output.chunks_exact_mut(out_features))
        {
            offset_into(x, row, offset);
            // Packed once per row for all its blocks of channels, where `PACKED`.
            if PACKED {
                pack_input(x, &mut scratch)?;
            }
            let mut quants = [ChannelQuant::default(); QUANT_BLOCK];
            // Each block's length is a visible `min(.., QUANT_BLOCK)`, a bound LLVM
            // carries into `channels_offset` (slicing `out_row` to
            // `out_features.min(c0 + QUANT_BLOCK)` lost it: ~6,000 more instructions per
            // LeNet-5 inference on the M4), with no division (a library call on the M0);
            // the former zip with `out_row.chunks_mut` went out of line once the plain
            // path below served small ops too (+180).
            for (block, w_block) in weights.chunks(QUANT_BLOCK * in_features).enumerate() {
                let c0 = block * QUANT_BLOCK;
                let n = out_features.saturating_sub(c0).min(QUANT_BLOCK);
                let q = quants.get_mut(..n).ok_or(Error::KernelArgs)?;
                let out_block = out_row.get_mut(c0..c0 + q.len()).ok_or(Error::KernelArgs)?;
                stage.channels_into(c0, q);
                if PACKED {
                    channels_prepacked(x, &scratch, w_block, stage, q, out_block)?;
                } else {
                    channels_offset(x, &mut scratch, w_block, stage, q, out_block)?;
                }
            }
        }
        return Ok(());
    }
    // Rows longer than the offset buffer (ad01's 640 inputs), where `PACKED`: the same,
    // in pieces of `OFFSET_CAP` inputs, with one block of channels' partial sums on the
    // stack. (Without SMLAD the plain loop below is kept: not measured against it.)
    let pieces = PACKED && Pieces.is_in(SET) && kernel == Pieces;
    if let Some(offset) = small_offset(input_offset).filter(|_| pieces) {
        let mut buf = [0i16; OFFSET_CAP];
        let mut scratch = PACK_SCRATCH;
        for (row, out_row) in input
            .chunks_exact(in_features)
            .zip(output.chunks_exact_mut(out_features))
        {
            for (block, w_block) in weights.chunks(QUANT_BLOCK * in_features).enumerate() {
                let c0 = block * QUANT_BLOCK;
                let n = out_features.saturating_sub(c0).min(QUANT_BLOCK);
                let mut sums = [0i32; QUANT_BLOCK];
                let sums = sums.get_mut(..n).ok_or(Error::KernelArgs)?;
                for (p, piece) in row.chunks(OFFSET_CAP).enumerate() {
                    let x = buf.get_mut(..piece.len()).ok_or(Error::KernelArgs)?;
                    offset_into(x, piece, offset);
                    accumulate_offset(x, &mut scratch, w_block, in_features, p * OFFSET_CAP, sums)?;
                }
                let out_block = out_row.get_mut(c0..c0 + n).ok_or(Error::KernelArgs)?;
                for ((y, &acc), c) in out_block.iter_mut().zip(sums.iter()).zip(c0..) {
                    *y = stage.apply(acc, c);
                }
            }
        }
        return Ok(());
    }
    // Without SMLAD the plain loop runs the pieces' ops too.
    if !(Plain.is_in(SET) || (!PACKED && Pieces.is_in(SET))) {
        return Err(Error::KernelArgs);
    }
    for (row, out_row) in input
        .chunks_exact(in_features)
        .zip(output.chunks_exact_mut(out_features))
    {
        for ((o, out), w) in out_row
            .iter_mut()
            .enumerate()
            .zip(weights.chunks_exact(in_features))
        {
            *out = stage.apply(dot(row, w, input_offset), o);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference;
    use crate::kernels::test_support::{host_fast_path, single_rounding_requant, xorshift};
    use std::vec::Vec;

    /// A random fully connected op over two rows: inputs, weights and single-rounding
    /// requantization (multipliers below `2^(32 − drop)`), no bias.
    struct Case {
        shape: FcShape,
        input: Vec<i8>,
        weights: Vec<i8>,
        requant: Vec<u8>,
    }

    impl Case {
        fn random(
            next: &mut impl FnMut() -> u64,
            in_features: usize,
            out_features: usize,
            drop: u32,
        ) -> Self {
            let shape = FcShape {
                batch: 2,
                in_features,
                out_features,
            };
            let input = (0..2 * in_features).map(|_| next() as i8).collect();
            let weights = (0..in_features * out_features)
                .map(|_| next() as i8)
                .collect();
            let requant = single_rounding_requant(next, out_features, drop);
            Case {
                shape,
                input,
                weights,
                requant,
            }
        }

        fn stage(&self, output_offset: i32) -> OutputStage<'_> {
            OutputStage {
                bias: None,
                requant: &self.requant,
                channels: self.shape.out_features,
                output_offset,
                act_min: -128,
                act_max: 127,
            }
        }
    }

    /// Each path is chosen from the shape and offset alone; a set naming one path runs
    /// the ops that choose it bit-exact and refuses the others, with the host's AVX2
    /// kernels and without.
    #[test]
    fn a_set_runs_only_its_paths() {
        use DenseFcKernel::{Buffered, Pieces, Plain};
        let mut next = xorshift(0x5851_f42d_4c95_7f2du64);
        for (in_features, out_features, offset, path) in [
            (100usize, 37usize, 11, Buffered),
            (640, 21, 11, Pieces),
            (16, 16, 11, Plain),
            (100, 37, 300, Plain),
        ] {
            let case = Case::random(&mut next, in_features, out_features, 12);
            let (shape, input, weights) = (&case.shape, &case.input, &case.weights);
            assert_eq!(DenseFcKernel::of(shape, offset), path, "{shape:?}");
            let stage = case.stage(-1);
            let mut want = std::vec![1i8; 2 * out_features];
            reference::fully_connected(shape, offset, &stage, weights, input, &mut want);
            let runs = [
                fully_connected_by::<{ Buffered.bit() }>,
                fully_connected_by::<{ Pieces.bit() }>,
                fully_connected_by::<{ Plain.bit() }>,
                fully_connected_by::<0>,
            ];
            for (avx2, (only, run)) in [true, false].into_iter().flat_map(|avx2| {
                let paths = [Some(Buffered), Some(Pieces), Some(Plain), None];
                paths.into_iter().zip(runs).map(move |r| (avx2, r))
            }) {
                host_fast_path(avx2);
                let mut got = std::vec![0i8; 2 * out_features];
                let ran = run(shape, offset, &stage, weights, input, &mut got);
                match only.is_none_or(|p| p == path) {
                    true => assert_eq!((ran, &got), (Ok(()), &want), "{path:?}, {avx2}"),
                    false => assert_eq!(ran, Err(Error::KernelArgs), "{path:?} in {only:?}"),
                }
            }
            host_fast_path(true);
        }
    }

    /// Rows longer than the offset buffer, summed in pieces, and a row packed once for
    /// three blocks of channels (the packed path is on in unit tests), against the
    /// reference; the AVX2 path off so the portable one runs.
    #[test]
    fn packed_rows_match_reference() {
        host_fast_path(false);
        let mut next = xorshift(0x0f1e_2d3c_4b5a_6978u64);
        for (in_features, out_features) in [(640usize, 21usize), (1027, 5), (513, 16), (100, 37)] {
            let case = Case::random(&mut next, in_features, out_features, 14);
            let (shape, input, weights) = (&case.shape, &case.input, &case.weights);
            let stage = case.stage(2);
            let mut fast = std::vec![0i8; 2 * out_features];
            let mut slow = std::vec![1i8; 2 * out_features];
            fully_connected(shape, 11, &stage, weights, input, &mut fast).unwrap();
            reference::fully_connected(shape, 11, &stage, weights, input, &mut slow);
            assert_eq!(fast, slow, "{shape:?}");
            assert!(fast.iter().any(|&v| v != fast[0]), "degenerate output");
        }
        host_fast_path(true);
    }
}
