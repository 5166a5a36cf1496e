//! The fluent-voice surface: the traits and value types every engine in this crate speaks.
//!
//! # Why this module exists
//!
//! The upstream fluent-voice crates are not published, and their speech-to-text builder traits
//! do not compile on stable Rust (they put `impl Trait` inside `FnOnce` bounds). This module is a
//! small, faithful re-creation that does compile: the same names and the same fluent shape
//! (setters that take and return `self`, an async terminal method, a stream of results), with
//! plain `Result`s instead of result-matching closures.
//!
//! Nothing here knows about a particular engine or model. Engines implement the traits in
//! [`traits`]; applications depend only on this module, so they can swap engines.
//!
//! # What is here
//!
//! - Entry points and engines: [`FluentVoice`], [`TtsEngine`], [`SttEngine`].
//! - Text-to-speech: [`TtsConversationBuilder`] → [`TtsConversation`] → a stream of
//!   [`AudioChunk`]s, spoken by [`Speaker`]s (built with [`SpeakerBuilder`], voiced by a
//!   [`VoiceId`]).
//! - Speech-to-text: [`SttConversationBuilder`] (fed a [`SpeechSource`]) →
//!   [`SttConversation`] → a stream of [`TranscriptionSegment`]s, or one string via
//!   [`SttConversation::collect`].
//! - Shared: [`Language`], and one error type, [`VoiceError`].
//!
//! ```rust
//! use fluent_voice_kyutai::voice::{Language, Speaker, SpeechSource};
//!
//! // What a caller hands to the builders.
//! let line = Speaker::speaker("Narrator")
//!     .with_voice("some/voice.wav")
//!     .speak("Hello.")
//!     .language(Language::English)
//!     .build();
//! let audio = SpeechSource::from_pcm(vec![0.0; 24_000], 24_000, 1);
//! assert_eq!(line.text, "Hello.");
//! assert!(audio.validate().is_ok());
//! ```
//!
//! See [`traits`] for a complete toy engine.

pub mod audio_chunk;
pub mod error;
pub mod language;
pub mod speaker;
pub mod speech_source;
pub mod traits;
pub mod transcript;

pub use audio_chunk::AudioChunk;
pub use error::{BoxError, VoiceError};
pub use language::{Language, ParseLanguageError};
pub use speaker::{Speaker, SpeakerBuilder, VoiceId};
pub use speech_source::{PcmFrameStream, SpeechSource};
pub use traits::{
    BoxAudioStream, BoxSegmentStream, FluentVoice, SttConversation, SttConversationBuilder,
    SttEngine, TtsConversation, TtsConversationBuilder, TtsEngine,
};
pub use transcript::{PhraseGrouper, Transcript, TranscriptEvent, TranscriptionSegment};
