//! Reading the Python reference's TTS recordings (`tools/parity/tts/*.py`) and comparing a Rust
//! generator run with them, step by step. Shared by `tests/tts_parity.rs` and `tests/tts_cfg.rs`.
#![allow(dead_code)]

use std::path::Path;

use fluent_voice_kyutai::internals::tts::generate::Generator;
use fluent_voice_kyutai::internals::tts::state_machine::Entry;
use serde_json::Value;

/// `tests/fixtures/<dir>/<name>.json`.
pub fn fixture(dir: &str, name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir)
        .join(format!("{name}.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

pub fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

/// The script entries the reference built from the text.
pub fn entries(record: &Value) -> Vec<Entry> {
    record["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| Entry {
            tokens: ints(&e["tokens"]),
            text: e["text"].as_str().unwrap().to_string(),
            padding: e["padding"].as_u64().unwrap() as usize,
        })
        .collect()
}

/// Steps the generator to its end and returns the audio frames it produced.
pub fn run_to_end(generator: &mut Generator) -> Vec<Vec<i64>> {
    let mut frames = Vec::new();
    while !generator.finished() {
        if let Some(frame) = generator.step().unwrap() {
            frames.push(frame);
        }
    }
    frames
}

/// Asserts that the run's text tokens (sampled and fed, at every step), audio frames and end
/// step are the reference's, naming the first step that differs.
pub fn assert_same_tokens(name: &str, generator: &Generator, frames: &[Vec<i64>], record: &Value) {
    let expected_text: Vec<(i64, i64)> = record["text_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_i64().unwrap(), p[1].as_i64().unwrap()))
        .collect();
    let got_text: Vec<(i64, i64)> = generator
        .text_log
        .iter()
        .map(|s| (s.sampled, s.fed))
        .collect();
    for (step, (got, want)) in got_text.iter().zip(&expected_text).enumerate() {
        assert_eq!(got, want, "{name}: text tokens differ at step {step}");
    }
    assert_eq!(got_text.len(), expected_text.len(), "{name}: step count");
    let expected_frames: Vec<Vec<i64>> = record["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(ints)
        .collect();
    for (i, (got, want)) in frames.iter().zip(&expected_frames).enumerate() {
        assert_eq!(got, want, "{name}: frame {i} differs");
    }
    assert_eq!(frames.len(), expected_frames.len(), "{name}: frame count");
    assert_eq!(
        generator.state.end_step,
        record["end_step"].as_u64().map(|s| s as usize),
        "{name}: end step"
    );
}

/// Asserts that the waveform has the reference's length and, frame by frame (1920 samples), the
/// reference's loudness (RMS within 1e-5 + 0.1%).
pub fn assert_same_frame_rms(name: &str, pcm: &[f32], record: &Value) {
    assert_eq!(
        pcm.len(),
        record["pcm_samples"].as_u64().unwrap() as usize,
        "{name}: length"
    );
    let expected = record["frame_rms"].as_array().unwrap();
    for (i, (frame, want)) in pcm.chunks(1920).zip(expected).enumerate() {
        let want = want.as_f64().unwrap();
        let rms =
            (frame.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / frame.len() as f64).sqrt();
        assert!(
            (rms - want).abs() <= 1e-5 + 1e-3 * want,
            "{name}: frame {i} RMS {rms} vs reference {want}"
        );
    }
}
