//! Reliability with real processes: a `kyutai download` killed (SIGKILL) or frozen (SIGSTOP) in
//! the middle of a 256 MB file, four processes racing on one empty cache, and a cache damaged on
//! disk, repaired with `kyutai cache --verify` and `kyutai download`. Every claim is checked on
//! the loopback hub's request log (what was asked, what was sent) and on the cache's contents.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use fluent_voice_kyutai::{KyutaiModelManager, MoshiError};
use sha2::Digest;
use support::*;

const MB: usize = 1 << 20;
const BIG: &str = "big.bin";

/// An STT repository whose `config.json` names a large `big.bin` as the LM weights (an opaque
/// file: only its hash is checked), next to the tiny Mimi, tokenizer and Mimi config.
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

fn kyutai_command(hub: &TestHub, cache: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kyutai"));
    command
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .env("HF_ENDPOINT", hub.endpoint())
        .env("KYUTAI_TTS_MODEL", "dsm")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .env("HF_HOME", cache.join("hf-home"))
        .env("NO_PROXY", "127.0.0.1,localhost");
    command
}

fn kyutai(hub: &TestHub, cache: &Path, args: &[&str]) -> Output {
    kyutai_command(hub, cache, args)
        .output()
        .expect("the binary runs")
}

fn spawn_download(hub: &TestHub, cache: &Path, repo: &str) -> Child {
    kyutai_command(hub, cache, &["download", "--stt", "--stt-repo", repo])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn blobs_dir(cache: &Path, repo: &str) -> PathBuf {
    cache
        .join(format!("models--{}", repo.replace('/', "--")))
        .join("blobs")
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Waits until `path` holds at least `at_least` bytes and has stopped growing (the writer is
/// blocked on the held body), and returns its size.
fn wait_for_partial(path: &Path, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = (0, Instant::now());
    loop {
        let len = file_len(path);
        if len != last.0 {
            last = (len, Instant::now());
        } else if len >= at_least && last.1.elapsed() > Duration::from_millis(300) {
            return len;
        }
        assert!(
            Instant::now() < deadline,
            "{} reached only {len} bytes",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sha256_file(path: &Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// The GETs of files whose path ends with `suffix`.
fn gets(hub: &TestHub, suffix: &str) -> Vec<LoggedRequest> {
    hub.requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(suffix))
        .collect()
}

#[test]
fn a_download_killed_mid_body_resumes_where_it_stopped_and_a_changed_file_starts_over() {
    const SIZE: usize = 256 * MB;
    const HELD_AT: u64 = 100 * MB as u64;
    let repo = "test/big-stt";
    let hub = TestHub::start();
    publish(&hub, repo, "main", &big_stt_repo(SIZE, 1));
    let etag = hub.file_etag(repo, "main", BIG);
    let cache = tempfile::tempdir().unwrap();
    let partial = blobs_dir(cache.path(), repo).join(format!("{etag}.incomplete"));
    let blob = blobs_dir(cache.path(), repo).join(&etag);

    // Run 1: the hub sends 100 MB, then holds the body; the process is killed there.
    hub.inject(Fault::new(
        BIG,
        FaultKind::HoldBody {
            after_bytes: HELD_AT,
            gate: "kill".into(),
        },
    ));
    let mut child = spawn_download(&hub, cache.path(), repo);
    let kept = wait_for_partial(&partial, HELD_AT - 4 * MB as u64);
    child.kill().unwrap(); // SIGKILL: no destructor, no flush, no unlock runs
    child.wait().unwrap();
    hub.open_gate("kill");
    assert_eq!(file_len(&partial), kept);
    assert!(kept <= HELD_AT && kept < SIZE as u64);
    assert!(!blob.exists(), "nothing unverified under the blob name");
    // The OS released the dead process's lock: it can be taken at once.
    let lock = cache
        .path()
        .join(format!(".locks/models--test--big-stt/{etag}.lock"));
    std::fs::File::open(&lock).unwrap().try_lock().unwrap();

    // Run 2: resumes at exactly the partial length, transfers only the rest, verifies the whole.
    hub.clear_log();
    let started = Instant::now();
    let second = kyutai(
        &hub,
        cache.path(),
        &["download", "--stt", "--stt-repo", repo],
    );
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(
        !stderr(&second).contains("waiting"),
        "a dead holder blocks no one: {}",
        stderr(&second)
    );
    let big_gets = gets(&hub, BIG);
    assert_eq!(big_gets.len(), 1, "{big_gets:?}");
    assert_eq!(
        big_gets[0].range.as_deref(),
        Some(&*format!("bytes={kept}-"))
    );
    assert_eq!(
        big_gets[0].if_range.as_deref(),
        Some(&*format!("\"{etag}\""))
    );
    assert_eq!(big_gets[0].status, 206);
    assert_eq!(big_gets[0].body_bytes, SIZE as u64 - kept);
    assert_eq!(
        file_bytes_served(&hub),
        SIZE as u64 - kept,
        "the small files were finished by run 1: only the rest of big.bin moved"
    );
    assert!(!partial.exists());
    assert_eq!(sha256_file(&blob), etag);
    eprintln!(
        "resume: killed at {kept} bytes, run 2 transferred {} bytes in {:.1?}",
        SIZE as u64 - kept,
        started.elapsed()
    );

    // Run 3 after the file changed on the hub (new etag): killed again mid-body, then the
    // content changes again; run 4 must start the newest file from byte 0.
    publish(
        &hub,
        repo,
        "main",
        &[(BIG.to_string(), tiny::big_file(SIZE, 2))],
    );
    let etag2 = hub.file_etag(repo, "main", BIG);
    let partial2 = blobs_dir(cache.path(), repo).join(format!("{etag2}.incomplete"));
    hub.inject(Fault::new(
        BIG,
        FaultKind::HoldBody {
            after_bytes: 40 * MB as u64,
            gate: "kill2".into(),
        },
    ));
    let mut child = spawn_download(&hub, cache.path(), repo);
    let kept2 = wait_for_partial(&partial2, 36 * MB as u64);
    child.kill().unwrap();
    child.wait().unwrap();
    hub.open_gate("kill2");
    publish(
        &hub,
        repo,
        "main",
        &[(BIG.to_string(), tiny::big_file(SIZE, 3))],
    );
    let etag3 = hub.file_etag(repo, "main", BIG);
    hub.clear_log();
    let fourth = kyutai(
        &hub,
        cache.path(),
        &["download", "--stt", "--stt-repo", repo],
    );
    assert!(fourth.status.success(), "{}", stderr(&fourth));
    let big_gets = gets(&hub, BIG);
    assert_eq!(big_gets.len(), 1, "{big_gets:?}");
    assert_eq!(
        big_gets[0].range, None,
        "a partial of another etag is not resumed"
    );
    assert_eq!(big_gets[0].status, 200);
    assert_eq!(big_gets[0].body_bytes, SIZE as u64);
    eprintln!(
        "changed file: partial of the old etag {kept2} bytes; run 4 sent {} bytes from byte 0",
        big_gets[0].body_bytes
    );
    let blob3 = blobs_dir(cache.path(), repo).join(&etag3);
    assert_eq!(sha256_file(&blob3), etag3);
    // The partial of the superseded etag is cleaned up once the new file is in place.
    assert!(
        !partial2.exists(),
        "{kept2} stale bytes left at {}",
        partial2.display()
    );
}

#[test]
fn four_processes_on_an_empty_cache_fetch_each_file_once() {
    let repo = "test/shared-stt";
    let hub = TestHub::start();
    let files = big_stt_repo(32 * MB, 5);
    publish(&hub, repo, "main", &files);
    let cache = tempfile::tempdir().unwrap();
    // The first GET of big.bin is held after 1 MB until all four processes are in.
    hub.inject(Fault::new(
        BIG,
        FaultKind::HoldBody {
            after_bytes: MB as u64,
            gate: "go".into(),
        },
    ));
    let children: Vec<Child> = (0..4)
        .map(|_| spawn_download(&hub, cache.path(), repo))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while hub
        .requests()
        .iter()
        .filter(|r| r.method == "HEAD" && r.path.ends_with(BIG))
        .count()
        < 4
    {
        assert!(Instant::now() < deadline, "{:?}", hub.requests());
        std::thread::sleep(Duration::from_millis(20));
    }
    // Each process asks for the lock right after its HEAD; give the last one time to find it
    // taken.
    std::thread::sleep(Duration::from_millis(1500));
    hub.open_gate("go");
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for output in &outputs {
        assert!(output.status.success(), "{}", stderr(output));
    }
    let waiting_line = format!("waiting: another process is downloading `{BIG}` of `{repo}`");
    let waited = outputs
        .iter()
        .filter(|o| stderr(o).contains(&waiting_line))
        .count();
    assert_eq!(waited, 3, "the three others said they were waiting");
    eprintln!(
        "4 processes: {} bytes served in all, {waited} waited",
        file_bytes_served(&hub)
    );
    // Every process printed the same verified snapshot paths.
    assert!(outputs.iter().all(|o| stdout(o) == stdout(&outputs[0])));
    for (path, bytes) in &files {
        if path == "README.md" || path == ".gitattributes" {
            continue;
        }
        let fetched = gets(&hub, &format!("/{path}"))
            .iter()
            .filter(|r| r.body_bytes > 0)
            .count();
        assert_eq!(fetched, 1, "{path} was transferred once");
        let etag = hub.file_etag(repo, "main", path);
        assert_eq!(
            file_len(&blobs_dir(cache.path(), repo).join(&etag)),
            bytes.len() as u64
        );
    }
    assert_eq!(
        file_bytes_served(&hub),
        files
            .iter()
            .filter(|(p, _)| p != "README.md" && p != ".gitattributes")
            .map(|(_, b)| b.len() as u64)
            .sum::<u64>()
    );
}

#[tokio::test]
async fn a_frozen_lock_holder_is_reported_and_a_killed_one_is_resumed_after() {
    const SIZE: usize = 48 * MB;
    let repo = "test/frozen-stt";
    let hub = TestHub::start();
    publish(&hub, repo, "main", &big_stt_repo(SIZE, 9));
    let etag = hub.file_etag(repo, "main", BIG);
    let cache = tempfile::tempdir().unwrap();
    let partial = blobs_dir(cache.path(), repo).join(format!("{etag}.incomplete"));

    // A holder that is alive but stuck: frozen with SIGSTOP in the middle of the body.
    hub.inject(Fault::new(
        BIG,
        FaultKind::HoldBody {
            after_bytes: 8 * MB as u64,
            gate: "frozen".into(),
        },
    ));
    let mut holder = spawn_download(&hub, cache.path(), repo);
    let kept = wait_for_partial(&partial, 4 * MB as u64);
    let pid = holder.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    hub.open_gate("frozen"); // the hub would send more, but the holder no longer reads

    let waits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let config = {
        let waits = waits.clone();
        config(&hub, cache.path())
            .stt_repo(repo)
            .lock_stale_after(Duration::from_secs(2))
            .on_progress(move |event| {
                if matches!(
                    event,
                    fluent_voice_kyutai::models::ProgressEvent::Waiting { .. }
                ) {
                    waits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            })
    };
    let manager = KyutaiModelManager::with_config(config).unwrap();
    let started = Instant::now();
    let error = manager.fetch_stt().await.unwrap_err();
    let waited = started.elapsed();
    assert!(
        matches!(&error, MoshiError::DownloadLockStale { file, .. } if file == BIG),
        "{error:?}"
    );
    assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(20));
    assert!(error.to_string().contains(".lock"), "{error}");
    assert_eq!(waits.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        file_len(&partial),
        kept,
        "the waiter did not touch the partial file"
    );

    // The frozen process is killed: its lock goes with it, and the next attempt resumes its
    // partial file instead of starting over.
    holder.kill().unwrap();
    holder.wait().unwrap();
    hub.clear_log();
    let stt = manager.fetch_stt().await.unwrap();
    let big_gets = gets(&hub, BIG);
    assert_eq!(big_gets.len(), 1, "{big_gets:?}");
    assert_eq!(
        big_gets[0].range.as_deref(),
        Some(&*format!("bytes={kept}-"))
    );
    assert_eq!(big_gets[0].body_bytes, SIZE as u64 - kept);
    assert_eq!(sha256_file(&stt.lm_weights), etag);
    eprintln!(
        "frozen holder: reported after {waited:.1?} with {kept} bytes left on disk; after the \
         kill, resumed at {kept} and sent {} bytes",
        big_gets[0].body_bytes
    );
}

/// Keeps a file's modification time while changing its bytes, as silent disk corruption does
/// (so that the verification record, which checks size and mtime, cannot notice).
fn flip_bit_keeping_mtime(path: &Path, offset: usize) {
    let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x01;
    std::fs::write(path, &bytes).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_modified(mtime).unwrap();
}

#[test]
fn a_damaged_cache_is_reported_by_verify_and_repaired_by_download() {
    let hub = TestHub::start();
    let published = publish_defaults(&hub);
    let cache = tempfile::tempdir().unwrap();
    let first = kyutai(&hub, cache.path(), &["download", "--stt", "--quiet"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let snapshot = cache
        .path()
        .join("models--kyutai--stt-1b-en_fr-candle/snapshots")
        .join(&published.stt);
    let blob_of = |file: &str| std::fs::canonicalize(snapshot.join(file)).unwrap();

    // 1. A bit flip that keeps size and mtime: a plain cache hit trusts the record (that is
    //    the point of the record), `cache --verify` re-hashes and finds it.
    flip_bit_keeping_mtime(&blob_of(tiny::STT_MOSHI_NAME), 100);
    // 2. A truncated blob.
    let mimi = blob_of(tiny::STT_MIMI_NAME);
    let len = file_len(&mimi);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&mimi)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    // 3. A snapshot link that points outside the cache, to nothing.
    let tokenizer = snapshot.join(tiny::STT_TOKENIZER_NAME);
    std::fs::remove_file(&tokenizer).unwrap();
    std::os::unix::fs::symlink("/nonexistent/elsewhere/blob", &tokenizer).unwrap();
    // 4. A missing blob.
    std::fs::remove_file(blob_of(tiny::MIMI_CONFIG_NAME)).unwrap();

    let verify = kyutai(&hub, cache.path(), &["cache", "--verify"]);
    assert!(!verify.status.success());
    let out = stdout(&verify);
    let state_of = |file: &str| {
        out.lines()
            .find(|l| l.ends_with(&format!(" {file}")))
            .unwrap_or_else(|| panic!("{file} not listed: {out}"))
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(state_of(tiny::STT_MOSHI_NAME), "CORRUPT");
    assert_eq!(state_of(tiny::STT_MIMI_NAME), "CORRUPT");
    assert_eq!(state_of(tiny::STT_TOKENIZER_NAME), "MISSING");
    assert_eq!(state_of(tiny::MIMI_CONFIG_NAME), "MISSING");
    assert_eq!(state_of("config.json"), "ok");
    assert!(
        stderr(&verify).contains("4 cached file(s) are corrupt or missing"),
        "{}",
        stderr(&verify)
    );

    hub.clear_log();
    let repair = kyutai(&hub, cache.path(), &["download", "--stt", "--quiet"]);
    assert!(repair.status.success(), "{}", stderr(&repair));
    for file in [
        tiny::STT_MOSHI_NAME,
        tiny::STT_MIMI_NAME,
        tiny::MIMI_CONFIG_NAME,
    ] {
        assert_eq!(downloads_of(&hub, &format!("/{file}")), 1, "{file}");
    }
    // The bad link's blob was intact: the link is remade, nothing is transferred.
    assert_eq!(
        downloads_of(&hub, &format!("/{}", tiny::STT_TOKENIZER_NAME)),
        0
    );
    assert_eq!(downloads_of(&hub, "/config.json"), 0, "the good file stays");
    eprintln!(
        "repair: {} bytes fetched again for 3 damaged blobs and 1 bad link",
        file_bytes_served(&hub)
    );
    let verify = kyutai(&hub, cache.path(), &["cache", "--verify"]);
    assert!(verify.status.success(), "{}", stdout(&verify));
    // The repaired links point into the cache again, relatively, as Python writes them.
    assert_eq!(
        std::fs::read_link(&tokenizer).unwrap(),
        PathBuf::from("../../blobs").join(hub.file_etag(STT, "main", tiny::STT_TOKENIZER_NAME))
    );
}
