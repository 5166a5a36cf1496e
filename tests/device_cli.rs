//! `kyutai --device`: the CPU runs, a GPU this build cannot use is a one-line error that says
//! what to do, before anything is downloaded.

mod support;

use std::process::Output;

use support::*;

fn kyutai(hub: &TestHub, cache: &std::path::Path, args: &[&str]) -> Output {
    kyutai_command(hub, cache, args)
        .arg("--quiet")
        .output()
        .expect("the binary runs")
}

#[test]
fn device_cpu_speaks() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.wav");
    let output = kyutai(
        &hub,
        &dir.path().join("cache"),
        &[
            "say",
            "Hello.",
            "--device",
            "cpu",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    let (_, stderr) = output_text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(hound::WavReader::open(&out).unwrap().len() > 0);
}

#[cfg(not(feature = "cuda"))]
#[test]
fn device_cuda_without_the_feature_says_how_to_build_it_and_downloads_nothing() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    let dir = tempfile::tempdir().unwrap();
    for command in [&["say", "Hello."][..], &["transcribe", "speech.wav"][..]] {
        let mut args = command.to_vec();
        args.extend(["--device", "cuda:1"]);
        let output = kyutai(&hub, &dir.path().join("cache"), &args);
        let (_, stderr) = output_text(&output);
        assert!(!output.status.success());
        assert_eq!(
            stderr.trim(),
            "error: the cuda:1 device cannot be used: this build has no CUDA support; rebuild \
             with `--features cuda` (see the README, section GPU), or use the CPU (`--device cpu`)"
        );
    }
    assert!(
        hub.requests().is_empty(),
        "nothing is fetched for a run that cannot happen"
    );
}

#[test]
fn an_unknown_device_is_refused_with_the_accepted_names() {
    let hub = TestHub::start();
    let dir = tempfile::tempdir().unwrap();
    let output = kyutai(&hub, dir.path(), &["say", "Hello.", "--device", "gpu"]);
    let (_, stderr) = output_text(&output);
    assert!(!output.status.success());
    assert!(
        stderr.contains("unknown device `gpu`: use cpu, cuda, cuda:N, metal or metal:N"),
        "{stderr}"
    );
}
