//! Direct (two-pass) classifier-free guidance, for TTS models trained without CFG distillation
//! (no `cfg` conditioner): parity with the Python reference (`moshi` 0.2.13 `TTSModel` with
//! `cfg_coef` 3.0, greedy) on the tiny repo [`tiny::tts_repo_direct_cfg`], published on the
//! loopback hub as the default TTS repo. The fixtures in `tests/fixtures/tts_cfg/` were recorded
//! by `tools/parity/tts/make_cfg_reference.py` (it documents how to regenerate them) from the
//! repos that `cargo run --example dump_tiny_repos -- <dir>` writes.

mod support;
#[path = "support/tts_reference.rs"]
mod tts_reference;

use fluent_voice_kyutai::KyutaiEngine;
use fluent_voice_kyutai::internals::tts::generate::{GenerationSettings, Generator};
use fluent_voice_kyutai::internals::tts::synth::{SynthesisSettings, TtsModel};
use support::*;
use tts_reference::{
    assert_clearly_different, assert_same_pcm, assert_same_tokens, entries, ints, run_to_end,
};

const NAMES: [&str; 2] = ["hello", "bonjour"];
/// The coefficient of the recorded runs.
const CFG_COEF: f64 = 3.0;

struct Loaded {
    model: std::sync::Arc<TtsModel>,
    voice: candle_core::Tensor,
    _cache: tempfile::TempDir,
    _hub: TestHub,
}

/// The direct-CFG tiny model, fetched through the hub as `kyutai/tts-1.6b-en_fr`.
async fn load() -> Loaded {
    let hub = TestHub::start();
    publish_direct_cfg(&hub);
    let cache = tempfile::tempdir().unwrap();
    let engine = KyutaiEngine::with_config(config(&hub, cache.path()))
        .await
        .unwrap();
    let model = engine.tts_model().await.unwrap();
    let voice = model
        .load_voice(&engine.ensure_voice(VOICE).await.unwrap())
        .unwrap();
    Loaded {
        model,
        voice,
        _cache: cache,
        _hub: hub,
    }
}

#[tokio::test]
async fn direct_cfg_tokens_match_the_reference_at_every_step() {
    let loaded = load().await;
    let model = &loaded.model;
    assert!(model.lm.cfg.cfg_values().is_none(), "no cfg conditioner");
    let conditions = model.conditions(Some(&loaded.voice), CFG_COEF).unwrap();
    assert_eq!(conditions.direct_cfg, Some(CFG_COEF));
    for name in NAMES {
        let record = tts_reference::fixture("tts_cfg", name);
        assert_eq!(record["cfg_coef"].as_f64(), Some(CFG_COEF));
        let text = record["text"].as_str().unwrap();
        assert_eq!(model.entries(text), entries(&record), "{name}: entries");
        let delay_steps = record["delay_steps"].as_u64().unwrap() as usize;
        assert_eq!(delay_steps, model.delay_steps);
        let settings = GenerationSettings {
            temp: 0.0,
            text_temp: 0.0,
            top_k: 250,
            top_k_text: 25,
            seed: 0,
            final_padding: 4,
            max_steps: record["max_steps"].as_u64().unwrap() as usize,
        };
        let mut generator = Generator::new(
            &model.lm,
            entries(&record),
            &conditions,
            delay_steps,
            settings,
        )
        .unwrap();
        let frames = run_to_end(&model.lm, &mut generator);
        assert_same_tokens(name, &generator, &frames, &record);
        // Guidance changes the audio: the unguided run must differ from the recorded one, or
        // this test would not notice the second pass going missing.
        let mut unguided = conditions.clone();
        unguided.direct_cfg = None;
        let mut plain = Generator::new(
            &model.lm,
            entries(&record),
            &unguided,
            delay_steps,
            settings,
        )
        .unwrap();
        let plain_frames = run_to_end(&model.lm, &mut plain);
        assert_ne!(plain_frames, frames, "{name}: CFG made no difference");
    }
}

#[tokio::test]
async fn direct_cfg_waveform_matches_the_reference() {
    let loaded = load().await;
    let model = &loaded.model;
    let conditions = model.conditions(Some(&loaded.voice), CFG_COEF).unwrap();
    let settings = SynthesisSettings {
        temp: 0.0,
        text_temp: 0.0,
        seed: 0,
    };
    for name in NAMES {
        let record = tts_reference::fixture("tts_cfg", name);
        let mut pcm = Vec::new();
        model
            .synthesize_segment(
                record["text"].as_str().unwrap(),
                &conditions,
                &settings,
                &mut |chunk| {
                    pcm.extend(chunk);
                    true
                },
            )
            .unwrap();
        assert_same_pcm("tts_cfg", name, &pcm);
    }
}

#[tokio::test]
async fn a_non_finite_coefficient_is_a_clear_error() {
    let loaded = load().await;
    let e = loaded
        .model
        .conditions(Some(&loaded.voice), f64::NAN)
        .unwrap_err();
    assert!(e.to_string().contains("finite"), "{e}");
}

/// Decodes the 16-bit PCM of a [`tiny::tiny_wav`] file to floats, as the reference reads it.
fn wav_samples(bytes: &[u8]) -> Vec<f32> {
    bytes[44..]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
        .collect()
}

/// The prefix voices of the recorded runs: case name and WAV bytes (`make_cfg_reference.py`'s
/// `PREFIX_VOICES`).
fn prefix_voices() -> [(&'static str, Vec<u8>); 2] {
    [
        ("prefix_hello", tiny::prefix_voice_wav()),
        (
            "prefix_hello_other_voice",
            tiny::prefix_voice_wav_with_period(30),
        ),
    ]
}

/// A model voiced by an audio prefix (as `kyutai/tts-0.75b-en-public`): no conditioners, the
/// voice's Mimi codes fed first, direct CFG 2.0 with the prefix masked in the null pass.
#[tokio::test]
async fn audio_prefix_voice_matches_the_reference() {
    let hub = TestHub::start();
    publish(&hub, TTS, "main", &tiny::tts_repo_prefix());
    let cache = tempfile::tempdir().unwrap();
    let engine = KyutaiEngine::with_config(config(&hub, cache.path()))
        .await
        .unwrap();
    let model = engine.tts_model().await.unwrap();
    assert!(!model.multi_speaker());
    for (name, wav) in prefix_voices() {
        let record = tts_reference::fixture("tts_cfg", name);
        let cfg_coef = record["cfg_coef"].as_f64().unwrap();
        let expected_prefix: Vec<Vec<i64>> = record["prefix_codes"]
            .as_array()
            .unwrap()
            .iter()
            .map(ints)
            .collect();
        // Mimi encodes the voice as the reference's `get_prefix` does.
        let prefix = model.audio_prefix(&wav_samples(&wav)).unwrap();
        assert_eq!(prefix, expected_prefix, "{name}: prefix codes");
        let mut conditions = model.conditions(None, cfg_coef).unwrap();
        assert_eq!(conditions.direct_cfg, Some(cfg_coef));
        conditions.audio_prefix = Some(prefix);

        let settings = GenerationSettings {
            temp: 0.0,
            text_temp: 0.0,
            top_k: 250,
            top_k_text: 25,
            seed: 0,
            final_padding: 4,
            max_steps: record["max_steps"].as_u64().unwrap() as usize,
        };
        let text = record["text"].as_str().unwrap();
        assert_eq!(model.entries(text), entries(&record), "{name}: entries");
        let mut generator = Generator::new(
            &model.lm,
            entries(&record),
            &conditions,
            model.delay_steps,
            settings,
        )
        .unwrap();
        let frames = run_to_end(&model.lm, &mut generator);
        assert_same_tokens(name, &generator, &frames, &record);

        let mut out = Vec::new();
        model
            .synthesize_segment(
                text,
                &conditions,
                &SynthesisSettings {
                    temp: 0.0,
                    text_temp: 0.0,
                    seed: 0,
                },
                &mut |chunk| {
                    out.extend(chunk);
                    true
                },
            )
            .unwrap();
        assert_same_pcm("tts_cfg", name, &out);
    }
}

/// Through the fluent builder: a model without voice embeddings fetches the voice's `.wav` from
/// the voices repo, encodes it as a prefix and uses the default CFG (2.0, direct), so the audio is
/// the reference's `simple_generate(text, "<voice>.wav")`, for each voice; an unknown voice says
/// how voices are named, and a voice too short to encode is a clear error.
#[tokio::test]
async fn the_builder_voices_a_prefix_model_from_the_voice_audio() {
    use fluent_voice_kyutai::voice::{Speaker, TtsConversation, TtsConversationBuilder};
    use futures::StreamExt;

    let hub = TestHub::start();
    publish(&hub, TTS, "main", &tiny::tts_repo_prefix());
    let [(_, voice_wav), (_, other_wav)] = prefix_voices();
    let other_voice = tiny::VOICE_NAMES[2];
    publish(
        &hub,
        VOICES,
        "main",
        &[
            (VOICE.to_string(), voice_wav),
            (other_voice.to_string(), other_wav),
            (
                "expresso/too-short.wav".to_string(),
                tiny::tiny_wav(240, 24_000),
            ),
        ],
    );
    let cache = tempfile::tempdir().unwrap();
    let engine = KyutaiEngine::with_config(config(&hub, cache.path()))
        .await
        .unwrap();
    let speak = |voice: &str| {
        engine
            .tts()
            .with_speaker(
                Speaker::speaker("A")
                    .with_voice(voice)
                    .speak("Hello from Rust.")
                    .build(),
            )
            .temperature(0.0)
            .seed(1)
    };
    let mut voiced = Vec::new();
    for (voice, name) in [
        (VOICE, "prefix_hello"),
        (other_voice, "prefix_hello_other_voice"),
    ] {
        let mut stream = speak(voice).synthesize().await.unwrap().into_stream();
        let mut pcm = Vec::new();
        while let Some(chunk) = stream.next().await {
            pcm.extend(chunk.unwrap().samples.iter().copied());
        }
        assert_same_pcm("tts_cfg", name, &pcm);
        voiced.push(pcm);
    }
    assert_clearly_different("the two prefix voices", &voiced[0], &voiced[1]);

    let err = match speak("expresso/no-such-voice.wav").synthesize().await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("an unknown voice must fail"),
    };
    assert!(err.contains("no-such-voice"), "{err}");
    let err = match speak("expresso/too-short.wav").synthesize().await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a too short voice must fail"),
    };
    assert!(err.contains("too short"), "{err}");
}
