//! API keys (`--api-keys FILE`): one key a line, `#` comments and blank lines skipped. A key
//! is compared in time independent of where it differs.

use std::path::Path;
use thiserror::Error;

/// API key file failures.
#[derive(Debug, Error)]
pub enum KeysError {
    /// The file cannot be read.
    #[error("reading API keys from {path}: {source}")]
    Read {
        /// the file
        path: String,
        /// why
        source: std::io::Error,
    },
    /// The file holds no key.
    #[error("{0} holds no API key")]
    Empty(String),
}

/// The keys a client may present.
#[derive(Clone)]
pub struct ApiKeys(Vec<String>);

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.0.len())
    }
}

impl ApiKeys {
    /// The keys of `text` (one a line).
    pub fn parse(text: &str) -> Self {
        Self(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect(),
        )
    }

    /// Reads a key file; an empty one is an error (it would lock every client out).
    pub fn load(path: &Path) -> Result<Self, KeysError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeysError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let k = Self::parse(&text);
        if k.0.is_empty() {
            return Err(KeysError::Empty(path.display().to_string()));
        }
        Ok(k)
    }

    /// Whether `given` is one of the keys.
    pub fn contains(&self, given: &str) -> bool {
        self.0.iter().fold(false, |found, k| {
            found | same(k.as_bytes(), given.as_bytes())
        })
    }
}

/// Equal bytes, comparing every byte of equal-length inputs.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_lines() {
        let k = ApiKeys::parse("# team\nsk-one\n\n  sk-two  \n");
        assert!(k.contains("sk-one") && k.contains("sk-two"));
        assert!(!k.contains("sk-on") && !k.contains("") && !k.contains("# team"));
        assert!(ApiKeys::parse("# only a comment\n").0.is_empty());
    }
}
