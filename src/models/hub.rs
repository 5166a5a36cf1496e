//! The HTTP side of the Hugging Face Hub protocol: file metadata (HEAD), ranged downloads (GET),
//! status checks, retries with backoff, and errors that name the repo and file.
//!
//! Written on `reqwest` rather than on the `hf-hub` crate because none of the `hf-hub` versions
//! verifies what it downloads, 1.0 does not even check the HTTP status, and neither retries
//! transient failures or detects stalls (see `docs/hub-protocol.md` in the shared docs).

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use futures::StreamExt;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Client, Response, StatusCode};

use super::config::{KyutaiModelConfig, ResolvedSettings};
use super::progress::FileProgress;
use super::verify::StreamingHash;
use crate::error::{MoshiError, Result, SharedSource};

/// Characters left as is in a path segment (as Python's `quote(..., safe="")` leaves them).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// A file path keeps its slashes.
const PATH: &AsciiSet = &SEGMENT.remove(b'/');

/// What the hub says about one file at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    /// The commit the revision resolved to.
    pub commit: String,
    /// The content hash the cache names the blob by.
    pub etag: String,
    /// Size in bytes.
    pub size: u64,
}

/// A failed attempt: worth retrying or not.
enum Failure {
    Transient {
        reason: String,
        retry_after: Option<Duration>,
        source: Option<SharedSource>,
    },
    Fatal(MoshiError),
}

impl From<MoshiError> for Failure {
    fn from(error: MoshiError) -> Self {
        Failure::Fatal(error)
    }
}

fn transient(reason: impl Into<String>, source: Option<SharedSource>) -> Failure {
    Failure::Transient {
        reason: reason.into(),
        retry_after: None,
        source,
    }
}

/// A hub client bound to one endpoint and token.
#[derive(Clone)]
pub struct HubClient {
    /// For metadata: never follows redirects, so the hub's own headers are read.
    metadata_http: Client,
    /// For bytes: follows redirects (to a CDN); reqwest drops `Authorization` when a redirect
    /// leaves the endpoint's host, so the token is never sent elsewhere.
    download_http: Client,
    endpoint: String,
    token: Option<String>,
    max_attempts: u32,
    retry_backoff: Duration,
    verify: bool,
}

impl HubClient {
    pub fn new(config: &KyutaiModelConfig, settings: &ResolvedSettings) -> Result<Self> {
        let build = |redirects: reqwest::redirect::Policy| {
            Client::builder()
                .user_agent(concat!("fluent-voice-kyutai/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(config.connect_timeout)
                .read_timeout(config.read_timeout)
                .redirect(redirects)
                .build()
                .map_err(|e| {
                    MoshiError::InvalidConfig(format!("could not build the HTTP client: {e}"))
                })
        };
        Ok(HubClient {
            metadata_http: build(reqwest::redirect::Policy::none())?,
            download_http: build(reqwest::redirect::Policy::limited(10))?,
            endpoint: settings.endpoint.clone(),
            token: settings.token.clone(),
            max_attempts: config.max_attempts.max(1),
            retry_backoff: config.retry_backoff,
            verify: config.verify_downloads,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// True when downloads are hashed and compared with their etag.
    pub fn verifies(&self) -> bool {
        self.verify
    }

    /// `{endpoint}/{repo}/resolve/{revision}/{file}`, percent-encoded as Python encodes it.
    pub fn file_url(&self, repo: &str, revision: &str, file: &str) -> String {
        format!(
            "{}/{}/resolve/{}/{}",
            self.endpoint,
            repo,
            utf8_percent_encode(revision, SEGMENT),
            utf8_percent_encode(file, PATH)
        )
    }

    fn auth_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(token) = &self.token
            && let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {token}"))
        {
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        headers
    }

    /// Runs `attempt` until it succeeds, fails for good, or runs out of attempts.
    async fn with_retries<T, F, Fut>(&self, url: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = std::result::Result<T, Failure>>,
    {
        let mut number = 1;
        loop {
            match attempt(number).await {
                Ok(value) => return Ok(value),
                Err(failure) => self.wait_before_retry(url, number, failure).await?,
            }
            number += 1;
        }
    }

    /// After failed attempt `number`: the final error when the failure is fatal or attempts are
    /// used up; otherwise waits (exponential backoff, or as long as the server's `Retry-After`
    /// asks, capped at two minutes) and returns `Ok` for another attempt.
    async fn wait_before_retry(&self, url: &str, number: u32, failure: Failure) -> Result<()> {
        match failure {
            Failure::Fatal(error) => Err(error),
            Failure::Transient { reason, source, .. } if number >= self.max_attempts => {
                Err(MoshiError::Network {
                    url: url.to_string(),
                    attempts: number,
                    reason,
                    source,
                })
            }
            Failure::Transient {
                reason,
                retry_after,
                ..
            } => {
                log::warn!("attempt {number} for {url} failed ({reason}); retrying");
                let backoff = self.retry_backoff.saturating_mul(1 << (number - 1).min(16));
                let wait = retry_after.unwrap_or(backoff).min(Duration::from_secs(120));
                tokio::time::sleep(wait).await;
                Ok(())
            }
        }
    }

    /// Asks the hub for a file's commit, etag and size (HEAD, following only same-host
    /// redirects, as `huggingface_hub` does).
    pub async fn file_metadata(
        &self,
        repo: &str,
        revision: &str,
        file: &str,
    ) -> Result<RemoteFile> {
        let url = self.file_url(repo, revision, file);
        self.with_retries(&url, |_| async {
            let mut target = url.clone();
            for _ in 0..5 {
                let response = self
                    .metadata_http
                    .head(&target)
                    .headers(self.auth_headers())
                    .send()
                    .await
                    .map_err(|e| request_failure(&e))?;
                let status = response.status();
                if status.is_redirection()
                    && let Some(location) = header(response.headers(), "location")
                    && location.starts_with('/')
                {
                    // A renamed repository: same host, follow it.
                    target = format!("{}{}", self.endpoint, location);
                    continue;
                }
                if status.is_success() || status.is_redirection() {
                    return parse_metadata(repo, file, &target, response.headers())
                        .map_err(Failure::Fatal);
                }
                return Err(self.status_failure(repo, revision, file, &target, &response));
            }
            Err(Failure::Fatal(MoshiError::UnexpectedStatus {
                url: url.clone(),
                status: 310,
                message: "too many redirects".into(),
            }))
        })
        .await
    }

    /// Turns an error status into a fatal error or a transient failure.
    fn status_failure(
        &self,
        repo: &str,
        revision: &str,
        file: &str,
        url: &str,
        response: &Response,
    ) -> Failure {
        let status = response.status();
        let code = header(response.headers(), "x-error-code").unwrap_or_default();
        match (status, code.as_str()) {
            (_, "RepoNotFound") => MoshiError::RepoNotFound {
                repo: repo.into(),
                endpoint: self.endpoint.clone(),
            }
            .into(),
            (_, "RevisionNotFound") => MoshiError::RevisionNotFound {
                repo: repo.into(),
                revision: revision.into(),
            }
            .into(),
            (_, "EntryNotFound") => MoshiError::FileNotFound {
                repo: repo.into(),
                revision: revision.into(),
                file: file.into(),
            }
            .into(),
            (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => {
                MoshiError::AuthenticationRequired {
                    repo: repo.into(),
                    status: status.as_u16(),
                    advice: self.auth_advice(repo),
                }
                .into()
            }
            (StatusCode::NOT_FOUND, _) => MoshiError::FileNotFound {
                repo: repo.into(),
                revision: revision.into(),
                file: file.into(),
            }
            .into(),
            (StatusCode::TOO_MANY_REQUESTS, _) => Failure::Transient {
                reason: "the hub is rate limiting requests (HTTP 429)".into(),
                retry_after: header(response.headers(), "retry-after")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs),
                source: None,
            },
            (s, _) if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => {
                transient(format!("the hub answered HTTP {}", s.as_u16()), None)
            }
            (s, _) => MoshiError::UnexpectedStatus {
                url: url.into(),
                status: s.as_u16(),
                message: s.canonical_reason().unwrap_or("unexpected status").into(),
            }
            .into(),
        }
    }

    fn auth_advice(&self, repo: &str) -> String {
        let page = format!("{}/{}", self.endpoint, repo);
        if self.token.is_some() {
            format!(
                "the access token was not accepted; check that it is valid and that your account \
                 has accepted the model's licence on {page}"
            )
        } else {
            format!(
                "the model is gated or private; accept its licence on {page} while logged in, \
                 then set HF_TOKEN to an access token (or KyutaiModelConfig::token)"
            )
        }
    }

    /// Downloads `url` into `partial`, continuing after the bytes it already holds (which the
    /// caller has fed into `hash`). Bytes are written and hashed on a blocking thread while the
    /// next ones arrive, so verification overlaps the transfer. Transient failures resume from
    /// the last byte written.
    #[allow(clippy::too_many_arguments)]
    pub async fn download(
        &self,
        repo: &str,
        file: &str,
        url: &str,
        etag: &str,
        size: u64,
        partial: &Path,
        mut hash: StreamingHash,
        progress: &mut FileProgress,
    ) -> Result<StreamingHash> {
        let mut number = 1;
        loop {
            let (next, outcome) = self
                .download_attempt(repo, file, url, etag, size, partial, hash, progress)
                .await;
            hash = next;
            match outcome {
                Ok(()) => return Ok(hash),
                Err(failure) => self.wait_before_retry(url, number, failure).await?,
            }
            number += 1;
        }
    }

    /// One GET. Returns the hash state (always consistent with the bytes in `partial`) and the
    /// outcome.
    #[allow(clippy::too_many_arguments)]
    async fn download_attempt(
        &self,
        repo: &str,
        file: &str,
        url: &str,
        etag: &str,
        size: u64,
        partial: &Path,
        hash: StreamingHash,
        progress: &mut FileProgress,
    ) -> (StreamingHash, std::result::Result<(), Failure>) {
        let have = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
        if have == size {
            return (hash, Ok(()));
        }
        let mut request = self.download_http.get(url).headers(self.auth_headers());
        if have > 0 {
            request = request
                .header("Range", format!("bytes={have}-"))
                .header("If-Range", format!("\"{etag}\""));
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return (hash, Err(request_failure(&e))),
        };
        let status = response.status();
        let (start, hash) = match status {
            StatusCode::PARTIAL_CONTENT if have > 0 => (have, hash),
            StatusCode::OK => {
                // Full content: whatever was there is replaced, and the hash starts over.
                (0, StreamingHash::for_etag(etag, size, self.verify))
            }
            _ => {
                let failure = self.status_failure(repo, "", file, url, &response);
                return (hash, Err(failure));
            }
        };
        if let Some(length) = response.content_length()
            && start + length != size
        {
            return (
                hash,
                Err(MoshiError::SizeMismatch {
                    repo: repo.into(),
                    file: file.into(),
                    expected: size,
                    actual: start + length,
                }
                .into()),
            );
        }
        progress.set(start);
        self.stream_to_file(repo, file, response, partial, start, size, hash, progress)
            .await
    }

    /// Streams a response body into `partial` at `start`, through a writer-and-hasher thread.
    #[allow(clippy::too_many_arguments)]
    async fn stream_to_file(
        &self,
        repo: &str,
        file: &str,
        response: Response,
        partial: &Path,
        start: u64,
        size: u64,
        hash: StreamingHash,
        progress: &mut FileProgress,
    ) -> (StreamingHash, std::result::Result<(), Failure>) {
        let (sender, receiver) = mpsc::sync_channel::<bytes::Bytes>(32);
        let writer = spawn_writer(partial.to_path_buf(), start, hash, receiver);
        let mut received = start;
        let mut body = response.bytes_stream();
        let mut outcome: std::result::Result<(), Failure> = Ok(());
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(bytes) => {
                    received += bytes.len() as u64;
                    if received > size {
                        outcome = Err(MoshiError::SizeMismatch {
                            repo: repo.into(),
                            file: file.into(),
                            expected: size,
                            actual: received,
                        }
                        .into());
                        break;
                    }
                    if sender.send(bytes).is_err() {
                        break; // the writer failed; its error is reported below
                    }
                    progress.set(received);
                }
                Err(e) => {
                    outcome = Err(transient(
                        format!("the connection broke after {received} of {size} bytes ({e})"),
                        Some(std::sync::Arc::new(e)),
                    ));
                    break;
                }
            }
        }
        drop(sender);
        let (hash, written, write_error) = match writer.await {
            Ok(result) => result,
            Err(join_error) => panic!("the download writer thread panicked: {join_error}"),
        };
        if let Some(error) = write_error {
            return (
                hash,
                Err(self.write_failure(partial, size - written.min(size), error)),
            );
        }
        if outcome.is_ok() && written < size {
            outcome = Err(transient(
                format!("the server closed the connection after {written} of {size} bytes"),
                None,
            ));
        }
        (hash, outcome)
    }

    fn write_failure(&self, partial: &Path, remaining: u64, error: std::io::Error) -> Failure {
        let dir = partial.parent().unwrap_or(Path::new(".")).to_path_buf();
        if error.kind() == std::io::ErrorKind::StorageFull
            || error.kind() == std::io::ErrorKind::QuotaExceeded
        {
            let available = fs4::available_space(&dir).unwrap_or(0);
            return Failure::Fatal(MoshiError::DiskFull {
                dir,
                needed: remaining,
                available,
            });
        }
        Failure::Fatal(MoshiError::io("could not write", partial, error))
    }
}

/// The writer thread: appends each chunk at the right offset and hashes it. Returns the hash, the
/// file length it reached, and the first write error.
fn spawn_writer(
    path: std::path::PathBuf,
    start: u64,
    mut hash: StreamingHash,
    chunks: mpsc::Receiver<bytes::Bytes>,
) -> tokio::task::JoinHandle<(StreamingHash, u64, Option<std::io::Error>)> {
    tokio::task::spawn_blocking(move || {
        use std::io::{Seek, SeekFrom, Write};
        let open = || -> std::io::Result<std::fs::File> {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            file.set_len(start)?;
            file.seek(SeekFrom::Start(start))?;
            Ok(file)
        };
        let mut file = match open() {
            Ok(file) => std::io::BufWriter::with_capacity(1 << 20, file),
            Err(e) => return (hash, start, Some(e)),
        };
        let mut written = start;
        for chunk in chunks {
            if let Err(e) = file.write_all(&chunk) {
                return (hash, written, Some(e));
            }
            hash.update(&chunk);
            written += chunk.len() as u64;
        }
        let flushed = file
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_data());
        match flushed {
            Ok(()) => (hash, written, None),
            Err(e) => (hash, written, Some(e)),
        }
    })
}

fn request_failure(error: &reqwest::Error) -> Failure {
    let kind = if error.is_connect() {
        "could not connect"
    } else if error.is_timeout() {
        "timed out"
    } else {
        "request failed"
    };
    transient(format!("{kind}: {error}"), None)
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name)?.to_str().ok().map(str::to_string)
}

/// `"abc"`, `W/"abc"` -> `abc`.
fn normalize_etag(raw: &str) -> String {
    raw.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

fn parse_metadata(repo: &str, file: &str, url: &str, headers: &HeaderMap) -> Result<RemoteFile> {
    let missing = |what: &str| MoshiError::UnexpectedStatus {
        url: url.into(),
        status: 200,
        message: format!(
            "the answer for `{file}` of `{repo}` has no {what} header; the endpoint does not \
             speak the Hugging Face Hub protocol (check HF_ENDPOINT)"
        ),
    };
    let commit = header(headers, "x-repo-commit").ok_or_else(|| missing("X-Repo-Commit"))?;
    let etag = header(headers, "x-linked-etag")
        .or_else(|| header(headers, "etag"))
        .map(|e| normalize_etag(&e))
        .filter(|e| !e.is_empty())
        .ok_or_else(|| missing("ETag"))?;
    let size = header(headers, "x-linked-size")
        .or_else(|| header(headers, "content-length"))
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| missing("Content-Length"))?;
    if etag.contains('/') || etag.contains("..") {
        return Err(missing("usable ETag"));
    }
    Ok(RemoteFile {
        commit: commit.trim().to_ascii_lowercase(),
        etag,
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_encoded_like_huggingface_hub() {
        let settings = KyutaiModelConfig::default()
            .endpoint("http://127.0.0.1:1")
            .resolve(&std::collections::BTreeMap::<&str, &str>::new());
        let client = HubClient::new(&KyutaiModelConfig::default(), &settings).unwrap();
        assert_eq!(
            client.file_url(
                "kyutai/tts-voices",
                "refs/pr/1",
                "expresso/a b@240.safetensors"
            ),
            "http://127.0.0.1:1/kyutai/tts-voices/resolve/refs%2Fpr%2F1/expresso/a%20b%40240.safetensors"
        );
    }

    #[test]
    fn etags_lose_quotes_and_weak_markers() {
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(normalize_etag("\"abc\""), "abc");
    }
}
