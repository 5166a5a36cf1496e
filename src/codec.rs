//! Mimi, Kyutai's 24 kHz neural audio codec, built from a repository's files.
//!
//! The `moshi` crate's `mimi::load` hard-codes the standard Mimi. Repositories may instead name a
//! Mimi config JSON (`mimi_config_name` in `config.json`, the dict Python's `get_mimi` takes:
//! `sample_rate`, `channels`, `frame_rate`, `seanet`, `quantizer`, `transformer`); this module
//! starts from the standard config and applies every key the JSON gives, so that both the
//! public checkpoints and smaller codecs of the same architecture load. Shared by speech-to-text
//! and text-to-speech.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_nn::var_builder::SimpleBackend;
use moshi::mimi::{Config, Mimi};
use serde_json::Value;

use crate::error::MoshiError;

/// Samples per second of every Kyutai model's audio.
pub const SAMPLE_RATE: u32 = 24_000;

/// The candle device for a configured [`Device`](crate::models::Device). A GPU that cannot be
/// used is a [`MoshiError::DeviceUnavailable`] that says why (no cargo feature in this build,
/// no driver, no device), never a silent CPU fallback and never a panic.
///
/// One limit is outside this crate's reach: candle 0.9 links the CUDA driver library at build
/// time (cudarc's `dynamic-linking`), so a `cuda` build started on a machine without any NVIDIA
/// driver stops in the system loader (`libcuda.so.1: cannot open shared object file`) before
/// this function can run. With the driver library present but unusable (no GPU, a driver too
/// old for the toolkit, the toolkit's stub library), the error comes from here.
pub fn candle_device(device: crate::models::Device) -> Result<Device, MoshiError> {
    use crate::models::Device as D;
    let unavailable =
        |reason: String, source: Option<candle_core::Error>| MoshiError::DeviceUnavailable {
            device: device.to_string(),
            reason,
            source: source.map(|e| std::sync::Arc::new(e) as crate::error::SharedSource),
        };
    let not_built = |gpu: &str, feature: &str| {
        unavailable(
            format!(
                "this build has no {gpu} support; rebuild with `--features {feature}` (see the \
                 README, section GPU), or use the CPU (`--device cpu`)"
            ),
            None,
        )
    };
    match device {
        D::Cpu => Ok(Device::Cpu),
        D::Cuda(_) if !candle_core::utils::cuda_is_available() => Err(not_built("CUDA", "cuda")),
        D::Cuda(ordinal) => Device::new_cuda(ordinal).map_err(|e| {
            unavailable(
                format!(
                    "the NVIDIA CUDA driver could not start GPU {ordinal} ({}); install the \
                     NVIDIA driver, at least as new as the CUDA toolkit of this build (R580 for \
                     the CUDA 13.0 of tools/setup-cuda.sh), check that `nvidia-smi` lists the \
                     GPU, or use the CPU (`--device cpu`)",
                    message(&e)
                ),
                Some(e),
            )
        }),
        D::Metal(_) if !candle_core::utils::metal_is_available() => {
            Err(not_built("Metal", "metal"))
        }
        D::Metal(ordinal) => Device::new_metal(ordinal).map_err(|e| {
            unavailable(
                format!(
                    "Metal could not start GPU {ordinal} ({}); use the CPU (`--device cpu`)",
                    message(&e)
                ),
                Some(e),
            )
        }),
    }
}

/// A candle error's message without the backtrace candle appends when `RUST_BACKTRACE` is set,
/// so that the error stays one line.
fn message(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => message(inner),
        e => e.to_string(),
    }
}

/// Loads Mimi from its safetensors `weights`, configured by `config_json` when the repository has
/// one (else the standard Mimi), with `num_codebooks` codebooks (the LM's `n_q`); `batch` items
/// with a state each (batched streaming, every step masked), or one without masks (`None`).
///
/// Mimi is always run in f32 (as Kyutai's own Rust server does): it is small next to the
/// language model, and its convolutions are sensitive to reduced precision. `dtype` is the
/// dtype the weights are loaded as; pass `DType::F32` unless there is a reason not to.
///
/// ```no_run
/// use candle_core::{DType, Device};
/// use std::path::Path;
///
/// let mimi = fluent_voice_kyutai::internals::load_mimi(
///     Path::new("mimi-pytorch-e351c8d8@125.safetensors"),
///     None, // the standard Mimi
///     32,
///     &Device::Cpu,
///     DType::F32,
///     None, // one stream, unbatched
/// )?;
/// # Ok::<(), fluent_voice_kyutai::MoshiError>(())
/// ```
pub fn load_mimi(
    weights: &Path,
    config_json: Option<&Path>,
    num_codebooks: usize,
    device: &Device,
    dtype: DType,
    batch: Option<usize>,
) -> Result<Mimi, MoshiError> {
    let config = match config_json {
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| MoshiError::io("could not read the Mimi config", path, e))?;
            let json: Value = serde_json::from_slice(&bytes)
                .map_err(|e| MoshiError::invalid_file(path, format!("not JSON: {e}")))?;
            mimi_config(&json, num_codebooks).map_err(|r| MoshiError::invalid_file(path, r))?
        }
        None => Config::v0_1(Some(num_codebooks)),
    };
    // Read tensor by tensor (no mapping left resident beside the tensors).
    let file = crate::weights::dense::SafetensorsFile::open(weights)?;
    let vb = VarBuilder::from_backend(Box::new(TransposedLinears(file)), dtype, device.clone());
    match batch {
        Some(size) => Mimi::batched(size, config, vb),
        None => Mimi::new(config, vb),
    }
    .map_err(|e| {
        MoshiError::invalid_file(
            weights,
            format!("the Mimi weights do not match the Mimi config: {e}"),
        )
    })
}

/// The keyword arguments the reference's `get_mimi` passes each section to. `seanet` goes to
/// both `SEANetEncoder` and `SEANetDecoder`, so only the keys both take; `quantizer` to
/// `SplitResidualVectorQuantizer` (and through it `ResidualVectorQuantizer`); `transformer` to
/// `ProjectedTransformer` (and through it `StreamingTransformer` and its layers). Any other key
/// is a `TypeError` there, and refused here. Top-level keys other than the six `get_mimi` reads
/// are ignored by the reference, and here too.
const SEANET_KEYS: &[&str] = &[
    "channels",
    "dimension",
    "n_filters",
    "n_residual_layers",
    "ratios",
    "activation",
    "activation_params",
    "norm",
    "norm_params",
    "kernel_size",
    "last_kernel_size",
    "residual_kernel_size",
    "dilation_base",
    "causal",
    "pad_mode",
    "true_skip",
    "compress",
    "disable_norm_outer_blocks",
];
const QUANTIZER_KEYS: &[&str] = &[
    "n_q",
    "n_q_semantic",
    "q_dropout",
    "dimension",
    "input_dimension",
    "output_dimension",
    "no_quantization_rate",
    "bins",
    "decay",
    "threshold_usage_ratio",
    "replaced_usage_ratio",
];
const TRANSFORMER_KEYS: &[&str] = &[
    "input_dimension",
    "output_dimensions",
    "d_model",
    "conv_layout",
    "num_heads",
    "num_layers",
    "dim_feedforward",
    "causal",
    "context",
    "positional_embedding",
    "max_period",
    "positional_scale",
    "betas",
    "quantize",
    "checkpointing",
    "norm",
    "layer_scale",
    "gating",
    "kv_repeat",
    "weights_per_step",
    "weights_per_step_schedule",
    "skip_self_attn",
    "cross_attention",
];

/// Refuses keys of `section` that the reference's constructors do not take.
fn check_keys(section: &str, value: &Value, known: &[&str]) -> Result<(), String> {
    let obj = value
        .as_object()
        .ok_or_else(|| format!("{section} is not a JSON object"))?;
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        Some(key) => Err(format!(
            "{section}.{key} is not a key the reference's Mimi takes"
        )),
        None => Ok(()),
    }
}

/// Refuses a value of an accepted key that this crate's Mimi does not implement.
fn check_neutral(value: Option<&Value>, key: &str, neutral: &[Value]) -> Result<(), String> {
    match value {
        Some(v) if !neutral.contains(v) => Err(format!(
            "{key} = {v} is not supported by this Mimi (only {})",
            neutral
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join(" or ")
        )),
        _ => Ok(()),
    }
}

/// Serves Mimi's tensors, its transformers' linear weights stored transposed: `[in, out]` in
/// memory, seen as the usual `[out, in]`. Mimi's transformers multiply two rows per 80 ms
/// frame, and for so few rows candle's matrix product (the `gemm` crate) copies ("packs") a
/// weight stored `[out, in]` at every product, but reads one stored `[in, out]` in place: the
/// products are 2 to 6 times faster, with bit-identical results for two rows or more (one row
/// takes another path, where the usual layout is the faster).
struct TransposedLinears(crate::weights::dense::SafetensorsFile);

impl SimpleBackend for TransposedLinears {
    fn get(
        &self,
        shape: candle_core::Shape,
        name: &str,
        hints: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.0.get(shape, name, hints, dtype, dev)?;
        if tensor.rank() != 2 || !name.contains("transformer.layers.") {
            return Ok(tensor);
        }
        if tensor.dtype() != DType::F32 || !dev.is_cpu() {
            return tensor.t()?.contiguous()?.t();
        }
        let (rows, cols) = tensor.dims2()?;
        let values = tensor.flatten_all()?.to_vec1::<f32>()?;
        let transposed = crate::weights::dense::transpose(&values, rows, cols);
        Tensor::from_vec(transposed, (cols, rows), dev)?.t()
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.get_unchecked(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains_tensor(name)
    }
}

/// The standard Mimi config with the values of a `mimi_config_name` JSON applied.
pub fn mimi_config(json: &Value, num_codebooks: usize) -> Result<Config, String> {
    let mut cfg = Config::v0_1(Some(num_codebooks));
    let obj = json
        .as_object()
        .ok_or("the Mimi config is not a JSON object")?;
    for (section, known) in [
        ("seanet", SEANET_KEYS),
        ("quantizer", QUANTIZER_KEYS),
        ("transformer", TRANSFORMER_KEYS),
    ] {
        if let Some(value) = obj.get(section) {
            check_keys(section, value, known)?;
        }
    }
    if let Some(v) = obj.get("sample_rate") {
        cfg.sample_rate = num(v, "sample_rate")?;
    }
    if let Some(v) = obj.get("frame_rate") {
        cfg.frame_rate = num(v, "frame_rate")?;
    }
    if let Some(v) = obj.get("channels") {
        cfg.channels = int(v, "channels")?;
        cfg.seanet.channels = cfg.channels;
    }
    if let Some(seanet) = obj.get("seanet") {
        apply_seanet(&mut cfg.seanet, seanet)?;
        cfg.transformer.d_model = cfg.seanet.dimension;
    }
    if let Some(q) = obj.get("quantizer") {
        // The crate's split quantizer has one semantic codebook and projects from and to the
        // encoder's width.
        check_neutral(q.get("n_q_semantic"), "quantizer.n_q_semantic", &[1.into()])?;
        let width = Value::from(cfg.seanet.dimension);
        check_neutral(
            q.get("input_dimension"),
            "quantizer.input_dimension",
            std::slice::from_ref(&width),
        )?;
        check_neutral(
            q.get("output_dimension"),
            "quantizer.output_dimension",
            &[width],
        )?;
        if let Some(v) = q.get("dimension") {
            cfg.quantizer_dim = int(v, "quantizer.dimension")?;
        }
        if let Some(v) = q.get("bins") {
            cfg.quantizer_bins = int(v, "quantizer.bins")?;
        }
        if let Some(v) = q.get("n_q") {
            let available = int(v, "quantizer.n_q")?;
            if num_codebooks > available {
                return Err(format!(
                    "the model asks for {num_codebooks} codebooks but this Mimi has {available}"
                ));
            }
        }
    }
    if let Some(t) = obj.get("transformer") {
        apply_transformer(&mut cfg.transformer, t)?;
    }
    Ok(cfg)
}

fn apply_seanet(s: &mut moshi::seanet::Config, v: &Value) -> Result<(), String> {
    let get = |key: &str| v.get(key);
    check_neutral(
        get("activation_params"),
        "seanet.activation_params",
        &[
            serde_json::json!({"alpha": 1.0}),
            serde_json::json!({"alpha": 1}),
        ],
    )?;
    if let Some(x) = get("dimension") {
        s.dimension = int(x, "seanet.dimension")?;
    }
    if let Some(x) = get("channels") {
        s.channels = int(x, "seanet.channels")?;
    }
    if let Some(x) = get("causal") {
        s.causal = boolean(x, "seanet.causal")?;
    }
    for (key, field) in [
        ("n_filters", &mut s.n_filters),
        ("n_residual_layers", &mut s.n_residual_layers),
        ("compress", &mut s.compress),
        ("dilation_base", &mut s.dilation_base),
        (
            "disable_norm_outer_blocks",
            &mut s.disable_norm_outer_blocks,
        ),
        ("kernel_size", &mut s.kernel_size),
        ("residual_kernel_size", &mut s.residual_kernel_size),
        ("last_kernel_size", &mut s.last_kernel_size),
        ("lstm", &mut s.lstm),
    ] {
        if let Some(x) = get(key) {
            *field = int(x, &format!("seanet.{key}"))?;
        }
    }
    if let Some(x) = get("true_skip") {
        s.true_skip = boolean(x, "seanet.true_skip")?;
    }
    if let Some(x) = get("ratios") {
        s.ratios = x
            .as_array()
            .ok_or("seanet.ratios is not a list")?
            .iter()
            .map(|r| int(r, "seanet.ratios"))
            .collect::<Result<_, _>>()?;
    }
    if let Some(x) = get("activation") {
        s.activation = match x.as_str() {
            Some("ELU") | Some("elu") => candle_nn::Activation::Elu(1.0),
            other => return Err(format!("seanet.activation {other:?} is not supported")),
        };
    }
    if let Some(x) = get("norm") {
        // The crate's weight-norm convolutions read plain `weight` tensors when present, so
        // "none" (weights stored pre-multiplied) and "weight_norm" load the same way.
        s.norm = match x.as_str() {
            Some("none") | Some("weight_norm") => moshi::conv::Norm::WeightNorm,
            Some("time_group_norm") => moshi::conv::Norm::TimeGroupNorm,
            other => return Err(format!("seanet.norm {other:?} is not supported")),
        };
    }
    if let Some(x) = get("pad_mode") {
        s.pad_mode = match x.as_str() {
            Some("constant") => moshi::conv::PadMode::Constant,
            Some("reflect") => moshi::conv::PadMode::Reflect,
            Some("replicate") => moshi::conv::PadMode::Replicate,
            other => return Err(format!("seanet.pad_mode {other:?} is not supported")),
        };
    }
    Ok(())
}

fn apply_transformer(t: &mut moshi::transformer::Config, v: &Value) -> Result<(), String> {
    // The crate projects from and to the encoder's width only.
    let width = Value::from(t.d_model);
    let d_model = v.get("d_model").cloned().unwrap_or(width);
    check_neutral(
        v.get("input_dimension"),
        "transformer.input_dimension",
        std::slice::from_ref(&d_model),
    )?;
    check_neutral(
        v.get("output_dimensions"),
        "transformer.output_dimensions",
        &[Value::Array(vec![d_model])],
    )?;
    for (key, neutral) in [
        ("kv_repeat", Value::from(1)),
        ("weights_per_step", Value::from(0)),
        ("skip_self_attn", Value::from(false)),
        ("cross_attention", Value::from(false)),
        ("quantize", Value::from(false)),
    ] {
        check_neutral(v.get(key), &format!("transformer.{key}"), &[neutral])?;
    }
    check_neutral(
        v.get("positional_scale"),
        "transformer.positional_scale",
        &[1.into(), 1.0.into()],
    )?;
    for (key, field) in [
        ("d_model", &mut t.d_model),
        ("num_heads", &mut t.num_heads),
        ("num_layers", &mut t.num_layers),
        ("context", &mut t.context),
        ("max_period", &mut t.max_period),
        ("dim_feedforward", &mut t.dim_feedforward),
    ] {
        if let Some(x) = v.get(key) {
            *field = int(x, &format!("transformer.{key}"))?;
        }
    }
    if let Some(x) = v.get("causal") {
        t.causal = boolean(x, "transformer.causal")?;
    }
    if let Some(x) = v.get("conv_layout") {
        t.conv_layout = boolean(x, "transformer.conv_layout")?;
    }
    if let Some(x) = v.get("layer_scale") {
        t.layer_scale = if x.is_null() {
            None
        } else {
            Some(num(x, "transformer.layer_scale")?)
        };
    }
    if let Some(x) = v.get("gating") {
        t.gating = match x.as_str() {
            None | Some("none") => None,
            Some("silu") => Some(candle_nn::Activation::Silu),
            Some("gelu") => Some(candle_nn::Activation::GeluPytorchTanh),
            other => return Err(format!("transformer.gating {other:?} is not supported")),
        };
    }
    if let Some(x) = v.get("norm") {
        t.norm = match x.as_str() {
            Some("layer_norm") => moshi::NormType::LayerNorm,
            Some("rms_norm") | Some("rms_norm_f32") => moshi::NormType::RmsNorm,
            other => return Err(format!("transformer.norm {other:?} is not supported")),
        };
    }
    if let Some(x) = v.get("positional_embedding") {
        t.positional_embedding = match x.as_str() {
            Some("rope") => moshi::transformer::PositionalEmbedding::Rope,
            Some("sin") => moshi::transformer::PositionalEmbedding::Sin,
            Some("none") => moshi::transformer::PositionalEmbedding::None,
            other => {
                return Err(format!(
                    "transformer.positional_embedding {other:?} is not supported"
                ));
            }
        };
    }
    Ok(())
}

fn int(v: &Value, key: &str) -> Result<usize, String> {
    v.as_u64()
        .map(|n| n as usize)
        .ok_or_else(|| format!("{key} is not a non-negative integer"))
}

fn num(v: &Value, key: &str) -> Result<f64, String> {
    v.as_f64().ok_or_else(|| format!("{key} is not a number"))
}

fn boolean(v: &Value, key: &str) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| format!("{key} is not true or false"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_absent_from_the_json_keep_the_standard_values() {
        let cfg = mimi_config(&json!({"seanet": {"dimension": 32, "n_filters": 4}}), 8).unwrap();
        assert_eq!(cfg.seanet.dimension, 32);
        assert_eq!(cfg.transformer.d_model, 32);
        assert_eq!(cfg.seanet.ratios, vec![8, 6, 5, 4]);
        assert_eq!(cfg.quantizer_bins, 2048);
        assert_eq!(cfg.quantizer_n_q, 8);
        assert_eq!(cfg.frame_rate, 12.5);
    }

    #[test]
    fn unsupported_values_are_named() {
        let err = mimi_config(&json!({"seanet": {"activation": "Tanh"}}), 8).unwrap_err();
        assert!(err.contains("seanet.activation"), "{err}");
        let err = mimi_config(&json!({"quantizer": {"n_q": 4}}), 8).unwrap_err();
        assert!(err.contains("8 codebooks"), "{err}");
        assert!(mimi_config(&json!([1]), 8).is_err());
        let err = mimi_config(&json!({"quantizer": {"n_q_semantic": 2}}), 8).unwrap_err();
        assert!(err.contains("quantizer.n_q_semantic"), "{err}");
    }

    #[test]
    fn keys_the_reference_takes_are_accepted_and_others_refused() {
        // The reference's standard config, as `loaders._mimi_config` writes it.
        let standard = json!({
            "sample_rate": 24000, "channels": 1, "frame_rate": 12.5,
            "seanet": {"channels": 1, "dimension": 512, "causal": true, "n_filters": 64,
                "n_residual_layers": 1, "activation": "ELU", "compress": 2, "dilation_base": 2,
                "disable_norm_outer_blocks": 0, "kernel_size": 7, "residual_kernel_size": 3,
                "last_kernel_size": 3, "norm": "none", "pad_mode": "constant",
                "ratios": [8, 6, 5, 4], "true_skip": true},
            "quantizer": {"dimension": 256, "n_q": 32, "bins": 2048, "input_dimension": 512,
                "output_dimension": 512},
            "transformer": {"d_model": 512, "num_heads": 8, "num_layers": 8, "causal": true,
                "layer_scale": 0.01, "context": 250, "conv_layout": true, "max_period": 10000,
                "gating": "none", "norm": "layer_norm", "positional_embedding": "rope",
                "dim_feedforward": 2048, "input_dimension": 512, "output_dimensions": [512]},
            "a_top_level_note": "ignored by the reference too"
        });
        let cfg = mimi_config(&standard, 32).unwrap();
        assert_eq!(cfg.transformer.d_model, 512);
        for (section, key) in [("seanet", "final_activation"), ("transformer", "device")] {
            let mut bad = standard.clone();
            bad[section][key] = json!(null);
            let err = mimi_config(&bad, 32).unwrap_err();
            assert!(err.contains(&format!("{section}.{key}")), "{err}");
        }
    }
}
