//! Little-endian encoding of the explicit parts of correlation bundles; every read is checked.

use super::CorrelationError;

/// Appends ring elements.
pub fn put_u64s(out: &mut Vec<u8>, vs: &[u64]) {
    out.reserve(vs.len() * 8);
    for v in vs {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Appends the low `width` bytes (1..=8) of each value: values known to fit `8·width` bits
/// (e.g. shares of a residue mod `2^s`, [`Reader::words`] reads them back).
pub fn put_words(out: &mut Vec<u8>, vs: &[u64], width: usize) {
    out.reserve(vs.len() * width);
    for v in vs {
        out.extend_from_slice(&v.to_le_bytes()[..width]);
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

    /// Next `n` values of `width` bytes each (1..=8; see [`put_words`]), zero-extended.
    pub fn words(&mut self, n: usize, width: usize) -> Result<Vec<u64>, CorrelationError> {
        if !(1..=8).contains(&width) {
            return Err(CorrelationError::Malformed {
                detail: format!("word width {width} not in 1..=8"),
            });
        }
        let len = n.checked_mul(width).ok_or(CorrelationError::Malformed {
            detail: "length overflow".into(),
        })?;
        let b = self.take(len)?;
        Ok(b.chunks_exact(width)
            .map(|c| {
                let mut w = [0u8; 8];
                w[..width].copy_from_slice(c);
                u64::from_le_bytes(w)
            })
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
