//! [`SttModel`]: the STT weights, loaded once and shared by every conversation.

use std::sync::Arc;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use moshi::lm::LmModel;
use moshi::mimi::Mimi;

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
    lm: LmModel,
    mimi: Mimi,
    tokenizer: Arc<Tokenizer>,
    config: SttConfig,
    device: Device,
}

impl SttModel {
    /// Loads the files of an STT repository on `device`, with the LM weights as `dtype`
    /// (Mimi stays f32).
    #[doc(hidden)]
    pub fn load(
        paths: &SttModelPaths,
        device: &Device,
        dtype: DType,
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
        )?;
        // SAFETY: read-only mapping of a cache file that is never rewritten in place.
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&[&paths.lm_weights], dtype, device) }
                .map_err(|e| {
                    MoshiError::invalid_file(
                        &paths.lm_weights,
                        format!("cannot read safetensors: {e}"),
                    )
                })?;
        let lm = LmModel::new(
            &config.lm_config(),
            moshi::nn::MaybeQuantizedVarBuilder::Real(vb),
        )
        .map_err(|e| {
            MoshiError::invalid_file(
                &paths.lm_weights,
                format!("the weights do not match config.json: {e}"),
            )
        })?;
        Ok(SttModel {
            lm,
            mimi,
            tokenizer: Arc::new(tokenizer),
            config,
            device: device.clone(),
        })
    }

    /// A model from parts already built (custom loading, benchmarks with random weights).
    #[doc(hidden)]
    pub fn from_parts(
        config: SttConfig,
        lm: LmModel,
        mimi: Mimi,
        tokenizer: Tokenizer,
        device: Device,
    ) -> SttModel {
        SttModel {
            lm,
            mimi,
            tokenizer: Arc::new(tokenizer),
            config,
            device,
        }
    }

    /// A fresh streaming transcriber sharing this model's weights.
    #[doc(hidden)]
    pub fn transcriber(&self) -> Result<Transcriber, MoshiError> {
        let state = moshi::asr::State::new(
            1,
            self.config.delay_steps(),
            0.0,
            self.mimi.clone(),
            self.lm.clone(),
        )
        .map_err(|e| MoshiError::Inference {
            message: format!("could not start the STT state: {e}"),
            source: None,
        })?;
        Ok(Transcriber::new(
            state,
            self.tokenizer.clone(),
            &self.config,
            self.device.clone(),
        ))
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

impl std::fmt::Debug for SttModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SttModel")
            .field("config", &self.config)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}
