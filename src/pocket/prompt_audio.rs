//! A voice prompt's audio, made ready for Mimi's encoder as `get_state_for_audio_prompt`
//! does: mixed to mono, optionally truncated to 30 s, resampled to 24 kHz, and ended on exactly
//! 80 ms of silence (`end_on_pause`, `pocket_tts/data/audio_utils.py`).

use std::path::Path;

use crate::audio::decode::AudioDecoder;
use crate::audio::resample::downmix;
use crate::audio::resample_poly::resample_poly;
use crate::error::{MoshiError, Result};

/// The longest prompt kept when truncation is asked for.
pub const MAX_PROMPT_SECONDS: usize = 30;

/// `end_on_pause`: cuts the trailing silence (20 ms frames more than 35 dB below the loudest),
/// fades the last 20 ms of what remains out, and appends 80 ms of zeros.
pub fn end_on_pause(wav: &[f32], sample_rate: usize) -> Vec<f32> {
    let frame = ((0.02 * sample_rate as f64) as usize).max(1);
    let n = wav.len() / frame;
    if n == 0 {
        return wav.to_vec();
    }
    let db: Vec<f32> = wav[..n * frame]
        .chunks_exact(frame)
        .map(|f| {
            let rms = (f.iter().map(|x| x * x).sum::<f32>() / frame as f32).sqrt();
            20.0 * (rms + 1e-12).log10()
        })
        .collect();
    let max = db.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let last_loud = db.iter().rposition(|&d| d > max - 35.0).unwrap_or(0);
    let end = (last_loud + 1) * frame;
    let mut out = wav[..end].to_vec();
    let fade = ((0.02 * sample_rate as f64) as usize).min(end);
    for i in 0..fade {
        let w = if fade > 1 {
            1.0 - i as f32 / (fade - 1) as f32
        } else {
            1.0
        };
        out[end - fade + i] *= w;
    }
    out.resize(end + (0.08 * sample_rate as f64) as usize, 0.0);
    out
}

/// Reads an audio file (any format the crate decodes) as mono samples and its sample rate.
pub fn read_audio(path: &Path) -> Result<(Vec<f32>, u32)> {
    let mut decoder = AudioDecoder::open(path)?;
    let channels = decoder.channels();
    let rate = decoder.sample_rate();
    let mut samples = Vec::new();
    while let Some(chunk) = decoder.next_chunk()? {
        samples.extend(downmix(&chunk, channels));
    }
    Ok((samples, rate))
}

/// The prompt from `samples` at `rate`: truncated to 30 s when `truncate`, resampled to
/// `target` Hz, ended on a pause. Refuses silence and prompts shorter than one 80 ms frame.
pub fn prepare_prompt(samples: &[f32], rate: u32, target: u32, truncate: bool) -> Result<Vec<f32>> {
    let mut samples = samples;
    let limit = MAX_PROMPT_SECONDS * rate as usize;
    if truncate && samples.len() > limit {
        samples = &samples[..limit];
    }
    // SciPy's filter, as the reference resamples (`convert_audio`).
    let resampled = resample_poly(samples, rate, target);
    let min = target as usize * 2 / 25;
    if resampled.len() < min {
        return Err(MoshiError::InvalidInput(format!(
            "the voice prompt is {} ms long; give at least a few seconds of speech",
            resampled.len() * 1000 / target as usize
        )));
    }
    if resampled.iter().all(|&x| x.abs() < 1e-6) {
        return Err(MoshiError::InvalidInput(
            "the voice prompt is silent; give a few seconds of speech".into(),
        ));
    }
    Ok(end_on_pause(&resampled, target as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_ends_on_exactly_80_ms_of_silence() {
        let sr = 24000;
        let mut wav: Vec<f32> = (0..sr).map(|i| (i as f32 * 0.05).sin() * 0.5).collect();
        wav.extend(vec![0.0; sr / 2]);
        let out = end_on_pause(&wav, sr);
        assert_eq!(out.len(), sr + sr * 8 / 100);
        assert!(out[sr..].iter().all(|&x| x == 0.0));
        assert_eq!(out[sr - 1], 0.0, "faded out");
    }

    #[test]
    fn silent_and_short_prompts_are_refused() {
        let e = prepare_prompt(&vec![0.0; 48000], 24000, 24000, false).unwrap_err();
        assert!(e.to_string().contains("silent"), "{e}");
        let e = prepare_prompt(&[0.3; 100], 24000, 24000, false).unwrap_err();
        assert!(e.to_string().contains("at least"), "{e}");
    }
}
