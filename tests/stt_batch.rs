//! Concurrent speech-to-text conversations share batched steps: each gets exactly what it would
//! alone, whether its batch is shared (`batch_size` 8) or its own (the default batch of one, a
//! batch started per conversation); a slot is taken for a conversation and freed with it (a new
//! one never sees an old one's state); at `max_conversations` a conversation waits or fails as
//! configured.

#[path = "support/stt_tiny.rs"]
mod stt_tiny;
mod support;

use std::time::Duration;

use fluent_voice_kyutai::KyutaiEngine;
use fluent_voice_kyutai::models::WhenBusy;
use fluent_voice_kyutai::voice::{
    SpeechSource, SttConversation, SttConversationBuilder, TranscriptionSegment, VoiceError,
};
use futures::StreamExt;
use support::*;

const AUDIO: &str = "tests/fixtures/stt_parity/speech.wav";

fn speech() -> Vec<f32> {
    hound::WavReader::open(AUDIO)
        .unwrap()
        .samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32768.0)
        .collect()
}

/// Eight different clips: the fixture shifted, scaled, reversed, cut, and a tone.
fn clips() -> Vec<Vec<f32>> {
    let speech = speech();
    let mut reversed = speech.clone();
    reversed.reverse();
    let mut shifted = vec![0.0; 7_000];
    shifted.extend(&speech);
    let tone: Vec<f32> = (0..30_000)
        .map(|i| 0.3 * (i as f32 * 220.0 * std::f32::consts::TAU / 24_000.0).sin())
        .collect();
    vec![
        speech.clone(),
        reversed,
        shifted,
        speech.iter().map(|x| x * 0.5).collect(),
        speech[..20_000].to_vec(),
        speech[10_000..].to_vec(),
        tone,
        speech.iter().rev().map(|x| x * 0.8).collect(),
    ]
}

async fn engine(hub: &TestHub, cache: &tempfile::TempDir, batch: usize) -> KyutaiEngine {
    KyutaiEngine::with_config(config(hub, cache.path()).batch_size(batch))
        .await
        .unwrap()
}

/// One conversation at a time, in a batch of one.
async fn single(hub: &TestHub, cache: &tempfile::TempDir, when_busy: WhenBusy) -> KyutaiEngine {
    let config = config(hub, cache.path())
        .batch_size(1)
        .max_conversations(1)
        .when_busy(when_busy);
    KyutaiEngine::with_config(config).await.unwrap()
}

async fn words(
    engine: &KyutaiEngine,
    clip: Vec<f32>,
) -> Result<Vec<TranscriptionSegment>, VoiceError> {
    let mut stream = engine
        .stt()
        .with_source(SpeechSource::from_pcm(clip, 24_000, 1))
        .listen()
        .await?
        .into_stream();
    let mut out = Vec::new();
    while let Some(word) = stream.next().await {
        out.push(word?);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_conversations_get_exactly_their_solo_results() {
    let hub = TestHub::start();
    publish(&hub, STT, "main", &stt_tiny::stt_repo_talkative());
    let cache = tempfile::tempdir().unwrap();
    let clips = clips();

    // Alone: a batch of one.
    let solo = single(&hub, &cache, WhenBusy::Wait).await;
    let mut expected = Vec::new();
    for clip in &clips {
        expected.push(words(&solo, clip.clone()).await.unwrap());
    }
    assert!(
        expected.iter().filter(|w| !w.is_empty()).count() >= 6,
        "{expected:?}"
    );
    assert_ne!(expected[0], expected[1], "the clips give different words");

    // 1, 3 and 8 at a time, started at different moments, in a batch of 8.
    let batched = engine(&hub, &cache, 8).await;
    for n in [1, 3, 8] {
        let runs = (0..n).map(|i| {
            let (engine, clip) = (batched.clone(), clips[i].clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(37 * i as u64)).await;
                words(&engine, clip).await.unwrap()
            })
        });
        let got = futures::future::join_all(runs).await;
        for (i, got) in got.into_iter().enumerate() {
            assert_eq!(got.unwrap(), expected[i], "{n} at once, conversation {i}");
        }
    }
    // They did share steps: on average more than one conversation per step.
    let model = batched.stt_model().await.unwrap();
    let (steps, slot_steps) = model.step_counters();
    assert!(
        slot_steps as f64 / steps as f64 > 1.5,
        "{slot_steps} slot-steps in {steps} steps"
    );
    assert_eq!(
        batched.stt_conversations(),
        Some((0, None)),
        "every slot freed"
    );

    // The default: a batch of one per conversation, as many as run at once, no sharing.
    let pool = engine(&hub, &cache, 1).await;
    let runs = (0..4).map(|i| {
        let (engine, clip) = (pool.clone(), clips[i].clone());
        tokio::spawn(async move { words(&engine, clip).await.unwrap() })
    });
    let got = futures::future::join_all(runs).await;
    for (i, got) in got.into_iter().enumerate() {
        assert_eq!(
            got.unwrap(),
            expected[i],
            "default batching, conversation {i}"
        );
    }
    let (steps, slot_steps) = pool.stt_model().await.unwrap().step_counters();
    assert_eq!(steps, slot_steps, "one conversation per step");
    wait_until_free(&pool).await;
}

/// Every slot freed: a conversation frees its slot as its transcriber is dropped, on the
/// blocking thread that ran it, just after its last word reached the caller.
async fn wait_until_free(engine: &KyutaiEngine) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while engine.stt_conversations() != Some((0, None)) {
        assert!(
            std::time::Instant::now() < deadline,
            "every slot freed: {:?}",
            engine.stt_conversations()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_batch_waits_or_fails_and_a_dropped_conversation_frees_its_slot() {
    let hub = TestHub::start();
    publish(&hub, STT, "main", &stt_tiny::stt_repo_talkative());
    let cache = tempfile::tempdir().unwrap();
    let expected = {
        let solo = single(&hub, &cache, WhenBusy::Wait).await;
        words(&solo, speech()).await.unwrap()
    };

    // A live stream holds the only slot.
    let (tx, rx) = futures::channel::mpsc::unbounded::<Vec<f32>>();
    let strict = single(&hub, &cache, WhenBusy::Fail).await;
    let live = strict
        .stt()
        .with_source(SpeechSource::from_stream(Box::pin(rx), 24_000, 1))
        .listen()
        .await
        .unwrap()
        .into_stream();
    tx.unbounded_send(vec![0.1; 4_000]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while strict.stt_conversations() != Some((1, Some(1))) {
        assert!(std::time::Instant::now() < deadline, "the live stream runs");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let error = words(&strict, speech()).await.unwrap_err();
    assert!(matches!(error, VoiceError::Busy { .. }), "{error:?}");
    assert!(error.to_string().contains("no free channels"), "{error}");
    // Dropped mid-stream: the slot is freed, and the next conversation starts clean.
    drop(live);
    drop(tx);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while strict.stt_conversations() != Some((0, Some(1))) {
        assert!(std::time::Instant::now() < deadline, "the slot is freed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(words(&strict, speech()).await.unwrap(), expected);

    // Waiting (the default): the second conversation starts when the first ends.
    let patient = single(&hub, &cache, WhenBusy::Wait).await;
    let (tx, rx) = futures::channel::mpsc::unbounded::<Vec<f32>>();
    let first = patient
        .stt()
        .with_source(SpeechSource::from_stream(Box::pin(rx), 24_000, 1))
        .listen()
        .await
        .unwrap()
        .into_stream();
    let second = tokio::spawn({
        let patient = patient.clone();
        async move { words(&patient, speech()).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "it waits for the slot");
    tx.unbounded_send(speech()).unwrap();
    drop(tx);
    let first: Vec<_> = first.map(Result::unwrap).collect().await;
    assert_eq!(first, expected);
    assert_eq!(second.await.unwrap(), expected);
}
