//! Reading the Python reference's TTS recordings (`tools/parity/tts/*.py`) and comparing Rust
//! runs with them: tokens step by step, the first text logits, and the waveform sample by
//! sample. Shared by the TTS parity, CFG, provider and CLI tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use fluent_voice_kyutai::internals::tts::generate::Generator;
use fluent_voice_kyutai::internals::tts::lm::TtsLm;
use fluent_voice_kyutai::internals::tts::state_machine::Entry;
use serde_json::Value;

/// Largest difference allowed between a Rust and a reference sample. The tiny Mimi's output
/// moves by ~0.1 when a single code changes (`tests/tiny_models.rs`), 100,000 times more.
pub const PCM_TOLERANCE: f32 = 1e-6;

/// Largest difference allowed between Rust and reference text logits (values of order 1).
pub const LOGIT_TOLERANCE: f32 = 1e-4;

fn fixture_path(dir: &str, file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir)
        .join(file)
}

/// `tests/fixtures/<dir>/<name>.json`.
pub fn fixture(dir: &str, name: &str) -> Value {
    let path = fixture_path(dir, &format!("{name}.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}")))
        .unwrap()
}

/// The reference's waveform, `tests/fixtures/<dir>/<name>.pcm.f32` (little-endian f32).
pub fn reference_pcm(dir: &str, name: &str) -> Vec<f32> {
    let path = fixture_path(dir, &format!("{name}.pcm.f32"));
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{path:?}: {e}"))
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
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
pub fn run_to_end(lm: &TtsLm, generator: &mut Generator) -> Vec<Vec<i64>> {
    let mut frames = Vec::new();
    while !generator.finished() {
        if let Some(frame) = generator.step(lm).unwrap() {
            frames.push(frame);
        }
    }
    frames
}

/// Asserts that the run's text logits of the first steps are the reference's (within
/// [`LOGIT_TOLERANCE`]), then that its text tokens (sampled and fed, at every step), audio
/// frames and end step are, naming the first step that differs.
pub fn assert_same_tokens(name: &str, generator: &Generator, frames: &[Vec<i64>], record: &Value) {
    let expected_logits = record["text_logits_first_steps"]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: the fixture has no text_logits_first_steps"));
    assert!(!expected_logits.is_empty(), "{name}: no logits recorded");
    assert_eq!(
        generator.first_text_logits.len(),
        expected_logits.len(),
        "{name}: logged logit steps"
    );
    for (step, (got, want)) in generator
        .first_text_logits
        .iter()
        .zip(expected_logits)
        .enumerate()
    {
        let want: Vec<f32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(
            got.len(),
            want.len(),
            "{name}: text vocabulary at step {step}"
        );
        let diff = max_abs_diff(got, &want);
        assert!(
            diff <= LOGIT_TOLERANCE,
            "{name}: text logits of step {step} differ by {diff}"
        );
    }

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

/// The largest absolute difference between two equally long signals.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// Asserts that `pcm` is the reference's waveform `tests/fixtures/<dir>/<name>.pcm.f32`: the same
/// length, every sample within [`PCM_TOLERANCE`].
pub fn assert_same_pcm(dir: &str, name: &str, pcm: &[f32]) {
    let want = reference_pcm(dir, name);
    assert_eq!(pcm.len(), want.len(), "{dir}/{name}: waveform length");
    let diff = max_abs_diff(pcm, &want);
    eprintln!(
        "{dir}/{name}: {} samples, max |rust - python| = {diff:e}",
        pcm.len()
    );
    assert!(
        diff <= PCM_TOLERANCE,
        "{dir}/{name}: a sample differs from the reference by {diff}"
    );
}

/// Asserts that `pcm`, written as 16-bit PCM (`round(clamp(x) * 32767)`, as `kyutai say` does),
/// is the reference's waveform: every sample within one step of the reference's, rounded alike.
pub fn assert_same_pcm16(dir: &str, name: &str, pcm: &[i16]) {
    let want = reference_pcm(dir, name);
    assert_eq!(pcm.len(), want.len(), "{dir}/{name}: waveform length");
    for (i, (&got, &want)) in pcm.iter().zip(&want).enumerate() {
        let want = (want.clamp(-1.0, 1.0) * f32::from(i16::MAX)).round() as i32;
        assert!(
            (i32::from(got) - want).abs() <= 1,
            "{dir}/{name}: sample {i} is {got}, the reference's is {want}"
        );
    }
}

/// Asserts that two waveforms are clearly different: other lengths, or some sample apart by
/// more than 0.01 (10,000 times [`PCM_TOLERANCE`]).
pub fn assert_clearly_different(what: &str, a: &[f32], b: &[f32]) {
    if a.len() == b.len() {
        let diff = max_abs_diff(a, b);
        assert!(diff > 0.01, "{what}: the waveforms differ by {diff} only");
    }
}
