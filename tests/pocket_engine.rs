//! Pocket TTS through the library and the CLI, on the tiny model of `tests/fixtures/pocket`
//! served by the loopback hub as `kyutai-test/pocket-tts`: zero setup from a config, the
//! reference's audio through `KyutaiEngine::tts()` and `kyutai say`, seeds, voice states both
//! ways, the gated repository's fallback, and bad input.

mod support;

use fluent_voice_kyutai::KyutaiEngine;
use fluent_voice_kyutai::models::TtsFamily;
use fluent_voice_kyutai::voice::{
    AudioChunk, Speaker, TtsConversation, TtsConversationBuilder, VoiceError,
};
use futures::StreamExt;
use support::pocket::*;
use support::*;

struct Setup {
    engine: KyutaiEngine,
    hub: TestHub,
    dir: tempfile::TempDir,
}

async fn setup(gated: bool) -> Setup {
    let hub = TestHub::start();
    publish_pocket(&hub);
    let dir = tempfile::tempdir().unwrap();
    let threshold = case("short")["eos_threshold"].as_f64().unwrap();
    let yaml = config_file(dir.path(), threshold, gated);
    let config = support::config(&hub, &dir.path().join("cache"))
        .tts_model(TtsFamily::Pocket(yaml.to_string_lossy().into()));
    let engine = KyutaiEngine::with_config(config).await.unwrap();
    Setup { engine, hub, dir }
}

async fn speak(
    engine: &KyutaiEngine,
    voice: &str,
    text: &str,
    temperature: f32,
    seed: u64,
) -> Result<Vec<AudioChunk>, VoiceError> {
    let mut stream = engine
        .tts()
        .with_speaker(Speaker::speaker("A").with_voice(voice).speak(text).build())
        .temperature(temperature)
        .seed(seed)
        .synthesize()
        .await?
        .into_stream();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.next().await {
        chunks.push(chunk?);
    }
    Ok(chunks)
}

#[tokio::test]
async fn the_library_speaks_the_references_audio_in_80_ms_chunks() {
    let s = setup(false).await;
    let text = case("short")["text"].as_str().unwrap().to_string();
    let chunks = speak(&s.engine, "alba", &text, 0.0, 1).await.unwrap();
    let samples: Vec<f32> = chunks.iter().flat_map(|c| c.samples.clone()).collect();
    let reference = reference_pcm("short");
    let d = max_diff(&samples, &reference);
    assert!(
        d < 1e-4,
        "the library's audio differs from the reference's by {d}"
    );
    assert!(
        chunks
            .iter()
            .all(|c| c.samples.len() == 1920 && c.sample_rate == 24000)
    );
    assert!(chunks.last().unwrap().is_final);
    assert_eq!(chunks.iter().filter(|c| c.is_final).count(), 1);
    // Only what is used was fetched: the open weights, the tokenizer and one voice.
    assert_eq!(downloads_of(&s.hub, "model.safetensors"), 1);
    assert_eq!(downloads_of(&s.hub, "alba.safetensors"), 1);
    assert_eq!(downloads_of(&s.hub, "jean.safetensors"), 0);
    // The voice state is computed once per engine.
    speak(&s.engine, "alba", "Again.", 0.0, 1).await.unwrap();
    assert_eq!(downloads_of(&s.hub, "alba.safetensors"), 1);
}

#[tokio::test]
async fn the_same_seed_gives_the_same_audio() {
    let s = setup(false).await;
    let a = speak(&s.engine, "alba", "Where is the station?", 0.7, 5)
        .await
        .unwrap();
    let b = speak(&s.engine, "alba", "Where is the station?", 0.7, 5)
        .await
        .unwrap();
    let c = speak(&s.engine, "alba", "Where is the station?", 0.7, 6)
        .await
        .unwrap();
    let flat = |x: &[AudioChunk]| x.iter().flat_map(|c| c.samples.clone()).collect::<Vec<_>>();
    assert_eq!(flat(&a), flat(&b));
    assert_ne!(flat(&a), flat(&c));
}

#[tokio::test]
async fn without_access_to_the_gated_weights_predefined_voices_work_and_cloning_says_why() {
    let s = setup(true).await;
    let chunks = speak(&s.engine, "alba", "Hello world, how are you?", 0.0, 1)
        .await
        .unwrap();
    let samples: Vec<f32> = chunks.iter().flat_map(|c| c.samples.clone()).collect();
    assert!(max_diff(&samples, &reference_pcm("short")) < 1e-4);
    let wav = fixtures().join("voice.wav");
    let err = speak(&s.engine, wav.to_str().unwrap(), "Hello.", 0.0, 1)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HF_TOKEN") && err.contains("huggingface.co/kyutai-test/pocket-tts-gated"),
        "{err}"
    );
    assert!(err.contains("predefined voice"), "{err}");
    // The refused repository left nothing in the cache.
    let cache = s.dir.path().join("cache");
    assert!(
        !cache
            .join("models--kyutai-test--pocket-tts-gated")
            .join("blobs")
            .exists()
            || std::fs::read_dir(
                cache
                    .join("models--kyutai-test--pocket-tts-gated")
                    .join("blobs")
            )
            .unwrap()
            .next()
            .is_none()
    );
}

#[tokio::test]
async fn a_cloned_voice_exports_and_loads_back() {
    let s = setup(false).await;
    let wav = fixtures().join("voice.wav");
    let state = s.engine.pocket_voice(wav.to_str().unwrap()).await.unwrap();
    let file = s.dir.path().join("voice.safetensors");
    state.save(&file).unwrap();
    let a = speak(
        &s.engine,
        wav.to_str().unwrap(),
        "Can you hear the birds singing?",
        0.0,
        1,
    )
    .await
    .unwrap();
    let b = speak(
        &s.engine,
        file.to_str().unwrap(),
        "Can you hear the birds singing?",
        0.0,
        1,
    )
    .await
    .unwrap();
    let flat = |x: &[AudioChunk]| x.iter().flat_map(|c| c.samples.clone()).collect::<Vec<_>>();
    assert_eq!(
        flat(&a),
        flat(&b),
        "a voice state file speaks as the voice it was made from"
    );
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let s = setup(false).await;
    let err = speak(&s.engine, "alba", "   ", 0.0, 1)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("nothing to say"), "{err}");
    let err = speak(&s.engine, "nobody", "Hello.", 0.0, 1)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("nobody"), "{err}");
    let silent = s.dir.path().join("silent.wav");
    fluent_voice_kyutai::audio::write_wav(
        &silent,
        &vec![0.0; 48000],
        24000,
        1,
        fluent_voice_kyutai::audio::WavFormat::Pcm16,
    )
    .unwrap();
    let err = speak(&s.engine, silent.to_str().unwrap(), "Hello.", 0.0, 1)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("silent"), "{err}");
    let not_audio = s.dir.path().join("notes.txt");
    std::fs::write(&not_audio, "not audio").unwrap();
    assert!(
        speak(&s.engine, not_audio.to_str().unwrap(), "Hello.", 0.0, 1)
            .await
            .is_err()
    );
    let err = s
        .engine
        .tts()
        .with_speaker(
            Speaker::speaker("A")
                .with_voice("alba")
                .speak("Hallo.")
                .build(),
        )
        .language("de".parse().unwrap())
        .synthesize()
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("de"), "{err}");
}

#[tokio::test]
async fn a_config_whose_tokenizer_does_not_match_is_refused() {
    let hub = TestHub::start();
    publish(&hub, REPO, "main", &repo_files());
    let dir = tempfile::tempdir().unwrap();
    let yaml = std::fs::read_to_string(fixtures().join("tiny.yaml"))
        .unwrap()
        .replace("n_bins: 320", "n_bins: 321");
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, yaml).unwrap();
    let config = support::config(&hub, &dir.path().join("cache"))
        .tts_model(TtsFamily::Pocket(path.to_string_lossy().into()));
    let engine = KyutaiEngine::with_config(config).await.unwrap();
    let err = speak(&engine, "alba", "Hello.", 0.0, 1)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("320") && err.contains("321") && err.contains("n_bins"),
        "{err}"
    );
    let unknown = std::fs::read_to_string(fixtures().join("tiny.yaml")).unwrap() + "speed_up: 2\n";
    std::fs::write(&path, unknown).unwrap();
    let config = support::config(&hub, &dir.path().join("cache"))
        .tts_model(TtsFamily::Pocket(path.to_string_lossy().into()));
    let engine = KyutaiEngine::with_config(config).await.unwrap();
    let err = speak(&engine, "alba", "Hello.", 0.0, 1)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("speed_up"), "{err}");
}

#[test]
fn kyutai_say_with_a_pocket_model_writes_the_references_audio() {
    let hub = TestHub::start();
    publish(&hub, REPO, "main", &repo_files());
    let dir = tempfile::tempdir().unwrap();
    let threshold = case("short")["eos_threshold"].as_f64().unwrap();
    let yaml = config_file(dir.path(), threshold, false);
    let out = dir.path().join("out.wav");
    let output = kyutai_command(
        &hub,
        &dir.path().join("cache"),
        &[
            "say",
            "--tts-model",
            yaml.to_str().unwrap(),
            "--voice",
            "alba",
            "--temperature",
            "0",
            "-o",
            out.to_str().unwrap(),
            case("short")["text"].as_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    let (_, stderr) = output_text(&output);
    assert!(output.status.success(), "{stderr}");
    let mut reader = hound::WavReader::open(&out).unwrap();
    assert_eq!(reader.spec().sample_rate, 24000);
    let samples: Vec<f32> = reader
        .samples::<i16>()
        .map(|s| s.unwrap() as f32 / 32768.0)
        .collect();
    let d = max_diff(&samples, &reference_pcm("short"));
    assert!(
        d < 1e-4 + 1.0 / 32768.0,
        "kyutai say differs from the reference by {d}"
    );

    // export-voice writes a state that `say --voice FILE` takes.
    let state = dir.path().join("cloned.safetensors");
    let output = kyutai_command(
        &hub,
        &dir.path().join("cache"),
        &[
            "export-voice",
            "--tts-model",
            yaml.to_str().unwrap(),
            fixtures().join("voice.wav").to_str().unwrap(),
            state.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert!(output.status.success(), "{}", output_text(&output).1);
    // The reference's state for the same WAV (export_model_state after
    // get_state_for_audio_prompt): the same tensors, the same prompt, from the f32 weights
    // (export-voice never uses a quantized copy).
    let ours = candle_core::safetensors::load(&state, &candle_core::Device::Cpu).unwrap();
    let reference = candle_core::safetensors::load(
        fixtures().join("cases/cloned.voice_state.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let mut names: Vec<_> = ours.keys().collect();
    names.sort();
    let mut reference_names: Vec<_> = reference.keys().collect();
    reference_names.sort();
    assert_eq!(names, reference_names);
    for (name, r) in &reference {
        let o = &ours[name];
        if name.ends_with("/cache") {
            let len = r.dim(2).unwrap().min(o.dim(2).unwrap());
            let r = r.narrow(2, 0, len).unwrap();
            let o = o.narrow(2, 0, len).unwrap();
            let d = (o - r)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(d < 1e-4, "{name} differs from the reference's by {d}");
        } else {
            assert_eq!(
                o.to_dtype(candle_core::DType::I64)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<i64>()
                    .unwrap(),
                r.to_dtype(candle_core::DType::I64)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<i64>()
                    .unwrap(),
                "{name}"
            );
        }
    }
    let output = kyutai_command(
        &hub,
        &dir.path().join("cache"),
        &[
            "say",
            "--tts-model",
            yaml.to_str().unwrap(),
            "--voice",
            state.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "Hello.",
        ],
    )
    .output()
    .unwrap();
    assert!(output.status.success(), "{}", output_text(&output).1);

    // An unknown model name lists the ones there are.
    let output = kyutai_command(
        &hub,
        &dir.path().join("cache"),
        &["say", "--tts-model", "pocket:klingon", "Hi."],
    )
    .output()
    .unwrap();
    let (_, stderr) = output_text(&output);
    assert!(!output.status.success());
    assert!(
        stderr.contains("klingon") && stderr.contains("french_24l"),
        "{stderr}"
    );
}
