//! Text-to-speech: the Kyutai conversation builder (the model pipeline comes with the TTS work).

mod builder;

pub use builder::{KyutaiTtsBuilder, KyutaiTtsConversation};
