//! Quantizing a published language model file into GGUF.
//!
//! The GGUF keeps the published tensor names and shapes (the stacked `in_proj_weight` layout
//! included), so that the same loaders read it, and so that a pre-quantized file made the same
//! way by another tool loads too. Only the large linear layers are quantized (see
//! [`is_large_linear`]); every other tensor (embedding tables, norms, conditioners, the small
//! extra heads) is stored exactly as published (bf16 or f32).

use std::io::{Seek, Write};
use std::path::Path;

use candle_core::quantized::k_quants::{BlockQ4_0, BlockQ4K, BlockQ8_0, GgmlType};
use candle_core::quantized::{GgmlDType, QStorage, QTensor, gguf_file};
use rayon::prelude::*;
use safetensors::Dtype;

use super::Scheme;
use super::dense::SafetensorsFile;
use crate::error::{MoshiError, Result};

/// Version of the derived file's content: bumped whenever what [`quantize_file`] writes changes,
/// so that files written by an older version are not mistaken for current ones.
pub const FORMAT_VERSION: u32 = 1;

/// GGUF metadata key of a derived file: the quantization scheme (`q8_0`, `q4k`).
pub const META_SCHEME: &str = "kyutai.quantization";
/// GGUF metadata key of a derived file: the sha256 of the file it was derived from.
pub const META_SOURCE_SHA256: &str = "kyutai.source_sha256";
/// GGUF metadata key of a derived file: [`FORMAT_VERSION`].
pub const META_FORMAT: &str = "kyutai.format_version";

/// The modules whose `weight` is a large linear layer of a Kyutai LM: attention output
/// projections, feed-forward layers, the depformer's input projections and every output head.
const LINEAR_MODULES: [&str; 6] = [
    "out_proj",
    "linear_in",
    "linear_out",
    "depformer_in",
    "linears",
    "text_linear",
];

/// True for the weight of a large linear layer of a published Kyutai LM (STT or TTS): the
/// stacked attention input projections (`*.in_proj_weight`, self- and cross-attention) and the
/// `weight` of the modules of `LINEAR_MODULES`. Embedding tables (and their small low-rank
/// and demultiplexing projections), norms, conditioners and the 6-wide STT extra heads are not.
///
/// ```
/// use fluent_voice_kyutai::internals::weights::quantize::is_large_linear;
/// assert!(is_large_linear("transformer.layers.3.self_attn.in_proj_weight", &[6144, 2048]));
/// assert!(is_large_linear("depformer.layers.0.gating.7.linear_in.weight", &[4096, 1024]));
/// assert!(is_large_linear("linears.31.weight", &[2048, 1024]));
/// assert!(!is_large_linear("emb.0.weight", &[2049, 2048]));
/// assert!(!is_large_linear("depformer_text_emb.out1.weight", &[1024, 128]));
/// assert!(!is_large_linear("extra_heads.0.weight", &[6, 2048]));
/// assert!(!is_large_linear("transformer.layers.0.norm1.alpha", &[1, 1, 2048]));
/// // Pocket TTS: the flow transformer's linears only.
/// assert!(is_large_linear("flow_lm.transformer.layers.2.linear1.weight", &[4096, 1024]));
/// assert!(is_large_linear("flow_lm.transformer.layers.0.self_attn.in_proj.weight", &[3072, 1024]));
/// assert!(!is_large_linear("mimi.decoder_transformer.transformer.layers.0.self_attn.out_proj.weight", &[512, 512]));
/// assert!(!is_large_linear("flow_lm.flow_net.res_blocks.0.mlp.0.weight", &[512, 512]));
/// ```
pub fn is_large_linear(name: &str, shape: &[usize]) -> bool {
    if shape.len() != 2 {
        return false;
    }
    // Pocket TTS: the flow transformer's linears; its head, Mimi and the tables stay as
    // published (Mimi's decoder is as costly as the LM per frame, and float in every port).
    if let Some(rest) = name.strip_prefix("flow_lm.transformer.") {
        return [
            ".in_proj.weight",
            ".out_proj.weight",
            ".linear1.weight",
            ".linear2.weight",
        ]
        .iter()
        .any(|suffix| rest.ends_with(suffix));
    }
    if name.starts_with("mimi.") || name.starts_with("flow_lm.") {
        return false;
    }
    if name.ends_with("in_proj_weight") {
        return true;
    }
    let Some(module) = name.strip_suffix(".weight") else {
        return false;
    };
    let module = module
        .split('.')
        .rev()
        .find(|part| part.parse::<usize>().is_err())
        .unwrap_or_default();
    LINEAR_MODULES.contains(&module)
}

/// The scheme a linear layer with `cols` inputs gets under `scheme`: the scheme itself when
/// its blocks divide a row, else its fallback (q4k -> q4_0), else `None` (kept dense).
pub fn scheme_for(scheme: Scheme, cols: usize) -> Option<Scheme> {
    let mut current = Some(scheme);
    while let Some(s) = current {
        if cols.is_multiple_of(s.ggml_dtype().block_size()) {
            return Some(s);
        }
        current = s.fallback();
    }
    None
}

/// Quantizes `values` (`rows x cols`, row-major) block by block on every core.
pub fn quantize_matrix(values: &[f32], shape: &[usize], scheme: Scheme) -> Result<QTensor> {
    fn blocks<T: GgmlType + Send + Sync + 'static>(values: &[f32]) -> QStorage {
        // Blocks per task: large enough to amortize scheduling, small enough to balance.
        const PER_TASK: usize = 512;
        let mut out = vec![T::zeros(); values.len() / T::BLCK_SIZE];
        out.par_chunks_mut(PER_TASK)
            .zip(values.par_chunks(PER_TASK * T::BLCK_SIZE))
            .for_each(|(dst, src)| T::from_float(src, dst));
        QStorage::Cpu(Box::new(out))
    }
    let block = scheme.ggml_dtype().block_size();
    if !values.len().is_multiple_of(block) || shape.last().is_none_or(|c| c % block != 0) {
        return Err(MoshiError::Inference {
            message: format!("a {shape:?} tensor cannot be cut into {block}-weight blocks"),
            source: None,
        });
    }
    let storage = match scheme {
        Scheme::Q8_0 => blocks::<BlockQ8_0>(values),
        Scheme::Q4K => blocks::<BlockQ4K>(values),
        Scheme::Q4_0 => blocks::<BlockQ4_0>(values),
    };
    QTensor::new(storage, shape).map_err(|e| candle_err("building a quantized tensor", e))
}

fn candle_err(context: &str, e: candle_core::Error) -> MoshiError {
    MoshiError::Inference {
        message: format!("{context}: {e}"),
        source: Some(std::sync::Arc::new(e)),
    }
}

/// What [`quantize_file`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuantizeSummary {
    /// Tensors written.
    pub tensors: usize,
    /// Tensors quantized with the scheme asked for.
    pub quantized: usize,
    /// Large linear layers that fell back to another scheme or stayed dense (their rows are not
    /// a whole number of blocks).
    pub fallbacks: usize,
    /// Weights in quantized tensors.
    pub quantized_params: u64,
    /// Weights in tensors kept as published.
    pub dense_params: u64,
}

/// Writes `source` (a published safetensors LM) to `out` as GGUF, its large linear layers
/// quantized with `scheme`. `source_sha256` is recorded in the metadata.
pub fn quantize_file<W: Write + Seek>(
    source: &Path,
    scheme: Scheme,
    source_sha256: &str,
    out: &mut W,
) -> Result<QuantizeSummary> {
    let file = SafetensorsFile::open(source)?;
    let mut names: Vec<&String> = file.tensors().keys().collect();
    names.sort();
    let mut summary = QuantizeSummary::default();
    let mut tensors = Vec::with_capacity(names.len());
    let read_err = |e| MoshiError::invalid_file(source, format!("cannot read a tensor: {e}"));
    for name in names {
        let info = &file.tensors()[name];
        let params = info.shape.iter().product::<usize>() as u64;
        let chosen = if is_large_linear(name, &info.shape) {
            let chosen = scheme_for(scheme, info.shape[1]);
            if chosen != Some(scheme) {
                summary.fallbacks += 1;
            }
            chosen
        } else {
            None
        };
        let tensor = match chosen {
            Some(s) => {
                if s == scheme {
                    summary.quantized += 1;
                }
                summary.quantized_params += params;
                let values = file.read_f32(name).map_err(read_err)?;
                quantize_matrix(&values, &info.shape, s)?
            }
            None => {
                summary.dense_params += params;
                let dtype = match info.dtype {
                    Dtype::F32 => GgmlDType::F32,
                    Dtype::F16 => GgmlDType::F16,
                    Dtype::BF16 => GgmlDType::BF16,
                    other => {
                        return Err(MoshiError::invalid_file(
                            source,
                            format!("tensor `{name}` has dtype {other:?}, not a float"),
                        ));
                    }
                };
                let bytes = file.read_raw(name).map_err(read_err)?;
                candle_core::quantized::ggml_file::qtensor_from_ggml(
                    dtype,
                    &bytes,
                    info.shape.clone(),
                    &candle_core::Device::Cpu,
                )
                .map_err(|e| candle_err("storing a tensor", e))?
            }
        };
        summary.tensors += 1;
        tensors.push((name.as_str(), tensor));
    }
    let scheme_value = gguf_file::Value::String(scheme.name().into());
    let sha_value = gguf_file::Value::String(source_sha256.into());
    let format_value = gguf_file::Value::U32(FORMAT_VERSION);
    let metadata = [
        (META_SCHEME, &scheme_value),
        (META_SOURCE_SHA256, &sha_value),
        (META_FORMAT, &format_value),
    ];
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    gguf_file::write(out, &metadata, &refs).map_err(|e| candle_err("writing GGUF", e))?;
    Ok(summary)
}

/// Checks that `path` is a GGUF file whose tensors all lie within the file, and returns its
/// metadata (string and integer values only).
pub fn check_gguf(path: &Path) -> Result<std::collections::BTreeMap<String, String>> {
    let mut file =
        std::fs::File::open(path).map_err(|e| MoshiError::io("could not open", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| MoshiError::io("could not read", path, e))?
        .len();
    let content = gguf_file::Content::read(&mut file)
        .map_err(|e| MoshiError::invalid_file(path, format!("not a GGUF file: {e}")))?;
    for (name, info) in &content.tensor_infos {
        let elems = info.shape.elem_count();
        let block = info.ggml_dtype.block_size();
        let bytes = (elems / block * info.ggml_dtype.type_size()) as u64;
        let end = content
            .tensor_data_offset
            .checked_add(info.offset)
            .and_then(|o| o.checked_add(bytes));
        if !elems.is_multiple_of(block) || end.is_none_or(|end| end > len) {
            return Err(MoshiError::invalid_file(
                path,
                format!("tensor `{name}` lies past the end of the file (truncated?)"),
            ));
        }
    }
    Ok(content
        .metadata
        .iter()
        .filter_map(|(k, v)| {
            let text = match v {
                gguf_file::Value::String(s) => s.clone(),
                gguf_file::Value::U32(n) => n.to_string(),
                gguf_file::Value::U64(n) => n.to_string(),
                _ => return None,
            };
            Some((k.clone(), text))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Tensor};
    use std::collections::HashMap;

    #[test]
    fn fallbacks_follow_block_sizes() {
        assert_eq!(scheme_for(Scheme::Q4K, 2048), Some(Scheme::Q4K));
        assert_eq!(scheme_for(Scheme::Q4K, 64), Some(Scheme::Q4_0));
        assert_eq!(scheme_for(Scheme::Q8_0, 64), Some(Scheme::Q8_0));
        assert_eq!(scheme_for(Scheme::Q8_0, 48), None);
    }

    #[test]
    fn quantized_matrix_is_close_and_dense_tensors_are_exact() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("lm.safetensors");
        let w: Vec<f32> = (0..64 * 512)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let linear = Tensor::from_vec(w.clone(), (64, 512), &Device::Cpu).unwrap();
        let emb = Tensor::from_vec(w, (64, 512), &Device::Cpu).unwrap();
        let tensors: HashMap<String, Tensor> = [
            (
                "text_linear.weight".to_string(),
                linear.to_dtype(DType::BF16).unwrap(),
            ),
            (
                "text_emb.weight".to_string(),
                emb.to_dtype(DType::BF16).unwrap(),
            ),
        ]
        .into();
        candle_core::safetensors::save(&tensors, &src).unwrap();
        let out = dir.path().join("lm.gguf");
        let mut f = std::fs::File::create(&out).unwrap();
        let summary = quantize_file(&src, Scheme::Q8_0, "ab", &mut f).unwrap();
        drop(f);
        assert_eq!((summary.tensors, summary.quantized), (2, 1));
        let meta = check_gguf(&out).unwrap();
        assert_eq!(meta[META_SCHEME], "q8_0");
        assert_eq!(meta[META_SOURCE_SHA256], "ab");
        let q =
            candle_transformers::quantized_var_builder::VarBuilder::from_gguf(&out, &Device::Cpu)
                .unwrap();
        let lin = q.get((64, 512), "text_linear.weight").unwrap();
        assert_eq!(lin.dtype(), GgmlDType::Q8_0);
        let back = lin.dequantize(&Device::Cpu).unwrap();
        let reference = tensors["text_linear.weight"].to_dtype(DType::F32).unwrap();
        let err = (back - &reference)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(err.to_scalar::<f32>().unwrap() < 0.01);
        let e = q.get((64, 512), "text_emb.weight").unwrap();
        assert_eq!(e.dtype(), GgmlDType::BF16);
        let e = e.dequantize(&Device::Cpu).unwrap();
        let diff = (e - reference).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
        // A truncated file is refused by name.
        let bytes = std::fs::read(&out).unwrap();
        std::fs::write(&out, &bytes[..bytes.len() - 100]).unwrap();
        let error = check_gguf(&out).unwrap_err().to_string();
        assert!(error.contains("past the end"), "{error}");
    }
}
