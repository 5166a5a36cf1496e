//! Concurrent text-to-speech conversations share batched steps: each row of the batched forward
//! pass is one conversation at its own position, so conversations started at different moments,
//! with different texts, voices, seeds, temperatures and guidance, each get exactly the audio
//! (and so the tokens) they would alone; a slot is taken for a conversation and freed with it (a
//! new one never sees an old one's state); at `tts_max_conversations` a conversation waits or
//! fails as configured.

mod support;
#[path = "support/tts_reference.rs"]
mod tts_reference;

use std::time::Duration;

use fluent_voice_kyutai::internals::tts::generate::{
    GenerationSettings, Generator, TextStep, step_many,
};
use fluent_voice_kyutai::models::{Weights, WhenBusy};
use fluent_voice_kyutai::voice::{
    AudioChunk, Speaker, TtsConversation, TtsConversationBuilder, VoiceError,
};
use fluent_voice_kyutai::{KyutaiEngine, TextSender, text_channel};
use futures::StreamExt;
use support::*;

/// What one conversation says, and how.
#[derive(Clone)]
struct Request {
    text: &'static str,
    voice: &'static str,
    seed: u64,
    temperature: f32,
    cfg: f32,
    /// Sent word by word, with pauses, instead of whole.
    streamed: bool,
}

fn requests() -> Vec<Request> {
    let texts = [
        "Hello world, this is a test.",
        "Bonjour tout le monde.",
        "One more sentence here. And a second one!",
        "Short.",
        "The quick brown fox jumps over the lazy dog.",
        "Numbers like twelve and forty two.",
        "A voice agent speaks while the model writes.",
        "Good night.",
    ];
    texts
        .iter()
        .enumerate()
        .map(|(i, &text)| Request {
            text,
            voice: tiny::VOICE_NAMES[i % tiny::VOICE_NAMES.len()],
            seed: 100 + i as u64,
            temperature: if i % 2 == 0 { 0.0 } else { 0.6 },
            cfg: if i % 3 == 0 { 3.0 } else { 2.0 },
            streamed: i % 4 == 1,
        })
        .collect()
}

async fn engine(hub: &TestHub, cache: &tempfile::TempDir, batch: usize) -> KyutaiEngine {
    KyutaiEngine::with_config(config(hub, cache.path()).tts_batch_size(batch))
        .await
        .unwrap()
}

/// One conversation at a time, in a batch of one.
async fn single(hub: &TestHub, cache: &tempfile::TempDir, when_busy: WhenBusy) -> KyutaiEngine {
    let config = config(hub, cache.path())
        .tts_batch_size(1)
        .tts_max_conversations(1)
        .when_busy(when_busy);
    KyutaiEngine::with_config(config).await.unwrap()
}

fn builder(engine: &KyutaiEngine, request: &Request) -> fluent_voice_kyutai::KyutaiTtsBuilder {
    engine
        .tts()
        .seed(request.seed)
        .temperature(request.temperature)
        .cfg_coef(request.cfg)
}

async fn collect(
    stream: fluent_voice_kyutai::voice::BoxAudioStream,
) -> Result<Vec<f32>, VoiceError> {
    let chunks: Vec<AudioChunk> = stream
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    Ok(chunks.into_iter().flat_map(|c| c.samples).collect())
}

/// A conversation of `request`'s settings whose text comes through the returned sender.
async fn start_streamed(
    engine: &KyutaiEngine,
    request: &Request,
) -> Result<(TextSender, fluent_voice_kyutai::KyutaiTtsConversation), VoiceError> {
    let (tx, text) = text_channel();
    let conversation = builder(engine, request)
        .with_speaker(Speaker::speaker("A").with_voice(request.voice).build())
        .synthesize_stream(text)
        .await?;
    Ok((tx, conversation))
}

/// The audio of one request: the whole text at once, or word by word with pauses.
async fn speak(engine: &KyutaiEngine, request: &Request) -> Result<Vec<f32>, VoiceError> {
    if !request.streamed {
        let speaker = Speaker::speaker("A")
            .with_voice(request.voice)
            .speak(request.text)
            .build();
        let conversation = builder(engine, request)
            .with_speaker(speaker)
            .synthesize()
            .await?;
        return collect(conversation.into_stream()).await;
    }
    let (tx, conversation) = start_streamed(engine, request).await?;
    let words: Vec<String> = request.text.split(' ').map(|w| format!("{w} ")).collect();
    tokio::spawn(async move {
        for word in words {
            tx.send(word).unwrap();
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    });
    collect(conversation.into_stream()).await
}

/// Every slot freed: a conversation frees its slot as its synthesis thread ends, just after its
/// last chunk reached the caller.
async fn wait_until(engine: &KyutaiEngine, expected: Option<(usize, Option<usize>)>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while engine.tts_conversations() != expected {
        assert!(
            std::time::Instant::now() < deadline,
            "conversations: {:?}, expected {expected:?}",
            engine.tts_conversations()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_conversations_get_exactly_their_solo_audio() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    let cache = tempfile::tempdir().unwrap();
    let requests = requests();

    // Alone: a batch of one, one conversation at a time.
    let solo = single(&hub, &cache, WhenBusy::Wait).await;
    let mut expected = Vec::new();
    for request in &requests {
        expected.push(speak(&solo, request).await.unwrap());
    }
    for (i, audio) in expected.iter().enumerate() {
        assert!(audio.len() >= 1920 * 3, "request {i} gave audio");
        for other in &expected[..i] {
            assert_ne!(audio, other, "the requests give different audio");
        }
    }

    // 1, 3 and 8 at a time, started at different moments, in a batch of 8.
    let batched = engine(&hub, &cache, 8).await;
    for n in [1, 3, 8] {
        let runs = (0..n).map(|i| {
            let (engine, request) = (batched.clone(), requests[i].clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(29 * i as u64)).await;
                speak(&engine, &request).await.unwrap()
            })
        });
        let got = futures::future::join_all(runs).await;
        for (i, got) in got.into_iter().enumerate() {
            assert!(
                got.unwrap() == expected[i],
                "{n} at once, conversation {i}: not its solo audio"
            );
        }
    }
    // They did share steps: on average more than one conversation per step.
    let model = batched.tts_model().await.unwrap();
    let (steps, slot_steps) = model.step_counters();
    assert!(
        slot_steps as f64 / steps as f64 > 1.5,
        "{slot_steps} slot-steps in {steps} steps"
    );
    wait_until(&batched, Some((0, None))).await;

    // The default: a batch of one per conversation, as many as run at once, no sharing.
    let pool = engine(&hub, &cache, 1).await;
    let runs = (0..3).map(|i| {
        let (engine, request) = (pool.clone(), requests[i].clone());
        tokio::spawn(async move { speak(&engine, &request).await.unwrap() })
    });
    let got = futures::future::join_all(runs).await;
    for (i, got) in got.into_iter().enumerate() {
        assert!(
            got.unwrap() == expected[i],
            "default batching, conversation {i}"
        );
    }
    let (steps, slot_steps) = pool.tts_model().await.unwrap().step_counters();
    assert_eq!(steps, slot_steps, "one conversation per step");
    wait_until(&pool, Some((0, None))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_batch_waits_or_fails_and_a_dropped_conversation_frees_its_slot() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    let cache = tempfile::tempdir().unwrap();
    let request = requests()[1].clone();
    let whole = Request {
        streamed: false,
        ..request.clone()
    };
    let expected = {
        let solo = single(&hub, &cache, WhenBusy::Wait).await;
        speak(&solo, &whole).await.unwrap()
    };

    // A streamed conversation, its text still open, holds the only slot; it has spoken.
    let strict = single(&hub, &cache, WhenBusy::Fail).await;
    let (tx, live) = start_streamed(&strict, &request).await.unwrap();
    tx.send("Something rather long is being said here, ".to_string())
        .unwrap();
    let mut live = live.into_stream();
    assert!(live.next().await.unwrap().is_ok(), "the first one speaks");
    assert_eq!(strict.tts_conversations(), Some((1, Some(1))));
    let error = speak(&strict, &whole).await.unwrap_err();
    assert!(matches!(error, VoiceError::Busy { .. }), "{error:?}");
    assert!(error.to_string().contains("no free channels"), "{error}");

    // Dropped mid-speech: the slot is freed, and the next conversation starts clean.
    drop(live);
    drop(tx);
    wait_until(&strict, Some((0, Some(1)))).await;
    assert!(speak(&strict, &whole).await.unwrap() == expected);

    // Waiting (the default): the second conversation starts when the first ends.
    let patient = single(&hub, &cache, WhenBusy::Wait).await;
    let (tx, first) = start_streamed(&patient, &request).await.unwrap();
    let second = tokio::spawn({
        let (patient, whole) = (patient.clone(), whole.clone());
        async move { speak(&patient, &whole).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "it waits for the slot");
    tx.send(request.text.to_string()).unwrap();
    drop(tx);
    let first = collect(first.into_stream()).await.unwrap();
    assert!(first == expected, "the first one's audio");
    assert!(second.await.unwrap() == expected, "the second one's audio");
}

/// The batched step itself, on the direct-CFG model (two rows per guided generation): a
/// guided and an unguided generation, and one started later (so that some rows are still within
/// the text-audio delay while others sample audio), stepped together, each give the text tokens
/// and frames of their solo run; with f32 weights, and with q8 ones (the quantized product of
/// several rows, `weights::rows_matmul`).
#[tokio::test]
async fn step_many_gives_each_generation_its_solo_tokens() {
    for weights in [Weights::F32, Weights::Q8] {
        step_many_matches_solo(weights).await;
    }
}

async fn step_many_matches_solo(weights: Weights) {
    let hub = TestHub::start();
    publish_direct_cfg(&hub);
    let cache = tempfile::tempdir().unwrap();
    let engine = KyutaiEngine::with_config(config(&hub, cache.path()).tts_weights(weights))
        .await
        .unwrap();
    let model = engine.tts_model().await.unwrap();
    let voice = |name: &str| {
        let engine = engine.clone();
        let name = name.to_string();
        async move { engine.ensure_voice(&name).await.unwrap() }
    };
    let mut cases = Vec::new();
    for (i, (text, cfg, temp)) in [
        ("Hello world, this is a test.", 3.0, 0.0),
        ("Bonjour tout le monde.", 1.0, 0.6),
        ("One more sentence here.", 2.0, 0.8),
    ]
    .into_iter()
    .enumerate()
    {
        let path = voice(tiny::VOICE_NAMES[i]).await;
        let conditions = model
            .conditions(Some(&model.load_voice(&path).unwrap()), cfg)
            .unwrap();
        assert_eq!(conditions.direct_cfg.is_some(), cfg != 1.0);
        let settings = GenerationSettings {
            temp,
            text_temp: temp,
            top_k: 250,
            top_k_text: 25,
            seed: 7 + i as u64,
            final_padding: 4,
            max_steps: 400,
        };
        cases.push((model.entries(text), conditions, settings));
    }
    let new = |i: usize| {
        let (entries, conditions, settings) = &cases[i];
        Generator::new(
            &model.lm,
            entries.clone(),
            conditions,
            model.delay_steps,
            *settings,
        )
        .unwrap()
    };
    let solo: Vec<(Vec<TextStep>, Vec<Vec<i64>>)> = (0..cases.len())
        .map(|i| {
            let mut generator = new(i);
            let frames = tts_reference::run_to_end(&model.lm, &mut generator);
            (generator.text_log.clone(), frames)
        })
        .collect();
    assert_ne!(solo[0].1, solo[1].1);

    // Generation i starts after `starts[i]` steps of the others.
    let starts = [0, 3, model.delay_steps + 5];
    let mut generators: Vec<Option<Generator>> = (0..cases.len()).map(|_| None).collect();
    let mut frames: Vec<Vec<Vec<i64>>> = vec![Vec::new(); cases.len()];
    let mut step = 0;
    loop {
        for (i, &start) in starts.iter().enumerate() {
            if step == start {
                generators[i] = Some(new(i));
            }
        }
        let active: Vec<usize> = (0..cases.len())
            .filter(|&i| generators[i].as_ref().is_some_and(|g| !g.finished()))
            .collect();
        if active.is_empty() && step > *starts.iter().max().unwrap() {
            break;
        }
        let mut rows: Vec<&mut Generator> = generators
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| active.contains(i))
            .map(|(_, g)| g.as_mut().unwrap())
            .collect();
        let out = step_many(&model.lm, &mut rows).unwrap();
        for (&i, frame) in active.iter().zip(out) {
            frames[i].extend(frame);
        }
        step += 1;
    }
    for (i, (text_log, solo_frames)) in solo.iter().enumerate() {
        let generator = generators[i].as_ref().unwrap();
        assert_eq!(
            &generator.text_log, text_log,
            "{weights:?}, generation {i}: text tokens"
        );
        assert_eq!(
            &frames[i], solo_frames,
            "{weights:?}, generation {i}: frames"
        );
    }
}
