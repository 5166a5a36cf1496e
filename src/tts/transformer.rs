//! The streaming transformers of the TTS model: the main (temporal) transformer, with RoPE, a
//! sliding context and cross-attention to the voice; and the depformer, which runs over the
//! codebooks of one frame with a weight set per codebook (`weights_per_step` + schedule).
//!
//! Both read the published layout: attention projections stacked as `in_proj_weight`
//! (`[steps * 3 * d, d]`) and `out_proj.weight` (`[steps * d, d]`). Behaviour follows
//! `StreamingTransformer` / `StreamingMultiheadAttention` of the Python reference, one step at a
//! time (what generation needs), for one sequence or for several sharing the step (batched
//! conversations, and direct CFG's two passes).

use candle_core::{D, DType, Device, Module, Result, Tensor};
use candle_nn::kv_cache::RotatingKvCache;

use super::config::{Gating, NormKind};
use super::layers::{GatedFeedForward, Norm, matmul, softmax_last_dim};
use crate::weights::{Linear, TensorSource};

/// Positions whose RoPE angles are tabulated at load; later positions (a segment longer than
/// about 80 s) are computed at their step.
const ROPE_TABLE_STEPS: usize = 1024;

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
    /// RoPE `cos` and `sin`, `[ROPE_TABLE_STEPS, head_dim / 2]` in the activation dtype.
    rope_table: Option<(Tensor, Tensor)>,
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

/// RoPE angles of one position, as `apply_rope` computes them: `freq_i = exp(i * (-ln(max_period)
/// * 2 / D))`, `angle = t * freq_i`, in f32.
fn rope_angles(max_period: f64, head_dim: usize, step: usize) -> (Vec<f32>, Vec<f32>) {
    let scale = (-(max_period.ln()) * 2.0 / head_dim as f64) as f32;
    let t = step as f32;
    (0..head_dim / 2)
        .map(|i| {
            let angle = t * (i as f32 * scale).exp();
            (angle.cos(), angle.sin())
        })
        .unzip()
}

fn rope_tensors(
    cos: Vec<f32>,
    sin: Vec<f32>,
    rows: usize,
    device: &Device,
    dtype: DType,
) -> Result<(Tensor, Tensor)> {
    let n = cos.len() / rows;
    let cos = Tensor::from_vec(cos, (rows, n), device)?.to_dtype(dtype)?;
    let sin = Tensor::from_vec(sin, (rows, n), device)?.to_dtype(dtype)?;
    Ok((cos, sin))
}

impl Transformer {
    pub fn new(cfg: TransformerConfig, source: &TensorSource) -> Result<Self> {
        let d = cfg.dim;
        let sets = cfg.weight_sets();
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for l in 0..cfg.num_layers {
            let vb = source.pp(format!("layers.{l}"));
            let sa = vb.pp("self_attn");
            let self_attn = SelfAttention {
                in_projs: sa.row_blocks((sets * 3 * d, d), "in_proj_weight", &vec![3 * d; sets])?,
                out_projs: sa.row_blocks((sets * d, d), "out_proj.weight", &vec![d; sets])?,
                num_heads: cfg.num_heads,
            };
            let cross = if cfg.cross_attention {
                let ca = vb.pp("cross_attention");
                let mut qkv = ca.row_blocks((3 * d, d), "in_proj_weight", &[d, 2 * d])?;
                let kv_proj = qkv.pop().expect("two blocks");
                let q_proj = qkv.pop().expect("two blocks");
                let attn = CrossAttention {
                    q_proj,
                    kv_proj,
                    out_proj: ca.pp("out_proj").linear(d, d, "weight")?,
                    num_heads: cfg.num_heads,
                };
                let scale = if cfg.layer_scale {
                    Some(vb.get(d, "layer_scale_cross.scale")?)
                } else {
                    None
                };
                Some((Norm::layer(vb.pp("norm_cross").vb(), d, 1e-5)?, attn, scale))
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
                norm1: Norm::new(vb.pp("norm1").vb(), cfg.norm, d)?,
                self_attn,
                cross,
                norm2: Norm::new(vb.pp("norm2").vb(), cfg.norm, d)?,
                gating,
                layer_scale,
            });
        }
        let rope_table = match cfg.rope_max_period {
            Some(max_period) => {
                let head_dim = d / cfg.num_heads;
                let (mut cos, mut sin) = (Vec::new(), Vec::new());
                for step in 0..ROPE_TABLE_STEPS {
                    let (c, s) = rope_angles(max_period, head_dim, step);
                    cos.extend(c);
                    sin.extend(s);
                }
                let table =
                    rope_tensors(cos, sin, ROPE_TABLE_STEPS, source.device(), source.dtype())?;
                Some(table)
            }
            None => None,
        };
        Ok(Transformer {
            cfg,
            layers,
            rope_table,
        })
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

    /// RoPE `cos` and `sin` (`[1, head_dim / 2]`) of one position: a view of the table, or
    /// computed for a position past it.
    fn rope_at(&self, step: usize, x: &Tensor) -> Result<Option<(Tensor, Tensor)>> {
        let (Some(max_period), Some((cos, sin))) = (self.cfg.rope_max_period, &self.rope_table)
        else {
            return Ok(None);
        };
        if step < ROPE_TABLE_STEPS {
            return Ok(Some((cos.narrow(0, step, 1)?, sin.narrow(0, step, 1)?)));
        }
        let head_dim = self.cfg.dim / self.cfg.num_heads;
        let (cos, sin) = rope_angles(max_period, head_dim, step);
        rope_tensors(cos, sin, 1, x.device(), x.dtype()).map(Some)
    }

    /// RoPE `cos` and `sin` of each row's position: `[1, head_dim / 2]` for one row, else
    /// `[rows, 1, head_dim / 2]` (rows of a batch are at positions of their own).
    fn rope(&self, steps: &[usize], x: &Tensor) -> Result<Option<(Tensor, Tensor)>> {
        if let [step] = steps {
            return self.rope_at(*step, x);
        }
        let mut rows = Vec::with_capacity(steps.len());
        for &step in steps {
            match self.rope_at(step, x)? {
                Some(row) => rows.push(row),
                None => return Ok(None),
            }
        }
        let (cos, sin): (Vec<Tensor>, Vec<Tensor>) = rows.into_iter().unzip();
        Ok(Some((
            Tensor::cat(&cos, 0)?.unsqueeze(1)?,
            Tensor::cat(&sin, 0)?.unsqueeze(1)?,
        )))
    }

    /// Runs one step of several sequences at once: `xs` is `[rows, 1, dim]`, row `r` that of
    /// `states[r]`. The weights are read once for all rows (the matrix products take every row);
    /// attention runs row by row, each with its own cache and position, so that sequences that
    /// started at different moments share the step. Every row's weight set must be the same
    /// (the depformer's rows are all at the same codebook).
    pub fn step_rows(&self, states: &mut [&mut TransformerState], xs: &Tensor) -> Result<Tensor> {
        let rows = states.len();
        if rows == 0 || xs.dim(0)? != rows {
            candle_core::bail!("{} rows for {rows} states", xs.dim(0)?)
        }
        let set = self.cfg.set_for_step(states[0].step)?;
        for state in states.iter() {
            if self.cfg.set_for_step(state.step)? != set {
                candle_core::bail!("rows at steps of different weight sets cannot share a step")
            }
        }
        let steps: Vec<usize> = states.iter().map(|s| s.step).collect();
        let rope = self.rope(&steps, xs)?;
        // Attention of each row to its own keys; `per_row(r)` gives row r's keys and values.
        let attend_rows = |q: &Tensor,
                           per_row: &mut dyn FnMut(usize) -> Result<(Tensor, Tensor)>|
         -> Result<Tensor> {
            if rows == 1 {
                let (k, v) = per_row(0)?;
                return attend(q, &k, &v);
            }
            let mut outs = Vec::with_capacity(rows);
            for r in 0..rows {
                let (k, v) = per_row(r)?;
                outs.push(attend(&q.narrow(0, r, 1)?, &k, &v)?);
            }
            Tensor::cat(&outs, 0)
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
            let attended = attend_rows(&q, &mut |r| {
                let (k_r, v_r) = if rows == 1 {
                    (k.clone(), v.clone())
                } else {
                    (k.narrow(0, r, 1)?, v.narrow(0, r, 1)?)
                };
                states[r].caches[i].append(&k_r, &v_r)
            })?;
            let update = sa.out_projs[set].forward(&attended)?;
            x = match &layer.layer_scale {
                Some((s1, _)) => (x + update.broadcast_mul(s1)?)?,
                None => (x + update)?,
            };
            // Cross-attention to the conditioning.
            if let Some((norm, ca, scale)) = &layer.cross {
                let h = norm.forward(&x)?;
                let q = split_heads(&ca.q_proj.forward(&h)?, ca.num_heads)?;
                let attended = attend_rows(&q, &mut |r| Ok(states[r].cross_kv[i].clone()))?;
                let update = ca.out_proj.forward(&attended)?;
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
        for state in states.iter_mut() {
            state.step += 1;
        }
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
