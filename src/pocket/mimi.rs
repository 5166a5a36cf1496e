//! Pocket TTS's continuous Mimi (`pocket_tts/models/mimi.py`, `modules/seanet.py`,
//! `modules/conv.py`, `modules/resample.py`): the decoder that turns 32-dim latents into 24 kHz
//! audio, frame by frame, and the encoder that turns a voice prompt into latents.
//!
//! This is not the `moshi` crate's Mimi: there are no codebooks (the "quantizer" is a 1x1
//! convolution), the upsampling convolution is grouped (one filter per channel), and the
//! layers' state is the reference's (`previous` context of each convolution, `partial` overlap
//! of each transposed one). The transformer is the crate's one `layers::Transformer`.
//!
//! The streaming convolutions, and why their products are ours, are in `pocket/conv.rs`.

use candle_core::{Device, Module, Result, Tensor};

use super::config::{MimiConfig, MimiTransformerConfig, SeanetConfig};
use super::conv::{Conv, ConvTr};
use crate::layers::{FeedForwardKind, Transformer, TransformerConfig, TransformerState};
use crate::lm_config::NormKind;
use crate::weights::{Linear, TensorSource};

/// `SEANetResnetBlock`: `x + conv(elu(conv(elu(x))))`.
struct ResBlock {
    convs: Vec<Conv>,
}

/// One element of a SEANet's `model` list.
enum SeanetLayer {
    Elu,
    Conv(Conv),
    ConvTr(ConvTr),
    Res(ResBlock),
}

/// The streaming state of one SEANet: one slot per convolution, in order.
#[derive(Default)]
struct SeanetState(Vec<Option<Tensor>>);

struct Seanet {
    layers: Vec<SeanetLayer>,
}

fn res_block(
    vb: &TensorSource,
    cfg: &SeanetConfig,
    dim: usize,
    dilation: usize,
    replicate: bool,
) -> Result<ResBlock> {
    let hidden = dim / cfg.compress;
    let k = cfg.residual_kernel_size;
    Ok(ResBlock {
        convs: vec![
            Conv::new(
                &vb.pp("block.1.conv"),
                dim,
                hidden,
                k,
                1,
                dilation,
                true,
                replicate,
            )?,
            Conv::new(
                &vb.pp("block.3.conv"),
                hidden,
                dim,
                1,
                1,
                1,
                true,
                replicate,
            )?,
        ],
    })
}

impl Seanet {
    /// `SEANetDecoder`, under `decoder.`.
    fn decoder(vb: &TensorSource, cfg: &SeanetConfig) -> Result<Seanet> {
        let rep = cfg.pad_mode == "replicate";
        let m = vb.pp("model");
        let mut mult = 1 << cfg.ratios.len();
        let nf = cfg.n_filters;
        let mut layers = vec![SeanetLayer::Conv(Conv::new(
            &m.pp("0.conv"),
            cfg.dimension,
            mult * nf,
            cfg.kernel_size,
            1,
            1,
            true,
            rep,
        )?)];
        for &ratio in &cfg.ratios {
            layers.push(SeanetLayer::Elu);
            let i = layers.len();
            layers.push(SeanetLayer::ConvTr(ConvTr::new(
                &m.pp(format!("{i}.convtr")),
                mult * nf,
                mult * nf / 2,
                2 * ratio,
                ratio,
                1,
                true,
            )?));
            for j in 0..cfg.n_residual_layers {
                let i = layers.len();
                let d = cfg.dilation_base.pow(j as u32);
                layers.push(SeanetLayer::Res(res_block(
                    &m.pp(i),
                    cfg,
                    mult * nf / 2,
                    d,
                    rep,
                )?));
            }
            mult /= 2;
        }
        layers.push(SeanetLayer::Elu);
        let i = layers.len();
        layers.push(SeanetLayer::Conv(Conv::new(
            &m.pp(format!("{i}.conv")),
            nf,
            cfg.channels,
            cfg.last_kernel_size,
            1,
            1,
            true,
            rep,
        )?));
        Ok(Seanet { layers })
    }

    /// `SEANetEncoder`, under `encoder.`.
    fn encoder(vb: &TensorSource, cfg: &SeanetConfig) -> Result<Seanet> {
        let rep = cfg.pad_mode == "replicate";
        let m = vb.pp("model");
        let nf = cfg.n_filters;
        let mut mult = 1;
        let mut layers = vec![SeanetLayer::Conv(Conv::new(
            &m.pp("0.conv"),
            cfg.channels,
            nf,
            cfg.kernel_size,
            1,
            1,
            true,
            rep,
        )?)];
        for &ratio in cfg.ratios.iter().rev() {
            for j in 0..cfg.n_residual_layers {
                let i = layers.len();
                let d = cfg.dilation_base.pow(j as u32);
                layers.push(SeanetLayer::Res(res_block(
                    &m.pp(i),
                    cfg,
                    mult * nf,
                    d,
                    rep,
                )?));
            }
            layers.push(SeanetLayer::Elu);
            let i = layers.len();
            layers.push(SeanetLayer::Conv(Conv::new(
                &m.pp(format!("{i}.conv")),
                mult * nf,
                mult * nf * 2,
                2 * ratio,
                ratio,
                1,
                true,
                rep,
            )?));
            mult *= 2;
        }
        layers.push(SeanetLayer::Elu);
        let i = layers.len();
        layers.push(SeanetLayer::Conv(Conv::new(
            &m.pp(format!("{i}.conv")),
            mult * nf,
            cfg.dimension,
            cfg.last_kernel_size,
            1,
            1,
            true,
            rep,
        )?));
        Ok(Seanet { layers })
    }

    fn forward(&self, x: &Tensor, state: &mut SeanetState) -> Result<Tensor> {
        let slots = self
            .layers
            .iter()
            .map(|l| match l {
                SeanetLayer::Elu => 0,
                SeanetLayer::Conv(_) | SeanetLayer::ConvTr(_) => 1,
                SeanetLayer::Res(r) => r.convs.len(),
            })
            .sum();
        state.0.resize_with(slots, || None);
        let mut slot = state.0.iter_mut();
        let mut x = x.clone();
        for layer in &self.layers {
            x = match layer {
                SeanetLayer::Elu => x.elu(1.0)?,
                SeanetLayer::Conv(c) => c.forward(&x, slot.next().expect("sized"))?,
                SeanetLayer::ConvTr(c) => c.forward(&x, slot.next().expect("sized"))?,
                SeanetLayer::Res(r) => {
                    let mut v = x.clone();
                    for conv in &r.convs {
                        v = conv.forward(&v.elu(1.0)?, slot.next().expect("sized"))?;
                    }
                    (x + v)?
                }
            };
        }
        Ok(x)
    }
}

/// `ProjectedTransformer` with one output.
struct Projected {
    input_proj: Option<Linear>,
    transformer: Transformer,
    output_proj: Option<Linear>,
}

impl Projected {
    fn new(vb: &TensorSource, cfg: &MimiTransformerConfig) -> Result<Projected> {
        let d = cfg.d_model;
        let tcfg = TransformerConfig {
            dim: d,
            num_heads: cfg.num_heads,
            num_layers: cfg.num_layers,
            dim_feedforward: cfg.dim_feedforward,
            norm: NormKind::Layer { eps: 1e-5 },
            feed_forward: FeedForwardKind::GeluTanh,
            kv_heads: cfg.num_heads,
            attn_dim: d,
            in_proj_name: "in_proj.weight",
            layer_scale: true,
            rope_max_period: Some(cfg.max_period),
            context: Some(cfg.context),
            schedule: Vec::new(),
            cross_attention: false,
        };
        let out = cfg.output_dimensions.first().copied().unwrap_or(d);
        Ok(Projected {
            input_proj: if cfg.input_dimension != d {
                Some(
                    vb.pp("input_proj")
                        .linear(cfg.input_dimension, d, "weight")?,
                )
            } else {
                None
            },
            transformer: Transformer::new(tcfg, &vb.pp("transformer"))?,
            output_proj: if out != d {
                Some(vb.pp("output_projs.0").linear(d, out, "weight")?)
            } else {
                None
            },
        })
    }

    /// `[1, C, T]` in and out.
    fn forward(&self, x: &Tensor, state: &mut TransformerState) -> Result<Tensor> {
        let mut x = x.transpose(1, 2)?.contiguous()?;
        if let Some(p) = &self.input_proj {
            x = p.forward(&x)?;
        }
        let mut z = self.transformer.forward(state, &x)?;
        if let Some(p) = &self.output_proj {
            z = p.forward(&z)?;
        }
        z.transpose(1, 2)?.contiguous()
    }
}

/// The decoding side of Mimi, shared by all conversations.
pub struct MimiDecoder {
    quantizer: Conv,
    upsample: Option<ConvTr>,
    transformer: Projected,
    seanet: Seanet,
}

/// Per-chunk streaming state of a [`MimiDecoder`].
pub struct DecoderState {
    upsample: Option<Tensor>,
    transformer: TransformerState,
    seanet: SeanetState,
}

/// The latent rate's stride over the SEANet's rate (16 for the published models), or `None`
/// when they are equal.
fn latent_stride(cfg: &MimiConfig, seanet: &SeanetConfig) -> Result<Option<usize>> {
    let hop: usize = seanet.ratios.iter().product();
    let encoder_rate = cfg.sample_rate as f64 / hop as f64;
    let stride = encoder_rate / cfg.frame_rate;
    if stride < 1.0 || stride.fract() != 0.0 {
        candle_core::bail!(
            "Mimi's frame rate {} is not an integer fraction of {encoder_rate}",
            cfg.frame_rate
        )
    }
    Ok((stride > 1.0).then_some(stride as usize))
}

impl MimiDecoder {
    /// The decoder under `mimi.`.
    pub fn new(cfg: &MimiConfig, vb: &TensorSource) -> Result<MimiDecoder> {
        let seanet_cfg = cfg.decoder_seanet();
        let outer = cfg.outer_dim.unwrap_or(seanet_cfg.dimension);
        let q = &cfg.quantizer;
        let upsample = match latent_stride(cfg, seanet_cfg)? {
            Some(stride) => Some(ConvTr::new(
                &vb.pp("upsample.convtr.convtr"),
                outer,
                seanet_cfg.dimension,
                2 * stride,
                stride,
                seanet_cfg.dimension,
                false,
            )?),
            None => None,
        };
        Ok(MimiDecoder {
            quantizer: Conv::new(
                &vb.pp("quantizer.output_proj"),
                q.dimension,
                q.output_dimension,
                1,
                1,
                1,
                false,
                false,
            )?,
            upsample,
            transformer: Projected::new(&vb.pp("decoder_transformer"), cfg.decoder_transformer())?,
            seanet: Seanet::decoder(&vb.pp("decoder"), seanet_cfg)?,
        })
    }

    /// A fresh state (each text chunk starts from one).
    pub fn new_state(&self) -> DecoderState {
        DecoderState {
            upsample: None,
            transformer: self.transformer.transformer.new_sequence_state(),
            seanet: SeanetState::default(),
        }
    }

    /// Decodes latents in Mimi's scale (`[1, T, 32]`) into `[1, 1, T * 1920]` audio.
    pub fn decode(&self, state: &mut DecoderState, latents: &Tensor) -> Result<Tensor> {
        let x = latents.transpose(1, 2)?.contiguous()?;
        let mut none = None;
        let mut x = self.quantizer.forward(&x, &mut none)?;
        if let Some(up) = &self.upsample {
            x = up.forward(&x, &mut state.upsample)?;
        }
        let x = self.transformer.forward(&x, &mut state.transformer)?;
        self.seanet.forward(&x, &mut state.seanet)
    }
}

/// The encoding side of Mimi (voice cloning): only in the gated weights.
pub struct MimiEncoder {
    seanet: Seanet,
    transformer: Projected,
    downsample: Option<Conv>,
    frame_samples: usize,
}

impl MimiEncoder {
    /// The encoder under `mimi.`.
    pub fn new(cfg: &MimiConfig, vb: &TensorSource) -> Result<MimiEncoder> {
        let s = &cfg.seanet;
        let downsample = match latent_stride(cfg, s)? {
            Some(stride) => Some(Conv::new(
                &vb.pp("downsample.conv.conv"),
                s.dimension,
                cfg.inner_dim.unwrap_or(s.dimension),
                2 * stride,
                stride,
                1,
                false,
                true,
            )?),
            None => None,
        };
        Ok(MimiEncoder {
            seanet: Seanet::encoder(&vb.pp("encoder"), s)?,
            transformer: Projected::new(&vb.pp("encoder_transformer"), &cfg.transformer)?,
            downsample,
            frame_samples: cfg.frame_samples(),
        })
    }

    /// Encodes 24 kHz mono audio into latents `[1, T, inner_dim]` (`encode_to_latent`): the
    /// audio is padded with zeros to a whole number of frames first.
    pub fn encode(&self, samples: &[f32], device: &Device) -> Result<Tensor> {
        let frames = samples.len().div_ceil(self.frame_samples).max(1);
        let mut padded = samples.to_vec();
        padded.resize(frames * self.frame_samples, 0.0);
        let x = Tensor::from_vec(padded, (1, 1, frames * self.frame_samples), device)?;
        let x = self.seanet.forward(&x, &mut SeanetState::default())?;
        let mut state = self.transformer.transformer.new_sequence_state();
        let mut x = self.transformer.forward(&x, &mut state)?;
        if let Some(down) = &self.downsample {
            x = down.forward(&x, &mut None)?;
        }
        x.transpose(1, 2)?.contiguous()
    }
}
