//! Text-to-speech with the public Kyutai TTS checkpoint (`kyutai/tts-1.6b-en_fr`), in pure Rust on
//! candle.
//!
//! The `moshi` crate cannot run this checkpoint (no demuxed second text stream, no scheduled or
//! low-rank depformer weights, no `speaker_wavs` cross-attention or cfg/control conditioners in
//! the published format), so the language model is written here, following the Python `moshi`
//! package: [`config`] reads `config.json`, [`lm`] holds the model ([`transformer`],
//! [`layers`], [`conditioners`]), [`state_machine`] turns text into entries and the model's
//! predictions into the text stream, [`generate`] runs the steps, [`sampling`] picks tokens,
//! [`synth`] ties it to the tokenizer and Mimi and streams audio.

mod batch;
mod builder;
pub mod conditioners;
pub mod config;
pub mod generate;
pub mod lm;
pub mod sampling;
pub mod state_machine;
pub mod synth;
pub mod text_stream;

pub use builder::{KyutaiTtsBuilder, KyutaiTtsConversation, TextSender, TextStream, text_channel};
pub use config::TtsConfig;
pub use synth::TtsModel;
