//! The TTS state machine and script preparation of the reference (`moshi/models/tts.py`:
//! `TokenIds`, `Entry`, `State`, `StateMachine`, `script_to_entries`).
//!
//! The model does not read the text as a whole: at every step it predicts either "pad" or "new
//! word"; on "new word" the machine pops the next word and feeds its tokens over the following
//! steps, and (models with a second text stream) the tokens of the word `second_stream_ahead`
//! words later on the second stream, muxed as `(second + 1) * card + first`.

use std::collections::VecDeque;

/// Special token values (`TokenIds`); `card` is `text_card + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenIds {
    /// `text_card + 1`: the text start token.
    pub card: i64,
    /// Starts a word.
    pub new_word: i64,
    /// Padding (no text this step).
    pub pad: i64,
    /// Marks the main speaker.
    pub main: i64,
    /// Marks the other speaker.
    pub other: i64,
    /// A token that contributes nothing (`-1`).
    pub zero: i64,
}

impl TokenIds {
    /// The ids of the reference for a text vocabulary of `card - 1` tokens.
    pub fn new(card: i64) -> TokenIds {
        TokenIds {
            card,
            new_word: 0,
            pad: 3,
            main: 1,
            other: 2,
            zero: -1,
        }
    }
}

/// One word to say (or, with no tokens, a pause of `padding` steps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The word's text tokens.
    pub tokens: Vec<i64>,
    /// The word as written.
    pub text: String,
    /// Steps of padding after it, at least.
    pub padding: usize,
}

/// Progress through one script.
#[derive(Debug, Clone)]
pub struct State {
    /// The words still to say.
    pub entries: VecDeque<Entry>,
    /// Padding steps left before the next word may start.
    pub remaining_padding: usize,
    /// Padding steps that must come whatever the model predicts.
    pub forced_padding: usize,
    /// Tokens of the word being fed.
    pub queued: VecDeque<i64>,
    /// Tokens of the second stream's word being fed.
    pub lookahead_queued: VecDeque<i64>,
    /// The step at which the model asked for a word past the last one.
    pub end_step: Option<usize>,
    /// `(word, step)` for each word fed.
    pub transcript: Vec<(String, usize)>,
}

impl State {
    /// Whether a step may run while the text is still arriving: the next entry is here, and
    /// (when the model reads a second stream `lookahead` words ahead) so are the `lookahead`
    /// words after it, or the next entry is a pause. The reference's rule (`ClientState.is_active`
    /// of Kyutai's TTS server, and `TTSGen.process` of `tts_pytorch_streaming.py`): a stream that
    /// lacks words does not step at all, so the state machine sees every entry exactly when it
    /// would have with the whole text at once.
    pub fn ready(&self, lookahead: usize) -> bool {
        let Some(next) = self.entries.front() else {
            return false;
        };
        if lookahead == 0 || next.tokens.is_empty() {
            return true;
        }
        self.entries.iter().filter(|e| !e.tokens.is_empty()).count() > lookahead
    }

    fn tokens_ahead(&self, lookahead: usize) -> Vec<i64> {
        let mut left = lookahead;
        for entry in &self.entries {
            if !entry.tokens.is_empty() {
                left -= 1;
                if left == 0 {
                    return entry.tokens.clone();
                }
            }
        }
        Vec::new()
    }
}

/// `StateMachine` with the settings `TTSModel.from_checkpoint_info` uses by default.
#[derive(Debug, Clone, Copy)]
pub struct StateMachine {
    /// The special tokens.
    pub token_ids: TokenIds,
    /// How many words ahead the second text stream runs.
    pub second_stream_ahead: usize,
    /// At most this many padding steps before the next word is forced.
    pub max_padding: usize,
    /// Padding steps before the first word.
    pub initial_padding: usize,
}

impl StateMachine {
    /// The reference's defaults (`initial_padding` 2, `max_padding` 8).
    pub fn new(token_ids: TokenIds, second_stream_ahead: usize) -> StateMachine {
        StateMachine {
            token_ids,
            second_stream_ahead,
            max_padding: 8,
            initial_padding: 2,
        }
    }

    /// The state at the start of `entries`.
    pub fn new_state(&self, entries: Vec<Entry>) -> State {
        State {
            entries: entries.into(),
            remaining_padding: self.initial_padding,
            forced_padding: self.initial_padding,
            queued: VecDeque::new(),
            lookahead_queued: VecDeque::new(),
            end_step: None,
            transcript: Vec::new(),
        }
    }

    /// Turns the model's text prediction at `step` into the token fed back at the next step.
    pub fn process(&self, step: usize, state: &mut State, token: i64) -> i64 {
        let ids = &self.token_ids;
        let mut token = if token == ids.new_word || token == ids.pad {
            token
        } else {
            ids.pad
        };
        if !state.queued.is_empty() || state.forced_padding > 0 {
            token = ids.pad;
        } else if state.remaining_padding == 0 {
            token = ids.new_word;
        }

        if token == ids.new_word {
            if let Some(entry) = state.entries.pop_front() {
                if !entry.tokens.is_empty() {
                    state.transcript.push((entry.text.clone(), step));
                    state.queued.extend(entry.tokens.iter().copied());
                    if self.second_stream_ahead > 0 {
                        let ahead = state.tokens_ahead(self.second_stream_ahead);
                        state.lookahead_queued.extend(ahead);
                    }
                    state.remaining_padding = self.max_padding;
                } else {
                    token = ids.pad;
                }
                state.forced_padding = entry.padding;
            } else {
                token = ids.pad;
                if self.second_stream_ahead > 0 && state.end_step.is_none() {
                    token = ids.new_word;
                }
                if state.end_step.is_none() {
                    state.end_step = Some(step);
                }
            }
        }

        let mut output = if token == ids.pad {
            state.remaining_padding = state.remaining_padding.saturating_sub(1);
            state.forced_padding = state.forced_padding.saturating_sub(1);
            state.queued.pop_front().unwrap_or(ids.pad)
        } else {
            ids.new_word
        };

        if self.second_stream_ahead > 0 {
            let mut second = -1;
            if output == ids.new_word {
                second = ids.new_word;
                output = state.queued.pop_front().unwrap_or(ids.pad);
            } else if let Some(t) = state.lookahead_queued.pop_front() {
                second = t;
            }
            output += (second + 1) * ids.card;
        }
        output
    }
}

/// Matches `<break time="1.5s"/>` at the start of `s`; returns (length in bytes, seconds).
fn break_tag(s: &str) -> Option<(usize, f64)> {
    let rest = s.strip_prefix("<break")?;
    let after_ws = rest.trim_start();
    if after_ws.len() == rest.len() {
        return None;
    }
    let rest = after_ws.strip_prefix("time=\"")?;
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let mut number_len = digits;
    if !rest[digits..].starts_with("s\"") {
        // `(?:.[0-9]*)?`: one character (not a newline), then digits.
        let c = rest[digits..].chars().next()?;
        if c == '\n' {
            return None;
        }
        number_len += c.len_utf8();
        number_len += rest[number_len..]
            .chars()
            .take_while(char::is_ascii_digit)
            .count();
    }
    let seconds: f64 = rest[..number_len].parse().ok()?;
    let rest = rest[number_len..].strip_prefix("s\"")?;
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let rest = rest.strip_prefix('>')?;
    Some((s.len() - rest.len(), seconds))
}

/// Splits `line` into words and pauses, as `event_re` does in the reference.
pub(crate) fn words_and_breaks(line: &str) -> Vec<Result<String, f64>> {
    let mut out = Vec::new();
    let mut word_start = 0;
    let mut i = 0;
    while i < line.len() {
        let rest = &line[i..];
        let c = rest.chars().next().expect("not empty");
        if c.is_whitespace() {
            let run: usize = rest
                .chars()
                .take_while(|c| c.is_whitespace())
                .map(char::len_utf8)
                .sum();
            if word_start < i {
                out.push(Ok(line[word_start..i].to_string()));
            }
            i += run;
            word_start = i;
        } else if let Some((len, seconds)) = break_tag(rest) {
            if word_start < i {
                out.push(Ok(line[word_start..i].to_string()));
            }
            out.push(Err(seconds));
            i += len;
            word_start = i;
        } else {
            i += c.len_utf8();
        }
    }
    if word_start < line.len() {
        out.push(Ok(line[word_start..].to_string()));
    }
    out
}

/// The characters `script_to_entries` replaces before splitting a line into words: `’` becomes
/// `'`, `:` a space, and parentheses go. Each character is replaced on its own, so a text
/// arriving in pieces can be normalised piece by piece.
pub fn normalize(text: &str) -> String {
    text.replace('’', "'")
        .replace(':', " ")
        .replace(['(', ')'], "")
}

/// The entry of one word: its tokens (after `speaker`, the speaker token of the first word of a
/// turn), and the padding `padding_between` asks for after it.
pub fn word_entry(
    encode: &dyn Fn(&str) -> Vec<i64>,
    word: &str,
    speaker: Option<i64>,
    padding_between: usize,
) -> Entry {
    let mut tokens = encode(word);
    if let Some(speaker) = speaker {
        tokens.insert(0, speaker);
    }
    let padding = if padding_between > 0 {
        (padding_between + tokens.len()).saturating_sub(1)
    } else {
        0
    };
    Entry {
        tokens,
        text: word.to_string(),
        padding,
    }
}

/// The entry of a `<break time="Xs"/>`: a pause of `round(X * frame_rate)` steps.
pub fn break_entry(seconds: f64, frame_rate: f64) -> Entry {
    Entry {
        tokens: Vec::new(),
        text: String::new(),
        padding: (seconds * frame_rate).round() as usize,
    }
}

/// `script_to_entries`: each script line is a turn (main speaker first); words are tokenized
/// one by one; `<break time="Xs"/>` becomes a pause of `round(X * frame_rate)` steps.
pub fn script_to_entries(
    encode: &dyn Fn(&str) -> Vec<i64>,
    token_ids: &TokenIds,
    frame_rate: f64,
    script: &[&str],
    multi_speaker: bool,
    padding_between: usize,
) -> Vec<Entry> {
    let speaker_tokens = [token_ids.main, token_ids.other];
    let mut last_speaker: Option<usize> = None;
    let mut entries = Vec::new();
    for (idx, line) in script.iter().enumerate() {
        let mut first_content = true;
        for item in words_and_breaks(&normalize(line)) {
            match item {
                Ok(word) => {
                    let mut speaker_token = None;
                    if first_content {
                        let speaker = idx % speaker_tokens.len();
                        if multi_speaker && last_speaker != Some(speaker) {
                            last_speaker = Some(speaker);
                            speaker_token = Some(speaker_tokens[speaker]);
                        }
                        first_content = false;
                    }
                    entries.push(word_entry(encode, &word, speaker_token, padding_between));
                }
                Err(seconds) => entries.push(break_entry(seconds, frame_rate)),
            }
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_encode(word: &str) -> Vec<i64> {
        word.chars().map(|c| 10 + (c as i64 % 50)).collect()
    }

    #[test]
    fn words_breaks_and_replacements_follow_the_reference() {
        let ids = TokenIds::new(97);
        let entries = script_to_entries(
            &fake_encode,
            &ids,
            12.5,
            &["Hi  there:(you)<break time=\"0.5s\"/> ok"],
            true,
            1,
        );
        let words: Vec<&str> = entries.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(words, ["Hi", "there", "you", "", "ok"]);
        // First word of the turn gets the main speaker token.
        assert_eq!(entries[0].tokens[0], ids.main);
        assert_eq!(entries[0].padding, 1 + 3 - 1);
        // 0.5 s at 12.5 Hz -> 6 steps of silence (round(6.25)).
        assert_eq!(entries[3].padding, 6);
        assert!(entries[3].tokens.is_empty());
    }

    #[test]
    fn state_machine_feeds_words_then_ends() {
        let ids = TokenIds::new(10);
        let machine = StateMachine::new(ids, 2);
        let entries = vec![
            Entry {
                tokens: vec![5, 6],
                text: "a".into(),
                padding: 0,
            },
            Entry {
                tokens: vec![7],
                text: "b".into(),
                padding: 0,
            },
            Entry {
                tokens: vec![8],
                text: "c".into(),
                padding: 0,
            },
        ];
        let mut state = machine.new_state(entries);
        // Initial forced padding: pads whatever the model says.
        assert_eq!(machine.process(0, &mut state, 0), 3);
        assert_eq!(machine.process(1, &mut state, 0), 3);
        // New word: the word token goes on the main stream, `new_word` on the second one.
        assert_eq!(machine.process(2, &mut state, 0), 10 + 5); // (new_word + 1) * card + 5
        // Next step: the rest of the word, and the lookahead word (2 ahead: "c") on stream 2.
        assert_eq!(machine.process(3, &mut state, 0), (8 + 1) * 10 + 6);
        let mut step = 4;
        while state.end_step.is_none() {
            machine.process(step, &mut state, 0);
            step += 1;
            assert!(step < 50);
        }
        assert_eq!(state.transcript.len(), 3);
    }

    #[test]
    fn break_tag_variants() {
        assert_eq!(break_tag("<break time=\"2s\"/>x"), Some((18, 2.0)));
        assert_eq!(break_tag("<break time=\"1.25s\" >"), Some((21, 1.25)));
        assert_eq!(break_tag("<breaktime=\"2s\"/>"), None);
        assert_eq!(break_tag("<break time=\"s\"/>"), None);
    }
}
