//! The dealer's epochs: one correlation stream per incarnation of its worker pair. A worker
//! asks for its seed when it starts; a worker that asks again in the same epoch is a new
//! process (restarted), so a new epoch begins with a fresh random dealer seed — a restarted
//! pair never receives a correlation it, or its previous incarnation, already had. The other
//! worker's requests from the earlier epoch are refused (its stream no longer matches its
//! peer's: it must restart too, which its step failure makes it do), and it joins the new
//! epoch when it asks for its seed again.

use crate::ahead::{AheadPool, Complete};
use marill_mpc::correlation::dealer::DealerStats;
use marill_mpc::correlation::{CorrRequest, Dealer, SharedDealer, StepKey};
use marill_mpc::prg::Seed;
use marill_mpc::PartyId;
use std::sync::Arc;

/// The current epoch's dealer and which epoch each party's stream belongs to.
pub struct Epochs {
    epoch: u64,
    dealer: SharedDealer,
    seeded: [Option<u64>; 2],
    earlier: DealerStats,
    fresh: Box<dyn FnMut() -> Seed + Send>,
    ahead: AheadPool,
}

impl Epochs {
    /// Epoch 0, each epoch's dealer seeded by `fresh` (random in the service).
    pub fn new(mut fresh: Box<dyn FnMut() -> Seed + Send>) -> Self {
        Self {
            epoch: 0,
            dealer: SharedDealer::new(Dealer::new(fresh())),
            seeded: [None, None],
            earlier: DealerStats::default(),
            fresh,
            ahead: AheadPool::new(0),
        }
    }

    /// Generates up to `budget` explicit bytes ahead for each predicted step (see
    /// [`AheadPool`]; 0: none).
    pub fn with_ahead_budget(mut self, budget: u64) -> Self {
        self.ahead = AheadPool::new(budget);
        self
    }

    /// A party asks for its seed: returns the epoch and the party's seed in it, starting a new
    /// epoch first when this party was already seeded in the current one.
    pub fn seed(&mut self, party: PartyId) -> (u64, Seed) {
        if self.seeded[party.index()] == Some(self.epoch) {
            let st = self.dealer.stats();
            self.earlier.bundles += st.bundles;
            self.earlier.gen_nanos += st.gen_nanos;
            for p in 0..2 {
                self.earlier.bytes_to[p] += st.bytes_to[p];
            }
            self.epoch += 1;
            self.dealer = SharedDealer::new(Dealer::new((self.fresh)()));
            self.ahead.restart();
        }
        self.seeded[party.index()] = Some(self.epoch);
        (self.epoch, self.dealer.party_seed(party))
    }

    /// The dealer for `party`'s bundle requests, or why its stream is no longer served.
    pub fn dealer_for(&self, party: PartyId) -> Result<SharedDealer, String> {
        match self.seeded[party.index()] {
            Some(e) if e == self.epoch => Ok(self.dealer.clone()),
            Some(e) => Err(format!(
                "correlation stream of epoch {e} is closed: the peer restarted (epoch {}); \
                 restart to continue",
                self.epoch
            )),
            None => Err("no seed requested yet".into()),
        }
    }

    /// `party` begins step `key` at `first_id`: the id it begins at (past any bundles
    /// generated ahead for another step), or why its stream is no longer served.
    pub fn begin_step(
        &mut self,
        party: PartyId,
        key: StepKey,
        first_id: u64,
    ) -> Result<u64, String> {
        let dealer = self.dealer_for(party)?;
        Ok(self.ahead.begin(&dealer, party, key, first_id))
    }

    /// A party ended the step that began at `ended`: predicts that step `key`, with requests
    /// `manifest`, comes next (see [`AheadPool::predict`]).
    pub fn predict(&mut self, ended: u64, key: StepKey, manifest: Arc<[CorrRequest]>) {
        self.ahead.predict(&self.dealer, ended, key, manifest);
    }

    /// Generates one more bundle ahead for the predicted step; `false` when idle.
    pub fn generate_ahead(&mut self) -> Result<bool, String> {
        self.ahead
            .generate_one(&self.dealer)
            .map_err(|e| e.to_string())
    }

    /// The predicted next step, once all its bundles are generated.
    pub fn complete_prediction(&self) -> Option<Complete> {
        self.ahead.complete()
    }

    /// Bundles generated ahead over every epoch: used as predicted, and skipped.
    pub fn ahead_counts(&self) -> (u64, u64) {
        self.ahead.counts()
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Totals over every epoch so far.
    pub fn stats(&self) -> DealerStats {
        let st = self.dealer.stats();
        DealerStats {
            bundles: self.earlier.bundles + st.bundles,
            bytes_to: [
                self.earlier.bytes_to[0] + st.bytes_to[0],
                self.earlier.bytes_to[1] + st.bytes_to[1],
            ],
            gen_nanos: self.earlier.gen_nanos + st.gen_nanos,
        }
    }

    /// Halves stashed for each party in the current epoch.
    pub fn stashed(&self) -> [usize; 2] {
        self.dealer.stashed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use marill_mpc::correlation::{BundleSupplier, CorrRequest};

    fn counter() -> Box<dyn FnMut() -> Seed + Send> {
        let mut k = 0u64;
        Box::new(move || {
            k += 1;
            Seed::from_u64(k)
        })
    }

    #[test]
    fn a_restarted_pair_gets_a_fresh_stream_and_the_stale_one_is_refused() {
        let mut e = Epochs::new(counter());
        let (e0, p0) = e.seed(PartyId::P0);
        let (_, h0) = e.seed(PartyId::P1);
        assert_eq!(e0, 0);
        let req = CorrRequest::MulTriples { n: 4 };
        // the helper's half carries the explicit correction
        let first = e
            .dealer_for(PartyId::P1)
            .unwrap()
            .fetch(PartyId::P1, 0, &req)
            .unwrap();
        // the helper restarts: its second seed request opens epoch 1 with another seed
        let (e1, h1) = e.seed(PartyId::P1);
        assert_eq!((e1, e.epoch()), (1, 1));
        assert_ne!(h0.0, h1.0);
        // the provider's old stream is refused with the reason
        let why = e.dealer_for(PartyId::P0).err().unwrap();
        assert!(why.contains("peer restarted"), "{why}");
        // the restarted provider joins epoch 1 without opening another
        let (e1p, p1) = e.seed(PartyId::P0);
        assert_eq!(e1p, 1);
        assert_ne!(p0.0, p1.0);
        // bundle 0 of the new epoch is a different correlation from bundle 0 of the old one
        let again = e
            .dealer_for(PartyId::P1)
            .unwrap()
            .fetch(PartyId::P1, 0, &req)
            .unwrap();
        assert_eq!(first.id, again.id);
        assert!(!first.explicit.is_empty());
        assert_ne!(first.explicit, again.explicit);
        assert_eq!(e.stats().bundles, 2, "both epochs counted");
    }

    #[test]
    fn seeds_are_given_only_after_a_request() {
        let mut e = Epochs::new(counter());
        assert!(e.dealer_for(PartyId::P1).is_err());
        e.seed(PartyId::P1);
        assert!(e.dealer_for(PartyId::P1).is_ok());
        assert!(e.dealer_for(PartyId::P0).is_err());
    }
}
