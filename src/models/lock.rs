//! The cross-process download lock: `<cache>/.locks/models--ORG--NAME/<etag>.lock`, the same file
//! Python's `huggingface_hub` locks, so the two never download one blob at the same time.
//!
//! It is an OS advisory lock (`flock` on Unix, through `std::fs::File::try_lock`): the OS releases
//! it when the holder dies, so a crashed process cannot block anyone. Locks on separate opens of
//! one file also exclude each other within a process, so tasks of one process are covered too.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::time::Duration;

use super::cache::create_parent;
use crate::error::{MoshiError, Result};

/// Held while a blob is being downloaded; released on drop.
pub struct DownloadLock {
    _file: File,
}

/// Takes the lock at `path`, polling while someone else holds it; `on_wait` runs once, when the
/// first try finds the lock taken.
pub async fn acquire(path: &Path, on_wait: impl FnOnce()) -> Result<DownloadLock> {
    create_parent(path)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| MoshiError::io("could not open the lock file", path, e))?;
    // Group-writable, as Python's lock files are, so that every user of a shared cache can take
    // it. Best effort: another user's lock file cannot be changed, and need not be.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = file.set_permissions(std::fs::Permissions::from_mode(0o664));
    }
    let mut on_wait = Some(on_wait);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(DownloadLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => {
                if let Some(notify) = on_wait.take() {
                    notify();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(MoshiError::io("could not lock", path, e));
            }
        }
    }
}
