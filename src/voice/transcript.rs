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

/// What a speech-to-text conversation reports as it listens: words, and, for engines that
/// estimate it, whether the speaker is pausing and when their turn ends (what a voice agent needs
/// to know when to answer).
///
/// Serializable: `{"Word": {...}}`, `{"VoiceActivity": {...}}`, `{"EndOfTurn": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TranscriptEvent {
    /// A recognised word, with its times.
    Word(TranscriptionSegment),
    /// A word has started: its text and start time are known, its end not yet (the matching
    /// [`Word`](Self::Word), with both times, follows once it ends). Engines send it only when
    /// asked to (Kyutai's: `word_start_events(true)`); a streaming server uses it to send each
    /// word as soon as it is recognised, as Kyutai's server sends `Word` before `EndWord`.
    WordStarted {
        /// The word as recognised.
        text: String,
        /// When it starts in the audio, in milliseconds.
        start_ms: u64,
    },
    /// One model step's voice-activity estimate, for the audio heard up to `time_ms`:
    /// `pause_probabilities[k]` is the engine's probability that the speaker is pausing, for its
    /// `k`-th horizon (Kyutai's 1B STT has four).
    VoiceActivity {
        /// How much of the audio has been heard, in milliseconds.
        time_ms: u64,
        /// One probability per horizon, in `[0, 1]`.
        pause_probabilities: Vec<f32>,
    },
    /// The speaker has finished their turn, by the engine's end-of-turn rule, having heard the
    /// audio up to `time_ms`.
    EndOfTurn {
        /// How much of the audio had been heard when the turn ended, in milliseconds.
        time_ms: u64,
    },
    /// How far the transcript is settled: the engine has heard the audio up to `time_ms` plus
    /// its own delay, so everything said before `time_ms` has been decided, and the words that
    /// ended before it have been reported. Engines send it only when asked to (Kyutai's: once
    /// per model step); a server uses it to answer "all audio up to here is transcribed".
    Progress {
        /// The audio transcribed so far, in milliseconds.
        time_ms: u64,
    },
}

/// A whole transcript: the text, its words with their times, and the length of the audio.
///
/// The shape `kyutai transcribe --format json` prints; serializable as it is.
///
/// ```rust
/// use fluent_voice_kyutai::voice::{Transcript, TranscriptionSegment};
///
/// let transcript = Transcript::from_words(
///     vec![
///         TranscriptionSegment::new("Hello", 100, 400),
///         TranscriptionSegment::new("world.", 450, 900),
///         TranscriptionSegment::new("Again", 2_000, 2_300),
///     ],
///     2_500,
/// );
/// assert_eq!(transcript.text, "Hello world. Again");
/// assert_eq!(transcript.phrases().len(), 2); // a pause of over 700 ms starts a phrase
/// assert!(transcript.to_srt().starts_with("1\n00:00:00,100 --> 00:00:00,900\nHello world.\n"));
/// let json = serde_json::to_value(&transcript).unwrap();
/// assert_eq!(json["duration_ms"], 2_500);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Transcript {
    /// The words joined by spaces.
    pub text: String,
    /// Each word with its start and end, in milliseconds from the start of the audio.
    pub words: Vec<TranscriptionSegment>,
    /// The length of the audio, in milliseconds.
    pub duration_ms: u64,
    /// When the speaker's turns ended (how much audio had been heard, in milliseconds), for
    /// engines that detect it; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_of_turn_ms: Option<Vec<u64>>,
}

impl Transcript {
    /// The transcript of `words` (in order) over `duration_ms` of audio.
    pub fn from_words(words: Vec<TranscriptionSegment>, duration_ms: u64) -> Transcript {
        let text = words
            .iter()
            .map(|w| w.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        Transcript {
            text,
            words,
            duration_ms,
            end_of_turn_ms: None,
        }
    }

    /// The words grouped into phrases, as subtitles show them ([`PhraseGrouper`]'s rule).
    pub fn phrases(&self) -> Vec<TranscriptionSegment> {
        let mut grouper = PhraseGrouper::default();
        let mut phrases: Vec<_> = self
            .words
            .iter()
            .filter_map(|w| grouper.push(w.clone()))
            .collect();
        phrases.extend(grouper.finish());
        phrases
    }

    /// SubRip (`.srt`) subtitles: one cue per phrase.
    pub fn to_srt(&self) -> String {
        let mut out = String::new();
        for (i, cue) in self.phrases().iter().enumerate() {
            out.push_str(&format!("{}\n{}\n\n", i + 1, cue_lines(cue, ',')));
        }
        out
    }

    /// WebVTT (`.vtt`) subtitles: the same cues as [`to_srt`](Self::to_srt), in WebVTT's
    /// syntax.
    ///
    /// ```
    /// use fluent_voice_kyutai::voice::{Transcript, TranscriptionSegment};
    ///
    /// let transcript = Transcript::from_words(vec![TranscriptionSegment::new("Hi.", 100, 400)], 500);
    /// assert_eq!(transcript.to_vtt(), "WEBVTT\n\n00:00:00.100 --> 00:00:00.400\nHi.\n\n");
    /// ```
    pub fn to_vtt(&self) -> String {
        let mut out = String::from("WEBVTT\n\n");
        for cue in self.phrases() {
            out.push_str(&format!("{}\n\n", cue_lines(&cue, '.')));
        }
        out
    }
}

/// A subtitle cue's timing line and text; `separator` comes before the milliseconds (`,` in
/// SubRip, `.` in WebVTT).
fn cue_lines(cue: &TranscriptionSegment, separator: char) -> String {
    let stamp = |ms: u64| {
        format!(
            "{:02}:{:02}:{:02}{separator}{:03}",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000
        )
    };
    format!(
        "{} --> {}\n{}",
        stamp(cue.start_ms),
        stamp(cue.end_ms.max(cue.start_ms)),
        cue.text
    )
}

/// Groups timed words into phrases as they arrive: a phrase ends before a word that follows a
/// pause of more than 700 ms, that would stretch it past 4 s, or that would make it longer than
/// 8 words (limits that keep a subtitle readable).
#[derive(Debug, Default)]
pub struct PhraseGrouper {
    words: Vec<TranscriptionSegment>,
}

impl PhraseGrouper {
    /// Words per phrase at most.
    pub const MAX_WORDS: usize = 8;
    /// A longer silence between two words starts a new phrase.
    pub const MAX_PAUSE_MS: u64 = 700;
    /// A phrase lasts at most this long.
    pub const MAX_SPAN_MS: u64 = 4_000;

    /// Adds a word; returns the phrase it closed, if it starts a new one.
    pub fn push(&mut self, word: TranscriptionSegment) -> Option<TranscriptionSegment> {
        let closes = match (self.words.first(), self.words.last()) {
            (Some(first), Some(last)) => {
                self.words.len() >= Self::MAX_WORDS
                    || word.start_ms.saturating_sub(last.end_ms) > Self::MAX_PAUSE_MS
                    || word.end_ms.saturating_sub(first.start_ms) > Self::MAX_SPAN_MS
            }
            _ => false,
        };
        let closed = if closes { self.finish() } else { None };
        self.words.push(word);
        closed
    }

    /// The phrase in progress, if any; the grouper starts over.
    pub fn finish(&mut self) -> Option<TranscriptionSegment> {
        let words = std::mem::take(&mut self.words);
        let (first, last) = (words.first()?, words.last()?);
        let text: Vec<&str> = words.iter().map(|w| w.text.as_str()).collect();
        Some(TranscriptionSegment::new(
            text.join(" "),
            first.start_ms,
            last.end_ms,
        ))
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
