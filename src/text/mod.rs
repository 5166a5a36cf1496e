//! Text tokenization: Kyutai's SentencePiece models, read and run in pure Rust.
//!
//! Shared by speech-to-text (turning recognised pieces into words) and text-to-speech
//! (turning the script into pieces).

mod proto;
mod tokenizer;

pub use tokenizer::{PieceKind, Tokenizer};
