//! A model repository's `config.json`: the source of truth for the names of its other files,
//! read the way Kyutai's Python loader (`CheckpointInfo.from_hf_repo`) reads it.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::config::ModelFile;
use super::verify::read_json_file;
use crate::error::{MoshiError, Result};

/// The Python loader's defaults for keys a config.json leaves out.
const DEFAULT_LM_NAME: &str = "model.safetensors";
const DEFAULT_MIMI_NAME: &str = "tokenizer-e351c8d8-checkpoint125.safetensors";
const DEFAULT_TOKENIZER_NAME: &str = "tokenizer_spm_32k_3.model";

/// Where one file of a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileLocation {
    /// A path inside the model's own repository.
    InRepo(String),
    /// `hf://org/name/path`: a file of another repository (its `main` revision).
    OtherRepo {
        /// The other repository, `org/name`.
        repo: String,
        /// The file's path in it.
        path: String,
    },
    /// `file:///abs/path`: a local file, used as is.
    Local(PathBuf),
}

impl FileLocation {
    /// Parses a config.json value or a configured override.
    pub fn parse(value: &str) -> Result<Self> {
        if let Some(rest) = value.strip_prefix("hf://") {
            let mut parts = rest.splitn(3, '/');
            let (Some(org), Some(name), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(MoshiError::InvalidConfig(format!(
                    "`{value}` is not a valid hf:// location; write hf://org/name/path/in/repo"
                )));
            };
            check_repo_path(path)?;
            return Ok(FileLocation::OtherRepo {
                repo: format!("{org}/{name}"),
                path: path.to_string(),
            });
        }
        if let Some(path) = value.strip_prefix("file://") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(MoshiError::InvalidConfig(format!(
                    "`{value}` is not a valid file:// location; write file:///absolute/path"
                )));
            }
            return Ok(FileLocation::Local(path));
        }
        check_repo_path(value)?;
        Ok(FileLocation::InRepo(value.to_string()))
    }
}

/// Rejects paths that would leave the snapshot folder once joined to it.
pub fn check_repo_path(path: &str) -> Result<()> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.contains('\\')
        || path.contains('\0')
        || path
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..");
    if bad {
        return Err(MoshiError::InvalidConfig(format!(
            "`{path}` is not a valid file path inside a repository"
        )));
    }
    Ok(())
}

/// Checks a repository id: `org/name`, with no path tricks (it becomes a folder name of the
/// cache and part of every URL). The rules are the Hub's own: letters, digits, `-`, `_` and `.`,
/// starting and ending with a letter, digit or `_`, at most 96 characters, and no `--` or `..`
/// (so that the cache folder `models--ORG--NAME` names exactly one repository).
pub fn check_repo_id(repo: &str) -> Result<()> {
    let parts: Vec<&str> = repo.split('/').collect();
    let valid_part = |p: &str| {
        let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
        (1..=96).contains(&p.len())
            && p.starts_with(word)
            && p.ends_with(word)
            && !p.contains("--")
            && !p.contains("..")
            && p.chars().all(|c| word(c) || c == '-' || c == '.')
    };
    if parts.len() == 2 && parts.iter().all(|p| valid_part(p)) {
        Ok(())
    } else {
        Err(MoshiError::InvalidConfig(format!(
            "`{repo}` is not a repository id; write it as `org/name`, for example `kyutai/tts-1.6b-en_fr`"
        )))
    }
}

/// The `model_id` of a TTS config: voice files are named `<voice>.<sig>@<epoch>.safetensors`.
///
/// The reference formats both parts into the file name as Python formats them, so each may be
/// written as a string or a number (`"epoch": 240` and `"epoch": "240"` name the same file).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ModelId {
    /// The training run's signature, e.g. `1e68beda`.
    #[serde(deserialize_with = "string_or_number")]
    pub sig: String,
    /// The checkpoint's epoch, e.g. `240`.
    #[serde(deserialize_with = "string_or_number")]
    pub epoch: String,
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "expected a string or a number, found {other}"
        ))),
    }
}

/// A parsed config.json.
#[derive(Debug, Clone)]
pub struct RepoConfig {
    path: PathBuf,
    raw: Map<String, Value>,
}

impl RepoConfig {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = read_json_file(path)?;
        Self::from_bytes(path, &bytes)
    }

    /// Parses config.json bytes; `path` names the file in errors.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| MoshiError::invalid_file(path, format!("it is not valid JSON ({e})")))?;
        let Value::Object(raw) = value else {
            return Err(MoshiError::invalid_file(path, "it is not a JSON object"));
        };
        Ok(RepoConfig {
            path: path.to_path_buf(),
            raw,
        })
    }

    /// The raw JSON object.
    pub fn raw(&self) -> &Map<String, Value> {
        &self.raw
    }

    fn string(&self, key: &str) -> Result<Option<&str>> {
        match self.raw.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(MoshiError::invalid_file(
                &self.path,
                format!("`{key}` should be a string, found {other}"),
            )),
        }
    }

    /// Where `file` comes from: the config's value, else the Python loader's default
    /// (`None` for the optional Mimi config).
    pub fn location(&self, file: ModelFile) -> Result<Option<FileLocation>> {
        let value = match (self.string(file.config_key())?, file) {
            (Some(value), _) => value,
            (None, ModelFile::LmWeights) => DEFAULT_LM_NAME,
            (None, ModelFile::MimiWeights) => DEFAULT_MIMI_NAME,
            (None, ModelFile::Tokenizer) => DEFAULT_TOKENIZER_NAME,
            (None, ModelFile::MimiConfig) => return Ok(None),
        };
        FileLocation::parse(value)
            .map(Some)
            .map_err(|e| MoshiError::invalid_file(&self.path, e.to_string()))
    }

    /// The `model_id` object (`{"sig": ..., "epoch": ...}`), when present.
    pub fn model_id(&self) -> Result<Option<ModelId>> {
        let Some(value) = self.raw.get("model_id") else {
            return Ok(None);
        };
        ModelId::deserialize(value).map(Some).map_err(|e| {
            MoshiError::invalid_file(
                &self.path,
                format!("`model_id` should be an object with `sig` and `epoch` ({e})"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> RepoConfig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, json).unwrap();
        RepoConfig::load(&path).unwrap()
    }

    #[test]
    fn names_come_from_the_config_with_python_defaults() {
        let c = config(
            r#"{"moshi_name": "dsm_tts_1e68beda@240.safetensors", "model_id": {"sig": "1e68beda", "epoch": 240}}"#,
        );
        assert_eq!(
            c.location(ModelFile::LmWeights).unwrap(),
            Some(FileLocation::InRepo(
                "dsm_tts_1e68beda@240.safetensors".into()
            ))
        );
        assert_eq!(
            c.location(ModelFile::MimiWeights).unwrap(),
            Some(FileLocation::InRepo(DEFAULT_MIMI_NAME.into()))
        );
        assert_eq!(c.location(ModelFile::MimiConfig).unwrap(), None);
        assert_eq!(
            c.model_id().unwrap(),
            Some(ModelId {
                sig: "1e68beda".into(),
                epoch: "240".into()
            })
        );
    }

    #[test]
    fn overrides_and_bad_values() {
        assert_eq!(
            FileLocation::parse("hf://kyutai/other/dir/m.safetensors").unwrap(),
            FileLocation::OtherRepo {
                repo: "kyutai/other".into(),
                path: "dir/m.safetensors".into()
            }
        );
        assert_eq!(
            FileLocation::parse("file:///models/m.safetensors").unwrap(),
            FileLocation::Local("/models/m.safetensors".into())
        );
        for bad in [
            "hf://kyutai",
            "file://relative",
            "../etc/passwd",
            "/abs",
            "a//b",
            "",
        ] {
            assert!(FileLocation::parse(bad).is_err(), "{bad}");
        }
        let c = config(r#"{"moshi_name": 3}"#);
        let error = c.location(ModelFile::LmWeights).unwrap_err().to_string();
        assert!(error.contains("moshi_name"), "{error}");
    }
}
