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
    let cases: [(&str, Vec<&str>); 9] = [
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
        // Fewer codebooks than the model's (`--n-q`, the reference's `TTSModel(n_q=...)`).
        ("hello_n_q_3", vec![hello, "--n-q", "3"]),
        (
            "hello_temp_0.6_seed_1_n_q_3",
            vec![hello, "--temperature", "0.6", "--seed", "1", "--n-q", "3"],
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
            vec!["say", "Hi.", "--n-q", "5", "-o", out_path],
            None,
            "this TTS model has 4 audio codebooks",
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

/// `some-llm | kyutai say -f - -o - | aplay`: standard input is read as it arrives, the WAV goes
/// to standard output as it is made (header of open-ended length, then 16-bit samples), speech
/// starts before the input ends, and the audio is that of the same text given whole.
#[test]
fn say_streams_standard_input_to_standard_output() {
    use std::io::Read;
    let hub = TestHub::start();
    publish_defaults(&hub);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let first = "Hello from Rust, this is the start of a sentence that a program is still ";
    let rest = "writing, slowly.";
    let args = ["say", "-f", "-", "-o", "-", "--seed", "5", "--quiet"];
    let mut child = kyutai_command(&hub, &cache, &args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(first.as_bytes()).unwrap();
    input.flush().unwrap();
    // Audio arrives while standard input is still open.
    let mut output = child.stdout.take().unwrap();
    let mut streamed = vec![0u8; 44 + 2 * 1920];
    output.read_exact(&mut streamed).unwrap();
    assert_eq!(&streamed[..4], b"RIFF");
    assert_eq!(&streamed[4..8], &[0xff; 4], "open-ended RIFF size");
    assert_eq!(&streamed[40..44], &[0xff; 4], "open-ended data size");
    input.write_all(rest.as_bytes()).unwrap();
    drop(input);
    output.read_to_end(&mut streamed).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());

    // The same text given whole, written to a file.
    let file = dir.path().join("whole.wav");
    let timings = dir.path().join("words.json");
    let out = kyutai(
        &hub,
        &cache,
        &[
            "say",
            &format!("{first}{rest}"),
            "-o",
            file.to_str().unwrap(),
            "--seed",
            "5",
            "--timings",
            timings.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, whole) = wav_samples(&file);
    let piped: Vec<i16> = streamed[44..]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    assert_eq!(piped, whole);

    // Timings: each word once, in order, within the audio.
    let words: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&timings).unwrap()).unwrap();
    let words = words.as_array().unwrap();
    let texts: Vec<&str> = words.iter().map(|w| w["text"].as_str().unwrap()).collect();
    let said = format!("{first}{rest}");
    assert_eq!(texts, said.split_whitespace().collect::<Vec<_>>());
    let duration_ms = whole.len() as u64 * 1000 / 24_000;
    let mut last_end = 0;
    for w in words {
        let (start, end) = (
            w["start_ms"].as_u64().unwrap(),
            w["end_ms"].as_u64().unwrap(),
        );
        assert!(
            start >= last_end && start <= end && end <= duration_ms,
            "{w}"
        );
        last_end = end;
    }
    // SRT when the file says so.
    let srt = dir.path().join("words.srt");
    let out = kyutai(
        &hub,
        &cache,
        &[
            "say",
            "Hello from Rust.",
            "-o",
            file.to_str().unwrap(),
            "--timings",
            srt.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success());
    let srt = std::fs::read_to_string(&srt).unwrap();
    assert!(
        srt.starts_with("1\n00:00:") && srt.contains("Hello from Rust."),
        "{srt}"
    );
}
