//! Writing WAV files (32-bit float or 16-bit PCM) with hound.

use std::io::Cursor;
use std::path::Path;

use crate::error::MoshiError;

fn spec(sample_rate: u32, channels: u16, float: bool) -> hound::WavSpec {
    hound::WavSpec {
        channels,
        sample_rate,
        bits_per_sample: if float { 32 } else { 16 },
        sample_format: if float {
            hound::SampleFormat::Float
        } else {
            hound::SampleFormat::Int
        },
    }
}

/// The bytes of a 32-bit float WAV file holding interleaved `samples`.
///
/// ```
/// let bytes = fluent_voice_kyutai::audio::wav_bytes(&[0.0, 0.5], 24_000, 1);
/// assert_eq!(&bytes[..4], b"RIFF");
/// ```
pub fn wav_bytes(samples: &[f32], sample_rate: u32, channels: u16) -> Vec<u8> {
    let mut cursor = Cursor::new(Vec::new());
    {
        let mut writer = hound::WavWriter::new(&mut cursor, spec(sample_rate, channels, true))
            .expect("writing a WAV header to memory cannot fail");
        for &s in samples {
            writer
                .write_sample(s)
                .expect("writing to memory cannot fail");
        }
        writer.finalize().expect("writing to memory cannot fail");
    }
    cursor.into_inner()
}

/// Writes interleaved `samples` to `path` as a WAV file: 32-bit float, or 16-bit PCM (values
/// clipped to [-1, 1]) when `pcm16` is true.
pub fn write_wav(
    path: &Path,
    samples: &[f32],
    sample_rate: u32,
    channels: u16,
    pcm16: bool,
) -> Result<(), MoshiError> {
    let io = |e: hound::Error| match e {
        hound::Error::IoError(e) => MoshiError::io("could not write the WAV file", path, e),
        other => MoshiError::InvalidInput(format!("could not write {}: {other}", path.display())),
    };
    let mut writer =
        hound::WavWriter::create(path, spec(sample_rate, channels, !pcm16)).map_err(io)?;
    for &s in samples {
        if pcm16 {
            let v = (s.clamp(-1.0, 1.0) * f32::from(i16::MAX)).round() as i16;
            writer.write_sample(v).map_err(io)?;
        } else {
            writer.write_sample(s).map_err(io)?;
        }
    }
    writer.finalize().map_err(io)
}
