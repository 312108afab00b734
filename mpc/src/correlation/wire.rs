//! Little-endian encoding of the explicit parts of correlation bundles; every read is checked.

use super::CorrelationError;

/// Appends ring elements.
pub fn put_u64s(out: &mut Vec<u8>, vs: &[u64]) {
    out.reserve(vs.len() * 8);
    for v in vs {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// A checked reader over a byte slice.
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads from the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// Next `n` ring elements.
    pub fn u64s(&mut self, n: usize) -> Result<Vec<u64>, CorrelationError> {
        let len = n.checked_mul(8).ok_or(CorrelationError::Malformed {
            detail: "length overflow".into(),
        })?;
        let b = self.take(len)?;
        Ok(b.chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("chunk of 8")))
            .collect())
    }

    /// Next `n` raw bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], CorrelationError> {
        if self.bytes.len() - self.pos < n {
            return Err(CorrelationError::Malformed {
                detail: format!(
                    "truncated bundle: need {n} more bytes at offset {}, have {}",
                    self.pos,
                    self.bytes.len() - self.pos
                ),
            });
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// The unread rest.
    pub fn rest(&self) -> &'a [u8] {
        &self.bytes[self.pos..]
    }

    /// Advances by `n` bytes already consumed through [`Reader::rest`].
    pub fn advance(&mut self, n: usize) -> Result<(), CorrelationError> {
        self.take(n).map(|_| ())
    }

    /// Errors unless everything was read.
    pub fn finish(self) -> Result<(), CorrelationError> {
        if self.pos != self.bytes.len() {
            return Err(CorrelationError::Malformed {
                detail: format!("{} trailing bytes in bundle", self.bytes.len() - self.pos),
            });
        }
        Ok(())
    }
}
