//! The tiny STT repo made "talkative": its text head rescaled so that greedy decoding emits
//! words (with random weights the pad token would win nearly every step, or no word would ever
//! end). Used by the STT tests and by the parity script `tools/parity/stt/stt_reference.py`,
//! which loads the very same bytes (written by `cargo run --example dump_tiny_repos -- <dir>`).
//!
//! Deterministic: rows of `text_linear.weight` and `text_emb.weight` (bf16) are multiplied by
//! powers of two, which bf16 represents exactly, so Rust and Python see identical weights.

use safetensors::SafeTensors;
use safetensors::tensor::TensorView;

use crate::support::tiny;

/// How the text head is rescaled: the end-of-padding row (id 0, which opens and closes words),
/// the padding row (id 3), every other row (the word pieces), and the text embedding (how much
/// the previous token steers the next one).
#[derive(Debug, Clone, Copy)]
pub struct TextHeadScales {
    pub end_of_padding: f32,
    pub padding: f32,
    pub words: f32,
    pub text_embedding: f32,
}

/// The scales for the repo without a silence prefix.
///
/// Picked by a scan over powers of two, for token patterns on which Kyutai's two word-timing
/// rules agree (`check_clean` in `stt_reference.py`: each word alone between two end-of-padding
/// tokens) and a few words on the fixture audio, run as the reference runs it.
pub const PLAIN_SCALES: TextHeadScales = TextHeadScales {
    end_of_padding: 2.0,
    padding: 1.0,
    words: 0.25,
    text_embedding: 0.5,
};

/// The scales for a repo with a silence prefix: after 2 s of silence the model is in another
/// state, where [`PLAIN_SCALES`] give end-of-padding tokens only; picked by the same scan.
pub const AFTER_SILENCE_SCALES: TextHeadScales = TextHeadScales {
    end_of_padding: 2.0,
    padding: 1.0,
    words: 1.0,
    text_embedding: 0.5,
};

/// The tiny STT repo with the rescaled text head ([`PLAIN_SCALES`]).
pub fn stt_repo_talkative() -> Vec<(String, Vec<u8>)> {
    stt_repo_talkative_with_prefix(0.0)
}

/// The tiny STT repo with `stt_config.audio_silence_prefix_seconds` set to `seconds` in its
/// `config.json` (0 is the published value, and the plain repo byte for byte) and the text head
/// rescaled for it: [`PLAIN_SCALES`] without a prefix, else [`AFTER_SILENCE_SCALES`]. The parity
/// tests use [`tiny::STT_PREFIX_SECONDS`].
pub fn stt_repo_talkative_with_prefix(seconds: f64) -> Vec<(String, Vec<u8>)> {
    let scales = if seconds == 0.0 {
        PLAIN_SCALES
    } else {
        AFTER_SILENCE_SCALES
    };
    let mut repo = tiny::stt_repo();
    for (path, bytes) in repo.iter_mut() {
        if path == tiny::STT_MOSHI_NAME {
            *bytes = rescale_text_head(bytes, scales);
        }
        if path == "config.json" {
            let mut cfg = tiny::stt_config();
            cfg["stt_config"]["audio_silence_prefix_seconds"] = seconds.into();
            *bytes = tiny::json_bytes(&cfg);
        }
    }
    repo
}

fn rescale_text_head(bytes: &[u8], scales: TextHeadScales) -> Vec<u8> {
    let st = SafeTensors::deserialize(bytes).expect("the tiny LM parses");
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        let mut data = view.data().to_vec();
        let cols = view.shape().last().copied().unwrap_or(1);
        let row_scale: Option<&dyn Fn(usize) -> f32> = match name.as_str() {
            "text_linear.weight" => Some(&|row| match row {
                0 => scales.end_of_padding,
                3 => scales.padding,
                _ => scales.words,
            }),
            "text_emb.weight" => Some(&|_| scales.text_embedding),
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
