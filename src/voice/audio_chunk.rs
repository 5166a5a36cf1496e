//! [`AudioChunk`]: one piece of synthesized audio, as a text-to-speech stream yields it.

use std::fmt;

/// A piece of mono PCM audio produced by a text-to-speech conversation.
///
/// Chunks arrive while the model is still generating, so each one says where it sits in the
/// utterance (`start_ms`), how long it lasts (`duration_ms`), optionally which text it voices,
/// and whether it is the last one (`is_final`), so a player can start before synthesis ends.
///
/// Samples are `f32` in `[-1.0, 1.0]` because that is what neural codecs emit and what audio
/// APIs accept; [`to_pcm16_bytes`](Self::to_pcm16_bytes) gives the 16-bit form that WAV files
/// and most network protocols want.
///
/// `duration_ms` is always derived from the number of samples and the sample rate (rounded
/// down to whole milliseconds), so it cannot disagree with the audio. The fields are public for
/// reading and pattern matching; build chunks with [`new`](Self::new) and the `with_*` setters
/// so that the derived values stay consistent.
///
/// ```rust
/// use fluent_voice_kyutai::voice::AudioChunk;
///
/// let chunk = AudioChunk::new(vec![0.0; 1920], 24_000)
///     .with_start_ms(80)
///     .with_text("Hello")
///     .with_final(true);
/// assert_eq!(chunk.duration_ms, 80);
/// assert_eq!(chunk.end_ms(), 160);
/// assert_eq!(chunk.text(), Some("Hello"));
/// assert!(chunk.is_final);
/// assert_eq!(chunk.to_pcm16_bytes().len(), 2 * 1920);
/// ```
#[derive(Clone, PartialEq)]
pub struct AudioChunk {
    /// Mono PCM samples in `[-1.0, 1.0]`.
    pub samples: Vec<f32>,
    /// Samples per second.
    pub sample_rate: u32,
    /// Where this chunk starts, in milliseconds from the start of the utterance.
    pub start_ms: u64,
    /// How long this chunk lasts, in whole milliseconds (derived from the samples).
    pub duration_ms: u64,
    /// The text this chunk voices (the spoken words only), when the engine knows it.
    pub text: Option<String>,
    /// Timed words: those whose start and end became known while this chunk was made, each
    /// reported once, in order. Their times are in the conversation's audio and may lie ahead
    /// of this chunk (a text-to-speech model decides words before it voices them).
    pub words: Vec<crate::voice::TranscriptionSegment>,
    /// Who speaks this chunk: the name of the [`Speaker`](crate::voice::Speaker) whose line it
    /// voices, when the engine knows it.
    pub speaker: Option<String>,
    /// Whether this is the last chunk of the utterance.
    pub is_final: bool,
}

impl AudioChunk {
    /// A chunk of `samples` at `sample_rate`, starting at 0 ms, without text, not final.
    ///
    /// A `sample_rate` of 0 gives a duration of 0 ms rather than a division by zero.
    pub fn new(samples: Vec<f32>, sample_rate: u32) -> Self {
        let duration_ms = Self::samples_to_ms(samples.len() as u64, sample_rate);
        Self {
            samples,
            sample_rate,
            start_ms: 0,
            duration_ms,
            text: None,
            words: Vec::new(),
            speaker: None,
            is_final: false,
        }
    }

    /// How many whole milliseconds `samples` samples last at `sample_rate` (0 if the rate is 0).
    ///
    /// This is the one conversion the type uses everywhere, so positions computed from sample
    /// counts agree with durations.
    pub fn samples_to_ms(samples: u64, sample_rate: u32) -> u64 {
        if sample_rate == 0 {
            return 0;
        }
        (u128::from(samples) * 1000 / u128::from(sample_rate)) as u64
    }

    /// Sets where the chunk starts, in milliseconds.
    pub fn with_start_ms(mut self, start_ms: u64) -> Self {
        self.start_ms = start_ms;
        self
    }

    /// Sets where the chunk starts from the number of samples that came before it.
    ///
    /// Engines that count samples should prefer this to [`with_start_ms`](Self::with_start_ms):
    /// computing every start from the running sample count never accumulates rounding drift.
    pub fn with_start_sample(mut self, sample_offset: u64) -> Self {
        self.start_ms = Self::samples_to_ms(sample_offset, self.sample_rate);
        self
    }

    /// Sets the text this chunk voices.
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// Sets who speaks this chunk.
    pub fn with_speaker(mut self, speaker: impl Into<String>) -> Self {
        self.speaker = Some(speaker.into());
        self
    }

    /// Marks the chunk as the last (or not the last) of its utterance.
    pub fn with_final(mut self, is_final: bool) -> Self {
        self.is_final = is_final;
        self
    }

    /// The mono samples, in `[-1.0, 1.0]`.
    pub fn samples(&self) -> &[f32] {
        &self.samples
    }

    /// Takes the samples out of the chunk.
    pub fn into_samples(self) -> Vec<f32> {
        self.samples
    }

    /// Samples per second.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Where the chunk starts, in milliseconds.
    pub fn start_ms(&self) -> u64 {
        self.start_ms
    }

    /// How long the chunk lasts, in whole milliseconds.
    pub fn duration_ms(&self) -> u64 {
        self.duration_ms
    }

    /// Where the chunk ends, in milliseconds (`start_ms + duration_ms`).
    pub fn end_ms(&self) -> u64 {
        self.start_ms.saturating_add(self.duration_ms)
    }

    /// The text this chunk voices, when known.
    pub fn text(&self) -> Option<&str> {
        self.text.as_deref()
    }

    /// Who speaks this chunk, when known.
    pub fn speaker(&self) -> Option<&str> {
        self.speaker.as_deref()
    }

    /// Whether this is the last chunk of the utterance.
    pub fn is_final(&self) -> bool {
        self.is_final
    }

    /// The number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether the chunk holds no samples (a final marker may carry none).
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The samples as signed 16-bit PCM.
    ///
    /// Values outside `[-1.0, 1.0]` are clamped (a model may overshoot slightly; wrapping
    /// around would produce loud clicks), each sample is scaled by 32767 and rounded, and
    /// NaN becomes 0 (silence).
    ///
    /// ```rust
    /// use fluent_voice_kyutai::voice::AudioChunk;
    ///
    /// let chunk = AudioChunk::new(vec![0.0, 0.5, 1.0, -1.0, 2.0, f32::NAN], 16_000);
    /// assert_eq!(chunk.to_pcm16(), vec![0, 16384, 32767, -32767, 32767, 0]);
    /// ```
    pub fn to_pcm16(&self) -> Vec<i16> {
        self.samples.iter().map(|&s| f32_to_i16(s)).collect()
    }

    /// The samples as signed 16-bit little-endian PCM bytes (the layout of a WAV `data` chunk).
    ///
    /// Same conversion as [`to_pcm16`](Self::to_pcm16); two bytes per sample.
    ///
    /// ```rust
    /// use fluent_voice_kyutai::voice::AudioChunk;
    ///
    /// let chunk = AudioChunk::new(vec![1.0, -1.0], 24_000);
    /// assert_eq!(chunk.to_pcm16_bytes(), vec![0xFF, 0x7F, 0x01, 0x80]);
    /// ```
    pub fn to_pcm16_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.samples.len() * 2);
        for &s in &self.samples {
            bytes.extend_from_slice(&f32_to_i16(s).to_le_bytes());
        }
        bytes
    }
}

/// Clamps, scales by 32767 and rounds; NaN maps to 0 (`as` saturates and sends NaN to 0).
fn f32_to_i16(sample: f32) -> i16 {
    (sample.clamp(-1.0, 1.0) * 32767.0).round() as i16
}

/// Hand-written so that a chunk of a few thousand samples prints as one line, not a wall of
/// numbers.
impl fmt::Debug for AudioChunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AudioChunk")
            .field("samples", &format_args!("<{} samples>", self.samples.len()))
            .field("sample_rate", &self.sample_rate)
            .field("start_ms", &self.start_ms)
            .field("duration_ms", &self.duration_ms)
            .field("text", &self.text)
            .field("words", &self.words)
            .field("speaker", &self.speaker)
            .field("is_final", &self.is_final)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_derives_duration_from_samples() {
        let chunk = AudioChunk::new(vec![0.0; 24_000], 24_000);
        assert_eq!(chunk.duration_ms, 1000);
        assert_eq!(chunk.start_ms, 0);
        assert_eq!(chunk.text, None);
        assert!(!chunk.is_final);

        // Rounds down to whole milliseconds.
        assert_eq!(AudioChunk::new(vec![0.0; 47], 48_000).duration_ms, 0);
        assert_eq!(AudioChunk::new(vec![0.0; 48], 48_000).duration_ms, 1);
        assert_eq!(AudioChunk::new(vec![0.0; 100], 0).duration_ms, 0);
    }

    #[test]
    fn samples_to_ms_does_not_overflow() {
        assert_eq!(
            AudioChunk::samples_to_ms(u64::MAX / 10, 1000),
            u64::MAX / 10
        );
    }

    #[test]
    fn setters_round_trip() {
        let chunk = AudioChunk::new(vec![0.25; 240], 24_000)
            .with_start_sample(2400)
            .with_text("hi")
            .with_final(true);
        assert_eq!(chunk.start_ms(), 100);
        assert_eq!(chunk.duration_ms(), 10);
        assert_eq!(chunk.end_ms(), 110);
        assert_eq!(chunk.text(), Some("hi"));
        assert!(chunk.is_final());
        assert_eq!(chunk.sample_rate(), 24_000);
        assert_eq!(chunk.len(), 240);
        assert!(!chunk.is_empty());
        assert_eq!(chunk.clone().into_samples(), vec![0.25; 240]);
        assert_eq!(chunk.with_start_ms(7).start_ms, 7);
    }

    #[test]
    fn pcm16_clamps_and_is_little_endian() {
        let chunk = AudioChunk::new(vec![0.0, 1.0, -1.0, 1.5, -3.0, 0.5, f32::NAN], 8_000);
        assert_eq!(
            chunk.to_pcm16(),
            vec![0, 32767, -32767, 32767, -32767, 16384, 0]
        );
        let bytes = chunk.to_pcm16_bytes();
        assert_eq!(bytes.len(), 14);
        assert_eq!(&bytes[0..2], &[0x00, 0x00]);
        assert_eq!(&bytes[2..4], &[0xFF, 0x7F]); // 32767 little-endian
        assert_eq!(&bytes[4..6], &[0x01, 0x80]); // -32767 little-endian
        assert_eq!(&bytes[6..8], &[0xFF, 0x7F]); // clamped
        assert_eq!(&bytes[8..10], &[0x01, 0x80]); // clamped
        assert_eq!(i16::from_le_bytes([bytes[10], bytes[11]]), 16384);
        assert_eq!(&bytes[12..14], &[0x00, 0x00]); // NaN is silence
    }

    #[test]
    fn debug_is_short() {
        let text = format!("{:?}", AudioChunk::new(vec![0.0; 5000], 24_000));
        assert!(text.contains("<5000 samples>"), "{text}");
        assert!(text.len() < 200, "{text}");
    }
}
