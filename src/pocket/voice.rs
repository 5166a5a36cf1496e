//! Voice states: the flow LM's keys and values after a voice prompt, which every chunk of a
//! generation starts from. They come from a predefined voice's file, from a user's
//! `.safetensors` export, or from cloning an audio prompt; they are written back in the
//! reference's export format (`pocket_tts/models/model_state.py`), so files go both ways
//! between this crate and the Python package.
//!
//! The format: for each attention layer `transformer.layers.N.self_attn`, a tensor `/cache`
//! `[2, 1, T, kv_heads, head_dim]` (keys then values, RoPE applied; positions past the offset
//! are NaN padding), `/offset` (int64, the positions filled) and `/pad` (int64, zero). Older
//! files hold `/current_end` instead of `/offset`: its length is the offset.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::error::{MoshiError, Result};

/// A voice state: each layer's keys and values, `[1, kv_heads, T, head_dim]`.
#[derive(Clone)]
pub struct VoiceState {
    pub(crate) kv: Vec<(Tensor, Tensor)>,
}

fn layer_name(i: usize) -> String {
    format!("transformer.layers.{i}.self_attn")
}

impl VoiceState {
    /// The prompt's length in positions.
    pub fn len(&self) -> usize {
        self.kv.first().map_or(0, |(k, _)| k.dim(2).unwrap_or(0))
    }

    /// Whether the state holds no position.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads a voice state file (the reference's export format, or its legacy one).
    pub fn load(path: &Path, device: &Device) -> Result<VoiceState> {
        let invalid = |reason: String| MoshiError::InvalidModelFile {
            path: path.to_path_buf(),
            reason,
        };
        let tensors: HashMap<String, Tensor> = candle_core::safetensors::load(path, device)
            .map_err(|e| invalid(format!("not a safetensors voice state: {e}")))?;
        let mut kv = Vec::new();
        for i in 0.. {
            let name = layer_name(i);
            let Some(cache) = tensors.get(&format!("{name}/cache")) else {
                break;
            };
            let dims = cache.dims();
            if dims.len() != 5 || dims[0] != 2 || dims[1] != 1 {
                return Err(invalid(format!(
                    "{name}/cache has shape {dims:?}, expected [2, 1, T, heads, head_dim]"
                )));
            }
            let offset = if let Some(o) = tensors.get(&format!("{name}/offset")) {
                let o = o
                    .to_dtype(DType::I64)
                    .and_then(|o| o.flatten_all()?.to_vec1::<i64>())
                    .map_err(|e| invalid(format!("{name}/offset: {e}")))?;
                o.first().copied().unwrap_or(0).max(0) as usize
            } else if let Some(end) = tensors.get(&format!("{name}/current_end")) {
                end.dims().first().copied().unwrap_or(0)
            } else {
                return Err(invalid(format!("{name} has a cache but no offset")));
            };
            if offset > dims[2] {
                return Err(invalid(format!(
                    "{name}/offset {offset} is past its cache of {} positions",
                    dims[2]
                )));
            }
            let take = |j: usize| -> candle_core::Result<Tensor> {
                cache
                    .get(j)?
                    .narrow(1, 0, offset)?
                    .transpose(1, 2)?
                    .to_dtype(DType::F32)?
                    .contiguous()
            };
            let pair = (take(0), take(1));
            match pair {
                (Ok(k), Ok(v)) => kv.push((k, v)),
                (Err(e), _) | (_, Err(e)) => return Err(invalid(format!("{name}/cache: {e}"))),
            }
        }
        if kv.is_empty() {
            return Err(invalid(
                "no `transformer.layers.0.self_attn/cache` tensor: not a Pocket TTS voice state"
                    .into(),
            ));
        }
        Ok(VoiceState { kv })
    }

    /// Writes the state in the reference's export format, atomically (a temporary file renamed
    /// into place, so a failed write leaves no partial file).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        let inference = |e| crate::error::inference("cannot build the voice state", e);
        for (i, (k, v)) in self.kv.iter().enumerate() {
            let name = layer_name(i);
            // [1, H, T, D] -> [1, T, H, D], stacked -> [2, 1, T, H, D].
            let cache =
                (|| Tensor::stack(&[k.transpose(1, 2)?, v.transpose(1, 2)?], 0)?.contiguous())()
                    .map_err(inference)?;
            let t = k.dim(2).map_err(inference)? as i64;
            let dev = k.device();
            tensors.push((format!("{name}/cache"), cache));
            tensors.push((
                format!("{name}/offset"),
                Tensor::new(&[t], dev).map_err(inference)?,
            ));
            tensors.push((
                format!("{name}/pad"),
                Tensor::new(&[0i64], dev).map_err(inference)?,
            ));
        }
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        let dir = dir.unwrap_or(Path::new("."));
        let tmp = tempfile::NamedTempFile::new_in(dir).map_err(|source| MoshiError::Io {
            action: "cannot create a file in",
            path: dir.to_path_buf(),
            source: source.into(),
        })?;
        let map: HashMap<String, Tensor> = tensors.into_iter().collect();
        candle_core::safetensors::save(&map, tmp.path()).map_err(inference)?;
        tmp.persist(path).map_err(|e| MoshiError::Io {
            action: "cannot write",
            path: path.to_path_buf(),
            source: e.error.into(),
        })?;
        Ok(())
    }
}
