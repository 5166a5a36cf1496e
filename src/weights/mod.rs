//! How a model's weights are held in memory: dense (f32, bf16) or quantized (q8, q4), and how
//! they get there from the published files.
//!
//! Generating a frame is a chain of matrix-vector products, so its time follows the bytes of
//! weights read per step: about 4.4 GB (STT 1B) and 9 GB (TTS 1.6B, whose depformer runs 32
//! sub-steps) in f32. 8-bit weights read about a quarter of that, 4-bit weights an eighth.
//!
//! - [`dense`] reads a safetensors file into dense tensors, converting bf16 to f32 on every core
//!   (the published LMs are bf16; candle has no bf16 matrix product on the CPU).
//! - [`quantize`] turns a published LM into a GGUF file whose large linear layers are quantized
//!   (q8_0, q4k) and whose other tensors (embeddings, norms, conditioners) are kept as published.
//! - [`derived`] keeps that GGUF in the Hugging Face cache beside the file it comes from, keyed
//!   by that file's sha256 and the scheme, written atomically and verified like a download.
//! - [`dense_rows`] and [`rows_matmul`] are the products of a step's few rows, dense and
//!   quantized, that read each weight once.
//! - [`source`] is what the model code sees: tensors, and linear layers that are either dense
//!   or quantized.

pub mod dense;
pub mod dense_rows;
pub mod derived;
pub mod quantize;
pub mod rows_matmul;
pub mod source;

use candle_core::quantized::GgmlDType;

pub use crate::models::Weights;
pub(crate) use source::widen_bf16_on_cpu;
pub use source::{Linear, TensorSource};

impl Weights {
    /// The quantization scheme, for the quantized settings.
    pub(crate) fn scheme(self) -> Option<Scheme> {
        match self {
            Weights::Q8 => Some(Scheme::Q8_0),
            Weights::Q4 => Some(Scheme::Q4K),
            Weights::F32 | Weights::F16 | Weights::Bf16 => None,
        }
    }

    /// The dtype of dense weights (and of activations): the setting's own for dense settings,
    /// f32 for quantized ones (candle's quantized products take and give f32).
    pub(crate) fn dtype(self) -> candle_core::DType {
        match self {
            Weights::F16 => candle_core::DType::F16,
            Weights::Bf16 => candle_core::DType::BF16,
            Weights::F32 | Weights::Q8 | Weights::Q4 => candle_core::DType::F32,
        }
    }
}

/// A GGML quantization scheme for the large linear layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// 32 weights per block, 8-bit values and one f16 scale (8.5 bits per weight).
    Q8_0,
    /// 256 weights per super-block, 4-bit values with 6-bit sub-block scales and minimums
    /// (4.5 bits per weight).
    Q4K,
    /// 32 weights per block, 4-bit values and one f16 scale (4.5 bits per weight).
    Q4_0,
}

impl Scheme {
    /// The GGML block type of the scheme.
    pub fn ggml_dtype(self) -> GgmlDType {
        match self {
            Scheme::Q8_0 => GgmlDType::Q8_0,
            Scheme::Q4K => GgmlDType::Q4K,
            Scheme::Q4_0 => GgmlDType::Q4_0,
        }
    }

    /// The name used in derived file names and GGUF metadata.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Q8_0 => "q8_0",
            Scheme::Q4K => "q4k",
            Scheme::Q4_0 => "q4_0",
        }
    }

    /// What a layer whose input size is not a multiple of this scheme's block falls back to
    /// (tiny test models have dimensions of 32 and 64): q4k's 256-weight blocks fall back to
    /// q4_0's 32-weight blocks; `None` keeps the layer dense.
    pub fn fallback(self) -> Option<Scheme> {
        match self {
            Scheme::Q4K => Some(Scheme::Q4_0),
            Scheme::Q8_0 | Scheme::Q4_0 => None,
        }
    }
}

/// What a language model was loaded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadedFrom {
    /// The published file, dense.
    Dense,
    /// A derived quantized file from the cache.
    Derived {
        /// The derived file.
        path: std::path::PathBuf,
        /// True when this load built it (the first start with this setting).
        built: bool,
    },
    /// A GGUF file given as the model's weights (a pre-quantized model).
    Gguf,
}

/// The tensors of the language model file `path` at the `weights` setting, on `device`:
///
/// - a `.gguf` file is read as it is (a pre-quantized model, whatever the setting);
/// - q8 and q4 read the derived quantized file, building it the first time
///   ([`derived::ensure_quantized`]; `local_dir` is where derived files of sources outside the
///   cache go);
/// - f32, f16 and bf16 read the file dense ([`dense`]).
pub fn lm_source(
    path: &std::path::Path,
    weights: Weights,
    device: &candle_core::Device,
    local_dir: &std::path::Path,
) -> crate::Result<(TensorSource<'static>, LoadedFrom)> {
    use crate::error::MoshiError;
    let candle = |e: candle_core::Error| {
        MoshiError::invalid_file(path, format!("cannot read the weights: {e}"))
    };
    if path.extension().is_some_and(|e| e == "gguf") {
        quantize::check_gguf(path)?;
        let source = TensorSource::gguf(path, device).map_err(candle)?;
        return Ok((source, LoadedFrom::Gguf));
    }
    match weights.scheme() {
        Some(scheme) => quantized_source(path, scheme, device, local_dir),
        None => {
            let vb = dense::var_builder(path, weights.dtype(), device)?;
            Ok((TensorSource::dense(vb), LoadedFrom::Dense))
        }
    }
}

/// The tensors of the derived `scheme` file of the language model `path` (built the first
/// time; see [`derived::ensure_quantized`]).
pub fn quantized_source(
    path: &std::path::Path,
    scheme: Scheme,
    device: &candle_core::Device,
    local_dir: &std::path::Path,
) -> crate::Result<(TensorSource<'static>, LoadedFrom)> {
    let mut built = derived::ensure_quantized(path, scheme, local_dir)?;
    let mut loaded = TensorSource::gguf(&built.path, device);
    if loaded.is_err() && !built.built {
        // Damaged in a way its record cannot show (same size and time): build it again.
        log::warn!("{} cannot be read; rebuilding it", built.path.display());
        derived::discard(&built.path);
        built = derived::ensure_quantized(path, scheme, local_dir)?;
        loaded = TensorSource::gguf(&built.path, device);
    }
    let source = loaded.map_err(|e| {
        crate::error::MoshiError::invalid_file(&built.path, format!("cannot read the weights: {e}"))
    })?;
    Ok((
        source,
        LoadedFrom::Derived {
            path: built.path,
            built: built.built,
        },
    ))
}

/// Derives the quantized file of the language model `path` for `weights` now, if the setting is
/// quantized and the file is not a GGUF already; returns it.
pub fn prepare(
    path: &std::path::Path,
    weights: Weights,
    local_dir: &std::path::Path,
) -> crate::Result<Option<std::path::PathBuf>> {
    if path.extension().is_some_and(|e| e == "gguf") {
        return Ok(None);
    }
    match weights.scheme() {
        Some(scheme) => Ok(Some(
            derived::ensure_quantized(path, scheme, local_dir)?.path,
        )),
        None => Ok(None),
    }
}
