//! bf16 (and, on a GPU, f32) against the CPU f32 reference, on the tiny models served by the
//! loopback hub.
//!
//! On a GPU the models run in bf16 by default; these tests run that path where it can run: on
//! the CPU (bf16 TTS with f32-accumulated matrix products, bf16-rounded STT weights, see
//! `layers::matmul` and `stt::model`), and on whatever device `KYUTAI_TEST_DEVICE` names
//! (`tools/gpu-check.sh` sets `cuda`). The CPU f32 run is the reference: it is the one the
//! token-exact Python parity tests hold to the reference implementation.
//!
//! Tolerances, stated once here and printed by each test (`--nocapture`):
//! - TTS, teacher-forced (both runs fed the reference's greedy tokens), over every text and
//!   audio-codebook distribution of [`TTS_STEPS`] steps: a cosine similarity of the logits of at
//!   least [`MIN_COSINE`], a largest logit difference of at most [`MAX_LOGIT_DIFF`] times the
//!   reference's largest logit magnitude, and the same greedy token in at least
//!   [`MIN_GREEDY_AGREEMENT`] of the distributions.
//! - STT, free-running on the parity audio: the reference's text token in at least
//!   [`MIN_STT_TOKEN_AGREEMENT`] of the steps.
//!
//! Measured on the CPU in bf16 (2 cores, this commit): TTS min cosine 0.99988, largest logit
//! difference 1.4%, greedy token equal in 98.3% (118 of 120); STT 37 of 37 tokens equal.

#[path = "support/stt_tiny.rs"]
mod stt_tiny;
mod support;

use candle_core::{DType, Device, Tensor};
use fluent_voice_kyutai::KyutaiEngine;
use fluent_voice_kyutai::SttModel;
use fluent_voice_kyutai::internals::tts::TtsConfig;
use fluent_voice_kyutai::internals::tts::conditioners::Conditions;
use fluent_voice_kyutai::internals::tts::lm::TtsLm;
use fluent_voice_kyutai::internals::tts::sampling::argmax;
use fluent_voice_kyutai::models::Weights as WeightDType;
use fluent_voice_kyutai::voice::SpeechSource;
use support::*;

const TTS_STEPS: usize = 24;
const MIN_COSINE: f64 = 0.999;
const MAX_LOGIT_DIFF: f64 = 0.05;
const MIN_GREEDY_AGREEMENT: f64 = 0.95;
const MIN_STT_TOKEN_AGREEMENT: f64 = 0.95;

/// The device under test (and its name) and the dtypes to check there against CPU f32: bf16
/// everywhere, f32 too on a GPU (on the CPU it is the reference itself).
fn cases() -> (Device, String, Vec<DType>) {
    let name = test_device().to_string();
    let device = fluent_voice_kyutai::internals::candle_device(test_device()).unwrap();
    let dtypes = if device.is_cpu() {
        vec![DType::BF16]
    } else {
        vec![DType::F32, DType::BF16]
    };
    (device, name, dtypes)
}

fn weight_dtype(dtype: DType) -> WeightDType {
    match dtype {
        DType::F32 => WeightDType::F32,
        DType::BF16 => WeightDType::Bf16,
        other => panic!("no case for {other:?}"),
    }
}

/// How far one run's logits are from the reference's, over many distributions.
#[derive(Default)]
struct Drift {
    distributions: usize,
    greedy_equal: usize,
    min_cosine: f64,
    max_rel_diff: f64,
    any_difference: bool,
}

impl Drift {
    fn add(&mut self, reference: &[f32], got: &[f32]) {
        assert_eq!(reference.len(), got.len());
        assert!(got.iter().all(|x| x.is_finite()), "non-finite logits");
        let dot: f64 = reference
            .iter()
            .zip(got)
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum();
        let norm = |v: &[f32]| v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        let cosine = dot / (norm(reference) * norm(got)).max(f64::MIN_POSITIVE);
        let scale = reference.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
        let diff = reference
            .iter()
            .zip(got)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs())) as f64;
        if self.distributions == 0 {
            self.min_cosine = cosine;
        }
        self.distributions += 1;
        self.min_cosine = self.min_cosine.min(cosine);
        self.max_rel_diff = self.max_rel_diff.max(diff / scale.max(1e-6));
        self.any_difference |= diff > 0.0;
        self.greedy_equal += usize::from(argmax(reference) == argmax(got));
    }

    fn agreement(&self) -> f64 {
        self.greedy_equal as f64 / self.distributions as f64
    }
}

fn tts_conditions(voice: &Tensor) -> Conditions {
    let mut c = Conditions::default();
    c.values.insert("control".into(), Some("ok".into()));
    c.values.insert("cfg".into(), Some("2.0".into()));
    c.voices.push(voice.clone());
    c
}

/// Runs `lm` and the CPU f32 `reference` side by side for [`TTS_STEPS`] steps, both fed the
/// reference's greedy tokens (main transformer and every depformer codebook).
fn tts_drift(reference: &TtsLm, lm: &TtsLm, voice: &Tensor) -> Drift {
    let cfg = &reference.cfg;
    let mut ref_state = reference.new_state(&tts_conditions(voice)).unwrap();
    let voice = voice.to_device(lm.device()).unwrap();
    let mut state = lm.new_state(&tts_conditions(&voice)).unwrap();
    let mut tokens = vec![cfg.text_card as i64];
    tokens.extend(std::iter::repeat_n(cfg.card as i64, cfg.n_q));
    let mut drift = Drift::default();
    for _ in 0..TTS_STEPS {
        let (ref_out, ref_logits) = reference.forward_text(&mut ref_state, &tokens).unwrap();
        let (out, logits) = lm.forward_text(&mut state, &tokens).unwrap();
        drift.add(&ref_logits, &logits);
        let text = argmax(&ref_logits) as i64;
        reference.depformer_reset(&mut ref_state);
        lm.depformer_reset(&mut state);
        let mut next = vec![text];
        let mut prev = text;
        for cb in 0..cfg.n_q {
            let want = reference
                .depformer_logits(&mut ref_state, cb, prev, &ref_out)
                .unwrap();
            let got = lm.depformer_logits(&mut state, cb, prev, &out).unwrap();
            drift.add(&want, &got);
            prev = argmax(&want) as i64;
            next.push(prev);
        }
        tokens = next;
    }
    drift
}

#[tokio::test]
async fn tts_logits_follow_cpu_f32_within_tolerance() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    let cache = tempfile::tempdir().unwrap();
    let engine = KyutaiEngine::with_config(config(&hub, cache.path()))
        .await
        .unwrap();
    let files = engine.ensure_tts().await.unwrap().clone();
    let voice_path = engine.ensure_voice(VOICE).await.unwrap();
    let cfg = TtsConfig::from_json(&std::fs::read(&files.config).unwrap()).unwrap();
    let reference = TtsLm::load(cfg.clone(), &files.lm_weights, &Device::Cpu, DType::F32).unwrap();
    let voice = candle_core::safetensors::load(&voice_path, &Device::Cpu).unwrap()["speaker_wavs"]
        .squeeze(0)
        .unwrap();

    let (device, name, dtypes) = cases();
    for dtype in dtypes {
        let lm = TtsLm::load(cfg.clone(), &files.lm_weights, &device, dtype).unwrap();
        assert_eq!(lm.dtype(), dtype);
        let drift = tts_drift(&reference, &lm, &voice);
        eprintln!(
            "TTS {name} {dtype:?} vs CPU f32: {} distributions, min cosine {:.6}, max logit \
             difference {:.4} of the largest logit, greedy token equal in {:.1}%",
            drift.distributions,
            drift.min_cosine,
            drift.max_rel_diff,
            100.0 * drift.agreement()
        );
        assert_eq!(drift.distributions, TTS_STEPS * (1 + cfg.n_q));
        if dtype == DType::BF16 {
            // Proof that bf16 really ran: its rounding shows in the logits.
            assert!(drift.any_difference, "bf16 logits equal f32's exactly");
        }
        assert!(drift.min_cosine >= MIN_COSINE, "{dtype:?}: cosine");
        assert!(
            drift.max_rel_diff <= MAX_LOGIT_DIFF,
            "{dtype:?}: logit difference"
        );
        assert!(
            drift.agreement() >= MIN_GREEDY_AGREEMENT,
            "{dtype:?}: greedy"
        );
    }
}

/// The whole bf16 TTS path through the engine (`KyutaiModelConfig::weights`): voice conditioning,
/// generation and Mimi (f32) decoding, to audio as long as the f32 run's.
#[tokio::test]
async fn tts_synthesizes_in_bf16_through_the_engine() {
    use fluent_voice_kyutai::internals::tts::synth::SynthesisSettings;

    let hub = TestHub::start();
    publish_defaults(&hub);
    let settings = SynthesisSettings {
        temp: 0.0,
        text_temp: 0.0,
        seed: 0,
    };
    let mut lengths = Vec::new();
    for dtype in [WeightDType::F32, WeightDType::Bf16] {
        let cache = tempfile::tempdir().unwrap();
        let engine = KyutaiEngine::with_config(config(&hub, cache.path()).weights(dtype))
            .await
            .unwrap();
        let model = engine.tts_model().await.unwrap();
        let voice = model
            .load_voice(&engine.ensure_voice(VOICE).await.unwrap())
            .unwrap();
        let conditions = model.conditions(Some(&voice), 2.0).unwrap();
        let mut pcm = Vec::new();
        model
            .synthesize_segment("Hello world.", &conditions, &settings, &mut |chunk| {
                pcm.extend(chunk);
                true
            })
            .unwrap();
        assert!(!pcm.is_empty(), "{dtype:?}: no audio");
        assert!(
            pcm.iter().all(|x| x.is_finite() && x.abs() <= 1.0),
            "{dtype:?}: samples out of range"
        );
        lengths.push(pcm.len());
    }
    eprintln!("TTS audio samples: f32 {}, bf16 {}", lengths[0], lengths[1]);
    // The end depends on the text tokens only; bf16 must not change when the words are said by
    // more than a frame or two.
    assert!(lengths[0].abs_diff(lengths[1]) <= 2 * 1920, "{lengths:?}");
}

/// Text tokens of the talkative tiny STT model on the parity audio, through the engine.
async fn stt_tokens(hub: &TestHub, dtype: Option<WeightDType>, device: bool) -> Vec<u32> {
    let cache = tempfile::tempdir().unwrap();
    let mut config = config(hub, cache.path());
    if !device {
        config = config.device(fluent_voice_kyutai::models::Device::Cpu);
    }
    if let Some(dtype) = dtype {
        config = config.weights(dtype);
    }
    let engine = KyutaiEngine::with_config(config).await.unwrap();
    let model: std::sync::Arc<SttModel> = engine.stt_model().await.unwrap();
    let mut transcriber = model
        .transcriber(fluent_voice_kyutai::models::WhenBusy::Wait)
        .unwrap();
    transcriber.record_text_tokens();
    fluent_voice_kyutai::internals::stt::transcribe_blocking(
        SpeechSource::from_file("tests/fixtures/stt_parity/speech.wav"),
        &mut transcriber,
        |_| true,
    )
    .unwrap();
    transcriber.text_tokens().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stt_tokens_follow_cpu_f32_within_tolerance() {
    let hub = TestHub::start();
    publish(&hub, STT, "main", &stt_tiny::stt_repo_talkative());
    let reference = stt_tokens(&hub, Some(WeightDType::F32), false).await;
    assert!(
        reference.iter().filter(|&&t| t != 0 && t != 3).count() >= 5,
        "the talkative model says words"
    );
    let (_, name, dtypes) = cases();
    for dtype in dtypes {
        let tokens = stt_tokens(&hub, Some(weight_dtype(dtype)), true).await;
        assert_eq!(tokens.len(), reference.len(), "{dtype:?}: steps");
        let equal = tokens
            .iter()
            .zip(&reference)
            .filter(|(a, b)| a == b)
            .count();
        let agreement = equal as f64 / reference.len() as f64;
        eprintln!(
            "STT {name} {dtype:?} vs CPU f32: text tokens equal at {equal} of {} steps ({:.1}%)",
            reference.len(),
            100.0 * agreement
        );
        assert!(agreement >= MIN_STT_TOKEN_AGREEMENT, "{dtype:?}: tokens");
    }
}
