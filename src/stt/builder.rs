//! `KyutaiSttBuilder`: the fluent STT builder on a Kyutai engine.
//!
//! `listen()` loads the model once per engine, opens the audio, and starts a blocking worker
//! that feeds the audio through the model; words reach the conversation's stream through a
//! bounded channel as the model decides them (a slow reader pauses the worker).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::{EngineHandle, KyutaiEngine};
use crate::error::MoshiError;
use crate::provider::Provider;
use crate::voice::{
    BoxSegmentStream, Language, SpeechSource, SttConversation, SttConversationBuilder,
    TranscriptionSegment, VoiceError,
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

    pub(crate) fn on_global(provider: &'static Provider) -> Self {
        Self::new(EngineHandle::Global(provider))
    }

    pub(crate) fn on_engine(engine: KyutaiEngine) -> Self {
        Self::new(EngineHandle::Owned(engine))
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
        let model = engine.stt_model().await?;
        // Open (probe) the audio before answering, so that a missing or unreadable file fails
        // here rather than as the first item of the stream.
        let opened = tokio::task::spawn_blocking(move || OpenedSource::open(source))
            .await
            .map_err(|e| MoshiError::InvalidInput(format!("reading the audio stopped: {e}")))??;
        let mut transcriber = model.transcriber()?;
        let duration = AudioDuration::default();
        let duration_out = duration.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<TranscriptionSegment, VoiceError>>(64);
        tokio::task::spawn_blocking(move || {
            // Kyutai's models time every word at no extra cost, so segments always carry
            // times; `word_timestamps(false)` changes nothing.
            let listener = tx.clone();
            let result = source::run(
                opened,
                &mut transcriber,
                |word| tx.blocking_send(Ok(word)).is_ok(),
                &|| listener.is_closed(),
            );
            match result {
                Ok(ms) => duration_out.set(ms),
                Err(e) => {
                    let _ = tx.blocking_send(Err(e.into()));
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
