//! `kyutai transcribe` as a separate process against the loopback hub, and `Kyutai::stt()`
//! (the process-wide provider).

#[path = "support/stt_tiny.rs"]
mod stt_tiny;
mod support;

use std::path::Path;
use std::process::Output;
use support::stt_reference;

use fluent_voice_kyutai::Kyutai;
use fluent_voice_kyutai::voice::{
    FluentVoice, SpeechSource, SttConversation, SttConversationBuilder,
};
use serde_json::{Value, json};
use stt_reference::AUDIO;
use support::TestHub;

/// The text and words the Python reference gives for the fixture audio, in the transcriber's
/// conventions (`tests/support/stt_reference.rs`), as `--format json` writes them.
fn reference() -> Value {
    let case = stt_reference::case("plain");
    let words: Vec<Value> = stt_reference::expected_words(&case)
        .iter()
        .map(|w| json!({"text": w.text, "start_ms": w.start_ms, "end_ms": w.end_ms}))
        .collect();
    json!({"text": stt_reference::expected_text(&case), "words": words})
}

fn kyutai(hub: &TestHub, cache: &Path, args: &[&str]) -> Output {
    let mut args = args.to_vec();
    args.push("--quiet");
    support::kyutai_command(hub, cache, &args)
        .output()
        .expect("the binary runs")
}

fn hub() -> TestHub {
    let hub = TestHub::start();
    support::publish(&hub, support::STT, "main", &stt_tiny::stt_repo_talkative());
    hub
}

#[test]
fn json_text_and_srt_outputs() {
    let hub = hub();
    let cache = tempfile::tempdir().unwrap();
    let r = reference();

    let out = kyutai(
        &hub,
        cache.path(),
        &["transcribe", AUDIO, "--format", "json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(json["text"], r["text"]);
    assert_eq!(json["words"], r["words"]);
    assert_eq!(json["duration_ms"], 1600);
    let keys: Vec<&str> = json["words"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["end_ms", "start_ms", "text"]);

    let out = kyutai(&hub, cache.path(), &["transcribe", AUDIO]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r["text"].as_str().unwrap()
    );

    let out = kyutai(
        &hub,
        cache.path(),
        &["transcribe", AUDIO, "--format", "srt"],
    );
    assert!(out.status.success());
    let srt = String::from_utf8_lossy(&out.stdout).to_string();
    let first: Vec<&str> = srt.lines().take(3).collect();
    assert_eq!(first[0], "1");
    assert!(
        first[1].starts_with("00:00:0") && first[1].contains(" --> "),
        "{srt}"
    );
    let words = r["words"].as_array().unwrap();
    assert!(
        first[2].starts_with(words[0]["text"].as_str().unwrap()),
        "{srt}"
    );
    let srt_words: usize = srt
        .split("\n\n")
        .filter_map(|cue| cue.lines().nth(2))
        .map(|l| l.split(' ').count())
        .sum();
    assert_eq!(srt_words, words.len());
}

#[test]
fn bad_files_exit_with_a_clear_message() {
    let hub = hub();
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("letter.wav");
    std::fs::write(&text, "Dear reader,\n".repeat(30)).unwrap();
    let missing = dir.path().join("missing.wav");
    for (path, needle) in [
        (&missing, "could not open the audio file"),
        (&text, "invalid input"),
    ] {
        let out = kyutai(&hub, cache.path(), &["transcribe", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("error: ") && err.contains(needle), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let out = kyutai(&hub, cache.path(), &["transcribe", text.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not audio"));
    let out = kyutai(
        &hub,
        cache.path(),
        &["transcribe", missing.to_str().unwrap()],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such file"));
}

/// The zero-setup path: `Kyutai::stt()` on the process-wide provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kyutai_stt_transcribes_with_the_global_provider() {
    let hub = hub();
    let cache = tempfile::tempdir().unwrap();
    Kyutai::configure(support::config(&hub, cache.path())).unwrap();
    let text = Kyutai::stt()
        .with_source(SpeechSource::from_file(AUDIO))
        .listen()
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(text, reference()["text"].as_str().unwrap());
}
