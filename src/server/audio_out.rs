//! Speech encoded as it is made, for the HTTP routes that answer audio: each format writes its
//! header first, then bytes for every chunk of samples, then a tail once the speech ends, so
//! that a response body streams from the first 80 ms frame on.
//!
//! - `wav`: 16-bit 24 kHz mono, the header saying "length unknown" (as moshi-server's POST
//!   answers: a streamed WAV cannot know its length);
//! - `pcm`: the same samples with no header (OpenAI's `pcm`: 24 kHz s16le);
//! - `flac`: FLAC frames of 16-bit samples from the `flacenc` crate, one per chunk, after a
//!   STREAMINFO block whose length and MD5 say "unknown" (the FLAC format allows both);
//! - `opus`: Ogg/Opus pages (with the `opus` feature), as the TTS websocket sends them.

use bytes::Bytes;
use flacenc::component::{BitRepr, Stream as FlacStream};
use flacenc::error::Verify;

/// The rate of every format here.
pub(crate) const SAMPLE_RATE: usize = 24_000;

/// An audio format of the HTTP routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AudioFormat {
    Wav,
    Pcm,
    Flac,
    /// Ogg/Opus.
    Opus,
}

impl AudioFormat {
    /// The formats this build encodes, by OpenAI's names.
    pub(crate) fn supported() -> &'static [&'static str] {
        if cfg!(feature = "opus") {
            &["wav", "pcm", "flac", "opus"]
        } else {
            &["wav", "pcm", "flac"]
        }
    }

    /// The format of an OpenAI `response_format` name, if this build encodes it.
    pub(crate) fn from_name(name: &str) -> Option<AudioFormat> {
        match name {
            "wav" => Some(AudioFormat::Wav),
            "pcm" => Some(AudioFormat::Pcm),
            "flac" => Some(AudioFormat::Flac),
            "opus" if cfg!(feature = "opus") => Some(AudioFormat::Opus),
            _ => None,
        }
    }

    /// The `Content-Type` of a response in this format (the types OpenAI-compatible servers use).
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            AudioFormat::Wav => "audio/wav",
            AudioFormat::Pcm => "audio/pcm",
            AudioFormat::Flac => "audio/flac",
            AudioFormat::Opus => "audio/ogg",
        }
    }

    /// The file extension, for `Content-Disposition`.
    pub(crate) fn extension(self) -> &'static str {
        match self {
            AudioFormat::Wav => "wav",
            AudioFormat::Pcm => "pcm",
            AudioFormat::Flac => "flac",
            AudioFormat::Opus => "ogg",
        }
    }

    /// A new encoder of this format.
    pub(crate) fn encoder(self) -> Result<Encoder, String> {
        Ok(match self {
            AudioFormat::Wav => Encoder::Wav,
            AudioFormat::Pcm => Encoder::Pcm,
            AudioFormat::Flac => Encoder::Flac(FlacEncoder::new()?),
            #[cfg(feature = "opus")]
            AudioFormat::Opus => Encoder::Opus(Box::new(super::ogg_opus::OggOpusEncoder::new()?)),
            #[cfg(not(feature = "opus"))]
            AudioFormat::Opus => return Err("this build has no Opus encoder".into()),
        })
    }
}

/// One response's encoder.
pub(crate) enum Encoder {
    Wav,
    Pcm,
    Flac(FlacEncoder),
    #[cfg(feature = "opus")]
    Opus(Box<super::ogg_opus::OggOpusEncoder>),
}

impl Encoder {
    /// The bytes before any audio.
    pub(crate) fn header(&self) -> Bytes {
        match self {
            Encoder::Wav => {
                Bytes::copy_from_slice(&crate::audio::streaming_wav_header(SAMPLE_RATE as u32, 1))
            }
            Encoder::Pcm => Bytes::new(),
            Encoder::Flac(flac) => flac.header.clone(),
            #[cfg(feature = "opus")]
            Encoder::Opus(opus) => Bytes::copy_from_slice(opus.header()),
        }
    }

    /// The bytes of `samples` (possibly none, while an encoder waits for a whole packet).
    pub(crate) fn push(&mut self, samples: &[f32]) -> Result<Bytes, String> {
        match self {
            Encoder::Wav | Encoder::Pcm => Ok(pcm16(samples).into()),
            Encoder::Flac(flac) => flac.frame(samples),
            #[cfg(feature = "opus")]
            Encoder::Opus(opus) => opus.encode(samples).map(Bytes::from),
        }
    }

    /// The bytes after the last samples: Opus's last, padded packet; nothing for the others.
    pub(crate) fn finish(&mut self) -> Result<Bytes, String> {
        match self {
            #[cfg(feature = "opus")]
            Encoder::Opus(opus) => opus.finish().map(Bytes::from),
            _ => Ok(Bytes::new()),
        }
    }
}

/// 16-bit little-endian samples, scaled as moshi-server's `write_pcm_in_wav`.
pub(crate) fn pcm16(samples: &[f32]) -> Vec<u8> {
    samples
        .iter()
        .flat_map(|s| to_i16(*s).to_le_bytes())
        .collect()
}

fn to_i16(sample: f32) -> i16 {
    (sample.clamp(-1.0, 1.0) * 32767.0) as i16
}

/// FLAC frames, one per chunk of samples.
pub(crate) struct FlacEncoder {
    config: flacenc::error::Verified<flacenc::config::Encoder>,
    info: flacenc::component::StreamInfo,
    header: Bytes,
    /// Samples written so far: chunks vary in size, so the frames use FLAC's variable blocking,
    /// where each frame header names its first sample.
    samples: u64,
}

/// The largest block of a streamable FLAC subset stream (and the most `flacenc` accepts).
const MAX_FLAC_BLOCK: usize = 32_767;
/// The smallest block `flacenc` compresses.
const MIN_ENCODED_BLOCK: usize = 32;

impl FlacEncoder {
    fn new() -> Result<FlacEncoder, String> {
        let bad = |e: &dyn std::fmt::Debug| format!("could not start the FLAC encoder: {e:?}");
        let mut stream = FlacStream::new(SAMPLE_RATE, 1, 16).map_err(|e| bad(&e))?;
        // Chunks are 80 ms frames (1920 samples) but may be of any size: the STREAMINFO block
        // sizes are the widest range FLAC allows, and the length and MD5 stay 0, "unknown".
        stream
            .stream_info_mut()
            .set_block_sizes(16, MAX_FLAC_BLOCK)
            .map_err(|e| bad(&e))?;
        let info = stream.stream_info().clone();
        let mut sink = flacenc::bitsink::ByteSink::new();
        stream.write(&mut sink).map_err(|e| bad(&e))?;
        let config = flacenc::config::Encoder::default()
            .into_verified()
            .map_err(|(_, e)| bad(&e))?;
        Ok(FlacEncoder {
            config,
            info,
            header: Bytes::from(sink.into_inner()),
            samples: 0,
        })
    }

    fn frame(&mut self, samples: &[f32]) -> Result<Bytes, String> {
        let failed = |e: &dyn std::fmt::Debug| format!("FLAC encoding failed: {e:?}");
        let mut out = Vec::new();
        for block in samples.chunks(MAX_FLAC_BLOCK) {
            let ints: Vec<i32> = block.iter().map(|s| i32::from(to_i16(*s))).collect();
            let offset = flacenc::component::FrameOffset::StartSample(self.samples);
            let frame = if ints.len() < MIN_ENCODED_BLOCK {
                // `flacenc` compresses blocks of 32 samples or more; a shorter one (a stream's
                // tail) is written verbatim, which FLAC allows for any size.
                let header = flacenc::component::FrameHeader::new(
                    ints.len(),
                    flacenc::component::ChannelAssignment::Independent(1),
                    16,
                    SAMPLE_RATE,
                    offset,
                )
                .map_err(|e| failed(&e))?;
                let verbatim =
                    flacenc::component::Verbatim::new(&ints, 16).map_err(|e| failed(&e))?;
                flacenc::component::Frame::new(header, std::iter::once(verbatim.into()))
                    .map_err(|e| failed(&e))?
            } else {
                let mut buffer =
                    flacenc::source::FrameBuf::with_size(1, ints.len()).map_err(|e| failed(&e))?;
                let mut source =
                    flacenc::source::MemSource::from_samples(&ints, 1, 16, SAMPLE_RATE);
                flacenc::source::Source::read_samples(&mut source, ints.len(), &mut buffer)
                    .map_err(|e| failed(&e))?;
                let frame = flacenc::encode_fixed_size_frame(&self.config, &buffer, 0, &self.info)
                    .map_err(|e| failed(&e))?;
                // Chunks vary in size: FLAC's variable blocking, each frame naming its first
                // sample.
                let (mut header, subframes) = frame.into_parts();
                header.set_frame_offset(offset);
                flacenc::component::Frame::new(header, subframes.into_iter())
                    .map_err(|e| failed(&e))?
            };
            self.samples += ints.len() as u64;
            let mut sink = flacenc::bitsink::ByteSink::new();
            frame.write(&mut sink).map_err(|e| failed(&e))?;
            out.extend_from_slice(sink.as_slice());
        }
        Ok(out.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The samples a format's bytes decode to, through the library's own decoder (symphonia).
    fn decode(bytes: Vec<u8>, extension: &str) -> Vec<f32> {
        let mut decoder = crate::audio::AudioDecoder::from_bytes(bytes.into(), Some(extension))
            .expect("a readable stream");
        assert_eq!((decoder.sample_rate(), decoder.channels()), (24_000, 1));
        let mut samples = Vec::new();
        while let Some(chunk) = decoder.next_chunk().unwrap() {
            samples.extend(chunk);
        }
        samples
    }

    fn encode(format: AudioFormat, chunks: &[Vec<f32>]) -> Vec<u8> {
        let mut encoder = format.encoder().unwrap();
        let mut out = encoder.header().to_vec();
        for chunk in chunks {
            out.extend_from_slice(&encoder.push(chunk).unwrap());
        }
        out.extend_from_slice(&encoder.finish().unwrap());
        out
    }

    fn chunks() -> Vec<Vec<f32>> {
        (0..3)
            .map(|c| {
                (0..1920)
                    .map(|i| (((c * 1920 + i) as f32) * 0.01).sin() * 0.5)
                    .collect()
            })
            .chain([vec![0.25; 7]])
            .collect()
    }

    #[test]
    fn flac_streams_decode_to_the_samples() {
        let chunks = chunks();
        let all: Vec<f32> = chunks.concat();
        let got = decode(encode(AudioFormat::Flac, &chunks), "flac");
        // Every sample, the 7-sample tail (a verbatim frame) included, and nothing more.
        assert_eq!(got.len(), all.len());
        for (a, b) in all.iter().zip(&got) {
            assert!((a - b).abs() < 1.0 / 16_000.0, "{a} vs {b}");
        }
    }

    #[test]
    fn wav_and_pcm_are_the_same_16_bit_samples() {
        let chunks = chunks();
        let wav = encode(AudioFormat::Wav, &chunks);
        let pcm = encode(AudioFormat::Pcm, &chunks);
        assert_eq!(&wav[..4], b"RIFF");
        assert_eq!(&wav[44..], &pcm[..]);
        assert_eq!(pcm.len(), chunks.concat().len() * 2);
    }
}
