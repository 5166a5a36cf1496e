#!/usr/bin/env bash
# Pocket TTS, whole CLI, side by side with the reference on the same files in the same run: for
# each weights setting, `kyutai say` and `pocket-tts generate` (4.0.1, its own two threads) on a
# short and a long text, each a fresh process timed whole (/usr/bin/time: wall seconds, peak
# resident memory). The difference between the two lengths gives the time per 80 ms frame;
# what is left at zero frames is the start-up (process, imports, loading the weights and the
# voice). Then the in-process figures of both: `tools/bench/pocket_python.py` and
# `cargo bench --bench pocket` (first audio, warm load, flow LM and Mimi per frame).
#
#   tools/bench/pocket_compare.sh [MODEL] [SETTING...]   # default: english_2026-10 f32 q8 q4
#
# Environment: KYUTAI (default target/release/kyutai), POCKET_BENCH_DIR (default
# /work/pocket-real, from make_pocket_real_size.py), PY (default /work/venv-pocket/bin), REPEAT
# (runs per input, the fastest kept; default 2), BENCH=0 skips `cargo bench`.
# The reference's `--quantize` (torch dynamic int8 of the flow transformer's linears) is timed
# beside our q8.
set -euo pipefail

model=${1:-english_2026-10}
shift || true
settings=("$@")
[ ${#settings[@]} -eq 0 ] && settings=(f32 q8 q4)
KYUTAI=${KYUTAI:-target/release/kyutai}
DIR=${POCKET_BENCH_DIR:-/work/pocket-real}
PY=${PY:-/work/venv-pocket/bin}
REPEAT=${REPEAT:-2}
config=$DIR/$model-local.yaml
voice=$DIR/repo/languages/$model/embeddings/alba.safetensors
cache=$DIR/rust-cache # the q8/q4 files derived once, as a user's cache keeps them
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

short="Hello there, this is a short test."
long="Hello there, this is a longer test of the speech synthesis. It goes on for a while, with \
several sentences, so that many frames are generated. The difference in time between this text \
and the short one gives the cost of one frame."

# Runs "$@" REPEAT times; prints the fastest wall time, its CPU time and its peak RSS in MB.
timed() {
    local best="" cpu="" rss=""
    for _ in $(seq "$REPEAT"); do
        /usr/bin/time -f '%e %U %S %M' -o "$out/time" "$@" >"$out/stdout" 2>"$out/stderr" || {
            cat "$out/stderr" >&2
            return 1
        }
        read -r wall user sys kb <"$out/time"
        if [ -z "$best" ] || awk "BEGIN{exit !($wall < $best)}"; then
            best=$wall
            cpu=$(awk "BEGIN{print $user + $sys}")
            rss=$((kb / 1024))
        fi
    done
    echo "$best $cpu $rss"
}

frames() { "$PY/python" -c "import wave,sys; print(wave.open(sys.argv[1]).getnframes() // 1920)" "$1"; }

summary() { # name t_short t_long f_short f_long rss
    awk -v n="$1" -v ts="$2" -v tl="$3" -v fs="$4" -v fl="$5" -v r="$6" 'BEGIN{
        f = (tl - ts) / (fl - fs); l = ts - fs * f;
        printf "%-22s %6.1f ms per frame (%.2fx real time), start-up %.2f s, peak %d MB\n",
            n, f * 1000, 0.08 / f, l, r }'
}

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); $model; binary $KYUTAI"
run_one() { # name command...
    local name=$1
    shift
    local t_s t_l f_s f_l rss c
    read -r t_s c rss < <(timed "$@" "$short")
    f_s=$(frames "$out/say.wav")
    read -r t_l c rss < <(timed "$@" "$long")
    f_l=$(frames "$out/say.wav")
    echo "$name: short ${t_s}s ($f_s frames), long ${t_l}s ($f_l frames)"
    summary "$name" "$t_s" "$t_l" "$f_s" "$f_l" "$rss"
}
py=("$PY/pocket-tts" generate -q --config "$config" --voice "$voice" --output-path "$out/say.wav")
for setting in "${settings[@]}"; do
    "$KYUTAI" --offline -q --cache-dir "$cache" say --tts-model "$config" --voice "$voice" \
        --weights "$setting" -o "$out/say.wav" "$short" # derives the q8/q4 file once
    run_one "kyutai say $setting" "$KYUTAI" --offline -q --cache-dir "$cache" say \
        --tts-model "$config" --voice "$voice" --weights "$setting" --seed 1 -o "$out/say.wav"
    case $setting in
    f32) run_one "pocket-tts generate" "${py[@]}" --text ;;
    q8) run_one "pocket-tts --quantize" "${py[@]}" --quantize --text ;;
    esac
done
echo "in process:"
"$PY/python" tools/bench/pocket_python.py --config "$config" --voice "$voice"
"$PY/python" tools/bench/pocket_python.py --config "$config" --voice "$voice" --quantize
if [ "${BENCH:-1}" != 0 ]; then
    POCKET_BENCH_DIR=$DIR POCKET_BENCH_MODEL=$model \
        POCKET_BENCH_WEIGHTS=$(IFS=,; echo "${settings[*]}") \
        cargo bench --bench pocket 2>&1 | grep -E '^pocket |time:|^pocket/'
fi
