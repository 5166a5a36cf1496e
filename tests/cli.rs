//! The `kyutai` binary, run as a separate process against the loopback hub.

mod support;

use std::path::Path;
use std::process::Output;

use support::*;

fn kyutai(hub: &TestHub, cache: &Path, args: &[&str]) -> Output {
    kyutai_command(hub, cache, args)
        .output()
        .expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    output_text(output).0
}

fn stderr(output: &Output) -> String {
    output_text(output).1
}

#[test]
fn download_then_a_second_process_transfers_nothing() {
    let hub = TestHub::start();
    let published = publish_defaults(&hub);
    let cache = tempfile::tempdir().unwrap();

    let first = kyutai(&hub, cache.path(), &["download", "--quiet"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let out = stdout(&first);
    assert!(
        out.contains(&format!("tts  {TTS} @ {}", published.tts)),
        "{out}"
    );
    assert!(
        out.contains(&format!("stt  {STT} @ {}", published.stt)),
        "{out}"
    );
    assert!(out.contains(&format!("voice {VOICE}")), "{out}");
    // Nothing on stderr: no bars on a non-terminal, no warnings.
    assert_eq!(stderr(&first), "");
    assert!(file_bytes_served(&hub) > 0);

    hub.clear_log();
    let second = kyutai(&hub, cache.path(), &["download"]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(file_bytes_served(&hub), 0, "{:#?}", hub.requests());
    assert_eq!(stderr(&second), "", "no progress output on a non-TTY");

    hub.clear_log();
    let forced = kyutai(
        &hub,
        cache.path(),
        &["download", "--stt", "--force", "--quiet"],
    );
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_eq!(downloads_of(&hub, tiny::STT_MOSHI_NAME), 1);
    assert!(
        hub.requests().iter().all(|r| !r.path.contains(TTS)),
        "--stt fetches only STT"
    );
}

#[test]
fn download_named_voices_only() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    let cache = tempfile::tempdir().unwrap();
    let output = kyutai(
        &hub,
        cache.path(),
        &[
            "download",
            "--tts",
            "--voice",
            "vctk/p225_023.wav",
            "--voice",
            "unmute-prod-website/default_voice.wav",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let voice_requests: Vec<String> = hub
        .requests()
        .into_iter()
        .filter(|r| r.path.contains(VOICES))
        .map(|r| r.path)
        .collect();
    assert!(
        voice_requests
            .iter()
            .any(|p| p.contains("vctk/p225_023.wav."))
    );
    assert!(
        voice_requests
            .iter()
            .any(|p| p.contains("default_voice.wav."))
    );
    assert!(
        voice_requests.iter().all(|p| !p.contains("expresso")),
        "{voice_requests:#?}"
    );
    assert!(hub.requests().iter().all(|r| !r.path.contains(STT)));
}

#[test]
fn errors_are_one_line_on_stderr_with_a_failing_exit_code() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    let cache = tempfile::tempdir().unwrap();
    let output = kyutai(
        &hub,
        cache.path(),
        &["download", "--stt", "--stt-repo", "nobody/nothing"],
    );
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("nobody/nothing"), "{err}");

    let output = kyutai(&hub, cache.path(), &["download", "--tts", "--offline"]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.starts_with("error: offline mode is on"), "{err}");
    assert!(
        hub.requests().iter().all(|r| !r.path.contains(TTS)),
        "offline makes no request"
    );
}

#[test]
fn cache_lists_and_verify_finds_a_corrupt_blob_that_download_repairs() {
    let hub = TestHub::start();
    let published = publish_defaults(&hub);
    let cache = tempfile::tempdir().unwrap();
    assert!(
        kyutai(&hub, cache.path(), &["download", "--stt", "--quiet"])
            .status
            .success()
    );

    let listing = kyutai(&hub, cache.path(), &["cache"]);
    assert!(listing.status.success());
    let out = stdout(&listing);
    assert!(out.contains(&format!("{STT} @ {}", published.stt)), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("verified") && l.ends_with(tiny::STT_MOSHI_NAME)),
        "{out}"
    );

    // Flip one byte of the weights in place, keeping the size.
    let entry = cache
        .path()
        .join("models--kyutai--stt-1b-en_fr-candle/snapshots")
        .join(&published.stt)
        .join(tiny::STT_MOSHI_NAME);
    let blob = std::fs::canonicalize(&entry).unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[64] ^= 0x80;
    std::fs::write(&blob, &bytes).unwrap();

    let verify = kyutai(&hub, cache.path(), &["cache", "--verify"]);
    assert!(!verify.status.success());
    let out = stdout(&verify);
    assert!(
        out.lines()
            .any(|l| l.contains("CORRUPT") && l.ends_with(tiny::STT_MOSHI_NAME)),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("ok") && l.ends_with("config.json")),
        "{out}"
    );
    assert!(
        stderr(&verify).starts_with("error: 1 cached file(s) are corrupt"),
        "{}",
        stderr(&verify)
    );

    hub.clear_log();
    assert!(
        kyutai(&hub, cache.path(), &["download", "--stt", "--quiet"])
            .status
            .success()
    );
    assert_eq!(
        downloads_of(&hub, tiny::STT_MOSHI_NAME),
        1,
        "the corrupt file is fetched again"
    );
    let verify = kyutai(&hub, cache.path(), &["cache", "--verify"]);
    assert!(verify.status.success(), "{}", stdout(&verify));
}

#[test]
fn a_dangling_snapshot_link_is_reported_and_repaired() {
    let hub = TestHub::start();
    let published = publish_defaults(&hub);
    let cache = tempfile::tempdir().unwrap();
    assert!(
        kyutai(&hub, cache.path(), &["download", "--stt", "--quiet"])
            .status
            .success()
    );
    let entry = cache
        .path()
        .join("models--kyutai--stt-1b-en_fr-candle/snapshots")
        .join(&published.stt)
        .join(tiny::STT_MIMI_NAME);
    std::fs::remove_file(std::fs::canonicalize(&entry).unwrap()).unwrap();

    let listing = kyutai(&hub, cache.path(), &["cache"]);
    assert!(!listing.status.success());
    assert!(
        stdout(&listing).contains("MISSING BLOB"),
        "{}",
        stdout(&listing)
    );
    assert!(
        kyutai(&hub, cache.path(), &["download", "--stt", "--quiet"])
            .status
            .success()
    );
    assert!(
        kyutai(&hub, cache.path(), &["cache", "--verify"])
            .status
            .success()
    );
}
