//! Tests of the loopback test hub itself (`tests/support/hub.rs`): that it speaks the Hub
//! protocol as `shared/docs/hub-protocol.md` describes and that every fault is observable by a
//! real HTTP client, so the tests built on it test the downloader and not the hub.

#[path = "support/hub.rs"]
mod hub;

use std::time::{Duration, Instant};

use hub::{Fault, FaultKind, LoggedRequest, TestHub};
use reqwest::header::HeaderMap;
use sha1::Sha1;
use sha2::{Digest, Sha256};

const REPO: &str = "org/model";
const WEIGHTS: &str = "model.safetensors";
const CONFIG: &str = "config.json";
const TOKENIZER: &str = "tok/en/tokenizer.model";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("reqwest client")
}

/// Deterministic bytes that are not all alike, so a shifted or flipped byte shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn weights() -> Vec<u8> {
    pattern(10_000)
}

fn config() -> Vec<u8> {
    br#"{"hidden_size": 8}"#.to_vec()
}

/// A hub with `org/model` at `main`: a small git file, an LFS file and a nested LFS file.
fn hub_with_model() -> (TestHub, String) {
    let hub = TestHub::start();
    let commit = hub.publish(
        REPO,
        "main",
        &[
            (CONFIG, config()),
            (WEIGHTS, weights()),
            (TOKENIZER, b"tiny".to_vec()),
        ],
    );
    (hub, commit)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn git_sha1_hex(bytes: &[u8]) -> String {
    let mut hasher = Sha1::new();
    hasher.update(format!("blob {}\0", bytes.len()).as_bytes());
    hasher.update(bytes);
    hex::encode(hasher.finalize())
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).map(|v| v.to_str().expect("ascii header"))
}

async fn get(url: &str) -> reqwest::Response {
    client().get(url).send().await.expect("GET")
}

async fn get_with(url: &str, name: &str, value: &str) -> reqwest::Response {
    client()
        .get(url)
        .header(name, value)
        .send()
        .await
        .expect("GET")
}

/// Read a body chunk by chunk; returns the bytes received and whether reading failed.
async fn read_body(mut response: reqwest::Response) -> (Vec<u8>, bool) {
    let mut bytes = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) => return (bytes, false),
            Err(_) => return (bytes, true),
        }
    }
}

/// GET a JSON API response (reqwest's `json` feature is not enabled).
async fn get_json(url: &str) -> serde_json::Value {
    let body = get(url).await.bytes().await.expect("body");
    serde_json::from_slice(&body).expect("JSON body")
}

fn last_request(hub: &TestHub) -> LoggedRequest {
    hub.requests().pop().expect("a logged request")
}

#[tokio::test]
async fn head_reports_hub_metadata_without_redirect() {
    let (hub, commit) = hub_with_model();

    let lfs = client()
        .head(hub.file_url(REPO, "main", WEIGHTS))
        .send()
        .await
        .unwrap();
    assert_eq!(lfs.status(), 200);
    let headers = lfs.headers();
    let etag = sha256_hex(&weights());
    assert_eq!(header(headers, "x-repo-commit"), Some(commit.as_str()));
    assert_eq!(
        header(headers, "etag"),
        Some(format!("\"{etag}\"").as_str())
    );
    assert_eq!(
        header(headers, "x-linked-etag"),
        Some(format!("\"{etag}\"").as_str())
    );
    assert_eq!(header(headers, "x-linked-size"), Some("10000"));
    assert_eq!(header(headers, "content-length"), Some("10000"));
    assert_eq!(header(headers, "accept-ranges"), Some("bytes"));
    assert_eq!(
        header(headers, "content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(header(headers, "x-xet-hash"), None);
    assert_eq!(hub.file_etag(REPO, "main", WEIGHTS), etag);

    let git = client()
        .head(hub.file_url(REPO, "main", CONFIG))
        .send()
        .await
        .unwrap();
    let etag = git_sha1_hex(&config());
    assert_eq!(
        header(git.headers(), "etag"),
        Some(format!("\"{etag}\"").as_str())
    );
    assert_eq!(header(git.headers(), "x-linked-etag"), None);
    assert_eq!(hub.file_etag(REPO, "main", CONFIG), etag);

    assert_eq!(last_request(&hub).body_bytes, 0, "HEAD sends no body");
}

#[tokio::test]
async fn get_serves_exact_bytes_matching_the_etag() {
    let (hub, _) = hub_with_model();

    let body = get(&hub.file_url(REPO, "main", WEIGHTS))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.as_ref(), weights().as_slice());
    assert_eq!(sha256_hex(&body), hub.file_etag(REPO, "main", WEIGHTS));

    // Small files with an LFS extension are LFS files too.
    let tokenizer = get(&hub.file_url(REPO, "main", TOKENIZER)).await;
    assert_eq!(header(tokenizer.headers(), "x-linked-size"), Some("4"));
    assert_eq!(tokenizer.bytes().await.unwrap().as_ref(), b"tiny");

    let config_body = get(&hub.file_url(REPO, "main", CONFIG))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        git_sha1_hex(&config_body),
        hub.file_etag(REPO, "main", CONFIG)
    );
}

#[tokio::test]
async fn ranges_give_206_and_clamp_the_end() {
    let (hub, _) = hub_with_model();
    let url = hub.file_url(REPO, "main", WEIGHTS);
    let full = weights();

    let part = get_with(&url, "Range", "bytes=2-5").await;
    assert_eq!(part.status(), 206);
    assert_eq!(
        header(part.headers(), "content-range"),
        Some("bytes 2-5/10000")
    );
    assert_eq!(header(part.headers(), "content-length"), Some("4"));
    assert_eq!(header(part.headers(), "x-linked-size"), Some("10000"));
    assert_eq!(part.bytes().await.unwrap().as_ref(), &full[2..6]);

    // hf-hub 0.4.3 asks for one byte past the end.
    let clamped = get_with(&url, "Range", "bytes=0-10000").await;
    assert_eq!(clamped.status(), 206);
    assert_eq!(
        header(clamped.headers(), "content-range"),
        Some("bytes 0-9999/10000")
    );
    assert_eq!(clamped.bytes().await.unwrap().len(), 10_000);

    let open_ended = get_with(&url, "Range", "bytes=9000-").await;
    assert_eq!(
        header(open_ended.headers(), "content-range"),
        Some("bytes 9000-9999/10000")
    );
    assert_eq!(open_ended.bytes().await.unwrap().as_ref(), &full[9000..]);

    let past_end = get_with(&url, "Range", "bytes=10000-").await;
    assert_eq!(past_end.status(), 416);
    assert_eq!(
        header(past_end.headers(), "content-range"),
        Some("bytes */10000")
    );
}

#[tokio::test]
async fn if_range_with_another_etag_gets_the_whole_file() {
    let (hub, _) = hub_with_model();
    let url = hub.file_url(REPO, "main", WEIGHTS);
    let etag = hub.file_etag(REPO, "main", WEIGHTS);

    let stale = client()
        .get(&url)
        .header("Range", "bytes=100-")
        .header("If-Range", "\"0123\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);
    assert_eq!(stale.bytes().await.unwrap().len(), 10_000);

    let fresh = client()
        .get(&url)
        .header("Range", "bytes=100-")
        .header("If-Range", format!("\"{etag}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), 206);
    assert_eq!(fresh.bytes().await.unwrap().len(), 9_900);

    let logged = last_request(&hub);
    assert_eq!(logged.range.as_deref(), Some("bytes=100-"));
    assert_eq!(logged.if_range, Some(format!("\"{etag}\"")));
}

#[tokio::test]
async fn missing_things_get_hub_error_codes() {
    let (hub, commit) = hub_with_model();
    let code = |r: &reqwest::Response| header(r.headers(), "x-error-code").map(str::to_string);

    let repo = get(&hub.file_url("org/nothing", "main", CONFIG)).await;
    assert_eq!(repo.status(), 404);
    assert_eq!(code(&repo).as_deref(), Some("RepoNotFound"));

    let revision = get(&hub.file_url(REPO, "v9", CONFIG)).await;
    assert_eq!(revision.status(), 404);
    assert_eq!(code(&revision).as_deref(), Some("RevisionNotFound"));

    let entry = get(&hub.file_url(REPO, "main", "nope.bin")).await;
    assert_eq!(entry.status(), 404);
    assert_eq!(code(&entry).as_deref(), Some("EntryNotFound"));
    assert_eq!(
        header(entry.headers(), "x-repo-commit"),
        Some(commit.as_str())
    );

    let other = get(&format!("{}/something/else", hub.endpoint())).await;
    assert_eq!(other.status(), 404);
}

#[tokio::test]
async fn commits_overlay_and_stay_resolvable() {
    let (hub, first) = hub_with_model();
    let second = hub.publish(REPO, "main", &[(CONFIG, b"{}".to_vec())]);
    assert_ne!(first, second);
    assert_eq!(second.len(), 40);
    assert!(second.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(hub.commit(REPO, "main"), second);

    let old = get(&hub.file_url(REPO, &first, CONFIG)).await;
    assert_eq!(header(old.headers(), "x-repo-commit"), Some(first.as_str()));
    assert_eq!(old.bytes().await.unwrap().as_ref(), config().as_slice());

    let new = get(&hub.file_url(REPO, "main", CONFIG)).await;
    assert_eq!(new.bytes().await.unwrap().as_ref(), b"{}");
    let kept = get(&hub.file_url(REPO, "main", WEIGHTS)).await;
    assert_eq!(kept.status(), 200, "files not republished are kept");

    // Deterministic: the same history gives the same shas.
    let (again, first_again) = hub_with_model();
    assert_eq!(first_again, first);
    assert_eq!(
        again.publish(REPO, "main", &[(CONFIG, b"{}".to_vec())]),
        second
    );
}

#[tokio::test]
async fn encoded_revisions_and_paths_are_decoded() {
    let hub = TestHub::start();
    let commit = hub.publish(REPO, "refs/pr/1", &[("dir/a b.txt", b"x".to_vec())]);
    let url = hub.file_url(REPO, "refs/pr/1", "dir/a b.txt");
    assert!(
        url.ends_with("/resolve/refs%2Fpr%2F1/dir/a%20b.txt"),
        "{url}"
    );

    let response = get(&url).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(response.headers(), "x-repo-commit"),
        Some(commit.as_str())
    );
    assert_eq!(
        last_request(&hub).path,
        "/org/model/resolve/refs/pr/1/dir/a b.txt"
    );
}

#[tokio::test]
async fn gated_repos_want_the_right_token() {
    let (hub, _) = hub_with_model();
    hub.require_token(REPO, "hf_secret");
    let url = hub.file_url(REPO, "main", CONFIG);

    let anonymous = get(&url).await;
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        header(anonymous.headers(), "x-error-code"),
        Some("GatedRepo")
    );
    assert!(!anonymous.text().await.unwrap().is_empty());

    let wrong = get_with(&url, "Authorization", "Bearer hf_wrong").await;
    assert_eq!(wrong.status(), 403);
    assert_eq!(header(wrong.headers(), "x-error-code"), Some("GatedRepo"));

    let right = get_with(&url, "Authorization", "Bearer hf_secret").await;
    assert_eq!(right.status(), 200);
    assert_eq!(
        last_request(&hub).authorization.as_deref(),
        Some("Bearer hf_secret")
    );

    let api = format!("{}/api/models/{REPO}/revision/main", hub.endpoint());
    assert_eq!(get(&api).await.status(), 401);
}

#[tokio::test]
async fn status_faults_apply_the_given_number_of_times() {
    let (hub, _) = hub_with_model();
    let url = hub.file_url(REPO, "main", WEIGHTS);
    hub.inject(Fault::new(WEIGHTS, FaultKind::Status(503)).times(2));

    assert_eq!(get(&url).await.status(), 503);
    assert_eq!(get(&url).await.status(), 503);
    assert_eq!(get(&url).await.status(), 200);
    let statuses: Vec<u16> = hub.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 200]);
}

#[tokio::test]
async fn faults_match_path_and_method() {
    let (hub, _) = hub_with_model();
    let url = hub.file_url(REPO, "main", WEIGHTS);
    hub.inject(Fault::new(WEIGHTS, FaultKind::Status(500)).method("HEAD"));

    assert_eq!(get(&hub.file_url(REPO, "main", CONFIG)).await.status(), 200);
    assert_eq!(get(&url).await.status(), 200);
    let head = client().head(&url).send().await.unwrap();
    assert_eq!(head.status(), 500);
}

#[tokio::test]
async fn rate_limit_sends_retry_after() {
    let (hub, _) = hub_with_model();
    hub.inject(Fault::new(
        CONFIG,
        FaultKind::RateLimited {
            retry_after_secs: 7,
        },
    ));

    let response = get(&hub.file_url(REPO, "main", CONFIG)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(header(response.headers(), "retry-after"), Some("7"));
}

#[tokio::test]
async fn dropped_connection_is_a_client_error() {
    let (hub, _) = hub_with_model();
    hub.inject(Fault::new(WEIGHTS, FaultKind::DropConnection));

    let result = client()
        .get(hub.file_url(REPO, "main", WEIGHTS))
        .send()
        .await;
    assert!(result.is_err(), "expected an error, got {result:?}");
    let logged = last_request(&hub);
    assert_eq!((logged.status, logged.body_bytes), (0, 0));
}

#[tokio::test]
async fn truncated_body_fails_the_read_after_the_given_bytes() {
    let (hub, _) = hub_with_model();
    hub.inject(Fault::new(
        WEIGHTS,
        FaultKind::TruncateBody { after_bytes: 3000 },
    ));

    // Body faults leave HEAD alone, so a client's metadata request does not use them up.
    let head = client()
        .head(hub.file_url(REPO, "main", WEIGHTS))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);

    let response = get(&hub.file_url(REPO, "main", WEIGHTS)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.content_length(), Some(10_000));
    let (bytes, failed) = read_body(response).await;
    assert!(failed, "a short body must be a read error");
    assert!(bytes.len() <= 3000);
    assert_eq!(bytes.as_slice(), &weights()[..bytes.len()]);
    assert_eq!(last_request(&hub).body_bytes, 3000);
    assert_eq!(hub.body_bytes_served(WEIGHTS), 3000);
}

#[tokio::test]
async fn corrupt_body_flips_one_byte() {
    let (hub, _) = hub_with_model();
    hub.inject(Fault::new(WEIGHTS, FaultKind::CorruptBody { offset: 1234 }));

    let body = get(&hub.file_url(REPO, "main", WEIGHTS))
        .await
        .bytes()
        .await
        .unwrap();
    let original = weights();
    assert_eq!(body.len(), original.len());
    assert_ne!(sha256_hex(&body), hub.file_etag(REPO, "main", WEIGHTS));
    let differing: Vec<usize> = (0..body.len())
        .filter(|&i| body[i] != original[i])
        .collect();
    assert_eq!(differing, [1234]);
    assert_eq!(body[1234], original[1234] ^ 0xFF);
}

#[tokio::test]
async fn stalled_body_arrives_late_but_whole() {
    let (hub, _) = hub_with_model();
    let stall = Duration::from_millis(300);
    hub.inject(Fault::new(
        WEIGHTS,
        FaultKind::StallBody {
            after_bytes: 100,
            stall,
        },
    ));

    let started = Instant::now();
    let body = get(&hub.file_url(REPO, "main", WEIGHTS))
        .await
        .bytes()
        .await
        .unwrap();
    assert!(started.elapsed() >= stall);
    assert_eq!(body.as_ref(), weights().as_slice());
}

#[tokio::test]
async fn error_page_replaces_the_file() {
    let (hub, _) = hub_with_model();
    let page = "<html><body>Please log in to the Wi-Fi</body></html>".to_string();
    hub.inject(Fault::new(
        WEIGHTS,
        FaultKind::ErrorPage {
            status: 200,
            body: page.clone(),
        },
    ));

    let response = get(&hub.file_url(REPO, "main", WEIGHTS)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(response.headers(), "x-repo-commit"), None);
    assert_eq!(response.text().await.unwrap(), page);
}

#[tokio::test]
async fn log_records_status_query_and_body_bytes() {
    let (hub, _) = hub_with_model();
    get(&hub.file_url(REPO, "main", WEIGHTS))
        .await
        .bytes()
        .await
        .unwrap();
    get_with(&hub.file_url(REPO, "main", WEIGHTS), "Range", "bytes=0-99")
        .await
        .bytes()
        .await
        .unwrap();
    get(&hub.file_url(REPO, "main", "missing.txt")).await;
    get(&format!(
        "{}/api/models/{REPO}/tree/main?recursive=true",
        hub.endpoint()
    ))
    .await;

    let log = hub.requests();
    let summary: Vec<(&str, u16, u64)> = log
        .iter()
        .map(|r| (r.method.as_str(), r.status, r.body_bytes))
        .collect();
    assert_eq!(summary[..2], [("GET", 200, 10_000), ("GET", 206, 100)]);
    assert_eq!((summary[2].1, summary[3].1), (404, 200));
    assert_eq!(log[3].path, format!("/api/models/{REPO}/tree/main"));
    assert_eq!(log[3].query.as_deref(), Some("recursive=true"));
    assert_eq!(hub.body_bytes_served(WEIGHTS), 10_100);

    hub.clear_log();
    assert!(hub.requests().is_empty());
    assert_eq!(hub.body_bytes_served(WEIGHTS), 0);
}

#[tokio::test]
async fn revision_api_gives_sha_and_siblings() {
    let (hub, commit) = hub_with_model();
    let url = format!("{}/api/models/{REPO}/revision/main", hub.endpoint());
    let json = get_json(&url).await;

    assert_eq!(json["id"], REPO);
    assert_eq!(json["sha"], commit.as_str());
    let siblings: Vec<&str> = json["siblings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["rfilename"].as_str().unwrap())
        .collect();
    assert_eq!(siblings, [CONFIG, WEIGHTS, TOKENIZER]);

    let missing = format!("{}/api/models/{REPO}/revision/nope", hub.endpoint());
    let response = get(&missing).await;
    assert_eq!(
        header(response.headers(), "x-error-code"),
        Some("RevisionNotFound")
    );
}

#[tokio::test]
async fn tree_api_lists_files_and_directories() {
    let (hub, _) = hub_with_model();
    let base = format!("{}/api/models/{REPO}/tree/main", hub.endpoint());

    let all = get_json(&format!("{base}?recursive=true")).await;
    let entries = all.as_array().unwrap();
    let listed: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), e["path"].as_str().unwrap()))
        .collect();
    assert_eq!(
        listed,
        [
            ("file", CONFIG),
            ("file", WEIGHTS),
            ("directory", "tok"),
            ("directory", "tok/en"),
            ("file", TOKENIZER),
        ]
    );

    let config_entry = &entries[0];
    assert_eq!(config_entry["oid"], git_sha1_hex(&config()).as_str());
    assert_eq!(config_entry["size"], config().len());
    assert!(config_entry.get("lfs").is_none());

    let weights_entry = &entries[1];
    let sha256 = sha256_hex(&weights());
    assert_eq!(weights_entry["size"], 10_000);
    assert_eq!(weights_entry["lfs"]["sha256"], sha256.as_str());
    assert_eq!(weights_entry["lfs"]["oid"], sha256.as_str());
    assert_eq!(weights_entry["lfs"]["size"], 10_000);
    let pointer =
        format!("version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize 10000\n");
    assert_eq!(weights_entry["lfs"]["pointerSize"], pointer.len());
    assert_eq!(
        weights_entry["oid"],
        git_sha1_hex(pointer.as_bytes()).as_str()
    );

    let top = get_json(&base).await;
    let top_paths: Vec<&str> = top
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(top_paths, [CONFIG, WEIGHTS, "tok"]);

    let sub = get_json(&format!("{base}/tok")).await;
    assert_eq!(sub[0]["path"], "tok/en");
}

#[tokio::test]
async fn dropping_the_hub_stops_the_server() {
    let hub = TestHub::start();
    let endpoint = hub.endpoint();
    drop(hub);
    let result = client().get(format!("{endpoint}/x")).send().await;
    assert!(result.is_err());
}
