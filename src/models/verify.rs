//! Integrity: the hashes the hub announces, the records of verified blobs, and the format checks
//! that a model file must pass before it counts as valid.
//!
//! The hub names every file by an etag that *is* its content hash: the sha256 of an LFS file
//! (64 hex digits) or the git blob sha1 of a small file (40 hex digits, over `blob <len>\0` and
//! the bytes). So a blob in the cache can always be checked against its own name.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::cache::write_atomically;
use crate::error::{MoshiError, Result};

/// What an etag lets us check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtagKind {
    /// sha256 of the bytes (LFS files).
    Sha256,
    /// git blob sha1 (regular files).
    GitSha1,
    /// Something else (a mirror's own etag): only the size can be checked.
    Opaque,
}

pub fn etag_kind(etag: &str) -> EtagKind {
    let hex = etag.bytes().all(|b| b.is_ascii_hexdigit());
    match etag.len() {
        64 if hex => EtagKind::Sha256,
        40 if hex => EtagKind::GitSha1,
        _ => EtagKind::Opaque,
    }
}

/// A hash computed while bytes stream past, matching the kind of etag it will be compared with.
pub enum StreamingHash {
    Sha256(Sha256),
    GitSha1(Sha1),
    None,
}

impl StreamingHash {
    /// `size` is needed up front for the git blob header.
    pub fn for_etag(etag: &str, size: u64, enabled: bool) -> Self {
        if !enabled {
            return StreamingHash::None;
        }
        match etag_kind(etag) {
            EtagKind::Sha256 => StreamingHash::Sha256(Sha256::new()),
            EtagKind::GitSha1 => {
                let mut hasher = Sha1::new();
                hasher.update(format!("blob {size}\0").as_bytes());
                StreamingHash::GitSha1(hasher)
            }
            EtagKind::Opaque => StreamingHash::None,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            StreamingHash::Sha256(h) => h.update(bytes),
            StreamingHash::GitSha1(h) => h.update(bytes),
            StreamingHash::None => {}
        }
    }

    /// The hex digest, or `None` when nothing was hashed.
    pub fn finish(self) -> Option<String> {
        match self {
            StreamingHash::Sha256(h) => Some(hex::encode(h.finalize())),
            StreamingHash::GitSha1(h) => Some(hex::encode(h.finalize())),
            StreamingHash::None => None,
        }
    }
}

/// Feeds the first `len` bytes of a file into `hash` (used to resume a partial download).
pub fn hash_prefix(path: &Path, len: u64, hash: &mut StreamingHash) -> std::io::Result<()> {
    let file = fs::File::open(path)?;
    let mut reader = file.take(len);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            return Ok(());
        }
        hash.update(&buffer[..n]);
    }
}

/// Re-hashes a blob and compares it with its etag. `Ok(None)` means it matches (or the etag is
/// opaque and the size matches); `Ok(Some(actual))` gives the differing digest.
pub fn check_blob(path: &Path, etag: &str) -> std::io::Result<Option<String>> {
    let size = fs::metadata(path)?.len();
    let mut hash = StreamingHash::for_etag(etag, size, true);
    hash_prefix(path, size, &mut hash)?;
    Ok(match hash.finish() {
        Some(actual) if !actual.eq_ignore_ascii_case(etag) => Some(actual),
        _ => None,
    })
}

/// The record that a blob was verified: valid while the blob keeps this size and mtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedRecord {
    pub etag: String,
    pub size: u64,
    pub mtime_ns: u128,
    /// `sha256`, `git-sha1` or `size-only`.
    pub checked: String,
}

fn stat(path: &Path) -> Option<(u64, u128)> {
    let meta = fs::metadata(path).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some((meta.len(), mtime))
}

/// Writes the record for a blob just verified.
pub fn record_verified(record_path: &Path, blob: &Path, etag: &str) -> Result<()> {
    let (size, mtime_ns) = stat(blob)
        .ok_or_else(|| MoshiError::invalid_file(blob, "it vanished after verification"))?;
    let checked = match etag_kind(etag) {
        EtagKind::Sha256 => "sha256",
        EtagKind::GitSha1 => "git-sha1",
        EtagKind::Opaque => "size-only",
    };
    let record = VerifiedRecord {
        etag: etag.to_string(),
        size,
        mtime_ns,
        checked: checked.into(),
    };
    let json = serde_json::to_vec(&record).expect("a record serializes");
    write_atomically(record_path, &json)
}

/// True when the record says this blob, as it is now (size and mtime), was verified. One `stat`
/// and one small read: no hashing.
pub fn is_recorded_verified(record_path: &Path, blob: &Path, etag: &str) -> bool {
    let Some((size, mtime_ns)) = stat(blob) else {
        return false;
    };
    let Ok(bytes) = fs::read(record_path) else {
        return false;
    };
    serde_json::from_slice::<VerifiedRecord>(&bytes)
        .is_ok_and(|r| r.etag == etag && r.size == size && r.mtime_ns == mtime_ns)
}

/// How a file's content is checked, beyond its hash, before it counts as a valid model file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// A JSON object (config.json, a Mimi config).
    JsonObject,
    /// A safetensors file: header, dtypes, shapes and offsets consistent with the file size.
    Safetensors,
    /// A SentencePiece model (a protobuf; checked non-empty here, parsed by the tokenizer).
    SentencePiece,
    /// Anything else: no format check.
    Opaque,
}

impl FileFormat {
    /// The format implied by a file name.
    pub fn from_name(name: &str) -> Self {
        if name.ends_with(".safetensors") {
            FileFormat::Safetensors
        } else if name.ends_with(".json") {
            FileFormat::JsonObject
        } else if name.ends_with(".model") {
            FileFormat::SentencePiece
        } else {
            FileFormat::Opaque
        }
    }
}

/// The largest JSON file read (config.json, a Mimi config): real ones are a few kilobytes. A
/// larger file, which only a broken or hostile hub would serve, is refused before it is read, so
/// that it cannot exhaust memory.
pub const MAX_JSON_BYTES: u64 = 16 << 20;

/// Reads a JSON file of at most [`MAX_JSON_BYTES`].
pub(crate) fn read_json_file(path: &Path) -> Result<Vec<u8>> {
    let file = fs::File::open(path).map_err(|e| MoshiError::io("could not open", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| MoshiError::io("could not read", path, e))?
        .len();
    if len > MAX_JSON_BYTES {
        return Err(MoshiError::invalid_file(
            path,
            format!(
                "a JSON configuration of {len} bytes is not plausible (the limit is \
                 {MAX_JSON_BYTES})"
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(MAX_JSON_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| MoshiError::io("could not read", path, e))?;
    Ok(bytes)
}

/// Checks that `path` is a well-formed file of `format`.
pub fn check_format(path: &Path, format: FileFormat) -> Result<()> {
    match format {
        FileFormat::JsonObject => {
            let bytes = read_json_file(path)?;
            match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(serde_json::Value::Object(_)) => Ok(()),
                Ok(_) => Err(MoshiError::invalid_file(
                    path,
                    "it is JSON but not an object",
                )),
                Err(e) => Err(MoshiError::invalid_file(
                    path,
                    format!("it is not valid JSON ({e})"),
                )),
            }
        }
        FileFormat::Safetensors => check_safetensors(path).map(|_| ()),
        FileFormat::SentencePiece => {
            let size = fs::metadata(path)
                .map_err(|e| MoshiError::io("could not read", path, e))?
                .len();
            if size == 0 {
                return Err(MoshiError::invalid_file(
                    path,
                    "the tokenizer model is empty",
                ));
            }
            Ok(())
        }
        FileFormat::Opaque => Ok(()),
    }
}

/// Parses a safetensors header and checks every tensor's dtype, shape and offsets against the
/// file. The file is memory-mapped, so a 4 GB model is checked without being read.
/// Returns the tensor names and shapes.
pub fn check_safetensors(path: &Path) -> Result<Vec<(String, Vec<usize>)>> {
    let file = fs::File::open(path).map_err(|e| MoshiError::io("could not open", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| MoshiError::io("could not read", path, e))?
        .len();
    if len < 8 {
        return Err(MoshiError::invalid_file(
            path,
            format!("a safetensors file has at least 8 bytes, this one has {len}"),
        ));
    }
    // SAFETY: the map is read-only and lives only within this function; the cache never
    // modifies a blob in place (new content goes to a new file that is renamed over).
    let map = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|e| MoshiError::io("could not map", path, e))?;
    safetensors_tensors(&map).map_err(|reason| {
        MoshiError::invalid_file(path, format!("bad safetensors header: {reason}"))
    })
}

/// The header checks of `check_safetensors` on the bytes of a whole file: the header length
/// fits in the file (and under the safetensors limit of 100 MB), the header is a JSON object of
/// tensors whose dtypes are known, whose shapes do not overflow and whose data offsets tile the
/// rest of the file exactly. Tensor names are returned as data; nothing uses them as paths.
/// Returns the sorted names and shapes, or why the bytes are not a safetensors file.
pub fn safetensors_tensors(bytes: &[u8]) -> std::result::Result<Vec<(String, Vec<usize>)>, String> {
    let (_, metadata) =
        safetensors::SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let mut tensors: Vec<(String, Vec<usize>)> = metadata
        .tensors()
        .into_iter()
        .map(|(name, info)| (name, info.shape.clone()))
        .collect();
    tensors.sort();
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_kinds() {
        assert_eq!(etag_kind(&"a".repeat(64)), EtagKind::Sha256);
        assert_eq!(etag_kind(&"0".repeat(40)), EtagKind::GitSha1);
        assert_eq!(etag_kind("abc-123"), EtagKind::Opaque);
    }

    #[test]
    fn git_blob_sha1_matches_git() {
        // `printf 'hello\n' | git hash-object --stdin`
        let mut hash = StreamingHash::for_etag(&"0".repeat(40), 6, true);
        hash.update(b"hello\n");
        assert_eq!(
            hash.finish().unwrap(),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }

    #[test]
    fn blob_check_finds_a_flipped_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        fs::write(&path, b"abc").unwrap();
        let etag = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(check_blob(&path, etag).unwrap(), None);
        fs::write(&path, b"abd").unwrap();
        assert!(check_blob(&path, etag).unwrap().is_some());
    }

    #[test]
    fn records_are_invalidated_by_a_changed_blob() {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("blob");
        let record = dir.path().join("record");
        fs::write(&blob, b"abc").unwrap();
        record_verified(&record, &blob, "e").unwrap();
        assert!(is_recorded_verified(&record, &blob, "e"));
        assert!(!is_recorded_verified(&record, &blob, "other"));
        fs::write(&blob, b"abcd").unwrap();
        assert!(!is_recorded_verified(&record, &blob, "e"));
    }

    #[test]
    fn safetensors_checks_reject_lies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let good = {
            let header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
            let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(header);
            bytes.extend_from_slice(&[0u8; 8]);
            bytes
        };
        fs::write(&path, &good).unwrap();
        assert_eq!(
            check_safetensors(&path).unwrap(),
            vec![("w".to_string(), vec![2])]
        );
        // Truncated data.
        fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(matches!(
            check_safetensors(&path),
            Err(MoshiError::InvalidModelFile { .. })
        ));
        // A header length far past the end of the file.
        let mut huge = good.clone();
        huge[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        fs::write(&path, &huge).unwrap();
        assert!(matches!(
            check_safetensors(&path),
            Err(MoshiError::InvalidModelFile { .. })
        ));
        // Not a safetensors file at all.
        fs::write(&path, b"<html>403 Forbidden</html>").unwrap();
        let error = check_safetensors(&path).unwrap_err().to_string();
        assert!(error.contains("m.safetensors"), "{error}");
    }
}
