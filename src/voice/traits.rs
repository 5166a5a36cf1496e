//! The fluent-voice traits: entry points, engines, builders and conversations.
//!
//! The flow is the same for both directions:
//!
//! 1. an entry point ([`FluentVoice::tts`] / [`FluentVoice::stt`], or an engine's
//!    [`TtsEngine::conversation`] / [`SttEngine::conversation`]) hands out a *builder*;
//! 2. builder setters take and return `self`, so a request is one expression;
//! 3. the terminal method ([`TtsConversationBuilder::synthesize`],
//!    [`SttConversationBuilder::listen`]) is async, because it may have to load a model, and
//!    returns a *conversation*;
//! 4. the conversation becomes a stream ([`TtsConversation::into_stream`],
//!    [`SttConversation::into_stream`]) that yields results as the model produces them.
//!
//! Builders and conversations are associated types rather than trait objects, so an engine's
//! concrete types (and their extra, engine-specific setters) stay visible to callers that name
//! the engine, while generic code can still be written against the traits. Futures and streams
//! are `Send` so that conversations can run on a multi-threaded runtime; streams are `Unpin +
//! 'static` so callers can `.next().await` them directly and move them into spawned tasks.
//!
//! Unlike upstream fluent-voice, no method takes a closure returning `impl Trait` (which does not
//! compile on stable Rust); results are plain `Result`s.
//!
//! A complete, if silly, engine, to show what implementing the traits takes:
//!
//! ```rust
//! use fluent_voice_kyutai::voice::*;
//! use futures::StreamExt;
//!
//! /// Speaks silence (10 ms per character) and "hears" a fixed sentence.
//! struct Toy;
//!
//! struct ToyTts { speakers: Vec<Speaker> }
//! struct ToyTtsConversation { chunks: Vec<AudioChunk> }
//! struct ToyStt { source: Option<SpeechSource> }
//! struct ToyTranscript;
//!
//! impl FluentVoice for Toy {
//!     fn tts() -> impl TtsConversationBuilder { ToyTts { speakers: Vec::new() } }
//!     fn stt() -> impl SttConversationBuilder { ToyStt { source: None } }
//! }
//!
//! impl TtsConversationBuilder for ToyTts {
//!     type Conversation = ToyTtsConversation;
//!     fn with_speaker(mut self, speaker: Speaker) -> Self { self.speakers.push(speaker); self }
//!     fn language(self, _: Language) -> Self { self }
//!     fn seed(self, _: u64) -> Self { self }
//!     fn temperature(self, _: f32) -> Self { self }
//!     fn cfg_coef(self, _: f32) -> Self { self }
//!     async fn synthesize(self) -> Result<ToyTtsConversation, VoiceError> {
//!         if self.speakers.is_empty() {
//!             return Err(VoiceError::invalid_input("No speaker was given anything to say."));
//!         }
//!         let (mut chunks, mut offset) = (Vec::new(), 0u64);
//!         for s in &self.speakers {
//!             let n = s.text.chars().count() * 160; // 10 ms at 16 kHz per character
//!             chunks.push(AudioChunk::new(vec![0.0; n], 16_000)
//!                 .with_start_sample(offset)
//!                 .with_text(s.text.clone()));
//!             offset += n as u64;
//!         }
//!         if let Some(last) = chunks.last_mut() { last.is_final = true; }
//!         Ok(ToyTtsConversation { chunks })
//!     }
//! }
//!
//! impl TtsConversation for ToyTtsConversation {
//!     type AudioStream = BoxAudioStream;
//!     fn into_stream(self) -> BoxAudioStream {
//!         futures::stream::iter(self.chunks.into_iter().map(Ok)).boxed()
//!     }
//! }
//!
//! impl SttConversationBuilder for ToyStt {
//!     type Conversation = ToyTranscript;
//!     fn with_source(mut self, source: SpeechSource) -> Self { self.source = Some(source); self }
//!     fn language_hint(self, _: Language) -> Self { self }
//!     fn word_timestamps(self, _: bool) -> Self { self }
//!     async fn listen(self) -> Result<ToyTranscript, VoiceError> {
//!         let source = self.source.ok_or_else(|| VoiceError::invalid_input("No audio source was given."))?;
//!         source.validate()?;
//!         Ok(ToyTranscript)
//!     }
//! }
//!
//! impl SttConversation for ToyTranscript {
//!     type SegmentStream = BoxSegmentStream;
//!     fn into_stream(self) -> BoxSegmentStream {
//!         futures::stream::iter([
//!             Ok(TranscriptionSegment::new("Hello", 0, 400)),
//!             Ok(TranscriptionSegment::new(" world.", 400, 900)),
//!         ]).boxed()
//!     }
//! }
//!
//! futures::executor::block_on(async {
//!     let conversation = Toy::tts()
//!         .with_speaker(Speaker::speaker("A").speak("Hi").build())
//!         .with_speaker(Speaker::speaker("B").speak("Hey!").build())
//!         .synthesize()
//!         .await?;
//!     let chunks: Vec<AudioChunk> = conversation.into_stream().map(Result::unwrap).collect().await;
//!     assert_eq!(chunks.len(), 2);
//!     assert_eq!((chunks[1].start_ms, chunks[1].duration_ms), (20, 40));
//!     assert!(chunks[1].is_final);
//!
//!     let text = Toy::stt()
//!         .with_source(SpeechSource::from_pcm(vec![0.0; 16_000], 16_000, 1))
//!         .listen()
//!         .await?
//!         .collect()
//!         .await?;
//!     assert_eq!(text, "Hello world.");
//!
//!     let err = Toy::stt().listen().await.err().unwrap();
//!     assert!(matches!(err, VoiceError::InvalidInput(_)));
//!     Ok::<(), VoiceError>(())
//! })?;
//! # Ok::<(), VoiceError>(())
//! ```

use std::future::Future;
use std::pin::Pin;

use futures::{Stream, StreamExt};

use super::audio_chunk::AudioChunk;
use super::error::VoiceError;
use super::language::Language;
use super::speaker::Speaker;
use super::speech_source::SpeechSource;
use super::transcript::TranscriptionSegment;

/// A boxed audio stream: a ready-made [`TtsConversation::AudioStream`] for engines that do not
/// want to name their stream type.
pub type BoxAudioStream = Pin<Box<dyn Stream<Item = Result<AudioChunk, VoiceError>> + Send>>;

/// A boxed segment stream: a ready-made [`SttConversation::SegmentStream`] for engines that do
/// not want to name their stream type.
pub type BoxSegmentStream =
    Pin<Box<dyn Stream<Item = Result<TranscriptionSegment, VoiceError>> + Send>>;

/// The zero-setup entry point: a type whose static methods start conversations.
///
/// Static, not `&self`, so that the simplest program needs no engine value at all
/// (`Provider::tts().with_speaker(..).synthesize().await`); the implementor keeps whatever
/// shared state it needs (loaded models) in a process-wide cell. Programs that want their own
/// instance use [`TtsEngine`] / [`SttEngine`] instead.
pub trait FluentVoice {
    /// A new text-to-speech conversation builder.
    fn tts() -> impl TtsConversationBuilder;

    /// A new speech-to-text conversation builder.
    fn stt() -> impl SttConversationBuilder;
}

/// A text-to-speech engine value that hands out conversation builders.
///
/// `Send + Sync` because one engine (and its loaded model) is meant to be shared, behind an
/// `Arc` or a `static`, by every conversation in the process.
pub trait TtsEngine: Send + Sync {
    /// The builder this engine hands out.
    type Conv: TtsConversationBuilder;

    /// A new conversation builder that uses this engine's model.
    fn conversation(&self) -> Self::Conv;
}

/// A speech-to-text engine value that hands out conversation builders.
///
/// `Send + Sync` for the same reason as [`TtsEngine`].
pub trait SttEngine: Send + Sync {
    /// The builder this engine hands out.
    type Conv: SttConversationBuilder;

    /// A new conversation builder that uses this engine's model.
    fn conversation(&self) -> Self::Conv;
}

/// Describes a text-to-speech request; [`synthesize`](Self::synthesize) starts it.
///
/// Setters only record; nothing is validated or loaded until `synthesize`, which is where
/// errors surface. Setting a value twice keeps the last one, except speakers, which accumulate.
pub trait TtsConversationBuilder: Sized + Send {
    /// The conversation `synthesize` produces.
    type Conversation: TtsConversation;

    /// Adds a speaker turn. Turns are spoken in the order they were added, so calling this
    /// several times scripts a dialogue.
    fn with_speaker(self, speaker: Speaker) -> Self;

    /// The default language for turns that do not set their own.
    fn language(self, language: Language) -> Self;

    /// Seeds the sampler, so that the same request gives the same audio.
    fn seed(self, seed: u64) -> Self;

    /// Sampling temperature; 0 means greedy (always the most likely token, deterministic).
    fn temperature(self, temperature: f32) -> Self;

    /// Classifier-free guidance coefficient: how strongly generation follows the conditioning
    /// (text, voice). Engines without guidance ignore it.
    fn cfg_coef(self, coef: f32) -> Self;

    /// Validates the request, makes sure the model is ready (which may mean loading it) and
    /// starts generating.
    fn synthesize(self) -> impl Future<Output = Result<Self::Conversation, VoiceError>> + Send;
}

/// A running text-to-speech conversation.
pub trait TtsConversation: Send {
    /// The audio, chunk by chunk, as it is generated. An `Err` item reports a failure midway;
    /// the stream ends after the chunk marked [`is_final`](AudioChunk::is_final) or after an
    /// error.
    type AudioStream: Stream<Item = Result<AudioChunk, VoiceError>> + Send + Unpin + 'static;

    /// Turns the conversation into its audio stream.
    fn into_stream(self) -> Self::AudioStream;
}

/// Describes a speech-to-text request; [`listen`](Self::listen) starts it.
///
/// As with [`TtsConversationBuilder`], setters only record; errors surface at `listen`.
pub trait SttConversationBuilder: Sized + Send {
    /// The conversation `listen` produces.
    type Conversation: SttConversation;

    /// The audio to transcribe. Required; setting it twice keeps the last one.
    fn with_source(self, source: SpeechSource) -> Self;

    /// The language the speaker is expected to use, for engines that can take a hint.
    fn language_hint(self, language: Language) -> Self;

    /// Whether to emit one segment per word with its timing (`true`), or let the engine group
    /// words into phrases (`false`).
    fn word_timestamps(self, enabled: bool) -> Self;

    /// Validates the request, makes sure the model is ready and starts recognising.
    fn listen(self) -> impl Future<Output = Result<Self::Conversation, VoiceError>> + Send;
}

/// A running speech-to-text conversation.
pub trait SttConversation: Send + Sized {
    /// The recognised segments, in order, as they are recognised. An `Err` item reports a
    /// failure midway.
    type SegmentStream: Stream<Item = Result<TranscriptionSegment, VoiceError>>
        + Send
        + Unpin
        + 'static;

    /// Turns the conversation into its segment stream.
    fn into_stream(self) -> Self::SegmentStream;

    /// Waits for the whole transcript and returns it as one string.
    ///
    /// Default: drains [`into_stream`](Self::into_stream), trims each segment's text, skips
    /// empty ones and joins the rest with single spaces. Segment texts often carry their own
    /// leading space (`" world"`); trimming first means the result never holds double spaces.
    /// The first error ends the collection and is returned.
    fn collect(self) -> impl Future<Output = Result<String, VoiceError>> + Send {
        let mut segments = self.into_stream();
        async move {
            let mut text = String::new();
            while let Some(segment) = segments.next().await {
                let segment = segment?;
                let piece = segment.text.trim();
                if piece.is_empty() {
                    continue;
                }
                if !text.is_empty() {
                    text.push(' ');
                }
                text.push_str(piece);
            }
            Ok(text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;

    /// A conversation that replays prepared segments.
    struct Replay(Vec<Result<TranscriptionSegment, VoiceError>>);

    impl SttConversation for Replay {
        type SegmentStream = BoxSegmentStream;
        fn into_stream(self) -> Self::SegmentStream {
            futures::stream::iter(self.0).boxed()
        }
    }

    fn seg(text: &str, start: u64, end: u64) -> Result<TranscriptionSegment, VoiceError> {
        Ok(TranscriptionSegment::new(text, start, end))
    }

    #[test]
    fn collect_joins_trimmed_segments_with_single_spaces() {
        let replay = Replay(vec![
            seg(" Hello", 0, 300),
            seg("  ", 300, 320),
            seg("world,", 320, 600),
            seg(" how are ", 600, 900),
            seg("", 900, 900),
            seg("you?\n", 900, 1200),
        ]);
        assert_eq!(
            block_on(replay.collect()).unwrap(),
            "Hello world, how are you?"
        );
    }

    #[test]
    fn collect_of_nothing_is_empty() {
        assert_eq!(block_on(Replay(Vec::new()).collect()).unwrap(), "");
    }

    #[test]
    fn collect_stops_at_the_first_error() {
        let replay = Replay(vec![
            seg("one", 0, 1),
            Err(VoiceError::transcription("The decoder failed.")),
            seg("two", 1, 2),
        ]);
        let err = block_on(replay.collect()).unwrap_err();
        assert!(matches!(err, VoiceError::Transcription { .. }));
    }

    #[test]
    fn collect_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let fut = Replay(vec![seg("a", 0, 1)]).collect();
        assert_send(&fut);
        assert_eq!(block_on(fut).unwrap(), "a");
    }

    /// A builder that records its settings, to check the trait shape is implementable with
    /// `async fn` and usable generically.
    #[derive(Default)]
    struct Recorder {
        speakers: Vec<Speaker>,
        seed: Option<u64>,
    }

    struct Done(Vec<Speaker>);

    impl TtsConversation for Done {
        type AudioStream = BoxAudioStream;
        fn into_stream(self) -> Self::AudioStream {
            let n = self.0.len();
            futures::stream::iter(self.0.into_iter().enumerate().map(move |(i, s)| {
                Ok(AudioChunk::new(vec![0.0; 10], 1000)
                    .with_text(s.text)
                    .with_final(i + 1 == n))
            }))
            .boxed()
        }
    }

    impl TtsConversationBuilder for Recorder {
        type Conversation = Done;
        fn with_speaker(mut self, speaker: Speaker) -> Self {
            self.speakers.push(speaker);
            self
        }
        fn language(self, _: Language) -> Self {
            self
        }
        fn seed(mut self, seed: u64) -> Self {
            self.seed = Some(seed);
            self
        }
        fn temperature(self, _: f32) -> Self {
            self
        }
        fn cfg_coef(self, _: f32) -> Self {
            self
        }
        async fn synthesize(self) -> Result<Done, VoiceError> {
            assert_eq!(self.seed, Some(7));
            Ok(Done(self.speakers))
        }
    }

    struct Engine;
    impl TtsEngine for Engine {
        type Conv = Recorder;
        fn conversation(&self) -> Recorder {
            Recorder::default()
        }
    }

    async fn speak_all<E: TtsEngine>(engine: &E, lines: &[&str]) -> Vec<AudioChunk> {
        let mut builder = engine.conversation().seed(7).temperature(0.0);
        for line in lines {
            builder = builder.with_speaker(Speaker::speaker("x").speak(*line).build());
        }
        let conversation = builder.synthesize().await.unwrap();
        conversation
            .into_stream()
            .map(|chunk| chunk.unwrap())
            .collect()
            .await
    }

    #[test]
    fn engines_are_usable_generically() {
        let chunks = block_on(speak_all(&Engine, &["a", "b"]));
        let texts: Vec<_> = chunks.iter().map(|c| c.text().unwrap()).collect();
        assert_eq!(texts, ["a", "b"]);
        assert!(!chunks[0].is_final && chunks[1].is_final);
    }
}
