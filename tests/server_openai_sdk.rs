//! OpenAI's official Python SDK (pinned in `tools/openai_sdk/setup.sh`, which `tools/setup.sh`
//! runs) against `kyutai serve` on the tiny models: `tools/openai_sdk/check.py` makes the calls
//! an app makes, and this test compares what it got with the library's own output: the audio of
//! every format, the streamed response and the SSE events equal the library's samples for the
//! same seed; the words of every response format equal the library's; failures raise the SDK's
//! typed exceptions (`AuthenticationError`, `BadRequestError` naming the param, `NotFoundError`,
//! `RateLimitError` when the slots are full).

#[path = "support/openai.rs"]
mod openai_support;
#[path = "support/server.rs"]
mod server_support;
#[path = "support/stt_tiny.rs"]
mod stt_tiny;
mod support;

use std::path::{Path, PathBuf};

use openai_support::*;
use serde_json::{Value, json};
use server_support::*;
use support::*;

/// The venv's Python, or a failure that says how to make it.
fn sdk_python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/openai_sdk/.venv/bin/python");
    assert!(
        python.exists(),
        "OpenAI's Python SDK is not installed: run tools/setup.sh (or tools/openai_sdk/setup.sh)"
    );
    python
}

/// Runs `check.py` against the server with `flags`; returns its `results.json` and its folder.
async fn check(server: &TestServer, flags: &[&str]) -> (Value, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(sdk_python());
    command
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/openai_sdk/check.py"))
        .arg(server.http("/v1"))
        .arg(KEY)
        .arg(AUDIO)
        .arg(out.path())
        .args(flags)
        .env("NO_PROXY", "127.0.0.1")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("OPENAI_API_KEY");
    // The server runs on this runtime's other threads while the SDK's calls block this task.
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        output.status.success(),
        "check.py failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results = std::fs::read_to_string(out.path().join("results.json")).unwrap();
    (serde_json::from_str(&results).unwrap(), out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_official_sdk_speaks_transcribes_and_raises_typed_errors() {
    let server = server().await;
    let flags: &[&str] = if cfg!(feature = "opus") {
        &["--opus"]
    } else {
        &[]
    };
    let (results, out) = check(&server, flags).await;
    assert_eq!(results["sdk_version"], "3.63.0");

    // Speech: `alloy` is VOICE for the 1.6B; the SDK passed `seed` in `extra_body`.
    let expected = pcm16(&library_speech(&server, TEXT, VOICE, 7).await);
    let read = |name: &str| std::fs::read(out.path().join(name)).unwrap();
    assert_eq!(le_i16(&read("speech.wav")[44..]), expected, "wav");
    assert_eq!(le_i16(&read("speech.pcm")), expected, "pcm");
    assert_eq!(decode_flac(read("speech.flac")), expected, "flac");
    if cfg!(feature = "opus") {
        assert_eq!(&read("speech.opus")[..4], b"OggS");
    }
    assert_eq!(
        le_i16(&read("streamed.pcm")),
        expected,
        "with_streaming_response"
    );
    assert!(
        results["speech"]["streamed_pieces"].as_u64().unwrap() > 1,
        "streamed in pieces: {results}"
    );
    assert_eq!(le_i16(&read("sse.pcm")), expected, "stream_format sse");
    let events = results["speech"]["sse_events"].as_array().unwrap();
    assert_eq!(events.last().unwrap(), "speech.audio.done");
    assert!(
        events[..events.len() - 1]
            .iter()
            .all(|e| e == "speech.audio.delta")
    );
    assert_eq!(
        results["speech"]["sse_usage"]["output_tokens"],
        expected.len().div_ceil(1920)
    );

    // Transcriptions: the library's words, in each shape the SDK reads.
    let transcript = library_transcript(&server, &std::fs::read(AUDIO).unwrap()).await;
    let t = &results["transcriptions"];
    assert_eq!(t["json"], transcript.text.as_str());
    assert_eq!(t["verbose"]["text"], transcript.text.as_str());
    assert_eq!(
        t["verbose"]["duration"].as_f64().unwrap(),
        transcript.duration_ms as f64 / 1000.0
    );
    let words: Vec<Value> = transcript
        .words
        .iter()
        .map(|w| json!([w.text, w.start_ms as f64 / 1000.0, w.end_ms as f64 / 1000.0]))
        .collect();
    assert_eq!(t["verbose"]["words"], Value::Array(words));
    assert_eq!(t["srt"], transcript.to_srt().as_str());
    let deltas: String = t["stream"]["deltas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(deltas, transcript.text);
    assert_eq!(t["stream"]["done"], transcript.text.as_str());

    // The SDK's typed exceptions.
    let e = &results["errors"];
    assert_eq!(
        e["wrong_key"],
        json!(["AuthenticationError", 401, "invalid_api_key"])
    );
    assert_eq!(e["bad_voice"], json!(["BadRequestError", 400, "voice"]));
    assert_eq!(e["mp3"], json!(["BadRequestError", 400, "response_format"]));
    assert_eq!(e["bad_model"], json!(["BadRequestError", 400, "model"]));
    assert_eq!(e["no_model"], json!(["NotFoundError", 404]));
    let models: Vec<&str> = e["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    for id in ["tts-1", "whisper-1", TTS, STT] {
        assert!(models.contains(&id), "{id} in {models:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_slots_raise_the_sdks_rate_limit_error() {
    let server = server_with(1, relaxed_limits()).await;
    let _tts = server
        .connect("/api/tts_streaming?format=Pcm", Some(KEY))
        .await
        .unwrap();
    let mut asr = server
        .connect("/api/asr-streaming", Some(KEY))
        .await
        .unwrap();
    assert_eq!(next(&mut asr, LONG, false).await.unwrap().kind(), "Ready");
    server.wait_slots("/api/tts_streaming", 1).await;
    server.wait_slots("/api/asr-streaming", 1).await;
    let (results, _out) = check(&server, &["--busy"]).await;
    for route in ["speech", "transcription"] {
        assert_eq!(
            results["busy"][route],
            json!(["RateLimitError", 429, "1"]),
            "{route}"
        );
    }
}
