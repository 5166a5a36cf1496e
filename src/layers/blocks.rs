//! Small building blocks of the TTS language model, as the Python reference defines them
//! (`moshi/modules/transformer.py`, `gating.py`, `models/lm_utils.py`).
//!
//! Written here rather than taken from the `moshi` crate because the published checkpoint needs
//! variants that crate lacks: embeddings that demultiplex a second text stream and low-rank
//! embeddings, and per-step weight sets selected through a schedule.

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::lm_config::{Gating, NormKind};
use crate::weights::{Linear, TensorSource, widen_bf16_on_cpu};

/// `a.matmul(b)`, also for bf16 on the CPU: there both operands are widened to f32 and the
/// product rounded back to bf16, as a GPU's bf16 GEMM does (f32 accumulation, bf16 result).
/// This lets a bf16 model, and so every dtype conversion the GPU path makes, run on the CPU.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if widen_bf16_on_cpu(a) {
        a.to_dtype(DType::F32)?
            .matmul(&b.to_dtype(DType::F32)?)?
            .to_dtype(DType::BF16)
    } else {
        a.matmul(b)
    }
}

/// `softmax_last_dim(x)`, also for bf16 on the CPU: candle's CPU kernel sums a bf16 row in
/// bf16, losing most of its precision over a long row, where its CUDA kernel (and PyTorch)
/// sums in f32; so there the row is widened to f32 and the result rounded back to bf16.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if widen_bf16_on_cpu(x) {
        candle_nn::ops::softmax_last_dim(&x.to_dtype(DType::F32)?)?.to_dtype(DType::BF16)
    } else {
        candle_nn::ops::softmax_last_dim(x)
    }
}

/// `RMSNorm` (`alpha` `[1, 1, dim]`, kept as `[dim]` in f32) or `LayerNorm` (`weight`, `bias`).
#[derive(Debug, Clone)]
pub enum Norm {
    Rms { alpha: Tensor, eps: f32 },
    Layer(candle_nn::LayerNorm),
}

impl Norm {
    pub fn new(vb: &VarBuilder, kind: NormKind, dim: usize) -> Result<Norm> {
        Ok(match kind {
            NormKind::Rms { eps } => Norm::Rms {
                alpha: vb
                    .get((1, 1, dim), "alpha")?
                    .reshape(dim)?
                    .to_dtype(DType::F32)?,
                eps: eps as f32,
            },
            NormKind::Layer { eps } => Norm::layer(vb, dim, eps)?,
        })
    }

    /// A `LayerNorm` with weight and bias (the cross-attention norm is always one, eps 1e-5).
    pub fn layer(vb: &VarBuilder, dim: usize, eps: f64) -> Result<Norm> {
        Ok(Norm::Layer(candle_nn::LayerNorm::new(
            vb.get(dim, "weight")?,
            vb.get(dim, "bias")?,
            eps,
        )))
    }
}

impl Module for Norm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Norm::Rms { alpha, eps } => {
                // y = x * alpha / sqrt(eps + mean(x^2)), in f32 as `rms_norm_f32` does, with
                // candle's fused kernel (one pass, no temporaries).
                let dtype = xs.dtype();
                candle_nn::ops::rms_norm(&xs.to_dtype(DType::F32)?, alpha, *eps)?.to_dtype(dtype)
            }
            Norm::Layer(ln) => ln.forward(xs),
        }
    }
}

/// The gated feed-forward block (`ActivationGating`): `linear_out(act(a) * b)` where
/// `[a, b] = linear_in(x)`.
#[derive(Debug, Clone)]
pub struct GatedFeedForward {
    linear_in: Linear,
    linear_out: Linear,
    hidden: usize,
    activation: Gating,
}

impl GatedFeedForward {
    /// `hidden` follows the reference: `21 * dim / 8` when `dim_feedforward == 4 * dim`,
    /// else `2 * dim_feedforward / 3`.
    pub fn new(
        source: &TensorSource,
        dim: usize,
        dim_feedforward: usize,
        activation: Gating,
    ) -> Result<Self> {
        let hidden = if dim_feedforward == 4 * dim {
            21 * dim / 8
        } else {
            2 * dim_feedforward / 3
        };
        Ok(GatedFeedForward {
            linear_in: source.pp("linear_in").linear(dim, 2 * hidden, "weight")?,
            linear_out: source.pp("linear_out").linear(hidden, dim, "weight")?,
            hidden,
            activation,
        })
    }
}

impl Module for GatedFeedForward {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let h = self.linear_in.forward(xs)?;
        let a = h.narrow(D::Minus1, 0, self.hidden)?;
        let b = h.narrow(D::Minus1, self.hidden, self.hidden)?;
        let a = match self.activation {
            Gating::Silu => candle_nn::ops::silu(&a)?,
            Gating::Gelu => a.gelu_erf()?,
            Gating::Relu => a.relu()?,
            Gating::Sigmoid => candle_nn::ops::sigmoid(&a)?,
            Gating::Tanh => a.tanh()?,
        };
        self.linear_out.forward(&(a * b)?)
    }
}

/// `ScaledEmbedding`: a lookup table where token `-1` embeds to exactly zero, optionally low-rank
/// (a linear layer up to the model dimension) and optionally demultiplexing two text streams
/// (`token = (second + 1) * vocab + first`, each looked up in the same table and projected by
/// `out1` / `out2`; `second = -1` contributes zero).
#[derive(Debug, Clone)]
pub struct Embedding {
    table: Tensor,
    /// `[1, 1, dim]` zeros: what token `-1` embeds to (made once, not at every step).
    zero: Tensor,
    vocab: usize,
    low_rank: Option<Linear>,
    demux: Option<(Linear, Linear)>,
}

impl Embedding {
    pub fn new(
        source: &TensorSource,
        vocab: usize,
        dim: usize,
        low_rank: Option<usize>,
        demux: bool,
    ) -> Result<Self> {
        let inner = low_rank.unwrap_or(dim);
        let table = source.get((vocab, inner), "weight")?;
        let low_rank = match low_rank {
            // In the demux case the reference builds `low_rank` too (it is in the file) but its
            // forward pass never applies it: `out1`/`out2` project instead.
            Some(r) if !demux => Some(source.pp("low_rank").linear(r, dim, "weight")?),
            Some(r) => {
                source.get((dim, r), "low_rank.weight")?;
                None
            }
            None => None,
        };
        let demux = if demux {
            Some((
                source.pp("out1").linear(inner, dim, "weight")?,
                source.pp("out2").linear(inner, dim, "weight")?,
            ))
        } else {
            None
        };
        let zero = Tensor::zeros((1, 1, dim), table.dtype(), table.device())?;
        Ok(Embedding {
            table,
            zero,
            vocab,
            low_rank,
            demux,
        })
    }

    fn row(&self, index: usize) -> Result<Tensor> {
        if index >= self.vocab {
            candle_core::bail!(
                "token {index} is out of range for a vocabulary of {}",
                self.vocab
            )
        }
        self.table.narrow(0, index, 1)?.unsqueeze(0)
    }

    /// Embeds one token as `[1, 1, dim]`.
    pub fn embed(&self, token: i64) -> Result<Tensor> {
        if token == -1 {
            return Ok(self.zero.clone());
        }
        let token = token.max(0) as usize;
        match &self.demux {
            Some((out1, out2)) => {
                let left = token % self.vocab;
                let right = (token / self.vocab) as i64 - 1;
                let y = out1.forward(&self.row(left)?)?;
                if right < 0 {
                    // `out1(left) + where(right_zero, 0, ...)`: adding an exact zero.
                    y + &self.zero
                } else {
                    y + out2.forward(&self.row(right as usize)?)?
                }
            }
            None => {
                let y = self.row(token)?;
                match &self.low_rank {
                    Some(lr) => lr.forward(&y),
                    None => Ok(y),
                }
            }
        }
    }
}
