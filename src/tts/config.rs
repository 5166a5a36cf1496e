//! The TTS `config.json`: the shared LM config format ([`crate::lm_config`]), checked for
//! what this TTS engine runs.
//!
//! Every key the reference accepts is read; a key it does not know is refused (the reference
//! loader hands the keys it does not pop to `LMModel(**kwargs)`, where an unknown one is a
//! `TypeError`), and a value this engine does not implement is a clear error, never a silent
//! default.

use std::collections::BTreeMap;

use crate::error::{MoshiError, Result};
use crate::lm_config::{ConditionerArgsJson, ConditionerJson, FuserJson, LmConfigJson};
pub use crate::lm_config::{Gating, NormKind};
use crate::models::ModelId;

/// What every conditioner has (`BaseConditioner`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConditionerCommon {
    /// Width of the condition before its projection into the model.
    pub dim: usize,
    /// Whether an `output_proj` linear maps it to the model's width (`force_linear`, or a
    /// different width); otherwise it is used as is.
    pub projected: bool,
    /// Whether absent positions take a learnt padding vector (`learn_padding`) or zeros.
    pub learn_padding: bool,
}

/// A LUT conditioner (`cfg`, `control`): a value picked from `possible_values`, embedded.
#[derive(Debug, Clone, PartialEq)]
pub struct LutConfig {
    pub n_bins: usize,
    pub possible_values: Vec<String>,
    pub common: ConditionerCommon,
}

/// A conditioner of the published config.
#[derive(Debug, Clone, PartialEq)]
pub enum ConditionerConfig {
    /// `{"type": "lut", "lut": {...}}`: a text value looked up in a table (`cfg`, `control`).
    Lut(LutConfig),
    /// `{"type": "tensor", "tensor": {"dim": D}}`: a tensor given per request (`speaker_wavs`).
    Tensor(ConditionerCommon),
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

/// The TTS model configuration, as published in `config.json`.
#[derive(Debug, Clone)]
pub struct TtsConfig {
    /// Audio tokens per codebook (`card`; one more is the padding token).
    pub card: usize,
    /// Audio codebooks the model reads (`n_q`).
    pub n_q: usize,
    /// Audio codebooks the depformer generates (`dep_q`): `n_q` as published, fewer when asked
    /// ([`TtsConfig::generating`]).
    pub dep_q: usize,
    /// One delay per stream, text first (`n_q + 1` entries).
    pub delays: Vec<usize>,
    /// Width of the main transformer.
    pub dim: usize,
    /// Text tokens (`text_card`; one more is the start token).
    pub text_card: usize,
    /// The text padding token.
    pub existing_text_padding_id: u32,
    /// Attention heads of the main transformer.
    pub num_heads: usize,
    /// Layers of the main transformer.
    pub num_layers: usize,
    /// Feed-forward width as a multiple of `dim`.
    pub hidden_scale: f64,
    /// Initial layer scale, when the layers have one.
    pub layer_scale: Option<f64>,
    /// Attention context of the main transformer, in steps.
    pub context: usize,
    /// RoPE maximum period.
    pub max_period: f64,
    /// Activation of the gated feed-forward blocks.
    pub gating: Gating,
    /// Normalisation layers.
    pub norm: NormKind,
    /// Width of the depformer.
    pub depformer_dim: usize,
    /// Attention heads of the depformer.
    pub depformer_num_heads: usize,
    /// Layers of the depformer.
    pub depformer_num_layers: usize,
    /// Feed-forward width of the depformer.
    pub depformer_dim_feedforward: usize,
    /// One input projection per depformer weight set (else one shared).
    pub depformer_multi_linear: bool,
    /// Depformer weights per codebook (through the schedule).
    pub depformer_weights_per_step: bool,
    /// Codebook index -> weight set (identity when the config has no schedule).
    pub depformer_schedule: Vec<usize>,
    /// Rank of the depformer's factored embeddings, when factored.
    pub depformer_low_rank_embeddings: Option<usize>,
    /// Whether the text embedding carries a second, demultiplexed stream.
    pub demux_second_stream: bool,
    /// Text tokens the text head predicts.
    pub text_card_out: usize,
    /// Whether the main transformer cross-attends to conditions (voices).
    pub cross_attention: bool,
    /// The conditioners, by name.
    pub conditioners: BTreeMap<String, ConditionerConfig>,
    /// How conditions reach the model.
    pub fuser: Option<FuserConfig>,
    /// `tts_config.audio_delay`, seconds.
    pub audio_delay: f64,
    /// `tts_config.second_stream_ahead`, words.
    pub second_stream_ahead: usize,
    /// `model_id`: voices are named `<voice>.<sig>@<epoch>.safetensors`.
    pub model_id: ModelId,
    /// `lm_gen_config`: default audio temperature.
    pub temp: f64,
    /// Default text temperature.
    pub text_temp: f64,
    /// Default top-k of the audio tokens.
    pub top_k: usize,
    /// Default top-k of the text tokens.
    pub top_k_text: usize,
}

fn bad(msg: impl Into<String>) -> MoshiError {
    MoshiError::InvalidConfig(format!("TTS config.json: {}", msg.into()))
}

impl TtsConfig {
    /// The same model generating only its first `n_q` audio codebooks, as the reference's
    /// `TTSModel(n_q=...)` does for a model of one stream: the depformer runs `n_q` steps
    /// (`lm.dep_q = n_q`), the model reads the other codebooks as zero tokens, and Mimi decodes
    /// the `n_q` it gets. Fewer codebooks, fewer depformer steps: Kyutai's TTS server uses 24 of
    /// the 1.6B's 32. Like the reference, more codebooks than the model has is an error.
    ///
    /// ```
    /// # use fluent_voice_kyutai::internals::tts::TtsConfig;
    /// # fn cfg(c: TtsConfig) {
    /// let fewer = c.clone().generating(c.n_q - 1).unwrap();
    /// assert_eq!(fewer.dep_q, c.n_q - 1);
    /// assert!(c.clone().generating(c.n_q + 1).is_err());
    /// # }
    /// ```
    pub fn generating(mut self, n_q: usize) -> Result<TtsConfig> {
        if n_q == 0 || n_q > self.n_q {
            return Err(MoshiError::InvalidInput(format!(
                "n_q = {n_q}: this TTS model has {} audio codebooks; generate 1 to {} of them",
                self.n_q, self.n_q
            )));
        }
        // The schedule stays whole: the file stacks every weight set of the depformer's steps
        // (the 1.6B's 32 steps share 11), and the first `n_q` steps use theirs from it.
        self.dep_q = n_q;
        Ok(self)
    }

    /// Parses and checks `config.json`.
    ///
    /// ```
    /// use fluent_voice_kyutai::internals::tts::TtsConfig;
    /// let err = TtsConfig::from_json(br#"{"model_type": "stt"}"#).unwrap_err();
    /// assert!(err.to_string().contains("model_type"));
    /// ```
    pub fn from_json(bytes: &[u8]) -> Result<TtsConfig> {
        let raw = LmConfigJson::parse(bytes).map_err(bad)?;
        Self::validate(raw).map_err(bad)
    }

    /// Checks the parsed JSON for what this engine runs, and resolves its defaults.
    fn validate(raw: LmConfigJson) -> std::result::Result<TtsConfig, String> {
        if raw.model_type.as_deref() != Some("tts") {
            return Err(format!(
                "model_type is {:?}, not \"tts\": this is not a TTS model repository",
                raw.model_type
            ));
        }
        raw.check_common()?;
        if raw.depformer_pos_emb != "none" {
            return Err(format!(
                "depformer_pos_emb \"{}\" is not supported (only \"none\")",
                raw.depformer_pos_emb
            ));
        }
        if raw.dep_q != raw.n_q {
            return Err(format!(
                "dep_q ({}) differs from n_q ({}); a TTS model generates every codebook",
                raw.dep_q, raw.n_q
            ));
        }
        if !raw.depformer_weights_per_step {
            return Err(
                "depformer_weights_per_step = false is not supported by this TTS engine".into(),
            );
        }
        let depformer_schedule = match raw.depformer_weights_per_step_schedule.clone() {
            Some(s) if s.len() != raw.dep_q => {
                return Err(format!(
                    "depformer_weights_per_step_schedule has {} entries, expected dep_q = {}",
                    s.len(),
                    raw.dep_q
                ));
            }
            Some(s) => s,
            None => (0..raw.dep_q).collect(),
        };
        let depformer_num_heads = raw
            .depformer_num_heads
            .ok_or("the key `depformer_num_heads` is missing")?;
        let depformer_num_layers = raw.depformer_num_layers.unwrap_or(raw.num_layers()?);
        if depformer_num_heads == 0 || !raw.depformer_dim.is_multiple_of(depformer_num_heads) {
            return Err(format!(
                "depformer_dim ({}) must be a multiple of depformer_num_heads ({depformer_num_heads})",
                raw.depformer_dim
            ));
        }
        let conditioners = raw
            .conditioners
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(name, spec)| {
                let config = conditioner(&name, spec, raw.dim)?;
                Ok((name, config))
            })
            .collect::<std::result::Result<BTreeMap<_, _>, String>>()?;
        let fuser = raw
            .fuser
            .clone()
            .map(|f| fuser(f, &conditioners))
            .transpose()?;
        if !conditioners.is_empty() && fuser.is_none() {
            return Err("conditioners without a fuser".into());
        }
        if raw.cross_attention != fuser.as_ref().is_some_and(|f| !f.cross.is_empty()) {
            return Err(
                "cross_attention must be true exactly when the fuser has `cross` conditions".into(),
            );
        }
        let tts = raw
            .tts_config
            .clone()
            .ok_or("the key `tts_config` is missing")?;
        let audio_delay = tts.audio_delay.ok_or("tts_config.audio_delay is missing")?;
        if tts.multistream {
            return Err("tts_config.multistream is not supported".into());
        }
        if tts.second_stream_ahead > 0 && !raw.demux_second_stream {
            return Err("second_stream_ahead needs demux_second_stream = true".into());
        }
        let model_id = raw
            .model_id
            .clone()
            .ok_or("the key `model_id` is missing")?;
        let sampling = &raw.lm_gen_config;
        let temp = sampling.temp.unwrap_or(0.6);
        Ok(TtsConfig {
            card: raw.card,
            n_q: raw.n_q,
            dep_q: raw.dep_q,
            dim: raw.dim,
            text_card: raw.text_card,
            existing_text_padding_id: raw.existing_text_padding_id,
            num_heads: raw.num_heads,
            num_layers: raw.num_layers()?,
            hidden_scale: raw.hidden_scale,
            layer_scale: raw.layer_scale,
            context: raw.context()?,
            max_period: raw.max_period,
            gating: raw.gating()?,
            norm: raw.norm()?,
            depformer_dim: raw.depformer_dim,
            depformer_num_heads,
            depformer_num_layers,
            depformer_dim_feedforward: raw
                .depformer_dim_feedforward
                .unwrap_or((raw.hidden_scale * raw.depformer_dim as f64) as usize),
            depformer_multi_linear: raw.depformer_multi_linear,
            depformer_weights_per_step: raw.depformer_weights_per_step,
            depformer_schedule,
            depformer_low_rank_embeddings: raw.depformer_low_rank_embeddings,
            demux_second_stream: raw.demux_second_stream,
            text_card_out: raw.text_card_out.unwrap_or(raw.text_card),
            cross_attention: raw.cross_attention,
            conditioners,
            fuser,
            audio_delay,
            second_stream_ahead: tts.second_stream_ahead,
            model_id,
            temp,
            text_temp: sampling.text_temp.unwrap_or(temp),
            top_k: sampling.top_k.unwrap_or(250),
            top_k_text: sampling.top_k_text.unwrap_or(25),
            delays: raw.delays,
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

    /// Frames between text and audio: `int(audio_delay * frame_rate)` as in the reference.
    pub fn delay_steps(&self, frame_rate: f64) -> usize {
        (self.audio_delay * frame_rate) as usize
    }
}

/// One conditioner, checked: a value the reference accepts but this engine does not implement
/// is refused by name.
fn conditioner(
    name: &str,
    spec: ConditionerJson,
    model_dim: usize,
) -> std::result::Result<ConditionerConfig, String> {
    let (kind, args) = match spec {
        ConditionerJson::Lut { lut } => ("lut", lut),
        ConditionerJson::Tensor { tensor } => ("tensor", tensor),
    };
    // `device` (placement is ours), `pad_empty` (no empty condition reaches a conditioner
    // here: a request without a voice uses one padded slot) and `init_scale` (training) are
    // accepted and change nothing.
    let ConditionerArgsJson {
        dim,
        output_dim,
        force_linear,
        output_bias,
        learn_padding,
        n_bins,
        tokenizer,
        possible_values,
        ..
    } = args;
    let err = |m: String| format!("conditioner `{name}`: {m}");
    if let Some(output_dim) = output_dim
        && output_dim != model_dim
    {
        return Err(err(format!(
            "output_dim is {output_dim} but the model's dim is {model_dim}; the conditioner \
             projects into the model, so they must be equal"
        )));
    }
    let projected = force_linear || dim != model_dim;
    if output_bias && projected {
        return Err(err(
            "output_bias = true is not supported (the reference refuses it too)".into(),
        ));
    }
    let common = ConditionerCommon {
        dim,
        projected,
        learn_padding,
    };
    match kind {
        "lut" => {
            let n_bins = n_bins.ok_or_else(|| err("n_bins is missing".into()))?;
            let tokenizer = tokenizer.ok_or_else(|| err("tokenizer is missing".into()))?;
            if tokenizer != "noop" {
                return Err(err(format!(
                    "tokenizer \"{tokenizer}\" is not supported (only \"noop\")"
                )));
            }
            let possible_values =
                possible_values.ok_or_else(|| err("possible_values is required".into()))?;
            if possible_values.len() > n_bins {
                return Err(err("more possible_values than n_bins".into()));
            }
            Ok(ConditionerConfig::Lut(LutConfig {
                n_bins,
                possible_values,
                common,
            }))
        }
        _ => {
            if n_bins.is_some() || tokenizer.is_some() || possible_values.is_some() {
                return Err(err(
                    "n_bins, tokenizer and possible_values belong to LUT conditioners".into(),
                ));
            }
            Ok(ConditionerConfig::Tensor(common))
        }
    }
}

/// The fuser, checked against the conditioners it names.
fn fuser(
    f: FuserJson,
    conditioners: &BTreeMap<String, ConditionerConfig>,
) -> std::result::Result<FuserConfig, String> {
    if !f.prepend.is_empty() {
        return Err("fuser.prepend is not supported (the reference refuses it too)".into());
    }
    if let Some(name) = f
        .sum
        .iter()
        .chain(&f.cross)
        .find(|name| !conditioners.contains_key(*name))
    {
        return Err(format!(
            "the fuser names `{name}`, which is not a conditioner"
        ));
    }
    Ok(FuserConfig {
        cross_attention_pos_emb: f.cross_attention_pos_emb,
        cross_attention_pos_emb_scale: f.cross_attention_pos_emb_scale,
        sum: f.sum,
        cross: f.cross,
    })
}
