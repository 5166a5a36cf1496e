//! [`TranscriptionSegment`]: a piece of recognised text with its place in the audio.

use serde::{Deserialize, Serialize};

/// A word or phrase recognised by a speech-to-text conversation, with when it was said.
///
/// Recognisers emit text incrementally, so a transcript is a stream of segments rather than one
/// string; the times (milliseconds from the start of the audio) let callers build subtitles or
/// align text with audio. How long a segment is (a word, a phrase) depends on the engine and on
/// whether word timestamps were asked for.
///
/// Serializable, so a transcript can be written as JSON as it is.
///
/// ```rust
/// use fluent_voice_kyutai::voice::TranscriptionSegment;
///
/// let seg = TranscriptionSegment::new("hello", 1_200, 1_450);
/// assert_eq!(seg.text(), "hello");
/// assert_eq!(seg.start_ms(), 1_200);
/// assert_eq!(seg.end_ms(), 1_450);
/// assert_eq!(seg.duration_ms(), 250);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TranscriptionSegment {
    /// The recognised text.
    pub text: String,
    /// When the segment starts, in milliseconds from the start of the audio.
    pub start_ms: u64,
    /// When the segment ends, in milliseconds from the start of the audio.
    pub end_ms: u64,
}

impl TranscriptionSegment {
    /// A segment of `text` spanning `start_ms..end_ms`.
    pub fn new(text: impl Into<String>, start_ms: u64, end_ms: u64) -> Self {
        Self {
            text: text.into(),
            start_ms,
            end_ms,
        }
    }

    /// The recognised text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Takes the text out.
    pub fn into_text(self) -> String {
        self.text
    }

    /// Start, in milliseconds.
    pub fn start_ms(&self) -> u64 {
        self.start_ms
    }

    /// End, in milliseconds.
    pub fn end_ms(&self) -> u64 {
        self.end_ms
    }

    /// `end_ms - start_ms`, or 0 if the end is before the start.
    pub fn duration_ms(&self) -> u64 {
        self.end_ms.saturating_sub(self.start_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_and_duration() {
        let seg = TranscriptionSegment::new(String::from("bonjour"), 10, 30);
        assert_eq!(seg.text(), "bonjour");
        assert_eq!(
            (seg.start_ms(), seg.end_ms(), seg.duration_ms()),
            (10, 30, 20)
        );
        assert_eq!(TranscriptionSegment::new("x", 30, 10).duration_ms(), 0);
        assert_eq!(seg.into_text(), "bonjour");
    }

    #[test]
    fn json_round_trip() {
        let seg = TranscriptionSegment::new("hi", 0, 80);
        let json = serde_json::to_string(&seg).unwrap();
        assert_eq!(json, r#"{"text":"hi","start_ms":0,"end_ms":80}"#);
        assert_eq!(
            serde_json::from_str::<TranscriptionSegment>(&json).unwrap(),
            seg
        );
    }
}
