#!/usr/bin/env python3
"""Record the cache layout Python's ``huggingface_hub`` writes for the files our
``download_models()`` fetches, so that ``tests/python_cache.rs`` can hold our cache to it.

Why: the cache is shared with Python (``docs/hub-protocol.md``, "Cache layout"). The Rust test
cannot run Python, so this script runs the real client once against the loopback test hub and
writes what it left on disk to ``tests/fixtures/python_cache_manifest.json``:

* ``manifest``: every entry under the cache dir, as ``relative/path -> entry`` in the format of
  ``cache_manifest`` in ``tests/support/mod.rs``: ``{"type": "dir"}``,
  ``{"type": "file", "size": N, "sha256": HEX}`` or ``{"type": "symlink", "target": RAW}``
  (the link text, unresolved). Nothing is skipped or normalised here: lock files, ``CACHEDIR.TAG``
  and anything else Python leaves are recorded as found; the Rust test says what it skips and why.
* ``modes``: the permission bits (octal) of every entry but symlinks, and ``umask``, the umask
  they were written under (they depend on it; the Rust test compares them only under the same);
* ``commits``: the commit of ``main`` of each repo (the hub's shas are deterministic, so the Rust
  test, which publishes the same tiny repos, must see the same ones);
* ``downloads``: what was fetched, in order; ``huggingface_hub``/``filelock``/Python versions;
  ``notes``: what Python left under ``.locks/`` and at the cache root.

Then, the reverse direction (not recorded, printed): our ``fetch_file`` example fills a second
cache with the same files, the hub is stopped, and ``hf_hub_download(..., local_files_only=True)``
must find every file there with the right bytes; ``scan_cache_dir`` must report no warning. The
layout of that cache (files fetched one by one rather than by ``download_models``) is also
compared with Python's, as a quick report.

Run by hand from anywhere (it builds the two release examples it needs)::

    python3 -m venv /tmp/hfvenv && /tmp/hfvenv/bin/pip install huggingface_hub==2.4.0
    /tmp/hfvenv/bin/python tools/hub_parity/python_cache_layout.py [--check]

``--check`` compares with the committed fixture instead of writing it (exit status 1 on change).
Regenerate the fixture whenever the tiny repos (``tests/support/tiny.rs``), the test hub's commit
hashing, or the ``huggingface_hub`` version change.
"""

import argparse
import hashlib
import json
import os
import platform
import stat
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "python_cache_manifest.json"
RELEASE_EXAMPLES = REPO_ROOT / "target" / "release" / "examples"

# The defaults of `KyutaiModelConfig` (and `TTS`/`STT`/`VOICES` in tests/support/mod.rs).
TTS = "kyutai/tts-1.6b-en_fr"
STT = "kyutai/stt-1b-en_fr-candle"
VOICES = "kyutai/tts-voices"
# `<default voice>.<sig>@<epoch>.safetensors`, with the tiny TTS's model_id (1e68beda, 240).
VOICE_FILE = "expresso/ex03-ex01_happy_001_channel1_334s.wav.1e68beda@240.safetensors"

# The loader's defaults for keys a config.json leaves out (src/models/repo_config.rs, after
# moshi's `CheckpointInfo.from_hf_repo`).
DEFAULT_NAMES = {
    "moshi_name": "model.safetensors",
    "mimi_name": "tokenizer-e351c8d8-checkpoint125.safetensors",
    "tokenizer_name": "tokenizer_spm_32k_3.model",
}


def build_examples() -> None:
    subprocess.run(
        ["cargo", "build", "--release", "--example", "test_hub", "--example", "fetch_file"],
        cwd=REPO_ROOT,
        check=True,
    )


class Hub:
    """The `test_hub` example serving the tiny Kyutai repos, for the length of a `with`."""

    def __enter__(self) -> "Hub":
        self.process = subprocess.Popen(
            [str(RELEASE_EXAMPLES / "test_hub"), "--tiny-kyutai-repos"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        # The endpoint is the first stdout line, printed once everything is published.
        self.endpoint = self.process.stdout.readline().strip()
        if not self.endpoint.startswith("http://"):
            self.process.kill()
            raise SystemExit(f"test_hub did not print an endpoint (got {self.endpoint!r})")
        return self

    def __exit__(self, *_exc) -> None:
        self.process.terminate()
        self.process.wait()


def set_environment(endpoint: str) -> None:
    """Point huggingface_hub at the test hub. Must run before it is imported: it reads these
    variables once, at import."""
    os.environ["HF_ENDPOINT"] = endpoint
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    # No token of the user's goes anywhere, even to the loopback hub.
    os.environ["HF_HUB_DISABLE_IMPLICIT_TOKEN"] = "1"
    os.environ.pop("HF_TOKEN", None)
    os.environ.pop("HF_HUB_OFFLINE", None)
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"


def model_files(config_path: str) -> list[str]:
    """The files our loader fetches after config.json, named the way it reads them."""
    config = json.loads(Path(config_path).read_text())
    names = []
    for key in ("moshi_name", "mimi_name", "tokenizer_name", "mimi_config_name"):
        name = config.get(key) or DEFAULT_NAMES.get(key)
        if name is None:
            continue  # mimi_config_name is optional
        if name.startswith(("hf://", "file://")):
            raise SystemExit(f"{key}={name!r}: only plain in-repo names are handled here")
        names.append(name)
    return names


def download_like_download_models(cache_dir: Path) -> list[dict]:
    """`download_models()` with Python: each model's config.json, the four files it names, then
    the default voice. (Ours fetches TTS and STT concurrently; the layout does not depend on the
    order.)"""
    from huggingface_hub import hf_hub_download

    downloads = []

    def fetch(repo: str, file: str) -> str:
        path = hf_hub_download(repo, file, cache_dir=cache_dir)
        downloads.append({"repo": repo, "file": file})
        return path

    for repo in (STT, TTS):
        for name in model_files(fetch(repo, "config.json")):
            fetch(repo, name)
    fetch(VOICES, VOICE_FILE)
    return downloads


def manifest(root: Path) -> dict:
    """Every entry under `root`, as `cache_manifest` in tests/support/mod.rs writes it."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[relative] = {"type": "symlink", "target": os.readlink(path)}
            elif path.is_dir():
                out[relative] = {"type": "dir"}
            else:
                data = path.read_bytes()
                out[relative] = {
                    "type": "file",
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
    return dict(sorted(out.items()))


def modes(root: Path) -> dict:
    """Permission bits of every entry under `root` but symlinks (whose own bits mean nothing)."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            if not path.is_symlink():
                out[path.relative_to(root).as_posix()] = format(stat.S_IMODE(path.lstat().st_mode), "03o")
    return dict(sorted(out.items()))


def current_umask() -> str:
    mask = os.umask(0)
    os.umask(mask)
    return format(mask, "04o")


def commits_of(cache_dir: Path) -> dict:
    return {
        repo: (cache_dir / f"models--{repo.replace('/', '--')}" / "refs" / "main").read_text()
        for repo in (TTS, STT, VOICES)
    }


def describe_leftovers(entries: dict) -> dict:
    """What a reader of the fixture wants to know without reading all of it."""
    locks = [p for p in entries if p.startswith(".locks/") and entries[p]["type"] != "dir"]
    root_files = [p for p in entries if "/" not in p and entries[p]["type"] != "dir"]
    return {
        "locks": (
            f"{len(locks)} lock file(s) remain under .locks/ after the downloads "
            "(filelock releases the flock but does not delete the file)"
            if locks
            else "no lock file remains under .locks/ (only the folders)"
        ),
        "lock_files": locks,
        "files_at_cache_root": root_files,
    }


def diff(expected: dict, actual: dict) -> list[str]:
    lines = []
    for path in sorted(expected.keys() | actual.keys()):
        if path not in actual:
            lines.append(f"  only in Python's cache: {path} {expected[path]}")
        elif path not in expected:
            lines.append(f"  only in ours:           {path} {actual[path]}")
        elif expected[path] != actual[path]:
            lines.append(f"  differs:                {path} python={expected[path]} ours={actual[path]}")
    return lines


def check_ours_read_by_python(
    endpoint: str, hub: Hub, downloads: list[dict], python_cache: Path, ours: Path
) -> bool:
    """Fill a cache with our `fetch_file`, stop the hub, and read it with Python offline."""
    from huggingface_hub import hf_hub_download, scan_cache_dir

    for d in downloads:
        subprocess.run(
            [
                str(RELEASE_EXAMPLES / "fetch_file"),
                "--endpoint", endpoint,
                "--cache", str(ours),
                "--repo", d["repo"],
                "--file", d["file"],
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    hub.__exit__()  # from here on, any request would fail

    ok = True
    for d in downloads:
        path = hf_hub_download(d["repo"], d["file"], cache_dir=ours, local_files_only=True)
        mine = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        theirs = hashlib.sha256(
            Path(hf_hub_download(d["repo"], d["file"], cache_dir=python_cache, local_files_only=True)).read_bytes()
        ).hexdigest()
        if mine != theirs:
            print(f"MISMATCH {d['repo']}/{d['file']}: ours {mine}, python {theirs}")
            ok = False
    info = scan_cache_dir(ours)
    for warning in info.warnings:
        print(f"scan_cache_dir warning: {warning}")
        ok = False
    files = sum(len(rev.files) for repo in info.repos for rev in repo.revisions)
    print(f"reverse: {len(downloads)} files fetched by fetch_file, read back by Python offline, "
          f"{len(info.repos)} repos / {files} files in scan_cache_dir: {'OK' if ok else 'FAILED'}")

    ours_manifest = {
        p: e for p, e in manifest(ours).items() if ".kyutai-verified" not in p.split("/")
    }
    differences = diff(manifest(python_cache), ours_manifest)
    print("layout of our cache (fetch_file, .kyutai-verified skipped) vs Python's:",
          "identical" if not differences else "")
    print("\n".join(differences))
    ours_modes = {p: m for p, m in modes(ours).items() if ".kyutai-verified" not in p.split("/")}
    python_modes = modes(python_cache)
    mode_differences = [
        f"  mode of {p}: python {python_modes[p]}, ours {ours_modes[p]}"
        for p in sorted(python_modes.keys() & ours_modes.keys())
        if python_modes[p] != ours_modes[p]
    ]
    print("permission bits of our cache vs Python's:", "identical" if not mode_differences else "")
    print("\n".join(mode_differences))
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the fixture, write nothing")
    parser.add_argument("--no-build", action="store_true", help="use the release examples as built")
    args = parser.parse_args()

    if not args.no_build:
        build_examples()
    with Hub() as hub, tempfile.TemporaryDirectory(prefix="hub-parity-") as work:
        set_environment(hub.endpoint)
        python_cache = Path(work) / "python"
        downloads = download_like_download_models(python_cache)
        entries = manifest(python_cache)
        record = {
            "generated_by": "tools/hub_parity/python_cache_layout.py",
            "huggingface_hub_version": metadata.version("huggingface_hub"),
            "filelock_version": metadata.version("filelock"),
            "python_version": platform.python_version(),
            "platform": sys.platform,
            "commits": commits_of(python_cache),
            "downloads": downloads,
            "notes": describe_leftovers(entries),
            "manifest": entries,
            "umask": current_umask(),
            "modes": modes(python_cache),
        }
        text = json.dumps(record, indent=2) + "\n"
        if args.check:
            old = json.loads(FIXTURE.read_text())
            changes = diff(old["manifest"], entries)
            same = not changes and all(old.get(k) == record[k] for k in ("commits", "modes", "umask"))
            print(f"fixture {'up to date' if same else 'differs'} ({FIXTURE.relative_to(REPO_ROOT)})")
            print("\n".join(changes))
        else:
            FIXTURE.write_text(text)
            same = True
            print(f"wrote {FIXTURE.relative_to(REPO_ROOT)}: {len(entries)} entries, "
                  f"huggingface_hub {record['huggingface_hub_version']}")
        print(json.dumps(record["notes"], indent=2))
        reverse_ok = check_ours_read_by_python(hub.endpoint, hub, downloads, python_cache, Path(work) / "ours")
    return 0 if same and reverse_ok else 1


if __name__ == "__main__":
    sys.exit(main())
