//! Batched steps: what one step of N conversations costs against N steps of one.
//!
//! * `stt_batched_step/N`: the speech-to-text language model stepped for N conversations at
//!   once (the engine's batch, `asr::State` over the batched `LmModel`), against `stt_single_steps/N`:
//!   N steps of a batch of one, in the same run. The ratio is what batching saves: on a CPU a
//!   step reads every weight, so N at once should cost little more than one.
//! * The number of streams held in real time: the largest N whose batched step fits in 80 ms
//!   (Mimi encoding runs on each conversation's own thread and is not counted).
//!
//! The tiny model by default (fast, for the shape of the curve); `BATCH_BENCH_1B=1` uses the
//! published `kyutai/stt-1b-en_fr-candle` dimensions with random weights (CPU f32, about 5 GB
//! plus 200 MB of attention cache per conversation, minutes to set up), and also measures the
//! TTS language model of the published `kyutai/tts-1.6b-en_fr` dimensions, random weights built
//! in the bench (`tts_1_6b`: N generations in one [`step_many`] against N [`Generator::step`]s).
//! Both run where `KYUTAI_BENCH_DEVICE` / `KYUTAI_BENCH_DTYPE` say (`benches/support/device.rs`:
//! the CPU in f32 by default; `cuda` and `bf16` on a GPU).
//!
//! With `KYUTAI_BENCH_HUB` (the real-size, random-weight repos that
//! `tools/bench/make_real_size.py` builds: the published configs and file layouts), the same
//! comparison for both models at each weights setting of `KYUTAI_BENCH_WEIGHTS` (default
//! `f32,q8`), loaded as the library loads them:
//! * `stt_hub_<setting>`: the STT language model (`asr::State` over the batched `LmModel` on the
//!   loaded weights);
//! * `tts_hub_<setting>`: the TTS language model, N generations in one [`step_many`] against N
//!   [`Generator::step`]s, each past the text-audio delay (so every step runs the depformer's
//!   32 codebooks), long texts, the default voice.
//!
//! `cargo bench --bench batch` (`BATCH_BENCH_MAX=8` to stop at 8 conversations)

use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use criterion::measurement::WallTime;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
#[path = "support/device.rs"]
mod device;
#[path = "support/tts_real_size.rs"]
mod tts_real_size;

use device::{Recording, bench_target};
use fluent_voice_kyutai::internals::models::repo_folder_name;
use fluent_voice_kyutai::internals::stt::SttConfig;
use fluent_voice_kyutai::internals::tts::TtsConfig;
use fluent_voice_kyutai::internals::tts::conditioners::Conditions;
use fluent_voice_kyutai::internals::tts::generate::{GenerationSettings, Generator, step_many};
use fluent_voice_kyutai::internals::tts::lm::TtsLm;
use fluent_voice_kyutai::internals::tts::state_machine::Entry;
use fluent_voice_kyutai::internals::weights::TensorSource;
use fluent_voice_kyutai::models::{KyutaiModelConfig, ProgressMode, Weights};
use fluent_voice_kyutai::{KyutaiModelManager, SttModel, TtsModel};

/// The language model's config: tiny, or the published 1B.
fn config() -> (SttConfig, &'static str) {
    let real = std::env::var_os("BATCH_BENCH_1B").is_some();
    let (dim, heads, layers, card, text_card, n_q) = if real {
        (2048, 16, 16, 2048, 8000, 32)
    } else {
        (64, 4, 2, 64, 96, 4)
    };
    let json = serde_json::json!({
        "dim": dim, "num_heads": heads, "num_layers": layers, "context": 750,
        "max_period": 100000.0, "card": card, "text_card": text_card, "n_q": n_q, "dep_q": 0,
        "delays": vec![0; n_q + 1], "hidden_scale": 4.125, "gating": "silu",
        "norm": "rms_norm_f32", "positional_embedding": "rope", "extra_heads_num_heads": 4,
        "extra_heads_dim": 6, "model_type": "stt",
        "stt_config": {"audio_delay_seconds": 0.5, "audio_silence_prefix_seconds": 0.0}
    });
    let name = if real { "1b" } else { "tiny" };
    (
        SttConfig::from_json(json.to_string().as_bytes()).unwrap(),
        name,
    )
}

/// An `asr::State` of `batch` items over a batched LM whose weights come from `vb` (the same
/// tensors for every batch size).
fn state(
    config: &SttConfig,
    vb: &candle_nn::VarBuilder<'static>,
    mimi: &moshi::mimi::Mimi,
    batch: usize,
) -> moshi::asr::State {
    let vb = vb.clone();
    let lm = moshi::lm::LmModel::batched(
        batch,
        &config.lm_config(),
        moshi::nn::MaybeQuantizedVarBuilder::Real(vb),
    )
    .unwrap();
    moshi::asr::State::new(batch, config.delay_steps(), 0.0, mimi.clone(), lm).unwrap()
}

/// One language-model step of every item of `state`.
fn step(state: &mut moshi::asr::State, codes: &Tensor, mask: &moshi::StreamMask) {
    let msgs = state.step_tokens(codes, None, mask, |_, _, _| ()).unwrap();
    std::hint::black_box(msgs);
}

fn batched_steps(c: &mut Criterion) {
    let (config, name) = config();
    let (device, dtype, target) = bench_target();
    eprintln!("batch: on {target}");
    let weights = Recording::default();
    let vb = candle_nn::VarBuilder::from_backend(Box::new(weights), dtype, device.clone());
    let mimi_map = candle_nn::VarMap::new();
    let mut mimi_config = moshi::mimi::Config::v0_1(Some(config.n_q));
    if name == "tiny" {
        mimi_config.seanet.dimension = 32;
        mimi_config.seanet.n_filters = 4;
        mimi_config.transformer.d_model = 32;
    }
    let mimi = moshi::mimi::Mimi::new(
        mimi_config,
        candle_nn::VarBuilder::from_varmap(&mimi_map, DType::F32, &device),
    )
    .unwrap();
    let mut group = c.benchmark_group(format!("stt_{name}"));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(if name == "tiny" { 3 } else { 20 }));
    stt_batched(
        group,
        &|n| state(&config, &vb, &mimi, n),
        &config,
        &device,
        &format!("stt_{name}"),
    );
}

/// A batched step of N conversations against N single steps of the STT language model, for
/// each N: `state(n)` is an `asr::State` of `n` items.
fn stt_batched(
    mut group: criterion::BenchmarkGroup<'_, WallTime>,
    state: &dyn Fn(usize) -> moshi::asr::State,
    config: &SttConfig,
    device: &Device,
    name: &str,
) {
    let codes = |batch: usize| {
        let tokens: Vec<u32> = (0..batch * config.n_q)
            .map(|i| (i % config.card) as u32)
            .collect();
        Tensor::from_vec(tokens, (batch, config.n_q, 1), device).unwrap()
    };
    let mut single = state(1);
    let one = codes(1);
    let one_mask = moshi::StreamMask::new(vec![true], device).unwrap();
    let mut summary = Vec::new();
    for n in sizes() {
        let mut batched = state(n);
        let all = codes(n);
        let mask = moshi::StreamMask::new(vec![true; n], device).unwrap();
        summary.push(compare(
            &mut group,
            n,
            &mut || step(&mut batched, &all, &mask),
            &mut || {
                for _ in 0..n {
                    step(&mut single, &one, &one_mask);
                }
            },
        ));
    }
    group.finish();
    report(name, &summary);
}

/// Benchmarks one batched step of `n` conversations (`batched_step`) against `n` single steps
/// (`single_steps`), and times each once more for the summary: `(n, batched s, singles s)`.
fn compare(
    group: &mut criterion::BenchmarkGroup<'_, WallTime>,
    n: usize,
    batched_step: &mut dyn FnMut(),
    single_steps: &mut dyn FnMut(),
) -> (usize, f64, f64) {
    group.bench_with_input(BenchmarkId::new("batched_step", n), &n, |b, _| {
        b.iter(&mut *batched_step)
    });
    group.bench_with_input(BenchmarkId::new("single_steps", n), &n, |b, _| {
        b.iter(&mut *single_steps)
    });
    (n, time(batched_step), time(single_steps))
}

/// The TTS language model of the published dimensions, random weights built here, on the bench
/// device (with `BATCH_BENCH_1B`).
fn tts_random_steps(c: &mut Criterion) {
    if std::env::var_os("BATCH_BENCH_1B").is_none() {
        return;
    }
    let (device, dtype, target) = bench_target();
    let cfg =
        TtsConfig::from_json(tts_real_size::published_config().to_string().as_bytes()).unwrap();
    let vb = candle_nn::VarBuilder::from_backend(Box::new(device::Random), dtype, device.clone());
    let lm = TtsLm::new(cfg, &TensorSource::dense(vb)).unwrap();
    let conditions = tts_real_size::conditions(&device);
    let delay_steps = lm.cfg.delay_steps(12.5);
    let name = format!("tts_1_6b_{}", target.replace([' ', ':'], "_"));
    tts_batched(
        c,
        &lm,
        &|| tts_real_size::entries(10_000),
        &conditions,
        delay_steps,
        &name,
    );
}

/// N = 1, 2, 4, 8, 16 (and 32, 64 when `BATCH_BENCH_MAX` allows them, for a GPU);
/// `BATCH_BENCH_MAX` caps N (memory: each 1B conversation keeps about 200 MB of cache).
fn sizes() -> Vec<usize> {
    let max: usize = std::env::var("BATCH_BENCH_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    [1usize, 2, 4, 8, 16, 32, 64]
        .into_iter()
        .filter(|&n| n <= max)
        .collect()
}

/// Mean seconds of `f` over 3 runs (a plain timing for the summary; criterion keeps its own).
fn time(f: &mut dyn FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..3 {
        f();
    }
    start.elapsed().as_secs_f64() / 3.0
}

/// Prints the summary: per N, the batched step against N single steps, and the streams held
/// in real time (a batched step within 80 ms).
fn report(name: &str, summary: &[(usize, f64, f64)]) {
    println!("{name}: N, batched step ms, N single steps ms, ratio, per-stream ms");
    for (n, batched, singles) in summary {
        println!(
            "{name}: {n:>2}, {:>8.1}, {:>8.1}, {:.2}, {:.1}",
            batched * 1e3,
            singles * 1e3,
            batched / singles,
            batched * 1e3 / *n as f64
        );
    }
    let held = summary
        .iter()
        .filter(|(_, batched, _)| *batched <= 0.080)
        .map(|(n, _, _)| *n)
        .max()
        .unwrap_or(0);
    println!("{name}: streams held in real time (batched step <= 80 ms): {held}");
}

fn settings() -> Vec<(String, Weights)> {
    std::env::var("KYUTAI_BENCH_WEIGHTS")
        .unwrap_or_else(|_| "f32,q8".into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .map(|s| {
            let weights = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            (s, weights)
        })
        .collect()
}

fn group<'c>(c: &'c mut Criterion, name: &str) -> criterion::BenchmarkGroup<'c, WallTime> {
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    group.sampling_mode(criterion::SamplingMode::Flat);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(10));
    group
}

/// The real-size models of `KYUTAI_BENCH_HUB`, at each weights setting, one loaded at a time.
fn hub_steps(c: &mut Criterion) {
    let Ok(hub) = std::env::var("KYUTAI_BENCH_HUB") else {
        eprintln!("batch: the real-size part skipped (set KYUTAI_BENCH_HUB)");
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let manager = KyutaiModelManager::with_config(
        KyutaiModelConfig::default()
            .cache_dir(&hub)
            .offline(true)
            .progress(ProgressMode::Quiet),
    )
    .unwrap();
    let models = std::env::var("KYUTAI_BENCH_MODELS").unwrap_or_else(|_| "stt,tts".into());
    for (name, weights) in settings() {
        if models.contains("stt") {
            let paths = rt.block_on(manager.fetch_stt()).unwrap();
            let dir = std::path::PathBuf::from(&hub).join(repo_folder_name(&paths.repo));
            let model =
                SttModel::load_weights(&paths, &Device::Cpu, weights, &dir, Default::default())
                    .unwrap();
            stt_hub(c, &model, &format!("stt_hub_{name}"));
        }
        if models.contains("tts") {
            let paths = rt.block_on(manager.fetch_tts()).unwrap();
            let voice = rt
                .block_on(
                    manager.fetch_voice(&paths, "expresso/ex03-ex01_happy_001_channel1_334s.wav"),
                )
                .unwrap();
            let dir = std::path::PathBuf::from(&hub).join(repo_folder_name(&paths.repo));
            let model =
                TtsModel::load_weights(&paths, &Device::Cpu, weights, &dir, Default::default())
                    .unwrap();
            tts_hub(c, &model, &voice, &format!("tts_hub_{name}"));
        }
    }
}

fn stt_hub(c: &mut Criterion, model: &SttModel, name: &str) {
    let config = model.config();
    let state = |n: usize| {
        let lm = model.lm_batched(n).unwrap();
        moshi::asr::State::new(n, config.delay_steps(), 0.0, model.mimi().clone(), lm).unwrap()
    };
    stt_batched(group(c, name), &state, config, &Device::Cpu, name);
}

fn tts_hub(c: &mut Criterion, model: &TtsModel, voice: &std::path::Path, name: &str) {
    let voice = model.load_voice(voice).unwrap();
    let conditions = model.conditions(Some(&voice), 2.0).unwrap();
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(200);
    tts_batched(
        c,
        &model.lm,
        &|| model.entries(&text),
        &conditions,
        model.delay_steps,
        name,
    );
}

/// N generations of `script` in one [`step_many`] against N single steps, for each N.
fn tts_batched(
    c: &mut Criterion,
    lm: &TtsLm,
    script: &dyn Fn() -> Vec<Entry>,
    conditions: &Conditions,
    delay_steps: usize,
    name: &str,
) {
    let settings = GenerationSettings {
        temp: 0.6,
        text_temp: 0.6,
        top_k: lm.cfg.top_k,
        top_k_text: lm.cfg.top_k_text,
        seed: 1,
        final_padding: 4,
        max_steps: usize::MAX,
    };
    // Generations past the text-audio delay, stepped together to get there.
    let generations = |n: usize| {
        let mut generations: Vec<Generator> = (0..n)
            .map(|i| {
                let settings = GenerationSettings {
                    seed: i as u64,
                    ..settings
                };
                Generator::new(lm, script(), conditions, delay_steps, settings).unwrap()
            })
            .collect();
        for _ in 0..delay_steps + 1 {
            step_many(lm, &mut generations.iter_mut().collect::<Vec<_>>()).unwrap();
        }
        generations
    };
    let mut group = group(c, name);
    let mut summary = Vec::new();
    for n in sizes() {
        let mut batched = generations(n);
        let mut singles = generations(n);
        summary.push(compare(
            &mut group,
            n,
            &mut || {
                let mut rows: Vec<&mut Generator> = batched.iter_mut().collect();
                std::hint::black_box(step_many(lm, &mut rows).unwrap());
            },
            &mut || {
                for generation in &mut singles {
                    std::hint::black_box(generation.step(lm).unwrap());
                }
            },
        ));
    }
    group.finish();
    report(name, &summary);
}

criterion_group!(benches, batched_steps, tts_random_steps, hub_steps);
criterion_main!(benches);
