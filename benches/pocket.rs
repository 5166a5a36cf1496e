//! Pocket TTS speed, in process, on the real-size random-weight models of
//! `tools/bench/make_pocket_real_size.py` (`POCKET_BENCH_DIR`, default `/work/pocket-real`;
//! `POCKET_BENCH_MODEL`, default `english_2026-10`), at each weights setting of
//! `POCKET_BENCH_WEIGHTS` (default `f32,q8,q4`). Without those files it runs on the tiny
//! fixture model, which says nothing about speed but keeps the bench working.
//!
//! - `pocket/<weights>/flow_lm_step`: one flow-LM step (transformer, EOS head, flow head).
//! - `pocket/<weights>/mimi_decode_frame`: Mimi's decoder on one frame (1920 samples).
//! - `pocket/<weights>/frame`: both, one after the other (the single-thread cost of a frame;
//!   the library overlaps them on two threads, so a frame there costs about the larger).
//!
//! Printed once per setting: the warm load, the time to the first audio (text prompt, one step,
//! one decode: what a caller waits for after `synthesize()`, model and voice loaded), and the
//! real-time factor. `tools/bench/pocket_compare.sh` runs this beside the Python reference on
//! the same files.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use fluent_voice_kyutai::internals::pocket::noise::Seeded;
use fluent_voice_kyutai::internals::pocket::{
    GenerateSettings, PocketConfig, PocketModel, VoiceState,
};
use fluent_voice_kyutai::internals::weights::lm_source;
use fluent_voice_kyutai::models::Weights;

/// About two sentences, one chunk, as the Python side times.
const TEXT: &str =
    "The quick brown fox jumps over the lazy dog near the quiet river bank. It was a calm morning.";

struct Files {
    config: PocketConfig,
    weights: PathBuf,
    tokenizer: PathBuf,
    voice: PathBuf,
}

fn files() -> Files {
    let dir =
        PathBuf::from(std::env::var("POCKET_BENCH_DIR").unwrap_or("/work/pocket-real".into()));
    let name = std::env::var("POCKET_BENCH_MODEL").unwrap_or("english_2026-10".into());
    let (root, yaml, lang) = if dir.join(format!("{name}.yaml")).exists() {
        (
            dir.join("repo/languages").join(&name),
            dir.join(format!("{name}.yaml")),
            name,
        )
    } else {
        eprintln!(
            "no real-size model in {} (tools/bench/make_pocket_real_size.py): the tiny fixture",
            dir.display()
        );
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pocket");
        (
            fixtures.join("repo/languages/tiny"),
            fixtures.join("tiny.yaml"),
            "tiny".into(),
        )
    };
    let config = PocketConfig::from_yaml(&std::fs::read_to_string(&yaml).unwrap(), &lang).unwrap();
    let tokenizer = if config.flow_lm.lookup_table.is_json() {
        "tokenizer.json"
    } else {
        "tokenizer.model"
    };
    let tokenizer = root.join(tokenizer);
    let tokenizer = if tokenizer.exists() {
        tokenizer
    } else {
        // tiny_drifting-style configs name another model's tokenizer.
        root.parent().unwrap().join("tiny_small/tokenizer.model")
    };
    Files {
        config,
        weights: root.join("model.safetensors"),
        tokenizer,
        voice: root.join("embeddings/alba.safetensors"),
    }
}

fn load(files: &Files, weights: Weights, derived: &Path) -> PocketModel {
    let (source, _) = lm_source(&files.weights, weights, &Device::Cpu, derived).unwrap();
    PocketModel::new(files.config.clone(), &source, &files.tokenizer).unwrap()
}

fn bench(c: &mut Criterion) {
    let files = files();
    let derived = tempfile::tempdir().unwrap();
    let settings_list = std::env::var("POCKET_BENCH_WEIGHTS").unwrap_or("f32,q8,q4".into());
    for name in settings_list.split(',') {
        let weights: Weights = name.parse().unwrap();
        load(&files, weights, derived.path()); // derives the quantized file once
        let t = Instant::now();
        let model = load(&files, weights, derived.path());
        let warm_load = t.elapsed();
        let voice = VoiceState::load(&files.voice, &Device::Cpu).unwrap();
        let mut settings = GenerateSettings::defaults(model.config());
        settings.eos_threshold = f64::INFINITY; // a fixed length: max_gen_len frames
        // First audio: from the call to the first decoded frame, single thread.
        let mut first = Duration::ZERO;
        for _ in 0..3 {
            let t = Instant::now();
            let mut state = model.decoder_state();
            let mut got = None;
            let chunk = model.chunks(TEXT, settings.max_tokens).unwrap().remove(0);
            let _ = model.generate_chunk(
                &voice,
                &chunk,
                &settings,
                &mut Seeded::new(1),
                &mut |latent| {
                    model.decode(&mut state, latent, true)?;
                    got = Some(t.elapsed());
                    Ok(false)
                },
            );
            let took = got.unwrap();
            if first.is_zero() || took < first {
                first = took;
            }
        }
        // Latents of one chunk, to decode and to step through.
        let chunk = model.chunks(TEXT, settings.max_tokens).unwrap().remove(0);
        let mut latents: Vec<Tensor> = Vec::new();
        let t = Instant::now();
        let trace = model
            .generate_chunk(&voice, &chunk, &settings, &mut Seeded::new(1), &mut |l| {
                latents.push(l.clone());
                Ok(true)
            })
            .unwrap();
        let lm_per_frame = t.elapsed() / trace.latents.len() as u32;
        let mut state = model.decoder_state();
        let t = Instant::now();
        for (i, l) in latents.iter().enumerate() {
            black_box(model.decode(&mut state, l, i == 0).unwrap());
        }
        let mimi_per_frame = t.elapsed() / latents.len() as u32;
        let frame = lm_per_frame.max(mimi_per_frame);
        eprintln!(
            "pocket {name}: warm load {warm_load:.2?}, first audio {first:.1?}, flow LM {lm_per_frame:.1?}/frame, \
             Mimi {mimi_per_frame:.1?}/frame over {} frames; two threads: ~{frame:.1?}/frame = {:.2}x real time \
             (one thread: {:.2}x)",
            latents.len(),
            0.08 / frame.as_secs_f64(),
            0.08 / (lm_per_frame + mimi_per_frame).as_secs_f64(),
        );
        let mut group = c.benchmark_group(format!("pocket/{name}"));
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(8));
        group.bench_function("mimi_decode_frame", |b| {
            let mut state = model.decoder_state();
            let mut i = 0;
            b.iter(|| {
                i += 1;
                black_box(
                    model
                        .decode(&mut state, &latents[i % latents.len()], false)
                        .unwrap(),
                )
            })
        });
        group.bench_function("flow_lm_frame_of_a_chunk", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let trace = model
                        .generate_chunk(&voice, &chunk, &settings, &mut Seeded::new(1), &mut |_| {
                            Ok(true)
                        })
                        .unwrap();
                    total += t.elapsed() / trace.latents.len() as u32;
                }
                total
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
