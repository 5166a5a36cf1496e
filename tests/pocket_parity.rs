//! Pocket TTS against the `pocket-tts` 4.0.1 Python package: tiny random-weight models in the
//! published layout and the reference's outputs on them, recorded by
//! `tools/parity/pocket/make_reference.py` (`tests/fixtures/pocket/`, see its README).
//!
//! Each case runs the whole generation here (text preparation and chunking, tokens, the
//! text-prompt pass, every flow-LM step with its EOS rule, Mimi's decoder with the fade-in)
//! and compares the chunks' texts and tokens exactly, and the latents, EOS logits and the whole
//! waveform within 1e-4. At temperature > 0 the reference's noise is replayed, draw for draw
//! (the two prompt passes' draws included).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use fluent_voice_kyutai::internals::pocket::flow_lm::Sampling;
use fluent_voice_kyutai::internals::pocket::noise::{Noise, Replayed, Seeded};
use fluent_voice_kyutai::internals::pocket::prompt_audio::{
    end_on_pause, prepare_prompt, read_audio,
};
use fluent_voice_kyutai::internals::pocket::{
    ChunkTrace, GenerateSettings, PocketConfig, PocketModel, VoiceState,
};
use serde_json::Value;

const TOLERANCE: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pocket")
}

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(fixtures().join("cases.json")).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    all["cases"].as_array().unwrap().clone()
}

fn case(name: &str) -> Value {
    cases()
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name}"))
}

/// The model of a case, from its YAML and the files of the fixture repo.
fn model(config_file: &str) -> PocketModel {
    let dir = fixtures();
    let yaml = std::fs::read_to_string(dir.join(config_file)).unwrap();
    let config = PocketConfig::from_yaml(&yaml, config_file).unwrap();
    let local = |hf: &str| {
        let path = hf.split_once("/languages/").unwrap().1;
        dir.join("repo/languages")
            .join(path.split('@').next().unwrap())
    };
    let weights = local(config.weights_path.as_deref().unwrap());
    let tokenizer = local(&config.flow_lm.lookup_table.tokenizer_path);
    PocketModel::load(config, &weights, &tokenizer, &Device::Cpu, DType::F32).unwrap()
}

fn tensors(case: &Value) -> std::collections::HashMap<String, Tensor> {
    let file = fixtures().join(format!(
        "cases/{}.safetensors",
        case["name"].as_str().unwrap()
    ));
    candle_core::safetensors::load(file, &Device::Cpu).unwrap()
}

fn vec1(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn settings(case: &Value, model: &PocketModel) -> GenerateSettings {
    let mut s = GenerateSettings::defaults(model.config());
    s.sampling = Sampling {
        temperature: case["temperature"].as_f64().unwrap(),
        noise_clamp: case["noise_clamp"].as_f64(),
        decode_steps: case["sampler_decode_steps"].as_u64().unwrap() as usize,
    };
    s.eos_threshold = case["eos_threshold"].as_f64().unwrap();
    s.frames_after_eos = case["frames_after_eos_argument"]
        .as_u64()
        .map(|n| n as usize);
    s.max_tokens = case["max_tokens"].as_u64().unwrap() as usize;
    s
}

/// The reference's draws in call order (`noise.all`), or zeros at temperature 0.
fn noise(case: &Value, t: &std::collections::HashMap<String, Tensor>) -> Box<dyn Noise> {
    match t.get("noise.all") {
        Some(all) => Box::new(Replayed::new(all.to_vec2::<f32>().unwrap())),
        None => {
            assert_eq!(case["temperature"].as_f64(), Some(0.0));
            Box::new(Seeded::new(0))
        }
    }
}

/// The voice of a case: a state file, or cloned from the reference's prepared 24 kHz prompt.
fn voice(case: &Value, model: &PocketModel, noise: &mut dyn Noise) -> VoiceState {
    let v = &case["voice"];
    match v["kind"].as_str().unwrap() {
        "predefined" | "file" => {
            VoiceState::load(&fixtures().join(v["file"].as_str().unwrap()), &Device::Cpu).unwrap()
        }
        "cloned" => {
            // Every cloned case clones `voice.wav`; the `cloned` case holds its prompt.
            let prompt = match tensors(case).get("voice.audio_prompt") {
                Some(p) => vec1(p),
                None => vec1(&tensors(&self::case("cloned"))["voice.audio_prompt"]),
            };
            let sampling = settings(case, model).sampling;
            model.voice_from_prompt(&prompt, noise, &sampling).unwrap()
        }
        other => panic!("voice kind {other}"),
    }
}

/// Runs a case and compares everything it recorded.
fn check(name: &str) -> Vec<ChunkTrace> {
    let case = case(name);
    let t = tensors(&case);
    let model = model(case["config"].as_str().unwrap());
    let mut noise = noise(&case, &t);
    let voice = voice(&case, &model, noise.as_mut());
    let mut pcm = Vec::new();
    let traces = model
        .synthesize(
            &voice,
            case["text"].as_str().unwrap(),
            &settings(&case, &model),
            noise.as_mut(),
            &mut |samples| {
                pcm.extend(samples);
                Ok(true)
            },
        )
        .unwrap();
    let chunks = case["chunks"].as_array().unwrap();
    let texts: Vec<&str> = chunks
        .iter()
        .map(|c| c["prepared_text"].as_str().unwrap())
        .collect();
    assert_eq!(
        traces.iter().map(|t| t.text.as_str()).collect::<Vec<_>>(),
        texts,
        "{name}: chunk texts"
    );
    for (i, (trace, c)) in traces.iter().zip(chunks).enumerate() {
        let ids: Vec<u32> = c["token_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(trace.tokens, ids, "{name} chunk {i}: tokens");
        assert_eq!(
            trace.eos_step,
            c["eos_step"].as_u64().map(|s| s as usize),
            "{name} chunk {i}: EOS step"
        );
        let eos = vec1(&t[&format!("eos_logits.{i}")]);
        let d = max_diff(&trace.eos_logits, &eos);
        assert!(d < TOLERANCE, "{name} chunk {i}: EOS logits differ by {d}");
        let latents = Tensor::cat(&trace.latents, 0).unwrap();
        let d = max_diff(&vec1(&latents), &vec1(&t[&format!("latents.{i}")]));
        assert!(d < TOLERANCE, "{name} chunk {i}: latents differ by {d}");
    }
    assert_eq!(traces.len(), chunks.len(), "{name}: chunk count");
    let reference = vec1(&t["pcm"]);
    let d = max_diff(&pcm, &reference);
    assert!(
        d < TOLERANCE,
        "{name}: waveform differs by {d} (of {} samples)",
        pcm.len()
    );
    let loud = reference.iter().fold(0f32, |m, x| m.max(x.abs()));
    assert!(
        loud > 100.0 * TOLERANCE,
        "{name}: a silent reference proves nothing ({loud})"
    );
    traces
}

#[test]
fn a_short_text_with_a_predefined_voice() {
    check("short");
}

#[test]
fn a_long_text_cut_into_chunks_each_from_the_voice_state() {
    let traces = check("long");
    assert!(traces.len() >= 3);
}

#[test]
fn a_voice_state_file_and_a_legacy_one() {
    check("voice_state");
    check("legacy_voice");
}

#[test]
fn a_voice_cloned_from_audio() {
    let case = case("cloned");
    let t = tensors(&case);
    let model = model("tiny.yaml");
    // The state after the voice prompt equals the reference's exported one.
    let prompt = vec1(&t["voice.audio_prompt"]);
    let sampling = settings(&case, &model).sampling;
    let ours = model
        .voice_from_prompt(&prompt, &mut Seeded::new(0), &sampling)
        .unwrap();
    let state_file = fixtures().join(case["voice"]["state_file"].as_str().unwrap());
    let theirs = VoiceState::load(&state_file, &Device::Cpu).unwrap();
    assert_eq!(ours.len(), theirs.len());
    let dir = tempfile::tempdir().unwrap();
    ours.save(&dir.path().join("v.safetensors")).unwrap();
    let reread = VoiceState::load(&dir.path().join("v.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(reread.len(), ours.len());
    // end_on_pause on the reference's 24 kHz audio gives the reference's prompt.
    let cut = end_on_pause(&vec1(&t["voice.audio_24k"]), 24000);
    let d = max_diff(&cut, &prompt);
    assert!(d < TOLERANCE, "end_on_pause differs by {d}");
    check("cloned");
    // The fixture WAV (16 kHz) reads, resamples and ends on a pause as the reference's does,
    // so cloning from the file starts from the reference's prompt.
    let (wav, rate) = read_audio(&fixtures().join("voice.wav")).unwrap();
    assert_eq!(rate, 16000);
    assert_eq!(
        wav.len(),
        case["voice"]["wav_samples"].as_u64().unwrap() as usize
    );
    let from_file = prepare_prompt(&wav, rate, 24000, false).unwrap();
    let d = max_diff(&from_file, &prompt);
    assert!(d < TOLERANCE, "the prompt from the WAV differs by {d}");
}

#[test]
fn a_small_model_with_gqa_a_low_rank_table_and_its_head() {
    check("small");
    check("drifting");
}

#[test]
fn temperature_with_the_references_noise_replayed() {
    check("temp");
    check("temp_clamp");
}

#[test]
fn several_lsd_decode_steps_until_max_gen_len() {
    let traces = check("lsd_steps");
    assert_eq!(traces[0].eos_step, None);
}

fn json(file: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(file)).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn token_ids_equal_the_python_tokenizers_for_both_kinds() {
    use fluent_voice_kyutai::internals::pocket::tokenizer::PocketTokenizer;
    let reference = json("tokenizer_reference.json");
    let files = &reference["files"];
    let n = reference["vocab_size"].as_u64().unwrap() as usize;
    let dir = fixtures();
    let json_tok = PocketTokenizer::load(
        &dir.join(files["tokenizer_json"].as_str().unwrap()),
        true,
        n,
    )
    .unwrap();
    let spm = PocketTokenizer::load(
        &dir.join(files["sentencepiece"].as_str().unwrap()),
        false,
        n,
    )
    .unwrap();
    let entries = reference["entries"].as_array().unwrap();
    assert!(entries.len() >= 30);
    for e in entries {
        let text = e["text"].as_str().unwrap();
        assert_eq!(
            json_tok.encode(text).unwrap(),
            ids(&e["tokenizer_json_ids"]),
            "json: {text:?}"
        );
        assert_eq!(
            spm.encode(text).unwrap(),
            ids(&e["sentencepiece_ids"]),
            "spm: {text:?}"
        );
        let decoded = json_tok.decode(&ids(&e["tokenizer_json_ids"])).unwrap();
        assert_eq!(
            decoded,
            e["tokenizer_json_decode"].as_str().unwrap(),
            "json decode"
        );
        let decoded = spm.decode(&ids(&e["sentencepiece_ids"])).unwrap();
        assert_eq!(
            decoded,
            e["sentencepiece_decode"].as_str().unwrap(),
            "spm decode"
        );
    }
    // A vocabulary that is not the config's is refused, naming both sizes.
    let Err(err) = PocketTokenizer::load(
        &dir.join(files["sentencepiece"].as_str().unwrap()),
        false,
        4000,
    ) else {
        panic!("a 320-piece tokenizer passed for 4000 bins")
    };
    let err = err.to_string();
    assert!(err.contains("320") && err.contains("4000"), "{err}");
}

#[test]
fn text_preparation_and_chunking_are_the_references() {
    use fluent_voice_kyutai::internals::pocket::text::{
        TextOptions, prepare_text_prompt, split_into_chunks,
    };
    use fluent_voice_kyutai::internals::pocket::tokenizer::PocketTokenizer;
    let reference = json("chunking_reference.json");
    let dir = fixtures();
    let tiny =
        PocketTokenizer::load(&dir.join("repo/languages/tiny/tokenizer.json"), true, 320).unwrap();
    let small = PocketTokenizer::load(
        &dir.join("repo/languages/tiny_small/tokenizer.model"),
        false,
        320,
    )
    .unwrap();
    let model = model("tiny.yaml");
    let entries = reference["entries"].as_array().unwrap();
    assert!(entries.len() >= 20);
    for e in entries {
        let text = e["text"].as_str().unwrap();
        let tok = if e["tokenizer"] == "tiny" {
            &tiny
        } else {
            &small
        };
        let s = &e["settings"];
        let opts = TextOptions {
            pad_with_spaces_for_short_inputs: s["pad_with_spaces_for_short_inputs"]
                .as_bool()
                .unwrap(),
            remove_semicolons: s["remove_semicolons"].as_bool().unwrap(),
            append_terminal_punctuation: s["append_terminal_punctuation"].as_bool().unwrap(),
            capitalize_first_letter: s["capitalize_first_letter"].as_bool().unwrap(),
            replace_characters: s["replace_characters"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect(),
        };
        let max_tokens = s["max_tokens"].as_u64().unwrap() as usize;
        if e.get("error").is_some() {
            // The reference refuses it (empty text); so do we, saying so.
            let err = split_into_chunks(tok, text, max_tokens, &opts).unwrap_err();
            assert!(err.to_string().contains("empty"), "{err}");
            continue;
        }
        let (whole, _) = prepare_text_prompt(text, &opts).unwrap();
        assert_eq!(
            whole,
            e["prepared_whole_text"].as_str().unwrap(),
            "{text:?}"
        );
        let chunks = split_into_chunks(tok, text, max_tokens, &opts).unwrap();
        let expected = e["chunks"].as_array().unwrap();
        let expected_texts: Vec<&str> = expected
            .iter()
            .map(|c| c["chunk"].as_str().unwrap())
            .collect();
        assert_eq!(chunks, expected_texts, "chunks of {text:?}");
        for (chunk, c) in chunks.iter().zip(expected) {
            let (prepared, guess) = prepare_text_prompt(chunk, &opts).unwrap();
            assert_eq!(prepared, c["prepared_text"].as_str().unwrap());
            let tokens = tok.encode(&prepared).unwrap();
            assert_eq!(tokens, ids(&c["token_ids"]), "tokens of {prepared:?}");
            assert_eq!(
                guess + 2,
                c["frames_after_eos_default"].as_u64().unwrap() as usize
            );
            assert_eq!(
                model.max_frames(tokens.len()),
                c["max_gen_len"].as_u64().unwrap() as usize
            );
        }
    }
}

#[test]
fn seeded_noise_has_std_sqrt_temperature_and_the_absolute_clamp() {
    // `torch.nn.init.normal_(std=sqrt(temp))`; `trunc_normal_` bounds are absolute.
    let x = Seeded::new(3).draw(40000, 0.49, None).unwrap();
    let std = (x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt();
    assert!((std - 0.7).abs() < 0.01, "std {std}, expected 0.7");
    let y = Seeded::new(3).draw(40000, 0.49, Some(0.5)).unwrap();
    assert!(y.iter().all(|v| v.abs() <= 0.5));
    assert!(
        y.iter().any(|v| v.abs() > 0.45),
        "the clamp is absolute, not in units of std"
    );
}
