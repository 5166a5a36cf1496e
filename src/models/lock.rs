//! The cross-process download lock: `<cache>/.locks/models--ORG--NAME/<etag>.lock`, the same file
//! Python's `huggingface_hub` locks, so the two never download one blob at the same time.
//!
//! It is an OS advisory lock (`flock` on Unix, through `std::fs::File::try_lock`): the OS releases
//! it when the holder dies, even by SIGKILL, so a crashed process never blocks anyone. Locks on
//! separate opens of one file also exclude each other within a process, so tasks of one process
//! are covered too.
//!
//! Two cases the OS does not settle, and what we do:
//! - **A holder that is alive but stuck** (a hung process, a suspended laptop, a client without
//!   stall detection): waiting forever is what Python does, and it hangs every later run. Waiting
//!   a fixed time, as `hf-hub` does, fails next to a slow but healthy download of a 4 GB file. So
//!   the waiter watches the holder's partial file (`<etag>.incomplete`, the name both clients
//!   write) and gives up only when it has not changed for `stale_after`, with an error that names
//!   the lock file. It does not break the lock: a stuck process may wake up and write again, and
//!   two writers on one partial file are worse than a clear error.
//! - **A filesystem without `flock`** (some network and FUSE filesystems answer `ENOLCK` or
//!   `EOPNOTSUPP`): failing would make such caches unusable, so we go on unlocked with a warning,
//!   as `huggingface_hub` does. Integrity does not depend on the lock: every download is hashed
//!   against its etag before it is renamed into place.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use super::cache::create_parent;
use crate::error::{MoshiError, Result};

/// How often a waiter tries the lock again.
const POLL: Duration = Duration::from_millis(100);

/// Held while a blob is being downloaded; released on drop. Holds no file on a filesystem
/// without locks.
pub struct DownloadLock {
    _file: Option<File>,
}

/// What a waiter needs to tell a working holder from a stuck one.
pub struct Staleness<'a> {
    /// The holder's partial file: any change of its size or modification time is progress.
    pub partial: &'a Path,
    /// The time without progress after which the holder is taken to be stuck.
    pub stale_after: Duration,
    /// For the error message.
    pub repo: &'a str,
    pub file: &'a str,
}

/// Takes the lock at `path`, polling while someone else holds it; `on_wait` runs once, when the
/// first try finds the lock taken. Gives up with [`MoshiError::DownloadLockStale`] when the
/// holder's partial file shows no progress for `staleness.stale_after`.
pub async fn acquire(
    path: &Path,
    staleness: Staleness<'_>,
    on_wait: impl FnOnce(),
) -> Result<DownloadLock> {
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
    let mut last_seen = progress_mark(staleness.partial);
    let mut last_progress = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(DownloadLock { _file: Some(file) }),
            Err(std::fs::TryLockError::WouldBlock) => {
                if let Some(notify) = on_wait.take() {
                    notify();
                }
                let mark = progress_mark(staleness.partial);
                if mark != last_seen {
                    last_seen = mark;
                    last_progress = Instant::now();
                } else if last_progress.elapsed() >= staleness.stale_after {
                    return Err(MoshiError::DownloadLockStale {
                        repo: staleness.repo.into(),
                        file: staleness.file.into(),
                        lock: path.to_path_buf(),
                        waited_secs: last_progress.elapsed().as_secs(),
                    });
                }
                tokio::time::sleep(POLL).await;
            }
            Err(std::fs::TryLockError::Error(e)) if locks_unsupported(&e) => {
                log::warn!(
                    "the filesystem of {} does not support file locks ({e}); downloading without \
                     the cross-process lock (the download is still verified)",
                    path.display()
                );
                return Ok(DownloadLock { _file: None });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(MoshiError::io("could not lock", path, e));
            }
        }
    }
}

/// Takes the lock at `path` if it is free right now (`None` when someone holds it, or when the
/// lock file cannot be opened).
pub fn try_acquire(path: &Path) -> Option<DownloadLock> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .ok()?;
    file.try_lock().ok()?;
    Some(DownloadLock { _file: Some(file) })
}

/// The size and modification time of the partial file (`None` while there is none).
fn progress_mark(partial: &Path) -> Option<(u64, SystemTime)> {
    let meta = std::fs::metadata(partial).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

/// True for the errors of a filesystem that has no advisory locks at all.
fn locks_unsupported(error: &std::io::Error) -> bool {
    if error.kind() == std::io::ErrorKind::Unsupported {
        return true;
    }
    #[cfg(unix)]
    {
        // ENOLCK (37 on Linux), EOPNOTSUPP/ENOTSUP (95), ENOSYS (38).
        const LINUX_UNSUPPORTED: [i32; 3] = [37, 95, 38];
        if cfg!(target_os = "linux")
            && error
                .raw_os_error()
                .is_some_and(|c| LINUX_UNSUPPORTED.contains(&c))
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staleness<'a>(partial: &'a Path, stale_after: Duration) -> Staleness<'a> {
        Staleness {
            partial,
            stale_after,
            repo: "o/r",
            file: "f.bin",
        }
    }

    #[test]
    fn filesystems_without_locks_are_recognized() {
        assert!(locks_unsupported(&std::io::Error::from_raw_os_error(37)));
        assert!(locks_unsupported(&std::io::Error::from_raw_os_error(95)));
        assert!(locks_unsupported(&std::io::ErrorKind::Unsupported.into()));
        // Permission problems are real errors, not a reason to go on unlocked.
        assert!(!locks_unsupported(&std::io::Error::from_raw_os_error(13)));
    }

    #[tokio::test]
    async fn a_holder_without_progress_is_reported_and_one_with_progress_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let lock_path = dir.path().join("e.lock");
        let partial = dir.path().join("e.incomplete");
        let holder = acquire(
            &lock_path,
            staleness(&partial, Duration::from_secs(60)),
            || {},
        )
        .await
        .unwrap();

        // Stuck holder: a clear error after the bounded wait, naming the lock file.
        let started = Instant::now();
        let mut waited = false;
        let error = acquire(
            &lock_path,
            staleness(&partial, Duration::from_millis(400)),
            || waited = true,
        )
        .await
        .err()
        .expect("a stuck holder is reported");
        assert!(waited);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            matches!(&error, MoshiError::DownloadLockStale { lock, .. } if lock == &lock_path),
            "{error:?}"
        );
        assert!(error.to_string().contains("e.lock"), "{error}");

        // Working holder: its partial file grows every 100 ms for 1.2 s, longer than the stale
        // time of 400 ms, and then it lets go: the waiter gets the lock instead of an error.
        let writer = {
            let partial = partial.clone();
            tokio::spawn(async move {
                for i in 0..12u8 {
                    std::fs::write(&partial, vec![i; usize::from(i) + 1]).unwrap();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                drop(holder);
            })
        };
        acquire(
            &lock_path,
            staleness(&partial, Duration::from_millis(400)),
            || {},
        )
        .await
        .expect("a holder that makes progress is waited for");
        writer.await.unwrap();
    }
}
