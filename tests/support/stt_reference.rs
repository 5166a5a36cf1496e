//! The Python reference's STT recordings (`tests/fixtures/stt_parity/reference.json`, written by
//! `tools/parity/stt/stt_reference.py` with the reference's own streaming loop) and the stated
//! mapping from the reference's conventions to the Rust transcriber's (the `moshi` crate's
//! `asr::State`, as Kyutai's Rust server runs it). Shared by the STT parity, pipeline and CLI
//! tests.

use fluent_voice_kyutai::voice::TranscriptionSegment;
use serde_json::Value;

/// The fixture audio (1.6 s, 24 kHz mono).
pub const AUDIO: &str = "tests/fixtures/stt_parity/speech.wav";

/// Steps per second of the STT models.
const FRAME_RATE: f64 = 12.5;

/// The whole recording.
pub fn reference() -> Value {
    serde_json::from_str(include_str!("../fixtures/stt_parity/reference.json")).unwrap()
}

/// One case of the recording: `"plain"` (the talkative repo, no silence prefix) or `"prefix"`
/// (its 2 s prefix variant).
pub fn case(name: &str) -> Value {
    reference()["cases"][name].clone()
}

pub fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// The words the Rust transcriber must give for a case: the words of the reference's loop run
/// with the one-frame offset of `asr::State` (`mapped` in the fixture), with their times mapped
/// from the reference's timing convention (Kyutai's `stt_from_file_pytorch.py`) to the
/// transcriber's. The reference stamps a word from its positions, `start_step` (the step after
/// the end-of-padding token before the word) and `end_step` (the next end-of-padding token),
/// divided by 12.5, minus `offset_seconds` (the silence prefix and `audio_delay_seconds`).
/// `asr::State` differs in two ways, and the transcriber in one:
///
/// 1. it stamps the end one step later: it counts the step of the end-of-padding token as done
///    before it stamps (`(step_idx - delay) / 12.5` after `step_idx += 1`);
/// 2. it takes the delay off in whole steps, `floor(audio_delay_seconds * 12.5)` (6 steps,
///    0.48 s, for 0.5 s), not in seconds;
/// 3. the transcriber keeps every time within the audio (`[0, duration]`), where the reference
///    only keeps it above 0, and rounds to the millisecond.
pub fn expected_words(case: &Value) -> Vec<TranscriptionSegment> {
    let offset = case["offset_seconds"].as_f64().unwrap();
    let delay_seconds = case["stt_config"]["audio_delay_seconds"].as_f64().unwrap();
    let whole_steps = (delay_seconds * FRAME_RATE).floor() / FRAME_RATE;
    let duration = case["duration_ms"].as_u64().unwrap();
    let ms = |step: f64| {
        let t = step / FRAME_RATE - offset + (delay_seconds - whole_steps);
        ((t.max(0.0) * 1000.0).round() as u64).min(duration)
    };
    case["mapped"]["words"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let end = ms(w["end_step"].as_f64().unwrap() + 1.0);
            let start = ms(w["start_step"].as_f64().unwrap()).min(end);
            TranscriptionSegment::new(w["text"].as_str().unwrap().trim(), start, end)
        })
        .collect()
}

/// The text the transcriber must give for a case: its words, joined by spaces.
pub fn expected_text(case: &Value) -> String {
    expected_words(case)
        .iter()
        .map(|w| w.text.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}
