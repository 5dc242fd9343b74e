//! A validated model, borrowed from its blob, and running it in a caller's arena.

use crate::arena;
use crate::error::{sat_u32, Error};
use crate::format::{self, GraphHeader, Header, Op, Tensor};

mod exec;
pub(crate) mod fused_strips;
mod kernel_choice;
pub(crate) mod lifetimes;
mod op_set;
mod ops;
mod stream;
mod validate;
#[cfg(feature = "std")]
pub(crate) use stream::band_window;
#[cfg(feature = "std")]
pub(crate) use validate::check_stream;
#[cfg(feature = "std")]
mod weights;

pub use kernel_choice::{
    kernel_set, kernels_in, DenseConvKernel, DenseFcKernel, DepthwiseKernel, FusedSparseKernel,
    Kernel, KERNEL_CHOICES,
};
pub use op_set::{
    encoding_set, encodings_in, kind_set, kinds_in, op_set, used_by, OpKind, OpSet, ALL_OPS,
};
pub use ops::Ops;
pub(crate) use stream::stream_rows_stay_ahead;
pub use stream::STREAM_CHAIN_CAP;
#[cfg(feature = "std")]
pub use weights::LayerWeights;

// The format's u32 sizes and offsets must fit usize.
const _: () = assert!(usize::BITS >= 32);

/// Default op capacity of [`Model`].
pub const DEFAULT_MAX_OPS: usize = 64;
/// Default tensor capacity of [`Model`].
pub const DEFAULT_MAX_TENSORS: usize = 64;

/// Scale and zero point of a tensor: `real = scale · (q − zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Quant {
    /// Scale (finite, > 0).
    pub scale: f32,
    /// Zero point (`-128..=127`).
    pub zero_point: i32,
}

/// A packed model, validated, with its weights borrowed from the blob (zero-copy).
///
/// The tensor table lives in a `heapless` vector of capacity `MAX_TENSORS`; the ops
/// stay in the blob, the model keeping where each starts (4 bytes an op, in a vector
/// of capacity `MAX_OPS`) and decoding an op when it runs ([`Ops`]). A blob with more
/// is refused with [`Error::TooManyOps`] or [`Error::TooManyTensors`]. Pick smaller
/// capacities to save RAM on small chips: `Model::<8, 16>::parse(blob)`.
///
/// `OPS` is the set of op kinds (and weight encodings, fused sparse kernels) this type
/// can run ([`op_set`], default [`ALL_OPS`]): only their kernels are linked, and a blob
/// with another op is refused with [`Error::OpNotInSet`]. Name exactly a model's ops to
/// save flash on small chips:
/// `Model::<8, 12, { op_set(&[OpKind::Conv2d, OpKind::FullyConnected]) }>::parse(blob)`
/// ([`Model::op_set_used`] gives the smallest set for a model).
#[derive(Debug, Clone)]
pub struct Model<
    'a,
    const MAX_OPS: usize = DEFAULT_MAX_OPS,
    const MAX_TENSORS: usize = DEFAULT_MAX_TENSORS,
    const OPS: OpSet = ALL_OPS,
> {
    header: Header,
    graph: GraphHeader,
    tensors: heapless::Vec<Tensor, MAX_TENSORS>,
    /// Where each op's encoding starts in `blob`.
    op_starts: heapless::Vec<u32, MAX_OPS>,
    blob: &'a [u8],
    data: &'a [u8],
    /// Small fully connected ops prepared for the host's AVX2 kernels (host memory;
    /// firmware builds have no such field).
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    plan: crate::kernels::x86::Plan,
}

impl<'a> Model<'a> {
    /// Parse and validate `blob` with the default capacities.
    ///
    /// The header (length, magic, version, flags, payload length, CRC) is checked
    /// before any of the graph is decoded; then the whole graph is validated. After
    /// `Ok`, [`Model::run`] cannot read or write out of bounds or panic, whatever the
    /// input.
    pub fn from_bytes(blob: &'a [u8]) -> Result<Self, Error> {
        Self::parse(blob)
    }
}

impl<'a, const MAX_OPS: usize, const MAX_TENSORS: usize, const OPS: OpSet>
    Model<'a, MAX_OPS, MAX_TENSORS, OPS>
{
    /// [`Model::from_bytes`] with explicit capacities and op set.
    // Not inlined into the caller: one copy, and the caller's frame does not carry the
    // loader's locals (measured: 164 bytes less flash and 288 bytes less peak stack in
    // the firmware, with `run_in_arena` below).
    #[inline(never)]
    pub fn parse(blob: &'a [u8]) -> Result<Self, Error> {
        // The tables are decoded straight into the model's own vectors: built
        // elsewhere and moved in, they took a second copy of the model on the stack.
        // The ops are decoded whole only here, for validation, and dropped after.
        let mut ops: heapless::Vec<Op, MAX_OPS> = heapless::Vec::new();
        let mut model = Model {
            header: Header {
                major: 0,
                minor: 0,
                flags: 0,
                payload_len: 0,
                crc32: 0,
            },
            graph: GraphHeader::default(),
            tensors: heapless::Vec::new(),
            op_starts: heapless::Vec::new(),
            blob,
            data: &[],
            #[cfg(all(feature = "std", target_arch = "x86_64"))]
            plan: crate::kernels::x86::Plan::default(),
        };
        let decoded =
            format::read::parse(blob, &mut model.tensors, &mut ops, &mut model.op_starts)?;
        (model.header, model.graph, model.data) = (decoded.header, decoded.graph, decoded.data);
        validate::validate::<MAX_TENSORS, OPS>(&model.graph, &model.tensors, &ops, model.data)?;
        // A set naming some chosen kernels links only those (a constant test).
        if OPS & KERNEL_CHOICES != 0 {
            model.check_kernels(&ops)?;
        }
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        {
            let plan = crate::kernels::x86::Plan::new(ops.len(), |i| {
                ops.get(i).and_then(|op| model.fc_parts(op))
            });
            model.plan = plan;
        }
        Ok(model)
    }

    /// Bytes of arena [`Model::run`] needs.
    pub fn arena_size(&self) -> usize {
        self.graph.arena_size as usize
    }

    /// The header (version, flags).
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The graph's fixed fields.
    pub fn graph(&self) -> &GraphHeader {
        &self.graph
    }

    /// The tensor table.
    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }

    /// The ops, in execution order, each decoded from the blob as it comes.
    pub fn ops(&self) -> Ops<'_> {
        Ops::new(self.blob, &self.op_starts)
    }

    /// Op `index` (in execution order), decoded from the blob.
    pub fn op(&self, index: usize) -> Option<Op> {
        self.ops().nth(index)
    }

    /// The data section (weights, biases, requantization), borrowed from the blob.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    fn input_tensor(&self) -> &Tensor {
        // Validated: the index is in range and the table non-empty.
        self.tensors
            .get(self.graph.input as usize)
            .unwrap_or(&EMPTY)
    }

    fn output_tensor(&self) -> &Tensor {
        self.tensors
            .get(self.graph.output as usize)
            .unwrap_or(&EMPTY)
    }

    /// Shape of the input tensor (NHWC for images).
    pub fn input_shape(&self) -> &[u32] {
        &self.input_tensor().shape
    }

    /// Shape of the output tensor.
    pub fn output_shape(&self) -> &[u32] {
        &self.output_tensor().shape
    }

    /// Number of int8 input elements.
    pub fn input_len(&self) -> usize {
        tensor_len(self.input_tensor())
    }

    /// Number of int8 output elements.
    pub fn output_len(&self) -> usize {
        tensor_len(self.output_tensor())
    }

    /// Quantization of the input: quantize a real `x` as
    /// `round(x / scale) + zero_point`, clamped to int8.
    pub fn input_quant(&self) -> Quant {
        let t = self.input_tensor();
        Quant {
            scale: t.scale,
            zero_point: t.zero_point,
        }
    }

    /// Quantization of the output.
    pub fn output_quant(&self) -> Quant {
        let t = self.output_tensor();
        Quant {
            scale: t.scale,
            zero_point: t.zero_point,
        }
    }

    /// Run the model: copy `input` into the arena, run every op, copy the output
    /// tensor into `output`.
    ///
    /// Errors (before anything is written): [`Error::ArenaTooSmall`] if
    /// `arena.len() < arena_size()`, [`Error::InputSizeMismatch`] /
    /// [`Error::OutputSizeMismatch`] if the slices have the wrong length.
    pub fn run(&self, arena: &mut [u8], input: &[i8], output: &mut [i8]) -> Result<(), Error> {
        let expected = self.output_len();
        if output.len() != expected {
            return Err(Error::OutputSizeMismatch {
                expected: sat_u32(expected),
                got: sat_u32(output.len()),
            });
        }
        let result = self.run_in_arena(arena, input)?;
        for (dst, src) in output.iter_mut().zip(result) {
            *dst = *src;
        }
        Ok(())
    }

    /// Run the model and return the output tensor where it lies in the arena (no copy).
    // Not inlined: see `parse`.
    #[inline(never)]
    pub fn run_in_arena<'r>(&self, arena: &'r mut [u8], input: &[i8]) -> Result<&'r [i8], Error> {
        self.load_input(arena, input)?;
        #[cfg(not(all(feature = "std", target_arch = "x86_64")))]
        for index in 0..self.op_starts.len() {
            let op = self.op(index).ok_or(Error::KernelArgs)?;
            self.exec(&op, arena)?;
        }
        // x86_64 hosts: small fully connected ops run as prepared at load (the loop
        // is `Plan`'s, not generic: optimized whatever profile builds the caller).
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        self.plan.run_ops(
            self.op_starts.len(),
            arena,
            &mut |i, arena| match self.op(i) {
                Some(op) => self.exec(&op, arena),
                None => Err(Error::KernelArgs),
            },
        )?;
        let arena: &'r [u8] = arena;
        exec::range(self.output_tensor())
            .and_then(|r| arena.get(r))
            .map(arena::bytes_as_i8)
            .ok_or(Error::KernelArgs)
    }

    /// Check `arena` and `input` and copy `input` into the input tensor: the first step
    /// of [`run_in_arena`](Self::run_in_arena), for running the ops one by one with
    /// [`run_op`](Self::run_op).
    pub fn load_input(&self, arena: &mut [u8], input: &[i8]) -> Result<(), Error> {
        let needed = self.arena_size();
        if arena.len() < needed {
            return Err(Error::ArenaTooSmall {
                needed: self.graph.arena_size,
                got: sat_u32(arena.len()),
            });
        }
        let expected = self.input_len();
        if input.len() != expected {
            return Err(Error::InputSizeMismatch {
                expected: sat_u32(expected),
                got: sat_u32(input.len()),
            });
        }
        // The tensors' ranges lie inside `arena_size` (validated, and checked again
        // here); the input has exactly the input tensor's length (checked above).
        let input_bytes = exec::range(self.input_tensor())
            .and_then(|r| arena.get_mut(r))
            .map(arena::bytes_as_i8_mut)
            .filter(|dst| dst.len() == input.len())
            .ok_or(Error::KernelArgs)?;
        input_bytes.copy_from_slice(input);
        Ok(())
    }

    /// Run op `index` alone, on an arena whose earlier ops (after
    /// [`load_input`](Self::load_input)) have run: the ops of
    /// [`run_in_arena`](Self::run_in_arena) one at a time, so a board can time each
    /// (`SPRIG_PROFILE=1`, boards/README.md). Always the portable kernels' dispatch
    /// (on x86_64 hosts `run_in_arena` may prepare small fully connected ops instead).
    /// An op that writes a streamed tensor does nothing alone: the op that ends its
    /// chain runs the whole chain (FORMAT.md §4).
    pub fn run_op(&self, index: usize, arena: &mut [u8]) -> Result<(), Error> {
        if arena.len() < self.arena_size() {
            return Err(Error::ArenaTooSmall {
                needed: self.graph.arena_size,
                got: sat_u32(arena.len()),
            });
        }
        let op = self.op(index).ok_or(Error::KernelArgs)?;
        self.exec(&op, arena)
    }

    /// Run the model and return the predicted class: the value written by a final
    /// `ArgMax` op, otherwise the index of the first largest output element.
    pub fn predict(&self, arena: &mut [u8], input: &[i8]) -> Result<usize, Error> {
        let out = self.run_in_arena(arena, input)?;
        if let (Some(Op::ArgMax(_)), [index]) = (self.ops().next_back(), out) {
            return Ok(usize::try_from(*index).unwrap_or(0));
        }
        Ok(first_argmax(out))
    }
}

/// Number of elements of a validated tensor (0 if it overflowed).
#[cfg(not(all(feature = "std", target_arch = "x86_64")))]
fn tensor_len(t: &Tensor) -> usize {
    t.elements().unwrap_or(0) as usize
}

/// Number of elements of a validated tensor (0 if it overflowed): on x86_64 hosts the
/// length of its arena range, the same product `run_in_arena` computes next, so it is
/// computed once after inlining (on Cortex-M this form costs flash).
#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[inline(always)]
fn tensor_len(t: &Tensor) -> usize {
    exec::range(t).map_or(0, |r| r.len())
}

/// Index of the first largest element (0 for an empty slice).
pub fn first_argmax(values: &[i8]) -> usize {
    let mut best = 0;
    let mut best_value = i8::MIN;
    for (i, &v) in values.iter().enumerate() {
        if i == 0 || v > best_value {
            best = i;
            best_value = v;
        }
    }
    best
}

/// Stand-in returned by accessors if the (validated) graph input were missing.
static EMPTY: Tensor = Tensor {
    shape: heapless::Vec::new(),
    scale: 1.0,
    zero_point: 0,
    arena_offset: 0,
    kind: format::TensorKind::Activation,
};
