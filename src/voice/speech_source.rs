//! [`SpeechSource`]: the audio a speech-to-text conversation listens to.

use std::fmt;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

use super::error::VoiceError;

/// A stream of interleaved PCM frames, as [`SpeechSource::Stream`] holds it.
pub type PcmFrameStream = Pin<Box<dyn Stream<Item = Vec<f32>> + Send + 'static>>;

/// Where the audio to transcribe comes from.
///
/// Applications hold audio in very different forms (a file on disk, an upload in memory,
/// decoded samples, a live microphone), and each form has a cheapest path into a recogniser.
/// One enum lets the engine take the best path for each instead of forcing every caller through
/// a temporary file.
///
/// PCM samples are `f32` in `[-1.0, 1.0]`, interleaved when there are several channels (the
/// engine mixes down and resamples as its model needs).
///
/// ```rust
/// use fluent_voice_kyutai::voice::SpeechSource;
///
/// let file = SpeechSource::from_file("meeting.wav");
/// assert!(matches!(file, SpeechSource::File(ref p) if p.ends_with("meeting.wav")));
///
/// let upload = SpeechSource::from_bytes_with_format(vec![b'R', b'I', b'F', b'F'], "wav");
/// assert_eq!(upload.format_hint(), Some("wav"));
///
/// let pcm = SpeechSource::from_pcm(vec![0.0; 32_000], 16_000, 2);
/// assert_eq!((pcm.sample_rate(), pcm.channels()), (Some(16_000), Some(2)));
/// assert!(pcm.validate().is_ok());
///
/// let live = SpeechSource::from_stream(futures::stream::iter(vec![vec![0.0f32; 480]]), 24_000, 1);
/// assert_eq!(format!("{live:?}"), "Stream { frames: <stream>, sample_rate: 24000, channels: 1 }");
/// ```
pub enum SpeechSource {
    /// An audio file on disk; the engine reads and decodes it.
    File(PathBuf),
    /// The bytes of an encoded audio file (WAV, ...) held in memory.
    Bytes {
        /// The file's bytes.
        data: Bytes,
        /// The container or codec (`"wav"`, `"mp3"`), when the caller knows it; engines may
        /// sniff the bytes instead.
        format_hint: Option<String>,
    },
    /// Decoded PCM samples, all in memory.
    Pcm {
        /// Interleaved samples in `[-1.0, 1.0]`.
        samples: Vec<f32>,
        /// Samples per second, per channel.
        sample_rate: u32,
        /// Number of interleaved channels.
        channels: u16,
    },
    /// PCM frames arriving over time (a microphone, a network call). The stream ending ends
    /// the audio.
    Stream {
        /// Frames of interleaved samples in `[-1.0, 1.0]`; frames may have any length that is
        /// a multiple of `channels`.
        frames: PcmFrameStream,
        /// Samples per second, per channel.
        sample_rate: u32,
        /// Number of interleaved channels.
        channels: u16,
    },
}

impl SpeechSource {
    /// Audio from a file on disk.
    pub fn from_file(path: impl Into<PathBuf>) -> Self {
        Self::File(path.into())
    }

    /// Audio from the bytes of an encoded file; the format is left for the engine to detect.
    pub fn from_bytes(data: impl Into<Bytes>) -> Self {
        Self::Bytes {
            data: data.into(),
            format_hint: None,
        }
    }

    /// Audio from the bytes of an encoded file whose format (`"wav"`, ...) is known.
    pub fn from_bytes_with_format(data: impl Into<Bytes>, format: impl Into<String>) -> Self {
        Self::Bytes {
            data: data.into(),
            format_hint: Some(format.into()),
        }
    }

    /// Audio from interleaved PCM samples.
    pub fn from_pcm(samples: Vec<f32>, sample_rate: u32, channels: u16) -> Self {
        Self::Pcm {
            samples,
            sample_rate,
            channels,
        }
    }

    /// Audio from a stream of interleaved PCM frames.
    pub fn from_stream(
        frames: impl Stream<Item = Vec<f32>> + Send + 'static,
        sample_rate: u32,
        channels: u16,
    ) -> Self {
        Self::Stream {
            frames: Box::pin(frames),
            sample_rate,
            channels,
        }
    }

    /// The file's path, for [`File`](Self::File).
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::File(path) => Some(path),
            _ => None,
        }
    }

    /// The format hint, for [`Bytes`](Self::Bytes) with one.
    pub fn format_hint(&self) -> Option<&str> {
        match self {
            Self::Bytes { format_hint, .. } => format_hint.as_deref(),
            _ => None,
        }
    }

    /// The sample rate, for the PCM forms (files and bytes carry theirs inside).
    pub fn sample_rate(&self) -> Option<u32> {
        match self {
            Self::Pcm { sample_rate, .. } | Self::Stream { sample_rate, .. } => Some(*sample_rate),
            _ => None,
        }
    }

    /// The channel count, for the PCM forms.
    pub fn channels(&self) -> Option<u16> {
        match self {
            Self::Pcm { channels, .. } | Self::Stream { channels, .. } => Some(*channels),
            _ => None,
        }
    }

    /// Whether the audio arrives over time rather than being all available now.
    pub fn is_stream(&self) -> bool {
        matches!(self, Self::Stream { .. })
    }

    /// Checks what can be checked without decoding: a non-zero sample rate and channel count,
    /// whole frames of in-memory PCM, and non-empty bytes.
    ///
    /// Engines call this before starting work so that a bad source fails at `listen()` with a
    /// clear [`VoiceError::InvalidInput`] rather than as an odd transcription error later.
    /// Files are not opened here (that is I/O, done by the engine).
    pub fn validate(&self) -> Result<(), VoiceError> {
        match self {
            Self::File(path) if path.as_os_str().is_empty() => Err(VoiceError::InvalidInput(
                "The audio file path is empty.".into(),
            )),
            Self::File(_) => Ok(()),
            Self::Bytes { data, .. } if data.is_empty() => Err(VoiceError::InvalidInput(
                "The audio data is empty (0 bytes).".into(),
            )),
            Self::Bytes { .. } => Ok(()),
            Self::Pcm {
                samples,
                sample_rate,
                channels,
            } => {
                check_format(*sample_rate, *channels)?;
                if samples.len() % usize::from(*channels) != 0 {
                    return Err(VoiceError::InvalidInput(format!(
                        "The PCM audio has {} samples, which is not a whole number of \
                         {channels}-channel frames.",
                        samples.len()
                    )));
                }
                if let Some(index) = samples.iter().position(|x| !x.is_finite()) {
                    return Err(VoiceError::InvalidInput(format!(
                        "The PCM audio holds a sample that is not a finite number ({} at \
                         index {index}); samples must be finite, normally in [-1, 1].",
                        samples[index]
                    )));
                }
                Ok(())
            }
            Self::Stream {
                sample_rate,
                channels,
                ..
            } => check_format(*sample_rate, *channels),
        }
    }
}

fn check_format(sample_rate: u32, channels: u16) -> Result<(), VoiceError> {
    if sample_rate == 0 {
        return Err(VoiceError::InvalidInput(
            "The PCM audio has a sample rate of 0 Hz.".into(),
        ));
    }
    if channels == 0 {
        return Err(VoiceError::InvalidInput(
            "The PCM audio has 0 channels.".into(),
        ));
    }
    Ok(())
}

/// Hand-written: the stream cannot be printed, and printing every sample or byte would drown
/// the log line, so payloads are summarised by their size.
impl fmt::Debug for SpeechSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Bytes { data, format_hint } => f
                .debug_struct("Bytes")
                .field("data", &format_args!("<{} bytes>", data.len()))
                .field("format_hint", format_hint)
                .finish(),
            Self::Pcm {
                samples,
                sample_rate,
                channels,
            } => f
                .debug_struct("Pcm")
                .field("samples", &format_args!("<{} samples>", samples.len()))
                .field("sample_rate", sample_rate)
                .field("channels", channels)
                .finish(),
            Self::Stream {
                sample_rate,
                channels,
                ..
            } => f
                .debug_struct("Stream")
                .field("frames", &format_args!("<stream>"))
                .field("sample_rate", sample_rate)
                .field("channels", channels)
                .finish(),
        }
    }
}

impl From<PathBuf> for SpeechSource {
    fn from(path: PathBuf) -> Self {
        Self::File(path)
    }
}

impl From<&Path> for SpeechSource {
    fn from(path: &Path) -> Self {
        Self::File(path.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn assert_send<T: Send>() {}

    #[test]
    fn is_send() {
        assert_send::<SpeechSource>();
    }

    #[test]
    fn constructors_pick_the_right_variant() {
        let file = SpeechSource::from_file("a/b.wav");
        assert_eq!(file.path(), Some(Path::new("a/b.wav")));
        assert_eq!(file.sample_rate(), None);
        assert!(!file.is_stream());

        match SpeechSource::from_bytes(vec![1u8, 2, 3]) {
            SpeechSource::Bytes { data, format_hint } => {
                assert_eq!(&data[..], &[1, 2, 3]);
                assert_eq!(format_hint, None);
            }
            other => panic!("unexpected {other:?}"),
        }
        let hinted = SpeechSource::from_bytes_with_format(Bytes::from_static(b"ID3"), "mp3");
        assert_eq!(hinted.format_hint(), Some("mp3"));

        match SpeechSource::from_pcm(vec![0.5, -0.5], 8_000, 1) {
            SpeechSource::Pcm {
                samples,
                sample_rate,
                channels,
            } => assert_eq!(
                (samples, sample_rate, channels),
                (vec![0.5, -0.5], 8_000, 1)
            ),
            other => panic!("unexpected {other:?}"),
        }

        let from_path: SpeechSource = PathBuf::from("x.wav").into();
        assert_eq!(from_path.path(), Some(Path::new("x.wav")));
    }

    #[test]
    fn stream_source_yields_its_frames() {
        let source = SpeechSource::from_stream(
            futures::stream::iter(vec![vec![0.1, 0.2], vec![0.3]]),
            16_000,
            1,
        );
        assert!(source.is_stream());
        assert_eq!(source.channels(), Some(1));
        let SpeechSource::Stream { frames, .. } = source else {
            panic!("not a stream");
        };
        let frames: Vec<Vec<f32>> = futures::executor::block_on(frames.collect());
        assert_eq!(frames, vec![vec![0.1, 0.2], vec![0.3]]);
    }

    #[test]
    fn debug_summarises_payloads() {
        let stream = SpeechSource::from_stream(futures::stream::empty(), 24_000, 2);
        let text = format!("{stream:?}");
        assert!(text.contains("<stream>"), "{text}");
        assert!(text.contains("24000"), "{text}");

        assert_eq!(
            format!("{:?}", SpeechSource::from_pcm(vec![0.0; 10], 16_000, 1)),
            "Pcm { samples: <10 samples>, sample_rate: 16000, channels: 1 }"
        );
        assert_eq!(
            format!("{:?}", SpeechSource::from_bytes(vec![0u8; 44])),
            "Bytes { data: <44 bytes>, format_hint: None }"
        );
        assert_eq!(
            format!("{:?}", SpeechSource::from_file("m.wav")),
            "File(\"m.wav\")"
        );
    }

    #[test]
    fn validate_rejects_unusable_sources() {
        let bad = [
            SpeechSource::from_file(""),
            SpeechSource::from_bytes(Vec::<u8>::new()),
            SpeechSource::from_pcm(vec![0.0; 4], 0, 1),
            SpeechSource::from_pcm(vec![0.0; 4], 16_000, 0),
            SpeechSource::from_pcm(vec![0.0; 3], 16_000, 2),
            SpeechSource::from_stream(futures::stream::empty(), 0, 1),
        ];
        for source in bad {
            let err = source.validate().unwrap_err();
            assert!(
                matches!(err, VoiceError::InvalidInput(_)),
                "{source:?}: {err}"
            );
        }
        let good = [
            SpeechSource::from_file("a.wav"),
            SpeechSource::from_bytes(vec![0u8]),
            SpeechSource::from_pcm(vec![0.0; 4], 16_000, 2),
            SpeechSource::from_pcm(Vec::new(), 16_000, 1),
            SpeechSource::from_stream(futures::stream::empty(), 48_000, 2),
        ];
        for source in good {
            assert!(source.validate().is_ok(), "{source:?}");
        }
    }
}
