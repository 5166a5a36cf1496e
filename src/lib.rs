//! # fluent-voice-kyutai
//!
//! Kyutai's open text-to-speech and speech-to-text models behind the fluent-voice API, with
//! zero setup: the first call downloads, verifies and loads the models, once per process.
//!
//! ```no_run
//! use fluent_voice_kyutai::prelude::*;
//!
//! # async fn run() -> Result<(), VoiceError> {
//! // Optional, once, before first use.
//! Kyutai::configure(KyutaiModelConfig::default().stt_repo("kyutai/stt-2.6b-en-candle"))
//!     .expect("configured before first use");
//!
//! // Zero setup: the first call fetches and verifies the TTS model and the voice.
//! let conversation = Kyutai::tts()
//!     .with_speaker(
//!         Speaker::speaker("Narrator")
//!             .with_voice("expresso/ex03-ex01_happy_001_channel1_334s.wav")
//!             .speak("Hello from Rust.")
//!             .build(),
//!     )
//!     .synthesize()
//!     .await?;
//! let audio = conversation.into_stream();
//! # Ok(()) }
//! ```
//!
//! What is here:
//!
//! - [`Kyutai`]: the zero-setup, process-wide entry point ([`Kyutai::configure`],
//!   `Kyutai::tts()`, `Kyutai::stt()` through [`voice::FluentVoice`]).
//! - [`KyutaiEngine`]: an engine of your own, owning its models, loaded once and shared.
//! - [`models`]: the model manager ([`KyutaiModelManager`], [`KyutaiModelConfig`]) that fetches
//!   and verifies model files in the Hugging Face cache.
//! - [`voice`]: the engine-neutral fluent-voice surface (builders, conversations, value types,
//!   [`voice::VoiceError`]).
//! - [`audio`]: WAV helpers; [`MoshiError`]: this crate's one error type.
//!
//! `ARCHITECTURE.md` in the repository explains the layers and how a request flows.

#![warn(missing_docs)]

mod batch;
mod codec;
mod engine;
mod error;
mod layers;
mod lm_config;
mod pipeline;
pub mod pocket;
mod provider;
mod runtime;
mod shared_init;
mod speech_out;
mod stt;
mod text;
mod tts;
mod weights;

pub mod audio;
pub mod models;
#[cfg(feature = "server")]
pub mod server;
pub mod voice;

pub use codec::SAMPLE_RATE;
pub use engine::KyutaiEngine;
pub use error::{MoshiError, Result};
pub use models::{
    KyutaiModelConfig, KyutaiModelManager, KyutaiModelPaths, SttModelPaths, TtsModelPaths,
};
pub use provider::{ConfigureError, ConfigureErrorKind, Kyutai};
pub use stt::{
    AudioDuration, BoxEventStream, EndOfTurnSettings, KyutaiSttBuilder, KyutaiSttConversation,
    SttModel,
};
pub use tts::{
    KyutaiTtsBuilder, KyutaiTtsConversation, TextSender, TextStream, TtsModel, text_channel,
};

/// Everything an application needs, in one import.
pub mod prelude {
    pub use crate::audio::{WavFormat, write_wav};
    pub use crate::engine::KyutaiEngine;
    pub use crate::error::MoshiError;
    pub use crate::models::{KyutaiModelConfig, KyutaiModelManager, KyutaiModelPaths};
    pub use crate::provider::Kyutai;
    pub use crate::voice::{
        AudioChunk, FluentVoice, Language, Speaker, SpeakerBuilder, SpeechSource, SttConversation,
        SttConversationBuilder, SttEngine, Transcript, TranscriptEvent, TranscriptionSegment,
        TtsConversation, TtsConversationBuilder, TtsEngine, VoiceError, VoiceId,
    };
}

/// The crate's internals, for its own tests, benchmarks and fuzz targets. Not a public API: it
/// changes without notice.
#[doc(hidden)]
pub mod internals {
    pub use crate::batch::Batching;
    pub use crate::codec::{candle_device, load_mimi};
    pub use crate::provider::Provider;
    pub use crate::text::{PieceKind, Tokenizer};

    /// The process-wide provider behind [`crate::Kyutai`].
    pub fn global_provider() -> &'static Provider {
        crate::provider::global()
    }

    pub mod audio {
        pub use crate::audio::decode::AudioDecoder;
        pub use crate::audio::resample::{StreamResampler, downmix};
    }
    pub mod models {
        pub use crate::models::cache::{HubCache, repo_folder_name};
        pub use crate::models::repo_config::{
            FileLocation, RepoConfig, check_repo_id, check_repo_path,
        };
        pub use crate::models::verify::safetensors_tensors;

        /// The file name of a voice: `<voice>.<sig>@<epoch>.safetensors`.
        pub fn voice_file_name(
            voice: &str,
            model_id: Option<&crate::models::ModelId>,
        ) -> crate::Result<String> {
            crate::models::KyutaiModelManager::voice_file_name(voice, model_id)
        }
    }
    pub mod stt {
        pub use crate::stt::{
            FRAME_SAMPLES, SttConfig, transcribe_blocking, transcribe_events_blocking,
        };
    }
    pub mod pocket {
        pub use crate::pocket::*;
    }
    pub mod tts {
        pub use crate::tts::{
            TtsConfig, conditioners, generate, lm, sampling, state_machine, synth,
        };
    }
    pub mod weights {
        pub use crate::weights::{
            LoadedFrom, Scheme, TensorSource, dense, derived, lm_source, quantize, quantized_source,
        };
    }
}

/// The README's examples, compiled as doc tests so that they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
