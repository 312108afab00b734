//! Step manifests: which correlations a protocol step consumes, known before the step runs.
//!
//! The protocols are data-oblivious: the sequence of [`CorrRequest`]s a step makes depends on
//! the program (a model suffix) and the step's shape (rows fed, position in the sequence), never
//! on the values. So once a dealer has served one step of a shape, it holds that shape's
//! *manifest* and can generate and stream every bundle of the next step of the same shape ahead
//! of the parties' demand, with no request per bundle — the offline/online split of Beaver-style
//! preprocessing (Beaver 1991; the trusted-dealer setting of CrypTen, Knott et al. 2021), applied
//! per step. A manifest is only a prediction: each party's store still checks every bundle's
//! kind and shape against what the protocol asks for, so a wrong manifest fails a step, it never
//! feeds it a wrong correlation.

//!
//! A step's requests depend on its rows and on the number of keys its attention runs over. The
//! keys are padded to a multiple of [`KEY_BUCKET`] (the padding masked out in the softmax, a
//! public mask), so the decode steps of a whole bucket of positions share one manifest: a
//! manifest is known by its [`StepShape`], and a dealer that served one decode step of a
//! bucket streams the rest of the bucket's.

use super::CorrRequest;
use std::collections::HashMap;
use std::sync::Arc;

/// Attention runs over a multiple of this many keys (the padding masked out): the decode steps
/// of positions in one bucket consume the same correlations.
pub const KEY_BUCKET: usize = 8;

/// The number of keys attention runs over when `keys` are real: `keys` rounded up to a
/// multiple of [`KEY_BUCKET`], at most `max_keys` (the longest sequence a program serves).
pub fn key_bucket(keys: usize, max_keys: usize) -> usize {
    keys.next_multiple_of(KEY_BUCKET).min(max_keys.max(keys))
}

/// What a step's requests depend on: the program, the rows fed and the (bucketed) keys the
/// rows attend to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StepShape {
    /// fingerprint of the program
    pub program: u64,
    /// rows fed (0: the load)
    pub rows: u32,
    /// keys attended to, rounded up to a multiple of [`KEY_BUCKET`] (0 for a load)
    pub keys: u32,
}

/// Names a step's request sequence: the program, the rows it feeds and where they start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct StepKey {
    /// fingerprint of the program (see [`program_id`])
    pub program: u64,
    /// rows fed in this step (0: the program's load, e.g. masking private weights)
    pub rows: u32,
    /// position of the first row
    pub pos: u32,
}

impl StepKey {
    /// The program's load step.
    pub fn load(program: u64) -> Self {
        Self {
            program,
            rows: 0,
            pos: 0,
        }
    }

    /// The shape of the step, which names its manifest: steps at other positions of the same
    /// key bucket share it. (A program whose longest sequence is not a multiple of
    /// [`KEY_BUCKET`] pads its last bucket less; that bucket's steps still share one shape.)
    pub fn shape(&self) -> StepShape {
        let keys = if self.rows == 0 {
            0
        } else {
            (self.pos as usize + self.rows as usize).next_multiple_of(KEY_BUCKET) as u32
        };
        StepShape {
            program: self.program,
            rows: self.rows,
            keys,
        }
    }

    /// The step most likely to follow this one: one decoded row after the rows fed here
    /// (`None` after a load, whose next step's length is the client's prompt).
    pub fn next_decode(&self) -> Option<Self> {
        (self.rows > 0).then(|| Self {
            program: self.program,
            rows: 1,
            pos: self.pos.saturating_add(self.rows),
        })
    }
}

/// A stable 64-bit fingerprint (FNV-1a) of a program's description, e.g. its serialized
/// configuration together with the protocol version: equal descriptions give equal keys on
/// every build and machine.
pub fn program_id(description: &[u8]) -> u64 {
    description.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Manifests by step shape ([`StepKey::shape`]), at most `capacity`, the least recently used
/// evicted first.
pub struct ManifestCache {
    capacity: usize,
    clock: u64,
    entries: HashMap<StepShape, (Arc<[CorrRequest]>, u64)>,
}

impl ManifestCache {
    /// An empty cache holding at most `capacity` manifests (0 disables it).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            clock: 0,
            entries: HashMap::new(),
        }
    }

    /// The manifest of `key`, if known (and marks it used).
    pub fn get(&mut self, key: &StepKey) -> Option<Arc<[CorrRequest]>> {
        self.clock += 1;
        let now = self.clock;
        self.entries.get_mut(&key.shape()).map(|(m, used)| {
            *used = now;
            m.clone()
        })
    }

    /// Whether `key`'s manifest is known (without marking it used).
    pub fn contains(&self, key: &StepKey) -> bool {
        self.entries.contains_key(&key.shape())
    }

    /// Records `key`'s manifest, evicting the least recently used one when full.
    pub fn insert(&mut self, key: StepKey, manifest: Vec<CorrRequest>) {
        if self.capacity == 0 {
            return;
        }
        let key = key.shape();
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            if let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k)
            {
                self.entries.remove(&oldest);
            }
        }
        self.clock += 1;
        self.entries.insert(key, (manifest.into(), self.clock));
    }

    /// Manifests held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(rows: u32, pos: u32) -> StepKey {
        StepKey {
            program: 7,
            rows,
            pos,
        }
    }

    #[test]
    fn the_least_recently_used_manifest_goes_first() {
        let mut c = ManifestCache::new(2);
        c.insert(key(4, 0), vec![CorrRequest::MulTriples { n: 1 }]);
        c.insert(key(1, 4), vec![CorrRequest::MulTriples { n: 2 }]);
        assert!(c.get(&key(4, 0)).is_some()); // (1, 4) is now the oldest
        c.insert(key(1, 40), vec![CorrRequest::MulTriples { n: 3 }]);
        assert_eq!(c.len(), 2);
        assert!(!c.contains(&key(1, 4)));
        assert_eq!(
            c.get(&key(1, 40)).unwrap().to_vec(),
            vec![CorrRequest::MulTriples { n: 3 }]
        );
        let mut off = ManifestCache::new(0);
        off.insert(key(1, 1), vec![]);
        assert!(off.is_empty());
    }

    #[test]
    fn steps_of_one_key_bucket_share_a_manifest() {
        let mut c = ManifestCache::new(8);
        c.insert(key(1, 0), vec![CorrRequest::MulTriples { n: 1 }]);
        // positions 0..KEY_BUCKET attend to 1..=KEY_BUCKET keys: one bucket
        for pos in 0..KEY_BUCKET as u32 {
            assert!(c.contains(&key(1, pos)), "pos {pos}");
        }
        assert!(!c.contains(&key(1, KEY_BUCKET as u32)));
        // rows and programs stay apart
        assert!(!c.contains(&key(2, 0)));
        assert!(!c.contains(&StepKey {
            program: 8,
            rows: 1,
            pos: 0
        }));
        let b = KEY_BUCKET as u32;
        assert_eq!(key(b, 0).shape().keys, b);
        assert_eq!(key(b + 1, 0).shape().keys, 2 * b);
        assert_eq!(StepKey::load(7).shape().keys, 0);
        assert_eq!(key_bucket(1, 256), KEY_BUCKET);
        assert_eq!(key_bucket(KEY_BUCKET + 1, KEY_BUCKET + 3), KEY_BUCKET + 3);
        assert_eq!(key_bucket(2 * KEY_BUCKET, 256), 2 * KEY_BUCKET);
    }

    #[test]
    fn decode_follows_a_fed_step_and_nothing_is_predicted_after_a_load() {
        assert_eq!(key(32, 0).next_decode(), Some(key(1, 32)));
        assert_eq!(key(1, 32).next_decode(), Some(key(1, 33)));
        assert_eq!(StepKey::load(7).next_decode(), None);
    }

    #[test]
    fn program_ids_are_stable_and_tell_programs_apart() {
        // FNV-1a reference values
        assert_eq!(program_id(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(program_id(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(program_id(b"suffix v1"), program_id(b"suffix v2"));
    }
}
