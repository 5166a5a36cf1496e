//! `KyutaiModelPaths`: where the verified model files are on disk.
//!
//! Capabilities are fetched lazily (TTS on first TTS use, STT on first STT use, each voice when
//! asked for), so the paths fill in over time; each part is set once and then read without locks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use parking_lot::RwLock;

use super::repo_config::ModelId;

/// The files of a TTS model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TtsModelPaths {
    pub repo: String,
    pub commit: String,
    pub config: PathBuf,
    pub lm_weights: PathBuf,
    pub mimi_weights: PathBuf,
    pub tokenizer: PathBuf,
    /// The Mimi configuration file, when the repository names one (`mimi_config_name`).
    pub mimi_config: Option<PathBuf>,
    /// Voice files are named after it.
    pub model_id: Option<ModelId>,
}

/// The files of an STT model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SttModelPaths {
    pub repo: String,
    pub commit: String,
    pub config: PathBuf,
    pub lm_weights: PathBuf,
    pub mimi_weights: PathBuf,
    pub tokenizer: PathBuf,
    pub mimi_config: Option<PathBuf>,
}

/// All model files fetched so far.
#[derive(Debug, Default)]
pub struct KyutaiModelPaths {
    cache_dir: PathBuf,
    tts: OnceLock<TtsModelPaths>,
    stt: OnceLock<SttModelPaths>,
    voices: RwLock<BTreeMap<String, PathBuf>>,
}

impl KyutaiModelPaths {
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        KyutaiModelPaths {
            cache_dir: cache_dir.into(),
            ..Default::default()
        }
    }

    /// The hub cache directory in use.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// The TTS files, once fetched.
    pub fn tts(&self) -> Option<&TtsModelPaths> {
        self.tts.get()
    }

    /// The STT files, once fetched.
    pub fn stt(&self) -> Option<&SttModelPaths> {
        self.stt.get()
    }

    /// A voice file, once fetched.
    pub fn voice(&self, name: &str) -> Option<PathBuf> {
        self.voices.read().get(name).cloned()
    }

    /// Every voice fetched so far, by name.
    pub fn voices(&self) -> BTreeMap<String, PathBuf> {
        self.voices.read().clone()
    }

    pub(crate) fn set_tts(&self, paths: TtsModelPaths) -> &TtsModelPaths {
        let _ = self.tts.set(paths);
        self.tts.get().expect("just set")
    }

    pub(crate) fn set_stt(&self, paths: SttModelPaths) -> &SttModelPaths {
        let _ = self.stt.set(paths);
        self.stt.get().expect("just set")
    }

    pub(crate) fn add_voice(&self, name: &str, path: PathBuf) {
        self.voices.write().insert(name.to_string(), path);
    }
}
