//! Derived files: files computed from a cached model file (the quantized GGUF of a published
//! language model, see `crate::weights`) and kept in the Hugging Face cache beside it.
//!
//! ```text
//! <cache>/models--ORG--NAME/.kyutai-derived/<source sha256>.<scheme>.v<format>.gguf
//!                                          /<source sha256>.<scheme>.v<format>.gguf.json
//! ```
//!
//! The name is the key: the sha256 of the source blob (its etag, so no hashing is needed for a
//! hub file), the scheme and the format version. A file is written to a temporary file, checked,
//! hashed and renamed into place, then recorded (`.json`: its own sha256, size and modification
//! time), as downloads are. A later start trusts it after one `stat` against the record; a file
//! whose size or time changed is hashed again, and one that no longer matches its record is
//! deleted (and rebuilt by its user). `kyutai cache --verify` re-hashes derived files too.
//! Python's cache tools ignore the folder (as they ignore `.kyutai-verified`).
//!
//! A source outside the cache (a `file://` override) has no etag: it is hashed once and the hash
//! remembered against its path, size and modification time (`sources/` in the same folder).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use super::cache::write_atomically;
use super::verify;
use crate::error::{MoshiError, Result};

/// The folder of derived files inside a repository's cache folder.
pub const DERIVED_DIR: &str = ".kyutai-derived";

/// The record of a derived file, written next to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DerivedRecord {
    /// sha256 of the derived file itself.
    pub sha256: String,
    pub size: u64,
    pub mtime_ns: u128,
    /// sha256 of the file it was derived from.
    pub source_sha256: String,
    pub scheme: String,
    pub format: u32,
}

/// The state of a derived file, for `kyutai cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DerivedState {
    /// Matches its record (size and time), not re-hashed.
    Recorded,
    /// Re-hashed now and equal to its record.
    Good,
    /// Re-hashed now and different from its record, or without a record: deleted, so that the
    /// next load rebuilds it.
    Removed,
}

/// One derived file found in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedEntry {
    pub path: PathBuf,
    pub size: u64,
    pub state: DerivedState,
}

pub(crate) fn stat(path: &Path) -> Option<(u64, u128)> {
    let meta = fs::metadata(path).ok()?;
    let mtime = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    Some((meta.len(), mtime.as_nanos()))
}

pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    let size = fs::metadata(path)
        .map_err(|e| MoshiError::io("could not read", path, e))?
        .len();
    let mut hash = verify::StreamingHash::for_etag(&"0".repeat(64), size, true);
    verify::hash_prefix(path, size, &mut hash)
        .map_err(|e| MoshiError::io("could not read", path, e))?;
    Ok(hash.finish().expect("sha256 enabled"))
}

fn record_path(derived: &Path) -> PathBuf {
    let mut name = derived.as_os_str().to_owned();
    name.push(".json");
    PathBuf::from(name)
}

fn read_record(derived: &Path) -> Option<DerivedRecord> {
    let bytes = fs::read(record_path(derived)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub(crate) fn write_record(derived: &Path, record: &DerivedRecord) -> Result<()> {
    let json = serde_json::to_vec(record).expect("a record serializes");
    write_atomically(&record_path(derived), &json)
}

fn is_sha256(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The sha256 of `source` and the folder its derived files go in: for a blob of the cache
/// (`models--ORG--NAME/blobs/<sha256>`, usually reached through a snapshot symlink), its name and
/// that repository's folder, without reading it; for any other file, `local_dir`, and the hash
/// remembered there or computed now.
pub fn source_identity(source: &Path, local_dir: &Path) -> Result<(String, PathBuf)> {
    let real = fs::canonicalize(source).map_err(|e| MoshiError::io("could not open", source, e))?;
    let name = real
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if let Some(blobs) = real.parent()
        && blobs.file_name().is_some_and(|n| n == "blobs")
        && is_sha256(name)
        && let Some(repo_dir) = blobs.parent()
    {
        return Ok((name.to_ascii_lowercase(), repo_dir.join(DERIVED_DIR)));
    }
    let dir = local_dir.join(DERIVED_DIR);
    let key = {
        let mut h = verify::StreamingHash::for_etag(&"0".repeat(64), 0, true);
        h.update(real.as_os_str().as_encoded_bytes());
        h.finish().expect("sha256 enabled")
    };
    let index = dir.join("sources").join(format!("{key}.json"));
    let (size, mtime_ns) =
        stat(&real).ok_or_else(|| MoshiError::invalid_file(&real, "it cannot be read"))?;
    #[derive(Serialize, Deserialize)]
    struct SourceRecord {
        path: PathBuf,
        size: u64,
        mtime_ns: u128,
        sha256: String,
    }
    if let Ok(bytes) = fs::read(&index)
        && let Ok(r) = serde_json::from_slice::<SourceRecord>(&bytes)
        && r.path == real
        && r.size == size
        && r.mtime_ns == mtime_ns
    {
        return Ok((r.sha256, dir));
    }
    let sha256 = sha256_file(&real)?;
    let record = SourceRecord {
        path: real,
        size,
        mtime_ns,
        sha256: sha256.clone(),
    };
    write_atomically(&index, &serde_json::to_vec(&record).expect("serializes"))?;
    Ok((sha256, dir))
}

/// Checks a derived file against its record: `Some(true)` when it can be used (recorded, or
/// re-hashed and equal), `Some(false)` when it is damaged or unrecorded (deleted here), `None`
/// when there is no file.
pub(crate) fn check_existing(path: &Path, rehash: bool) -> Result<Option<DerivedState>> {
    let Some((size, mtime_ns)) = stat(path) else {
        return Ok(None);
    };
    let Some(record) = read_record(path) else {
        // Left by a build that stopped between the rename and the record: unknown content.
        remove(path);
        return Ok(Some(DerivedState::Removed));
    };
    if !rehash && record.size == size && record.mtime_ns == mtime_ns {
        return Ok(Some(DerivedState::Recorded));
    }
    if record.size == size && sha256_file(path)? == record.sha256 {
        write_record(path, &DerivedRecord { mtime_ns, ..record })?;
        return Ok(Some(DerivedState::Good));
    }
    log::warn!(
        "derived file {} does not match its record; removing it",
        path.display()
    );
    remove(path);
    Ok(Some(DerivedState::Removed))
}

/// Deletes a derived file and its record (the next load builds it again).
pub fn discard(path: &Path) {
    remove(path);
}

fn remove(path: &Path) {
    let _ = fs::remove_file(path);
    let _ = fs::remove_file(record_path(path));
}

/// The prefix of the temporary file a build of `path` writes.
pub(crate) fn building_prefix(path: &Path) -> String {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    format!(".building-{name}-")
}

/// Deletes the temporary files of earlier builds of `path` that were killed (gigabytes each).
/// Called with the build lock of `path` held, so none of them is still being written.
pub(crate) fn remove_abandoned_builds(path: &Path) {
    let prefix = building_prefix(path);
    let Some(Ok(entries)) = path.parent().map(fs::read_dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Every derived file under a repository folder, checked against its record; with `rehash`,
/// hashed again (a damaged file is deleted: the next load rebuilds it).
pub fn scan(repo_dir: &Path, rehash: bool) -> Vec<DerivedEntry> {
    let dir = repo_dir.join(DERIVED_DIR);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|path| {
            let size = stat(&path)?.0;
            let state = match check_existing(&path, rehash) {
                Ok(Some(state)) => state,
                Ok(None) => return None,
                Err(_) => DerivedState::Removed,
            };
            if state == DerivedState::Removed {
                remove(&path);
            }
            Some(DerivedEntry { path, size, state })
        })
        .collect()
}

/// The name of a derived file of the source `source_sha256`, for `scheme` at `format`.
pub fn derived_name(source_sha256: &str, scheme: &str, format: u32) -> String {
    format!("{source_sha256}.{scheme}.v{format}.gguf")
}

/// A temporary file in the folder of `path`, named after it (see [`remove_abandoned_builds`]),
/// readable by every user of a shared cache as downloaded files are (0666 less the umask).
pub(crate) fn temporary_for(path: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = path.parent().expect("a derived file is in a folder");
    let prefix = building_prefix(path);
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(0o666));
    }
    builder
        .tempfile_in(dir)
        .map_err(|e| MoshiError::io("could not create a temporary file in", dir, e))
}

/// Moves a finished, checked temporary file into place as `path` and records it.
pub(crate) fn install(
    temporary: tempfile::NamedTempFile,
    path: &Path,
    source_sha256: &str,
    scheme: &str,
    format: u32,
) -> Result<()> {
    temporary
        .as_file()
        .sync_all()
        .map_err(|e| MoshiError::io("could not write", temporary.path().to_path_buf(), e))?;
    let sha256 = sha256_file(temporary.path())?;
    temporary
        .persist(path)
        .map_err(|e| MoshiError::io("could not move into place", path, e.error))?;
    let (size, mtime_ns) =
        stat(path).ok_or_else(|| MoshiError::invalid_file(path, "it vanished after writing"))?;
    write_record(
        path,
        &DerivedRecord {
            sha256,
            size,
            mtime_ns,
            source_sha256: source_sha256.to_string(),
            scheme: scheme.to_string(),
            format,
        },
    )
}

/// Takes the build lock of the derived file `path` (one builder at a time across processes;
/// the others wait, then find the file built). Released when the returned file is dropped.
pub(crate) fn lock(path: &Path) -> Result<fs::File> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let lock = fs::File::create(&lock_path)
        .map_err(|e| MoshiError::io("could not create", &lock_path, e))?;
    lock.lock()
        .map_err(|e| MoshiError::io("could not lock", &lock_path, e))?;
    Ok(lock)
}
