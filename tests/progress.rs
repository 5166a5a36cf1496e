//! Progress: events for an application's callback; bars only on a terminal.

mod support;

use std::sync::{Arc, Mutex};

use fluent_voice_kyutai::KyutaiModelManager;
use fluent_voice_kyutai::models::ProgressEvent;
use support::*;

#[tokio::test]
async fn the_callback_sees_each_download_start_advance_and_finish_then_cache_hits() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    let cache = tempfile::tempdir().unwrap();
    let events = Arc::new(Mutex::new(Vec::<ProgressEvent>::new()));
    let sink = events.clone();
    let config =
        config(&hub, cache.path()).on_progress(move |e| sink.lock().unwrap().push(e.clone()));
    let manager = KyutaiModelManager::with_config(config.clone()).unwrap();
    manager.fetch_stt().await.unwrap();

    let weights_size = repo_file(&tiny::stt_repo(), tiny::STT_MOSHI_NAME).len() as u64;
    let seen = events.lock().unwrap().clone();
    let for_weights: Vec<&ProgressEvent> = seen
        .iter()
        .filter(|e| match e {
            ProgressEvent::Started { file, .. }
            | ProgressEvent::Advanced { file, .. }
            | ProgressEvent::Finished { file, .. } => file == tiny::STT_MOSHI_NAME,
            _ => false,
        })
        .collect();
    assert!(
        matches!(for_weights.first(), Some(ProgressEvent::Started { total_bytes, already: 0, .. }) if *total_bytes == weights_size)
    );
    assert!(
        matches!(for_weights.last(), Some(ProgressEvent::Finished { bytes, .. }) if *bytes == weights_size)
    );
    assert!(for_weights.iter().any(
        |e| matches!(e, ProgressEvent::Advanced { bytes_done, .. } if *bytes_done == weights_size)
    ));
    let finished = seen
        .iter()
        .filter(|e| matches!(e, ProgressEvent::Finished { .. }))
        .count();
    assert_eq!(
        finished, 5,
        "config, weights, mimi, tokenizer, mimi config: {seen:#?}"
    );

    events.lock().unwrap().clear();
    KyutaiModelManager::with_config(config)
        .unwrap()
        .fetch_stt()
        .await
        .unwrap();
    let seen = events.lock().unwrap().clone();
    assert!(
        seen.iter()
            .all(|e| matches!(e, ProgressEvent::CacheHit { .. })),
        "{seen:#?}"
    );
    assert!(!seen.is_empty());
}

/// Runs the CLI under a pseudo-terminal (util-linux `script`) and returns what it drew.
fn run_on_a_terminal(hub: &TestHub, cache: &std::path::Path, extra_env: &[(&str, &str)]) -> String {
    let command = format!(
        "{} download --stt --cache-dir {}",
        env!("CARGO_BIN_EXE_kyutai"),
        cache.display()
    );
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qfec", &command, "/dev/null"])
        .env("HF_ENDPOINT", hub.endpoint())
        .env("KYUTAI_TTS_MODEL", "dsm")
        .env_remove("HF_HUB_DISABLE_PROGRESS_BARS")
        .env("TERM", "xterm");
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let output = cmd.output().expect("util-linux `script` runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

#[test]
fn bars_are_drawn_on_a_terminal_unless_disabled() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    // Slow the weights down so that the bar has time to draw; the same for both runs, so that
    // the second would draw one too if it were not disabled.
    let slow_weights = || {
        hub.inject(
            Fault::new(
                tiny::STT_MOSHI_NAME,
                FaultKind::StallBody {
                    after_bytes: 1000,
                    stall: std::time::Duration::from_millis(600),
                },
            )
            .times(1),
        )
    };
    let weights_requests = || {
        hub.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.ends_with(tiny::STT_MOSHI_NAME))
            .count()
    };
    slow_weights();
    let cache = tempfile::tempdir().unwrap();
    let screen = run_on_a_terminal(&hub, cache.path(), &[]);
    assert!(screen.contains(tiny::STT_MOSHI_NAME), "{screen}");
    assert!(screen.contains("ETA"), "a bar with rate and ETA: {screen}");

    slow_weights();
    let before = weights_requests();
    let cache = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let screen = run_on_a_terminal(&hub, cache.path(), &[("HF_HUB_DISABLE_PROGRESS_BARS", "1")]);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(600),
        "the download was slowed down as in the first run"
    );
    assert_eq!(
        weights_requests(),
        before + 1,
        "the weights were downloaded"
    );
    assert!(!screen.contains("ETA"), "{screen}");
}
