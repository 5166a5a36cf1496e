//! `KyutaiTtsBuilder`: the fluent TTS builder on a Kyutai engine.

use crate::engine::{EngineHandle, KyutaiEngine};
use crate::error::MoshiError;
use crate::provider::Provider;
use crate::voice::{
    BoxAudioStream, Language, Speaker, TtsConversation, TtsConversationBuilder, VoiceError,
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

    pub(crate) fn on_global(provider: &'static Provider) -> Self {
        Self::new(EngineHandle::Global(provider))
    }

    pub(crate) fn on_engine(engine: KyutaiEngine) -> Self {
        Self::new(EngineHandle::Owned(engine))
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
        engine.ensure_tts().await?;
        for speaker in &self.speakers {
            let voice = speaker
                .voice
                .as_ref()
                .map(|v| v.as_str().to_string())
                .unwrap_or_else(|| engine.default_voice().to_string());
            engine.ensure_voice(&voice).await?;
        }
        Err(MoshiError::Unsupported(
            "the TTS model files are downloaded and verified, but speech synthesis itself is not \
             part of this build of fluent-voice-kyutai yet"
                .into(),
        )
        .into())
    }
}

/// A TTS conversation: a stream of 24 kHz mono audio chunks.
pub struct KyutaiTtsConversation {
    stream: BoxAudioStream,
}

impl TtsConversation for KyutaiTtsConversation {
    type AudioStream = BoxAudioStream;
    fn into_stream(self) -> BoxAudioStream {
        self.stream
    }
}
