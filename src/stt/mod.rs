//! Speech-to-text with Kyutai's STT models: the fluent builder, the loaded model and the
//! streaming transcriber.
//!
//! The pipeline: decode the source packet by packet ([`crate::audio`]), mix down and resample
//! to 24 kHz, cut into 80 ms frames, run them through Mimi and the language model with the
//! `moshi` crate's `asr::State`, and turn the text tokens into timed words as the model emits
//! them.

mod batch;
mod builder;
mod config;
mod end_of_turn;
mod model;
mod source;
mod transcriber;

pub use crate::batch::WhenBusy;
pub use builder::{AudioDuration, BoxEventStream, KyutaiSttBuilder, KyutaiSttConversation};
pub use config::SttConfig;
pub use end_of_turn::EndOfTurnSettings;
pub use model::SttModel;
pub use source::{transcribe_blocking, transcribe_events_blocking};
pub use transcriber::FRAME_SAMPLES;
