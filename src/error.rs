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
#[non_exhaustive]
#[derive(Debug, Clone, thiserror::Error)]
pub enum MoshiError {
    /// The hub answered that the repository does not exist (or is private and hidden).
    #[error(
        "the model repository `{repo}` was not found on {endpoint}; check its name (for example \
         `kyutai/tts-1.6b-en_fr`), or if it is private, set HF_TOKEN"
    )]
    RepoNotFound { repo: String, endpoint: String },

    /// The repository exists but the revision (branch, tag or commit) does not.
    #[error(
        "the revision `{revision}` does not exist in `{repo}`; use a branch name such as `main` \
         or a full 40-character commit hash"
    )]
    RevisionNotFound { repo: String, revision: String },

    /// The repository exists but does not hold this file at this revision.
    #[error(
        "the file `{file}` is not in `{repo}` at revision `{revision}`; check the file names in \
         the repository's config.json, or the override you configured"
    )]
    FileNotFound {
        repo: String,
        revision: String,
        file: String,
    },

    /// A voice name that the voices repository does not hold.
    #[error(
        "the voice `{voice}` was not found in `{repo}` (looked for `{file}`); voices are named by \
         their path in the voices repository without the model suffix, for example \
         `expresso/ex03-ex01_happy_001_channel1_334s.wav`"
    )]
    VoiceNotFound {
        voice: String,
        repo: String,
        file: String,
    },

    /// 401 or 403: the repository is gated or private.
    #[error("access to `{repo}` was refused (HTTP {status}): {advice}")]
    AuthenticationRequired {
        repo: String,
        status: u16,
        advice: String,
    },

    /// Offline mode is on and the cache does not hold the file.
    #[error(
        "offline mode is on and `{file}` of `{repo}` (revision `{revision}`) is not in the cache \
         at {cache_dir}; run `kyutai download` while online, or unset HF_HUB_OFFLINE"
    )]
    OfflineNotCached {
        repo: String,
        revision: String,
        file: String,
        cache_dir: PathBuf,
    },

    /// The network failed, even after retries.
    #[error(
        "could not download {url} after {attempts} attempt(s): {reason}; check the network \
         connection and the endpoint (HF_ENDPOINT), then run again (finished files are kept)"
    )]
    Network {
        url: String,
        attempts: u32,
        reason: String,
        #[source]
        source: Option<SharedSource>,
    },

    /// The hub answered with a status this client does not expect.
    #[error("the hub answered HTTP {status} for {url}: {message}")]
    UnexpectedStatus {
        url: String,
        status: u16,
        message: String,
    },

    /// The downloaded bytes do not match the hash the hub announced.
    #[error(
        "the download of `{file}` from `{repo}` is corrupt: expected sha256 {expected}, got \
         {actual}; the file was discarded, run again to download it anew"
    )]
    IntegrityMismatch {
        repo: String,
        file: String,
        expected: String,
        actual: String,
    },

    /// The downloaded size does not match the size the hub announced.
    #[error(
        "the download of `{file}` from `{repo}` has {actual} bytes but the hub announced \
         {expected}; the file was discarded, run again to download it anew"
    )]
    SizeMismatch {
        repo: String,
        file: String,
        expected: u64,
        actual: u64,
    },

    /// Not enough room in the cache directory.
    #[error(
        "not enough disk space in {dir}: {needed} bytes needed, {available} available; free some \
         space or choose another cache directory (--cache-dir or HF_HUB_CACHE)"
    )]
    DiskFull {
        dir: PathBuf,
        needed: u64,
        available: u64,
    },

    /// Another process holds the download lock of a file and has written nothing for too long.
    #[error(
        "another process holds the download lock {lock} for `{file}` of `{repo}` and has made no \
         progress for {waited_secs} s; if no other download (kyutai or huggingface_hub) is still \
         running, delete that lock file and run again"
    )]
    DownloadLockStale {
        repo: String,
        file: String,
        lock: PathBuf,
        waited_secs: u64,
    },

    /// A model file (weights, config, tokenizer, voice) is malformed.
    #[error(
        "the model file {path} is invalid: {reason}; delete it or run `kyutai download --force`"
    )]
    InvalidModelFile { path: PathBuf, reason: String },

    /// The configuration given to this crate is inconsistent.
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
        device: String,
        reason: String,
        #[source]
        source: Option<SharedSource>,
    },

    /// A capability that this build of the crate cannot run yet.
    #[error("{0}")]
    Unsupported(String),

    /// Running the model failed.
    #[error("inference failed: {message}")]
    Inference {
        message: String,
        #[source]
        source: Option<SharedSource>,
    },

    /// A filesystem operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
}

impl MoshiError {
    /// An I/O error on `path`; `action` reads as a verb phrase, e.g. "could not create".
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
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

    /// True for errors that another attempt may cure without any change by the user
    /// (network failures, corrupt transfers).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            MoshiError::Network { .. }
                | MoshiError::IntegrityMismatch { .. }
                | MoshiError::SizeMismatch { .. }
        )
    }
}

/// Shorthand used across the crate.
pub type Result<T, E = MoshiError> = std::result::Result<T, E>;

impl From<MoshiError> for VoiceError {
    fn from(error: MoshiError) -> Self {
        match &error {
            MoshiError::InvalidInput(message) => VoiceError::InvalidInput(message.clone()),
            MoshiError::InvalidConfig(message) => VoiceError::Configuration(message.clone()),
            MoshiError::Unsupported(message) => VoiceError::Unsupported(message.clone()),
            MoshiError::Inference { message, .. } => VoiceError::Other {
                message: format!("inference failed: {message}"),
                source: Some(Box::new(error.clone())),
            },
            _ => VoiceError::ModelUnavailable {
                message: error.to_string(),
                source: Some(Box::new(error)),
            },
        }
    }
}
