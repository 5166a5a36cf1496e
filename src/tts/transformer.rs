//! The streaming transformers of the TTS model: the main (temporal) transformer, with RoPE, a
//! sliding context and cross-attention to the voice; and the depformer, which runs over the
//! codebooks of one frame with a weight set per codebook (`weights_per_step` + schedule).
//!
//! Both read the published layout: attention projections stacked as `in_proj_weight`
//! (`[steps * 3 * d, d]`) and `out_proj.weight` (`[steps * d, d]`). Behaviour follows
//! `StreamingTransformer` / `StreamingMultiheadAttention` of the Python reference, for one
//! sequence and one step at a time (what generation needs).

use candle_core::{D, Module, Result, Tensor};
use candle_nn::VarBuilder;
use candle_nn::kv_cache::RotatingKvCache;

use super::config::{Gating, NormKind};
use super::layers::{
    GatedFeedForward, Linear, Norm, linear, matmul, softmax_last_dim, stacked_linears,
};

/// Shape and options of one transformer.
#[derive(Debug, Clone)]
pub struct TransformerConfig {
    pub dim: usize,
    pub num_heads: usize,
    pub num_layers: usize,
    pub dim_feedforward: usize,
    pub norm: NormKind,
    pub gating: Gating,
    pub layer_scale: bool,
    /// RoPE max period; `None` for no positional embedding (the depformer).
    pub rope_max_period: Option<f64>,
    /// Attention span in steps; `None` keeps every step (the depformer's few codebooks).
    pub context: Option<usize>,
    /// Step -> weight set; empty for a single weight set.
    pub schedule: Vec<usize>,
    pub cross_attention: bool,
}

impl TransformerConfig {
    fn weight_sets(&self) -> usize {
        self.schedule.iter().max().map_or(1, |m| m + 1)
    }

    fn set_for_step(&self, step: usize) -> Result<usize> {
        if self.schedule.is_empty() {
            return Ok(0);
        }
        self.schedule.get(step).copied().ok_or_else(|| {
            candle_core::Error::Msg(format!("step {step} is past the weight schedule"))
        })
    }
}

enum KvCache {
    Rotating(RotatingKvCache),
    Growing(Option<(Tensor, Tensor)>),
}

impl KvCache {
    fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        match self {
            KvCache::Rotating(c) => c.append(k, v),
            KvCache::Growing(kv) => {
                let next = match kv.take() {
                    None => (k.clone(), v.clone()),
                    Some((pk, pv)) => (Tensor::cat(&[&pk, k], 2)?, Tensor::cat(&[&pv, v], 2)?),
                };
                *kv = Some(next.clone());
                Ok(next)
            }
        }
    }
}

struct SelfAttention {
    in_projs: Vec<Linear>,
    out_projs: Vec<Linear>,
    num_heads: usize,
}

struct CrossAttention {
    q_proj: Linear,
    kv_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
}

struct Layer {
    norm1: Norm,
    self_attn: SelfAttention,
    cross: Option<(Norm, CrossAttention, Option<Tensor>)>,
    norm2: Norm,
    gating: Vec<GatedFeedForward>,
    layer_scale: Option<(Tensor, Tensor)>,
}

/// Weights of one transformer (shared between conversations).
pub struct Transformer {
    cfg: TransformerConfig,
    layers: Vec<Layer>,
}

/// Per-conversation streaming state of a [`Transformer`].
pub struct TransformerState {
    caches: Vec<KvCache>,
    /// Cross-attention keys and values per layer, computed once from the conditioning.
    cross_kv: Vec<(Tensor, Tensor)>,
    step: usize,
}

fn split_heads(x: &Tensor, num_heads: usize) -> Result<Tensor> {
    // [1, T, H * d] -> [1, H, T, d]
    let (b, t, c) = x.dims3()?;
    x.reshape((b, t, num_heads, c / num_heads))?
        .transpose(1, 2)?
        .contiguous()
}

fn attend(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    // No mask: one query step attends to every cached key (all in the past and in context).
    let head_dim = q.dim(D::Minus1)?;
    let scores = (matmul(q, &k.t()?)? / (head_dim as f64).sqrt())?;
    let probs = softmax_last_dim(&scores)?;
    let out = matmul(&probs, v)?; // [1, H, T, d]
    let (b, h, t, d) = out.dims4()?;
    out.transpose(1, 2)?.reshape((b, t, h * d))
}

impl Transformer {
    pub fn new(cfg: TransformerConfig, vb: &VarBuilder) -> Result<Self> {
        let d = cfg.dim;
        let sets = cfg.weight_sets();
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for l in 0..cfg.num_layers {
            let vb = vb.pp(format!("layers.{l}"));
            let sa = vb.pp("self_attn");
            let self_attn = SelfAttention {
                in_projs: stacked_linears(&sa.get((sets * 3 * d, d), "in_proj_weight")?, sets)?,
                out_projs: stacked_linears(&sa.get((sets * d, d), "out_proj.weight")?, sets)?,
                num_heads: cfg.num_heads,
            };
            let cross = if cfg.cross_attention {
                let ca = vb.pp("cross_attention");
                let w = ca.get((3 * d, d), "in_proj_weight")?;
                let attn = CrossAttention {
                    q_proj: Linear::new(w.narrow(0, 0, d)?.contiguous()?),
                    kv_proj: Linear::new(w.narrow(0, d, 2 * d)?.contiguous()?),
                    out_proj: linear(&ca.pp("out_proj"), d, d, "weight")?,
                    num_heads: cfg.num_heads,
                };
                let scale = if cfg.layer_scale {
                    Some(vb.get(d, "layer_scale_cross.scale")?)
                } else {
                    None
                };
                Some((Norm::layer(&vb.pp("norm_cross"), d, 1e-5)?, attn, scale))
            } else {
                None
            };
            let gating = if cfg.schedule.is_empty() {
                vec![GatedFeedForward::new(
                    &vb.pp("gating"),
                    d,
                    cfg.dim_feedforward,
                    cfg.gating,
                )?]
            } else {
                (0..sets)
                    .map(|i| {
                        GatedFeedForward::new(
                            &vb.pp(format!("gating.{i}")),
                            d,
                            cfg.dim_feedforward,
                            cfg.gating,
                        )
                    })
                    .collect::<Result<_>>()?
            };
            let layer_scale = if cfg.layer_scale {
                Some((
                    vb.get(d, "layer_scale_1.scale")?,
                    vb.get(d, "layer_scale_2.scale")?,
                ))
            } else {
                None
            };
            layers.push(Layer {
                norm1: Norm::new(&vb.pp("norm1"), cfg.norm, d)?,
                self_attn,
                cross,
                norm2: Norm::new(&vb.pp("norm2"), cfg.norm, d)?,
                gating,
                layer_scale,
            });
        }
        Ok(Transformer { cfg, layers })
    }

    /// A fresh streaming state. `cross_src` (`[1, S, dim]`) is the cross-attention source; its
    /// keys and values are computed here, once (`cache_cross_attention` in the reference).
    pub fn new_state(&self, cross_src: Option<&Tensor>) -> Result<TransformerState> {
        let caches = self
            .layers
            .iter()
            .map(|_| match self.cfg.context {
                Some(context) => KvCache::Rotating(RotatingKvCache::new(2, context)),
                None => KvCache::Growing(None),
            })
            .collect();
        let mut cross_kv = Vec::new();
        if let Some(src) = cross_src {
            for layer in &self.layers {
                let Some((_, ca, _)) = &layer.cross else {
                    continue;
                };
                let kv = ca.kv_proj.forward(src)?;
                let k = split_heads(&kv.narrow(D::Minus1, 0, self.cfg.dim)?, ca.num_heads)?;
                let v = split_heads(
                    &kv.narrow(D::Minus1, self.cfg.dim, self.cfg.dim)?,
                    ca.num_heads,
                )?;
                cross_kv.push((k, v));
            }
        }
        if self.cfg.cross_attention && cross_kv.len() != self.layers.len() {
            candle_core::bail!("this transformer needs a cross-attention source")
        }
        Ok(TransformerState {
            caches,
            cross_kv,
            step: 0,
        })
    }

    fn rope(&self, step: usize, head_dim: usize, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let max_period = self.cfg.rope_max_period.unwrap_or(10_000.0);
        // As `apply_rope`: freqs = exp(i * (-ln(max_period) * 2 / D)), angle = t * freq, in f32.
        let scale = (-(max_period.ln()) * 2.0 / head_dim as f64) as f32;
        let t = step as f32;
        let (cos, sin): (Vec<f32>, Vec<f32>) = (0..head_dim / 2)
            .map(|i| {
                let angle = t * (i as f32 * scale).exp();
                (angle.cos(), angle.sin())
            })
            .unzip();
        let n = head_dim / 2;
        let cos = Tensor::from_vec(cos, (1, n), x.device())?.to_dtype(x.dtype())?;
        let sin = Tensor::from_vec(sin, (1, n), x.device())?.to_dtype(x.dtype())?;
        Ok((cos, sin))
    }

    /// Runs one step: `xs` is `[1, 1, dim]`.
    pub fn step(&self, state: &mut TransformerState, xs: &Tensor) -> Result<Tensor> {
        let set = self.cfg.set_for_step(state.step)?;
        let head_dim = self.cfg.dim / self.cfg.num_heads;
        let rope = match self.cfg.rope_max_period {
            Some(_) => Some(self.rope(state.step, head_dim, xs)?),
            None => None,
        };
        let mut x = xs.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            // Self-attention.
            let h = layer.norm1.forward(&x)?;
            let sa = &layer.self_attn;
            let qkv = sa.in_projs[set].forward(&h)?;
            let d = self.cfg.dim;
            let mut q = split_heads(&qkv.narrow(D::Minus1, 0, d)?, sa.num_heads)?;
            let mut k = split_heads(&qkv.narrow(D::Minus1, d, d)?, sa.num_heads)?;
            let v = split_heads(&qkv.narrow(D::Minus1, 2 * d, d)?, sa.num_heads)?;
            if let Some((cos, sin)) = &rope {
                q = candle_nn::rotary_emb::rope_i(&q, cos, sin)?;
                k = candle_nn::rotary_emb::rope_i(&k, cos, sin)?;
            }
            let (k, v) = state.caches[i].append(&k, &v)?;
            let update = sa.out_projs[set].forward(&attend(&q, &k, &v)?)?;
            x = match &layer.layer_scale {
                Some((s1, _)) => (x + update.broadcast_mul(s1)?)?,
                None => (x + update)?,
            };
            // Cross-attention to the conditioning.
            if let Some((norm, ca, scale)) = &layer.cross {
                let h = norm.forward(&x)?;
                let q = split_heads(&ca.q_proj.forward(&h)?, ca.num_heads)?;
                let (k, v) = &state.cross_kv[i];
                let update = ca.out_proj.forward(&attend(&q, k, v)?)?;
                x = match scale {
                    Some(s) => (x + update.broadcast_mul(s)?)?,
                    None => (x + update)?,
                };
            }
            // Feed-forward.
            let h = layer.norm2.forward(&x)?;
            let gating = &layer.gating[if layer.gating.len() == 1 { 0 } else { set }];
            let update = gating.forward(&h)?;
            x = match &layer.layer_scale {
                Some((_, s2)) => (x + update.broadcast_mul(s2)?)?,
                None => (x + update)?,
            };
        }
        state.step += 1;
        Ok(x)
    }
}

impl TransformerState {
    /// Forgets the self-attention past (the depformer starts over at every frame); keeps the
    /// cross-attention keys.
    pub fn reset(&mut self) {
        for cache in &mut self.caches {
            match cache {
                KvCache::Rotating(c) => c.reset(),
                KvCache::Growing(kv) => *kv = None,
            }
        }
        self.step = 0;
    }
}
