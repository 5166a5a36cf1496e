//! `KyutaiSttBuilder`: the fluent STT builder on a Kyutai engine.
//!
//! `listen()` loads the model once per engine, opens the audio, and starts a blocking worker
//! that feeds the audio through the model; words reach the conversation's stream through a
//! bounded channel as the model decides them (a slow reader pauses the worker).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::BoxFuture;

use super::end_of_turn::EndOfTurnSettings;
use crate::engine::{EngineHandle, KyutaiEngine};
use crate::error::{MoshiError, Stage};
use crate::runtime::blocking;
use crate::voice::{
    BoxSegmentStream, Language, PhraseGrouper, SpeechSource, SttConversation,
    SttConversationBuilder, SttEngine, Transcript, TranscriptEvent, VoiceError,
};

use super::source::{self, OpenedSource};

/// Collects the audio source and options; [`listen`](SttConversationBuilder::listen) fetches
/// (once per process) the STT model.
pub struct KyutaiSttBuilder {
    engine: EngineHandle,
    source: Option<SpeechSource>,
    language: Option<Language>,
    word_timestamps: bool,
    end_of_turn: EndOfTurnSettings,
    progress: bool,
    word_starts: bool,
}

impl KyutaiSttBuilder {
    fn new(engine: EngineHandle) -> Self {
        KyutaiSttBuilder {
            engine,
            source: None,
            language: None,
            word_timestamps: true,
            end_of_turn: EndOfTurnSettings::default(),
            progress: false,
            word_starts: false,
        }
    }

    /// The rule that decides when a speaker's turn has ended
    /// ([`TranscriptEvent::EndOfTurn`], for models with voice-activity heads); the default is
    /// Kyutai's Unmute's.
    pub fn end_of_turn(mut self, settings: EndOfTurnSettings) -> Self {
        self.end_of_turn = settings;
        self
    }

    /// Also reports, after every model step, how far the transcript is settled
    /// ([`TranscriptEvent::Progress`]): the audio heard so far less the model's delay. Off by
    /// default; a streaming server turns it on to echo markers once the audio before them has
    /// been transcribed.
    pub fn progress_events(mut self, enabled: bool) -> Self {
        self.progress = enabled;
        self
    }

    /// Also reports each word as soon as it starts ([`TranscriptEvent::WordStarted`]), before
    /// the [`TranscriptEvent::Word`] that gives its end. Off by default; with word timestamps
    /// only (not phrases). A streaming server turns it on to send words without waiting for
    /// their end.
    pub fn word_start_events(mut self, enabled: bool) -> Self {
        self.word_starts = enabled;
        self
    }

    /// A builder whose engine is resolved when the conversation starts.
    pub(crate) fn deferred(
        resolve: fn() -> BoxFuture<'static, Result<KyutaiEngine, MoshiError>>,
    ) -> Self {
        Self::new(EngineHandle::Deferred(resolve))
    }
}

impl SttConversationBuilder for KyutaiSttBuilder {
    type Conversation = KyutaiSttConversation;

    fn with_source(mut self, source: SpeechSource) -> Self {
        self.source = Some(source);
        self
    }
    fn language_hint(mut self, language: Language) -> Self {
        self.language = Some(language);
        self
    }
    fn word_timestamps(mut self, enabled: bool) -> Self {
        self.word_timestamps = enabled;
        self
    }

    async fn listen(self) -> Result<KyutaiSttConversation, VoiceError> {
        let Some(source) = self.source else {
            return Err(MoshiError::InvalidInput(
                "no audio to transcribe: give one with .with_source(SpeechSource::from_file(..))"
                    .into(),
            )
            .into());
        };
        source.validate()?;
        self.end_of_turn
            .validate()
            .map_err(VoiceError::Configuration)?;
        let engine = self.engine.engine().await?;
        if let Some(language) = &self.language {
            // Kyutai's STT models take no language input: they transcribe whichever of their
            // languages is spoken, so the hint is checked, not passed on.
            let known = engine.stt_languages();
            if !known.contains(language) {
                return Err(MoshiError::Unsupported(format!(
                    "the speech-to-text model `{}` does not understand `{language}`; it \
                     understands {}",
                    engine.manager().config().stt_repo,
                    crate::engine::language_list(&known)
                ))
                .into());
            }
        }
        let model = engine.stt_model().await?;
        // Open (probe) the audio before answering, so that a missing or unreadable file fails
        // here rather than as the first item of the stream.
        let opened = blocking("opening the audio", move || OpenedSource::open(source)).await?;
        // A slot of the model's batch: waiting for one (or failing) as configured, off the
        // async threads.
        let when_busy = engine.manager().config().when_busy;
        let slot_model = model.clone();
        let mut transcriber = blocking("waiting for a free slot", move || {
            slot_model.transcriber(when_busy)
        })
        .await?;
        transcriber.set_end_of_turn(self.end_of_turn);
        transcriber.report_progress(self.progress);
        transcriber.report_word_starts(self.word_starts && self.word_timestamps);
        let duration = AudioDuration::default();
        let duration_out = duration.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<TranscriptEvent, VoiceError>>(64);
        let word_timestamps = self.word_timestamps;
        std::thread::spawn(move || {
            // Words, or (without word timestamps) phrases of words, each timed as a whole.
            let mut phrases = PhraseGrouper::default();
            let mut send = |event: TranscriptEvent| match (event, word_timestamps) {
                (TranscriptEvent::Word(word), false) => match phrases.push(word) {
                    Some(phrase) => tx.blocking_send(Ok(TranscriptEvent::Word(phrase))).is_ok(),
                    None => !tx.is_closed(),
                },
                (event, _) => tx.blocking_send(Ok(event)).is_ok(),
            };
            let listener = tx.clone();
            let result = source::run(opened, &mut transcriber, &mut send, &|| {
                listener.is_closed()
            });
            match result {
                Ok(ms) => {
                    if let Some(phrase) = phrases.finish() {
                        let _ = tx.blocking_send(Ok(TranscriptEvent::Word(phrase)));
                    }
                    duration_out.set(ms)
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e.into_voice(Some(Stage::Transcription))));
                }
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(KyutaiSttConversation {
            events: Box::pin(stream),
            duration,
        })
    }
}

/// An STT conversation: a stream of word segments, or of every [`TranscriptEvent`].
pub struct KyutaiSttConversation {
    events: BoxEventStream,
    duration: AudioDuration,
}

/// The events of a speech-to-text conversation, as they come.
pub type BoxEventStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<TranscriptEvent, VoiceError>> + Send>>;

impl KyutaiSttConversation {
    /// A handle that tells the length of the audio once the stream has ended (the stream
    /// itself consumes the conversation).
    pub fn audio_duration(&self) -> AudioDuration {
        self.duration.clone()
    }

    /// Every event as it comes: words, and for models with voice-activity heads (Kyutai's
    /// 1B STT) each 80 ms step's pause probabilities and the ends of turns, which tell a voice
    /// agent when to answer. [`into_stream`](SttConversation::into_stream) keeps the words only.
    ///
    /// ```no_run
    /// use fluent_voice_kyutai::prelude::*;
    /// use futures::StreamExt;
    ///
    /// # async fn run(microphone: SpeechSource) -> Result<(), VoiceError> {
    /// let mut events = Kyutai::stt().with_source(microphone).listen().await?.into_events();
    /// while let Some(event) = events.next().await {
    ///     match event? {
    ///         TranscriptEvent::Word(word) => print!("{} ", word.text),
    ///         TranscriptEvent::EndOfTurn { .. } => println!("\n(your turn, agent)"),
    ///         _ => {}
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn into_events(self) -> BoxEventStream {
        self.events
    }

    /// Transcribes to the end and returns the whole transcript: text, timed words, the length
    /// of the audio and (for models with voice-activity heads) when turns ended: what
    /// `kyutai transcribe --format json` prints.
    pub async fn transcript(self) -> Result<Transcript, VoiceError> {
        use futures::StreamExt;
        let duration = self.duration.clone();
        let mut events = self.events;
        let mut words = Vec::new();
        let mut ends: Option<Vec<u64>> = None;
        while let Some(event) = events.next().await {
            match event? {
                TranscriptEvent::Word(word) => words.push(word),
                TranscriptEvent::VoiceActivity { .. } => {
                    ends.get_or_insert_with(Vec::new);
                }
                TranscriptEvent::EndOfTurn { time_ms } => {
                    ends.get_or_insert_with(Vec::new).push(time_ms)
                }
                TranscriptEvent::Progress { .. } | TranscriptEvent::WordStarted { .. } => {}
            }
        }
        let mut transcript = Transcript::from_words(words, duration.ms().unwrap_or(0));
        transcript.end_of_turn_ms = ends;
        Ok(transcript)
    }
}

/// The length of a conversation's audio, known once all of it has been transcribed.
#[derive(Debug, Clone, Default)]
pub struct AudioDuration(Arc<AtomicU64>);

impl AudioDuration {
    /// Milliseconds of audio, or `None` while the transcription runs (or after it failed).
    pub fn ms(&self) -> Option<u64> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            v => Some(v - 1),
        }
    }

    fn set(&self, ms: u64) {
        self.0.store(ms + 1, Ordering::Release);
    }
}

impl SttConversation for KyutaiSttConversation {
    type SegmentStream = BoxSegmentStream;
    fn into_stream(self) -> BoxSegmentStream {
        use futures::StreamExt;
        Box::pin(self.events.filter_map(|event| {
            std::future::ready(match event {
                Ok(TranscriptEvent::Word(word)) => Some(Ok(word)),
                Ok(_) => None,
                Err(error) => Some(Err(error)),
            })
        }))
    }
}

impl KyutaiEngine {
    /// A speech-to-text conversation builder on this engine.
    pub fn stt(&self) -> KyutaiSttBuilder {
        KyutaiSttBuilder::new(EngineHandle::Owned(self.clone()))
    }
}

impl SttEngine for KyutaiEngine {
    type Conv = KyutaiSttBuilder;
    fn conversation(&self) -> KyutaiSttBuilder {
        self.stt()
    }
}
