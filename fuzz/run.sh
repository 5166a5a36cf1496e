#!/bin/sh
# Runs every fuzz target for SECONDS (default 60) each, two at a time, from the seeds in
# fuzz/seeds/<target> plus what earlier runs found (fuzz/corpus/<target>, not committed).
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Without a sanitizer and
# in the dev profile, because the crate pulls in candle and moshi, whose instrumented release
# build takes most of an hour on two cores; our parsers are safe Rust, so AddressSanitizer adds
# little. Crashes land in fuzz/artifacts/<target>/.
set -eu
cd "$(dirname "$0")"
seconds=${1:-60}
targets="safetensors_header repo_config repo_paths audio_decode"
cargo +nightly fuzz build --dev -s none
run() {
    mkdir -p "corpus/$1"
    cargo +nightly fuzz run --dev -s none "$1" "corpus/$1" "seeds/$1" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
        -print_final_stats=1 > "/tmp/fuzz-$1.log" 2>&1 || echo "$1: FOUND A CRASH (see /tmp/fuzz-$1.log)"
    echo "$1: $(grep -E 'stat::number_of_executed_units|Done' "/tmp/fuzz-$1.log" | tr '\n' ' ')"
}
set -- $targets
while [ $# -gt 0 ]; do
    run "$1" &
    if [ $# -gt 1 ]; then run "$2" & shift; fi
    shift
    wait
done
