//! `KyutaiTtsBuilder`: the fluent TTS builder on a Kyutai engine.

use futures::future::BoxFuture;

use std::sync::Arc;

use crate::engine::{EngineHandle, KyutaiEngine};
use crate::error::{MoshiError, Stage};
use crate::runtime::{blocking, on_tokio};

use super::conditioners::Conditions;
use super::synth::{MAX_SEGMENT_WORDS, SynthesisSettings, TtsModel, split_text};
use crate::voice::{
    AudioChunk, BoxAudioStream, Language, Speaker, TtsConversation, TtsConversationBuilder,
    TtsEngine, VoiceError,
};

/// Collects speakers and sampling settings; [`synthesize`](TtsConversationBuilder::synthesize)
/// fetches (once per process) the TTS model and the voices the speakers name.
#[derive(Clone)]
pub struct KyutaiTtsBuilder {
    engine: EngineHandle,
    speakers: Vec<Speaker>,
    language: Option<Language>,
    seed: Option<u64>,
    temperature: Option<f32>,
    cfg_coef: Option<f32>,
}

impl KyutaiTtsBuilder {
    fn new(engine: EngineHandle) -> Self {
        KyutaiTtsBuilder {
            engine,
            speakers: Vec::new(),
            language: None,
            seed: None,
            temperature: None,
            cfg_coef: None,
        }
    }

    /// A builder whose engine is resolved when the conversation starts.
    pub(crate) fn deferred(
        resolve: fn() -> BoxFuture<'static, Result<KyutaiEngine, MoshiError>>,
    ) -> Self {
        Self::new(EngineHandle::Deferred(resolve))
    }

    /// The speakers added so far, in order.
    pub fn speakers(&self) -> &[Speaker] {
        &self.speakers
    }

    /// Checks the request before any model is touched.
    fn validate(&self) -> Result<(), MoshiError> {
        if self.speakers.is_empty() {
            return Err(MoshiError::InvalidInput(
                "nothing to say: add a speaker with .with_speaker(Speaker::speaker(..).speak(\"text\").build())".into(),
            ));
        }
        for speaker in &self.speakers {
            if speaker.text.trim().is_empty() {
                return Err(MoshiError::InvalidInput(format!(
                    "speaker `{}` has nothing to say: give it some text with .speak(\"...\")",
                    speaker.name
                )));
            }
        }
        if let Some(t) = self.temperature
            && !(t.is_finite() && t >= 0.0)
        {
            return Err(MoshiError::InvalidInput(format!(
                "the temperature must be a finite number >= 0 (0 means greedy), not {t}"
            )));
        }
        if let Some(c) = self.cfg_coef
            && !(c.is_finite() && c > 0.0)
        {
            return Err(MoshiError::InvalidInput(format!(
                "the CFG coefficient must be a positive number, not {c}"
            )));
        }
        for speaker in &self.speakers {
            match speaker.speed {
                Some(speed) if !(speed.is_finite() && speed > 0.0) => {
                    return Err(MoshiError::InvalidInput(format!(
                        "speaker `{}`: the speed must be a positive number (1.0 is normal), \
                         not {speed}",
                        speaker.name
                    )));
                }
                Some(speed) if speed != 1.0 => {
                    return Err(MoshiError::Unsupported(format!(
                        "speaker `{}`: Kyutai's text-to-speech models speak at one speed; \
                         {speed} cannot be honoured (leave the speed unset, or 1.0)",
                        speaker.name
                    )));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Checks that the model speaks every language asked for (the conversation's and each
    /// speaker's). Kyutai's models take no language input: they speak the language of the text,
    /// among those they were trained on, so the setting is a check, not a switch.
    fn check_languages(&self, engine: &KyutaiEngine) -> Result<(), MoshiError> {
        let spoken = engine.tts_languages();
        let asked = self
            .language
            .iter()
            .chain(self.speakers.iter().filter_map(|s| s.language.as_ref()));
        for language in asked {
            if !spoken.contains(language) {
                return Err(MoshiError::Unsupported(format!(
                    "the text-to-speech model `{}` does not speak `{language}`; it speaks {}",
                    engine.manager().config().tts_repo,
                    crate::engine::language_list(&spoken)
                )));
            }
        }
        Ok(())
    }
}

impl TtsConversationBuilder for KyutaiTtsBuilder {
    type Conversation = KyutaiTtsConversation;

    fn with_speaker(mut self, speaker: Speaker) -> Self {
        self.speakers.push(speaker);
        self
    }
    fn language(mut self, language: Language) -> Self {
        self.language = Some(language);
        self
    }
    fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
    fn temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }
    fn cfg_coef(mut self, coef: f32) -> Self {
        self.cfg_coef = Some(coef);
        self
    }

    async fn synthesize(self) -> Result<KyutaiTtsConversation, VoiceError> {
        self.validate()?;
        let engine = self.engine.engine().await?;
        self.check_languages(&engine)?;
        let model = engine.tts_model().await?;
        // The reference's `simple_generate` default, 2.0, for both kinds of models: the LUT
        // value with CFG distillation, else direct (two-pass) CFG.
        let cfg_coef = self.cfg_coef.map_or(2.0, f64::from);
        let mut lines = Vec::with_capacity(self.speakers.len());
        for speaker in &self.speakers {
            let voice = if model.multi_speaker() {
                let name = speaker
                    .voice
                    .as_ref()
                    .map(|v| v.as_str().to_string())
                    .unwrap_or_else(|| engine.default_voice().to_string());
                let path = engine.ensure_voice(&name).await?;
                let model = model.clone();
                Some(blocking("loading the voice", move || model.load_voice(&path)).await?)
            } else {
                None
            };
            // Checked here so that a bad coefficient fails `synthesize`, not the stream.
            let mut conditions = model.conditions(voice.as_ref(), cfg_coef)?;
            // Models without voice embeddings (e.g. `kyutai/tts-0.75b-en-public`) take the voice
            // as audio: the `.wav` itself from the voices repo, encoded by Mimi as a prefix.
            if !model.multi_speaker()
                && let Some(name) = &speaker.voice
            {
                let path = fetch_voice_audio(&engine, name.as_str()).await?;
                let model = model.clone();
                let prefix =
                    blocking("loading the voice", move || model.load_audio_voice(&path)).await?;
                conditions.audio_prefix = Some(prefix);
            }
            lines.push(Line {
                speaker: speaker.name.clone(),
                text: speaker.text.clone(),
                conditions,
            });
        }
        let temperature = self.temperature.map(f64::from);
        let settings = SynthesisSettings {
            temp: temperature.unwrap_or(model.lm.cfg.temp),
            text_temp: temperature.unwrap_or(model.lm.cfg.text_temp),
            seed: self.seed.unwrap_or_else(rand::random),
        };
        Ok(KyutaiTtsConversation {
            stream: stream_speech(model, lines, settings),
        })
    }
}

/// Fetches a voice's audio file (`expresso/....wav`) from the voices repository, for models
/// voiced by an audio prefix (the reference's `get_voice_path` with an empty suffix).
async fn fetch_voice_audio(
    engine: &KyutaiEngine,
    voice: &str,
) -> Result<std::path::PathBuf, MoshiError> {
    let engine = engine.clone();
    let name = voice.to_string();
    on_tokio(async move {
        let manager = engine.manager();
        let config = manager.config();
        manager
            .fetch_file(&config.voices_repo, &config.voices_revision, &name)
            .await
    })
    .await
    .map(|f| f.path)
    .map_err(|e| match e {
        MoshiError::FileNotFound { repo, file, .. } => MoshiError::VoiceNotFound {
            voice: voice.to_string(),
            repo,
            file,
        },
        other => other,
    })
}

/// One speaker's line, ready to synthesize.
struct Line {
    speaker: String,
    text: String,
    conditions: Conditions,
}

/// Chunks in flight between the synthesis thread and the listener: a small bound, so that a slow
/// listener pauses synthesis instead of letting audio pile up in memory.
const CHANNEL_CHUNKS: usize = 8;

/// Runs synthesis on a dedicated thread (it is CPU-bound and blocking) and streams its chunks.
/// Lines play in order; long lines are split into segments ([`split_text`]). Dropping the stream
/// stops the thread at the next frame.
fn stream_speech(
    model: Arc<TtsModel>,
    lines: Vec<Line>,
    settings: SynthesisSettings,
) -> BoxAudioStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<AudioChunk, VoiceError>>(CHANNEL_CHUNKS);
    std::thread::spawn(move || {
        let sample_rate = model.sample_rate;
        let mut samples_sent: u64 = 0;
        // Held back one chunk so that the last one can be marked final.
        let mut pending: Option<AudioChunk> = None;
        let mut segment_index: u64 = 0;
        let send = |chunk: AudioChunk, pending: &mut Option<AudioChunk>| -> bool {
            match pending.replace(chunk) {
                Some(previous) => tx.blocking_send(Ok(previous)).is_ok(),
                None => !tx.is_closed(),
            }
        };
        for line in &lines {
            for segment in split_text(&line.text, MAX_SEGMENT_WORDS) {
                let mut segment_settings = settings;
                segment_settings.seed = settings.seed.wrapping_add(segment_index);
                segment_index += 1;
                let mut first = true;
                let mut alive = true;
                let result = model.synthesize_segment(
                    &segment,
                    &line.conditions,
                    &segment_settings,
                    &mut |samples| {
                        let n = samples.len() as u64;
                        let mut chunk =
                            AudioChunk::new(samples, sample_rate).with_start_sample(samples_sent);
                        if first {
                            chunk = chunk
                                .with_text(segment.as_str())
                                .with_speaker(&line.speaker);
                            first = false;
                        }
                        samples_sent += n;
                        alive = send(chunk, &mut pending);
                        alive
                    },
                );
                if let Err(e) = result {
                    let _ = tx.blocking_send(Err(e.into_voice(Some(Stage::Synthesis))));
                    return;
                }
                if !alive {
                    return;
                }
            }
        }
        if let Some(last) = pending {
            let _ = tx.blocking_send(Ok(last.with_final(true)));
        }
    });
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// A TTS conversation: a stream of 24 kHz mono audio chunks.
pub struct KyutaiTtsConversation {
    stream: BoxAudioStream,
}

impl KyutaiTtsConversation {
    /// Synthesizes to the end and returns all the audio: 24 kHz mono samples in `[-1, 1]`,
    /// ready for [`write_wav`](crate::audio::write_wav).
    ///
    /// ```no_run
    /// use fluent_voice_kyutai::prelude::*;
    ///
    /// # async fn run() -> Result<(), VoiceError> {
    /// let samples = Kyutai::tts()
    ///     .with_speaker(Speaker::speaker("Narrator").speak("Hello.").build())
    ///     .synthesize()
    ///     .await?
    ///     .collect_samples()
    ///     .await?;
    /// write_wav("hello.wav", &samples, 24_000, 1, WavFormat::Pcm16)?;
    /// # Ok(()) }
    /// ```
    pub async fn collect_samples(self) -> Result<Vec<f32>, VoiceError> {
        use futures::StreamExt;
        let mut stream = self.stream;
        let mut samples = Vec::new();
        while let Some(chunk) = stream.next().await {
            samples.extend_from_slice(&chunk?.samples);
        }
        Ok(samples)
    }
}

impl TtsConversation for KyutaiTtsConversation {
    type AudioStream = BoxAudioStream;
    fn into_stream(self) -> BoxAudioStream {
        self.stream
    }
}

impl KyutaiEngine {
    /// A text-to-speech conversation builder on this engine.
    pub fn tts(&self) -> KyutaiTtsBuilder {
        KyutaiTtsBuilder::new(EngineHandle::Owned(self.clone()))
    }
}

impl TtsEngine for KyutaiEngine {
    type Conv = KyutaiTtsBuilder;
    fn conversation(&self) -> KyutaiTtsBuilder {
        self.tts()
    }
}
