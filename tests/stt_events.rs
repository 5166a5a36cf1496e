//! Speech-to-text events for voice agents: each 80 ms step's voice-activity probabilities from
//! the model's extra heads, and the end of the speaker's turn, by Unmute's rule (configurable);
//! through the library and `kyutai transcribe --format json`.

#[path = "support/stt_tiny.rs"]
mod stt_tiny;
mod support;

use fluent_voice_kyutai::voice::{
    SpeechSource, SttConversation, SttConversationBuilder, TranscriptEvent, VoiceError,
};
use fluent_voice_kyutai::{EndOfTurnSettings, KyutaiEngine, KyutaiSttBuilder};
use futures::StreamExt;
use support::*;

const AUDIO: &str = "tests/fixtures/stt_parity/speech.wav";

async fn events(
    engine: &KyutaiEngine,
    settings: EndOfTurnSettings,
) -> Result<Vec<TranscriptEvent>, VoiceError> {
    events_with(engine, |b| b.end_of_turn(settings)).await
}

/// Every event of a conversation on the fixture audio, its builder set by `configure`.
async fn events_with(
    engine: &KyutaiEngine,
    configure: impl FnOnce(KyutaiSttBuilder) -> KyutaiSttBuilder,
) -> Result<Vec<TranscriptEvent>, VoiceError> {
    let builder = engine.stt().with_source(SpeechSource::from_file(AUDIO));
    let mut stream = configure(builder).listen().await?.into_events();
    let mut out = Vec::new();
    while let Some(event) = stream.next().await {
        out.push(event?);
    }
    Ok(out)
}

/// An engine on the loopback hub serving the talkative tiny STT model (the hub and cache are
/// kept alive with it).
async fn talkative_engine() -> (TestHub, tempfile::TempDir, KyutaiEngine) {
    let hub = TestHub::start();
    publish(&hub, STT, "main", &stt_tiny::stt_repo_talkative());
    let cache = tempfile::tempdir().unwrap();
    let engine = KyutaiEngine::with_config(config(&hub, cache.path()))
        .await
        .unwrap();
    (hub, cache, engine)
}

fn ends(events: &[TranscriptEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            TranscriptEvent::EndOfTurn { time_ms } => Some(*time_ms),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_reports_voice_activity_and_turns_end_by_the_rule() {
    let (_hub, _cache, engine) = talkative_engine().await;

    let all = events(&engine, EndOfTurnSettings::default()).await.unwrap();
    let steps: Vec<(u64, &Vec<f32>)> = all
        .iter()
        .filter_map(|e| match e {
            TranscriptEvent::VoiceActivity {
                time_ms,
                pause_probabilities,
            } => Some((*time_ms, pause_probabilities)),
            _ => None,
        })
        .collect();
    // One per model step: the 1.6 s of audio, padded to whole frames plus the 0.5 s delay and
    // one second, is 38 steps of 80 ms.
    assert_eq!(steps.len(), 38);
    for (time_ms, prs) in &steps {
        assert_eq!(prs.len(), 4, "the 1B's four heads");
        assert!(prs.iter().all(|p| (0.0..=1.0).contains(p)), "{prs:?}");
        assert!(*time_ms <= 1_600);
    }
    assert!(
        steps.windows(2).all(|w| w[0].0 <= w[1].0),
        "times never go back"
    );
    // The words are the ones `into_stream` gives.
    let words: Vec<_> = all
        .iter()
        .filter_map(|e| match e {
            TranscriptEvent::Word(w) => Some(w.clone()),
            _ => None,
        })
        .collect();
    let plain: Vec<_> = engine
        .stt()
        .with_source(SpeechSource::from_file(AUDIO))
        .listen()
        .await
        .unwrap()
        .into_stream()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(words, plain);
    assert!(!words.is_empty());

    // The rule, replayed on the reported probabilities, fires where the conversation said.
    let expected = replay(&all, EndOfTurnSettings::default());
    assert_eq!(ends(&all), expected);

    // Thresholds decide: 0 ends a turn at the first step after a word (past the skipped ones);
    // 1 never does.
    let eager = EndOfTurnSettings {
        threshold: 0.0,
        skip_first_steps: 0,
        ..EndOfTurnSettings::default()
    };
    let all = events(&engine, eager).await.unwrap();
    let first_word = all
        .iter()
        .position(|e| matches!(e, TranscriptEvent::Word(_)))
        .unwrap();
    let first_end = all
        .iter()
        .position(|e| matches!(e, TranscriptEvent::EndOfTurn { .. }))
        .unwrap();
    assert!(first_end > first_word);
    assert!(
        all[first_word..first_end]
            .iter()
            .filter(|e| matches!(e, TranscriptEvent::VoiceActivity { .. }))
            .count()
            <= 1,
        "the turn ends at the first step after the word"
    );
    let never = EndOfTurnSettings {
        threshold: 1.0,
        ..EndOfTurnSettings::default()
    };
    assert!(ends(&events(&engine, never).await.unwrap()).is_empty());

    // Settings that cannot work are refused before any audio is read.
    let bad = EndOfTurnSettings {
        attack_seconds: -1.0,
        ..EndOfTurnSettings::default()
    };
    let error = events(&engine, bad).await.unwrap_err();
    assert!(matches!(error, VoiceError::Configuration(_)), "{error:?}");
}

/// Unmute's rule, written out independently: skip the first steps, smooth the watched head's
/// probability (half-lives in seconds, 80 ms steps), end the turn above the threshold once a word
/// was heard since the last end.
fn replay(events: &[TranscriptEvent], s: EndOfTurnSettings) -> Vec<u64> {
    let mut average = 1.0f64;
    let mut step = 0;
    let mut speaking = false;
    let mut out = Vec::new();
    for event in events {
        match event {
            TranscriptEvent::Word(_) => speaking = true,
            TranscriptEvent::VoiceActivity {
                time_ms,
                pause_probabilities,
            } => {
                step += 1;
                if step <= s.skip_first_steps {
                    continue;
                }
                let p = f64::from(pause_probabilities[s.head]);
                let half = if p > average {
                    s.attack_seconds
                } else {
                    s.release_seconds
                };
                let alpha = 1.0 - 0.5f64.powf(0.08 / half);
                average = (1.0 - alpha) * average + alpha * p;
                if speaking && average > f64::from(s.threshold) {
                    speaking = false;
                    out.push(*time_ms);
                }
            }
            _ => {}
        }
    }
    out
}

#[test]
fn transcribe_json_says_when_turns_ended() {
    let hub = TestHub::start();
    publish(&hub, STT, "main", &stt_tiny::stt_repo_talkative());
    let cache = tempfile::tempdir().unwrap();
    let out = kyutai_command(
        &hub,
        cache.path(),
        &["transcribe", AUDIO, "--format", "json", "--quiet"],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", output_text(&out).1);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ends = json["end_of_turn_ms"]
        .as_array()
        .expect("the 1B-shaped model has heads");
    assert!(ends.iter().all(|t| t.as_u64().unwrap() <= 1_600));
    assert!(json["words"].as_array().is_some() && json["text"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_events_say_how_far_the_transcript_is_settled() {
    let (_hub, _cache, engine) = talkative_engine().await;
    let without = events(&engine, EndOfTurnSettings::default()).await.unwrap();
    assert!(
        !without
            .iter()
            .any(|e| matches!(e, TranscriptEvent::Progress { .. })),
        "off by default"
    );
    let all = events_with(&engine, |b| b.progress_events(true))
        .await
        .unwrap();
    // The same words and steps as without, plus progress.
    let others: Vec<_> = all
        .iter()
        .filter(|e| !matches!(e, TranscriptEvent::Progress { .. }))
        .cloned()
        .collect();
    assert_eq!(others, without);
    let progress: Vec<(usize, u64)> = all
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            TranscriptEvent::Progress { time_ms } => Some((i, *time_ms)),
            _ => None,
        })
        .collect();
    // One per step from the one that completes the delay (6 steps): steps 6 to 38, 33.
    assert_eq!(progress.len(), 33);
    assert_eq!(progress[0].1, 0);
    assert!(progress.windows(2).all(|w| w[0].1 <= w[1].1));
    assert_eq!(
        progress.last().unwrap().1,
        1_600,
        "the whole audio, at the end"
    );
    // Every word that ended by a progress time was reported before it.
    for (at, time_ms) in &progress {
        for (i, event) in all.iter().enumerate() {
            if let TranscriptEvent::Word(w) = event
                && w.end_ms < *time_ms
            {
                assert!(i < *at, "{w:?} ended by {time_ms} ms but came after");
            }
        }
    }
}

/// `word_start_events(true)`: each word is also reported at the step the model recognises it,
/// before its `Word` (which waits for the word's end), with the same text and start time; off
/// by default, and nothing else changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn word_start_events_come_before_their_words_end() {
    let (_hub, _cache, engine) = talkative_engine().await;
    let without = events(&engine, EndOfTurnSettings::default()).await.unwrap();
    assert!(
        !without
            .iter()
            .any(|e| matches!(e, TranscriptEvent::WordStarted { .. })),
        "off by default"
    );
    let all = events_with(&engine, |b| b.word_start_events(true))
        .await
        .unwrap();
    let others: Vec<_> = all
        .iter()
        .filter(|e| !matches!(e, TranscriptEvent::WordStarted { .. }))
        .cloned()
        .collect();
    assert_eq!(others, without, "the same events besides");
    let words: Vec<_> = all
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            TranscriptEvent::Word(w) => Some((i, w)),
            _ => None,
        })
        .collect();
    let starts: Vec<_> = all
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            TranscriptEvent::WordStarted { text, start_ms } => Some((i, text, *start_ms)),
            _ => None,
        })
        .collect();
    assert!(words.len() >= 3);
    assert_eq!(starts.len(), words.len(), "one start per word");
    for (k, ((started_at, text, start_ms), (ended_at, word))) in
        starts.iter().zip(&words).enumerate()
    {
        assert_eq!((*text, *start_ms), (&word.text, word.start_ms));
        // Reported first, and no later than the step at which the model recognised the word:
        // before the previous word's end would otherwise have been waited for.
        assert!(started_at < ended_at, "{text}");
        if let Some((next_start, ..)) = starts.get(k + 1) {
            assert!(ended_at < next_start, "{text}: ends before the next starts");
        }
    }
}
