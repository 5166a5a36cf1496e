#!/usr/bin/env bash
# Keeps the `cuda` feature compiling on machines without a GPU (CI runs it; see the README,
# section GPU): installs the CUDA compiler from PyPI if needed (tools/setup-cuda.sh
# --compiler-only, 0.3 GB), then type-checks every target with `--features cuda`. This also
# compiles candle's CUDA kernels, which `cargo check` runs as a build script.
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX="${CUDA_PREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/fluent-voice-kyutai/cuda-13.0-compiler}"
tools/setup-cuda.sh --compiler-only "$PREFIX" >/dev/null
# shellcheck disable=SC1091
source "$PREFIX/env.sh"
# Its own target folder: the feature rebuilds candle, which would otherwise evict the CPU build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/cuda-check}"
start=$SECONDS
cargo check --locked --features cuda --all-targets
echo "check-cuda: the cuda feature compiles ($((SECONDS - start)) s)" >&2
