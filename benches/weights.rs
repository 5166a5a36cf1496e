//! Speed and fidelity of each weights setting on real-size models: the published configs of
//! `kyutai/stt-1b-en_fr-candle` and `kyutai/tts-1.6b-en_fr` with random weights, in the published
//! file layout (bf16 LM, f32 Mimi, 8000-piece tokenizer), built by
//! `tools/bench/make_real_size.py` into a Hugging Face cache:
//!
//! ```text
//! /work/venv-quant/bin/python tools/bench/make_real_size.py /work/bigmodels
//! KYUTAI_BENCH_HUB=/work/bigmodels/hub cargo bench --bench weights
//! ```
//!
//! Without `KYUTAI_BENCH_HUB` it does nothing. `KYUTAI_BENCH_MODELS` (default `stt,tts`) and
//! `KYUTAI_BENCH_WEIGHTS` (default `f32,q8,q4`; `q4_0` measures the other 4-bit candidate)
//! choose what runs; `KYUTAI_BENCH_COLD=1` deletes the derived files first, so that the load
//! time includes quantizing.
//!
//! Models are loaded one after the other (never two at once). For each setting:
//! - the load time;
//! - criterion groups `stt/<setting>` (`mimi_encode`, `lm_step`: one 80 ms frame each; and the
//!   whole transcriber on an 8 s clip, Mimi on its own thread, per step: `pipelined_frame`) and
//!   `tts/<setting>` (`main_transformer`, `depformer` (32 codebooks), `mimi_decode`), and the
//!   time to the first audio chunk of a TTS conversation;
//! - fidelity against f32, teacher-forced: every setting is fed the same inputs (the f32 run's
//!   greedy tokens, and for STT the same Mimi codes), and its logits are compared with f32's at
//!   every step: cosine similarity and agreement of the greedy (argmax) token;
//! - a summary table, with every time also as a ratio to f32 measured in the same run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use candle_core::{Device, IndexOp, Tensor};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use fluent_voice_kyutai::internals::models::repo_folder_name;
use fluent_voice_kyutai::internals::tts::sampling::argmax;
use fluent_voice_kyutai::internals::tts::synth::SynthesisSettings;
use fluent_voice_kyutai::internals::weights::{self, Scheme, TensorSource, derived};
use fluent_voice_kyutai::models::{KyutaiModelConfig, ProgressMode, Weights};
use fluent_voice_kyutai::{KyutaiModelManager, SttModel, SttModelPaths, TtsModel, TtsModelPaths};
use moshi::streaming::{StreamMask, StreamTensor};

const VOICE: &str = "expresso/ex03-ex01_happy_001_channel1_334s.wav";
/// Teacher-forced steps compared (STT: 8 s of audio; TTS: 2.4 s).
const STT_STEPS: usize = 100;
const TTS_STEPS: usize = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setting {
    F32,
    Quantized(Scheme),
}

impl Setting {
    fn parse(name: &str) -> Setting {
        match name {
            "f32" => Setting::F32,
            "q8" => Setting::Quantized(Scheme::Q8_0),
            "q4" => Setting::Quantized(Scheme::Q4K),
            "q4_0" => Setting::Quantized(Scheme::Q4_0),
            other => panic!("unknown setting {other}"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Setting::F32 => "f32",
            Setting::Quantized(Scheme::Q8_0) => "q8",
            Setting::Quantized(Scheme::Q4K) => "q4",
            Setting::Quantized(Scheme::Q4_0) => "q4_0",
        }
    }

    /// The language model's tensors (quantizing first when needed).
    fn source(self, lm: &std::path::Path, repo_dir: &std::path::Path) -> TensorSource<'static> {
        match self {
            Setting::F32 => {
                weights::lm_source(lm, Weights::F32, &Device::Cpu, repo_dir)
                    .unwrap()
                    .0
            }
            Setting::Quantized(scheme) => {
                if std::env::var_os("KYUTAI_BENCH_COLD").is_some() {
                    let (sha, dir) = derived::source_identity(lm, repo_dir).unwrap();
                    derived::discard(&dir.join(derived::derived_name(&sha, scheme)));
                }
                weights::quantized_source(lm, scheme, &Device::Cpu, repo_dir)
                    .unwrap()
                    .0
            }
        }
    }
}

/// Per-step logits of a teacher-forced run, and the greedy tokens.
#[derive(Default)]
struct Trace {
    logits: Vec<Vec<f32>>,
}

/// Cosine similarity (mean and minimum over steps) and greedy agreement of `run` against
/// `reference`.
fn compare(reference: &Trace, run: &Trace) -> (f64, f64, f64) {
    let mut cosines = Vec::new();
    let mut agree = 0usize;
    for (a, b) in reference.logits.iter().zip(&run.logits) {
        let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
        for (&x, &y) in a.iter().zip(b) {
            dot += f64::from(x) * f64::from(y);
            na += f64::from(x) * f64::from(x);
            nb += f64::from(y) * f64::from(y);
        }
        cosines.push(dot / (na.sqrt() * nb.sqrt()));
        agree += usize::from(argmax(a) == argmax(b));
    }
    let n = cosines.len().max(1) as f64;
    let mean = cosines.iter().sum::<f64>() / n;
    let min = cosines.iter().copied().fold(f64::INFINITY, f64::min);
    (mean, min, agree as f64 / n)
}

struct Row {
    model: &'static str,
    setting: &'static str,
    load_s: f64,
    stages: Vec<(&'static str, Stage)>,
    fidelity: Option<(f64, f64, f64)>,
}

/// Seconds of CPU time this process has used (all threads), from `/proc/self/stat` (Linux;
/// 0 elsewhere). Unlike wall time, it does not grow when other processes take the cores.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Median wall time and mean CPU time (all threads) of `runs` calls, in milliseconds.
fn measure(mut f: impl FnMut(), runs: usize) -> Stage {
    let cpu = cpu_seconds();
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let cpu_ms = (cpu_seconds() - cpu) * 1e3 / runs as f64;
    times.sort_by(f64::total_cmp);
    Stage {
        wall_ms: times[times.len() / 2],
        cpu_ms,
    }
}

#[derive(Clone, Copy)]
struct Stage {
    wall_ms: f64,
    cpu_ms: f64,
}

impl std::ops::Add for Stage {
    type Output = Stage;
    fn add(self, o: Stage) -> Stage {
        Stage {
            wall_ms: self.wall_ms + o.wall_ms,
            cpu_ms: self.cpu_ms + o.cpu_ms,
        }
    }
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn manager(hub: &str) -> KyutaiModelManager {
    KyutaiModelManager::with_config(
        KyutaiModelConfig::default()
            .cache_dir(hub)
            .offline(true)
            .progress(ProgressMode::Quiet),
    )
    .unwrap()
}

fn speech(hub: &str, seconds: usize) -> Vec<f32> {
    let path = PathBuf::from(hub)
        .parent()
        .unwrap()
        .join(format!("audio/speech_{seconds}s.wav"));
    let mut reader = hound::WavReader::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (made by make_real_size.py)", path.display()));
    reader
        .samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32768.0)
        .collect()
}

fn stt(c: &mut Criterion, hub: &str, settings: &[Setting], rows: &mut Vec<Row>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let manager = manager(hub);
    let paths: SttModelPaths = rt.block_on(manager.fetch_stt()).unwrap();
    let repo_dir = PathBuf::from(hub).join(repo_folder_name(&paths.repo));
    let audio = speech(hub, 8);
    let mut codes: Vec<Tensor> = Vec::new();
    let mut reference: Option<Trace> = None;
    for &setting in settings {
        let t = Instant::now();
        let source = setting.source(&paths.lm_weights, &repo_dir);
        let model =
            SttModel::load_source(&paths, &Device::Cpu, &source, Default::default()).unwrap();
        drop(source);
        let load_s = t.elapsed().as_secs_f64();
        eprintln!("stt {}: loaded in {load_s:.1} s", setting.name());

        // Mimi codes of the clip, frame by frame (Mimi is f32 at every setting).
        if codes.is_empty() {
            let mut mimi = model.mimi().clone();
            for frame in audio.chunks_exact(1920).take(STT_STEPS) {
                let pcm = Tensor::from_slice(frame, (1, 1, 1920), &Device::Cpu).unwrap();
                let out = mimi
                    .encode_step(&StreamTensor::from_tensor(pcm), &StreamMask::empty())
                    .unwrap();
                codes.push(out.as_option().unwrap().clone());
            }
        }
        // Teacher-forced run: the text token fed is the f32 run's greedy one.
        let mut lm = model.lm().unwrap();
        let mut trace = Trace::default();
        let mut text = lm.text_start_token();
        for (step, frame) in codes.iter().enumerate() {
            let audio_ids: Vec<Option<Tensor>> = (0..frame.dim(1).unwrap())
                .map(|q| Some(frame.i((.., q..q + 1, 0)).unwrap()))
                .collect();
            let text_ids = Tensor::new(&[[text]], &Device::Cpu).unwrap();
            let (logits, _) = lm
                .forward(Some(text_ids), audio_ids, &StreamMask::empty())
                .unwrap();
            let logits = logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            text = match &reference {
                Some(r) => argmax(&r.logits[step]) as u32,
                None => argmax(&logits) as u32,
            };
            trace.logits.push(logits);
        }
        let fidelity = reference.as_ref().map(|r| compare(r, &trace));
        if reference.is_none() {
            reference = Some(trace);
        }

        // Speed: one frame of Mimi encode, one LM step (past the clip: steady state).
        let name = setting.name();
        let mut group = c.benchmark_group(format!("stt/{name}"));
        group.sample_size(20);
        group.sampling_mode(SamplingMode::Flat);
        group.warm_up_time(Duration::from_secs(1));
        group.measurement_time(Duration::from_secs(8));
        let mut mimi = model.mimi().clone();
        let pcm = Tensor::from_slice(&audio[..1920], (1, 1, 1920), &Device::Cpu).unwrap();
        let mut encode = || {
            mimi.encode_step(
                &StreamTensor::from_tensor(pcm.clone()),
                &StreamMask::empty(),
            )
            .unwrap()
        };
        group.bench_function("mimi_encode", |b| b.iter(&mut encode));
        let audio_ids: Vec<Option<Tensor>> = (0..codes[0].dim(1).unwrap())
            .map(|q| Some(codes[0].i((.., q..q + 1, 0)).unwrap()))
            .collect();
        let text_ids = Tensor::new(&[[3u32]], &Device::Cpu).unwrap();
        let mut step = || {
            let (logits, ys) = lm
                .forward(
                    Some(text_ids.clone()),
                    audio_ids.clone(),
                    &StreamMask::empty(),
                )
                .unwrap();
            let heads = lm.extra_heads(&ys).unwrap();
            std::hint::black_box((logits.to_vec3::<f32>().unwrap(), heads));
        };
        group.bench_function("lm_step", |b| b.iter(&mut step));
        group.finish();
        let encode_ms = measure(|| drop(encode()), 15);
        let step_ms = measure(&mut step, 15);
        // The whole pipeline on the clip (Mimi on its own thread, one frame ahead of the
        // language model), per model step.
        let started = (Instant::now(), cpu_seconds());
        let mut transcriber = model.transcriber(Default::default()).unwrap();
        for chunk in audio.chunks(1920) {
            transcriber.push(chunk).unwrap();
        }
        transcriber.finish().unwrap();
        let steps = transcriber.steps() as f64;
        let pipeline = Stage {
            wall_ms: started.0.elapsed().as_secs_f64() * 1e3 / steps,
            cpu_ms: (cpu_seconds() - started.1) * 1e3 / steps,
        };
        rows.push(Row {
            model: "stt",
            setting: name,
            load_s,
            stages: vec![
                ("mimi_encode", encode_ms),
                ("transformer", step_ms),
                ("frame", encode_ms + step_ms),
                ("pipelined_frame", pipeline),
            ],
            fidelity,
        });
    }
}

fn tts(c: &mut Criterion, hub: &str, settings: &[Setting], rows: &mut Vec<Row>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let manager = manager(hub);
    let paths: TtsModelPaths = rt.block_on(manager.fetch_tts()).unwrap();
    let voice = rt.block_on(manager.fetch_voice(&paths, VOICE)).unwrap();
    let repo_dir = PathBuf::from(hub).join(repo_folder_name(&paths.repo));
    // Teacher-forced inputs, from the f32 run: per step the text token and 32 audio tokens.
    let mut inputs: Vec<Vec<i64>> = Vec::new();
    let mut reference: Option<(Trace, Trace)> = None;
    for &setting in settings {
        let t = Instant::now();
        let source = setting.source(&paths.lm_weights, &repo_dir);
        let model =
            TtsModel::load_source(&paths, &Device::Cpu, &source, Default::default()).unwrap();
        drop(source);
        let load_s = t.elapsed().as_secs_f64();
        eprintln!("tts {}: loaded in {load_s:.1} s", setting.name());
        let voice = model.load_voice(&voice).unwrap();
        let conditions = model.conditions(Some(&voice), 2.0).unwrap();
        let lm = &model.lm;
        let n_q = lm.cfg.n_q;

        let mut state = lm.new_state(&conditions).unwrap();
        let (mut text_trace, mut audio_trace) = (Trace::default(), Trace::default());
        let mut tokens: Vec<i64> = std::iter::once(lm.cfg.text_card as i64)
            .chain(std::iter::repeat_n(lm.cfg.card as i64, n_q))
            .collect();
        for step in 0..TTS_STEPS {
            if let Some(forced) = inputs.get(step) {
                tokens.clone_from(forced);
            } else {
                inputs.push(tokens.clone());
            }
            let (out, text_logits) = lm.forward_text(&mut state, &tokens).unwrap();
            let next_text = match &reference {
                Some((r, _)) => argmax(&r.logits[step]) as i64,
                None => argmax(&text_logits) as i64,
            };
            text_trace.logits.push(text_logits);
            lm.depformer_reset(&mut state);
            let mut prev = next_text;
            let mut next = vec![next_text];
            for cb in 0..n_q {
                let logits = lm.depformer_logits(&mut state, cb, prev, &out).unwrap();
                prev = match &reference {
                    Some((_, r)) => argmax(&r.logits[step * n_q + cb]) as i64,
                    None => argmax(&logits) as i64,
                };
                next.push(prev);
                audio_trace.logits.push(logits);
            }
            tokens = next;
        }
        let fidelity = reference.as_ref().map(|(rt, ra)| {
            let (t_mean, t_min, t_agree) = compare(rt, &text_trace);
            let (a_mean, _, a_agree) = compare(ra, &audio_trace);
            eprintln!(
                "tts {}: text logits cosine {t_mean:.5} (min {t_min:.5}), greedy agreement \
                 {:.1}%; audio logits cosine {a_mean:.5}, greedy agreement {:.1}%",
                setting.name(),
                t_agree * 100.0,
                a_agree * 100.0
            );
            // The table shows text and audio together: mean cosine and agreement over all
            // 33 heads of each step.
            let n = 1.0 + n_q as f64;
            (
                (t_mean + a_mean * n_q as f64) / n,
                t_min,
                (t_agree + a_agree * n_q as f64) / n,
            )
        });
        if reference.is_none() {
            reference = Some((text_trace, audio_trace));
        }

        // Time to the first audio chunk of a conversation (the model loaded): the audio delay's
        // steps, then the first decoded frames.
        let settings = SynthesisSettings {
            temp: 0.6,
            text_temp: 0.6,
            seed: 1,
        };
        let started = Instant::now();
        let started_cpu = cpu_seconds();
        let mut first_ms = None;
        model
            .synthesize_segment(
                "Hello there, this is a test of the first audio.",
                &conditions,
                &settings,
                &mut |_| {
                    first_ms = Some(started.elapsed().as_secs_f64() * 1e3);
                    false
                },
            )
            .unwrap();
        let first_ms = first_ms.expect("some audio");
        let first_cpu_ms = (cpu_seconds() - started_cpu) * 1e3;

        let name = setting.name();
        let mut group = c.benchmark_group(format!("tts/{name}"));
        group.sample_size(10);
        group.sampling_mode(SamplingMode::Flat);
        group.warm_up_time(Duration::from_secs(1));
        group.measurement_time(Duration::from_secs(8));
        let tokens = inputs[5].clone();
        let mut main = || lm.forward_text(&mut state, &tokens).unwrap();
        group.bench_function("main_transformer", |b| b.iter(&mut main));
        let (out, _) = main();
        let mut dep_state = lm.new_state(&conditions).unwrap();
        let mut depformer = || {
            lm.depformer_reset(&mut dep_state);
            let mut prev = 0i64;
            for cb in 0..n_q {
                let logits = lm.depformer_logits(&mut dep_state, cb, prev, &out).unwrap();
                prev = argmax(&logits) as i64;
            }
            prev
        };
        group.bench_function("depformer", |b| b.iter(&mut depformer));
        let mut mimi = model.mimi().clone();
        let codes = Tensor::from_vec(vec![7u32; n_q], (1, n_q, 1), &Device::Cpu).unwrap();
        let mut decode = || {
            mimi.decode_step(
                &StreamTensor::from_tensor(codes.clone()),
                &StreamMask::empty(),
            )
            .unwrap()
        };
        group.bench_function("mimi_decode", |b| b.iter(&mut decode));
        group.finish();
        let main_ms = measure(|| drop(main()), 7);
        let dep_ms = measure(
            || {
                depformer();
            },
            7,
        );
        let dec_ms = measure(|| drop(decode()), 7);
        rows.push(Row {
            model: "tts",
            setting: name,
            load_s,
            stages: vec![
                ("main_transformer", main_ms),
                ("depformer", dep_ms),
                ("mimi_decode", dec_ms),
                ("frame", main_ms + dep_ms + dec_ms),
                (
                    "first_audio",
                    Stage {
                        wall_ms: first_ms,
                        cpu_ms: first_cpu_ms,
                    },
                ),
            ],
            fidelity,
        });
    }
}

fn print_summary(rows: &[Row]) {
    println!(
        "\nweights summary (load average {}); per stage: median wall time, then mean CPU time \
         of all threads, and the wall time as a multiple of f32's",
        load_average()
    );
    let f32_stage = |model: &str, stage: &str| -> Option<f64> {
        rows.iter()
            .find(|r| r.model == model && r.setting == "f32")
            .and_then(|r| r.stages.iter().find(|s| s.0 == stage).map(|s| s.1.wall_ms))
    };
    for row in rows {
        let mut line = format!(
            "{} {:<5} load {:>6.1} s",
            row.model, row.setting, row.load_s
        );
        for (stage, t) in &row.stages {
            line += &format!("  {stage} {:.1} ms (cpu {:.1})", t.wall_ms, t.cpu_ms);
            if let Some(base) = f32_stage(row.model, stage) {
                line += &format!(" {:.2}x", t.wall_ms / base);
            }
        }
        if let Some((mean, min, agree)) = row.fidelity {
            line += &format!(
                "  | cosine {mean:.5} (min {min:.5}), greedy agreement {:.1}%",
                agree * 100.0
            );
        }
        println!("{line}");
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn bench(c: &mut Criterion) {
    let Ok(hub) = std::env::var("KYUTAI_BENCH_HUB") else {
        eprintln!("weights: skipped (set KYUTAI_BENCH_HUB; see the file's documentation)");
        return;
    };
    let settings: Vec<Setting> = env_list("KYUTAI_BENCH_WEIGHTS", "f32,q8,q4")
        .iter()
        .map(|s| Setting::parse(s))
        .collect();
    assert_eq!(
        settings.first(),
        Some(&Setting::F32),
        "f32 comes first: it is the reference"
    );
    let mut rows = Vec::new();
    let models: BTreeMap<String, ()> = env_list("KYUTAI_BENCH_MODELS", "stt,tts")
        .into_iter()
        .map(|m| (m, ()))
        .collect();
    if models.contains_key("stt") {
        stt(c, &hub, &settings, &mut rows);
    }
    if models.contains_key("tts") {
        tts(c, &hub, &settings, &mut rows);
    }
    print_summary(&rows);
}

criterion_group!(benches, bench);
criterion_main!(benches);
