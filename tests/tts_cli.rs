//! `kyutai say`, run as a separate process against the loopback hub with the tiny TTS repo.

mod support;
#[path = "support/tts_reference.rs"]
mod tts_reference;

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

use support::*;

fn kyutai(hub: &TestHub, cache: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut args = args.to_vec();
    args.push("--quiet");
    let mut child = kyutai_command(hub, cache, &args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn wav_samples(path: &Path) -> (hound::WavSpec, Vec<i16>) {
    let mut reader = hound::WavReader::open(path).unwrap();
    let spec = reader.spec();
    let samples = reader.samples::<i16>().map(|s| s.unwrap()).collect();
    (spec, samples)
}

#[test]
fn say_writes_a_16_bit_mono_24khz_wav_from_text_file_or_stdin() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let out_arg = dir.path().join("arg.wav");
    let out = kyutai(
        &hub,
        &cache,
        &[
            "say",
            "Hello from Rust.",
            "-o",
            out_arg.to_str().unwrap(),
            "--temperature",
            "0",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (spec, from_arg) = wav_samples(&out_arg);
    assert_eq!(spec.channels, 1);
    assert_eq!(spec.sample_rate, 24_000);
    assert_eq!(spec.bits_per_sample, 16);
    assert_eq!(spec.sample_format, hound::SampleFormat::Int);
    assert!(!from_arg.is_empty() && from_arg.len() % 1920 == 0);

    // The same text from a file and from standard input: greedy, so the same audio.
    let text_file = dir.path().join("text.txt");
    std::fs::write(&text_file, "Hello from Rust.").unwrap();
    let out_file = dir.path().join("file.wav");
    let out = kyutai(
        &hub,
        &cache,
        &[
            "say",
            "-f",
            text_file.to_str().unwrap(),
            "-o",
            out_file.to_str().unwrap(),
            "--temperature",
            "0",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(wav_samples(&out_file).1, from_arg);
    let out_stdin = dir.path().join("stdin.wav");
    let out = kyutai(
        &hub,
        &cache,
        &[
            "say",
            "-f",
            "-",
            "-o",
            out_stdin.to_str().unwrap(),
            "--temperature",
            "0",
        ],
        Some("Hello from Rust."),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(wav_samples(&out_stdin).1, from_arg);

    // Seeded sampling is reproducible across processes.
    let seeded = |name: &str| {
        let path = dir.path().join(name);
        let out = kyutai(
            &hub,
            &cache,
            &[
                "say",
                "Is it working?",
                "-o",
                path.to_str().unwrap(),
                "--seed",
                "42",
                "--voice",
                tiny::VOICE_NAMES[2],
                "--cfg-coef",
                "3.0",
            ],
            None,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        wav_samples(&path).1
    };
    assert_eq!(seeded("s1.wav"), seeded("s2.wav"));
}

/// Each knob of `kyutai say` (the text, `--voice`, `--cfg-coef`, `--temperature`, `--seed`)
/// changes the audio, and each setting gives the reference's audio for it
/// (`tests/fixtures/tts_parity/`, recorded by `tools/parity/tts/make_reference.py`), to the
/// 16-bit sample.
#[test]
fn say_speaks_the_reference_audio_for_each_setting() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let hello = "Hello from Rust.";
    let bonjour = tts_reference::fixture("tts_parity", "bonjour")["text"]
        .as_str()
        .unwrap()
        .to_string();
    let greedy = ["--temperature", "0"];
    let cases: [(&str, Vec<&str>); 7] = [
        ("hello", vec![hello]),
        ("bonjour", vec![bonjour.as_str()]),
        (
            "hello_other_voice",
            vec![hello, "--voice", tiny::VOICE_NAMES[2]],
        ),
        ("hello_cfg_3", vec![hello, "--cfg-coef", "3.0"]),
        (
            "hello_temp_0.6_seed_1",
            vec![hello, "--temperature", "0.6", "--seed", "1"],
        ),
        (
            "hello_temp_0.6_seed_2",
            vec![hello, "--temperature", "0.6", "--seed", "2"],
        ),
        (
            "hello_temp_1.0_seed_1",
            vec![hello, "--temperature", "1.0", "--seed", "1"],
        ),
    ];
    for (name, settings) in cases {
        let record = tts_reference::fixture("tts_parity", name);
        let out_path = dir.path().join(format!("{name}.wav"));
        let mut args = vec!["say", "-o", out_path.to_str().unwrap()];
        args.extend(&settings);
        if record["temp"].as_f64() == Some(0.0) {
            args.extend(greedy);
        }
        let out = kyutai(&hub, &cache, &args, None);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tts_reference::assert_same_pcm16("tts_parity", name, &wav_samples(&out_path).1);
    }
}

#[test]
fn say_errors_are_one_line_with_a_failing_exit_code() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let out_path = dir.path().join("x.wav");
    let out_path = out_path.to_str().unwrap();
    for (args, stdin, expected) in [
        (vec!["say", "   ", "-o", out_path], None, "nothing to say"),
        (
            vec!["say", "-f", "-", "-o", out_path],
            Some(""),
            "nothing to say",
        ),
        (
            vec!["say", "Hi.", "--voice", "nope/none.wav", "-o", out_path],
            None,
            "nope/none.wav",
        ),
        (
            vec!["say", "Hi.", "--cfg-coef", "9", "-o", out_path],
            None,
            "CFG",
        ),
        (
            vec!["say", "-f", "/no/such/file.txt", "-o", out_path],
            None,
            "/no/such/file.txt",
        ),
    ] {
        let out = kyutai(&hub, &cache, &args, stdin);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
    }
    assert!(!Path::new(out_path).exists(), "no WAV written on error");
}
