//! [`Transcriber`]: one conversation's streaming state, fed 24 kHz mono audio, giving words.

use std::cell::RefCell;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use moshi::asr::AsrMsg;
use moshi::mimi::Mimi;
use moshi::streaming::{StreamMask, StreamTensor};

use super::batch::Slot;
use super::config::{FRAME_RATE, SttConfig};
use super::end_of_turn::{EndOfTurn, EndOfTurnSettings};
use crate::codec::SAMPLE_RATE;
use crate::error::MoshiError;
use crate::pipeline::Pipelined;
use crate::text::Tokenizer;
use crate::voice::{TranscriptEvent, TranscriptionSegment};

/// Samples per model step: 80 ms at 24 kHz (one Mimi frame).
pub const FRAME_SAMPLES: usize = 1920;

/// Trailing silence fed after the audio on top of the model's delay, so that the last word's
/// end is decided (Kyutai's `stt-rs` adds the same second).
const TAIL_SECONDS: f64 = 1.0;

/// Streaming speech-to-text for one audio stream.
///
/// Feed 24 kHz mono samples in chunks of any size with [`push`](Self::push); each call returns
/// what the model has decided so far: words, and (for models with voice-activity heads) each
/// step's pause probabilities and the ends of turns ([`EndOfTurn`]). [`finish`](Self::finish) pads the end with silence
/// (the model's delay plus a second) and returns the last words. Word timings follow the
/// `moshi` crate's `asr::State`: a word starts at the end-of-padding token that precedes it and
/// ends at the next one (or when the next word starts, or at the end of the audio), minus the
/// model's text delay and the silence prefix, clamped to the audio.
pub struct Transcriber {
    /// This stream's item of the model's batch.
    slot: Slot,
    /// This stream's Mimi encoder: on its own thread on the CPU, one frame ahead of the
    /// language model, within a push of several frames; the encoder is drained at the end of
    /// every push, so a live stream pushing a frame at a time gets no added latency (see
    /// [`Pipelined`]). The codes, and so the words, are the same as encoding inline.
    encoder: Pipelined<Tensor, Option<Tensor>>,
    device: Device,
    /// Steps this stream has run.
    steps: usize,
    tokenizer: Arc<Tokenizer>,
    frame: Vec<f32>,
    prefix_samples: usize,
    delay_steps: usize,
    tail_samples: usize,
    prefix_seconds: f64,
    started: bool,
    finished: bool,
    audio_samples: u64,
    pending: Option<(String, f64)>,
    trace: Option<RefCell<Trace>>,
    end_of_turn: EndOfTurn,
    progress: bool,
    word_starts: bool,
}

/// What [`Transcriber::record_text_tokens`] records, per step.
#[derive(Default)]
struct Trace {
    text_tokens: Vec<u32>,
    audio_codes: Vec<Vec<u32>>,
}

impl Transcriber {
    /// A transcriber stepping `state`'s language model on the codes of `mimi` (the state's own
    /// Mimi is not used: encoding runs apart, on its own thread when `threaded`; see
    /// [`Pipelined`]).
    pub(crate) fn new(
        slot: Slot,
        mimi: Mimi,
        threaded: bool,
        tokenizer: Arc<Tokenizer>,
        config: &SttConfig,
        device: Device,
    ) -> Transcriber {
        let rate = f64::from(SAMPLE_RATE);
        let settings = config.stt_config;
        Transcriber {
            slot,
            encoder: {
                let mut mimi = mimi;
                mimi.reset_state();
                Pipelined::new(move |pcm| encode(&mut mimi, pcm), threaded)
            },
            device,
            steps: 0,
            tokenizer,
            frame: Vec::with_capacity(FRAME_SAMPLES),
            prefix_samples: (settings.audio_silence_prefix_seconds * rate).round() as usize,
            delay_steps: config.delay_steps(),
            tail_samples: ((settings.audio_delay_seconds + TAIL_SECONDS) * rate).round() as usize,
            prefix_seconds: settings.audio_silence_prefix_seconds,
            started: false,
            finished: false,
            audio_samples: 0,
            pending: None,
            trace: None,
            end_of_turn: EndOfTurn::new(EndOfTurnSettings::default()),
            progress: false,
            word_starts: false,
        }
    }

    /// Uses `settings` for the end-of-turn rule.
    pub(crate) fn set_end_of_turn(&mut self, settings: EndOfTurnSettings) {
        self.end_of_turn = EndOfTurn::new(settings);
    }

    /// Reports [`TranscriptEvent::Progress`] after every step when `enabled`.
    pub(crate) fn report_progress(&mut self, enabled: bool) {
        self.progress = enabled;
    }

    /// Reports [`TranscriptEvent::WordStarted`] as each word starts when `enabled`.
    pub(crate) fn report_word_starts(&mut self, enabled: bool) {
        self.word_starts = enabled;
    }

    /// Records the text token the model picks and the Mimi codes of every frame (see
    /// [`text_tokens`](Self::text_tokens) and [`audio_codes`](Self::audio_codes)); for parity
    /// checks and debugging.
    pub fn record_text_tokens(&mut self) {
        self.trace = Some(RefCell::new(Trace::default()));
    }

    /// The text tokens picked so far, one per step, when recording. The `asr::State` exposes
    /// a step's token only as the next step's input, so the last step's token is missing.
    pub fn text_tokens(&self) -> Vec<u32> {
        self.trace
            .as_ref()
            .map(|t| t.borrow().text_tokens.clone())
            .unwrap_or_default()
    }

    /// The Mimi codes of each frame so far (one per codebook), in the order they were given to
    /// the model, when recording. (The `asr::State` feeds a frame's codes to the language model
    /// one step after the frame: frame `k`'s at step `k + 1`, the padding token at step 0.)
    pub fn audio_codes(&self) -> Vec<Vec<u32>> {
        self.trace
            .as_ref()
            .map(|t| t.borrow().audio_codes.clone())
            .unwrap_or_default()
    }

    /// Milliseconds of audio pushed so far.
    pub fn duration_ms(&self) -> u64 {
        self.audio_samples * 1000 / u64::from(SAMPLE_RATE)
    }

    /// Model steps run so far.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Feeds 24 kHz mono samples; returns what was decided so far.
    pub fn push(&mut self, samples: &[f32]) -> Result<Vec<TranscriptEvent>, MoshiError> {
        if self.finished {
            return Err(MoshiError::InvalidInput(
                "audio pushed after the end of the transcription".into(),
            ));
        }
        let mut words = Vec::new();
        if !self.started {
            self.started = true;
            self.feed_silence(self.prefix_samples, &mut words)?;
        }
        self.audio_samples += samples.len() as u64;
        self.feed(samples, &mut words)?;
        // The last frame of this chunk is not left with the encoder until the next chunk: a
        // live stream gets each frame's words as soon as it is stepped, and the overlap of
        // Mimi and the language model still works within a chunk of several frames.
        self.drain_encoder(&mut words)?;
        Ok(words)
    }

    /// Ends the audio: pads it with silence so the model decides its last words, and returns
    /// them. Audio without a single sample is an error (there is nothing to transcribe);
    /// silence is not (it gives no words).
    pub fn finish(&mut self) -> Result<Vec<TranscriptEvent>, MoshiError> {
        if self.audio_samples == 0 {
            return Err(MoshiError::InvalidInput(
                "the audio holds no samples (0 seconds): there is nothing to transcribe".into(),
            ));
        }
        if self.finished {
            return Ok(Vec::new());
        }
        let mut words = Vec::new();
        let partial = (FRAME_SAMPLES - self.frame.len()) % FRAME_SAMPLES;
        self.feed_silence(partial + self.tail_samples, &mut words)?;
        self.drain_encoder(&mut words)?;
        self.finished = true;
        if let Some((text, start)) = self.pending.take() {
            let end = self.now();
            self.word(text, start, end, &mut words);
        }
        Ok(words)
    }

    /// Steps the model on the frames still with the encoder.
    fn drain_encoder(&mut self, events: &mut Vec<TranscriptEvent>) -> Result<(), MoshiError> {
        for codes in self
            .encoder
            .drain()
            .map_err(inference)?
            .into_iter()
            .flatten()
        {
            self.step_codes(&codes, events)?;
        }
        Ok(())
    }

    fn feed_silence(
        &mut self,
        n: usize,
        words: &mut Vec<TranscriptEvent>,
    ) -> Result<(), MoshiError> {
        let zeros = [0.0f32; FRAME_SAMPLES];
        let mut left = n;
        while left > 0 {
            let k = left.min(FRAME_SAMPLES);
            self.feed(&zeros[..k], words)?;
            left -= k;
        }
        Ok(())
    }

    fn feed(
        &mut self,
        mut samples: &[f32],
        words: &mut Vec<TranscriptEvent>,
    ) -> Result<(), MoshiError> {
        while !samples.is_empty() {
            let take = (FRAME_SAMPLES - self.frame.len()).min(samples.len());
            self.frame.extend_from_slice(&samples[..take]);
            samples = &samples[take..];
            if self.frame.len() == FRAME_SAMPLES {
                self.step(words)?;
                self.frame.clear();
            }
        }
        Ok(())
    }

    /// Encodes the 1920 samples in `self.frame`, and runs a model step on the codes ready.
    fn step(&mut self, events: &mut Vec<TranscriptEvent>) -> Result<(), MoshiError> {
        let pcm = Tensor::from_slice(&self.frame, (1, 1, FRAME_SAMPLES), &self.device)
            .map_err(inference)?;
        // Mimi holds the audio until it has a whole frame of codes (`None`).
        for codes in self
            .encoder
            .push(pcm)
            .map_err(inference)?
            .into_iter()
            .flatten()
        {
            self.step_codes(&codes, events)?;
        }
        Ok(())
    }

    /// One model step, in the model's batch, on one frame of Mimi codes (`[1, n_q, 1]`).
    fn step_codes(
        &mut self,
        codes: &Tensor,
        events: &mut Vec<TranscriptEvent>,
    ) -> Result<(), MoshiError> {
        let codes = codes
            .flatten_all()
            .and_then(|c| c.to_vec1::<u32>())
            .map_err(inference)?;
        if let Some(trace) = &self.trace {
            trace.borrow_mut().audio_codes.push(codes.clone());
        }
        let step = self.slot.step(codes)?;
        self.steps += 1;
        if let (Some(trace), Some(token)) = (&self.trace, step.previous_text_token) {
            trace.borrow_mut().text_tokens.push(token);
        }
        let msgs = step.msgs;
        for msg in msgs {
            match msg {
                AsrMsg::Word {
                    tokens, start_time, ..
                } => {
                    if let Some((text, start)) = self.pending.take() {
                        let end = self.now();
                        self.word(text, start, end, events);
                    }
                    let text = self.tokenizer.decode(&tokens);
                    if self.word_starts && !text.trim().is_empty() {
                        events.push(TranscriptEvent::WordStarted {
                            text: text.trim().to_string(),
                            start_ms: self.audio_ms(start_time).min(self.duration_ms()),
                        });
                    }
                    self.pending = Some((text, start_time));
                }
                AsrMsg::EndWord { stop_time, .. } => {
                    if let Some((text, start)) = self.pending.take() {
                        self.word(text, start, stop_time, events);
                    }
                }
                AsrMsg::Step { prs, .. } => {
                    // One value per head for the one stream of this state (batch of 1).
                    let pause_probabilities: Vec<f32> = prs
                        .iter()
                        .filter_map(|head| head.first().copied())
                        .collect();
                    let time_ms = self.heard_ms();
                    let ends = self.end_of_turn.on_step(&pause_probabilities);
                    events.push(TranscriptEvent::VoiceActivity {
                        time_ms,
                        pause_probabilities,
                    });
                    if ends {
                        events.push(TranscriptEvent::EndOfTurn { time_ms });
                    }
                }
            }
        }
        if let Some(time_ms) = self.settled_ms().filter(|_| self.progress) {
            events.push(TranscriptEvent::Progress { time_ms });
        }
        Ok(())
    }

    /// How much of the caller's audio is transcribed: heard, less the model's delay (the
    /// `moshi` crate decides a step's text `delay_steps` steps after hearing it), within the
    /// audio pushed; `None` while not even its start is.
    fn settled_ms(&self) -> Option<u64> {
        let steps = self.steps as f64 - self.delay_steps as f64;
        let ms = steps * 1000.0 / FRAME_RATE - self.prefix_seconds * 1000.0;
        (ms >= 0.0).then(|| (ms.floor() as u64).min(self.duration_ms()))
    }

    /// A finished word, as an event (and as speech, for the end-of-turn rule).
    fn word(&mut self, text: String, start: f64, end: f64, events: &mut Vec<TranscriptEvent>) {
        if let Some(word) = self.segment(text, start, end) {
            self.end_of_turn.on_word();
            events.push(TranscriptEvent::Word(word));
        }
    }

    /// How much of the caller's audio the model has heard: the steps run, less the silence
    /// prefix, within the audio pushed.
    fn heard_ms(&self) -> u64 {
        let steps_ms = self.steps as f64 * 1000.0 / FRAME_RATE;
        let heard = (steps_ms - self.prefix_seconds * 1000.0).max(0.0).round() as u64;
        heard.min(self.duration_ms())
    }

    /// The time the model has reached, in seconds of the padded stream.
    fn now(&self) -> f64 {
        self.steps.saturating_sub(self.delay_steps) as f64 / FRAME_RATE
    }

    /// A time of the padded stream, in ms of the caller's audio (the silence prefix taken off).
    fn audio_ms(&self, t: f64) -> u64 {
        ((t - self.prefix_seconds).max(0.0) * 1000.0).round() as u64
    }

    fn segment(&self, text: String, start: f64, end: f64) -> Option<TranscriptionSegment> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        let duration = self.duration_ms();
        let end_ms = self.audio_ms(end).min(duration);
        let start_ms = self.audio_ms(start).min(end_ms);
        Some(TranscriptionSegment::new(text, start_ms, end_ms))
    }
}

fn inference(e: candle_core::Error) -> MoshiError {
    MoshiError::Inference {
        message: e.to_string(),
        source: Some(Arc::new(e)),
    }
}

/// Mimi's codes of one frame of PCM (`None` while Mimi holds the audio for a whole frame).
fn encode(mimi: &mut Mimi, pcm: Tensor) -> candle_core::Result<Option<Tensor>> {
    let codes = mimi.encode_step(&StreamTensor::from_tensor(pcm), &StreamMask::empty())?;
    Ok(codes.as_option().cloned())
}
