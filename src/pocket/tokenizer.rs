//! Pocket TTS's tokenizers (`pocket_tts/modules/text_conditioner.py`): a `tokenizer.json`
//! (the released configs) or a SentencePiece `.model` (the small models), whose vocabulary must
//! have `n_bins` entries.

use std::path::Path;

use crate::error::{MoshiError, Result};

/// A loaded tokenizer of either kind.
pub enum PocketTokenizer {
    /// A `tokenizer.json`, read by the `tokenizers` crate: the code behind the Python
    /// `tokenizers` package the reference calls.
    Json(Box<tokenizers::Tokenizer>),
    /// A SentencePiece model, read by the crate's own SentencePiece tokenizer.
    SentencePiece(Box<crate::text::Tokenizer>),
}

impl PocketTokenizer {
    /// Loads `path` (`json` picks the kind) and checks its vocabulary against `n_bins`.
    pub fn load(path: &Path, json: bool, n_bins: usize) -> Result<PocketTokenizer> {
        let invalid = |reason: String| MoshiError::InvalidModelFile {
            path: path.to_path_buf(),
            reason,
        };
        let (tokenizer, size) = if json {
            let t = tokenizers::Tokenizer::from_file(path)
                .map_err(|e| invalid(format!("not a tokenizer.json: {e}")))?;
            let size = t.get_vocab_size(true);
            (PocketTokenizer::Json(Box::new(t)), size)
        } else {
            let t = crate::text::Tokenizer::from_file(path)?;
            let size = t.vocab_size();
            (PocketTokenizer::SentencePiece(Box::new(t)), size)
        };
        if size != n_bins {
            return Err(invalid(format!(
                "the tokenizer has {size} tokens but the config's lookup_table.n_bins is \
                 {n_bins}; the config and the tokenizer belong to different models"
            )));
        }
        Ok(tokenizer)
    }

    /// The token ids of `text`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            PocketTokenizer::Json(t) => t
                .encode(text, true)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| MoshiError::InvalidInput(format!("cannot tokenize {text:?}: {e}"))),
            PocketTokenizer::SentencePiece(t) => Ok(t.encode(text)),
        }
    }

    /// The text of `ids` (special tokens skipped, as the Python `decode` defaults).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match self {
            PocketTokenizer::Json(t) => t
                .decode(ids, true)
                .map_err(|e| MoshiError::InvalidInput(format!("cannot decode tokens: {e}"))),
            PocketTokenizer::SentencePiece(t) => Ok(t.decode(ids)),
        }
    }
}
