//! The tiny Pocket TTS model of `tests/fixtures/pocket` (made by
//! `tools/parity/pocket/make_reference.py`): served by the loopback hub as
//! `kyutai-test/pocket-tts`, with the reference's recorded cases.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::TestHub;

/// The fixture repo's name on the test hub (its YAMLs' `hf://` paths name it).
pub const REPO: &str = "kyutai-test/pocket-tts";
/// The same files as a gated repository (401 without a token).
pub const GATED: &str = "kyutai-test/pocket-tts-gated";

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pocket")
}

/// Every file of the fixture repo, as the hub serves it.
pub fn repo_files() -> Vec<(String, Vec<u8>)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                let name = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                out.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    let root = fixtures().join("repo");
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    files
}

/// Publishes the fixture repo, and its gated copy.
pub fn publish_pocket(hub: &TestHub) {
    super::publish(hub, REPO, "main", &repo_files());
    super::publish(hub, GATED, "main", &repo_files());
    hub.require_token(GATED, "hf_secret");
}

/// A reference case of `cases.json`.
pub fn case(name: &str) -> Value {
    let all: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("cases.json")).unwrap())
            .unwrap();
    all["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name}"))
        .clone()
}

/// The reference's waveform of a case.
pub fn reference_pcm(name: &str) -> Vec<f32> {
    let file = fixtures().join(format!("cases/{name}.safetensors"));
    let t = candle_core::safetensors::load(file, &candle_core::Device::Cpu).unwrap();
    t["pcm"].to_vec1::<f32>().unwrap()
}

/// The tiny config with `eos_threshold` as its default (a recorded case's, so that generation
/// ends where the reference's did), optionally with the gated repository as `weights_path`,
/// written to `dir`.
pub fn config_file(dir: &Path, eos_threshold: f64, gated: bool) -> PathBuf {
    let mut yaml = std::fs::read_to_string(fixtures().join("tiny.yaml")).unwrap();
    if gated {
        yaml = yaml.replacen(
            &format!("weights_path: hf://{REPO}/"),
            &format!("weights_path: hf://{GATED}/"),
            1,
        );
    }
    yaml.push_str(&format!("default_eos_threshold: {eos_threshold}\n"));
    let path = dir.join("pocket-tiny.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// The largest difference between two waveforms of the same length.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
