//! What the cache holds, and whether each file is still what the hub published: the model of
//! `kyutai cache [--verify]`.

use std::path::PathBuf;

use super::cache::HubCache;
use super::verify;

/// The state of one cached file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    /// The blob matches its verification record (size and mtime unchanged since hashed).
    Verified,
    /// The blob exists but was never verified by this crate (e.g. downloaded by Python).
    Unverified,
    /// Re-hashed now: it matches its etag.
    Good,
    /// Re-hashed now: it does not match its etag.
    Corrupt,
    /// The snapshot entry points to a blob that is not there.
    MissingBlob,
}

impl FileState {
    /// How `kyutai cache` prints the state.
    pub fn label(self) -> &'static str {
        match self {
            FileState::Verified => "verified",
            FileState::Unverified => "unverified",
            FileState::Good => "ok",
            FileState::Corrupt => "CORRUPT",
            FileState::MissingBlob => "MISSING BLOB",
        }
    }

    /// True for a file that must be downloaded again.
    pub fn is_bad(self) -> bool {
        matches!(self, FileState::Corrupt | FileState::MissingBlob)
    }
}

/// One file of one cached snapshot ([`KyutaiModelManager::cached_files`](crate::KyutaiModelManager::cached_files)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedFile {
    /// The repository, `org/name`.
    pub repo: String,
    /// The snapshot's commit.
    pub commit: String,
    /// The file's path in the repository.
    pub file: String,
    /// The hash the blob is named by, when the snapshot entry links to a blob.
    pub etag: Option<String>,
    /// The blob's size, when it exists.
    pub size: Option<u64>,
    /// Where the blob is (or should be).
    pub blob: PathBuf,
    /// Verified, corrupt, missing, ...
    pub state: FileState,
}

/// Lists every file of every snapshot; with `rehash`, hashes each blob against its etag.
pub(crate) fn scan(cache: &HubCache, rehash: bool) -> Vec<CachedFile> {
    let mut out = Vec::new();
    for repo in cache.repos() {
        for (commit, files) in cache.snapshots(&repo) {
            for file in files {
                let entry = cache.snapshot_path(&repo, &commit, &file);
                let etag = cache.etag_of(&entry);
                let blob = match &etag {
                    Some(etag) => cache.blob_path(&repo, etag),
                    None => entry.clone(),
                };
                let size = std::fs::metadata(&blob).ok().map(|m| m.len());
                let state = match (&etag, size) {
                    (_, None) => FileState::MissingBlob,
                    (Some(etag), Some(_)) if rehash => {
                        // The outcome replaces any earlier record, so that a corrupt blob is
                        // hashed (and fetched again) by the next download instead of trusted.
                        let record = cache.verified_record_path(&repo, etag);
                        match verify::check_blob(&blob, etag) {
                            Ok(None) => {
                                let _ = verify::record_verified(&record, &blob, etag);
                                FileState::Good
                            }
                            Ok(Some(_)) => {
                                let _ = std::fs::remove_file(&record);
                                FileState::Corrupt
                            }
                            Err(_) => FileState::MissingBlob,
                        }
                    }
                    (Some(etag), Some(_)) => {
                        let record = cache.verified_record_path(&repo, etag);
                        if verify::is_recorded_verified(&record, &blob, etag) {
                            FileState::Verified
                        } else {
                            FileState::Unverified
                        }
                    }
                    (None, Some(_)) => FileState::Unverified,
                };
                out.push(CachedFile {
                    repo: repo.clone(),
                    commit: commit.clone(),
                    file,
                    etag,
                    size,
                    blob,
                    state,
                });
            }
        }
    }
    out
}
