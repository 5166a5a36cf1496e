//! The TTS `config.json`, read key by key.
//!
//! Every key of the published `kyutai/tts-1.6b-en_fr/config.json` is read and either honoured or
//! refused with a clear error: the reference loader (`moshi/models/loaders.py`) hands the keys it
//! does not pop to `LMModel(**kwargs)`, where an unknown one is a `TypeError`, so an unknown key
//! here is an error too rather than something silently ignored.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{MoshiError, Result};

/// A LUT conditioner (`cfg`, `control`): a value picked from `possible_values`, embedded.
#[derive(Debug, Clone, PartialEq)]
pub struct LutConfig {
    pub n_bins: usize,
    pub dim: usize,
    pub possible_values: Vec<String>,
}

/// A conditioner of the published config.
#[derive(Debug, Clone, PartialEq)]
pub enum ConditionerConfig {
    /// `{"type": "lut", "lut": {...}}`: a text value looked up in a table (`cfg`, `control`).
    Lut(LutConfig),
    /// `{"type": "tensor", "tensor": {"dim": D}}`: a tensor given per request (`speaker_wavs`).
    Tensor { dim: usize },
}

/// How conditions reach the model (`fuser` in the config).
#[derive(Debug, Clone, PartialEq)]
pub struct FuserConfig {
    pub cross_attention_pos_emb: bool,
    pub cross_attention_pos_emb_scale: f64,
    /// Conditions added to the input embedding of every step, in order.
    pub sum: Vec<String>,
    /// Conditions concatenated (along time) into the cross-attention source, in order.
    pub cross: Vec<String>,
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

/// The TTS model configuration, as published in `config.json`.
#[derive(Debug, Clone)]
pub struct TtsConfig {
    pub card: usize,
    pub n_q: usize,
    pub dep_q: usize,
    /// One delay per stream, text first (`n_q + 1` entries).
    pub delays: Vec<usize>,
    pub dim: usize,
    pub text_card: usize,
    pub existing_text_padding_id: u32,
    pub num_heads: usize,
    pub num_layers: usize,
    pub hidden_scale: f64,
    pub layer_scale: Option<f64>,
    pub context: usize,
    pub max_period: f64,
    pub gating: Gating,
    pub norm: NormKind,
    pub depformer_dim: usize,
    pub depformer_num_heads: usize,
    pub depformer_num_layers: usize,
    pub depformer_dim_feedforward: usize,
    pub depformer_multi_linear: bool,
    pub depformer_weights_per_step: bool,
    /// Codebook index -> weight set (identity when the config has no schedule).
    pub depformer_schedule: Vec<usize>,
    pub depformer_low_rank_embeddings: Option<usize>,
    pub demux_second_stream: bool,
    pub text_card_out: usize,
    pub cross_attention: bool,
    pub conditioners: BTreeMap<String, ConditionerConfig>,
    pub fuser: Option<FuserConfig>,
    /// `tts_config.audio_delay`, seconds.
    pub audio_delay: f64,
    /// `tts_config.second_stream_ahead`, words.
    pub second_stream_ahead: usize,
    /// `model_id.sig` / `model_id.epoch`: voices are named `<voice>.<sig>@<epoch>.safetensors`.
    pub model_sig: String,
    pub model_epoch: u64,
    /// `lm_gen_config`: default temperatures.
    pub temp: f64,
    pub text_temp: f64,
    pub top_k: usize,
    pub top_k_text: usize,
}

/// Keys the loader pops before building the LM (file names and generation settings).
const LOADER_KEYS: &[&str] = &[
    "moshi_name",
    "mimi_name",
    "tokenizer_name",
    "mimi_config_name",
    "lora_name",
    "model_type",
    "lm_gen_config",
    "tts_config",
    "stt_config",
    "model_id",
];

/// Keys of `LMModel` accepted only with the value that changes nothing (their default).
fn neutral(key: &str, value: &Value) -> bool {
    match key {
        "norm_emb" | "bias_proj" | "bias_ff" | "bias_attn" => value == &Value::Bool(false),
        "depformer_norm" => value.is_null(),
        "kv_repeat" | "depformer_kv_repeat" => value.as_u64() == Some(1),
        // Used by speech-to-text only; harmless for TTS.
        "existing_text_end_padding_id" => value.is_u64(),
        "extra_heads_num_heads" | "extra_heads_dim" => value.is_u64(),
        _ => false,
    }
}

fn bad(msg: impl Into<String>) -> MoshiError {
    MoshiError::InvalidConfig(format!("TTS config.json: {}", msg.into()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLut {
    n_bins: usize,
    dim: usize,
    #[serde(default = "noop")]
    tokenizer: String,
    #[serde(default)]
    possible_values: Option<Vec<String>>,
}

fn noop() -> String {
    "noop".into()
}

fn take<T: serde::de::DeserializeOwned>(
    map: &mut serde_json::Map<String, Value>,
    key: &str,
) -> Result<T> {
    let value = map
        .remove(key)
        .ok_or_else(|| bad(format!("the key `{key}` is missing")))?;
    serde_json::from_value(value.clone())
        .map_err(|e| bad(format!("`{key}` = {value} cannot be used: {e}")))
}

fn take_or<T: serde::de::DeserializeOwned>(
    map: &mut serde_json::Map<String, Value>,
    key: &str,
    default: T,
) -> Result<T> {
    match map.get(key) {
        None => Ok(default),
        Some(_) => take(map, key),
    }
}

impl TtsConfig {
    /// Parses and checks `config.json`.
    ///
    /// ```
    /// use fluent_voice_kyutai::tts::TtsConfig;
    /// let err = TtsConfig::from_json(br#"{"model_type": "stt"}"#).unwrap_err();
    /// assert!(err.to_string().contains("model_type"));
    /// ```
    pub fn from_json(bytes: &[u8]) -> Result<TtsConfig> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let Value::Object(mut map) = value else {
            return Err(bad("not a JSON object"));
        };
        let model_type: Option<String> = take_or(&mut map, "model_type", None)?;
        if model_type.as_deref() != Some("tts") {
            return Err(bad(format!(
                "model_type is {model_type:?}, not \"tts\": this is not a TTS model repository"
            )));
        }

        let card: usize = take(&mut map, "card")?;
        let n_q: usize = take(&mut map, "n_q")?;
        let dep_q: usize = take(&mut map, "dep_q")?;
        let delays: Vec<usize> = take(&mut map, "delays")?;
        let dim: usize = take(&mut map, "dim")?;
        let text_card: usize = take(&mut map, "text_card")?;
        let existing_text_padding_id: u32 = take_or(&mut map, "existing_text_padding_id", 3)?;
        let num_heads: usize = take(&mut map, "num_heads")?;
        let num_layers: usize = take(&mut map, "num_layers")?;
        let hidden_scale: f64 = take_or(&mut map, "hidden_scale", 4.0)?;
        let causal: bool = take_or(&mut map, "causal", true)?;
        let layer_scale: Option<f64> = take_or(&mut map, "layer_scale", None)?;
        let context: Option<usize> = take(&mut map, "context")?;
        let max_period: f64 = take_or(&mut map, "max_period", 10_000.0)?;
        let gating: String = take_or(&mut map, "gating", "none".to_string())?;
        let norm: String = take_or(&mut map, "norm", "layer_norm".to_string())?;
        let positional_embedding: String =
            take_or(&mut map, "positional_embedding", "sin".to_string())?;
        let depformer_dim: usize = take(&mut map, "depformer_dim")?;
        let depformer_num_heads: usize = take(&mut map, "depformer_num_heads")?;
        let depformer_num_layers: usize = take(&mut map, "depformer_num_layers")?;
        let depformer_dim_feedforward: Option<usize> =
            take_or(&mut map, "depformer_dim_feedforward", None)?;
        let depformer_multi_linear: bool = take_or(&mut map, "depformer_multi_linear", false)?;
        let depformer_pos_emb: String = take_or(&mut map, "depformer_pos_emb", "sin".to_string())?;
        let depformer_weights_per_step: bool =
            take_or(&mut map, "depformer_weights_per_step", false)?;
        let schedule: Option<Vec<usize>> =
            take_or(&mut map, "depformer_weights_per_step_schedule", None)?;
        let depformer_low_rank_embeddings: Option<usize> =
            take_or(&mut map, "depformer_low_rank_embeddings", None)?;
        let demux_second_stream: bool = take_or(&mut map, "demux_second_stream", false)?;
        let text_card_out: Option<usize> = take_or(&mut map, "text_card_out", None)?;
        let cross_attention: bool = take_or(&mut map, "cross_attention", false)?;
        let conditioners: serde_json::Map<String, Value> =
            take_or(&mut map, "conditioners", serde_json::Map::new())?;
        let fuser: Option<serde_json::Map<String, Value>> = take_or(&mut map, "fuser", None)?;
        let tts_config: serde_json::Map<String, Value> = take(&mut map, "tts_config")?;
        let model_id: serde_json::Map<String, Value> = take(&mut map, "model_id")?;
        let lm_gen: serde_json::Map<String, Value> =
            take_or(&mut map, "lm_gen_config", serde_json::Map::new())?;

        for key in LOADER_KEYS {
            map.remove(*key);
        }
        if let Some((key, value)) = map.iter().find(|(k, v)| !neutral(k, v)) {
            return Err(bad(format!(
                "the key `{key}` (= {value}) is not supported by this TTS engine"
            )));
        }

        if !causal {
            return Err(bad(
                "causal = false is not supported (streaming needs a causal model)",
            ));
        }
        if positional_embedding != "rope" {
            return Err(bad(format!(
                "positional_embedding \"{positional_embedding}\" is not supported (only \"rope\")"
            )));
        }
        if depformer_pos_emb != "none" {
            return Err(bad(format!(
                "depformer_pos_emb \"{depformer_pos_emb}\" is not supported (only \"none\")"
            )));
        }
        let context = context.ok_or_else(|| bad("context = null is not supported"))?;
        let gating = match gating.as_str() {
            "silu" => Gating::Silu,
            "gelu" => Gating::Gelu,
            "relu" => Gating::Relu,
            "sigmoid" => Gating::Sigmoid,
            "tanh" => Gating::Tanh,
            other => {
                return Err(bad(format!(
                    "gating \"{other}\" is not supported (silu, gelu, relu, sigmoid, tanh)"
                )));
            }
        };
        let norm = match norm.as_str() {
            "rms_norm_f32" => NormKind::Rms { eps: 1e-8 },
            "rms_norm" => NormKind::Rms { eps: 1e-5 },
            "layer_norm" => NormKind::Layer { eps: 1e-5 },
            "layer_norm_f32" => NormKind::Layer { eps: 1e-8 },
            other => return Err(bad(format!("norm \"{other}\" is not supported"))),
        };
        if delays.len() != n_q + 1 {
            return Err(bad(format!(
                "delays has {} entries, expected n_q + 1 = {}",
                delays.len(),
                n_q + 1
            )));
        }
        if dep_q != n_q {
            return Err(bad(format!(
                "dep_q ({dep_q}) differs from n_q ({n_q}); a TTS model generates every codebook"
            )));
        }
        if !dim.is_multiple_of(num_heads) || !depformer_dim.is_multiple_of(depformer_num_heads) {
            return Err(bad(
                "dim must be a multiple of num_heads (main and depformer)",
            ));
        }
        let depformer_schedule = match schedule {
            Some(s) => {
                if s.len() != dep_q {
                    return Err(bad(format!(
                        "depformer_weights_per_step_schedule has {} entries, expected dep_q = {dep_q}",
                        s.len()
                    )));
                }
                if !depformer_weights_per_step {
                    return Err(bad(
                        "a depformer schedule needs depformer_weights_per_step = true",
                    ));
                }
                s
            }
            None => (0..dep_q).collect(),
        };
        if !depformer_weights_per_step {
            return Err(bad(
                "depformer_weights_per_step = false is not supported by this TTS engine",
            ));
        }

        let mut parsed_conditioners = BTreeMap::new();
        for (name, spec) in conditioners {
            let kind = spec.get("type").and_then(Value::as_str).unwrap_or("");
            let conditioner = match kind {
                "lut" => {
                    let lut: RawLut = serde_json::from_value(spec["lut"].clone())
                        .map_err(|e| bad(format!("conditioner `{name}`: {e}")))?;
                    if lut.tokenizer != "noop" {
                        return Err(bad(format!(
                            "conditioner `{name}`: tokenizer \"{}\" is not supported (only \"noop\")",
                            lut.tokenizer
                        )));
                    }
                    let possible_values = lut.possible_values.ok_or_else(|| {
                        bad(format!("conditioner `{name}`: possible_values is required"))
                    })?;
                    if possible_values.len() > lut.n_bins {
                        return Err(bad(format!(
                            "conditioner `{name}`: more possible_values than n_bins"
                        )));
                    }
                    ConditionerConfig::Lut(LutConfig {
                        n_bins: lut.n_bins,
                        dim: lut.dim,
                        possible_values,
                    })
                }
                "tensor" => {
                    let dim = spec["tensor"]["dim"].as_u64().ok_or_else(|| {
                        bad(format!("conditioner `{name}`: tensor.dim is missing"))
                    })?;
                    ConditionerConfig::Tensor { dim: dim as usize }
                }
                other => {
                    return Err(bad(format!(
                        "conditioner `{name}` has type \"{other}\"; only \"lut\" and \"tensor\" are supported"
                    )));
                }
            };
            parsed_conditioners.insert(name, conditioner);
        }

        let fuser = match fuser {
            None => None,
            Some(mut f) => {
                let names = |f: &mut serde_json::Map<String, Value>,
                             key: &str|
                 -> Result<Vec<String>> { take_or(f, key, Vec::new()) };
                let sum = names(&mut f, "sum")?;
                let cross = names(&mut f, "cross")?;
                let prepend = names(&mut f, "prepend")?;
                if !prepend.is_empty() {
                    return Err(bad(
                        "fuser.prepend is not supported (the reference refuses it too)",
                    ));
                }
                let cross_attention_pos_emb = take_or(&mut f, "cross_attention_pos_emb", false)?;
                let cross_attention_pos_emb_scale =
                    take_or(&mut f, "cross_attention_pos_emb_scale", 1.0)?;
                if let Some(key) = f.keys().next() {
                    return Err(bad(format!("fuser.{key} is not supported")));
                }
                for name in sum.iter().chain(&cross) {
                    if !parsed_conditioners.contains_key(name) {
                        return Err(bad(format!(
                            "the fuser names `{name}`, which is not a conditioner"
                        )));
                    }
                }
                Some(FuserConfig {
                    cross_attention_pos_emb,
                    cross_attention_pos_emb_scale,
                    sum,
                    cross,
                })
            }
        };
        if !parsed_conditioners.is_empty() && fuser.is_none() {
            return Err(bad("conditioners without a fuser"));
        }
        if cross_attention != fuser.as_ref().is_some_and(|f| !f.cross.is_empty()) {
            return Err(bad(
                "cross_attention must be true exactly when the fuser has `cross` conditions",
            ));
        }

        let audio_delay = tts_config
            .get("audio_delay")
            .and_then(Value::as_f64)
            .ok_or_else(|| bad("tts_config.audio_delay is missing"))?;
        let second_stream_ahead = tts_config
            .get("second_stream_ahead")
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| bad("tts_config.second_stream_ahead must be an integer"))
            })
            .transpose()?
            .unwrap_or(0) as usize;
        if tts_config.get("multistream").and_then(Value::as_bool) == Some(true) {
            return Err(bad("tts_config.multistream is not supported"));
        }
        if second_stream_ahead > 0 && !demux_second_stream {
            return Err(bad("second_stream_ahead needs demux_second_stream = true"));
        }
        let model_sig = model_id
            .get("sig")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("model_id.sig is missing"))?
            .to_string();
        let model_epoch = model_id
            .get("epoch")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("model_id.epoch is missing"))?;

        let number = |key: &str, default: f64| -> Result<f64> {
            match lm_gen.get(key) {
                None => Ok(default),
                Some(v) => v
                    .as_f64()
                    .ok_or_else(|| bad(format!("lm_gen_config.{key} must be a number"))),
            }
        };
        let temp = number("temp", 0.6)?;
        let text_temp = number("text_temp", number("temp_text", temp)?)?;
        let top_k = number("top_k", 250.0)? as usize;
        let top_k_text = number("top_k_text", 25.0)? as usize;
        for key in lm_gen.keys() {
            if !["temp", "text_temp", "temp_text", "top_k", "top_k_text"].contains(&key.as_str()) {
                return Err(bad(format!("lm_gen_config.{key} is not supported")));
            }
        }

        Ok(TtsConfig {
            card,
            n_q,
            dep_q,
            delays,
            dim,
            text_card,
            existing_text_padding_id,
            num_heads,
            num_layers,
            hidden_scale,
            layer_scale,
            context,
            max_period,
            gating,
            norm,
            depformer_dim,
            depformer_num_heads,
            depformer_num_layers,
            depformer_dim_feedforward: depformer_dim_feedforward
                .unwrap_or((hidden_scale * depformer_dim as f64) as usize),
            depformer_multi_linear,
            depformer_weights_per_step,
            depformer_schedule,
            depformer_low_rank_embeddings,
            demux_second_stream,
            text_card_out: text_card_out.unwrap_or(text_card),
            cross_attention,
            conditioners: parsed_conditioners,
            fuser,
            audio_delay,
            second_stream_ahead,
            model_sig,
            model_epoch,
            temp,
            text_temp,
            top_k,
            top_k_text,
        })
    }

    /// Distinct depformer weight sets (`max(schedule) + 1`).
    pub fn depformer_weight_sets(&self) -> usize {
        self.depformer_schedule.iter().max().map_or(1, |m| m + 1)
    }

    /// The values the `cfg` conditioner accepts, if the model was trained with CFG distillation.
    pub fn cfg_values(&self) -> Option<&[String]> {
        match self.conditioners.get("cfg") {
            Some(ConditionerConfig::Lut(lut)) => Some(&lut.possible_values),
            _ => None,
        }
    }

    /// `.<sig>@<epoch>.safetensors`, the suffix of this model's voice files.
    pub fn voice_suffix(&self) -> String {
        format!(".{}@{}.safetensors", self.model_sig, self.model_epoch)
    }

    /// Frames between text and audio: `int(audio_delay * frame_rate)` as in the reference.
    pub fn delay_steps(&self, frame_rate: f64) -> usize {
        (self.audio_delay * frame_rate) as usize
    }
}
