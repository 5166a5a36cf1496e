//! STT parity with the Python reference's own streaming loop (Mimi encode, then `LMGen.step`,
//! with the padding and timing conventions of Kyutai's `stt_from_file_pytorch.py`), recorded by
//! `tools/parity/stt/stt_reference.py` on the talkative tiny STT repos
//! (`tests/support/stt_tiny.rs`) and `tests/fixtures/stt_parity/speech.wav`.
//!
//! The Rust transcriber runs the `moshi` crate's `asr::State`, which feeds each frame's codes
//! one step later than `LMGen` does. The script measures `LMGen`'s alignment and records the
//! reference's loop run with that offset (`mapped`); the test below measures `asr::State`'s, so
//! the mapping is computed on both sides, never copied. Under it, the Rust run equals the
//! reference step for step: the Mimi codes of every frame, the text token of every step, and
//! the words with their timings (the timing conventions are mapped in
//! `tests/support/stt_reference.rs`). The `prefix` case has a 2 s silence prefix, longer than
//! the audio: a word time that kept the prefix, or lost it twice, would leave the audio and
//! could not be clamped back onto the reference's.

#[path = "support/stt_tiny.rs"]
mod stt_tiny;
mod support;

use candle_core::{DType, Device, Tensor};
use fluent_voice_kyutai::KyutaiEngine;
use fluent_voice_kyutai::internals::stt::SttConfig;
use fluent_voice_kyutai::voice::{
    SpeechSource, SttConversation, SttConversationBuilder, TranscriptionSegment,
};
use futures::StreamExt;
use stt_reference::{AUDIO, case, expected_words, u32s};
use support::TestHub;
use support::{stt_reference, tiny};

type Repo = Vec<(String, Vec<u8>)>;

fn repo_of(name: &str) -> Repo {
    match name {
        "plain" => stt_tiny::stt_repo_talkative(),
        "prefix" => stt_tiny::stt_repo_talkative_with_prefix(tiny::STT_PREFIX_SECONDS),
        other => panic!("no case {other}"),
    }
}

async fn engine(hub: &TestHub, cache: &std::path::Path, repo: &Repo) -> KyutaiEngine {
    support::publish(hub, support::STT, "main", repo);
    KyutaiEngine::with_config(support::config(hub, cache))
        .await
        .unwrap()
}

/// The codes Mimi gives for every frame, the text token of every step and the words with their
/// timings are the reference's, under the stated mapping, with and without a silence prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_tokens_and_timed_words_match_python_under_the_mapping() {
    for name in ["plain", "prefix"] {
        let case = case(name);
        let hub = TestHub::start();
        let cache = tempfile::tempdir().unwrap();
        let engine = engine(&hub, cache.path(), &repo_of(name)).await;
        let model = engine.stt_model().await.unwrap();
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

        // The reference ran `chunks` steps; the transcriber runs a second more of trailing
        // silence (as Kyutai's Rust `stt-rs` does), after every word is decided.
        let chunks = case["chunks"].as_u64().unwrap() as usize;
        let prefix = case["prefix_chunks"].as_u64().unwrap() as usize;
        assert!(
            transcriber.steps() > chunks,
            "{name}: {}",
            transcriber.steps()
        );

        // Mimi: the codes of every frame, padding included.
        let python_codes: Vec<Vec<u32>> = case["mimi_codes"]
            .as_array()
            .unwrap()
            .iter()
            .map(u32s)
            .collect();
        let codes = transcriber.audio_codes();
        assert_eq!(codes.len(), transcriber.steps());
        for (frame, want) in python_codes.iter().enumerate() {
            assert_eq!(
                &codes[frame], want,
                "{name}: Mimi codes of frame {frame} (the audio starts at frame {prefix})"
            );
        }
        // The codes follow the audio: not those of silence, and not all alike.
        let audio_codes = &python_codes[prefix..prefix + 20];
        assert!(audio_codes.iter().any(|c| c != &python_codes[0]));
        assert!(audio_codes.iter().any(|c| c != &audio_codes[0]));

        // Text tokens, step by step (the transcriber sees each step's token at the next step).
        let tokens = transcriber.text_tokens();
        let mapped = u32s(&case["mapped"]["text_tokens"]);
        assert_eq!(tokens[..chunks], mapped[..], "{name}: text tokens");
        // The reference's loop as it is (no offset) gives other tokens: the offset is real.
        assert_ne!(
            tokens[..chunks],
            u32s(&case["reference"]["text_tokens"])[..],
            "{name}"
        );

        // Words and timings.
        let expected = expected_words(&case);
        assert!(expected.len() >= 3, "{name}: {expected:?}");
        assert_eq!(words, expected, "{name}: words");
        assert!(
            expected.iter().any(|w| w.start_ms > 0 && w.end_ms < 1600),
            "{name}: a word inside the audio, where a time off by the prefix would show"
        );
    }
}

/// Through the fluent API (`KyutaiEngine::stt()`): the same words, and the audio's duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conversation_gives_the_reference_words() {
    let case = case("plain");
    let hub = TestHub::start();
    let cache = tempfile::tempdir().unwrap();
    let engine = engine(&hub, cache.path(), &repo_of("plain")).await;
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
    assert_eq!(words, expected_words(&case));
    assert_eq!(duration.ms(), case["duration_ms"].as_u64());
}

/// The Rust half of the frame mapping, measured: `asr::State` gives the model the codes of frame
/// `k - 1` at step `k` (the padding token at step 0), where the reference's `LMGen` gives those
/// of frame `k` (`lmgen_frame_at_step` in the fixture, measured by the script); the difference
/// is the `audio_shift_frames` the script ran the reference with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_asr_state_feeds_each_frame_one_step_later() {
    let case = case("plain");
    let hub = TestHub::start();
    let cache = tempfile::tempdir().unwrap();
    let engine = engine(&hub, cache.path(), &repo_of("plain")).await;
    let paths = engine.ensure_stt().await.unwrap().clone();
    let config = SttConfig::from_file(&paths.config).unwrap();
    // SAFETY: a read-only mapping of a file of the test's own cache.
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(
            &[&paths.lm_weights],
            DType::F32,
            &Device::Cpu,
        )
    }
    .unwrap();
    let lm = moshi::lm::LmModel::new(
        &config.lm_config(),
        moshi::nn::MaybeQuantizedVarBuilder::Real(vb),
    )
    .unwrap();
    let mimi = fluent_voice_kyutai::internals::load_mimi(
        &paths.mimi_weights,
        paths.mimi_config.as_deref(),
        config.n_q,
        &Device::Cpu,
        DType::F32,
        None,
    )
    .unwrap();
    let card = config.card as u32;
    let mut state = moshi::asr::State::new(1, config.delay_steps(), 0.0, mimi, lm).unwrap();
    // Frame k carries the code k + 1 in every codebook, so the fed code names the frame.
    let fed = std::cell::RefCell::new(Vec::new());
    for k in 0..6u32 {
        let codes =
            Tensor::from_vec(vec![k + 1; config.n_q], (1, config.n_q, 1), &Device::Cpu).unwrap();
        state
            .step_tokens(&codes, None, &().into(), |_, _, audio| {
                let code = audio[0].flatten_all().unwrap().to_vec1::<u32>().unwrap()[0];
                fed.borrow_mut()
                    .push((code != card).then(|| i64::from(code) - 1));
            })
            .unwrap();
    }
    let rust: Vec<Option<i64>> = fed.into_inner();
    let python: Vec<Option<i64>> = case["lmgen_frame_at_step"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64())
        .collect();
    let shift = case["audio_shift_frames"].as_i64().unwrap();
    assert_eq!(python[0], None, "LMGen starts with its initial tokens");
    assert_eq!(rust[0], None, "asr::State starts with the padding token");
    for step in 1..python.len() {
        assert_eq!(
            rust[step],
            python[step].map(|frame| frame - shift),
            "step {step}: rust {rust:?}, python {python:?}"
        );
    }
    assert_eq!(shift, 1);
}

/// Each step's voice-activity probabilities (the extra heads' `AsrMsg::Step { prs }`, which the
/// end-of-turn rule reads) are the reference's `LMGen.step_with_extra_heads`, step for step,
/// under the same mapping, with and without a silence prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voice_activity_probabilities_match_python_at_every_step() {
    use fluent_voice_kyutai::voice::TranscriptEvent;
    let samples: Vec<f32> = hound::WavReader::open(AUDIO)
        .unwrap()
        .samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32768.0)
        .collect();
    for name in ["plain", "prefix"] {
        let case = case(name);
        let hub = TestHub::start();
        let cache = tempfile::tempdir().unwrap();
        let engine = engine(&hub, cache.path(), &repo_of(name)).await;
        let model = engine.stt_model().await.unwrap();
        let mut transcriber = model
            .transcriber(fluent_voice_kyutai::models::WhenBusy::Wait)
            .unwrap();
        let mut events = transcriber.push(&samples).unwrap();
        events.extend(transcriber.finish().unwrap());
        let ours: Vec<Vec<f32>> = events
            .into_iter()
            .filter_map(|e| match e {
                TranscriptEvent::VoiceActivity {
                    pause_probabilities,
                    ..
                } => Some(pause_probabilities),
                _ => None,
            })
            .collect();
        assert_eq!(ours.len(), transcriber.steps(), "{name}: one per step");

        let reference: Vec<Vec<f32>> = case["mapped"]["pause_probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|step| {
                step.as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_f64().unwrap() as f32)
                    .collect()
            })
            .collect();
        assert_eq!(reference.len(), case["chunks"].as_u64().unwrap() as usize);
        let mut largest = 0f32;
        for (step, (got, want)) in ours.iter().zip(&reference).enumerate() {
            assert_eq!(got.len(), 4, "{name}: four heads");
            assert_eq!(got.len(), want.len(), "{name}: step {step}");
            for (g, w) in got.iter().zip(want) {
                largest = largest.max((g - w).abs());
                assert!(
                    (g - w).abs() <= 1e-4,
                    "{name}: step {step}: {got:?} vs {want:?}"
                );
            }
        }
        // The probabilities follow the audio: they move from step to step by far more than
        // the tolerance, so a wrong step or a wrong head could not pass.
        let first_head: Vec<f32> = reference.iter().map(|p| p[0]).collect();
        let spread = first_head.iter().copied().fold(f32::MIN, f32::max)
            - first_head.iter().copied().fold(f32::MAX, f32::min);
        assert!(spread > 0.01, "{name}: spread {spread}");
        eprintln!(
            "{name}: {} steps, largest difference {largest:.2e}, spread {spread:.3}",
            reference.len()
        );
    }
}
