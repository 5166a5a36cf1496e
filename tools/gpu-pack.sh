#!/usr/bin/env bash
# Builds the GPU check's test and bench binaries here, for a GPU machine that has the NVIDIA
# driver and CUDA libraries but no Rust toolchain and no network (a lent device machine), and
# packs them into .gpu/bins.tar.xz (about 20 MB; .gpu/ is ignored by git). Run them there with
# tools/gpu-run-packed.sh, carrying .gpu.
#
#   tools/gpu-pack.sh [COMPUTE_CAP]     # default 90 (H100/H200); 80 for A100, 89 for L40S
#
# The binaries are built for any x86-64 CPU with AVX2 and FMA (`x86-64-v3`), not for this
# machine's CPU (`.cargo/config.toml` asks for `native`): the GPU machine's CPU may lack an
# instruction this one has, and the binary would stop with "Illegal instruction".
set -euo pipefail
cd "$(dirname "$0")/.."
CAP="${1:-90}"
if ! command -v nvcc >/dev/null 2>&1; then
    tools/setup-cuda.sh >/dev/null
    # shellcheck disable=SC1091
    source "${CUDA_PREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/fluent-voice-kyutai/cuda-13.0}/env.sh"
fi
export CUDA_COMPUTE_CAP="$CAP" CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/cuda}"
export RUSTFLAGS="-C target-cpu=x86-64-v3"
TESTS=(dtype_parity tts_batch tts_parity tts_cfg stt_parity)
BENCHES=(tts_step stt batch)
tests=()
for t in "${TESTS[@]}"; do tests+=(--test "$t"); done
benches=()
for b in "${BENCHES[@]}"; do benches+=(--bench "$b"); done
cargo test --release --locked --features cuda --no-run "${tests[@]}" 2>&1 | tee /tmp/gpu-pack.log
cargo bench --locked --features cuda --no-run "${benches[@]}" 2>&1 | tee -a /tmp/gpu-pack.log
mkdir -p .gpu/bins
for name in "${TESTS[@]}" "${BENCHES[@]}"; do
    path=$(sed -n "s|.*Executable [a-z]*/$name\.rs (\(.*\))|\1|p" /tmp/gpu-pack.log | tail -n 1)
    strip -o ".gpu/bins/$name" "$path"
done
tar cf - -C .gpu/bins . | xz -9 -T2 >.gpu/bins.tar.xz
pwd >.gpu/build-root
rm -rf .gpu/bins
ls -la .gpu/bins.tar.xz
