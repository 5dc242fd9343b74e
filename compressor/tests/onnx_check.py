#!/usr/bin/env python3
"""Runs an exported ONNX model with onnxruntime and compares it with candle's output.

Usage:
    onnx_check.py MODEL INPUT_BIN EXPECTED_BIN --shape N C H W --mode float
    onnx_check.py MODEL INPUT_BIN EXPECTED_BIN --shape N C H W --mode qdq --step S

INPUT_BIN and EXPECTED_BIN hold raw little-endian float32 values (the input batch
and candle's eval output for it). Exits 0 when they agree, 1 with a message when they
do not, 2 when onnxruntime or numpy cannot be imported (so that a test calling this
fails instead of skipping).

float: every element within --atol (default 1e-4).
qdq:   the model's output is fake-quantized with grid step S. An element may differ
       by at most --max-steps steps (plus --atol), at most --max-frac of the elements
       may differ at all, and the arg-max of every sample must agree.

Each model is checked twice: with onnxruntime's graph optimizations off (the plain
semantics of the ONNX operators, which the export must reproduce) and with its default
optimizations (what a user of the file gets). The latter fuses QDQ patterns into
integer kernels (QLinearConv, QGemm) that accumulate in int32 and requantize after
every layer, so it gets its own bounds, --opt-max-steps and --opt-max-frac. A
sub-batch is also run, to check that the batch dimension is symbolic.

On x86 CPUs with AVX2 but no VNNI (nor AVX-512 BW), onnxruntime's int8 GEMM
(MLAS's QgemmU8X8KernelAvx2) sums pairs of u8·s8 products with VPMADDUBSW, which
saturates at int16: full-range int8 weights then give outputs off by up to the whole
int8 range (onnxruntime issue #16105: wrong on AMD AVX2, right on AVX-512 Intel).
That is a property of onnxruntime on that CPU, not of the file, so there the
"optimized" run uses ORT_ENABLE_BASIC (graph rewrites that keep the float QDQ
semantics, no fusion into integer kernels) under the same bounds, and says so.
"""

import argparse
import sys

try:
    import numpy as np
    import onnxruntime as ort
except ImportError as e:  # pragma: no cover - the point is to fail loudly
    print(
        f"onnx_check: cannot import {e.name}: install it with `pip install onnxruntime numpy`",
        file=sys.stderr,
    )
    sys.exit(2)


def fail(msg):
    print(f"onnx_check: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def int8_gemm_saturates():
    """Whether onnxruntime's x86 int8 GEMM takes its saturating AVX2 path here."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx2" in flags and not {"avx512_vnni", "avx_vnni", "avx512bw"} & set(flags)


def run(model, x, optimize):
    opts = ort.SessionOptions()
    if not optimize:
        level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    elif int8_gemm_saturates():
        level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    else:
        level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.graph_optimization_level = level
    sess = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
    inputs, outputs = sess.get_inputs(), sess.get_outputs()
    if [i.name for i in inputs] != ["input"] or [o.name for o in outputs] != ["output"]:
        fail(f"expected one input `input` and one output `output`, got {[i.name for i in inputs]} -> {[o.name for o in outputs]}")
    if isinstance(inputs[0].shape[0], int):
        fail(f"the batch dimension of `input` is fixed ({inputs[0].shape}), expected a symbolic one")
    if list(inputs[0].shape[1:]) != list(x.shape[1:]):
        fail(f"`input` has shape {inputs[0].shape}, the test batch {list(x.shape)}")
    producer = sess.get_modelmeta().producer_name
    if producer != "sprig":
        fail(f"producer_name is {producer!r}, expected 'sprig'")
    return sess.run(["output"], {"input": x})[0]


def compare(label, got, want, args, max_steps, max_frac):
    if got.shape != want.shape:
        fail(f"{label}: output shape {got.shape}, candle's {want.shape}")
    if not np.all(np.isfinite(got)):
        fail(f"{label}: onnxruntime output has non-finite values")
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    max_diff = float(diff.max())
    differing = diff > args.atol
    frac = float(differing.mean())
    agree = got.argmax(axis=1) == want.argmax(axis=1)
    line = f"{label}: max |diff| = {max_diff:.3g}, {int(differing.sum())}/{diff.size} elements beyond {args.atol:g}"
    if args.mode == "qdq":
        line += f" ({max_diff / args.step:.3f} steps of {args.step:.4g}), argmax agrees on {int(agree.sum())}/{len(agree)}"
    print(line)
    if args.mode == "float":
        if max_diff > args.atol:
            worst = np.unravel_index(diff.argmax(), diff.shape)
            fail(f"{label}: max |diff| {max_diff:.3g} > {args.atol:g} at {worst}: onnx {got[worst]}, candle {want[worst]}")
        return
    if max_diff > max_steps * args.step + args.atol:
        fail(f"{label}: max |diff| {max_diff:.4g} exceeds {max_steps:g} quantization step(s) of {args.step:.4g}")
    if frac > max_frac:
        fail(f"{label}: {frac:.2%} of the elements differ, at most {max_frac:.2%} allowed")
    if not agree.all():
        fail(f"{label}: argmax differs on samples {np.nonzero(~agree)[0].tolist()}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("input")
    p.add_argument("expected")
    p.add_argument("--shape", type=int, nargs=4, required=True, metavar=("N", "C", "H", "W"))
    p.add_argument("--mode", choices=["float", "qdq"], required=True)
    p.add_argument("--atol", type=float, default=1e-4)
    p.add_argument("--step", type=float, help="output quantization step (qdq)")
    p.add_argument("--max-steps", type=float, default=1.0)
    p.add_argument("--max-frac", type=float, default=0.05)
    p.add_argument("--opt-max-steps", type=float, help="--max-steps of the optimized run (default: the same)")
    p.add_argument("--opt-max-frac", type=float, help="--max-frac of the optimized run (default: the same)")
    args = p.parse_args()
    if args.mode == "qdq" and not (args.step and args.step > 0):
        p.error("--mode qdq needs a positive --step")

    x = np.fromfile(args.input, dtype="<f4")
    if x.size != int(np.prod(args.shape)):
        fail(f"{args.input} holds {x.size} floats, shape {args.shape} needs {int(np.prod(args.shape))}")
    x = x.reshape(args.shape)
    want = np.fromfile(args.expected, dtype="<f4")
    n = args.shape[0]
    if want.size % n:
        fail(f"{args.expected} holds {want.size} floats, not a multiple of the batch {n}")
    want = want.reshape(n, -1)

    if int8_gemm_saturates():
        print(
            "onnx_check: this CPU has AVX2 without VNNI, where onnxruntime's int8 kernels "
            "saturate (onnxruntime#16105): the optimized run uses ORT_ENABLE_BASIC"
        )
    for optimize in (False, True):
        label = "optimized" if optimize else "unoptimized"
        max_steps, max_frac = args.max_steps, args.max_frac
        if optimize:
            max_steps = args.opt_max_steps if args.opt_max_steps is not None else max_steps
            max_frac = args.opt_max_frac if args.opt_max_frac is not None else max_frac
        got = run(args.model, x, optimize)
        compare(label, got.reshape(n, -1), want, args, max_steps, max_frac)
        # The same rows from a smaller batch: the batch dimension must be free.
        k = max(1, n // 2)
        part = run(args.model, np.ascontiguousarray(x[:k]), optimize)
        compare(f"{label}, first {k} of the batch alone", part.reshape(k, -1), want[:k], args, max_steps, max_frac)
    print("onnx_check: OK")


if __name__ == "__main__":
    main()
