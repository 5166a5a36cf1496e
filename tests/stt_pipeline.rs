//! The STT pipeline end to end on tiny models served by the loopback hub: every input form,
//! streaming delivery, load-once sharing, concurrency, and bad input.

#[path = "support/stt_tiny.rs"]
mod stt_tiny;
mod support;

use std::sync::Arc;
use std::time::Duration;
use support::{stt_reference, tiny};

use fluent_voice_kyutai::KyutaiEngine;
use fluent_voice_kyutai::audio::wav_bytes;
use fluent_voice_kyutai::voice::{
    SpeechSource, SttConversation, SttConversationBuilder, TranscriptionSegment, VoiceError,
};
use futures::StreamExt;
use stt_reference::AUDIO;
use support::TestHub;

/// The parity fixture's audio as f32 samples (24 kHz mono).
fn speech() -> Vec<f32> {
    hound::WavReader::open(AUDIO)
        .unwrap()
        .samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32768.0)
        .collect()
}

struct Setup {
    hub: TestHub,
    _cache: tempfile::TempDir,
    engine: KyutaiEngine,
}

async fn setup(repo: Vec<(String, Vec<u8>)>) -> Setup {
    let hub = TestHub::start();
    support::publish(&hub, support::STT, "main", &repo);
    let cache = tempfile::tempdir().unwrap();
    let engine = KyutaiEngine::with_config(support::config(&hub, cache.path()))
        .await
        .unwrap();
    Setup {
        hub,
        _cache: cache,
        engine,
    }
}

async fn talkative() -> Setup {
    setup(stt_tiny::stt_repo_talkative()).await
}

async fn words(
    engine: &KyutaiEngine,
    source: SpeechSource,
) -> Result<Vec<TranscriptionSegment>, VoiceError> {
    let conversation = engine.stt().with_source(source).listen().await?;
    let mut out = Vec::new();
    let mut stream = conversation.into_stream();
    while let Some(word) = stream.next().await {
        out.push(word?);
    }
    Ok(out)
}

fn reference_text() -> String {
    stt_reference::expected_text(&stt_reference::case("plain"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_bytes_and_pcm_give_the_same_words() {
    let s = talkative().await;
    let from_file = words(&s.engine, SpeechSource::from_file(AUDIO))
        .await
        .unwrap();
    let bytes = std::fs::read(AUDIO).unwrap();
    let from_bytes = words(&s.engine, SpeechSource::from_bytes(bytes))
        .await
        .unwrap();
    let from_pcm = words(&s.engine, SpeechSource::from_pcm(speech(), 24_000, 1))
        .await
        .unwrap();
    assert!(!from_file.is_empty());
    assert_eq!(from_bytes, from_file);
    assert_eq!(from_pcm, from_file);
    let text = s
        .engine
        .stt()
        .with_source(SpeechSource::from_file(AUDIO))
        .listen()
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(text, reference_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn words_are_in_order_and_within_the_audio() {
    let s = talkative().await;
    let conversation = s
        .engine
        .stt()
        .with_source(SpeechSource::from_file(AUDIO))
        .listen()
        .await
        .unwrap();
    let duration = conversation.audio_duration();
    let words: Vec<_> = conversation
        .into_stream()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(duration.ms(), Some(1600));
    let mut last_start = 0;
    for w in &words {
        assert!(w.start_ms <= w.end_ms && w.end_ms <= 1600, "{w:?}");
        assert!(w.start_ms >= last_start, "{words:?}");
        last_start = w.start_ms;
    }
}

/// Words come out while the audio is still arriving: the live stream stays open until the
/// first word has been received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_stream_words_arrive_before_the_audio_ends() {
    let s = talkative().await;
    let (tx, rx) = futures::channel::mpsc::unbounded::<Vec<f32>>();
    let conversation = s
        .engine
        .stt()
        .with_source(SpeechSource::from_stream(rx, 24_000, 1))
        .listen()
        .await
        .unwrap();
    let mut stream = conversation.into_stream();
    // Two seconds of audio in 100 ms chunks, and the stream left open.
    let audio = speech();
    for chunk in audio
        .chunks(2_400)
        .chain(std::iter::repeat_n(&[0.0f32; 2_400][..], 5))
    {
        tx.unbounded_send(chunk.to_vec()).unwrap();
    }
    let first = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("a word arrives while the stream is open")
        .unwrap()
        .unwrap();
    assert!(!first.text.is_empty());
    drop(tx);
    let rest: Vec<_> = stream.collect().await;
    assert!(rest.iter().all(Result::is_ok));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_loads_once_and_concurrent_conversations_share_it() {
    let s = talkative().await;
    let first = s.engine.stt_model().await.unwrap();
    let (a, b) = tokio::join!(
        words(&s.engine, SpeechSource::from_file(AUDIO)),
        words(&s.engine, SpeechSource::from_pcm(speech(), 24_000, 1)),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b, "concurrent conversations do not disturb each other");
    assert!(Arc::ptr_eq(&first, &s.engine.stt_model().await.unwrap()));
    assert_eq!(support::downloads_of(&s.hub, "model.safetensors"), 1);
}

/// Mimi encoding on its own thread (the CPU default, one frame ahead of the language model)
/// gives the words and every text token of encoding inline, pushed in chunks of any size.
#[tokio::test]
async fn threaded_mimi_encoding_gives_the_inline_tokens() {
    let s = talkative().await;
    let model = s.engine.stt_model().await.unwrap();
    let audio = speech();
    let run = |threaded: bool, chunk: usize| {
        let mut t = model
            .transcriber_encoding(fluent_voice_kyutai::models::WhenBusy::Wait, threaded)
            .unwrap();
        t.record_text_tokens();
        let mut words = Vec::new();
        for part in audio.chunks(chunk) {
            words.extend(t.push(part).unwrap());
        }
        words.extend(t.finish().unwrap());
        (t.text_tokens(), words, t.steps())
    };
    let inline = run(false, 1920);
    assert!(!inline.1.is_empty());
    for chunk in [1920, 700, 48_000] {
        assert_eq!(run(true, chunk), inline, "chunks of {chunk}");
    }
}

/// 8 kHz telephone audio and 6-channel audio are converted, not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telephone_and_surround_audio_are_transcribed() {
    let s = talkative().await;
    let phone = wav_bytes(&vec![0.1; 8_000], 8_000, 1);
    let conversation = s
        .engine
        .stt()
        .with_source(SpeechSource::from_bytes_with_format(phone, "wav"))
        .listen()
        .await
        .unwrap();
    let duration = conversation.audio_duration();
    let words: Vec<_> = conversation.into_stream().collect().await;
    assert!(words.iter().all(Result::is_ok));
    assert_eq!(duration.ms(), Some(1000));

    let surround = speech()
        .iter()
        .flat_map(|&v| [v, v, v, v, v, v])
        .collect::<Vec<f32>>();
    let six = words_of(&s.engine, SpeechSource::from_pcm(surround, 24_000, 6)).await;
    let mono = words_of(&s.engine, SpeechSource::from_pcm(speech(), 24_000, 1)).await;
    assert_eq!(six, mono);
    // And those are the reference's words for the audio, not what any input would give.
    assert_eq!(
        mono,
        stt_reference::expected_words(&stt_reference::case("plain"))
    );
}

async fn words_of(engine: &KyutaiEngine, source: SpeechSource) -> Vec<TranscriptionSegment> {
    words(engine, source).await.unwrap()
}

/// Silence is a valid input: the plain tiny model (untouched text head) hears nothing in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pure_silence_gives_an_empty_transcript() {
    let s = setup(support::tiny::stt_repo()).await;
    let text = s
        .engine
        .stt()
        .with_source(SpeechSource::from_pcm(vec![0.0; 48_000], 24_000, 1))
        .listen()
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(text, "");
}

fn invalid(err: VoiceError) -> String {
    match err {
        VoiceError::InvalidInput(m) => m,
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_fails_clearly_at_listen_or_in_the_stream() {
    let s = talkative().await;
    let dir = tempfile::tempdir().unwrap();
    let listen = |source: SpeechSource| {
        let engine = s.engine.clone();
        async move {
            engine
                .stt()
                .with_source(source)
                .listen()
                .await
                .err()
                .unwrap()
        }
    };

    // A wrong path is an I/O error of kind NotFound, not "invalid input": the caller can tell
    // it from a file that is not audio without reading the message.
    match listen(SpeechSource::from_file(dir.path().join("missing.wav"))).await {
        VoiceError::Io(io) => {
            assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
            assert!(io.to_string().contains("missing.wav"), "{io}");
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }

    // PCM that is not numbers is refused, not transcribed as silence.
    let msg = invalid(listen(SpeechSource::from_pcm(vec![f32::NAN; 24_000], 24_000, 1)).await);
    assert!(msg.contains("not a finite number"), "{msg}");

    let empty = dir.path().join("empty.wav");
    std::fs::write(&empty, b"").unwrap();
    let msg = invalid(listen(SpeechSource::from_file(&empty)).await);
    assert!(msg.contains("empty"), "{msg}");

    let text = dir.path().join("text.wav");
    std::fs::write(&text, "not audio at all, just words\n".repeat(10)).unwrap();
    let msg = invalid(listen(SpeechSource::from_file(&text)).await);
    assert!(msg.contains("is not audio"), "{msg}");

    let err = s.engine.stt().listen().await.err().unwrap();
    assert!(invalid(err).contains("no audio"));

    // Errors found while reading come at the end of the stream.
    let wav = wav_bytes(&vec![0.2; 24_000], 24_000, 1);
    let cut = dir.path().join("cut.wav");
    std::fs::write(&cut, &wav[..wav.len() / 2]).unwrap();
    let err = words(&s.engine, SpeechSource::from_file(&cut))
        .await
        .unwrap_err();
    assert!(invalid(err).contains("truncated"));

    let zero = wav_bytes(&[], 24_000, 1);
    let err = words(&s.engine, SpeechSource::from_bytes(zero))
        .await
        .unwrap_err();
    assert!(invalid(err).contains("no samples"));
    let err = words(&s.engine, SpeechSource::from_pcm(Vec::new(), 16_000, 1))
        .await
        .unwrap_err();
    assert!(invalid(err).contains("no samples"));
}

/// `stt_config.audio_silence_prefix_seconds` is fed as silence before the audio (25 more model
/// steps for 2 s) and taken off the word times: the words and times are the reference's for that
/// config (`tests/stt_parity.rs` has the details). The prefix is longer than the audio, so a
/// time that kept it (or lost it twice) would be clamped to the end (or the start) of the audio,
/// not onto the reference's time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_silence_prefix_is_fed_and_taken_off_the_timings() {
    let s = setup(stt_tiny::stt_repo_talkative_with_prefix(
        tiny::STT_PREFIX_SECONDS,
    ))
    .await;
    let model = s.engine.stt_model().await.unwrap();
    let mut transcriber = model
        .transcriber(fluent_voice_kyutai::models::WhenBusy::Wait)
        .unwrap();
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
    let plain = setup(stt_tiny::stt_repo_talkative()).await;
    let mut without_prefix = plain
        .engine
        .stt_model()
        .await
        .unwrap()
        .transcriber(fluent_voice_kyutai::models::WhenBusy::Wait)
        .unwrap();
    fluent_voice_kyutai::internals::stt::transcribe_blocking(
        SpeechSource::from_file(AUDIO),
        &mut without_prefix,
        |_| true,
    )
    .unwrap();
    let prefix_steps = (tiny::STT_PREFIX_SECONDS * 12.5) as usize;
    assert_eq!(transcriber.steps(), without_prefix.steps() + prefix_steps);
    assert_eq!(transcriber.duration_ms(), 1600);
    let case = stt_reference::case("prefix");
    assert_eq!(case["prefix_chunks"].as_u64(), Some(prefix_steps as u64));
    let expected = stt_reference::expected_words(&case);
    assert_eq!(words, expected);
    assert!(
        words.iter().any(|w| w.start_ms > 0 && w.end_ms < 1600),
        "a word strictly inside the audio: {words:?}"
    );
}

/// Dropping the conversation stops its worker even when the live audio never ends and no
/// words come: the source stops being read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_conversation_stops_reading_the_source() {
    let s = setup(support::tiny::stt_repo()).await;
    let pulled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = pulled.clone();
    let endless = futures::stream::repeat_with(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        vec![0.0f32; 1920]
    });
    let conversation = s
        .engine
        .stt()
        .with_source(SpeechSource::from_stream(endless, 24_000, 1))
        .listen()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(conversation);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_drop = pulled.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(after_drop > 0);
    assert_eq!(pulled.load(std::sync::atomic::Ordering::SeqCst), after_drop);
}

/// An MP3 file goes through the whole pipeline like a WAV.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mp3_file_is_transcribed() {
    let s = talkative().await;
    let conversation = s
        .engine
        .stt()
        .with_source(SpeechSource::from_file(
            "tests/fixtures/stt_parity/formats/tone.mp3",
        ))
        .listen()
        .await
        .unwrap();
    let duration = conversation.audio_duration();
    let words: Vec<_> = conversation.into_stream().collect().await;
    assert!(words.iter().all(Result::is_ok));
    let ms = duration.ms().unwrap();
    assert!((480..=540).contains(&ms), "{ms}");
}
