//! The dense f32 matrix product of a few rows on the CPU (`y = x W^T + b`, `x` `[m, k]` with
//! `m` up to [`MAX_ROWS`]): a generation step, one row per stream.
//!
//! candle sends every product to the `gemm` crate, which first copies ("packs") the whole
//! weight matrix into its own layout, at every call. For one row that doubles the bytes moved,
//! and moving the weights is what a step costs: Pocket TTS's flow LM read 360 MB a frame in
//! 36 ms. Here each weight row is read once, where it lies, and dotted with every input row
//! while it is in the cache; the output columns are shared among the cores. The sums are in
//! another order than `gemm`'s, so results differ from candle's in the last bits of f32 (the
//! parity tests hold them to the reference within their tolerance).

use candle_core::{D, DType, Device, Result, Storage, Tensor};
use rayon::prelude::*;

/// Inputs of more rows than this go through candle's product (a prompt pass, a voice, Mimi's
/// 16 positions a frame), which is faster once the product is bound by arithmetic rather than
/// by reading the weights (measured: 16 rows took 1.5 times as long here).
pub const MAX_ROWS: usize = 4;

/// Output columns computed per task.
const COLUMNS_PER_TASK: usize = 32;

/// `xs W^T (+ bias)` for a dense f32 `W` (`[n, k]`), or `None` when this product does not apply
/// (another device or dtype, more than [`MAX_ROWS`] rows, a weight that is not contiguous):
/// the caller then uses candle's.
pub fn forward(weight: &Tensor, bias: Option<&Tensor>, xs: &Tensor) -> Result<Option<Tensor>> {
    if !matches!(xs.device(), Device::Cpu)
        || xs.dtype() != DType::F32
        || weight.dtype() != DType::F32
        || weight.rank() != 2
    {
        return Ok(None);
    }
    let (n, k) = weight.dims2()?;
    if xs.dim(D::Minus1)? != k {
        return Ok(None); // candle's product reports the mismatch
    }
    let m = xs.elem_count() / k;
    if m == 0 || m > MAX_ROWS {
        return Ok(None);
    }
    let (storage, layout) = weight.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Ok(None);
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        return Ok(None);
    };
    let w = &cpu.as_slice::<f32>()?[start..end];
    let bias = match bias {
        Some(b) => Some(b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
        None => None,
    };
    let lhs = xs.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    // Column-major output (`[n, m]`): each task writes its own columns' rows.
    let mut out_t = vec![0f32; n * m];
    out_t
        .par_chunks_mut(COLUMNS_PER_TASK * m)
        .enumerate()
        .for_each(|(task, out)| {
            let first = task * COLUMNS_PER_TASK;
            for (c, column) in out.chunks_exact_mut(m).enumerate() {
                let j = first + c;
                let row = &w[j * k..(j + 1) * k];
                let b = bias.as_ref().map_or(0.0, |b| b[j]);
                for (i, y) in column.iter_mut().enumerate() {
                    *y = dot(&lhs[i * k..(i + 1) * k], row) + b;
                }
            }
        });
    let out = if m == 1 {
        out_t
    } else {
        let mut out = vec![0f32; n * m];
        for (j, column) in out_t.chunks_exact(m).enumerate() {
            for (i, &v) in column.iter().enumerate() {
                out[i * n + j] = v;
            }
        }
        out
    };
    let mut dims = xs.dims().to_vec();
    *dims.last_mut().expect("at least one dimension") = n;
    Tensor::from_vec(out, dims, &Device::Cpu).map(Some)
}

/// `a · b` with 32 independent partial sums (two AVX-512 registers, four AVX2 ones), so that
/// the multiply-adds do not wait on each other.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 32;
    let mut acc = [0f32; LANES];
    let (a_blocks, a_rest) = a.split_at(a.len() / LANES * LANES);
    let (b_blocks, b_rest) = b.split_at(a_blocks.len());
    for (x, y) in a_blocks
        .chunks_exact(LANES)
        .zip(b_blocks.chunks_exact(LANES))
    {
        for l in 0..LANES {
            acc[l] = madd(x[l], y[l], acc[l]);
        }
    }
    let mut sum = 0f32;
    for (x, y) in a_rest.iter().zip(b_rest) {
        sum = madd(*x, *y, sum);
    }
    // Pairwise, as the lanes of a vector are summed.
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            acc[l] += acc[l + width];
        }
    }
    acc[0] + sum
}

/// `a * b + c`: one fused instruction where the build has FMA; elsewhere `mul_add` would be a
/// slow library call, so a multiply and an add.
#[inline(always)]
fn madd(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(target_feature = "fma")]
    {
        a.mul_add(b, c)
    }
    #[cfg(not(target_feature = "fma"))]
    {
        a * b + c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_candles_product_for_one_to_four_rows() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1., (70, 101), &dev).unwrap();
        let b = Tensor::randn(0f32, 1., 70, &dev).unwrap();
        for m in [1, 2, 3, MAX_ROWS] {
            let x = Tensor::randn(0f32, 1., (1, m, 101), &dev).unwrap();
            let ours = forward(&w, Some(&b), &x).unwrap().unwrap();
            let theirs = candle_nn::Linear::new(w.clone(), Some(b.clone()));
            let theirs = candle_core::Module::forward(&theirs, &x).unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            let d = (ours - theirs)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(d < 1e-4, "{m} rows: {d}");
        }
        let x = Tensor::randn(0f32, 1., (MAX_ROWS + 1, 101), &dev).unwrap();
        assert!(forward(&w, None, &x).unwrap().is_none());
    }
}
