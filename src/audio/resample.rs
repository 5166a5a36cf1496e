//! Mixing down to mono and resampling to the model's rate, incrementally.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

use crate::error::MoshiError;

/// Averages interleaved channels into one.
///
/// ```
/// let mono = fluent_voice_kyutai::internals::audio::downmix(&[1.0, 0.0, 0.5, 0.5], 2);
/// assert_eq!(mono, vec![0.5, 0.5]);
/// ```
pub fn downmix(interleaved: &[f32], channels: usize) -> Vec<f32> {
    if channels <= 1 {
        return interleaved.to_vec();
    }
    let scale = 1.0 / channels as f32;
    interleaved
        .chunks_exact(channels)
        .map(|frame| frame.iter().sum::<f32>() * scale)
        .collect()
}

/// Input frames per resampler call: small enough that latency stays low for live audio
/// (~20 ms at 48 kHz), large enough for the FFT to be cheap.
const CHUNK: usize = 1024;

/// Resamples mono audio chunk by chunk with rubato's FFT resampler, keeping only one chunk of
/// input in memory. The output is aligned with the input: the resampler's own delay is
/// trimmed, and [`finish`](Self::finish) flushes the tail so that `n` input samples give
/// `round(n * to / from)` output samples.
///
/// ```
/// use fluent_voice_kyutai::internals::audio::StreamResampler;
///
/// let mut resampler = StreamResampler::new(8_000, 24_000)?;
/// let mut out = resampler.push(&vec![0.0; 8_000])?;
/// out.extend(resampler.finish()?);
/// assert_eq!(out.len(), 24_000);
/// # Ok::<(), fluent_voice_kyutai::MoshiError>(())
/// ```
pub struct StreamResampler {
    inner: Option<Fft<f32>>,
    from: u64,
    to: u64,
    pending: Vec<f32>,
    to_skip: usize,
    consumed: u64,
    produced: u64,
}

impl StreamResampler {
    /// A resampler from `from` Hz to `to` Hz (a plain copy when they are equal).
    pub fn new(from: u32, to: u32) -> Result<StreamResampler, MoshiError> {
        if from == 0 || to == 0 {
            return Err(MoshiError::InvalidInput(format!(
                "cannot resample from {from} Hz to {to} Hz"
            )));
        }
        let inner = if from == to {
            None
        } else {
            let fft = Fft::<f32>::new(from as usize, to as usize, CHUNK, 1, FixedSync::Input)
                .map_err(|e| {
                    MoshiError::InvalidInput(format!(
                        "cannot resample audio from {from} Hz to {to} Hz: {e}"
                    ))
                })?;
            Some(fft)
        };
        let to_skip = inner.as_ref().map_or(0, |r| r.output_delay());
        Ok(StreamResampler {
            inner,
            from: u64::from(from),
            to: u64::from(to),
            pending: Vec::with_capacity(CHUNK),
            to_skip,
            consumed: 0,
            produced: 0,
        })
    }

    /// Resamples `input`; returns what is ready (the rest waits for more input or `finish`).
    pub fn push(&mut self, input: &[f32]) -> Result<Vec<f32>, MoshiError> {
        self.consumed += input.len() as u64;
        let Some(inner) = self.inner.as_mut() else {
            self.produced += input.len() as u64;
            return Ok(input.to_vec());
        };
        let mut out = Vec::new();
        let mut input = input;
        loop {
            let need = inner.input_frames_next() - self.pending.len();
            if input.len() < need {
                self.pending.extend_from_slice(input);
                break;
            }
            self.pending.extend_from_slice(&input[..need]);
            input = &input[need..];
            let chunk = std::mem::take(&mut self.pending);
            Self::run(inner, &chunk, &mut out)?;
            self.pending = chunk;
            self.pending.clear();
        }
        Ok(self.trim(out))
    }

    /// Flushes the samples still held; call once, after the last `push`.
    pub fn finish(&mut self) -> Result<Vec<f32>, MoshiError> {
        let expected = (self.consumed * self.to + self.from / 2) / self.from;
        let Some(mut inner) = self.inner.take() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        // Feed silence until the delayed tail of the real input has come out (a few rounds
        // at most; the bound only guards against a resampler that produces nothing).
        let mut rounds = 0;
        while self.produced < expected && rounds < 64 {
            let need = inner.input_frames_next();
            self.pending.resize(need, 0.0);
            let mut raw = Vec::new();
            let result = Self::run(&mut inner, &self.pending, &mut raw);
            self.pending.clear();
            result?;
            out.extend(self.trim(raw));
            rounds += 1;
        }
        self.inner = Some(inner);
        let extra = self.produced.saturating_sub(expected) as usize;
        out.truncate(out.len().saturating_sub(extra));
        self.produced -= extra as u64;
        Ok(out)
    }

    fn run(inner: &mut Fft<f32>, chunk: &[f32], out: &mut Vec<f32>) -> Result<(), MoshiError> {
        let input = InterleavedSlice::new(chunk, 1, chunk.len())
            .map_err(|e| MoshiError::InvalidInput(format!("resampler input: {e}")))?;
        let result = inner
            .process(&input, None)
            .map_err(|e| MoshiError::InvalidInput(format!("resampling failed: {e}")))?;
        out.extend(result.take_data());
        Ok(())
    }

    fn trim(&mut self, mut out: Vec<f32>) -> Vec<f32> {
        let drop = self.to_skip.min(out.len());
        self.to_skip -= drop;
        let out = out.split_off(drop);
        self.produced += out.len() as u64;
        out
    }
}
