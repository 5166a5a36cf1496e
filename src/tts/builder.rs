//! `KyutaiTtsBuilder`: the fluent TTS builder on a Kyutai engine.

use futures::future::BoxFuture;

use std::sync::Arc;

use crate::engine::{EngineHandle, KyutaiEngine};
use crate::error::{MoshiError, Stage};
use crate::runtime::{blocking, on_tokio};

use super::batch::TtsSlot;
use super::conditioners::Conditions;
use super::synth::{SegmentEvent, SynthesisSettings, TtsModel};
use super::text_stream::LineWords;
use crate::models::TtsFamily;
use crate::pocket::GenerateSettings;
use crate::pocket::speech::{PocketLine, PocketText};
use crate::speech_out::{CHANNEL_CHUNKS, ChunkSender};
use crate::voice::{
    AudioChunk, BoxAudioStream, Language, Speaker, TtsConversation, TtsConversationBuilder,
    TtsEngine, VoiceError,
};
use futures::StreamExt;

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

    /// Checks the request before any model is touched. With streamed text, speakers may have
    /// nothing to say of their own (they give the voice), and there may be none.
    fn validate(&self, streaming: bool) -> Result<(), MoshiError> {
        if self.speakers.is_empty() && !streaming {
            return Err(MoshiError::InvalidInput(
                "nothing to say: add a speaker with .with_speaker(Speaker::speaker(..).speak(\"text\").build())".into(),
            ));
        }
        for speaker in self.speakers.iter().filter(|_| !streaming) {
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
                let config = engine.manager().config();
                let model = match &config.tts_family() {
                    TtsFamily::Pocket(name) => format!("pocket:{name}"),
                    _ => config.tts_repo.clone(),
                };
                return Err(MoshiError::Unsupported(format!(
                    "the text-to-speech model `{model}` does not speak `{language}`; it speaks {}",
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
        self.validate(false)?;
        self.start(None).await
    }
}

impl KyutaiTtsBuilder {
    /// Speaks text while it is still being written: each item of `text` is a piece of text
    /// (an LLM's tokens, or lines as a user types them), spoken as soon as the words it
    /// completes allow, and the speech ends when the stream does.
    ///
    /// The speakers given with [`with_speaker`](TtsConversationBuilder::with_speaker) say their
    /// text first; the streamed text is said by the last of them (its voice; its own text may
    /// be empty), or by the default voice when there is none. When the model needs a word that
    /// has not arrived yet, generation waits (as Kyutai's streaming TTS does) rather than
    /// inventing anything, so the audio is the same, seed for seed, as for the whole text given
    /// at once; only when it comes changes. Dropping the conversation's stream stops it.
    ///
    /// ```no_run
    /// use fluent_voice_kyutai::prelude::*;
    /// use futures::StreamExt;
    ///
    /// # async fn run() -> Result<(), VoiceError> {
    /// let (words, text) = fluent_voice_kyutai::text_channel();
    /// let mut audio = Kyutai::tts().seed(7).synthesize_stream(text).await?.into_stream();
    /// // Elsewhere, as an LLM writes:
    /// words.send("Hello fr")?;
    /// words.send("om Rust. ")?;
    /// drop(words); // the end of the text
    /// while let Some(chunk) = audio.next().await {
    ///     let chunk = chunk?;
    ///     for word in &chunk.words {
    ///         println!("{} at {} ms", word.text, word.start_ms);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn synthesize_stream<S>(self, text: S) -> Result<KyutaiTtsConversation, VoiceError>
    where
        S: futures::Stream<Item = String> + Send + 'static,
    {
        self.validate(true)?;
        self.start(Some(Box::pin(text))).await
    }

    /// Loads what the request needs (model, voices) and starts the synthesis thread.
    async fn start(
        self,
        streamed: Option<BoxTextStream>,
    ) -> Result<KyutaiTtsConversation, VoiceError> {
        let engine = self.engine.engine().await?;
        self.check_languages(&engine)?;
        if let TtsFamily::Pocket(_) = &engine.manager().config().tts_family() {
            return self.start_pocket(&engine, streamed).await;
        }
        let model = engine.tts_model().await?;
        // The reference's `simple_generate` default, 2.0, for both kinds of models: the LUT
        // value with CFG distillation, else direct (two-pass) CFG.
        let cfg_coef = self.cfg_coef.map_or(2.0, f64::from);
        let default_speaker;
        let speakers: &[Speaker] = match (self.speakers.is_empty(), streamed.is_some()) {
            (true, true) => {
                default_speaker = [Speaker::speaker("kyutai").build()];
                &default_speaker
            }
            _ => &self.speakers,
        };
        let mut lines = Vec::with_capacity(speakers.len() + 1);
        for speaker in speakers {
            let conditions = speaker_conditions(&engine, &model, speaker, cfg_coef).await?;
            lines.push(Line {
                speaker: speaker.name.clone(),
                text: LineText::Whole(speaker.text.clone()),
                conditions,
            });
        }
        if let Some(stream) = streamed {
            let last = lines.last().expect("at least one speaker");
            let line = Line {
                speaker: last.speaker.clone(),
                text: LineText::Stream(stream),
                conditions: last.conditions.clone(),
            };
            lines.retain(|line| matches!(&line.text, LineText::Whole(t) if !t.trim().is_empty()));
            lines.push(line);
        }
        let temperature = self.temperature.map(f64::from);
        let settings = SynthesisSettings {
            temp: temperature.unwrap_or(model.lm.cfg.temp),
            text_temp: temperature.unwrap_or(model.lm.cfg.text_temp),
            seed: self.seed.unwrap_or_else(rand::random),
        };
        // A slot of the model's batches: waiting for one (or failing) as configured, off the
        // async threads. The conversation holds it until its speech ends or it is dropped.
        let when_busy = engine.manager().config().when_busy;
        let slot_model = model.clone();
        let slot = blocking("waiting for a free slot", move || {
            slot_model.slot(when_busy)
        })
        .await?;
        Ok(KyutaiTtsConversation {
            stream: stream_speech(model, slot, lines, settings),
        })
    }
}

impl KyutaiTtsBuilder {
    /// The Pocket TTS side of [`start`](Self::start): the same speakers and settings, a voice
    /// state per speaker (the default voice of the model's language when it names none), and
    /// the same stream of chunks. The CFG coefficient has no meaning there and is ignored.
    async fn start_pocket(
        self,
        engine: &KyutaiEngine,
        streamed: Option<BoxTextStream>,
    ) -> Result<KyutaiTtsConversation, VoiceError> {
        let loaded = engine.pocket_tts().await?;
        let mut settings = GenerateSettings::defaults(loaded.model.config());
        if let Some(t) = self.temperature {
            settings.sampling.temperature = f64::from(t);
        }
        let default_speaker;
        let speakers: &[Speaker] = match (self.speakers.is_empty(), streamed.is_some()) {
            (true, true) => {
                default_speaker = [Speaker::speaker("kyutai").build()];
                &default_speaker
            }
            _ => &self.speakers,
        };
        let mut lines = Vec::with_capacity(speakers.len() + 1);
        for speaker in speakers {
            let name = speaker
                .voice
                .as_ref()
                .map(|v| v.as_str().to_string())
                .unwrap_or_else(|| engine.default_voice().to_string());
            lines.push(PocketLine {
                speaker: speaker.name.clone(),
                text: PocketText::Whole(speaker.text.clone()),
                voice: engine.pocket_voice(&name).await?,
            });
        }
        if let Some(stream) = streamed {
            let last = lines.last().expect("at least one speaker");
            let line = PocketLine {
                speaker: last.speaker.clone(),
                text: PocketText::Stream(stream),
                voice: last.voice.clone(),
            };
            lines.retain(|l| matches!(&l.text, PocketText::Whole(t) if !t.trim().is_empty()));
            lines.push(line);
        }
        let seed = self.seed.unwrap_or_else(rand::random);
        Ok(KyutaiTtsConversation {
            stream: crate::pocket::speech::stream_speech(loaded, lines, settings, seed),
        })
    }
}

/// The conditioning of one speaker: its voice (the default when it names none) and the CFG
/// coefficient. Checked here so that a bad voice or coefficient fails `synthesize`, not the
/// stream.
async fn speaker_conditions(
    engine: &KyutaiEngine,
    model: &Arc<TtsModel>,
    speaker: &Speaker,
    cfg_coef: f64,
) -> Result<Conditions, MoshiError> {
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
    let mut conditions = model.conditions(voice.as_ref(), cfg_coef)?;
    // Models without voice embeddings (e.g. `kyutai/tts-0.75b-en-public`) take the voice as
    // audio: the `.wav` itself from the voices repo, encoded by Mimi as a prefix.
    if !model.multi_speaker()
        && let Some(name) = &speaker.voice
    {
        let path = fetch_voice_audio(engine, name.as_str()).await?;
        let model = model.clone();
        let prefix = blocking("loading the voice", move || model.load_audio_voice(&path)).await?;
        conditions.audio_prefix = Some(prefix);
    }
    Ok(conditions)
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

/// A channel for text written while it is spoken: the [`TextSender`] goes to whatever writes
/// the text (an LLM client), the [`TextStream`] to
/// [`KyutaiTtsBuilder::synthesize_stream`]. Dropping every sender ends the text.
pub fn text_channel() -> (TextSender, TextStream) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    (TextSender(tx), TextStream(rx))
}

/// Sends pieces of text to a conversation started with
/// [`synthesize_stream`](KyutaiTtsBuilder::synthesize_stream) ([`text_channel`]). Pieces may
/// split words anywhere: a word is spoken once the whitespace after it arrives.
#[derive(Debug, Clone)]
pub struct TextSender(tokio::sync::mpsc::UnboundedSender<String>);

impl TextSender {
    /// Sends a piece of text. Fails once the conversation has ended (its stream dropped).
    pub fn send(&self, text: impl Into<String>) -> Result<(), VoiceError> {
        self.0.send(text.into()).map_err(|_| {
            VoiceError::other("the conversation this text was for has ended; it was not said")
        })
    }
}

/// The text of a [`text_channel`], as a stream of pieces.
#[derive(Debug)]
pub struct TextStream(tokio::sync::mpsc::UnboundedReceiver<String>);

impl futures::Stream for TextStream {
    type Item = String;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<String>> {
        self.0.poll_recv(cx)
    }
}

/// A stream of text pieces, as [`KyutaiTtsBuilder::synthesize_stream`] takes them.
type BoxTextStream = std::pin::Pin<Box<dyn futures::Stream<Item = String> + Send>>;

/// What a line says: a text given whole, or text still arriving.
enum LineText {
    Whole(String),
    Stream(BoxTextStream),
}

/// One speaker's line, ready to synthesize.
struct Line {
    speaker: String,
    text: LineText,
    conditions: Conditions,
}

/// Runs synthesis on a dedicated thread (it is CPU-bound and blocking) and streams its chunks.
/// Lines play in order; long lines are said in segments ([`LineWords`]), each a generation
/// seeded `seed + its index`, each step in `slot`'s batch. Dropping the stream stops the thread
/// at the next frame, and frees the slot.
fn stream_speech(
    model: Arc<TtsModel>,
    slot: TtsSlot,
    lines: Vec<Line>,
    settings: SynthesisSettings,
) -> BoxAudioStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<AudioChunk, VoiceError>>(CHANNEL_CHUNKS);
    std::thread::spawn(move || {
        let mut out = ChunkSender::new(tx, model.sample_rate);
        let mut segment_index: u64 = 0;
        for line in lines {
            let listener = out.tx.clone();
            let mut words = match line.text {
                LineText::Whole(text) => LineWords::whole(&text),
                LineText::Stream(mut stream) => LineWords::new(move || {
                    // Waits for text, or for the listener to go (then nobody hears the rest,
                    // and the thread must not wait for text forever).
                    let next = stream.next();
                    let gone = Box::pin(listener.closed());
                    match futures::executor::block_on(futures::future::select(next, gone)) {
                        futures::future::Either::Left((piece, _)) => piece,
                        futures::future::Either::Right(_) => None,
                    }
                }),
            };
            while !words.finished() {
                words.next_segment();
                let mut segment_settings = settings;
                segment_settings.seed = settings.seed.wrapping_add(segment_index);
                segment_index += 1;
                let segment_start = out.samples_sent;
                let mut first_word = true;
                let mut input = || {
                    let items = words.next_items()?;
                    Some(model.items_entries(items, &mut first_word))
                };
                let result = model.synthesize_in_slot(
                    &slot,
                    &mut input,
                    &line.conditions,
                    &segment_settings,
                    &mut |event| match event {
                        SegmentEvent::Audio(samples) => out.audio(samples, &line.speaker),
                        SegmentEvent::Word(word) => {
                            out.word(word.text, word.start_frame, word.end_frame, segment_start);
                            true
                        }
                    },
                );
                if let Err(e) = result {
                    let _ = out
                        .tx
                        .blocking_send(Err(e.into_voice(Some(Stage::Synthesis))));
                    return;
                }
                if out.tx.is_closed() {
                    return;
                }
            }
        }
        out.finish();
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
