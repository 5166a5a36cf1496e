//! Reading a [`SpeechSource`] incrementally into a [`Transcriber`].

use futures::{FutureExt, StreamExt};

use super::transcriber::Transcriber;
use crate::audio::{AudioDecoder, MonoConverter};
use crate::codec::SAMPLE_RATE;
use crate::error::MoshiError;
use crate::voice::{PcmFrameStream, SpeechSource, TranscriptEvent, TranscriptionSegment};

/// Frames of in-memory PCM handed to the converter at a time (bounded work per call).
const PCM_CHUNK_FRAMES: usize = 4096;

/// A source opened for reading: files are probed here so that a bad file fails before any
/// model work starts.
pub(crate) enum OpenedSource {
    Decoder(AudioDecoder),
    Pcm {
        samples: Vec<f32>,
        sample_rate: u32,
        channels: usize,
    },
    Stream {
        frames: PcmFrameStream,
        sample_rate: u32,
        channels: usize,
    },
}

impl OpenedSource {
    /// Opens `source` (blocking: files are read).
    pub(crate) fn open(source: SpeechSource) -> Result<OpenedSource, MoshiError> {
        source
            .validate()
            .map_err(|e| MoshiError::InvalidInput(e.to_string()))?;
        Ok(match source {
            SpeechSource::File(path) => OpenedSource::Decoder(AudioDecoder::open(&path)?),
            SpeechSource::Bytes { data, format_hint } => {
                OpenedSource::Decoder(AudioDecoder::from_bytes(data, format_hint.as_deref())?)
            }
            SpeechSource::Pcm {
                samples,
                sample_rate,
                channels,
            } => OpenedSource::Pcm {
                samples,
                sample_rate,
                channels: usize::from(channels),
            },
            SpeechSource::Stream {
                frames,
                sample_rate,
                channels,
            } => OpenedSource::Stream {
                frames,
                sample_rate,
                channels: usize::from(channels),
            },
        })
    }

    fn format(&self) -> (u32, usize) {
        match self {
            OpenedSource::Decoder(d) => (d.sample_rate(), d.channels()),
            OpenedSource::Pcm {
                sample_rate,
                channels,
                ..
            }
            | OpenedSource::Stream {
                sample_rate,
                channels,
                ..
            } => (*sample_rate, *channels),
        }
    }
}

/// Transcribes `source` on the current thread, handing each word to `on_word` as soon as the
/// model decides it; `on_word` returns `false` to stop early (the listener went away).
/// Returns the duration of the audio in milliseconds.
///
/// Memory stays bounded: files are decoded a packet at a time and the audio is resampled and
/// fed to the model chunk by chunk.
pub fn transcribe_blocking(
    source: SpeechSource,
    transcriber: &mut Transcriber,
    mut on_word: impl FnMut(TranscriptionSegment) -> bool,
) -> Result<u64, MoshiError> {
    let on_event = |event| match event {
        TranscriptEvent::Word(word) => on_word(word),
        _ => true,
    };
    run(OpenedSource::open(source)?, transcriber, on_event, &|| {
        false
    })
}

/// Like [`transcribe_blocking`], with every event (words, voice activity, ends of turn).
pub fn transcribe_events_blocking(
    source: SpeechSource,
    transcriber: &mut Transcriber,
    on_event: impl FnMut(TranscriptEvent) -> bool,
) -> Result<u64, MoshiError> {
    run(OpenedSource::open(source)?, transcriber, on_event, &|| {
        false
    })
}

pub(crate) fn run(
    mut source: OpenedSource,
    transcriber: &mut Transcriber,
    mut on_word: impl FnMut(TranscriptEvent) -> bool,
    cancelled: &dyn Fn() -> bool,
) -> Result<u64, MoshiError> {
    let (rate, channels) = source.format();
    let mut converter = MonoConverter::new(rate, channels, SAMPLE_RATE)?;
    // Returns false when the listener is gone (checked on every chunk, so that a dropped
    // conversation stops its worker even while no words come).
    let mut feed = |chunk: &[f32], transcriber: &mut Transcriber| -> Result<bool, MoshiError> {
        if cancelled() {
            return Ok(false);
        }
        if chunk.iter().any(|x| !x.is_finite()) {
            return Err(MoshiError::InvalidInput(
                "the audio holds samples that are not numbers (NaN or infinite); PCM samples \
                 must be finite, normally in [-1, 1]"
                    .into(),
            ));
        }
        let mono = converter.push(chunk)?;
        for word in transcriber.push(&mono)? {
            if !on_word(word) {
                return Ok(false);
            }
        }
        Ok(true)
    };
    let go_on = match &mut source {
        OpenedSource::Decoder(decoder) => loop {
            match decoder.next_chunk()? {
                Some(chunk) => {
                    if !feed(&chunk, transcriber)? {
                        break false;
                    }
                }
                None => break true,
            }
        },
        OpenedSource::Pcm {
            samples, channels, ..
        } => {
            let mut go_on = true;
            for chunk in samples.chunks(PCM_CHUNK_FRAMES * *channels) {
                if !feed(chunk, transcriber)? {
                    go_on = false;
                    break;
                }
            }
            go_on
        }
        OpenedSource::Stream {
            frames, channels, ..
        } => {
            let channels = *channels;
            let check = |chunk: &[f32]| {
                if !chunk.len().is_multiple_of(channels) {
                    return Err(MoshiError::InvalidInput(format!(
                        "a PCM frame of {} samples is not a whole number of {channels}-channel \
                         frames",
                        chunk.len()
                    )));
                }
                Ok(())
            };
            let mut ended = false;
            loop {
                if ended {
                    break true;
                }
                let Some(mut chunk) = futures::executor::block_on(frames.next()) else {
                    break true;
                };
                check(&chunk)?;
                // The chunks that are already there join this one, up to a second: a stream
                // that keeps up is fed frame by frame (no added latency), and one that has
                // fallen behind is fed several frames at once, which lets Mimi encode a frame
                // while the language model steps the previous one (see the transcriber).
                while chunk.len() < (SAMPLE_RATE as usize) * channels {
                    match frames.next().now_or_never() {
                        Some(Some(more)) => {
                            check(&more)?;
                            chunk.extend_from_slice(&more);
                        }
                        Some(None) => {
                            ended = true;
                            break;
                        }
                        None => break,
                    }
                }
                if !feed(&chunk, transcriber)? {
                    break false;
                }
            }
        }
    };
    if !go_on {
        return Ok(transcriber.duration_ms());
    }
    let tail = converter.finish()?;
    let mut words = transcriber.push(&tail)?;
    words.extend(transcriber.finish()?);
    for word in words {
        if !on_word(word) {
            break;
        }
    }
    Ok(transcriber.duration_ms())
}
