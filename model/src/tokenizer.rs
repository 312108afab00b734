//! Text tokenizers: HF `tokenizer.json` files, and byte-level BPE tokenizers built from a GGUF
//! file's embedded vocabulary and merges.
//!
//! GGUF files of GPT-2-style models (`tokenizer.ggml.model = "gpt2"`, e.g. SmolLM2) carry the
//! token strings (already in GPT-2's byte-to-unicode alphabet), the BPE merges as `"a b"` strings,
//! token types and the special ids, but no `tokenizer.json`. [`TextTokenizer::from_gguf_metadata`]
//! rebuilds the equivalent `tokenizers` pipeline: a BPE model over that vocabulary, the byte-level
//! pre-tokenizer selected by `tokenizer.ggml.pre` (`gpt2`/`default`, or `smollm`, which first
//! splits digits one by one), the byte-level decoder, and control tokens registered as special
//! tokens so they are matched whole and can be skipped when decoding.
//!
//! A tokenizer also carries the model's chat template when the model has one (the GGUF key
//! `tokenizer.chat_template`, or `chat_template` in a directory's `tokenizer_config.json`): a
//! Jinja template the OpenAI gateway renders chat messages with.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, Tokenizer};

use crate::config::{gguf_string, gguf_value_u64};
use crate::error::{ModelError, Result};

/// GGUF token type of control tokens (`<|endoftext|>`, `<|im_start|>`, ...).
const GGUF_TOKEN_TYPE_CONTROL: u64 = 3;
/// GGUF token type of user-defined tokens.
const GGUF_TOKEN_TYPE_USER_DEFINED: u64 = 4;

/// The byte-level pre-tokenizer variants this crate can build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizerKind {
    /// GPT-2: the GPT-2 split regex, then bytes mapped to unicode.
    Gpt2,
    /// SmolLM: digits split individually, then as GPT-2.
    SmolLm,
}

impl PreTokenizerKind {
    /// From GGUF's `tokenizer.ggml.pre` value.
    pub fn from_gguf_pre(pre: &str) -> Result<Self> {
        match pre {
            "gpt2" | "default" => Ok(Self::Gpt2),
            "smollm" => Ok(Self::SmolLm),
            other => Err(ModelError::Tokenizer(format!(
                "unsupported tokenizer.ggml.pre {other:?} (supported: gpt2, default, smollm)"
            ))),
        }
    }

    fn build(self) -> PreTokenizerWrapper {
        let byte_level = ByteLevel::new(false, true, true);
        match self {
            Self::Gpt2 => PreTokenizerWrapper::ByteLevel(byte_level),
            Self::SmolLm => PreTokenizerWrapper::Sequence(Sequence::new(vec![
                PreTokenizerWrapper::Digits(Digits::new(true)),
                PreTokenizerWrapper::ByteLevel(byte_level),
            ])),
        }
    }
}

/// GPT-2's reversible byte -> printable unicode map (`bytes_to_unicode`): printable Latin-1 bytes
/// map to themselves, the other 68 bytes to `U+0100..` in byte order.
pub fn byte_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for (b, slot) in table.iter_mut().enumerate() {
        let printable = (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
        let code = if printable {
            b as u32
        } else {
            let c = next;
            next += 1;
            c
        };
        // All codes are below 0x200, valid scalar values.
        *slot = char::from_u32(code).unwrap_or('\u{fffd}');
    }
    table
}

/// Builds a byte-level BPE tokenizer from a vocabulary (token strings in the GPT-2 byte alphabet,
/// id = index), merges, and the ids to register as special tokens.
pub fn byte_level_bpe(
    tokens: &[String],
    merges: Vec<(String, String)>,
    special_ids: &[u32],
    pre: PreTokenizerKind,
) -> Result<Tokenizer> {
    let mut vocab = Vocab::default();
    for (i, t) in tokens.iter().enumerate() {
        let id = u32::try_from(i)
            .map_err(|_| ModelError::Tokenizer("vocabulary larger than u32".into()))?;
        // Duplicated strings keep their first id.
        vocab.entry(t.clone()).or_insert(id);
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| ModelError::Tokenizer(format!("invalid bpe vocabulary or merges: {e}")))?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(pre.build()));
    tok.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
    let specials: Vec<AddedToken> = special_ids
        .iter()
        .filter_map(|&id| tokens.get(id as usize))
        .map(|t| AddedToken::from(t.clone(), true))
        .collect();
    if !specials.is_empty() {
        tok.add_special_tokens(specials)
            .map_err(|e| ModelError::Tokenizer(format!("cannot add special tokens: {e}")))?;
    }
    Ok(tok)
}

/// A tokenizer plus how to frame a prompt (optional BOS).
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    prepend_bos: Option<u32>,
    add_special_tokens: bool,
    chat_template: Option<String>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("prepend_bos", &self.prepend_bos)
            .finish()
    }
}

impl TextTokenizer {
    /// Wraps a `tokenizers` tokenizer. `prepend_bos` is pushed before every encoded prompt;
    /// `add_special_tokens` is passed to the tokenizer's own post-processor.
    pub fn new(inner: Tokenizer, prepend_bos: Option<u32>, add_special_tokens: bool) -> Self {
        Self {
            inner,
            prepend_bos,
            add_special_tokens,
            chat_template: None,
        }
    }

    /// The same tokenizer with `template` as its chat template.
    pub fn with_chat_template(mut self, template: Option<String>) -> Self {
        self.chat_template = template;
        self
    }

    /// The model's chat template (Jinja), if it has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The string of a token id (special tokens included), if the vocabulary has it.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The chat template of a directory model: `chat_template` in `tokenizer_config.json`
    /// (a string, or a list of named templates of which `default` is taken); `None` when the
    /// file or the key is absent.
    pub fn chat_template_of_dir(dir: &Path) -> Result<Option<String>> {
        let path = dir.join("tokenizer_config.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ModelError::io(&path, e)),
        };
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::Tokenizer(format!("{}: invalid json: {e}", path.display())))?;
        match v.get("chat_template") {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(t)) => Ok(Some(t.clone())),
            Some(serde_json::Value::Array(named)) => Ok(named
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
                .map(str::to_string)),
            Some(_) => Err(ModelError::Tokenizer(format!(
                "{}: chat_template is neither a string nor a list of named templates",
                path.display()
            ))),
        }
    }

    /// Loads an HF `tokenizer.json` (its post-processor decides about BOS).
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = Tokenizer::from_file(path)
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Self::new(inner, None, true))
    }

    /// Builds the tokenizer embedded in GGUF metadata (`tokenizer.ggml.*`; only the `gpt2`
    /// byte-level BPE model is supported). A BOS is prepended when
    /// `tokenizer.ggml.add_bos_token` is true.
    pub fn from_gguf_metadata(metadata: &HashMap<String, gguf_file::Value>) -> Result<Self> {
        let model = gguf_string(metadata, "tokenizer.ggml.model")
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        if model != "gpt2" {
            return Err(ModelError::Tokenizer(format!(
                "unsupported tokenizer.ggml.model {model:?} (only gpt2 byte-level bpe)"
            )));
        }
        let pre = match metadata.get("tokenizer.ggml.pre") {
            Some(_) => PreTokenizerKind::from_gguf_pre(
                gguf_string(metadata, "tokenizer.ggml.pre")
                    .map_err(|e| ModelError::Tokenizer(e.to_string()))?,
            )?,
            None => PreTokenizerKind::Gpt2,
        };
        let tokens = string_array(metadata, "tokenizer.ggml.tokens")?;
        let merges = string_array(metadata, "tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| {
                        ModelError::Tokenizer(format!(
                            "merge {m:?} is not two space-separated tokens"
                        ))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut special_ids = Vec::new();
        if let Some(gguf_file::Value::Array(types)) = metadata.get("tokenizer.ggml.token_type") {
            for (id, ty) in types.iter().enumerate() {
                let ty = gguf_value_u64(ty, "tokenizer.ggml.token_type")
                    .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
                if ty == GGUF_TOKEN_TYPE_CONTROL || ty == GGUF_TOKEN_TYPE_USER_DEFINED {
                    special_ids.push(id as u32);
                }
            }
        }
        let id_of = |key: &str| -> Result<Option<u32>> {
            match metadata.get(key) {
                None => Ok(None),
                Some(v) => {
                    let id =
                        gguf_value_u64(v, key).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
                    if id as usize >= tokens.len() {
                        return Err(ModelError::Tokenizer(format!(
                            "{key} = {id} is outside the vocabulary of {}",
                            tokens.len()
                        )));
                    }
                    Ok(Some(id as u32))
                }
            }
        };
        let bos = id_of("tokenizer.ggml.bos_token_id")?;
        let eos = id_of("tokenizer.ggml.eos_token_id")?;
        special_ids.extend(bos);
        special_ids.extend(eos);
        special_ids.sort_unstable();
        special_ids.dedup();
        let add_bos = match metadata.get("tokenizer.ggml.add_bos_token") {
            Some(gguf_file::Value::Bool(b)) => *b,
            Some(other) => {
                return Err(ModelError::Tokenizer(format!(
                    "tokenizer.ggml.add_bos_token must be a bool, got {:?}",
                    other.value_type()
                )))
            }
            None => false,
        };
        let prepend_bos = match (add_bos, bos) {
            (true, Some(id)) => Some(id),
            (true, None) => {
                return Err(ModelError::Tokenizer(
                    "tokenizer.ggml.add_bos_token is set but there is no bos_token_id".into(),
                ))
            }
            (false, _) => None,
        };
        let chat_template = match metadata.get("tokenizer.chat_template") {
            None => None,
            Some(gguf_file::Value::String(t)) => Some(t.clone()),
            Some(other) => {
                return Err(ModelError::Tokenizer(format!(
                    "tokenizer.chat_template must be a string, got {:?}",
                    other.value_type()
                )))
            }
        };
        let inner = byte_level_bpe(&tokens, merges, &special_ids, pre)?;
        Ok(Self::new(inner, prepend_bos, false).with_chat_template(chat_template))
    }

    /// The wrapped tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Id of a token string.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Encodes a prompt (with BOS / special tokens as configured).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, self.add_special_tokens)
            .map_err(|e| ModelError::Tokenizer(format!("encode failed: {e}")))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        ids.extend(self.prepend_bos);
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Decodes ids to text, dropping special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| ModelError::Tokenizer(format!("decode failed: {e}")))
    }

    /// Writes the tokenizer as `tokenizer.json`.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner
            .save(path, false)
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))
    }
}

fn string_array(metadata: &HashMap<String, gguf_file::Value>, key: &str) -> Result<Vec<String>> {
    match metadata.get(key) {
        Some(gguf_file::Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                gguf_file::Value::String(s) => Ok(s.clone()),
                other => Err(ModelError::Tokenizer(format!(
                    "{key} holds a {:?}, expected strings",
                    other.value_type()
                ))),
            })
            .collect(),
        Some(other) => Err(ModelError::Tokenizer(format!(
            "{key} must be an array, got {:?}",
            other.value_type()
        ))),
        None => Err(ModelError::Tokenizer(format!("missing {key}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_is_gpt2() {
        let t = byte_to_unicode();
        assert_eq!(t[b'a' as usize], 'a');
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[0], 'Ā');
        let mut seen: Vec<char> = t.to_vec();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 256);
    }

    #[test]
    fn reads_the_chat_template_of_a_directory() {
        let dir = std::env::temp_dir().join(format!("marill-chat-tpl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(TextTokenizer::chat_template_of_dir(&dir).unwrap(), None);
        let f = dir.join("tokenizer_config.json");
        std::fs::write(&f, r#"{"chat_template": "{{ messages[0].content }}"}"#).unwrap();
        assert_eq!(
            TextTokenizer::chat_template_of_dir(&dir)
                .unwrap()
                .as_deref(),
            Some("{{ messages[0].content }}")
        );
        std::fs::write(
            &f,
            r#"{"chat_template": [{"name": "tool_use", "template": "t"}, {"name": "default", "template": "d"}]}"#,
        )
        .unwrap();
        assert_eq!(
            TextTokenizer::chat_template_of_dir(&dir)
                .unwrap()
                .as_deref(),
            Some("d")
        );
        std::fs::write(&f, r#"{"chat_template": 3}"#).unwrap();
        assert!(TextTokenizer::chat_template_of_dir(&dir).is_err());
        std::fs::write(&f, "not json").unwrap();
        assert!(TextTokenizer::chat_template_of_dir(&dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rejects_unknown_pre_tokenizer() {
        let e = PreTokenizerKind::from_gguf_pre("qwen2").expect_err("unsupported");
        assert!(e
            .to_string()
            .contains("unsupported tokenizer.ggml.pre \"qwen2\""));
    }
}
