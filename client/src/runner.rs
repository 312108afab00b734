//! The client's side of a generation: its public prefix (the first `n_public` layers in
//! plaintext, with their KV cache) and the private suffix as the client sees it, a
//! [`SuffixRunner`] (two parties in this process, two workers over links, or the cluster).

use anyhow::Result;
use marill_model::Llama;
use marill_mpc::channel::CommStats;

/// The two parties as the client sees them: give them shares of the prefix output (T × d),
/// get back the reconstructed final normalised hidden state of the last rows asked for.
pub trait SuffixRunner {
    /// One step (prefill of T tokens, or one decoded token): the final hidden state of the
    /// last `out_rows` rows (out_rows × d). Generation asks for one: the workers return
    /// nothing of the other rows.
    fn step(&mut self, x: &[f32], out_rows: usize) -> Result<Vec<f32>>;
    /// Online communication of party 0 so far.
    fn comm(&self) -> CommStats;
    /// Correlation bytes both parties received from the dealer for the steps so far (made
    /// ahead of the steps or during them), when the runner learns it.
    fn dealer_bytes(&self) -> Option<u64> {
        None
    }
    /// The generation is over (a remote session is closed; nothing to do in process).
    fn end(&mut self) -> Result<()> {
        Ok(())
    }
}

/// The client's public prefix: the first `n_public` layers run in plaintext on the tokens so
/// far, with their KV cache.
pub struct PublicPrefix<'a> {
    /// the model (its public layers and head)
    pub model: &'a Llama,
    cache: marill_model::KvCache,
    n_public: usize,
    /// tokens processed so far
    pub pos: usize,
}

impl<'a> PublicPrefix<'a> {
    /// Before the first token.
    pub fn new(model: &'a Llama, n_public: usize) -> Self {
        Self {
            model,
            cache: model.new_cache(),
            n_public,
            pos: 0,
        }
    }

    /// The hidden state after the public layers for `tokens` at the next positions, flattened,
    /// with its `(rows, width)`; advances the position.
    pub fn hidden(&mut self, tokens: &[u32]) -> Result<(Vec<f32>, usize, usize)> {
        let h = self.model.embed(tokens)?;
        let h = self
            .model
            .forward_layers(&h, 0..self.n_public, &mut self.cache, self.pos)?;
        let (_, t, d) = h.dims3()?;
        self.pos += t;
        Ok((h.flatten_all()?.to_vec1()?, t, d))
    }
}
