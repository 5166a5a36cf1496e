//! Quantized weights on the tiny models served by the loopback hub: the derived file (built once,
//! keyed, recorded, reused, rebuilt when damaged), pre-quantized GGUF files, the tiny models
//! running end to end at q8 and q4, and clear errors for settings that cannot run.

#[path = "support/stt_tiny.rs"]
mod stt_tiny;
mod support;

use std::path::{Path, PathBuf};

use candle_core::Device;
use fluent_voice_kyutai::internals::models::repo_folder_name;
use fluent_voice_kyutai::internals::stt::transcribe_blocking;
use fluent_voice_kyutai::internals::tts::synth::SynthesisSettings;
use fluent_voice_kyutai::internals::weights::derived::{self, DerivedState};
use fluent_voice_kyutai::internals::weights::{self, LoadedFrom, Scheme};
use fluent_voice_kyutai::models::Weights;
use fluent_voice_kyutai::voice::SpeechSource;
use fluent_voice_kyutai::{
    KyutaiModelManager, MoshiError, SttModel, SttModelPaths, TtsModel, TtsModelPaths,
};
use support::TestHub;

const AUDIO: &str = "tests/fixtures/stt_parity/speech.wav";

struct Stt {
    _hub: TestHub,
    cache: tempfile::TempDir,
    paths: SttModelPaths,
}

impl Stt {
    fn repo_dir(&self) -> PathBuf {
        self.cache.path().join(repo_folder_name(support::STT))
    }

    /// The etag (sha256) of the LM blob: the key of its derived files.
    fn lm_sha256(&self) -> String {
        let target = std::fs::read_link(&self.paths.lm_weights).unwrap();
        target.file_name().unwrap().to_str().unwrap().to_string()
    }

    fn derived(&self, scheme: Scheme) -> PathBuf {
        self.repo_dir()
            .join(derived::DERIVED_DIR)
            .join(derived::derived_name(&self.lm_sha256(), scheme))
    }
}

async fn stt() -> Stt {
    let hub = TestHub::start();
    support::publish(&hub, support::STT, "main", &stt_tiny::stt_repo_talkative());
    let cache = tempfile::tempdir().unwrap();
    let manager = KyutaiModelManager::with_config(support::config(&hub, cache.path())).unwrap();
    let paths = manager.fetch_stt().await.unwrap();
    Stt {
        _hub: hub,
        cache,
        paths,
    }
}

fn load_stt(s: &Stt, weights: Weights) -> (SttModel, LoadedFrom) {
    let (source, from) =
        weights::lm_source(&s.paths.lm_weights, weights, &Device::Cpu, &s.repo_dir()).unwrap();
    (
        SttModel::load_source(&s.paths, &Device::Cpu, &source, Default::default()).unwrap(),
        from,
    )
}

/// The text tokens the model picks on the parity fixture, one per step.
fn tokens(model: &SttModel) -> Vec<u32> {
    let mut t = model.transcriber(Default::default()).unwrap();
    t.record_text_tokens();
    transcribe_blocking(SpeechSource::from_file(AUDIO), &mut t, |_| true).unwrap();
    t.text_tokens()
}

/// Text logits of every step of the parity fixture, the text token fed back being the greedy
/// pick of `reference` (or of this run when there is none).
fn teacher_forced(model: &SttModel, reference: Option<&[Vec<f32>]>) -> Vec<Vec<f32>> {
    use candle_core::{IndexOp, Tensor};
    use moshi::streaming::{StreamMask, StreamTensor};
    let pcm: Vec<f32> = hound::WavReader::open(AUDIO)
        .unwrap()
        .samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32768.0)
        .collect();
    let mut mimi = model.mimi().clone();
    let mut lm = model.lm().unwrap();
    let mut text = lm.text_start_token();
    let mut out: Vec<Vec<f32>> = Vec::new();
    for frame in pcm.chunks_exact(1920) {
        let x = Tensor::from_slice(frame, (1, 1, 1920), &Device::Cpu).unwrap();
        let codes = mimi
            .encode_step(&StreamTensor::from_tensor(x), &StreamMask::empty())
            .unwrap();
        let codes = codes.as_option().unwrap();
        let audio: Vec<Option<Tensor>> = (0..codes.dim(1).unwrap())
            .map(|q| Some(codes.i((.., q..q + 1, 0)).unwrap()))
            .collect();
        let text_ids = Tensor::new(&[[text]], &Device::Cpu).unwrap();
        let (logits, _) = lm
            .forward(Some(text_ids), audio, &StreamMask::empty())
            .unwrap();
        let logits = logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let step = out.len();
        text = argmax(reference.map_or(&logits, |r| &r[step])) as u32;
        out.push(logits);
    }
    out
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |best, i| if v[i] > v[best] { i } else { best })
}

/// Mean cosine similarity of the logits and agreement of the greedy picks.
fn compare(a: &[Vec<f32>], b: &[Vec<f32>]) -> (f64, f64) {
    let mut cosine = 0.0;
    let mut agree = 0;
    for (x, y) in a.iter().zip(b) {
        let dot: f64 = x.iter().zip(y).map(|(p, q)| f64::from(p * q)).sum();
        let nx: f64 = x.iter().map(|p| f64::from(p * p)).sum::<f64>().sqrt();
        let ny: f64 = y.iter().map(|q| f64::from(q * q)).sum::<f64>().sqrt();
        cosine += dot / (nx * ny);
        agree += usize::from(argmax(x) == argmax(y));
    }
    (cosine / a.len() as f64, agree as f64 / a.len() as f64)
}

fn mtime(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[tokio::test]
async fn q8_is_derived_once_recorded_and_reused_and_agrees_with_f32() {
    let s = stt().await;
    let (f32_model, from) = load_stt(&s, Weights::F32);
    assert_eq!(from, LoadedFrom::Dense);

    let (q8, from) = load_stt(&s, Weights::Q8);
    let path = s.derived(Scheme::Q8_0);
    assert_eq!(
        from,
        LoadedFrom::Derived {
            path: path.clone(),
            built: true
        }
    );
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{}.json", path.display())).unwrap())
            .unwrap();
    assert_eq!(record["source_sha256"], s.lm_sha256());
    assert_eq!(record["scheme"], "q8_0");
    assert_eq!(record["size"], std::fs::metadata(&path).unwrap().len());
    let meta = weights::quantize::check_gguf(&path).unwrap();
    assert_eq!(meta[weights::quantize::META_SOURCE_SHA256], s.lm_sha256());
    // Nothing but the file and its record (and the build lock) is left in the folder.
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(".building"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Teacher-forced (both fed the f32 run's tokens and the same Mimi codes), the 8-bit model's
    // logits stay close to f32's and mostly pick the same token. (Free-running, one different
    // pick changes every later input, so whole transcripts are not compared.)
    let reference = teacher_forced(&f32_model, None);
    let quantized = teacher_forced(&q8, Some(&reference));
    let (cosine, agreement) = compare(&reference, &quantized);
    eprintln!("tiny STT q8: cosine {cosine:.5}, greedy agreement {agreement:.3}");
    assert!(cosine > 0.999, "cosine {cosine}");
    assert!(agreement >= 0.8, "agreement {agreement}");
    assert!(!tokens(&q8).is_empty());

    // A second start reads the file as it is: not rebuilt.
    let before = mtime(&path);
    let (_, from) = load_stt(&s, Weights::Q8);
    assert_eq!(
        from,
        LoadedFrom::Derived {
            path: path.clone(),
            built: false
        }
    );
    assert_eq!(mtime(&path), before);
}

#[tokio::test]
async fn q4_falls_back_to_q4_0_blocks_on_the_tiny_dimensions_and_runs() {
    let s = stt().await;
    let (model, _) = load_stt(&s, Weights::Q4);
    let path = s.derived(Scheme::Q4K);
    // dim 64 is not a multiple of q4k's 256-weight blocks: the linears are q4_0.
    let q = candle_transformers::quantized_var_builder::VarBuilder::from_gguf(&path, &Device::Cpu)
        .unwrap();
    let w = q
        .get_no_shape("transformer.layers.0.self_attn.in_proj_weight")
        .unwrap();
    assert_eq!(w.dtype(), candle_core::quantized::GgmlDType::Q4_0);
    let emb = q.get_no_shape("emb.0.weight").unwrap();
    assert_eq!(emb.dtype(), candle_core::quantized::GgmlDType::BF16);
    assert_eq!(
        tokens(&model).len(),
        tokens(&load_stt(&s, Weights::F32).0).len()
    );
}

#[tokio::test]
async fn a_damaged_derived_file_is_found_and_rebuilt() {
    let s = stt().await;
    load_stt(&s, Weights::Q8);
    let path = s.derived(Scheme::Q8_0);
    let good = std::fs::read(&path).unwrap();

    // Truncated: its size no longer matches the record, so it is hashed, found wrong, rebuilt.
    std::fs::write(&path, &good[..good.len() / 2]).unwrap();
    let (_, from) = load_stt(&s, Weights::Q8);
    assert_eq!(
        from,
        LoadedFrom::Derived {
            path: path.clone(),
            built: true
        }
    );
    assert_eq!(std::fs::read(&path).unwrap(), good, "rebuilt identically");

    // A flipped byte with size and time kept is invisible to a start (one stat), but
    // `cache --verify` re-hashes it, deletes it, and the next start rebuilds it.
    let modified = mtime(&path);
    let mut bad = good.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 0x55;
    std::fs::write(&path, &bad).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    let entries = derived::scan(&s.repo_dir(), false);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].state, DerivedState::Recorded);
    let entries = derived::scan(&s.repo_dir(), true);
    assert_eq!(entries[0].state, DerivedState::Removed);
    assert!(!path.exists());
    let (_, from) = load_stt(&s, Weights::Q8);
    assert_eq!(
        from,
        LoadedFrom::Derived {
            path: path.clone(),
            built: true
        }
    );
    assert_eq!(
        derived::scan(&s.repo_dir(), true)[0].state,
        DerivedState::Good
    );

    // A file without its record (a build killed between rename and record) is not trusted.
    std::fs::remove_file(format!("{}.json", path.display())).unwrap();
    let (_, from) = load_stt(&s, Weights::Q8);
    assert_eq!(
        from,
        LoadedFrom::Derived {
            path: path.clone(),
            built: true
        }
    );

    // The source blob itself was never touched.
    let source = std::fs::read(&s.paths.lm_weights).unwrap();
    assert_eq!(
        hex_sha256(&source),
        s.lm_sha256(),
        "the published file is intact"
    );
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test]
async fn a_local_source_is_hashed_once_and_its_derived_file_kept_in_the_cache() {
    let s = stt().await;
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("model.safetensors");
    std::fs::copy(&s.paths.lm_weights, &local).unwrap();
    let local_dir = s.cache.path().join("models--local");
    let (_, from) = weights::lm_source(&local, Weights::Q8, &Device::Cpu, &local_dir).unwrap();
    let LoadedFrom::Derived { path, built: true } = from else {
        panic!("{from:?}")
    };
    assert!(path.starts_with(local_dir.join(derived::DERIVED_DIR)));
    assert!(
        path.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&s.lm_sha256()),
        "keyed by the content's sha256"
    );
    let (_, from) = weights::lm_source(&local, Weights::Q8, &Device::Cpu, &local_dir).unwrap();
    assert_eq!(from, LoadedFrom::Derived { path, built: false });
}

#[tokio::test]
async fn a_pre_quantized_gguf_loads_as_given_and_a_broken_one_is_refused_and_kept() {
    let s = stt().await;
    let reference = tokens(&load_stt(&s, Weights::Q8).0);
    // A GGUF made the same way, given as the LM file: loaded whatever the setting.
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("stt-q8.gguf");
    std::fs::copy(s.derived(Scheme::Q8_0), &gguf).unwrap();
    let paths = SttModelPaths {
        lm_weights: gguf.clone(),
        ..s.paths.clone()
    };
    let (source, from) =
        weights::lm_source(&gguf, Weights::F32, &Device::Cpu, &s.repo_dir()).unwrap();
    assert_eq!(from, LoadedFrom::Gguf);
    let model = SttModel::load_source(&paths, &Device::Cpu, &source, Default::default()).unwrap();
    assert_eq!(tokens(&model), reference);

    // Truncated: a clear error naming the file, and the user's file is left as it was.
    let bytes = std::fs::read(&gguf).unwrap();
    std::fs::write(&gguf, &bytes[..bytes.len() - 64]).unwrap();
    let error = SttModel::load_weights(
        &paths,
        &Device::Cpu,
        Weights::Q8,
        &s.repo_dir(),
        Default::default(),
    )
    .unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(error, MoshiError::InvalidModelFile { .. }),
        "{text}"
    );
    assert!(text.contains("stt-q8.gguf"), "{text}");
    assert_eq!(std::fs::read(&gguf).unwrap().len(), bytes.len() - 64);
}

/// bf16 on the CPU is the GPU's precision checked without a GPU (bf16 weights, products in f32;
/// `tests/dtype_parity.rs` holds it to f32): it loads, and derives no quantized file.
#[tokio::test]
async fn bf16_on_the_cpu_loads_dense_and_derives_nothing() {
    let s = stt().await;
    let model = SttModel::load_weights(
        &s.paths,
        &Device::Cpu,
        Weights::Bf16,
        &s.repo_dir(),
        Default::default(),
    )
    .unwrap();
    let mut t = model.transcriber(Default::default()).unwrap();
    t.push(&vec![0.0; 24_000]).unwrap();
    t.finish().unwrap();
    assert!(t.steps() > 0);
    assert!(!s.repo_dir().join(derived::DERIVED_DIR).exists());
}

async fn tts() -> (TestHub, tempfile::TempDir, TtsModelPaths, PathBuf) {
    let hub = TestHub::start();
    support::publish_defaults(&hub);
    let cache = tempfile::tempdir().unwrap();
    let manager = KyutaiModelManager::with_config(support::config(&hub, cache.path())).unwrap();
    let paths = manager.fetch_tts().await.unwrap();
    let voice = manager.fetch_voice(&paths, support::VOICE).await.unwrap();
    (hub, cache, paths, voice)
}

fn speak(model: &TtsModel, voice: &Path) -> Vec<f32> {
    let voice = model.load_voice(voice).unwrap();
    let conditions = model.conditions(Some(&voice), 2.0).unwrap();
    let settings = SynthesisSettings {
        temp: 0.0,
        text_temp: 0.0,
        seed: 1,
    };
    let mut pcm = Vec::new();
    model
        .synthesize_segment("Hello from Rust.", &conditions, &settings, &mut |chunk| {
            pcm.extend(chunk);
            true
        })
        .unwrap();
    pcm
}

#[tokio::test]
async fn the_tts_runs_at_q8_and_q4_with_every_large_linear_quantized() {
    let (_hub, cache, paths, voice) = tts().await;
    let repo_dir = cache.path().join(repo_folder_name(support::TTS));
    let reference = speak(
        &TtsModel::load_weights(
            &paths,
            &Device::Cpu,
            Weights::F32,
            &repo_dir,
            Default::default(),
        )
        .unwrap(),
        &voice,
    );
    for (setting, scheme) in [(Weights::Q8, Scheme::Q8_0), (Weights::Q4, Scheme::Q4K)] {
        let model =
            TtsModel::load_weights(&paths, &Device::Cpu, setting, &repo_dir, Default::default())
                .unwrap();
        let pcm = speak(&model, &voice);
        assert!(!pcm.is_empty() && pcm.iter().all(|x| x.abs() <= 1.0));
        // Within a few frames of the f32 length (the state machine may end a step apart).
        let frames = |n: usize| n / 1920;
        assert!(
            frames(pcm.len()).abs_diff(frames(reference.len())) <= 4,
            "{setting}: {} frames, f32 {}",
            frames(pcm.len()),
            frames(reference.len())
        );
        let sha = std::fs::read_link(&paths.lm_weights).unwrap();
        let sha = sha.file_name().unwrap().to_str().unwrap();
        let path = repo_dir
            .join(derived::DERIVED_DIR)
            .join(derived::derived_name(sha, scheme));
        let q =
            candle_transformers::quantized_var_builder::VarBuilder::from_gguf(&path, &Device::Cpu)
                .unwrap();
        // Every large linear whose rows are whole blocks (the tiny feed-forward outputs, 176
        // and 42 wide, are not: they stay as published).
        for name in [
            "transformer.layers.0.self_attn.in_proj_weight",
            "transformer.layers.0.self_attn.out_proj.weight",
            "transformer.layers.0.cross_attention.in_proj_weight",
            "transformer.layers.0.cross_attention.out_proj.weight",
            "transformer.layers.0.gating.linear_in.weight",
            "depformer.layers.0.self_attn.in_proj_weight",
            "depformer.layers.0.self_attn.out_proj.weight",
            "depformer.layers.0.gating.2.linear_in.weight",
            "depformer_in.1.weight",
            "linears.3.weight",
            "text_linear.weight",
        ] {
            let dtype = q.get_no_shape(name).unwrap().dtype();
            assert!(
                !matches!(
                    dtype,
                    candle_core::quantized::GgmlDType::F32
                        | candle_core::quantized::GgmlDType::BF16
                ),
                "{setting}: {name} is {dtype:?}"
            );
        }
        for name in [
            "emb.0.weight",
            "transformer.layers.0.norm1.alpha",
            "transformer.layers.0.gating.linear_out.weight",
            "depformer.layers.0.gating.2.linear_out.weight",
        ] {
            let dtype = q.get_no_shape(name).unwrap().dtype();
            assert_eq!(dtype, candle_core::quantized::GgmlDType::BF16, "{name}");
        }
    }
}
