//! [`SttModel`]: the STT weights, loaded once and shared by every conversation.

use std::sync::Arc;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use moshi::lm::LmModel;
use moshi::mimi::Mimi;

use super::batch::{Batching, SttBatch, SttBatches, WhenBusy};
use super::config::SttConfig;
use super::transcriber::Transcriber;
use crate::error::MoshiError;
use crate::models::SttModelPaths;
use crate::text::Tokenizer;

/// A loaded speech-to-text model: language model, Mimi and tokenizer.
///
/// Loading takes seconds for the public checkpoints, so an engine loads it once and hands out
/// an `Arc`. Each conversation gets a transcriber whose streaming state (KV caches, Mimi
/// buffers) is its own, while the weight tensors (reference-counted inside candle) are shared.
///
/// Applications get one from [`KyutaiEngine::stt_model`](crate::KyutaiEngine::stt_model), for
/// example to load the model before the first request; its workings are the crate's own.
pub struct SttModel {
    /// The batches conversations run in (each a stepping loop; its slots are the batch).
    batches: SttBatches,
    /// Mimi as loaded: each conversation encodes with a copy (weights shared, state its own).
    mimi: Mimi,
    tokenizer: Arc<Tokenizer>,
    config: SttConfig,
    device: Device,
}

impl SttModel {
    /// Loads the files of an STT repository on `device`, with the LM weights as `dtype` (Mimi
    /// stays f32); conversations run in batches of `batching.batch_size`.
    #[doc(hidden)]
    pub fn load(
        paths: &SttModelPaths,
        device: &Device,
        dtype: DType,
        batching: Batching,
    ) -> Result<SttModel, MoshiError> {
        let config = SttConfig::from_file(&paths.config)?;
        let tokenizer = Tokenizer::from_file(&paths.tokenizer)?;
        if tokenizer.vocab_size() < config.text_card {
            return Err(MoshiError::invalid_file(
                &paths.tokenizer,
                format!(
                    "the tokenizer has {} pieces but the model's text_card is {}: the tokenizer \
                     does not belong to this model",
                    tokenizer.vocab_size(),
                    config.text_card
                ),
            ));
        }
        let mimi = crate::codec::load_mimi(
            &paths.mimi_weights,
            paths.mimi_config.as_deref(),
            config.n_q,
            device,
            DType::F32,
            None,
        )?;
        let vb = lm_weights(&paths.lm_weights, dtype, device).map_err(|e| {
            MoshiError::invalid_file(&paths.lm_weights, format!("cannot read safetensors: {e}"))
        })?;
        // Built once here to check the weights against the config (and as the first batch).
        let vb = moshi::nn::MaybeQuantizedVarBuilder::Real(vb);
        let lm_config = config.lm_config();
        LmModel::batched(batching.batch_size, &lm_config, vb.clone()).map_err(|e| {
            MoshiError::invalid_file(
                &paths.lm_weights,
                format!("the weights do not match config.json: {e}"),
            )
        })?;
        SttModel::from_parts(config, vb, mimi, tokenizer, device.clone(), batching)
    }

    /// A model from parts already built (custom loading, benchmarks with random weights): the
    /// language model's weights (`vb`, whose tensors every batch shares), Mimi (`Mimi::new`).
    #[doc(hidden)]
    pub fn from_parts(
        config: SttConfig,
        vb: moshi::nn::MaybeQuantizedVarBuilder<'static>,
        mimi: Mimi,
        tokenizer: Tokenizer,
        device: Device,
        batching: Batching,
    ) -> Result<SttModel, MoshiError> {
        let (lm_config, delay) = (config.lm_config(), config.delay_steps());
        let state_mimi = mimi.clone();
        let batch_device = device.clone();
        // A new batch: its own language model (and so its own attention caches) on the shared
        // weight tensors. The state's Mimi is not used to encode (each conversation has its
        // own); it is there because the state takes one.
        let new_batch = move |size: usize, freed| -> Result<SttBatch, MoshiError> {
            let state = LmModel::batched(size, &lm_config, vb.clone())
                .and_then(|lm| moshi::asr::State::new(size, delay, 0.0, state_mimi.clone(), lm))
                .map_err(|e| MoshiError::Inference {
                    message: format!("could not start the STT state: {e}"),
                    source: Some(Arc::new(e)),
                })?;
            Ok(SttBatch::start(state, batch_device.clone(), freed))
        };
        Ok(SttModel {
            batches: SttBatches::new(batching, Box::new(new_batch)),
            mimi,
            tokenizer: Arc::new(tokenizer),
            config,
            device,
        })
    }

    /// A streaming transcriber in a free slot of this model's batch, waiting for one (or
    /// failing, as `when_busy` says) when all are taken. Blocking.
    #[doc(hidden)]
    pub fn transcriber(&self, when_busy: WhenBusy) -> Result<Transcriber, MoshiError> {
        let slot = self.batches.acquire(when_busy)?;
        let mut mimi = self.mimi.clone();
        mimi.reset_state();
        Ok(Transcriber::new(
            slot,
            mimi,
            self.tokenizer.clone(),
            &self.config,
            self.device.clone(),
        ))
    }

    /// `(running, limit)`: conversations running now, and at most (`None`: no limit).
    pub fn conversations(&self) -> (usize, Option<usize>) {
        self.batches.conversations()
    }

    /// `(steps, slot-steps)` run so far; their ratio is the mean number of conversations per
    /// step.
    #[doc(hidden)]
    pub fn step_counters(&self) -> (u64, u64) {
        self.batches.counters()
    }

    /// The model's tokenizer.
    #[doc(hidden)]
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The model's `config.json`.
    #[doc(hidden)]
    pub fn config(&self) -> &SttConfig {
        &self.config
    }

    /// The device the model runs on.
    #[doc(hidden)]
    pub fn device(&self) -> &Device {
        &self.device
    }
}

/// The LM weights rounded to bf16 and widened back to f32, on the CPU. The `moshi` crate's LM
/// does its own matrix products, which candle 0.9 cannot do in bf16 on the CPU; so there a bf16
/// STT model keeps the precision of bf16 weights (what the GPU loads) but computes in f32.
/// The language model's weights, loaded once as `dtype` on `device`, in a builder every batch
/// builds its model from (they share the tensors: a second batch costs its caches, not a second
/// copy of the weights). bf16 on the CPU, where candle has no bf16 matrix product, is bf16-rounded
/// weights computed in f32.
fn lm_weights(
    path: &std::path::Path,
    dtype: DType,
    device: &Device,
) -> candle_core::Result<VarBuilder<'static>> {
    // SAFETY: read-only mapping of a cache file that is never rewritten in place.
    let file = unsafe { candle_core::safetensors::MmapedSafetensors::new(path)? };
    let cpu_bf16 = device.is_cpu() && dtype == DType::BF16;
    let compute = if cpu_bf16 { DType::F32 } else { dtype };
    let tensors = file
        .tensors()
        .into_iter()
        .map(|(name, _)| {
            let t = file.load(&name, device)?;
            let t = match (t.dtype().is_float(), cpu_bf16) {
                (false, _) => t,
                (true, true) => t.to_dtype(DType::BF16)?.to_dtype(DType::F32)?,
                (true, false) => t.to_dtype(dtype)?,
            };
            Ok((name, t))
        })
        .collect::<candle_core::Result<_>>()?;
    Ok(VarBuilder::from_tensors(tensors, compute, device))
}

impl std::fmt::Debug for SttModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SttModel")
            .field("config", &self.config)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}
