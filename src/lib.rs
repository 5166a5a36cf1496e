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
//! Layout: [`voice`] is the engine-neutral fluent-voice surface; [`models`] fetches and verifies
//! model files in the Hugging Face cache; [`KyutaiEngine`] owns them; [`Kyutai`] is the
//! process-wide provider.

pub mod audio;
pub mod codec;
pub mod engine;
pub mod error;
pub mod models;
pub mod provider;
pub mod shared_init;
pub mod stt;
pub mod text;
pub mod tts;
pub mod voice;
pub mod weights;

pub use engine::KyutaiEngine;
pub use error::{MoshiError, Result};
pub use models::{
    KyutaiModelConfig, KyutaiModelManager, KyutaiModelPaths, SttModelPaths, TtsModelPaths,
};
pub use provider::{ConfigureError, Kyutai, Provider};

/// Everything an application needs, in one import.
pub mod prelude {
    pub use crate::engine::KyutaiEngine;
    pub use crate::error::MoshiError;
    pub use crate::models::{KyutaiModelConfig, KyutaiModelManager, KyutaiModelPaths};
    pub use crate::provider::Kyutai;
    pub use crate::voice::*;
}

/// The README's examples, compiled as doc tests so that they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
