//! Reliability in one process: a body that stalls, a disk that is full or fills up (a real tmpfs),
//! hostile files served by the hub, the token kept secret, and 16 concurrent users of one engine.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fluent_voice_kyutai::internals::Provider;
use fluent_voice_kyutai::models::ProgressEvent;
use fluent_voice_kyutai::{KyutaiEngine, KyutaiModelManager, MoshiError};
use support::*;

const MB: usize = 1 << 20;
const BIG: &str = "big.bin";

/// An STT repository whose `config.json` names `big.bin` (an opaque file of `size` bytes) as the
/// LM weights, next to the tiny Mimi, tokenizer and Mimi config.
fn big_stt_repo(size: usize, seed: u64) -> Vec<(String, Vec<u8>)> {
    let mut config = tiny::stt_config();
    config["moshi_name"] = BIG.into();
    let mut files: Vec<(String, Vec<u8>)> = tiny::stt_repo()
        .into_iter()
        .filter(|(path, _)| path != tiny::STT_MOSHI_NAME && path != "config.json")
        .collect();
    files.push(("config.json".into(), tiny::json_bytes(&config)));
    files.push((BIG.into(), tiny::big_file(size, seed)));
    files
}

fn gets(hub: &TestHub, suffix: &str) -> Vec<LoggedRequest> {
    hub.requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(suffix))
        .collect()
}

fn blobs_dir(cache: &Path, repo: &str) -> PathBuf {
    cache
        .join(format!("models--{}", repo.replace('/', "--")))
        .join("blobs")
}

/// Names in a blobs folder.
fn blob_names(cache: &Path, repo: &str) -> Vec<String> {
    std::fs::read_dir(blobs_dir(cache, repo))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Stalls

#[tokio::test]
async fn a_stalled_body_is_abandoned_after_the_read_timeout_and_resumed() {
    let repo = "test/stalling";
    let hub = TestHub::start();
    let files = big_stt_repo(8 * MB, 11);
    publish(&hub, repo, "main", &files);
    // 3 MB, then 20 s of silence: far longer than the read timeout of 500 ms.
    hub.inject(Fault::new(
        BIG,
        FaultKind::StallBody {
            after_bytes: 3 * MB as u64,
            stall: Duration::from_secs(20),
        },
    ));
    let cache = tempfile::tempdir().unwrap();
    let manager = KyutaiModelManager::with_config(
        config(&hub, cache.path())
            .stt_repo(repo)
            .read_timeout(Duration::from_millis(500)),
    )
    .unwrap();
    let started = Instant::now();
    let stt = manager.fetch_stt().await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let big_gets = gets(&hub, BIG);
    assert_eq!(big_gets.len(), 2, "{big_gets:#?}");
    let resumed_at: u64 = big_gets[1]
        .range
        .as_deref()
        .expect("the retry resumes")
        .trim_start_matches("bytes=")
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(
        resumed_at > 0 && resumed_at <= 3 * MB as u64,
        "{resumed_at}"
    );
    assert_eq!(big_gets[1].status, 206);
    assert_eq!(big_gets[1].body_bytes, 8 * MB as u64 - resumed_at);
    let expected = &files.iter().find(|(p, _)| p == BIG).unwrap().1;
    assert_eq!(&std::fs::read(&stt.lm_weights).unwrap(), expected);
    eprintln!(
        "stall: attempt 1 sent {} bytes then went silent; resumed at {resumed_at}, attempt 2 \
         sent {}; done in {took:.1?}",
        big_gets[0].body_bytes, big_gets[1].body_bytes
    );
}

// ---------------------------------------------------------------------------------------------
// Disk full

/// Why the disk-full tests are ignored by a plain `cargo test`: they mount a real tmpfs.
/// `.ci/run` (as root) runs them with `cargo test --locked --test reliability_faults --
/// --ignored`; so can anyone with the right to mount.
const NEEDS_MOUNT: &str = "mounts a tmpfs: needs root or CAP_SYS_ADMIN; .ci/run runs it as root";

/// A tmpfs of a given size, unmounted on drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    /// Mounts the tmpfs, or fails the test: a disk-full test that cannot make a full disk has
    /// not tested anything.
    fn mount(size_mb: usize) -> SmallFs {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(dir.path())
            .output();
        match mounted {
            Ok(output) if output.status.success() => SmallFs { dir },
            other => {
                panic!("cannot mount a {size_mb} MB tmpfs ({other:?}): this test {NEEDS_MOUNT}")
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test]
#[ignore = "mounts a tmpfs: needs root or CAP_SYS_ADMIN; .ci/run runs it as root"]
async fn a_disk_too_small_is_reported_before_any_byte_is_downloaded() {
    let fs = SmallFs::mount(64);
    let repo = "test/too-big";
    let hub = TestHub::start();
    let files = big_stt_repo(100 * MB, 12);
    publish(&hub, repo, "main", &files);
    // Everything the model needs besides config.json (fetched first, to learn the names).
    let model_bytes: u64 = files
        .iter()
        .filter(|(p, _)| !["config.json", "README.md", ".gitattributes"].contains(&p.as_str()))
        .map(|(_, b)| b.len() as u64)
        .sum();
    let cache = fs.path().join("hub");
    let manager = KyutaiModelManager::with_config(config(&hub, &cache).stt_repo(repo)).unwrap();
    let error = manager.fetch_stt().await.unwrap_err();
    match &error {
        MoshiError::DiskFull {
            dir,
            needed,
            available,
        } => {
            assert_eq!(dir, &blobs_dir(&cache, repo));
            assert_eq!(*needed, model_bytes);
            assert!(*available <= 64 * MB as u64, "{available}");
        }
        other => panic!("{other:?}"),
    }
    let text = error.to_string();
    assert!(
        text.contains(&blobs_dir(&cache, repo).display().to_string())
            && text.contains(&model_bytes.to_string())
            && text.contains("HF_HUB_CACHE"),
        "{text}"
    );
    assert!(gets(&hub, BIG).is_empty(), "not one byte was asked for");
    eprintln!("disk too small: {error}");
    let etag = hub.file_etag(repo, "main", BIG);
    assert!(
        blob_names(&cache, repo)
            .iter()
            .all(|n| !n.starts_with(&etag)),
        "{:?}",
        blob_names(&cache, repo)
    );
}

#[tokio::test]
#[ignore = "mounts a tmpfs: needs root or CAP_SYS_ADMIN; .ci/run runs it as root"]
async fn files_that_fit_one_by_one_but_not_together_are_refused_up_front() {
    let fs = SmallFs::mount(64);
    let repo = "test/two-big";
    let hub = TestHub::start();
    let mut files = big_stt_repo(40 * MB, 14);
    let mut config_json = tiny::stt_config();
    config_json["moshi_name"] = BIG.into();
    config_json["mimi_name"] = "big2.bin".into();
    files.retain(|(p, _)| p != "config.json");
    files.push(("config.json".into(), tiny::json_bytes(&config_json)));
    files.push(("big2.bin".into(), tiny::big_file(40 * MB, 15)));
    publish(&hub, repo, "main", &files);
    let cache = fs.path().join("hub");
    let error = KyutaiModelManager::with_config(config(&hub, &cache).stt_repo(repo))
        .unwrap()
        .fetch_stt()
        .await
        .unwrap_err();
    let small: u64 = files
        .iter()
        .filter(|(p, _)| p == tiny::STT_TOKENIZER_NAME || p == tiny::MIMI_CONFIG_NAME)
        .map(|(_, b)| b.len() as u64)
        .sum();
    match &error {
        MoshiError::DiskFull { needed, .. } => assert_eq!(*needed, 80 * MB as u64 + small),
        other => panic!("{other:?}"),
    }
    // Only metadata was asked for: no transfer started, so nothing is half-written.
    assert!(
        hub.requests()
            .iter()
            .filter(|r| r.path.contains("/resolve/") && !r.path.ends_with("config.json"))
            .all(|r| r.method == "HEAD"),
        "{:?}",
        hub.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "mounts a tmpfs: needs root or CAP_SYS_ADMIN; .ci/run runs it as root"]
async fn a_disk_that_fills_during_the_download_is_reported_and_leaves_nothing_to_trust() {
    let fs = SmallFs::mount(64);
    let repo = "test/fills-up";
    let hub = TestHub::start();
    let files = big_stt_repo(40 * MB, 13);
    publish(&hub, repo, "main", &files);
    let etag = hub.file_etag(repo, "main", BIG);
    let cache = fs.path().join("hub");
    let partial = blobs_dir(&cache, repo).join(format!("{etag}.incomplete"));
    // The up-front check passes (40 MB needed, 64 MB free); then, 8 MB in, the test fills the
    // disk behind the download's back.
    hub.inject(Fault::new(
        BIG,
        FaultKind::HoldBody {
            after_bytes: 8 * MB as u64,
            gate: "fill".into(),
        },
    ));
    let manager =
        Arc::new(KyutaiModelManager::with_config(config(&hub, &cache).stt_repo(repo)).unwrap());
    let download = tokio::spawn({
        let manager = manager.clone();
        async move { manager.fetch_stt().await }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) < 6 * MB as u64 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ballast = fs.path().join("ballast");
    std::fs::write(&ballast, vec![1u8; 45 * MB]).unwrap();
    hub.open_gate("fill");
    let error = download.await.unwrap().unwrap_err();
    match &error {
        MoshiError::DiskFull { dir, needed, .. } => {
            assert_eq!(dir, &blobs_dir(&cache, repo));
            assert!(*needed > 0 && *needed <= 32 * MB as u64, "{needed}");
        }
        other => panic!("{other:?}"),
    }
    // No partial file (its space is given back) and nothing under the blob name or in the
    // snapshot that a later run could take for the file.
    let names = blob_names(&cache, repo);
    assert!(names.iter().all(|n| !n.starts_with(&etag)), "{names:?}");
    let snapshot = cache
        .join("models--test--fills-up/snapshots")
        .join(hub.commit(repo, "main"))
        .join(BIG);
    assert!(std::fs::symlink_metadata(&snapshot).is_err());

    eprintln!(
        "disk filled: {error}; {} bytes of big.bin had been sent; left in blobs/: {names:?}",
        hub.body_bytes_served(BIG)
    );
    // Once space is freed, the next run downloads and verifies the file.
    std::fs::remove_file(&ballast).unwrap();
    let stt = manager.fetch_stt().await.unwrap();
    let expected = &files.iter().find(|(p, _)| p == BIG).unwrap().1;
    assert_eq!(&std::fs::read(&stt.lm_weights).unwrap(), expected);
}

// ---------------------------------------------------------------------------------------------
// Hostile files

/// Publishes the tiny STT repo with `file` replaced by `bytes` (or added), and fetches it.
async fn fetch_stt_with(file: &str, bytes: Vec<u8>) -> (MoshiError, TestHub, tempfile::TempDir) {
    let hub = TestHub::start();
    let mut files = tiny::stt_repo();
    files.retain(|(p, _)| p != file);
    files.push((file.to_string(), bytes));
    publish(&hub, STT, "main", &files);
    let cache = tempfile::tempdir().unwrap();
    let manager = KyutaiModelManager::with_config(config(&hub, cache.path())).unwrap();
    let started = Instant::now();
    let error = manager
        .fetch_stt()
        .await
        .expect_err("a hostile file is refused");
    assert!(started.elapsed() < Duration::from_secs(10), "no hang");
    (error, hub, cache)
}

/// A safetensors file with this header text and `data_len` data bytes.
fn safetensors_with_header(header: &str, data_len: usize) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.resize(bytes.len() + data_len, 0);
    bytes
}

#[tokio::test]
async fn hostile_safetensors_headers_are_clear_errors() {
    let huge_length = {
        let mut bytes = tiny::stt_lm_safetensors();
        bytes[..8].copy_from_slice(&(u64::MAX - 7).to_le_bytes());
        bytes
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a header length of 2^64 - 8", huge_length),
        (
            "data offsets past the end",
            safetensors_with_header(
                r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,1099511627776]}}"#,
                8,
            ),
        ),
        (
            "a shape whose size overflows",
            safetensors_with_header(
                r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}"#,
                8,
            ),
        ),
        (
            "overlapping tensors",
            safetensors_with_header(
                r#"{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}"#,
                8,
            ),
        ),
        (
            "an unknown dtype",
            safetensors_with_header(
                r#"{"w":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}"#,
                16,
            ),
        ),
        ("seven bytes", vec![1, 2, 3, 4, 5, 6, 7]),
    ];
    for (what, bytes) in cases {
        let (error, _hub, cache) = fetch_stt_with(tiny::STT_MOSHI_NAME, bytes).await;
        match &error {
            MoshiError::InvalidModelFile { path, reason } => {
                assert!(
                    path.to_string_lossy().ends_with(tiny::STT_MOSHI_NAME),
                    "{what}: {path:?}"
                );
                assert!(!reason.is_empty(), "{what}");
            }
            other => panic!("{what}: {other:?}"),
        }
        // Hash-verified but not a model file: nothing is kept.
        let etag = _hub.file_etag(STT, "main", tiny::STT_MOSHI_NAME);
        assert!(
            blob_names(cache.path(), STT)
                .iter()
                .all(|n| !n.starts_with(&etag)),
            "{what}"
        );
    }
}

#[tokio::test]
async fn tensor_names_with_path_tricks_are_only_names() {
    // Weights whose tensor names look like paths pass the format check (they are data; nothing
    // uses them as paths) and create nothing outside the cache.
    let outside = tempfile::tempdir().unwrap();
    let evil = format!("{}/evil", outside.path().display());
    let header = format!(
        r#"{{"../../../../{0}":{{"dtype":"U8","shape":[4],"data_offsets":[0,4]}},"{0}":{{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}}}"#,
        evil.trim_start_matches('/')
    );
    let hub = TestHub::start();
    let mut files = tiny::stt_repo();
    files.retain(|(p, _)| p != tiny::STT_MOSHI_NAME);
    files.push((
        tiny::STT_MOSHI_NAME.into(),
        safetensors_with_header(&header, 8),
    ));
    publish(&hub, STT, "main", &files);
    let cache = tempfile::tempdir().unwrap();
    KyutaiModelManager::with_config(config(&hub, cache.path()))
        .unwrap()
        .fetch_stt()
        .await
        .unwrap();
    assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());

    // A voice file whose only tensor is a path-like name close to `speaker_wavs` is refused.
    let hub = TestHub::start();
    publish_defaults(&hub);
    let voice = "expresso/tricky";
    let header = r#"{"speaker_wavs/../x":{"dtype":"F32","shape":[1,16,2],"data_offsets":[0,128]}}"#;
    publish(
        &hub,
        VOICES,
        "main",
        &[(
            tiny::voice_file(voice),
            safetensors_with_header(header, 128),
        )],
    );
    let cache = tempfile::tempdir().unwrap();
    let engine = KyutaiEngine::with_config(config(&hub, cache.path()))
        .await
        .unwrap();
    let error = engine.ensure_voice(voice).await.unwrap_err();
    assert!(
        matches!(&error, MoshiError::InvalidModelFile { reason, .. } if reason.contains("speaker_wavs")),
        "{error:?}"
    );
}

#[tokio::test]
async fn voice_files_of_the_wrong_shape_are_clear_errors() {
    for (shape, data) in [("[16,125]", 16 * 125 * 4), ("[2,16,125]", 2 * 16 * 125 * 4)] {
        let hub = TestHub::start();
        publish_defaults(&hub);
        let voice = "expresso/misshapen";
        let header = format!(
            r#"{{"speaker_wavs":{{"dtype":"F32","shape":{shape},"data_offsets":[0,{data}]}}}}"#
        );
        publish(
            &hub,
            VOICES,
            "main",
            &[(
                tiny::voice_file(voice),
                safetensors_with_header(&header, data),
            )],
        );
        let cache = tempfile::tempdir().unwrap();
        let engine = KyutaiEngine::with_config(config(&hub, cache.path()))
            .await
            .unwrap();
        let error = engine.ensure_voice(voice).await.unwrap_err();
        match &error {
            MoshiError::InvalidModelFile { reason, .. } => {
                assert!(reason.contains("[1, dim, frames]"), "{shape}: {reason}")
            }
            other => panic!("{shape}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn hostile_config_json_files_are_clear_errors() {
    let with = |key: &str, value: serde_json::Value| {
        let mut config = tiny::stt_config();
        config[key] = value;
        tiny::json_bytes(&config)
    };
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "a number as a file name",
            with("mimi_name", 3.into()),
            "mimi_name",
        ),
        (
            "a file name leaving the repository",
            with("tokenizer_name", "../../../../etc/passwd".into()),
            "../../../../etc/passwd",
        ),
        (
            "an absolute file name",
            with("mimi_name", "/etc/passwd".into()),
            "/etc/passwd",
        ),
        ("an array", b"[1, 2, 3]".to_vec(), "not an object"),
        ("not JSON", b"\xff\xfe<html>".to_vec(), "not valid JSON"),
        ("nested 100 000 deep", deep.into_bytes(), "not valid JSON"),
        (
            "20 MB of whitespace",
            {
                let mut bytes = vec![b' '; 20 * MB];
                bytes.extend_from_slice(b"{}");
                bytes
            },
            "not plausible",
        ),
    ];
    for (what, bytes, expected) in cases {
        let (error, _hub, _cache) = fetch_stt_with("config.json", bytes).await;
        let text = error.to_string();
        assert!(
            matches!(error, MoshiError::InvalidModelFile { .. }),
            "{what}: {error:?}"
        );
        assert!(text.contains(expected), "{what}: {text}");
    }

    // Missing keys fall back to the Python loader's default names, which this repo lacks: the
    // error names the file that was looked for.
    let mut config = tiny::stt_config();
    config.as_object_mut().unwrap().remove("mimi_name");
    let (error, _hub, _cache) = fetch_stt_with("config.json", tiny::json_bytes(&config)).await;
    assert!(
        matches!(&error, MoshiError::FileNotFound { file, .. } if file.starts_with("tokenizer-e351c8d8")),
        "{error:?}"
    );

    // A TTS `model_id` of the wrong type.
    let hub = TestHub::start();
    let mut tts = tiny::tts_config();
    tts["model_id"] = serde_json::json!({"sig": [1], "epoch": null});
    let mut files = tiny::tts_repo();
    files.retain(|(p, _)| p != "config.json");
    files.push(("config.json".into(), tiny::json_bytes(&tts)));
    publish(&hub, TTS, "main", &files);
    let cache = tempfile::tempdir().unwrap();
    let error = KyutaiModelManager::with_config(config_for(&hub, cache.path()))
        .unwrap()
        .fetch_tts()
        .await
        .unwrap_err();
    assert!(error.to_string().contains("model_id"), "{error}");
}

fn config_for(hub: &TestHub, cache: &Path) -> fluent_voice_kyutai::KyutaiModelConfig {
    config(hub, cache)
}

// ---------------------------------------------------------------------------------------------
// Secrets

const TOKEN: &str = "hf_SeCrEt_token_0123456789";

/// Captures every log record of the process (all levels), to search it for the token.
struct Capture(parking_lot::Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        self.0.lock().push(format!(
            "{} {} {}",
            record.level(),
            record.target(),
            record.args()
        ));
    }
    fn flush(&self) {}
}

static LOGS: Capture = Capture(parking_lot::Mutex::new(Vec::new()));

#[tokio::test]
async fn the_token_is_never_shown_and_never_sent_to_another_host() {
    let _ = log::set_logger(&LOGS);
    log::set_max_level(log::LevelFilter::Trace);
    let mut seen: Vec<String> = Vec::new();

    // The hub (127.0.0.1:A) redirects downloads to a CDN on another host (localhost:B) and on
    // another port of the same address (127.0.0.1:C); both serve the same files.
    let hub = TestHub::start();
    let published = publish_defaults(&hub);
    hub.require_token(STT, TOKEN);
    let cdn = TestHub::start();
    let other_port = TestHub::start();
    for mirror in [&cdn, &other_port] {
        assert_eq!(publish_defaults(mirror).stt, published.stt);
    }
    let cdn_port = cdn.endpoint().rsplit(':').next().unwrap().to_string();
    let redirect = |file: &str, base: String| {
        Fault::new(
            file,
            FaultKind::Redirect {
                status: 302,
                location: format!("{base}{}", hub.file_url_path(STT, &published.stt, file)),
            },
        )
        .method("GET")
    };
    hub.inject(redirect(
        tiny::STT_MOSHI_NAME,
        format!("http://localhost:{cdn_port}"),
    ));
    hub.inject(redirect(tiny::STT_MIMI_NAME, other_port.endpoint()));
    hub.inject(
        Fault::new(tiny::STT_TOKENIZER_NAME, FaultKind::Status(503))
            .method("GET")
            .times(1),
    );

    let cache = tempfile::tempdir().unwrap();
    let config = {
        let sink = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let events = sink.clone();
        let config = config(&hub, cache.path())
            .token(TOKEN)
            .on_progress(move |e: &ProgressEvent| events.lock().push(format!("{e:?}")));
        let manager = KyutaiModelManager::with_config(config.clone()).unwrap();
        let stt = manager.fetch_stt().await.unwrap();
        seen.extend(sink.lock().iter().cloned());
        seen.push(format!("{stt:?}"));
        seen.push(format!("{:?}", manager.settings()));
        config
    };
    seen.push(format!("{config:?}"));
    let engine = KyutaiEngine::with_config(config.clone()).await.unwrap();
    seen.push(format!("{engine:?}"));

    // The token went to the configured endpoint only.
    let to_hub = hub.requests();
    assert!(!to_hub.is_empty());
    assert!(
        to_hub
            .iter()
            .filter(|r| r.path.contains(STT))
            .all(|r| r.authorization.as_deref() == Some(&*format!("Bearer {TOKEN}")))
    );
    for (name, mirror) in [("localhost", &cdn), ("another port", &other_port)] {
        let requests = mirror.requests();
        assert_eq!(requests.len(), 1, "{name}: {requests:?}");
        assert_eq!(requests[0].authorization, None, "{name}");
        assert_eq!(requests[0].status, 200, "{name}");
    }

    // Errors, with the token in play: refused (wrong token), gone (no server), corrupt.
    let wrong = KyutaiModelManager::with_config(config.clone().token(format!("{TOKEN}x")))
        .unwrap()
        .fetch_file(STT, "main", "config.json")
        .await
        .unwrap_err();
    let nowhere = KyutaiModelManager::with_config(
        config
            .clone()
            .endpoint("http://127.0.0.1:9")
            .max_attempts(2)
            .force_download(true),
    )
    .unwrap()
    .fetch_file(STT, "main", "config.json")
    .await
    .unwrap_err();
    hub.inject(
        Fault::new(tiny::STT_MOSHI_NAME, FaultKind::CorruptBody { offset: 10 })
            .method("GET")
            .times(5),
    );
    let corrupt = KyutaiModelManager::with_config(config.clone().force_download(true))
        .unwrap()
        .fetch_file(STT, "main", tiny::STT_MOSHI_NAME)
        .await
        .unwrap_err();
    for error in [&wrong, &nowhere, &corrupt] {
        seen.push(error.to_string());
        seen.push(format!("{error:?}"));
        seen.push(format!(
            "{}",
            fluent_voice_kyutai::voice::VoiceError::from(error.clone())
        ));
    }
    assert!(matches!(wrong, MoshiError::AuthenticationRequired { .. }));
    assert!(matches!(nowhere, MoshiError::Network { .. }));
    assert!(matches!(corrupt, MoshiError::IntegrityMismatch { .. }));

    let logs = LOGS.0.lock().clone();
    assert!(
        logs.iter().any(|l| l.contains("retrying")),
        "the retry warnings were captured: {logs:?}"
    );
    seen.extend(logs);
    for text in &seen {
        assert!(!text.contains(TOKEN), "the token leaked: {text}");
        assert!(!text.contains("SeCrEt"), "part of the token leaked: {text}");
    }
}

// ---------------------------------------------------------------------------------------------
// Load on one engine

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_users_of_one_engine_share_one_fetch_and_get_their_own_errors() {
    let hub = TestHub::start();
    let published = publish_defaults(&hub);
    // The STT repository lacks its Mimi weights: every STT user must get that error.
    let mut stt = tiny::stt_repo();
    stt.retain(|(p, _)| p != tiny::STT_MIMI_NAME);
    let stt_commit = publish(&hub, "test/broken-stt", "main", &stt);
    // The TTS weights and the STT config are held until all 16 users are waiting on them.
    for path in [tiny::TTS_MOSHI_NAME, "test/broken-stt/resolve"] {
        hub.inject(Fault::new(
            path,
            FaultKind::HoldBody {
                after_bytes: 10,
                gate: "all-in".into(),
            },
        ));
    }
    let cache = tempfile::tempdir().unwrap();
    let provider: &'static Provider = Box::leak(Box::new(Provider::new()));
    provider
        .configure(config(&hub, cache.path()).stt_repo("test/broken-stt"))
        .unwrap();

    #[derive(Debug)]
    enum Outcome {
        Tts,
        Stt(MoshiError),
        Voice(String, Result<PathBuf, MoshiError>),
    }
    let users: Vec<_> = (0..16)
        .map(|i| {
            tokio::spawn(async move {
                let engine = provider.engine().await.unwrap();
                match i % 4 {
                    0 => engine.ensure_tts().await.map(|_| Outcome::Tts).unwrap(),
                    1 => Outcome::Stt(engine.ensure_stt().await.unwrap_err()),
                    2 => {
                        let voice = tiny::VOICE_NAMES[i % 3].to_string();
                        Outcome::Voice(voice.clone(), engine.ensure_voice(&voice).await)
                    }
                    _ => {
                        let voice = format!("nobody/voice-{i}");
                        Outcome::Voice(voice.clone(), engine.ensure_voice(&voice).await)
                    }
                }
            })
        })
        .collect();
    // Both held transfers have started; every user has had time to join one of them.
    let deadline = Instant::now() + Duration::from_secs(30);
    let held = |hub: &TestHub| {
        let requests = hub.requests();
        let started = |part: &str| {
            requests
                .iter()
                .any(|r| r.method == "GET" && r.path.contains(part))
        };
        started(tiny::TTS_MOSHI_NAME) && started("broken-stt/resolve")
    };
    while !held(&hub) {
        assert!(Instant::now() < deadline, "{:?}", hub.requests());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    hub.open_gate("all-in");
    let outcomes = tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(users))
        .await
        .expect("no deadlock");

    assert_eq!(provider.creations_started(), 1);
    for outcome in outcomes {
        match outcome.unwrap() {
            Outcome::Tts => {}
            Outcome::Stt(error) => assert!(
                matches!(&error, MoshiError::FileNotFound { file, .. } if file == tiny::STT_MIMI_NAME),
                "{error:?}"
            ),
            Outcome::Voice(voice, result) if voice.starts_with("nobody/") => match result {
                Err(MoshiError::VoiceNotFound { voice: named, .. }) => assert_eq!(named, voice),
                other => panic!("{voice}: {other:?}"),
            },
            Outcome::Voice(voice, result) => {
                let path = result.unwrap();
                assert!(path.ends_with(tiny::voice_file(&voice)), "{path:?}");
            }
        }
    }
    // One transfer per file, whatever the number of users.
    for file in [
        "config.json",
        tiny::TTS_MOSHI_NAME,
        tiny::TTS_MIMI_NAME,
        tiny::TTS_TOKENIZER_NAME,
    ] {
        assert_eq!(
            downloads_of(&hub, &format!("{TTS}/resolve/{}/{file}", published.tts)),
            1,
            "{file}"
        );
    }
    assert_eq!(
        downloads_of(
            &hub,
            &format!("test/broken-stt/resolve/{stt_commit}/config.json")
        ),
        1
    );
    for voice in tiny::VOICE_NAMES {
        assert_eq!(downloads_of(&hub, &tiny::voice_file(voice)), 1, "{voice}");
    }
    // The failed STT fetch was shared by its four users: the missing file was asked for once.
    assert_eq!(
        hub.requests()
            .iter()
            .filter(|r| r.path.ends_with(tiny::STT_MIMI_NAME))
            .count(),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// Audio headers that lie (the decoder of `src/audio`, fed the way a conversation feeds it)

#[test]
fn wav_headers_that_lie_about_sizes_are_errors_or_finite_audio() {
    use fluent_voice_kyutai::internals::audio::AudioDecoder;
    let good = tiny::tiny_wav(240, 24_000);
    let with = |offset: usize, value: u32| {
        let mut bytes = good.clone();
        bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
        bytes
    };
    let cases = [
        ("a data chunk of 4 GB in 524 bytes", with(40, 0xFFFF_FFF0)),
        ("a RIFF size of 4 GB", with(4, 0xFFFF_FFF0)),
        ("a fmt chunk of 4 GB", with(16, 0xFFFF_FFF0)),
        ("a sample rate of 0", with(24, 0)),
        ("a byte rate of 4 GB", with(28, u32::MAX)),
        ("a header cut in the middle", good[..30].to_vec()),
    ];
    for (what, bytes) in cases {
        let started = Instant::now();
        let outcome =
            AudioDecoder::from_bytes(bytes.clone().into(), Some("wav")).and_then(|mut decoder| {
                let mut samples = 0usize;
                while let Some(chunk) = decoder.next_chunk()? {
                    samples += chunk.len();
                    assert!(samples <= bytes.len(), "{what}: more samples than bytes");
                }
                Ok(samples)
            });
        assert!(started.elapsed() < Duration::from_secs(5), "{what}: hang");
        match outcome {
            Ok(samples) => assert!(samples <= 240, "{what}: {samples}"),
            Err(MoshiError::InvalidInput(message)) => {
                assert!(!message.is_empty(), "{what}")
            }
            Err(other) => panic!("{what}: {other:?}"),
        }
    }
}
