//! `KyutaiEngine`: owns the model manager and the model files, fetched lazily and shared.
//!
//! An engine is cheap to clone (an `Arc`); every conversation it starts shares its files and its
//! loaded weights. Each capability is fetched and loaded at most once per engine, by the first
//! conversation that needs it; concurrent conversations wait for that one attempt and share its
//! outcome (see [`SharedInit`]).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;

use crate::error::{MoshiError, Result};
use crate::models::{
    KyutaiModelConfig, KyutaiModelManager, KyutaiModelPaths, SttModelPaths, TtsFamily,
    TtsModelPaths, Weights,
};
use crate::pocket::{GenerateSettings, LoadedPocket, PocketFiles, PocketModel, VoiceState};
use crate::runtime::{blocking, on_tokio};
use crate::shared_init::SharedInit;
use crate::stt::SttModel;
use crate::tts::TtsModel;
use crate::voice::Language;

/// The Kyutai implementation of [`TtsEngine`](crate::voice::TtsEngine) and
/// [`SttEngine`](crate::voice::SttEngine).
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

/// Each capability's state lives in one cell that holds its value once ready: files, then
/// loaded weights, each fetched or loaded by one shared attempt.
struct EngineInner {
    manager: KyutaiModelManager,
    tts_files: SharedInit<TtsModelPaths, MoshiError>,
    stt_files: SharedInit<SttModelPaths, MoshiError>,
    tts_model: SharedInit<Arc<TtsModel>, MoshiError>,
    stt_model: SharedInit<Arc<SttModel>, MoshiError>,
    voices: Mutex<HashMap<String, Arc<SharedInit<PathBuf, MoshiError>>>>,
    /// The voices repository's list of voices, asked for once.
    voice_list: SharedInit<Vec<String>, MoshiError>,
    /// Pocket TTS: its files and model, loaded once, and each voice state computed once.
    pocket: SharedInit<Arc<LoadedPocket>, MoshiError>,
    pocket_voices: Mutex<HashMap<String, Arc<SharedInit<VoiceState, MoshiError>>>>,
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
        if !manager.settings().offline {
            let cache_dir = manager.settings().cache_dir.clone();
            blocking("preparing the cache directory", move || {
                std::fs::create_dir_all(&cache_dir).map_err(|e| {
                    MoshiError::io("could not create the cache directory", &cache_dir, e)
                })
            })
            .await?;
        }
        Ok(KyutaiEngine {
            inner: Arc::new(EngineInner {
                manager,
                tts_files: SharedInit::new(),
                stt_files: SharedInit::new(),
                tts_model: SharedInit::new(),
                stt_model: SharedInit::new(),
                voices: Mutex::new(HashMap::new()),
                voice_list: SharedInit::new(),
                pocket: SharedInit::new(),
                pocket_voices: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The model files fetched so far (a snapshot).
    pub fn model_paths(&self) -> KyutaiModelPaths {
        let voices: BTreeMap<String, PathBuf> = self
            .inner
            .voices
            .lock()
            .iter()
            .filter_map(|(name, cell)| Some((name.clone(), cell.get()?.clone())))
            .collect();
        KyutaiModelPaths {
            cache_dir: self.inner.manager.settings().cache_dir.clone(),
            tts: self.inner.tts_files.get().cloned(),
            stt: self.inner.stt_files.get().cloned(),
            voices,
        }
    }

    /// The model manager (settings, cache).
    pub fn manager(&self) -> &KyutaiModelManager {
        &self.inner.manager
    }

    /// Fetches and verifies the TTS model files, once.
    pub async fn ensure_tts(&self) -> Result<&TtsModelPaths> {
        let inner = self.inner.clone();
        self.inner
            .tts_files
            .get_or_try_init(move || {
                on_tokio(async move { inner.manager.fetch_tts().await }).boxed()
            })
            .await
    }

    /// Fetches and verifies the STT model files, once.
    pub async fn ensure_stt(&self) -> Result<&SttModelPaths> {
        let inner = self.inner.clone();
        self.inner
            .stt_files
            .get_or_try_init(move || {
                on_tokio(async move { inner.manager.fetch_stt().await }).boxed()
            })
            .await
    }

    /// The TTS model, fetched and loaded once (on a blocking thread); every conversation of
    /// this engine shares it. With quantized weights, the first load of a model derives its
    /// quantized file and keeps it in the cache; later loads read that file.
    pub async fn tts_model(&self) -> Result<Arc<TtsModel>> {
        let paths = self.ensure_tts().await?.clone();
        let weights = self.inner.manager.config().tts_weights;
        let batching = self.inner.manager.config().tts_batching();
        let n_q = self.inner.manager.config().tts_n_q;
        let derived_dir = self.inner.manager.cache().repo_dir(&paths.repo);
        self.load_once(
            &self.inner.tts_model,
            "loading the TTS model",
            weights,
            move |device, weights| {
                TtsModel::load_codebooks(&paths, device, weights, &derived_dir, batching, n_q)
            },
        )
        .await
    }

    /// The STT model, fetched and loaded once (on a blocking thread: loading reads gigabytes);
    /// every conversation of this engine shares it. Quantized weights as for
    /// [`tts_model`](Self::tts_model).
    pub async fn stt_model(&self) -> Result<Arc<SttModel>> {
        let paths = self.ensure_stt().await?.clone();
        let weights = self.inner.manager.config().stt_weights;
        let batching = self.inner.manager.config().stt_batching();
        let derived_dir = self.inner.manager.cache().repo_dir(&paths.repo);
        self.load_once(
            &self.inner.stt_model,
            "loading the STT model",
            weights,
            move |device, weights| {
                SttModel::load_weights(&paths, device, weights, &derived_dir, batching)
            },
        )
        .await
    }

    /// Speech-to-text conversations running now, and the most that may
    /// (`KyutaiModelConfig::max_conversations`; `None`: no limit), once the model is loaded.
    pub fn stt_conversations(&self) -> Option<(usize, Option<usize>)> {
        self.inner
            .stt_model
            .get()
            .map(|model| model.conversations())
    }

    /// Text-to-speech conversations running now, and the most that may
    /// (`KyutaiModelConfig::tts_max_conversations`; `None`: no limit), once the model is loaded.
    pub fn tts_conversations(&self) -> Option<(usize, Option<usize>)> {
        self.inner
            .tts_model
            .get()
            .map(|model| model.conversations())
    }

    /// Prepares the TTS weights without loading them: fetches the files and, when the weights
    /// setting is quantized, derives the quantized file now (as the first load would). Returns
    /// that file, if any (`kyutai download --weights`).
    pub async fn prepare_tts_weights(&self) -> Result<Option<PathBuf>> {
        let lm = self.ensure_tts().await?.lm_weights.clone();
        let repo = self.inner.manager.config().tts_repo.clone();
        self.prepare(lm, &repo, self.inner.manager.config().tts_weights)
            .await
    }

    /// Prepares the STT weights as [`prepare_tts_weights`](Self::prepare_tts_weights) does.
    pub async fn prepare_stt_weights(&self) -> Result<Option<PathBuf>> {
        let lm = self.ensure_stt().await?.lm_weights.clone();
        let repo = self.inner.manager.config().stt_repo.clone();
        self.prepare(lm, &repo, self.inner.manager.config().stt_weights)
            .await
    }

    async fn prepare(
        &self,
        lm: PathBuf,
        repo: &str,
        weights: Option<Weights>,
    ) -> Result<Option<PathBuf>> {
        let weights =
            weights.unwrap_or_else(|| Weights::default_for(self.inner.manager.config().device));
        let derived_dir = self.inner.manager.cache().repo_dir(repo);
        blocking("preparing the weights", move || {
            crate::weights::prepare(&lm, weights, &derived_dir)
        })
        .await
    }

    /// Loads a model into `cell` once, on a blocking thread, on the configured device, with
    /// `weights` (unset: the device's default).
    async fn load_once<M: Send + Sync + 'static>(
        &self,
        cell: &SharedInit<Arc<M>, MoshiError>,
        what: &'static str,
        weights: Option<Weights>,
        load: impl FnOnce(&candle_core::Device, Weights) -> Result<M> + Send + 'static,
    ) -> Result<Arc<M>> {
        let device = self.inner.manager.config().device;
        let weights = weights.unwrap_or_else(|| Weights::default_for(device));
        let model = cell
            .get_or_try_init(move || {
                blocking(what, move || {
                    let device = crate::codec::candle_device(device)?;
                    load(&device, weights).map(Arc::new)
                })
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
                on_tokio(async move { inner.manager.fetch_voice(&tts, &name).await }).boxed()
            })
            .await?;
        Ok(path.clone())
    }

    /// The voices the TTS model can speak with, by the names [`Speaker`](crate::voice::Speaker)
    /// takes (`with_voice("expresso/ex03-ex01_happy_001_channel1_334s.wav")`), sorted: the
    /// voices repository's file list, asked for once per engine (offline: the voices in the
    /// cache).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), fluent_voice_kyutai::MoshiError> {
    /// let engine = fluent_voice_kyutai::KyutaiEngine::new().await?;
    /// for voice in engine.voices().await? {
    ///     println!("{voice}");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn voices(&self) -> Result<Vec<String>> {
        let tts = self.ensure_tts().await?.clone();
        let inner = self.inner.clone();
        let voices = self
            .inner
            .voice_list
            .get_or_try_init(move || {
                on_tokio(async move { inner.manager.list_voices(&tts).await }).boxed()
            })
            .await?;
        Ok(voices.clone())
    }

    /// The voice used when a speaker names none: the configured one, or for Pocket TTS its
    /// config's language default (`alba`, `estelle` for French, ...).
    pub fn default_voice(&self) -> &str {
        let config = self.inner.manager.config();
        match &config.tts_family() {
            TtsFamily::Pocket(name)
                if config.default_voice == crate::models::config::DEFAULT_VOICE =>
            {
                crate::pocket::config::default_voice(name)
            }
            _ => &config.default_voice,
        }
    }

    /// The Pocket TTS model of [`TtsFamily::Pocket`], fetched and loaded once: its config, the
    /// weights (the gated ones with Mimi's encoder when they can be had, else the open ones:
    /// no cloning) and the tokenizer. The flow transformer's linears follow the TTS weights
    /// setting (q8/q4 derived once and cached, as for the 1.6B); Mimi stays in float.
    pub async fn pocket_tts(&self) -> Result<Arc<LoadedPocket>> {
        let TtsFamily::Pocket(source) = self.inner.manager.config().tts_family() else {
            return Err(MoshiError::InvalidConfig(
                "this engine's text-to-speech model is the DSM family, not Pocket TTS; \
                 configure it with KyutaiModelConfig::tts_model(\"pocket\".parse()?)"
                    .into(),
            ));
        };
        let inner = self.inner.clone();
        let device = inner.manager.config().device;
        let weights = inner
            .manager
            .config()
            .tts_weights
            .unwrap_or_else(|| Weights::default_for(device));
        let loaded = self
            .inner
            .pocket
            .get_or_try_init(move || {
                async move {
                    let files =
                        on_tokio(async move { PocketFiles::fetch(&inner.manager, &source).await })
                            .await?;
                    let derived_dir = files
                        .weights
                        .parent()
                        .map(std::path::Path::to_path_buf)
                        .unwrap_or_default();
                    blocking("loading the Pocket TTS model", move || {
                        let device = crate::codec::candle_device(device)?;
                        let (source, _) = crate::weights::lm_source(
                            &files.weights,
                            weights,
                            &device,
                            &derived_dir,
                        )?;
                        let model =
                            PocketModel::new(files.config.clone(), &source, &files.tokenizer)?;
                        Ok(Arc::new(LoadedPocket {
                            files,
                            model,
                            weights,
                        }))
                    })
                    .await
                }
                .boxed()
            })
            .await?;
        Ok(loaded.clone())
    }

    /// A Pocket TTS voice state, computed once per engine: a predefined voice by name (its
    /// state fetched from the model's repository), a `.safetensors` voice state file, or an
    /// audio file to clone (any format the crate decodes; needs the gated weights).
    pub async fn pocket_voice(&self, voice: &str) -> Result<VoiceState> {
        let pocket = self.pocket_tts().await?;
        let cell = self
            .inner
            .pocket_voices
            .lock()
            .entry(voice.to_string())
            .or_insert_with(|| Arc::new(SharedInit::new()))
            .clone();
        let inner = self.inner.clone();
        let name = voice.to_string();
        let state = cell
            .get_or_try_init(move || {
                async move {
                    let path = std::path::PathBuf::from(&name);
                    let file = if crate::pocket::files::is_voice_file(&name) {
                        path
                    } else if name.starts_with("hf://") {
                        let hub = crate::pocket::files::HubPath::parse(&name)?;
                        on_tokio(async move { hub.fetch(&inner.manager).await }).await?
                    } else {
                        let p = pocket.clone();
                        on_tokio(async move { p.files.fetch_voice(&inner.manager, &name).await })
                            .await?
                    };
                    blocking("loading the voice", move || pocket.voice_from_file(&file)).await
                }
                .boxed()
            })
            .await?;
        Ok(state.clone())
    }

    /// Clones a Pocket TTS voice from audio bytes (an upload; `extension` names the format for
    /// the decoder) and keeps its state in this engine's voice cache under a name derived from
    /// the bytes' sha256, which it returns: a speaker `with_voice(name)` speaks with it, and the
    /// same audio uploaded again is not encoded again.
    pub async fn pocket_voice_from_audio(&self, bytes: Vec<u8>, extension: &str) -> Result<String> {
        use sha2::Digest;
        let pocket = self.pocket_tts().await?;
        let name = format!("upload:{}", hex::encode(sha2::Sha256::digest(&bytes)));
        let cell = self
            .inner
            .pocket_voices
            .lock()
            .entry(name.clone())
            .or_insert_with(|| Arc::new(SharedInit::new()))
            .clone();
        let extension = extension.to_string();
        cell.get_or_try_init(move || {
            blocking("cloning the voice", move || {
                let file = tempfile::Builder::new()
                    .suffix(&format!(".{extension}"))
                    .tempfile()
                    .map_err(|e| {
                        MoshiError::io(
                            "could not create",
                            std::path::Path::new("a temporary file"),
                            e,
                        )
                    })?;
                std::fs::write(file.path(), &bytes)
                    .map_err(|e| MoshiError::io("could not write", file.path(), e))?;
                pocket.voice_from_file(file.path())
            })
            .boxed()
        })
        .await?;
        Ok(name)
    }

    /// Fetches and loads the text-to-speech model of the configured family, and its default
    /// voice (what a server does before it listens).
    pub async fn load_tts(&self) -> Result<()> {
        match &self.inner.manager.config().tts_family() {
            TtsFamily::Pocket(_) => {
                self.pocket_voice(self.default_voice()).await?;
            }
            _ => {
                self.tts_model().await?;
                self.ensure_voice(self.default_voice()).await?;
            }
        }
        Ok(())
    }

    /// The configured text-to-speech model, in words: `pocket:NAME` or the DSM repository.
    pub fn tts_model_name(&self) -> String {
        let config = self.inner.manager.config();
        match &config.tts_family() {
            TtsFamily::Pocket(name) => format!("pocket:{name}"),
            _ => config.tts_repo.clone(),
        }
    }

    /// The default generation settings of the configured Pocket TTS model.
    pub async fn pocket_settings(&self) -> Result<GenerateSettings> {
        Ok(GenerateSettings::defaults(
            self.pocket_tts().await?.model.config(),
        ))
    }

    /// The languages the configured text-to-speech model speaks, read from its repository name
    /// (`kyutai/tts-1.6b-en_fr`: English and French); English and French when the name does not
    /// say.
    pub fn tts_languages(&self) -> Vec<Language> {
        let config = self.inner.manager.config();
        match &config.tts_family() {
            // Each Pocket config speaks one language, named by the config.
            TtsFamily::Pocket(name) => {
                let code = match crate::pocket::config::config_language(name) {
                    "french" => "fr",
                    "german" => "de",
                    "portuguese" => "pt",
                    "italian" => "it",
                    "spanish" => "es",
                    "dutch" => "nl",
                    _ => "en",
                };
                code.parse().map(|l| vec![l]).unwrap_or_default()
            }
            _ => model_languages(&config.tts_repo),
        }
    }

    /// The languages the configured speech-to-text model understands, read from its repository
    /// name as for [`tts_languages`](Self::tts_languages).
    pub fn stt_languages(&self) -> Vec<Language> {
        model_languages(&self.inner.manager.config().stt_repo)
    }

    /// True when both handles share one engine (and so one set of models).
    pub fn ptr_eq(&self, other: &KyutaiEngine) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl std::fmt::Debug for KyutaiEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KyutaiEngine")
            .field("settings", self.inner.manager.settings())
            .field("paths", &self.model_paths())
            .finish()
    }
}

/// Where a conversation builder finds its engine: a given engine, or one resolved when the
/// conversation starts (the process-wide provider's, so that `Kyutai::tts()` itself stays
/// synchronous). The resolver is a plain function so that the builders need not know the
/// provider.
#[derive(Clone)]
pub(crate) enum EngineHandle {
    Deferred(fn() -> BoxFuture<'static, Result<KyutaiEngine>>),
    Owned(KyutaiEngine),
}

impl EngineHandle {
    pub(crate) async fn engine(&self) -> Result<KyutaiEngine> {
        match self {
            EngineHandle::Deferred(resolve) => resolve().await,
            EngineHandle::Owned(engine) => Ok(engine.clone()),
        }
    }
}

/// The languages of a Kyutai model, read from its repository name as Kyutai names them:
/// `<task>-<size>-<codes>`, the codes two-letter and `_`-joined (`kyutai/tts-1.6b-en_fr`:
/// English and French; `kyutai/stt-2.6b-en-candle`: English). The checkpoints carry no language
/// list of their own; a repository named otherwise is taken to speak the languages of Kyutai's
/// models, English and French.
pub fn model_languages(repo: &str) -> Vec<Language> {
    let name = repo.rsplit('/').next().unwrap_or(repo);
    let is_size = |s: &str| {
        s.strip_suffix('b')
            .is_some_and(|n| !n.is_empty() && n.parse::<f64>().is_ok())
    };
    let is_codes = |s: &str| {
        s.split('_')
            .all(|code| code.len() == 2 && code.bytes().all(|b| b.is_ascii_lowercase()))
    };
    let segments: Vec<&str> = name.split('-').collect();
    let codes = segments
        .windows(2)
        .find(|pair| is_size(pair[0]) && is_codes(pair[1]))
        .map(|pair| pair[1]);
    match codes {
        Some(codes) => codes.split('_').filter_map(|c| c.parse().ok()).collect(),
        None => vec![Language::English, Language::French],
    }
}

/// `en and fr`, for messages.
pub(crate) fn language_list(languages: &[Language]) -> String {
    let codes: Vec<&str> = languages.iter().map(Language::code).collect();
    codes.join(" and ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_come_from_kyutai_repository_names() {
        let en_fr = vec![Language::English, Language::French];
        assert_eq!(model_languages("kyutai/tts-1.6b-en_fr"), en_fr);
        assert_eq!(model_languages("kyutai/stt-1b-en_fr-candle"), en_fr);
        assert_eq!(
            model_languages("kyutai/stt-2.6b-en-candle"),
            [Language::English]
        );
        assert_eq!(
            model_languages("kyutai/tts-0.75b-en-public"),
            [Language::English]
        );
        assert_eq!(model_languages("someone/my-voice-model"), en_fr);
        assert_eq!(
            model_languages("kyutai/stt-1b-de"),
            ["de".parse::<Language>().unwrap()]
        );
    }
}
