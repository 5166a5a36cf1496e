//! The STT model's `config.json`, turned into the `moshi` crate's `lm::Config`.

use std::path::Path;

use crate::error::MoshiError;
use crate::lm_config::{Gating, LmConfigJson, NormKind};

/// An STT model's `config.json`, checked for what the `moshi` crate's `LmModel` runs.
#[derive(Debug, Clone)]
pub struct SttConfig {
    /// Width of the transformer.
    pub dim: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Layers.
    pub num_layers: usize,
    /// Attention context, in steps.
    pub context: usize,
    /// RoPE maximum period.
    pub max_period: f64,
    /// Audio tokens per codebook.
    pub card: usize,
    /// Text tokens.
    pub text_card: usize,
    /// Audio codebooks read.
    pub n_q: usize,
    /// The gated feed-forward's hidden width, as the reference computes it.
    pub gating_hidden: usize,
    /// The semantic voice-activity heads (`extra_heads_num_heads` of width `extra_heads_dim`).
    pub extra_heads: Option<(usize, usize)>,
    /// How the audio is padded around the speech.
    pub stt_config: StreamingSettings,
}

/// `stt_config`: how the audio is padded around the speech.
#[derive(Debug, Clone, Copy)]
pub struct StreamingSettings {
    /// Seconds of silence fed before the audio (the model was trained with it).
    pub audio_silence_prefix_seconds: f64,
    /// How far the text lags behind the audio, in seconds.
    pub audio_delay_seconds: f64,
}

impl Default for StreamingSettings {
    fn default() -> Self {
        StreamingSettings {
            audio_silence_prefix_seconds: 0.0,
            audio_delay_seconds: 0.5,
        }
    }
}

/// Model steps per second (Mimi frames).
pub const FRAME_RATE: f64 = 12.5;

impl SttConfig {
    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<SttConfig, MoshiError> {
        let bytes = std::fs::read(path)
            .map_err(|e| MoshiError::io("could not read the STT config", path, e))?;
        Self::from_json(&bytes).map_err(|reason| MoshiError::invalid_file(path, reason))
    }

    /// Parses and checks `config.json` bytes.
    pub fn from_json(bytes: &[u8]) -> Result<SttConfig, String> {
        let raw = LmConfigJson::parse(bytes)?;
        Self::validate(raw)
    }

    /// Checks the parsed JSON for what the `moshi` crate's `LmModel` runs as speech-to-text
    /// (see [`lm_config`](Self::lm_config) for the mapping).
    fn validate(raw: LmConfigJson) -> Result<SttConfig, String> {
        if let Some(kind) = raw.model_type.as_ref().filter(|k| *k != "stt") {
            return Err(format!(
                "model_type is \"{kind}\", not \"stt\": this is not a speech-to-text model"
            ));
        }
        if raw.dep_q != 0 {
            return Err(format!(
                "dep_q is {}: speech-to-text models predict text only (dep_q 0)",
                raw.dep_q
            ));
        }
        raw.check_common()?;
        // The crate's transformer has these fixed: SiLU gating, RMS norm, no layer scale, no
        // cross-attention, no conditioners, the text head as wide as the text input.
        if raw.gating()? != Gating::Silu {
            return Err(format!(
                "gating \"{}\" is not supported for speech-to-text (only \"silu\")",
                raw.gating
            ));
        }
        if !matches!(raw.norm()?, NormKind::Rms { .. }) {
            return Err(format!(
                "norm \"{}\" is not supported for speech-to-text (only rms_norm, rms_norm_f32)",
                raw.norm
            ));
        }
        if raw.layer_scale.is_some() {
            return Err("layer_scale is not supported for speech-to-text (only null)".into());
        }
        if raw.cross_attention || raw.conditioners.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(
                "cross-attention and conditioners are not supported for speech-to-text".into(),
            );
        }
        if raw.text_card_out.is_some_and(|out| out != raw.text_card) || raw.demux_second_stream {
            return Err(
                "text_card_out and demux_second_stream are not supported for speech-to-text".into(),
            );
        }
        let settings = raw
            .stt_config
            .clone()
            .map_or_else(StreamingSettings::default, |s| StreamingSettings {
                audio_silence_prefix_seconds: s.audio_silence_prefix_seconds,
                audio_delay_seconds: s.audio_delay_seconds,
            });
        if !(0.0..=60.0).contains(&settings.audio_delay_seconds)
            || !(0.0..=60.0).contains(&settings.audio_silence_prefix_seconds)
        {
            return Err("stt_config holds delays outside 0..60 seconds".into());
        }
        Ok(SttConfig {
            dim: raw.dim,
            num_heads: raw.num_heads,
            num_layers: raw.num_layers()?,
            context: raw.context()?,
            max_period: raw.max_period,
            card: raw.card,
            text_card: raw.text_card,
            n_q: raw.n_q,
            gating_hidden: raw.gating_hidden(),
            extra_heads: (raw.extra_heads_num_heads > 0)
                .then_some((raw.extra_heads_num_heads, raw.extra_heads_dim)),
            stt_config: settings,
        })
    }

    /// The text delay in model steps.
    pub fn delay_steps(&self) -> usize {
        (self.stt_config.audio_delay_seconds * FRAME_RATE) as usize
    }

    /// The `moshi` crate's LM config, mapped the way Kyutai's standalone `stt-rs` maps the
    /// public checkpoints' `config.json`: SiLU gating with the reference's hidden width, RMS
    /// norm, RoPE, one extra audio token (padding) per codebook, one extra input text token
    /// (the start token), no depformer, and the VAD heads when the config has them.
    pub fn lm_config(&self) -> moshi::lm::Config {
        let transformer = moshi::transformer::Config {
            d_model: self.dim,
            num_heads: self.num_heads,
            num_layers: self.num_layers,
            dim_feedforward: crate_feedforward(self.dim, self.gating_hidden),
            causal: true,
            norm_first: true,
            bias_ff: false,
            bias_attn: false,
            layer_scale: None,
            context: self.context,
            max_period: self.max_period as usize,
            use_conv_block: false,
            use_conv_bias: true,
            cross_attention: None,
            gating: Some(candle_nn::Activation::Silu),
            norm: moshi::NormType::RmsNorm,
            positional_embedding: moshi::transformer::PositionalEmbedding::Rope,
            conv_layout: false,
            conv_kernel_size: 3,
            kv_repeat: 1,
            max_seq_len: 4096 * 4,
            shared_cross_attn: false,
        };
        let extra_heads = self
            .extra_heads
            .map(|(num_heads, dim)| moshi::lm::ExtraHeadsConfig { num_heads, dim });
        moshi::lm::Config {
            transformer,
            depformer: None,
            audio_vocab_size: self.card + 1,
            text_in_vocab_size: self.text_card + 1,
            text_out_vocab_size: self.text_card,
            audio_codebooks: self.n_q,
            conditioners: Default::default(),
            extra_heads,
        }
    }
}

/// The `dim_feedforward` to give the `moshi` crate so that its gated feed-forward is `hidden`
/// wide: the crate takes `11 * dim / 4` for exactly `4 * dim` (the published checkpoints) and
/// two thirds of it otherwise.
fn crate_feedforward(dim: usize, hidden: usize) -> usize {
    let crate_hidden = |ff: usize| {
        if ff == 4 * dim {
            11 * dim / 4
        } else {
            2 * ff / 3
        }
    };
    [4 * dim, (3 * hidden).div_ceil(2), 3 * hidden / 2]
        .into_iter()
        .find(|&ff| crate_hidden(ff) == hidden)
        .unwrap_or(4 * dim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crates_feedforward_gives_the_references_hidden_width() {
        // The published 1B / 2.6B models (hidden_scale 4.125): 4 * dim, as stt-rs maps them.
        assert_eq!(crate_feedforward(2048, 5632), 4 * 2048);
        for (dim, hidden) in [(64, 170), (64, 171), (100, 300)] {
            let ff = crate_feedforward(dim, hidden);
            assert_eq!(2 * ff / 3, hidden, "dim {dim}");
        }
    }
}
