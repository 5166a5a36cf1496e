//! [`VoiceError`]: the single error type of the fluent-voice surface.
//!
//! Every fallible operation of the surface (building a conversation, streaming audio or text)
//! returns this one type, so that an application can switch engines without rewriting its error
//! handling. Engines keep their own richer error types and convert into this one, passing their
//! error along as the [`source`](std::error::Error::source) so no detail is lost.

use std::error::Error as StdError;

/// A boxed error that may travel between threads: the `source` of a [`VoiceError`].
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What went wrong in a text-to-speech or speech-to-text operation.
///
/// The variants are generic on purpose: they say *which stage* failed (configuration, model,
/// input, synthesis, transcription, I/O), not which engine. Engine-specific detail travels in
/// the message and in [`source`](std::error::Error::source).
///
/// The type is `#[non_exhaustive]` so that new stages can be added without breaking `match`es
/// in other crates, and it is `Send + Sync + 'static` so it can cross `tokio::spawn` and be
/// boxed into `anyhow`-style errors. It is not `Clone`, because sources generally are not.
///
/// Messages read as sentences, because the CLI prints them as they are after `error:`.
///
/// ```rust
/// use fluent_voice_kyutai::voice::VoiceError;
/// use std::error::Error as _;
///
/// let cause = std::io::Error::new(std::io::ErrorKind::Other, "decoder ran out of frames");
/// let err = VoiceError::synthesis_caused_by("The audio decoder stopped early.", cause);
/// assert_eq!(err.to_string(), "Speech synthesis failed: The audio decoder stopped early.");
/// assert_eq!(err.source().unwrap().to_string(), "decoder ran out of frames");
///
/// let err = VoiceError::InvalidInput("The text to speak is empty.".into());
/// assert!(err.to_string().starts_with("The input was rejected"));
/// ```
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum VoiceError {
    /// The caller's configuration cannot work (a bad option value, conflicting settings,
    /// an engine configured too late). Fix the configuration; retrying will not help.
    #[error("The voice configuration is invalid: {0}")]
    Configuration(String),

    /// Something named does not exist: a model repository, a file in it, a voice.
    /// Check the name; retrying will not help.
    #[error("Not found: {message}")]
    NotFound {
        /// What was looked for, and where.
        message: String,
        /// The underlying failure, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// Offline mode is on and what is needed is not available locally.
    #[error("Offline and not available locally: {message}")]
    Offline {
        /// What is missing, and how to make it available.
        message: String,
        /// The underlying failure, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// The network failed (after retries), or a server answered in a way that cannot be used.
    /// Retrying later may help.
    #[error("A network operation failed: {message}")]
    Network {
        /// What failed.
        message: String,
        /// The underlying failure, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// The engine is serving as many conversations as it can at once. Retry when one ends.
    #[error("The engine is busy: {message}")]
    Busy {
        /// How busy, and what to do.
        message: String,
        /// The underlying failure, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// A model could not be obtained or loaded for another reason (corrupt, wrong format, no
    /// access, no disk space). Retrying may help once the cause is fixed.
    #[error("The speech model is not available: {message}")]
    ModelUnavailable {
        /// What is missing and, where known, what to do about it.
        message: String,
        /// The underlying failure, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// The text, audio or parameters given to a conversation are unusable (empty text,
    /// unreadable audio, a zero sample rate, an unknown voice).
    #[error("The input was rejected: {0}")]
    InvalidInput(String),

    /// The engine does not support what was asked (a language, a feature such as word
    /// timestamps), although the request itself is well formed.
    #[error("This is not supported: {0}")]
    Unsupported(String),

    /// Text-to-speech failed while generating audio.
    #[error("Speech synthesis failed: {message}")]
    Synthesis {
        /// What failed.
        message: String,
        /// The underlying failure, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// Speech-to-text failed while decoding or recognising audio.
    #[error("Transcription failed: {message}")]
    Transcription {
        /// What failed.
        message: String,
        /// The underlying failure, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// Reading or writing a file or stream failed.
    #[error("An I/O operation failed: {0}")]
    Io(#[from] std::io::Error),

    /// Anything that fits no other variant.
    #[error("{message}")]
    Other {
        /// What failed.
        message: String,
        /// The underlying failure, if any.
        #[source]
        source: Option<BoxError>,
    },
}

/// The message and its causes, so that `fn main() -> Result<(), VoiceError>` prints something a
/// person can act on.
impl std::fmt::Debug for VoiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_with_causes(self, f)
    }
}

/// `error`'s message, then its chain of causes, one per line (as `anyhow` prints them).
pub(crate) fn write_with_causes(
    error: &dyn StdError,
    f: &mut std::fmt::Formatter<'_>,
) -> std::fmt::Result {
    let mut shown = error.to_string();
    f.write_str(&shown)?;
    let mut heading = false;
    let mut cause = error.source();
    while let Some(error) = cause {
        let text = error.to_string();
        // A cause whose words the message already holds (an engine error wrapped by the
        // surface) is not repeated.
        if !shown.contains(&text) {
            if !heading {
                f.write_str("\n\nCaused by:")?;
                heading = true;
            }
            write!(f, "\n    {text}")?;
        }
        shown = text;
        cause = error.source();
    }
    Ok(())
}

impl VoiceError {
    /// A [`VoiceError::Configuration`] with this message.
    pub fn configuration(message: impl Into<String>) -> Self {
        Self::Configuration(message.into())
    }

    /// A [`VoiceError::InvalidInput`] with this message.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::InvalidInput(message.into())
    }

    /// A [`VoiceError::Unsupported`] with this message.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::Unsupported(message.into())
    }

    /// A [`VoiceError::ModelUnavailable`] without a source.
    pub fn model_unavailable(message: impl Into<String>) -> Self {
        Self::ModelUnavailable {
            message: message.into(),
            source: None,
        }
    }

    /// A [`VoiceError::ModelUnavailable`] that keeps `source` as its cause.
    pub fn model_unavailable_caused_by(
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self::ModelUnavailable {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A [`VoiceError::Synthesis`] without a source.
    pub fn synthesis(message: impl Into<String>) -> Self {
        Self::Synthesis {
            message: message.into(),
            source: None,
        }
    }

    /// A [`VoiceError::Synthesis`] that keeps `source` as its cause.
    pub fn synthesis_caused_by(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Synthesis {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A [`VoiceError::Transcription`] without a source.
    pub fn transcription(message: impl Into<String>) -> Self {
        Self::Transcription {
            message: message.into(),
            source: None,
        }
    }

    /// A [`VoiceError::Transcription`] that keeps `source` as its cause.
    pub fn transcription_caused_by(
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self::Transcription {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A [`VoiceError::Other`] without a source.
    pub fn other(message: impl Into<String>) -> Self {
        Self::Other {
            message: message.into(),
            source: None,
        }
    }

    /// A [`VoiceError::Other`] that keeps `source` as its cause.
    pub fn other_caused_by(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Other {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync_static<T: Send + Sync + 'static>() {}

    #[test]
    fn is_send_sync_static() {
        assert_send_sync_static::<VoiceError>();
    }

    #[test]
    fn messages_name_the_stage() {
        assert_eq!(
            VoiceError::configuration("The seed was set twice.").to_string(),
            "The voice configuration is invalid: The seed was set twice."
        );
        assert_eq!(
            VoiceError::model_unavailable("Nothing is cached and the machine is offline.")
                .to_string(),
            "The speech model is not available: Nothing is cached and the machine is offline."
        );
        assert_eq!(
            VoiceError::transcription("The decoder failed.").to_string(),
            "Transcription failed: The decoder failed."
        );
        assert_eq!(
            VoiceError::unsupported("Word timestamps are not available.").to_string(),
            "This is not supported: Word timestamps are not available."
        );
        assert_eq!(
            VoiceError::other("Something odd.").to_string(),
            "Something odd."
        );
    }

    #[test]
    fn sources_are_kept() {
        let err = VoiceError::model_unavailable_caused_by("Download failed.", "connection reset");
        assert_eq!(err.source().unwrap().to_string(), "connection reset");

        let err = VoiceError::transcription("No cause.");
        assert!(err.source().is_none());

        let err = VoiceError::other_caused_by(
            "Wrapped.",
            std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        );
        assert_eq!(err.source().unwrap().to_string(), "gone");
    }

    #[test]
    fn io_errors_convert_with_question_mark() {
        fn open() -> Result<(), VoiceError> {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such file",
            ))?;
            Ok(())
        }
        let err = open().unwrap_err();
        assert!(matches!(err, VoiceError::Io(_)));
        assert_eq!(err.to_string(), "An I/O operation failed: no such file");
        assert_eq!(err.source().unwrap().to_string(), "no such file");
    }
}
