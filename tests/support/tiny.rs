//! Tiny Kyutai model repositories, in the real file formats, for the loopback test hub.
//!
//! Each `*_repo()` builder returns `Vec<(path in repo, bytes)>`, ready for
//! `TestHub::publish`. Everything is deterministic: the same bytes on every call, on every
//! machine (weights come from an inline splitmix64 generator seeded per tensor name; safetensors
//! headers are written here with a fixed key order, see [`safetensors_bytes`]).
//!
//! What is real and what is tiny:
//!
//! - `config.json` files carry the *key sets* of the published ones
//!   ([`TTS_CONFIG_KEYS`], [`STT_CONFIG_KEYS`]) with tiny dimensions, plus `mimi_config_name`,
//!   since the tiny Mimi is not the standard one.
//! - Tensor names and shapes are derived from the config exactly as the Python reference builds
//!   its modules (see [`lm_tensors`] and [`mimi_tensors`] for the file and function each rule
//!   comes from), in the *published* layout: attention projections stacked as
//!   `...self_attn.in_proj_weight` / `...self_attn.out_proj.weight`. Applied to the published TTS
//!   config, these rules give the 418 tensors (410 bf16, 8 f32) of
//!   `dsm_tts_1e68beda@240.safetensors`; applied to the standard Mimi config, the 318 tensors of
//!   the published Mimi file; applied to the `stt-1b-en_fr-candle` config, 135 tensors whose bf16
//!   byte total matches the published `model.safetensors` (1,978,522,200 B) up to its header.
//! - The text tokenizer is `tests/fixtures/tiny_spm.model` (96 pieces, trained by
//!   `tools/fixtures/make_tiny_spm.py`), so `text_card` is 96.
//! - Audio frames stay real: Mimi at 24 kHz, 12.5 Hz, ratios `[8, 6, 5, 4]`, 1920 samples/frame.
//! - The tiny Mimi and the voices carry information, so that tests comparing audio or codes can
//!   fail: Mimi's weights are scaled per layer ([`mimi_value_scale`]) and each voice has its own
//!   per-channel levels ([`voice_values`]); `tests/codec_sensitivity.rs` checks it.
//!
//! `tools/fixtures/check_tiny_repos.py` loads the repos (written by
//! `cargo run --example dump_tiny_repos -- <dir>`) with the Python `moshi` package, strictly (no
//! missing, unexpected or mis-shaped tensor), and runs them a few steps (TTS `simple_generate`
//! with two tiny voices, STT `LMGen` with the VAD heads, Mimi encode/decode and its sensitivity).
//! `tools/fixtures/rust_moshi_check.rs` loads the STT repo with the Rust `moshi` 0.6.4 crate
//! (`lm::LmModel`, `mimi::Mimi`, `asr::State`), as the STT tests do. The Python check passed on
//! the current bytes.
#![allow(dead_code)]

use safetensors::Dtype;
use serde_json::{Value, json};

/// The tiny SentencePiece model (unigram, 96 pieces; `<unk>`=0, `<s>`=1, `</s>`=2, `<pad>`=3).
pub const TINY_SPM: &[u8] = include_bytes!("../fixtures/tiny_spm.model");
/// Number of pieces in [`TINY_SPM`]; the tiny configs' `text_card`.
pub const TINY_SPM_VOCAB: usize = 96;

/// File names in the tiny TTS repo (the published repo's `config.json` names its files the same
/// way: `dsm_tts_1e68beda@240.safetensors`, `tokenizer-e351c8d8-checkpoint125.safetensors`,
/// `tokenizer_spm_8k_en_fr_audio.model`).
pub const TTS_MOSHI_NAME: &str = "dsm_tts_tiny@240.safetensors";
pub const TTS_MIMI_NAME: &str = "tokenizer-tiny-mimi.safetensors";
pub const TTS_TOKENIZER_NAME: &str = "tokenizer_tiny_spm.model";
/// The Mimi config file, named by `mimi_config_name` in both tiny repos.
pub const MIMI_CONFIG_NAME: &str = "mimi_config.json";

/// File names in the tiny STT repo. `model.safetensors` and the Mimi name are the real names of
/// `kyutai/stt-1b-en_fr-candle`, whose `config.json` has no `moshi_name` key: loaders must fall
/// back to `model.safetensors`, as the Python `CheckpointInfo.from_hf_repo` does.
pub const STT_MOSHI_NAME: &str = "model.safetensors";
pub const STT_MIMI_NAME: &str = "mimi-pytorch-e351c8d8@125.safetensors";
pub const STT_TOKENIZER_NAME: &str = "tokenizer_en_fr_audio_96.model";

/// `model_id` of the TTS config; voices are `<name>.<sig>@<epoch>.safetensors`.
pub const TTS_MODEL_SIG: &str = "1e68beda";
pub const TTS_MODEL_EPOCH: u64 = 240;
/// `dim` of the `speaker_wavs` tensor conditioner in the tiny TTS (512 in the published model).
pub const TTS_SPEAKER_DIM: usize = 16;
/// Frames per voice embedding (`speaker_wavs` is `[1, dim, 125]` in `kyutai/tts-voices`).
pub const VOICE_FRAMES: usize = 125;

/// Voices in [`voices_repo`], by the names users give (path in the repo, without the suffix).
pub const VOICE_NAMES: [&str; 3] = [
    "expresso/ex03-ex01_happy_001_channel1_334s.wav",
    "unmute-prod-website/default_voice.wav",
    "vctk/p225_023.wav",
];

/// Every key of the published `kyutai/tts-1.6b-en_fr/config.json` (revision f654396), in its
/// order. Sources: `shared/docs/kyutai-models.md` and public parsers of that file that check it
/// key by key; the file-name keys are popped by `CheckpointInfo.from_hf_repo`
/// (`moshi/models/loaders.py`). No `stt_config`, no `extra_heads_*`. The tiny config adds
/// `mimi_config_name` (see [`MIMI_CONFIG_NAME`]).
pub const TTS_CONFIG_KEYS: &[&str] = &[
    "card",
    "n_q",
    "dep_q",
    "delays",
    "dim",
    "text_card",
    "existing_text_padding_id",
    "num_heads",
    "num_layers",
    "hidden_scale",
    "causal",
    "layer_scale",
    "context",
    "max_period",
    "gating",
    "norm",
    "positional_embedding",
    "depformer_dim",
    "depformer_num_heads",
    "depformer_num_layers",
    "depformer_dim_feedforward",
    "depformer_multi_linear",
    "depformer_pos_emb",
    "depformer_weights_per_step",
    "depformer_low_rank_embeddings",
    "demux_second_stream",
    "text_card_out",
    "cross_attention",
    "conditioners",
    "fuser",
    "tts_config",
    "model_id",
    "depformer_weights_per_step_schedule",
    "model_type",
    "lm_gen_config",
    "tokenizer_name",
    "mimi_name",
    "moshi_name",
];

/// Every key of the published `kyutai/stt-1b-en_fr-candle/config.json`: the exact key set of
/// `kyutai/stt-2.6b-en-candle/config.json` as public checkers compare it, plus
/// `extra_heads_num_heads` / `extra_heads_dim` (the 1B model's 4 semantic-VAD heads of dim 6; with
/// them the 2-space-indented JSON comes to the published 1,315 bytes, without them ~56 short).
/// No `moshi_name`: the weights are the default `model.safetensors`. The tiny config adds
/// `mimi_config_name`.
pub const STT_CONFIG_KEYS: &[&str] = &[
    "card",
    "n_q",
    "dep_q",
    "delays",
    "dim",
    "text_card",
    "existing_text_padding_id",
    "num_heads",
    "num_layers",
    "hidden_scale",
    "causal",
    "layer_scale",
    "context",
    "max_period",
    "gating",
    "norm",
    "positional_embedding",
    "depformer_dim",
    "depformer_num_heads",
    "depformer_num_layers",
    "depformer_dim_feedforward",
    "depformer_multi_linear",
    "depformer_pos_emb",
    "depformer_weights_per_step",
    "conditioners",
    "cross_attention",
    "extra_heads_num_heads",
    "extra_heads_dim",
    "model_id",
    "lm_gen_config",
    "stt_config",
    "model_type",
    "mimi_name",
    "tokenizer_name",
];

/// One tensor of a checkpoint: name, dtype and shape (row-major, PyTorch order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    fn new(name: impl Into<String>, dtype: Dtype, shape: &[usize]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
        }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

// ---------------------------------------------------------------------------------------------
// Configs
// ---------------------------------------------------------------------------------------------

/// The tiny TTS `config.json` (as a JSON value): every key of the published
/// `kyutai/tts-1.6b-en_fr` config ([`TTS_CONFIG_KEYS`]) plus `mimi_config_name`.
///
/// Published -> tiny: `dim` 2048 -> 64, `num_heads` 16 -> 4, `num_layers` 16 -> 2,
/// `text_card` 8000 -> 96, `card` 2048 -> 64, `n_q`/`dep_q` 32 -> 4, `delays` `[0, 0] + [2]*31`
/// -> `[0, 0, 2, 2, 2]` (`n_q + 1` entries: the text stream comes first, `LMModel.num_codebooks`),
/// `depformer_dim` 1024 -> 32, 16 -> 4 heads, 4 -> 1 layer, `depformer_dim_feedforward`
/// 3072 -> 64, schedule `[0..7] + [8]*8 + [9]*8 + [10]*8` -> `[0, 1, 2, 2]` (`dep_q` entries, 3
/// distinct weight sets, the last one shared), `depformer_low_rank_embeddings` 128 -> 16,
/// `speaker_wavs` dim 512 -> [`TTS_SPEAKER_DIM`], `control` LUT dim 2048 (= `dim`) -> 64.
/// Unchanged: `hidden_scale` 4.125, `context` 500, rope, silu, `rms_norm_f32`, the `cfg` LUT,
/// `fuser`, `tts_config`, `model_id`, `lm_gen_config`, `model_type`.
pub fn tts_config() -> Value {
    json!({
        "card": 64,
        "n_q": 4,
        "dep_q": 4,
        "delays": [0, 0, 2, 2, 2],
        "dim": 64,
        "text_card": TINY_SPM_VOCAB,
        "existing_text_padding_id": 3,
        "num_heads": 4,
        "num_layers": 2,
        "hidden_scale": 4.125,
        "causal": true,
        "layer_scale": null,
        "context": 500,
        "max_period": 10000,
        "gating": "silu",
        "norm": "rms_norm_f32",
        "positional_embedding": "rope",
        "depformer_dim": 32,
        "depformer_num_heads": 4,
        "depformer_num_layers": 1,
        "depformer_dim_feedforward": 64,
        "depformer_multi_linear": true,
        "depformer_pos_emb": "none",
        "depformer_weights_per_step": true,
        "depformer_low_rank_embeddings": 16,
        "demux_second_stream": true,
        "text_card_out": null,
        "cross_attention": true,
        "conditioners": {
            "speaker_wavs": {"type": "tensor", "tensor": {"dim": TTS_SPEAKER_DIM}},
            "cfg": {
                "type": "lut",
                "lut": {
                    "n_bins": 7,
                    "dim": 16,
                    "tokenizer": "noop",
                    "possible_values": ["1.0", "1.5", "2.0", "2.5", "3.0", "3.5", "4.0"]
                }
            },
            "control": {
                "type": "lut",
                "lut": {"dim": 64, "n_bins": 1, "tokenizer": "noop", "possible_values": ["ok"]}
            }
        },
        "fuser": {
            "cross_attention_pos_emb": true,
            "cross_attention_pos_emb_scale": 1,
            "sum": ["control", "cfg"],
            "prepend": [],
            "cross": ["speaker_wavs"]
        },
        "tts_config": {"audio_delay": 1.28, "second_stream_ahead": 2},
        "model_id": {"sig": TTS_MODEL_SIG, "epoch": TTS_MODEL_EPOCH},
        "depformer_weights_per_step_schedule": [0, 1, 2, 2],
        "model_type": "tts",
        "lm_gen_config": {"temp": 0.6, "text_temp": 0.6},
        "tokenizer_name": TTS_TOKENIZER_NAME,
        "mimi_name": TTS_MIMI_NAME,
        "moshi_name": TTS_MOSHI_NAME,
        "mimi_config_name": MIMI_CONFIG_NAME
    })
}

/// The tiny STT `config.json`: the key set of `kyutai/stt-1b-en_fr-candle` ([`STT_CONFIG_KEYS`])
/// plus `mimi_config_name`.
///
/// Published -> tiny: `dim` 2048 -> 64, heads 16 -> 4, layers 16 -> 2, `text_card` 8000 -> 96,
/// `card` 2048 -> 64, `n_q` 32 -> 4 (`delays` all 0, `n_q + 1` entries), the unused depformer
/// keys 1024/16/6 -> 32/4/1. Unchanged: `dep_q` 0 (no depformer: text out only),
/// `hidden_scale` 4.125, `context` 750, `max_period` 100000.0, 4 extra heads of dim 6,
/// `stt_config` (0.5 s delay, no silence prefix), `lm_gen_config`, the Mimi file name.
/// `model_id` is made up (the published one is not recorded in the docs).
pub fn stt_config() -> Value {
    json!({
        "card": 64,
        "n_q": 4,
        "dep_q": 0,
        "delays": [0, 0, 0, 0, 0],
        "dim": 64,
        "text_card": TINY_SPM_VOCAB,
        "existing_text_padding_id": 3,
        "num_heads": 4,
        "num_layers": 2,
        "hidden_scale": 4.125,
        "causal": true,
        "layer_scale": null,
        "context": 750,
        "max_period": 100000.0,
        "gating": "silu",
        "norm": "rms_norm_f32",
        "positional_embedding": "rope",
        "depformer_dim": 32,
        "depformer_num_heads": 4,
        "depformer_num_layers": 1,
        "depformer_dim_feedforward": null,
        "depformer_multi_linear": true,
        "depformer_pos_emb": "none",
        "depformer_weights_per_step": true,
        "conditioners": {},
        "cross_attention": false,
        "extra_heads_num_heads": 4,
        "extra_heads_dim": 6,
        "model_id": {"sig": "7e5a1b00", "epoch": 1},
        "lm_gen_config": {"temp": 0.0, "temp_text": 0.0, "top_k": 250, "top_k_text": 50},
        "stt_config": {"audio_delay_seconds": 0.5, "audio_silence_prefix_seconds": 0.0},
        "model_type": "stt",
        "mimi_name": STT_MIMI_NAME,
        "tokenizer_name": STT_TOKENIZER_NAME,
        "mimi_config_name": MIMI_CONFIG_NAME
    })
}

/// The silence prefix of the STT parity tests' second case (`stt_config.
/// audio_silence_prefix_seconds`): 2 s, a whole number of frames (25), so that Kyutai's scripts
/// (whole silent chunks, then `int(chunks / frame_rate)` seconds taken off the timings) and the
/// Rust transcriber (the seconds' worth of samples) pad alike; and longer than the fixture audio
/// (1.6 s), so that a word time that kept the prefix, or lost it twice, falls outside the audio
/// and cannot be clamped back onto the reference's.
pub const STT_PREFIX_SECONDS: f64 = 2.0;

/// The tiny Mimi config, in the form the Python `get_mimi(filename, mimi_config)`
/// (`moshi/models/loaders.py`) takes and `CheckpointInfo` reads from `mimi_config_name`:
/// `sample_rate`, `channels`, `frame_rate` and the keyword arguments of `SEANetEncoder` /
/// `SEANetDecoder` (`seanet`), `SplitResidualVectorQuantizer` (`quantizer`) and
/// `ProjectedTransformer` (`transformer`). Same keys as the standard `_mimi_config` of
/// `loaders.py`; tiny values: seanet `dimension` 512 -> 32, `n_filters` 64 -> 4; quantizer
/// `dimension` 256 -> 16, `n_q` 32 -> 8, `bins` 2048 -> 64; transformer `d_model` 512 -> 32,
/// 8 -> 4 heads, 8 -> 1 layer, `dim_feedforward` 2048 -> 128. Kept: 24 kHz, 12.5 Hz, ratios
/// `[8, 6, 5, 4]` (hop 960, 25 Hz encoder rate, learnt stride-2 down/upsampling), causal,
/// `norm` "none" (weights pre-processed, no weight norm), `layer_scale` 0.01, rope, context 250.
pub fn mimi_config() -> Value {
    json!({
        "sample_rate": 24000,
        "channels": 1,
        "frame_rate": 12.5,
        "seanet": {
            "channels": 1,
            "dimension": 32,
            "causal": true,
            "n_filters": 4,
            "n_residual_layers": 1,
            "activation": "ELU",
            "compress": 2,
            "dilation_base": 2,
            "disable_norm_outer_blocks": 0,
            "kernel_size": 7,
            "residual_kernel_size": 3,
            "last_kernel_size": 3,
            "norm": "none",
            "pad_mode": "constant",
            "ratios": [8, 6, 5, 4],
            "true_skip": true
        },
        "quantizer": {
            "dimension": 16,
            "n_q": 8,
            "bins": 64,
            "input_dimension": 32,
            "output_dimension": 32
        },
        "transformer": {
            "d_model": 32,
            "num_heads": 4,
            "num_layers": 1,
            "causal": true,
            "layer_scale": 0.01,
            "context": 250,
            "conv_layout": true,
            "max_period": 10000,
            "gating": "none",
            "norm": "layer_norm",
            "positional_embedding": "rope",
            "dim_feedforward": 128,
            "input_dimension": 32,
            "output_dimensions": [32]
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Tensor name lists
// ---------------------------------------------------------------------------------------------

fn get_usize(cfg: &Value, key: &str) -> usize {
    cfg[key]
        .as_u64()
        .unwrap_or_else(|| panic!("config key {key} is not an unsigned integer: {}", cfg[key]))
        as usize
}

fn get_usize_or(cfg: &Value, key: &str, default: usize) -> usize {
    match &cfg[key] {
        Value::Null => default,
        v => v
            .as_u64()
            .unwrap_or_else(|| panic!("config key {key} is not an unsigned integer: {v}"))
            as usize,
    }
}

fn get_bool_or(cfg: &Value, key: &str, default: bool) -> bool {
    match &cfg[key] {
        Value::Null => default,
        v => v
            .as_bool()
            .unwrap_or_else(|| panic!("config key {key} is not a bool: {v}")),
    }
}

/// Hidden width of a gated feed-forward (`ActivationGating.__init__`, `moshi/modules/gating.py`):
/// `21 * dim / 8` when `dim_feedforward == 4 * dim`, else `2 * dim_feedforward / 3`.
pub fn gating_hidden(dim: usize, dim_feedforward: usize) -> usize {
    if dim_feedforward == 4 * dim {
        (21 * dim) / 8
    } else {
        (2 * dim_feedforward) / 3
    }
}

/// Names, dtypes and shapes of the LM checkpoint for an LM `config.json`, in the published
/// (stacked) layout, in the order of `LMModel.state_dict()`.
///
/// Derived from the Python `moshi` 0.2.x sources, for the keys the configs use:
/// - `moshi/models/lm.py`, `LMModel.__init__`: `emb.{q}` (`n_q` audio embeddings of `card + 1`
///   rows), `text_emb` (`text_card + 1` rows), `text_linear` (`text_card_out` or `text_card`
///   rows), `transformer`, `out_norm`, `depformer_in.{k}` (`max(schedule) + 1` linears with
///   `depformer_multi_linear`, else `dep_q`; one without it), `depformer_emb.{q}` (`dep_q - 1`),
///   `depformer_text_emb`, `depformer`, `extra_heads.{i}` (`extra_heads_num_heads` x
///   `extra_heads_dim`), `linears.{q}` (`dep_q`, `card` rows), `condition_provider`;
///   `loaders.get_moshi_lm` maps `demux_second_stream`, builds the conditioners, and the depformer
///   gets `weights_per_step = dep_q` with `depformer_weights_per_step`.
/// - `moshi/models/lm_utils.py`, `ScaledEmbedding`: `weight` is `[n, low_rank or dim]`;
///   `low_rank.weight` `[dim, low_rank]` with `low_rank`; `out1.weight` / `out2.weight`
///   `[dim, low_rank or dim]` with `demux_second_stream` (text embeddings only).
/// - `moshi/modules/transformer.py`: `StreamingTransformerLayer` has `self_attn`, `norm1`,
///   `norm2` (`create_norm_fn`: RMS norms have `alpha` `[1, 1, d]`, layer norms `weight` and
///   `bias`), `gating` (`gating.{k}` per weight set with `weights_per_step`) or
///   `linear1`/`linear2` without gating, `cross_attention` + `norm_cross` (always a LayerNorm)
///   with `cross_attention`, `layer_scale_{1,2}` when `layer_scale` is set.
///   `StreamingMultiheadAttention` keeps per-step `in_projs.{i}` / `out_projs.{i}`; its
///   `_load_hook` accepts the stacked `in_proj_weight` (`[mult * 3 * d, d]`) and
///   `out_proj.weight` (`[mult * d, d]`), which is what the published files hold.
/// - `moshi/modules/gating.py`: `gating.linear_in` `[2 * hidden, d]`, `linear_out`
///   `[d, hidden]`, see [`gating_hidden`].
/// - `moshi/conditioners/base.py`, `BaseConditioner`: `output_proj.weight` `[dim, cond dim]` and
///   `learnt_padding` `[1, 1, dim]`; `conditioners/text.py`, `LUTConditioner`: `embed.weight`
///   `[n_bins + 1, lut dim]`.
///
/// Dtypes follow the published TTS file: bf16, except `condition_provider.*`, kept f32 (the
/// loader keeps the condition provider in f32: 8 f32 tensors in the published file).
/// For a config without a depformer (`dep_q` 0, STT), this is also the layout that the Rust
/// `moshi` 0.6.4 `lm::LmModel::new` reads (`src/lm.rs`, `src/transformer.rs`).
pub fn lm_tensors(cfg: &Value) -> Vec<TensorSpec> {
    let bf16 = Dtype::BF16;
    let dim = get_usize(cfg, "dim");
    let n_q = get_usize(cfg, "n_q");
    let dep_q = get_usize(cfg, "dep_q");
    let card = get_usize(cfg, "card");
    let text_card = get_usize(cfg, "text_card");
    let text_card_out = get_usize_or(cfg, "text_card_out", text_card);
    let num_layers = get_usize(cfg, "num_layers");
    let hidden_scale = cfg["hidden_scale"].as_f64().unwrap_or(4.0);
    let dim_ff = (hidden_scale * dim as f64) as usize;
    let demux = get_bool_or(cfg, "demux_second_stream", false);
    let cross = get_bool_or(cfg, "cross_attention", false);
    let gating = cfg["gating"].as_str().unwrap_or("none") != "none";
    let norm = cfg["norm"].as_str().unwrap_or("layer_norm").to_string();
    let layer_scale = !cfg["layer_scale"].is_null();
    let ddim = get_usize_or(cfg, "depformer_dim", 256);
    let low_rank = match &cfg["depformer_low_rank_embeddings"] {
        Value::Null => None,
        v => Some(v.as_u64().expect("depformer_low_rank_embeddings") as usize),
    };
    let multi_linear = get_bool_or(cfg, "depformer_multi_linear", false);
    let per_step = get_bool_or(cfg, "depformer_weights_per_step", false);
    let schedule: Option<Vec<usize>> = cfg["depformer_weights_per_step_schedule"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_u64().unwrap() as usize).collect());
    let extra_heads = get_usize_or(cfg, "extra_heads_num_heads", 0);
    let extra_dim = get_usize_or(cfg, "extra_heads_dim", 6);

    let mut out = Vec::new();
    let mut push = |name: String, dtype: Dtype, shape: &[usize]| {
        out.push(TensorSpec::new(name, dtype, shape));
    };

    for q in 0..n_q {
        push(format!("emb.{q}.weight"), bf16, &[card + 1, dim]);
    }
    push("text_emb.weight".into(), bf16, &[text_card + 1, dim]);
    if demux {
        push("text_emb.out1.weight".into(), bf16, &[dim, dim]);
        push("text_emb.out2.weight".into(), bf16, &[dim, dim]);
    }
    push("text_linear.weight".into(), bf16, &[text_card_out, dim]);
    let main = TransformerShape {
        d: dim,
        layers: num_layers,
        weight_sets: 1,
        per_step_gating: false,
        ff: dim_ff,
        gating,
        norm: norm.clone(),
        cross_attention: cross,
        layer_scale,
    };
    for t in main.tensors("transformer", bf16) {
        out.push(t);
    }
    let mut push = |name: String, dtype: Dtype, shape: &[usize]| {
        out.push(TensorSpec::new(name, dtype, shape));
    };
    push_norm(&mut push, "out_norm", &norm, dim, bf16);

    let num_in = if multi_linear {
        match &schedule {
            Some(s) if !s.is_empty() => s.iter().max().unwrap() + 1,
            _ => dep_q,
        }
    } else {
        1
    };
    for k in 0..num_in {
        push(format!("depformer_in.{k}.weight"), bf16, &[ddim, dim]);
    }
    if dep_q > 0 {
        let emb_dim = low_rank.unwrap_or(ddim);
        for q in 0..dep_q - 1 {
            push(
                format!("depformer_emb.{q}.weight"),
                bf16,
                &[card + 1, emb_dim],
            );
            if let Some(r) = low_rank {
                push(
                    format!("depformer_emb.{q}.low_rank.weight"),
                    bf16,
                    &[ddim, r],
                );
            }
        }
        push(
            "depformer_text_emb.weight".into(),
            bf16,
            &[text_card + 1, emb_dim],
        );
        if let Some(r) = low_rank {
            push(
                "depformer_text_emb.low_rank.weight".into(),
                bf16,
                &[ddim, r],
            );
        }
        if demux {
            push(
                "depformer_text_emb.out1.weight".into(),
                bf16,
                &[ddim, emb_dim],
            );
            push(
                "depformer_text_emb.out2.weight".into(),
                bf16,
                &[ddim, emb_dim],
            );
        }
        let weight_sets = if per_step {
            match &schedule {
                Some(s) if !s.is_empty() => s.iter().max().unwrap() + 1,
                _ => dep_q,
            }
        } else {
            1
        };
        let dep_ff = get_usize_or(
            cfg,
            "depformer_dim_feedforward",
            (hidden_scale * ddim as f64) as usize,
        );
        // The depformer inherits the main transformer's keyword arguments unless a
        // `depformer_*` key overrides them (`LMModel.__init__`, `kwargs_dep`).
        let dep_gating = match cfg.get("depformer_gating") {
            None => gating,
            Some(v) => v.as_str().unwrap_or("none") != "none",
        };
        let dep = TransformerShape {
            d: ddim,
            layers: get_usize_or(cfg, "depformer_num_layers", num_layers),
            weight_sets,
            per_step_gating: per_step,
            ff: dep_ff,
            gating: dep_gating,
            norm: norm.clone(),
            cross_attention: false,
            layer_scale: match cfg.get("depformer_layer_scale") {
                None => layer_scale,
                Some(v) => !v.is_null(),
            },
        };
        for t in dep.tensors("depformer", bf16) {
            out.push(t);
        }
    }
    for i in 0..extra_heads {
        out.push(TensorSpec::new(
            format!("extra_heads.{i}.weight"),
            bf16,
            &[extra_dim, dim],
        ));
    }
    for q in 0..dep_q {
        out.push(TensorSpec::new(
            format!("linears.{q}.weight"),
            bf16,
            &[card, ddim],
        ));
    }
    if let Some(conds) = cfg["conditioners"].as_object() {
        for (name, c) in conds {
            let kind = c["type"].as_str().expect("conditioner type");
            let sub = &c[kind];
            let cdim = get_usize(sub, "dim");
            let p = format!("condition_provider.conditioners.{name}");
            out.push(TensorSpec::new(
                format!("{p}.learnt_padding"),
                Dtype::F32,
                &[1, 1, dim],
            ));
            out.push(TensorSpec::new(
                format!("{p}.output_proj.weight"),
                Dtype::F32,
                &[dim, cdim],
            ));
            match kind {
                "lut" => out.push(TensorSpec::new(
                    format!("{p}.embed.weight"),
                    Dtype::F32,
                    &[get_usize(sub, "n_bins") + 1, cdim],
                )),
                "tensor" => {}
                other => panic!("unknown conditioner type {other}"),
            }
        }
    }
    out
}

fn push_norm(
    push: &mut impl FnMut(String, Dtype, &[usize]),
    prefix: &str,
    norm: &str,
    d: usize,
    dtype: Dtype,
) {
    match norm {
        "rms_norm" | "rms_norm_f32" => push(format!("{prefix}.alpha"), dtype, &[1, 1, d]),
        "layer_norm" | "layer_norm_f32" => {
            push(format!("{prefix}.weight"), dtype, &[d]);
            push(format!("{prefix}.bias"), dtype, &[d]);
        }
        other => panic!("unsupported norm {other}"),
    }
}

/// Shape of a `StreamingTransformer` (`moshi/modules/transformer.py`), enough to name its
/// tensors in the published layout.
struct TransformerShape {
    d: usize,
    layers: usize,
    /// `mult` of `StreamingMultiheadAttention`: distinct weight sets per step (1 if none).
    weight_sets: usize,
    /// Gating as a `ModuleList` `gating.{k}` (`weights_per_step`).
    per_step_gating: bool,
    ff: usize,
    gating: bool,
    norm: String,
    cross_attention: bool,
    layer_scale: bool,
}

impl TransformerShape {
    fn tensors(&self, prefix: &str, dtype: Dtype) -> Vec<TensorSpec> {
        let d = self.d;
        let m = self.weight_sets;
        let mut out = Vec::new();
        let mut push = |name: String, dtype: Dtype, shape: &[usize]| {
            out.push(TensorSpec::new(name, dtype, shape));
        };
        for l in 0..self.layers {
            let p = format!("{prefix}.layers.{l}");
            push(
                format!("{p}.self_attn.in_proj_weight"),
                dtype,
                &[m * 3 * d, d],
            );
            push(format!("{p}.self_attn.out_proj.weight"), dtype, &[m * d, d]);
            push_norm(&mut push, &format!("{p}.norm1"), &self.norm, d, dtype);
            push_norm(&mut push, &format!("{p}.norm2"), &self.norm, d, dtype);
            if self.gating {
                let h = gating_hidden(d, self.ff);
                if self.per_step_gating {
                    for k in 0..m {
                        push(
                            format!("{p}.gating.{k}.linear_in.weight"),
                            dtype,
                            &[2 * h, d],
                        );
                        push(format!("{p}.gating.{k}.linear_out.weight"), dtype, &[d, h]);
                    }
                } else {
                    push(format!("{p}.gating.linear_in.weight"), dtype, &[2 * h, d]);
                    push(format!("{p}.gating.linear_out.weight"), dtype, &[d, h]);
                }
            } else {
                push(format!("{p}.linear1.weight"), dtype, &[self.ff, d]);
                push(format!("{p}.linear2.weight"), dtype, &[d, self.ff]);
            }
            if self.cross_attention {
                push(
                    format!("{p}.cross_attention.in_proj_weight"),
                    dtype,
                    &[3 * d, d],
                );
                push(
                    format!("{p}.cross_attention.out_proj.weight"),
                    dtype,
                    &[d, d],
                );
                // `norm_cross` is always an `nn.LayerNorm`.
                push(format!("{p}.norm_cross.weight"), dtype, &[d]);
                push(format!("{p}.norm_cross.bias"), dtype, &[d]);
            }
            if self.layer_scale {
                push(format!("{p}.layer_scale_1.scale"), dtype, &[d]);
                push(format!("{p}.layer_scale_2.scale"), dtype, &[d]);
            }
        }
        out
    }
}

/// Names, dtypes (all f32) and shapes of a Mimi checkpoint for a Mimi config (the
/// [`mimi_config`] form), in the published layout, in the order of `MimiModel.state_dict()`.
///
/// Derived from the Python `moshi` 0.2.x sources:
/// - `moshi/modules/seanet.py`: `SEANetEncoder` is `model.0` conv(`channels` -> `n_filters`,
///   `kernel_size`), then per ratio of `reversed(ratios)`: `n_residual_layers`
///   `SEANetResnetBlock`s, an ELU and a conv(`c` -> `2c`, `2 * ratio`); then ELU and
///   conv(-> `dimension`, `last_kernel_size`). `SEANetDecoder` mirrors it with
///   `convtr` transposed convs (weight `[in, out, k]`) over `ratios`. A resnet block's convs are
///   `block.1` (`c` -> `c / compress`, `residual_kernel_size`) and `block.3` (-> `c`, 1); with
///   `true_skip` the shortcut has no weights. Convs are `StreamingConv1d` (`conv.conv.*`,
///   `moshi/modules/conv.py`) with bias, no weight norm (`norm` "none").
/// - `moshi/modules/transformer.py`, `ProjectedTransformer` (no input/output projection when
///   the dimensions match) around a `StreamingTransformer` with layer norms, plain
///   `linear1`/`linear2` feed-forward (`gating` "none") and `layer_scale_{1,2}.scale`;
///   attention stacked as `in_proj_weight` / `out_proj.weight` (the layout the published file
///   and the Rust `moshi` crate's `mimi` use; Python's `_load_hook` maps it).
/// - `moshi/quantization/vq.py`, `SplitResidualVectorQuantizer`: `rvq_first` (1 semantic
///   codebook) and `rvq_rest` (`n_q - 1`), each with `input_proj` / `output_proj` 1x1 convs and
///   `vq.layers.{i}._codebook.{_initialized, cluster_usage, embedding_sum}`
///   (`moshi/quantization/core_vq.py`, `EuclideanCodebook` buffers).
/// - `moshi/models/compression.py`, `MimiModel`: `downsample` (`ConvDownsample1d`, learnt,
///   stride = encoder rate / frame rate) and `upsample` (`ConvTrUpsample1d`, channel-wise).
pub fn mimi_tensors(cfg: &Value) -> Vec<TensorSpec> {
    let f32 = Dtype::F32;
    let s = &cfg["seanet"];
    let channels = get_usize(s, "channels");
    let dimension = get_usize(s, "dimension");
    let nf = get_usize(s, "n_filters");
    let n_res = get_usize(s, "n_residual_layers");
    let compress = get_usize(s, "compress");
    let kernel = get_usize(s, "kernel_size");
    let res_kernel = get_usize(s, "residual_kernel_size");
    let last_kernel = get_usize(s, "last_kernel_size");
    assert!(
        get_bool_or(s, "true_skip", true),
        "only true_skip seanets are supported"
    );
    let ratios: Vec<usize> = s["ratios"]
        .as_array()
        .expect("seanet.ratios")
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();

    let mut out = Vec::new();
    let mut push = |name: String, shape: &[usize]| out.push(TensorSpec::new(name, f32, shape));

    // Encoder.
    let conv = |push: &mut dyn FnMut(String, &[usize]), p: String, i: usize, o: usize, k: usize| {
        push(format!("{p}.conv.conv.weight"), &[o, i, k]);
        push(format!("{p}.conv.conv.bias"), &[o]);
    };
    let resblock = |push: &mut dyn FnMut(String, &[usize]), p: String, c: usize| {
        let h = c / compress;
        push(format!("{p}.block.1.conv.conv.weight"), &[h, c, res_kernel]);
        push(format!("{p}.block.1.conv.conv.bias"), &[h]);
        push(format!("{p}.block.3.conv.conv.weight"), &[c, h, 1]);
        push(format!("{p}.block.3.conv.conv.bias"), &[c]);
    };
    let mut idx = 0;
    conv(
        &mut push,
        format!("encoder.model.{idx}"),
        channels,
        nf,
        kernel,
    );
    idx += 1;
    let mut mult = 1;
    for &ratio in ratios.iter().rev() {
        for _ in 0..n_res {
            resblock(&mut push, format!("encoder.model.{idx}"), mult * nf);
            idx += 1;
        }
        idx += 1; // ELU
        conv(
            &mut push,
            format!("encoder.model.{idx}"),
            mult * nf,
            mult * nf * 2,
            2 * ratio,
        );
        idx += 1;
        mult *= 2;
    }
    idx += 1; // ELU
    conv(
        &mut push,
        format!("encoder.model.{idx}"),
        mult * nf,
        dimension,
        last_kernel,
    );

    // Decoder.
    let mut idx = 0;
    conv(
        &mut push,
        format!("decoder.model.{idx}"),
        dimension,
        mult * nf,
        kernel,
    );
    idx += 1;
    for &ratio in &ratios {
        idx += 1; // ELU
        let p = format!("decoder.model.{idx}");
        push(
            format!("{p}.convtr.convtr.weight"),
            &[mult * nf, mult * nf / 2, 2 * ratio],
        );
        push(format!("{p}.convtr.convtr.bias"), &[mult * nf / 2]);
        idx += 1;
        for _ in 0..n_res {
            resblock(&mut push, format!("decoder.model.{idx}"), mult * nf / 2);
            idx += 1;
        }
        mult /= 2;
    }
    idx += 1; // ELU
    conv(
        &mut push,
        format!("decoder.model.{idx}"),
        nf,
        channels,
        last_kernel,
    );

    // Transformers.
    let t = &cfg["transformer"];
    let d = get_usize(t, "d_model");
    let tshape = TransformerShape {
        d,
        layers: get_usize(t, "num_layers"),
        weight_sets: 1,
        per_step_gating: false,
        ff: get_usize(t, "dim_feedforward"),
        gating: t["gating"].as_str().unwrap_or("none") != "none",
        norm: t["norm"].as_str().unwrap_or("layer_norm").to_string(),
        cross_attention: false,
        layer_scale: !t["layer_scale"].is_null(),
    };
    let input_dim = get_usize(t, "input_dimension");
    for which in ["encoder_transformer", "decoder_transformer"] {
        out.extend(tshape.tensors(&format!("{which}.transformer"), f32));
        if input_dim != d {
            out.push(TensorSpec::new(
                format!("{which}.input_proj.weight"),
                f32,
                &[d, input_dim],
            ));
        }
        for (i, od) in t["output_dimensions"]
            .as_array()
            .expect("output_dimensions")
            .iter()
            .enumerate()
        {
            let od = od.as_u64().unwrap() as usize;
            if od != d {
                out.push(TensorSpec::new(
                    format!("{which}.output_projs.{i}.weight"),
                    f32,
                    &[od, d],
                ));
            }
        }
    }

    // Quantizer.
    let q = &cfg["quantizer"];
    let qdim = get_usize(q, "dimension");
    let n_q = get_usize(q, "n_q");
    let bins = get_usize(q, "bins");
    let qin = get_usize_or(q, "input_dimension", qdim);
    let qout = get_usize_or(q, "output_dimension", qdim);
    for (which, layers) in [("rvq_first", 1), ("rvq_rest", n_q - 1)] {
        let p = format!("quantizer.{which}");
        if qin != qdim {
            out.push(TensorSpec::new(
                format!("{p}.input_proj.weight"),
                f32,
                &[qdim, qin, 1],
            ));
        }
        if qout != qdim {
            out.push(TensorSpec::new(
                format!("{p}.output_proj.weight"),
                f32,
                &[qout, qdim, 1],
            ));
        }
        for l in 0..layers {
            let c = format!("{p}.vq.layers.{l}._codebook");
            out.push(TensorSpec::new(format!("{c}._initialized"), f32, &[1]));
            out.push(TensorSpec::new(format!("{c}.cluster_usage"), f32, &[bins]));
            out.push(TensorSpec::new(
                format!("{c}.embedding_sum"),
                f32,
                &[bins, qdim],
            ));
        }
    }

    // Resampling between the encoder rate and the frame rate.
    let hop: usize = ratios.iter().product();
    let sample_rate = cfg["sample_rate"].as_f64().expect("sample_rate");
    let frame_rate = cfg["frame_rate"].as_f64().expect("frame_rate");
    let encoder_rate = sample_rate / hop as f64;
    if encoder_rate != frame_rate {
        let stride = (encoder_rate / frame_rate) as usize;
        out.push(TensorSpec::new(
            "downsample.conv.conv.conv.weight",
            f32,
            &[dimension, dimension, 2 * stride],
        ));
        out.push(TensorSpec::new(
            "upsample.convtr.convtr.convtr.weight",
            f32,
            &[dimension, 1, 2 * stride],
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Repositories
// ---------------------------------------------------------------------------------------------

/// Pretty-printed JSON (2-space indent, like the published files) with the keys sorted at every
/// level, so that the bytes do not depend on whether some dependency switches on serde_json's
/// `preserve_order` feature (which changes the iteration order of `serde_json::Map`).
pub fn json_bytes(v: &Value) -> Vec<u8> {
    struct Sorted<'a>(&'a Value);
    impl serde::Serialize for Sorted<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::{SerializeMap, SerializeSeq};
            match self.0 {
                Value::Object(m) => {
                    let mut keys: Vec<&String> = m.keys().collect();
                    keys.sort();
                    let mut map = s.serialize_map(Some(keys.len()))?;
                    for k in keys {
                        map.serialize_entry(k, &Sorted(&m[k]))?;
                    }
                    map.end()
                }
                Value::Array(a) => {
                    let mut seq = s.serialize_seq(Some(a.len()))?;
                    for x in a {
                        seq.serialize_element(&Sorted(x))?;
                    }
                    seq.end()
                }
                other => other.serialize(s),
            }
        }
    }
    let mut s = serde_json::to_string_pretty(&Sorted(v)).expect("json");
    s.push('\n');
    s.into_bytes()
}

/// Seeds of the checkpoints (any change changes every fixture byte).
const SEED_TTS_LM: u64 = 0x7757_0001;
const SEED_STT_LM: u64 = 0x5757_0002;
const SEED_MIMI: u64 = 0x3131_0003;
const SEED_VOICES: u64 = 0x7010_0004;

/// The tiny Mimi checkpoint of [`mimi_config`] (the same bytes in both repos, as the published
/// TTS and STT repos carry the same Mimi), its values scaled by [`mimi_value_scale`].
pub fn mimi_safetensors() -> Vec<u8> {
    safetensors_from_values(&mimi_tensors(&mimi_config()), &[], &|spec| {
        let scale = mimi_value_scale(spec);
        tensor_values(&spec.name, spec.numel(), SEED_MIMI)
            .into_iter()
            .map(|v| v * scale)
            .collect()
    })
}

/// Gain of the decoder's last convolution (to one channel, the waveform), below the others so
/// that the tiny Mimi's output stays around 0.1 RMS, clear of the clipping at ±1.
pub const MIMI_OUTPUT_GAIN: f32 = 0.1;

/// How much the tiny Mimi scales each tensor's uniform `[-0.1, 0.1)` draw, so that the codec
/// carries information: different codes give clearly different audio, and different audio gives
/// different codes (`tests/tiny_models.rs` checks both, `tools/fixtures/check_tiny_repos.py`
/// does with the Python reference).
///
/// With every weight in `[-0.1, 0.1)`, each of the ~20 layers shrinks its input (a 4-channel
/// convolution sums a dozen small products), so the biases alone set the output: the waveform
/// hardly depended on the codes and the codes hardly on the audio. Scaled here as networks are
/// initialised (LeCun uniform), each layer keeps the scale of its input:
/// - weights: uniform in `±sqrt(3 / fan_in)` (unit gain), `fan_in` being the inputs summed for
///   one output: `in * kernel` for a convolution `[out, in, kernel]` (the quantizer projections
///   are convolutions of kernel 1), `in` for a linear `[out, in]` (the transformer's, including
///   the stacked `in_proj_weight`), and `2 * in` for the
///   decoder's transposed convolutions `[in, out, 2 * stride]` (each output sees 2 taps of each
///   input; the upsampling one is channel-wise, so 2);
/// - the decoder's last convolution gets [`MIMI_OUTPUT_GAIN`] on top;
/// - convolution biases: `±0.01`, small next to the signal;
/// - codebooks (`embedding_sum`): unit variance, the scale of the encoder's latents, so that
///   the nearest code changes with the audio;
/// - unchanged: norm gains and biases, layer scales, `cluster_usage`, `_initialized`.
pub fn mimi_value_scale(spec: &TensorSpec) -> f32 {
    let leaf = spec.name.rsplit('.').next().unwrap_or("");
    let parent = spec.name.rsplit('.').nth(1).unwrap_or("");
    let draw = 0.1f32;
    let unit_gain = |fan_in: usize| (3.0 / fan_in as f32).sqrt() / draw;
    match (leaf, spec.shape.as_slice()) {
        ("embedding_sum", _) => 3f32.sqrt() / draw,
        ("bias", _) if !parent.contains("norm") => 0.1,
        ("weight" | "in_proj_weight", &[_, input]) => unit_gain(input),
        ("weight", &[input, _, _]) if parent == "convtr" => {
            let channel_wise = spec.name.starts_with("upsample.");
            unit_gain(if channel_wise { 2 } else { 2 * input })
        }
        ("weight", &[out, input, kernel]) => {
            let gain = if out == 1 && spec.name.starts_with("decoder.") {
                MIMI_OUTPUT_GAIN
            } else {
                1.0
            };
            gain * unit_gain(input * kernel)
        }
        _ => 1.0,
    }
}

/// The tiny TTS LM checkpoint of [`tts_config`].
pub fn tts_lm_safetensors() -> Vec<u8> {
    tensors_to_safetensors(&lm_tensors(&tts_config()), SEED_TTS_LM, &[])
}

/// The tiny STT LM checkpoint of [`stt_config`].
pub fn stt_lm_safetensors() -> Vec<u8> {
    tensors_to_safetensors(&lm_tensors(&stt_config()), SEED_STT_LM, &[])
}

fn model_card(title: &str) -> Vec<u8> {
    format!(
        "---\nlicense: cc-by-4.0\n---\n# {title}\n\nA tiny random-weight model in the file formats \
         of Kyutai's published checkpoints, built by `tests/support/tiny.rs` for tests.\n"
    )
    .into_bytes()
}

fn gitattributes() -> Vec<u8> {
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.model filter=lfs diff=lfs merge=lfs -text\n"
        .to_vec()
}

/// A tiny TTS repo shaped like `kyutai/tts-1.6b-en_fr`: `config.json` ([`tts_config`]), the LM
/// ([`TTS_MOSHI_NAME`], bf16 + f32 conditioners), the Mimi ([`TTS_MIMI_NAME`], f32), its
/// `mimi_config.json`, the tokenizer ([`TTS_TOKENIZER_NAME`], the bytes of [`TINY_SPM`]), plus a
/// `README.md` and `.gitattributes` that loaders must not need.
pub fn tts_repo() -> Vec<(String, Vec<u8>)> {
    vec![
        (".gitattributes".into(), gitattributes()),
        ("README.md".into(), model_card("tiny tts (en, fr)")),
        ("config.json".into(), json_bytes(&tts_config())),
        (TTS_MOSHI_NAME.into(), tts_lm_safetensors()),
        (TTS_MIMI_NAME.into(), mimi_safetensors()),
        (MIMI_CONFIG_NAME.into(), json_bytes(&mimi_config())),
        (TTS_TOKENIZER_NAME.into(), TINY_SPM.to_vec()),
    ]
}

/// [`tts_config`] without the `cfg` conditioner (a model not trained with CFG distillation,
/// which takes direct, two-pass classifier-free guidance): `fuser.sum` is `["control"]`.
pub fn tts_config_direct_cfg() -> Value {
    let mut cfg = tts_config();
    cfg["conditioners"]
        .as_object_mut()
        .expect("conditioners")
        .remove("cfg");
    cfg["fuser"]["sum"] = json!(["control"]);
    cfg
}

/// A tiny TTS repo like [`tts_repo`] but for [`tts_config_direct_cfg`] (its own LM weights,
/// the same Mimi and tokenizer).
pub fn tts_repo_direct_cfg() -> Vec<(String, Vec<u8>)> {
    let lm = tensors_to_safetensors(&lm_tensors(&tts_config_direct_cfg()), SEED_TTS_LM, &[]);
    vec![
        ("config.json".into(), json_bytes(&tts_config_direct_cfg())),
        (TTS_MOSHI_NAME.into(), lm),
        (TTS_MIMI_NAME.into(), mimi_safetensors()),
        (MIMI_CONFIG_NAME.into(), json_bytes(&mimi_config())),
        (TTS_TOKENIZER_NAME.into(), TINY_SPM.to_vec()),
    ]
}

/// [`tts_config`] for a model voiced by an audio prefix, as `kyutai/tts-0.75b-en-public` is: no
/// conditioners (no `speaker_wavs`, `cfg` or `control`), no cross-attention, empty fuser.
pub fn tts_config_prefix() -> Value {
    let mut cfg = tts_config();
    cfg["conditioners"] = json!({});
    cfg["fuser"] = json!({
        "cross_attention_pos_emb": false,
        "cross_attention_pos_emb_scale": 1,
        "sum": [],
        "prepend": [],
        "cross": []
    });
    cfg["cross_attention"] = json!(false);
    cfg
}

/// A tiny TTS repo like [`tts_repo`] but for [`tts_config_prefix`].
pub fn tts_repo_prefix() -> Vec<(String, Vec<u8>)> {
    let lm = tensors_to_safetensors(&lm_tensors(&tts_config_prefix()), SEED_TTS_LM, &[]);
    vec![
        ("config.json".into(), json_bytes(&tts_config_prefix())),
        (TTS_MOSHI_NAME.into(), lm),
        (TTS_MIMI_NAME.into(), mimi_safetensors()),
        (MIMI_CONFIG_NAME.into(), json_bytes(&mimi_config())),
        (TTS_TOKENIZER_NAME.into(), TINY_SPM.to_vec()),
    ]
}

/// A tiny STT repo shaped like `kyutai/stt-1b-en_fr-candle`: `config.json` ([`stt_config`], no
/// `moshi_name`), `model.safetensors` (bf16, the names the Rust `moshi` 0.6.4 `lm::LmModel`
/// reads, with 4 extra heads), `mimi-pytorch-e351c8d8@125.safetensors` (the tiny Mimi),
/// `mimi_config.json`, the tokenizer ([`STT_TOKENIZER_NAME`]), `README.md`, `.gitattributes`.
pub fn stt_repo() -> Vec<(String, Vec<u8>)> {
    vec![
        (".gitattributes".into(), gitattributes()),
        ("README.md".into(), model_card("tiny stt (en, fr)")),
        ("config.json".into(), json_bytes(&stt_config())),
        (STT_MOSHI_NAME.into(), stt_lm_safetensors()),
        (STT_MIMI_NAME.into(), mimi_safetensors()),
        (MIMI_CONFIG_NAME.into(), json_bytes(&mimi_config())),
        (STT_TOKENIZER_NAME.into(), TINY_SPM.to_vec()),
    ]
}

/// File name of a voice embedding in the voices repo: `<voice>.<sig>@<epoch>.safetensors`.
pub fn voice_file(voice: &str) -> String {
    format!("{voice}.{TTS_MODEL_SIG}@{TTS_MODEL_EPOCH}.safetensors")
}

/// One voice embedding file as in `kyutai/tts-voices`: a single f32 tensor `speaker_wavs`
/// `[1, dim, 125]` (values from [`voice_values`]), safetensors metadata
/// `{"epoch": "240", "sig": "1e68beda"}`.
pub fn voice_safetensors(voice: &str, dim: usize) -> Vec<u8> {
    let spec = TensorSpec::new("speaker_wavs", Dtype::F32, &[1, dim, VOICE_FRAMES]);
    safetensors_from_values(
        &[spec],
        &[
            ("sig", TTS_MODEL_SIG),
            ("epoch", &TTS_MODEL_EPOCH.to_string()),
        ],
        &|_| voice_values(voice, dim),
    )
}

/// The `[dim, 125]` values of a voice embedding: per channel, a level in `[-1, 1)` held over the
/// 125 frames (the voice's "timbre") plus a variation in `[-0.1, 0.1)` per frame, from a stream
/// seeded by the voice's name.
///
/// The levels are what tells voices apart: the model's cross-attention averages over the
/// frames, so voices of zero-mean noise alone (as plain [`tensor_values`] would give) all look
/// alike to it, and the tiny TTS spoke the same audio with any voice.
pub fn voice_values(voice: &str, dim: usize) -> Vec<f32> {
    let mut rng = SplitMix64::new(SEED_VOICES ^ fnv1a(voice.as_bytes()));
    let levels: Vec<f32> = (0..dim).map(|_| 10.0 * rng.next_weight()).collect();
    levels
        .iter()
        .flat_map(|&level| {
            (0..VOICE_FRAMES)
                .map(|_| level + rng.next_weight())
                .collect::<Vec<f32>>()
        })
        .collect()
}

/// A tiny voices repo shaped like `kyutai/tts-voices`: the embeddings of [`VOICE_NAMES`]
/// (`[1, dim, 125]`, see [`voice_safetensors`]; use [`TTS_SPEAKER_DIM`] for the tiny TTS), a
/// `README.md`, and the source audio of the first voice (a short 24 kHz WAV named like the voice
/// itself, as in the real repo): neither should ever be fetched.
pub fn voices_repo(dim: usize) -> Vec<(String, Vec<u8>)> {
    let mut files = vec![
        (".gitattributes".into(), gitattributes()),
        (
            "README.md".into(),
            b"# tiny voices\n\nVoice embeddings for the tiny TTS; folders as in kyutai/tts-voices.\n"
                .to_vec(),
        ),
        (VOICE_NAMES[0].to_string(), tiny_wav(240, 24_000)),
    ];
    for voice in VOICE_NAMES {
        files.push((voice_file(voice), voice_safetensors(voice, dim)));
    }
    files
}

/// The voice of the audio-prefix model's tests (`tiny::tts_repo_prefix`): 0.8 s of
/// [`tiny_wav`] at 24 kHz (no resampling, so the reference's exact codes), 10 frames, of which
/// the prefix keeps 8 (the reference's `get_prefix` drops the last 2).
pub fn prefix_voice_wav() -> Vec<u8> {
    tiny_wav(19_200, 24_000)
}

/// Another prefix voice, of the same length but another pitch (a triangle wave of period
/// `period` samples), to tell voices apart.
pub fn prefix_voice_wav_with_period(period: usize) -> Vec<u8> {
    tone_wav(19_200, 24_000, period)
}

/// A mono 16-bit PCM WAV of `samples` samples (a quiet deterministic tone).
pub fn tiny_wav(samples: usize, sample_rate: u32) -> Vec<u8> {
    tone_wav(samples, sample_rate, 48)
}

/// A mono 16-bit PCM WAV of `samples` samples: a triangle wave of `period` samples (even) and
/// peak 3072 (-20 dBFS).
pub fn tone_wav(samples: usize, sample_rate: u32, period: usize) -> Vec<u8> {
    let data_len = (samples * 2) as u32;
    let mut w = Vec::with_capacity(44 + samples * 2);
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data_len).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes()); // PCM
    w.extend_from_slice(&1u16.to_le_bytes()); // mono
    w.extend_from_slice(&sample_rate.to_le_bytes());
    w.extend_from_slice(&(sample_rate * 2).to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..samples {
        // A triangle wave, integer arithmetic only.
        let (phase, half) = ((i % period) as i32, (period / 2) as i32);
        let v = if phase < half {
            phase - half / 2
        } else {
            3 * half / 2 - phase
        } * 256
            * 24
            / half;
        w.extend_from_slice(&(v as i16).to_le_bytes());
    }
    w
}

// ---------------------------------------------------------------------------------------------
// Bytes
// ---------------------------------------------------------------------------------------------

/// splitmix64: tiny, fast, good enough for test weights.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[-0.1, 0.1)`, a multiple of 2^-24 * 0.2.
    pub fn next_weight(&mut self) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        unit * 0.2 - 0.1
    }
}

/// 64-bit FNV-1a, to give each tensor its own stream.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `f32` -> `bf16` bits, rounding to nearest even (what `torch.Tensor.to(torch.bfloat16)` does).
pub fn f32_to_bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x0040) as u16;
    }
    let round = 0x7FFF + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

/// The values of one tensor: uniform in `[-0.1, 0.1)` from a stream seeded by `seed` and the
/// tensor name, except where a real checkpoint cannot hold such values:
/// - norm gains (`*.alpha`, `*norm*.weight`) are `1 + u`, so activations keep their scale;
/// - Mimi codebooks: `_initialized` is 1 and `cluster_usage` is `1 + u` (the codebook divides
///   `embedding_sum` by it).
pub fn tensor_values(name: &str, numel: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed ^ fnv1a(name.as_bytes()));
    let leaf = name.rsplit('.').next().unwrap_or(name);
    let parent = name.rsplit('.').nth(1).unwrap_or("");
    let gain = leaf == "alpha" || (leaf == "weight" && parent.contains("norm"));
    if leaf == "_initialized" {
        return vec![1.0; numel];
    }
    let offset = if gain || leaf == "cluster_usage" {
        1.0
    } else {
        0.0
    };
    (0..numel).map(|_| offset + rng.next_weight()).collect()
}

fn encode_values(values: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::BF16 => values
            .iter()
            .flat_map(|v| f32_to_bf16_bits(*v).to_le_bytes())
            .collect(),
        other => panic!("tiny fixtures write F32 and BF16 only, not {other:?}"),
    }
}

/// A safetensors file of random tensors (see [`tensor_values`]), no metadata.
pub fn safetensors_bytes(tensors: &[(&str, Dtype, &[usize])], seed: u64) -> Vec<u8> {
    safetensors_bytes_with_metadata(tensors, seed, &[])
}

/// A safetensors file of random tensors with `__metadata__` entries.
pub fn safetensors_bytes_with_metadata(
    tensors: &[(&str, Dtype, &[usize])],
    seed: u64,
    metadata: &[(&str, &str)],
) -> Vec<u8> {
    let specs: Vec<TensorSpec> = tensors
        .iter()
        .map(|(n, d, s)| TensorSpec::new(*n, *d, s))
        .collect();
    tensors_to_safetensors(&specs, seed, metadata)
}

/// Serializes tensor specs (values from [`tensor_values`]) to safetensors bytes.
///
/// The layout is the one the `safetensors` crate's `serialize` (and so Python's `save_file`)
/// writes: tensors sorted by descending dtype then name, data packed in that order, header
/// padded with spaces to a multiple of 8. The header is written here rather than by `serialize`
/// because `serialize` takes the metadata as a `HashMap`, whose order (and so the bytes) would
/// change from one call to the next; here metadata keys are sorted.
pub fn tensors_to_safetensors(
    specs: &[TensorSpec],
    seed: u64,
    metadata: &[(&str, &str)],
) -> Vec<u8> {
    safetensors_from_values(specs, metadata, &|spec| {
        tensor_values(&spec.name, spec.numel(), seed)
    })
}

/// Serializes tensor specs to safetensors bytes (see [`tensors_to_safetensors`] for the
/// layout), with the values `values(spec)` gives for each.
pub fn safetensors_from_values(
    specs: &[TensorSpec],
    metadata: &[(&str, &str)],
    values: &dyn Fn(&TensorSpec) -> Vec<f32>,
) -> Vec<u8> {
    let mut order: Vec<&TensorSpec> = specs.iter().collect();
    order.sort_by(|a, b| b.dtype.cmp(&a.dtype).then(a.name.cmp(&b.name)));
    for w in order.windows(2) {
        assert!(w[0].name != w[1].name, "duplicate tensor {}", w[0].name);
    }

    let mut header = String::from("{");
    let mut first = true;
    if !metadata.is_empty() {
        let mut meta: Vec<(&str, &str)> = metadata.to_vec();
        meta.sort();
        header.push_str("\"__metadata__\":{");
        for (i, (k, v)) in meta.iter().enumerate() {
            if i > 0 {
                header.push(',');
            }
            header.push_str(&serde_json::to_string(k).unwrap());
            header.push(':');
            header.push_str(&serde_json::to_string(v).unwrap());
        }
        header.push('}');
        first = false;
    }
    let mut data = Vec::new();
    for spec in order {
        let values = values(spec);
        assert_eq!(values.len(), spec.numel(), "{}", spec.name);
        let bytes = encode_values(&values, spec.dtype);
        let start = data.len();
        data.extend_from_slice(&bytes);
        if !first {
            header.push(',');
        }
        first = false;
        let shape: Vec<String> = spec.shape.iter().map(|d| d.to_string()).collect();
        header.push_str(&format!(
            "{}:{{\"dtype\":{},\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            serde_json::to_string(&spec.name).unwrap(),
            serde_json::to_string(&spec.dtype).unwrap(),
            shape.join(","),
            start,
            data.len()
        ));
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + data.len());
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&data);
    out
}

/// `size` deterministic pseudo-random bytes (splitmix64, 8 bytes per step): fast enough for
/// files of hundreds of MB, and different for every `seed`.
pub fn big_file(size: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    let mut out = vec![0u8; size];
    let mut chunks = out.chunks_exact_mut(8);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    let rest = chunks.into_remainder();
    let last = rng.next_u64().to_le_bytes();
    let n = rest.len();
    rest.copy_from_slice(&last[..n]);
    out
}
