//! [`SttModel`]: the STT weights, loaded once and shared by every conversation.

use std::sync::Arc;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use moshi::lm::LmModel;
use moshi::mimi::Mimi;

use super::batch::{SttBatch, WhenBusy};
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
    /// The stepping loop every conversation of this model runs in (its slots are the batch).
    batch: SttBatch,
    /// Mimi as loaded: each conversation encodes with a copy (weights shared, state its own).
    mimi: Mimi,
    tokenizer: Arc<Tokenizer>,
    config: SttConfig,
    device: Device,
}

impl SttModel {
    /// Loads the files of an STT repository on `device`, with the LM weights as `dtype` (Mimi
    /// stays f32), for `batch_size` conversations at a time.
    #[doc(hidden)]
    pub fn load(
        paths: &SttModelPaths,
        device: &Device,
        dtype: DType,
        batch_size: usize,
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
        let vb = if device.is_cpu() && dtype == DType::BF16 {
            bf16_weights_f32_compute(&paths.lm_weights)
        } else {
            // SAFETY: read-only mapping of a cache file that is never rewritten in place.
            unsafe { VarBuilder::from_mmaped_safetensors(&[&paths.lm_weights], dtype, device) }
        }
        .map_err(|e| {
            MoshiError::invalid_file(&paths.lm_weights, format!("cannot read safetensors: {e}"))
        })?;
        let lm = LmModel::batched(
            batch_size,
            &config.lm_config(),
            moshi::nn::MaybeQuantizedVarBuilder::Real(vb),
        )
        .map_err(|e| {
            MoshiError::invalid_file(
                &paths.lm_weights,
                format!("the weights do not match config.json: {e}"),
            )
        })?;
        SttModel::from_parts(config, lm, mimi, tokenizer, device.clone(), batch_size)
    }

    /// A model from parts already built (custom loading, benchmarks with random weights): `lm`
    /// built batched for `batch_size` (`LmModel::batched`), `mimi` not (`Mimi::new`).
    #[doc(hidden)]
    pub fn from_parts(
        config: SttConfig,
        lm: LmModel,
        mimi: Mimi,
        tokenizer: Tokenizer,
        device: Device,
        batch_size: usize,
    ) -> Result<SttModel, MoshiError> {
        // The state's own Mimi is not used to encode (each conversation has its own); it is
        // there because the state takes one.
        let state = moshi::asr::State::new(batch_size, config.delay_steps(), 0.0, mimi.clone(), lm)
            .map_err(|e| MoshiError::Inference {
                message: format!("could not start the STT state: {e}"),
                source: Some(Arc::new(e)),
            })?;
        Ok(SttModel {
            batch: SttBatch::start(state, device.clone()),
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
        let slot = self.batch.acquire(when_busy)?;
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

    /// `(used, total)` slots of the batch.
    pub fn slots(&self) -> (usize, usize) {
        (self.batch.used(), self.batch.size())
    }

    /// `(steps, slot-steps)` run so far; their ratio is the mean number of conversations per
    /// step.
    #[doc(hidden)]
    pub fn step_counters(&self) -> (u64, u64) {
        self.batch.counters()
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
fn bf16_weights_f32_compute(path: &std::path::Path) -> candle_core::Result<VarBuilder<'static>> {
    // SAFETY: read-only mapping of a cache file that is never rewritten in place.
    let file = unsafe { candle_core::safetensors::MmapedSafetensors::new(path)? };
    let tensors = file
        .tensors()
        .into_iter()
        .map(|(name, _)| {
            let t = file.load(&name, &Device::Cpu)?;
            let t = if t.dtype().is_float() {
                t.to_dtype(DType::BF16)?.to_dtype(DType::F32)?
            } else {
                t
            };
            Ok((name, t))
        })
        .collect::<candle_core::Result<_>>()?;
    Ok(VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu))
}

impl std::fmt::Debug for SttModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SttModel")
            .field("config", &self.config)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}
