#!/usr/bin/env bash
# Whole-CLI figures on the real-size random-weight repos of make_real_size.py: for each weights
# setting, `kyutai transcribe` on clips of two lengths and `kyutai say` on texts of two lengths,
# each a fresh process timed whole (/usr/bin/time: wall seconds, peak resident memory). The
# difference between the two lengths gives the time per 80 ms frame; what is left at zero
# length is the load (process start, cache lookup, reading or quantizing the weights).
#
#   tools/bench/cli_bench.sh stt f32 q8 q4      # or: tts f32 q8 q4
#
# Environment: KYUTAI (the binary; default target/release/kyutai), BENCH_ROOT (default
# /work/bigmodels: hub/ and audio/ from make_real_size.py), REPEAT (runs per input, the fastest
# is kept; default 1), SAY_ARGS (more arguments for `say`, e.g. `--n-q 24`). A setting of `-`
# runs the binary without --weights (an older build). The 1.6B needs KYUTAI_TTS_MODEL=dsm on a
# CPU (where the default TTS is Pocket TTS).
# Prints one line per run and a summary line per setting; the load average is printed too.
set -euo pipefail

model=${1:?usage: cli_bench.sh stt|tts SETTING...}
shift
KYUTAI=${KYUTAI:-target/release/kyutai}
ROOT=${BENCH_ROOT:-/work/bigmodels}
REPEAT=${REPEAT:-1}
HUB=$ROOT/hub
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Runs "$@" REPEAT times; prints the fastest wall time, its CPU time (user + system, all
# threads: unlike wall time, not inflated when other processes take the cores) and its peak RSS
# in MB.
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

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); binary $KYUTAI"
for setting in "$@"; do
    weights=()
    [ "$setting" != "-" ] && weights=(--weights "$setting")
    if [ "$model" = stt ]; then
        # Steps: the audio plus the model's 0.5 s delay and 1 s of tail, per 80 ms frame.
        declare -A secs=([short]=4 [long]=16)
        for len in short long; do
            read -r t c rss < <(timed "$KYUTAI" --offline -q --cache-dir "$HUB" transcribe \
                "${weights[@]}" "$ROOT/audio/speech_${secs[$len]}s.wav")
            steps=$(awk "BEGIN{print int((${secs[$len]} + 1.5) * 12.5)}")
            echo "stt $setting ${secs[$len]}s: ${t}s wall, ${c}s cpu, $steps steps, peak ${rss} MB"
            eval "t_$len=$t; c_$len=$c; s_$len=$steps; rss_$len=$rss"
        done
    else
        short="Hello there, this is a short test."
        long="Hello there, this is a longer test of the speech synthesis. It goes on for a \
while, with several sentences, so that many frames are generated. The difference in time \
between this text and the short one gives the cost of one frame."
        for len in short long; do
            text=${!len}
            # shellcheck disable=SC2086
            read -r t c rss < <(timed "$KYUTAI" --offline -q --cache-dir "$HUB" say \
                "${weights[@]}" ${SAY_ARGS:-} --seed 1 -o "$out/say.wav" "$text")
            audio=$(sed -n 's/.*(\([0-9.]*\) s of audio).*/\1/p' "$out/stderr")
            # Steps: the audio's frames plus the 16-step audio delay, 2 dropped frames and the
            # final padding (4).
            steps=$(awk "BEGIN{print int($audio * 12.5 + 22)}")
            echo "tts $setting $len: ${t}s wall, ${c}s cpu, ${audio}s audio, ~$steps steps," \
                "peak ${rss} MB"
            eval "t_$len=$t; c_$len=$c; s_$len=$steps; rss_$len=$rss"
        done
    fi
    awk -v m="$model" -v w="$setting" -v ts="$t_short" -v tl="$t_long" -v ss="$s_short" \
        -v sl="$s_long" -v r="$rss_long" -v cs="$c_short" -v cl="$c_long" 'BEGIN{
        f = (tl - ts) / (sl - ss); l = ts - ss * f;
        cf = (cl - cs) / (sl - ss); cload = cs - ss * cf;
        printf "%s %s: %.0f ms per frame (cpu %.0f ms), load %.1f s (cpu %.1f s), peak %d MB\n",
            m, w, f * 1000, cf * 1000, l, cload, r }'
done
