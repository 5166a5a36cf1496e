//! The loaded TTS model ([`TtsModel`]: language model, tokenizer, Mimi) and streaming synthesis:
//! text -> entries -> tokens step by step -> Mimi decodes each frame -> PCM out, as
//! `TTSModel.simple_generate` of the reference does it, but frame by frame.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{DType, Device, Tensor};
use moshi::mimi::Mimi;
use moshi::streaming::{StreamMask, StreamTensor};

use super::conditioners::{Conditions, MAX_SPEAKERS};
use super::config::TtsConfig;
use super::generate::{GenerationSettings, Generator};
use super::lm::TtsLm;
use super::state_machine::{Entry, TokenIds, script_to_entries};
use crate::error::{MoshiError, Result};
use crate::models::TtsModelPaths;
use crate::text::Tokenizer;

/// Steps of padding after the last word (`final_padding` of the reference).
pub const FINAL_PADDING: usize = 4;
/// Words per generation segment: longer texts are split at sentence ends so that each segment
/// stays well inside the model's attention context (500 steps = 40 s) and memory stays bounded.
pub const MAX_SEGMENT_WORDS: usize = 60;

pub(crate) fn inference(context: &str, e: candle_core::Error) -> MoshiError {
    MoshiError::Inference {
        message: format!("{context}: {e}"),
        source: Some(std::sync::Arc::new(e)),
    }
}

/// Everything the TTS loads once per engine and shares between conversations.
///
/// Applications get one from [`KyutaiEngine::tts_model`](crate::KyutaiEngine::tts_model), for
/// example to load the model before the first request; its workings are the crate's own.
pub struct TtsModel {
    #[doc(hidden)]
    pub lm: TtsLm,
    #[doc(hidden)]
    pub tokenizer: Tokenizer,
    /// Loaded once; each conversation clones it (tensors are shared) and resets its state.
    mimi: Mimi,
    #[doc(hidden)]
    pub frame_rate: f64,
    #[doc(hidden)]
    pub sample_rate: u32,
    #[doc(hidden)]
    pub delay_steps: usize,
    /// Generation steps run so far, by every conversation (see [`TtsModel::steps_run`]).
    steps_run: AtomicU64,
}

/// Sampling settings of one conversation.
#[derive(Debug, Clone, Copy)]
pub struct SynthesisSettings {
    /// Audio temperature (0 = greedy).
    pub temp: f64,
    /// Text temperature (0 = greedy).
    pub text_temp: f64,
    /// Seed of the sampler (the same seed, the same audio).
    pub seed: u64,
}

impl TtsModel {
    /// Loads the model files of a TTS repository.
    #[doc(hidden)]
    pub fn load(paths: &TtsModelPaths, device: &Device, dtype: DType) -> Result<TtsModel> {
        let bytes = std::fs::read(&paths.config)
            .map_err(|e| MoshiError::io("could not read", &paths.config, e))?;
        let cfg = TtsConfig::from_json(&bytes)?;
        let n_q = cfg.n_q;
        let lm = TtsLm::load(cfg, &paths.lm_weights, device, dtype).map_err(|e| {
            MoshiError::invalid_file(
                &paths.lm_weights,
                format!("the weights do not match config.json: {e}"),
            )
        })?;
        let tokenizer = Tokenizer::from_file(&paths.tokenizer)?;
        if tokenizer.vocab_size() > lm.cfg.text_card {
            return Err(MoshiError::invalid_file(
                &paths.tokenizer,
                format!(
                    "the tokenizer has {} pieces, more than the model's text_card {}",
                    tokenizer.vocab_size(),
                    lm.cfg.text_card
                ),
            ));
        }
        let mimi = crate::codec::load_mimi(
            &paths.mimi_weights,
            paths.mimi_config.as_deref(),
            n_q,
            device,
            DType::F32,
        )?;
        let frame_rate = mimi.config().frame_rate;
        let sample_rate = mimi.config().sample_rate as u32;
        let delay_steps = lm.cfg.delay_steps(frame_rate);
        Ok(TtsModel {
            lm,
            tokenizer,
            mimi,
            frame_rate,
            sample_rate,
            delay_steps,
            steps_run: AtomicU64::new(0),
        })
    }

    /// Language-model steps this model has run, summed over all conversations: a measure of
    /// the work done, which also shows that a conversation whose listener went away stopped.
    #[doc(hidden)]
    pub fn steps_run(&self) -> u64 {
        self.steps_run.load(Ordering::Relaxed)
    }

    /// Whether the model is conditioned on voice embeddings (`speaker_wavs`).
    pub fn multi_speaker(&self) -> bool {
        self.lm.conditions().is_some_and(|c| c.has("speaker_wavs"))
    }

    /// Loads a voice embedding file (`speaker_wavs`, `[1, dim, frames]`) as `[dim, frames]`.
    #[doc(hidden)]
    pub fn load_voice(&self, path: &Path) -> Result<Tensor> {
        let expected = self
            .lm
            .conditions()
            .and_then(|c| c.tensor_dim("speaker_wavs"))
            .ok_or_else(|| {
                MoshiError::Unsupported("this TTS model takes no voice embeddings".into())
            })?;
        let tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| {
            MoshiError::invalid_file(path, format!("not a voice embedding file: {e}"))
        })?;
        let voice = tensors.get("speaker_wavs").ok_or_else(|| {
            MoshiError::invalid_file(path, "no `speaker_wavs` tensor: not a voice embedding file")
        })?;
        let dims = voice.dims();
        if dims.len() != 3 || dims[0] != 1 || dims[1] != expected || dims[2] == 0 {
            return Err(MoshiError::invalid_file(
                path,
                format!(
                    "`speaker_wavs` has shape {dims:?}, but this model takes [1, {expected}, frames]: \
                     the voice was made for another model"
                ),
            ));
        }
        voice
            .squeeze(0)
            .and_then(|v| v.to_dtype(DType::F32))
            .and_then(|v| v.to_device(self.lm.device()))
            .map_err(|e| inference("loading the voice", e))
    }

    /// The audio prefix of a voice given as audio (`TTSModel.get_prefix`), for models without
    /// voice embeddings: `pcm` (mono, at the model's sample rate) encoded by Mimi, without its
    /// last 2 frames, as `[n_q][frames]` codes for [`Conditions::audio_prefix`].
    #[doc(hidden)]
    pub fn audio_prefix(&self, pcm: &[f32]) -> Result<Vec<Vec<i64>>> {
        let encode = || -> candle_core::Result<Vec<Vec<i64>>> {
            let mut mimi = self.mimi.clone();
            mimi.reset_state();
            let x = Tensor::from_slice(pcm, (1, 1, pcm.len()), self.lm.device())?;
            let codes = mimi.encode(&x)?.squeeze(0)?;
            let frames = codes.dim(1)?.saturating_sub(2);
            let codes = codes.narrow(1, 0, frames)?.to_dtype(DType::I64)?;
            codes.to_vec2::<i64>()
        };
        let codes = encode().map_err(|e| inference("encoding the voice with Mimi", e))?;
        if codes.first().is_none_or(|c| c.is_empty()) {
            return Err(MoshiError::InvalidInput(format!(
                "the voice audio is too short ({} samples): give at least a quarter of a second",
                pcm.len()
            )));
        }
        Ok(codes)
    }

    /// Reads a voice given as audio (a `.wav` of `kyutai/tts-voices`, or any file the audio
    /// decoder reads), mono at the model's sample rate, and encodes it as an audio prefix
    /// ([`TtsModel::audio_prefix`]). The reference resamples with `sphn`, this crate with
    /// `rubato`: only audio already at 24 kHz gives the reference's exact codes.
    #[doc(hidden)]
    pub fn load_audio_voice(&self, path: &Path) -> Result<Vec<Vec<i64>>> {
        let mut decoder = crate::audio::AudioDecoder::open(path)?;
        let mut converter = crate::audio::MonoConverter::new(
            decoder.sample_rate(),
            decoder.channels(),
            self.sample_rate,
        )?;
        let mut pcm = Vec::new();
        while let Some(chunk) = decoder.next_chunk()? {
            pcm.extend(converter.push(&chunk)?);
            // The reference uses the whole file; a voice sample is seconds long. Refuse what
            // would crowd out the text in the model's context (500 steps = 40 s).
            if pcm.len() > 30 * self.sample_rate as usize {
                return Err(MoshiError::invalid_file(
                    path,
                    "the voice audio is longer than 30 s: give a sample of a few seconds",
                ));
            }
        }
        pcm.extend(converter.finish()?);
        self.audio_prefix(&pcm)
    }

    fn token_ids(&self) -> TokenIds {
        TokenIds::new(self.lm.cfg.text_card as i64 + 1)
    }

    /// `prepare_script([text], padding_between=1)`.
    #[doc(hidden)]
    pub fn entries(&self, text: &str) -> Vec<Entry> {
        let encode = |word: &str| -> Vec<i64> {
            self.tokenizer
                .encode(word)
                .into_iter()
                .map(i64::from)
                .collect()
        };
        script_to_entries(
            &encode,
            &self.token_ids(),
            self.frame_rate,
            &[text],
            self.multi_speaker(),
            1,
        )
    }

    /// The conditioning of `make_condition_attributes([voice], cfg_coef)`; on a model without a
    /// `cfg` conditioner, a coefficient other than 1 asks for direct (two-pass) CFG.
    #[doc(hidden)]
    pub fn conditions(&self, voice: Option<&Tensor>, cfg_coef: f64) -> Result<Conditions> {
        let mut conditions = Conditions::default();
        let Some(provider) = self.lm.conditions() else {
            if cfg_coef != 1.0 {
                conditions.direct_cfg = Some(cfg_coef);
            }
            return Ok(conditions);
        };
        if provider.has("control") {
            conditions
                .values
                .insert("control".into(), Some("ok".into()));
        }
        match self.lm.cfg.cfg_values() {
            Some(values) => {
                let valid: Vec<f64> = values.iter().filter_map(|v| v.parse().ok()).collect();
                if !valid.contains(&cfg_coef) {
                    return Err(MoshiError::InvalidInput(format!(
                        "this model was trained with CFG distillation and takes a CFG coefficient \
                         among {}, not {cfg_coef}",
                        values.join(", ")
                    )));
                }
                conditions
                    .values
                    .insert("cfg".into(), Some(format!("{cfg_coef:.1}")));
            }
            // No CFG distillation: guidance runs as a second, unconditioned pass (direct CFG).
            None if cfg_coef != 1.0 => {
                if !cfg_coef.is_finite() {
                    return Err(MoshiError::InvalidInput(format!(
                        "the CFG coefficient must be a finite number, not {cfg_coef}"
                    )));
                }
                conditions.direct_cfg = Some(cfg_coef);
            }
            None => {}
        }
        if provider.has("speaker_wavs") {
            let voice = voice.ok_or_else(|| {
                MoshiError::InvalidInput("this model needs a voice for every speaker".into())
            })?;
            conditions.voices.push(voice.clone());
            debug_assert!(conditions.voices.len() <= MAX_SPEAKERS);
        }
        Ok(conditions)
    }

    /// An upper bound on the steps `entries` can take: the state machine forces a word at least
    /// every `max_padding` steps, so generation always ends; this cap is only a guard.
    fn max_steps(&self, entries: &[Entry]) -> usize {
        let per_entry: usize = entries
            .iter()
            .map(|e| e.tokens.len() + e.padding + 8 + 2)
            .sum();
        per_entry + 16 + self.delay_steps + FINAL_PADDING + self.lm.cfg.delays.len()
    }

    /// Synthesizes one segment of text with one voice, calling `emit` with the PCM of each
    /// decoded frame (24 kHz mono, clipped to [-1, 1]) as soon as it is decoded. `emit` returns
    /// false to stop early (the listener went away).
    #[doc(hidden)]
    pub fn synthesize_segment(
        &self,
        text: &str,
        conditions: &Conditions,
        settings: &SynthesisSettings,
        emit: &mut dyn FnMut(Vec<f32>) -> bool,
    ) -> Result<()> {
        let entries = self.entries(text);
        if entries.is_empty() {
            return Ok(());
        }
        let cfg = &self.lm.cfg;
        let gen_settings = GenerationSettings {
            temp: settings.temp,
            text_temp: settings.text_temp,
            top_k: cfg.top_k,
            top_k_text: cfg.top_k_text,
            seed: settings.seed,
            final_padding: FINAL_PADDING,
            max_steps: self.max_steps(&entries) + prefix_frames(conditions),
        };
        let mut generator = Generator::new(
            &self.lm,
            entries,
            conditions,
            self.delay_steps,
            gen_settings,
        )
        .map_err(|e| inference("preparing the generation", e))?;
        let mut mimi = self.mimi.clone();
        mimi.reset_state();
        let n_q = cfg.n_q;
        let mut frames_seen = 0usize;
        let prefix_frames = prefix_frames(conditions);
        while !generator.finished() {
            let frame = generator
                .step()
                .map_err(|e| inference("running the language model", e))?;
            self.steps_run.fetch_add(1, Ordering::Relaxed);
            let Some(frame) = frame else {
                continue;
            };
            let index = frames_seen;
            frames_seen += 1;
            if index < self.delay_steps {
                continue;
            }
            let codes: Vec<u32> = frame[1..=n_q]
                .iter()
                .map(|&t| u32::try_from(t))
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| MoshiError::Inference {
                    message: "an audio token was missing past the audio delay".into(),
                    source: None,
                })?;
            let codes = Tensor::from_vec(codes, (1, n_q, 1), self.lm.device())
                .map_err(|e| inference("preparing Mimi codes", e))?;
            let pcm = mimi
                .decode_step(&StreamTensor::from_tensor(codes), &StreamMask::empty())
                .map_err(|e| inference("decoding audio with Mimi", e))?;
            let decoded = index - self.delay_steps;
            // The reference drops the first 2 decoded frames and cuts at `end_step`; the frames
            // of an audio prefix (the voice) are not part of the output either.
            if decoded < 2 + prefix_frames {
                continue;
            }
            if let Some(end) = generator.state.end_step
                && decoded - 2 >= end
            {
                continue;
            }
            let Some(pcm) = pcm.as_option() else {
                continue;
            };
            let samples = pcm
                .clamp(-1f32, 1f32)
                .and_then(|p| p.flatten_all())
                .and_then(|p| p.to_dtype(DType::F32))
                .and_then(|p| p.to_vec1::<f32>())
                .map_err(|e| inference("reading Mimi output", e))?;
            if !emit(samples) {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// Frames of the audio prefix (voice) of `conditions`, if any.
fn prefix_frames(conditions: &Conditions) -> usize {
    conditions
        .audio_prefix
        .as_ref()
        .and_then(|codes| codes.first())
        .map_or(0, Vec::len)
}

/// Splits a text into segments of at most `max_words` words, at sentence ends where possible
/// (`.`, `!`, `?`, `…` followed by a space), else at word boundaries.
///
/// ```
/// use fluent_voice_kyutai::internals::tts::synth::split_text;
/// assert_eq!(split_text("One two. Three four!", 3), ["One two.", "Three four!"]);
/// assert_eq!(split_text("a b c d e", 2), ["a b", "c d", "e"]);
/// assert_eq!(split_text("Short.", 60), ["Short."]);
/// ```
pub fn split_text(text: &str, max_words: usize) -> Vec<String> {
    let max_words = max_words.max(1);
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.len() <= max_words {
        return if words.is_empty() {
            Vec::new()
        } else {
            vec![text.trim().to_string()]
        };
    }
    // Sentences as word lists.
    let mut sentences: Vec<Vec<&str>> = vec![Vec::new()];
    for word in words {
        sentences.last_mut().expect("never empty").push(word);
        if word.ends_with(['.', '!', '?', '…']) {
            sentences.push(Vec::new());
        }
    }
    let mut segments: Vec<Vec<&str>> = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for sentence in sentences.into_iter().filter(|s| !s.is_empty()) {
        if !current.is_empty() && current.len() + sentence.len() > max_words {
            segments.push(std::mem::take(&mut current));
        }
        if sentence.len() > max_words {
            for chunk in sentence.chunks(max_words) {
                if !current.is_empty() {
                    segments.push(std::mem::take(&mut current));
                }
                current.extend_from_slice(chunk);
            }
        } else {
            current.extend(sentence);
        }
    }
    if !current.is_empty() {
        segments.push(current);
    }
    segments.into_iter().map(|s| s.join(" ")).collect()
}
