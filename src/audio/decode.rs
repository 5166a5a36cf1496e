//! Decoding audio files (WAV, FLAC, MP3, OGG/Vorbis) packet by packet with symphonia.

use std::io::Cursor;
use std::path::Path;

use bytes::Bytes;
use symphonia::core::codecs::audio::{AudioDecoder as CodecDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;

use crate::error::MoshiError;

/// Reads an encoded audio file one packet at a time, so that memory stays bounded by a packet,
/// not by the length of the file.
///
/// ```
/// use fluent_voice_kyutai::audio::wav_bytes;
/// use fluent_voice_kyutai::internals::audio::AudioDecoder;
///
/// let wav = wav_bytes(&[0.0, 0.5, -0.5, 0.25], 16_000, 2);
/// let mut decoder = AudioDecoder::from_bytes(wav.into(), Some("wav"))?;
/// assert_eq!((decoder.sample_rate(), decoder.channels()), (16_000, 2));
/// let mut samples = Vec::new();
/// while let Some(chunk) = decoder.next_chunk()? {
///     samples.extend(chunk);
/// }
/// assert_eq!(samples.len(), 4);
/// # Ok::<(), fluent_voice_kyutai::MoshiError>(())
/// ```
pub struct AudioDecoder {
    format: Box<dyn FormatReader>,
    decoder: Box<dyn CodecDecoder>,
    track_id: u32,
    sample_rate: u32,
    channels: usize,
    /// Frames the container announces, to tell a truncated file from a complete one.
    expected_frames: Option<u64>,
    decoded_frames: u64,
    origin: String,
    done: bool,
}

impl AudioDecoder {
    /// Opens an audio file; the format is recognised from its content (the extension helps).
    pub fn open(path: &Path) -> Result<AudioDecoder, MoshiError> {
        // An I/O error (kind `NotFound` for a missing file), so that callers can tell a wrong
        // path from a file that is not audio (`InvalidInput`) without reading messages.
        let file = std::fs::File::open(path)
            .map_err(|e| MoshiError::io("could not open the audio file", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| MoshiError::io("could not read the audio file", path, e))?
            .len();
        if len == 0 {
            return Err(MoshiError::InvalidInput(format!(
                "the audio file {} is empty (0 bytes)",
                path.display()
            )));
        }
        let mut hint = Hint::new();
        if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
            hint.with_extension(ext);
        }
        Self::new(Box::new(file), hint, path.display().to_string())
    }

    /// Reads an audio file held in memory; `format` (`"wav"`, `"mp3"`...) is a hint.
    pub fn from_bytes(data: Bytes, format: Option<&str>) -> Result<AudioDecoder, MoshiError> {
        if data.is_empty() {
            return Err(MoshiError::InvalidInput(
                "the audio data is empty (0 bytes)".into(),
            ));
        }
        let mut hint = Hint::new();
        if let Some(ext) = format {
            hint.with_extension(ext);
        }
        Self::new(Box::new(Cursor::new(data)), hint, "the audio data".into())
    }

    fn new(
        source: Box<dyn MediaSource>,
        hint: Hint,
        origin: String,
    ) -> Result<AudioDecoder, MoshiError> {
        let not_audio = |e: SymError| {
            MoshiError::InvalidInput(format!(
                "{origin} is not audio that can be read (WAV, FLAC, MP3 or OGG/Vorbis): {e}"
            ))
        };
        let stream = MediaSourceStream::new(source, Default::default());
        let format = guard_panics(&origin, || {
            symphonia::default::get_probe().probe(
                &hint,
                stream,
                FormatOptions::default(),
                MetadataOptions::default(),
            )
        })?
        .map_err(not_audio)?;
        let track = format
            .default_track(TrackType::Audio)
            .ok_or_else(|| MoshiError::InvalidInput(format!("{origin} holds no audio track")))?;
        let params = track
            .codec_params
            .as_ref()
            .and_then(|p| p.audio())
            .ok_or_else(|| MoshiError::InvalidInput(format!("{origin} holds no audio track")))?
            .clone();
        let sample_rate = params.sample_rate.filter(|&r| r > 0).ok_or_else(|| {
            MoshiError::InvalidInput(format!("{origin} does not give its sample rate"))
        })?;
        let channels = params.channels.as_ref().map_or(0, |c| c.count());
        if channels == 0 {
            return Err(MoshiError::InvalidInput(format!(
                "{origin} does not give its channel count"
            )));
        }
        let expected_frames = track.num_frames;
        let track_id = track.id;
        let decoder = symphonia::default::get_codecs()
            .make_audio_decoder(&params, &AudioDecoderOptions::default())
            .map_err(|e| {
                MoshiError::InvalidInput(format!("{origin} uses a codec that cannot be read: {e}"))
            })?;
        Ok(AudioDecoder {
            format,
            decoder,
            track_id,
            sample_rate,
            channels,
            expected_frames,
            decoded_frames: 0,
            origin,
            done: false,
        })
    }

    /// Samples per second of the file.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Number of channels of the file.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The next decoded packet as interleaved samples, or `None` at the end of the file.
    ///
    /// A file that ends before the length its header announces is an error (a truncated
    /// download or copy), as is a packet that cannot be decoded.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<f32>>, MoshiError> {
        if self.done {
            return Ok(None);
        }
        let origin = self.origin.clone();
        let result = guard_panics(&origin, || self.decode_next());
        if result.is_err() {
            self.done = true;
        }
        result?
    }

    fn decode_next(&mut self) -> Result<Option<Vec<f32>>, MoshiError> {
        loop {
            let packet = match self.format.next_packet() {
                Ok(Some(packet)) => packet,
                Ok(None) => return self.finish(),
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return self.finish();
                }
                Err(e) => {
                    self.done = true;
                    return Err(MoshiError::InvalidInput(format!(
                        "{} could not be read to the end: {e}",
                        self.origin
                    )));
                }
            };
            if packet.track_id != self.track_id {
                continue;
            }
            match self.decoder.decode(&packet) {
                Ok(buffer) => {
                    let mut samples = Vec::new();
                    buffer.copy_to_vec_interleaved(&mut samples);
                    if samples.is_empty() {
                        continue;
                    }
                    self.decoded_frames += (samples.len() / self.channels) as u64;
                    return Ok(Some(samples));
                }
                // A damaged packet in a lossy stream: skip it, as players do.
                Err(SymError::DecodeError(_)) => continue,
                Err(e) => {
                    self.done = true;
                    return Err(MoshiError::InvalidInput(format!(
                        "{} could not be decoded: {e}",
                        self.origin
                    )));
                }
            }
        }
    }

    fn finish(&mut self) -> Result<Option<Vec<f32>>, MoshiError> {
        self.done = true;
        match self.expected_frames {
            Some(expected) if self.decoded_frames < expected => {
                Err(MoshiError::InvalidInput(format!(
                    "{} is truncated: its header announces {expected} samples per channel but \
                     the data ends after {}",
                    self.origin, self.decoded_frames
                )))
            }
            _ => Ok(None),
        }
    }
}

/// Runs a symphonia call, turning a panic into an input error. Symphonia parses untrusted bytes
/// and some hostile headers make it panic (e.g. a WAV `fmt ` chunk claiming 65,280 channels
/// overflows a `u16` in symphonia-format-riff 0.6.1, found by our fuzzer); a bad file must give
/// the caller an error, never bring their program down.
fn guard_panics<T>(origin: &str, call: impl FnOnce() -> T) -> Result<T, MoshiError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).map_err(|_| {
        MoshiError::InvalidInput(format!(
            "{origin} is not audio that can be read: its headers are malformed"
        ))
    })
}
