//! The tiny STT repo made "talkative": its text head rescaled so that greedy decoding emits
//! words (with random weights the pad token would win nearly every step, or no word would ever
//! end). Used by the STT pipeline tests and by the parity script
//! `tools/parity/stt/stt_reference.py`, which loads the very same bytes (dumped with
//! `STT_PARITY_DUMP_DIR=<dir> cargo test --test stt_parity dump_talkative_repo`).
//!
//! Deterministic: rows of `text_linear.weight` and `text_emb.weight` (bf16) are multiplied by
//! powers of two, which bf16 represents exactly, so Rust and Python see identical weights.

use safetensors::SafeTensors;
use safetensors::tensor::TensorView;

use crate::support::tiny;

/// Scale of the end-of-padding row (id 0) of the text head: it starts words.
pub const EOP_SCALE: f32 = 8.0;
/// Scale of the padding row (id 3) of the text head: it separates words.
pub const PAD_SCALE: f32 = 4.0;
/// Scale of every other row of the text head (the word pieces).
pub const WORD_SCALE: f32 = 1.0;
/// Scale of the text embedding, so that the previous token steers the next one. (The tiny
/// random Mimi gives nearly constant codes whatever the audio, so the text feedback is what
/// makes the output vary; these values were picked by a scan for a mix of words, padding and
/// end-of-padding tokens on the fixture audio.)
pub const TEXT_EMB_SCALE: f32 = 2.0;

/// The tiny STT repo with the rescaled text head.
pub fn stt_repo_talkative() -> Vec<(String, Vec<u8>)> {
    stt_repo_talkative_with_prefix(0.0)
}

/// [`stt_repo_talkative`] with `stt_config.audio_silence_prefix_seconds` set to `seconds` in its
/// `config.json` (0 is the plain repo, byte for byte); the parity tests use
/// [`tiny::STT_PREFIX_SECONDS`].
pub fn stt_repo_talkative_with_prefix(seconds: f64) -> Vec<(String, Vec<u8>)> {
    let mut repo = tiny::stt_repo();
    for (path, bytes) in repo.iter_mut() {
        if path == tiny::STT_MOSHI_NAME {
            *bytes = rescale_text_head(bytes);
        }
        if path == "config.json" {
            let mut cfg = tiny::stt_config();
            cfg["stt_config"]["audio_silence_prefix_seconds"] = seconds.into();
            *bytes = tiny::json_bytes(&cfg);
        }
    }
    repo
}

fn rescale_text_head(bytes: &[u8]) -> Vec<u8> {
    let st = SafeTensors::deserialize(bytes).expect("the tiny LM parses");
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        let mut data = view.data().to_vec();
        let cols = view.shape().last().copied().unwrap_or(1);
        let row_scale: Option<&dyn Fn(usize) -> f32> = match name.as_str() {
            "text_linear.weight" => Some(&|row| match row {
                0 => EOP_SCALE,
                3 => PAD_SCALE,
                _ => WORD_SCALE,
            }),
            "text_emb.weight" => Some(&|_| TEXT_EMB_SCALE),
            _ => None,
        };
        if let Some(scale) = row_scale {
            assert_eq!(view.dtype(), safetensors::Dtype::BF16);
            for (i, pair) in data.chunks_exact_mut(2).enumerate() {
                let v = f32::from_bits(u32::from(u16::from_le_bytes([pair[0], pair[1]])) << 16);
                // A power-of-two scale is exact in bf16.
                let scaled = ((v * scale(i / cols)).to_bits() >> 16) as u16;
                pair.copy_from_slice(&scaled.to_le_bytes());
            }
        }
        owned.push((name, view.dtype(), view.shape().to_vec(), data));
    }
    let views: Vec<(String, TensorView<'_>)> = owned
        .iter()
        .map(|(name, dtype, shape, data)| {
            (
                name.clone(),
                TensorView::new(*dtype, shape.clone(), data).expect("valid tensor"),
            )
        })
        .collect();
    safetensors::serialize(views, None).expect("serializes")
}
