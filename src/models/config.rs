//! `KyutaiModelConfig`: which models to use and how to reach them.
//!
//! Every field left unset is filled, when the manager starts, from the environment variables that
//! the Python `huggingface_hub` reads (`HF_HOME`, `HF_HUB_CACHE`, `HF_ENDPOINT`, `HF_TOKEN`,
//! `HF_TOKEN_PATH`, `HF_HUB_OFFLINE`, `HF_HUB_DISABLE_PROGRESS_BARS`), so that both clients share
//! one cache and one set of settings.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::progress::{ProgressCallback, ProgressEvent};
pub use crate::stt::WhenBusy;

impl KyutaiModelConfig {
    /// The batching of speech-to-text conversations this configuration asks for.
    pub(crate) fn stt_batching(&self) -> crate::batch::Batching {
        crate::batch::Batching {
            batch_size: self.batch_size.max(1),
            max_conversations: self.max_conversations,
        }
    }

    /// The batching of text-to-speech conversations this configuration asks for.
    pub(crate) fn tts_batching(&self) -> crate::batch::Batching {
        crate::batch::Batching {
            batch_size: self.tts_batch_size.max(1),
            max_conversations: self.tts_max_conversations,
        }
    }
}

/// The public TTS model (Delayed Streams Modeling, English and French).
pub const DEFAULT_TTS_REPO: &str = "kyutai/tts-1.6b-en_fr";
/// The public STT model (about 1B parameters, English and French, candle format).
pub const DEFAULT_STT_REPO: &str = "kyutai/stt-1b-en_fr-candle";
/// The voice embeddings for the TTS models.
pub const DEFAULT_VOICES_REPO: &str = "kyutai/tts-voices";
/// The voice the Python reference uses by default.
pub const DEFAULT_VOICE: &str = "expresso/ex03-ex01_happy_001_channel1_334s.wav";
/// The endpoint used when neither the config nor `HF_ENDPOINT` names one.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Where the models run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// The CPU (the default; always available).
    #[default]
    Cpu,
    /// A CUDA GPU, by ordinal (needs the `cuda` feature).
    Cuda(usize),
    /// An Apple GPU (needs the `metal` feature).
    Metal(usize),
}

impl Device {
    /// Whether this build, on this machine, can run models on this device: `Ok` for the CPU and
    /// for a GPU that starts, else the [`MoshiError::DeviceUnavailable`](crate::MoshiError) that
    /// says why (no cargo feature, no driver, no device). Cheap next to loading a model, so an
    /// application can ask first and fall back to [`Device::Cpu`].
    ///
    /// ```
    /// use fluent_voice_kyutai::models::Device;
    /// assert!(Device::Cpu.check().is_ok());
    /// ```
    pub fn check(self) -> crate::Result<()> {
        crate::codec::candle_device(self).map(|_| ())
    }
}

impl fmt::Display for Device {
    /// The form [`Device::from_str`](std::str::FromStr) reads: `cpu`, `cuda:0`, `metal:0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
            Device::Metal(ordinal) => write!(f, "metal:{ordinal}"),
        }
    }
}

impl std::str::FromStr for Device {
    type Err = String;

    /// Reads `cpu`, `cuda`, `cuda:N`, `metal` or `metal:N` (N: the GPU's ordinal, default 0),
    /// as the CLI's `--device` takes it.
    ///
    /// ```
    /// use fluent_voice_kyutai::models::Device;
    /// assert_eq!("cuda".parse(), Ok(Device::Cuda(0)));
    /// assert_eq!("cuda:1".parse(), Ok(Device::Cuda(1)));
    /// assert_eq!("CPU".parse(), Ok(Device::Cpu));
    /// assert!("gpu".parse::<Device>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Device, String> {
        let s = s.trim().to_ascii_lowercase();
        let (kind, ordinal) = match s.split_once(':') {
            Some((kind, n)) => match n.parse::<usize>() {
                Ok(n) => (kind, Some(n)),
                Err(_) => return Err(format!("`{n}` is not a GPU number in `{s}`")),
            },
            None => (s.as_str(), None),
        };
        match (kind, ordinal) {
            ("cpu", None) => Ok(Device::Cpu),
            ("cuda", n) => Ok(Device::Cuda(n.unwrap_or(0))),
            ("metal", n) => Ok(Device::Metal(n.unwrap_or(0))),
            _ => Err(format!(
                "unknown device `{s}`: use cpu, cuda, cuda:N, metal or metal:N"
            )),
        }
    }
}

/// How a language model's weights are held and multiplied (`--weights`), per capability.
///
/// Generating a frame reads every weight of the language model once, so a frame's time follows
/// the bytes of weights: 8-bit weights read about a quarter of f32's, 4-bit ones an eighth. Only
/// the large linear layers are quantized; embeddings, norms and Mimi stay in full precision. The
/// quantized file is derived from the published one at the first load and kept in the cache.
///
/// ```
/// use fluent_voice_kyutai::models::Weights;
/// assert_eq!("q8".parse::<Weights>().unwrap(), Weights::Q8);
/// assert_eq!(Weights::Q4.to_string(), "q4");
/// assert!("q3".parse::<Weights>().unwrap_err().contains("f32, f16, bf16, q8, q4"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Weights {
    /// 32-bit floats: the reference's numbers, 4 bytes per weight.
    F32,
    /// 16-bit floats (GPUs).
    F16,
    /// bfloat16, as published: the GPU default, as Kyutai runs its models (candle has no bf16
    /// matrix product on the CPU).
    Bf16,
    /// 8-bit blocks (GGML `q8_0`: 32 weights share one scale), 8.5 bits per weight: the CPU
    /// default.
    Q8,
    /// 4-bit k-quant blocks (GGML `q4k`), 4.5 bits per weight: the fastest, least exact.
    Q4,
}

impl Weights {
    /// The names accepted by [`FromStr`](std::str::FromStr) and `--weights`.
    pub const NAMES: [&'static str; 5] = ["f32", "f16", "bf16", "q8", "q4"];

    /// The default on a device: q8 on the CPU (logits within a cosine of 0.9997 of f32's at a
    /// third of its time per frame; see the README), bf16 on GPUs.
    pub fn default_for(device: Device) -> Weights {
        match device {
            Device::Cpu => Weights::Q8,
            Device::Cuda(_) | Device::Metal(_) => Weights::Bf16,
        }
    }
}

impl fmt::Display for Weights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Weights::F32 => "f32",
            Weights::F16 => "f16",
            Weights::Bf16 => "bf16",
            Weights::Q8 => "q8",
            Weights::Q4 => "q4",
        })
    }
}

impl std::str::FromStr for Weights {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Weights::F32),
            "f16" => Ok(Weights::F16),
            "bf16" => Ok(Weights::Bf16),
            "q8" | "q8_0" => Ok(Weights::Q8),
            "q4" | "q4k" | "q4_k" => Ok(Weights::Q4),
            _ => Err(format!(
                "unknown weights setting `{s}`: use one of {}",
                Weights::NAMES.join(", ")
            )),
        }
    }
}

/// How many audio codebooks the 1.6B TTS generates ([`KyutaiModelConfig::tts_n_q`]).
///
/// Each codebook is one depformer step per frame, so fewer codebooks make speech faster, at
/// some cost in audio detail: Kyutai's scripts generate all 32 of the 1.6B's, Kyutai's TTS
/// server 24 (`configs/config-tts.toml` of delayed-streams-modeling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TtsCodebooks {
    /// Every codebook of the model (32 for the 1.6B), as Kyutai's scripts.
    #[default]
    All,
    /// Exactly this many; more than the model has is an error, as in the reference.
    Exactly(usize),
    /// This many, or all of a model with fewer (`kyutai serve`'s default: 24).
    AtMost(usize),
}

impl TtsCodebooks {
    /// The codebooks to generate for a model of `model_n_q`, `None` for all of them.
    pub(crate) fn resolve(self, model_n_q: usize) -> Option<usize> {
        match self {
            TtsCodebooks::All => None,
            TtsCodebooks::Exactly(n) => Some(n),
            TtsCodebooks::AtMost(n) => (n < model_n_q).then_some(n),
        }
    }
}

/// How download progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// Bars on stderr when it is a terminal and `HF_HUB_DISABLE_PROGRESS_BARS` is not set.
    #[default]
    Auto,
    /// Never draw bars (the callback, if any, still receives events).
    Quiet,
}

/// The files of a model repository that can be overridden one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ModelFile {
    /// The language model weights (`moshi_name` in config.json).
    LmWeights,
    /// The Mimi codec weights (`mimi_name`).
    MimiWeights,
    /// The SentencePiece text tokenizer (`tokenizer_name`).
    Tokenizer,
    /// The Mimi configuration JSON (`mimi_config_name`).
    MimiConfig,
}

impl ModelFile {
    /// The config.json key that names this file.
    pub fn config_key(self) -> &'static str {
        match self {
            ModelFile::LmWeights => "moshi_name",
            ModelFile::MimiWeights => "mimi_name",
            ModelFile::Tokenizer => "tokenizer_name",
            ModelFile::MimiConfig => "mimi_config_name",
        }
    }
}

/// A text-to-speech model family, and which model of it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TtsFamily {
    /// Kyutai's 1.6B delayed-streams TTS (`kyutai/tts-1.6b-en_fr`, or the repository
    /// `tts_repo` names). Needs a GPU or a fast CPU for real time.
    Dsm,
    /// Pocket TTS (100M parameters, made for CPUs) with a config: the name of one of the
    /// configs the `pocket-tts` package ships (`english`, `french_24l`, `english_2m_2026-10`,
    /// ...), a local YAML file, or `hf://REPO/PATH.yaml@REVISION`.
    Pocket(String),
}

impl std::str::FromStr for TtsFamily {
    type Err = crate::MoshiError;

    /// `dsm`; `pocket` (English); `pocket:NAME`; a `.yaml` path or `hf://` URL (a Pocket
    /// config, as the package's `--config` reads it).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let yaml = |p: &str| {
            let p = p.split('@').next().unwrap_or(p);
            p.ends_with(".yaml") || p.ends_with(".yml")
        };
        match s {
            "dsm" => Ok(TtsFamily::Dsm),
            "pocket" => Ok(TtsFamily::Pocket(
                crate::pocket::config::DEFAULT_CONFIG.into(),
            )),
            _ if s.starts_with("pocket:") => {
                let name = &s["pocket:".len()..];
                crate::pocket::config::builtin(name)?;
                Ok(TtsFamily::Pocket(name.into()))
            }
            _ if s.starts_with("hf://") && yaml(s) => Ok(TtsFamily::Pocket(s.into())),
            _ if yaml(s) => Ok(TtsFamily::Pocket(s.into())),
            _ => Err(crate::MoshiError::InvalidConfig(format!(
                "unknown TTS model {s:?}: use `dsm`, `pocket`, `pocket:LANGUAGE` (one of {}), \
                 a Pocket config FILE.yaml, or hf://REPO/PATH.yaml@REVISION",
                crate::pocket::config::builtin_names()
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
}

/// Which Kyutai models to use, where to cache them and how to reach the hub.
///
/// ```
/// use fluent_voice_kyutai::KyutaiModelConfig;
///
/// let config = KyutaiModelConfig::default()
///     .stt_repo("kyutai/stt-2.6b-en-candle")
///     .cache_dir("/tmp/kyutai-cache")
///     .offline(true);
/// assert_eq!(config.stt_repo, "kyutai/stt-2.6b-en-candle");
/// assert_eq!(config.tts_repo, "kyutai/tts-1.6b-en_fr");
/// ```
#[derive(Clone)]
pub struct KyutaiModelConfig {
    /// Which text-to-speech model runs: the 1.6B DSM TTS of `tts_repo`, or Pocket TTS with one
    /// of its configs. Unset: the device's default ([`KyutaiModelConfig::tts_family`]).
    pub tts_model: Option<TtsFamily>,
    /// TTS model repository (`org/name`) of the DSM family.
    pub tts_repo: String,
    /// Branch, tag or commit of the TTS repository.
    pub tts_revision: String,
    /// STT model repository.
    pub stt_repo: String,
    /// Branch, tag or commit of the STT repository.
    pub stt_revision: String,
    /// Voice embeddings repository.
    pub voices_repo: String,
    /// Branch, tag or commit of the voices repository.
    pub voices_revision: String,
    /// The voice used when a speaker names none.
    pub default_voice: String,
    /// Download again even when the cache holds a verified copy.
    pub force_download: bool,
    /// The hub cache directory; unset: `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
    pub cache_dir: Option<PathBuf>,
    /// The hub endpoint; unset: `HF_ENDPOINT`, else `https://huggingface.co`.
    pub endpoint: Option<String>,
    /// The access token for gated models; unset: `HF_TOKEN`, else the token file.
    pub token: Option<String>,
    /// Never touch the network; unset: `HF_HUB_OFFLINE`.
    pub offline: Option<bool>,
    /// Where the models run.
    pub device: Device,
    /// How the TTS language model's weights are held; unset: [`Weights::default_for`] the device.
    pub tts_weights: Option<Weights>,
    /// How the STT language model's weights are held; unset: [`Weights::default_for`] the device.
    pub stt_weights: Option<Weights>,
    /// Progress display.
    pub progress: ProgressMode,
    /// Receives progress events, whatever the display.
    pub on_progress: Option<ProgressCallback>,
    /// Check each download's sha256 against the hub's etag (on by default; turning it off is for
    /// benchmarks and trusted local mirrors).
    pub verify_downloads: bool,
    /// Attempts per request before a network error is reported.
    pub max_attempts: u32,
    /// First retry delay; doubles on each retry (a `Retry-After` header takes precedence).
    pub retry_backoff: Duration,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time a response may stay silent before the attempt is abandoned.
    pub read_timeout: Duration,
    /// How long to wait on another process's download lock while its partial file shows no
    /// progress, before reporting it as stuck (a holder that makes progress is waited for as long
    /// as it takes; one that died has released the lock already).
    pub lock_stale_after: Duration,
    /// Speech-to-text conversations per batched step (default 1). Conversations beyond it run
    /// in further batches, each with its own attention caches (about 200 MB per conversation for
    /// the 1B STT in f32). With candle's CPU kernels a batch pays for f32 weights from about 4
    /// conversations on (8 cost about a third of 8 alone); a server of many streams sets it.
    pub batch_size: usize,
    /// Speech-to-text conversations at once, in all batches (default: no limit); beyond it a
    /// conversation waits or fails, as `when_busy` says.
    pub max_conversations: Option<usize>,
    /// Text-to-speech conversations per batched step (default 1). Each conversation is a row of
    /// the batched matrix products (two with direct CFG), at its own position with its own
    /// caches, so conversations started at different moments share steps. On a CPU a batch
    /// gives throughput, not speed (at q8 a step of N costs about half of N single steps, so
    /// each conversation runs slower than alone); a server of many streams sets it.
    pub tts_batch_size: usize,
    /// Text-to-speech conversations at once, in all batches (default: no limit).
    pub tts_max_conversations: Option<usize>,
    /// Audio codebooks the 1.6B TTS generates (default: all, as Kyutai's scripts; see
    /// [`TtsCodebooks`]). Pocket TTS has no codebooks: it ignores this.
    pub tts_n_q: TtsCodebooks,
    /// What a conversation does at `max_conversations` or `tts_max_conversations`: wait for
    /// one to end, or fail.
    pub when_busy: WhenBusy,
    /// Per-file overrides for the TTS repository: `hf://org/repo/path` or `file:///abs/path`.
    pub tts_files: BTreeMap<ModelFile, String>,
    /// Per-file overrides for the STT repository.
    pub stt_files: BTreeMap<ModelFile, String>,
}

impl Default for KyutaiModelConfig {
    fn default() -> Self {
        KyutaiModelConfig {
            tts_model: None,
            tts_repo: DEFAULT_TTS_REPO.into(),
            tts_revision: "main".into(),
            stt_repo: DEFAULT_STT_REPO.into(),
            stt_revision: "main".into(),
            voices_repo: DEFAULT_VOICES_REPO.into(),
            voices_revision: "main".into(),
            default_voice: DEFAULT_VOICE.into(),
            force_download: false,
            cache_dir: None,
            endpoint: None,
            token: None,
            offline: None,
            device: Device::Cpu,
            tts_weights: None,
            stt_weights: None,
            progress: ProgressMode::Auto,
            on_progress: None,
            verify_downloads: true,
            max_attempts: 5,
            retry_backoff: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            // Longer than any quiet spell of a working download: a stall (read_timeout) plus the
            // retries' backoff, or a Retry-After (capped at two minutes), or re-hashing a large
            // partial file before resuming it.
            lock_stale_after: Duration::from_secs(300),
            batch_size: 1,
            max_conversations: None,
            tts_batch_size: 1,
            tts_max_conversations: None,
            tts_n_q: TtsCodebooks::All,
            when_busy: WhenBusy::Wait,
            tts_files: BTreeMap::new(),
            stt_files: BTreeMap::new(),
        }
    }
}

/// Builder-style setters: each takes and returns `self`.
impl KyutaiModelConfig {
    /// The TTS model repository, `org/name` (default `kyutai/tts-1.6b-en_fr`); it names a
    /// model of the DSM family, so it selects that family.
    pub fn tts_repo(mut self, repo: impl Into<String>) -> Self {
        self.tts_repo = repo.into();
        self.tts_model = Some(TtsFamily::Dsm);
        self
    }
    /// Which text-to-speech model runs (see [`TtsFamily`]).
    ///
    /// ```
    /// use fluent_voice_kyutai::models::{KyutaiModelConfig, TtsFamily};
    ///
    /// let config = KyutaiModelConfig::default().tts_model("pocket:french".parse()?);
    /// assert_eq!(config.tts_family(), TtsFamily::Pocket("french".into()));
    /// // Unset, the device decides: Pocket TTS on the CPU (it keeps real time there), the
    /// // 1.6B on a GPU.
    /// assert_eq!(KyutaiModelConfig::default().tts_family(), TtsFamily::Pocket("english".into()));
    /// # Ok::<(), fluent_voice_kyutai::MoshiError>(())
    /// ```
    pub fn tts_model(mut self, family: TtsFamily) -> Self {
        self.tts_model = Some(family);
        self
    }

    /// The text-to-speech family that runs: the one set, else the device's default: Pocket TTS
    /// English on the CPU, where the 1.6B misses real time on a laptop's cores and Pocket
    /// keeps it (README, "Pocket TTS"), and the 1.6B on a GPU.
    pub fn tts_family(&self) -> TtsFamily {
        self.tts_model.clone().unwrap_or_else(|| match self.device {
            Device::Cpu => TtsFamily::Pocket(crate::pocket::config::DEFAULT_CONFIG.into()),
            _ => TtsFamily::Dsm,
        })
    }
    /// The branch, tag or 40-character commit of the TTS repository (default `main`).
    pub fn tts_revision(mut self, revision: impl Into<String>) -> Self {
        self.tts_revision = revision.into();
        self
    }
    /// The STT model repository, `org/name` (default `kyutai/stt-1b-en_fr-candle`).
    pub fn stt_repo(mut self, repo: impl Into<String>) -> Self {
        self.stt_repo = repo.into();
        self
    }
    /// The branch, tag or commit of the STT repository (default `main`).
    pub fn stt_revision(mut self, revision: impl Into<String>) -> Self {
        self.stt_revision = revision.into();
        self
    }
    /// The voice repository (default `kyutai/tts-voices`).
    pub fn voices_repo(mut self, repo: impl Into<String>) -> Self {
        self.voices_repo = repo.into();
        self
    }
    /// The branch, tag or commit of the voices repository (default `main`).
    pub fn voices_revision(mut self, revision: impl Into<String>) -> Self {
        self.voices_revision = revision.into();
        self
    }
    /// The voice used when a speaker names none, by its path in the voices repository
    /// without the model suffix (default `expresso/ex03-ex01_happy_001_channel1_334s.wav`).
    pub fn default_voice(mut self, voice: impl Into<String>) -> Self {
        self.default_voice = voice.into();
        self
    }
    /// Downloads every file again, even when the cache holds a verified copy.
    pub fn force_download(mut self, force: bool) -> Self {
        self.force_download = force;
        self
    }
    /// The hub cache directory (default: `HF_HUB_CACHE`, else `$HF_HOME/hub`, else
    /// `~/.cache/huggingface/hub`, as Python's `huggingface_hub` chooses it).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }
    /// The hub to download from (default: `HF_ENDPOINT`, else `https://huggingface.co`): a
    /// mirror, or a test hub.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }
    /// The access token for gated or private repositories (default: `HF_TOKEN`, else the
    /// token file). It is sent to the endpoint only, and never printed.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }
    /// Never touches the network: files come from the cache or the call fails clearly (default:
    /// `HF_HUB_OFFLINE`).
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = Some(offline);
        self
    }
    /// Where the models run (default: the CPU; GPUs need the `cuda` or `metal` feature).
    pub fn device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }
    /// How both language models' weights are held (default: q8 on the CPU, bf16 on GPUs).
    pub fn weights(mut self, weights: Weights) -> Self {
        self.tts_weights = Some(weights);
        self.stt_weights = Some(weights);
        self
    }
    /// How the TTS language model's weights are held.
    pub fn tts_weights(mut self, weights: Weights) -> Self {
        self.tts_weights = Some(weights);
        self
    }
    /// How the STT language model's weights are held.
    pub fn stt_weights(mut self, weights: Weights) -> Self {
        self.stt_weights = Some(weights);
        self
    }
    /// How download progress is shown (default: bars on a terminal).
    pub fn progress(mut self, mode: ProgressMode) -> Self {
        self.progress = mode;
        self
    }
    /// Calls `callback` with every download progress event, whatever the display.
    pub fn on_progress(
        mut self,
        callback: impl Fn(&ProgressEvent) + Send + Sync + 'static,
    ) -> Self {
        self.on_progress = Some(Arc::new(callback));
        self
    }
    /// Whether each download's sha256 is checked against the hub's (default true; turning it off
    /// is for benchmarks and trusted local mirrors).
    pub fn verify_downloads(mut self, verify: bool) -> Self {
        self.verify_downloads = verify;
        self
    }
    /// How many times a request is tried before a network error is reported (default 5; at
    /// least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }
    /// The wait before the first retry, doubled for each later one (default 0.5 s); a
    /// server's `Retry-After` takes precedence.
    pub fn retry_backoff(mut self, backoff: Duration) -> Self {
        self.retry_backoff = backoff;
        self
    }
    /// How long opening a connection may take (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
    /// How long a response may stay silent before the attempt is abandoned and resumed
    /// (default 30 s).
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }
    /// How long to wait on another process's download of the same file while it makes no
    /// progress, before reporting it as stuck (default 300 s).
    pub fn lock_stale_after(mut self, timeout: Duration) -> Self {
        self.lock_stale_after = timeout;
        self
    }
    /// How many speech-to-text conversations share one batched step (default 1; at least 1).
    pub fn batch_size(mut self, slots: usize) -> Self {
        self.batch_size = slots.max(1);
        self
    }
    /// At most this many speech-to-text conversations at once (default: no limit).
    pub fn max_conversations(mut self, max: usize) -> Self {
        self.max_conversations = Some(max.max(1));
        self
    }
    /// How many text-to-speech conversations share one batched step (default 1; at least 1).
    pub fn tts_batch_size(mut self, slots: usize) -> Self {
        self.tts_batch_size = slots.max(1);
        self
    }
    /// Generate `n_q` audio codebooks with the 1.6B TTS (default: all 32, as Kyutai's scripts;
    /// Kyutai's server uses 24): fewer depformer steps per frame, so faster speech. More than
    /// the model has fails when the model loads, as in the reference.
    ///
    /// ```
    /// use fluent_voice_kyutai::KyutaiModelConfig;
    /// use fluent_voice_kyutai::models::TtsCodebooks;
    /// let config = KyutaiModelConfig::default().tts_n_q(24);
    /// assert_eq!(config.tts_n_q, TtsCodebooks::Exactly(24));
    /// ```
    pub fn tts_n_q(mut self, n_q: usize) -> Self {
        self.tts_n_q = TtsCodebooks::Exactly(n_q);
        self
    }
    /// At most this many text-to-speech conversations at once (default: no limit).
    pub fn tts_max_conversations(mut self, max: usize) -> Self {
        self.tts_max_conversations = Some(max.max(1));
        self
    }
    /// What a conversation does at `max_conversations` or `tts_max_conversations` (default:
    /// wait for one to end).
    pub fn when_busy(mut self, when_busy: WhenBusy) -> Self {
        self.when_busy = when_busy;
        self
    }
    /// Overrides one TTS file: `hf://org/repo/path/in/repo` or `file:///abs/path`.
    pub fn tts_file(mut self, file: ModelFile, location: impl Into<String>) -> Self {
        self.tts_files.insert(file, location.into());
        self
    }
    /// Overrides one STT file: `hf://org/repo/path/in/repo` or `file:///abs/path`.
    pub fn stt_file(mut self, file: ModelFile, location: impl Into<String>) -> Self {
        self.stt_files.insert(file, location.into());
        self
    }
}

/// The token never appears in `Debug` output.
impl fmt::Debug for KyutaiModelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KyutaiModelConfig")
            .field("tts_model", &self.tts_model)
            .field("tts_repo", &self.tts_repo)
            .field("tts_revision", &self.tts_revision)
            .field("stt_repo", &self.stt_repo)
            .field("stt_revision", &self.stt_revision)
            .field("voices_repo", &self.voices_repo)
            .field("voices_revision", &self.voices_revision)
            .field("default_voice", &self.default_voice)
            .field("force_download", &self.force_download)
            .field("cache_dir", &self.cache_dir)
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("offline", &self.offline)
            .field("device", &self.device)
            .field("tts_weights", &self.tts_weights)
            .field("stt_weights", &self.stt_weights)
            .field("progress", &self.progress)
            .field(
                "on_progress",
                &self.on_progress.as_ref().map(|_| "<callback>"),
            )
            .field("verify_downloads", &self.verify_downloads)
            .field("max_attempts", &self.max_attempts)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("lock_stale_after", &self.lock_stale_after)
            .field("batch_size", &self.batch_size)
            .field("max_conversations", &self.max_conversations)
            .field("tts_batch_size", &self.tts_batch_size)
            .field("tts_max_conversations", &self.tts_max_conversations)
            .field("tts_n_q", &self.tts_n_q)
            .field("when_busy", &self.when_busy)
            .field("tts_files", &self.tts_files)
            .field("stt_files", &self.stt_files)
            .finish_non_exhaustive()
    }
}

/// The settings in force once the environment has filled what the config left unset.
#[derive(Clone)]
pub struct ResolvedSettings {
    /// The hub cache directory.
    pub cache_dir: PathBuf,
    /// The hub endpoint, without a trailing slash.
    pub endpoint: String,
    /// The access token, if any (never printed by `Debug`).
    pub token: Option<String>,
    /// Whether the network is never touched.
    pub offline: bool,
    /// Whether offline mode comes from `HF_HUB_OFFLINE` rather than the configuration (so that
    /// an error can say which to change).
    pub offline_from_env: bool,
    /// Whether progress bars are drawn.
    pub show_bars: bool,
}

impl fmt::Debug for ResolvedSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedSettings")
            .field("cache_dir", &self.cache_dir)
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("offline", &self.offline)
            .field("offline_from_env", &self.offline_from_env)
            .field("show_bars", &self.show_bars)
            .finish()
    }
}

/// A source of environment variables (the process environment, or a map in tests).
pub(crate) trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub(crate) struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Env for BTreeMap<&str, &str> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|v| v.to_string())
            .filter(|v| !v.is_empty())
    }
}

/// `huggingface_hub`'s notion of a true environment value.
fn is_true(value: &str) -> bool {
    matches!(
        value.to_ascii_uppercase().as_str(),
        "1" | "ON" | "YES" | "TRUE"
    )
}

impl KyutaiModelConfig {
    /// Fills what the config leaves unset from `env`, the way `huggingface_hub` does.
    pub(crate) fn resolve(&self, env: &dyn Env) -> ResolvedSettings {
        let home = dirs::home_dir().unwrap_or_else(|| PathBuf::from("."));
        let hf_home = env.var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            env.var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(".cache"))
                .join("huggingface")
        });
        let cache_dir = self.cache_dir.clone().unwrap_or_else(|| {
            env.var("HF_HUB_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| hf_home.join("hub"))
        });
        let endpoint = self
            .endpoint
            .clone()
            .or_else(|| env.var("HF_ENDPOINT"))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
            .trim_end_matches('/')
            .to_string();
        let token = self
            .token
            .clone()
            .or_else(|| env.var("HF_TOKEN"))
            .or_else(|| {
                let path = env
                    .var("HF_TOKEN_PATH")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| hf_home.join("token"));
                std::fs::read_to_string(path)
                    .ok()
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
            });
        let offline = self
            .offline
            .unwrap_or_else(|| env.var("HF_HUB_OFFLINE").is_some_and(|v| is_true(&v)));
        let bars_disabled = env
            .var("HF_HUB_DISABLE_PROGRESS_BARS")
            .is_some_and(|v| is_true(&v));
        let show_bars = self.progress == ProgressMode::Auto
            && !bars_disabled
            && std::io::IsTerminal::is_terminal(&std::io::stderr());
        ResolvedSettings {
            cache_dir,
            endpoint,
            token,
            offline,
            offline_from_env: offline && self.offline.is_none(),
            show_bars,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_fills_what_the_config_leaves_unset() {
        let env: BTreeMap<&str, &str> = [
            ("HF_HOME", "/data/hf"),
            ("HF_ENDPOINT", "http://127.0.0.1:9/"),
            ("HF_TOKEN", "hf_secret"),
            ("HF_HUB_OFFLINE", "yes"),
        ]
        .into();
        let settings = KyutaiModelConfig::default().resolve(&env);
        assert_eq!(settings.cache_dir, PathBuf::from("/data/hf/hub"));
        assert_eq!(settings.endpoint, "http://127.0.0.1:9");
        assert_eq!(settings.token.as_deref(), Some("hf_secret"));
        assert!(settings.offline);
    }

    #[test]
    fn config_wins_over_environment_and_hub_cache_wins_over_home() {
        let env: BTreeMap<&str, &str> = [
            ("HF_HOME", "/data/hf"),
            ("HF_HUB_CACHE", "/fast/hub"),
            ("HF_HUB_OFFLINE", "1"),
            ("HF_TOKEN", "from-env"),
        ]
        .into();
        let settings = KyutaiModelConfig::default().resolve(&env);
        assert_eq!(settings.cache_dir, PathBuf::from("/fast/hub"));
        let settings = KyutaiModelConfig::default()
            .cache_dir("/mine")
            .offline(false)
            .token("from-config")
            .resolve(&env);
        assert_eq!(settings.cache_dir, PathBuf::from("/mine"));
        assert!(!settings.offline);
        assert_eq!(settings.token.as_deref(), Some("from-config"));
    }

    #[test]
    fn token_file_is_read_when_no_variable_names_a_token() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "hf_from_file\n").unwrap();
        let home = dir.path().to_str().unwrap();
        let env: BTreeMap<&str, &str> = [("HF_HOME", home)].into();
        let settings = KyutaiModelConfig::default().resolve(&env);
        assert_eq!(settings.token.as_deref(), Some("hf_from_file"));
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let config = KyutaiModelConfig::default().token("hf_very_secret");
        let text = format!("{config:?}");
        assert!(!text.contains("hf_very_secret"), "{text}");
        assert!(text.contains("<redacted>"));
        let env: BTreeMap<&str, &str> = BTreeMap::new();
        let text = format!("{:?}", config.resolve(&env));
        assert!(!text.contains("hf_very_secret"), "{text}");
    }

    #[test]
    fn offline_values_follow_huggingface_hub() {
        for (value, expected) in [
            ("1", true),
            ("TRUE", true),
            ("on", true),
            ("0", false),
            ("no", false),
        ] {
            let env: BTreeMap<&str, &str> = [("HF_HUB_OFFLINE", value)].into();
            assert_eq!(
                KyutaiModelConfig::default().resolve(&env).offline,
                expected,
                "{value}"
            );
        }
    }
}
