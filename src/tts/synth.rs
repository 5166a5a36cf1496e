//! The loaded TTS model ([`TtsModel`]: language model, tokenizer, Mimi) and streaming synthesis:
//! text -> entries -> tokens step by step -> Mimi decodes each frame -> PCM out, as
//! `TTSModel.simple_generate` of the reference does it, but frame by frame.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{DType, Device, Tensor};
use moshi::mimi::Mimi;
use moshi::streaming::{StreamMask, StreamTensor};

use super::batch::{TtsSlot, TtsStepper};
use super::conditioners::{Conditions, MAX_SPEAKERS};
use super::config::TtsConfig;
use super::generate::{GenerationSettings, Generator};
use super::lm::TtsLm;
use super::state_machine::{Entry, TokenIds, break_entry, script_to_entries, word_entry};
use super::text_stream::Item;
use crate::batch::{Batches, Batching, WhenBusy};
use crate::error::{MoshiError, Result};
use crate::models::TtsModelPaths;
use crate::pipeline::Pipelined;
use crate::text::Tokenizer;
use crate::weights::Weights;

/// Steps of padding after the last word (`final_padding` of the reference).
pub const FINAL_PADDING: usize = 4;

pub(crate) use crate::error::inference;

/// Everything the TTS loads once per engine and shares between conversations.
///
/// Applications get one from [`KyutaiEngine::tts_model`](crate::KyutaiEngine::tts_model), for
/// example to load the model before the first request; its workings are the crate's own.
pub struct TtsModel {
    #[doc(hidden)]
    pub lm: Arc<TtsLm>,
    /// The batches that step this model's conversations together.
    batches: Batches<TtsStepper>,
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
    /// Loads the model files of a TTS repository, the language model at the `weights` setting
    /// (see [`crate::weights::lm_source`]; `derived_dir` takes the quantized files of a language
    /// model outside the cache). Conversations share batched steps as `batching` says.
    #[doc(hidden)]
    pub fn load_weights(
        paths: &TtsModelPaths,
        device: &Device,
        weights: Weights,
        derived_dir: &Path,
        batching: Batching,
    ) -> Result<TtsModel> {
        let all = crate::models::TtsCodebooks::All;
        Self::load_codebooks(paths, device, weights, derived_dir, batching, all)
    }

    /// [`TtsModel::load_weights`] generating the audio codebooks `n_q` asks for
    /// ([`TtsConfig::generating`]).
    #[doc(hidden)]
    pub fn load_codebooks(
        paths: &TtsModelPaths,
        device: &Device,
        weights: Weights,
        derived_dir: &Path,
        batching: Batching,
        n_q: crate::models::TtsCodebooks,
    ) -> Result<TtsModel> {
        // The config first: a bad config.json (or n_q) is reported before gigabytes are read.
        let mut cfg = Self::config(paths)?;
        if let Some(n_q) = n_q.resolve(cfg.n_q) {
            cfg = cfg.generating(n_q)?;
        }
        let (source, _) =
            crate::weights::lm_source(&paths.lm_weights, weights, device, derived_dir)?;
        Self::assemble(paths, device, cfg, &source, batching)
    }

    /// Loads the model files of a TTS repository, the language model from `source` (the LM
    /// file read dense, or a quantized file; see [`crate::weights`]).
    #[doc(hidden)]
    pub fn load_source(
        paths: &TtsModelPaths,
        device: &Device,
        source: &crate::weights::TensorSource,
        batching: Batching,
    ) -> Result<TtsModel> {
        Self::assemble(paths, device, Self::config(paths)?, source, batching)
    }

    fn config(paths: &TtsModelPaths) -> Result<TtsConfig> {
        let bytes = std::fs::read(&paths.config)
            .map_err(|e| MoshiError::io("could not read", &paths.config, e))?;
        TtsConfig::from_json(&bytes)
    }

    fn assemble(
        paths: &TtsModelPaths,
        device: &Device,
        cfg: TtsConfig,
        source: &crate::weights::TensorSource,
        batching: Batching,
    ) -> Result<TtsModel> {
        // Mimi decodes the codebooks generated.
        let n_q = cfg.dep_q;
        let lm = Arc::new(TtsLm::new(cfg, source).map_err(|e| {
            MoshiError::invalid_file(
                &paths.lm_weights,
                format!("the weights do not match config.json: {e}"),
            )
        })?);
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
            None,
        )?;
        let frame_rate = mimi.config().frame_rate;
        let sample_rate = mimi.config().sample_rate as u32;
        let delay_steps = lm.cfg.delay_steps(frame_rate);
        let batch_lm = lm.clone();
        let new_batch = move |_size: usize| -> Result<TtsStepper> {
            Ok(TtsStepper {
                lm: batch_lm.clone(),
            })
        };
        Ok(TtsModel {
            lm,
            batches: Batches::new("text-to-speech", batching, Box::new(new_batch)),
            tokenizer,
            mimi,
            frame_rate,
            sample_rate,
            delay_steps,
            steps_run: AtomicU64::new(0),
        })
    }

    /// The Mimi codec (clone it to run it: the clone has its own state and shares the weights).
    #[doc(hidden)]
    pub fn mimi(&self) -> &Mimi {
        &self.mimi
    }

    /// Language-model steps this model has run, summed over all conversations: a measure of
    /// the work done, which also shows that a conversation whose listener went away stopped.
    #[doc(hidden)]
    pub fn steps_run(&self) -> u64 {
        self.steps_run.load(Ordering::Relaxed)
    }

    /// A conversation's place in this model's batched steps, waiting for one (or failing, as
    /// `when_busy` says) when all are taken; freed when dropped. Blocking.
    pub(crate) fn slot(&self, when_busy: WhenBusy) -> Result<TtsSlot> {
        self.batches.acquire(when_busy)
    }

    /// `(running, limit)`: conversations holding a slot now, and at most (`None`: no limit).
    pub fn conversations(&self) -> (usize, Option<usize>) {
        self.batches.conversations()
    }

    /// `(steps, slot-steps)` run so far; their ratio is the mean number of conversations per
    /// step.
    #[doc(hidden)]
    pub fn step_counters(&self) -> (u64, u64) {
        self.batches.counters()
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

    /// The entries of a segment's items, as `prepare_script` makes them for its words (the
    /// first word of a segment is a new turn: it carries the main speaker token on a
    /// multi-speaker model; `padding_between=1`). `first_word` tells whether the segment's
    /// first word is still to come.
    pub(crate) fn items_entries(&self, items: Vec<Item>, first_word: &mut bool) -> Vec<Entry> {
        let encode = |word: &str| -> Vec<i64> {
            self.tokenizer
                .encode(word)
                .into_iter()
                .map(i64::from)
                .collect()
        };
        let main = (self.multi_speaker()).then_some(self.token_ids().main);
        items
            .into_iter()
            .map(|item| match item {
                Item::Word(word) => {
                    let speaker = main.filter(|_| std::mem::take(first_word));
                    *first_word = false;
                    word_entry(&encode, &word, speaker, 1)
                }
                Item::Break(seconds) => break_entry(seconds, self.frame_rate),
            })
            .collect()
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
        Self::steps_bound(entries)
            + 16
            + self.delay_steps
            + FINAL_PADDING
            + self.lm.cfg.delays.len()
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
        let mut entries = Some(self.entries(text));
        self.synthesize_entries(&mut || entries.take(), conditions, settings, &mut |event| {
            match event {
                SegmentEvent::Audio(samples) => emit(samples),
                SegmentEvent::Word(_) => true,
            }
        })
    }

    /// Synthesizes one segment whose words come from `input` as they arrive: each call blocks
    /// until more entries are available and returns them, or `None` once the segment's text is
    /// complete. The model steps only while the words it may need are there (the reference's
    /// streaming rule, [`Generator::ready`]), so the result does not depend on when words
    /// arrive: it is the same as with the whole text at once. `on_event` receives each decoded
    /// frame's PCM and each word's timing, and returns false to stop early. It takes a slot of
    /// the model's batches for its steps, waiting for one if all are taken.
    #[doc(hidden)]
    pub fn synthesize_entries(
        &self,
        input: &mut dyn FnMut() -> Option<Vec<Entry>>,
        conditions: &Conditions,
        settings: &SynthesisSettings,
        on_event: &mut dyn FnMut(SegmentEvent) -> bool,
    ) -> Result<()> {
        let slot = self.slot(WhenBusy::Wait)?;
        self.synthesize_in_slot(&slot, input, conditions, settings, on_event)
    }

    /// [`synthesize_entries`](Self::synthesize_entries), its steps run in `slot`'s batch with
    /// the other conversations that have theirs ready.
    pub(crate) fn synthesize_in_slot(
        &self,
        slot: &TtsSlot,
        input: &mut dyn FnMut() -> Option<Vec<Entry>>,
        conditions: &Conditions,
        settings: &SynthesisSettings,
        on_event: &mut dyn FnMut(SegmentEvent) -> bool,
    ) -> Result<()> {
        let cfg = &self.lm.cfg;
        let prefix_frames = prefix_frames(conditions);
        let gen_settings = GenerationSettings {
            temp: settings.temp,
            text_temp: settings.text_temp,
            top_k: cfg.top_k,
            top_k_text: cfg.top_k_text,
            seed: settings.seed,
            final_padding: FINAL_PADDING,
            max_steps: self.max_steps(&[]) + prefix_frames,
        };
        let mut generator = Box::new(
            Generator::streaming(&self.lm, conditions, self.delay_steps, gen_settings)
                .map_err(|e| inference("preparing the generation", e))?,
        );
        // Nothing to say: no generation at all (as with an empty text given at once).
        let mut said_anything = false;
        let mut input_open = true;
        let mut timings = WordTimings::default();
        let mut mimi = self.mimi.clone();
        mimi.reset_state();
        let n_q = cfg.dep_q;
        let mut frames_seen = 0usize;
        // Mimi decodes on a thread of its own on the CPU, one frame behind the language model
        // (see [`Pipelined`]): the same audio, in the same order.
        let mut decoder = Pipelined::new(
            move |(codes, keep)| decode(&mut mimi, codes, keep),
            self.lm.device().is_cpu(),
        );
        let decoding = |e| inference("decoding audio with Mimi", e);
        // Audio events, in order, from the decoded frames as they come back; false when the
        // listener is gone.
        fn emit(
            on_event: &mut dyn FnMut(SegmentEvent) -> bool,
            decoded: Vec<Option<Vec<f32>>>,
        ) -> bool {
            decoded
                .into_iter()
                .flatten()
                .all(|samples| on_event(SegmentEvent::Audio(samples)))
        }
        while !generator.finished() {
            while input_open && !generator.ready() {
                match input() {
                    Some(entries) => {
                        said_anything |= !entries.is_empty();
                        let bound = Self::steps_bound(&entries);
                        generator.push_entries(entries, bound);
                    }
                    None => {
                        input_open = false;
                        generator.close_input();
                    }
                }
            }
            if !said_anything {
                return Ok(());
            }
            let (stepped, frame) = slot.step(generator)?;
            generator = stepped;
            self.steps_run.fetch_add(1, Ordering::Relaxed);
            for word in timings.update(&generator.state) {
                let decoded = decoder.ready().map_err(decoding)?;
                if !emit(on_event, decoded) || !on_event(SegmentEvent::Word(word)) {
                    return Ok(());
                }
            }
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
            let decoded = index - self.delay_steps;
            // The reference drops the first 2 decoded frames and cuts at `end_step`; the frames
            // of an audio prefix (the voice) are not part of the output either. They are decoded
            // all the same (Mimi's state follows every frame).
            let dropped = decoded < OUTPUT_SKIP_FRAMES + prefix_frames
                || generator
                    .state
                    .end_step
                    .is_some_and(|end| decoded - OUTPUT_SKIP_FRAMES >= end);
            let mut ready = decoder.push((codes, !dropped)).map_err(decoding)?;
            ready.extend(decoder.ready().map_err(decoding)?);
            if !emit(on_event, ready) {
                return Ok(());
            }
        }
        emit(on_event, decoder.drain().map_err(decoding)?);
        Ok(())
    }

    /// The share of the step cap that `entries` bring (see [`max_steps`](Self::max_steps)).
    fn steps_bound(entries: &[Entry]) -> usize {
        entries
            .iter()
            .map(|e| e.tokens.len() + e.padding + 8 + 2)
            .sum()
    }
}

/// One frame through Mimi: its audio (24 kHz mono, clipped to [-1, 1]) when `keep`.
fn decode(mimi: &mut Mimi, codes: Tensor, keep: bool) -> candle_core::Result<Option<Vec<f32>>> {
    let pcm = mimi.decode_step(&StreamTensor::from_tensor(codes), &StreamMask::empty())?;
    match pcm.as_option() {
        Some(pcm) if keep => Ok(Some(
            pcm.clamp(-1f32, 1f32)?
                .flatten_all()?
                .to_dtype(DType::F32)?
                .to_vec1::<f32>()?,
        )),
        _ => Ok(None),
    }
}

/// Decoded frames the reference drops at the start of its output.
const OUTPUT_SKIP_FRAMES: usize = 2;

/// What a segment's synthesis produces, in order.
#[derive(Debug, Clone, PartialEq)]
#[doc(hidden)]
pub enum SegmentEvent {
    /// The PCM of one frame (1920 samples, 24 kHz mono).
    Audio(Vec<f32>),
    /// A word, once its start and end are known.
    Word(WordTiming),
}

/// When a word is heard in a segment's output, in frames of 80 ms from the segment's first
/// output sample: the step at which the state machine fed the word to the model, less the frames
/// the output drops at its start (the model voices a word from the step it is fed); it ends when
/// the next word starts, or at the end of the speech.
#[derive(Debug, Clone, PartialEq, Eq)]
#[doc(hidden)]
pub struct WordTiming {
    /// The word as written.
    pub text: String,
    /// The text step at which it was fed (the reference's `TTSResult.all_transcripts`).
    pub step: usize,
    /// First frame of the output in which it is heard.
    pub start_frame: usize,
    /// The frame at which it ends.
    pub end_frame: usize,
}

/// Turns the state machine's transcript (`(word, step)` as each word is fed) into timings, each
/// word once, as soon as its end is known.
#[derive(Debug, Default)]
struct WordTimings {
    /// Words of the transcript already reported.
    reported: usize,
}

impl WordTimings {
    fn update(&mut self, state: &crate::tts::state_machine::State) -> Vec<WordTiming> {
        let transcript = &state.transcript;
        let frame = |step: usize| step.saturating_sub(OUTPUT_SKIP_FRAMES);
        let mut out = Vec::new();
        while self.reported < transcript.len() {
            let (text, step) = &transcript[self.reported];
            let end = match (transcript.get(self.reported + 1), state.end_step) {
                (Some((_, next)), _) => *next,
                (None, Some(end)) => end,
                (None, None) => break,
            };
            out.push(WordTiming {
                text: text.clone(),
                step: *step,
                start_frame: frame(*step),
                end_frame: frame(end).max(frame(*step)),
            });
            self.reported += 1;
        }
        out
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
