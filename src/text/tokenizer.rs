//! [`Tokenizer`]: a pure-Rust SentencePiece unigram tokenizer for Kyutai's `.model` files.
//!
//! Own code rather than the `sentencepiece` crate, which builds Google's C++ library (cmake, a
//! C++ toolchain, or a system `libsentencepiece`) and so breaks the zero-setup promise of this
//! crate. Kyutai's tokenizers are unigram models; what they need is small: read the pieces and
//! the normaliser settings from the protobuf, normalise (optionally through the precompiled
//! character map), find the best segmentation by Viterbi over piece scores, and turn pieces
//! back into text. Behaviour follows `sentencepiece_processor.cc`, `normalizer.cc` and
//! `unigram_model.cc` of google/sentencepiece, and is checked against Python `sentencepiece`
//! on fixtures (`tests/tokenizer*.rs`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::proto::Reader;
use crate::error::MoshiError;

/// What a vocabulary entry is (`ModelProto.SentencePiece.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceKind {
    /// A regular piece, used by the segmentation.
    Normal,
    /// `<unk>`: stands for any text the vocabulary cannot spell.
    Unknown,
    /// `<s>`, `</s>`, `<pad>`...: never produced from text, invisible when decoded.
    Control,
    /// A piece always kept whole when it appears in the text.
    UserDefined,
    /// Kept in the vocabulary but never used.
    Unused,
    /// `<0xAB>`: one raw byte, for the byte fallback.
    Byte,
}

impl PieceKind {
    fn from_proto(value: i64) -> Result<Self, String> {
        Ok(match value {
            1 => PieceKind::Normal,
            2 => PieceKind::Unknown,
            3 => PieceKind::Control,
            4 => PieceKind::UserDefined,
            5 => PieceKind::Unused,
            6 => PieceKind::Byte,
            other => return Err(format!("unknown piece type {other}")),
        })
    }
}

#[derive(Debug, Clone)]
struct Piece {
    text: String,
    score: f32,
    kind: PieceKind,
}

/// The normaliser settings of the model (`NormalizerSpec`).
#[derive(Debug, Clone)]
struct Normalizer {
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    escape_whitespaces: bool,
    charsmap: Option<CharsMap>,
}

/// The space marker of SentencePiece, U+2581 ("▁").
const SPACE: &str = "\u{2581}";
/// Penalty below the lowest piece score given to an unknown character (`kUnkPenalty`).
const UNK_PENALTY: f32 = 10.0;

/// A SentencePiece unigram tokenizer.
///
/// ```
/// use fluent_voice_kyutai::internals::Tokenizer;
///
/// let tokenizer = Tokenizer::from_file("tests/fixtures/tiny_spm.model")?;
/// let ids = tokenizer.encode("the lazy dog");
/// assert_eq!(tokenizer.id_to_piece(ids[0]), Some("▁t"));
/// assert_eq!(tokenizer.decode(&ids), "the lazy dog");
/// assert_eq!(tokenizer.pad_id(), Some(3));
/// # Ok::<(), fluent_voice_kyutai::MoshiError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Tokenizer {
    pieces: Vec<Piece>,
    index: HashMap<String, u32>,
    /// Normal and user-defined pieces by their first byte, longest first is not needed: the
    /// Viterbi pass tries them all.
    by_first_byte: Vec<Vec<u32>>,
    user_defined: Vec<u32>,
    normalizer: Normalizer,
    unk_id: u32,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    pad_id: Option<u32>,
    unk_surface: String,
    byte_fallback: bool,
    min_score: f32,
    max_score: f32,
    byte_ids: HashMap<u8, u32>,
}

impl Tokenizer {
    /// Reads a SentencePiece `.model` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Tokenizer, MoshiError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path)
            .map_err(|e| MoshiError::io("could not read the tokenizer", path, e))?;
        Self::parse(&bytes).map_err(|reason| MoshiError::InvalidModelFile {
            path: path.to_path_buf(),
            reason: format!("not a SentencePiece unigram model: {reason}"),
        })
    }

    /// Reads a SentencePiece model from the bytes of a `.model` file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Tokenizer, MoshiError> {
        Self::parse(bytes).map_err(|reason| MoshiError::InvalidModelFile {
            path: PathBuf::from("<tokenizer bytes>"),
            reason: format!("not a SentencePiece unigram model: {reason}"),
        })
    }

    fn parse(bytes: &[u8]) -> Result<Tokenizer, String> {
        let mut pieces = Vec::new();
        let mut trainer = TrainerSpec::default();
        let mut normalizer = Normalizer {
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
            charsmap: None,
        };
        let mut reader = Reader::new(bytes);
        while let Some((field, value)) = reader.next_field()? {
            match field {
                1 => pieces.push(parse_piece(value.as_bytes()?)?),
                2 => trainer = parse_trainer(value.as_bytes()?)?,
                3 => parse_normalizer(value.as_bytes()?, &mut normalizer)?,
                _ => {}
            }
        }
        if pieces.is_empty() {
            return Err("it holds no pieces".into());
        }
        if trainer.model_type != 1 {
            return Err(format!(
                "model type {} is not unigram (1); only unigram models are supported",
                trainer.model_type
            ));
        }
        if trainer.treat_whitespace_as_suffix {
            return Err("treat_whitespace_as_suffix is not supported".into());
        }
        let n = pieces.len();
        let id = |value: i64, what: &str| -> Result<Option<u32>, String> {
            match value {
                v if v < 0 => Ok(None),
                v if (v as usize) < n => Ok(Some(v as u32)),
                v => Err(format!(
                    "{what} id {v} is outside the vocabulary of {n} pieces"
                )),
            }
        };
        let unk_id = id(trainer.unk_id, "unk")?.ok_or("the model has no unk id")?;
        let mut index = HashMap::with_capacity(n);
        let mut by_first_byte = vec![Vec::new(); 256];
        let mut user_defined = Vec::new();
        let mut byte_ids = HashMap::new();
        let (mut min_score, mut max_score) = (f32::MAX, f32::MIN);
        for (i, piece) in pieces.iter().enumerate() {
            let i = i as u32;
            index.entry(piece.text.clone()).or_insert(i);
            match piece.kind {
                PieceKind::Normal | PieceKind::UserDefined if !piece.text.is_empty() => {
                    by_first_byte[usize::from(piece.text.as_bytes()[0])].push(i);
                    if piece.kind == PieceKind::UserDefined {
                        user_defined.push(i);
                    } else {
                        min_score = min_score.min(piece.score);
                        max_score = max_score.max(piece.score);
                    }
                }
                PieceKind::Byte => {
                    if let Some(b) = parse_byte_piece(&piece.text) {
                        byte_ids.insert(b, i);
                    }
                }
                _ => {}
            }
        }
        if min_score > max_score {
            (min_score, max_score) = (0.0, 0.0);
        }
        Ok(Tokenizer {
            unk_id,
            bos_id: id(trainer.bos_id, "bos")?,
            eos_id: id(trainer.eos_id, "eos")?,
            pad_id: id(trainer.pad_id, "pad")?,
            unk_surface: trainer.unk_surface,
            byte_fallback: trainer.byte_fallback,
            pieces,
            index,
            by_first_byte,
            user_defined,
            normalizer,
            min_score,
            max_score,
            byte_ids,
        })
    }

    /// Number of pieces in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// The id of `<unk>`.
    pub fn unk_id(&self) -> u32 {
        self.unk_id
    }

    /// The id of `<s>`, if the model has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// The id of `</s>`, if the model has one.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// The id of `<pad>`, if the model has one.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad_id
    }

    /// The piece of `id` (`"▁the"`), or `None` outside the vocabulary.
    pub fn id_to_piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(|p| p.text.as_str())
    }

    /// The id of `piece`, or `None` when the vocabulary does not hold it.
    pub fn piece_to_id(&self, piece: &str) -> Option<u32> {
        self.index.get(piece).copied()
    }

    /// What kind of piece `id` is.
    pub fn piece_kind(&self, id: u32) -> Option<PieceKind> {
        self.pieces.get(id as usize).map(|p| p.kind)
    }

    /// The score of `id` (a log probability for unigram models).
    pub fn score(&self, id: u32) -> Option<f32> {
        self.pieces.get(id as usize).map(|p| p.score)
    }

    /// Splits `text` into piece ids, as Python's `SentencePieceProcessor.encode(text)` does.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let normalized = self.normalize(text);
        self.viterbi(&normalized)
    }

    /// Turns ids back into text, as Python's `SentencePieceProcessor.decode(ids)` does: control
    /// pieces vanish, `<unk>` becomes " ⁇ ", byte pieces are joined into UTF-8, "▁" becomes a
    /// space and the space added in front of the text by the encoder is removed. Ids outside
    /// the vocabulary are skipped.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut text = String::new();
        let mut bytes = Vec::new();
        let mut at_start = true;
        for &id in ids {
            let Some(piece) = self.pieces.get(id as usize) else {
                continue;
            };
            if let Some(b) = parse_byte_piece(&piece.text).filter(|_| piece.kind == PieceKind::Byte)
            {
                bytes.push(b);
                continue;
            }
            if !bytes.is_empty() {
                let surface = String::from_utf8_lossy(&bytes).into_owned();
                self.append_bytes_surface(&mut text, &surface, &mut at_start);
                bytes.clear();
            }
            let surface = match piece.kind {
                PieceKind::Control => String::new(),
                PieceKind::Unknown => self.unk_surface.clone(),
                _ => {
                    let mut piece_text = piece.text.as_str();
                    if at_start && self.strips_leading_space() {
                        piece_text = piece_text.strip_prefix(SPACE).unwrap_or(piece_text);
                    }
                    piece_text.replace(SPACE, " ")
                }
            };
            Self::append_surface(&mut text, &surface, &mut at_start);
        }
        if !bytes.is_empty() {
            let surface = String::from_utf8_lossy(&bytes).into_owned();
            self.append_bytes_surface(&mut text, &surface, &mut at_start);
        }
        text
    }

    fn strips_leading_space(&self) -> bool {
        self.normalizer.add_dummy_prefix || self.normalizer.remove_extra_whitespaces
    }

    fn append_surface(text: &mut String, surface: &str, at_start: &mut bool) {
        if !surface.is_empty() {
            *at_start = false;
        }
        text.push_str(surface);
    }

    /// Byte pieces can spell the space the encoder put in front of the text: it goes too.
    fn append_bytes_surface(&self, text: &mut String, surface: &str, at_start: &mut bool) {
        let mut surface = surface;
        if *at_start && self.strips_leading_space() {
            surface = surface.strip_prefix(' ').unwrap_or(surface);
        }
        Self::append_surface(text, surface, at_start);
    }

    /// One normalisation step: the longest user-defined piece or character-map rule at the
    /// start of `input`, else one character. Returns the replacement and the bytes consumed.
    fn normalize_prefix<'a>(&'a self, input: &'a str) -> (std::borrow::Cow<'a, str>, usize) {
        let user = self
            .user_defined
            .iter()
            .map(|&id| self.pieces[id as usize].text.as_str())
            .filter(|p| input.starts_with(p))
            .max_by_key(|p| p.len());
        if let Some(piece) = user {
            return (piece.into(), piece.len());
        }
        let mapped = self.normalizer.charsmap.as_ref();
        if let Some((replacement, len)) = mapped.and_then(|m| m.longest_prefix(input.as_bytes())) {
            return (replacement.into(), len);
        }
        let len = input.chars().next().map_or(1, char::len_utf8);
        (input[..len].into(), len)
    }

    /// `Normalizer::Normalize`: character map, extra-whitespace removal, dummy prefix, and
    /// spaces escaped as "▁".
    fn normalize(&self, text: &str) -> String {
        let spec = &self.normalizer;
        let mut input = text;
        if spec.remove_extra_whitespaces {
            while !input.is_empty() {
                let (s, len) = self.normalize_prefix(input);
                if s != " " {
                    break;
                }
                input = &input[len..];
            }
        }
        let mut out = String::with_capacity(text.len() + 8);
        if input.is_empty() {
            return out;
        }
        let space = if spec.escape_whitespaces { SPACE } else { " " };
        if spec.add_dummy_prefix {
            out.push_str(space);
        }
        let mut prev_space = spec.remove_extra_whitespaces;
        while !input.is_empty() {
            let (s, len) = self.normalize_prefix(input);
            let mut s: &str = &s;
            if prev_space {
                s = s.trim_start_matches(' ');
            }
            if !s.is_empty() {
                for c in s.chars() {
                    if spec.escape_whitespaces && c == ' ' {
                        out.push_str(SPACE);
                    } else {
                        out.push(c);
                    }
                }
                prev_space = s.ends_with(' ');
            }
            input = &input[len..];
            if !spec.remove_extra_whitespaces {
                prev_space = false;
            }
        }
        if spec.remove_extra_whitespaces {
            while out.ends_with(space) {
                out.truncate(out.len() - space.len());
            }
        }
        out
    }

    /// Best segmentation of normalised text: Viterbi over piece scores, unknown characters as
    /// `<unk>` with a penalty, consecutive unknowns merged (`EncodeOptimized`).
    fn viterbi(&self, text: &str) -> Vec<u32> {
        if text.is_empty() {
            return Vec::new();
        }
        let bytes = text.as_bytes();
        let n = bytes.len();
        #[derive(Clone, Copy)]
        struct Best {
            score: f32,
            start: usize,
            id: u32,
            reached: bool,
        }
        let mut best = vec![
            Best {
                score: 0.0,
                start: 0,
                id: 0,
                reached: false
            };
            n + 1
        ];
        best[0].reached = true;
        let unk_score = self.min_score - UNK_PENALTY;
        let mut start = 0;
        while start < n {
            let base = best[start].score;
            let char_len = text[start..].chars().next().map_or(1, char::len_utf8);
            let mut has_single = false;
            let mut candidates: Vec<(usize, u32)> = self.by_first_byte[usize::from(bytes[start])]
                .iter()
                .filter_map(|&id| {
                    let piece = &self.pieces[id as usize].text;
                    bytes[start..]
                        .starts_with(piece.as_bytes())
                        .then_some((piece.len(), id))
                })
                .collect();
            // The reference walks its trie, so shorter matches come first; ties keep the
            // first candidate.
            candidates.sort_by_key(|&(len, id)| (len, id));
            for (len, id) in candidates {
                let piece = &self.pieces[id as usize];
                let score = if piece.kind == PieceKind::UserDefined {
                    len as f32 * self.max_score - 0.1
                } else {
                    piece.score
                };
                let target = &mut best[start + len];
                let total = base + score;
                if !target.reached || total > target.score {
                    *target = Best {
                        score: total,
                        start,
                        id,
                        reached: true,
                    };
                }
                if len == char_len {
                    has_single = true;
                }
            }
            if !has_single {
                let target = &mut best[start + char_len];
                let total = base + unk_score;
                if !target.reached || total > target.score {
                    *target = Best {
                        score: total,
                        start,
                        id: self.unk_id,
                        reached: true,
                    };
                }
            }
            start += char_len;
        }
        // Walk back, merging runs of unknowns.
        let mut spans = Vec::new();
        let mut end = n;
        while end > 0 {
            let b = best[end];
            spans.push((b.start, end, b.id));
            end = b.start;
        }
        spans.reverse();
        let mut ids = Vec::with_capacity(spans.len());
        let mut prev_unk = false;
        for (s, e, id) in spans {
            let is_unk = id == self.unk_id;
            if is_unk && self.byte_fallback {
                for b in &bytes[s..e] {
                    ids.push(self.byte_ids.get(b).copied().unwrap_or(self.unk_id));
                }
            } else if !(is_unk && prev_unk) {
                ids.push(id);
            }
            prev_unk = is_unk;
        }
        ids
    }
}

#[derive(Debug)]
struct TrainerSpec {
    model_type: i64,
    unk_id: i64,
    bos_id: i64,
    eos_id: i64,
    pad_id: i64,
    unk_surface: String,
    byte_fallback: bool,
    treat_whitespace_as_suffix: bool,
}

impl Default for TrainerSpec {
    fn default() -> Self {
        // The defaults of `sentencepiece_model.proto`.
        TrainerSpec {
            model_type: 1,
            unk_id: 0,
            bos_id: 1,
            eos_id: 2,
            pad_id: -1,
            unk_surface: " \u{2047} ".into(),
            byte_fallback: false,
            treat_whitespace_as_suffix: false,
        }
    }
}

fn parse_piece(bytes: &[u8]) -> Result<Piece, String> {
    let mut piece = Piece {
        text: String::new(),
        score: 0.0,
        kind: PieceKind::Normal,
    };
    let mut reader = Reader::new(bytes);
    while let Some((field, value)) = reader.next_field()? {
        match field {
            1 => piece.text = value.as_str()?.to_string(),
            2 => piece.score = value.as_f32()?,
            3 => piece.kind = PieceKind::from_proto(value.as_i64()?)?,
            _ => {}
        }
    }
    Ok(piece)
}

fn parse_trainer(bytes: &[u8]) -> Result<TrainerSpec, String> {
    let mut spec = TrainerSpec::default();
    let mut reader = Reader::new(bytes);
    while let Some((field, value)) = reader.next_field()? {
        match field {
            3 => spec.model_type = value.as_i64()?,
            24 => spec.treat_whitespace_as_suffix = value.as_i64()? != 0,
            35 => spec.byte_fallback = value.as_i64()? != 0,
            // int32 fields: negative values arrive as 64-bit two's complement.
            40 => spec.unk_id = value.as_i64()? as i32 as i64,
            41 => spec.bos_id = value.as_i64()? as i32 as i64,
            42 => spec.eos_id = value.as_i64()? as i32 as i64,
            43 => spec.pad_id = value.as_i64()? as i32 as i64,
            44 => spec.unk_surface = value.as_str()?.to_string(),
            _ => {}
        }
    }
    Ok(spec)
}

fn parse_normalizer(bytes: &[u8], spec: &mut Normalizer) -> Result<(), String> {
    let mut reader = Reader::new(bytes);
    while let Some((field, value)) = reader.next_field()? {
        match field {
            2 if !value.as_bytes()?.is_empty() => {
                spec.charsmap = Some(CharsMap::parse(value.as_bytes()?)?)
            }
            3 => spec.add_dummy_prefix = value.as_i64()? != 0,
            4 => spec.remove_extra_whitespaces = value.as_i64()? != 0,
            5 => spec.escape_whitespaces = value.as_i64()? != 0,
            _ => {}
        }
    }
    Ok(())
}

/// `<0x41>` -> 0x41.
fn parse_byte_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2).then(|| u8::from_str_radix(hex, 16).ok())?
}

/// The precompiled normalisation map (`precompiled_charsmap`): a Darts-clone double-array trie
/// over UTF-8 byte sequences whose values are offsets of NUL-terminated replacements.
#[derive(Debug, Clone)]
struct CharsMap {
    units: Vec<u32>,
    replacements: Vec<u8>,
}

impl CharsMap {
    fn parse(blob: &[u8]) -> Result<CharsMap, String> {
        let bad = || "the precompiled character map is malformed".to_string();
        let size = u32::from_le_bytes(blob.get(..4).ok_or_else(bad)?.try_into().unwrap()) as usize;
        let trie = blob.get(4..4 + size).ok_or_else(bad)?;
        if !size.is_multiple_of(4) {
            return Err(bad());
        }
        Ok(CharsMap {
            units: trie
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            replacements: blob[4 + size..].to_vec(),
        })
    }

    /// The replacement of the longest rule matching the start of `key`, and its length.
    fn longest_prefix(&self, key: &[u8]) -> Option<(&str, usize)> {
        let offset = |unit: u32| (unit >> 10) << ((unit & (1 << 9)) >> 6);
        let has_leaf = |unit: u32| (unit >> 8) & 1 == 1;
        let label = |unit: u32| unit & ((1 << 31) | 0xff);
        let mut found = None;
        let mut pos = offset(*self.units.first()?) as usize;
        for (i, &byte) in key.iter().enumerate() {
            pos ^= usize::from(byte);
            let unit = *self.units.get(pos)?;
            if label(unit) != u32::from(byte) {
                break;
            }
            pos ^= offset(unit) as usize;
            if has_leaf(unit) {
                let value = (*self.units.get(pos)? & ((1 << 31) - 1)) as usize;
                found = Some((value, i + 1));
            }
        }
        let (value, len) = found?;
        let rest = self.replacements.get(value..)?;
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        Some((std::str::from_utf8(&rest[..end]).ok()?, len))
    }
}
