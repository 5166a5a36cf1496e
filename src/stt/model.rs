//! [`SttModel`]: the STT weights, loaded once and shared by every conversation.

use std::sync::Arc;

use candle_core::{DType, Device};
use moshi::lm::LmModel;
use moshi::mimi::Mimi;

use super::batch::SttStepper;
use super::config::SttConfig;
use super::transcriber::Transcriber;
use crate::batch::{Batches, Batching, WhenBusy};
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
    /// The batches conversations run in (each a stepping loop; its slots are the batch).
    batches: Batches<SttStepper>,
    /// Mimi as loaded: each conversation encodes with a copy (weights shared, state its own).
    mimi: Mimi,
    /// The language model's weights, as every batch builds its model from them.
    lm_weights: moshi::nn::MaybeQuantizedVarBuilder<'static>,
    tokenizer: Arc<Tokenizer>,
    config: SttConfig,
    device: Device,
}

impl SttModel {
    /// Loads the files of an STT repository on `device`, the language model at the `weights`
    /// setting (see [`crate::weights::lm_source`]; `derived_dir` takes the quantized files of a
    /// language model outside the cache). Mimi stays f32. Conversations run in batches of
    /// `batching.batch_size`.
    #[doc(hidden)]
    pub fn load_weights(
        paths: &SttModelPaths,
        device: &Device,
        weights: Weights,
        derived_dir: &std::path::Path,
        batching: Batching,
    ) -> Result<SttModel, MoshiError> {
        // Cheap checks first: a mismatched tokenizer is reported before gigabytes are read.
        let config = SttConfig::from_file(&paths.config)?;
        let tokenizer = Self::tokenizer_for(paths, &config)?;
        let source = if weights.scheme().is_some() || is_gguf(&paths.lm_weights) {
            crate::weights::lm_source(&paths.lm_weights, weights, device, derived_dir)?.0
        } else {
            dense_tensors(&paths.lm_weights, weights, device).map_err(|e| {
                MoshiError::invalid_file(&paths.lm_weights, format!("cannot read the weights: {e}"))
            })?
        };
        Self::assemble(paths, device, config, tokenizer, &source, batching)
    }

    /// Loads the files of an STT repository on `device`, the language model from `source`
    /// (the LM file read dense, or a quantized file; see [`crate::weights`]).
    #[doc(hidden)]
    pub fn load_source(
        paths: &SttModelPaths,
        device: &Device,
        source: &TensorSource<'static>,
        batching: Batching,
    ) -> Result<SttModel, MoshiError> {
        let config = SttConfig::from_file(&paths.config)?;
        let tokenizer = Self::tokenizer_for(paths, &config)?;
        Self::assemble(paths, device, config, tokenizer, source, batching)
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
        source: &TensorSource<'static>,
        batching: Batching,
    ) -> Result<SttModel, MoshiError> {
        let mimi = crate::codec::load_mimi(
            &paths.mimi_weights,
            paths.mimi_config.as_deref(),
            config.n_q,
            device,
            DType::F32,
            None,
        )?;
        let vb = match source.quantized() {
            Some(q) => moshi::nn::MaybeQuantizedVarBuilder::Quantized(q.clone()),
            None => moshi::nn::MaybeQuantizedVarBuilder::Real(source.vb().clone()),
        };
        // Built once here to check the weights against the config (and as the first batch).
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
        let lm_weights = vb.clone();
        let new_batch = move |size: usize| -> Result<SttStepper, MoshiError> {
            let state = LmModel::batched(size, &lm_config, vb.clone())
                .and_then(|lm| moshi::asr::State::new(size, delay, 0.0, state_mimi.clone(), lm))
                .map_err(|e| MoshiError::Inference {
                    message: format!("could not start the STT state: {e}"),
                    source: Some(Arc::new(e)),
                })?;
            Ok(SttStepper {
                state,
                device: batch_device.clone(),
            })
        };
        Ok(SttModel {
            batches: Batches::new("speech-to-text", batching, Box::new(new_batch)),
            mimi,
            lm_weights,
            tokenizer: Arc::new(tokenizer),
            config,
            device,
        })
    }

    /// A streaming transcriber in a free slot of this model's batch, waiting for one (or
    /// failing, as `when_busy` says) when all are taken. Blocking.
    #[doc(hidden)]
    pub fn transcriber(&self, when_busy: WhenBusy) -> Result<Transcriber, MoshiError> {
        self.transcriber_encoding(when_busy, self.device.is_cpu())
    }

    /// A transcriber whose Mimi encoding runs on its own thread (`threaded`, the CPU default)
    /// or inline (the GPU default); both give the same words.
    #[doc(hidden)]
    pub fn transcriber_encoding(
        &self,
        when_busy: WhenBusy,
        threaded: bool,
    ) -> Result<Transcriber, MoshiError> {
        let slot = self.batches.acquire(when_busy)?;
        Ok(Transcriber::new(
            slot,
            self.mimi.clone(),
            threaded,
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

    /// A language model of one stream on this model's weights, apart from the batches (for
    /// benchmarks and checks that step the model themselves).
    #[doc(hidden)]
    pub fn lm(&self) -> Result<LmModel, MoshiError> {
        LmModel::new(&self.config.lm_config(), self.lm_weights.clone()).map_err(|e| {
            MoshiError::Inference {
                message: format!("could not build the language model: {e}"),
                source: Some(Arc::new(e)),
            }
        })
    }

    /// A language model of `batch` streams on this model's weights, apart from the batches (for
    /// benchmarks that step a batch themselves).
    #[doc(hidden)]
    pub fn lm_batched(&self, batch: usize) -> Result<LmModel, MoshiError> {
        LmModel::batched(batch, &self.config.lm_config(), self.lm_weights.clone()).map_err(|e| {
            MoshiError::Inference {
                message: format!("could not build the language model: {e}"),
                source: Some(Arc::new(e)),
            }
        })
    }

    /// The Mimi codec (clone it to run it: the clone has its own state and shares the weights).
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

fn is_gguf(path: &std::path::Path) -> bool {
    path.extension().is_some_and(|e| e == "gguf")
}

/// The language model's dense weights, all read now, in a builder every batch builds its model
/// from: the batches share the tensors (a second batch costs its attention caches, not a second
/// copy of the weights, as a builder reading the file on demand would).
///
/// bf16 on the CPU is bf16 weights computed in f32: the `moshi` crate's LM does its own matrix
/// products, which candle cannot do in bf16 on the CPU, so there a bf16 model keeps the
/// precision of bf16 weights (what a GPU loads) and computes in f32.
fn dense_tensors(
    path: &std::path::Path,
    weights: Weights,
    device: &Device,
) -> candle_core::Result<TensorSource<'static>> {
    let cpu_bf16 = weights == Weights::Bf16 && device.is_cpu();
    let compute = if cpu_bf16 {
        DType::F32
    } else {
        weights.dtype()
    };
    let file = crate::weights::dense::SafetensorsFile::open(path)
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let tensors = file
        .tensors()
        .keys()
        .map(|name| {
            let t = file.tensor(name, weights.dtype(), device)?;
            Ok((name.clone(), t.to_dtype(compute)?))
        })
        .collect::<candle_core::Result<_>>()?;
    Ok(TensorSource::dense(candle_nn::VarBuilder::from_tensors(
        tensors, compute, device,
    )))
}

impl std::fmt::Debug for SttModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SttModel")
            .field("config", &self.config)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}
