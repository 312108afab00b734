//! The dealer's pool ahead of demand. When a step of shape `k` ends, the step most likely next
//! is one decoded row at the next position (`StepKey::next_decode`); if the dealer knows that
//! step's manifest (`marill_mpc::correlation::manifest`), it generates the step's bundles while
//! the pair is idle (the client's prefix and the trip through Kafka), up to a byte budget, into
//! the stash both workers' streams read from.
//!
//! The next step's start settles the prediction: the predicted step streams from the pool; any
//! other step (a new session's prefill, a session that ended) skips the pool's ids. Those
//! bundles were never handed out and their ids are never generated again, so no correlation is
//! used twice or derived twice from one seed stream; both workers are told the same first id.

use marill_mpc::correlation::{CorrRequest, CorrelationError, SharedDealer, StepKey};
use marill_mpc::PartyId;
use std::sync::Arc;

/// A prediction being generated.
struct Predicted {
    key: StepKey,
    first: u64,
    manifest: Arc<[CorrRequest]>,
    generated: usize,
    bytes: u64,
}

/// A prediction whose bundles are all generated.
#[derive(Clone, Debug)]
pub struct Complete {
    /// the predicted step
    pub key: StepKey,
    /// its first id
    pub first: u64,
    /// its requests
    pub manifest: Arc<[CorrRequest]>,
    /// the first id of the step after which it was predicted: only a party that has begun
    /// that step may be shipped it (a party a step behind would take it for the step it has
    /// yet to begin, drop it, and later find its ids spent)
    pub after: u64,
}

/// A step start moved past skipped ids, until both parties have begun it.
struct Moved {
    asked: u64,
    given: u64,
    begun: [bool; 2],
}

/// Bundles generated ahead for the predicted next step of one worker pair.
pub struct AheadPool {
    budget: u64,
    predicted: Option<Predicted>,
    moved: Option<Moved>,
    /// the first id of the latest step a party began
    last_begin: u64,
    /// the first id of the step after which the latest prediction was made
    predicted_after: Option<u64>,
    used: u64,
    skipped: u64,
}

impl AheadPool {
    /// A pool of at most `budget` explicit bytes (both halves; 0 disables it).
    pub fn new(budget: u64) -> Self {
        Self {
            budget,
            predicted: None,
            moved: None,
            last_begin: 0,
            predicted_after: None,
            used: 0,
            skipped: 0,
        }
    }

    /// Forgets the prediction and the step positions for a new epoch (a new dealer seed and
    /// id sequence); the budget and the counts carry on.
    pub fn restart(&mut self) {
        *self = Self {
            used: self.used,
            skipped: self.skipped,
            ..Self::new(self.budget)
        };
    }

    /// A party ended the step that began at `ended`: predicts that step `key`, whose requests
    /// are `manifest`, comes next, at the dealer's next id. Made once per step, and only while
    /// no party has begun a later step (the other party's end may arrive after its next
    /// begin); ignored while another prediction is pending or when the budget is 0.
    pub fn predict(
        &mut self,
        dealer: &SharedDealer,
        ended: u64,
        key: StepKey,
        manifest: Arc<[CorrRequest]>,
    ) {
        if self.budget == 0
            || self.predicted.is_some()
            || ended != self.last_begin
            || self.predicted_after == Some(ended)
        {
            return;
        }
        self.predicted_after = Some(ended);
        self.predicted = Some(Predicted {
            key,
            first: dealer.next_id(),
            manifest,
            generated: 0,
            bytes: 0,
        });
    }

    /// Generates one more bundle of the prediction; `false` when there is nothing to do (none
    /// pending, all generated, or the budget spent).
    pub fn generate_one(&mut self, dealer: &SharedDealer) -> Result<bool, CorrelationError> {
        let Some(p) = self.predicted.as_mut() else {
            return Ok(false);
        };
        let Some(req) = p.manifest.get(p.generated) else {
            return Ok(false);
        };
        if p.bytes >= self.budget || dealer.next_id() != p.first + p.generated as u64 {
            // full, or a party asked beyond the prediction: the stream generates the rest
            return Ok(false);
        }
        let (_, bytes) = dealer.generate_ahead(req)?;
        p.generated += 1;
        p.bytes += bytes as u64;
        Ok(true)
    }

    /// The pending prediction once every bundle of it is generated (what a stream may ship to
    /// its party before the step begins).
    pub fn complete(&self) -> Option<Complete> {
        let p = self.predicted.as_ref()?;
        (p.generated == p.manifest.len()).then(|| Complete {
            key: p.key,
            first: p.first,
            manifest: p.manifest.clone(),
            after: self.predicted_after.unwrap_or(0),
        })
    }

    /// `party` begins step `key` at its next id `first_id`: returns the id the step begins at.
    /// The predicted step begins where asked (its bundles wait in the stash); another step
    /// begins past the pool, whose halves are dropped.
    pub fn begin(
        &mut self,
        dealer: &SharedDealer,
        party: PartyId,
        key: StepKey,
        first_id: u64,
    ) -> u64 {
        let first = self.settle(dealer, party, key, first_id);
        self.last_begin = self.last_begin.max(first);
        first
    }

    fn settle(
        &mut self,
        dealer: &SharedDealer,
        party: PartyId,
        key: StepKey,
        first_id: u64,
    ) -> u64 {
        if let Some(m) = &mut self.moved {
            if m.asked == first_id {
                m.begun[party.index()] = true;
                let given = m.given;
                if m.begun == [true, true] {
                    self.moved = None;
                }
                return given;
            }
        }
        if self.predicted.as_ref().is_some_and(|p| first_id < p.first) {
            // a party that lags begins the step the other one began before the prediction
            // was made: the prediction is for the step after it
            return first_id;
        }
        let Some(p) = self.predicted.take() else {
            return first_id;
        };
        let end = p.first + p.generated as u64;
        if p.key == key && p.first == first_id {
            self.used += p.generated as u64;
            return first_id;
        }
        dealer.discard(p.first..end);
        self.skipped += p.generated as u64;
        if first_id < p.first || first_id >= end {
            return first_id;
        }
        let mut begun = [false; 2];
        begun[party.index()] = true;
        self.moved = Some(Moved {
            asked: first_id,
            given: end,
            begun,
        });
        end
    }

    /// Bundles generated ahead so far (over every epoch): used by the step they were predicted
    /// for, and skipped.
    pub fn counts(&self) -> (u64, u64) {
        (self.used, self.skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use marill_mpc::correlation::{BundleSupplier, CorrelationStore, Dealer};
    use marill_mpc::prg::Seed;

    fn key(rows: u32, pos: u32) -> StepKey {
        StepKey {
            program: 1,
            rows,
            pos,
        }
    }

    fn manifest() -> Arc<[CorrRequest]> {
        vec![
            CorrRequest::MulTriples { n: 4 },
            CorrRequest::SquarePairs { n: 3 },
            CorrRequest::Lut { n: 2, bits: 5 },
        ]
        .into()
    }

    #[test]
    fn the_predicted_step_takes_its_bundles_from_the_pool() {
        let d = SharedDealer::new(Dealer::new(Seed::from_u64(3)));
        let mut pool = AheadPool::new(1 << 20);
        pool.predict(&d, 0, key(1, 8), manifest());
        while pool.generate_one(&d).unwrap() {}
        assert_eq!(d.stashed(), [3, 3]);
        for party in [PartyId::P0, PartyId::P1] {
            assert_eq!(pool.begin(&d, party, key(1, 8), 0), 0);
            let mut store =
                CorrelationStore::with_supplier(party, d.party_seed(party), Box::new(d.clone()));
            for req in manifest().iter() {
                store.take(req).unwrap();
            }
        }
        assert_eq!(d.stashed(), [0, 0]);
        assert_eq!(pool.counts(), (3, 0));
    }

    #[test]
    fn another_step_skips_the_pool_and_its_ids_are_never_served() {
        let d = SharedDealer::new(Dealer::new(Seed::from_u64(4)));
        let mut pool = AheadPool::new(1 << 20);
        pool.predict(&d, 0, key(1, 8), manifest());
        assert!(pool.generate_one(&d).unwrap());
        assert!(pool.generate_one(&d).unwrap());
        // a new session's prefill comes instead: both parties move past ids 0 and 1
        assert_eq!(pool.begin(&d, PartyId::P1, key(5, 0), 0), 2);
        assert_eq!(d.stashed(), [0, 0]);
        assert_eq!(pool.begin(&d, PartyId::P0, key(5, 0), 0), 2);
        assert_eq!(pool.counts(), (0, 2));
        // the skipped ids are gone for good; the step's first bundle is id 2
        let mut s = d.clone();
        let req = CorrRequest::MulTriples { n: 4 };
        assert!(s.fetch(PartyId::P0, 0, &req).is_err());
        assert!(s.fetch(PartyId::P1, 1, &req).is_err());
        assert_eq!(s.fetch(PartyId::P0, 2, &req).unwrap().id, 2);
        // and a later step begins where asked
        assert_eq!(pool.begin(&d, PartyId::P0, key(1, 5), 3), 3);
    }

    /// P0 begins a 3-row prefill at id 0 (its 3 bundles generated), its end predicts the
    /// decode at position 3, one bundle is generated ahead, and `party` begins that decode.
    fn a_prefill_then_its_predicted_decode(pool: &mut AheadPool, d: &SharedDealer, party: PartyId) {
        assert_eq!(pool.begin(d, PartyId::P0, key(3, 0), 0), 0);
        for _ in 0..3 {
            d.generate_ahead(&CorrRequest::MulTriples { n: 1 }).unwrap();
        }
        pool.predict(d, 0, key(1, 3), manifest());
        assert!(pool.generate_one(d).unwrap());
        assert_eq!(pool.begin(d, party, key(1, 3), 3), 3);
    }

    #[test]
    fn a_late_end_predicts_nothing_once_the_next_step_has_begun() {
        let d = SharedDealer::new(Dealer::new(Seed::from_u64(6)));
        let mut pool = AheadPool::new(1 << 20);
        // both parties begin a step at 0; P1 ends it and begins the next at 3 (as predicted
        // or not) before P0's end of the first step reaches the dealer
        assert_eq!(pool.begin(&d, PartyId::P1, key(3, 0), 0), 0);
        a_prefill_then_its_predicted_decode(&mut pool, &d, PartyId::P1);
        pool.predict(&d, 0, key(1, 3), manifest()); // P0's late end
        assert!(
            !pool.generate_one(&d).unwrap(),
            "predicted twice for one step"
        );
        assert_eq!(pool.begin(&d, PartyId::P0, key(1, 3), 3), 3);
        assert_eq!(pool.counts(), (1, 0));
    }

    #[test]
    fn a_restart_forgets_the_prediction_and_keeps_the_counts() {
        let d = SharedDealer::new(Dealer::new(Seed::from_u64(7)));
        let mut pool = AheadPool::new(1 << 20);
        a_prefill_then_its_predicted_decode(&mut pool, &d, PartyId::P0);
        // that step ends: the next one is predicted and pending when the epoch ends
        pool.predict(&d, 3, key(1, 4), manifest());
        assert!(pool.predicted.is_some());
        pool.restart();
        assert!(
            pool.predicted.is_none(),
            "the old epoch's prediction survived"
        );
        assert!(!pool.generate_one(&d).unwrap());
        assert_eq!(pool.counts(), (1, 0));
        // a fresh epoch's pair begins at 0 again and predicts under the same budget
        let fresh = SharedDealer::new(Dealer::new(Seed::from_u64(8)));
        assert_eq!(pool.begin(&fresh, PartyId::P0, key(2, 0), 0), 0);
        pool.predict(&fresh, 0, key(1, 2), manifest());
        assert!(pool.generate_one(&fresh).unwrap());
    }

    /// The first party to begin a streamed step predicts the one after it while the other
    /// party has not begun it yet: the lagging party's begin keeps that prediction.
    #[test]
    fn a_lagging_party_keeps_the_prediction_made_past_its_step() {
        let d = SharedDealer::new(Dealer::new(Seed::from_u64(10)));
        let mut pool = AheadPool::new(1 << 20);
        // P0 begins a decode step at 0 and takes its 3 bundles; the next one is predicted
        assert_eq!(pool.begin(&d, PartyId::P0, key(1, 8), 0), 0);
        for req in manifest().iter() {
            d.generate_ahead(req).unwrap();
        }
        pool.predict(&d, 0, key(1, 9), manifest());
        while pool.generate_one(&d).unwrap() {}
        // P1 begins the same step at 0, late: the prediction (from id 3) stays
        assert_eq!(pool.begin(&d, PartyId::P1, key(1, 8), 0), 0);
        let c = pool
            .complete()
            .expect("the lagging begin dropped the prediction");
        assert_eq!(c.after, 0, "predicted after the step both have now begun");
        // both then begin the predicted step where it was made
        assert_eq!(pool.begin(&d, PartyId::P0, key(1, 9), 3), 3);
        assert_eq!(pool.begin(&d, PartyId::P1, key(1, 9), 3), 3);
        assert_eq!(pool.counts(), (3, 0));
    }

    #[test]
    fn a_prediction_is_complete_once_all_its_bundles_are_generated() {
        let d = SharedDealer::new(Dealer::new(Seed::from_u64(9)));
        let mut pool = AheadPool::new(1 << 20);
        assert!(pool.complete().is_none());
        pool.predict(&d, 0, key(1, 8), manifest());
        assert!(pool.generate_one(&d).unwrap());
        assert!(
            pool.complete().is_none(),
            "complete after one of three bundles"
        );
        while pool.generate_one(&d).unwrap() {}
        let c = pool.complete().expect("complete");
        assert_eq!(
            (c.key, c.first, c.manifest.len(), c.after),
            (key(1, 8), 0, 3, 0)
        );
        // once a party begins it, it is no longer pending
        assert_eq!(pool.begin(&d, PartyId::P0, key(1, 8), 0), 0);
        assert!(pool.complete().is_none());
    }

    #[test]
    fn the_budget_bounds_the_pool() {
        let d = SharedDealer::new(Dealer::new(Seed::from_u64(5)));
        let mut pool = AheadPool::new(1);
        pool.predict(&d, 0, key(1, 2), manifest());
        assert!(pool.generate_one(&d).unwrap());
        assert!(
            !pool.generate_one(&d).unwrap(),
            "over budget after one bundle"
        );
        let mut off = AheadPool::new(0);
        off.predict(&d, 0, key(1, 2), manifest());
        assert!(!off.generate_one(&d).unwrap());
    }
}
