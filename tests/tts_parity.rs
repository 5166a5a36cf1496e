//! Parity of the Rust TTS with the Python reference (`moshi` 0.2.13 `TTSModel`) on the tiny TTS
//! repo: the fixtures in `tests/fixtures/tts_parity/` were recorded by
//! `tools/parity/tts/make_reference.py` from the same repo bytes (greedy decoding, the tiny voice,
//! `cfg` "2.0"). The repo is fetched through the loopback hub like any user would fetch it.

mod support;
#[path = "support/tts_reference.rs"]
mod tts_reference;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use fluent_voice_kyutai::KyutaiEngine;
use fluent_voice_kyutai::internals::tts::TtsConfig;
use fluent_voice_kyutai::internals::tts::conditioners::Conditions;
use fluent_voice_kyutai::internals::tts::generate::{GenerationSettings, Generator};
use fluent_voice_kyutai::internals::tts::lm::TtsLm;
use support::*;
use tts_reference::{assert_same_frame_rms, assert_same_tokens, entries, run_to_end};

const NAMES: [&str; 3] = ["hello", "bonjour", "two_sentences"];

struct Loaded {
    lm: TtsLm,
    voice: Tensor,
    _cache: tempfile::TempDir,
    _hub: TestHub,
}

async fn load() -> Loaded {
    let hub = TestHub::start();
    publish_defaults(&hub);
    let cache = tempfile::tempdir().unwrap();
    let engine = KyutaiEngine::with_config(config(&hub, cache.path()))
        .await
        .unwrap();
    let files = engine.ensure_tts().await.unwrap().clone();
    let voice_path = engine.ensure_voice(VOICE).await.unwrap();
    let cfg = TtsConfig::from_json(&std::fs::read(&files.config).unwrap()).unwrap();
    let lm = TtsLm::load(cfg, &files.lm_weights, &Device::Cpu, DType::F32).unwrap();
    let voice = candle_core::safetensors::load(&voice_path, &Device::Cpu).unwrap()["speaker_wavs"]
        .squeeze(0)
        .unwrap();
    Loaded {
        lm,
        voice,
        _cache: cache,
        _hub: hub,
    }
}

fn conditions(voice: &Tensor) -> Conditions {
    let mut c = Conditions::default();
    c.values.insert("control".into(), Some("ok".into()));
    c.values.insert("cfg".into(), Some("2.0".into()));
    c.voices.push(voice.clone());
    c
}

fn greedy(max_steps: usize) -> GenerationSettings {
    GenerationSettings {
        temp: 0.0,
        text_temp: 0.0,
        top_k: 250,
        top_k_text: 25,
        seed: 0,
        final_padding: 4,
        max_steps,
    }
}

#[tokio::test]
async fn text_and_audio_tokens_match_the_reference_at_every_step() {
    let loaded = load().await;
    for name in NAMES {
        let record = tts_reference::fixture("tts_parity", name);
        let delay_steps = record["delay_steps"].as_u64().unwrap() as usize;
        assert_eq!(delay_steps, loaded.lm.cfg.delay_steps(12.5));
        let mut generator = Generator::new(
            &loaded.lm,
            entries(&record),
            &conditions(&loaded.voice),
            delay_steps,
            greedy(record["max_steps"].as_u64().unwrap() as usize),
        )
        .unwrap();

        // The first steps' text logits, to locate numeric drift if tokens ever differ.
        let frames = run_to_end(&mut generator);
        assert_same_tokens(name, &generator, &frames, &record);
    }
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[tokio::test]
async fn entries_and_waveform_match_the_reference() {
    use fluent_voice_kyutai::internals::tts::synth::SynthesisSettings;

    let hub = TestHub::start();
    publish_defaults(&hub);
    let cache = tempfile::tempdir().unwrap();
    let engine = KyutaiEngine::with_config(config(&hub, cache.path()))
        .await
        .unwrap();
    let model = engine.tts_model().await.unwrap();
    let voice = model
        .load_voice(&engine.ensure_voice(VOICE).await.unwrap())
        .unwrap();
    let conditions = model.conditions(Some(&voice), 2.0).unwrap();
    let settings = SynthesisSettings {
        temp: 0.0,
        text_temp: 0.0,
        seed: 0,
    };
    for name in NAMES {
        let record = tts_reference::fixture("tts_parity", name);
        let text = record["text"].as_str().unwrap();
        // Text normalisation + SentencePiece + speaker token + padding, as `prepare_script`.
        assert_eq!(model.entries(text), entries(&record), "{name}: entries");

        let mut pcm = Vec::new();
        model
            .synthesize_segment(text, &conditions, &settings, &mut |chunk| {
                assert_eq!(chunk.len(), 1920, "one Mimi frame per chunk");
                pcm.extend(chunk);
                true
            })
            .unwrap();
        assert_same_frame_rms(name, &pcm, &record);
        let full = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tts_parity")
            .join(format!("{name}.pcm.f32"));
        if full.exists() {
            let want = read_f32(&full);
            assert_eq!(pcm.len(), want.len());
            let max_diff = pcm
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            eprintln!(
                "{name}: {} samples, max |rust - python| = {max_diff:e}",
                pcm.len()
            );
            assert!(max_diff < 1e-6, "{name}: max sample difference {max_diff}");
        }
    }
}
