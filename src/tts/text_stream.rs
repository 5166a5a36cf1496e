//! Text that arrives in pieces (an LLM's tokens, standard input as it is typed), turned into the
//! words and pauses the state machine takes and cut into segments, exactly as the same text
//! given at once is: the whole text is just one piece.
//!
//! Long texts are said in segments of bounded length, each its own generation (the model's
//! context is 500 steps, about 40 s), so that memory stays bounded however long the text. The
//! cut rule looks only at words already seen, so it can be applied while the text streams in:
//! a segment ends after the first word that ends a sentence once it holds
//! [`SEGMENT_MIN_WORDS`] words, and after [`SEGMENT_MAX_WORDS`] words in any case.

use std::collections::VecDeque;

use super::state_machine::{normalize, words_and_breaks};

/// A segment ends at the first sentence end once it holds this many words.
pub const SEGMENT_MIN_WORDS: usize = 40;
/// A segment ends after this many words, sentence end or not.
pub const SEGMENT_MAX_WORDS: usize = 60;
/// A run of text this long without whitespace is taken as one word, so that a stream without
/// spaces cannot grow the buffer without bound.
const MAX_WORD_BYTES: usize = 1024;

/// A word to say, or a `<break time="Xs"/>` pause (in seconds).
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A word, as written.
    Word(String),
    /// A pause, in seconds.
    Break(f64),
}

/// Splits text arriving in pieces into words and pauses. A word is released once the whitespace
/// after it has arrived (the next piece may continue it), a `<break .../>` tag once it is closed.
#[derive(Debug, Default)]
pub struct Splitter {
    buffer: String,
}

impl Splitter {
    /// Adds a piece of text; returns the items it completed.
    pub fn push(&mut self, piece: &str) -> Vec<Item> {
        self.buffer.push_str(&normalize(piece));
        let Some(cut) = self.buffer.rfind(char::is_whitespace) else {
            if self.buffer.len() >= MAX_WORD_BYTES {
                return self.finish();
            }
            return Vec::new();
        };
        let mut complete = cut;
        // A cut inside a `<break .../>` tag (its own spaces are not word ends) moves before the
        // tag, which waits for the next whitespace, unless it has grown implausibly long.
        if let Some(tag) = self.buffer[..cut].rfind("<break")
            && self.buffer[tag + 6..].starts_with(char::is_whitespace)
            && self.buffer.len() - tag < MAX_WORD_BYTES
        {
            let closed_at = self.buffer[tag..].find('>').map(|i| tag + i);
            if closed_at.is_none_or(|close| close > cut) {
                complete = tag;
            }
        }
        let done: String = self.buffer.drain(..complete).collect();
        items(&done)
    }

    /// The text has ended: returns the items still held.
    pub fn finish(&mut self) -> Vec<Item> {
        items(&std::mem::take(&mut self.buffer))
    }
}

fn items(text: &str) -> Vec<Item> {
    words_and_breaks(text)
        .into_iter()
        .map(|item| match item {
            Ok(word) => Item::Word(word),
            Err(seconds) => Item::Break(seconds),
        })
        .collect()
}

/// Where segments end ([`SEGMENT_MIN_WORDS`], [`SEGMENT_MAX_WORDS`]).
#[derive(Debug, Default)]
struct Segmenter {
    words: usize,
}

impl Segmenter {
    /// Counts `item`; true when the segment ends after it.
    fn ends_after(&mut self, item: &Item) -> bool {
        let Item::Word(word) = item else {
            return false;
        };
        self.words += 1;
        let sentence_end = word.ends_with(['.', '!', '?', '…']);
        let ends =
            self.words >= SEGMENT_MAX_WORDS || (self.words >= SEGMENT_MIN_WORDS && sentence_end);
        if ends {
            self.words = 0;
        }
        ends
    }
}

/// The words of one speaker's line as they arrive, segment by segment.
///
/// `next_piece` blocks until the next piece of text arrives, and returns `None` once the text
/// has ended.
pub struct LineWords<'a> {
    next_piece: Box<dyn FnMut() -> Option<String> + 'a>,
    splitter: Splitter,
    segmenter: Segmenter,
    pending: VecDeque<Item>,
    text_done: bool,
    segment_done: bool,
}

impl<'a> LineWords<'a> {
    /// The words of the text that `next_piece` hands out.
    pub fn new(next_piece: impl FnMut() -> Option<String> + 'a) -> LineWords<'a> {
        LineWords {
            next_piece: Box::new(next_piece),
            splitter: Splitter::default(),
            segmenter: Segmenter::default(),
            pending: VecDeque::new(),
            text_done: false,
            segment_done: false,
        }
    }

    /// The words of a text given whole.
    pub fn whole(text: &str) -> LineWords<'a> {
        let mut text = Some(text.to_string());
        LineWords::new(move || text.take())
    }

    /// True once every word has been handed out.
    pub fn finished(&mut self) -> bool {
        self.fill();
        self.text_done && self.pending.is_empty()
    }

    /// Starts the next segment.
    pub fn next_segment(&mut self) {
        self.segment_done = false;
    }

    /// More items of the current segment, waiting for text when none is here; `None` once the
    /// segment (or the text) has ended.
    pub fn next_items(&mut self) -> Option<Vec<Item>> {
        if self.segment_done {
            return None;
        }
        self.fill();
        if self.pending.is_empty() {
            self.segment_done = true;
            return None;
        }
        let mut batch = Vec::new();
        while let Some(item) = self.pending.pop_front() {
            let ends = self.segmenter.ends_after(&item);
            batch.push(item);
            if ends {
                self.segment_done = true;
                break;
            }
        }
        Some(batch)
    }

    /// Reads text until an item is pending or the text has ended.
    fn fill(&mut self) {
        while self.pending.is_empty() && !self.text_done {
            match (self.next_piece)() {
                Some(piece) => self.pending.extend(self.splitter.push(&piece)),
                None => {
                    self.pending.extend(self.splitter.finish());
                    self.text_done = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// All items of `pieces`, segment by segment.
    fn segments(pieces: &[&str]) -> Vec<Vec<Item>> {
        let mut pieces: VecDeque<String> = pieces.iter().map(|p| p.to_string()).collect();
        let mut words = LineWords::new(move || pieces.pop_front());
        let mut out = Vec::new();
        while !words.finished() {
            words.next_segment();
            let mut segment = Vec::new();
            while let Some(items) = words.next_items() {
                segment.extend(items);
            }
            out.push(segment);
        }
        out
    }

    #[test]
    fn pieces_give_the_items_of_the_whole_text() {
        let text = "Hi  there:(you)<break time=\"0.5s\"/> ok. Next <break time=\"1s\" /> end";
        let whole = segments(&[text]);
        assert_eq!(
            whole[0][..4],
            [
                Item::Word("Hi".into()),
                Item::Word("there".into()),
                Item::Word("you".into()),
                Item::Break(0.5)
            ]
        );
        // Every split of the text into two or three pieces gives the same items.
        let bytes: Vec<usize> = (1..text.len())
            .filter(|&i| text.is_char_boundary(i))
            .collect();
        for &a in &bytes {
            assert_eq!(segments(&[&text[..a], &text[a..]]), whole, "cut at {a}");
            for &b in bytes.iter().filter(|&&b| b > a).step_by(7) {
                assert_eq!(
                    segments(&[&text[..a], &text[a..b], &text[b..]]),
                    whole,
                    "cut at {a}, {b}"
                );
            }
        }
        // Character by character, as a slow LLM streams.
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let chars: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(segments(&chars), whole);
    }

    #[test]
    fn segments_end_at_sentences_past_the_minimum_or_at_the_maximum() {
        let sentence = |n: usize| format!("{} end.", vec!["word"; n - 1].join(" "));
        // 45 words in 3 sentences of 15: the cut comes after the first sentence end at >= 40.
        let text = [sentence(15), sentence(15), sentence(15)].join(" ");
        let counts: Vec<usize> = segments(&[&text]).iter().map(Vec::len).collect();
        assert_eq!(counts, [45]);
        let text = [sentence(15), sentence(30), sentence(5)].join(" ");
        let counts: Vec<usize> = segments(&[&text]).iter().map(Vec::len).collect();
        assert_eq!(counts, [45, 5]);
        // No sentence end: cut at 60 words.
        let text = vec!["word"; 130].join(" ");
        let counts: Vec<usize> = segments(&[&text]).iter().map(Vec::len).collect();
        assert_eq!(counts, [60, 60, 10]);
    }

    #[test]
    fn a_stream_without_spaces_does_not_grow_without_bound() {
        let mut splitter = Splitter::default();
        let mut words = Vec::new();
        for _ in 0..10_000 {
            words.extend(splitter.push("ab"));
            assert!(splitter.buffer.len() <= MAX_WORD_BYTES);
        }
        assert_eq!(words.len(), 10_000 * 2 / MAX_WORD_BYTES);
        // A `<break` that never closes is not held forever either.
        let mut splitter = Splitter::default();
        splitter.push("<break ");
        for _ in 0..2_000 {
            splitter.push("x ");
        }
        assert!(splitter.buffer.len() < MAX_WORD_BYTES + 8);
        // Empty pieces and whitespace give nothing.
        assert!(segments(&["", "   ", "\n"]).is_empty());
    }
}
