//! The README's "Use it in your app" code, run: `examples/app.rs` holds it, this test runs each
//! function against the loopback hub through the zero-setup `Kyutai` global, and checks that the
//! README shows the example's code exactly (so the two cannot drift apart).

#[path = "../examples/app.rs"]
mod app;
#[path = "support/stt_tiny.rs"]
mod stt_tiny;
mod support;

use fluent_voice_kyutai::Kyutai;
use support::*;

/// The blocks of `examples/app.rs` between `// README: <name>` and `// README: end`.
fn snippets() -> Vec<(String, String)> {
    let source = include_str!("../examples/app.rs");
    let mut out = Vec::new();
    let mut current: Option<(String, Vec<&str>)> = None;
    for line in source.lines() {
        if let Some(name) = line.strip_prefix("// README: ") {
            match (name, current.take()) {
                ("end", Some((name, lines))) => out.push((name, lines.join("\n"))),
                (name, _) => current = Some((name.to_string(), Vec::new())),
            }
        } else if let Some((_, lines)) = current.as_mut() {
            lines.push(line);
        }
    }
    out
}

#[test]
fn the_readme_shows_the_example_code_as_it_is() {
    let readme = include_str!("../README.md");
    let snippets = snippets();
    assert_eq!(snippets.len(), 3, "save speech, transcript, errors");
    for (name, code) in snippets {
        assert!(
            readme.contains(&code),
            "the README lacks the `{name}` code:\n{code}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_code_runs() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    publish(&hub, STT, "main", &stt_tiny::stt_repo_talkative());
    let dir = tempfile::tempdir().unwrap();
    Kyutai::configure(config(&hub, &dir.path().join("cache"))).unwrap();
    let _command_line_entry_point = app::main;

    let wav = dir.path().join("hello.wav");
    let wav = wav.to_str().unwrap();
    app::say_to_file("Hello from Rust.", wav).await.unwrap();
    let reader = hound::WavReader::open(wav).unwrap();
    assert_eq!(reader.spec().sample_rate, 24_000);
    assert!(reader.len() >= 1920);

    let transcript = app::transcribe_file("tests/fixtures/stt_parity/speech.wav")
        .await
        .unwrap();
    assert!(!transcript.words.is_empty());
    assert_eq!(transcript.duration_ms, 1_600);

    assert_eq!(
        app::say_or_explain("Hi.", wav).await,
        format!("saved {wav}")
    );
    let told = app::say_or_explain("   ", wav).await;
    assert!(told.starts_with("fix the input: "), "{told}");
    let nowhere = dir.path().join("no/such/dir/x.wav");
    let told = app::say_or_explain("Hi.", nowhere.to_str().unwrap()).await;
    assert!(told.starts_with("file trouble (NotFound): "), "{told}");
}
