//! Text streamed into text-to-speech, as an LLM writes it: speech starts before the text ends,
//! waits (does not invent or end) when words are late, ends properly when the text does, and is
//! the same audio, seed for seed, as the whole text given at once; words come with timings.

mod support;

use std::time::{Duration, Instant};

use fluent_voice_kyutai::voice::{
    AudioChunk, Speaker, TranscriptionSegment, TtsConversation, TtsConversationBuilder, VoiceError,
};
use fluent_voice_kyutai::{KyutaiEngine, text_channel};
use futures::StreamExt;
use support::*;

const TEXT: &str = "Hello from Rust. This is streamed text, one word at a time!";

async fn engine() -> (TestHub, tempfile::TempDir, KyutaiEngine) {
    let hub = TestHub::start();
    publish_defaults(&hub);
    let cache = tempfile::tempdir().unwrap();
    let engine = KyutaiEngine::with_config(config(&hub, cache.path()))
        .await
        .unwrap();
    (hub, cache, engine)
}

fn builder(engine: &KyutaiEngine) -> fluent_voice_kyutai::KyutaiTtsBuilder {
    engine
        .tts()
        .with_speaker(Speaker::speaker("A").with_voice(VOICE).build())
        .seed(11)
}

async fn chunks(
    stream: fluent_voice_kyutai::voice::BoxAudioStream,
) -> Result<Vec<AudioChunk>, VoiceError> {
    stream
        .map(|c| c)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

fn samples(chunks: &[AudioChunk]) -> Vec<f32> {
    chunks
        .iter()
        .flat_map(|c| c.samples.iter().copied())
        .collect()
}

fn words(chunks: &[AudioChunk]) -> Vec<TranscriptionSegment> {
    chunks
        .iter()
        .flat_map(|c| c.words.iter().cloned())
        .collect()
}

/// The whole text at once, through `synthesize`.
async fn whole(engine: &KyutaiEngine, text: &str) -> Vec<AudioChunk> {
    let builder = engine
        .tts()
        .with_speaker(Speaker::speaker("A").with_voice(VOICE).speak(text).build())
        .seed(11);
    chunks(builder.synthesize().await.unwrap().into_stream())
        .await
        .unwrap()
}

/// `text` sent in `pieces`, waiting `pause` between them.
async fn streamed(engine: &KyutaiEngine, pieces: Vec<String>, pause: Duration) -> Vec<AudioChunk> {
    let (tx, text) = text_channel();
    let conversation = builder(engine).synthesize_stream(text).await.unwrap();
    let writer = tokio::spawn(async move {
        for piece in pieces {
            tx.send(piece).unwrap();
            tokio::time::sleep(pause).await;
        }
    });
    let out = chunks(conversation.into_stream()).await.unwrap();
    writer.await.unwrap();
    out
}

fn by_chars(text: &str) -> Vec<String> {
    text.chars().map(String::from).collect()
}

fn by_words(text: &str) -> Vec<String> {
    text.split_inclusive(' ').map(String::from).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_text_gives_the_audio_and_timings_of_the_whole_text() {
    let (_hub, _cache, engine) = engine().await;
    let reference = whole(&engine, TEXT).await;
    assert!(!reference.is_empty());
    let timings = words(&reference);
    let said: Vec<&str> = timings.iter().map(|w| w.text.as_str()).collect();
    assert_eq!(said, TEXT.split_whitespace().collect::<Vec<_>>());
    let duration = samples(&reference).len() as u64 * 1000 / 24_000;
    for pair in timings.windows(2) {
        assert!(pair[0].start_ms <= pair[0].end_ms, "{pair:?}");
        assert_eq!(
            pair[0].end_ms, pair[1].start_ms,
            "a word ends where the next starts"
        );
    }
    assert!(timings.last().unwrap().end_ms <= duration);
    assert!(reference.last().unwrap().is_final);

    for (how, pieces, pause) in [
        ("word by word", by_words(TEXT), Duration::from_millis(30)),
        ("character by character", by_chars(TEXT), Duration::ZERO),
        (
            "in two halves, late",
            vec![TEXT[..20].into(), TEXT[20..].into()],
            Duration::from_millis(400),
        ),
    ] {
        let out = streamed(&engine, pieces, pause).await;
        assert_eq!(samples(&out), samples(&reference), "{how}: the same audio");
        assert_eq!(words(&out), timings, "{how}: the same timings");
        assert!(out.last().unwrap().is_final, "{how}");
    }
}

/// Texts longer than a segment are cut the same way streamed or whole (bounded memory both
/// ways), and give the same audio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_streamed_texts_are_segmented_like_whole_ones() {
    let (_hub, _cache, engine) = engine().await;
    let sentence = "one two three four five six seven eight nine ten.";
    let text = [sentence; 7].join(" ");
    let reference = whole(&engine, &text).await;
    let out = streamed(&engine, by_words(&text), Duration::ZERO).await;
    assert_eq!(samples(&out), samples(&reference));
    assert_eq!(words(&out).len(), 70);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_starts_before_the_text_ends_and_waits_for_late_words() {
    let (_hub, _cache, engine) = engine().await;
    let (tx, text) = text_channel();
    let mut audio = builder(&engine)
        .synthesize_stream(text)
        .await
        .unwrap()
        .into_stream();
    let first_part = "Hello from Rust, this is the start of a sentence that an LLM is still ";
    tx.send(first_part).unwrap();
    // Audio comes while the text is still open.
    let first = tokio::time::timeout(Duration::from_secs(30), audio.next())
        .await
        .expect("audio before the text ends")
        .unwrap()
        .unwrap();
    assert!(!first.is_final);
    // Then the writer is slow: the speech waits (it does not end, it does not invent text).
    let mut before_pause = vec![first];
    let waited = tokio::time::timeout(Duration::from_millis(800), async {
        while let Some(chunk) = audio.next().await {
            before_pause.push(chunk.unwrap());
        }
    })
    .await;
    assert!(waited.is_err(), "the stream stays open while the text does");
    assert!(before_pause.iter().all(|c| !c.is_final));
    let heard: Vec<String> = words(&before_pause).into_iter().map(|w| w.text).collect();
    let sent: Vec<&str> = first_part.split_whitespace().collect();
    assert!(
        heard.len() <= sent.len() && heard.iter().zip(&sent).all(|(h, s)| h == s),
        "{heard:?}"
    );
    tx.send("writing.").unwrap();
    drop(tx);
    let mut rest = Vec::new();
    while let Some(chunk) = audio.next().await {
        rest.push(chunk.unwrap());
    }
    assert!(
        rest.last().unwrap().is_final,
        "the speech ends when the text does"
    );
    before_pause.extend(rest);
    let all: Vec<String> = words(&before_pause).into_iter().map(|w| w.text).collect();
    assert_eq!(all.last().map(String::as_str), Some("writing."));
    // And the result is the whole text's.
    let reference = whole(&engine, &format!("{first_part}writing.")).await;
    assert_eq!(samples(&before_pause), samples(&reference));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_streamed_input() {
    let (_hub, _cache, engine) = engine().await;

    // Empty pieces, and a text that is only whitespace: no speech, a clean end.
    let out = streamed(
        &engine,
        vec!["".into(), "   ".into(), "\n".into()],
        Duration::ZERO,
    )
    .await;
    assert!(out.is_empty());

    // 10,000 words in one burst, then the listener leaves after the first chunk: the synthesis
    // stops, and the sender learns it (its text is no longer read).
    let (tx, text) = text_channel();
    let mut audio = builder(&engine)
        .synthesize_stream(text)
        .await
        .unwrap()
        .into_stream();
    tx.send("word ".repeat(10_000)).unwrap();
    audio.next().await.unwrap().unwrap();
    drop(audio);
    let deadline = Instant::now() + Duration::from_secs(20);
    while tx.send("more ").is_ok() {
        assert!(
            Instant::now() < deadline,
            "the conversation stopped after its listener left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A listener that leaves while the writer is silent (the synthesis waits for text): the
    // thread does not wait for ever either.
    let (tx, text) = text_channel();
    let audio = builder(&engine)
        .synthesize_stream(text)
        .await
        .unwrap()
        .into_stream();
    tx.send("Hello ").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(audio);
    let deadline = Instant::now() + Duration::from_secs(20);
    while tx.send("").is_ok() {
        assert!(
            Instant::now() < deadline,
            "a waiting conversation stops when dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
