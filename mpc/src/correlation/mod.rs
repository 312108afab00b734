//! Dealer correlations: what the ops consume, how they are generated offline, how they travel
//! seed-compressed, and the single-use store each party keeps.
//!
//! Every correlation is a *bundle* with a sequence number `id` and a request ([`CorrRequest`]:
//! kind and shape). Party `b` shares a seed `seed_b` with the dealer; all of party b's random
//! shares of bundle `id` are drawn from `AES-CTR(seed_b, stream = id)`, so they never travel.
//! Only the *explicit* part is sent: for party 0 just FSS correction words (if any); for party 1
//! the corrections that make the shares add up (e.g. `C1 = A·B − C0` of a Beaver triple) plus
//! FSS correction words (CrypTen's TTP seed compression, extended to FSS keys).
//!
//! Each party's [`CorrelationStore`] hands bundles out strictly in id order and remembers a
//! watermark: a bundle whose id is below it was consumed and can never be accepted or used again.

pub mod dealer;
pub mod manifest;
pub mod material;
pub mod wire;

use crate::party::PartyId;
use crate::prg::{Prg, Seed};
use std::collections::BTreeMap;
use thiserror::Error;

pub use dealer::{Dealer, SharedDealer};
pub use manifest::{key_bucket, ManifestCache, StepKey, StepShape, KEY_BUCKET};
pub use material::*;

/// Correlation errors.
#[derive(Debug, Error, PartialEq)]
pub enum CorrelationError {
    /// The correlation with this id was already consumed (single use).
    #[error("correlation {id} was already consumed")]
    AlreadyConsumed {
        /// bundle id
        id: u64,
    },
    /// The next bundle is not what the protocol asked for.
    #[error("correlation {id} mismatch: protocol needs {wanted}, bundle holds {found}")]
    Mismatch {
        /// bundle id
        id: u64,
        /// what the protocol asked for
        wanted: String,
        /// what the bundle carries
        found: String,
    },
    /// No bundle is available.
    #[error("correlation {id} is not available ({why})")]
    Unavailable {
        /// bundle id
        id: u64,
        /// reason
        why: String,
    },
    /// A bundle could not be decoded.
    #[error("malformed correlation bundle: {detail}")]
    Malformed {
        /// what is wrong
        detail: String,
    },
    /// A request is invalid.
    #[error("invalid correlation request: {detail}")]
    InvalidRequest {
        /// what is wrong
        detail: String,
    },
}

/// What a protocol step needs from the dealer: kind and shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum CorrRequest {
    /// `n` elementwise Beaver triples `(a, b, a·b)`.
    MulTriples {
        /// count
        n: usize,
    },
    /// `n` square pairs `(a, a²)`.
    SquarePairs {
        /// count
        n: usize,
    },
    /// Normalisation material for `rows × d` values: one mask `a` serves the squares (`a²`),
    /// the declared-range check of the input ([`NormCheck`]: the opened `x − a` is a masked
    /// opening of `x` with mask `−a`) and, when `product`, the product with a per-row value
    /// (`b` per row, `c = a·b_row`), so the input is opened once and the row value once per row.
    NormTriple {
        /// rows
        rows: usize,
        /// row width
        d: usize,
        /// with `b` and `c` (the norm without γ); without, only `a`, `a²` and the check
        product: bool,
        /// the range check's shifts and comparison widths
        check: NormCheck,
    },
    /// A Beaver matrix triple `A (m×k), B (k×n), C = A·B`.
    MatTriple {
        /// rows of A
        m: usize,
        /// inner dimension
        k: usize,
        /// columns of B
        n: usize,
    },
    /// The mask `B (k×n)` of a fixed private weight `W`; `W − B` is opened once per model load.
    WeightMask {
        /// weight identifier (unique within a session)
        weight: u64,
        /// rows
        k: usize,
        /// columns
        n: usize,
    },
    /// A triple `A (m×k), C = A·B_w` against the registered mask of weight `weight`.
    WeightTriple {
        /// weight identifier
        weight: u64,
        /// rows of the activation
        m: usize,
        /// inner dimension
        k: usize,
        /// columns
        n: usize,
    },
    /// A truncation mask for an `m×k` activation fused with a triple against the registered
    /// mask of weight `weight` (k×n): the truncation's opening doubles as the activation's
    /// opening for the product, at the cost of `m·k·n` dealer values (for small n: LoRA `A`),
    /// each a residue mod `2^shift` of `⌈shift/8⌉` bytes (`E` is a multiple of `2^(64−shift)`).
    TruncWeight {
        /// weight identifier
        weight: u64,
        /// rows of the activation
        m: usize,
        /// inner dimension
        k: usize,
        /// columns
        n: usize,
        /// truncation of the activation
        shift: u32,
    },
    /// Masks for `n` values opened as `x + r`: truncation by each of `shifts`, and, when
    /// `cmp_bits > 0`, a DCF key for comparisons of `cmp_bits`-bit signed values.
    Mask {
        /// count
        n: usize,
        /// truncation amounts supported by this mask
        shifts: Vec<u32>,
        /// comparison width (0 = none)
        cmp_bits: u32,
        /// coarse comparisons: the DCF key covers bits `cmp_shift..cmp_bits − 1` of the mask
        /// only (`cmp_bits − 1 − cmp_shift` levels), so `[x < t]` is exact for `x ≥ t` and
        /// `x < t − 2^cmp_shift` and may be either value in between (see `ops::trunc`); 0 =
        /// exact comparisons
        cmp_shift: u32,
        /// shifts for which exact (borrow-corrected) truncation is prepared: a DCF key of
        /// `s` levels each
        exact: Vec<u32>,
    },
    /// DPF keys for `n` lookups into tables of `2^bits` entries.
    Lut {
        /// count
        n: usize,
        /// table index width
        bits: u32,
    },
    /// Bit-output DPF keys for `n` *signed* lookups into tables of `2^bits` entries (results
    /// carry a sign `s = ±1` known only to the dealer), and, when `partner_shift > 0`, a
    /// truncation mask for `n` partner values together with shares of `s·M_0`, `s·M_1`, so that
    /// the signed truncation `s·⌊y/2^shift⌋` of a partner `y` costs its opening only.
    SignedLut {
        /// count
        n: usize,
        /// table index width
        bits: u32,
        /// truncation of the partner values (0 = no partner)
        partner_shift: u32,
        /// the lookup's own input mask, fused with its interpolation product (see
        /// [`SignedInput`]); `None`: the input is opened with a separate `Mask`
        input: Option<SignedInput>,
    },
}

/// The declared-range check of a norm's input (see `ops::norm`): from the opening of `x − a`,
/// the coarse value `u = ⌊(x + 2^(coarse−1))/2^coarse⌋ (+1)` must be 0 or 1 for every element
/// (`Σ u(u−1) = 0` per row) and the fine value `v = ⌊x/2^fine⌋ (+1)` must have a small
/// `Σ v²` per row. The two row sums are opened masked and compared with DCF keys of
/// `coarse_bits − 1` and `fine_bits − 1` levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct NormCheck {
    /// shift of the coarse value (its row sum `Σ u(u−1)` must be 0)
    pub coarse: u32,
    /// shift of the fine value (its row sum `Σ v²` is bounded)
    pub fine: u32,
    /// comparison width of the coarse row sum
    pub coarse_bits: u32,
    /// comparison width of the fine row sum
    pub fine_bits: u32,
}

/// The input mask of a one-segment signed lookup, generated with the mask `a` of the lookup's
/// slope `s·T1[y]` so that the interpolation product `s·T1[y]·z` opens only `s·T1[y] − a`.
/// The remainder `z` is public up to dealer-known terms: with the input opened as
/// `c = x + r (+2^62)` and the cell index `y` truncated exactly (borrow `β` by a DCF),
/// `z = P_z(c) − M_z(c_hi) + 2^t·β` where `c_hi` is the top bit of `c − A` (`A` the segment
/// start). The dealer adds shares of `a·M_z(0)`, `a·M_z(1)`, and the borrow's DCF key has the
/// two-word payload `(1, a)` (`fss::dcf2`): one walk gives shares of `β` and of `a·β` (one key
/// of `33·shift + 16` bytes where two one-word keys took `50·shift + 16`).
/// The declared-range check then runs on the exact cell index instead of the input: the index
/// mask `α` has `range_bits` bits (the lookup reads its low `bits`), and comparison material
/// on `α` (a DCF key of `range_bits − 1` levels) compares the opened `y + α mod 2^range_bits`
/// with the first and last accepted cells; the input mask carries no comparison key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SignedInput {
    /// cell width in input ulps, log2 (the exact truncation giving the index)
    pub shift: u32,
    /// interpolation bits
    pub t: u32,
    /// width of the index mask and of the declared-range check on the cell index (more than
    /// the table's index bits: the check sees cells up to `2^(range_bits−1)` from its bounds)
    pub range_bits: u32,
}

impl SignedInput {
    /// The truncation shifts of the input mask: the cell and, when coarser than `t` bits,
    /// the remainder's.
    pub fn shifts(&self) -> Vec<u32> {
        if self.shift > self.t {
            vec![self.shift, self.shift - self.t]
        } else {
            vec![self.shift]
        }
    }
}

impl CorrRequest {
    /// A short description (kind and shape) for errors and manifests.
    pub fn describe(&self) -> String {
        format!("{self:?}")
    }

    /// Checks parameters before anything is generated.
    pub fn validate(&self) -> Result<(), CorrelationError> {
        let bad = |detail: String| Err(CorrelationError::InvalidRequest { detail });
        match self {
            CorrRequest::Mask {
                shifts,
                cmp_bits,
                cmp_shift,
                exact,
                ..
            } => {
                if shifts.iter().any(|&s| s == 0 || s > 62) {
                    return bad(format!("truncation shifts must be in 1..=62: {shifts:?}"));
                }
                if exact.iter().any(|s| !shifts.contains(s)) {
                    return bad(format!("exact shifts {exact:?} must be among {shifts:?}"));
                }
                if *cmp_bits == 1 || *cmp_bits > 64 {
                    return bad(format!("comparison width must be 0 or 2..=64: {cmp_bits}"));
                }
                // coarse comparisons keep at least one level and two bits of slack for the
                // dropped borrow (valid for |x − t| < 2^(n−1) − 2^shift)
                if *cmp_shift > 0 && (*cmp_bits == 0 || *cmp_shift + 3 > *cmp_bits) {
                    return bad(format!(
                        "coarse comparison shift {cmp_shift} needs a comparison width of at least {}: {cmp_bits}",
                        cmp_shift + 3
                    ));
                }
                Ok(())
            }
            CorrRequest::NormTriple { check: c, .. }
                if !(1..=61).contains(&c.fine)
                    || c.coarse <= c.fine
                    || c.coarse > 62
                    || !(2..=62).contains(&c.coarse_bits)
                    || !(2..=62).contains(&c.fine_bits) =>
            {
                bad(format!(
                    "norm check: shifts must satisfy 1 <= fine < coarse <= 62 and comparison widths be in 2..=62: {c:?}"
                ))
            }
            CorrRequest::TruncWeight { shift, .. } if *shift == 0 || *shift > 62 => {
                bad(format!("truncation shift must be in 1..=62: {shift}"))
            }
            CorrRequest::Lut { bits, .. } | CorrRequest::SignedLut { bits, .. }
                if !(1..=20).contains(bits) =>
            {
                bad(format!("table index width must be 1..=20: {bits}"))
            }
            CorrRequest::SignedLut { partner_shift, .. } if *partner_shift > 62 => bad(format!(
                "partner truncation must be in 0..=62: {partner_shift}"
            )),
            CorrRequest::SignedLut {
                bits,
                input: Some(i),
                ..
            } if !(1..=24).contains(&i.shift)
                || !(1..=24).contains(&i.t)
                || i.range_bits <= *bits
                || i.range_bits > 32 =>
            {
                bad(format!(
                    "signed lookup input: shift and t must be in 1..=24, the range check's width in {}..=32: {i:?}",
                    bits + 1
                ))
            }
            _ => Ok(()),
        }
    }
}

/// One correlation as it travels to one party.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Bundle {
    /// sequence number within the session
    pub id: u64,
    /// kind and shape
    pub req: CorrRequest,
    /// the part that cannot be derived from the party's seed
    pub explicit: Vec<u8>,
}

/// Where a store gets bundles it does not hold yet (an on-demand dealer, or a network stream).
pub trait BundleSupplier: Send {
    /// Returns bundle `id` for `party`, which must be of kind `req`.
    fn fetch(
        &mut self,
        party: PartyId,
        id: u64,
        req: &CorrRequest,
    ) -> Result<Bundle, CorrelationError>;

    /// A step named `key` begins with bundle `first_id` (the store's watermark). Returns the id
    /// it really begins with: a streaming dealer that generated ahead for a step that did not
    /// come skips those ids (never handed out, never reused). On-demand suppliers begin where
    /// asked.
    fn begin_step(
        &mut self,
        _party: PartyId,
        _key: StepKey,
        first_id: u64,
    ) -> Result<u64, CorrelationError> {
        Ok(first_id)
    }

    /// The step ended with `next_id` the next bundle to consume. Returns the id the store
    /// continues with (past any streamed bundle the step did not use).
    fn end_step(&mut self, _party: PartyId, next_id: u64) -> Result<u64, CorrelationError> {
        Ok(next_id)
    }
}

/// Counters of what a store consumed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// bundles consumed
    pub consumed: u64,
    /// explicit bytes received from the dealer
    pub explicit_bytes: u64,
}

/// A party's single-use store of correlations.
pub struct CorrelationStore {
    party: PartyId,
    seed: Seed,
    pending: BTreeMap<u64, Bundle>,
    /// bundles already expanded ahead of use (see [`CorrelationStore::expand_pending`])
    ready: BTreeMap<u64, (CorrRequest, Material, usize)>,
    next_id: u64,
    supplier: Option<Box<dyn BundleSupplier>>,
    stats: StoreStats,
}

impl CorrelationStore {
    /// A store for `party` with the seed it shares with the dealer.
    pub fn new(party: PartyId, seed: Seed) -> Self {
        Self {
            party,
            seed,
            pending: BTreeMap::new(),
            ready: BTreeMap::new(),
            next_id: 0,
            supplier: None,
            stats: StoreStats::default(),
        }
    }

    /// A store that fetches missing bundles from `supplier`.
    pub fn with_supplier(party: PartyId, seed: Seed, supplier: Box<dyn BundleSupplier>) -> Self {
        let mut s = Self::new(party, seed);
        s.supplier = Some(supplier);
        s
    }

    /// Resumes at a persisted watermark (ids below it count as consumed).
    pub fn resume_at(&mut self, next_id: u64) {
        self.next_id = self.next_id.max(next_id);
        self.pending = self.pending.split_off(&self.next_id);
        self.ready = self.ready.split_off(&self.next_id);
    }

    /// Tells the supplier that a step named `key` begins (a streaming dealer then sends the
    /// step's bundles unasked); continues at the id it names.
    pub fn begin_step(&mut self, key: StepKey) -> Result<(), CorrelationError> {
        if let Some(s) = self.supplier.as_mut() {
            let first = s.begin_step(self.party, key, self.next_id)?;
            self.resume_at(first);
        }
        Ok(())
    }

    /// Tells the supplier that the current step ended; continues at the id it names.
    pub fn end_step(&mut self) -> Result<(), CorrelationError> {
        if let Some(s) = self.supplier.as_mut() {
            let next = s.end_step(self.party, self.next_id)?;
            self.resume_at(next);
        }
        Ok(())
    }

    /// The next id to be consumed (everything below was consumed).
    pub fn watermark(&self) -> u64 {
        self.next_id
    }

    /// Counters.
    pub fn stats(&self) -> StoreStats {
        self.stats
    }

    /// Bundles received but not yet consumed.
    pub fn pending(&self) -> usize {
        self.pending.len() + self.ready.len()
    }

    /// Expands every received bundle into its material now (the seed expansion and key
    /// decoding that [`CorrelationStore::take`] would otherwise do on the critical path). This
    /// depends on dealer data only, so a worker does it ahead of the request, off the online
    /// phase. Kinds are still checked at `take`; a bundle that fails to expand stays pending and
    /// fails there with its error. Returns the number of bundles expanded.
    pub fn expand_pending(&mut self) -> usize {
        let ids: Vec<u64> = self.pending.keys().copied().collect();
        let mut done = 0;
        for id in ids {
            let b = &self.pending[&id];
            let mut prg = Prg::new(self.seed, id);
            if let Ok(m) = material::materialize(self.party, &b.req, &mut prg, &b.explicit) {
                let b = self.pending.remove(&id).expect("listed above");
                self.ready.insert(id, (b.req, m, b.explicit.len()));
                done += 1;
            }
        }
        done
    }

    /// Accepts a bundle from the dealer; a consumed or duplicate id is refused.
    pub fn insert(&mut self, bundle: Bundle) -> Result<(), CorrelationError> {
        if bundle.id < self.next_id {
            return Err(CorrelationError::AlreadyConsumed { id: bundle.id });
        }
        if self.pending.contains_key(&bundle.id) || self.ready.contains_key(&bundle.id) {
            return Err(CorrelationError::Mismatch {
                id: bundle.id,
                wanted: "a fresh bundle id".into(),
                found: "a duplicate of a pending bundle".into(),
            });
        }
        self.pending.insert(bundle.id, bundle);
        Ok(())
    }

    /// Consumes the next bundle, which must be of kind `req`, and expands it into material.
    pub fn take(&mut self, req: &CorrRequest) -> Result<Material, CorrelationError> {
        req.validate()?;
        let id = self.next_id;
        if let Some((have, m, explicit)) = self.ready.remove(&id) {
            if &have != req {
                let found = have.describe();
                self.ready.insert(id, (have, m, explicit));
                return Err(CorrelationError::Mismatch {
                    id,
                    wanted: req.describe(),
                    found,
                });
            }
            self.next_id = id + 1;
            self.stats.consumed += 1;
            self.stats.explicit_bytes += explicit as u64;
            return Ok(m);
        }
        let bundle = match self.pending.remove(&id) {
            Some(b) => b,
            None => match self.supplier.as_mut() {
                Some(s) => s.fetch(self.party, id, req)?,
                None => {
                    return Err(CorrelationError::Unavailable {
                        id,
                        why: "no bundle received yet".into(),
                    })
                }
            },
        };
        if bundle.id != id {
            return Err(CorrelationError::Mismatch {
                id,
                wanted: format!("bundle {id}"),
                found: format!("bundle {}", bundle.id),
            });
        }
        if &bundle.req != req {
            return Err(CorrelationError::Mismatch {
                id,
                wanted: req.describe(),
                found: bundle.req.describe(),
            });
        }
        // Consumed from here on, whether or not expansion succeeds.
        self.next_id = id + 1;
        self.stats.consumed += 1;
        self.stats.explicit_bytes += bundle.explicit.len() as u64;
        let mut prg = Prg::new(self.seed, id);
        material::materialize(self.party, req, &mut prg, &bundle.explicit)
    }

    /// Consumes a specific id (used to show that a second use is refused).
    pub fn take_id(&mut self, id: u64, req: &CorrRequest) -> Result<Material, CorrelationError> {
        if id < self.next_id {
            return Err(CorrelationError::AlreadyConsumed { id });
        }
        if id > self.next_id {
            return Err(CorrelationError::Unavailable {
                id,
                why: format!("bundles are consumed in order; next is {}", self.next_id),
            });
        }
        self.take(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expanded_ahead_is_the_same_material_and_still_single_use() {
        let reqs = [
            CorrRequest::MulTriples { n: 3 },
            CorrRequest::Lut { n: 2, bits: 5 },
        ];
        let mut d = Dealer::new(Seed::from_u64(9));
        let [b0, _] = d.generate_manifest(&reqs).unwrap();
        let mut lazy = CorrelationStore::new(PartyId::P0, d.party_seed(PartyId::P0));
        let mut eager = CorrelationStore::new(PartyId::P0, d.party_seed(PartyId::P0));
        for b in &b0 {
            lazy.insert(b.clone()).unwrap();
            eager.insert(b.clone()).unwrap();
        }
        assert_eq!(eager.expand_pending(), 2);
        assert_eq!(eager.pending(), 2);
        // a duplicate of an expanded bundle is refused
        assert!(eager.insert(b0[1].clone()).is_err());
        // a kind mismatch is still refused, and the bundle stays available
        assert!(eager.take(&CorrRequest::SquarePairs { n: 3 }).is_err());
        let (Material::Mul(a), Material::Mul(b)) =
            (lazy.take(&reqs[0]).unwrap(), eager.take(&reqs[0]).unwrap())
        else {
            panic!("wrong kind")
        };
        assert_eq!((a.a, a.b, a.c), (b.a, b.b, b.c));
        assert_eq!(lazy.stats(), eager.stats());
        assert!(matches!(
            eager.take_id(0, &reqs[0]),
            Err(CorrelationError::AlreadyConsumed { id: 0 })
        ));
        eager.resume_at(2);
        assert_eq!(eager.pending(), 0);
    }
    use crate::fss::{dcf_eval, dpf_eval_full};

    fn pair(req: &CorrRequest, seed: u64) -> (Material, Material, u64) {
        let mut d = Dealer::new(Seed::from_u64(seed));
        let [b0, b1] = d.next_bundle(req).unwrap();
        let mut s0 = CorrelationStore::new(PartyId::P0, d.party_seed(PartyId::P0));
        let mut s1 = CorrelationStore::new(PartyId::P1, d.party_seed(PartyId::P1));
        s0.insert(b0).unwrap();
        s1.insert(b1).unwrap();
        let bytes = d.stats().bytes_to[0] + d.stats().bytes_to[1];
        (s0.take(req).unwrap(), s1.take(req).unwrap(), bytes)
    }

    fn add(a: &[u64], b: &[u64]) -> Vec<u64> {
        a.iter().zip(b).map(|(x, y)| x.wrapping_add(*y)).collect()
    }

    #[test]
    fn seed_compressed_triples_are_consistent_and_only_p1_corrections_travel() {
        let (m0, m1, bytes) = pair(&CorrRequest::MulTriples { n: 100 }, 1);
        let (Material::Mul(t0), Material::Mul(t1)) = (m0, m1) else {
            panic!("kind")
        };
        let (a, b, c) = (add(&t0.a, &t1.a), add(&t0.b, &t1.b), add(&t0.c, &t1.c));
        for i in 0..100 {
            assert_eq!(c[i], a[i].wrapping_mul(b[i]));
        }
        assert_eq!(bytes, 800, "only c1 travels: 8 bytes per triple");

        let (m0, m1, bytes) = pair(&CorrRequest::MatTriple { m: 3, k: 5, n: 4 }, 2);
        let (Material::Mat(t0), Material::Mat(t1)) = (m0, m1) else {
            panic!("kind")
        };
        let a = t0.a.add(&t1.a).unwrap();
        let b = t0.b.add(&t1.b).unwrap();
        assert_eq!(t0.c.add(&t1.c).unwrap(), a.matmul(&b).unwrap());
        assert_eq!(bytes, 8 * 12);

        let (m0, m1, _) = pair(&CorrRequest::SquarePairs { n: 10 }, 3);
        let (Material::Square(q0), Material::Square(q1)) = (m0, m1) else {
            panic!("kind")
        };
        let a = add(&q0.a, &q1.a);
        let a2 = add(&q0.a2, &q1.a2);
        for i in 0..10 {
            assert_eq!(a2[i], a[i].wrapping_mul(a[i]));
        }
    }

    #[test]
    fn mask_material_is_consistent() {
        let req = CorrRequest::Mask {
            n: 50,
            shifts: vec![16, 3],
            cmp_bits: 20,
            cmp_shift: 0,
            exact: vec![3],
        };
        let (m0, m1, _) = pair(&req, 4);
        let (Material::Mask(k0), Material::Mask(k1)) = (m0, m1) else {
            panic!("kind")
        };
        let r = add(&k0.r, &k1.r);
        let msb = add(&k0.r_msb, &k1.r_msb);
        let (c0, c1) = (k0.cmp.unwrap(), k1.cmp.unwrap());
        let cm = add(&c0.msb, &c1.msb);
        for i in 0..50 {
            assert_eq!(msb[i], r[i] >> 63);
            for (j, s) in [16u32, 3].iter().enumerate() {
                let lo = k0.lo_shifted[j].1[i].wrapping_add(k1.lo_shifted[j].1[i]);
                assert_eq!(lo, (r[i] & (u64::MAX >> 1)) >> s);
            }
            assert_eq!(cm[i], (r[i] >> 19) & 1);
            let (e0, e1) = (&k0.exact[0], &k1.exact[0]);
            let a3 = r[i] & 7;
            let borrow = |x: u64| {
                dcf_eval(0, e0.roots[i], &e0.cws.key(i), x).wrapping_add(dcf_eval(
                    1,
                    e1.roots[i],
                    &e1.cws.key(i),
                    x,
                ))
            };
            for x in 0..8 {
                assert_eq!(borrow(x), (x < a3) as u64);
            }
            // DCF: at x = alpha - 1 (if any) the payload appears, at alpha it does not
            let alpha = r[i] & ((1 << 19) - 1);
            let beta = 1u64.wrapping_sub(2 * cm[i]);
            let at = |x: u64| {
                dcf_eval(0, c0.roots[i], &c0.cws.key(i), x).wrapping_add(dcf_eval(
                    1,
                    c1.roots[i],
                    &c1.cws.key(i),
                    x,
                ))
            };
            assert_eq!(at(alpha), 0);
            if alpha > 0 {
                assert_eq!(at(alpha - 1), beta);
            }
        }
    }

    /// The fused input of a signed lookup: its mask supports the cell/remainder truncations
    /// (with no exact-truncation key of its own), the slope mask's products with `M_z(c_hi)`
    /// match the mask, the one two-word DCF key gives the borrow `[x < r mod 2^shift]` and
    /// `a·[x < r mod 2^shift]`, and the range material compares with the index mask; both
    /// `shift > t` and `shift ≤ t` layouts.
    #[test]
    fn signed_input_material_is_consistent() {
        for (shift, t) in [(11u32, 8u32), (5, 8)] {
            let inp = SignedInput {
                shift,
                t,
                range_bits: 14,
            };
            let req = CorrRequest::SignedLut {
                n: 20,
                bits: 6,
                partner_shift: 0,
                input: Some(inp.clone()),
            };
            let (m0, m1, _) = pair(&req, 8);
            let (Material::SignedLut(k0), Material::SignedLut(k1)) = (m0, m1) else {
                panic!("kind")
            };
            let (i0, i1) = (k0.input.unwrap(), k1.input.unwrap());
            let r = add(&i0.mask.r, &i1.mask.r);
            let a = add(&i0.a, &i1.a);
            assert_eq!(i0.mask.lo_shifted.len(), inp.shifts().len());
            assert!(i0.mask.exact.is_empty());
            assert_eq!((i0.cws.n_bits(), i0.cws.len()), (shift, 20));
            for i in 0..20 {
                for c in 0..2 {
                    let am = i0.am[c][i].wrapping_add(i1.am[c][i]);
                    assert_eq!(
                        am,
                        a[i].wrapping_mul(material::remainder_mask(&inp, r[i], c as u64))
                    );
                }
                // the range check's material compares with the 14-bit index mask
                let idx = k0.s[i].wrapping_add(k1.s[i]) & ((1 << 14) - 1);
                let top = i0.range.msb[i].wrapping_add(i1.range.msb[i]);
                assert_eq!((i0.range.bits, top), (14, idx >> 13));
                let low = idx & ((1 << 13) - 1);
                for x in [0, low.saturating_sub(1), low, (1 << 13) - 1] {
                    let v = dcf_eval(0, i0.range.roots[i], &i0.range.cws.key(i), x)
                        .wrapping_add(dcf_eval(1, i1.range.roots[i], &i1.range.cws.key(i), x));
                    let beta = 1u64.wrapping_sub(2 * top);
                    assert_eq!(v, if x < low { beta } else { 0 });
                }
                let alpha = r[i] & ((1 << shift) - 1);
                for x in [
                    0,
                    alpha.saturating_sub(1),
                    alpha,
                    alpha + 1,
                    (1 << shift) - 1,
                ] {
                    let v0 = crate::fss::dcf2_eval(0, i0.roots[i], &i0.cws.key(i), x);
                    let v1 = crate::fss::dcf2_eval(1, i1.roots[i], &i1.cws.key(i), x);
                    let v = [v0[0].wrapping_add(v1[0]), v0[1].wrapping_add(v1[1])];
                    assert_eq!(v, if x < alpha { [1, a[i]] } else { [0, 0] });
                }
            }
        }
        let bad = CorrRequest::SignedLut {
            n: 1,
            bits: 6,
            partner_shift: 0,
            input: Some(SignedInput {
                shift: 0,
                t: 8,
                range_bits: 14,
            }),
        };
        assert!(bad.validate().is_err());
    }

    /// A norm triple's range-check material: the mask is `−a`, its top bit and low parts
    /// match, the squared truncation masks match both top-bit variants, the product part is
    /// there only when asked for; a bundle cut short or padded is refused, and so are invalid
    /// check parameters.
    #[test]
    fn norm_check_material_is_consistent_and_strictly_decoded() {
        let check = NormCheck {
            coarse: 39,
            fine: 14,
            coarse_bits: 62,
            fine_bits: 40,
        };
        for product in [true, false] {
            let (rows, d) = (3, 5);
            let req = CorrRequest::NormTriple {
                rows,
                d,
                product,
                check,
            };
            let (m0, m1, bytes) = pair(&req, 21);
            let (Material::Norm(t0), Material::Norm(t1)) = (m0, m1) else {
                panic!("kind")
            };
            let a = add(&t0.a, &t1.a);
            let (k0, k1) = (&t0.check, &t1.check);
            let r = add(&k0.mask.r, &k1.mask.r);
            let msb = add(&k0.mask.r_msb, &k1.mask.r_msb);
            assert_eq!(t0.b.len(), if product { rows } else { 0 });
            assert_eq!(t1.c.len(), if product { rows * d } else { 0 });
            for i in 0..rows * d {
                assert_eq!(t0.a2[i].wrapping_add(t1.a2[i]), a[i].wrapping_mul(a[i]));
                assert_eq!(r[i], a[i].wrapping_neg());
                assert_eq!(msb[i], r[i] >> 63);
                for (level, s) in [check.coarse, check.fine].into_iter().enumerate() {
                    let lo =
                        k0.mask.lo_shifted[level].1[i].wrapping_add(k1.mask.lo_shifted[level].1[i]);
                    assert_eq!(k0.mask.lo_shifted[level].0, s);
                    assert_eq!(lo, (r[i] & (u64::MAX >> 1)) >> s);
                    let hi = (r[i] >> 63) << (63 - s);
                    for (c_hi, m) in [lo.wrapping_sub(hi), lo.wrapping_add(hi)]
                        .iter()
                        .enumerate()
                    {
                        let sq = k0.sq[level][c_hi][i].wrapping_add(k1.sq[level][c_hi][i]);
                        assert_eq!(sq, m.wrapping_mul(*m));
                    }
                }
            }
            for (j, bits) in [check.coarse_bits, check.fine_bits].into_iter().enumerate() {
                let (c0, c1) = (
                    k0.rows[j].cmp.as_ref().unwrap(),
                    k1.rows[j].cmp.as_ref().unwrap(),
                );
                assert_eq!(
                    (c0.bits, k0.rows[j].r.len(), c1.cws.len()),
                    (bits, rows, rows)
                );
            }
            // per element: 7 words of the check (+ a², and c with the product) to P1; per row:
            // two comparison masks
            assert!(bytes > 8 * (8 + product as u64) * (rows * d) as u64);
            // strict decoding: P1's bundle cut short or padded, P0's cut short
            let mut dl = Dealer::new(Seed::from_u64(21));
            let [b0, b1] = dl.next_bundle(&req).unwrap();
            for (party, mut b, pad) in [
                (PartyId::P1, b1.clone(), false),
                (PartyId::P1, b1, true),
                (PartyId::P0, b0, false),
            ] {
                if pad {
                    b.explicit.extend([0; 8]);
                } else {
                    b.explicit.pop();
                }
                let mut st = CorrelationStore::new(party, dl.party_seed(party));
                st.insert(b).unwrap();
                assert!(matches!(
                    st.take(&req).unwrap_err(),
                    CorrelationError::Malformed { .. }
                ));
            }
        }
        for bad in [
            NormCheck { fine: 39, ..check },
            NormCheck { fine: 0, ..check },
            NormCheck {
                coarse: 63,
                ..check
            },
            NormCheck {
                coarse_bits: 63,
                ..check
            },
            NormCheck {
                fine_bits: 1,
                ..check
            },
        ] {
            let req = CorrRequest::NormTriple {
                rows: 1,
                d: 2,
                product: true,
                check: bad,
            };
            assert!(req.validate().is_err(), "{bad:?}");
            assert!(Dealer::new(Seed::from_u64(1)).next_bundle(&req).is_err());
        }
    }

    /// A second mask for a registered weight is refused and leaves the first one in place:
    /// the triples generated afterwards still multiply by the mask `W − B` was opened with.
    #[test]
    fn a_refused_duplicate_weight_mask_keeps_the_registered_one() {
        let mut d = Dealer::new(Seed::from_u64(12));
        let mut s0 = CorrelationStore::new(PartyId::P0, d.party_seed(PartyId::P0));
        let mut s1 = CorrelationStore::new(PartyId::P1, d.party_seed(PartyId::P1));
        let mut deliver = |d: &mut Dealer, req: &CorrRequest| -> (Material, Material) {
            let [b0, b1] = d.next_bundle(req).unwrap();
            s0.insert(b0).unwrap();
            s1.insert(b1).unwrap();
            (s0.take(req).unwrap(), s1.take(req).unwrap())
        };
        let mask = CorrRequest::WeightMask {
            weight: 7,
            k: 3,
            n: 2,
        };
        let (Material::WeightMask(b0), Material::WeightMask(b1)) = deliver(&mut d, &mask) else {
            panic!("kind")
        };
        let b = b0.add(&b1).unwrap();
        // the same weight again, with the same or another shape: refused
        for again in [
            mask.clone(),
            CorrRequest::WeightMask {
                weight: 7,
                k: 2,
                n: 2,
            },
        ] {
            assert!(matches!(
                d.next_bundle(&again),
                Err(CorrelationError::InvalidRequest { .. })
            ));
        }
        let triple = CorrRequest::WeightTriple {
            weight: 7,
            m: 4,
            k: 3,
            n: 2,
        };
        let (Material::Weight(t0), Material::Weight(t1)) = deliver(&mut d, &triple) else {
            panic!("kind")
        };
        let a = t0.a.add(&t1.a).unwrap();
        assert_eq!(t0.c.add(&t1.c).unwrap(), a.matmul(&b).unwrap());
    }

    #[test]
    fn lut_keys_point_at_the_shared_mask() {
        let (m0, m1, _) = pair(&CorrRequest::Lut { n: 5, bits: 6 }, 5);
        let (Material::Lut(l0), Material::Lut(l1)) = (m0, m1) else {
            panic!("kind")
        };
        for i in 0..5 {
            let s = l0.s[i].wrapping_add(l1.s[i]) & 63;
            let mut e0 = vec![0u64; 64];
            let mut e1 = vec![0u64; 64];
            dpf_eval_full(0, l0.roots[i], &l0.cws[i], &mut e0);
            dpf_eval_full(1, l1.roots[i], &l1.cws[i], &mut e1);
            let e = add(&e0, &e1);
            for (j, v) in e.iter().enumerate() {
                assert_eq!(*v, (j as u64 == s) as u64);
            }
        }
    }

    #[test]
    fn a_correlation_is_consumed_exactly_once() {
        let req = CorrRequest::MulTriples { n: 4 };
        let mut d = Dealer::new(Seed::from_u64(6));
        let [b0, _] = d.next_bundle(&req).unwrap();
        let mut s0 = CorrelationStore::new(PartyId::P0, d.party_seed(PartyId::P0));
        s0.insert(b0.clone()).unwrap();
        // a duplicate delivery while pending is refused
        assert!(s0.insert(b0.clone()).is_err());
        assert!(s0.take(&req).is_ok());
        // a second use of the same id is an error, however it is asked for
        assert_eq!(
            s0.take_id(0, &req).unwrap_err(),
            CorrelationError::AlreadyConsumed { id: 0 }
        );
        assert_eq!(
            s0.insert(b0).unwrap_err(),
            CorrelationError::AlreadyConsumed { id: 0 }
        );
        // nothing else is available: no silent reuse
        assert!(matches!(
            s0.take(&req).unwrap_err(),
            CorrelationError::Unavailable { id: 1, .. }
        ));
        // a store resumed at a persisted watermark refuses old ids too
        let mut fresh = CorrelationStore::new(PartyId::P0, d.party_seed(PartyId::P0));
        fresh.resume_at(1);
        let [b0_again, _] = Dealer::new(Seed::from_u64(6)).next_bundle(&req).unwrap();
        assert_eq!(
            fresh.insert(b0_again).unwrap_err(),
            CorrelationError::AlreadyConsumed { id: 0 }
        );
    }

    #[test]
    fn wrong_kind_and_malformed_bundles_are_refused() {
        let req = CorrRequest::MulTriples { n: 4 };
        let mut d = Dealer::new(Seed::from_u64(7));
        let [_, mut b1] = d.next_bundle(&req).unwrap();
        let mut s1 = CorrelationStore::new(PartyId::P1, d.party_seed(PartyId::P1));
        s1.insert(b1.clone()).unwrap();
        assert!(matches!(
            s1.take(&CorrRequest::MulTriples { n: 5 }).unwrap_err(),
            CorrelationError::Mismatch { .. }
        ));
        let mut s1 = CorrelationStore::new(PartyId::P1, d.party_seed(PartyId::P1));
        b1.explicit.pop();
        s1.insert(b1.clone()).unwrap();
        assert!(matches!(
            s1.take(&req).unwrap_err(),
            CorrelationError::Malformed { .. }
        ));
        let mut s1 = CorrelationStore::new(PartyId::P1, d.party_seed(PartyId::P1));
        b1.explicit.extend([0; 9]);
        s1.insert(b1).unwrap();
        assert!(matches!(
            s1.take(&req).unwrap_err(),
            CorrelationError::Malformed { .. }
        ));
        assert!(CorrRequest::Mask {
            n: 1,
            shifts: vec![0],
            cmp_bits: 0,
            cmp_shift: 0,
            exact: vec![]
        }
        .validate()
        .is_err());
        assert!(CorrRequest::Mask {
            n: 1,
            shifts: vec![],
            cmp_bits: 20,
            cmp_shift: 18,
            exact: vec![]
        }
        .validate()
        .is_err());
        assert!(CorrRequest::Lut { n: 1, bits: 30 }.validate().is_err());
    }
}
