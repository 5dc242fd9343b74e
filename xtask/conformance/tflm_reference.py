"""TensorFlow Lite Micro reference run for `cargo xtask conformance`.

usage: tflm_reference.py MODEL.tflite COUNT SEED OUT_DIR [EXTRA_INPUTS.bin]

Generates COUNT seeded random int8 inputs (numpy default_rng(SEED), uniform over
-128..127), appends the inputs of EXTRA_INPUTS.bin (raw int8, whole inputs) if given,
runs every input through the tflite-micro Python package (reference kernels) and writes
into OUT_DIR:
  inputs.bin   all inputs, int8, back to back (what sprig must be fed)
  outputs.bin  TFLM's outputs, int8, back to back
  info.json    input/output length, µs per inference (time.perf_counter around each
               invoke, averaged over all inputs), arena total and head (activations)
               bytes as TFLM's RecordingMicroAllocator reports them
"""

import json
import os
import re
import sys
import tempfile
import time

import numpy as np
from tflite_micro.python.tflite_micro import runtime


def arena_figures(interp):
    """TFLM prints its arena use to the C++ stderr only: capture file descriptor 2."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            interp.print_allocations()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode("utf-8", "replace")
    found = {}
    for key in ("total", "head", "tail"):
        m = re.search(r"Arena allocation %s (\d+) bytes" % key, text)
        found[key] = int(m.group(1)) if m else None
    return found


def main():
    if len(sys.argv) not in (5, 6):
        sys.exit(__doc__)
    model, count, seed, out_dir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    interp = runtime.Interpreter.from_file(model)
    d_in = interp.get_input_details(0)
    d_out = interp.get_output_details(0)
    if d_in["dtype"] != np.int8 or d_out["dtype"] != np.int8:
        sys.exit(f"{model}: input {d_in['dtype']}, output {d_out['dtype']}: not an int8 model")
    shape = [int(s) for s in d_in["shape"]]
    n_in = int(np.prod(shape))
    rng = np.random.default_rng(seed)
    xs = rng.integers(-128, 128, size=(count, n_in), dtype=np.int8)
    if len(sys.argv) == 6:
        extra = np.fromfile(sys.argv[5], dtype=np.int8)
        if extra.size % n_in:
            sys.exit(f"{sys.argv[5]}: {extra.size} bytes is not a whole number of {n_in}-byte inputs")
        xs = np.concatenate([xs, extra.reshape(-1, n_in)])
    outs = []
    elapsed = 0.0
    for x in xs:
        interp.set_input(x.reshape(shape), 0)
        t0 = time.perf_counter()
        interp.invoke()
        elapsed += time.perf_counter() - t0
        outs.append(np.asarray(interp.get_output(0)).astype(np.int8).reshape(-1))
    arena = arena_figures(interp)
    ys = np.stack(outs)
    os.makedirs(out_dir, exist_ok=True)
    xs.tofile(os.path.join(out_dir, "inputs.bin"))
    ys.tofile(os.path.join(out_dir, "outputs.bin"))
    info = {
        "input_shape": shape,
        "input_len": n_in,
        "output_len": int(ys.shape[1]),
        "inputs": int(xs.shape[0]),
        "us_per_inference": elapsed * 1e6 / max(len(xs), 1),
        "arena_total": arena["total"],
        "arena_head": arena["head"],
        "arena_tail": arena["tail"],
    }
    with open(os.path.join(out_dir, "info.json"), "w") as f:
        json.dump(info, f)


if __name__ == "__main__":
    main()
