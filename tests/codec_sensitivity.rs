//! The tiny Mimi (`tests/support/tiny.rs`, [`tiny::mimi_value_scale`]) carries information, or the
//! parity tests that compare waveforms and codes could not fail: one changed code moves the
//! waveform far beyond the tolerance of those comparisons, and different audio gives different
//! codes. (With plain `[-0.1, 0.1)` weights, every frame's loudness stayed within 2e-6 whatever
//! the codes, and the codes hardly depended on the audio.)

mod support;
#[path = "support/tts_reference.rs"]
mod tts_reference;

use candle_core::{DType, Device, IndexOp, Tensor};
use fluent_voice_kyutai::internals::load_mimi;
use moshi::mimi::Mimi;
use support::{stt_reference, tiny};
use tts_reference::{PCM_TOLERANCE, max_abs_diff};

const FRAME: usize = 1920;
/// Codebooks the tiny TTS and STT use (their `n_q`).
const N_Q: usize = 4;

fn mimi() -> Mimi {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("mimi.safetensors");
    let config = dir.path().join("mimi_config.json");
    std::fs::write(&weights, tiny::mimi_safetensors()).unwrap();
    std::fs::write(&config, tiny::json_bytes(&tiny::mimi_config())).unwrap();
    load_mimi(&weights, Some(&config), N_Q, &Device::Cpu, DType::F32, None).unwrap()
}

fn decode(mimi: &mut Mimi, codes: &[Vec<u32>]) -> Vec<f32> {
    mimi.reset_state();
    let frames = codes[0].len();
    let flat: Vec<u32> = codes.iter().flatten().copied().collect();
    let codes = Tensor::from_vec(flat, (1, N_Q, frames), &Device::Cpu).unwrap();
    mimi.decode(&codes)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

fn encode(mimi: &mut Mimi, pcm: &[f32]) -> Vec<Vec<u32>> {
    mimi.reset_state();
    let x = Tensor::from_slice(pcm, (1, 1, pcm.len()), &Device::Cpu).unwrap();
    let codes = mimi.encode(&x).unwrap().i(0).unwrap();
    codes.to_vec2::<u32>().unwrap()
}

/// Changing any single code of a 25-frame sequence changes the waveform after it by more than
/// 0.01 (10,000 times the parity tests' sample tolerance), and nothing before it.
#[test]
fn one_changed_code_changes_the_waveform_far_beyond_the_tolerance() {
    let mut mimi = mimi();
    let mut rng = tiny::SplitMix64::new(14);
    let codes: Vec<Vec<u32>> = (0..N_Q)
        .map(|_| (0..25).map(|_| (rng.next_u64() % 64) as u32).collect())
        .collect();
    let pcm = decode(&mut mimi, &codes);
    assert_eq!(pcm.len(), 25 * FRAME);
    let rms = (pcm.iter().map(|x| x * x).sum::<f32>() / pcm.len() as f32).sqrt();
    assert!(
        (0.03..0.5).contains(&rms),
        "a signal clear of silence and clipping: {rms}"
    );
    let at = 12;
    for codebook in 0..N_Q {
        let mut changed = codes.clone();
        changed[codebook][at] = (changed[codebook][at] + 1) % 64;
        let other = decode(&mut mimi, &changed);
        let before = max_abs_diff(&pcm[..at * FRAME], &other[..at * FRAME]);
        let after = max_abs_diff(&pcm[at * FRAME..], &other[at * FRAME..]);
        assert!(
            before <= PCM_TOLERANCE,
            "codebook {codebook}: {before} before the change"
        );
        assert!(
            after > 1e4 * PCM_TOLERANCE,
            "codebook {codebook}: one code moved the waveform by {after} only"
        );
    }
}

/// Speech gives other codes than silence, codes that change over time, and other codes again
/// when it comes one frame later: the encoder sees the audio.
#[test]
fn different_audio_gives_different_codes() {
    let mut mimi = mimi();
    let speech: Vec<f32> = hound::WavReader::open(stt_reference::AUDIO)
        .unwrap()
        .samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32768.0)
        .collect();
    let frames = speech.len() / FRAME;
    let codes = encode(&mut mimi, &speech);
    let silence = encode(&mut mimi, &vec![0.0; speech.len()]);
    let mut later = vec![0.0; FRAME];
    later.extend_from_slice(&speech[..speech.len() - FRAME]);
    let shifted = encode(&mut mimi, &later);
    let frames_differing = |a: &[Vec<u32>], b: &[Vec<u32>]| {
        (0..frames)
            .filter(|&t| (0..N_Q).any(|q| a[q][t] != b[q][t]))
            .count()
    };
    assert!(frames_differing(&codes, &silence) > frames / 2, "{codes:?}");
    assert!(frames_differing(&codes, &shifted) > frames / 2, "{codes:?}");
    for (q, row) in codes.iter().enumerate() {
        let distinct: std::collections::BTreeSet<&u32> = row.iter().collect();
        assert!(distinct.len() >= 2, "codebook {q} is constant: {row:?}");
    }
}
