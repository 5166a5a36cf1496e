//! The STT model's `config.json`, turned into the `moshi` crate's `lm::Config`.

use std::path::Path;

use serde::Deserialize;

use crate::error::MoshiError;

/// The parts of an STT `config.json` this crate uses (the published key set has more).
#[derive(Debug, Clone, Deserialize)]
pub struct SttConfig {
    pub dim: usize,
    pub num_heads: usize,
    pub num_layers: usize,
    pub context: usize,
    pub max_period: f64,
    pub card: usize,
    pub text_card: usize,
    pub n_q: usize,
    #[serde(default)]
    pub dep_q: usize,
    #[serde(default)]
    pub hidden_scale: Option<f64>,
    #[serde(default)]
    pub extra_heads_num_heads: Option<usize>,
    #[serde(default)]
    pub extra_heads_dim: Option<usize>,
    #[serde(default)]
    pub stt_config: StreamingSettings,
    #[serde(default)]
    pub model_type: Option<String>,
}

/// `stt_config`: how the audio is padded around the speech.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct StreamingSettings {
    /// Seconds of silence fed before the audio (the model was trained with it).
    #[serde(default)]
    pub audio_silence_prefix_seconds: f64,
    /// How far the text lags behind the audio, in seconds.
    #[serde(default = "default_delay")]
    pub audio_delay_seconds: f64,
}

fn default_delay() -> f64 {
    0.5
}

impl Default for StreamingSettings {
    fn default() -> Self {
        StreamingSettings {
            audio_silence_prefix_seconds: 0.0,
            audio_delay_seconds: default_delay(),
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
        let cfg: SttConfig = serde_json::from_slice(&bytes)
            .map_err(|e| MoshiError::invalid_file(path, format!("not an STT config.json: {e}")))?;
        cfg.check()
            .map_err(|reason| MoshiError::invalid_file(path, reason))?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), String> {
        if let Some(kind) = self.model_type.as_ref().filter(|k| *k != "stt") {
            return Err(format!(
                "model_type is \"{kind}\", not \"stt\": this is not a speech-to-text model"
            ));
        }
        if self.dep_q != 0 {
            return Err(format!(
                "dep_q is {}: speech-to-text models predict text only (dep_q 0)",
                self.dep_q
            ));
        }
        if self.dim == 0 || self.num_heads == 0 || !self.dim.is_multiple_of(self.num_heads) {
            return Err(format!(
                "dim {} is not a multiple of num_heads {}",
                self.dim, self.num_heads
            ));
        }
        let s = &self.stt_config;
        if !(0.0..=60.0).contains(&s.audio_delay_seconds)
            || !(0.0..=60.0).contains(&s.audio_silence_prefix_seconds)
        {
            return Err("stt_config holds delays outside 0..60 seconds".into());
        }
        Ok(())
    }

    /// The text delay in model steps.
    pub fn delay_steps(&self) -> usize {
        (self.stt_config.audio_delay_seconds * FRAME_RATE) as usize
    }

    /// The `moshi` crate's LM config, mapped the way Kyutai's standalone `stt-rs` maps the
    /// public checkpoints' `config.json`: feed-forward of `4 * dim` with SiLU gating (the
    /// gated hidden size `2/3 * 4.125 * dim` of the checkpoints comes out the same), RMS norm,
    /// RoPE, one extra audio token (padding) per codebook, one extra input text token (the
    /// start token), no depformer, and the VAD heads when the config has them.
    pub fn lm_config(&self) -> moshi::lm::Config {
        let transformer = moshi::transformer::Config {
            d_model: self.dim,
            num_heads: self.num_heads,
            num_layers: self.num_layers,
            dim_feedforward: self.dim * 4,
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
        let extra_heads = match (self.extra_heads_num_heads, self.extra_heads_dim) {
            (Some(num_heads), Some(dim)) if num_heads > 0 => {
                Some(moshi::lm::ExtraHeadsConfig { num_heads, dim })
            }
            _ => None,
        };
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
