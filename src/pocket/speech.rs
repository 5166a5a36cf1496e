//! A Pocket TTS conversation's thread: the same audio stream a DSM conversation gives (24 kHz
//! `AudioChunk`s, one per 80 ms frame, the last marked final), so the builder and its users do
//! not care which family runs.
//!
//! Generation runs on the conversation's thread and Mimi's decoder on a second one, one frame
//! behind (the reference's two threads): on a CPU a frame then costs about the larger of the
//! flow-LM step and the decode, not their sum.
//!
//! Streamed text is spoken a chunk at a time: a chunk starts as soon as a sentence is complete
//! (a sentence mark followed by whitespace), or once the words waiting reach the chunk limit
//! (50 tokens), so that a long sentence does not wait for its end.

use std::pin::Pin;
use std::sync::Arc;

use candle_core::Tensor;
use futures::StreamExt;

use super::model::GenerateSettings;
use super::noise::Seeded;
use super::{LoadedPocket, VoiceState};
use crate::error::{MoshiError, Stage};
use crate::pipeline::Pipelined;
use crate::speech_out::{CHANNEL_CHUNKS, ChunkSender};
use crate::voice::{AudioChunk, BoxAudioStream, VoiceError};

/// Text pieces arriving while they are spoken.
pub(crate) type TextPieces = Pin<Box<dyn futures::Stream<Item = String> + Send>>;

/// What a line says.
pub(crate) enum PocketText {
    Whole(String),
    Stream(TextPieces),
}

/// One speaker's line.
pub(crate) struct PocketLine {
    pub speaker: String,
    pub text: PocketText,
    pub voice: VoiceState,
}

/// Where a streamed text can be cut: after the last sentence mark followed by whitespace.
fn sentence_cut(text: &str) -> Option<usize> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut cut = None;
    for w in chars.windows(2) {
        if ['.', '!', '?', '\u{2026}'].contains(&w[0].1) && w[1].1.is_whitespace() {
            cut = Some(w[1].0);
        }
    }
    cut
}

/// Pulls pieces of a streamed text and hands out the parts ready to be spoken.
struct StreamedText<'a> {
    pieces: TextPieces,
    pending: String,
    ended: bool,
    listener_gone: &'a dyn Fn() -> bool,
    max_tokens: usize,
    count_tokens: &'a dyn Fn(&str) -> usize,
}

impl StreamedText<'_> {
    /// The next text ready to speak, or `None` at the end of the stream.
    fn next(&mut self) -> Option<String> {
        loop {
            if let Some(cut) = sentence_cut(&self.pending) {
                let rest = self.pending.split_off(cut);
                return Some(std::mem::replace(&mut self.pending, rest));
            }
            if let Some(space) = self.pending.rfind(char::is_whitespace)
                && (self.count_tokens)(&self.pending[..space]) >= self.max_tokens
            {
                let rest = self.pending.split_off(space);
                return Some(std::mem::replace(&mut self.pending, rest));
            }
            if self.ended {
                let rest = std::mem::take(&mut self.pending);
                return (!rest.trim().is_empty()).then_some(rest);
            }
            if (self.listener_gone)() {
                return None;
            }
            match futures::executor::block_on(self.pieces.next()) {
                Some(piece) => self.pending.push_str(&piece),
                None => self.ended = true,
            }
        }
    }
}

/// Runs the lines on a thread of their own and streams their audio. Each chunk of text is a
/// generation whose noise is seeded `seed + its index`, so the same seed gives the same audio.
pub(crate) fn stream_speech(
    loaded: Arc<LoadedPocket>,
    lines: Vec<PocketLine>,
    settings: GenerateSettings,
    seed: u64,
) -> BoxAudioStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<AudioChunk, VoiceError>>(CHANNEL_CHUNKS);
    std::thread::spawn(move || {
        let mut out = ChunkSender::new(tx, loaded.model.sample_rate() as u32);
        // Quantized, the flow LM runs on this thread alone too, as the reference's does: its
        // step is then cheaper than the cores' hand-offs of the shared pool (measured on two
        // cores, q8: 24 ms a frame against 28). In f32 it is bound by reading 360 MB of
        // weights a frame, and two cores read them faster (49 ms against 53).
        let speak = || speak_lines(&loaded, lines, &settings, seed, &mut out);
        let spoken = match loaded.weights.scheme() {
            Some(_) => match rayon::ThreadPoolBuilder::new().num_threads(1).build() {
                Ok(pool) => pool.install(speak),
                Err(_) => speak(),
            },
            None => speak(),
        };
        if let Err(e) = spoken {
            let _ = out
                .tx
                .blocking_send(Err(e.into_voice(Some(Stage::Synthesis))));
            return;
        }
        out.finish();
    });
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

fn speak_lines(
    loaded: &Arc<LoadedPocket>,
    lines: Vec<PocketLine>,
    settings: &GenerateSettings,
    seed: u64,
    out: &mut ChunkSender,
) -> Result<(), MoshiError> {
    let threaded = loaded.model.device().is_cpu();
    let decoder_model = loaded.clone();
    let mut state = None;
    // Mimi's products run on the decoding thread alone (a pool of one), as the reference runs
    // each of its two threads with one torch thread: in the shared pool, every decode waited
    // for the flow LM's products and the other way round, and a frame cost the sum of both.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .thread_name(|_| "pocket-mimi".into())
        .build()
        .map_err(|e| {
            crate::error::inference(
                "starting Mimi's thread",
                candle_core::Error::Msg(e.to_string()),
            )
        })?;
    // (latent, first frame of a chunk) in, samples out; a chunk's first frame resets Mimi.
    let mut decoder = Pipelined::new(
        move |(latent, first): (Tensor, bool)| {
            if first || state.is_none() {
                state = Some(decoder_model.model.decoder_state());
            }
            let state = state.as_mut().expect("set above");
            pool.install(|| decoder_model.model.decode(state, &latent, first))
                .map_err(|e| candle_core::Error::Msg(e.to_string()))
        },
        threaded,
    );
    let mut chunk_index = 0u64;
    for line in lines {
        let gone_tx = out.tx.clone();
        let gone = move || gone_tx.is_closed();
        let tokenizer = loaded.model.tokenizer();
        let count = |t: &str| tokenizer.encode(t).map_or(0, |ids| ids.len());
        let mut texts: Box<dyn FnMut() -> Option<String> + '_> = match line.text {
            PocketText::Whole(text) => {
                let mut once = Some(text);
                Box::new(move || once.take())
            }
            PocketText::Stream(pieces) => {
                let mut streamed = StreamedText {
                    pieces,
                    pending: String::new(),
                    ended: false,
                    listener_gone: &gone,
                    max_tokens: settings.max_tokens,
                    count_tokens: &count,
                };
                Box::new(move || streamed.next())
            }
        };
        while let Some(text) = texts() {
            if text.trim().is_empty() {
                continue;
            }
            for chunk in loaded.model.chunks(&text, settings.max_tokens)? {
                let mut noise = Seeded::new(seed.wrapping_add(chunk_index));
                chunk_index += 1;
                let mut first = true;
                let mut listening = true;
                loaded.model.generate_chunk(
                    &line.voice,
                    &chunk,
                    settings,
                    &mut noise,
                    &mut |latent| {
                        let ready = decoder
                            .push((latent.clone(), first))
                            .map_err(|e| crate::error::inference("decoding audio", e))?;
                        first = false;
                        for samples in ready {
                            listening &= out.audio(samples, &line.speaker);
                        }
                        Ok(listening)
                    },
                )?;
                let rest = decoder
                    .drain()
                    .map_err(|e| crate::error::inference("decoding audio", e))?;
                for samples in rest {
                    listening &= out.audio(samples, &line.speaker);
                }
                if !listening {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_text_is_cut_after_sentence_marks() {
        assert_eq!(sentence_cut("Hello there. How"), Some(12));
        assert_eq!(sentence_cut("Pi is 3.14 exactly"), None);
        assert_eq!(sentence_cut("Wait! Now? Yes"), Some(10));
        assert_eq!(sentence_cut("no end."), None);
    }
}
