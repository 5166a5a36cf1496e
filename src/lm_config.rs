//! A Kyutai language model's `config.json`, read the way the Python reference reads it.
//!
//! The reference loader (`CheckpointInfo.from_hf_repo` in `moshi/models/loaders.py`) pops the
//! file names and the generation settings, and hands every other key to `LMModel(**kwargs)`,
//! which passes what it does not name itself on to `StreamingTransformer` and its layers (with a
//! `depformer_` prefix: to the depformer's). A key none of them takes is a `TypeError` there, so
//! it is refused here too, with the key named; every key they take is accepted, and the value is
//! either honoured or, where this crate does not implement that variant of the architecture,
//! refused with a message that says so. Text-to-speech and speech-to-text checkpoints share this
//! format ([`crate::tts::TtsConfig`] and [`crate::stt::SttConfig`] validate what each needs).
//!
//! Defaults are the reference's constructor defaults, so that a config that leaves a key out
//! means what it means in Python.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::models::ModelId;

/// Every key of an LM `config.json` that the reference accepts, with its constructor default.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct LmConfigJson {
    // Popped by the loader: file names (read by `models::repo_config`; here only type-checked,
    // as fields named `_...`) and settings.
    #[serde(default, rename = "moshi_name")]
    _moshi_name: Option<String>,
    #[serde(default, rename = "mimi_name")]
    _mimi_name: Option<String>,
    #[serde(default, rename = "mimi_config_name")]
    _mimi_config_name: Option<String>,
    #[serde(default, rename = "tokenizer_name")]
    _tokenizer_name: Option<String>,
    #[serde(default, rename = "lora_name")]
    _lora_name: Option<String>,
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default)]
    pub lm_gen_config: LmGenConfigJson,
    #[serde(default)]
    pub tts_config: Option<TtsSettingsJson>,
    #[serde(default)]
    pub stt_config: Option<SttSettingsJson>,
    #[serde(default)]
    pub model_id: Option<ModelId>,

    // `LMModel.__init__` (`moshi/models/lm.py`).
    #[serde(default = "defaults::delays")]
    pub delays: Vec<usize>,
    #[serde(default = "defaults::n_q")]
    pub n_q: usize,
    #[serde(default = "defaults::n_q")]
    pub dep_q: usize,
    #[serde(default = "defaults::card")]
    pub card: usize,
    #[serde(default = "defaults::text_card")]
    pub text_card: usize,
    #[serde(default)]
    pub text_card_out: Option<usize>,
    /// `demux_second_text_stream`; the loader renames the older `demux_second_stream`.
    #[serde(default, alias = "demux_second_text_stream")]
    pub demux_second_stream: bool,
    #[serde(default = "defaults::dim")]
    pub dim: usize,
    #[serde(default = "defaults::num_heads")]
    pub num_heads: usize,
    #[serde(default = "defaults::hidden_scale")]
    pub hidden_scale: f64,
    #[serde(default = "defaults::layer_norm")]
    pub norm: String,
    #[serde(default)]
    pub norm_emb: bool,
    #[serde(default)]
    pub bias_proj: bool,
    #[serde(default = "defaults::depformer_dim")]
    pub depformer_dim: usize,
    #[serde(default)]
    pub depformer_dim_feedforward: Option<usize>,
    #[serde(default)]
    pub depformer_multi_linear: bool,
    #[serde(default)]
    pub depformer_weights_per_step: bool,
    #[serde(default)]
    pub depformer_weights_per_step_schedule: Option<Vec<usize>>,
    #[serde(default)]
    pub depformer_low_rank_embeddings: Option<usize>,
    #[serde(default = "defaults::sin")]
    pub depformer_pos_emb: String,
    #[serde(default)]
    pub depformer_norm: Option<String>,
    #[serde(default = "defaults::padding_id")]
    pub existing_text_padding_id: u32,
    #[serde(default, rename = "existing_text_end_padding_id")]
    _existing_text_end_padding_id: u32,
    #[serde(default)]
    pub extra_heads_num_heads: usize,
    #[serde(default = "defaults::extra_heads_dim")]
    pub extra_heads_dim: usize,
    #[serde(default)]
    pub context: Option<usize>,
    #[serde(default = "defaults::yes")]
    pub causal: bool,
    #[serde(default)]
    pub conditioners: Option<BTreeMap<String, ConditionerJson>>,
    #[serde(default)]
    pub fuser: Option<FuserJson>,
    #[serde(default)]
    pub quantize: bool,
    /// Training only.
    #[serde(default, rename = "gradient_checkpointing")]
    _gradient_checkpointing: bool,
    // Popped by `get_moshi_lm`: LoRA adapters, and a deprecated key.
    #[serde(default)]
    pub lora: bool,
    #[serde(default, rename = "lora_rank")]
    _lora_rank: Option<usize>,
    #[serde(default, rename = "lora_scaling")]
    _lora_scaling: Option<f64>,
    #[serde(default, rename = "depformer_causal")]
    _depformer_causal: Option<Value>,

    // `StreamingTransformer.__init__` and `StreamingTransformerLayer.__init__`
    // (`moshi/modules/transformer.py`), shared by the depformer unless prefixed.
    #[serde(default)]
    pub num_layers: Option<usize>,
    #[serde(default = "defaults::sin")]
    pub positional_embedding: String,
    #[serde(default = "defaults::max_period")]
    pub max_period: f64,
    #[serde(default = "defaults::one", rename = "positional_scale")]
    _positional_scale: f64,
    /// Training only (optimizer betas).
    #[serde(default, rename = "betas")]
    _betas: Option<Value>,
    #[serde(default)]
    pub layer_scale: Option<f64>,
    #[serde(default = "defaults::none")]
    pub gating: String,
    #[serde(default = "defaults::kv_repeat")]
    pub kv_repeat: usize,
    #[serde(default)]
    pub weights_per_step: usize,
    #[serde(default)]
    pub skip_self_attn: bool,
    #[serde(default)]
    pub cross_attention: bool,
    #[serde(default)]
    pub depformer_num_heads: Option<usize>,
    #[serde(default)]
    pub depformer_num_layers: Option<usize>,
    #[serde(default)]
    pub depformer_kv_repeat: Option<usize>,

    /// Anything else: refused by [`LmConfigJson::parse`].
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

/// `lm_gen_config`: the sampling defaults of the checkpoint.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LmGenConfigJson {
    pub temp: Option<f64>,
    /// `text_temp`, or `temp_text` as the STT configs write it.
    #[serde(alias = "temp_text")]
    pub text_temp: Option<f64>,
    pub top_k: Option<usize>,
    pub top_k_text: Option<usize>,
}

/// `tts_config`: the delayed-streams settings of a TTS checkpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TtsSettingsJson {
    pub audio_delay: Option<f64>,
    #[serde(default)]
    pub second_stream_ahead: usize,
    #[serde(default)]
    pub multistream: bool,
}

/// `stt_config`: how the audio is padded around the speech.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SttSettingsJson {
    #[serde(default)]
    pub audio_silence_prefix_seconds: f64,
    #[serde(default = "defaults::stt_delay")]
    pub audio_delay_seconds: f64,
}

/// One conditioner: `{"type": "lut", "lut": {...}}` or `{"type": "tensor", "tensor": {...}}`
/// (`get_conditioner` in the loader).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub(crate) enum ConditionerJson {
    #[serde(rename = "lut")]
    Lut { lut: ConditionerArgsJson },
    #[serde(rename = "tensor")]
    Tensor { tensor: ConditionerArgsJson },
}

/// The keyword arguments of a conditioner: those of `BaseConditioner.__init__`
/// (`moshi/conditioners/base.py`), which every conditioner takes, and those of
/// `LUTConditioner.__init__` (`moshi/conditioners/text.py`; `TensorConditioner` adds none). The
/// loader writes `output_dim` (the model's `dim`) and `device` into the config dict it is given,
/// so configs saved from Python carry them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConditionerArgsJson {
    pub dim: usize,
    #[serde(default)]
    pub output_dim: Option<usize>,
    /// Where Python puts the weights; placement is this crate's, so it is ignored.
    #[serde(default, rename = "device")]
    _device: Option<Value>,
    #[serde(default = "defaults::yes")]
    pub force_linear: bool,
    #[serde(default = "defaults::yes", rename = "pad_empty")]
    _pad_empty: bool,
    #[serde(default)]
    pub output_bias: bool,
    #[serde(default = "defaults::yes")]
    pub learn_padding: bool,
    // LUT only.
    #[serde(default)]
    pub n_bins: Option<usize>,
    #[serde(default)]
    pub tokenizer: Option<String>,
    #[serde(default)]
    pub possible_values: Option<Vec<String>>,
    /// Initialisation only.
    #[serde(default, rename = "init_scale")]
    _init_scale: Option<f64>,
}

/// `fuser`: `ConditionFuser(fuse2cond, cross_attention_pos_emb, cross_attention_pos_emb_scale)`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FuserJson {
    #[serde(default)]
    pub sum: Vec<String>,
    #[serde(default)]
    pub cross: Vec<String>,
    #[serde(default)]
    pub prepend: Vec<String>,
    #[serde(default)]
    pub cross_attention_pos_emb: bool,
    #[serde(default = "defaults::one")]
    pub cross_attention_pos_emb_scale: f64,
}

/// The reference's constructor defaults.
mod defaults {
    pub fn delays() -> Vec<usize> {
        vec![0]
    }
    pub fn n_q() -> usize {
        8
    }
    pub fn card() -> usize {
        1024
    }
    pub fn text_card() -> usize {
        32_000
    }
    pub fn dim() -> usize {
        128
    }
    pub fn num_heads() -> usize {
        8
    }
    pub fn hidden_scale() -> f64 {
        4.0
    }
    pub fn layer_norm() -> String {
        "layer_norm".into()
    }
    pub fn depformer_dim() -> usize {
        256
    }
    pub fn sin() -> String {
        "sin".into()
    }
    pub fn none() -> String {
        "none".into()
    }
    pub fn padding_id() -> u32 {
        3
    }
    pub fn extra_heads_dim() -> usize {
        6
    }
    pub fn yes() -> bool {
        true
    }
    pub fn max_period() -> f64 {
        10_000.0
    }
    pub fn one() -> f64 {
        1.0
    }
    pub fn kv_repeat() -> usize {
        1
    }
    pub fn stt_delay() -> f64 {
        0.5
    }
}

/// Activation of the gated feed-forward blocks (`gating`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gating {
    Silu,
    Gelu,
    Relu,
    Sigmoid,
    Tanh,
}

/// Normalisation layers (`norm`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NormKind {
    /// `rms_norm_f32` (eps 1e-8, computed in f32) or `rms_norm` (eps 1e-5).
    Rms { eps: f64 },
    /// `layer_norm` (eps 1e-5) or `layer_norm_f32` (eps 1e-8).
    Layer { eps: f64 },
}

impl LmConfigJson {
    /// Parses `config.json`; an unknown key or a value of the wrong type is an error naming it.
    pub(crate) fn parse(bytes: &[u8]) -> Result<LmConfigJson, String> {
        let mut json = serde_json::Deserializer::from_slice(bytes);
        let raw: LmConfigJson =
            serde_path_to_error::deserialize(&mut json).map_err(|e| {
                match e.path().to_string().as_str() {
                    "." => format!("cannot be read: {}", e.inner()),
                    path => format!("`{path}`: {}", e.inner()),
                }
            })?;
        if let Some((key, value)) = raw.unknown.iter().next() {
            return Err(format!(
                "the key `{key}` (= {value}) is not one the reference loader accepts"
            ));
        }
        Ok(raw)
    }

    /// Checks what every Kyutai LM needs, whatever it is for: the values that change the
    /// architecture in ways this crate does not implement are refused, by name.
    pub(crate) fn check_common(&self) -> Result<(), String> {
        if !self.causal {
            return Err("causal = false is not supported (streaming needs a causal model)".into());
        }
        if self.positional_embedding != "rope" {
            return Err(format!(
                "positional_embedding \"{}\" is not supported (only \"rope\")",
                self.positional_embedding
            ));
        }
        if self.num_heads == 0 || !self.dim.is_multiple_of(self.num_heads) {
            return Err(format!(
                "dim ({}) must be a multiple of num_heads ({})",
                self.dim, self.num_heads
            ));
        }
        if self.delays.len() != self.n_q + 1 {
            return Err(format!(
                "delays has {} entries, expected n_q + 1 = {}",
                self.delays.len(),
                self.n_q + 1
            ));
        }
        let neutral = [
            ("norm_emb", !self.norm_emb, "false"),
            ("bias_proj", !self.bias_proj, "false"),
            ("quantize", !self.quantize, "false"),
            ("lora", !self.lora, "false (merge LoRA weights first)"),
            ("kv_repeat", self.kv_repeat == 1, "1"),
            ("weights_per_step", self.weights_per_step == 0, "0"),
            ("skip_self_attn", !self.skip_self_attn, "false"),
            ("depformer_norm", self.depformer_norm.is_none(), "null"),
            (
                "depformer_kv_repeat",
                self.depformer_kv_repeat.unwrap_or(1) == 1,
                "1",
            ),
        ];
        if let Some((key, _, supported)) = neutral.iter().find(|(_, ok, _)| !ok) {
            return Err(format!(
                "{key} is not supported by this engine with that value (only {supported})"
            ));
        }
        Ok(())
    }

    /// The context, which streaming needs bounded.
    pub(crate) fn context(&self) -> Result<usize, String> {
        self.context
            .ok_or_else(|| "context = null is not supported".to_string())
    }

    pub(crate) fn num_layers(&self) -> Result<usize, String> {
        self.num_layers
            .ok_or_else(|| "the key `num_layers` is missing".to_string())
    }

    pub(crate) fn gating(&self) -> Result<Gating, String> {
        Ok(match self.gating.as_str() {
            "silu" => Gating::Silu,
            "gelu" => Gating::Gelu,
            "relu" => Gating::Relu,
            "sigmoid" => Gating::Sigmoid,
            "tanh" => Gating::Tanh,
            other => {
                return Err(format!(
                    "gating \"{other}\" is not supported (silu, gelu, relu, sigmoid, tanh)"
                ));
            }
        })
    }

    pub(crate) fn norm(&self) -> Result<NormKind, String> {
        Ok(match self.norm.as_str() {
            "rms_norm_f32" => NormKind::Rms { eps: 1e-8 },
            "rms_norm" => NormKind::Rms { eps: 1e-5 },
            "layer_norm" => NormKind::Layer { eps: 1e-5 },
            "layer_norm_f32" => NormKind::Layer { eps: 1e-8 },
            other => return Err(format!("norm \"{other}\" is not supported")),
        })
    }

    /// The gated feed-forward's hidden width, as `ActivationGating` computes it from
    /// `dim_feedforward = int(hidden_scale * dim)`.
    pub(crate) fn gating_hidden(&self) -> usize {
        gating_hidden(self.dim, (self.hidden_scale * self.dim as f64) as usize)
    }
}

/// `ActivationGating`'s hidden width (`moshi/modules/gating.py`): `21 * dim / 8` for a
/// feed-forward of exactly `4 * dim`, else two thirds of it.
pub(crate) fn gating_hidden(dim: usize, dim_feedforward: usize) -> usize {
    if dim_feedforward == 4 * dim {
        21 * dim / 8
    } else {
        2 * dim_feedforward / 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named_and_known_ones_take_python_defaults() {
        let error = LmConfigJson::parse(br#"{"dim": 64, "colour": "blue"}"#).unwrap_err();
        assert!(error.contains("`colour`"), "{error}");
        let raw = LmConfigJson::parse(br#"{"dim": 64, "demux_second_text_stream": true}"#).unwrap();
        assert_eq!((raw.n_q, raw.card, raw.num_heads), (8, 1024, 8));
        assert!(raw.demux_second_stream);
        assert_eq!(raw.norm, "layer_norm");
    }

    #[test]
    fn conditioners_take_the_base_arguments_python_writes() {
        let raw = LmConfigJson::parse(
            br#"{"conditioners": {"cfg": {"type": "lut", "lut": {"n_bins": 2, "dim": 4,
                "tokenizer": "noop", "possible_values": ["a"], "output_dim": 64, "device": "cuda"}}}}"#,
        )
        .unwrap();
        let Some(ConditionerJson::Lut { lut }) = raw.conditioners.unwrap().remove("cfg") else {
            panic!("a LUT conditioner")
        };
        assert_eq!(lut.output_dim, Some(64));
        let error = LmConfigJson::parse(
            br#"{"conditioners": {"s": {"type": "tensor", "tensor": {"dim": 4, "shape": 1}}}}"#,
        )
        .unwrap_err();
        assert!(error.contains("shape"), "{error}");
    }

    #[test]
    fn gating_hidden_is_the_references() {
        // The published 2048-dim models: hidden_scale 4.125 -> 8448 -> 5632.
        assert_eq!(gating_hidden(2048, 8448), 5632);
        assert_eq!(gating_hidden(64, 256), 168);
    }
}
