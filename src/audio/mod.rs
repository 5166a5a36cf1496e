//! Audio input and output: decoding files, mixing down to mono, resampling to the 24 kHz of
//! Kyutai's models, and writing WAV files.
//!
//! Everything works incrementally: the decoder hands out one packet at a time and
//! [`MonoConverter`] keeps one chunk, so long files never sit whole in memory.

pub(crate) mod decode;
pub(crate) mod resample;
pub(crate) mod resample_poly;
mod wav;

pub(crate) use decode::AudioDecoder;
pub(crate) use resample::{StreamResampler, downmix};
pub use wav::{WavFormat, streaming_wav_header, wav_bytes, write_wav};

/// Turns interleaved audio at any rate and channel count into mono audio at a target rate,
/// chunk by chunk.
///
/// ```
/// use fluent_voice_kyutai::audio::MonoConverter;
///
/// let mut conv = MonoConverter::new(48_000, 2, 24_000)?;
/// let mut out = conv.push(&vec![0.25; 2 * 4_800])?; // 0.1 s of stereo at 48 kHz
/// out.extend(conv.finish()?);
/// assert_eq!(out.len(), 2_400);
/// # Ok::<(), fluent_voice_kyutai::MoshiError>(())
/// ```
pub struct MonoConverter {
    channels: usize,
    resampler: StreamResampler,
}

impl MonoConverter {
    /// A converter from `sample_rate` Hz, `channels` interleaved channels, to mono `target` Hz.
    pub fn new(
        sample_rate: u32,
        channels: usize,
        target: u32,
    ) -> Result<MonoConverter, crate::MoshiError> {
        if channels == 0 {
            return Err(crate::MoshiError::InvalidInput(
                "the audio has 0 channels".into(),
            ));
        }
        Ok(MonoConverter {
            channels,
            resampler: StreamResampler::new(sample_rate, target)?,
        })
    }

    /// Converts interleaved samples (whole frames); returns what is ready.
    pub fn push(&mut self, interleaved: &[f32]) -> Result<Vec<f32>, crate::MoshiError> {
        if !interleaved.len().is_multiple_of(self.channels) {
            return Err(crate::MoshiError::InvalidInput(format!(
                "a chunk of {} samples is not a whole number of {}-channel frames",
                interleaved.len(),
                self.channels
            )));
        }
        self.resampler.push(&downmix(interleaved, self.channels))
    }

    /// Flushes the tail; call once at the end.
    pub fn finish(&mut self) -> Result<Vec<f32>, crate::MoshiError> {
        self.resampler.finish()
    }
}
