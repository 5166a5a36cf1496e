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
use super::hub::{HubClient, RemoteFile, Transfer};
use super::lock;
use super::paths::{KyutaiModelPaths, SttModelPaths, TtsModelPaths};
use super::progress::Progress;
use super::repo_config::{FileLocation, ModelId, RepoConfig, check_repo_id, check_repo_path};
use super::verify::{self, FileFormat, StreamingHash};
use crate::error::{MoshiError, Result};
use crate::runtime::blocking;

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

/// Where a file is, before anything is transferred.
enum Located {
    /// Verified in the cache.
    Present(FetchedFile),
    /// To fetch from the hub (unless its blob is found in the cache under the etag).
    Remote {
        remote: RemoteFile,
        format: FileFormat,
    },
    /// A `file://` override, checked.
    Local(PathBuf),
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

    /// The configuration, as given.
    pub fn config(&self) -> &KyutaiModelConfig {
        &self.config
    }

    /// The settings in force (config plus environment).
    pub fn settings(&self) -> &ResolvedSettings {
        &self.settings
    }

    /// The cache directory's layout.
    pub(crate) fn cache(&self) -> &HubCache {
        &self.cache
    }

    /// Every file of every snapshot in the cache, repository by repository; with `rehash`,
    /// each blob is hashed again and compared with the hash the hub announced (slow: it reads
    /// every byte), otherwise files are reported as recorded.
    pub fn cached_files(&self, rehash: bool) -> Vec<super::inventory::CachedFile> {
        super::inventory::scan(&self.cache, rehash)
    }

    /// Fetches everything: the TTS model, the STT model and the default voice.
    pub async fn download_models(&self) -> Result<KyutaiModelPaths> {
        let (tts, stt) = futures::try_join!(self.fetch_tts(), self.fetch_stt())?;
        let voice = self.fetch_voice(&tts, &self.config.default_voice).await?;
        Ok(KyutaiModelPaths {
            cache_dir: self.settings.cache_dir.clone(),
            tts: Some(tts),
            stt: Some(stt),
            voices: [(self.config.default_voice.clone(), voice)].into(),
        })
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
        // First every file's metadata, so that the free space is checked once against the sum
        // of what is missing before any byte is transferred (a 4 GB model must not fail on a
        // full disk after 3 GB); then the transfers.
        let located = try_join_all(locations.into_iter().map(|location| async move {
            Ok::<_, MoshiError>(match location {
                Some(FileLocation::InRepo(path)) => {
                    let located = self.locate(repo, revision, &path).await?;
                    Some((repo.to_string(), path, located))
                }
                Some(FileLocation::OtherRepo { repo, path }) => {
                    check_repo_id(&repo)?;
                    let located = self.locate(&repo, "main", &path).await?;
                    Some((repo, path, located))
                }
                Some(local @ FileLocation::Local(_)) => {
                    let path = self.fetch_location(repo, revision, &local).await?;
                    Some((String::new(), String::new(), Located::Local(path)))
                }
                None => None,
            })
        }))
        .await?;
        self.check_space_for_all(repo, located.iter().flatten())?;
        let fetched = try_join_all(located.into_iter().map(|entry| async move {
            match entry {
                None => Ok(None),
                Some((_, _, Located::Present(fetched))) => Ok(Some(fetched.path)),
                Some((_, _, Located::Local(path))) => Ok(Some(path)),
                Some((repo, file, Located::Remote { remote, format })) => self
                    .fetch_blob(&repo, &file, &remote, format)
                    .await
                    .map(|f| Some(f.path)),
            }
        }))
        .await?;
        Ok(fetched.try_into().expect("one result per role"))
    }

    /// Checks that the cache's filesystem can hold every file still to be transferred (their
    /// announced sizes, less what partial downloads already hold), and says how much is missing
    /// where, before anything is downloaded.
    fn check_space_for_all<'a>(
        &self,
        repo: &str,
        located: impl Iterator<Item = &'a (String, String, Located)>,
    ) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        let mut needed = 0u64;
        for (file_repo, _, entry) in located {
            let Located::Remote { remote, .. } = entry else {
                continue;
            };
            let blob = self.cache.blob_path(file_repo, &remote.etag);
            let kept = blob.is_file() && !self.config.force_download;
            if kept || !seen.insert(remote.etag.clone()) {
                continue;
            }
            let partial = self.cache.incomplete_path(file_repo, &remote.etag);
            let have = std::fs::metadata(&partial).map_or(0, |m| m.len());
            needed += remote.size.saturating_sub(have);
        }
        if needed == 0 {
            return Ok(());
        }
        let dir = self.cache.blob_path(repo, "x");
        let dir = dir.parent().expect("a blob is in a folder");
        std::fs::create_dir_all(dir).map_err(|e| MoshiError::io("could not create", dir, e))?;
        match fs4::available_space(dir) {
            Ok(available) if available < needed => Err(MoshiError::DiskFull {
                dir: dir.to_path_buf(),
                needed,
                available,
            }),
            _ => Ok(()),
        }
    }

    /// Fetches a file from wherever `location` says.
    pub(crate) async fn fetch_location(
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
    pub(crate) fn voice_file_name(voice: &str, model_id: Option<&ModelId>) -> Result<String> {
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

    /// The voices of the voices repository that the TTS model `tts` can speak with, by the names
    /// [`fetch_voice`](Self::fetch_voice) takes (`expresso/ex03-ex01_happy_001_channel1_334s.wav`),
    /// sorted. Online, from the repository's file list; offline, the voices in the cache.
    ///
    /// A model with a `model_id` takes voice embeddings (`<name>.<sig>@<epoch>.safetensors`);
    /// one without takes the voices' audio (`.wav` files).
    pub async fn list_voices(&self, tts: &TtsModelPaths) -> Result<Vec<String>> {
        let repo = &self.config.voices_repo;
        let revision = &self.config.voices_revision;
        let files = if self.settings.offline {
            let commit = self.cache.resolve_revision(repo, revision);
            self.cache
                .snapshots(repo)
                .into_iter()
                .filter(|(c, _)| commit.as_deref().is_none_or(|commit| commit == c))
                .flat_map(|(_, files)| files)
                .collect()
        } else {
            self.hub.list_files(repo, revision).await?
        };
        let mut voices: Vec<String> = match &tts.model_id {
            Some(id) => {
                let suffix = format!(".{}@{}.safetensors", id.sig, id.epoch);
                files
                    .iter()
                    .filter_map(|f| f.strip_suffix(&suffix))
                    .map(str::to_string)
                    .collect()
            }
            None => files.into_iter().filter(|f| f.ends_with(".wav")).collect(),
        };
        voices.sort();
        voices.dedup();
        Ok(voices)
    }

    /// Makes one file of a repository present and verified in the cache.
    pub async fn fetch_file(&self, repo: &str, revision: &str, file: &str) -> Result<FetchedFile> {
        match self.locate(repo, revision, file).await? {
            Located::Present(fetched) => Ok(fetched),
            Located::Remote { remote, format } => {
                self.fetch_blob(repo, file, &remote, format).await
            }
            Located::Local(path) => Ok(FetchedFile {
                path,
                commit: String::new(),
                from_cache: true,
            }),
        }
    }

    /// Step 1 of [`fetch_file`](Self::fetch_file): a verified cache hit, or what the hub says
    /// about the file (one HEAD), with the revision's commit recorded.
    async fn locate(&self, repo: &str, revision: &str, file: &str) -> Result<Located> {
        check_repo_path(file)?;
        let format = FileFormat::from_name(file);
        if !self.config.force_download
            && let Some(commit) = self.known_commit(repo, revision)
        {
            if let Some(hit) = self.verified_cache_hit(repo, &commit, file, format).await? {
                return Ok(Located::Present(hit));
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
                advice: self.offline_advice(),
            });
        }
        let remote = match self.hub.file_metadata(repo, revision, file).await {
            Ok(remote) => remote,
            Err(error @ MoshiError::Network { .. }) => {
                return self
                    .cache_fallback(repo, revision, file, format, error)
                    .await
                    .map(Located::Present);
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
        Ok(Located::Remote { remote, format })
    }

    /// What to do about a file missing offline, for the way offline mode was turned on.
    fn offline_advice(&self) -> String {
        let fetch_first = "or fetch the models once while online (`KyutaiModelManager::download_models`, \
                           or `kyutai download` on the command line)";
        if self.settings.offline_from_env {
            format!("HF_HUB_OFFLINE is set: unset it to download the file, {fetch_first}")
        } else {
            format!(
                "the configuration turns offline mode on (`KyutaiModelConfig::offline(true)`, or \
                 `--offline` on the command line): turn it off to download the file, {fetch_first}"
            )
        }
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
    async fn cache_fallback(
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
            && let Some(hit) = self.verified_cache_hit(repo, &commit, file, format).await?
        {
            log::warn!("{error}; using the cached copy of `{file}` from `{repo}`");
            return Ok(hit);
        }
        Err(error)
    }

    /// A cached copy of the file at `commit` whose blob is verified (by record, or hashed now
    /// when another client put it there).
    async fn verified_cache_hit(
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
        if !self
            .ensure_blob_verified(repo, &etag, &blob, format)
            .await?
        {
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
    ///
    /// Hashing reads the whole blob (gigabytes for weights that another client downloaded), so
    /// it runs on a blocking thread: the files of a model, located concurrently, are hashed in
    /// parallel, and the async runtime's workers stay free.
    async fn ensure_blob_verified(
        &self,
        repo: &str,
        etag: &str,
        blob: &Path,
        format: FileFormat,
    ) -> Result<bool> {
        if !blob.is_file() {
            return Ok(false);
        }
        // The warm path: a stat and a small read, fine on any thread.
        let record = self.cache.verified_record_path(repo, etag);
        if verify::is_recorded_verified(&record, blob, etag) {
            return Ok(true);
        }
        let (etag, blob) = (etag.to_string(), blob.to_path_buf());
        blocking("verifying a cached file", move || {
            let mismatch = verify::check_blob(&blob, &etag)
                .map_err(|e| MoshiError::io("could not read", &blob, e))?;
            if let Some(actual) = mismatch {
                log::warn!(
                    "cached blob {} is corrupt (sha {actual}); removing it",
                    blob.display()
                );
                let _ = std::fs::remove_file(&blob);
                return Ok(false);
            }
            if verify::check_format(&blob, format).is_err() {
                let _ = std::fs::remove_file(&blob);
                return Ok(false);
            }
            verify::record_verified(&record, &blob, &etag)?;
            Ok(true)
        })
        .await
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
        if let Some(hit) = self.reuse_blob(repo, file, remote, &blob, format).await? {
            return Ok(hit);
        }
        self.cache.write_cachedir_tag()?;
        let lock_path = self.cache.lock_path(repo, &remote.etag);
        let staleness = lock::Staleness {
            partial: &self.cache.incomplete_path(repo, &remote.etag),
            stale_after: self.config.lock_stale_after,
            repo,
            file,
        };
        let _lock =
            lock::acquire(&lock_path, staleness, || self.progress.waiting(repo, file)).await?;
        // Another process (or task) may have finished it while we waited.
        if let Some(hit) = self.reuse_blob(repo, file, remote, &blob, format).await? {
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

    /// The file, linked from a verified blob already in the cache (no transfer), if there is one.
    async fn reuse_blob(
        &self,
        repo: &str,
        file: &str,
        remote: &RemoteFile,
        blob: &Path,
        format: FileFormat,
    ) -> Result<Option<FetchedFile>> {
        if self.config.force_download
            || !self
                .ensure_blob_verified(repo, &remote.etag, blob, format)
                .await?
        {
            return Ok(None);
        }
        let path = self
            .cache
            .link_snapshot(repo, &remote.commit, file, &remote.etag)?;
        self.progress.cache_hit(repo, file);
        Ok(Some(FetchedFile {
            path,
            commit: remote.commit.clone(),
            from_cache: true,
        }))
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
        let partial_record = self.cache.partial_record_path(repo, &remote.etag);
        super::cache::write_atomically(&partial_record, file.as_bytes())?;
        let mut have = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        if self.config.force_download || have > remote.size {
            remove_if_present(&partial)?;
            have = 0;
        }
        self.check_disk_space(&partial, remote.size - have)?;
        let mut hash = StreamingHash::for_etag(&remote.etag, remote.size, self.hub.verifies());
        if have > 0 {
            // The bytes a killed download left behind are hashed again before resuming (off the
            // async threads: they may be gigabytes).
            let path = partial.clone();
            hash = blocking("hashing a partial download", move || {
                verify::hash_prefix(&path, have, &mut hash)
                    .map_err(|e| MoshiError::io("could not read", &path, e))?;
                Ok(hash)
            })
            .await?;
        }
        let mut progress = self.progress.start(repo, file, remote.size, have);
        let url = self.hub.file_url(repo, &remote.commit, file);
        let transfer = Transfer {
            repo,
            revision: &remote.commit,
            file,
            url: &url,
            etag: &remote.etag,
            size: remote.size,
            partial: &partial,
        };
        let downloaded = self.hub.download(&transfer, hash, &mut progress).await;
        let hash = match downloaded {
            Ok(hash) => hash,
            // A full disk: the partial file is deleted, so that the space it took is given back
            // to the system at once (the user's next step is to free space, and a partial file
            // in a hidden cache folder would be the last thing they find). A server that sent
            // the wrong number of bytes: its partial file cannot be resumed.
            Err(
                error @ (MoshiError::DiskFull { .. }
                | MoshiError::SizeMismatch { .. }
                | MoshiError::IntegrityMismatch { .. }),
            ) => {
                remove_if_present(&partial)?;
                return Err(error);
            }
            // A network failure keeps the partial file: the next run resumes it (after
            // re-hashing it), transferring only the rest.
            Err(error) => return Err(error),
        };
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
        remove_if_present(&partial_record)?;
        self.drop_superseded_partials(repo, file, &remote.etag);
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

    /// Deletes the partial downloads of older versions of `file` (a download interrupted, then
    /// the file changed on the hub): they can never be resumed, and they may be gigabytes.
    /// Partials that someone is downloading right now (their lock is taken) are left alone, and so
    /// are partials without our record (Python's), whose file we cannot know.
    fn drop_superseded_partials(&self, repo: &str, file: &str, current_etag: &str) {
        let Ok(entries) = std::fs::read_dir(self.cache.partial_records_dir(repo)) else {
            return;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let Some(etag) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if etag == current_etag || etag.starts_with('.') {
                continue;
            }
            if std::fs::read_to_string(entry.path()).ok().as_deref() != Some(file) {
                continue;
            }
            let Some(_lock) = lock::try_acquire(&self.cache.lock_path(repo, &etag)) else {
                continue;
            };
            let partial = self.cache.incomplete_path(repo, &etag);
            log::info!(
                "removing {}: {file} has changed on the hub",
                partial.display()
            );
            let _ = std::fs::remove_file(&partial);
            let _ = std::fs::remove_file(entry.path());
        }
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

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(MoshiError::io("could not remove", path, e))
        }
        _ => Ok(()),
    }
}
