#!/usr/bin/env bash
# Install a CUDA toolkit from NVIDIA's PyPI wheels, so that
# `cargo build -p xtask --features cuda` compiles on a machine without a GPU,
# a driver or a system CUDA install (Debian 12: bookworm's nvidia-cuda-toolkit
# is CUDA 11.8 and only in non-free, which is not enabled here).
#
#   tools/cuda/setup.sh                 # progress on stderr, `export` lines on stdout
#   eval "$(tools/cuda/setup.sh)"       # set up and export into this shell
#   tools/cuda/build.sh [cargo args]    # runs this when needed, then cargo build
#
# Why CUDA 13 and not 12: the *-cu12 wheels carry ptxas/libnvvm but no `nvcc`
# driver, cicc or cudafe++ (they serve JIT users such as JAX/Triton).  CUDA 13's
# wheels (metapackage `cuda-toolkit`, layout site-packages/nvidia/cu13/{bin,include,
# lib,nvvm}) have the whole compiler.  cudarc 0.19.10 (candle 0.11) knows CUDA up
# to 13.4, so the toolkit is pinned to 13.4 (`cuda-toolkit==13.4.3`).
#
# What the build needs, and what this script provides:
#  * nvcc on PATH: candle-kernels' build.rs (cudaforge) compiles the kernels with
#    it, cudarc's build.rs runs `nvcc --version` to pick its CUDA API version.
#  * CUDA_COMPUTE_CAP: cudaforge would otherwise ask nvidia-smi (absent here).
#  * headers: cuda.h, cuda_runtime.h, cuda_fp16/bf16/fp8.h, mma.h, cub/thrust
#    (CCCL) - all in the wheels' include/, found by nvcc through nvcc.profile.
#  * link time: candle-core turns on cudarc's `dynamic-linking`, so the binary is
#    linked against libcuda (the *driver*), libnvrtc, libcublas, libcublasLt,
#    libcurand, and candle-kernels adds libcudart.  The wheels ship only the
#    versioned files (libcublas.so.13, ...), and no libcuda at all.  So this
#    script assembles $ROOT with lib/ holding the unversioned names, and a
#    generated stub lib/stubs/libcuda.so (SONAME libcuda.so.1) whose functions
#    all return CUDA_ERROR_STUB_LIBRARY (34), like the stub in NVIDIA's toolkit.
#    cudarc adds $CUDA_HOME/lib and $CUDA_HOME/lib/stubs to the link search.
#  * run time: the binary needs libcudart.so.13, libcublas(Lt).so.13,
#    libcurand.so.10, libnvrtc.so.13 ($ROOT/lib; build.sh bakes an rpath to it)
#    and libcuda.so.1 from an NVIDIA driver.  Without a driver the dynamic loader
#    refuses to start the binary (even for `--device cpu`); put $ROOT/lib/stubs
#    on LD_LIBRARY_PATH to start it anyway (then `--device cuda` fails cleanly
#    with CUDA_ERROR_STUB_LIBRARY).  Never do that on a machine with a GPU.
#
# Idempotent: an existing venv at the pinned version is kept; $ROOT is rebuilt
# only when its stamp (toolkit version, wheel dir, stub symbols) changes.
# Downloads ~680 MB once (cublas is 440 MB); the venv takes ~1.2 GB.
#
# Knobs (all optional):
#   SPRIG_CUDA_VENV       venv for the wheels        (default /work/.venv-cuda)
#   SPRIG_CUDA_ROOT       assembled CUDA root        (default /work/.cuda-root)
#   SPRIG_CUDA_TOOLKIT    cuda-toolkit version       (default 13.4.3 = CUDA 13.4)
#   CUDA_COMPUTE_CAP      GPU arch for the kernels   (default 90: H100/H200)
#   PYTHON                interpreter for the venv   (default python3)
set -euo pipefail

VENV="${SPRIG_CUDA_VENV:-/work/.venv-cuda}"
ROOT="${SPRIG_CUDA_ROOT:-/work/.cuda-root}"
TOOLKIT="${SPRIG_CUDA_TOOLKIT:-13.4.3}"
CAP="${CUDA_COMPUTE_CAP:-90}"
PY="${PYTHON:-python3}"
EXTRAS="nvcc,cudart,cublas,curand,nvrtc,cccl"

log() { printf 'cuda/setup: %s\n' "$*" >&2; }

# --- 1. venv + wheels -------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    log "creating venv $VENV"
    "$PY" -m venv "$VENV"
fi
have="$("$VENV/bin/python" -m pip show cuda-toolkit 2>/dev/null | sed -n 's/^Version: //p' || true)"
if [ "$have" != "$TOOLKIT" ] || ! "$VENV/bin/python" -m pip check >/dev/null 2>&1; then
    log "installing cuda-toolkit[$EXTRAS]==$TOOLKIT (~680 MB download)"
    "$VENV/bin/python" -m pip install --disable-pip-version-check --no-cache-dir -q \
        "cuda-toolkit[$EXTRAS]==$TOOLKIT" >&2
else
    log "cuda-toolkit $TOOLKIT already in $VENV"
fi

SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
WHEEL="$SITE/nvidia/cu${TOOLKIT%%.*}"
for f in bin/nvcc nvvm/bin/cicc include/cuda.h include/cccl/cub/cub.cuh lib/libcudart.so.*; do
    ls "$WHEEL"/$f >/dev/null 2>&1 || { log "missing $WHEEL/$f - wheel layout changed?"; exit 1; }
done

# --- 2. stub libcuda: every driver API symbol, from the wheel's cuda.h --------
# Preprocessing resolves cuda.h's versioning macros (cuCtxCreate -> cuCtxCreate_v4,
# per-thread-stream variants with CUDA_API_PER_THREAD_DEFAULT_STREAM), i.e. the
# names the library really exports.  Names from cudarc's bindings are added when
# its source is in the cargo registry (cudarc may name a symbol cuda.h dropped).
symbols="$(
    for d in "" "-DCUDA_API_PER_THREAD_DEFAULT_STREAM"; do
        gcc -E -P $d -I"$WHEEL/include" -x c "$WHEEL/include/cuda.h"
    done | tr '\n' ' ' | grep -oE 'CUresult +cu[A-Za-z0-9_]+ *\(' | sed -E 's/CUresult +//; s/ *\($//'
    for f in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-*/src/driver/sys/mod.rs; do
        [ -f "$f" ] && grep -oE '^pub unsafe fn cu[A-Za-z0-9_]+' "$f" | sed 's/^pub unsafe fn //'
    done
)"
symbols="$(printf '%s\n' "$symbols" | grep -vxE 'cuGetErrorName|cuGetErrorString' | sort -u)"
nsym="$(printf '%s\n' "$symbols" | wc -l)"

stamp="toolkit=$TOOLKIT wheel=$WHEEL symbols=$(printf '%s' "$symbols" | sha256sum | cut -c1-16)"
if [ -f "$ROOT/.stamp" ] && [ "$(cat "$ROOT/.stamp")" = "$stamp" ] && [ -x "$ROOT/bin/nvcc" ]; then
    log "$ROOT up to date"
else
    log "assembling $ROOT (stub libcuda with $nsym symbols)"
    tmp="$ROOT.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp/lib/stubs"
    for d in bin include nvvm; do ln -s "$WHEEL/$d" "$tmp/$d"; done
    ln -s lib "$tmp/lib64"
    # every shared library, under its own name and the unversioned one (-lfoo)
    for so in "$WHEEL"/lib/*.so*; do
        base="$(basename "$so")"
        ln -s "$so" "$tmp/lib/$base"
        dev="${base%%.so*}.so"
        [ -e "$tmp/lib/$dev" ] || ln -s "$base" "$tmp/lib/$dev"
    done
    {
        echo '/* Generated by tools/cuda/setup.sh: a libcuda.so.1 that has no GPU behind it. */'
        echo 'typedef int CUresult;'
        echo '#define CUDA_ERROR_STUB_LIBRARY 34'
        echo 'static const char *name_of(CUresult e) {'
        echo '    return e == 0 ? "CUDA_SUCCESS" : e == CUDA_ERROR_STUB_LIBRARY ? "CUDA_ERROR_STUB_LIBRARY" : "CUDA_ERROR_UNKNOWN";'
        echo '}'
        echo 'static const char *text_of(CUresult e) {'
        echo '    return e == 0 ? "no error" : e == CUDA_ERROR_STUB_LIBRARY'
        echo '        ? "CUDA driver is a stub library (sprig tools/cuda stub: no NVIDIA driver on this machine)"'
        echo '        : "unknown error";'
        echo '}'
        echo 'CUresult cuGetErrorName(CUresult e, const char **s) { if (!s) return 1; *s = name_of(e); return 0; }'
        echo 'CUresult cuGetErrorString(CUresult e, const char **s) { if (!s) return 1; *s = text_of(e); return 0; }'
        printf '%s\n' "$symbols" | sed 's/.*/CUresult &(void) { return CUDA_ERROR_STUB_LIBRARY; }/'
    } >"$tmp/lib/stubs/libcuda_stub.c"
    gcc -shared -fPIC -O1 -Wl,-soname,libcuda.so.1 \
        -o "$tmp/lib/stubs/libcuda.so.1" "$tmp/lib/stubs/libcuda_stub.c"
    ln -s libcuda.so.1 "$tmp/lib/stubs/libcuda.so"
    echo "$stamp" >"$tmp/.stamp"
    rm -rf "$ROOT"
    mv "$tmp" "$ROOT"
fi

"$ROOT/bin/nvcc" --version | sed -n 's/^Cuda compilation tools, /cuda\/setup: nvcc /p' >&2

# --- 3. environment -----------------------------------------------------------
cat >"$ROOT/env.sh" <<EOF
# Generated by tools/cuda/setup.sh; source it before \`cargo build --features cuda\`.
export CUDA_HOME="$ROOT"
export CUDA_PATH="$ROOT"
export NVCC="$ROOT/bin/nvcc"
export PATH="$ROOT/bin:\${PATH#$ROOT/bin:}"
export CUDA_COMPUTE_CAP="\${CUDA_COMPUTE_CAP:-$CAP}"
EOF
log "wrote $ROOT/env.sh; to run a cuda build's binary: LD_LIBRARY_PATH=$ROOT/lib (build.sh sets an rpath instead)"
log "no NVIDIA driver? add $ROOT/lib/stubs to LD_LIBRARY_PATH to start the binary at all"
cat "$ROOT/env.sh" | grep '^export'
