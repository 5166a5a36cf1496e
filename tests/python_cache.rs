//! The cache is shared with Python's `huggingface_hub` (see `docs/hub-protocol.md`): these tests
//! hold our cache to the one Python writes for the same downloads, recorded in
//! `tests/fixtures/python_cache_manifest.json` by `tools/hub_parity/python_cache_layout.py`
//! (Python fetched, from the `test_hub` example with `--tiny-kyutai-repos`, exactly the files
//! `download_models()` fetches). The reverse direction, our cache read by Python offline, needs
//! Python and is checked by that script.
//!
//! Regenerate the fixture when the tiny repos, the hub's commit hashing or the `huggingface_hub`
//! version change; the commit assertions below say when it is stale.
#![cfg(unix)]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use fluent_voice_kyutai::KyutaiModelManager;
use sha2::Digest;
use support::*;

/// What the script recorded (other fields of the file are for people).
#[derive(serde::Deserialize)]
struct PythonCache {
    huggingface_hub_version: String,
    /// Repo -> commit of `main` when Python downloaded.
    commits: BTreeMap<String, String>,
    /// Every entry of Python's cache, as [`cache_manifest`] writes it, nothing skipped.
    manifest: BTreeMap<String, CacheEntry>,
    /// The umask Python ran under, e.g. `"0022"`, and the permission bits (octal) it left on
    /// every entry but symlinks.
    umask: String,
    modes: BTreeMap<String, String>,
}

fn python_cache() -> PythonCache {
    serde_json::from_str(include_str!("fixtures/python_cache_manifest.json"))
        .expect("tests/fixtures/python_cache_manifest.json")
}

/// Our private folder, `models--*/.kyutai-verified/<etag>` (records of blobs already hashed).
/// `huggingface_hub` never looks at it: its `scan_cache_dir` reads only `blobs/`, `refs/` and
/// `snapshots/`, and reports no warning on a cache of ours (checked by the script).
const OURS_ONLY: &str = ".kyutai-verified";

/// Publishes the tiny repos and checks that the hub gives the commits the fixture was made with:
/// otherwise every path under `snapshots/` differs and the fixture must be regenerated.
fn publish_as_recorded(hub: &TestHub, python: &PythonCache) {
    let published = publish_defaults(hub);
    let commits: BTreeMap<String, String> = [
        (TTS.to_string(), published.tts),
        (STT.to_string(), published.stt),
        (VOICES.to_string(), published.voices),
    ]
    .into();
    assert_eq!(
        commits, python.commits,
        "the tiny repos changed since the fixture was recorded: rerun \
         tools/hub_parity/python_cache_layout.py"
    );
}

/// A readable list of what differs, one path a line, empty when equal.
fn differences<T: PartialEq + std::fmt::Debug>(
    python: &BTreeMap<String, T>,
    ours: &BTreeMap<String, T>,
) -> String {
    let mut lines = String::new();
    for path in python
        .keys()
        .chain(ours.keys().filter(|p| !python.contains_key(*p)))
    {
        match (python.get(path), ours.get(path)) {
            (Some(p), None) => lines += &format!("\n  only in Python's cache: {path} {p:?}"),
            (None, Some(o)) => lines += &format!("\n  only in ours:           {path} {o:?}"),
            (Some(p), Some(o)) if p != o => {
                lines += &format!("\n  differs: {path}\n    python {p:?}\n    ours   {o:?}")
            }
            _ => {}
        }
    }
    lines
}

/// `download_models()` into a fresh cache; returns the cache dir.
async fn download_into_fresh_cache(hub: &TestHub) -> tempfile::TempDir {
    let cache = tempfile::tempdir().unwrap();
    let manager = KyutaiModelManager::with_config(config(hub, cache.path())).unwrap();
    manager.download_models().await.unwrap();
    cache
}

/// Ours must be Python's cache entry for entry: the same folders, blobs (names, sizes, bytes),
/// `refs/main` contents, relative symlink texts, and lock files. Python leaves its lock files
/// behind (`filelock` releases the `flock` but never deletes the file) and so do we, so they are
/// compared too; so is `CACHEDIR.TAG`, which `huggingface_hub` (2.4) writes at the cache root on
/// every download, so that backup tools skip the cache. Only our private [`OURS_ONLY`] folder is
/// skipped.
#[tokio::test]
async fn our_cache_has_the_layout_python_writes() {
    let python = python_cache();
    let hub = TestHub::start();
    publish_as_recorded(&hub, &python);

    let cache = download_into_fresh_cache(&hub).await;

    let ours = cache_manifest(cache.path(), &[OURS_ONLY]);
    let differences = differences(&python.manifest, &ours);
    assert!(
        differences.is_empty(),
        "our cache differs from the one huggingface_hub {} writes for the same downloads:{differences}",
        python.huggingface_hub_version
    );
}

/// The permission bits matter when a cache is shared between users (Python makes lock files
/// group-writable so that others can wait on them, and leaves `refs/*` readable to all).
/// They depend on the umask, so the download runs in a child process (`kyutai download`, which
/// fetches what `download_models()` fetches) under the umask the fixture was made with, whatever
/// the umask of the tests.
#[tokio::test]
async fn our_permission_bits_match_python() {
    let python = python_cache();
    let hub = TestHub::start();
    publish_as_recorded(&hub, &python);

    let cache = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask {} && exec \"$0\" download --quiet --cache-dir \"$1\"",
            python.umask
        ))
        .arg(env!("CARGO_BIN_EXE_kyutai"))
        .arg(cache.path())
        .env("HF_ENDPOINT", hub.endpoint())
        .env("KYUTAI_TTS_MODEL", "dsm")
        .env("HF_HOME", home.path())
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The same files as `download_models()`: the layout test compares those with Python's.
    let fetched = cache_manifest(cache.path(), &[OURS_ONLY]);
    let expected: Vec<&String> = python.manifest.keys().collect();
    assert_eq!(fetched.keys().collect::<Vec<_>>(), expected);

    let ours = modes(cache.path(), &[OURS_ONLY]);
    let differences = differences(&python.modes, &ours);
    assert!(
        differences.is_empty(),
        "permission bits differ from huggingface_hub {}'s (umask {}):{differences}",
        python.huggingface_hub_version,
        python.umask
    );
}

/// A cache written by Python is used as it is: offline with no request at all, online with no
/// file transferred (metadata requests only), and nothing of Python's is changed or removed
/// (we only add our [`OURS_ONLY`] records).
#[tokio::test]
async fn a_cache_written_by_python_is_used_as_is() {
    let python = python_cache();
    let hub = TestHub::start();
    publish_as_recorded(&hub, &python);
    let cache = tempfile::tempdir().unwrap();
    materialize(cache.path(), &python);

    let offline =
        KyutaiModelManager::with_config(config(&hub, cache.path()).offline(true)).unwrap();
    let paths = offline.download_models().await.unwrap();
    assert_eq!(hub.requests(), vec![], "offline must not touch the hub");
    let tts = paths.tts().unwrap();
    assert_eq!(tts.commit, python.commits[TTS]);
    assert!(
        tts.lm_weights.starts_with(cache.path()),
        "{}",
        tts.lm_weights.display()
    );
    assert_eq!(paths.stt().unwrap().commit, python.commits[STT]);

    let online =
        KyutaiModelManager::with_config(config(&hub, cache.path()).offline(false)).unwrap();
    online.download_models().await.unwrap();
    assert_eq!(file_bytes_served(&hub), 0, "{:#?}", hub.requests());

    let after = cache_manifest(cache.path(), &[OURS_ONLY]);
    let differences = differences(&python.manifest, &after);
    assert!(
        differences.is_empty(),
        "Python's cache was changed:{differences}"
    );
}

/// Recreates Python's cache from the fixture: folders, symlinks with the same targets, and files
/// whose bytes are found by sha256 among everything Python could have written (the tiny repos'
/// files, the commits of `refs/`, empty lock files, `CACHEDIR.TAG`).
fn materialize(root: &Path, python: &PythonCache) {
    let mut by_sha256: HashMap<String, Vec<u8>> = HashMap::new();
    let mut add = |bytes: Vec<u8>| {
        by_sha256.insert(hex::encode(sha2::Sha256::digest(&bytes)), bytes);
    };
    let repos = [
        tiny::tts_repo(),
        tiny::stt_repo(),
        tiny::voices_repo(tiny::TTS_SPEAKER_DIM),
    ];
    for (_, bytes) in repos.into_iter().flatten() {
        add(bytes);
    }
    for commit in python.commits.values() {
        add(commit.as_bytes().to_vec());
    }
    add(Vec::new());
    add(CACHEDIR_TAG.as_bytes().to_vec());

    for (path, entry) in &python.manifest {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        match entry {
            CacheEntry::Dir => std::fs::create_dir_all(&path).unwrap(),
            CacheEntry::Symlink { target } => std::os::unix::fs::symlink(target, &path).unwrap(),
            CacheEntry::File { sha256, .. } => {
                let bytes = by_sha256.get(sha256).unwrap_or_else(|| {
                    panic!("no known content for {} (sha256 {sha256})", path.display())
                });
                std::fs::write(&path, bytes).unwrap();
            }
        }
    }
    assert_eq!(
        cache_manifest(root, &[]),
        python.manifest,
        "materialized exactly"
    );
}

/// What `huggingface_hub` writes to `<cache>/CACHEDIR.TAG` (`CACHEDIR_TAG_CONTENT` in
/// `huggingface_hub/_local_folder.py`, the Cache Directory Tagging standard).
const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by huggingface_hub.\n\
# For information about cache directory tags, see:\n\
#\thttps://bford.info/cachedir/\n";

/// Permission bits (octal) of every entry under `root` but symlinks, skipping names in `skip`.
fn modes(root: &Path, skip: &[&str]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .to_string();
            if relative.split('/').any(|part| skip.contains(&part)) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                continue;
            }
            if meta.is_dir() {
                stack.push(path);
            }
            out.insert(
                relative,
                format!("{:03o}", meta.permissions().mode() & 0o7777),
            );
        }
    }
    out
}
