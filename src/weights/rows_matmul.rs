//! The quantized matrix product of a few rows (a batched step: one row per conversation) that
//! reads the weights once for all of them.
//!
//! candle's CPU product (`k_quants::matmul`) takes one input row at a time and streams the whole
//! weight matrix for each, so a step of N conversations reads the weights N times, and reading
//! the weights is what a step costs on a CPU. Here each weight row (one output column), once
//! loaded, is dotted with every input row while it is in the cache, and the output columns are
//! shared among the cores as candle shares them.
//!
//! Each output value is candle's own: the same quantization of the input rows
//! (`VecDotType::from_float`) and the same dot product (`GgmlType::vec_dot`, the SIMD one of this
//! build), so a row gives the same bits whether it is alone or in a batch, and the same bits as
//! candle's product: a conversation's tokens do not depend on who shares its step.

use candle_core::quantized::k_quants::{BlockQ4_0, BlockQ4K, BlockQ8_0, GgmlType};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{D, Device, Result, Tensor};
use rayon::prelude::*;

/// `xs W^T` for a quantized `W` (`[n, k]`) on the CPU, `xs` `[..., k]` in f32 and contiguous.
/// `None` when this product does not apply (another device or block type, an unaligned
/// buffer): the caller falls back to candle's.
pub fn forward(weight: &QTensor, xs: &Tensor) -> Result<Option<Tensor>> {
    if !matches!(xs.device(), Device::Cpu) || xs.dtype() != candle_core::DType::F32 {
        return Ok(None);
    }
    let (n, k) = weight.shape().dims2()?;
    if xs.dim(D::Minus1)? != k {
        candle_core::bail!(
            "input {:?} incompatible with weight {:?}",
            xs.shape(),
            weight.shape()
        )
    }
    let m = xs.elem_count() / k;
    let data = weight.data()?;
    let xs = xs.contiguous()?;
    let lhs = xs.flatten_all()?.to_vec1::<f32>()?;
    let out = match weight.dtype() {
        GgmlDType::Q8_0 => product::<BlockQ8_0>(&data, (m, k, n), &lhs),
        GgmlDType::Q4K => product::<BlockQ4K>(&data, (m, k, n), &lhs),
        GgmlDType::Q4_0 => product::<BlockQ4_0>(&data, (m, k, n), &lhs),
        _ => None,
    };
    let Some(out) = out else {
        return Ok(None);
    };
    let mut dims = xs.dims().to_vec();
    *dims.last_mut().expect("at least one dimension") = n;
    Tensor::from_vec(out, dims, &Device::Cpu).map(Some)
}

/// The blocks of a weight, viewed in place; `None` if the bytes are not a whole number of
/// aligned blocks.
fn blocks<T: GgmlType>(bytes: &[u8]) -> Option<&[T]> {
    let size = std::mem::size_of::<T>();
    if !bytes.len().is_multiple_of(size)
        || bytes.as_ptr().align_offset(std::mem::align_of::<T>()) != 0
    {
        return None;
    }
    // SAFETY: the bytes are candle's own `Vec<T>` of blocks (a `QTensor` of this dtype on the
    // CPU), plain-data structs; length and alignment were checked above.
    Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), bytes.len() / size) })
}

fn product<T: GgmlType>(
    bytes: &[u8],
    (m, k, n): (usize, usize, usize),
    lhs: &[f32],
) -> Option<Vec<f32>> {
    let rhs = blocks::<T>(bytes)?;
    if !k.is_multiple_of(T::BLCK_SIZE) || rhs.len() != n * (k / T::BLCK_SIZE) {
        return None;
    }
    let k_blocks = k / T::BLCK_SIZE;
    let mut lhs_b = vec![T::VecDotType::zeros(); m * k_blocks];
    for (row, blocks) in lhs.chunks(k).zip(lhs_b.chunks_mut(k_blocks)) {
        T::VecDotType::from_float(row, blocks);
    }
    // Column-major while computing (each column's values together, written by one core), then
    // transposed to the rows' layout.
    let mut by_column = vec![0f32; n * m];
    by_column
        .par_chunks_mut(m)
        .enumerate()
        .with_min_len((128 / m.max(1)).max(16))
        .for_each(|(col, out)| {
            let weight_row = &rhs[col * k_blocks..(col + 1) * k_blocks];
            for (value, row) in out.iter_mut().zip(lhs_b.chunks(k_blocks)) {
                *value = T::vec_dot(k, weight_row, row);
            }
        });
    let mut out = vec![0f32; m * n];
    for (col, values) in by_column.chunks(m).enumerate() {
        for (row, value) in values.iter().enumerate() {
            out[row * n + col] = *value;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Module;
    use candle_core::quantized::QMatMul;

    /// Every row of a batched product has the bits of candle's product of that row alone, for
    /// each block type the weights settings use.
    #[test]
    fn each_row_is_candles_product_of_that_row_alone() {
        let (n, k) = (300, 512);
        let values: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.05)
            .collect();
        let weight = Tensor::from_vec(values, (n, k), &Device::Cpu).unwrap();
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q4K, GgmlDType::Q4_0] {
            let q = std::sync::Arc::new(QTensor::quantize(&weight, dtype).unwrap());
            let candle = QMatMul::QTensor(q.clone());
            for m in [2, 3, 16] {
                let xs = Tensor::randn(0f32, 1.0, (m, 1, k), &Device::Cpu).unwrap();
                let ours = forward(&q, &xs).unwrap().expect("a CPU block type");
                assert_eq!(ours.dims(), &[m, 1, n]);
                for r in 0..m {
                    let alone = candle.forward(&xs.narrow(0, r, 1).unwrap()).unwrap();
                    let row = ours.narrow(0, r, 1).unwrap();
                    assert_eq!(
                        row.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                        alone.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                        "{dtype:?}, {m} rows, row {r}"
                    );
                }
            }
        }
    }

    #[test]
    fn other_block_types_fall_back() {
        let weight = Tensor::ones((8, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
        let q = QTensor::quantize(&weight, GgmlDType::F16).unwrap();
        let xs = Tensor::ones((2, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(forward(&q, &xs).unwrap().is_none());
    }
}
