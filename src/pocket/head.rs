//! The flow head (`pocket_tts/modules/mlp.py`, `SimpleMLPAdaLN`): a small MLP, modulated by the
//! transformer's output and by up to two time values, that turns a noise vector into the next
//! latent in one step (or a few). The decoding rules of each head kind are those of
//! `models/flow_lm.py` (`lsd_decode`, `ot_decode`, `drifting_decode`, `pointwise_decode`).

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::LayerNorm;

use super::config::HeadKind;
use crate::weights::{Linear, TensorSource};

/// A linear layer with bias, dense (the head is small: quantizing it would save little).
fn linear(vb: &TensorSource, in_dim: usize, out_dim: usize) -> Result<Linear> {
    Ok(Linear::Dense(candle_nn::Linear::new(
        vb.get((out_dim, in_dim), "weight")?,
        Some(vb.get(out_dim, "bias")?),
    )))
}

/// `x * (1 + scale) + shift`.
fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    x.broadcast_mul(&(scale + 1.0)?)?.broadcast_add(shift)
}

/// `TimestepEmbedder`: sinusoids of `t`, an MLP, and the reference's `RMSNorm`, which divides by
/// the square root of the *unbiased variance* (mean-subtracted) plus eps, not by the RMS.
struct TimestepEmbedder {
    freqs: Tensor,
    linear1: Linear,
    linear2: Linear,
    alpha: Tensor,
}

impl TimestepEmbedder {
    const FREQUENCIES: usize = 256;
    const EPS: f64 = 1e-5;

    fn new(vb: &TensorSource, hidden: usize) -> Result<Self> {
        let half = Self::FREQUENCIES / 2;
        Ok(TimestepEmbedder {
            freqs: vb.get(half, "freqs")?,
            linear1: linear(&vb.pp("mlp.0"), Self::FREQUENCIES, hidden)?,
            linear2: linear(&vb.pp("mlp.2"), hidden, hidden)?,
            alpha: vb.get(hidden, "mlp.3.alpha")?,
        })
    }

    /// The embedding of the time `t` (a scalar), `[1, hidden]`.
    fn forward(&self, t: f64) -> Result<Tensor> {
        let args = (&self.freqs * t)?;
        let emb = Tensor::cat(&[args.cos()?, args.sin()?], D::Minus1)?.unsqueeze(0)?;
        let x = self
            .linear2
            .forward(&candle_nn::ops::silu(&self.linear1.forward(&emb)?)?)?;
        let n = x.dim(D::Minus1)? as f64;
        let mean = x.mean_keepdim(D::Minus1)?;
        let var = (x.broadcast_sub(&mean)?.sqr()?.sum_keepdim(D::Minus1)? / (n - 1.0))?;
        let inv = (var + Self::EPS)?.sqrt()?.recip()?;
        x.broadcast_mul(&inv)?.broadcast_mul(&self.alpha)
    }
}

/// `ResBlock`: an adaptive LayerNorm, an MLP and a gated residual.
struct ResBlock {
    in_ln: LayerNorm,
    linear1: Linear,
    linear2: Linear,
    modulation: Linear,
}

impl ResBlock {
    fn forward(&self, x: &Tensor, y_silu: &Tensor) -> Result<Tensor> {
        let m = self.modulation.forward(y_silu)?.chunk(3, D::Minus1)?;
        let h = modulate(&self.in_ln.forward(x)?, &m[0], &m[1])?;
        let h = self
            .linear2
            .forward(&candle_nn::ops::silu(&self.linear1.forward(&h)?)?)?;
        x + m[2].broadcast_mul(&h)?
    }
}

/// The flow head of a flow LM.
pub struct FlowHead {
    kind: HeadKind,
    time_embed: Vec<TimestepEmbedder>,
    cond_embed: Linear,
    input_proj: Linear,
    res_blocks: Vec<ResBlock>,
    final_norm: LayerNorm,
    final_linear: Linear,
    final_modulation: Linear,
}

impl FlowHead {
    /// The head under `flow_net.`: `latent` wide in and out, `width` inside, conditioned on a
    /// `cond`-wide transformer output.
    pub fn new(
        vb: &TensorSource,
        kind: HeadKind,
        latent: usize,
        width: usize,
        depth: usize,
        cond: usize,
    ) -> Result<Self> {
        let time_embed = (0..kind.time_conditions())
            .map(|i| TimestepEmbedder::new(&vb.pp(format!("time_embed.{i}")), width))
            .collect::<Result<_>>()?;
        let res_blocks = (0..depth)
            .map(|i| {
                let b = vb.pp(format!("res_blocks.{i}"));
                Ok(ResBlock {
                    in_ln: LayerNorm::new(
                        b.get(width, "in_ln.weight")?,
                        b.get(width, "in_ln.bias")?,
                        1e-6,
                    ),
                    linear1: linear(&b.pp("mlp.0"), width, width)?,
                    linear2: linear(&b.pp("mlp.2"), width, width)?,
                    modulation: linear(&b.pp("adaLN_modulation.1"), width, 3 * width)?,
                })
            })
            .collect::<Result<_>>()?;
        let f = vb.pp("final_layer");
        let ones = Tensor::ones(width, DType::F32, vb.device())?;
        let zeros = Tensor::zeros(width, DType::F32, vb.device())?;
        Ok(FlowHead {
            kind,
            time_embed,
            cond_embed: linear(&vb.pp("cond_embed"), cond, width)?,
            input_proj: linear(&vb.pp("input_proj"), latent, width)?,
            res_blocks,
            final_norm: LayerNorm::new(ones, zeros, 1e-6),
            final_linear: linear(&f.pp("linear"), width, latent)?,
            final_modulation: linear(&f.pp("adaLN_modulation.1"), width, 2 * width)?,
        })
    }

    /// The MLP's output for `x` (`[1, latent]`) at the time values `ts`, conditioned on `c`
    /// (`[1, cond]`, already embedded by `cond_embed`).
    fn velocity(&self, cond: &Tensor, ts: &[f64], x: &Tensor) -> Result<Tensor> {
        let x = self.input_proj.forward(x)?;
        let mut y = cond.clone();
        if !ts.is_empty() {
            // `y + sum(emb(t)) / n`, the sum in the reference's order.
            let mut sum = self.time_embed[0].forward(ts[0])?;
            for (emb, &t) in self.time_embed.iter().zip(ts).skip(1) {
                sum = (sum + emb.forward(t)?)?;
            }
            y = (y + (sum / ts.len() as f64)?)?;
        }
        let y_silu = candle_nn::ops::silu(&y)?;
        let mut x = x;
        for block in &self.res_blocks {
            x = block.forward(&x, &y_silu)?;
        }
        let m = self
            .final_modulation
            .forward(&y_silu)?
            .chunk(2, D::Minus1)?;
        let x = modulate(&self.final_norm.forward(&x)?, &m[0], &m[1])?;
        self.final_linear.forward(&x)
    }

    /// The latent for the noise `x0` (`[1, latent]`), conditioned on the transformer output `c`
    /// (`[1, cond]`), in `steps` decoding steps (the head kinds that take only one ignore it).
    pub fn decode(&self, c: &Tensor, x0: &Tensor, steps: usize) -> Result<Tensor> {
        let cond = self.cond_embed.forward(c)?;
        match self.kind {
            HeadKind::Lsd => {
                let mut current = x0.clone();
                for i in 0..steps {
                    let s = i as f64 / steps as f64;
                    let t = (i + 1) as f64 / steps as f64;
                    let flow = self.velocity(&cond, &[s, t], &current)?;
                    current = (current + (flow / steps as f64)?)?;
                }
                Ok(current)
            }
            HeadKind::FlowMatching => {
                let mut current = x0.clone();
                for i in 0..steps {
                    let t = i as f64 / steps as f64;
                    let flow = self.velocity(&cond, &[t], &current)?;
                    current = (current + (flow / steps as f64)?)?;
                }
                Ok(current)
            }
            HeadKind::Drifting => self.velocity(&cond, &[], x0),
            HeadKind::Pointwise => x0 + self.velocity(&cond, &[], x0)?,
        }
    }
}
