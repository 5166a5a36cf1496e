//! `MoshiError`: the one error type of this crate.
//!
//! Every variant says what failed (which repository, which file, which directory) and what the
//! user can do about it. Sources are kept behind `Arc` so that the error is `Clone`: when several
//! callers wait on one model download, every one of them receives the same error (see
//! [`crate::shared_init`]).

use std::path::PathBuf;
use std::sync::Arc;

use crate::voice::VoiceError;

/// A source error, shared so that [`MoshiError`] can be cloned.
pub type SharedSource = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong while fetching, verifying, loading or running Kyutai models.
///
/// `Debug` prints the message and its causes, so that `fn main() -> Result<(), MoshiError>`
/// shows the advice rather than the fields; match on the variants for the details.
#[non_exhaustive]
#[derive(Clone, thiserror::Error)]
pub enum MoshiError {
    /// The hub answered that the repository does not exist (or is private and hidden).
    #[error(
        "the model repository `{repo}` was not found on {endpoint}; check its name (for example \
         `kyutai/tts-1.6b-en_fr`), or if it is private, set HF_TOKEN"
    )]
    RepoNotFound {
        /// The repository, `org/name`.
        repo: String,
        /// The hub that was asked.
        endpoint: String,
    },

    /// The repository exists but the revision (branch, tag or commit) does not.
    #[error(
        "the revision `{revision}` does not exist in `{repo}`; use a branch name such as `main` \
         or a full 40-character commit hash"
    )]
    RevisionNotFound {
        /// The repository, `org/name`.
        repo: String,
        /// The branch, tag or commit asked for.
        revision: String,
    },

    /// The repository exists but does not hold this file at this revision.
    #[error(
        "the file `{file}` is not in `{repo}` at revision `{revision}`; check the file names in \
         the repository's config.json, or the override you configured"
    )]
    FileNotFound {
        /// The repository, `org/name`.
        repo: String,
        /// The branch, tag or commit.
        revision: String,
        /// The file's path in the repository.
        file: String,
    },

    /// A voice name that the voices repository does not hold.
    #[error(
        "the voice `{voice}` was not found in `{repo}` (looked for `{file}`); voices are named by \
         their path in the voices repository without the model suffix, for example \
         `expresso/ex03-ex01_happy_001_channel1_334s.wav`"
    )]
    VoiceNotFound {
        /// The voice name as given.
        voice: String,
        /// The repository, `org/name`.
        repo: String,
        /// The file's path in the repository.
        file: String,
    },

    /// 401 or 403: the repository is gated or private.
    #[error("access to `{repo}` was refused (HTTP {status}): {advice}")]
    AuthenticationRequired {
        /// The repository, `org/name`.
        repo: String,
        /// The HTTP status.
        status: u16,
        /// What to do (accept the licence, set a token, check the token).
        advice: String,
    },

    /// Offline mode is on and the cache does not hold the file.
    #[error(
        "offline mode is on and `{file}` of `{repo}` (revision `{revision}`) is not in the cache \
         at {cache_dir}; {advice}"
    )]
    OfflineNotCached {
        /// The repository, `org/name`.
        repo: String,
        /// The branch, tag or commit.
        revision: String,
        /// The file's path in the repository.
        file: String,
        /// The cache that was searched.
        cache_dir: PathBuf,
        /// What to do, for the way offline mode was turned on.
        advice: String,
    },

    /// The network failed, even after retries.
    #[error(
        "could not download {url} after {attempts} attempt(s): {reason}; check the network \
         connection and the endpoint (HF_ENDPOINT), then run again (finished files are kept)"
    )]
    Network {
        /// The address asked.
        url: String,
        /// How many attempts were made.
        attempts: u32,
        /// What went wrong, in words.
        reason: String,
        /// The underlying failure, if any.
        #[source]
        source: Option<SharedSource>,
    },

    /// The hub answered with a status this client does not expect.
    #[error("the hub answered HTTP {status} for {url}: {message}")]
    UnexpectedStatus {
        /// The address asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// What happened, in words.
        message: String,
    },

    /// The downloaded bytes do not match the hash the hub announced.
    #[error(
        "the download of `{file}` from `{repo}` is corrupt: expected sha256 {expected}, got \
         {actual}; the file was discarded, run again to download it anew"
    )]
    IntegrityMismatch {
        /// The repository, `org/name`.
        repo: String,
        /// The file's path in the repository.
        file: String,
        /// The sha256 the hub announced.
        expected: String,
        /// The sha256 of the bytes received.
        actual: String,
    },

    /// The downloaded size does not match the size the hub announced.
    #[error(
        "the download of `{file}` from `{repo}` has {actual} bytes but the hub announced \
         {expected}; the file was discarded, run again to download it anew"
    )]
    SizeMismatch {
        /// The repository, `org/name`.
        repo: String,
        /// The file's path in the repository.
        file: String,
        /// The size the hub announced, in bytes.
        expected: u64,
        /// The size received, in bytes.
        actual: u64,
    },

    /// Not enough room in the cache directory.
    #[error(
        "not enough disk space in {dir}: {needed} bytes needed, {available} available; free some \
         space or choose another cache directory (--cache-dir or HF_HUB_CACHE)"
    )]
    DiskFull {
        /// The directory that is full.
        dir: PathBuf,
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
    },

    /// Another process holds the download lock of a file and has written nothing for too long.
    #[error(
        "another process holds the download lock {lock} for `{file}` of `{repo}` and has made no \
         progress for {waited_secs} s; if no other download (kyutai or huggingface_hub) is still \
         running, delete that lock file and run again"
    )]
    DownloadLockStale {
        /// The repository, `org/name`.
        repo: String,
        /// The file's path in the repository.
        file: String,
        /// The lock file.
        lock: PathBuf,
        /// How long was waited without progress.
        waited_secs: u64,
    },

    /// A model file (weights, config, tokenizer, voice) is malformed.
    #[error(
        "the model file {path} is invalid: {reason}; delete it or run `kyutai download --force`"
    )]
    InvalidModelFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The configuration given to this crate is inconsistent (the message says what to change).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// Input audio or text that cannot be used.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// The configured GPU cannot be used: this build lacks the cargo feature for it, or the
    /// machine lacks the driver or the device. Its own variant so that an application can
    /// fall back to `Device::Cpu`.
    #[error("the {device} device cannot be used: {reason}")]
    DeviceUnavailable {
        /// The device, as `--device` names it (`cuda:0`).
        device: String,
        /// Why it cannot be used and what to do, in words.
        reason: String,
        /// The GPU back end's error, if it got that far.
        #[source]
        source: Option<SharedSource>,
    },

    /// A capability that this build of the crate cannot run yet.
    #[error("{0}")]
    Unsupported(String),

    /// The engine runs as many conversations as it may, and the configuration says not to wait
    /// ([`WhenBusy::Fail`](crate::models::WhenBusy::Fail)).
    #[error(
        "no free channels: this engine already runs its {slots} {what} conversations; try again \
         when one ends, or raise KyutaiModelConfig::max_conversations"
    )]
    Busy {
        /// Which model: "speech-to-text" or "text-to-speech".
        what: String,
        /// Conversations at once (the limit).
        slots: usize,
    },

    /// Running the model failed.
    #[error("inference failed: {message}")]
    Inference {
        /// What happened, in words.
        message: String,
        /// The underlying failure, if any.
        #[source]
        source: Option<SharedSource>,
    },

    /// A filesystem operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done (a verb phrase).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: Arc<std::io::Error>,
    },
}

impl MoshiError {
    /// An I/O error on `path`; `action` reads as a verb phrase, e.g. "could not create".
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        MoshiError::Io {
            action,
            path: path.into(),
            source: Arc::new(source),
        }
    }

    /// An invalid model file.
    pub(crate) fn invalid_file(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        MoshiError::InvalidModelFile {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl std::fmt::Debug for MoshiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::voice::error::write_with_causes(self, f)
    }
}

/// Shorthand used across the crate.
pub type Result<T, E = MoshiError> = std::result::Result<T, E>;

/// The stage a [`MoshiError`] happened in, which decides the [`VoiceError`] variant of a
/// failure while running a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Synthesis,
    Transcription,
}

impl MoshiError {
    /// The [`VoiceError`] for this error, in the category it belongs to, with this error as its
    /// [`source`](std::error::Error::source) (so [`VoiceError::moshi`] finds it again).
    pub(crate) fn into_voice(self, stage: Option<Stage>) -> VoiceError {
        let message = self.to_string();
        let source: Option<crate::voice::BoxError> = Some(Box::new(self.clone()));
        match &self {
            MoshiError::RepoNotFound { .. }
            | MoshiError::RevisionNotFound { .. }
            | MoshiError::FileNotFound { .. }
            | MoshiError::VoiceNotFound { .. } => VoiceError::NotFound { message, source },
            MoshiError::OfflineNotCached { .. } => VoiceError::Offline { message, source },
            MoshiError::Network { .. } | MoshiError::UnexpectedStatus { .. } => {
                VoiceError::Network { message, source }
            }
            MoshiError::Busy { .. } => VoiceError::Busy { message, source },
            MoshiError::InvalidInput(reason) => VoiceError::InvalidInput(reason.clone()),
            MoshiError::InvalidConfig(reason) => VoiceError::Configuration(reason.clone()),
            MoshiError::Unsupported(reason) => VoiceError::Unsupported(reason.clone()),
            // Inside a `std::io::Error`, so that the surface's `Io` variant keeps the kind.
            MoshiError::Io { source: io, .. } => {
                VoiceError::Io(std::io::Error::new(io.kind(), self.clone()))
            }
            MoshiError::Inference { .. } => match stage {
                Some(Stage::Synthesis) => VoiceError::Synthesis { message, source },
                Some(Stage::Transcription) => VoiceError::Transcription { message, source },
                None => VoiceError::Other { message, source },
            },
            MoshiError::AuthenticationRequired { .. }
            | MoshiError::IntegrityMismatch { .. }
            | MoshiError::SizeMismatch { .. }
            | MoshiError::DiskFull { .. }
            | MoshiError::DownloadLockStale { .. }
            | MoshiError::InvalidModelFile { .. }
            | MoshiError::DeviceUnavailable { .. } => {
                VoiceError::ModelUnavailable { message, source }
            }
        }
    }
}

/// A candle failure while running a model, with what was being done.
pub(crate) fn inference(context: &str, e: candle_core::Error) -> MoshiError {
    MoshiError::Inference {
        message: format!("{context}: {e}"),
        source: Some(std::sync::Arc::new(e)),
    }
}

impl From<MoshiError> for VoiceError {
    /// Keeps the category; failures while running a model become [`VoiceError::Other`] here
    /// (the conversations themselves report them as synthesis or transcription failures).
    fn from(error: MoshiError) -> Self {
        error.into_voice(None)
    }
}

impl From<crate::ConfigureError> for MoshiError {
    /// A configuration that [`Kyutai::configure`](crate::Kyutai::configure) refused: an
    /// [`InvalidConfig`](MoshiError::InvalidConfig) that says why.
    fn from(error: crate::ConfigureError) -> Self {
        MoshiError::InvalidConfig(error.to_string())
    }
}

impl From<crate::ConfigureError> for VoiceError {
    fn from(error: crate::ConfigureError) -> Self {
        VoiceError::Configuration(error.to_string())
    }
}

impl VoiceError {
    /// The [`MoshiError`] behind this error, when it came from this crate's engine: the precise
    /// cause (which repository, file, voice, byte count), to match on.
    ///
    /// ```
    /// use fluent_voice_kyutai::MoshiError;
    /// use fluent_voice_kyutai::voice::VoiceError;
    ///
    /// let error = VoiceError::from(MoshiError::InvalidInput("empty text".into()));
    /// assert!(matches!(error.moshi(), None | Some(MoshiError::InvalidInput(_))));
    /// let error = VoiceError::from(MoshiError::DiskFull {
    ///     dir: "/cache".into(),
    ///     needed: 10,
    ///     available: 1,
    /// });
    /// assert!(matches!(error.moshi(), Some(MoshiError::DiskFull { needed: 10, .. })));
    /// ```
    pub fn moshi(&self) -> Option<&MoshiError> {
        let source: &(dyn std::error::Error + 'static) = match self {
            VoiceError::Io(io) => io.get_ref()?,
            other => std::error::Error::source(other)?,
        };
        source.downcast_ref::<MoshiError>()
    }
}

impl From<VoiceError> for MoshiError {
    /// The [`MoshiError`] behind a [`VoiceError`] when there is one (so that a round trip
    /// through the fluent-voice surface loses nothing), else the same category.
    fn from(error: VoiceError) -> Self {
        if let Some(moshi) = error.moshi() {
            return moshi.clone();
        }
        match error {
            VoiceError::InvalidInput(message) => MoshiError::InvalidInput(message),
            VoiceError::Configuration(message) => MoshiError::InvalidConfig(message),
            VoiceError::Unsupported(message) => MoshiError::Unsupported(message),
            other => MoshiError::Inference {
                message: other.to_string(),
                source: Some(Arc::new(other)),
            },
        }
    }
}
