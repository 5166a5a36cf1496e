//! Text-to-speech end to end on the tiny TTS repo, through the loopback hub: the fluent builder
//! on an engine, streaming, several speakers, seeds and temperatures, and every bad input the
//! issue lists.

mod support;

use std::time::Duration;

use fluent_voice_kyutai::KyutaiEngine;
use fluent_voice_kyutai::voice::{
    AudioChunk, Speaker, TtsConversation, TtsConversationBuilder, TtsEngine, VoiceError,
};
use futures::StreamExt;
use support::*;

struct Setup {
    engine: KyutaiEngine,
    hub: TestHub,
    _cache: tempfile::TempDir,
}

async fn setup() -> Setup {
    let hub = TestHub::start();
    publish_defaults(&hub);
    let cache = tempfile::tempdir().unwrap();
    let engine = KyutaiEngine::with_config(config(&hub, cache.path()))
        .await
        .unwrap();
    Setup {
        engine,
        hub,
        _cache: cache,
    }
}

fn line(text: &str) -> Speaker {
    Speaker::speaker("A").speak(text).build()
}

async fn collect(
    builder: fluent_voice_kyutai::KyutaiTtsBuilder,
) -> Result<Vec<AudioChunk>, VoiceError> {
    let mut stream = builder.synthesize().await?.into_stream();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.next().await {
        chunks.push(chunk?);
    }
    Ok(chunks)
}

fn samples(chunks: &[AudioChunk]) -> Vec<f32> {
    chunks
        .iter()
        .flat_map(|c| c.samples.iter().copied())
        .collect()
}

#[tokio::test]
async fn speech_streams_as_24khz_chunks_and_the_seed_fixes_the_audio() {
    let s = setup().await;
    let make = |seed| {
        s.engine
            .conversation()
            .with_speaker(line("Hello from Rust."))
            .seed(seed)
            .temperature(0.8)
    };
    let a = collect(make(7)).await.unwrap();
    assert!(a.len() > 3, "several chunks, one per Mimi frame");
    assert!(a.iter().all(|c| c.sample_rate == 24_000));
    assert!(a.iter().all(|c| c.samples.len() == 1920));
    assert!(a.last().unwrap().is_final);
    assert!(a[..a.len() - 1].iter().all(|c| !c.is_final));
    assert_eq!(a[1].start_ms, 80, "start times follow the samples");
    assert!(samples(&a).iter().all(|x| x.abs() <= 1.0));

    let again = collect(make(7)).await.unwrap();
    assert_eq!(samples(&a), samples(&again), "same seed, same audio");
    let other = collect(make(8)).await.unwrap();
    assert_ne!(samples(&a), samples(&other), "another seed, other audio");

    // Greedy decoding does not depend on the seed.
    let greedy = |seed| {
        s.engine
            .tts()
            .with_speaker(line("Hello from Rust."))
            .seed(seed)
            .temperature(0.0)
    };
    assert_eq!(
        samples(&collect(greedy(1)).await.unwrap()),
        samples(&collect(greedy(2)).await.unwrap())
    );
    // The model is loaded once per engine and the voice fetched once.
    assert_eq!(downloads_of(&s.hub, tiny::TTS_MOSHI_NAME), 1);
    assert_eq!(downloads_of(&s.hub, &tiny::voice_file(VOICE)), 1);
}

#[tokio::test]
async fn several_speakers_play_in_order_with_their_own_voices() {
    let s = setup().await;
    let first = Speaker::speaker("A")
        .with_voice(tiny::VOICE_NAMES[1])
        .speak("Hello from Rust.")
        .build();
    let second = Speaker::speaker("B")
        .with_voice(tiny::VOICE_NAMES[2])
        .speak("Bonjour, je m'appelle Léa.")
        .build();
    let both = collect(
        s.engine
            .tts()
            .with_speaker(first.clone())
            .with_speaker(second.clone())
            .temperature(0.0),
    )
    .await
    .unwrap();
    let alone = |speaker: Speaker| s.engine.tts().with_speaker(speaker).temperature(0.0);
    let a = samples(&collect(alone(first)).await.unwrap());
    let b = samples(&collect(alone(second)).await.unwrap());
    let mut expected = a.clone();
    expected.extend(&b);
    assert_eq!(samples(&both), expected, "A's line, then B's");
    // The chunks carry the words they voice (text only) and the speaker in a field of its own.
    let texts: Vec<&str> = both.iter().filter_map(|c| c.text.as_deref()).collect();
    assert_eq!(
        texts.join(" "),
        "Hello from Rust. Bonjour, je m'appelle Léa."
    );
    let speakers: Vec<&str> = both.iter().filter_map(|c| c.speaker.as_deref()).collect();
    assert_eq!(speakers.len(), both.len(), "every chunk says who speaks");
    let switch = speakers.iter().position(|s| *s == "B").unwrap();
    assert_eq!(switch, a.len() / 1920, "A's chunks, then B's");
    assert!(speakers[switch..].iter().all(|s| *s == "B"));
    // Only the voices asked for were fetched.
    assert_eq!(
        downloads_of(&s.hub, &tiny::voice_file(tiny::VOICE_NAMES[1])),
        1
    );
    assert_eq!(
        downloads_of(&s.hub, &tiny::voice_file(tiny::VOICE_NAMES[0])),
        0
    );
}

#[tokio::test]
async fn a_long_text_streams_its_first_audio_early_and_stops_when_dropped() {
    let s = setup().await;
    // 50,000 characters: split into sentence segments and streamed.
    let sentence = "The quick brown fox jumps over the lazy dog. ";
    let text = sentence.repeat(50_000 / sentence.len() + 1);
    assert!(text.len() >= 50_000);
    let conversation = s
        .engine
        .tts()
        .with_speaker(line(&text))
        .temperature(0.0)
        .synthesize()
        .await
        .unwrap();
    let mut stream = conversation.into_stream();
    let first = tokio::time::timeout(Duration::from_secs(60), stream.next())
        .await
        .expect("the first chunk comes long before the text is finished")
        .unwrap()
        .unwrap();
    assert_eq!(first.samples.len(), 1920);
    for _ in 0..20 {
        stream.next().await.unwrap().unwrap();
    }
    let model = s.engine.tts_model().await.unwrap();
    assert!(model.steps_run() > 20, "the steps of the chunks received");
    drop(stream); // the synthesis thread notices and stops
    // It may finish the step it is in (and fill the channel first): let it settle, then no
    // step runs any more, long before the text (thousands of steps) is said.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_drop = model.steps_run();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(model.steps_run(), after_drop, "steps ran after the drop");
    assert!(
        after_drop < 200,
        "{after_drop} steps: it did not stop at the drop"
    );
}

#[tokio::test]
async fn concurrent_conversations_share_the_model() {
    let s = setup().await;
    let run = |text: &'static str| {
        let engine = s.engine.clone();
        tokio::spawn(async move {
            collect(engine.tts().with_speaker(line(text)).temperature(0.0))
                .await
                .unwrap()
        })
    };
    let (a, b) = (run("Hello from Rust."), run("Is it working?"));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert!(!a.is_empty() && !b.is_empty());
    assert_eq!(downloads_of(&s.hub, tiny::TTS_MOSHI_NAME), 1);
}

#[tokio::test]
async fn punctuation_and_emoji_only_texts_give_audio() {
    let s = setup().await;
    for text in ["?!...", "🙂🙂", "日本語"] {
        let chunks = collect(s.engine.tts().with_speaker(line(text)).temperature(0.0))
            .await
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        assert!(!chunks.is_empty(), "{text}");
    }
}

#[tokio::test]
async fn bad_inputs_are_clear_errors() {
    let s = setup().await;
    let err = |r: Result<Vec<AudioChunk>, VoiceError>| r.unwrap_err().to_string();

    for text in ["", "   \n\t "] {
        let e = err(collect(s.engine.tts().with_speaker(line(text))).await);
        assert!(e.contains("nothing to say"), "{e}");
    }
    let e = err(collect(s.engine.tts()).await);
    assert!(e.contains("add a speaker"), "{e}");

    let e = err(collect(
        s.engine.tts().with_speaker(
            Speaker::speaker("A")
                .with_voice("expresso/no-such-voice.wav")
                .speak("Hello.")
                .build(),
        ),
    )
    .await);
    assert!(
        e.contains("no-such-voice") && e.contains("voices are named by their path"),
        "{e}"
    );

    let e = err(collect(s.engine.tts().with_speaker(line("Hello.")).cfg_coef(2.2)).await);
    assert!(e.contains("1.0, 1.5, 2.0"), "{e}");

    let e = err(collect(
        s.engine
            .tts()
            .with_speaker(line("Hello."))
            .temperature(-1.0),
    )
    .await);
    assert!(e.contains("temperature"), "{e}");
}

#[tokio::test]
async fn a_voice_of_the_wrong_shape_is_a_clear_error() {
    let hub = TestHub::start();
    publish(&hub, TTS, "main", &tiny::tts_repo());
    // Voices made for a model with another speaker dimension.
    publish(
        &hub,
        VOICES,
        "main",
        &tiny::voices_repo(tiny::TTS_SPEAKER_DIM + 3),
    );
    let cache = tempfile::tempdir().unwrap();
    let engine = KyutaiEngine::with_config(config(&hub, cache.path()))
        .await
        .unwrap();
    let e = collect(engine.tts().with_speaker(line("Hello.")))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("speaker_wavs") && e.contains("another model"),
        "{e}"
    );
}
