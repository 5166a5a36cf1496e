//! The conditioners of the TTS model (`moshi/conditioners/`): LUT conditioners (`cfg`,
//! `control`: a value from a fixed list, embedded) summed into every step's input, and the tensor
//! conditioner `speaker_wavs` (voice embeddings) that the main transformer cross-attends to.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::config::{ConditionerCommon, ConditionerConfig, FuserConfig, LutConfig};
use super::layers::{Linear, linear};

/// Voice slots of the cross-attention source (`TTSModel.max_speakers`).
pub const MAX_SPEAKERS: usize = 5;

enum Conditioner {
    Lut {
        cfg: LutConfig,
        embed: Tensor,
        head: Head,
    },
    Tensor {
        dim: usize,
        head: Head,
    },
}

/// The end of every conditioner (`BaseConditioner.forward`): the projection into the model's
/// width, and what absent positions hold.
struct Head {
    /// `output_proj`; `None` for the identity (`force_linear = false` at the model's width).
    output_proj: Option<Linear>,
    /// `learnt_padding` `[1, 1, dim]`, or zeros when the padding is not learnt.
    padding: Tensor,
}

impl Head {
    fn new(vb: &VarBuilder, common: &ConditionerCommon, model_dim: usize) -> Result<Head> {
        let output_proj = match common.projected {
            true => Some(linear(
                &vb.pp("output_proj"),
                common.dim,
                model_dim,
                "weight",
            )?),
            false => None,
        };
        let padding = match common.learn_padding {
            true => vb.get((1, 1, model_dim), "learnt_padding")?,
            false => Tensor::zeros((1, 1, model_dim), vb.dtype(), vb.device())?,
        };
        Ok(Head {
            output_proj,
            padding,
        })
    }

    fn project(&self, x: &Tensor) -> Result<Tensor> {
        match &self.output_proj {
            Some(proj) => proj.forward(x),
            None => Ok(x.clone()),
        }
    }
}

/// What one request conditions on: a value per LUT conditioner (`None` = absent, as the null
/// condition of CFG) and voice embeddings (`[dim, frames]` each, up to [`MAX_SPEAKERS`]).
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    /// The value of each LUT conditioner, by name (`None`: absent).
    pub values: BTreeMap<String, Option<String>>,
    /// Voice embeddings, `[dim, frames]` each, one per speaker slot.
    pub voices: Vec<Tensor>,
    /// Every condition dropped (`dropout_all_conditions`): LUT values absent and voice slots
    /// masked, but of the voices' length, as the reference's null condition of direct CFG.
    pub dropped: bool,
    /// Direct (two-pass) classifier-free guidance with this coefficient, for models without a
    /// `cfg` conditioner: the generator also runs the null condition ([`Conditions::null`]).
    pub direct_cfg: Option<f64>,
    /// A voice given as audio (models without `speaker_wavs`, e.g. `kyutai/tts-0.75b-en-public`):
    /// the Mimi codes `[n_q][frames]` of the voice's audio, fed as the start of the generation
    /// (`TTSModel.get_prefix`); its frames are not part of the output.
    pub audio_prefix: Option<Vec<Vec<i64>>>,
}

impl Conditions {
    /// The null condition of direct CFG (`dropout_all_conditions`): the same request with every
    /// condition dropped, so the model sees only learnt paddings.
    pub fn null(&self) -> Conditions {
        Conditions {
            values: self.values.keys().map(|k| (k.clone(), None)).collect(),
            voices: self.voices.clone(),
            dropped: true,
            direct_cfg: None,
            audio_prefix: None,
        }
    }
}

/// The conditioners and the fuser, loaded from `condition_provider.conditioners.*`.
pub struct ConditionProvider {
    conditioners: BTreeMap<String, Conditioner>,
    fuser: FuserConfig,
    model_dim: usize,
}

/// The fused conditioning of one request.
pub struct Fused {
    /// `[1, 1, dim]`, added to every step's input.
    pub sum: Option<Tensor>,
    /// `[1, S, dim]`, the cross-attention source.
    pub cross: Option<Tensor>,
}

/// `create_sin_embedding(arange(len), dim)`: `[cos(phase), sin(phase)]`, computed in f32.
fn sin_embedding(len: usize, dim: usize, device: &Device) -> Result<Tensor> {
    let half = dim / 2;
    let mut data = vec![0f32; len * dim];
    for t in 0..len {
        for i in 0..half {
            let period = 10_000f32.powf(i as f32 / (half as f32 - 1.0));
            let phase = t as f32 / period;
            data[t * dim + i] = phase.cos();
            data[t * dim + half + i] = phase.sin();
        }
    }
    Tensor::from_vec(data, (1, len, dim), device)
}

impl ConditionProvider {
    /// Loads the conditioners of `configs` (weights under `condition_provider.conditioners`).
    pub fn new(
        configs: &BTreeMap<String, ConditionerConfig>,
        fuser: &FuserConfig,
        model_dim: usize,
        vb: &VarBuilder,
    ) -> Result<Self> {
        // The reference keeps the conditioners in f32 whatever the model dtype.
        let vb = vb.pp("condition_provider.conditioners");
        let mut conditioners = BTreeMap::new();
        for (name, config) in configs {
            let vb = vb.pp(name);
            let conditioner = match config {
                ConditionerConfig::Lut(lut) => Conditioner::Lut {
                    embed: vb.get((lut.n_bins + 1, lut.common.dim), "embed.weight")?,
                    head: Head::new(&vb, &lut.common, model_dim)?,
                    cfg: lut.clone(),
                },
                ConditionerConfig::Tensor(common) => Conditioner::Tensor {
                    dim: common.dim,
                    head: Head::new(&vb, common, model_dim)?,
                },
            };
            conditioners.insert(name.clone(), conditioner);
        }
        Ok(ConditionProvider {
            conditioners,
            fuser: fuser.clone(),
            model_dim,
        })
    }

    /// The `dim` of the tensor conditioner `name`, if there is one.
    pub fn tensor_dim(&self, name: &str) -> Option<usize> {
        match self.conditioners.get(name) {
            Some(Conditioner::Tensor { dim, .. }) => Some(*dim),
            _ => None,
        }
    }

    /// Whether the model has a conditioner `name`.
    pub fn has(&self, name: &str) -> bool {
        self.conditioners.contains_key(name)
    }

    /// One conditioner's output `[1, T, dim]` (masked positions hold `learnt_padding`).
    fn condition(&self, name: &str, conditions: &Conditions) -> Result<Tensor> {
        let Some(conditioner) = self.conditioners.get(name) else {
            candle_core::bail!("no conditioner named `{name}`")
        };
        match conditioner {
            Conditioner::Lut { cfg, embed, head } => {
                match conditions.values.get(name).cloned().flatten() {
                    _ if conditions.dropped => Ok(head.padding.clone()),
                    None => Ok(head.padding.clone()),
                    Some(value) => {
                        let Some(index) = cfg.possible_values.iter().position(|v| *v == value)
                        else {
                            candle_core::bail!(
                                "`{value}` is not a value of the `{name}` conditioner ({:?})",
                                cfg.possible_values
                            )
                        };
                        head.project(&embed.narrow(0, index, 1)?.unsqueeze(0)?)
                    }
                }
            }
            Conditioner::Tensor { dim, head } => {
                if conditions.voices.len() > MAX_SPEAKERS {
                    candle_core::bail!("at most {MAX_SPEAKERS} voices")
                }
                let frames = match conditions.voices.first() {
                    Some(v) => v.dim(1)?,
                    // No voice: the reference then gives no tensor at all; use one padded slot.
                    None => 1,
                };
                let padding = head.padding.to_dtype(DType::F32)?;
                let mut slots = Vec::with_capacity(MAX_SPEAKERS);
                for slot in 0..MAX_SPEAKERS {
                    match conditions.voices.get(slot) {
                        // Dropped voices keep their length, all positions masked.
                        Some(_) if conditions.dropped => {
                            slots.push(padding.broadcast_as((1, frames, self.model_dim))?)
                        }
                        Some(voice) => {
                            // [dim, frames] -> [1, frames, dim] -> projected.
                            let x = voice.t()?.unsqueeze(0)?.to_dtype(DType::F32)?;
                            if x.dim(2)? != *dim || x.dim(1)? != frames {
                                candle_core::bail!("voice embeddings must all be [{dim}, {frames}]")
                            }
                            slots.push(head.project(&x)?);
                        }
                        None if conditions.voices.is_empty() && slot > 0 => {}
                        None => slots.push(padding.broadcast_as((1, frames, self.model_dim))?),
                    }
                }
                Tensor::cat(&slots, 1)
            }
        }
    }

    /// Sums and concatenates the conditions as the fuser says (`get_sum`, `get_cross`).
    pub fn fuse(&self, conditions: &Conditions) -> Result<Fused> {
        let mut sum: Option<Tensor> = None;
        for name in &self.fuser.sum {
            let c = self.condition(name, conditions)?;
            sum = Some(match sum {
                None => c,
                Some(s) => (s + c)?,
            });
        }
        let mut cross: Option<Tensor> = None;
        for name in &self.fuser.cross {
            let c = self.condition(name, conditions)?;
            cross = Some(match cross {
                None => c,
                Some(s) => Tensor::cat(&[&s, &c], 1)?,
            });
        }
        if self.fuser.cross_attention_pos_emb
            && let Some(c) = &cross
        {
            let (_, len, dim) = c.dims3()?;
            let pos = sin_embedding(len, dim, c.device())?.to_dtype(c.dtype())?;
            cross = Some((c + (pos * self.fuser.cross_attention_pos_emb_scale)?)?);
        }
        Ok(Fused { sum, cross })
    }
}
