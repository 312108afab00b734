//! AES-128 in counter mode as a pseudo-random generator (hardware AES-NI/VAES through the `aes`
//! crate's run-time detection).
//!
//! Used for everything random in the protocols: the dealer's own randomness and the seed
//! compression of correlations (the dealer and one party expand the same seed, so that party's
//! half never travels). A stream is identified by `(seed, stream id)`: the counter block is
//! `stream_id (64 bits) || block index (64 bits)`, so distinct correlations use disjoint streams.
//! Throughput on this machine is reported by `cargo bench -p marill-mpc --bench prg`.

use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
use aes::Aes128;

/// A 128-bit PRG seed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Seed(pub [u8; 16]);

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Seeds are secrets: never print them.
        f.write_str("Seed(<redacted>)")
    }
}

impl Seed {
    /// A seed from a 64-bit number (tests and reproducible benchmarks only).
    pub fn from_u64(x: u64) -> Self {
        let mut s = [0u8; 16];
        s[..8].copy_from_slice(&x.to_le_bytes());
        s[8..].copy_from_slice(&(!x).rotate_left(17).to_le_bytes());
        Self(s)
    }

    /// A fresh secret seed from the operating system's CSPRNG (`getrandom`: the `getrandom`
    /// system call on Linux). Every secret seed of the system (dealer seeds, the split of the
    /// private weights, the client's input masks) comes from here.
    ///
    /// # Panics
    /// When the OS has no entropy source to give (no `getrandom`/`/dev/urandom`): the process
    /// cannot make secrets then, and going on with a weaker source is not an option.
    pub fn random() -> Self {
        Self::try_random()
            .expect("the operating system's CSPRNG failed: no secret seed can be made")
    }

    /// [`Seed::random`], with the OS CSPRNG's failure as an error.
    pub fn try_random() -> Result<Self, getrandom::Error> {
        let mut s = [0u8; 16];
        getrandom::fill(&mut s)?;
        Ok(Self(s))
    }

    /// Derives an independent child seed for a labelled purpose.
    pub fn derive(&self, label: u64) -> Self {
        let mut p = Prg::new(*self, label ^ 0x5eed_0000_0000_0000);
        let mut s = [0u8; 16];
        p.fill_bytes(&mut s);
        Self(s)
    }
}

/// Where a process's secret seeds come from: the OS CSPRNG ([`Seed::random`]), or a number
/// given for a reproducible test or benchmark run (derived seeds, predictable to anyone who
/// knows the number: the command that takes it says so).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seeding {
    /// fresh seeds from the OS CSPRNG (the default)
    Os,
    /// seeds derived from a given number (reproducible, not secret)
    Fixed(u64),
}

/// What a secret seed is for (distinct purposes give independent seeds from one number).
#[derive(Clone, Copy, Debug)]
pub enum Purpose {
    /// the dealer's seed
    Dealer,
    /// the split of the private weights into the provider's and the helper's shares
    WeightSplit,
    /// the client's input masks of session `n`
    InputMasks(u64),
}

impl Purpose {
    fn label(self) -> u64 {
        match self {
            Purpose::Dealer => 0,
            Purpose::WeightSplit => 0x9e37,
            Purpose::InputMasks(n) => 0x6d61_736b_0000_0000 ^ n,
        }
    }
}

impl Seeding {
    /// The seed for `purpose`: fresh from the OS CSPRNG, or derived from the given number.
    pub fn seed(self, purpose: Purpose) -> Seed {
        match self {
            Seeding::Os => Seed::random(),
            Seeding::Fixed(s) => Seed::from_u64(s ^ purpose.label()),
        }
    }
}

const BATCH: usize = 8;

/// AES-128-CTR keystream generator.
pub struct Prg {
    cipher: Aes128,
    stream: u64,
    counter: u64,
    buf: [u8; 16 * BATCH],
    pos: usize,
}

impl Prg {
    /// A generator for stream `stream` of `seed`.
    pub fn new(seed: Seed, stream: u64) -> Self {
        Self {
            cipher: Aes128::new(GenericArray::from_slice(&seed.0)),
            stream,
            counter: 0,
            buf: [0u8; 16 * BATCH],
            pos: 16 * BATCH,
        }
    }

    fn refill(&mut self) {
        let mut blocks = [GenericArray::from([0u8; 16]); BATCH];
        for b in blocks.iter_mut() {
            b[..8].copy_from_slice(&self.stream.to_le_bytes());
            b[8..].copy_from_slice(&self.counter.to_le_bytes());
            self.counter = self.counter.wrapping_add(1);
        }
        self.cipher.encrypt_blocks(&mut blocks);
        for (i, b) in blocks.iter().enumerate() {
            self.buf[i * 16..(i + 1) * 16].copy_from_slice(b);
        }
        self.pos = 0;
    }

    /// Fills `out` with keystream bytes.
    pub fn fill_bytes(&mut self, out: &mut [u8]) {
        let mut done = 0;
        while done < out.len() {
            if self.pos == self.buf.len() {
                self.refill();
            }
            let take = (self.buf.len() - self.pos).min(out.len() - done);
            out[done..done + take].copy_from_slice(&self.buf[self.pos..self.pos + take]);
            self.pos += take;
            done += take;
        }
    }

    /// Fills `out` with uniform ring elements. Bulk path: whole 8-block batches go straight
    /// from AES into the output.
    pub fn fill_u64(&mut self, out: &mut [u64]) {
        let mut i = 0;
        // drain buffered bytes first, 8 at a time
        while i < out.len() && self.pos + 8 <= self.buf.len() && self.pos != self.buf.len() {
            out[i] = u64::from_le_bytes(self.buf[self.pos..self.pos + 8].try_into().unwrap());
            self.pos += 8;
            i += 1;
        }
        let mut blocks = [GenericArray::from([0u8; 16]); BATCH];
        while out.len() - i >= 2 * BATCH {
            for b in blocks.iter_mut() {
                b[..8].copy_from_slice(&self.stream.to_le_bytes());
                b[8..].copy_from_slice(&self.counter.to_le_bytes());
                self.counter = self.counter.wrapping_add(1);
            }
            self.cipher.encrypt_blocks(&mut blocks);
            for b in blocks.iter() {
                out[i] = u64::from_le_bytes(b[..8].try_into().unwrap());
                out[i + 1] = u64::from_le_bytes(b[8..].try_into().unwrap());
                i += 2;
            }
        }
        while i < out.len() {
            out[i] = self.next_u64();
            i += 1;
        }
    }

    /// A vector of `n` uniform ring elements.
    pub fn ring_vec(&mut self, n: usize) -> Vec<u64> {
        let mut v = vec![0u64; n];
        self.fill_u64(&mut v);
        v
    }

    /// One uniform ring element.
    pub fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }

    /// One uniform 128-bit value.
    pub fn next_u128(&mut self) -> u128 {
        let mut b = [0u8; 16];
        self.fill_bytes(&mut b);
        u128::from_le_bytes(b)
    }

    /// A fresh seed drawn from this stream.
    pub fn next_seed(&mut self) -> Seed {
        let mut s = [0u8; 16];
        self.fill_bytes(&mut s);
        Seed(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_stream_separated() {
        let s = Seed::from_u64(7);
        let a = Prg::new(s, 1).ring_vec(100);
        let b = Prg::new(s, 1).ring_vec(100);
        let c = Prg::new(s, 2).ring_vec(100);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    /// Random seeds come from the OS CSPRNG: all distinct, all 128 bits used, balanced bits.
    /// (The old seeds were two SipHash outputs of std's `RandomState`, whose keys go up by
    /// one per call in a thread.)
    #[test]
    fn random_seeds_are_distinct_and_balanced() {
        let seeds: Vec<[u8; 16]> = (0..256).map(|_| Seed::random().0).collect();
        let distinct: std::collections::HashSet<_> = seeds.iter().collect();
        assert_eq!(distinct.len(), seeds.len());
        let ones: u32 = seeds.iter().flatten().map(|b| b.count_ones()).sum();
        // 32768 fair bits: mean 16384, sd 90.5; 6 sd either way
        assert!((16384 - 543..=16384 + 543).contains(&ones), "{ones} ones");
    }

    #[test]
    fn fixed_seedings_repeat_and_os_seedings_do_not() {
        let f = Seeding::Fixed(7);
        assert_eq!(f.seed(Purpose::Dealer), f.seed(Purpose::Dealer));
        assert_ne!(f.seed(Purpose::Dealer), f.seed(Purpose::WeightSplit));
        assert_ne!(
            f.seed(Purpose::InputMasks(0)),
            f.seed(Purpose::InputMasks(1))
        );
        assert_ne!(
            Seeding::Os.seed(Purpose::Dealer),
            Seeding::Os.seed(Purpose::Dealer)
        );
    }

    #[test]
    fn bulk_and_scalar_paths_agree() {
        let s = Seed::from_u64(9);
        let mut p = Prg::new(s, 0);
        let mut bulk = vec![0u64; 37];
        p.next_u64();
        p.fill_u64(&mut bulk);
        let mut q = Prg::new(s, 0);
        q.next_u64();
        let scalar: Vec<u64> = (0..37).map(|_| q.next_u64()).collect();
        assert_eq!(bulk, scalar);
    }

    #[test]
    fn bits_look_balanced() {
        let v = Prg::new(Seed::from_u64(3), 0).ring_vec(1 << 14);
        let ones: u32 = v.iter().map(|x| x.count_ones()).sum();
        let total = (v.len() * 64) as f64;
        // 5 sigma bound for a fair coin
        assert!((ones as f64 - total / 2.0).abs() < 5.0 * (total / 4.0).sqrt());
    }

    #[test]
    fn seed_debug_is_redacted() {
        assert_eq!(format!("{:?}", Seed::from_u64(1)), "Seed(<redacted>)");
    }
}
