//! Failure paths against a hub that misbehaves for real: each gives the right `MoshiError`, and
//! no bad file is left where a later run would trust it.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use fluent_voice_kyutai::{KyutaiModelManager, MoshiError};
use support::*;

/// Files in the cache whose name says they are complete blobs (not `.incomplete`).
fn blobs(cache: &Path, repo: &str) -> Vec<String> {
    let dir = cache
        .join(format!("models--{}", repo.replace('/', "--")))
        .join("blobs");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| !n.ends_with(".incomplete"))
        .collect()
}

fn manager(hub: &TestHub, cache: &Path) -> KyutaiModelManager {
    KyutaiModelManager::with_config(config(hub, cache)).unwrap()
}

#[tokio::test]
async fn missing_repository() {
    let hub = TestHub::start();
    let cache = tempfile::tempdir().unwrap();
    let m = KyutaiModelManager::with_config(config(&hub, cache.path()).stt_repo("nobody/nothing"))
        .unwrap();
    let error = m.fetch_stt().await.unwrap_err();
    assert!(
        matches!(&error, MoshiError::RepoNotFound { repo, .. } if repo == "nobody/nothing"),
        "{error:?}"
    );
    assert!(error.to_string().contains("nobody/nothing"));
}

#[tokio::test]
async fn missing_file_names_the_file_and_is_remembered() {
    let hub = TestHub::start();
    let mut files = tiny::stt_repo();
    files.retain(|(p, _)| p != tiny::STT_MIMI_NAME);
    let commit = publish(&hub, STT, "main", &files);
    let cache = tempfile::tempdir().unwrap();
    let error = manager(&hub, cache.path()).fetch_stt().await.unwrap_err();
    match &error {
        MoshiError::FileNotFound { repo, file, .. } => {
            assert_eq!(repo, STT);
            assert_eq!(file, tiny::STT_MIMI_NAME);
        }
        other => panic!("{other:?}"),
    }
    // Python's `.no_exist` marker records it.
    let marker = cache
        .path()
        .join("models--kyutai--stt-1b-en_fr-candle/.no_exist")
        .join(&commit)
        .join(tiny::STT_MIMI_NAME);
    assert!(marker.exists());
}

#[tokio::test]
async fn gated_repository_without_and_with_a_wrong_token() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    hub.require_token(STT, "hf_right");
    let cache = tempfile::tempdir().unwrap();
    let error = manager(&hub, cache.path()).fetch_stt().await.unwrap_err();
    match &error {
        MoshiError::AuthenticationRequired { status, .. } => assert_eq!(*status, 401),
        other => panic!("{other:?}"),
    }
    let text = error.to_string();
    assert!(
        text.contains("HF_TOKEN") && text.contains("licence"),
        "{text}"
    );

    let m = KyutaiModelManager::with_config(config(&hub, cache.path()).token("hf_wrong")).unwrap();
    let error = m.fetch_stt().await.unwrap_err();
    assert!(
        matches!(
            error,
            MoshiError::AuthenticationRequired { status: 403, .. }
        ),
        "{error:?}"
    );
    assert!(
        !error.to_string().contains("hf_wrong"),
        "the token must not leak"
    );

    let m = KyutaiModelManager::with_config(config(&hub, cache.path()).token("hf_right")).unwrap();
    m.fetch_stt().await.unwrap();
    assert!(
        hub.requests()
            .iter()
            .filter(|r| r.status == 200)
            .all(|r| r.authorization.as_deref() == Some("Bearer hf_right"))
    );
}

#[tokio::test]
async fn server_not_listening_is_a_network_error_after_retries() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let cache = tempfile::tempdir().unwrap();
    let m = KyutaiModelManager::with_config(
        fluent_voice_kyutai::KyutaiModelConfig::default()
            .endpoint(format!("http://127.0.0.1:{port}"))
            .cache_dir(cache.path())
            .offline(false)
            .progress(fluent_voice_kyutai::models::ProgressMode::Quiet)
            .max_attempts(3)
            .retry_backoff(Duration::from_millis(10)),
    )
    .unwrap();
    let error = m.fetch_stt().await.unwrap_err();
    match &error {
        MoshiError::Network {
            attempts, reason, ..
        } => {
            assert_eq!(*attempts, 3);
            assert!(reason.contains("could not connect"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn service_unavailable_twice_then_success() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    hub.inject(
        Fault::new(tiny::STT_MOSHI_NAME, FaultKind::Status(503))
            .method("GET")
            .times(2),
    );
    let cache = tempfile::tempdir().unwrap();
    let stt = manager(&hub, cache.path()).fetch_stt().await.unwrap();
    let statuses: Vec<u16> = hub
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(tiny::STT_MOSHI_NAME))
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![503, 503, 200]);
    assert!(stt.lm_weights.exists());
}

#[tokio::test]
async fn rate_limit_waits_for_retry_after() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    hub.inject(
        Fault::new(
            "config.json",
            FaultKind::RateLimited {
                retry_after_secs: 1,
            },
        )
        .times(1),
    );
    let cache = tempfile::tempdir().unwrap();
    let started = Instant::now();
    manager(&hub, cache.path()).fetch_stt().await.unwrap();
    // The backoff is 10 ms: only Retry-After explains a wait of a second.
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(hub.requests()[0].status, 429);
}

#[tokio::test]
async fn corrupted_bytes_once_are_downloaded_again() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    hub.inject(Fault::new(tiny::STT_MOSHI_NAME, FaultKind::CorruptBody { offset: 100 }).times(1));
    let cache = tempfile::tempdir().unwrap();
    let stt = manager(&hub, cache.path()).fetch_stt().await.unwrap();
    let expected = repo_file(&tiny::stt_repo(), tiny::STT_MOSHI_NAME);
    assert_eq!(std::fs::read(&stt.lm_weights).unwrap(), expected);
    assert_eq!(downloads_of(&hub, tiny::STT_MOSHI_NAME), 2);
}

#[tokio::test]
async fn persistently_corrupted_bytes_are_an_integrity_error_and_nothing_is_kept() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    hub.inject(Fault::new(tiny::STT_MOSHI_NAME, FaultKind::CorruptBody { offset: 100 }).times(100));
    let cache = tempfile::tempdir().unwrap();
    let error = manager(&hub, cache.path()).fetch_stt().await.unwrap_err();
    let etag = hub.file_etag(STT, "main", tiny::STT_MOSHI_NAME);
    match &error {
        MoshiError::IntegrityMismatch {
            file,
            expected,
            actual,
            ..
        } => {
            assert_eq!(file, tiny::STT_MOSHI_NAME);
            assert_eq!(expected, &etag);
            assert_ne!(actual, &etag);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !blobs(cache.path(), STT).contains(&etag),
        "a corrupt blob was kept"
    );
    let partial = cache
        .path()
        .join("models--kyutai--stt-1b-en_fr-candle/blobs")
        .join(format!("{etag}.incomplete"));
    assert!(!partial.exists(), "a corrupt partial file was kept");
}

#[tokio::test]
async fn a_body_shorter_than_announced_is_resumed_with_a_range_request() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    hub.inject(
        Fault::new(
            tiny::STT_MOSHI_NAME,
            FaultKind::TruncateBody { after_bytes: 1000 },
        )
        .times(1),
    );
    let cache = tempfile::tempdir().unwrap();
    let stt = manager(&hub, cache.path()).fetch_stt().await.unwrap();
    let expected = repo_file(&tiny::stt_repo(), tiny::STT_MOSHI_NAME);
    assert_eq!(std::fs::read(&stt.lm_weights).unwrap(), expected);
    let gets: Vec<_> = hub
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(tiny::STT_MOSHI_NAME))
        .collect();
    assert_eq!(gets.len(), 2, "{gets:#?}");
    assert_eq!(gets[1].status, 206);
    let resumed_at: u64 = gets[1]
        .range
        .as_deref()
        .unwrap()
        .trim_start_matches("bytes=")
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(resumed_at > 0 && resumed_at <= 1000, "{resumed_at}");
    assert_eq!(gets[1].body_bytes, expected.len() as u64 - resumed_at);
}

#[tokio::test]
async fn a_body_always_cut_short_is_a_network_error_and_no_blob_is_trusted() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    // Every attempt sends no body byte at all, so no progress is possible.
    hub.inject(
        Fault::new(
            tiny::STT_MOSHI_NAME,
            FaultKind::TruncateBody { after_bytes: 0 },
        )
        .times(100),
    );
    let cache = tempfile::tempdir().unwrap();
    let error = manager(&hub, cache.path()).fetch_stt().await.unwrap_err();
    match &error {
        MoshiError::Network { url, reason, .. } => {
            assert!(url.ends_with(tiny::STT_MOSHI_NAME));
            assert!(reason.contains("bytes"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let etag = hub.file_etag(STT, "main", tiny::STT_MOSHI_NAME);
    assert!(!blobs(cache.path(), STT).contains(&etag));
    let link = cache
        .path()
        .join("models--kyutai--stt-1b-en_fr-candle/snapshots");
    let linked = std::fs::read_dir(&link)
        .map(|mut d| d.any(|e| e.unwrap().path().join(tiny::STT_MOSHI_NAME).exists()))
        .unwrap_or(false);
    assert!(!linked);
}

#[tokio::test]
async fn an_error_page_served_as_the_file_is_rejected() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    hub.inject(
        Fault::new(
            "config.json",
            FaultKind::ErrorPage {
                status: 200,
                body: "<html>Access denied by proxy</html>".into(),
            },
        )
        .method("GET")
        .times(100),
    );
    let cache = tempfile::tempdir().unwrap();
    let error = manager(&hub, cache.path()).fetch_stt().await.unwrap_err();
    assert!(
        matches!(
            error,
            MoshiError::SizeMismatch { .. } | MoshiError::IntegrityMismatch { .. }
        ),
        "{error:?}"
    );
    assert!(blobs(cache.path(), STT).is_empty());
}

#[tokio::test]
async fn a_corrupted_cached_blob_is_detected_and_fetched_again() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    let cache = tempfile::tempdir().unwrap();
    let stt = manager(&hub, cache.path()).fetch_stt().await.unwrap();
    let blob = std::fs::canonicalize(&stt.lm_weights).unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[200] ^= 0x01;
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&blob, &bytes).unwrap();

    hub.clear_log();
    let stt = manager(&hub, cache.path()).fetch_stt().await.unwrap();
    let expected = repo_file(&tiny::stt_repo(), tiny::STT_MOSHI_NAME);
    assert_eq!(std::fs::read(&stt.lm_weights).unwrap(), expected);
    assert_eq!(downloads_of(&hub, tiny::STT_MOSHI_NAME), 1);
}

#[tokio::test]
async fn offline_hit_makes_no_request_and_miss_is_a_clear_error() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    let cache = tempfile::tempdir().unwrap();
    manager(&hub, cache.path()).fetch_stt().await.unwrap();
    hub.clear_log();
    let offline =
        KyutaiModelManager::with_config(config(&hub, cache.path()).offline(true)).unwrap();
    let stt = offline.fetch_stt().await.unwrap();
    assert!(stt.lm_weights.exists());
    assert!(hub.requests().is_empty(), "{:#?}", hub.requests());

    let error = offline.fetch_tts().await.unwrap_err();
    match &error {
        MoshiError::OfflineNotCached { repo, file, .. } => {
            assert_eq!(repo, TTS);
            assert_eq!(file, "config.json");
        }
        other => panic!("{other:?}"),
    }
    assert!(error.to_string().contains("kyutai download"));
    assert!(hub.requests().is_empty());
}

#[tokio::test]
async fn unreachable_hub_falls_back_to_the_verified_cache() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    let cache = tempfile::tempdir().unwrap();
    let first = manager(&hub, cache.path()).fetch_stt().await.unwrap();
    hub.inject(Fault::new("", FaultKind::Status(503)).times(1000));
    hub.clear_log();
    let m = KyutaiModelManager::with_config(config(&hub, cache.path()).max_attempts(2)).unwrap();
    let stt = m.fetch_stt().await.unwrap();
    // The hub was asked and failed every time: this is the fallback, not a plain cache hit.
    let requests = hub.requests();
    assert!(!requests.is_empty(), "the hub was not asked");
    assert!(requests.iter().all(|r| r.status == 503), "{requests:#?}");
    // The same verified snapshot as before, byte for byte.
    assert_eq!(stt.commit, first.commit);
    for (path, before, name) in [
        (&stt.config, &first.config, "config.json"),
        (&stt.lm_weights, &first.lm_weights, tiny::STT_MOSHI_NAME),
        (&stt.mimi_weights, &first.mimi_weights, tiny::STT_MIMI_NAME),
        (&stt.tokenizer, &first.tokenizer, tiny::STT_TOKENIZER_NAME),
    ] {
        assert_eq!(path, before, "{name}");
        assert_eq!(
            std::fs::read(path).unwrap(),
            repo_file(&tiny::stt_repo(), name),
            "{name}"
        );
    }
}
