#!/usr/bin/env python3
"""Time one large download through our model manager and through Python's `hf_hub_download`.

Why: users compare us with the client they already have; and our downloads hash every byte
(sha256 against the etag) where Python checks only the size, so the cost of that check is worth
knowing. Three variants, each into a fresh cache dir, from the `test_hub` example serving one
pseudo-random file of `--size-mb` MB (default 256) on 127.0.0.1:

  ours (verify)     examples/fetch_file.rs, sha256 checked while streaming (the default)
  ours (no verify)  the same with --no-verify
  python            huggingface_hub.hf_hub_download (no hash check)

Runs are interleaved (a, b, c, a, b, c, ...) so that drift on a busy machine hits all variants
alike; the median of `--runs` (default 3) is reported. "call" is the time of the download call
inside the process (what a long-running application pays); "process" is the whole command,
interpreter or binary start included. Each cache is deleted after its run.

Usage (from anywhere; it builds the release examples first unless --no-build)::

    python3 -m venv /tmp/hfvenv && /tmp/hfvenv/bin/pip install huggingface_hub==2.4.0
    /tmp/hfvenv/bin/python tools/bench/compare_python_download.py [--size-mb 256] [--runs 3]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "target" / "release" / "examples"
REPO = "bench/big"
FILE = "big.bin"

# Runs in a fresh interpreter so that its import time counts in "process", not in "call".
PYTHON_FETCH = """
import sys, time
from huggingface_hub import hf_hub_download
start = time.perf_counter()
path = hf_hub_download(sys.argv[1], sys.argv[2], cache_dir=sys.argv[3])
elapsed = time.perf_counter() - start
import os
print(f"elapsed_s={elapsed:.6f} bytes={os.path.getsize(path)}")
"""


def parse(line: str) -> dict:
    return dict(part.split("=", 1) for part in line.split())


def run_once(command: list[str], env: dict) -> tuple[float, float, int]:
    """(call seconds, process seconds, bytes) of one command printing `elapsed_s=.. bytes=..`."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    process = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{command[0]} failed:\n{done.stderr}")
    fields = parse(done.stdout.strip().splitlines()[-1])
    return float(fields["elapsed_s"]), process, int(fields["bytes"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()

    if not args.no_build:
        subprocess.run(
            ["cargo", "build", "--release", "--example", "test_hub", "--example", "fetch_file"],
            cwd=REPO_ROOT,
            check=True,
        )
    hub = subprocess.Popen(
        [str(EXAMPLES / "test_hub"), "--big-file", REPO, FILE, str(args.size_mb)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        endpoint = hub.stdout.readline().strip()
        if not endpoint.startswith("http://"):
            raise SystemExit(f"test_hub printed no endpoint (got {endpoint!r})")
        env = dict(os.environ)
        env.update(
            HF_ENDPOINT=endpoint,
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            HF_HUB_DISABLE_IMPLICIT_TOKEN="1",
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
        )
        for name in ("HF_TOKEN", "HF_HUB_OFFLINE"):
            env.pop(name, None)

        ours = [str(EXAMPLES / "fetch_file"), "--endpoint", endpoint, "--repo", REPO, "--file", FILE]
        variants = {
            "ours (verify)": lambda cache: ours + ["--cache", cache],
            "ours (no verify)": lambda cache: ours + ["--cache", cache, "--no-verify"],
            "python hf_hub_download": lambda cache: [sys.executable, "-c", PYTHON_FETCH, REPO, FILE, cache],
        }
        results = {name: [] for name in variants}
        expected = args.size_mb * 1024 * 1024
        with tempfile.TemporaryDirectory(prefix="bench-download-") as work:
            for run in range(args.runs):
                for name, command in variants.items():
                    cache = str(Path(work) / f"cache-{run}-{len(results[name])}-{name[:4]}")
                    call, process, size = run_once(command(cache), env)
                    shutil.rmtree(cache)
                    if size != expected:
                        raise SystemExit(f"{name}: got {size} bytes, expected {expected}")
                    results[name].append((call, process))
                    print(f"  run {run + 1} {name:24} call {call:7.3f} s  process {process:7.3f} s",
                          file=sys.stderr)
    finally:
        hub.terminate()
        hub.wait()

    median = {
        name: (statistics.median(c for c, _ in r), statistics.median(p for _, p in r))
        for name, r in results.items()
    }
    print(f"\n{args.size_mb} MiB from the loopback test hub, median of {args.runs} runs "
          f"({os.cpu_count()} CPUs; huggingface_hub {metadata.version('huggingface_hub')}):\n")
    print(f"{'variant':24} {'call s':>8} {'MiB/s':>8} {'process s':>10}   runs (call s)")
    for name, (call, process) in median.items():
        runs = ", ".join(f"{c:.3f}" for c, _ in results[name])
        print(f"{name:24} {call:8.3f} {args.size_mb / call:8.1f} {process:10.3f}   {runs}")
    verify, no_verify, python = (median[n][0] for n in variants)
    print()
    print(f"python / ours (verify)    = {python / verify:.2f}x  (above 1: we are faster)")
    print(f"python / ours (no verify) = {python / no_verify:.2f}x")
    print(f"cost of verifying: ours (verify) / ours (no verify) = {verify / no_verify:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
