//! The server's settings: where it listens, who may connect, how many streams each endpoint
//! holds, and the limits that protect it from bad or idle clients. They come from flags, from
//! an optional TOML file, or from code.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::MoshiError;

/// What `kyutai serve` runs with.
///
/// ```
/// use fluent_voice_kyutai::server::ServerConfig;
///
/// let config = ServerConfig::default().port(0).api_key("public_token").batch_size(4);
/// assert_eq!(config.batch_size, 4);
/// assert_eq!(config.api_keys, ["public_token"]);
/// ```
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The address to listen on (default `127.0.0.1`: only this machine).
    pub addr: IpAddr,
    /// The port (default 8080, as moshi-server; 0 picks a free one).
    pub port: u16,
    /// Streams each endpoint serves at once; one more gets `Error{"no free channels"}`.
    pub batch_size: usize,
    /// The accepted API keys; none accepts every client.
    pub api_keys: Vec<String>,
    /// Fetch and load the models on first use instead of at start.
    pub lazy: bool,
    /// Serve speech-to-text (`/api/asr-streaming`).
    pub asr: bool,
    /// Serve text-to-speech (`/api/tts_streaming`).
    pub tts: bool,
    /// Sizes and timeouts.
    pub limits: Limits,
    /// Audio codebooks the 1.6B TTS generates (default: at most 24, as Kyutai's TTS server's
    /// `n_q = 24`).
    pub tts_n_q: crate::models::TtsCodebooks,
}

/// The codebooks Kyutai's TTS server generates (delayed-streams-modeling
/// `configs/config-tts.toml`: `n_q = 24`).
pub const SERVER_TTS_N_Q: usize = 24;

/// Sizes and timeouts that keep one client from harming the others.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest websocket message accepted, in bytes (an `Audio` message of 10 s is about
    /// 1.2 MB of MessagePack).
    pub max_message_bytes: usize,
    /// The most text one TTS stream (or POST) may send, in bytes.
    pub max_text_bytes: usize,
    /// The largest POST body, in bytes.
    pub max_post_bytes: usize,
    /// How often the server pings each websocket client (moshi-server: 10 s).
    pub ping_interval: Duration,
    /// A client silent this long (not even a pong) is dropped (moshi-server: 20 s).
    pub pong_timeout: Duration,
    /// A client that sends no data this long, while the server waits for some, is dropped
    /// (moshi-server: 120 s).
    pub idle_timeout: Duration,
    /// Audio received but not yet transcribed beyond this makes the server stop reading the
    /// socket until the model catches up (backpressure instead of unbounded memory).
    pub max_buffered_audio: Duration,
    /// A stream whose backlog passes this is reported as behind real time (metrics and log).
    pub behind_threshold: Duration,
    /// How long a POST waits for a free slot before answering 503.
    pub post_wait: Duration,
    /// On shutdown, how long streams in flight get to end before the server exits anyway.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 4 << 20,
            max_text_bytes: 64 << 10,
            max_post_bytes: 64 << 20,
            ping_interval: Duration::from_secs(10),
            pong_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(120),
            max_buffered_audio: Duration::from_secs(60),
            behind_threshold: Duration::from_secs(4),
            post_wait: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: IpAddr::from([127, 0, 0, 1]),
            port: 8080,
            batch_size: 8,
            api_keys: Vec::new(),
            lazy: false,
            asr: true,
            tts: true,
            limits: Limits::default(),
            tts_n_q: crate::models::TtsCodebooks::AtMost(SERVER_TTS_N_Q),
        }
    }
}

impl ServerConfig {
    /// Listens on `addr`.
    pub fn addr(mut self, addr: IpAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Listens on `port` (0: any free port; [`Server::local_addr`](super::Server::local_addr)
    /// says which).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Streams per endpoint.
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Accepts `key` (repeatable). With no key at all, every client is accepted.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_keys.push(key.into());
        self
    }

    /// Loads the models on first use rather than at start.
    pub fn lazy(mut self, lazy: bool) -> Self {
        self.lazy = lazy;
        self
    }

    /// Which endpoints to serve.
    pub fn endpoints(mut self, asr: bool, tts: bool) -> Self {
        self.asr = asr;
        self.tts = tts;
        self
    }

    /// Sizes and timeouts.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The engine settings this server needs on top of `models`: every stream the ASR
    /// endpoint admits gets a slot in the engine's one batched STT step, and the TTS streams
    /// share batched steps the same way (the server's own slots bound how many run).
    ///
    /// ```
    /// use fluent_voice_kyutai::models::KyutaiModelConfig;
    /// use fluent_voice_kyutai::server::ServerConfig;
    /// let models = ServerConfig::default().batch_size(4).engine_config(KyutaiModelConfig::default());
    /// assert_eq!((models.batch_size, models.tts_batch_size), (4, 4));
    /// ```
    pub fn engine_config(
        &self,
        models: crate::models::KyutaiModelConfig,
    ) -> crate::models::KyutaiModelConfig {
        let mut models = models
            .batch_size(self.batch_size)
            .max_conversations(self.batch_size)
            .tts_batch_size(self.batch_size);
        models.tts_n_q = self.tts_n_q;
        models
    }

    /// Generate `n_q` audio codebooks with the 1.6B TTS (see
    /// [`KyutaiModelConfig::tts_n_q`](crate::models::KyutaiModelConfig::tts_n_q); default 24,
    /// as Kyutai's TTS server, or all of a model with fewer).
    pub fn tts_n_q(mut self, n_q: usize) -> Self {
        self.tts_n_q = crate::models::TtsCodebooks::Exactly(n_q);
        self
    }

    /// Checks the settings before anything starts.
    pub fn validate(&self) -> Result<(), MoshiError> {
        let bad = |m: &str| Err(MoshiError::InvalidInput(format!("server settings: {m}")));
        if self.batch_size == 0 {
            return bad("the batch size must be at least 1");
        }
        if !self.asr && !self.tts {
            return bad("nothing to serve: both the ASR and the TTS endpoints are off");
        }
        if self.api_keys.iter().any(|k| k.trim().is_empty()) {
            return bad("an API key is empty");
        }
        let l = &self.limits;
        if l.ping_interval.is_zero() || l.pong_timeout <= l.ping_interval {
            return bad("the pong timeout must be longer than the ping interval (both > 0)");
        }
        if l.max_message_bytes < 1024 || l.max_text_bytes == 0 || l.max_post_bytes < 1024 {
            return bad("the size limits are too small");
        }
        Ok(())
    }

    /// Reads API keys from a file, one per line (blank lines and `#` comments skipped).
    pub fn api_keys_file(mut self, path: &Path) -> Result<Self, MoshiError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| MoshiError::io("could not read the API keys file", path, e))?;
        self.api_keys.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
        Ok(self)
    }
}

/// The TOML config file of `kyutai serve`: every setting optional, flags win over it.
///
/// ```toml
/// port = 8080
/// batch_size = 16
/// api_keys = ["public_token"]
/// stt_repo = "kyutai/stt-1b-en_fr-candle"
/// [limits]
/// idle_timeout_s = 120
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    /// See [`ServerConfig::addr`].
    pub addr: Option<IpAddr>,
    /// See [`ServerConfig::port`].
    pub port: Option<u16>,
    /// See [`ServerConfig::batch_size`].
    pub batch_size: Option<usize>,
    /// See [`ServerConfig::api_keys`].
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// A file of API keys, one per line.
    pub api_keys_file: Option<PathBuf>,
    /// See [`ServerConfig::lazy`].
    pub lazy: Option<bool>,
    /// See [`ServerConfig::asr`].
    pub asr: Option<bool>,
    /// See [`ServerConfig::tts`].
    pub tts: Option<bool>,
    /// The TTS model repository.
    pub tts_repo: Option<String>,
    /// The STT model repository.
    pub stt_repo: Option<String>,
    /// The voices repository.
    pub voices_repo: Option<String>,
    /// Audio codebooks the 1.6B TTS generates (as `--n-q`).
    pub n_q: Option<usize>,
    /// The voice used when a client names none: `voice = "NAME"` (as `--voice`), or
    /// `default_voice = "NAME"`.
    #[serde(alias = "voice")]
    pub default_voice: Option<String>,
    /// The hub cache directory.
    pub cache_dir: Option<PathBuf>,
    /// Serve from the cache only.
    pub offline: Option<bool>,
    /// How the language models' weights are held (`f32`, `f16`, `bf16`, `q8`, `q4`).
    pub weights: Option<String>,
    /// Sizes and timeouts.
    #[serde(default)]
    pub limits: LimitsFile,
}

/// `[limits]` of the TOML file; times in seconds.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// See [`Limits::max_message_bytes`].
    pub max_message_bytes: Option<usize>,
    /// See [`Limits::max_text_bytes`].
    pub max_text_bytes: Option<usize>,
    /// See [`Limits::max_post_bytes`].
    pub max_post_bytes: Option<usize>,
    /// See [`Limits::ping_interval`].
    pub ping_interval_s: Option<f64>,
    /// See [`Limits::pong_timeout`].
    pub pong_timeout_s: Option<f64>,
    /// See [`Limits::idle_timeout`].
    pub idle_timeout_s: Option<f64>,
    /// See [`Limits::max_buffered_audio`].
    pub max_buffered_audio_s: Option<f64>,
    /// See [`Limits::behind_threshold`].
    pub behind_threshold_s: Option<f64>,
    /// See [`Limits::post_wait`].
    pub post_wait_s: Option<f64>,
    /// See [`Limits::shutdown_grace`].
    pub shutdown_grace_s: Option<f64>,
}

impl ServerFile {
    /// Reads and parses a TOML config file.
    pub fn read(path: &Path) -> Result<ServerFile, MoshiError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| MoshiError::io("could not read the server config", path, e))?;
        toml::from_str(&text).map_err(|e| {
            MoshiError::InvalidInput(format!("{}: not a valid config: {e}", path.display()))
        })
    }

    /// The server settings this file gives, on top of `base`.
    pub fn apply(&self, mut base: ServerConfig) -> Result<ServerConfig, MoshiError> {
        base.addr = self.addr.unwrap_or(base.addr);
        base.port = self.port.unwrap_or(base.port);
        base.batch_size = self.batch_size.unwrap_or(base.batch_size);
        base.api_keys.extend(self.api_keys.iter().cloned());
        if let Some(path) = &self.api_keys_file {
            base = base.api_keys_file(path)?;
        }
        base.lazy = self.lazy.unwrap_or(base.lazy);
        base.asr = self.asr.unwrap_or(base.asr);
        base.tts = self.tts.unwrap_or(base.tts);
        let l = &self.limits;
        let limits = &mut base.limits;
        let secs = |v: Option<f64>, d: &mut Duration| -> Result<(), MoshiError> {
            if let Some(s) = v {
                *d = Duration::try_from_secs_f64(s).map_err(|_| {
                    MoshiError::InvalidInput(format!("limits: {s} is not a duration in seconds"))
                })?;
            }
            Ok(())
        };
        limits.max_message_bytes = l.max_message_bytes.unwrap_or(limits.max_message_bytes);
        limits.max_text_bytes = l.max_text_bytes.unwrap_or(limits.max_text_bytes);
        limits.max_post_bytes = l.max_post_bytes.unwrap_or(limits.max_post_bytes);
        secs(l.ping_interval_s, &mut limits.ping_interval)?;
        secs(l.pong_timeout_s, &mut limits.pong_timeout)?;
        secs(l.idle_timeout_s, &mut limits.idle_timeout)?;
        secs(l.max_buffered_audio_s, &mut limits.max_buffered_audio)?;
        secs(l.behind_threshold_s, &mut limits.behind_threshold)?;
        secs(l.post_wait_s, &mut limits.post_wait)?;
        secs(l.shutdown_grace_s, &mut limits.shutdown_grace)?;
        Ok(base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_overrides_the_defaults_and_rejects_unknown_settings() {
        let file: ServerFile = toml::from_str(
            "port = 9000\nbatch_size = 3\napi_keys = [\"a\"]\n[limits]\nidle_timeout_s = 1.5\n",
        )
        .unwrap();
        let config = file.apply(ServerConfig::default()).unwrap();
        assert_eq!((config.port, config.batch_size), (9000, 3));
        assert_eq!(config.api_keys, ["a"]);
        assert_eq!(config.limits.idle_timeout, Duration::from_millis(1500));
        assert!(config.validate().is_ok());
        assert!(toml::from_str::<ServerFile>("prot = 1").is_err());
        assert!(ServerConfig::default().batch_size(0).validate().is_err());
        assert!(
            ServerConfig::default()
                .endpoints(false, false)
                .validate()
                .is_err()
        );
    }

    #[test]
    fn the_default_voice_is_read_as_voice_or_default_voice() {
        for key in ["voice", "default_voice"] {
            let file: ServerFile =
                toml::from_str(&format!("{key} = \"vctk/p226_023.wav\"")).unwrap();
            assert_eq!(
                file.default_voice.as_deref(),
                Some("vctk/p226_023.wav"),
                "{key}"
            );
        }
        let file: ServerFile = toml::from_str("n_q = 24").unwrap();
        assert_eq!(file.n_q, Some(24));
        // Both at once is a mistake the file's reader reports.
        assert!(toml::from_str::<ServerFile>("voice = \"a\"\ndefault_voice = \"b\"").is_err());
    }
}
