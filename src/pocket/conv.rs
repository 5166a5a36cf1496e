//! Mimi's streaming convolutions (`pocket_tts/modules/conv.py`): [`Conv`]
//! (`StreamingConv1d`) and [`ConvTr`] (`StreamingConvTranspose1d`), with the state the
//! reference keeps between calls.
//!
//! On the CPU, for one stream in f32 (how Pocket TTS runs), both are computed here as one
//! matrix product each, rather than by candle's `conv1d` / `conv_transpose1d`:
//!
//! - a convolution is `W [c_out, c_in * K]` times the unfolded input `[c_in * K, T_out]`, with
//!   the weight used as stored (no copy) and the unfolding written straight in the layout the
//!   product reads;
//! - a transposed convolution is `W' [c_out * K, c_in]` (the weight rearranged once, at load)
//!   times the input `[c_in, T]`, then each output column added at its place (overlap-add).
//!   candle's CPU `conv_transpose1d` is a direct loop, and was half of Mimi's decoding time;
//! - a grouped transposed convolution (the upsampling one: one filter per channel) is a loop
//!   over the `[channels, kernel]` filter, where candle makes one call per group (512 per
//!   frame).
//!
//! Decoding one 80 ms frame with the published Mimi went from 26 ms to the figure in the
//! README's speed table. Elsewhere (a GPU, bf16, batches) candle's kernels run.

use candle_core::{D, DType, Result, Tensor};

use crate::weights::TensorSource;

/// Whether the products of this module apply: one stream of f32 on the CPU.
fn ours(x: &Tensor) -> Result<bool> {
    Ok(x.device().is_cpu() && x.dtype() == DType::F32 && x.dim(0)? == 1)
}

/// `StreamingConv1d`: a convolution without padding, fed the last `kernel - stride` input
/// steps of the previous call first (zeros, or the first step repeated for `replicate`, at the
/// first call).
pub(crate) struct Conv {
    /// `[c_out, c_in, K]`, as PyTorch stores it.
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    dilation: usize,
    replicate: bool,
}

impl Conv {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        vb: &TensorSource,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        dilation: usize,
        bias: bool,
        replicate: bool,
    ) -> Result<Conv> {
        Ok(Conv {
            weight: vb.get((c_out, c_in, kernel), "weight")?.contiguous()?,
            bias: if bias {
                Some(vb.get(c_out, "bias")?.reshape((1, c_out, 1))?)
            } else {
                None
            },
            stride,
            dilation,
            replicate,
        })
    }

    /// Input steps carried from one call to the next.
    fn context(&self) -> Result<usize> {
        let kernel = self.weight.dim(D::Minus1)?;
        Ok(((kernel - 1) * self.dilation + 1).saturating_sub(self.stride))
    }

    pub(crate) fn forward(&self, x: &Tensor, previous: &mut Option<Tensor>) -> Result<Tensor> {
        let tp = self.context()?;
        let x = if tp > 0 {
            let prev = match previous.take() {
                Some(p) => p,
                None if self.replicate => x.narrow(D::Minus1, 0, 1)?.repeat((1, 1, tp))?,
                None => {
                    let (b, c, _) = x.dims3()?;
                    Tensor::zeros((b, c, tp), x.dtype(), x.device())?
                }
            };
            Tensor::cat(&[&prev, x], D::Minus1)?
        } else {
            x.clone()
        };
        let mut y = if ours(&x)? {
            self.product(&x)?
        } else {
            x.conv1d(&self.weight, 0, self.stride, self.dilation, 1)?
        };
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        if tp > 0 {
            let len = x.dim(D::Minus1)?;
            *previous = Some(x.narrow(D::Minus1, len - tp, tp)?.contiguous()?);
        }
        Ok(y)
    }

    /// The convolution of `x` `[1, c_in, L]` as one matrix product (see the module's doc).
    fn product(&self, x: &Tensor) -> Result<Tensor> {
        let (c_out, c_in, k) = self.weight.dims3()?;
        let len = x.dim(D::Minus1)?;
        let span = (k - 1) * self.dilation + 1;
        if len < span {
            candle_core::bail!("convolution of {len} steps with a kernel spanning {span}")
        }
        let t_out = (len - span) / self.stride + 1;
        let x = x.squeeze(0)?.contiguous()?;
        let cols = if k == 1 && self.stride == 1 {
            x
        } else {
            let input = x.flatten_all()?.to_vec1::<f32>()?;
            let mut cols = vec![0f32; c_in * k * t_out];
            for (ci, row) in input.chunks_exact(len).enumerate() {
                for j in 0..k {
                    let out = &mut cols[(ci * k + j) * t_out..][..t_out];
                    let start = j * self.dilation;
                    if self.stride == 1 {
                        out.copy_from_slice(&row[start..start + t_out]);
                    } else {
                        for (t, o) in out.iter_mut().enumerate() {
                            *o = row[start + t * self.stride];
                        }
                    }
                }
            }
            Tensor::from_vec(cols, (c_in * k, t_out), x.device())?
        };
        self.weight
            .reshape((c_out, c_in * k))?
            .matmul(&cols)?
            .unsqueeze(0)
    }
}

/// `StreamingConvTranspose1d`: a transposed convolution whose last `kernel - stride` output
/// steps (less the bias) are kept and added to the start of the next call's output.
pub(crate) struct ConvTr {
    /// `[c_in, c_out / groups, kernel]`, as PyTorch stores it.
    weight: Tensor,
    /// For `groups == 1`: the weight as `[c_out * K, c_in]` (row `co * K + j` holds tap `j` of
    /// output channel `co`), the left operand of [`ConvTr::product`].
    columns: Option<Tensor>,
    bias: Option<Tensor>,
    stride: usize,
    groups: usize,
}

impl ConvTr {
    pub(crate) fn new(
        vb: &TensorSource,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        groups: usize,
        bias: bool,
    ) -> Result<ConvTr> {
        let weight = vb.get((c_in, c_out / groups, kernel), "weight")?;
        let columns = if groups == 1 {
            Some(
                weight
                    .permute((1, 2, 0))?
                    .contiguous()?
                    .reshape((c_out * kernel, c_in))?,
            )
        } else {
            None
        };
        Ok(ConvTr {
            weight,
            columns,
            bias: if bias {
                Some(vb.get(c_out, "bias")?.reshape((1, c_out, 1))?)
            } else {
                None
            },
            stride,
            groups,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, partial: &mut Option<Tensor>) -> Result<Tensor> {
        let (_, _, kernel) = self.weight.dims3()?;
        let mut y = match &self.columns {
            Some(columns) if ours(x)? => self.product(columns, x)?,
            Some(_) => x.conv_transpose1d(&self.weight, 0, 0, self.stride, 1, 1)?,
            None => grouped_conv_transpose(x, &self.weight, self.stride, self.groups)?,
        };
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        let pt = kernel.saturating_sub(self.stride);
        if pt == 0 {
            return Ok(y);
        }
        let len = y.dim(D::Minus1)?;
        let head = y.narrow(D::Minus1, 0, pt)?;
        let head = match partial.take() {
            Some(p) => (head + p)?,
            None => head,
        };
        let mut tail = y.narrow(D::Minus1, len - pt, pt)?;
        if let Some(b) = &self.bias {
            tail = tail.broadcast_sub(b)?;
        }
        *partial = Some(tail.contiguous()?);
        Tensor::cat(&[&head, &y.narrow(D::Minus1, pt, len - 2 * pt)?], D::Minus1)
    }

    /// The transposed convolution of `x` `[1, c_in, T]` (no padding): `[1, c_out, (T - 1) *
    /// stride + K]`, as one matrix product and an overlap-add (see the module's doc).
    fn product(&self, columns: &Tensor, x: &Tensor) -> Result<Tensor> {
        let (_, c_out, k) = self.weight.dims3()?;
        let t = x.dim(D::Minus1)?;
        let cols = columns.matmul(&x.squeeze(0)?.contiguous()?)?; // [c_out * K, T]
        let cols = cols.flatten_all()?.to_vec1::<f32>()?;
        let len = (t - 1) * self.stride + k;
        let mut y = vec![0f32; c_out * len];
        for (co, out) in y.chunks_exact_mut(len).enumerate() {
            for j in 0..k {
                let tap = &cols[(co * k + j) * t..][..t];
                for (ti, &v) in tap.iter().enumerate() {
                    out[ti * self.stride + j] += v;
                }
            }
        }
        Tensor::from_vec(y, (1, c_out, len), x.device())
    }
}

/// A grouped transposed convolution without padding: `x` `[1, c_in, T]`, `weight` `[c_in,
/// c_out / groups, K]`, output `[1, c_out, (T - 1) * stride + K]`.
fn grouped_conv_transpose(
    x: &Tensor,
    weight: &Tensor,
    stride: usize,
    groups: usize,
) -> Result<Tensor> {
    let (b, c_in, t) = x.dims3()?;
    let (_, out_per_group, k) = weight.dims3()?;
    if b != 1 || c_in % groups != 0 {
        candle_core::bail!("grouped transposed convolution of {:?}", x.shape())
    }
    let in_per_group = c_in / groups;
    let c_out = out_per_group * groups;
    let len = (t - 1) * stride + k;
    let xs = x.squeeze(0)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let w = weight
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let mut y = vec![0f32; c_out * len];
    for (ci, row) in xs.iter().enumerate() {
        let g = ci / in_per_group;
        for o in 0..out_per_group {
            let co = g * out_per_group + o;
            let filter = &w[(ci * out_per_group + o) * k..][..k];
            let out = &mut y[co * len..][..len];
            for (ti, &v) in row.iter().enumerate() {
                for (j, &f) in filter.iter().enumerate() {
                    out[ti * stride + j] += v * f;
                }
            }
        }
    }
    Tensor::from_vec(y, (1, c_out, len), x.device())?.to_dtype(x.dtype())
}

#[cfg(test)]
mod tests {
    use candle_core::Device;
    use candle_nn::VarBuilder;

    use super::*;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    fn source(tensors: Vec<(&str, Tensor)>) -> TensorSource<'static> {
        let map = tensors.into_iter().map(|(n, t)| (n.to_string(), t));
        TensorSource::dense(VarBuilder::from_tensors(
            map.collect(),
            DType::F32,
            &Device::Cpu,
        ))
    }

    #[test]
    fn grouped_transposed_convolution_is_candles_per_group() {
        let dev = Device::Cpu;
        let (c, k, s, t) = (4, 6, 3, 5);
        let x = Tensor::randn(0f32, 1., (1, c, t), &dev).unwrap();
        let w = Tensor::randn(0f32, 1., (c, 1, k), &dev).unwrap();
        let ours = grouped_conv_transpose(&x, &w, s, c).unwrap();
        let theirs = x.conv_transpose1d(&w, 0, 0, s, 1, c).unwrap();
        assert!(max_diff(&ours, &theirs) < 1e-5);
    }

    #[test]
    fn the_products_equal_candles_convolutions() {
        let dev = Device::Cpu;
        for (c_in, c_out, k, stride, dilation, t) in [
            (6, 5, 7, 1, 1, 16),
            (4, 3, 3, 1, 2, 9),
            (5, 7, 8, 4, 1, 12),
            (3, 2, 1, 1, 1, 4),
        ] {
            let w = Tensor::randn(0f32, 1., (c_out, c_in, k), &dev).unwrap();
            let x = Tensor::randn(0f32, 1., (1, c_in, t), &dev).unwrap();
            let conv = Conv::new(
                &source(vec![("weight", w.clone())]),
                c_in,
                c_out,
                k,
                stride,
                dilation,
                false,
                false,
            )
            .unwrap();
            let padded = Tensor::cat(
                &[
                    &Tensor::zeros((1, c_in, conv.context().unwrap()), DType::F32, &dev).unwrap(),
                    &x,
                ],
                2,
            )
            .unwrap();
            let ours = conv.forward(&x, &mut None).unwrap();
            let theirs = padded.conv1d(&w, 0, stride, dilation, 1).unwrap();
            assert!(max_diff(&ours, &theirs) < 1e-4, "conv {c_in} {c_out} {k}");

            let w = Tensor::randn(0f32, 1., (c_in, c_out, k), &dev).unwrap();
            let tr = ConvTr::new(
                &source(vec![("weight", w.clone())]),
                c_in,
                c_out,
                k,
                stride,
                1,
                false,
            )
            .unwrap();
            let ours = tr.product(tr.columns.as_ref().unwrap(), &x).unwrap();
            let theirs = x.conv_transpose1d(&w, 0, 0, stride, 1, 1).unwrap();
            assert!(max_diff(&ours, &theirs) < 1e-4, "convtr {c_in} {c_out} {k}");
        }
    }
}
