//! `KyutaiModelPaths`: where the verified model files are on disk.
//!
//! Capabilities are fetched lazily (TTS on first TTS use, STT on first STT use, each voice when
//! asked for), so an engine's paths fill in over time; [`KyutaiModelPaths`] is what is known at
//! one moment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::repo_config::ModelId;

/// The files of a TTS model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TtsModelPaths {
    /// The repository, `org/name`.
    pub repo: String,
    /// The commit the files belong to.
    pub commit: String,
    /// `config.json`.
    pub config: PathBuf,
    /// The language model's weights (`moshi_name`).
    pub lm_weights: PathBuf,
    /// Mimi's weights (`mimi_name`).
    pub mimi_weights: PathBuf,
    /// The SentencePiece tokenizer (`tokenizer_name`).
    pub tokenizer: PathBuf,
    /// The Mimi configuration file, when the repository names one (`mimi_config_name`).
    pub mimi_config: Option<PathBuf>,
    /// Voice files are named after it.
    pub model_id: Option<ModelId>,
}

/// The files of an STT model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SttModelPaths {
    /// The repository, `org/name`.
    pub repo: String,
    /// The commit the files belong to.
    pub commit: String,
    /// `config.json`.
    pub config: PathBuf,
    /// The language model's weights (`moshi_name`, default `model.safetensors`).
    pub lm_weights: PathBuf,
    /// Mimi's weights (`mimi_name`).
    pub mimi_weights: PathBuf,
    /// The SentencePiece tokenizer (`tokenizer_name`).
    pub tokenizer: PathBuf,
    /// The Mimi configuration file, when the repository names one (`mimi_config_name`).
    pub mimi_config: Option<PathBuf>,
}

/// All model files fetched so far: a snapshot ([`KyutaiEngine::model_paths`](crate::KyutaiEngine::model_paths),
/// [`KyutaiModelManager::download_models`](crate::KyutaiModelManager::download_models)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KyutaiModelPaths {
    pub(crate) cache_dir: PathBuf,
    pub(crate) tts: Option<TtsModelPaths>,
    pub(crate) stt: Option<SttModelPaths>,
    pub(crate) voices: BTreeMap<String, PathBuf>,
}

impl KyutaiModelPaths {
    /// The hub cache directory in use.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// The TTS files, once fetched.
    pub fn tts(&self) -> Option<&TtsModelPaths> {
        self.tts.as_ref()
    }

    /// The STT files, once fetched.
    pub fn stt(&self) -> Option<&SttModelPaths> {
        self.stt.as_ref()
    }

    /// A voice file, once fetched.
    pub fn voice(&self, name: &str) -> Option<&Path> {
        self.voices.get(name).map(PathBuf::as_path)
    }

    /// Every voice fetched so far, by name.
    pub fn voices(&self) -> &BTreeMap<String, PathBuf> {
        &self.voices
    }
}
