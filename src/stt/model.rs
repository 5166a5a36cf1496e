//! [`SttModel`]: the STT weights, loaded once and shared by every conversation.

use std::sync::Arc;

use candle_core::{DType, Device};
use moshi::lm::LmModel;
use moshi::mimi::Mimi;

use super::config::SttConfig;
use super::transcriber::Transcriber;
use crate::error::MoshiError;
use crate::models::SttModelPaths;
use crate::text::Tokenizer;
use crate::weights::{TensorSource, Weights};

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
    /// Loads the files of an STT repository on `device`, with the LM weights dense as `dtype`
    /// (Mimi stays f32).
    #[doc(hidden)]
    pub fn load(
        paths: &SttModelPaths,
        device: &Device,
        dtype: DType,
    ) -> Result<SttModel, MoshiError> {
        let weights = match dtype {
            DType::BF16 => Weights::Bf16,
            DType::F16 => Weights::F16,
            _ => Weights::F32,
        };
        Self::load_weights(paths, device, weights, std::path::Path::new("."))
    }

    /// Loads the files of an STT repository on `device`, the language model at the `weights`
    /// setting (see [`crate::weights::lm_source`]; `derived_dir` takes the quantized files of a
    /// language model outside the cache). Mimi stays f32.
    #[doc(hidden)]
    pub fn load_weights(
        paths: &SttModelPaths,
        device: &Device,
        weights: Weights,
        derived_dir: &std::path::Path,
    ) -> Result<SttModel, MoshiError> {
        // Cheap checks first: a mismatched tokenizer is reported before gigabytes are read.
        let config = SttConfig::from_file(&paths.config)?;
        let tokenizer = Self::tokenizer_for(paths, &config)?;
        let (source, _) =
            crate::weights::lm_source(&paths.lm_weights, weights, device, derived_dir)?;
        Self::assemble(paths, device, config, tokenizer, &source)
    }

    /// Loads the files of an STT repository on `device`, the language model from `source`
    /// (the LM file read dense, or a quantized file; see [`crate::weights`]).
    #[doc(hidden)]
    pub fn load_source(
        paths: &SttModelPaths,
        device: &Device,
        source: &TensorSource,
    ) -> Result<SttModel, MoshiError> {
        let config = SttConfig::from_file(&paths.config)?;
        let tokenizer = Self::tokenizer_for(paths, &config)?;
        Self::assemble(paths, device, config, tokenizer, source)
    }

    fn tokenizer_for(paths: &SttModelPaths, config: &SttConfig) -> Result<Tokenizer, MoshiError> {
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
        Ok(tokenizer)
    }

    fn assemble(
        paths: &SttModelPaths,
        device: &Device,
        config: SttConfig,
        tokenizer: Tokenizer,
        source: &TensorSource,
    ) -> Result<SttModel, MoshiError> {
        let mimi = crate::codec::load_mimi(
            &paths.mimi_weights,
            paths.mimi_config.as_deref(),
            config.n_q,
            device,
            DType::F32,
        )?;
        let vb = match source.quantized() {
            Some(q) => moshi::nn::MaybeQuantizedVarBuilder::Quantized(q.clone()),
            None => moshi::nn::MaybeQuantizedVarBuilder::Real(source.vb().clone()),
        };
        let lm = LmModel::new(&config.lm_config(), vb).map_err(|e| {
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
        self.transcriber_encoding(self.device.is_cpu())
    }

    /// A transcriber whose Mimi encoding runs on its own thread (`threaded`, the CPU default)
    /// or inline (the GPU default); both give the same words.
    #[doc(hidden)]
    pub fn transcriber_encoding(&self, threaded: bool) -> Result<Transcriber, MoshiError> {
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
            self.mimi.clone(),
            threaded,
            self.tokenizer.clone(),
            &self.config,
            self.device.clone(),
        ))
    }

    /// The language model (clone it to run it: the clone has its own state and shares the
    /// weights).
    #[doc(hidden)]
    pub fn lm(&self) -> &LmModel {
        &self.lm
    }

    /// The Mimi codec (clone it to run it, as for [`lm`](Self::lm)).
    #[doc(hidden)]
    pub fn mimi(&self) -> &Mimi {
        &self.mimi
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
