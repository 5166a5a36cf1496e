//! `KyutaiSttBuilder`: the fluent STT builder on a Kyutai engine.

use crate::engine::{EngineHandle, KyutaiEngine};
use crate::error::MoshiError;
use crate::provider::Provider;
use crate::voice::{
    BoxSegmentStream, Language, SpeechSource, SttConversation, SttConversationBuilder, VoiceError,
};

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
        let Some(source) = &self.source else {
            return Err(MoshiError::InvalidInput(
                "no audio to transcribe: give one with .with_source(SpeechSource::from_file(..))"
                    .into(),
            )
            .into());
        };
        source.validate()?;
        let engine = self.engine.engine().await?;
        engine.ensure_stt().await?;
        Err(MoshiError::Unsupported(
            "the STT model files are downloaded and verified, but transcription itself is not \
             part of this build of fluent-voice-kyutai yet"
                .into(),
        )
        .into())
    }
}

/// An STT conversation: a stream of word segments.
pub struct KyutaiSttConversation {
    stream: BoxSegmentStream,
}

impl SttConversation for KyutaiSttConversation {
    type SegmentStream = BoxSegmentStream;
    fn into_stream(self) -> BoxSegmentStream {
        self.stream
    }
}
