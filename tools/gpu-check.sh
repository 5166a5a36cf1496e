#!/usr/bin/env bash
# The GPU check, in one command, for a Linux machine with an NVIDIA GPU, its driver (R580 or
# newer for the CUDA 13.0 toolkit of tools/setup-cuda.sh), Rust, and access to crates.io and
# PyPI:
#
#   tools/gpu-check.sh [RESULTS_FILE]     # default: gpu-check-<UTC time>.txt
#
# It builds with `--features cuda` and runs, on GPU 0 (KYUTAI_GPU=cuda:N for another):
#   1. the tiny-model dtype tests on the GPU, f32 and bf16 against the CPU f32 reference, with
#      the tolerances of tests/dtype_parity.rs (these must pass);
#   2. the token-exact Python parity tests with the models on the GPU in f32 (informative: a GPU's
#      kernels may round differently from the CPU's, so a difference there is reported, not a
#      failure of the check);
#   3. the real-size random-weight benchmarks, in f32 and bf16: STT 1B (`benches/stt.rs`, ms per
#      80 ms frame), TTS 1.6B (`benches/tts_step.rs`: time to first audio, ms per frame), both
#      with the time to load the LM from a bf16 safetensors file (`KYUTAI_BENCH_LOAD=1`), and the
#      batched benchmark (`benches/batch.rs` with BATCH_BENCH_1B=1: one batched step of N
#      conversations against N single steps, the STT 1B and the TTS 1.6B language models,
#      N = 1 to 64).
# Everything goes to the results file, with a summary of the key lines at its end. The exit
# status is non-zero if the build or step 1 failed.
set -uo pipefail
cd "$(dirname "$0")/.."

RESULTS="${1:-gpu-check-$(date -u +%Y%m%dT%H%M%SZ).txt}"
GPU="${KYUTAI_GPU:-cuda:0}"
: >"$RESULTS"
log() { echo "$*" | tee -a "$RESULTS" >&2; }
# Runs a step, its output into the results file; returns the step's status.
step() {
    local name="$1"
    shift
    log ""
    log "=== $name: $*"
    local start=$SECONDS
    "$@" 2>&1 | tee -a "$RESULTS"
    local status=${PIPESTATUS[0]}
    log "=== $name: exit $status after $((SECONDS - start)) s"
    return "$status"
}

# The toolkit: one already on PATH (a system CUDA), else the PyPI one.
if ! command -v nvcc >/dev/null 2>&1; then
    tools/setup-cuda.sh >/dev/null || { log "setup-cuda.sh failed"; exit 1; }
    # shellcheck disable=SC1091
    source "${CUDA_PREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/fluent-voice-kyutai/cuda-13.0}/env.sh"
fi
# Kernels for this GPU (bindgen_cuda would ask nvidia-smi too; set here so the log shows it).
if [ -z "${CUDA_COMPUTE_CAP:-}" ] || [ "${CUDA_COMPUTE_CAP}" = 80 ]; then
    cap="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d '.[:space:]')"
    export CUDA_COMPUTE_CAP="${cap:-80}"
fi
# Its own target folder: the feature rebuilds candle.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/cuda}"

log "fluent-voice-kyutai GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')"
log "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
log "device: $GPU, CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"
step "gpu" nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
step "toolkit" nvcc --version

if ! step "build" cargo build --release --locked --features cuda --all-targets; then
    log "the cuda build failed; see above"
    exit 1
fi

status=0
step "dtype tests (must pass)" env KYUTAI_TEST_DEVICE="$GPU" \
    cargo test --release --locked --features cuda --test dtype_parity -- --nocapture --test-threads 1 ||
    status=1
step "token-exact parity on the GPU, f32 (informative)" env KYUTAI_TEST_DEVICE="$GPU" \
    cargo test --release --locked --features cuda --test tts_parity --test tts_cfg --test stt_parity \
    -- --nocapture --test-threads 1 || true

for dtype in f32 bf16; do
    export KYUTAI_BENCH_DEVICE="$GPU" KYUTAI_BENCH_DTYPE="$dtype" KYUTAI_BENCH_LOAD=1
    step "STT 1B benchmark, $dtype" env STT_BENCH_1B=1 \
        cargo bench --locked --features cuda --bench stt -- stt_rtf_1b || true
    step "TTS 1.6B benchmark, $dtype" \
        cargo bench --locked --features cuda --bench tts_step || true
    for bench in $(sed -n 's/^name = "\(.*batch.*\)"$/\1/p' Cargo.toml); do
        # Only a bench that runs where it is told (benches/support/device.rs) measures the GPU.
        if ! grep -q 'bench_target' "benches/$bench.rs"; then
            log "=== batched benchmark $bench: skipped, it runs on the CPU only (no bench_target)"
            continue
        fi
        step "batched benchmark $bench, $dtype" env BATCH_BENCH_1B=1 BATCH_BENCH_MAX=64 \
            cargo bench --locked --features cuda --bench "$bench" || true
    done
done
unset KYUTAI_BENCH_DEVICE KYUTAI_BENCH_DTYPE KYUTAI_BENCH_LOAD

{
    echo ""
    echo "=== summary"
    grep -E '^(=== .*exit|test result|TTS |STT |stt_rtf_1b|stt_1b|tts_1_6b|tts LM|random 1\.6B|time to first audio|real-time factor)' "$RESULTS" |
        grep -v '=== summary'
} >>"$RESULTS.summary"
cat "$RESULTS.summary" >>"$RESULTS"
rm -f "$RESULTS.summary"
log "results: $RESULTS"
exit "$status"
