//! `Kyutai`: the process-wide provider behind the zero-setup entry points.
//!
//! `Kyutai::tts()` and `Kyutai::stt()` reach one [`KyutaiEngine`] per process, created on first
//! use from the configuration given to [`Kyutai::configure`] (or the defaults). The logic lives in
//! [`Provider`], an ordinary type that tests can instantiate; `Kyutai` is one static `Provider`.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::FutureExt;
use parking_lot::Mutex;

use crate::engine::KyutaiEngine;
use crate::error::{MoshiError, Result};
use crate::models::KyutaiModelConfig;
use crate::shared_init::SharedInit;
use crate::stt::KyutaiSttBuilder;
use crate::tts::KyutaiTtsBuilder;
use crate::voice::FluentVoice;

/// Why [`Kyutai::configure`] refused a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigureErrorKind {
    /// `configure` had already been called.
    AlreadyConfigured,
    /// The models were already in use with the configuration they started with.
    AlreadyInUse,
}

/// The error of [`Kyutai::configure`]: it hands the configuration back, unapplied.
pub struct ConfigureError {
    kind: ConfigureErrorKind,
    config: Box<KyutaiModelConfig>,
}

impl ConfigureError {
    /// Why the configuration was refused.
    pub fn kind(&self) -> ConfigureErrorKind {
        self.kind
    }
    /// True when `configure` had already been called once.
    pub fn is_already_configured(&self) -> bool {
        self.kind == ConfigureErrorKind::AlreadyConfigured
    }
    /// True when the models were already in use.
    pub fn is_already_in_use(&self) -> bool {
        self.kind == ConfigureErrorKind::AlreadyInUse
    }
    /// The configuration that was not applied.
    pub fn into_config(self) -> KyutaiModelConfig {
        *self.config
    }
}

impl fmt::Display for ConfigureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ConfigureErrorKind::AlreadyConfigured => f.write_str(
                "Kyutai::configure was called a second time; the models can be configured only \
                 once per process, so this configuration was not applied and is returned in this \
                 error.",
            ),
            ConfigureErrorKind::AlreadyInUse => f.write_str(
                "Kyutai::configure was called after the Kyutai models were first used in this \
                 process; call it before the first Kyutai::tts() or Kyutai::stt(). This \
                 configuration was not applied and is returned in this error.",
            ),
        }
    }
}

impl fmt::Debug for ConfigureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigureError")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl std::error::Error for ConfigureError {}

/// One configuration and one engine, created once by the first caller; the logic of [`Kyutai`],
/// in a type tests can instantiate.
#[doc(hidden)]
pub struct Provider {
    config: Mutex<Option<KyutaiModelConfig>>,
    configured: AtomicBool,
    in_use: AtomicBool,
    engine: SharedInit<KyutaiEngine, MoshiError>,
}

impl Provider {
    pub const fn new() -> Self {
        Provider {
            config: Mutex::new(None),
            configured: AtomicBool::new(false),
            in_use: AtomicBool::new(false),
            engine: SharedInit::new(),
        }
    }

    /// Sets the configuration used when the engine is created. Refused once used or configured.
    pub fn configure(&self, config: KyutaiModelConfig) -> std::result::Result<(), ConfigureError> {
        let mut slot = self.config.lock();
        if self.in_use.load(Ordering::SeqCst) {
            return Err(ConfigureError {
                kind: ConfigureErrorKind::AlreadyInUse,
                config: Box::new(config),
            });
        }
        if self.configured.swap(true, Ordering::SeqCst) {
            return Err(ConfigureError {
                kind: ConfigureErrorKind::AlreadyConfigured,
                config: Box::new(config),
            });
        }
        *slot = Some(config);
        Ok(())
    }

    /// Marks the provider as used: from now on the configuration is fixed.
    pub(crate) fn mark_in_use(&self) {
        if !self.in_use.load(Ordering::Relaxed) {
            let _guard = self.config.lock();
            self.in_use.store(true, Ordering::SeqCst);
        }
    }

    /// The engine, created by the first caller; concurrent first callers share one creation and
    /// its outcome, and a failed creation is retried by the next call.
    pub async fn engine(&self) -> Result<&KyutaiEngine> {
        if let Some(engine) = self.engine.get() {
            return Ok(engine);
        }
        self.mark_in_use();
        let config = self.config.lock().clone().unwrap_or_default();
        self.engine
            .get_or_try_init(move || KyutaiEngine::with_config(config).boxed())
            .await
    }

    /// The engine if it exists already: the hot path, one atomic load.
    #[inline]
    pub fn get(&self) -> Option<&KyutaiEngine> {
        self.engine.get()
    }

    /// How many engine creations were started (for tests).
    #[doc(hidden)]
    pub fn creations_started(&self) -> u64 {
        self.engine.attempts_started()
    }
}

impl Default for Provider {
    fn default() -> Self {
        Self::new()
    }
}

static GLOBAL: Provider = Provider::new();

/// The zero-setup entry point to Kyutai's models.
///
/// ```no_run
/// use fluent_voice_kyutai::prelude::*;
///
/// # async fn run() -> Result<(), VoiceError> {
/// // Optional, once, before first use: other models, another cache.
/// Kyutai::configure(KyutaiModelConfig::default().stt_repo("kyutai/stt-2.6b-en-candle"))
///     .expect("configured before first use");
/// let builder = Kyutai::stt().with_source(SpeechSource::from_file("meeting.wav"));
/// # Ok(()) }
/// ```
pub struct Kyutai;

impl Kyutai {
    /// Chooses the models and settings for this process. Call it once, before the first
    /// `Kyutai::tts()` / `Kyutai::stt()`; afterwards it returns a [`ConfigureError`] holding
    /// the configuration.
    pub fn configure(config: KyutaiModelConfig) -> std::result::Result<(), ConfigureError> {
        GLOBAL.configure(config)
    }

    /// The process-wide engine, created on first call.
    ///
    /// Once the engine exists, the returned future is ready at its first poll (the check
    /// happens before the async part starts).
    #[inline]
    pub fn engine() -> impl Future<Output = Result<&'static KyutaiEngine>> + Send {
        let ready = GLOBAL.get();
        async move {
            match ready {
                Some(engine) => Ok(engine),
                // Boxed so that the future stays small: moving a ready future must not copy the
                // whole initialization state machine.
                None => Box::pin(GLOBAL.engine()).await,
            }
        }
    }

    /// The process-wide engine if it has been created.
    #[inline]
    pub fn get() -> Option<&'static KyutaiEngine> {
        GLOBAL.get()
    }
}

/// The provider behind `Kyutai` (for tests, through `internals`).
pub(crate) fn global() -> &'static Provider {
    &GLOBAL
}

/// Resolves the process-wide engine for builders made by `Kyutai::tts()` / `Kyutai::stt()`.
fn global_engine() -> futures::future::BoxFuture<'static, Result<KyutaiEngine>> {
    async { Kyutai::engine().await.cloned() }.boxed()
}

// The builders are the concrete types behind `impl TtsConversationBuilder`: callers keep their
// inherent methods.
#[allow(refining_impl_trait)]
impl FluentVoice for Kyutai {
    fn tts() -> KyutaiTtsBuilder {
        GLOBAL.mark_in_use();
        KyutaiTtsBuilder::deferred(global_engine)
    }

    fn stt() -> KyutaiSttBuilder {
        GLOBAL.mark_in_use();
        KyutaiSttBuilder::deferred(global_engine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configure_twice_hands_the_config_back() {
        let provider = Provider::new();
        provider
            .configure(KyutaiModelConfig::default().tts_repo("a/b"))
            .unwrap();
        let error = provider
            .configure(KyutaiModelConfig::default().tts_repo("c/d"))
            .unwrap_err();
        assert!(error.is_already_configured());
        assert!(error.to_string().contains("second time"));
        assert_eq!(error.into_config().tts_repo, "c/d");
    }

    #[test]
    fn configure_after_first_use_is_refused() {
        let provider = Provider::new();
        provider.mark_in_use();
        let error = provider
            .configure(KyutaiModelConfig::default())
            .unwrap_err();
        assert!(error.is_already_in_use());
        assert!(error.to_string().contains("before the first Kyutai::tts()"));
    }
}
