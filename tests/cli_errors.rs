//! Errors through the `kyutai` binary, end to end against the loopback hub: each category of
//! failure reaches the user in its own words (not as "inference failed"), with exit status 1, and
//! leaves the cache as it was. Also: configs written by the Python reference load.

mod support;

use std::path::Path;
use std::process::Output;

use serde_json::json;
use support::*;

fn kyutai(hub: &TestHub, cache: &Path, args: &[&str]) -> Output {
    let mut args = args.to_vec();
    args.push("--quiet");
    kyutai_command(hub, cache, &args)
        .output()
        .expect("the binary runs")
}

/// Runs a failing command; returns its one-line error.
fn fails(hub: &TestHub, cache: &Path, args: &[&str]) -> String {
    let out = kyutai(hub, cache, args);
    let (_, err) = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("inference failed"),
        "{err}"
    );
    err
}

/// `kyutai cache --verify` exits 0: nothing in the cache is corrupt or missing.
fn cache_is_sound(hub: &TestHub, cache: &Path) {
    let out = kyutai(hub, cache, &["cache", "--verify"]);
    assert!(out.status.success(), "{}", output_text(&out).1);
}

#[test]
fn each_error_category_reaches_the_user_in_its_own_words() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let out = dir.path().join("out.wav");
    let out = out.to_str().unwrap();

    // Not found: a voice, then a repository.
    let err = fails(
        &hub,
        &cache,
        &["say", "Hi.", "-o", out, "--voice", "nowhere/nobody.wav"],
    );
    assert!(
        err.contains("the voice `nowhere/nobody.wav` was not found in `kyutai/tts-voices`"),
        "{err}"
    );
    let err = fails(
        &hub,
        &cache,
        &["say", "Hi.", "-o", out, "--tts-repo", "kyutai/nothing"],
    );
    assert!(err.contains("`kyutai/nothing` was not found"), "{err}");
    assert!(!Path::new(out).exists(), "no output file on failure");
    cache_is_sound(&hub, &cache);

    // Invalid input: nothing to say.
    let err = fails(&hub, &cache, &["say", "  ", "-o", out]);
    assert!(
        err.starts_with("error: invalid input: ") && err.contains("nothing to say"),
        "{err}"
    );

    // I/O: the output folder does not exist. The message names the file; the models were
    // fetched (and stay verified in the cache).
    let nowhere = dir.path().join("no/such/folder/out.wav");
    let err = fails(
        &hub,
        &cache,
        &["say", "Hi.", "-o", nowhere.to_str().unwrap()],
    );
    assert!(
        err.contains("could not write the WAV file") && err.contains("out.wav"),
        "{err}"
    );
    cache_is_sound(&hub, &cache);

    // Offline: an empty cache.
    let empty = dir.path().join("empty-cache");
    let err = fails(&hub, &empty, &["say", "Hi.", "-o", out, "--offline"]);
    assert!(
        err.contains("offline mode is on") && err.contains("config.json"),
        "{err}"
    );

    // Invalid configuration: a config.json with a key the reference does not know.
    let mut config = tiny::tts_config();
    config["colour"] = json!("blue");
    let mut files = tiny::tts_repo();
    files.retain(|(path, _)| path != "config.json");
    files.push(("config.json".into(), tiny::json_bytes(&config)));
    publish(&hub, "test/odd-tts", "main", &files);
    let err = fails(
        &hub,
        &cache,
        &["say", "Hi.", "-o", out, "--tts-repo", "test/odd-tts"],
    );
    assert!(
        err.starts_with("error: invalid configuration: TTS config.json: the key `colour`"),
        "{err}"
    );
    cache_is_sound(&hub, &cache);
}

#[test]
fn a_network_failure_is_reported_as_one_after_the_retries() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    hub.inject(Fault::new("config.json", FaultKind::Status(503)).times(usize::MAX));
    let dir = tempfile::tempdir().unwrap();
    let err = fails(&hub, dir.path(), &["say", "Hi.", "-o", "x.wav"]);
    assert!(
        err.contains("could not download") && err.contains("after 5 attempt(s)"),
        "{err}"
    );
    assert!(err.contains("HTTP 503"), "{err}");
}

/// The conditioners of a config saved from Python carry `output_dim` and `device` (the loader
/// writes them into the dict it is given); `kyutai say` speaks with such a config exactly as with
/// the published one. An STT config with keys the reference takes at their defaults transcribes.
#[test]
fn configs_saved_by_the_python_reference_load() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    let mut config = tiny::tts_config();
    for (name, kind) in [
        ("cfg", "lut"),
        ("control", "lut"),
        ("speaker_wavs", "tensor"),
    ] {
        config["conditioners"][name][kind]["output_dim"] = json!(64);
        config["conditioners"][name][kind]["device"] = json!("cpu");
    }
    let mut files = tiny::tts_repo();
    files.retain(|(path, _)| path != "config.json");
    files.push(("config.json".into(), tiny::json_bytes(&config)));
    publish(&hub, "test/python-saved-tts", "main", &files);

    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let say = |repo: &str, wav: &Path| {
        let args = [
            "say",
            "Hello from Rust.",
            "--temperature",
            "0",
            "--tts-repo",
            repo,
            "-o",
        ];
        let mut args = args.to_vec();
        args.push(wav.to_str().unwrap());
        let out = kyutai(&hub, &cache, &args);
        assert!(out.status.success(), "{}", output_text(&out).1);
        std::fs::read(wav).unwrap()
    };
    let published = say(TTS, &dir.path().join("a.wav"));
    let saved = say("test/python-saved-tts", &dir.path().join("b.wav"));
    assert_eq!(published, saved);

    let mut stt = tiny::stt_config();
    stt["kv_repeat"] = json!(1);
    stt["demux_second_text_stream"] = json!(false);
    stt["existing_text_end_padding_id"] = json!(0);
    let mut files = tiny::stt_repo();
    files.retain(|(path, _)| path != "config.json");
    files.push(("config.json".into(), tiny::json_bytes(&stt)));
    publish(&hub, "test/python-saved-stt", "main", &files);
    let wav = dir.path().join("a.wav");
    let out = kyutai(
        &hub,
        &cache,
        &[
            "transcribe",
            wav.to_str().unwrap(),
            "--stt-repo",
            "test/python-saved-stt",
        ],
    );
    assert!(out.status.success(), "{}", output_text(&out).1);

    // A key the STT loader does not know is refused, by name.
    stt["colour"] = json!("blue");
    let mut files = tiny::stt_repo();
    files.retain(|(path, _)| path != "config.json");
    files.push(("config.json".into(), tiny::json_bytes(&stt)));
    publish(&hub, "test/odd-stt", "main", &files);
    let err = fails(
        &hub,
        &cache,
        &[
            "transcribe",
            wav.to_str().unwrap(),
            "--stt-repo",
            "test/odd-stt",
        ],
    );
    assert!(
        err.contains("config.json") && err.contains("`colour`"),
        "{err}"
    );
}
