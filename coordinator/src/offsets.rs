//! At-least-once offset bookkeeping: a message's offset may be committed only when it and every
//! earlier message of its partition has its outcome produced. Jobs finish out of order (several
//! worker pairs), so per partition the tracker keeps the offsets in flight and answers the
//! highest committable position (Kafka's "next offset to read").

use std::collections::{BTreeMap, BTreeSet};

/// Per-partition in-flight offsets.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    parts: BTreeMap<i32, Part>,
}

#[derive(Debug, Default)]
struct Part {
    in_flight: BTreeSet<i64>,
    /// one past the highest offset seen
    next: i64,
    /// the position last returned for commit
    committed: i64,
}

impl OffsetTracker {
    /// A message was received (its outcome is pending).
    pub fn begin(&mut self, partition: i32, offset: i64) {
        let p = self.parts.entry(partition).or_default();
        if p.in_flight.is_empty() && p.next == 0 && p.committed == 0 {
            p.committed = offset;
        }
        p.in_flight.insert(offset);
        p.next = p.next.max(offset + 1);
    }

    /// A message's outcome was produced.
    pub fn done(&mut self, partition: i32, offset: i64) {
        if let Some(p) = self.parts.get_mut(&partition) {
            p.in_flight.remove(&offset);
        }
    }

    /// Partitions whose committable position advanced since the last call, with that position
    /// (every offset below it has its outcome).
    pub fn to_commit(&mut self) -> Vec<(i32, i64)> {
        let mut out = Vec::new();
        for (part, p) in &mut self.parts {
            let pos = p.in_flight.first().copied().unwrap_or(p.next);
            if pos > p.committed {
                p.committed = pos;
                out.push((*part, pos));
            }
        }
        out
    }

    /// Messages whose outcome is still pending.
    pub fn pending(&self) -> usize {
        self.parts.values().map(|p| p.in_flight.len()).sum()
    }

    /// Positions returned by [`OffsetTracker::to_commit`] whose commit failed (the broker away,
    /// the group rebalancing): the next `to_commit` returns them again (or a later position
    /// of the same partition).
    pub fn retry(&mut self, failed: &[(i32, i64)]) {
        for (part, pos) in failed {
            if let Some(p) = self.parts.get_mut(part) {
                if p.committed == *pos {
                    p.committed = pos - 1;
                }
            }
        }
    }

    /// Forgets a partition (revoked in a rebalance: its uncommitted messages will be redelivered
    /// to the new owner).
    pub fn revoke(&mut self, partition: i32) {
        self.parts.remove(&partition);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_failed_commit_is_returned_again() {
        let mut t = OffsetTracker::default();
        t.begin(0, 5);
        t.done(0, 5);
        let c = t.to_commit();
        assert_eq!(c, vec![(0, 6)]);
        t.retry(&c);
        assert_eq!(t.to_commit(), vec![(0, 6)]);
        assert_eq!(t.to_commit(), vec![]);
        // a later position covers the failed one
        t.retry(&[(0, 6)]);
        t.begin(0, 6);
        t.done(0, 6);
        assert_eq!(t.to_commit(), vec![(0, 7)]);
    }

    #[test]
    fn commits_only_the_finished_prefix() {
        let mut t = OffsetTracker::default();
        for o in 10..14 {
            t.begin(0, o);
        }
        t.done(0, 11);
        t.done(0, 12);
        assert_eq!(t.to_commit(), vec![]);
        t.done(0, 10);
        assert_eq!(t.to_commit(), vec![(0, 13)]);
        t.done(0, 13);
        assert_eq!(t.to_commit(), vec![(0, 14)]);
        assert_eq!(t.to_commit(), vec![]);
        assert_eq!(t.pending(), 0);
    }

    proptest! {
        /// Whatever the completion order, a committed position never passes an offset whose
        /// outcome is pending, never goes back, and reaches the end once all are done.
        #[test]
        fn never_commits_past_a_pending_offset(order in Just((0..40i64).collect::<Vec<_>>()).prop_shuffle(), start in 0i64..1000) {
            let mut t = OffsetTracker::default();
            for o in 0..40 {
                t.begin(3, start + o);
            }
            let mut done = std::collections::BTreeSet::new();
            let mut last = start;
            for o in order {
                t.done(3, start + o);
                done.insert(o);
                for (p, pos) in t.to_commit() {
                    prop_assert_eq!(p, 3);
                    prop_assert!(pos > last);
                    for k in 0..(pos - start) {
                        prop_assert!(done.contains(&k), "committed {} with {} pending", pos, k);
                    }
                    last = pos;
                }
            }
            prop_assert_eq!(last, start + 40);
        }
    }
}
