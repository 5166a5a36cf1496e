//! A loaded Pocket TTS model and its generation rules (`pocket_tts/models/tts_model.py`).
//!
//! Per chunk of text: a copy of the voice state, one text-prompt pass, then one flow-LM step
//! per 80 ms frame until EOS (ignored in the first [`MIN_FRAMES_BEFORE_EOS`] frames) plus the
//! frames after it, or `max_gen_len = ceil((tokens / 3 + 2) * 12.5)` frames. Each chunk's audio
//! comes from a fresh Mimi decoder state, its first 5 ms faded in.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::config::PocketConfig;
use super::flow_lm::{FlowLm, Sampling};
use super::mimi::{DecoderState, MimiDecoder, MimiEncoder};
use super::noise::Noise;
use super::text::{TextOptions, prepare_text_prompt, split_into_chunks};
use super::tokenizer::PocketTokenizer;
use super::voice::VoiceState;
use crate::error::{MoshiError, Result, inference};
use crate::weights::TensorSource;

/// `_MIN_FRAMES_BEFORE_EOS`: before speech starts, the EOS logit of some voices can cross
/// the threshold.
pub const MIN_FRAMES_BEFORE_EOS: usize = 6;
const TOKENS_PER_SECOND: f64 = 3.0;
const GEN_SECONDS_PADDING: f64 = 2.0;

/// How one generation runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerateSettings {
    /// Temperature, noise clamp and decoding steps.
    pub sampling: Sampling,
    /// EOS counts when the EOS logit is above this.
    pub eos_threshold: f64,
    /// Frames after EOS (the EOS frame included); `None`: the reference's guess from the
    /// chunk's word count.
    pub frames_after_eos: Option<usize>,
    /// Tokens per chunk at most.
    pub max_tokens: usize,
}

impl GenerateSettings {
    /// The config's defaults: its temperature and EOS threshold, one decoding step, no clamp.
    pub fn defaults(config: &PocketConfig) -> Self {
        GenerateSettings {
            sampling: Sampling {
                temperature: config.default_temperature,
                noise_clamp: None,
                decode_steps: 1,
            },
            eos_threshold: config.default_eos_threshold,
            frames_after_eos: None,
            max_tokens: super::text::MAX_TOKENS_PER_CHUNK,
        }
    }
}

/// What one chunk's generation did (the parity tests compare it with the reference's).
#[derive(Debug, Clone)]
pub struct ChunkTrace {
    /// The chunk's text as the model read it.
    pub text: String,
    /// Its token ids.
    pub tokens: Vec<u32>,
    /// The latents, normalised (`[1, ldim]` each), one per frame emitted.
    pub latents: Vec<Tensor>,
    /// The EOS logit of every step run (one more than the frames when EOS ended the chunk).
    pub eos_logits: Vec<f32>,
    /// The step at which EOS was detected.
    pub eos_step: Option<usize>,
}

/// A loaded Pocket TTS: tokenizer, flow LM, Mimi decoder and (with the gated weights) encoder.
pub struct PocketModel {
    config: PocketConfig,
    text: TextOptions,
    tokenizer: PocketTokenizer,
    flow_lm: FlowLm,
    decoder: MimiDecoder,
    encoder: Option<MimiEncoder>,
}

/// The 5 ms fade-in over the first samples of each chunk (`torch.linspace(0, 1, sr // 200)`).
fn fade_in(samples: &mut [f32], sample_rate: usize) {
    let n = sample_rate / 200;
    for (i, s) in samples.iter_mut().take(n).enumerate() {
        *s *= if n > 1 {
            i as f32 / (n - 1) as f32
        } else {
            0.0
        };
    }
}

impl PocketModel {
    /// Builds the model from its tensors (`flow_lm.*`, `mimi.*`) and its tokenizer file.
    pub fn new(config: PocketConfig, vb: &TensorSource, tokenizer: &Path) -> Result<Self> {
        let lut = &config.flow_lm.lookup_table;
        let tokenizer = PocketTokenizer::load(tokenizer, lut.is_json(), lut.n_bins)?;
        let flow_lm = FlowLm::new(&config, &vb.pp("flow_lm"))
            .map_err(|e| inference("loading the flow LM", e))?;
        let mimi = vb.pp("mimi");
        let decoder = MimiDecoder::new(&config.mimi, &mimi)
            .map_err(|e| inference("loading the Mimi decoder", e))?;
        // The open weights have no encoder: cloning is then off.
        let encoder = if mimi.vb().contains_tensor("encoder.model.0.conv.weight") {
            Some(
                MimiEncoder::new(&config.mimi, &mimi)
                    .map_err(|e| inference("loading the Mimi encoder", e))?,
            )
        } else {
            None
        };
        Ok(PocketModel {
            text: TextOptions::from(&config),
            config,
            tokenizer,
            flow_lm,
            decoder,
            encoder,
        })
    }

    /// Loads the published safetensors file dense, as `dtype`.
    pub fn load(
        config: PocketConfig,
        weights: &Path,
        tokenizer: &Path,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let vb = crate::weights::dense::var_builder(weights, dtype, device).map_err(|e| {
            MoshiError::InvalidModelFile {
                path: weights.to_path_buf(),
                reason: e.to_string(),
            }
        })?;
        Self::new(config, &TensorSource::dense(vb), tokenizer)
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        self.flow_lm.device()
    }

    /// The model's config.
    pub fn config(&self) -> &PocketConfig {
        &self.config
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> &PocketTokenizer {
        &self.tokenizer
    }

    /// Whether a voice can be cloned from audio (the weights include Mimi's encoder).
    pub fn can_clone(&self) -> bool {
        self.encoder.is_some()
    }

    /// The sample rate of the audio (24 kHz).
    pub fn sample_rate(&self) -> usize {
        self.config.mimi.sample_rate
    }

    /// `max_gen_len` of a chunk of `tokens` tokens.
    pub fn max_frames(&self, tokens: usize) -> usize {
        ((tokens as f64 / TOKENS_PER_SECOND + GEN_SECONDS_PADDING) * self.config.mimi.frame_rate)
            .ceil() as usize
    }

    /// The chunks `text` is generated in.
    pub fn chunks(&self, text: &str, max_tokens: usize) -> Result<Vec<String>> {
        split_into_chunks(&self.tokenizer, text, max_tokens, &self.text)
    }

    /// The voice state of a voice prompt: 24 kHz mono samples, already cut by
    /// [`super::prompt_audio::prepare_prompt`]. Runs Mimi's encoder, the speaker projection and one
    /// flow-LM pass (which draws from `noise`, as the reference's does).
    pub fn voice_from_prompt(
        &self,
        samples: &[f32],
        noise: &mut dyn Noise,
        sampling: &Sampling,
    ) -> Result<VoiceState> {
        let Some(encoder) = &self.encoder else {
            return Err(MoshiError::AuthenticationRequired {
                repo: "kyutai/pocket-tts".into(),
                status: 403,
                advice: "voice cloning needs the gated weights, which hold Mimi's encoder: \
                         accept the licence at https://huggingface.co/kyutai/pocket-tts and set \
                         HF_TOKEN; the predefined voices work without it"
                    .into(),
            });
        };
        let mut run = || -> candle_core::Result<VoiceState> {
            let latents = encoder.encode(samples, self.flow_lm.device())?;
            let cond = self.flow_lm.voice_conditioning(&latents)?;
            let mut state = self.flow_lm.new_state();
            self.flow_lm.prompt(&mut state, &cond, noise, sampling)?;
            Ok(VoiceState { kv: state.kv()? })
        };
        run().map_err(|e| inference("encoding the voice prompt", e))
    }

    /// Generates one chunk's latents from `voice`, calling `on_latent` with each frame's latent
    /// (in Mimi's scale, `[1, 1, ldim]`) as it is made; `on_latent` returns `false` to stop.
    pub fn generate_chunk(
        &self,
        voice: &VoiceState,
        chunk: &str,
        settings: &GenerateSettings,
        noise: &mut dyn Noise,
        on_latent: &mut dyn FnMut(&Tensor) -> Result<bool>,
    ) -> Result<ChunkTrace> {
        let (text, guess) = prepare_text_prompt(chunk, &self.text)?;
        let frames_after_eos = self
            .config
            .frames_after_eos(settings.frames_after_eos, guess);
        let tokens = self.tokenizer.encode(&text)?;
        let max_frames = self.max_frames(tokens.len());
        let fail = |e| inference("generating speech", e);
        let mut state = self.flow_lm.state_from_kv(voice.kv.clone()).map_err(fail)?;
        let text_emb = self.flow_lm.embed_text(&tokens).map_err(fail)?;
        self.flow_lm
            .prompt(&mut state, &text_emb, noise, &settings.sampling)
            .map_err(fail)?;
        let mut trace = ChunkTrace {
            text,
            tokens,
            latents: Vec::new(),
            eos_logits: Vec::new(),
            eos_step: None,
        };
        let mut previous: Option<Tensor> = None;
        for step in 0..max_frames {
            let out = self
                .flow_lm
                .step(&mut state, previous.as_ref(), noise, &settings.sampling)
                .map_err(fail)?;
            trace.eos_logits.push(out.eos_logit);
            if trace.eos_step.is_none()
                && out.eos_logit as f64 > settings.eos_threshold
                && step >= MIN_FRAMES_BEFORE_EOS
            {
                trace.eos_step = Some(step);
            }
            if let Some(eos) = trace.eos_step
                && step >= eos + frames_after_eos
            {
                break;
            }
            let scaled = self
                .flow_lm
                .denormalize(std::slice::from_ref(&out.latent))
                .map_err(fail)?;
            trace.latents.push(out.latent.clone());
            if !on_latent(&scaled)? {
                break;
            }
            previous = Some(out.latent);
        }
        Ok(trace)
    }

    /// A fresh Mimi decoder state (one per chunk).
    pub fn decoder_state(&self) -> DecoderState {
        self.decoder.new_state()
    }

    /// Decodes latents in Mimi's scale (`[1, T, ldim]`) into samples; `first` fades the first
    /// 5 ms in (the first call of a chunk).
    pub fn decode(
        &self,
        state: &mut DecoderState,
        latents: &Tensor,
        first: bool,
    ) -> Result<Vec<f32>> {
        let audio = self
            .decoder
            .decode(state, latents)
            .and_then(|a| a.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>())
            .map_err(|e| inference("decoding audio", e))?;
        let mut audio = audio;
        if first {
            fade_in(&mut audio, self.sample_rate());
        }
        Ok(audio)
    }

    /// The whole pipeline on one thread: every chunk of `text`, each frame decoded as it is
    /// generated; `on_audio` gets each frame's samples and returns `false` to stop.
    pub fn synthesize(
        &self,
        voice: &VoiceState,
        text: &str,
        settings: &GenerateSettings,
        noise: &mut dyn Noise,
        on_audio: &mut dyn FnMut(Vec<f32>) -> Result<bool>,
    ) -> Result<Vec<ChunkTrace>> {
        let mut traces = Vec::new();
        for chunk in self.chunks(text, settings.max_tokens)? {
            let mut state = self.decoder_state();
            let mut first = true;
            let mut go_on = true;
            let trace = self.generate_chunk(voice, &chunk, settings, noise, &mut |latent| {
                let audio = self.decode(&mut state, latent, first)?;
                first = false;
                go_on = on_audio(audio)?;
                Ok(go_on)
            })?;
            traces.push(trace);
            if !go_on {
                break;
            }
        }
        Ok(traces)
    }
}
