//! The model layers every language model here is built from: the 1.6B TTS, its depformer, and
//! Pocket TTS's flow LM and Mimi transformer. One attention (RoPE, GQA, KV cache, sliding
//! context), one feed-forward, one set of norms and embeddings, so that a speed-up or a fix made
//! for one model holds for all of them (candle-transformers shares its layers the same way).
//!
//! The layers see their weights only through [`crate::weights`] ([`crate::weights::Linear`],
//! dense or quantized); nothing in `weights/` knows of them.

pub mod blocks;
pub mod transformer;

pub use blocks::{Embedding, Norm};
pub use transformer::{FeedForwardKind, Transformer, TransformerConfig, TransformerState};
