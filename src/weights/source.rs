//! [`TensorSource`]: where a model gets its tensors, and [`Linear`]: a linear layer whose weight
//! is either dense or quantized. The model code asks for tensors and linear layers by name and
//! does not need to know which it got.

use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{D, DType, Device, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_nn::var_builder::SimpleBackend;
use candle_transformers::quantized_var_builder::VarBuilder as QVarBuilder;

/// True where candle 0.9 computes bf16 worse than a GPU does, or not at all: on the CPU (its
/// `gemm` has no bf16; its softmax sums bf16 in bf16). There [`Linear`] (and the layers'
/// `matmul` and `softmax_last_dim`) compute in f32 and round the result to bf16, as a GPU's
/// kernels do.
pub(crate) fn widen_bf16_on_cpu(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::BF16
}

/// A bias-free linear layer (`y = x W^T`, weight `[out, in]` as PyTorch stores it).
#[derive(Debug, Clone)]
pub enum Linear {
    /// A dense weight, multiplied by candle's `Linear` (the f32 reference numbers). A bf16
    /// weight on the CPU, where candle has no bf16 product, is widened to f32 at every call and
    /// the product rounded to bf16, as a GPU's bf16 GEMM does: slower than f32, it is there to
    /// check the GPU's dtype path on the CPU, not for speed.
    Dense(candle_nn::Linear),
    /// A quantized weight, multiplied by candle's quantized kernels (f32 in, f32 out).
    Quantized(QMatMul),
}

impl Linear {
    pub fn dense(weight: Tensor) -> Linear {
        Linear::Dense(candle_nn::Linear::new(weight, None))
    }
}

/// Inputs of more rows than this go through a dense product with the weight dequantized for
/// the call. The quantized CPU products compute row by row (right for a generation step: one
/// row per conversation); a matrix product over hundreds of rows (the TTS cross-attention keys
/// and values of a voice, 625 rows, once per conversation) is many times faster dense.
const MAX_QUANTIZED_ROWS: usize = 64;

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Linear::Dense(l) if widen_bf16_on_cpu(xs) => {
                let weight = l.weight().to_dtype(DType::F32)?;
                candle_nn::Linear::new(weight, None)
                    .forward(&xs.to_dtype(DType::F32)?)?
                    .to_dtype(DType::BF16)
            }
            // A step's few rows: each weight read once, in place (see [`super::dense_rows`]).
            Linear::Dense(l) => match super::dense_rows::forward(l.weight(), l.bias(), xs)? {
                Some(out) => Ok(out),
                None => l.forward(xs),
            },
            Linear::Quantized(QMatMul::QTensor(q))
                if xs.elem_count() / xs.dim(D::Minus1)? > MAX_QUANTIZED_ROWS =>
            {
                candle_nn::Linear::new(q.dequantize(xs.device())?, None).forward(xs)
            }
            // Several rows (a batched step): each weight read once for all of them, with
            // candle's own dot products (see [`super::rows_matmul`]).
            Linear::Quantized(QMatMul::QTensor(q)) if xs.elem_count() / xs.dim(D::Minus1)? > 1 => {
                match super::rows_matmul::forward(q, xs)? {
                    Some(out) => Ok(out),
                    None => QMatMul::QTensor(q.clone()).forward(xs),
                }
            }
            Linear::Quantized(q) => q.forward(xs),
        }
    }
}

/// The tensors of one model file: dense (a `VarBuilder`), or a GGUF file whose large linear
/// layers are quantized (see [`super::quantize`]); the GGUF's other tensors are served dense.
#[derive(Clone)]
pub struct TensorSource<'a> {
    dense: VarBuilder<'a>,
    quantized: Option<QVarBuilder>,
}

impl<'a> TensorSource<'a> {
    /// Every tensor dense, from `vb`.
    pub fn dense(vb: VarBuilder<'a>) -> Self {
        TensorSource {
            dense: vb,
            quantized: None,
        }
    }

    /// A GGUF file, read whole into memory (quantized blocks stay quantized).
    pub fn gguf(path: &Path, device: &Device) -> Result<TensorSource<'static>> {
        let quantized = QVarBuilder::from_gguf(path, device)?;
        Ok(Self::from_quantized(quantized))
    }

    /// Tensors of a quantized var builder (dense ones dequantized as f32).
    pub fn from_quantized(quantized: QVarBuilder) -> TensorSource<'static> {
        let device = quantized.device().clone();
        let backend = Dequantizing(quantized.clone());
        TensorSource {
            dense: VarBuilder::from_backend(Box::new(backend), DType::F32, device),
            quantized: Some(quantized),
        }
    }

    /// The quantized var builder, when the tensors come from a GGUF file (the `moshi` crate's
    /// models take it as `MaybeQuantizedVarBuilder::Quantized`).
    pub fn quantized(&self) -> Option<&QVarBuilder> {
        self.quantized.as_ref()
    }

    /// The tensors under `prefix.` (as `VarBuilder::pp`).
    pub fn pp(&self, prefix: impl ToString) -> Self {
        let prefix = prefix.to_string();
        TensorSource {
            dense: self.dense.pp(&prefix),
            quantized: self.quantized.as_ref().map(|q| q.pp(&prefix)),
        }
    }

    /// Dense tensors (norms, embeddings, conditioners), in the model's dtype.
    pub fn vb(&self) -> &VarBuilder<'a> {
        &self.dense
    }

    /// The device tensors are loaded on.
    pub fn device(&self) -> &Device {
        self.dense.device()
    }

    /// The dtype of activations: the dense dtype, f32 for a quantized file.
    pub fn dtype(&self) -> DType {
        self.dense.dtype()
    }

    /// A dense tensor.
    pub fn get<S: Into<Shape>>(&self, shape: S, name: &str) -> Result<Tensor> {
        self.dense.get(shape, name)
    }

    /// A linear layer `in_dim -> out_dim` from the weight `name` (`[out_dim, in_dim]`).
    pub fn linear(&self, in_dim: usize, out_dim: usize, name: &str) -> Result<Linear> {
        Ok(self
            .row_blocks((out_dim, in_dim), name, &[out_dim])?
            .pop()
            .expect("one block"))
    }

    /// Splits a stacked weight `[sum(rows), cols]` into one linear layer per block of rows (the
    /// published layout stacks q, k and v, and the depformer's per-step weight sets). Quantized
    /// blocks are split without dequantizing: each row is a whole number of blocks.
    pub fn row_blocks(
        &self,
        shape: (usize, usize),
        name: &str,
        rows: &[usize],
    ) -> Result<Vec<Linear>> {
        if let Some(q) = self.quantized_weight(shape, name)? {
            return split_quantized(&q, rows);
        }
        let weight = self.dense.get(shape, name)?;
        let mut start = 0;
        rows.iter()
            .map(|&n| {
                let block = if n == shape.0 {
                    weight.clone()
                } else {
                    weight.narrow(0, start, n)?.contiguous()?
                };
                start += n;
                Ok(Linear::dense(block))
            })
            .collect()
    }

    /// The weight `name` when it is stored quantized (`None` when dense).
    fn quantized_weight(&self, shape: (usize, usize), name: &str) -> Result<Option<Arc<QTensor>>> {
        let Some(q) = &self.quantized else {
            return Ok(None);
        };
        let tensor = q.get(shape, name)?;
        Ok(match tensor.dtype() {
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => None,
            _ => Some(tensor),
        })
    }
}

/// Splits a quantized `[rows, cols]` weight into blocks of rows, as quantized linear layers.
fn split_quantized(weight: &Arc<QTensor>, rows: &[usize]) -> Result<Vec<Linear>> {
    let (total, cols) = weight.shape().dims2()?;
    if rows.iter().sum::<usize>() != total {
        candle_core::bail!("cannot split {total} rows into {rows:?}")
    }
    if rows.len() == 1 {
        return Ok(vec![Linear::Quantized(QMatMul::from_arc(weight.clone())?)]);
    }
    let dtype = weight.dtype();
    let row_bytes = cols / dtype.block_size() * dtype.type_size();
    let data = weight.data()?;
    let mut start = 0;
    rows.iter()
        .map(|&n| {
            let bytes = &data[start * row_bytes..(start + n) * row_bytes];
            start += n;
            let block = candle_core::quantized::ggml_file::qtensor_from_ggml(
                dtype,
                bytes,
                vec![n, cols],
                &weight.device(),
            )?;
            Ok(Linear::Quantized(QMatMul::from_qtensor(block)?))
        })
        .collect()
}

/// Serves the tensors of a quantized var builder dense (dequantized), for the parts of a model
/// that stay in full precision.
struct Dequantizing(QVarBuilder);

impl SimpleBackend for Dequantizing {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        super::dense::with_shape(self.get_unchecked(name, dtype, dev)?, s, name)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.0.get_no_shape(name)?.dequantize(dev)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}
