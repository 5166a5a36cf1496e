//! Download progress: indicatif bars on a terminal, events for an application's callback.

use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A callback that receives download progress events (for applications that draw their own UI).
pub type ProgressCallback = Arc<dyn Fn(&ProgressEvent) + Send + Sync>;

/// What a progress callback receives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProgressEvent {
    /// A file download starts (or resumes at `already`).
    Started {
        /// The repository, `org/name`.
        repo: String,
        /// The file's path in the repository.
        file: String,
        /// The file's size.
        total_bytes: u64,
        /// Bytes a previous, interrupted download already holds.
        already: u64,
    },
    /// More bytes arrived.
    Advanced {
        /// The repository, `org/name`.
        repo: String,
        /// The file's path in the repository.
        file: String,
        /// Bytes of the file present so far.
        bytes_done: u64,
        /// The file's size.
        total_bytes: u64,
    },
    /// The file is downloaded and verified.
    Finished {
        /// The repository, `org/name`.
        repo: String,
        /// The file's path in the repository.
        file: String,
        /// The file's size.
        bytes: u64,
    },
    /// The file was found verified in the cache: nothing to download.
    CacheHit {
        /// The repository, `org/name`.
        repo: String,
        /// The file's path in the repository.
        file: String,
    },
    /// Another process is downloading the same file; waiting for it.
    Waiting {
        /// The repository, `org/name`.
        repo: String,
        /// The file's path in the repository.
        file: String,
    },
}

/// Fans progress out to the bars (when shown) and the callback (when set).
#[derive(Clone)]
pub struct Progress {
    bars: Option<MultiProgress>,
    callback: Option<ProgressCallback>,
}

impl Progress {
    pub fn new(show_bars: bool, callback: Option<ProgressCallback>) -> Self {
        let bars = show_bars.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress { bars, callback }
    }

    fn emit(&self, event: ProgressEvent) {
        if let Some(callback) = &self.callback {
            callback(&event);
        }
    }

    pub fn cache_hit(&self, repo: &str, file: &str) {
        self.emit(ProgressEvent::CacheHit {
            repo: repo.into(),
            file: file.into(),
        });
    }

    pub fn waiting(&self, repo: &str, file: &str) {
        if let Some(bars) = &self.bars {
            let _ = bars.println(format!("waiting for another process to download {file}"));
        }
        self.emit(ProgressEvent::Waiting {
            repo: repo.into(),
            file: file.into(),
        });
    }

    /// Starts tracking one file; the returned handle reports bytes and the end.
    pub fn start(&self, repo: &str, file: &str, total: u64, already: u64) -> FileProgress {
        let bar = self.bars.as_ref().map(|bars| {
            let bar = bars.add(ProgressBar::new(total));
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            bar.set_message(file.rsplit('/').next().unwrap_or(file).to_string());
            bar.set_position(already);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        self.emit(ProgressEvent::Started {
            repo: repo.into(),
            file: file.into(),
            total_bytes: total,
            already,
        });
        FileProgress {
            progress: self.clone(),
            bar,
            repo: Arc::from(repo),
            file: Arc::from(file),
            total,
            done: already,
            last_reported: already,
        }
    }
}

/// Progress of one file download.
pub struct FileProgress {
    progress: Progress,
    bar: Option<ProgressBar>,
    repo: Arc<str>,
    file: Arc<str>,
    total: u64,
    done: u64,
    last_reported: u64,
}

/// Callbacks hear of progress at most once per this many bytes (and at the end), so that a
/// multi-gigabyte download does not call them a million times.
const CALLBACK_STEP: u64 = 1 << 20;

impl FileProgress {
    /// Moves the position to `bytes_done` (it may go back when a download restarts).
    pub fn set(&mut self, bytes_done: u64) {
        self.done = bytes_done;
        if let Some(bar) = &self.bar {
            bar.set_position(bytes_done);
        }
        let step_reached = bytes_done.abs_diff(self.last_reported) >= CALLBACK_STEP;
        if self.progress.callback.is_some() && (step_reached || bytes_done == self.total) {
            self.last_reported = bytes_done;
            self.progress.emit(ProgressEvent::Advanced {
                repo: self.repo.to_string(),
                file: self.file.to_string(),
                bytes_done,
                total_bytes: self.total,
            });
        }
    }

    pub fn finish(self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        self.progress.emit(ProgressEvent::Finished {
            repo: self.repo.to_string(),
            file: self.file.to_string(),
            bytes: self.done,
        });
    }
}

impl Drop for FileProgress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar
            && !bar.is_finished()
        {
            bar.abandon();
        }
    }
}
