//! Where a Pocket TTS model's files come from: its config (built in, a local YAML, or
//! `hf://`), then the files the config names as `hf://REPO/PATH@REVISION`, each fetched through
//! the crate's model manager (verified, cached in the shared Hugging Face layout, resumable,
//! offline once cached). Only what is used is fetched: the weights, the tokenizer, and each
//! voice when it is first asked for.
//!
//! The weights are tried from the gated repository first (it holds Mimi's encoder, needed for
//! cloning) and, when that fails, from the open one, as `TTSModel.load_model` does; cloning is
//! then off, and says how to turn it on.

use std::path::{Path, PathBuf};

use super::config::{PocketConfig, builtin, builtin_names};
use crate::error::{MoshiError, Result};
use crate::models::KyutaiModelManager;

/// A file on the hub: `hf://REPO/PATH@REVISION` (revision `main` when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubPath {
    /// `org/name`.
    pub repo: String,
    /// The file's path in the repository.
    pub path: String,
    /// Branch, tag or commit.
    pub revision: String,
}

impl HubPath {
    /// Parses `hf://org/name/path/to/file@revision`, as `download_if_necessary` splits it.
    pub fn parse(url: &str) -> Result<HubPath> {
        let bad = || {
            MoshiError::InvalidConfig(format!(
                "{url:?} is not a hub path: expected hf://ORG/NAME/PATH[@REVISION]"
            ))
        };
        let rest = url.strip_prefix("hf://").ok_or_else(bad)?;
        let mut parts = rest.splitn(3, '/');
        let (org, name, file) = (
            parts.next().ok_or_else(bad)?,
            parts.next().ok_or_else(bad)?,
            parts.next().ok_or_else(bad)?,
        );
        let (path, revision) = match file.split_once('@') {
            Some((p, r)) if !r.contains('@') => (p, r),
            Some(_) => return Err(bad()),
            None => (file, "main"),
        };
        if org.is_empty() || name.is_empty() || path.is_empty() {
            return Err(bad());
        }
        Ok(HubPath {
            repo: format!("{org}/{name}"),
            path: path.to_string(),
            revision: revision.to_string(),
        })
    }

    /// The file beside this one called `name` (`dir/name`).
    pub fn sibling(&self, name: &str) -> HubPath {
        let dir = self.path.rsplit_once('/').map_or("", |(d, _)| d);
        HubPath {
            repo: self.repo.clone(),
            path: if dir.is_empty() {
                name.to_string()
            } else {
                format!("{dir}/{name}")
            },
            revision: self.revision.clone(),
        }
    }

    /// Fetches the file (or finds it verified in the cache).
    pub async fn fetch(&self, manager: &KyutaiModelManager) -> Result<PathBuf> {
        Ok(manager
            .fetch_file(&self.repo, &self.revision, &self.path)
            .await?
            .path)
    }
}

/// A path in a config: `hf://...`, or a local file.
async fn fetch_path(manager: &KyutaiModelManager, location: &str) -> Result<PathBuf> {
    if location.starts_with("hf://") {
        HubPath::parse(location)?.fetch(manager).await
    } else if location.starts_with("http://") || location.starts_with("https://") {
        Err(MoshiError::Unsupported(format!(
            "{location}: this crate fetches model files from the Hugging Face hub (hf://) or \
             the local disk, not from other web servers"
        )))
    } else {
        Ok(PathBuf::from(location))
    }
}

/// The files of a Pocket TTS model, fetched.
#[derive(Debug, Clone)]
pub struct PocketFiles {
    /// The config's name (a built-in name, or the path or URL it came from).
    pub name: String,
    /// The parsed config.
    pub config: PocketConfig,
    /// The weights file (`flow_lm.*`, `mimi.*`).
    pub weights: PathBuf,
    /// The tokenizer file.
    pub tokenizer: PathBuf,
    /// The open weights, beside which the predefined voices' states are (`embeddings/`).
    pub voices: Option<HubPath>,
    /// Why cloning is off, when the gated weights could not be had.
    pub cloning_off: Option<String>,
}

impl PocketFiles {
    /// Resolves `source` (see [`crate::models::TtsFamily::Pocket`]) and fetches the weights and
    /// the tokenizer.
    pub async fn fetch(manager: &KyutaiModelManager, source: &str) -> Result<PocketFiles> {
        let config = if builtin_names().any(|n| n == source) {
            builtin(source)?
        } else {
            let path = fetch_path(manager, source).await?;
            let text = std::fs::read_to_string(&path).map_err(|e| {
                MoshiError::InvalidConfig(format!(
                    "cannot read the Pocket TTS config {}: {e}",
                    path.display()
                ))
            })?;
            PocketConfig::from_yaml(&text, source)?
        };
        let (weights, cloning_off) = fetch_weights(manager, &config).await?;
        let tokenizer = fetch_path(manager, &config.flow_lm.lookup_table.tokenizer_path).await?;
        let voices = config
            .weights_path_without_voice_cloning
            .as_deref()
            .or(config.weights_path.as_deref())
            .filter(|p| p.starts_with("hf://"))
            .map(HubPath::parse)
            .transpose()?;
        Ok(PocketFiles {
            name: source.to_string(),
            config,
            weights,
            tokenizer,
            voices,
            cloning_off,
        })
    }

    /// Fetches a predefined voice's state file.
    pub async fn fetch_voice(&self, manager: &KyutaiModelManager, voice: &str) -> Result<PathBuf> {
        let Some(weights) = &self.voices else {
            return Err(MoshiError::InvalidInput(format!(
                "the Pocket TTS model {} has no predefined voices; give a voice file (audio to \
                 clone, or a .safetensors voice state)",
                self.name
            )));
        };
        let file = weights.sibling(&format!("embeddings/{voice}.safetensors"));
        file.fetch(manager).await.map_err(|e| match e {
            MoshiError::FileNotFound { repo, file, .. } => MoshiError::VoiceNotFound {
                voice: voice.to_string(),
                repo,
                file,
            },
            other => other,
        })
    }
}

/// The weights: the gated file, else the open one (cloning off, with the reason).
async fn fetch_weights(
    manager: &KyutaiModelManager,
    config: &PocketConfig,
) -> Result<(PathBuf, Option<String>)> {
    let open = config.weights_path_without_voice_cloning.as_deref();
    let Some(gated) = config.weights_path.as_deref() else {
        let open = open.ok_or_else(|| {
            MoshiError::InvalidConfig(
                "the Pocket TTS config names no weights (weights_path)".into(),
            )
        })?;
        let note = "the config names only weights without voice cloning".to_string();
        return Ok((fetch_path(manager, open).await?, Some(note)));
    };
    match fetch_path(manager, gated).await {
        Ok(path) => Ok((path, None)),
        Err(e) if open.is_some() => {
            let note = match &e {
                MoshiError::AuthenticationRequired { repo, .. } => format!(
                    "the weights with voice cloning ({repo}) are gated: accept the licence at \
                     https://huggingface.co/{repo} and set HF_TOKEN to a token of that account \
                     to clone voices; the predefined voices work without it"
                ),
                other => format!("the weights with voice cloning could not be fetched ({other})"),
            };
            log::warn!("Pocket TTS: {note}; using the weights without voice cloning");
            let path = fetch_path(manager, open.expect("checked")).await?;
            Ok((path, Some(note)))
        }
        Err(e) => Err(e),
    }
}

/// Whether `voice` names a file on disk rather than a predefined voice.
pub fn is_voice_file(voice: &str) -> bool {
    Path::new(voice).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_paths_split_as_the_reference_splits_them() {
        let p = HubPath::parse(
            "hf://kyutai/pocket-tts/languages/english/model.safetensors@db04f0e653473e5c7333c69686ac92b7460b0c1d",
        )
        .unwrap();
        assert_eq!(p.repo, "kyutai/pocket-tts");
        assert_eq!(p.path, "languages/english/model.safetensors");
        assert_eq!(p.revision, "db04f0e653473e5c7333c69686ac92b7460b0c1d");
        assert_eq!(
            p.sibling("embeddings/alba.safetensors").path,
            "languages/english/embeddings/alba.safetensors"
        );
        assert_eq!(HubPath::parse("hf://a/b/c.yaml").unwrap().revision, "main");
        assert!(HubPath::parse("hf://a/b").is_err());
        assert!(HubPath::parse("hf://a/b/c@d@e").is_err());
    }
}
