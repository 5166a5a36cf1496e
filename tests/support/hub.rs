//! A loopback Hugging Face Hub for tests and benchmarks.
//!
//! [`TestHub`] is a real HTTP/1.1 server on `127.0.0.1` that speaks the parts of the Hub protocol a
//! model downloader uses (see `shared/docs/hub-protocol.md`): `resolve` URLs (HEAD/GET, ranges,
//! `If-Range`, Hub error codes, gated repos) and the `revision` and `tree` JSON APIs. Tests publish
//! files, then make the server misbehave on demand with [`Fault`]s and read back what was asked
//! and what was sent with [`TestHub::requests`].
//!
//! It is written on `std::net::TcpListener` with one thread per connection on purpose: the tests
//! need faults at the byte level (drop a connection mid-body, send fewer bytes than
//! `Content-Length`, flip a byte, stall between two writes), which HTTP server crates hide from
//! their handlers. Every response carries `Connection: close`, so one connection is one request and
//! no keep-alive state machine is needed.

// Each test target that includes this file uses only part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use parking_lot::Mutex;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Files at least this large are stored as LFS files (etag = sha256), like on the real Hub.
const LFS_MIN_SIZE: usize = 1024;
/// Extensions the Hub's default `.gitattributes` sends to LFS whatever their size.
const LFS_EXTENSIONS: [&str; 4] = [".safetensors", ".model", ".wav", ".bin"];
/// Bodies are written in pieces of this size so the byte count stays exact when a client leaves.
const WRITE_CHUNK: usize = 64 * 1024;
/// A request head larger than this is refused; real requests are a few hundred bytes.
const MAX_HEAD: usize = 64 * 1024;
/// A connection that sends no complete request head within this time is closed, so threads of
/// idle client connections do not linger after a test.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A running loopback hub. Dropping it stops accepting connections; connections already being
/// served finish on their own threads.
pub struct TestHub {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

/// One request as the hub saw it, with what it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The percent-decoded path, without the query (`/org/name/resolve/main/model.safetensors`).
    pub path: String,
    /// The raw query string after `?`, if any.
    pub query: Option<String>,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// The `If-Range` header, if any.
    pub if_range: Option<String>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The status sent; `0` when a [`FaultKind::DropConnection`] fault closed it without answer.
    pub status: u16,
    /// Body bytes handed to the kernel for this request. Exact once the connection is finished; a
    /// client that hangs up may have received fewer (they were still in socket buffers).
    pub body_bytes: u64,
}

/// A misbehaviour applied to the next `times` requests whose decoded path contains
/// `path_contains` (and whose method is `method`, when set).
///
/// Faults that act on the body ([`FaultKind::TruncateBody`], [`FaultKind::CorruptBody`],
/// [`FaultKind::StallBody`]) only match `GET` requests, so a client's `HEAD` does not use them up.
/// Faults are tried in the order they were injected; the first that matches is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub path_contains: String,
    pub method: Option<String>,
    pub times: usize,
    pub kind: FaultKind,
}

/// What a [`Fault`] does to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer this status (e.g. 500, 502, 503, 504, 404) with an empty body and no Hub headers.
    Status(u16),
    /// Answer 429 with `Retry-After: retry_after_secs`.
    RateLimited { retry_after_secs: u64 },
    /// Close the socket without sending anything.
    DropConnection,
    /// Send the real headers (full `Content-Length`), then close after `after_bytes` body bytes.
    TruncateBody { after_bytes: u64 },
    /// Send the whole body with the byte at `offset` (counted in the body sent, i.e. from the start
    /// of the range for a 206) XOR 0xFF. No effect when the body is shorter.
    CorruptBody { offset: u64 },
    /// Send `after_bytes` body bytes, sleep for `stall`, then send the rest.
    StallBody { after_bytes: u64, stall: Duration },
    /// Answer `status` with `body` as an HTML page instead of the file (captive portals, proxies,
    /// error pages served with 200).
    ErrorPage { status: u16, body: String },
    /// Send `after_bytes` body bytes, then hold the connection open, silent, until the test calls
    /// [`TestHub::open_gate`] with `gate` (or the hub stops), then send the rest. Lets a test act
    /// at a known point of a transfer (kill the client, fill its disk, start competitors).
    HoldBody { after_bytes: u64, gate: String },
    /// Answer `status` (301, 302, 307, ...) with `Location: location` instead of the file, as the
    /// real Hub does when it sends LFS downloads to a CDN on another host.
    Redirect { status: u16, location: String },
}

impl Fault {
    /// A fault that applies once to any method on paths containing `path_contains`.
    pub fn new(path_contains: impl Into<String>, kind: FaultKind) -> Fault {
        Fault {
            path_contains: path_contains.into(),
            method: None,
            times: 1,
            kind,
        }
    }

    /// Apply to the next `n` matching requests instead of one.
    pub fn times(mut self, n: usize) -> Fault {
        self.times = n;
        self
    }

    /// Only match requests with this method (`"GET"` or `"HEAD"`).
    pub fn method(mut self, method: &str) -> Fault {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    fn matches(&self, request: &Request) -> bool {
        let method_ok = self
            .method
            .as_ref()
            .is_none_or(|m| m.eq_ignore_ascii_case(&request.method));
        let body_ok = !self.kind.acts_on_body() || request.method == "GET";
        self.times > 0 && method_ok && body_ok && request.path.contains(&self.path_contains)
    }
}

impl FaultKind {
    /// Whether the fault changes how the real body is sent (rather than replacing the response).
    fn acts_on_body(&self) -> bool {
        matches!(
            self,
            FaultKind::TruncateBody { .. }
                | FaultKind::CorruptBody { .. }
                | FaultKind::StallBody { .. }
                | FaultKind::HoldBody { .. }
        )
    }
}

impl TestHub {
    /// Start a hub on a random free port of 127.0.0.1.
    pub fn start() -> TestHub {
        TestHub::start_on_port(0)
    }

    /// Start a hub on a given port of 127.0.0.1 (`0` picks a free one). Panics if it is taken.
    pub fn start_on_port(port: u16) -> TestHub {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the test hub");
        let addr = listener.local_addr().expect("test hub address");
        let shared = Arc::new(Shared::default());
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("test-hub-accept".into())
                .spawn(move || accept_loop(&listener, &shared))
                .expect("spawn the test hub")
        };
        TestHub {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Answers the tree API (`/api/models/{repo}/tree/{revision}`) in pages of `per_page`
    /// entries, linked as the Hub links them: `Link: <absolute url with ?cursor=...>; rel="next"`.
    pub fn paginate_trees(&self, per_page: usize) {
        self.shared.state.lock().tree_page_size = Some(per_page.max(1));
    }

    /// The base URL to use as `HF_ENDPOINT`: `http://127.0.0.1:PORT` (no trailing slash).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Publish `files` at a new commit of `repo` (`"org/name"`) and point `branch` at it. The
    /// commit holds the branch's previous files overlaid with these (a new branch starts empty);
    /// older commits stay resolvable by sha. Returns the commit sha: 40 hex digits, deterministic
    /// (sha1 over repo, branch, previous commit and the sorted (path, content sha256) list).
    pub fn publish(&self, repo: &str, branch: &str, files: &[(&str, Vec<u8>)]) -> String {
        let shared: Vec<(&str, Arc<[u8]>)> = files
            .iter()
            .map(|(path, bytes)| (*path, Arc::from(bytes.as_slice())))
            .collect();
        self.publish_shared(repo, branch, &shared)
    }

    /// [`TestHub::publish`] for contents already in an `Arc`, so large files are not copied.
    pub fn publish_shared(&self, repo: &str, branch: &str, files: &[(&str, Arc<[u8]>)]) -> String {
        // Hash outside the lock: a 256 MB file takes a while.
        let new_files: Vec<(String, Arc<HubFile>)> = files
            .iter()
            .map(|(path, bytes)| {
                (
                    path.to_string(),
                    Arc::new(HubFile::new(path, bytes.clone())),
                )
            })
            .collect();
        let mut state = self.shared.state.lock();
        let repo_state = state.repos.entry(repo.to_string()).or_default();
        repo_state.commit(repo, branch, new_files)
    }

    /// The commit `branch` of `repo` points at. Panics if there is none.
    pub fn commit(&self, repo: &str, branch: &str) -> String {
        let state = self.shared.state.lock();
        state
            .repos
            .get(repo)
            .and_then(|r| r.branches.get(branch))
            .unwrap_or_else(|| panic!("no branch {branch} in {repo}"))
            .clone()
    }

    /// Make `repo` gated: requests without `Authorization` get 401, with another token 403 (both
    /// with `X-Error-Code: GatedRepo`); `Authorization: Bearer <token>` is let through. Applies to
    /// the `resolve` URLs and the JSON APIs. Can be called before the first publish.
    pub fn require_token(&self, repo: &str, token: &str) {
        let mut state = self.shared.state.lock();
        state.repos.entry(repo.to_string()).or_default().token = Some(token.to_string());
    }

    /// Queue a fault (see [`Fault`] for which requests it applies to).
    pub fn inject(&self, fault: Fault) {
        if fault.times > 0 {
            self.shared.state.lock().faults.push(fault);
        }
    }

    /// Lets every body held by a [`FaultKind::HoldBody`] fault naming `gate` go on (now and later).
    pub fn open_gate(&self, gate: &str) {
        self.shared.state.lock().open_gates.insert(gate.to_string());
    }

    /// Drops every fault not yet used up (the hub behaves again).
    pub fn clear_faults(&self) {
        self.shared.state.lock().faults.clear();
    }

    /// Every request received since the start or the last [`TestHub::clear_log`], in order.
    /// An entry is recorded before its response is sent, so a client that got a response always
    /// finds it here.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        let state = self.shared.state.lock();
        state.log.iter().map(|entry| entry.snapshot()).collect()
    }

    /// Forget the logged requests.
    pub fn clear_log(&self) {
        self.shared.state.lock().log.clear();
    }

    /// Sum of body bytes written for logged `GET`s whose decoded path ends with `path_suffix`.
    pub fn body_bytes_served(&self, path_suffix: &str) -> u64 {
        self.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.ends_with(path_suffix))
            .map(|r| r.body_bytes)
            .sum()
    }

    /// The etag (no quotes) of `path` at `revision` (branch or commit) of `repo`: the sha256 hex of
    /// the content for LFS files, the git blob sha1 otherwise. It names the blob in the HF cache.
    pub fn file_etag(&self, repo: &str, revision: &str, path: &str) -> String {
        let state = self.shared.state.lock();
        state
            .repos
            .get(repo)
            .and_then(|r| r.snapshot(revision))
            .and_then(|(_, files)| files.get(path))
            .unwrap_or_else(|| panic!("no file {path} at {revision} of {repo}"))
            .etag()
            .to_string()
    }

    /// The URL path of a file: `/org/name/resolve/<revision>/<path>`, percent-encoded.
    pub fn file_url_path(&self, repo: &str, revision: &str, path: &str) -> String {
        format!(
            "/{repo}/resolve/{}/{}",
            percent_encode(revision, false),
            percent_encode(path, true)
        )
    }

    /// The full URL of a file: [`TestHub::endpoint`] + [`TestHub::file_url_path`].
    pub fn file_url(&self, repo: &str, revision: &str, path: &str) -> String {
        format!(
            "{}{}",
            self.endpoint(),
            self.file_url_path(repo, revision, path)
        )
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // `accept` blocks; a connection of our own wakes it up to see the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// State shared by the handle and the server threads.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    stopping: AtomicBool,
}

#[derive(Default)]
struct State {
    repos: HashMap<String, Repo>,
    /// Entries per page of the tree API ([`TestHub::paginate_trees`]); all at once when unset.
    tree_page_size: Option<usize>,
    faults: Vec<Fault>,
    log: Vec<Arc<LogEntry>>,
    /// Gates opened by [`TestHub::open_gate`].
    open_gates: BTreeSet<String>,
}

/// A model repository: branches pointing at commits, each commit a full file list.
#[derive(Default)]
struct Repo {
    branches: HashMap<String, String>,
    commits: HashMap<String, Arc<Files>>,
    token: Option<String>,
}

type Files = BTreeMap<String, Arc<HubFile>>;

/// One file of a commit, with the hashes the protocol exposes.
struct HubFile {
    content: Arc<[u8]>,
    lfs: bool,
    sha256: String,
    /// Git blob sha1 of the content (the etag of a regular file).
    git_sha1: String,
}

/// A log record whose body byte count is updated while the body is being written.
struct LogEntry {
    request: LoggedRequest,
    body_bytes: AtomicU64,
}

impl LogEntry {
    fn snapshot(&self) -> LoggedRequest {
        LoggedRequest {
            body_bytes: self.body_bytes.load(Ordering::SeqCst),
            ..self.request.clone()
        }
    }
}

impl HubFile {
    fn new(path: &str, content: Arc<[u8]>) -> HubFile {
        let lfs =
            content.len() >= LFS_MIN_SIZE || LFS_EXTENSIONS.iter().any(|ext| path.ends_with(ext));
        HubFile {
            lfs,
            sha256: hex::encode(Sha256::digest(&content)),
            git_sha1: git_blob_sha1(&content),
            content,
        }
    }

    /// The etag clients use as the blob name: sha256 for LFS files, git sha1 otherwise.
    fn etag(&self) -> &str {
        if self.lfs {
            &self.sha256
        } else {
            &self.git_sha1
        }
    }

    /// The text git stores for an LFS file instead of its content.
    fn lfs_pointer(&self) -> String {
        format!(
            "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize {}\n",
            self.sha256,
            self.content.len()
        )
    }

    /// The `oid` of the tree API: the git blob sha1 of what git stores (the pointer for LFS).
    fn tree_oid(&self) -> String {
        if self.lfs {
            git_blob_sha1(self.lfs_pointer().as_bytes())
        } else {
            self.git_sha1.clone()
        }
    }
}

/// Git's object id of a blob: sha1 of `"blob {len}\0"` followed by the bytes.
fn git_blob_sha1(bytes: &[u8]) -> String {
    let mut hasher = Sha1::new();
    hasher.update(format!("blob {}\0", bytes.len()).as_bytes());
    hasher.update(bytes);
    hex::encode(hasher.finalize())
}

impl Repo {
    /// Record a commit of `new_files` over the branch's current files and move the branch to it.
    fn commit(
        &mut self,
        repo: &str,
        branch: &str,
        new_files: Vec<(String, Arc<HubFile>)>,
    ) -> String {
        let previous = self.branches.get(branch).cloned().unwrap_or_default();
        let mut files: Files = self
            .commits
            .get(&previous)
            .map(|f| (**f).clone())
            .unwrap_or_default();
        files.extend(new_files);

        let mut hasher = Sha1::new();
        for part in [repo, branch, &previous] {
            hasher.update(part.as_bytes());
            hasher.update(b"\0");
        }
        for (path, file) in &files {
            hasher.update(format!("{path}\0{}\n", file.sha256).as_bytes());
        }
        let sha = hex::encode(hasher.finalize());

        self.commits.insert(sha.clone(), Arc::new(files));
        self.branches.insert(branch.to_string(), sha.clone());
        sha
    }

    /// The commit and files of a branch name or of a full commit sha of this repo.
    fn snapshot(&self, revision: &str) -> Option<(&str, &Files)> {
        let sha = self
            .branches
            .get(revision)
            .map(String::as_str)
            .or_else(|| self.commits.contains_key(revision).then_some(revision))?;
        let (sha, files) = self.commits.get_key_value(sha)?;
        Some((sha.as_str(), files.as_ref()))
    }
}

// ---------------------------------------------------------------------------------------------
// Connections

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let shared = Arc::clone(shared);
        let _ = thread::Builder::new()
            .name("test-hub-conn".into())
            .spawn(move || serve_connection(&shared, stream));
    }
}

/// Serve the one request of a connection, applying a matching fault if one is queued.
fn serve_connection(shared: &Shared, mut stream: TcpStream) {
    // Headers and body go out in separate writes; without NODELAY, Nagle + delayed ACK add 40 ms.
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let Some(request) = read_head(&mut stream).ok().and_then(|h| parse_request(&h)) else {
        return;
    };
    let fault = shared.take_fault(&request);
    if fault == Some(FaultKind::DropConnection) {
        shared.log(&request, 0);
        return; // dropping the stream closes it without a byte of response
    }
    let response = match fault.as_ref().and_then(replacement_response) {
        Some(response) => response,
        None => route(&shared.state.lock(), &request),
    };
    let entry = shared.log(&request, response.status);
    let body_fault = fault.filter(FaultKind::acts_on_body);
    let _ = send_response(
        &mut stream,
        &request,
        &response,
        body_fault.as_ref(),
        &entry,
        shared,
    );
    let _ = stream.shutdown(Shutdown::Write);
}

impl Shared {
    /// Use up one application of the first queued fault that matches.
    fn take_fault(&self, request: &Request) -> Option<FaultKind> {
        let mut state = self.state.lock();
        let index = state.faults.iter().position(|f| f.matches(request))?;
        let fault = &mut state.faults[index];
        fault.times -= 1;
        let kind = fault.kind.clone();
        if fault.times == 0 {
            state.faults.remove(index);
        }
        Some(kind)
    }

    /// Record a request before answering it, so clients never see a response that is not logged.
    fn log(&self, request: &Request, status: u16) -> Arc<LogEntry> {
        let entry = Arc::new(LogEntry {
            request: LoggedRequest {
                method: request.method.clone(),
                path: request.path.clone(),
                query: request.query.clone(),
                range: request.header("range").map(str::to_string),
                if_range: request.header("if-range").map(str::to_string),
                authorization: request.header("authorization").map(str::to_string),
                status,
                body_bytes: 0,
            },
            body_bytes: AtomicU64::new(0),
        });
        self.state.lock().log.push(Arc::clone(&entry));
        entry
    }
}

/// The response a fault sends instead of the real one, if it replaces it.
fn replacement_response(kind: &FaultKind) -> Option<Response> {
    match kind {
        FaultKind::Status(status) => Some(Response::empty(*status)),
        FaultKind::RateLimited { retry_after_secs } => {
            Some(Response::empty(429).header("Retry-After", retry_after_secs.to_string()))
        }
        FaultKind::ErrorPage { status, body } => Some(Response::text(
            *status,
            "text/html; charset=utf-8",
            body.clone(),
        )),
        FaultKind::Redirect { status, location } => {
            Some(Response::empty(*status).header("Location", location.clone()))
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP parsing and writing

/// A parsed request head. The body, if any, is ignored: clients only send HEAD and GET.
struct Request {
    method: String,
    /// The path as sent (still percent-encoded), used for routing segment by segment so that an
    /// encoded `/` inside a revision (`refs%2Fpr%2F1`) stays inside its segment.
    raw_path: String,
    /// The percent-decoded path, for the log and fault matching.
    path: String,
    query: Option<String>,
    /// Header names lower-cased.
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The token of `Authorization: Bearer <token>`.
    fn bearer_token(&self) -> Option<&str> {
        let value = self.header("authorization")?;
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }
}

/// Read up to the blank line that ends the request head.
fn read_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            head.truncate(end);
            return Ok(head);
        }
        if head.len() > MAX_HEAD {
            return Err(io::Error::other("request head too large"));
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
}

fn parse_request(head: &[u8]) -> Option<Request> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_ascii_uppercase();
    let target = request_line.next()?;
    let (raw_path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query.to_string())),
        None => (target, None),
    };
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    Some(Request {
        method,
        raw_path: raw_path.to_string(),
        path: percent_decode(raw_path),
        query,
        headers,
    })
}

/// A response: status, headers and a window of a shared body (so files are never copied).
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Arc<[u8]>,
    window: Range<usize>,
}

impl Response {
    fn new(status: u16, body: Arc<[u8]>) -> Response {
        let window = 0..body.len();
        Response {
            status,
            headers: Vec::new(),
            body,
            window,
        }
    }

    fn empty(status: u16) -> Response {
        Response::new(status, Arc::from(&[][..]))
    }

    fn text(status: u16, content_type: &str, text: String) -> Response {
        Response::new(status, Arc::from(text.into_bytes())).header("Content-Type", content_type)
    }

    fn json(value: &serde_json::Value) -> Response {
        Response::text(200, "application/json", value.to_string())
    }

    /// A Hub error: `X-Error-Code` (when given) and `X-Error-Message` headers plus a text body.
    fn error(status: u16, code: Option<&str>, message: &str) -> Response {
        let response = Response::text(status, "text/plain; charset=utf-8", message.to_string())
            .header("X-Error-Message", message);
        match code {
            Some(code) => response.header("X-Error-Code", code),
            None => response,
        }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    fn body(&self) -> &[u8] {
        &self.body[self.window.clone()]
    }
}

/// Write the head and (except for HEAD) the body, with the body fault if any.
fn send_response(
    stream: &mut TcpStream,
    request: &Request,
    response: &Response,
    body_fault: Option<&FaultKind>,
    entry: &LogEntry,
    shared: &Shared,
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason_phrase(response.status)
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        response.window.len()
    ));
    stream.write_all(head.as_bytes())?;
    if request.method == "HEAD" {
        return Ok(());
    }
    send_body(
        stream,
        response.body(),
        body_fault,
        &entry.body_bytes,
        shared,
    )
}

/// Send `body`, truncated, corrupted or stalled as the fault says.
fn send_body(
    stream: &mut TcpStream,
    body: &[u8],
    fault: Option<&FaultKind>,
    counter: &AtomicU64,
    shared: &Shared,
) -> io::Result<()> {
    let split = |n: u64| body.split_at(body.len().min(usize::try_from(n).unwrap_or(usize::MAX)));
    match fault {
        Some(FaultKind::TruncateBody { after_bytes }) => {
            send_counted(stream, split(*after_bytes).0, counter)
        }
        Some(FaultKind::StallBody { after_bytes, stall }) => {
            let (first, rest) = split(*after_bytes);
            send_counted(stream, first, counter)?;
            thread::sleep(*stall);
            send_counted(stream, rest, counter)
        }
        Some(FaultKind::HoldBody { after_bytes, gate }) => {
            let (first, rest) = split(*after_bytes);
            send_counted(stream, first, counter)?;
            while !shared.state.lock().open_gates.contains(gate)
                && !shared.stopping.load(Ordering::SeqCst)
            {
                thread::sleep(Duration::from_millis(10));
            }
            send_counted(stream, rest, counter)
        }
        Some(FaultKind::CorruptBody { offset }) if *offset < body.len() as u64 => {
            let (first, rest) = split(*offset);
            send_counted(stream, first, counter)?;
            send_counted(stream, &[rest[0] ^ 0xFF], counter)?;
            send_counted(stream, &rest[1..], counter)
        }
        _ => send_counted(stream, body, counter),
    }
}

/// Write `bytes`, adding to `counter` what the kernel accepted. The count is raised before each
/// write and corrected after, so a client that has read the bytes never sees a smaller count.
fn send_counted(stream: &mut TcpStream, mut bytes: &[u8], counter: &AtomicU64) -> io::Result<()> {
    while !bytes.is_empty() {
        let attempt = bytes.len().min(WRITE_CHUNK);
        counter.fetch_add(attempt as u64, Ordering::SeqCst);
        let written = match stream.write(&bytes[..attempt]) {
            Ok(0) => Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e),
        };
        let n = *written.as_ref().unwrap_or(&0);
        counter.fetch_sub((attempt - n) as u64, Ordering::SeqCst);
        written?;
        bytes = &bytes[n..];
    }
    Ok(())
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Decode `%XX` escapes; malformed escapes are kept as they are.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex_digit = |j: usize| bytes.get(j).and_then(|b| (*b as char).to_digit(16));
        match (bytes[i], hex_digit(i + 1), hex_digit(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encode everything but unreserved characters (and `/` when `keep_slash`).
fn percent_encode(text: &str, keep_slash: bool) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b'/' if keep_slash => "/".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Hub endpoints

/// Dispatch a request to its endpoint.
fn route(state: &State, request: &Request) -> Response {
    if request.method != "GET" && request.method != "HEAD" {
        return Response::error(405, None, "Method not allowed");
    }
    let segments: Vec<String> = request
        .raw_path
        .split('/')
        .skip(1)
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match segments.as_slice() {
        // `model_info` without a revision asks for the default branch.
        ["api", "models", org, name] => {
            api_revision(state, request, &format!("{org}/{name}"), "main")
        }
        ["api", "models", org, name, "revision", revision] => {
            api_revision(state, request, &format!("{org}/{name}"), revision)
        }
        ["api", "models", org, name, "tree", revision, dir @ ..] => {
            let dir: Vec<&str> = dir.iter().copied().filter(|s| !s.is_empty()).collect();
            api_tree(
                state,
                request,
                &format!("{org}/{name}"),
                revision,
                &dir.join("/"),
            )
        }
        [org, name, "resolve", revision, path @ ..] if !path.is_empty() => resolve(
            state,
            request,
            &format!("{org}/{name}"),
            revision,
            &path.join("/"),
        ),
        _ => Response::error(404, None, "Not Found"),
    }
}

/// Find the repo, check access and resolve the revision, or return the Hub's error response.
fn open<'s>(
    state: &'s State,
    request: &Request,
    repo_id: &str,
    revision: &str,
) -> Result<(&'s str, &'s Files), Response> {
    let repo = state
        .repos
        .get(repo_id)
        .ok_or_else(|| Response::error(404, Some("RepoNotFound"), "Repository not found"))?;
    check_access(repo, repo_id, request)?;
    repo.snapshot(revision).ok_or_else(|| {
        Response::error(
            404,
            Some("RevisionNotFound"),
            &format!("Invalid rev id: {revision}"),
        )
    })
}

/// Gated repos: 401 without a token, 403 with the wrong one.
fn check_access(repo: &Repo, repo_id: &str, request: &Request) -> Result<(), Response> {
    let Some(expected) = &repo.token else {
        return Ok(());
    };
    match request.bearer_token() {
        Some(token) if token == expected => Ok(()),
        Some(_) => Err(Response::error(
            403,
            Some("GatedRepo"),
            &format!(
                "Access to model {repo_id} is restricted and you are not in the authorized list."
            ),
        )),
        None => Err(Response::error(
            401,
            Some("GatedRepo"),
            &format!(
                "Access to model {repo_id} is restricted. You must be authenticated to access it."
            ),
        )),
    }
}

/// `HEAD|GET /{org}/{name}/resolve/{revision}/{path}`.
fn resolve(
    state: &State,
    request: &Request,
    repo_id: &str,
    revision: &str,
    path: &str,
) -> Response {
    let (commit, files) = match open(state, request, repo_id, revision) {
        Ok(snapshot) => snapshot,
        Err(response) => return response,
    };
    match files.get(path) {
        Some(file) => serve_file(request, commit, file),
        None => Response::error(
            404,
            Some("EntryNotFound"),
            &format!("{path} does not exist"),
        )
        .header("X-Repo-Commit", commit),
    }
}

/// A file's bytes with the Hub's metadata headers, honouring `Range` and `If-Range`.
fn serve_file(request: &Request, commit: &str, file: &HubFile) -> Response {
    let total = file.content.len();
    let quoted_etag = format!("\"{}\"", file.etag());
    let mut response = Response::new(200, Arc::clone(&file.content))
        .header("Content-Type", "application/octet-stream")
        .header("Accept-Ranges", "bytes")
        .header("X-Repo-Commit", commit)
        .header("ETag", quoted_etag.clone());
    if file.lfs {
        response = response
            .header("X-Linked-Etag", quoted_etag)
            .header("X-Linked-Size", total.to_string());
    }
    match requested_range(request, file.etag(), total) {
        RangeAsk::Whole => response,
        RangeAsk::Part(window) => {
            let content_range = format!("bytes {}-{}/{total}", window.start, window.end - 1);
            response.status = 206;
            response.window = window;
            response.header("Content-Range", content_range)
        }
        RangeAsk::Unsatisfiable => Response::empty(416)
            .header("Content-Range", format!("bytes */{total}"))
            .header("X-Repo-Commit", commit),
    }
}

/// What a `Range` header asks of a body of `total` bytes.
enum RangeAsk {
    Whole,
    Part(Range<usize>),
    Unsatisfiable,
}

/// The range to send: the whole body without a usable `Range`, or when `If-Range` names another
/// etag (the client's partial file is stale, so it gets the new file from the start).
fn requested_range(request: &Request, etag: &str, total: usize) -> RangeAsk {
    let Some(range) = request.header("range") else {
        return RangeAsk::Whole;
    };
    let stale = request
        .header("if-range")
        .is_some_and(|tag| strip_etag(tag) != etag);
    if stale {
        return RangeAsk::Whole;
    }
    parse_range(range, total)
}

/// Parse `bytes=S-E`, `bytes=S-` or `bytes=-N`; an end past the last byte is clamped. Anything
/// else (several ranges, garbage) is ignored, as HTTP allows.
fn parse_range(range: &str, total: usize) -> RangeAsk {
    let Some((start, end)) = range
        .trim()
        .strip_prefix("bytes=")
        .filter(|spec| !spec.contains(','))
        .and_then(|spec| spec.split_once('-'))
    else {
        return RangeAsk::Whole;
    };
    let (start, end) = (start.trim(), end.trim());
    if start.is_empty() {
        return match end.parse::<usize>() {
            Ok(0) => RangeAsk::Unsatisfiable,
            Ok(_) if total == 0 => RangeAsk::Unsatisfiable,
            Ok(n) => RangeAsk::Part(total.saturating_sub(n)..total),
            Err(_) => RangeAsk::Whole,
        };
    }
    let Ok(start) = start.parse::<usize>() else {
        return RangeAsk::Whole;
    };
    let last = match end {
        "" => Some(usize::MAX),
        end => end.parse::<usize>().ok(),
    };
    match last {
        _ if start >= total => RangeAsk::Unsatisfiable,
        Some(last) if last >= start => RangeAsk::Part(start..last.min(total - 1) + 1),
        _ => RangeAsk::Whole,
    }
}

/// An etag as clients compare it: without `W/` and quotes.
fn strip_etag(etag: &str) -> &str {
    let etag = etag.trim();
    etag.strip_prefix("W/").unwrap_or(etag).trim_matches('"')
}

/// `GET /api/models/{org}/{name}/revision/{revision}` (and `/api/models/{org}/{name}` for `main`).
fn api_revision(state: &State, request: &Request, repo_id: &str, revision: &str) -> Response {
    let (commit, files) = match open(state, request, repo_id, revision) {
        Ok(snapshot) => snapshot,
        Err(response) => return response,
    };
    let siblings: Vec<_> = files
        .keys()
        .map(|path| serde_json::json!({ "rfilename": path }))
        .collect();
    Response::json(&serde_json::json!({
        "id": repo_id,
        "modelId": repo_id,
        "sha": commit,
        "siblings": siblings,
    }))
}

/// `GET /api/models/{org}/{name}/tree/{revision}[/{dir}][?recursive=true]`: the entries under
/// `dir` (direct children, or all descendants when recursive), sorted by path, in one page.
fn api_tree(
    state: &State,
    request: &Request,
    repo_id: &str,
    revision: &str,
    dir: &str,
) -> Response {
    let (commit, files) = match open(state, request, repo_id, revision) {
        Ok(snapshot) => snapshot,
        Err(response) => return response,
    };
    let recursive = request
        .query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .any(|pair| pair == "recursive=true" || pair == "recursive=1");
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let dirs = directories(files);
    if !dir.is_empty() && !dirs.contains(dir) {
        return Response::error(404, Some("EntryNotFound"), &format!("{dir} does not exist"))
            .header("X-Repo-Commit", commit);
    }
    let wanted = |path: &str| {
        path.strip_prefix(&prefix)
            .is_some_and(|rest| recursive || !rest.contains('/'))
    };
    let mut entries: Vec<(&str, serde_json::Value)> = dirs
        .iter()
        .filter(|d| wanted(d))
        .map(|d| (d.as_str(), directory_entry(commit, d)))
        .collect();
    entries.extend(
        files
            .iter()
            .filter(|(path, _)| wanted(path))
            .map(|(path, file)| (path.as_str(), file_entry(path, file))),
    );
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let entries: Vec<serde_json::Value> = entries.into_iter().map(|(_, entry)| entry).collect();
    let Some(per_page) = state.tree_page_size else {
        return Response::json(&serde_json::Value::Array(entries));
    };
    // Pages as the Hub serves them: an opaque cursor (here, the offset) in the next page's URL.
    let query = request.query.as_deref().unwrap_or("");
    let start: usize = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("cursor="))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let end = (start + per_page).min(entries.len());
    let page = entries.get(start..end).unwrap_or_default().to_vec();
    let response = Response::json(&serde_json::Value::Array(page));
    if end >= entries.len() {
        return response;
    }
    let host = request.header("host").unwrap_or("127.0.0.1");
    let recursive = if recursive { "recursive=true&" } else { "" };
    response.header(
        "Link",
        format!(
            "<http://{host}{}?{recursive}cursor={end}>; rel=\"next\"",
            request.raw_path
        ),
    )
}

/// Every folder that holds a file, at any depth (`a/b/c.txt` gives `a` and `a/b`).
fn directories(files: &Files) -> BTreeSet<String> {
    files
        .keys()
        .flat_map(|path| {
            path.match_indices('/')
                .map(|(i, _)| path[..i].to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn directory_entry(commit: &str, path: &str) -> serde_json::Value {
    // Any stable id will do: clients do not use a directory's oid.
    let oid = git_blob_sha1(format!("tree {commit} {path}").as_bytes());
    serde_json::json!({ "type": "directory", "oid": oid, "path": path })
}

fn file_entry(path: &str, file: &HubFile) -> serde_json::Value {
    let size = file.content.len();
    let mut entry = serde_json::json!({
        "type": "file",
        "oid": file.tree_oid(),
        "size": size,
        "path": path,
    });
    if file.lfs {
        let pointer_size = file.lfs_pointer().len();
        entry["lfs"] = serde_json::json!({
            "oid": file.sha256,
            "sha256": file.sha256,
            "size": size,
            "pointerSize": pointer_size,
            "pointer_size": pointer_size,
        });
    }
    entry
}
