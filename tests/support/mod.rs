//! Shared by the integration tests: the loopback hub, the tiny repos, and small helpers.
#![allow(dead_code)]

pub mod hub;
pub mod pocket;
pub mod stt_reference;
pub mod tiny;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use fluent_voice_kyutai::KyutaiModelConfig;
use fluent_voice_kyutai::models::{ProgressMode, TtsFamily, Weights};

#[allow(unused_imports)]
pub use hub::{Fault, FaultKind, LoggedRequest, TestHub};

/// The default repositories, so that zero-setup code paths work against the test hub.
pub const TTS: &str = "kyutai/tts-1.6b-en_fr";
pub const STT: &str = "kyutai/stt-1b-en_fr-candle";
pub const VOICES: &str = "kyutai/tts-voices";
pub const VOICE: &str = "expresso/ex03-ex01_happy_001_channel1_334s.wav";

/// Commits of the published default repos.
pub struct Published {
    pub tts: String,
    pub stt: String,
    pub voices: String,
}

fn as_refs(files: &[(String, Vec<u8>)]) -> Vec<(&str, Vec<u8>)> {
    files.iter().map(|(p, b)| (p.as_str(), b.clone())).collect()
}

/// Publishes the tiny TTS, STT and voices repos under the default names.
pub fn publish_defaults(hub: &TestHub) -> Published {
    Published {
        tts: hub.publish(TTS, "main", &as_refs(&tiny::tts_repo())),
        stt: hub.publish(STT, "main", &as_refs(&tiny::stt_repo())),
        voices: hub.publish(
            VOICES,
            "main",
            &as_refs(&tiny::voices_repo(tiny::TTS_SPEAKER_DIM)),
        ),
    }
}

/// Publishes the direct-CFG tiny TTS ([`tiny::tts_repo_direct_cfg`]: no `cfg` conditioner) as
/// the default TTS repo, and the voices for it.
pub fn publish_direct_cfg(hub: &TestHub) {
    publish(hub, TTS, "main", &tiny::tts_repo_direct_cfg());
    publish(
        hub,
        VOICES,
        "main",
        &tiny::voices_repo(tiny::TTS_SPEAKER_DIM),
    );
}

/// Publishes a repo from a list of owned files.
pub fn publish(hub: &TestHub, repo: &str, branch: &str, files: &[(String, Vec<u8>)]) -> String {
    hub.publish(repo, branch, &as_refs(files))
}

/// The bytes of one file of a repo built by `tiny`.
pub fn repo_file(files: &[(String, Vec<u8>)], path: &str) -> Vec<u8> {
    files
        .iter()
        .find(|(p, _)| p == path)
        .unwrap_or_else(|| panic!("{path} is not in the repo"))
        .1
        .clone()
}

/// The `kyutai` binary, pointed at the hub and a cache dir, with a clean hub environment.
pub fn kyutai_command(hub: &TestHub, cache: &Path, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_kyutai"));
    command
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .env("HF_ENDPOINT", hub.endpoint())
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_HUB_DISABLE_PROGRESS_BARS")
        .env("HF_HOME", cache.join("hf-home"))
        .env("NO_PROXY", "127.0.0.1,localhost")
        // The tiny models' references are f32 runs; tests of other weights pass `--weights`.
        .env("KYUTAI_WEIGHTS", "f32")
        // The tiny DSM TTS under the default names; Pocket's tests pass `--tts-model`.
        .env("KYUTAI_TTS_MODEL", "dsm");
    command
}

/// Standard output and error of a finished process, as text.
pub fn output_text(output: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

/// The device the model tests run on: `KYUTAI_TEST_DEVICE` (`cpu`, `cuda`, `cuda:N`, `metal`),
/// else the CPU. `tools/gpu-check.sh` sets it to run the tiny-model tests on a GPU.
pub fn test_device() -> fluent_voice_kyutai::models::Device {
    match std::env::var("KYUTAI_TEST_DEVICE") {
        Ok(name) => name
            .parse()
            .unwrap_or_else(|e| panic!("KYUTAI_TEST_DEVICE: {e}")),
        Err(_) => fluent_voice_kyutai::models::Device::Cpu,
    }
}

/// A config pointing at the hub and a cache dir, quiet, with fast retries, on [`test_device`].
pub fn config(hub: &TestHub, cache: &Path) -> KyutaiModelConfig {
    KyutaiModelConfig::default()
        .device(test_device())
        .endpoint(hub.endpoint())
        .cache_dir(cache)
        .offline(false)
        .progress(ProgressMode::Quiet)
        .retry_backoff(Duration::from_millis(10))
        .read_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(2))
        // The tiny models' references are f32 runs; tests of other weights set their own.
        .weights(Weights::F32)
        // The tiny DSM TTS is published under the default names (on the CPU the default
        // family would be Pocket TTS); Pocket's tests set their own.
        .tts_model(TtsFamily::Dsm)
}

/// The number of GETs for paths ending in `suffix` that transferred body bytes.
pub fn downloads_of(hub: &TestHub, suffix: &str) -> usize {
    hub.requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(suffix) && r.body_bytes > 0)
        .count()
}

/// Total body bytes of all file GETs (`/resolve/` paths).
pub fn file_bytes_served(hub: &TestHub) -> u64 {
    hub.requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/resolve/"))
        .map(|r| r.body_bytes)
        .sum()
}

/// One entry of a cache directory, as compared between clients.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum CacheEntry {
    Dir,
    File { size: u64, sha256: String },
    Symlink { target: String },
}

/// Walks a cache directory into `relative path -> entry`, skipping `skip` (top-level names or
/// names anywhere in the path).
pub fn cache_manifest(root: &Path, skip: &[&str]) -> BTreeMap<String, CacheEntry> {
    use sha2::Digest;
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let relative = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            if relative.split('/').any(|part| skip.contains(&part)) {
                continue;
            }
            let kind = entry.file_type().unwrap();
            if kind.is_symlink() {
                let target = std::fs::read_link(&path)
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                out.insert(relative, CacheEntry::Symlink { target });
            } else if kind.is_dir() {
                out.insert(relative, CacheEntry::Dir);
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
                out.insert(
                    relative,
                    CacheEntry::File {
                        size: bytes.len() as u64,
                        sha256,
                    },
                );
            }
        }
    }
    out
}
