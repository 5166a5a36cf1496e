//! The TTS language model (`LMModel` of the reference, `moshi/models/lm.py`): a main
//! transformer over time that predicts the text token, and a depformer that predicts the audio
//! codebooks of the same frame one after the other.

use candle_core::{DType, Device, Module, Result, Tensor};

use super::conditioners::{ConditionProvider, Conditions};
use super::config::TtsConfig;
use crate::layers::{Embedding, Norm};
use crate::layers::{FeedForwardKind, Transformer, TransformerConfig, TransformerState};
use crate::weights::{Linear, TensorSource};

/// The loaded weights, shared by every conversation.
pub struct TtsLm {
    /// The configuration the model was built from.
    pub cfg: TtsConfig,
    emb: Vec<Embedding>,
    text_emb: Embedding,
    transformer: Transformer,
    out_norm: Norm,
    text_linear: Linear,
    depformer_in: Vec<Linear>,
    depformer_emb: Vec<Embedding>,
    depformer_text_emb: Embedding,
    depformer: Transformer,
    linears: Vec<Linear>,
    conditions: Option<ConditionProvider>,
    device: Device,
    dtype: DType,
}

/// Per-conversation state of the model (KV caches, conditioning).
pub struct LmState {
    main: TransformerState,
    depformer: TransformerState,
    condition_sum: Option<Tensor>,
}

impl TtsLm {
    /// Loads the published safetensors file dense, as `dtype`.
    pub fn load(
        cfg: TtsConfig,
        weights: &std::path::Path,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let vb = crate::weights::dense::var_builder(weights, dtype, device)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Self::new(cfg, &TensorSource::dense(vb))
    }

    /// Builds the model from its tensors: the published file (dense) or its quantized GGUF.
    pub fn new(cfg: TtsConfig, vb: &TensorSource) -> Result<Self> {
        let dim = cfg.dim;
        let main_cfg = TransformerConfig {
            dim,
            num_heads: cfg.num_heads,
            num_layers: cfg.num_layers,
            dim_feedforward: (cfg.hidden_scale * dim as f64) as usize,
            norm: cfg.norm,
            feed_forward: FeedForwardKind::Gated(cfg.gating),
            kv_heads: cfg.num_heads,
            attn_dim: dim,
            in_proj_name: "in_proj_weight",
            layer_scale: cfg.layer_scale.is_some(),
            rope_max_period: Some(cfg.max_period),
            context: Some(cfg.context),
            schedule: Vec::new(),
            cross_attention: cfg.cross_attention,
        };
        let dep_cfg = TransformerConfig {
            dim: cfg.depformer_dim,
            num_heads: cfg.depformer_num_heads,
            num_layers: cfg.depformer_num_layers,
            dim_feedforward: cfg.depformer_dim_feedforward,
            norm: cfg.norm,
            feed_forward: FeedForwardKind::Gated(cfg.gating),
            kv_heads: cfg.depformer_num_heads,
            attn_dim: cfg.depformer_dim,
            in_proj_name: "in_proj_weight",
            layer_scale: cfg.layer_scale.is_some(),
            rope_max_period: None,
            context: None,
            schedule: cfg.depformer_schedule.clone(),
            cross_attention: false,
        };
        let emb = (0..cfg.n_q)
            .map(|i| Embedding::new(&vb.pp(format!("emb.{i}")), cfg.card + 1, dim, None, false))
            .collect::<Result<_>>()?;
        let text_emb = Embedding::new(
            &vb.pp("text_emb"),
            cfg.text_card + 1,
            dim,
            None,
            cfg.demux_second_stream,
        )?;
        let transformer = Transformer::new(main_cfg, &vb.pp("transformer"))?;
        let out_norm = Norm::new(vb.pp("out_norm").vb(), cfg.norm, dim)?;
        let text_linear = vb
            .pp("text_linear")
            .linear(dim, cfg.text_card_out, "weight")?;
        let num_in = if cfg.depformer_multi_linear {
            cfg.depformer_weight_sets()
        } else {
            1
        };
        let depformer_in = (0..num_in)
            .map(|i| {
                vb.pp(format!("depformer_in.{i}"))
                    .linear(dim, cfg.depformer_dim, "weight")
            })
            .collect::<Result<_>>()?;
        let low_rank = cfg.depformer_low_rank_embeddings;
        let depformer_emb = (0..cfg.dep_q.saturating_sub(1))
            .map(|i| {
                Embedding::new(
                    &vb.pp(format!("depformer_emb.{i}")),
                    cfg.card + 1,
                    cfg.depformer_dim,
                    low_rank,
                    false,
                )
            })
            .collect::<Result<_>>()?;
        let depformer_text_emb = Embedding::new(
            &vb.pp("depformer_text_emb"),
            cfg.text_card + 1,
            cfg.depformer_dim,
            low_rank,
            cfg.demux_second_stream,
        )?;
        let depformer = Transformer::new(dep_cfg, &vb.pp("depformer"))?;
        let linears = (0..cfg.dep_q)
            .map(|i| {
                vb.pp(format!("linears.{i}"))
                    .linear(cfg.depformer_dim, cfg.card, "weight")
            })
            .collect::<Result<_>>()?;
        let conditions = match &cfg.fuser {
            Some(fuser) => Some(ConditionProvider::new(
                &cfg.conditioners,
                fuser,
                dim,
                &vb.vb().clone().set_dtype(DType::F32),
            )?),
            None => None,
        };
        Ok(TtsLm {
            emb,
            text_emb,
            transformer,
            out_norm,
            text_linear,
            depformer_in,
            depformer_emb,
            depformer_text_emb,
            depformer,
            linears,
            conditions,
            device: vb.device().clone(),
            dtype: vb.dtype(),
            cfg,
        })
    }

    /// The device the weights are on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The weights' dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The conditioners, when the model has any.
    pub fn conditions(&self) -> Option<&ConditionProvider> {
        self.conditions.as_ref()
    }

    /// A fresh state conditioned on `conditions`.
    pub fn new_state(&self, conditions: &Conditions) -> Result<LmState> {
        let (sum, cross) = match &self.conditions {
            Some(provider) => {
                let fused = provider.fuse(conditions)?;
                (fused.sum, fused.cross)
            }
            None => (None, None),
        };
        let cross = cross.map(|c| c.to_dtype(self.dtype)).transpose()?;
        Ok(LmState {
            main: self.transformer.new_state(cross.as_ref())?,
            depformer: self.depformer.new_state(None)?,
            condition_sum: sum.map(|s| s.to_dtype(self.dtype)).transpose()?,
        })
    }

    /// One step of the main transformer (`forward_text`): `tokens` holds the text token then one
    /// token per audio codebook (`-1` embeds to zero). Returns the transformer output
    /// `[1, 1, dim]` (after `out_norm`) and the text logits as a vector.
    pub fn forward_text(&self, state: &mut LmState, tokens: &[i64]) -> Result<(Tensor, Vec<f32>)> {
        let (out, mut logits) = self.forward_rows(&mut [state], &[tokens.to_vec()], &[true])?;
        Ok((out, logits.pop().flatten().expect("one row with text")))
    }

    /// [`forward_text`](Self::forward_text) without the text logits, for a pass whose text
    /// prediction is not used (direct CFG's null pass).
    pub fn forward_hidden(&self, state: &mut LmState, tokens: &[i64]) -> Result<Tensor> {
        Ok(self
            .forward_rows(&mut [state], &[tokens.to_vec()], &[false])?
            .0)
    }

    /// One step of the main transformer for several sequences at once (row `r`: `states[r]`,
    /// `tokens[r]`), each at its own position: the weights are read once for all. Returns the
    /// outputs `[rows, 1, dim]` (after `out_norm`) and, for the rows whose `text[r]` is set, the
    /// text logits. Rows without text (direct CFG's null pass) skip the text head and its
    /// read-back to the host, which on a GPU would wait for the whole step.
    pub fn forward_rows(
        &self,
        states: &mut [&mut LmState],
        tokens: &[Vec<i64>],
        text: &[bool],
    ) -> Result<(Tensor, Vec<Option<Vec<f32>>>)> {
        let mut inputs = Vec::with_capacity(states.len());
        for (state, tokens) in states.iter().zip(tokens) {
            let mut input: Option<Tensor> = None;
            for (emb, &token) in self.emb.iter().zip(&tokens[1..]) {
                let e = emb.embed(token)?;
                input = Some(match input {
                    None => e,
                    Some(i) => (i + e)?,
                });
            }
            let text = self.text_emb.embed(tokens[0])?;
            let mut input = match input {
                None => text,
                Some(i) => (i + text)?,
            };
            if let Some(sum) = &state.condition_sum {
                input = (input + sum)?;
            }
            inputs.push(input);
        }
        let input = stack_rows(inputs)?;
        let mut mains: Vec<&mut TransformerState> =
            states.iter_mut().map(|s| &mut s.main).collect();
        let out = self.transformer.step_rows(&mut mains, &input)?;
        let out = self.out_norm.forward(&out)?;
        let text_rows: Vec<u32> = (0..text.len() as u32)
            .filter(|&r| text[r as usize])
            .collect();
        let mut logits = vec![None; states.len()];
        if !text_rows.is_empty() {
            let selected = if text_rows.len() == states.len() {
                out.clone()
            } else {
                let index = Tensor::new(text_rows.as_slice(), out.device())?;
                out.index_select(&index, 0)?
            };
            // Read back to the host: the text token is sampled there and drives the state
            // machine; one read for all rows.
            let values = self
                .text_linear
                .forward(&selected)?
                .flatten_from(1)?
                .to_dtype(DType::F32)?
                .to_vec2::<f32>()?;
            for (r, row) in text_rows.into_iter().zip(values) {
                logits[r as usize] = Some(row);
            }
        }
        Ok((out, logits))
    }

    /// Starts the depformer for a new frame.
    pub fn depformer_reset(&self, state: &mut LmState) {
        state.depformer.reset();
    }

    /// The logits of codebook `cb` given the previous token (the text token for `cb == 0`,
    /// else the audio token of codebook `cb - 1`) and the main transformer output.
    pub fn depformer_logits(
        &self,
        state: &mut LmState,
        cb: usize,
        prev_token: i64,
        transformer_out: &Tensor,
    ) -> Result<Vec<f32>> {
        let mut input = self.depformer_input(transformer_out.clone());
        let mut rows = self.depformer_rows(&mut [state], cb, &[prev_token], &mut input)?;
        Ok(rows.pop().expect("one row"))
    }

    /// A frame's main transformer output (`[rows, 1, dim]`), for the depformer's codebooks.
    pub fn depformer_input(&self, transformer_out: Tensor) -> DepformerInput {
        DepformerInput {
            transformer_out,
            projected: vec![None; self.depformer_in.len()],
        }
    }

    /// [`depformer_logits`](Self::depformer_logits) for several sequences at once, all at
    /// codebook `cb`: row `r` has `states[r]`, `prev_tokens[r]` and main output row `r` of
    /// `input`.
    pub fn depformer_rows(
        &self,
        states: &mut [&mut LmState],
        cb: usize,
        prev_tokens: &[i64],
        input: &mut DepformerInput,
    ) -> Result<Vec<Vec<f32>>> {
        let in_index = if self.depformer_in.len() == 1 {
            0
        } else {
            self.cfg.depformer_schedule[cb]
        };
        let x = match &input.projected[in_index] {
            Some(x) => x.clone(),
            None => {
                let x = self.depformer_in[in_index].forward(&input.transformer_out)?;
                input.projected[in_index] = Some(x.clone());
                x
            }
        };
        let emb = if cb == 0 {
            &self.depformer_text_emb
        } else {
            &self.depformer_emb[cb - 1]
        };
        let token_in = stack_rows(
            prev_tokens
                .iter()
                .map(|&t| emb.embed(t))
                .collect::<Result<Vec<_>>>()?,
        )?;
        let x = (x + token_in)?;
        let mut deps: Vec<&mut TransformerState> =
            states.iter_mut().map(|s| &mut s.depformer).collect();
        let out = self.depformer.step_rows(&mut deps, &x)?;
        let logits = self.linears[cb].forward(&out)?;
        // Read back to the host: the tokens are sampled there (seeded, as the reference) and the
        // next codebook's input depends on them, so this wait is one per codebook (for all rows).
        logits
            .flatten_from(1)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()
    }
}

/// A frame's main transformer output, projected into the depformer once per `depformer_in`
/// weight set: the codebooks that share a set (24 of the 32 in the published model) share its
/// projection, instead of computing the same product again.
pub struct DepformerInput {
    transformer_out: Tensor,
    projected: Vec<Option<Tensor>>,
}

/// One tensor of the rows `[1, ...]` of a batch, along the first dimension; a single row as it
/// is (no copy: the batch of one is the common case).
fn stack_rows(mut rows: Vec<Tensor>) -> Result<Tensor> {
    if rows.len() == 1 {
        return Ok(rows.pop().expect("one row"));
    }
    Tensor::cat(&rows, 0)
}
