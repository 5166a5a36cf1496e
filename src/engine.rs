//! `KyutaiEngine`: owns the model manager and the model files, fetched lazily and shared.
//!
//! An engine is cheap to clone (an `Arc`); every conversation it starts shares its files (and,
//! once the pipelines exist, its loaded weights). Each capability is fetched at most once per
//! engine, by the first conversation that needs it; concurrent conversations wait for that one
//! fetch and share its outcome (see [`SharedInit`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use futures::FutureExt;
use parking_lot::Mutex;

use crate::error::{MoshiError, Result};
use crate::models::{
    KyutaiModelConfig, KyutaiModelManager, KyutaiModelPaths, SttModelPaths, TtsModelPaths,
};
use crate::shared_init::SharedInit;
use crate::stt::KyutaiSttBuilder;
use crate::tts::KyutaiTtsBuilder;
use crate::voice::{SttEngine, TtsEngine};

/// The Kyutai implementation of [`TtsEngine`] and [`SttEngine`].
///
/// ```no_run
/// # async fn run() -> Result<(), fluent_voice_kyutai::MoshiError> {
/// use fluent_voice_kyutai::{KyutaiEngine, KyutaiModelConfig};
///
/// let engine = KyutaiEngine::with_config(
///     KyutaiModelConfig::default().stt_repo("kyutai/stt-2.6b-en-candle"),
/// )
/// .await?;
/// let stt_files = engine.ensure_stt().await?; // fetched and verified once
/// println!("STT weights at {}", stt_files.lm_weights.display());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct KyutaiEngine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    manager: KyutaiModelManager,
    paths: KyutaiModelPaths,
    tts: SharedInit<(), MoshiError>,
    stt: SharedInit<(), MoshiError>,
    /// The STT weights, loaded once and shared by every conversation.
    stt_model: SharedInit<Arc<crate::stt::SttModel>, MoshiError>,
    /// The TTS weights, loaded once and shared by every conversation.
    tts_model: SharedInit<Arc<crate::tts::TtsModel>, MoshiError>,
    voices: Mutex<HashMap<String, Arc<SharedInit<PathBuf, MoshiError>>>>,
}

impl KyutaiEngine {
    /// An engine for the default models (environment variables apply).
    pub async fn new() -> Result<Self> {
        Self::with_config(KyutaiModelConfig::default()).await
    }

    /// An engine for `config`. It checks the configuration and prepares the cache directory;
    /// model files are fetched and verified on first use of each capability (or with
    /// [`ensure_tts`](Self::ensure_tts) / [`ensure_stt`](Self::ensure_stt)).
    pub async fn with_config(config: KyutaiModelConfig) -> Result<Self> {
        let manager = KyutaiModelManager::with_config(config)?;
        let cache_dir = manager.settings().cache_dir.clone();
        if !manager.settings().offline {
            tokio::fs::create_dir_all(&cache_dir).await.map_err(|e| {
                MoshiError::io("could not create the cache directory", &cache_dir, e)
            })?;
        }
        Ok(KyutaiEngine {
            inner: Arc::new(EngineInner {
                paths: KyutaiModelPaths::new(cache_dir),
                manager,
                tts: SharedInit::new(),
                stt: SharedInit::new(),
                stt_model: SharedInit::new(),
                tts_model: SharedInit::new(),
                voices: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The model files fetched so far.
    pub fn model_paths(&self) -> &KyutaiModelPaths {
        &self.inner.paths
    }

    /// The model manager (settings, cache).
    pub fn manager(&self) -> &KyutaiModelManager {
        &self.inner.manager
    }

    /// Fetches and verifies the TTS model files, once.
    pub async fn ensure_tts(&self) -> Result<&TtsModelPaths> {
        let inner = self.inner.clone();
        self.inner
            .tts
            .get_or_try_init(move || {
                async move {
                    let paths = inner.manager.fetch_tts().await?;
                    inner.paths.set_tts(paths);
                    Ok(())
                }
                .boxed()
            })
            .await?;
        Ok(self.inner.paths.tts().expect("set by the successful init"))
    }

    /// Fetches and verifies the STT model files, once.
    pub async fn ensure_stt(&self) -> Result<&SttModelPaths> {
        let inner = self.inner.clone();
        self.inner
            .stt
            .get_or_try_init(move || {
                async move {
                    let paths = inner.manager.fetch_stt().await?;
                    inner.paths.set_stt(paths);
                    Ok(())
                }
                .boxed()
            })
            .await?;
        Ok(self.inner.paths.stt().expect("set by the successful init"))
    }

    /// The TTS model, fetched and loaded once (on a blocking thread); every conversation of
    /// this engine shares it.
    pub async fn tts_model(&self) -> Result<Arc<crate::tts::TtsModel>> {
        let paths = self.ensure_tts().await?.clone();
        let config = self.inner.manager.config();
        let (device, dtype) = (config.device, config.dtype);
        let model = self
            .inner
            .tts_model
            .get_or_try_init(move || {
                async move {
                    tokio::task::spawn_blocking(move || {
                        let device = crate::codec::candle_device(device)?;
                        let dtype = crate::codec::weight_dtype(&device, dtype);
                        crate::tts::TtsModel::load(&paths, &device, dtype).map(Arc::new)
                    })
                    .await
                    .map_err(|e| MoshiError::Inference {
                        message: format!("loading the TTS model stopped: {e}"),
                        source: None,
                    })?
                }
                .boxed()
            })
            .await?;
        Ok(model.clone())
    }

    /// The STT model, fetched and loaded once (on a blocking thread: loading reads gigabytes);
    /// every conversation of this engine shares it.
    pub async fn stt_model(&self) -> Result<Arc<crate::stt::SttModel>> {
        let paths = self.ensure_stt().await?.clone();
        let config = self.inner.manager.config();
        let (device, dtype) = (config.device, config.dtype);
        let model = self
            .inner
            .stt_model
            .get_or_try_init(move || {
                async move {
                    tokio::task::spawn_blocking(move || {
                        let device = crate::codec::candle_device(device)?;
                        let dtype = crate::codec::weight_dtype(&device, dtype);
                        crate::stt::SttModel::load(&paths, &device, dtype).map(Arc::new)
                    })
                    .await
                    .map_err(|e| MoshiError::Inference {
                        message: format!("loading the STT model stopped: {e}"),
                        source: None,
                    })?
                }
                .boxed()
            })
            .await?;
        Ok(model.clone())
    }

    /// Fetches and verifies one voice embedding (and the TTS files it is named after), once.
    pub async fn ensure_voice(&self, voice: &str) -> Result<PathBuf> {
        let tts = self.ensure_tts().await?.clone();
        let cell = self
            .inner
            .voices
            .lock()
            .entry(voice.to_string())
            .or_insert_with(|| Arc::new(SharedInit::new()))
            .clone();
        let inner = self.inner.clone();
        let name = voice.to_string();
        let path = cell
            .get_or_try_init(move || {
                async move {
                    let path = inner.manager.fetch_voice(&tts, &name).await?;
                    inner.paths.add_voice(&name, path.clone());
                    Ok(path)
                }
                .boxed()
            })
            .await?;
        Ok(path.clone())
    }

    /// The voice used when a speaker names none.
    pub fn default_voice(&self) -> &str {
        &self.inner.manager.config().default_voice
    }

    /// A text-to-speech conversation builder on this engine.
    pub fn tts(&self) -> KyutaiTtsBuilder {
        KyutaiTtsBuilder::on_engine(self.clone())
    }

    /// A speech-to-text conversation builder on this engine.
    pub fn stt(&self) -> KyutaiSttBuilder {
        KyutaiSttBuilder::on_engine(self.clone())
    }

    /// True when both handles share one engine (and so one set of models).
    pub fn ptr_eq(&self, other: &KyutaiEngine) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl TtsEngine for KyutaiEngine {
    type Conv = KyutaiTtsBuilder;
    fn conversation(&self) -> KyutaiTtsBuilder {
        self.tts()
    }
}

impl SttEngine for KyutaiEngine {
    type Conv = KyutaiSttBuilder;
    fn conversation(&self) -> KyutaiSttBuilder {
        self.stt()
    }
}

impl std::fmt::Debug for KyutaiEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KyutaiEngine")
            .field("settings", self.inner.manager.settings())
            .field("paths", &self.inner.paths)
            .finish()
    }
}

/// Where a conversation builder finds its engine: the process-wide provider (resolved when the
/// conversation starts, so that `Kyutai::tts()` itself stays synchronous) or a given engine.
#[derive(Clone)]
pub(crate) enum EngineHandle {
    Global(&'static crate::provider::Provider),
    Owned(KyutaiEngine),
}

impl EngineHandle {
    pub(crate) async fn engine(&self) -> Result<KyutaiEngine> {
        match self {
            EngineHandle::Global(provider) => provider.engine().await.cloned(),
            EngineHandle::Owned(engine) => Ok(engine.clone()),
        }
    }
}
