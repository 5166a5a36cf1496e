//! What the real-size benchmarks run on, and their random weights.
//!
//! `KYUTAI_BENCH_DEVICE` (`cpu`, `cuda`, `cuda:N`, `metal`; default `cpu`) and
//! `KYUTAI_BENCH_DTYPE` (`f32` or `bf16`; default `f32`) choose the device and the LM's dtype;
//! Mimi always runs in f32, as in the library. `KYUTAI_BENCH_LOAD=1` also times loading the LM
//! from a file ([`time_load`]). `tools/gpu-check.sh` sets all three.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::{Init, var_builder::SimpleBackend};

/// The device and LM dtype under test, and a label such as `cuda:0 bf16`.
pub fn bench_target() -> (Device, DType, String) {
    let name = std::env::var("KYUTAI_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    let device: fluent_voice_kyutai::models::Device = name
        .parse()
        .unwrap_or_else(|e| panic!("KYUTAI_BENCH_DEVICE: {e}"));
    let dtype = match std::env::var("KYUTAI_BENCH_DTYPE").as_deref() {
        Ok("bf16") => DType::BF16,
        Ok("f32") | Err(_) => DType::F32,
        Ok(other) => panic!("KYUTAI_BENCH_DTYPE: `{other}` is not f32 or bf16"),
    };
    let label = format!("{device} {}", dtype.as_str());
    let device = fluent_voice_kyutai::internals::candle_device(device).unwrap();
    (device, dtype, label)
}

/// Random weights by name and shape (norm gains at 1 so activations keep their scale), drawn
/// in f32 and converted, since candle's CUDA back end draws no bf16 directly.
pub struct Random;

impl SimpleBackend for Random {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let leaf = name.rsplit('.').next().unwrap_or(name);
        if leaf == "alpha"
            || (leaf == "weight" && name.contains("norm"))
            || leaf == "_initialized"
            || leaf == "cluster_usage"
        {
            return Tensor::ones(s, dtype, dev);
        }
        Tensor::randn(0f32, 0.02, s, dev)?.to_dtype(dtype)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("no shape for {name}")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// [`Random`], keeping every tensor it hands out, so that a benchmark can write the model to a
/// safetensors file and time loading it back (see [`time_load`]), and so that models built
/// twice from it share their weights (a tensor asked for again is the one handed out before).
#[derive(Clone, Default)]
pub struct Recording(pub Arc<Mutex<HashMap<String, Tensor>>>);

impl SimpleBackend for Recording {
    fn get(
        &self,
        s: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut recorded = self.0.lock().unwrap();
        if let Some(t) = recorded
            .get(name)
            .filter(|t| t.shape() == &s && t.dtype() == dtype)
        {
            return Ok(t.clone());
        }
        let t = Random.get(s, name, init, dtype, dev)?;
        recorded.insert(name.to_string(), t.clone());
        Ok(t)
    }
    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        Random.get_unchecked(name, dtype, dev)
    }
    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// True when `KYUTAI_BENCH_LOAD=1`: the benchmark also writes its model to a file and times
/// loading it (minutes and gigabytes of disk on a CPU machine, so off by default).
pub fn load_timing() -> bool {
    std::env::var_os("KYUTAI_BENCH_LOAD").is_some()
}

/// Writes the recorded weights to a bf16 safetensors file (the published LM files are bf16),
/// then times `load` on it, the file being in the page cache as on a warm start. Prints and
/// returns the seconds.
pub fn time_load<T>(
    what: &str,
    recorded: &Recording,
    target: &str,
    load: impl FnOnce(&std::path::Path) -> T,
) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let tensors: HashMap<String, Tensor> = recorded
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.to_dtype(DType::BF16).unwrap()))
        .collect();
    candle_core::safetensors::save(&tensors, &path).unwrap();
    drop(tensors);
    let bytes = std::fs::metadata(&path).unwrap().len();
    let start = std::time::Instant::now();
    let model = load(&path);
    let seconds = start.elapsed().as_secs_f64();
    drop(model);
    eprintln!(
        "{what}: load of a {:.2} GB bf16 safetensors file on {target}: {seconds:.2} s",
        bytes as f64 / 1e9
    );
    seconds
}
