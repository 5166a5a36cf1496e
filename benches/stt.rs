//! STT benchmarks.
//!
//! * `stt_frame/*`: our whole pipeline (converter, framing, `asr::State`, word assembly) per
//!   80 ms frame against a bare loop over the `moshi` crate's `asr::State` on the same tiny
//!   model, in the same run. Target: pipeline / bare <= 1.05.
//! * `stt_rtf_1b/*`: the pipeline on a model with the published `kyutai/stt-1b-en_fr-candle`
//!   dimensions and random weights (no download), CPU f32 unless `KYUTAI_BENCH_DEVICE` /
//!   `KYUTAI_BENCH_DTYPE` say otherwise (`benches/support/device.rs`): seconds of compute per
//!   80 ms frame; the real-time factor is frame time / 0.08 s. Skipped unless `STT_BENCH_1B=1`
//!   (it needs ~5 GB of memory and minutes to set up on a CPU).
//!
//! `cargo bench --bench stt`; the ratio is printed at the end.

#[path = "support/device.rs"]
mod device;
#[path = "../tests/support/tiny.rs"]
mod tiny;

use std::path::Path;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fluent_voice_kyutai::SttModel;
use fluent_voice_kyutai::internals::Tokenizer;
use fluent_voice_kyutai::internals::stt::{FRAME_SAMPLES, SttConfig, transcribe_blocking};
use fluent_voice_kyutai::models::{SttModelPaths, WhenBusy};
use fluent_voice_kyutai::voice::SpeechSource;

/// Two seconds of a voiced-like signal.
fn clip() -> Vec<f32> {
    (0..48_000)
        .map(|i| {
            let t = i as f32 / 24_000.0;
            0.3 * (2.0 * std::f32::consts::PI * 140.0 * t).sin() * (3.0 * t).sin().abs()
        })
        .collect()
}

fn tiny_model(dir: &Path) -> SttModel {
    for (path, bytes) in tiny::stt_repo() {
        std::fs::write(dir.join(path), bytes).unwrap();
    }
    let paths = SttModelPaths {
        repo: "tiny".into(),
        commit: "0".repeat(40),
        config: dir.join("config.json"),
        lm_weights: dir.join(tiny::STT_MOSHI_NAME),
        mimi_weights: dir.join(tiny::STT_MIMI_NAME),
        tokenizer: dir.join(tiny::STT_TOKENIZER_NAME),
        mimi_config: Some(dir.join("mimi_config.json")),
    };
    let weights = fluent_voice_kyutai::models::Weights::F32;
    SttModel::load_weights(&paths, &Device::Cpu, weights, dir, Default::default()).unwrap()
}

/// The pipeline on `clip`; returns the number of model steps it ran.
fn pipeline(model: &SttModel, clip: &[f32]) -> usize {
    let mut t = model.transcriber(WhenBusy::Wait).unwrap();
    transcribe_blocking(
        SpeechSource::from_pcm(clip.to_vec(), 24_000, 1),
        &mut t,
        |w| {
            std::hint::black_box(w);
            true
        },
    )
    .unwrap();
    t.steps()
}

/// The baseline: `asr::State` stepped over the same frames (audio, then silence), nothing else.
fn bare(
    lm: &moshi::lm::LmModel,
    mimi: &moshi::mimi::Mimi,
    delay: usize,
    clip: &[f32],
    steps: usize,
) {
    let mut state = moshi::asr::State::new(1, delay, 0.0, mimi.clone(), lm.clone()).unwrap();
    let mask = moshi::StreamMask::new(vec![true], &Device::Cpu).unwrap();
    let zeros = [0.0f32; FRAME_SAMPLES];
    for k in 0..steps {
        let frame = clip
            .get(k * FRAME_SAMPLES..(k + 1) * FRAME_SAMPLES)
            .unwrap_or(&zeros);
        let pcm = Tensor::from_slice(frame, (1, 1, FRAME_SAMPLES), &Device::Cpu).unwrap();
        let msgs = state.step_pcm(pcm, None, &mask, |_, _, _| ()).unwrap();
        std::hint::black_box(msgs);
    }
}

fn frame_overhead(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let clip = clip();
    let steps = pipeline(&model, &clip);
    // The bare loop needs its own handles on the same weights.
    let (lm, mimi) = bare_parts(dir.path());
    let delay = model.config().delay_steps();

    let mut group = c.benchmark_group("stt_frame");
    group.throughput(Throughput::Elements(steps as u64));
    group.sample_size(30);
    group.bench_function("pipeline", |b| b.iter(|| pipeline(&model, &clip)));
    group.bench_function("bare_asr_state", |b| {
        b.iter(|| bare(&lm, &mimi, delay, &clip, steps))
    });
    group.finish();

    // The ratio, measured here too so that it is printed in one line: the two loops
    // alternate (so that load from other processes hits both alike), median of 21 each.
    let mut p = Vec::new();
    let mut b = Vec::new();
    for _ in 0..21 {
        let start = Instant::now();
        pipeline(&model, &clip);
        p.push(start.elapsed());
        let start = Instant::now();
        bare(&lm, &mimi, delay, &clip, steps);
        b.push(start.elapsed());
    }
    p.sort();
    b.sort();
    let (p, b) = (p[10], b[10]);
    println!(
        "stt_frame: pipeline {:.3} ms/frame, bare asr::State {:.3} ms/frame, ratio {:.3} \
         (medians of 21 alternating runs, {steps} frames)",
        p.as_secs_f64() * 1e3 / steps as f64,
        b.as_secs_f64() * 1e3 / steps as f64,
        p.as_secs_f64() / b.as_secs_f64()
    );
}

fn bare_parts(dir: &Path) -> (moshi::lm::LmModel, moshi::mimi::Mimi) {
    let config = SttConfig::from_file(&dir.join("config.json")).unwrap();
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(
            &[dir.join(tiny::STT_MOSHI_NAME)],
            DType::F32,
            &Device::Cpu,
        )
        .unwrap()
    };
    let lm = moshi::lm::LmModel::batched(
        1,
        &config.lm_config(),
        moshi::nn::MaybeQuantizedVarBuilder::Real(vb),
    )
    .unwrap();
    let mimi = fluent_voice_kyutai::internals::load_mimi(
        &dir.join(tiny::STT_MIMI_NAME),
        Some(&dir.join("mimi_config.json")),
        config.n_q,
        &Device::Cpu,
        DType::F32,
        Some(1),
    )
    .unwrap();
    (lm, mimi)
}

/// The published `kyutai/stt-1b-en_fr-candle` dimensions (see `docs/kyutai-models.md`).
fn config_1b() -> SttConfig {
    let json = serde_json::json!({
        "dim": 2048, "num_heads": 16, "num_layers": 16, "context": 750,
        "max_period": 100000.0, "card": 2048, "text_card": 8000, "n_q": 32, "dep_q": 0,
        "delays": vec![0; 33], "hidden_scale": 4.125, "gating": "silu", "norm": "rms_norm_f32",
        "positional_embedding": "rope", "extra_heads_num_heads": 4, "extra_heads_dim": 6,
        "stt_config": {"audio_delay_seconds": 0.5, "audio_silence_prefix_seconds": 0.0},
        "model_type": "stt"
    });
    SttConfig::from_json(json.to_string().as_bytes()).unwrap()
}

fn rtf_1b(c: &mut Criterion) {
    if std::env::var_os("STT_BENCH_1B").is_none() {
        eprintln!("stt_rtf_1b: skipped (set STT_BENCH_1B=1)");
        return;
    }
    let (device, dtype, target) = device::bench_target();
    let config = config_1b();
    let recorded = device::Recording::default();
    let vb = if device::load_timing() {
        candle_nn::VarBuilder::from_backend(Box::new(recorded.clone()), dtype, device.clone())
    } else {
        candle_nn::VarBuilder::from_backend(Box::new(device::Random), dtype, device.clone())
    };
    let vb = moshi::nn::MaybeQuantizedVarBuilder::Real(vb);
    if device::load_timing() {
        device::time_load("stt_rtf_1b LM", &recorded, &target, |path| {
            // What `SttModel::load` does with the LM file.
            // SAFETY: a temporary file nobody else writes.
            let vb = unsafe {
                candle_nn::VarBuilder::from_mmaped_safetensors(&[path], dtype, &device).unwrap()
            };
            let lm = moshi::lm::LmModel::batched(
                1,
                &config.lm_config(),
                moshi::nn::MaybeQuantizedVarBuilder::Real(vb),
            )
            .unwrap();
            device.synchronize().unwrap();
            lm
        });
        recorded.0.lock().unwrap().clear();
    }
    // Mimi runs in f32 whatever the LM's dtype, as in the library.
    let mimi = moshi::mimi::Mimi::new(
        moshi::mimi::Config::v0_1(Some(config.n_q)),
        candle_nn::VarBuilder::from_backend(Box::new(device::Random), DType::F32, device.clone()),
    )
    .unwrap();
    let tokenizer = Tokenizer::from_file("tests/fixtures/tiny_spm.model").unwrap();
    let setup = Instant::now();
    let model = SttModel::from_parts(
        config,
        vb,
        mimi,
        tokenizer,
        device.clone(),
        Default::default(),
    )
    .unwrap();
    // The first conversation builds its batch's language model.
    drop(model.transcriber(WhenBusy::Wait).unwrap());
    device.synchronize().unwrap();
    eprintln!(
        "stt_rtf_1b: random 1B-shaped model built on {target} in {:.1?}",
        setup.elapsed()
    );
    // 1 s of audio: with the model's padding, 26 steps.
    let clip: Vec<f32> = clip()[..24_000].to_vec();
    let steps = pipeline(&model, &clip);
    let mut group = c.benchmark_group("stt_rtf_1b");
    group.throughput(Throughput::Elements(steps as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(60));
    let id = format!("pipeline_{}", target.replace([' ', ':'], "_"));
    group.bench_function(id, |b| b.iter(|| pipeline(&model, &clip)));
    group.finish();
    let start = Instant::now();
    pipeline(&model, &clip);
    let per_frame = start.elapsed().as_secs_f64() / steps as f64;
    println!(
        "stt_rtf_1b: {:.1} ms per 80 ms frame on {target}, real-time factor {:.2} \
         (compute time / audio time; below 1 is faster than real time)",
        per_frame * 1e3,
        per_frame / 0.08
    );
}

criterion_group!(benches, frame_overhead, rtf_1b);
criterion_main!(benches);
