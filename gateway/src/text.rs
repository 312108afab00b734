//! Text as it is generated: each new token's text (the decoded text of all tokens so far, less
//! what was already sent, so byte-level tokens that split a UTF-8 character wait for the rest),
//! and stop sequences: text that might be the start of a stop sequence is held back until it is
//! known not to be; a completed stop sequence ends the generation and is not part of the text
//! (OpenAI's behaviour).

/// What one token adds.
#[derive(Debug, Default, PartialEq)]
pub struct Delta {
    /// text to send now (may be empty)
    pub text: String,
    /// a stop sequence was completed: the generation ends
    pub stopped: bool,
}

/// The text of one generation so far.
pub struct TextStream {
    ids: Vec<u32>,
    stops: Vec<String>,
    /// bytes of the decoded text already sent
    sent: usize,
    done: bool,
}

/// The longest suffix of `text` that is a proper prefix of `stop` (in bytes, on a char boundary).
fn partial_stop(text: &str, stop: &str) -> usize {
    let max = stop.len().saturating_sub(1).min(text.len());
    (1..=max)
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n)
                && stop.is_char_boundary(n)
                && text[text.len() - n..] == stop[..n]
        })
        .unwrap_or(0)
}

impl TextStream {
    /// A generation that ends at any of `stops` (empty strings are ignored).
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            ids: Vec::new(),
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            sent: 0,
            done: false,
        }
    }

    /// Adds `id`; `decode` turns all ids so far into text.
    pub fn push<E>(
        &mut self,
        id: u32,
        decode: impl Fn(&[u32]) -> Result<String, E>,
    ) -> Result<Delta, E> {
        if self.done {
            return Ok(Delta::default());
        }
        self.ids.push(id);
        let text = decode(&self.ids)?;
        // a character split across tokens decodes to U+FFFD until its last byte comes
        if text.ends_with('\u{fffd}') {
            return Ok(Delta::default());
        }
        let Some(fresh) = text.get(self.sent..) else {
            return Ok(Delta::default());
        };
        // a stop sequence completed in the text not yet sent (held-back text included)
        let hit = self
            .stops
            .iter()
            .filter_map(|s| fresh.find(s.as_str()))
            .min();
        if let Some(at) = hit {
            self.done = true;
            let out = fresh[..at].to_string();
            self.sent += at;
            return Ok(Delta {
                text: out,
                stopped: true,
            });
        }
        let hold = self
            .stops
            .iter()
            .map(|s| partial_stop(fresh, s))
            .max()
            .unwrap_or(0);
        let end = fresh.len() - hold;
        let out = fresh[..end].to_string();
        self.sent += end;
        Ok(Delta {
            text: out,
            stopped: false,
        })
    }

    /// The generation ended without a stop sequence: the text held back, if any.
    pub fn finish<E>(&mut self, decode: impl Fn(&[u32]) -> Result<String, E>) -> Result<String, E> {
        if self.done {
            return Ok(String::new());
        }
        self.done = true;
        let text = decode(&self.ids)?;
        Ok(text.get(self.sent..).unwrap_or_default().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte-level vocabulary: token i is the bytes of `VOCAB[i]`.
    const VOCAB: &[&[u8]] = &[
        b"Hello", b" wor", b"ld", b"\n", b"\xc3", b"\xa9", b"END", b"!",
    ];

    fn decode(ids: &[u32]) -> Result<String, ()> {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&i| VOCAB[i as usize].to_vec())
            .collect();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn run(ids: &[u32], stops: &[&str]) -> (Vec<String>, bool, String) {
        let mut t = TextStream::new(stops.iter().map(|s| s.to_string()).collect());
        let mut parts = Vec::new();
        for &id in ids {
            let d = t.push(id, decode).unwrap();
            parts.push(d.text);
            if d.stopped {
                return (parts, true, String::new());
            }
        }
        let rest = t.finish(decode).unwrap();
        (parts, false, rest)
    }

    #[test]
    fn deltas_add_up_to_the_text() {
        let (parts, stopped, rest) = run(&[0, 1, 2, 7], &[]);
        assert_eq!(parts, ["Hello", " wor", "ld", "!"]);
        assert!(!stopped);
        assert_eq!(rest, "");
    }

    #[test]
    fn a_split_character_waits_for_its_last_byte() {
        let (parts, _, _) = run(&[4, 5, 7], &[]);
        assert_eq!(parts, ["", "é", "!"]);
    }

    #[test]
    fn a_stop_sequence_ends_and_is_cut() {
        let (parts, stopped, _) = run(&[0, 1, 2, 3, 0], &["ld\n"]);
        assert!(stopped);
        // " wor" is sent, "ld" held until "\n" completes the stop
        assert_eq!(parts.concat(), "Hello wor");
        assert_eq!(parts, ["Hello", " wor", "", ""]);
    }

    #[test]
    fn held_text_that_is_no_stop_is_sent_later_or_at_the_end() {
        let (parts, stopped, rest) = run(&[0, 1, 2, 7], &["ld\n"]);
        assert!(!stopped);
        assert_eq!(parts.concat() + &rest, "Hello world!");
        let (parts, _, rest) = run(&[0, 1, 2], &["ld\n"]);
        assert_eq!(parts.concat(), "Hello wor");
        assert_eq!(rest, "ld");
    }

    #[test]
    fn the_earliest_of_several_stops_wins() {
        let (parts, stopped, _) = run(&[0, 1, 2, 6], &["END", "o w"]);
        assert!(stopped);
        assert_eq!(parts.concat(), "Hell");
    }
}
