//! Which session occupies each lane of each worker pair. A pair serves `lanes` sessions at
//! once (the smaller of its two workers' counts, learnt from their hello); the coordinator puts
//! a new session on a free lane of the usable pair with the fewest open sessions (spreading the
//! load), lowest pair and then lowest lane first, and the session keeps that lane until it is
//! closed. A lane holds at most one session. Pure bookkeeping, no I/O.

/// The lanes of every pair: `None` free, `Some(session)` taken.
#[derive(Debug, Default)]
pub(crate) struct Lanes {
    pairs: Vec<Vec<Option<String>>>,
}

impl Lanes {
    /// `pairs` pairs without a lane (none has answered its hello yet).
    pub(crate) fn new(pairs: usize) -> Self {
        Self {
            pairs: vec![Vec::new(); pairs],
        }
    }

    /// Pair `pair` answered its hello with `lanes` lanes: all free (its sessions were closed
    /// when it went out of service).
    pub(crate) fn reset(&mut self, pair: usize, lanes: u32) {
        self.pairs[pair] = vec![None; lanes as usize];
    }

    /// Where a new session may go: each pair for which `usable` holds and that has a free lane,
    /// with its lowest free lane, fewest open sessions first, then lowest pair.
    pub(crate) fn candidates(&self, usable: impl Fn(usize) -> bool) -> Vec<(usize, u32)> {
        let mut c: Vec<(usize, usize, u32)> = self
            .pairs
            .iter()
            .enumerate()
            .filter(|(i, _)| usable(*i))
            .filter_map(|(i, lanes)| {
                let free = lanes.iter().position(Option::is_none)?;
                Some((self.open(i), i, free as u32))
            })
            .collect();
        c.sort_unstable();
        c.into_iter().map(|(_, i, lane)| (i, lane)).collect()
    }

    /// Puts `session` on `lane` of `pair`; false (and nothing changes) when the lane is taken
    /// or does not exist.
    pub(crate) fn occupy(&mut self, pair: usize, lane: u32, session: &str) -> bool {
        match self.pairs[pair].get_mut(lane as usize) {
            Some(slot @ None) => {
                *slot = Some(session.to_string());
                true
            }
            _ => false,
        }
    }

    /// Frees `lane` of `pair` if `session` holds it; whether it did.
    pub(crate) fn free(&mut self, pair: usize, lane: u32, session: &str) -> bool {
        match self.pairs[pair].get_mut(lane as usize) {
            Some(slot) if slot.as_deref() == Some(session) => {
                *slot = None;
                true
            }
            _ => false,
        }
    }

    /// Sessions open on `pair`.
    pub(crate) fn open(&self, pair: usize) -> usize {
        self.pairs[pair].iter().filter(|l| l.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sessions_spread_over_pairs_then_fill_lanes_in_order() {
        let mut l = Lanes::new(3);
        l.reset(0, 2);
        l.reset(1, 2);
        l.reset(2, 1);
        let mut placed = Vec::new();
        for s in 0..5 {
            let (p, lane) = l.candidates(|_| true)[0];
            assert!(l.occupy(p, lane, &format!("s{s}")));
            placed.push((p, lane));
        }
        // one each first (lowest pair first), then the pairs with room again
        assert_eq!(placed, [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1)]);
        assert!(l.candidates(|_| true).is_empty(), "every lane is taken");
    }

    #[test]
    fn an_unusable_or_unready_pair_takes_nothing() {
        let mut l = Lanes::new(3);
        l.reset(0, 4);
        l.reset(1, 4);
        // pair 2 has not answered its hello: no lane
        assert_eq!(l.candidates(|i| i != 0), [(1, 0)]);
        assert_eq!(l.candidates(|_| false), []);
    }

    #[test]
    fn a_taken_lane_is_not_given_twice_and_a_closed_one_is_given_again() {
        let mut l = Lanes::new(1);
        l.reset(0, 2);
        assert!(l.occupy(0, 0, "a"));
        assert!(!l.occupy(0, 0, "b"), "lane 0 is a's");
        assert!(!l.occupy(0, 2, "b"), "no lane 2");
        assert_eq!(l.candidates(|_| true), [(0, 1)]);
        assert!(l.occupy(0, 1, "b"));
        assert!(!l.free(0, 0, "b"), "only its holder frees a lane");
        assert_eq!(l.open(0), 2);
        assert!(l.free(0, 0, "a"));
        assert!(!l.free(0, 0, "a"), "freed once");
        assert_eq!(l.open(0), 1);
        assert_eq!(l.candidates(|_| true), [(0, 0)]);
    }

    #[test]
    fn a_reset_pair_has_its_new_count_of_free_lanes() {
        let mut l = Lanes::new(1);
        l.reset(0, 3);
        assert!(l.occupy(0, 2, "a"));
        l.reset(0, 1);
        assert_eq!(l.open(0), 0);
        assert!(!l.occupy(0, 1, "b"));
        assert!(l.occupy(0, 0, "b"));
    }

    proptest! {
        /// Random opens and closes: a lane never holds two sessions, no pair holds more
        /// sessions than lanes, and a new session always goes to a least-loaded pair.
        #[test]
        fn lanes_are_never_overcommitted(
            lanes in proptest::collection::vec(1u32..4, 1..4),
            ops in proptest::collection::vec((any::<bool>(), 0usize..16), 1..80),
        ) {
            let mut l = Lanes::new(lanes.len());
            for (p, n) in lanes.iter().enumerate() {
                l.reset(p, *n);
            }
            // session → (pair, lane)
            let mut open: Vec<(String, usize, u32)> = Vec::new();
            for (k, (new, pick)) in ops.into_iter().enumerate() {
                if new {
                    let c = l.candidates(|_| true);
                    let room: usize = lanes.iter().map(|n| *n as usize).sum::<usize>() - open.len();
                    prop_assert_eq!(c.is_empty(), room == 0);
                    let Some(&(p, lane)) = c.first() else { continue };
                    let least = (0..lanes.len())
                        .filter(|&i| l.open(i) < lanes[i] as usize)
                        .map(|i| l.open(i))
                        .min();
                    prop_assert_eq!(Some(l.open(p)), least);
                    prop_assert!(
                        !open.iter().any(|(_, q, m)| (*q, *m) == (p, lane)),
                        "lane {} of pair {} given twice", lane, p
                    );
                    let s = format!("s{k}");
                    prop_assert!(l.occupy(p, lane, &s));
                    open.push((s, p, lane));
                } else if !open.is_empty() {
                    let (s, p, lane) = open.remove(pick % open.len());
                    prop_assert!(l.free(p, lane, &s));
                }
                for (p, n) in lanes.iter().enumerate() {
                    let held = open.iter().filter(|(_, q, _)| *q == p).count();
                    prop_assert_eq!(l.open(p), held);
                    prop_assert!(held <= *n as usize);
                }
            }
        }
    }
}
