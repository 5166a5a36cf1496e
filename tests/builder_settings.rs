//! Builder settings do what they say or are refused: languages (the models speak English and
//! French; others are `Unsupported`), word timestamps (off: phrases timed as a whole), speed
//! (Kyutai's models have one speed), and non-finite input.

#[path = "support/stt_tiny.rs"]
mod stt_tiny;
mod support;

use fluent_voice_kyutai::KyutaiEngine;
use fluent_voice_kyutai::voice::{
    Language, Speaker, SpeechSource, SttConversation, SttConversationBuilder, Transcript,
    TranscriptionSegment, TtsConversation, TtsConversationBuilder, VoiceError,
};
use futures::StreamExt;
use support::*;

const AUDIO: &str = "tests/fixtures/stt_parity/speech.wav";

async fn engine(hub: &TestHub, cache: &tempfile::TempDir) -> KyutaiEngine {
    KyutaiEngine::with_config(config(hub, cache.path()))
        .await
        .unwrap()
}

fn hub() -> TestHub {
    let hub = TestHub::start();
    publish_defaults(&hub);
    publish(&hub, STT, "main", &stt_tiny::stt_repo_talkative());
    hub
}

fn german() -> Language {
    "de".parse().unwrap()
}

/// The first chunk of speech, or the error.
async fn speak(builder: fluent_voice_kyutai::KyutaiTtsBuilder) -> Result<usize, VoiceError> {
    let mut stream = builder.synthesize().await?.into_stream();
    let mut samples = 0;
    while let Some(chunk) = stream.next().await {
        samples += chunk?.samples.len();
    }
    Ok(samples)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tts_languages_are_checked_against_the_model() {
    let hub = hub();
    let cache = tempfile::tempdir().unwrap();
    let engine = engine(&hub, &cache).await;
    assert_eq!(
        engine.tts_languages(),
        [Language::English, Language::French]
    );
    let line = |language: Option<Language>| {
        let mut speaker = Speaker::speaker("A").speak("Hello.");
        if let Some(language) = language {
            speaker = speaker.language(language);
        }
        speaker.build()
    };
    for language in [Language::English, Language::French] {
        let builder = engine
            .tts()
            .with_speaker(line(None))
            .language(language.clone());
        assert!(speak(builder.temperature(0.0)).await.unwrap() > 0);
        let builder = engine.tts().with_speaker(line(Some(language)));
        assert!(speak(builder.temperature(0.0)).await.unwrap() > 0);
    }
    let error = speak(engine.tts().with_speaker(line(None)).language(german()))
        .await
        .unwrap_err();
    assert!(matches!(error, VoiceError::Unsupported(_)), "{error:?}");
    assert!(error.to_string().contains("does not speak `de`"), "{error}");
    assert!(error.to_string().contains("en and fr"), "{error}");
    let error = speak(engine.tts().with_speaker(line(Some(german()))))
        .await
        .unwrap_err();
    assert!(matches!(error, VoiceError::Unsupported(_)), "{error:?}");
    // The model was fetched once, for the requests that ran.
    assert_eq!(downloads_of(&hub, tiny::TTS_MOSHI_NAME), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speed_is_validated_and_only_normal_speed_is_spoken() {
    let hub = hub();
    let cache = tempfile::tempdir().unwrap();
    let engine = engine(&hub, &cache).await;
    let at = |speed: f32| {
        engine
            .tts()
            .with_speaker(Speaker::speaker("A").speak("Hello.").speed(speed).build())
            .temperature(0.0)
    };
    for bad in [-5.0, 0.0, f32::NAN, f32::INFINITY] {
        let error = speak(at(bad)).await.unwrap_err();
        assert!(
            matches!(error, VoiceError::InvalidInput(_)),
            "{bad}: {error:?}"
        );
        assert!(
            error
                .to_string()
                .contains("speed must be a positive number"),
            "{error}"
        );
    }
    let error = speak(at(1.5)).await.unwrap_err();
    assert!(matches!(error, VoiceError::Unsupported(_)), "{error:?}");
    assert!(error.to_string().contains("one speed"), "{error}");
    assert!(speak(at(1.0)).await.unwrap() > 0);
    // Nothing was fetched for the refused requests: validation comes first.
    assert_eq!(downloads_of(&hub, tiny::TTS_MOSHI_NAME), 1);
}

async fn transcribe(
    engine: &KyutaiEngine,
    word_timestamps: bool,
    language: Option<Language>,
) -> Result<Vec<TranscriptionSegment>, VoiceError> {
    let mut builder = engine
        .stt()
        .with_source(SpeechSource::from_file(AUDIO))
        .word_timestamps(word_timestamps);
    if let Some(language) = language {
        builder = builder.language_hint(language);
    }
    let mut stream = builder.listen().await?.into_stream();
    let mut segments = Vec::new();
    while let Some(segment) = stream.next().await {
        segments.push(segment?);
    }
    Ok(segments)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stt_language_hints_are_checked_and_word_timestamps_can_be_turned_off() {
    let hub = hub();
    let cache = tempfile::tempdir().unwrap();
    let engine = engine(&hub, &cache).await;

    let words = transcribe(&engine, true, Some(Language::French))
        .await
        .unwrap();
    assert!(words.len() >= 4, "{words:?}");
    assert!(words.iter().all(|w| !w.text.contains(' ')), "one word each");

    // Without word timestamps: phrases, each the words it groups, timed from its first word's
    // start to its last word's end (the grouping `Transcript::phrases` gives).
    let phrases = transcribe(&engine, false, None).await.unwrap();
    let expected = Transcript::from_words(words.clone(), 0).phrases();
    assert_eq!(phrases, expected);
    assert!(phrases.len() < words.len(), "{phrases:?}");
    let joined: Vec<String> = phrases.iter().map(|p| p.text.clone()).collect();
    let all: Vec<&str> = words.iter().map(|w| w.text.as_str()).collect();
    assert_eq!(joined.join(" "), all.join(" "));
    assert_eq!(phrases[0].start_ms, words[0].start_ms);
    assert_eq!(phrases.last().unwrap().end_ms, words.last().unwrap().end_ms);

    let error = transcribe(&engine, true, Some(german())).await.unwrap_err();
    assert!(matches!(error, VoiceError::Unsupported(_)), "{error:?}");
    assert!(
        error.to_string().contains("does not understand `de`"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_finite_pcm_is_refused() {
    let hub = hub();
    let cache = tempfile::tempdir().unwrap();
    let engine = engine(&hub, &cache).await;
    let mut samples = vec![0.1f32; 24_000];
    samples[100] = f32::NAN;
    let error = engine
        .stt()
        .with_source(SpeechSource::from_pcm(samples, 24_000, 1))
        .listen()
        .await
        .err()
        .unwrap();
    assert!(matches!(error, VoiceError::InvalidInput(_)), "{error:?}");
    assert!(error.to_string().contains("index 100"), "{error}");
}
