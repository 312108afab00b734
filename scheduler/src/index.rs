//! Ordered indexes of the workers that can take a new session: by free memory per role, and per
//! (role, model) for the workers that already hold that model's weight shares.

use crate::types::{ModelId, Role, WorkerId};
use std::collections::{BTreeSet, HashMap};

/// `(free bytes, worker)` ordered ascending; the best candidates are at the back.
pub(crate) type FreeSet = BTreeSet<(u64, WorkerId)>;

/// The indexes.
#[derive(Default)]
pub(crate) struct Indexes {
    pub(crate) by_role: [FreeSet; 2],
    pub(crate) by_model: HashMap<(Role, ModelId), FreeSet>,
}

pub(crate) fn slot(r: Role) -> usize {
    match r {
        Role::Provider => 0,
        Role::Helper => 1,
    }
}

impl Indexes {
    pub(crate) fn insert(&mut self, role: Role, free: u64, id: WorkerId, models: &[ModelId]) {
        self.by_role[slot(role)].insert((free, id));
        for m in models {
            self.by_model
                .entry((role, *m))
                .or_default()
                .insert((free, id));
        }
    }

    pub(crate) fn remove(&mut self, role: Role, free: u64, id: WorkerId, models: &[ModelId]) {
        self.by_role[slot(role)].remove(&(free, id));
        for m in models {
            if let Some(s) = self.by_model.get_mut(&(role, *m)) {
                s.remove(&(free, id));
                if s.is_empty() {
                    self.by_model.remove(&(role, *m));
                }
            }
        }
    }
}
