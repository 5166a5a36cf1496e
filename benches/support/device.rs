//! What the real-size benchmarks run on, and their random weights.
//!
//! `KYUTAI_BENCH_DEVICE` (`cpu`, `cuda`, `cuda:N`, `metal`; default `cpu`) and
//! `KYUTAI_BENCH_DTYPE` (`f32` or `bf16`; default `f32`) choose the device and the LM's dtype;
//! Mimi always runs in f32, as in the library. `tools/gpu-check.sh` sets both.
#![allow(dead_code)]

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
    let device = fluent_voice_kyutai::codec::candle_device(device).unwrap();
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
