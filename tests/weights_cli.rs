//! `--weights` through the `kyutai` binary on the tiny models: q8 end to end through `say` and
//! `transcribe`, `download --weights` preparing the quantized files, `cache --verify` covering
//! them, and clear errors for settings that cannot be used.

#[path = "support/stt_tiny.rs"]
mod stt_tiny;
mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use fluent_voice_kyutai::internals::models::repo_folder_name;
use support::*;

const AUDIO: &str = "tests/fixtures/stt_parity/speech.wav";

fn kyutai(hub: &TestHub, cache: &Path, args: &[&str]) -> Output {
    let mut args = args.to_vec();
    args.push("--quiet");
    kyutai_command(hub, cache, &args)
        .output()
        .expect("the binary runs")
}

fn hub() -> TestHub {
    let hub = TestHub::start();
    publish_defaults(&hub);
    support::publish(&hub, STT, "main", &stt_tiny::stt_repo_talkative());
    hub
}

/// The derived files of a repository in the cache.
fn derived(cache: &Path, repo: &str) -> Vec<PathBuf> {
    let dir = cache.join(repo_folder_name(repo)).join(".kyutai-derived");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn transcribe_and_say_run_at_q8_and_derive_the_weights_once() {
    let hub = hub();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");

    let out = kyutai(
        &hub,
        &cache,
        &["transcribe", AUDIO, "--format", "json", "--weights", "q8"],
    );
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert_eq!(json["duration_ms"], 1600);
    assert!(json["words"].is_array());
    let files = derived(&cache, STT);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        files[0].to_string_lossy().ends_with(".q8_0.v1.gguf"),
        "{files:?}"
    );
    let built = std::fs::metadata(&files[0]).unwrap().modified().unwrap();

    // A second process reads the file as it is.
    let again = kyutai(&hub, &cache, &["transcribe", AUDIO, "--weights", "q8"]);
    assert!(again.status.success(), "{}", output_text(&again).1);
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().modified().unwrap(),
        built
    );
    // f32 (the tests' default through KYUTAI_WEIGHTS) derives nothing more.
    let plain = kyutai(&hub, &cache, &["transcribe", AUDIO]);
    assert!(plain.status.success());
    assert_eq!(derived(&cache, STT), files);

    let wav = dir.path().join("q8.wav");
    let out = kyutai(
        &hub,
        &cache,
        &[
            "say",
            "Hello from Rust.",
            "-o",
            wav.to_str().unwrap(),
            "--weights",
            "q8",
            "--temperature",
            "0",
        ],
    );
    assert!(out.status.success(), "{}", output_text(&out).1);
    let reader = hound::WavReader::open(&wav).unwrap();
    assert_eq!(reader.spec().sample_rate, 24_000);
    assert!(reader.len() > 1920, "some audio");
    assert_eq!(derived(&cache, TTS).len(), 1);
}

#[test]
fn download_prepares_the_weights_and_cache_verify_covers_them() {
    let hub = hub();
    let cache = tempfile::tempdir().unwrap();
    let cache = cache.path();
    let out = kyutai(&hub, cache, &["download", "--stt", "--weights", "q8"]);
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "{stderr}");
    let files = derived(cache, STT);
    assert_eq!(files.len(), 1, "{stdout}");
    assert!(
        stdout.contains(&files[0].display().to_string()),
        "the derived file is listed: {stdout}"
    );

    let listing = kyutai(&hub, cache, &["cache"]);
    let (stdout, _) = output_text(&listing);
    assert!(listing.status.success());
    let name = files[0].file_name().unwrap().to_string_lossy().to_string();
    let line = stdout
        .lines()
        .find(|l| l.contains(&name))
        .unwrap_or_else(|| panic!("listed: {stdout}"));
    assert!(line.contains("verified"), "{line}");

    // Damage it without changing its size or time: only a re-hash sees it.
    let modified = std::fs::metadata(&files[0]).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&files[0], &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&files[0])
        .unwrap()
        .set_modified(modified)
        .unwrap();
    let verify = kyutai(&hub, cache, &["cache", "--verify"]);
    let (stdout, stderr) = output_text(&verify);
    assert!(!verify.status.success(), "{stdout}");
    assert!(stderr.contains("derived file"), "{stderr}");
    assert!(stdout.contains("DAMAGED"), "{stdout}");
    assert!(!files[0].exists(), "the damaged file is removed");
    // The published files are untouched and still verified.
    assert!(
        stdout
            .lines()
            .filter(|l| l.contains("model.safetensors"))
            .all(|l| l.contains("ok")),
        "{stdout}"
    );

    // The next use builds it again.
    let out = kyutai(&hub, cache, &["transcribe", AUDIO, "--weights", "q8"]);
    assert!(out.status.success(), "{}", output_text(&out).1);
    assert_eq!(derived(cache, STT), files);
    let verify = kyutai(&hub, cache, &["cache", "--verify"]);
    assert!(verify.status.success(), "{}", output_text(&verify).0);
}

#[test]
fn unknown_settings_are_clear_errors_and_dense_ones_derive_nothing() {
    let hub = hub();
    let cache = tempfile::tempdir().unwrap();
    let out = kyutai(
        &hub,
        cache.path(),
        &["transcribe", AUDIO, "--weights", "q3"],
    );
    let (_, stderr) = output_text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("f32, f16, bf16, q8, q4"), "{stderr}");

    let out = kyutai(
        &hub,
        cache.path(),
        &["transcribe", AUDIO, "--weights", "bf16"],
    );
    // bf16 on the CPU runs (the GPU's precision, checked without a GPU) and derives nothing.
    let (_, stderr) = output_text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(derived(cache.path(), STT).is_empty());
}
