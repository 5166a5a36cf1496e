//! The streaming transformer of every language model here: the 1.6B TTS's main (temporal)
//! transformer, with RoPE, a sliding context and cross-attention to the voice; its depformer,
//! which runs over the codebooks of one frame with a weight set per codebook
//! (`weights_per_step` and a schedule); and Pocket TTS's flow LM and Mimi transformer (plain GELU feed-forward,
//! grouped-query attention, prompts of many positions in one pass).
//!
//! It reads the published layouts: attention projections stacked as one in-projection
//! (`[steps * (q + 2 kv), d]`, named `in_proj_weight` by moshi and `in_proj.weight` by Pocket)
//! and `out_proj.weight`. Behaviour follows `StreamingTransformer` /
//! `StreamingMultiheadAttention` of the Python references: one step at a time for one sequence
//! or for several sharing the step ([`Transformer::step_rows`]: batched conversations, direct
//! CFG's two passes), or several positions of one sequence at once ([`Transformer::forward`]:
//! prompts, and Mimi's 16 positions per frame), causally masked within the context.

use candle_core::{D, DType, Device, Module, Result, Tensor};
use candle_nn::kv_cache::RotatingKvCache;

use super::blocks::{GatedFeedForward, Norm, matmul, softmax_last_dim};
use crate::lm_config::{Gating, NormKind};
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
    pub feed_forward: FeedForwardKind,
    /// Key/value heads, each shared by `num_heads / kv_heads` query heads (grouped-query
    /// attention); `num_heads` for plain multi-head attention.
    pub kv_heads: usize,
    /// Width of the queries and of the attention output (`dim` unless a config says otherwise).
    pub attn_dim: usize,
    /// The name of the stacked q/k/v weight under `self_attn`.
    pub in_proj_name: &'static str,
    pub layer_scale: bool,
    /// RoPE max period; `None` for no positional embedding (the depformer).
    pub rope_max_period: Option<f64>,
    /// Attention span in steps; `None` keeps every step (the depformer's few codebooks).
    pub context: Option<usize>,
    /// Step -> weight set; empty for a single weight set.
    pub schedule: Vec<usize>,
    pub cross_attention: bool,
}

/// The feed-forward block of each layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedForwardKind {
    /// moshi's `ActivationGating` (`gating.linear_in`, `gating.linear_out`): the 1.6B TTS.
    Gated(Gating),
    /// `linear2(gelu_tanh(linear1(x)))`, bias-free: Pocket TTS's flow LM and Mimi.
    GeluTanh,
}

impl TransformerConfig {
    /// The width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.attn_dim / self.num_heads
    }

    fn kv_dim(&self) -> usize {
        self.head_dim() * self.kv_heads
    }

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
    /// The 1.6B TTS's sliding window, one step at a time.
    Rotating(RotatingKvCache),
    /// Every key since `start` (the position of the first one kept), `[1, kv_heads, T, d]`; a
    /// sequence with a context drops the keys no later query can see.
    Growing {
        kv: Option<(Tensor, Tensor)>,
        start: usize,
    },
}

impl KvCache {
    fn growing() -> KvCache {
        KvCache::Growing { kv: None, start: 0 }
    }

    fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        match self {
            KvCache::Rotating(c) => c.append(k, v),
            KvCache::Growing { kv, .. } => {
                let next = match kv.take() {
                    None => (k.contiguous()?, v.contiguous()?),
                    Some((pk, pv)) => (Tensor::cat(&[&pk, k], 2)?, Tensor::cat(&[&pv, v], 2)?),
                };
                *kv = Some(next.clone());
                Ok(next)
            }
        }
    }

    /// Drops the keys before position `keep_from` (a growing cache only).
    fn forget_before(&mut self, keep_from: usize) -> Result<()> {
        if let KvCache::Growing {
            kv: Some((k, v)),
            start,
        } = self
            && keep_from > *start
        {
            let drop = keep_from - *start;
            let len = k.dim(2)?;
            let drop = drop.min(len);
            *k = k.narrow(2, drop, len - drop)?.contiguous()?;
            *v = v.narrow(2, drop, len - drop)?.contiguous()?;
            *start += drop;
        }
        Ok(())
    }
}

struct SelfAttention {
    in_projs: Vec<Linear>,
    out_projs: Vec<Linear>,
    num_heads: usize,
    kv_heads: usize,
}

/// One layer's feed-forward block (see [`FeedForwardKind`]).
enum FeedForward {
    Gated(GatedFeedForward),
    GeluTanh { linear1: Linear, linear2: Linear },
}

impl Module for FeedForward {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            FeedForward::Gated(g) => g.forward(xs),
            FeedForward::GeluTanh { linear1, linear2 } => {
                linear2.forward(&linear1.forward(xs)?.gelu()?)
            }
        }
    }
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
    feed_forward: Vec<FeedForward>,
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

/// Repeats each of `x`'s `[1, kv_heads, T, d]` heads `groups` times (`repeat_interleave` on the
/// head axis), so that query head `h` meets key head `h / groups`.
fn repeat_kv(x: &Tensor, groups: usize) -> Result<Tensor> {
    if groups == 1 {
        return Ok(x.clone());
    }
    let (b, h, t, d) = x.dims4()?;
    x.unsqueeze(2)?
        .expand((b, h, groups, t, d))?
        .reshape((b, h * groups, t, d))
}

/// Attention of `q` (`[1, H, Tq, d]`) to `k`, `v` (`[1, H, Tk, d]`); `mask` (`[Tq, Tk]`, 0 or
/// -inf) where some keys are hidden from some queries. One query step needs none: every cached
/// key is in its past and in its context.
fn attend(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let head_dim = q.dim(D::Minus1)?;
    let mut scores = (matmul(q, &k.t()?)? / (head_dim as f64).sqrt())?;
    if let Some(mask) = mask {
        scores = scores.broadcast_add(mask)?;
    }
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
            let qkv = cfg.attn_dim + 2 * cfg.kv_dim();
            let self_attn = SelfAttention {
                in_projs: sa.row_blocks((sets * qkv, d), cfg.in_proj_name, &vec![qkv; sets])?,
                out_projs: sa.row_blocks(
                    (sets * d, cfg.attn_dim),
                    "out_proj.weight",
                    &vec![d; sets],
                )?,
                num_heads: cfg.num_heads,
                kv_heads: cfg.kv_heads,
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
            let feed_forward = match cfg.feed_forward {
                FeedForwardKind::Gated(gating) if cfg.schedule.is_empty() => {
                    vec![FeedForward::Gated(GatedFeedForward::new(
                        &vb.pp("gating"),
                        d,
                        cfg.dim_feedforward,
                        gating,
                    )?)]
                }
                FeedForwardKind::Gated(gating) => (0..sets)
                    .map(|i| {
                        GatedFeedForward::new(
                            &vb.pp(format!("gating.{i}")),
                            d,
                            cfg.dim_feedforward,
                            gating,
                        )
                        .map(FeedForward::Gated)
                    })
                    .collect::<Result<_>>()?,
                FeedForwardKind::GeluTanh => vec![FeedForward::GeluTanh {
                    linear1: vb.pp("linear1").linear(d, cfg.dim_feedforward, "weight")?,
                    linear2: vb.pp("linear2").linear(cfg.dim_feedforward, d, "weight")?,
                }],
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
                feed_forward,
                layer_scale,
            });
        }
        let rope_table = match cfg.rope_max_period {
            Some(max_period) => {
                let head_dim = cfg.head_dim();
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
                None => KvCache::growing(),
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
        let (cos, sin) = rope_angles(max_period, self.cfg.head_dim(), step);
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

    /// The queries, keys and values of `h` (`[rows, T, dim]`) with RoPE applied: `[rows, H, T,
    /// d]` queries, `[rows, kv_heads, T, d]` keys and values.
    fn qkv(
        &self,
        sa: &SelfAttention,
        set: usize,
        h: &Tensor,
        rope: Option<&(Tensor, Tensor)>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let qkv = sa.in_projs[set].forward(h)?;
        let (qd, kvd) = (self.cfg.attn_dim, self.cfg.kv_dim());
        let mut q = split_heads(&qkv.narrow(D::Minus1, 0, qd)?, sa.num_heads)?;
        let mut k = split_heads(&qkv.narrow(D::Minus1, qd, kvd)?, sa.kv_heads)?;
        let v = split_heads(&qkv.narrow(D::Minus1, qd + kvd, kvd)?, sa.kv_heads)?;
        if let Some((cos, sin)) = rope {
            q = candle_nn::rotary_emb::rope_i(&q, cos, sin)?;
            k = candle_nn::rotary_emb::rope_i(&k, cos, sin)?;
        }
        Ok((q, k, v))
    }

    /// RoPE `cos` and `sin` (`[T, head_dim / 2]`) of `len` consecutive positions from `start`.
    fn rope_span(&self, start: usize, len: usize, x: &Tensor) -> Result<Option<(Tensor, Tensor)>> {
        let (Some(max_period), Some((cos, sin))) = (self.cfg.rope_max_period, &self.rope_table)
        else {
            return Ok(None);
        };
        if start + len <= ROPE_TABLE_STEPS {
            return Ok(Some((
                cos.narrow(0, start, len)?,
                sin.narrow(0, start, len)?,
            )));
        }
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for step in start..start + len {
            let (c, s) = rope_angles(max_period, self.cfg.head_dim(), step);
            cos.extend(c);
            sin.extend(s);
        }
        rope_tensors(cos, sin, len, x.device(), x.dtype()).map(Some)
    }

    /// Runs `T` consecutive positions of one sequence in one pass: `xs` is `[1, T, dim]`, the
    /// positions those after the state's. Each position attends to the cached keys and to the
    /// earlier positions of `xs` (a causal mask), within the context when there is one, as the
    /// reference's `_build_attention_mask` does. The state needs a growing cache
    /// ([`Transformer::new_sequence_state`]). `T = 0` returns `xs` and leaves the state as it is.
    pub fn forward(&self, state: &mut TransformerState, xs: &Tensor) -> Result<Tensor> {
        let (rows, t, _) = xs.dims3()?;
        if rows != 1 {
            candle_core::bail!("forward takes one sequence, got {rows}")
        }
        if t == 0 {
            return Ok(xs.clone());
        }
        let start = state.step;
        let rope = self.rope_span(start, t, xs)?;
        let mut x = xs.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            let h = layer.norm1.forward(&x)?;
            let sa = &layer.self_attn;
            let (q, k, v) = self.qkv(sa, 0, &h, rope.as_ref())?;
            let cache = &mut state.caches[i];
            if !matches!(cache, KvCache::Growing { .. }) {
                candle_core::bail!("forward needs a state from new_sequence_state")
            }
            if let Some(context) = self.cfg.context {
                // The first query (at `start`) sees keys after `start - context`.
                cache.forget_before((start + 1).saturating_sub(context))?;
            }
            let (k_all, v_all) = cache.append(&k, &v)?;
            let KvCache::Growing { start: first, .. } = cache else {
                unreachable!("checked above")
            };
            let mask = attention_mask(start, t, *first, k_all.dim(2)?, self.cfg.context, xs)?;
            let groups = sa.num_heads / sa.kv_heads;
            let attended = attend(
                &q,
                &repeat_kv(&k_all, groups)?,
                &repeat_kv(&v_all, groups)?,
                mask.as_ref(),
            )?;
            let update = sa.out_projs[0].forward(&attended)?;
            x = match &layer.layer_scale {
                Some((s1, _)) => (x + update.broadcast_mul(s1)?)?,
                None => (x + update)?,
            };
            if layer.cross.is_some() {
                candle_core::bail!("forward does not run cross-attention")
            }
            let h = layer.norm2.forward(&x)?;
            let update = layer.feed_forward[0].forward(&h)?;
            x = match &layer.layer_scale {
                Some((_, s2)) => (x + update.broadcast_mul(s2)?)?,
                None => (x + update)?,
            };
        }
        state.step += t;
        Ok(x)
    }

    /// A fresh state for [`Transformer::forward`]: growing caches (trimmed to the context, if
    /// any), no cross-attention.
    pub fn new_sequence_state(&self) -> TransformerState {
        TransformerState {
            caches: self.layers.iter().map(|_| KvCache::growing()).collect(),
            cross_kv: Vec::new(),
            step: 0,
        }
    }

    /// A state holding given keys and values (`[1, kv_heads, T, head_dim]` per layer, RoPE
    /// applied), as after `T` positions: a saved voice prompt.
    pub fn state_from_kv(&self, kv: Vec<(Tensor, Tensor)>) -> Result<TransformerState> {
        if kv.len() != self.layers.len() {
            candle_core::bail!(
                "{} layers of keys for {} layers",
                kv.len(),
                self.layers.len()
            )
        }
        let step = kv.first().map_or(Ok(0), |(k, _)| k.dim(2))?;
        let expected = (1, self.cfg.kv_heads, step, self.cfg.head_dim());
        for (k, v) in &kv {
            if k.dims4()? != expected || v.dims4()? != expected {
                candle_core::bail!(
                    "keys of shape {:?} / {:?}, expected {expected:?}",
                    k.shape(),
                    v.shape()
                )
            }
        }
        Ok(TransformerState {
            caches: kv
                .into_iter()
                .map(|(k, v)| KvCache::Growing {
                    kv: (step > 0).then_some((k, v)),
                    start: 0,
                })
                .collect(),
            cross_kv: Vec::new(),
            step,
        })
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
                return attend(q, &k, &v, None);
            }
            let mut outs = Vec::with_capacity(rows);
            for r in 0..rows {
                let (k, v) = per_row(r)?;
                outs.push(attend(&q.narrow(0, r, 1)?, &k, &v, None)?);
            }
            Tensor::cat(&outs, 0)
        };
        let mut x = xs.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            // Self-attention.
            let h = layer.norm1.forward(&x)?;
            let sa = &layer.self_attn;
            let (q, k, v) = self.qkv(sa, set, &h, rope.as_ref())?;
            let groups = sa.num_heads / sa.kv_heads;
            let attended = attend_rows(&q, &mut |r| {
                let (k_r, v_r) = if rows == 1 {
                    (k.clone(), v.clone())
                } else {
                    (k.narrow(0, r, 1)?, v.narrow(0, r, 1)?)
                };
                let (k_all, v_all) = states[r].caches[i].append(&k_r, &v_r)?;
                Ok((repeat_kv(&k_all, groups)?, repeat_kv(&v_all, groups)?))
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
            let ffn = &layer.feed_forward;
            let update = ffn[if ffn.len() == 1 { 0 } else { set }].forward(&h)?;
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

/// The additive mask of `t` queries from position `q_start` over `len` keys from `k_start`:
/// a key is seen when it is not after the query and, with a context, less than `context`
/// positions before it. `None` when every key is seen by every query.
fn attention_mask(
    q_start: usize,
    t: usize,
    k_start: usize,
    len: usize,
    context: Option<usize>,
    like: &Tensor,
) -> Result<Option<Tensor>> {
    let seen = |q: usize, k: usize| k <= q && context.is_none_or(|c| q - k < c);
    let all_seen = (q_start..q_start + t).all(|q| seen(q, k_start) && seen(q, k_start + len - 1));
    if all_seen {
        return Ok(None);
    }
    let mut mask = Vec::with_capacity(t * len);
    for q in q_start..q_start + t {
        for k in k_start..k_start + len {
            mask.push(if seen(q, k) { 0f32 } else { f32::NEG_INFINITY });
        }
    }
    Tensor::from_vec(mask, (t, len), like.device())?
        .to_dtype(like.dtype())
        .map(Some)
}

impl TransformerState {
    /// The position of the next step (the number of positions seen).
    pub fn step(&self) -> usize {
        self.step
    }

    /// Each layer's cached keys and values (`[1, kv_heads, T, head_dim]`), for a growing cache
    /// that has kept every position: what a saved voice prompt holds.
    pub fn kv(&self) -> Result<Vec<(Tensor, Tensor)>> {
        self.caches
            .iter()
            .map(|c| match c {
                KvCache::Growing {
                    kv: Some(kv),
                    start: 0,
                } => Ok(kv.clone()),
                _ => candle_core::bail!("this state does not hold every key"),
            })
            .collect()
    }

    /// Forgets the self-attention past (the depformer starts over at every frame); keeps the
    /// cross-attention keys.
    pub fn reset(&mut self) {
        for cache in &mut self.caches {
            match cache {
                KvCache::Rotating(c) => c.reset(),
                KvCache::Growing { kv, start } => {
                    *kv = None;
                    *start = 0;
                }
            }
        }
        self.step = 0;
    }
}
