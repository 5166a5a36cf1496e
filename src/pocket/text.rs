//! Text preparation and chunking, as `pocket_tts/models/text_chunking.py` does them: the model
//! is trained on single sentences, so a long text is cut at sentence ends (not at a decimal
//! point), an oversized sentence at `,;:`, and the pieces packed into chunks of at most
//! `max_tokens` tokens, each generated from a fresh copy of the voice state.

use std::collections::BTreeMap;

use super::config::PocketConfig;
use super::tokenizer::PocketTokenizer;
use crate::error::{MoshiError, Result};

/// `MAX_TOKEN_PER_CHUNK`.
pub const MAX_TOKENS_PER_CHUNK: usize = 50;

const TERMINAL: &[char] = &['.', '!', '?', '\u{2026}'];
const WEAK: &[char] = &[',', ';', ':', '-', '\u{2013}', '\u{2014}'];
const CLOSERS: &[char] = &['"', '\'', '\u{201d}', '\u{2019}', ')', ']', '\u{bb}'];

/// The config's text options (its keys of the same names).
#[allow(missing_docs)]
#[derive(Debug, Clone, Default)]
pub struct TextOptions {
    pub pad_with_spaces_for_short_inputs: bool,
    pub remove_semicolons: bool,
    pub append_terminal_punctuation: bool,
    pub capitalize_first_letter: bool,
    pub replace_characters: BTreeMap<String, String>,
}

impl From<&PocketConfig> for TextOptions {
    fn from(c: &PocketConfig) -> Self {
        TextOptions {
            pad_with_spaces_for_short_inputs: c.pad_with_spaces_for_short_inputs,
            remove_semicolons: c.remove_semicolons,
            append_terminal_punctuation: c.append_terminal_punctuation,
            capitalize_first_letter: c.capitalize_first_letter,
            replace_characters: c.replace_characters.clone(),
        }
    }
}

/// Python's `" ".join(text.split())`.
fn squash_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `re.sub(r"([.!?…])\s*[,;:]", r"\1", text)`: a sentence mark followed by a comma-like mark
/// keeps only the sentence mark.
fn drop_comma_after_sentence_mark(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        out.push(c);
        i += 1;
        if TERMINAL.contains(&c) {
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            if j < chars.len() && [',', ';', ':'].contains(&chars[j]) {
                i = j + 1;
            }
        }
    }
    out
}

/// `_ensure_terminal_punctuation`.
fn ensure_terminal_punctuation(text: &str) -> String {
    let core = text.trim_end_matches(|c: char| CLOSERS.contains(&c) || c == ' ');
    let closers = text[core.len()..].trim();
    match core.chars().last() {
        None => text.to_string(),
        Some(c) if TERMINAL.contains(&c) => text.to_string(),
        Some(c) if WEAK.contains(&c) => {
            let stripped = core.trim_end_matches(|c: char| WEAK.contains(&c) || c == ' ');
            format!("{stripped}.{closers}")
        }
        Some(_) => format!("{text}."),
    }
}

/// `prepare_text_prompt`: the text the model reads, and the guess of frames after EOS (3 for
/// at most 4 words, else 1; generation adds 2).
pub fn prepare_text_prompt(text: &str, opts: &TextOptions) -> Result<(String, usize)> {
    let mut text = text.trim().to_string();
    if !opts.replace_characters.is_empty() {
        let mut replaced = String::with_capacity(text.len());
        for c in text.chars() {
            let mut buf = [0u8; 4];
            match opts.replace_characters.get(c.encode_utf8(&mut buf) as &str) {
                Some(r) => replaced.push_str(r),
                None => replaced.push(c),
            }
        }
        text = drop_comma_after_sentence_mark(&squash_whitespace(&replaced));
    }
    if text.is_empty() {
        return Err(MoshiError::InvalidInput(
            "the text to speak is empty; give at least one word".into(),
        ));
    }
    text = text.replace(['\n', '\r'], " ").replace("  ", " ");
    if opts.remove_semicolons {
        text = text.replace(';', ",");
    }
    let words = text.split_whitespace().count();
    let guess = if words <= 4 { 3 } else { 1 };
    if opts.capitalize_first_letter {
        let mut chars = text.chars();
        if let Some(first) = chars.next()
            && !first.is_uppercase()
        {
            text = first.to_uppercase().chain(chars).collect();
        }
    }
    if opts.append_terminal_punctuation {
        text = ensure_terminal_punctuation(&text);
    }
    if opts.pad_with_spaces_for_short_inputs && text.split_whitespace().count() < 5 {
        text = format!("{}{text}", " ".repeat(8));
    }
    Ok((text, guess))
}

/// `_is_decimal_period_boundary`: the segment at `start` begins right after a decimal point.
fn is_decimal_period(tokens: &[u32], start: usize, tok: &PocketTokenizer) -> Result<bool> {
    let prefix: Vec<char> = tok.decode(&tokens[..start])?.chars().collect();
    let suffix = tok.decode(&tokens[start..])?;
    Ok(prefix.len() >= 2
        && prefix[prefix.len() - 1] == '.'
        && prefix[prefix.len() - 2].is_numeric()
        && suffix.chars().next().is_some_and(char::is_numeric))
}

/// `_find_boundary_indices`: where segments start (0 first, `tokens.len()` last).
fn boundaries(
    tokens: &[u32],
    boundary: &[u32],
    decimal_check: Option<&PocketTokenizer>,
) -> Result<Vec<usize>> {
    let mut indices = vec![0];
    let mut previous_was_boundary = false;
    for (i, t) in tokens.iter().enumerate() {
        if boundary.contains(t) {
            previous_was_boundary = true;
            continue;
        }
        if previous_was_boundary {
            if let Some(tok) = decimal_check
                && is_decimal_period(tokens, i, tok)?
            {
                previous_was_boundary = false;
                continue;
            }
            indices.push(i);
        }
        previous_was_boundary = false;
    }
    indices.push(tokens.len());
    Ok(indices)
}

/// `_segments_from_boundaries`: `(token count, text)` of each segment.
fn segments(
    tokens: &[u32],
    bounds: &[usize],
    tok: &PocketTokenizer,
) -> Result<Vec<(usize, String)>> {
    bounds
        .windows(2)
        .map(|w| Ok((w[1] - w[0], tok.decode(&tokens[w[0]..w[1]])?)))
        .collect()
}

/// The ids of `marks` less the first (the word-start piece the tokenizer puts before them).
fn mark_tokens(tok: &PocketTokenizer, marks: &str) -> Result<Vec<u32>> {
    Ok(tok.encode(marks)?.into_iter().skip(1).collect())
}

/// `split_into_best_sentences`: the chunks of `text`, each generated on its own.
pub fn split_into_chunks(
    tok: &PocketTokenizer,
    text: &str,
    max_tokens: usize,
    opts: &TextOptions,
) -> Result<Vec<String>> {
    let (text, _) = prepare_text_prompt(text, opts)?;
    let text = text.trim();
    let tokens = tok.encode(text)?;
    let end_of_sentence = mark_tokens(tok, ".!...?")?;
    let bounds = boundaries(&tokens, &end_of_sentence, Some(tok))?;
    let sentences = segments(&tokens, &bounds, tok)?;
    let fallback = mark_tokens(tok, ",;:")?;
    let mut refined = Vec::new();
    for (n, sentence) in sentences {
        if n <= max_tokens {
            refined.push((n, sentence));
            continue;
        }
        let sub_tokens = tok.encode(sentence.trim())?;
        let sub_bounds = boundaries(&sub_tokens, &fallback, None)?;
        let subs = segments(&sub_tokens, &sub_bounds, tok)?;
        if subs.len() > 1 {
            refined.extend(subs);
        } else {
            refined.push((n, sentence));
        }
    }
    let mut chunks = Vec::new();
    let mut current = String::new();
    let mut count = 0;
    for (n, sentence) in refined {
        if current.is_empty() {
            current = sentence;
            count = n;
        } else if count + n > max_tokens {
            chunks.push(current.trim().to_string());
            current = sentence;
            count = n;
        } else {
            current.push(' ');
            current.push_str(&sentence);
            count += n;
        }
    }
    if !current.is_empty() {
        chunks.push(current.trim().to_string());
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> TextOptions {
        TextOptions {
            append_terminal_punctuation: true,
            capitalize_first_letter: true,
            ..TextOptions::default()
        }
    }

    #[test]
    fn preparation_capitalises_and_ends_sentences() {
        assert_eq!(
            prepare_text_prompt("hello world", &opts()).unwrap(),
            ("Hello world.".into(), 3)
        );
        assert_eq!(
            prepare_text_prompt("one two three four five,", &opts())
                .unwrap()
                .0,
            "One two three four five."
        );
        assert_eq!(
            prepare_text_prompt("\"Quoted\"", &opts()).unwrap().0,
            "\"Quoted\"."
        );
        assert_eq!(
            prepare_text_prompt("Done!\"", &opts()).unwrap().0,
            "Done!\""
        );
        assert!(prepare_text_prompt("   ", &opts()).is_err());
    }

    #[test]
    fn replacements_drop_a_comma_after_a_sentence_mark() {
        let mut o = opts();
        o.replace_characters
            .insert("\u{201c}".into(), String::new());
        o.replace_characters
            .insert("\u{201d}".into(), String::new());
        let (t, _) = prepare_text_prompt("\u{201c}Hi?\u{201d}, she said", &o).unwrap();
        assert_eq!(t, "Hi? she said.");
    }
}
