//! The listener's side of a text-to-speech conversation, the same for every TTS family: audio
//! chunks sent one behind (so that the last can be marked final), with the word timings known
//! so far, into a bounded channel (a slow listener pauses synthesis).

use crate::voice::{AudioChunk, TranscriptionSegment, VoiceError};

/// Chunks in flight between the synthesis thread and the listener: a small bound, so that a slow
/// listener pauses synthesis instead of letting audio pile up in memory.
pub(crate) const CHANNEL_CHUNKS: usize = 8;

/// Sends audio chunks to the listener.
pub(crate) struct ChunkSender {
    pub(crate) tx: tokio::sync::mpsc::Sender<Result<AudioChunk, VoiceError>>,
    sample_rate: u32,
    pub(crate) samples_sent: u64,
    held: Option<AudioChunk>,
    /// Timed words not yet attached to a chunk.
    words: Vec<TranscriptionSegment>,
}

impl ChunkSender {
    /// A sender into `tx` of audio at `sample_rate`.
    pub(crate) fn new(
        tx: tokio::sync::mpsc::Sender<Result<AudioChunk, VoiceError>>,
        sample_rate: u32,
    ) -> Self {
        ChunkSender {
            tx,
            sample_rate,
            samples_sent: 0,
            held: None,
            words: Vec::new(),
        }
    }

    /// Sends the previous chunk and holds this one; false once the listener is gone.
    pub(crate) fn audio(&mut self, samples: Vec<f32>, speaker: &str) -> bool {
        let n = samples.len() as u64;
        let mut chunk = AudioChunk::new(samples, self.sample_rate)
            .with_start_sample(self.samples_sent)
            .with_speaker(speaker);
        self.samples_sent += n;
        if !self.words.is_empty() {
            chunk.words = std::mem::take(&mut self.words);
            let texts: Vec<&str> = chunk.words.iter().map(|w| w.text.as_str()).collect();
            chunk.text = Some(texts.join(" "));
        }
        match self.held.replace(chunk) {
            Some(previous) => self.tx.blocking_send(Ok(previous)).is_ok(),
            None => !self.tx.is_closed(),
        }
    }

    /// A word's timing, in the conversation's audio (its segment started at `segment_start`;
    /// the word spans 80 ms frames `start_frame..end_frame` of it).
    pub(crate) fn word(
        &mut self,
        text: String,
        start_frame: usize,
        end_frame: usize,
        segment_start: u64,
    ) {
        let frame = u64::from(self.sample_rate) * 2 / 25; // 80 ms
        let ms = |frames: usize| {
            AudioChunk::samples_to_ms(segment_start + frames as u64 * frame, self.sample_rate)
        };
        self.words.push(TranscriptionSegment::new(
            text,
            ms(start_frame),
            ms(end_frame),
        ));
    }

    /// Sends the last chunk, marked final, with the words still to attach.
    pub(crate) fn finish(mut self) {
        if let Some(mut last) = self.held.take() {
            if !self.words.is_empty() {
                last.words.append(&mut self.words);
                let texts: Vec<&str> = last.words.iter().map(|w| w.text.as_str()).collect();
                last.text = Some(texts.join(" "));
            }
            let _ = self.tx.blocking_send(Ok(last.with_final(true)));
        }
    }
}
