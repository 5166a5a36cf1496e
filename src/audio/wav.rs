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

/// How samples are stored in a WAV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WavFormat {
    /// 16-bit integer PCM (values clipped to [-1, 1]): what every player reads.
    #[default]
    Pcm16,
    /// 32-bit float: the samples exactly as the model made them.
    Float32,
}

/// Writes interleaved `samples` (`channels` of them per frame; 1 for the models' mono audio)
/// to `path` as a WAV file.
///
/// The file is written beside its destination and renamed into place once complete, so a
/// failure never leaves a truncated file or destroys an existing one.
///
/// ```no_run
/// use fluent_voice_kyutai::audio::{WavFormat, write_wav};
///
/// let samples = vec![0.0f32; 24_000]; // one second of silence at 24 kHz
/// write_wav("silence.wav", &samples, 24_000, 1, WavFormat::Pcm16)?;
/// # Ok::<(), fluent_voice_kyutai::MoshiError>(())
/// ```
pub fn write_wav(
    path: impl AsRef<Path>,
    samples: &[f32],
    sample_rate: u32,
    channels: u16,
    format: WavFormat,
) -> Result<(), MoshiError> {
    let path = path.as_ref();
    if sample_rate == 0 || channels == 0 || !samples.len().is_multiple_of(usize::from(channels)) {
        return Err(MoshiError::InvalidInput(format!(
            "cannot write {}: {} samples at {sample_rate} Hz in {channels} channel(s) is not audio \
             (the rate and channel count must be positive, the samples whole frames)",
            path.display(),
            samples.len()
        )));
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let io = |e: std::io::Error| MoshiError::io("could not write the WAV file", path, e);
    let mut builder = tempfile::Builder::new();
    builder.prefix(".wav-");
    // A temporary file is private (0600); the WAV is an ordinary output file.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let temp = builder.tempfile_in(dir).map_err(io)?;
    let hound_error = |e: hound::Error| match e {
        hound::Error::IoError(e) => io(e),
        other => MoshiError::InvalidInput(format!("could not write {}: {other}", path.display())),
    };
    {
        let float = format == WavFormat::Float32;
        let file = std::io::BufWriter::new(temp.as_file());
        let mut writer =
            hound::WavWriter::new(file, spec(sample_rate, channels, float)).map_err(hound_error)?;
        for &s in samples {
            match format {
                WavFormat::Pcm16 => {
                    let v = (s.clamp(-1.0, 1.0) * f32::from(i16::MAX)).round() as i16;
                    writer.write_sample(v).map_err(hound_error)?;
                }
                WavFormat::Float32 => writer.write_sample(s).map_err(hound_error)?,
            }
        }
        writer.finalize().map_err(hound_error)?;
    }
    temp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// The 44-byte header of a 16-bit PCM WAV whose length is not known when it starts (audio
/// written to a pipe as it is made): the RIFF and data sizes are `0xFFFFFFFF`, as streaming
/// tools write them and players (`aplay`, `ffplay`, `sox`) read them, up to the end of the
/// stream. Written here because `hound` needs a seekable file to write the sizes at the end.
///
/// ```
/// use fluent_voice_kyutai::audio::streaming_wav_header;
///
/// let header = streaming_wav_header(24_000, 1);
/// assert_eq!(&header[..4], b"RIFF");
/// assert_eq!(&header[36..40], b"data");
/// assert_eq!(u32::from_le_bytes(header[24..28].try_into().unwrap()), 24_000);
/// ```
pub fn streaming_wav_header(sample_rate: u32, channels: u16) -> [u8; 44] {
    let block_align = channels * 2;
    let mut header = [0u8; 44];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        header[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(b"RIFF");
    put(&u32::MAX.to_le_bytes());
    put(b"WAVEfmt ");
    put(&16u32.to_le_bytes());
    put(&1u16.to_le_bytes()); // PCM
    put(&channels.to_le_bytes());
    put(&sample_rate.to_le_bytes());
    put(&(sample_rate * u32::from(block_align)).to_le_bytes());
    put(&block_align.to_le_bytes());
    put(&16u16.to_le_bytes());
    put(b"data");
    put(&u32::MAX.to_le_bytes());
    header
}
