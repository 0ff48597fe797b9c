//! Text to token ids with the `tokenizers` crate, from the model's own
//! `tokenizer.json` (BERT WordPiece: lowercase, split on whitespace and
//! punctuation, `[CLS] ... [SEP]`). The file's fixed padding and
//! truncation are replaced: no padding, truncation at the model's
//! `max_seq`, as sentence-transformers does.

use std::path::Path;

use tokenizers::{Tokenizer, TruncationParams};

use super::safetensors_load::{LoadError, LoadErrorKind};

/// A loaded tokenizer, truncating at `max_len` tokens (specials included).
pub struct TextTokenizer {
    inner: Tokenizer,
    max_len: usize,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("max_len", &self.max_len)
            .finish()
    }
}

/// One sentence as the model takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub mask: Vec<u32>,
}

impl TextTokenizer {
    pub fn from_file(path: &Path, max_len: usize) -> Result<Self, LoadError> {
        let err = |msg: String| LoadError::new(path, None, LoadErrorKind::Tokenizer(msg));
        let mut inner = Tokenizer::from_file(path).map_err(|e| err(e.to_string()))?;
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..TruncationParams::default()
            }))
            .map_err(|e| err(e.to_string()))?;
        Ok(Self { inner, max_len })
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Token ids and attention mask of one text, special tokens added.
    pub fn encode(&self, text: &str) -> Result<Encoded, String> {
        let enc = self.inner.encode(text, true).map_err(|e| e.to_string())?;
        Ok(Encoded {
            ids: enc.get_ids().to_vec(),
            mask: enc.get_attention_mask().to_vec(),
        })
    }
}
