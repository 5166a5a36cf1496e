//! The HTTP side of the Hugging Face Hub protocol: file metadata (HEAD), ranged downloads (GET),
//! status checks, retries with backoff, and errors that name the repo and file.
//!
//! Written on `reqwest` rather than on the `hf-hub` crate because none of the `hf-hub` versions
//! verifies what it downloads, 1.0 does not even check the HTTP status, and neither retries
//! transient failures or detects stalls. The protocol this module speaks, and what the other
//! clients get wrong, is written down in `docs/hub-protocol.md`.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
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

/// Redirects followed when asking for a file's metadata (renamed repositories).
const MAX_REDIRECTS: usize = 5;

/// One file to download: where from, where to, and what it must be.
pub(crate) struct Transfer<'a> {
    pub repo: &'a str,
    /// The commit the file is fetched at (for error messages; the URL names it too).
    pub revision: &'a str,
    pub file: &'a str,
    pub url: &'a str,
    pub etag: &'a str,
    pub size: u64,
    /// The `.incomplete` file the bytes go to.
    pub partial: &'a Path,
}

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

    /// Runs `attempt` on `state` until it succeeds, fails for good, or runs out of attempts.
    /// The attempts share `state` (a download's hash and progress carry over to the next).
    async fn with_retries<S: Send, T>(
        &self,
        url: &str,
        state: &mut S,
        mut attempt: impl for<'s> FnMut(&'s mut S) -> BoxFuture<'s, std::result::Result<T, Failure>>,
    ) -> Result<T> {
        let mut number = 1;
        loop {
            match attempt(state).await {
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
        let mut ask = (self, repo, revision, file, url.as_str());
        self.with_retries(&url, &mut ask, |&mut (hub, repo, revision, file, url)| {
            hub.metadata_attempt(repo, revision, file, url).boxed()
        })
        .await
    }

    /// One HEAD (and the same-host redirects of a renamed repository).
    async fn metadata_attempt(
        &self,
        repo: &str,
        revision: &str,
        file: &str,
        url: &str,
    ) -> std::result::Result<RemoteFile, Failure> {
        let mut target = url.to_string();
        let mut last_status = StatusCode::FOUND;
        for _ in 0..MAX_REDIRECTS {
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
                last_status = status;
                continue;
            }
            if status.is_success() || status.is_redirection() {
                return parse_metadata(repo, file, &target, response.headers())
                    .map_err(Failure::Fatal);
            }
            return Err(self.status_failure(repo, revision, file, &target, &response));
        }
        Err(Failure::Fatal(MoshiError::UnexpectedStatus {
            url: url.to_string(),
            status: last_status.as_u16(),
            message: format!("the hub redirected more than {MAX_REDIRECTS} times"),
        }))
    }

    /// Every file path of a repository at `revision`, from the tree API
    /// (`/api/models/{repo}/tree/{revision}?recursive=true`), following the `Link: rel="next"`
    /// pages as `huggingface_hub`'s `list_repo_tree` does. Pages are followed on the endpoint's
    /// own host only, so the token never goes elsewhere.
    pub(crate) async fn list_files(&self, repo: &str, revision: &str) -> Result<Vec<String>> {
        let mut url = Some(format!(
            "{}/api/models/{repo}/tree/{}?recursive=true",
            self.endpoint,
            utf8_percent_encode(revision, SEGMENT)
        ));
        let mut files = Vec::new();
        while let Some(page) = url.take() {
            if !page.starts_with(&format!("{}/", self.endpoint)) {
                return Err(MoshiError::UnexpectedStatus {
                    url: page,
                    status: 200,
                    message: "the next page of the file list is on another host".into(),
                });
            }
            let mut ask = (self, repo, revision, page.as_str());
            let (entries, next) = self
                .with_retries(&page, &mut ask, |&mut (hub, repo, revision, url)| {
                    hub.tree_page(repo, revision, url).boxed()
                })
                .await?;
            files.extend(entries);
            url = next;
        }
        Ok(files)
    }

    /// One page of the tree API: the file paths on it, and the next page's URL.
    async fn tree_page(
        &self,
        repo: &str,
        revision: &str,
        url: &str,
    ) -> std::result::Result<(Vec<String>, Option<String>), Failure> {
        #[derive(serde::Deserialize)]
        struct Entry {
            #[serde(rename = "type")]
            kind: String,
            path: String,
        }
        let response = self
            .metadata_http
            .get(url)
            .headers(self.auth_headers())
            .send()
            .await
            .map_err(|e| request_failure(&e))?;
        if !response.status().is_success() {
            return Err(self.status_failure(repo, revision, "", url, &response));
        }
        let next = header(response.headers(), "link").and_then(|link| next_link(&link));
        let body = response.bytes().await.map_err(|e| request_failure(&e))?;
        let entries: Vec<Entry> = serde_json::from_slice(&body).map_err(|e| {
            Failure::Fatal(MoshiError::UnexpectedStatus {
                url: url.into(),
                status: 200,
                message: format!("the file list is not the Hub's JSON ({e})"),
            })
        })?;
        let files = entries
            .into_iter()
            .filter(|e| e.kind == "file")
            .map(|e| e.path)
            .collect();
        Ok((files, next))
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

    /// Downloads the transfer's URL into its partial file, continuing after the bytes it already
    /// holds (which the caller has fed into `hash`). Bytes are written and hashed on a blocking
    /// thread while the next ones arrive, so verification overlaps the transfer. Transient
    /// failures resume from the last byte written. Returns the hash of the whole file.
    pub(crate) async fn download(
        &self,
        transfer: &Transfer<'_>,
        hash: StreamingHash,
        progress: &mut FileProgress,
    ) -> Result<StreamingHash> {
        let mut state = (self, transfer, hash, progress);
        self.with_retries(transfer.url, &mut state, |(hub, t, hash, progress)| {
            hub.download_attempt(t, hash, progress).boxed()
        })
        .await?;
        Ok(state.2)
    }

    /// One GET. `hash` always stays consistent with the bytes in the partial file.
    async fn download_attempt(
        &self,
        t: &Transfer<'_>,
        hash: &mut StreamingHash,
        progress: &mut FileProgress,
    ) -> std::result::Result<(), Failure> {
        let have = std::fs::metadata(t.partial).map(|m| m.len()).unwrap_or(0);
        if have == t.size {
            return Ok(());
        }
        let mut request = self.download_http.get(t.url).headers(self.auth_headers());
        if have > 0 {
            request = request
                .header("Range", format!("bytes={have}-"))
                .header("If-Range", format!("\"{}\"", t.etag));
        }
        let response = request.send().await.map_err(|e| request_failure(&e))?;
        let start = match response.status() {
            StatusCode::PARTIAL_CONTENT if have > 0 => have,
            StatusCode::OK => {
                // Full content: whatever was there is replaced, and the hash starts over.
                *hash = StreamingHash::for_etag(t.etag, t.size, self.verify);
                0
            }
            _ => return Err(self.status_failure(t.repo, t.revision, t.file, t.url, &response)),
        };
        if let Some(length) = response.content_length()
            && start + length != t.size
        {
            return Err(size_mismatch(t, start + length));
        }
        progress.set(start);
        self.stream_to_file(t, response, start, hash, progress)
            .await
    }

    /// Streams a response body into the partial file at `start`, through a writer-and-hasher
    /// thread.
    async fn stream_to_file(
        &self,
        t: &Transfer<'_>,
        response: Response,
        start: u64,
        hash: &mut StreamingHash,
        progress: &mut FileProgress,
    ) -> std::result::Result<(), Failure> {
        let (sender, receiver) = mpsc::sync_channel::<bytes::Bytes>(32);
        // The writer thread owns the hash while it runs; a disabled one stands in meanwhile.
        let lent = std::mem::replace(hash, StreamingHash::for_etag(t.etag, t.size, false));
        let writer = spawn_writer(t.partial.to_path_buf(), start, lent, receiver);
        let mut received = start;
        let mut body = response.bytes_stream();
        let mut outcome: std::result::Result<(), Failure> = Ok(());
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(bytes) => {
                    received += bytes.len() as u64;
                    if received > t.size {
                        outcome = Err(size_mismatch(t, received));
                        break;
                    }
                    if sender.send(bytes).is_err() {
                        break; // the writer failed; its error is reported below
                    }
                    progress.set(received);
                }
                Err(e) => {
                    outcome = Err(transient(
                        format!(
                            "the connection broke after {received} of {} bytes ({e})",
                            t.size
                        ),
                        Some(std::sync::Arc::new(e)),
                    ));
                    break;
                }
            }
        }
        drop(sender);
        let (returned, written, write_error) = writer.await.map_err(|join_error| {
            Failure::Fatal(MoshiError::io(
                "could not write",
                t.partial,
                std::io::Error::other(join_error),
            ))
        })?;
        *hash = returned;
        if let Some(error) = write_error {
            return Err(self.write_failure(t.partial, t.size - written.min(t.size), error));
        }
        if outcome.is_ok() && written < t.size {
            outcome = Err(transient(
                format!(
                    "the server closed the connection after {written} of {} bytes",
                    t.size
                ),
                None,
            ));
        }
        outcome
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

fn size_mismatch(t: &Transfer<'_>, actual: u64) -> Failure {
    Failure::Fatal(MoshiError::SizeMismatch {
        repo: t.repo.into(),
        file: t.file.into(),
        expected: t.size,
        actual,
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

/// The `rel="next"` URL of a `Link` header (`<url>; rel="next", <url>; rel="prev"`).
fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"");
        let url = url.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| url.to_string())
    })
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
    fn the_next_page_is_read_from_the_link_header() {
        assert_eq!(
            next_link("<https://hub/api/x?cursor=2>; rel=\"next\""),
            Some("https://hub/api/x?cursor=2".into())
        );
        assert_eq!(
            next_link("<https://a>; rel=\"prev\", <https://b>; rel=\"next\""),
            Some("https://b".into())
        );
        assert_eq!(next_link("<https://a>; rel=\"prev\""), None);
    }

    #[test]
    fn etags_lose_quotes_and_weak_markers() {
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(normalize_etag("\"abc\""), "abc");
    }
}
