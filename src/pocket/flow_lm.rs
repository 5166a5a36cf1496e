//! Pocket TTS's flow language model (`pocket_tts/models/flow_lm.py`): a causal transformer over
//! the text tokens, the voice prompt and the latents generated so far, whose last output gives
//! the EOS logit and conditions the flow head that turns noise into the next 32-dim latent.
//!
//! The transformer is the crate's one `layers::Transformer` (interleaved RoPE, grouped-query
//! attention where a config has it, a plain GELU feed-forward, LayerNorms); its linears are
//! `weights::Linear`, so the `Weights` setting quantizes them as it does the 1.6B's.

use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};

use super::config::PocketConfig;
use super::head::FlowHead;
use super::noise::Noise;
use crate::layers::{FeedForwardKind, Norm, Transformer, TransformerConfig, TransformerState};
use crate::lm_config::NormKind;
use crate::weights::{Linear, TensorSource};

/// One generated frame: the latent (normalised, `[1, ldim]`) and the EOS logit.
#[derive(Debug, Clone)]
pub struct FlowStep {
    /// The next latent, normalised.
    pub latent: Tensor,
    /// The EOS head's logit at this step.
    pub eos_logit: f32,
}

/// Sampling settings of a generation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// The noise's variance (`temp`); its std is `sqrt(temp)`.
    pub temperature: f64,
    /// Truncates the noise to `[-clamp, clamp]` when set.
    pub noise_clamp: Option<f64>,
    /// Decoding steps of the head (LSD, flow matching).
    pub decode_steps: usize,
}

/// The flow LM's weights (shared by all conversations).
pub struct FlowLm {
    embed: Tensor,
    embed_proj: Option<Linear>,
    input_linear: Linear,
    transformer: Transformer,
    out_norm: Norm,
    z_proj: Option<Linear>,
    out_eos: candle_nn::Linear,
    head: FlowHead,
    emb_mean: Tensor,
    emb_std: Tensor,
    bos_emb: Tensor,
    bos_before_voice: Option<Tensor>,
    speaker_proj: Tensor,
    n_bins: usize,
    ldim: usize,
    dim: usize,
}

impl FlowLm {
    /// The model under `flow_lm.` of the published file.
    pub fn new(cfg: &PocketConfig, vb: &TensorSource) -> Result<Self> {
        let f = &cfg.flow_lm;
        let t = &f.transformer;
        let dim = t.d_model;
        let ldim = cfg.mimi.quantizer.dimension;
        let lut = &f.lookup_table;
        let tcfg = TransformerConfig {
            dim,
            num_heads: t.num_heads,
            num_layers: t.num_layers,
            dim_feedforward: t.dim_feedforward.unwrap_or(dim * t.hidden_scale),
            norm: NormKind::Layer { eps: 1e-5 },
            feed_forward: FeedForwardKind::GeluTanh,
            kv_heads: t.num_kv_heads.unwrap_or(t.num_heads),
            attn_dim: t.attn_dim.unwrap_or(dim),
            in_proj_name: "in_proj.weight",
            layer_scale: false,
            rope_max_period: Some(t.max_period),
            context: None,
            schedule: Vec::new(),
            cross_attention: false,
        };
        let out_dim = f.z_dim.unwrap_or(dim);
        let out_norm = vb.pp("out_norm");
        Ok(FlowLm {
            embed: vb.get(
                (lut.n_bins + 1, lut.rank.unwrap_or(lut.dim)),
                "conditioner.embed.weight",
            )?,
            embed_proj: match lut.rank {
                Some(rank) => Some(vb.pp("conditioner.proj").linear(rank, lut.dim, "weight")?),
                None => None,
            },
            input_linear: vb.pp("input_linear").linear(ldim, dim, "weight")?,
            transformer: Transformer::new(tcfg, &vb.pp("transformer"))?,
            out_norm: Norm::layer(out_norm.vb(), dim, 1e-5)?,
            z_proj: match f.z_dim {
                Some(z) => Some(vb.pp("z_proj").linear(dim, z, "weight")?),
                None => None,
            },
            out_eos: candle_nn::Linear::new(
                vb.get((1, out_dim), "out_eos.weight")?,
                Some(vb.get(1, "out_eos.bias")?),
            ),
            head: FlowHead::new(
                &vb.pp("flow_net"),
                f.flow.kind,
                ldim,
                f.flow.dim,
                f.flow.depth,
                out_dim,
            )?,
            emb_mean: vb.get(ldim, "emb_mean")?,
            emb_std: vb.get(ldim, "emb_std")?,
            bos_emb: vb.get(ldim, "bos_emb")?,
            bos_before_voice: if f.insert_bos_before_voice {
                Some(vb.get((1, 1, dim), "bos_before_voice")?)
            } else {
                None
            },
            speaker_proj: vb.get((dim, cfg.latent_conditioning_dim()), "speaker_proj_weight")?,
            n_bins: lut.n_bins,
            ldim,
            dim,
        })
    }

    /// The device the weights are on.
    pub fn device(&self) -> &Device {
        self.embed.device()
    }

    /// The latent width (32).
    pub fn latent_dim(&self) -> usize {
        self.ldim
    }

    /// A fresh state (no voice).
    pub fn new_state(&self) -> TransformerState {
        self.transformer.new_sequence_state()
    }

    /// A state from saved keys and values (a voice state file).
    pub fn state_from_kv(&self, kv: Vec<(Tensor, Tensor)>) -> Result<TransformerState> {
        self.transformer.state_from_kv(kv)
    }

    /// The text embeddings of `tokens`, `[1, T, dim]` (the lookup table, low-rank or not).
    pub fn embed_text(&self, tokens: &[u32]) -> Result<Tensor> {
        if let Some(bad) = tokens.iter().find(|&&t| t as usize > self.n_bins) {
            candle_core::bail!("token {bad} is out of range for {} bins", self.n_bins)
        }
        let ids = Tensor::new(tokens, self.device())?;
        let x = self.embed.index_select(&ids, 0)?.unsqueeze(0)?;
        match &self.embed_proj {
            Some(proj) => proj.forward(&x),
            None => Ok(x),
        }
    }

    /// The voice conditioning of Mimi latents (`[1, T, inner_dim]`): the speaker projection,
    /// with `bos_before_voice` first where the config says so. `[1, T(+1), dim]`.
    pub fn voice_conditioning(&self, latents: &Tensor) -> Result<Tensor> {
        let cond = latents
            .to_dtype(DType::F32)?
            .broadcast_matmul(&self.speaker_proj.t()?)?;
        match &self.bos_before_voice {
            Some(bos) => Tensor::cat(&[bos, &cond], 1),
            None => Ok(cond),
        }
    }

    /// Runs a prompt (text embeddings or voice conditioning, `[1, T, dim]`) through the
    /// transformer into `state`. The reference also samples a latent from the prompt's last
    /// position and throws it away; that draws noise, so `noise` is advanced by the same draw.
    pub fn prompt(
        &self,
        state: &mut TransformerState,
        embeddings: &Tensor,
        noise: &mut dyn Noise,
        sampling: &Sampling,
    ) -> Result<()> {
        if embeddings.dim(1)? == 0 {
            return Ok(());
        }
        self.transformer.forward(state, embeddings)?;
        noise.draw(self.ldim, sampling.temperature, sampling.noise_clamp)?;
        Ok(())
    }

    /// One generation step: the previous latent (`None` at the first step: BOS) in, the next
    /// latent and the EOS logit out.
    pub fn step(
        &self,
        state: &mut TransformerState,
        previous: Option<&Tensor>,
        noise: &mut dyn Noise,
        sampling: &Sampling,
    ) -> Result<FlowStep> {
        let input = match previous {
            Some(latent) => latent.reshape((1, 1, self.ldim))?,
            None => self.bos_emb.reshape((1, 1, self.ldim))?,
        };
        let x = self.input_linear.forward(&input)?;
        let out = self.transformer.forward(state, &x)?;
        let out = self.out_norm.forward(&out)?.i((.., 0, ..))?;
        let out = match &self.z_proj {
            Some(z) => z.forward(&out)?,
            None => out,
        };
        let eos_logit = self
            .out_eos
            .forward(&out)?
            .flatten_all()?
            .to_vec1::<f32>()?[0];
        let x0 = noise.draw(self.ldim, sampling.temperature, sampling.noise_clamp)?;
        let x0 = Tensor::from_vec(x0, (1, self.ldim), self.device())?;
        let latent = self.head.decode(&out, &x0, sampling.decode_steps)?;
        Ok(FlowStep { latent, eos_logit })
    }

    /// Latents in Mimi's scale (`latent * emb_std + emb_mean`), `[1, T, ldim]` from `[T, ldim]`
    /// rows.
    pub fn denormalize(&self, latents: &[Tensor]) -> Result<Tensor> {
        let x = Tensor::cat(latents, 0)?;
        x.broadcast_mul(&self.emb_std)?
            .broadcast_add(&self.emb_mean)?
            .unsqueeze(0)
    }

    /// The model width.
    pub fn dim(&self) -> usize {
        self.dim
    }
}
