#!/usr/bin/env bash
# Build xtask with candle's CUDA backend, on a machine with or without a GPU:
#
#   tools/cuda/build.sh                 # cargo build -p xtask --features cuda
#   tools/cuda/build.sh --release       # extra arguments go to cargo build
#
# Runs tools/cuda/setup.sh first when its CUDA root is missing (see there for
# what is installed and why).  Builds into its own target dir (CARGO_TARGET_DIR,
# default /work/target-cuda) so the normal CPU build in target/ is untouched.
# The binary gets an rpath to $SPRIG_CUDA_ROOT/lib (libcudart, libcublas,
# libcurand, libnvrtc from the wheels); libcuda.so.1 must come from the NVIDIA
# driver at run time - on a machine without one, start it with
#   LD_LIBRARY_PATH=/work/.cuda-root/lib/stubs /work/target-cuda/debug/xtask ...
#
# Knobs: SPRIG_CUDA_ROOT (default /work/.cuda-root), CUDA_COMPUTE_CAP (default
# 90), CARGO_TARGET_DIR (default /work/target-cuda); setup.sh's knobs apply.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
ROOT="${SPRIG_CUDA_ROOT:-/work/.cuda-root}"
export SPRIG_CUDA_ROOT="$ROOT"

if [ ! -f "$ROOT/env.sh" ] || [ ! -x "$ROOT/bin/nvcc" ]; then
    "$here/setup.sh" >/dev/null
fi
# shellcheck source=/dev/null
. "$ROOT/env.sh"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/target-cuda}"
# Appended to, not replacing, any RUSTFLAGS of the caller.
export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C link-arg=-Wl,-rpath,$ROOT/lib"

echo "cuda/build: CUDA_HOME=$CUDA_HOME CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP CARGO_TARGET_DIR=$CARGO_TARGET_DIR" >&2
cd "$repo"
exec cargo build -p xtask --features cuda "$@"
