//! Pocket TTS's YAML config (`pocket_tts/utils/config.py`): the reference's pydantic classes as
//! serde structs with the same keys and defaults. Like the reference's `StrictModel`
//! (`extra="forbid"`), an unknown key is refused by name.
//!
//! The configs the `pocket-tts` 4.0.1 package ships (`pocket_tts/config/*.yaml`, MIT licensed)
//! are compiled into the crate as data ([`builtin`]), so `--tts-model pocket:french` needs no
//! file of the user's; a user's own YAML goes through the same parser.

// The structs' fields are the YAML's keys, one to one with the reference's pydantic classes
// (documented there); only those whose meaning is not plain from the key carry a comment.
#![allow(missing_docs)]

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{MoshiError, Result};

/// The reference's `DEFAULT_EOS_THRESHOLD`.
pub const DEFAULT_EOS_THRESHOLD: f64 = -4.0;
/// The built-in config that `pocket` names: `english`, the same model as `english_2026-10`.
pub const DEFAULT_CONFIG: &str = "english";

/// The whole config (`Config`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PocketConfig {
    pub flow_lm: FlowLmConfig,
    pub mimi: MimiConfig,
    /// The weights with the Mimi encoder (a gated repository: voice cloning).
    #[serde(default)]
    pub weights_path: Option<String>,
    /// The same flow LM and decoder in an open repository, without the encoder.
    #[serde(default)]
    pub weights_path_without_voice_cloning: Option<String>,
    #[serde(default)]
    pub pad_with_spaces_for_short_inputs: bool,
    #[serde(default)]
    pub remove_semicolons: bool,
    #[serde(default = "yes")]
    pub append_terminal_punctuation: bool,
    #[serde(default = "yes")]
    pub capitalize_first_letter: bool,
    /// Per-character rewrites before tokenization (`""` deletes).
    #[serde(default)]
    pub replace_characters: BTreeMap<String, String>,
    #[serde(default)]
    pub model_recommended_frames_after_eos: Option<usize>,
    #[serde(default = "default_temperature")]
    pub default_temperature: f64,
    #[serde(default = "default_eos_threshold")]
    pub default_eos_threshold: f64,
}

fn yes() -> bool {
    true
}

fn default_temperature() -> f64 {
    0.3
}

fn default_eos_threshold() -> f64 {
    DEFAULT_EOS_THRESHOLD
}

/// `FlowLMConfig`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FlowLmConfig {
    pub dtype: String,
    pub flow: FlowConfig,
    pub transformer: FlowLmTransformerConfig,
    /// Width of the backbone output fed to the heads: a bias-free projection from `d_model`.
    #[serde(default)]
    pub z_dim: Option<usize>,
    pub lookup_table: LookupTableConfig,
    #[serde(default)]
    pub weights_path: Option<String>,
    #[serde(default)]
    pub insert_bos_before_voice: bool,
}

/// `FlowConfig`: the sampling head.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FlowConfig {
    pub dim: usize,
    pub depth: usize,
    #[serde(default, rename = "type")]
    pub kind: HeadKind,
}

/// How the head turns noise into a latent (`flow.type`).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HeadKind {
    /// Lagrangian self-distillation: two time conditions, `x += v(s, t, x) / n` per step.
    #[default]
    Lsd,
    /// Euler integration of a flow, one time condition.
    FlowMatching,
    /// No time condition: the latent is `v(x0)`.
    Drifting,
    /// No time condition: the latent is `x0 + v(x0)`.
    Pointwise,
}

impl HeadKind {
    /// The number of time conditions the head's MLP takes.
    pub fn time_conditions(self) -> usize {
        match self {
            HeadKind::Lsd => 2,
            HeadKind::FlowMatching => 1,
            HeadKind::Drifting | HeadKind::Pointwise => 0,
        }
    }
}

/// `FlowLMTransformerConfig`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FlowLmTransformerConfig {
    pub hidden_scale: usize,
    pub max_period: f64,
    pub d_model: usize,
    pub num_heads: usize,
    pub num_layers: usize,
    #[serde(default)]
    pub attn_dim: Option<usize>,
    #[serde(default)]
    pub num_kv_heads: Option<usize>,
    #[serde(default)]
    pub dim_feedforward: Option<usize>,
}

/// `LookupTable`: the text embedding and its tokenizer.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LookupTableConfig {
    pub dim: usize,
    pub n_bins: usize,
    /// `tokenizers` (or `json`) for a `tokenizer.json`, else SentencePiece.
    pub tokenizer: String,
    pub tokenizer_path: String,
    /// A low-rank table: `rank`-wide embeddings and a bias-free projection to `dim`.
    #[serde(default)]
    pub rank: Option<usize>,
}

impl LookupTableConfig {
    /// Whether the tokenizer is a `tokenizer.json`, as `build_tokenizer` decides: the config's
    /// kind, or the file's suffix.
    pub fn is_json(&self) -> bool {
        matches!(self.tokenizer.as_str(), "tokenizers" | "json")
            || self
                .tokenizer_path
                .split('@')
                .next()
                .is_some_and(|p| p.ends_with(".json"))
    }
}

/// `SEANetConfig`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SeanetConfig {
    pub dimension: usize,
    pub channels: usize,
    pub n_filters: usize,
    pub n_residual_layers: usize,
    pub ratios: Vec<usize>,
    pub kernel_size: usize,
    pub residual_kernel_size: usize,
    pub last_kernel_size: usize,
    pub dilation_base: usize,
    pub pad_mode: String,
    pub compress: usize,
}

/// `MimiTransformerConfig`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MimiTransformerConfig {
    pub d_model: usize,
    pub input_dimension: usize,
    pub output_dimensions: Vec<usize>,
    pub num_heads: usize,
    pub num_layers: usize,
    pub layer_scale: f64,
    pub context: usize,
    #[serde(default = "default_max_period")]
    pub max_period: f64,
    pub dim_feedforward: usize,
}

fn default_max_period() -> f64 {
    10000.0
}

/// `QuantizerConfig`: the 1x1 convolution from latents to Mimi's width.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QuantizerConfig {
    pub dimension: usize,
    pub output_dimension: usize,
}

/// `MimiConfig`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MimiConfig {
    pub dtype: String,
    pub sample_rate: usize,
    pub channels: usize,
    pub frame_rate: f64,
    pub seanet: SeanetConfig,
    pub transformer: MimiTransformerConfig,
    pub quantizer: QuantizerConfig,
    #[serde(default)]
    pub weights_path: Option<String>,
    #[serde(default)]
    pub inner_dim: Option<usize>,
    #[serde(default)]
    pub outer_dim: Option<usize>,
    /// Decoder-side SEANet and transformer, where they differ from the encoder's.
    #[serde(default)]
    pub decoder_seanet: Option<SeanetConfig>,
    #[serde(default)]
    pub decoder_transformer: Option<MimiTransformerConfig>,
}

impl MimiConfig {
    /// The SEANet of the decoder.
    pub fn decoder_seanet(&self) -> &SeanetConfig {
        self.decoder_seanet.as_ref().unwrap_or(&self.seanet)
    }

    /// The transformer of the decoder.
    pub fn decoder_transformer(&self) -> &MimiTransformerConfig {
        self.decoder_transformer
            .as_ref()
            .unwrap_or(&self.transformer)
    }

    /// Samples per latent frame (1920 at 24 kHz and 12.5 Hz).
    pub fn frame_samples(&self) -> usize {
        (self.sample_rate as f64 / self.frame_rate) as usize
    }
}

impl PocketConfig {
    /// Parses a YAML config; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<PocketConfig> {
        let config: PocketConfig = serde_yaml_ng::from_str(text).map_err(|e| {
            MoshiError::InvalidConfig(format!("the Pocket TTS config {origin} is not valid: {e}"))
        })?;
        config.check(origin)?;
        Ok(config)
    }

    /// The checks the reference makes when it builds the model, made before anything is
    /// downloaded.
    fn check(&self, origin: &str) -> Result<()> {
        let bad = |what: String| {
            Err(MoshiError::InvalidConfig(format!(
                "the Pocket TTS config {origin} is not valid: {what}"
            )))
        };
        let t = &self.flow_lm.transformer;
        let attn_dim = t.attn_dim.unwrap_or(t.d_model);
        let kv_heads = t.num_kv_heads.unwrap_or(t.num_heads);
        if t.num_heads == 0 || !attn_dim.is_multiple_of(t.num_heads) {
            return bad(format!(
                "flow_lm.transformer: attention width {attn_dim} is not a multiple of num_heads {}",
                t.num_heads
            ));
        }
        if kv_heads == 0 || !t.num_heads.is_multiple_of(kv_heads) {
            return bad(format!(
                "flow_lm.transformer: num_heads {} is not a multiple of num_kv_heads {kv_heads}",
                t.num_heads
            ));
        }
        if !(attn_dim / t.num_heads).is_multiple_of(2) {
            return bad("flow_lm.transformer: the head width must be even (RoPE)".into());
        }
        for (name, dtype) in [("flow_lm", &self.flow_lm.dtype), ("mimi", &self.mimi.dtype)] {
            if !matches!(dtype.as_str(), "float32" | "bfloat16" | "float16") {
                return bad(format!(
                    "{name}.dtype {dtype:?} (float32, bfloat16, float16)"
                ));
            }
        }
        for seanet in [&self.mimi.seanet, self.mimi.decoder_seanet()] {
            if !matches!(seanet.pad_mode.as_str(), "constant" | "replicate") {
                return bad(format!(
                    "mimi.seanet.pad_mode {:?} (constant, replicate)",
                    seanet.pad_mode
                ));
            }
        }
        let m = self.mimi.decoder_transformer();
        if m.num_heads == 0 || !m.d_model.is_multiple_of(m.num_heads) {
            return bad("mimi.transformer: d_model is not a multiple of num_heads".into());
        }
        Ok(())
    }

    /// The width of the voice conditioning (`speaker_proj_weight`'s input).
    pub fn latent_conditioning_dim(&self) -> usize {
        self.mimi.inner_dim.unwrap_or(self.mimi.seanet.dimension)
    }

    /// The frames generated after EOS for a chunk whose preparation guessed `guess` (the
    /// config's `model_recommended_frames_after_eos` wins; then the caller's).
    pub fn frames_after_eos(&self, caller: Option<usize>, guess: usize) -> usize {
        caller
            .or(self.model_recommended_frames_after_eos)
            .unwrap_or(guess + 2)
    }
}

/// The configs the `pocket-tts` 4.0.1 package ships, by name (`pocket:NAME`).
const BUILTIN: &[(&str, &str)] = &[
    ("english", include_str!("configs/english.yaml")),
    (
        "english_2026-01",
        include_str!("configs/english_2026-01.yaml"),
    ),
    (
        "english_2026-04",
        include_str!("configs/english_2026-04.yaml"),
    ),
    (
        "english_2026-04_24l",
        include_str!("configs/english_2026-04_24l.yaml"),
    ),
    (
        "english_2026-09",
        include_str!("configs/english_2026-09.yaml"),
    ),
    (
        "english_2026-09_2",
        include_str!("configs/english_2026-09_2.yaml"),
    ),
    (
        "english_2026-09_24l",
        include_str!("configs/english_2026-09_24l.yaml"),
    ),
    (
        "english_2026-10",
        include_str!("configs/english_2026-10.yaml"),
    ),
    (
        "english_drifting_26-09",
        include_str!("configs/english_drifting_26-09.yaml"),
    ),
    (
        "english_18m_2026-10",
        include_str!("configs/english_18m_2026-10.yaml"),
    ),
    (
        "english_18m_refl_2026-10",
        include_str!("configs/english_18m_refl_2026-10.yaml"),
    ),
    (
        "english_7m_2026-10",
        include_str!("configs/english_7m_2026-10.yaml"),
    ),
    (
        "english_7m_refl_2026-10",
        include_str!("configs/english_7m_refl_2026-10.yaml"),
    ),
    (
        "english_2m_2026-10",
        include_str!("configs/english_2m_2026-10.yaml"),
    ),
    (
        "english_2m_refl_2026-10",
        include_str!("configs/english_2m_refl_2026-10.yaml"),
    ),
    ("french", include_str!("configs/french.yaml")),
    ("french_24l", include_str!("configs/french_24l.yaml")),
    ("german", include_str!("configs/german.yaml")),
    ("german_24l", include_str!("configs/german_24l.yaml")),
    ("italian", include_str!("configs/italian.yaml")),
    ("italian_24l", include_str!("configs/italian_24l.yaml")),
    ("portuguese", include_str!("configs/portuguese.yaml")),
    (
        "portuguese_24l",
        include_str!("configs/portuguese_24l.yaml"),
    ),
    ("spanish", include_str!("configs/spanish.yaml")),
    ("spanish_24l", include_str!("configs/spanish_24l.yaml")),
    ("dutch", include_str!("configs/dutch.yaml")),
    ("dutch_24l", include_str!("configs/dutch_24l.yaml")),
];

/// The names of the built-in configs.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|(name, _)| *name)
}

/// A built-in config by name, or an error listing the names there are.
pub fn builtin(name: &str) -> Result<PocketConfig> {
    match BUILTIN.iter().find(|(n, _)| *n == name) {
        Some((_, text)) => PocketConfig::from_yaml(text, &format!("pocket:{name}")),
        None => Err(MoshiError::InvalidConfig(format!(
            "there is no Pocket TTS model {name:?}; the built-in ones are: {}",
            builtin_names().collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// The language a built-in config speaks (`english`, `french`, ...): its name's first word, as
/// the reference matches its per-language defaults.
pub fn config_language(name: &str) -> &'static str {
    const LANGUAGES: [&str; 7] = [
        "english",
        "french",
        "german",
        "portuguese",
        "italian",
        "spanish",
        "dutch",
    ];
    LANGUAGES
        .iter()
        .find(|l| name.contains(*l))
        .copied()
        .unwrap_or("english")
}

/// The default voice of a built-in config (`DEFAULT_VOICE_FOR_LANGUAGE`, else `alba`).
pub fn default_voice(name: &str) -> &'static str {
    match config_language(name) {
        "italian" => "giovanni",
        "spanish" => "lola",
        "german" => "juergen",
        "portuguese" => "rafael",
        "french" => "estelle",
        "dutch" => "daan",
        _ => "alba",
    }
}

/// The 27 predefined voices of the released models (`_ORIGINS_OF_PREDEFINED_VOICES`).
pub const PREDEFINED_VOICES: [&str; 27] = [
    "cosette",
    "marius",
    "javert",
    "alba",
    "jean",
    "anna",
    "vera",
    "fantine",
    "charles",
    "paul",
    "eponine",
    "azelma",
    "george",
    "mary",
    "jane",
    "michael",
    "eve",
    "bill_boerst",
    "peter_yearsley",
    "stuart_bell",
    "caro_davy",
    "giovanni",
    "lola",
    "juergen",
    "rafael",
    "daan",
    "estelle",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_config_parses() {
        for name in builtin_names() {
            let config = builtin(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(config.mimi.frame_samples(), 1920, "{name}");
        }
        assert_eq!(BUILTIN.len(), 27);
    }

    #[test]
    fn the_english_config_is_the_published_one() {
        let c = builtin("english").unwrap();
        assert_eq!(c.flow_lm.transformer.d_model, 1024);
        assert_eq!(c.flow_lm.transformer.num_layers, 6);
        assert_eq!(c.flow_lm.flow.kind, HeadKind::Lsd);
        assert!(c.flow_lm.lookup_table.is_json());
        assert!(c.flow_lm.insert_bos_before_voice);
        assert_eq!(c.default_temperature, 0.3);
        assert_eq!(c.default_eos_threshold, -4.0);
        assert_eq!(c.replace_characters.get("’").map(String::as_str), Some("'"));
        let small = builtin("english_2m_2026-10").unwrap();
        assert_eq!(small.flow_lm.flow.kind, HeadKind::Pointwise);
        assert_eq!(small.flow_lm.transformer.num_kv_heads, Some(1));
        assert_eq!(small.flow_lm.lookup_table.rank, Some(32));
        assert!(!small.flow_lm.lookup_table.is_json());
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let text = include_str!("configs/english.yaml").replace("remove_semicolons", "x");
        let text = format!("{text}\nspeed_up: 2\n");
        let err = PocketConfig::from_yaml(&text, "mine.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("speed_up") && err.contains("mine.yaml"),
            "{err}"
        );
        let err = builtin("klingon").unwrap_err().to_string();
        assert!(
            err.contains("klingon") && err.contains("french_24l"),
            "{err}"
        );
    }

    #[test]
    fn per_language_defaults() {
        assert_eq!(default_voice("french_24l"), "estelle");
        assert_eq!(default_voice("english_2026-10"), "alba");
        assert_eq!(config_language("dutch"), "dutch");
    }
}
