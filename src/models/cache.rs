//! The Hugging Face cache layout, shared with Python `huggingface_hub` in both directions.
//!
//! ```text
//! <cache>/models--ORG--NAME/blobs/<etag>                 the bytes
//!                          /snapshots/<commit>/<path>    relative symlink to ../../blobs/<etag>
//!                          /refs/<revision>              the commit a branch or tag points to
//!                          /.no_exist/<commit>/<path>    the file does not exist at that commit
//! <cache>/.locks/models--ORG--NAME/<etag>.lock           cross-process download lock
//! ```
//!
//! Our only addition is `models--ORG--NAME/.kyutai-verified/<etag>`, a small record saying that
//! the blob was hashed and found good at a given size and modification time. Python's cache
//! scanner ignores it; it makes a later cache hit cost a `stat` instead of a re-hash. The same
//! folder holds `partials/<etag>`, the repository path of a download in progress.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{MoshiError, Result};

/// The text of `CACHEDIR.TAG`, byte for byte as `huggingface_hub` writes it.
const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by huggingface_hub.\n\
# For information about cache directory tags, see:\n\
#\thttps://bford.info/cachedir/\n";

/// The folder name `huggingface_hub` gives a model repository.
pub fn repo_folder_name(repo: &str) -> String {
    format!("models--{}", repo.replace('/', "--"))
}

/// True for a full 40-character commit hash (which needs no `refs/` lookup).
pub fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

/// One hub cache directory.
#[derive(Debug, Clone)]
pub struct HubCache {
    root: PathBuf,
}

impl HubCache {
    /// The cache rooted at `root` (the `hub` folder).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        HubCache { root: root.into() }
    }

    /// The cache's root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes `<cache>/CACHEDIR.TAG` if absent, as `huggingface_hub` does, so that backup tools
    /// skip the cache (the Cache Directory Tagging standard, https://bford.info/cachedir/).
    pub fn write_cachedir_tag(&self) -> Result<()> {
        let path = self.root.join("CACHEDIR.TAG");
        if path.exists() {
            return Ok(());
        }
        write_atomically(&path, CACHEDIR_TAG.as_bytes())
    }

    /// `models--ORG--NAME`: everything of one repository.
    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.root.join(repo_folder_name(repo))
    }

    /// `blobs/<etag>`: the bytes of one file version.
    pub fn blob_path(&self, repo: &str, etag: &str) -> PathBuf {
        self.repo_dir(repo).join("blobs").join(etag)
    }

    /// Where a partial download lives: the same name Python uses, so either client resumes it.
    pub fn incomplete_path(&self, repo: &str, etag: &str) -> PathBuf {
        self.repo_dir(repo)
            .join("blobs")
            .join(format!("{etag}.incomplete"))
    }

    /// `snapshots/<commit>/<file>`: the link to a file at a commit.
    pub fn snapshot_path(&self, repo: &str, commit: &str, file: &str) -> PathBuf {
        self.repo_dir(repo)
            .join("snapshots")
            .join(commit)
            .join(file)
    }

    /// `.locks/models--ORG--NAME/<etag>.lock`, where Python locks it too.
    pub fn lock_path(&self, repo: &str, etag: &str) -> PathBuf {
        self.root
            .join(".locks")
            .join(repo_folder_name(repo))
            .join(format!("{etag}.lock"))
    }

    /// Where we note which file a partial download (`blobs/<etag>.incomplete`) belongs to, so
    /// that a partial made useless by a new version of that file can be deleted.
    pub fn partial_record_path(&self, repo: &str, etag: &str) -> PathBuf {
        self.partial_records_dir(repo).join(etag)
    }

    /// Inside our private folder (next to the verification records, whose names are etags and
    /// so never `partials`), which Python's cache tools ignore.
    pub fn partial_records_dir(&self, repo: &str) -> PathBuf {
        self.repo_dir(repo)
            .join(".kyutai-verified")
            .join("partials")
    }

    /// Where this crate records that a blob was verified (size and mtime at the time).
    pub fn verified_record_path(&self, repo: &str, etag: &str) -> PathBuf {
        self.repo_dir(repo).join(".kyutai-verified").join(etag)
    }

    fn ref_path(&self, repo: &str, revision: &str) -> PathBuf {
        self.repo_dir(repo).join("refs").join(revision)
    }

    fn no_exist_path(&self, repo: &str, commit: &str, file: &str) -> PathBuf {
        self.repo_dir(repo)
            .join(".no_exist")
            .join(commit)
            .join(file)
    }

    /// The commit a revision resolves to in the cache: the revision itself for a commit hash,
    /// else the content of `refs/<revision>`.
    pub fn resolve_revision(&self, repo: &str, revision: &str) -> Option<String> {
        if is_commit_hash(revision) {
            return Some(revision.to_ascii_lowercase());
        }
        let text = fs::read_to_string(self.ref_path(repo, revision)).ok()?;
        let commit = text.trim();
        is_commit_hash(commit).then(|| commit.to_string())
    }

    /// Records that `revision` points to `commit` (atomically: temporary file, then rename).
    /// Nothing is written when the revision is the commit itself, as in Python.
    pub fn write_ref(&self, repo: &str, revision: &str, commit: &str) -> Result<()> {
        if revision == commit {
            return Ok(());
        }
        let path = self.ref_path(repo, revision);
        if fs::read_to_string(&path).is_ok_and(|c| c.trim() == commit) {
            return Ok(());
        }
        write_atomically(&path, commit.as_bytes())
    }

    /// The snapshot path of a cached file, if it is there and its blob exists.
    pub fn cached_file(&self, repo: &str, commit: &str, file: &str) -> Option<PathBuf> {
        let path = self.snapshot_path(repo, commit, file);
        // `exists` follows the symlink: a dangling link counts as absent.
        path.exists().then_some(path)
    }

    /// The blob a snapshot entry points to (the entry itself when it is a plain file).
    pub fn blob_of(&self, snapshot_entry: &Path) -> Option<PathBuf> {
        fs::canonicalize(snapshot_entry).ok()
    }

    /// The etag of a cached snapshot entry: the name of the blob its symlink points to.
    pub fn etag_of(&self, snapshot_entry: &Path) -> Option<String> {
        let target = fs::read_link(snapshot_entry).ok()?;
        target.file_name()?.to_str().map(str::to_string)
    }

    /// True when a previous lookup found the file absent at this commit.
    pub fn is_known_missing(&self, repo: &str, commit: &str, file: &str) -> bool {
        self.no_exist_path(repo, commit, file).exists()
    }

    /// Remembers that the file does not exist at this commit (Python's `.no_exist` marker).
    pub fn mark_missing(&self, repo: &str, commit: &str, file: &str) -> Result<()> {
        let path = self.no_exist_path(repo, commit, file);
        create_parent(&path)?;
        fs::File::create(&path).map_err(|e| MoshiError::io("could not create", &path, e))?;
        Ok(())
    }

    /// Points `snapshots/<commit>/<file>` at `blobs/<etag>` with a relative symlink, as Python
    /// does (`os.path.relpath(blob, dirname(snapshot))`), replacing whatever was there.
    pub fn link_snapshot(
        &self,
        repo: &str,
        commit: &str,
        file: &str,
        etag: &str,
    ) -> Result<PathBuf> {
        let link = self.snapshot_path(repo, commit, file);
        create_parent(&link)?;
        let depth = Path::new(file).components().count() + 1; // + the commit folder
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        if fs::read_link(&link).is_ok_and(|t| t == target) {
            return Ok(link);
        }
        // Replace atomically: make the link under a temporary name, then rename over.
        let temporary = link.with_file_name(format!(
            ".{}.tmp-{}",
            link.file_name().and_then(|n| n.to_str()).unwrap_or("link"),
            std::process::id()
        ));
        let _ = fs::remove_file(&temporary);
        symlink(&target, &temporary)
            .map_err(|e| MoshiError::io("could not create the symlink", &temporary, e))?;
        fs::rename(&temporary, &link).map_err(|e| MoshiError::io("could not create", &link, e))?;
        Ok(link)
    }

    /// The repositories in the cache, as `org/name`.
    pub fn repos(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut repos: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter_map(|name| {
                name.strip_prefix("models--")
                    .map(|r| r.replacen("--", "/", 1))
            })
            .collect();
        repos.sort();
        repos
    }

    /// The snapshots of a repository: `(commit, files)`, files as paths relative to the snapshot.
    pub fn snapshots(&self, repo: &str) -> Vec<(String, Vec<String>)> {
        let dir = self.repo_dir(repo).join("snapshots");
        let Ok(entries) = fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut snapshots: Vec<(String, Vec<String>)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let commit = e.file_name().to_str()?.to_string();
                let mut files = Vec::new();
                collect_files(&e.path(), "", &mut files);
                files.sort();
                Some((commit, files))
            })
            .collect();
        snapshots.sort();
        snapshots
    }

    /// The refs of a repository: `(revision, commit)`.
    pub fn refs(&self, repo: &str) -> Vec<(String, String)> {
        let dir = self.repo_dir(repo).join("refs");
        let mut names = Vec::new();
        collect_files(&dir, "", &mut names);
        let mut refs: Vec<(String, String)> = names
            .into_iter()
            .filter_map(|name| {
                let commit = fs::read_to_string(dir.join(&name)).ok()?;
                Some((name, commit.trim().to_string()))
            })
            .collect();
        refs.sort();
        refs
    }
}

/// Lists files (and symlinks, dangling or not) under `dir`, as `/`-separated relative paths.
fn collect_files(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let relative = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        match entry.file_type() {
            Ok(t) if t.is_dir() => collect_files(&entry.path(), &relative, out),
            Ok(_) => out.push(relative),
            Err(_) => {}
        }
    }
}

pub(crate) fn create_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| MoshiError::io("could not create", parent, e))?;
    }
    Ok(())
}

/// Writes a small file so that readers see the old content or the new, never a mix. The file
/// gets the permissions a plain `open` would give (0666 less the umask), as Python's files do,
/// so that other users of a shared cache can read it.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    create_parent(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(0o666));
    }
    let mut temporary = builder
        .tempfile_in(dir)
        .map_err(|e| MoshiError::io("could not create a temporary file in", dir, e))?;
    temporary
        .write_all(bytes)
        .map_err(|e| MoshiError::io("could not write", temporary.path().to_path_buf(), e))?;
    temporary
        .persist(path)
        .map_err(|e| MoshiError::io("could not write", path, e.error))?;
    Ok(())
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(windows)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::windows::fs::symlink_file(target, link)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_huggingface_hub() {
        let cache = HubCache::new("/c");
        assert_eq!(
            repo_folder_name("kyutai/tts-1.6b-en_fr"),
            "models--kyutai--tts-1.6b-en_fr"
        );
        assert_eq!(
            cache.lock_path("a/b", "e1"),
            PathBuf::from("/c/.locks/models--a--b/e1.lock")
        );
        assert_eq!(
            cache.incomplete_path("a/b", "e1"),
            PathBuf::from("/c/models--a--b/blobs/e1.incomplete")
        );
    }

    #[test]
    fn nested_files_get_relative_links_to_the_blob() {
        let dir = tempfile::tempdir().unwrap();
        let cache = HubCache::new(dir.path());
        let commit = "a".repeat(40);
        fs::create_dir_all(cache.repo_dir("o/r").join("blobs")).unwrap();
        fs::write(cache.blob_path("o/r", "etag1"), b"hello").unwrap();
        let link = cache
            .link_snapshot("o/r", &commit, "voices/x/y.safetensors", "etag1")
            .unwrap();
        assert_eq!(
            fs::read_link(&link).unwrap(),
            PathBuf::from("../../../../blobs/etag1")
        );
        assert_eq!(fs::read(&link).unwrap(), b"hello");
        assert_eq!(cache.etag_of(&link).as_deref(), Some("etag1"));
        assert_eq!(
            cache.snapshots("o/r"),
            vec![(commit, vec!["voices/x/y.safetensors".to_string()])]
        );
    }

    #[test]
    fn refs_are_written_once_and_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let cache = HubCache::new(dir.path());
        let commit = "b".repeat(40);
        assert_eq!(cache.resolve_revision("o/r", "main"), None);
        cache.write_ref("o/r", "main", &commit).unwrap();
        assert_eq!(
            cache.resolve_revision("o/r", "main").as_deref(),
            Some(commit.as_str())
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("models--o--r/refs/main")).unwrap(),
            commit
        );
        // A commit hash resolves to itself and writes no ref.
        cache.write_ref("o/r", &commit, &commit).unwrap();
        assert_eq!(
            cache.refs("o/r"),
            vec![("main".to_string(), commit.clone())]
        );
        assert_eq!(cache.resolve_revision("o/r", &commit), Some(commit));
    }

    #[test]
    fn dangling_snapshot_links_count_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let cache = HubCache::new(dir.path());
        let commit = "c".repeat(40);
        cache
            .link_snapshot("o/r", &commit, "f.bin", "missing")
            .unwrap();
        assert!(cache.cached_file("o/r", &commit, "f.bin").is_none());
    }
}
