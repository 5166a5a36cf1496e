//! `KyutaiModelManager`: fetches the files a capability needs, verified, into the shared cache.
//!
//! The order of checks for one file:
//! 1. when the commit is known without asking (offline, a pinned commit, or already resolved in
//!    this process) and the cache holds a verified copy: done, with no request at all;
//! 2. otherwise one HEAD gives the commit, etag and size; a blob already present under that etag
//!    (verified before, or hashed now) is linked into the snapshot without a transfer;
//! 3. otherwise the blob is downloaded under the cross-process lock into `<etag>.incomplete`,
//!    hashed while it streams, checked, and only then renamed into place and recorded verified.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use futures::future::try_join_all;
use parking_lot::Mutex;

use super::cache::{HubCache, is_commit_hash};
use super::config::{KyutaiModelConfig, ModelFile, ProcessEnv, ResolvedSettings};
use super::hub::{HubClient, RemoteFile};
use super::lock;
use super::paths::{KyutaiModelPaths, SttModelPaths, TtsModelPaths};
use super::progress::Progress;
use super::repo_config::{FileLocation, ModelId, RepoConfig, check_repo_path};
use super::verify::{self, FileFormat, StreamingHash};
use crate::error::{MoshiError, Result};

/// A file that is present and verified in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedFile {
    /// The snapshot path (a symlink into `blobs/`), or the local file of a `file://` override.
    pub path: PathBuf,
    /// The commit it belongs to (empty for local files).
    pub commit: String,
    /// True when no byte had to be transferred.
    pub from_cache: bool,
}

/// Downloads, verifies and locates Kyutai model files.
pub struct KyutaiModelManager {
    config: KyutaiModelConfig,
    settings: ResolvedSettings,
    cache: HubCache,
    hub: HubClient,
    progress: Progress,
    /// `(repo, revision)` -> commit, as resolved by the hub during this process.
    resolved: Mutex<HashMap<(String, String), String>>,
}

impl KyutaiModelManager {
    /// A manager with the default models; the environment fills the rest.
    pub fn new() -> Result<Self> {
        Self::with_config(KyutaiModelConfig::default())
    }

    /// A manager for `config`; environment variables fill what it leaves unset.
    pub fn with_config(config: KyutaiModelConfig) -> Result<Self> {
        for repo in [&config.tts_repo, &config.stt_repo, &config.voices_repo] {
            check_repo_id(repo)?;
        }
        let settings = config.resolve(&ProcessEnv);
        let hub = HubClient::new(&config, &settings)?;
        let progress = Progress::new(settings.show_bars, config.on_progress.clone());
        Ok(KyutaiModelManager {
            cache: HubCache::new(&settings.cache_dir),
            config,
            settings,
            hub,
            progress,
            resolved: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &KyutaiModelConfig {
        &self.config
    }

    /// The settings in force (config plus environment).
    pub fn settings(&self) -> &ResolvedSettings {
        &self.settings
    }

    pub fn cache(&self) -> &HubCache {
        &self.cache
    }

    /// Fetches everything: the TTS model, the STT model and the default voice.
    pub async fn download_models(&self) -> Result<KyutaiModelPaths> {
        let paths = KyutaiModelPaths::new(&self.settings.cache_dir);
        let (tts, stt) = futures::try_join!(self.fetch_tts(), self.fetch_stt())?;
        let voice = self.fetch_voice(&tts, &self.config.default_voice).await?;
        paths.add_voice(&self.config.default_voice, voice);
        paths.set_tts(tts);
        paths.set_stt(stt);
        Ok(paths)
    }

    /// Fetches the TTS model's files (config.json first: it names the others).
    pub async fn fetch_tts(&self) -> Result<TtsModelPaths> {
        let repo = &self.config.tts_repo;
        let revision = &self.config.tts_revision;
        let config = self.fetch_file(repo, revision, "config.json").await?;
        let parsed = RepoConfig::load(&config.path)?;
        let model_id = parsed.model_id()?;
        let [lm, mimi, tokenizer, mimi_config] = self
            .fetch_model_files(repo, revision, &parsed, &self.config.tts_files)
            .await?;
        Ok(TtsModelPaths {
            repo: repo.clone(),
            commit: config.commit,
            config: config.path,
            lm_weights: lm.expect("weights are always named"),
            mimi_weights: mimi.expect("weights are always named"),
            tokenizer: tokenizer.expect("the tokenizer is always named"),
            mimi_config,
            model_id,
        })
    }

    /// Fetches the STT model's files.
    pub async fn fetch_stt(&self) -> Result<SttModelPaths> {
        let repo = &self.config.stt_repo;
        let revision = &self.config.stt_revision;
        let config = self.fetch_file(repo, revision, "config.json").await?;
        let parsed = RepoConfig::load(&config.path)?;
        let [lm, mimi, tokenizer, mimi_config] = self
            .fetch_model_files(repo, revision, &parsed, &self.config.stt_files)
            .await?;
        Ok(SttModelPaths {
            repo: repo.clone(),
            commit: config.commit,
            config: config.path,
            lm_weights: lm.expect("weights are always named"),
            mimi_weights: mimi.expect("weights are always named"),
            tokenizer: tokenizer.expect("the tokenizer is always named"),
            mimi_config,
        })
    }

    /// Fetches the four model files concurrently, honouring configured overrides.
    async fn fetch_model_files(
        &self,
        repo: &str,
        revision: &str,
        config: &RepoConfig,
        overrides: &std::collections::BTreeMap<ModelFile, String>,
    ) -> Result<[Option<PathBuf>; 4]> {
        let roles = [
            ModelFile::LmWeights,
            ModelFile::MimiWeights,
            ModelFile::Tokenizer,
            ModelFile::MimiConfig,
        ];
        let mut locations = Vec::with_capacity(roles.len());
        for role in roles {
            let location = match overrides.get(&role) {
                Some(value) => Some(FileLocation::parse(value)?),
                None => config.location(role)?,
            };
            locations.push(location);
        }
        let fetched = try_join_all(locations.into_iter().map(|location| async move {
            match location {
                Some(location) => self
                    .fetch_location(repo, revision, &location)
                    .await
                    .map(Some),
                None => Ok(None),
            }
        }))
        .await?;
        Ok(fetched.try_into().expect("one result per role"))
    }

    /// Fetches a file from wherever `location` says.
    pub async fn fetch_location(
        &self,
        repo: &str,
        revision: &str,
        location: &FileLocation,
    ) -> Result<PathBuf> {
        match location {
            FileLocation::InRepo(path) => Ok(self.fetch_file(repo, revision, path).await?.path),
            FileLocation::OtherRepo { repo, path } => {
                check_repo_id(repo)?;
                Ok(self.fetch_file(repo, "main", path).await?.path)
            }
            FileLocation::Local(path) => {
                if !path.is_file() {
                    return Err(MoshiError::invalid_file(
                        path,
                        "the file:// override names a file that does not exist",
                    ));
                }
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                verify::check_format(path, FileFormat::from_name(name))?;
                Ok(path.clone())
            }
        }
    }

    /// The file name of a voice: `<voice>.<sig>@<epoch>.safetensors`.
    pub fn voice_file_name(voice: &str, model_id: Option<&ModelId>) -> Result<String> {
        if voice.ends_with(".safetensors") {
            check_repo_path(voice)?;
            return Ok(voice.to_string());
        }
        let Some(id) = model_id else {
            return Err(MoshiError::InvalidConfig(
                "the TTS config.json has no `model_id`, so voice files cannot be named; give the \
                 voice's full file name ending in .safetensors"
                    .into(),
            ));
        };
        let name = format!("{voice}.{}@{}.safetensors", id.sig, id.epoch);
        check_repo_path(&name).map_err(|_| {
            MoshiError::InvalidInput(format!(
                "`{voice}` is not a valid voice name; voices are named by their path in the \
                 voices repository, for example `expresso/ex03-ex01_happy_001_channel1_334s.wav`"
            ))
        })?;
        Ok(name)
    }

    /// Fetches one voice embedding (and nothing else of the voices repository).
    pub async fn fetch_voice(&self, tts: &TtsModelPaths, voice: &str) -> Result<PathBuf> {
        let repo = &self.config.voices_repo;
        let file = Self::voice_file_name(voice, tts.model_id.as_ref())?;
        let fetched = self
            .fetch_file(repo, &self.config.voices_revision, &file)
            .await
            .map_err(|e| match e {
                MoshiError::FileNotFound { repo, file, .. } => MoshiError::VoiceNotFound {
                    voice: voice.to_string(),
                    repo,
                    file,
                },
                other => other,
            })?;
        check_voice_tensor(&fetched.path)?;
        Ok(fetched.path)
    }

    /// Makes one file of a repository present and verified in the cache.
    pub async fn fetch_file(&self, repo: &str, revision: &str, file: &str) -> Result<FetchedFile> {
        check_repo_path(file)?;
        let format = FileFormat::from_name(file);
        if !self.config.force_download
            && let Some(commit) = self.known_commit(repo, revision)
        {
            if let Some(hit) = self.verified_cache_hit(repo, &commit, file, format)? {
                return Ok(hit);
            }
            if self.settings.offline && self.cache.is_known_missing(repo, &commit, file) {
                return Err(MoshiError::FileNotFound {
                    repo: repo.into(),
                    revision: revision.into(),
                    file: file.into(),
                });
            }
        }
        if self.settings.offline {
            return Err(MoshiError::OfflineNotCached {
                repo: repo.into(),
                revision: revision.into(),
                file: file.into(),
                cache_dir: self.settings.cache_dir.clone(),
            });
        }
        let remote = match self.hub.file_metadata(repo, revision, file).await {
            Ok(remote) => remote,
            Err(error @ MoshiError::Network { .. }) => {
                return self.cache_fallback(repo, revision, file, format, error);
            }
            Err(error @ MoshiError::FileNotFound { .. }) => {
                if let Some(commit) = self.cache.resolve_revision(repo, revision) {
                    let _ = self.cache.mark_missing(repo, &commit, file);
                }
                return Err(error);
            }
            Err(error) => return Err(error),
        };
        self.resolved.lock().insert(
            (repo.to_string(), revision.to_string()),
            remote.commit.clone(),
        );
        self.cache.write_ref(repo, revision, &remote.commit)?;
        self.fetch_blob(repo, file, &remote, format).await
    }

    /// The commit `revision` stands for, when known without asking the hub.
    fn known_commit(&self, repo: &str, revision: &str) -> Option<String> {
        if is_commit_hash(revision) {
            return Some(revision.to_ascii_lowercase());
        }
        if let Some(commit) = self
            .resolved
            .lock()
            .get(&(repo.to_string(), revision.to_string()))
        {
            return Some(commit.clone());
        }
        if self.settings.offline {
            return self.cache.resolve_revision(repo, revision);
        }
        None
    }

    /// When the hub cannot be reached, a verified cached copy of the last resolved commit is
    /// used (as `huggingface_hub` does), with a warning; otherwise the network error stands.
    fn cache_fallback(
        &self,
        repo: &str,
        revision: &str,
        file: &str,
        format: FileFormat,
        error: MoshiError,
    ) -> Result<FetchedFile> {
        if self.config.force_download {
            return Err(error);
        }
        if let Some(commit) = self.cache.resolve_revision(repo, revision)
            && let Some(hit) = self.verified_cache_hit(repo, &commit, file, format)?
        {
            log::warn!("{error}; using the cached copy of `{file}` from `{repo}`");
            return Ok(hit);
        }
        Err(error)
    }

    /// A cached copy of the file at `commit` whose blob is verified (by record, or hashed now
    /// when another client put it there).
    fn verified_cache_hit(
        &self,
        repo: &str,
        commit: &str,
        file: &str,
        format: FileFormat,
    ) -> Result<Option<FetchedFile>> {
        let Some(path) = self.cache.cached_file(repo, commit, file) else {
            return Ok(None);
        };
        let Some(etag) = self.cache.etag_of(&path) else {
            // A plain file instead of a symlink (a copy-based cache): hash unknown, re-fetch.
            return Ok(None);
        };
        let blob = self.cache.blob_path(repo, &etag);
        if !self.ensure_blob_verified(repo, &etag, &blob, format)? {
            return Ok(None);
        }
        self.progress.cache_hit(repo, file);
        Ok(Some(FetchedFile {
            path,
            commit: commit.to_string(),
            from_cache: true,
        }))
    }

    /// True when the blob is verified: recorded as such at its current size and mtime, or
    /// hashed now and found equal to its etag. A blob that fails is deleted.
    fn ensure_blob_verified(
        &self,
        repo: &str,
        etag: &str,
        blob: &Path,
        format: FileFormat,
    ) -> Result<bool> {
        if !blob.is_file() {
            return Ok(false);
        }
        let record = self.cache.verified_record_path(repo, etag);
        if verify::is_recorded_verified(&record, blob, etag) {
            return Ok(true);
        }
        let mismatch = verify::check_blob(blob, etag)
            .map_err(|e| MoshiError::io("could not read", blob, e))?;
        if let Some(actual) = mismatch {
            log::warn!(
                "cached blob {} is corrupt (sha {actual}); removing it",
                blob.display()
            );
            let _ = std::fs::remove_file(blob);
            return Ok(false);
        }
        if verify::check_format(blob, format).is_err() {
            let _ = std::fs::remove_file(blob);
            return Ok(false);
        }
        verify::record_verified(&record, blob, etag)?;
        Ok(true)
    }

    /// Step 2 and 3 for one file whose remote metadata is known.
    async fn fetch_blob(
        &self,
        repo: &str,
        file: &str,
        remote: &RemoteFile,
        format: FileFormat,
    ) -> Result<FetchedFile> {
        let blob = self.cache.blob_path(repo, &remote.etag);
        let reuse = |manager: &Self| -> Result<Option<FetchedFile>> {
            if manager.config.force_download
                || !manager.ensure_blob_verified(repo, &remote.etag, &blob, format)?
            {
                return Ok(None);
            }
            let path = manager
                .cache
                .link_snapshot(repo, &remote.commit, file, &remote.etag)?;
            manager.progress.cache_hit(repo, file);
            Ok(Some(FetchedFile {
                path,
                commit: remote.commit.clone(),
                from_cache: true,
            }))
        };
        if let Some(hit) = reuse(self)? {
            return Ok(hit);
        }
        self.cache.write_cachedir_tag()?;
        let lock_path = self.cache.lock_path(repo, &remote.etag);
        let _lock = lock::acquire(&lock_path, || self.progress.waiting(repo, file)).await?;
        // Another process (or task) may have finished it while we waited.
        if let Some(hit) = reuse(self)? {
            return Ok(hit);
        }
        // A corrupt transfer is worth one more try from scratch; a second one is reported.
        let mut tries = 0;
        loop {
            tries += 1;
            match self.download_blob(repo, file, remote, &blob, format).await {
                Err(
                    error
                    @ (MoshiError::IntegrityMismatch { .. } | MoshiError::SizeMismatch { .. }),
                ) if tries < 2 && self.config.max_attempts > 1 => {
                    log::warn!("{error}; downloading again");
                }
                Err(error) => return Err(error),
                Ok(()) => break,
            }
        }
        let path = self
            .cache
            .link_snapshot(repo, &remote.commit, file, &remote.etag)?;
        Ok(FetchedFile {
            path,
            commit: remote.commit.clone(),
            from_cache: false,
        })
    }

    /// Downloads the blob into `<etag>.incomplete` (resuming what is there), checks size, hash
    /// and format, then renames it into place. Nothing unverified is ever left under the blob name.
    async fn download_blob(
        &self,
        repo: &str,
        file: &str,
        remote: &RemoteFile,
        blob: &Path,
        format: FileFormat,
    ) -> Result<()> {
        let partial = self.cache.incomplete_path(repo, &remote.etag);
        super::cache::create_parent(&partial)?;
        let mut have = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        if self.config.force_download || have > remote.size {
            remove_if_present(&partial)?;
            have = 0;
        }
        self.check_disk_space(&partial, remote.size - have)?;
        let mut hash = StreamingHash::for_etag(&remote.etag, remote.size, self.hub.verifies());
        if have > 0 {
            verify::hash_prefix(&partial, have, &mut hash)
                .map_err(|e| MoshiError::io("could not read", &partial, e))?;
        }
        let mut progress = self.progress.start(repo, file, remote.size, have);
        let url = self.hub.file_url(repo, &remote.commit, file);
        let hash = self
            .hub
            .download(
                repo,
                file,
                &url,
                &remote.etag,
                remote.size,
                &partial,
                hash,
                &mut progress,
            )
            .await?;
        let actual_size = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        if actual_size != remote.size {
            remove_if_present(&partial)?;
            return Err(MoshiError::SizeMismatch {
                repo: repo.into(),
                file: file.into(),
                expected: remote.size,
                actual: actual_size,
            });
        }
        if let Some(actual) = hash.finish()
            && !actual.eq_ignore_ascii_case(&remote.etag)
        {
            remove_if_present(&partial)?;
            return Err(MoshiError::IntegrityMismatch {
                repo: repo.into(),
                file: file.into(),
                expected: remote.etag.clone(),
                actual,
            });
        }
        if let Err(error) = verify::check_format(&partial, format) {
            remove_if_present(&partial)?;
            return Err(match error {
                MoshiError::InvalidModelFile { reason, .. } => MoshiError::InvalidModelFile {
                    path: PathBuf::from(format!("{repo}/{file}")),
                    reason,
                },
                other => other,
            });
        }
        std::fs::rename(&partial, blob)
            .map_err(|e| MoshiError::io("could not move into place", blob, e))?;
        let record = self.cache.verified_record_path(repo, &remote.etag);
        if self.hub.verifies() {
            verify::record_verified(&record, blob, &remote.etag)?;
        } else {
            // Not hashed: the next cache hit hashes it before trusting it.
            remove_if_present(&record)?;
        }
        progress.finish();
        Ok(())
    }

    fn check_disk_space(&self, partial: &Path, needed: u64) -> Result<()> {
        let dir = partial.parent().unwrap_or(Path::new("."));
        if let Ok(available) = fs4::available_space(dir)
            && available < needed
        {
            return Err(MoshiError::DiskFull {
                dir: dir.to_path_buf(),
                needed,
                available,
            });
        }
        Ok(())
    }
}

/// Checks that a voice file holds a `speaker_wavs` tensor of rank 3 (`[1, dim, frames]`).
fn check_voice_tensor(path: &Path) -> Result<()> {
    let tensors = verify::check_safetensors(path)?;
    match tensors.iter().find(|(name, _)| name == "speaker_wavs") {
        Some((_, shape)) if shape.len() == 3 && shape[0] == 1 => Ok(()),
        Some((_, shape)) => Err(MoshiError::invalid_file(
            path,
            format!(
                "the voice tensor `speaker_wavs` has shape {shape:?}, expected [1, dim, frames]"
            ),
        )),
        None => Err(MoshiError::invalid_file(
            path,
            "a voice file must hold a tensor named `speaker_wavs`",
        )),
    }
}

/// `org/name`, with no path tricks.
fn check_repo_id(repo: &str) -> Result<()> {
    let parts: Vec<&str> = repo.split('/').collect();
    let valid_part = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    if parts.len() == 2 && parts.iter().all(|p| valid_part(p)) {
        Ok(())
    } else {
        Err(MoshiError::InvalidConfig(format!(
            "`{repo}` is not a repository id; write it as `org/name`, for example `kyutai/tts-1.6b-en_fr`"
        )))
    }
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(MoshiError::io("could not remove", path, e))
        }
        _ => Ok(()),
    }
}
