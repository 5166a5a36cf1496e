#!/usr/bin/env bash
# The GPU check of tools/gpu-check.sh, on the binaries tools/gpu-pack.sh built elsewhere, for a
# GPU machine with no Rust toolchain and no network: run from the repository's root (a copy of
# it, with .gpu/bins.tar.xz), results in $OUT (default: the current folder).
#
#   tools/gpu-run-packed.sh
#
# It finds the CUDA libraries the binaries link (cudart, cuBLAS, cuRAND: a PyTorch install has
# them) and runs, on GPU 0: the dtype tests (must pass), the batched TTS test, the token-exact
# parity tests (informative: a GPU's kernels may round differently), then the real-size
# random-weight benchmarks' summaries in bf16 and f32 (criterion's own sampling is skipped, for
# time: `--bench zzz` matches no criterion group, and each bench prints its plain timings).
set -uo pipefail
OUT="${OUT:-$PWD}"
LOG="$OUT/gpu-check.txt"
log() { echo "$*" | tee -a "$LOG"; }
step() { local name="$1"; shift; log ""; log "=== $name: $*"; local s=$SECONDS;
  timeout "${STEP_LIMIT:-150}" "$@" 2>&1 | tee -a "$LOG"; local st=${PIPESTATUS[0]};
  log "=== $name: exit $st after $((SECONDS - s)) s"; }
# The fixtures' paths were compiled in (the build machine's checkout, which gpu-pack.sh wrote
# down): that path leads here.
root="$(cat .gpu/build-root 2>/dev/null || true)"
if [ -n "$root" ] && [ ! -e "$root" ]; then
    mkdir -p "$(dirname "$root")" && ln -sfn "$PWD" "$root"
fi
libdirs=""
for l in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10; do
    f=$(find /opt /usr -name "$l" 2>/dev/null | head -n 1)
    [ -n "$f" ] && libdirs="$libdirs:$(dirname "$f")"
done
libdirs="$(echo "${libdirs#:}" | tr ':' '\n' | awk 'NF && !seen[$0]++' | paste -sd:)"
export LD_LIBRARY_PATH="$libdirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
log "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv | tee -a "$LOG"
mkdir -p /tmp/bins && tar xJf .gpu/bins.tar.xz -C /tmp/bins
B=/tmp/bins
ldd $B/batch | grep -E "cuda|cublas|curand" | tee -a "$LOG"
export KYUTAI_TEST_DEVICE=cuda:0
step "dtype tests (must pass)" $B/dtype_parity --test-threads 1
step "batched TTS on the GPU" $B/tts_batch --test-threads 1
STEP_LIMIT=60 step "token-exact parity on the GPU, f32 (informative)" $B/tts_parity --test-threads 1
STEP_LIMIT=60 step "tts_cfg on the GPU (informative)" $B/tts_cfg --test-threads 1
STEP_LIMIT=60 step "stt parity on the GPU (informative)" $B/stt_parity --test-threads 1
unset KYUTAI_TEST_DEVICE
for dtype in bf16 f32; do
  export KYUTAI_BENCH_DEVICE=cuda:0 KYUTAI_BENCH_DTYPE=$dtype
  step "TTS 1.6B $dtype" $B/tts_step --bench zzz
  step "STT 1B $dtype" env STT_BENCH_1B=1 $B/stt --bench zzz
  max=16; [ "$dtype" = bf16 ] && max=64
  step "batched $dtype" env BATCH_BENCH_1B=1 BATCH_BENCH_MAX=$max $B/batch --bench zzz
done
log "=== summary"
grep -E '^(=== .*exit|test result|stt_rtf_1b|stt_1b|tts_1_6b|random 1\.6B|time to first audio|real-time factor)' "$LOG" > "$OUT/summary.txt"
