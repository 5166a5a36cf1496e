//! TTS speed on a model with the real `kyutai/tts-1.6b-en_fr` dimensions and random weights,
//! CPU f32 by default (set `KYUTAI_BENCH_LAYERS` to shrink the main transformer for a quicker
//! run; `KYUTAI_BENCH_DEVICE` and `KYUTAI_BENCH_DTYPE`, see `benches/support/device.rs`, to run
//! elsewhere, e.g. `cuda` and `bf16`).
//!
//! - `tts_step/bare_forward`: the model alone for one frame (main transformer + 32 depformer
//!   steps, greedy argmax), no state machine, no delay line.
//! - `tts_step/generator_step`: one step of our generator (the same forward plus the state
//!   machine, sampling, the delay cache). Target: at most 1.05x `bare_forward`.
//! - `tts_step/mimi_decode_frame`: one Mimi decode step (random standard Mimi).
//!
//! Printed once: the real-time factor (frame time / 80 ms) and the time to the first audio chunk
//! (the steps before the first decodable frame, measured).

use std::hint::black_box;
use std::time::Instant;

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use fluent_voice_kyutai::internals::tts::TtsConfig;
use fluent_voice_kyutai::internals::tts::generate::{GenerationSettings, Generator};
use fluent_voice_kyutai::internals::tts::lm::TtsLm;
use fluent_voice_kyutai::internals::tts::sampling::argmax;
use fluent_voice_kyutai::internals::weights::TensorSource;
use moshi::streaming::{StreamMask, StreamTensor};

#[path = "support/device.rs"]
mod device;
#[path = "support/tts_real_size.rs"]
mod tts_real_size;
use device::{Random, Recording, bench_target, load_timing, time_load};
use tts_real_size::{entries, published_config};

fn bench(c: &mut Criterion) {
    let (device, dtype, target) = bench_target();
    let cfg = TtsConfig::from_json(published_config().to_string().as_bytes()).unwrap();
    let recorded = Recording::default();
    let vb = if load_timing() {
        VarBuilder::from_backend(Box::new(recorded.clone()), dtype, device.clone())
    } else {
        VarBuilder::from_backend(Box::new(Random), dtype, device.clone())
    };
    let t = Instant::now();
    let lm = TtsLm::new(cfg.clone(), &TensorSource::dense(vb.clone())).unwrap();
    device.synchronize().unwrap();
    eprintln!(
        "random 1.6B-shaped model built on {target} in {:.1?}",
        t.elapsed()
    );
    if load_timing() {
        time_load("tts LM", &recorded, &target, |path| {
            let lm = TtsLm::load(cfg.clone(), path, &device, dtype).unwrap();
            device.synchronize().unwrap();
            lm
        });
        recorded.0.lock().unwrap().clear();
    }
    // Mimi runs in f32 whatever the LM's dtype, as in the library.
    let mimi_vb = VarBuilder::from_backend(Box::new(Random), DType::F32, device.clone());
    let mut mimi = moshi::mimi::Mimi::new(moshi::mimi::Config::v0_1(Some(32)), mimi_vb).unwrap();
    let conditions = tts_real_size::conditions(&device);
    let settings = GenerationSettings {
        temp: 0.6,
        text_temp: 0.6,
        top_k: 250,
        top_k_text: 25,
        seed: 1,
        final_padding: 4,
        max_steps: usize::MAX,
    };
    let delay_steps = lm.cfg.delay_steps(12.5);

    // Time to first audio: steps until the first frame past the audio delay, plus its decode.
    let t = Instant::now();
    let mut generator =
        Generator::new(&lm, entries(10_000), &conditions, delay_steps, settings).unwrap();
    let mut frames = 0;
    loop {
        if let Some(frame) = generator.step(&lm).unwrap() {
            frames += 1;
            if frames > delay_steps + 2 {
                let codes: Vec<u32> = frame[1..].iter().map(|&t| t as u32).collect();
                let codes = Tensor::from_vec(codes, (1, 32, 1), &device).unwrap();
                mimi.decode_step(&StreamTensor::from_tensor(codes), &StreamMask::empty())
                    .unwrap();
                device.synchronize().unwrap();
                break;
            }
        }
    }
    eprintln!(
        "time to first audio chunk on {target}: {:.2?} ({} steps)",
        t.elapsed(),
        generator.steps()
    );

    let mut group = c.benchmark_group("tts_step");
    // One step takes about a second on 2 cores: 10 flat samples of one step each.
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(std::time::Duration::from_secs(1));
    group.measurement_time(std::time::Duration::from_secs(10));
    let mut bare_state = lm.new_state(&conditions).unwrap();
    let mut tokens = vec![3i64];
    tokens.extend([5i64; 32]);
    group.bench_function("bare_forward", |b| {
        b.iter(|| {
            let (out, text_logits) = lm.forward_text(&mut bare_state, &tokens).unwrap();
            let mut prev = argmax(&text_logits) as i64;
            lm.depformer_reset(&mut bare_state);
            for cb in 0..32 {
                let logits = lm
                    .depformer_logits(&mut bare_state, cb, prev, &out)
                    .unwrap();
                prev = argmax(&logits) as i64;
            }
            black_box(prev)
        })
    });
    group.bench_function("generator_step", |b| {
        b.iter(|| black_box(generator.step(&lm).unwrap()))
    });
    let codes = Tensor::from_vec(vec![7u32; 32], (1, 32, 1), &device).unwrap();
    group.bench_function("mimi_decode_frame", |b| {
        b.iter(|| {
            let pcm = mimi
                .decode_step(
                    &StreamTensor::from_tensor(codes.clone()),
                    &StreamMask::empty(),
                )
                .unwrap();
            // A GPU runs ahead of the host: wait for the work to be timed.
            device.synchronize().unwrap();
            black_box(pcm)
        })
    });
    group.finish();

    // Real-time factor over a few frames: generation + decode per 80 ms of audio.
    let n = 5;
    let t = Instant::now();
    for _ in 0..n {
        if let Some(frame) = generator.step(&lm).unwrap() {
            let codes: Vec<u32> = frame[1..].iter().map(|&t| t.max(0) as u32).collect();
            let codes = Tensor::from_vec(codes, (1, 32, 1), &device).unwrap();
            mimi.decode_step(&StreamTensor::from_tensor(codes), &StreamMask::empty())
                .unwrap();
        }
    }
    device.synchronize().unwrap();
    let per_frame = t.elapsed().as_secs_f64() / n as f64;
    eprintln!(
        "real-time factor on {target}: {:.2} ({:.0} ms per 80 ms frame; < 1 is faster than \
         real time)",
        per_frame / 0.08,
        per_frame * 1000.0
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
