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
//!
//! For `q8_0` weights (the CPU default) on an AVX2 CPU, calling `vec_dot` once per pair is not
//! enough: it is one chain of dependent multiply-adds, so a core waits on each, and a batch of
//! rows then costs nearly a row each. `q8_tiles` runs the same instructions on 4 input rows at
//! once for each weight block (loaded and prepared once), which makes a batched step of 2 to 16
//! conversations cost about 0.55 to 0.7 times as many single steps instead of 0.9 to 1.0. A
//! single row keeps candle's own product (`Linear` sends only batches here).

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
    #[cfg(target_arch = "x86_64")]
    if T::DTYPE == GgmlDType::Q8_0 && q8_tiles::available() {
        // SAFETY: `T` is `BlockQ8_0` (its dtype), and so is `T::VecDotType`.
        let (rhs, lhs_b) = unsafe {
            (
                std::slice::from_raw_parts(rhs.as_ptr().cast::<BlockQ8_0>(), rhs.len()),
                std::slice::from_raw_parts(lhs_b.as_ptr().cast::<BlockQ8_0>(), lhs_b.len()),
            )
        };
        return Some(q8_tiles::product(rhs, lhs_b, (m, k_blocks, n)));
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
    Some(rows_from_columns(&by_column, m, n))
}

/// `[n][m]` values (each column's values together, as the cores write them) as `[m][n]`, the
/// rows' layout.
fn rows_from_columns(by_column: &[f32], m: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    for (col, values) in by_column.chunks(m).enumerate() {
        for (row, value) in values.iter().enumerate() {
            out[row * n + col] = *value;
        }
    }
    out
}

/// candle's `q8_0` dot product (AVX2: the same instructions, in the same order, for each pair of
/// a weight row and an input row), run on tiles of several pairs at once: the weight block is
/// loaded once for every input row, and the independent accumulators keep the core busy instead
/// of waiting on one chain of fused multiply-adds. Each value has the bits candle gives it.
#[cfg(target_arch = "x86_64")]
mod q8_tiles {
    use std::arch::x86_64::*;

    use candle_core::quantized::k_quants::BlockQ8_0;
    use rayon::prelude::*;

    /// Whether this CPU runs the tiles (any AVX2 CPU has FMA and F16C too).
    pub fn available() -> bool {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }

    /// A block's scale and its 32 values: `BlockQ8_0` is `#[repr(C)] { d: f16, qs: [i8; 32] }`.
    #[inline(always)]
    fn parts(block: &BlockQ8_0) -> (u16, *const u8) {
        let p = (block as *const BlockQ8_0).cast::<u8>();
        // SAFETY: 34 bytes, the f16 first (checked by candle: size 34, `repr(C)`).
        unsafe { (std::ptr::read_unaligned(p.cast::<u16>()), p.add(2)) }
    }

    #[inline(always)]
    unsafe fn f16_to_f32(bits: u16) -> f32 {
        unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits)))) }
    }

    /// `out[r][c]` = the dot product of weight row `cols[c]` with input row `rows[r]`, each
    /// exactly as candle's `vec_dot_q8_0_q8_0` computes it.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile<const R: usize, const C: usize>(
        cols: [&[BlockQ8_0]; C],
        rows: [&[BlockQ8_0]; R],
        out: &mut [[f32; C]; R],
    ) {
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); C]; R];
            let ones = _mm256_set1_epi16(1);
            for b in 0..cols[0].len() {
                let mut xd = [0f32; R];
                let mut by = [_mm256_setzero_si256(); R];
                for r in 0..R {
                    let (d, qs) = parts(&rows[r][b]);
                    xd[r] = f16_to_f32(d);
                    by[r] = _mm256_loadu_si256(qs.cast::<__m256i>());
                }
                for c in 0..C {
                    let (d, qs) = parts(&cols[c][b]);
                    let wd = f16_to_f32(d);
                    let bx = _mm256_loadu_si256(qs.cast::<__m256i>());
                    let ax = _mm256_sign_epi8(bx, bx);
                    for r in 0..R {
                        let d = _mm256_set1_ps(wd * xd[r]);
                        let sy = _mm256_sign_epi8(by[r], bx);
                        let dot = _mm256_maddubs_epi16(ax, sy);
                        let q = _mm256_cvtepi32_ps(_mm256_madd_epi16(ones, dot));
                        acc[r][c] = _mm256_fmadd_ps(d, q, acc[r][c]);
                    }
                }
            }
            for r in 0..R {
                for c in 0..C {
                    let x = acc[r][c];
                    let res = _mm256_extractf128_ps(x, 1);
                    let res = _mm_add_ps(res, _mm256_castps256_ps128(x));
                    let res = _mm_add_ps(res, _mm_movehl_ps(res, res));
                    let res = _mm_add_ss(res, _mm_movehdup_ps(res));
                    out[r][c] = _mm_cvtss_f32(res);
                }
            }
        }
    }

    /// Columns given to a core at a time, and input rows computed together for one column.
    const COLS: usize = 4;
    const ROWS: usize = 4;

    /// The product of `m` input rows (`lhs`, `m * k_blocks` blocks) with `n` weight rows
    /// (`rhs`), as `[m, n]` row-major.
    pub fn product(
        rhs: &[BlockQ8_0],
        lhs: &[BlockQ8_0],
        (m, kb, n): (usize, usize, usize),
    ) -> Vec<f32> {
        let rows: Vec<&[BlockQ8_0]> = lhs.chunks(kb).collect();
        // Column-major while computing: each group of COLS columns is written by one core.
        let mut by_column = vec![0f32; n * m];
        by_column
            .par_chunks_mut(m * COLS)
            .enumerate()
            .with_min_len((32 / m.max(1)).max(4))
            .for_each(|(group, out)| {
                let first = group * COLS;
                let cols = out.len() / m;
                let col = |c: usize| &rhs[(first + c) * kb..(first + c + 1) * kb];
                for c in 0..cols {
                    let column = &mut out[c * m..(c + 1) * m];
                    let mut r = 0;
                    while r + ROWS <= m {
                        let mut values = [[0f32; 1]; ROWS];
                        // SAFETY: as above.
                        unsafe {
                            tile::<ROWS, 1>(
                                [col(c)],
                                [rows[r], rows[r + 1], rows[r + 2], rows[r + 3]],
                                &mut values,
                            )
                        };
                        for (i, v) in values.iter().enumerate() {
                            column[r + i] = v[0];
                        }
                        r += ROWS;
                    }
                    while r < m {
                        let mut values = [[0f32; 1]; 1];
                        // SAFETY: as above.
                        unsafe { tile::<1, 1>([col(c)], [rows[r]], &mut values) };
                        column[r] = values[0][0];
                        r += 1;
                    }
                }
            });
        super::rows_from_columns(&by_column, m, n)
    }
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
        let (n, k) = (301, 512);
        let values: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.05)
            .collect();
        let weight = Tensor::from_vec(values, (n, k), &Device::Cpu).unwrap();
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q4K, GgmlDType::Q4_0] {
            let q = std::sync::Arc::new(QTensor::quantize(&weight, dtype).unwrap());
            let candle = QMatMul::QTensor(q.clone());
            for m in [1, 2, 3, 5, 16] {
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
