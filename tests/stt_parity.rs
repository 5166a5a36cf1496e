//! STT parity with the Python reference: the talkative tiny STT repo
//! (`tests/support/stt_tiny.rs`), served by the loopback hub, transcribes
//! `tests/fixtures/stt_parity/speech.wav` through `KyutaiEngine::stt()` to the same text tokens
//! and word timings as `tools/parity/stt/stt_reference.py` computed with the Python `moshi`
//! package on the same files (`tests/fixtures/stt_parity/reference.json`).

#[path = "support/stt_tiny.rs"]
mod stt_tiny;
mod support;

use fluent_voice_kyutai::KyutaiEngine;
use fluent_voice_kyutai::SttModel;
use fluent_voice_kyutai::voice::{
    SpeechSource, SttConversation, SttConversationBuilder, TranscriptionSegment,
};
use futures::StreamExt;
use serde_json::Value;
use support::TestHub;

const AUDIO: &str = "tests/fixtures/stt_parity/speech.wav";

fn reference() -> Value {
    serde_json::from_str(include_str!("fixtures/stt_parity/reference.json")).unwrap()
}

/// Writes the talkative repo where the Python script can load it:
/// `STT_PARITY_DUMP_DIR=/tmp/stt-talkative cargo test --test stt_parity dump_talkative_repo`.
#[test]
fn dump_talkative_repo() {
    let Some(dir) = std::env::var_os("STT_PARITY_DUMP_DIR") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    for (path, bytes) in stt_tiny::stt_repo_talkative() {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

fn reference_words(r: &Value) -> Vec<TranscriptionSegment> {
    r["words"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            TranscriptionSegment::new(
                w["text"].as_str().unwrap(),
                w["start_ms"].as_u64().unwrap(),
                w["end_ms"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn engine(hub: &TestHub, cache: &std::path::Path) -> KyutaiEngine {
    support::publish(hub, support::STT, "main", &stt_tiny::stt_repo_talkative());
    KyutaiEngine::with_config(support::config(hub, cache))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn words_and_timings_match_python() {
    let r = reference();
    let hub = TestHub::start();
    let cache = tempfile::tempdir().unwrap();
    let engine = engine(&hub, cache.path()).await;
    let conversation = engine
        .stt()
        .with_source(SpeechSource::from_file(AUDIO))
        .listen()
        .await
        .unwrap();
    let duration = conversation.audio_duration();
    let words: Vec<TranscriptionSegment> = conversation
        .into_stream()
        .map(|w| w.unwrap())
        .collect()
        .await;
    let expected = reference_words(&r);
    assert!(expected.len() >= 5, "the reference has words: {expected:?}");
    assert_eq!(words, expected);
    assert_eq!(duration.ms(), r["duration_ms"].as_u64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_tokens_match_python_step_by_step() {
    let r = reference();
    let hub = TestHub::start();
    let cache = tempfile::tempdir().unwrap();
    let engine = engine(&hub, cache.path()).await;
    let model: std::sync::Arc<SttModel> = engine.stt_model().await.unwrap();
    let mut transcriber = model
        .transcriber(fluent_voice_kyutai::models::WhenBusy::Wait)
        .unwrap();
    transcriber.record_text_tokens();
    let mut words = Vec::new();
    fluent_voice_kyutai::internals::stt::transcribe_blocking(
        SpeechSource::from_file(AUDIO),
        &mut transcriber,
        |w| {
            words.push(w);
            true
        },
    )
    .unwrap();
    let expected: Vec<u32> = r["text_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(transcriber.steps(), expected.len());
    // The state machine shows a step's token as the next step's input: all but the last.
    assert_eq!(transcriber.text_tokens(), expected[..expected.len() - 1]);
    assert_eq!(words, reference_words(&r));
}
