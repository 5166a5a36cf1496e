//! The library as an application meets it: one error story (categories, `moshi()`, `?` across
//! the error types, readable `Debug`), output helpers (samples, WAV, whole transcripts), the
//! voice list, and running on an executor that is not tokio.

#[path = "support/stt_tiny.rs"]
mod stt_tiny;
mod support;

use std::error::Error as _;

use fluent_voice_kyutai::audio::{WavFormat, write_wav};
use fluent_voice_kyutai::voice::{
    Speaker, SpeechSource, SttConversationBuilder, Transcript, TtsConversation,
    TtsConversationBuilder, VoiceError,
};
use fluent_voice_kyutai::{KyutaiEngine, KyutaiModelConfig, MoshiError};
use futures::StreamExt;
use support::*;

const AUDIO: &str = "tests/fixtures/stt_parity/speech.wav";

fn hub() -> TestHub {
    let hub = TestHub::start();
    publish_defaults(&hub);
    publish(&hub, STT, "main", &stt_tiny::stt_repo_talkative());
    hub
}

async fn engine(config: KyutaiModelConfig) -> KyutaiEngine {
    KyutaiEngine::with_config(config).await.unwrap()
}

async fn synthesize(engine: &KyutaiEngine, voice: &str) -> Result<Vec<f32>, VoiceError> {
    engine
        .tts()
        .with_speaker(
            Speaker::speaker("A")
                .speak("Hello from Rust.")
                .with_voice(voice)
                .build(),
        )
        .temperature(0.0)
        .synthesize()
        .await?
        .collect_samples()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_category_has_its_variant_its_cause_and_its_advice() {
    let hub = hub();
    let dir = tempfile::tempdir().unwrap();
    let online = engine(config(&hub, dir.path())).await;

    // Not found: the voice, with the engine's error behind it.
    let error = synthesize(&online, "nowhere/nobody.wav").await.unwrap_err();
    assert!(matches!(error, VoiceError::NotFound { .. }), "{error:?}");
    assert!(matches!(
        error.moshi(),
        Some(MoshiError::VoiceNotFound { voice, .. }) if voice == "nowhere/nobody.wav"
    ));
    assert!(
        error
            .to_string()
            .starts_with("Not found: the voice `nowhere/nobody.wav`")
    );

    // Offline: nothing cached, offline set in the configuration.
    let offline = engine(config(&hub, &dir.path().join("empty")).offline(true)).await;
    let error = synthesize(&offline, VOICE).await.unwrap_err();
    assert!(matches!(error, VoiceError::Offline { .. }), "{error:?}");
    assert!(matches!(
        error.moshi(),
        Some(MoshiError::OfflineNotCached { .. })
    ));
    assert!(
        error
            .to_string()
            .contains("KyutaiModelConfig::offline(true)"),
        "{error}"
    );

    // Network: the hub keeps failing.
    let failing = TestHub::start();
    failing.inject(Fault::new("config.json", FaultKind::Status(503)).times(usize::MAX));
    let down = engine(config(&failing, &dir.path().join("down")).max_attempts(2)).await;
    let error = synthesize(&down, VOICE).await.unwrap_err();
    assert!(matches!(error, VoiceError::Network { .. }), "{error:?}");
    assert!(matches!(
        error.moshi(),
        Some(MoshiError::Network { attempts: 2, .. })
    ));

    // I/O, with its kind: a missing audio file.
    let error = online
        .stt()
        .with_source(SpeechSource::from_file(dir.path().join("absent.wav")))
        .listen()
        .await
        .err()
        .unwrap();
    match &error {
        VoiceError::Io(io) => assert_eq!(io.kind(), std::io::ErrorKind::NotFound),
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert!(matches!(error.moshi(), Some(MoshiError::Io { .. })));

    // Invalid input: text that is not audio, told apart from a missing file by its type.
    let text = dir.path().join("notes.wav");
    std::fs::write(&text, "not audio\n".repeat(40)).unwrap();
    let error = online
        .stt()
        .with_source(SpeechSource::from_file(&text))
        .listen()
        .await
        .err()
        .unwrap();
    assert!(matches!(error, VoiceError::InvalidInput(_)), "{error:?}");

    // A round trip through the surface gives the engine's error back, whole.
    let back = MoshiError::from(synthesize(&online, "nowhere/nobody.wav").await.unwrap_err());
    assert!(matches!(back, MoshiError::VoiceNotFound { .. }), "{back:?}");
}

#[test]
fn debug_prints_the_message_and_its_causes() {
    let error = MoshiError::Network {
        url: "https://hub/x".into(),
        attempts: 3,
        reason: "timed out".into(),
        source: Some(std::sync::Arc::new(std::io::Error::other("socket closed"))),
    };
    let debug = format!("{error:?}");
    assert!(
        debug.starts_with("could not download https://hub/x after 3 attempt(s)"),
        "{debug}"
    );
    assert!(debug.ends_with("Caused by:\n    socket closed"), "{debug}");
    // Through the surface: the engine's message is not printed twice.
    let voice = VoiceError::from(error);
    let debug = format!("{voice:?}");
    assert_eq!(debug.matches("could not download").count(), 1, "{debug}");
    assert!(debug.contains("socket closed"), "{debug}");
    assert!(voice.source().is_some());
}

/// `?` works across the three error types, as an application mixes them.
#[test]
fn question_mark_converts_between_the_error_types() {
    fn configure_twice() -> Result<(), MoshiError> {
        let provider = fluent_voice_kyutai::internals::Provider::new();
        provider.configure(KyutaiModelConfig::default())?;
        provider.configure(KyutaiModelConfig::default())?;
        Ok(())
    }
    let error = configure_twice().unwrap_err();
    assert!(matches!(error, MoshiError::InvalidConfig(_)), "{error:?}");
    assert!(error.to_string().contains("second time"), "{error}");

    fn surface_in_engine_code() -> Result<(), MoshiError> {
        Err(VoiceError::InvalidInput("empty".into()))?
    }
    assert!(matches!(
        surface_in_engine_code().unwrap_err(),
        MoshiError::InvalidInput(m) if m == "empty"
    ));

    fn engine_in_surface_code() -> Result<(), VoiceError> {
        let provider = fluent_voice_kyutai::internals::Provider::new();
        provider.configure(KyutaiModelConfig::default())?;
        Err(MoshiError::Unsupported("no".into()))?
    }
    assert!(matches!(
        engine_in_surface_code().unwrap_err(),
        VoiceError::Unsupported(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_is_collected_and_saved_and_transcripts_come_whole() {
    let hub = hub();
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(config(&hub, dir.path())).await;

    let samples = synthesize(&engine, VOICE).await.unwrap();
    let mut stream = engine
        .tts()
        .with_speaker(
            Speaker::speaker("A")
                .speak("Hello from Rust.")
                .with_voice(VOICE)
                .build(),
        )
        .temperature(0.0)
        .synthesize()
        .await
        .unwrap()
        .into_stream();
    let mut streamed = Vec::new();
    while let Some(chunk) = stream.next().await {
        streamed.extend(chunk.unwrap().samples);
    }
    assert_eq!(
        samples, streamed,
        "collect_samples gives the stream's samples"
    );

    // A `&str` path, 16-bit: what a player reads back.
    let path = dir.path().join("hello.wav");
    write_wav(
        path.to_str().unwrap(),
        &samples,
        24_000,
        1,
        WavFormat::Pcm16,
    )
    .unwrap();
    let mut reader = hound::WavReader::open(&path).unwrap();
    assert_eq!(reader.spec().sample_rate, 24_000);
    let read: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    assert_eq!(read.len(), samples.len());
    let expected: Vec<i16> = samples
        .iter()
        .map(|s| (s.clamp(-1.0, 1.0) * 32767.0).round() as i16)
        .collect();
    assert_eq!(read, expected);
    // Float: exact.
    write_wav(&path, &samples, 24_000, 1, WavFormat::Float32).unwrap();
    let read: Vec<f32> = hound::WavReader::open(&path)
        .unwrap()
        .samples::<f32>()
        .map(Result::unwrap)
        .collect();
    assert_eq!(read, samples);
    // A failed write leaves the existing file as it was.
    let before = std::fs::read(&path).unwrap();
    let error = write_wav(&path, &samples, 0, 1, WavFormat::Pcm16).unwrap_err();
    assert!(error.to_string().contains("hello.wav"), "{error}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".wav-"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary file is left");

    // The whole transcript: text, words and duration together, as the CLI's JSON.
    let transcript = engine
        .stt()
        .with_source(SpeechSource::from_file(AUDIO))
        .listen()
        .await
        .unwrap()
        .transcript()
        .await
        .unwrap();
    assert_eq!(transcript.duration_ms, 1_600);
    assert!(!transcript.words.is_empty());
    let words: Vec<&str> = transcript.words.iter().map(|w| w.text.as_str()).collect();
    assert_eq!(transcript.text, words.join(" "));
    let json = serde_json::to_value(&transcript).unwrap();
    assert_eq!(
        json.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["duration_ms", "end_of_turn_ms", "text", "words"]
    );
    let back: Transcript = serde_json::from_value(json).unwrap();
    assert_eq!(back, transcript);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voices_are_listed_from_the_repository_once_and_offline_from_the_cache() {
    let hub = hub();
    // The Hub pages long file lists: two entries a page here.
    hub.paginate_trees(2);
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(config(&hub, dir.path())).await;
    let mut expected: Vec<String> = tiny::VOICE_NAMES.iter().map(|v| v.to_string()).collect();
    expected.sort();
    assert_eq!(engine.voices().await.unwrap(), expected);
    let listings = || {
        hub.requests()
            .iter()
            .filter(|r| r.path.contains("/tree/"))
            .count()
    };
    let pages = listings();
    assert!(pages > 2, "followed the pages: {pages}");
    assert_eq!(engine.voices().await.unwrap(), expected);
    assert_eq!(listings(), pages, "asked once per engine");

    // Offline: the voices in the cache.
    engine.ensure_voice(VOICE).await.unwrap();
    let offline = self::engine(config(&hub, dir.path()).offline(true)).await;
    assert_eq!(offline.voices().await.unwrap(), [VOICE]);
}

/// Not under tokio: `futures::executor::block_on` drives the whole thing (the crate runs its
/// network and blocking work on a runtime of its own).
#[test]
fn works_on_an_executor_that_is_not_tokio() {
    let hub = hub();
    let dir = tempfile::tempdir().unwrap();
    futures::executor::block_on(async {
        let engine = KyutaiEngine::with_config(config(&hub, dir.path()))
            .await
            .unwrap();
        let samples = synthesize(&engine, VOICE).await.unwrap();
        assert!(samples.len() >= 1920);
        let transcript = engine
            .stt()
            .with_source(SpeechSource::from_file(AUDIO))
            .listen()
            .await
            .unwrap()
            .transcript()
            .await
            .unwrap();
        assert!(!transcript.words.is_empty());
    });
}
