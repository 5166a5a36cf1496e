//! Speech-to-text: the Kyutai conversation builder (the model pipeline comes with the STT work).

mod builder;

pub use builder::{KyutaiSttBuilder, KyutaiSttConversation};
