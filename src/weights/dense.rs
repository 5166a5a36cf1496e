//! Reading a safetensors file into dense tensors, fast and without a second copy in memory.
//!
//! candle's `VarBuilder::from_mmaped_safetensors` converts each bf16 tensor to f32 on one core,
//! and the mapped file's pages stay resident next to the converted tensors until the end of the
//! load (a 2.2 GB bf16 file under 4.4 GB of f32 tensors peaks at 6.6 GB). Here each tensor is
//! read with positioned reads, in chunks, and converted on every core (rayon), straight into the
//! tensor's own buffer: resident memory is the tensors plus one chunk per thread.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use rayon::prelude::*;
use safetensors::Dtype;

use crate::error::{MoshiError, Result};

/// Bytes read and converted per task.
const CHUNK_BYTES: usize = 1 << 22;

/// Where one tensor is in the file.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// The stored dtype.
    pub dtype: Dtype,
    /// The shape, PyTorch order.
    pub shape: Vec<usize>,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    /// Length of the data in bytes.
    pub len: usize,
}

/// A safetensors file opened for reading tensor by tensor.
pub struct SafetensorsFile {
    path: PathBuf,
    file: File,
    tensors: HashMap<String, TensorInfo>,
}

impl SafetensorsFile {
    /// Opens a file and reads its header (checked as `verify::check_safetensors` does).
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| MoshiError::io("could not open", path, e))?;
        // SAFETY: read-only map, used only to parse the header within this function; the cache
        // never modifies a file in place.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| MoshiError::io("could not map", path, e))?;
        let (header_len, metadata) = safetensors::SafeTensors::read_metadata(&map)
            .map_err(|e| MoshiError::invalid_file(path, format!("bad safetensors header: {e}")))?;
        let data_start = 8 + header_len as u64;
        let tensors = metadata
            .tensors()
            .into_iter()
            .map(|(name, info)| {
                let (start, end) = info.data_offsets;
                let info = TensorInfo {
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    offset: data_start + start as u64,
                    len: end - start,
                };
                (name, info)
            })
            .collect();
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            file,
            tensors,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor, by name.
    pub fn tensors(&self) -> &HashMap<String, TensorInfo> {
        &self.tensors
    }

    /// Reads a tensor as f32 values, converting on every core.
    pub fn read_f32(&self, name: &str) -> candle_core::Result<Vec<f32>> {
        let info = self.info(name)?;
        let elem = match info.dtype {
            Dtype::F32 => 4,
            Dtype::BF16 => 2,
            other => candle_core::bail!("{name}: cannot read {other:?} as f32"),
        };
        thread_local! {
            /// Each thread's read buffer, reused from chunk to chunk: a fresh one per chunk
            /// would be a fresh mapping to fault in and zero every time.
            static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let mut out = vec![0f32; info.len / elem];
        let per_chunk = CHUNK_BYTES / elem;
        out.par_chunks_mut(per_chunk).enumerate().try_for_each(
            |(i, dst)| -> candle_core::Result<()> {
                BUFFER.with_borrow_mut(|buf| -> candle_core::Result<()> {
                    buf.resize(dst.len() * elem, 0);
                    read_at(&self.file, buf, info.offset + (i * CHUNK_BYTES) as u64)?;
                    convert(info.dtype, buf, dst);
                    Ok(())
                })
            },
        )?;
        Ok(out)
    }

    /// Reads a tensor's bytes as stored.
    pub fn read_raw(&self, name: &str) -> candle_core::Result<Vec<u8>> {
        let info = self.info(name)?;
        let mut out = vec![0u8; info.len];
        out.par_chunks_mut(CHUNK_BYTES).enumerate().try_for_each(
            |(i, dst)| -> candle_core::Result<()> {
                read_at(&self.file, dst, info.offset + (i * CHUNK_BYTES) as u64)?;
                Ok(())
            },
        )?;
        Ok(out)
    }

    /// A tensor in `dtype` on `device`.
    pub fn tensor(&self, name: &str, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let info = self.info(name)?;
        let tensor = if dtype == DType::F32 && is_float(info.dtype) {
            Tensor::from_vec(self.read_f32(name)?, info.shape.as_slice(), &Device::Cpu)?
        } else {
            let stored = candle_dtype(info.dtype)
                .ok_or_else(|| candle_core::Error::Msg(format!("{name}: {:?}", info.dtype)))?;
            Tensor::from_raw_buffer(
                &self.read_raw(name)?,
                stored,
                info.shape.as_slice(),
                &Device::Cpu,
            )?
            .to_dtype(dtype)?
        };
        tensor.to_device(device)
    }

    fn info(&self, name: &str) -> candle_core::Result<&TensorInfo> {
        self.tensors.get(name).ok_or_else(|| {
            candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            }
            .bt()
        })
    }
}

/// The dtypes [`SafetensorsFile::read_f32`] converts itself (others go through candle).
fn is_float(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F32 | Dtype::BF16)
}

/// The candle dtype of a safetensors dtype, where candle has one.
pub fn candle_dtype(dtype: Dtype) -> Option<DType> {
    Some(match dtype {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::F64 => DType::F64,
        Dtype::U8 => DType::U8,
        Dtype::U32 => DType::U32,
        Dtype::I64 => DType::I64,
        _ => return None,
    })
}

/// Little-endian bf16 or f32 `bytes` into f32 values (bf16 to f32 is a shift, exact).
fn convert(dtype: Dtype, bytes: &[u8], dst: &mut [f32]) {
    match dtype {
        Dtype::BF16 => {
            for (d, b) in dst.iter_mut().zip(bytes.chunks_exact(2)) {
                *d = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16);
            }
        }
        _ => {
            for (d, b) in dst.iter_mut().zip(bytes.chunks_exact(4)) {
                *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
    }
}

/// The transpose of a row-major `rows x cols` matrix (`cols x rows`, row-major), in cache-sized
/// tiles on every core (candle's strided copy does it element by element on one core).
pub fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let mut out = vec![0f32; values.len()];
    out.par_chunks_mut(TILE * rows)
        .enumerate()
        .for_each(|(tile, dst)| {
            let c0 = tile * TILE;
            let width = dst.len() / rows;
            for r0 in (0..rows).step_by(TILE) {
                for c in 0..width {
                    for r in r0..(r0 + TILE).min(rows) {
                        dst[c * rows + r] = values[r * cols + c0 + c];
                    }
                }
            }
        });
    out
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

/// `tensor` if it has the `expected` shape, else candle's shape-mismatch error (what its own
/// `VarBuilder` backends answer), for the backends here.
pub(crate) fn with_shape(
    tensor: Tensor,
    expected: Shape,
    name: &str,
) -> candle_core::Result<Tensor> {
    if tensor.shape() != &expected {
        Err(candle_core::Error::UnexpectedShape {
            msg: format!("shape mismatch for {name}"),
            expected,
            got: tensor.shape().clone(),
        }
        .bt())?
    }
    Ok(tensor)
}

/// A candle `VarBuilder` backend over a [`SafetensorsFile`]: `VarBuilder::from_backend` with it
/// loads a model (ours, the `moshi` crate's) through the fast path.
impl SimpleBackend for SafetensorsFile {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        with_shape(self.tensor(name, dtype, dev)?, s, name)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.tensor(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// A `VarBuilder` reading `path` through the fast path, with tensors as `dtype` on `device`.
pub fn var_builder(
    path: &Path,
    dtype: DType,
    device: &Device,
) -> Result<candle_nn::VarBuilder<'static>> {
    let file = SafetensorsFile::open(path)?;
    Ok(candle_nn::VarBuilder::from_backend(
        Box::new(file),
        dtype,
        device.clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_f16_and_f32_read_as_candle_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let values: Vec<f32> = (0..3000).map(|i| (i as f32 - 1500.0) * 0.37).collect();
        let base = Tensor::from_vec(values, (30, 100), &Device::Cpu).unwrap();
        let tensors: HashMap<String, Tensor> = [
            ("a".to_string(), base.to_dtype(DType::BF16).unwrap()),
            ("b".to_string(), base.to_dtype(DType::F16).unwrap()),
            ("c".to_string(), base.clone()),
        ]
        .into();
        candle_core::safetensors::save(&tensors, &path).unwrap();
        let file = SafetensorsFile::open(&path).unwrap();
        for name in ["a", "b", "c"] {
            let ours = file.tensor(name, DType::F32, &Device::Cpu).unwrap();
            let theirs = tensors[name].to_dtype(DType::F32).unwrap();
            assert_eq!(
                ours.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                "{name}"
            );
            let kept = file.tensor(name, DType::BF16, &Device::Cpu).unwrap();
            assert_eq!(kept.dtype(), DType::BF16);
        }
        let vb = var_builder(&path, DType::F32, &Device::Cpu).unwrap();
        let t = transpose(&(0..3000).map(|i| i as f32).collect::<Vec<_>>(), 30, 100);
        let reference = Tensor::arange(0f32, 3000., &Device::Cpu)
            .unwrap()
            .reshape((30, 100))
            .unwrap()
            .t()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(t, reference);
        assert!(vb.get((30, 100), "a").is_ok());
        let error = vb.get((100, 30), "a").unwrap_err().to_string();
        assert!(error.contains("shape mismatch"), "{error}");
        assert!(vb.get((30, 100), "missing").is_err());
    }
}
