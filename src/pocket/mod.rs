//! Pocket TTS, Kyutai's 100M-parameter text-to-speech made for CPUs (the `pocket-tts` 4.0.1
//! Python package is the reference): a flow language model that makes one continuous 32-dim
//! latent per 80 ms frame, and a continuous Mimi that turns latents into 24 kHz audio.
//!
//! The layout follows the reference's: [`config`] (the YAML), [`text`] (preparation and
//! chunking), [`tokenizer`], [`flow_lm`] and its [`head`], [`mimi`], [`voice`] (voice states)
//! and [`model`] (the generation rules). The transformer inside the flow LM and Mimi is the
//! crate's shared one ([`crate::layers`]).

pub mod config;
pub mod flow_lm;
pub mod head;
pub mod mimi;
pub mod model;
pub mod noise;
pub mod prompt_audio;
pub mod text;
pub mod tokenizer;
pub mod voice;

pub use config::PocketConfig;
pub use model::{ChunkTrace, GenerateSettings, PocketModel};
pub use voice::VoiceState;
