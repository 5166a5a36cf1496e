//! `KyutaiSttBuilder`: the fluent STT builder on a Kyutai engine.
//!
//! `listen()` loads the model once per engine, opens the audio, and starts a blocking worker
//! that feeds the audio through the model; words reach the conversation's stream through a
//! bounded channel as the model decides them (a slow reader pauses the worker).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::BoxFuture;

use crate::engine::{EngineHandle, KyutaiEngine};
use crate::error::{MoshiError, Stage};
use crate::runtime::blocking;
use crate::voice::{
    BoxSegmentStream, Language, PhraseGrouper, SpeechSource, SttConversation,
    SttConversationBuilder, SttEngine, Transcript, TranscriptionSegment, VoiceError,
};

use super::source::{self, OpenedSource};

/// Collects the audio source and options; [`listen`](SttConversationBuilder::listen) fetches
/// (once per process) the STT model.
pub struct KyutaiSttBuilder {
    engine: EngineHandle,
    source: Option<SpeechSource>,
    language: Option<Language>,
    word_timestamps: bool,
}

impl KyutaiSttBuilder {
    fn new(engine: EngineHandle) -> Self {
        KyutaiSttBuilder {
            engine,
            source: None,
            language: None,
            word_timestamps: true,
        }
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
        let mut transcriber = model.transcriber()?;
        let duration = AudioDuration::default();
        let duration_out = duration.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<TranscriptionSegment, VoiceError>>(64);
        let word_timestamps = self.word_timestamps;
        std::thread::spawn(move || {
            // Words, or (without word timestamps) phrases of words, each timed as a whole.
            let mut phrases = PhraseGrouper::default();
            let mut send = |word: TranscriptionSegment| match word_timestamps {
                true => tx.blocking_send(Ok(word)).is_ok(),
                false => match phrases.push(word) {
                    Some(phrase) => tx.blocking_send(Ok(phrase)).is_ok(),
                    None => !tx.is_closed(),
                },
            };
            let listener = tx.clone();
            let result = source::run(opened, &mut transcriber, &mut send, &|| {
                listener.is_closed()
            });
            match result {
                Ok(ms) => {
                    if let Some(phrase) = phrases.finish() {
                        let _ = tx.blocking_send(Ok(phrase));
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
            stream: Box::pin(stream),
            duration,
        })
    }
}

/// An STT conversation: a stream of word segments.
pub struct KyutaiSttConversation {
    stream: BoxSegmentStream,
    duration: AudioDuration,
}

impl KyutaiSttConversation {
    /// A handle that tells the length of the audio once the stream has ended (the stream
    /// itself consumes the conversation).
    pub fn audio_duration(&self) -> AudioDuration {
        self.duration.clone()
    }

    /// Transcribes to the end and returns the whole transcript: text, timed words and the
    /// length of the audio (what `kyutai transcribe --format json` prints).
    pub async fn transcript(self) -> Result<Transcript, VoiceError> {
        use futures::StreamExt;
        let duration = self.duration.clone();
        let mut stream = self.stream;
        let mut words = Vec::new();
        while let Some(word) = stream.next().await {
            words.push(word?);
        }
        Ok(Transcript::from_words(words, duration.ms().unwrap_or(0)))
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
        self.stream
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
