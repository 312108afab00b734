//! The incremental scheduler: place, release, resize and health changes, each in `O(log n)`
//! (amortised) in the number of workers.

use crate::index::{slot, Indexes};
use crate::types::{
    Assignment, Health, ModelId, Rejection, Role, SchedulerError, SessionId, SessionRequest,
    WorkerId, WorkerSpec,
};
use std::collections::{BTreeMap, HashMap};

struct WorkerState {
    spec: WorkerSpec,
    used: u64,
    sessions: u32,
    /// models whose weight shares this worker holds, with their session counts
    models: HashMap<ModelId, u32>,
}

impl WorkerState {
    fn free(&self) -> u64 {
        self.spec.mem_limit.saturating_sub(self.used)
    }
    fn eligible(&self) -> bool {
        self.spec.health == Health::Healthy && self.sessions < self.spec.max_sessions
    }
    fn model_list(&self) -> Vec<ModelId> {
        self.models.keys().copied().collect()
    }
    /// Bytes a new session of `model` with `kv` bytes would add here.
    fn cost(&self, model: ModelId, kv: u64, weights: u64) -> u64 {
        kv + if self.models.contains_key(&model) {
            0
        } else {
            weights
        }
    }
}

struct SessionState {
    model: ModelId,
    kv: u64,
    provider: WorkerId,
    helper: WorkerId,
}

/// Placement state of a worker pool.
pub struct Scheduler {
    workers: HashMap<WorkerId, WorkerState>,
    models: BTreeMap<ModelId, u64>,
    sessions: HashMap<SessionId, SessionState>,
    idx: Indexes,
}

impl Scheduler {
    /// A pool of `workers` serving `models` (weight-share bytes per model), no session yet.
    pub fn new(
        workers: &[WorkerSpec],
        models: &BTreeMap<ModelId, u64>,
    ) -> Result<Self, SchedulerError> {
        let mut s = Self {
            workers: HashMap::with_capacity(workers.len()),
            models: models.clone(),
            sessions: HashMap::new(),
            idx: Indexes::default(),
        };
        for w in workers {
            s.add_worker(w.clone())?;
        }
        Ok(s)
    }

    /// Adds a worker (scale-out).
    pub fn add_worker(&mut self, spec: WorkerSpec) -> Result<(), SchedulerError> {
        if self.workers.contains_key(&spec.id) {
            return Err(SchedulerError::DuplicateWorker(spec.id));
        }
        let id = spec.id;
        self.workers.insert(
            id,
            WorkerState {
                spec,
                used: 0,
                sessions: 0,
                models: HashMap::new(),
            },
        );
        self.reindex(id);
        Ok(())
    }

    fn unindex(&mut self, id: WorkerId) {
        let w = &self.workers[&id];
        if w.eligible() {
            let (role, free, models) = (w.spec.role, w.free(), w.model_list());
            self.idx.remove(role, free, id, &models);
        }
    }

    fn reindex(&mut self, id: WorkerId) {
        let w = &self.workers[&id];
        if w.eligible() {
            let (role, free, models) = (w.spec.role, w.free(), w.model_list());
            self.idx.insert(role, free, id, &models);
        }
    }

    /// The best worker of `role` for a session of `model` (`kv` bytes), outside `avoid_domain`:
    /// first the holder of the model's weights with the most free memory that fits, else the
    /// non-holder with the most free memory if it fits weights and cache.
    fn pick(
        &self,
        role: Role,
        model: ModelId,
        kv: u64,
        weights: u64,
        avoid_domain: Option<u32>,
    ) -> Option<WorkerId> {
        let domain_ok = |id: &WorkerId| Some(self.workers[id].spec.domain) != avoid_domain;
        if let Some(set) = self.idx.by_model.get(&(role, model)) {
            for (free, id) in set.iter().rev() {
                if *free < kv {
                    break;
                }
                if domain_ok(id) {
                    return Some(*id);
                }
            }
        }
        for (free, id) in self.idx.by_role[slot(role)].iter().rev() {
            if *free < kv {
                break;
            }
            let w = &self.workers[id];
            if w.models.contains_key(&model) || !domain_ok(id) {
                continue; // holders were tried above
            }
            if *free >= kv + weights {
                return Some(*id);
            }
            break; // every later worker has less room
        }
        None
    }

    fn check_pin(&self, p: WorkerId, h: WorkerId, model: ModelId, kv: u64) -> Result<(), String> {
        let weights = self.models[&model];
        let (wp, wh) = match (self.workers.get(&p), self.workers.get(&h)) {
            (Some(a), Some(b)) => (a, b),
            _ => return Err(format!("worker {p} or {h} is unknown")),
        };
        if wp.spec.role != Role::Provider || wh.spec.role != Role::Helper {
            return Err("roles do not match".into());
        }
        if wp.spec.domain == wh.spec.domain {
            return Err("provider and helper share a trust domain".into());
        }
        for w in [wp, wh] {
            if w.spec.health == Health::Lost {
                return Err(format!("worker {} is lost", w.spec.id));
            }
            if w.sessions >= w.spec.max_sessions || w.free() < w.cost(model, kv, weights) {
                return Err(format!("worker {} has no room", w.spec.id));
            }
        }
        Ok(())
    }

    /// Places a session: on its pinned pair (kept when still valid: healthy or draining, with
    /// room), or on the best pair. Never over-commits.
    pub fn place(&mut self, req: &SessionRequest) -> Result<Assignment, Rejection> {
        if self.sessions.contains_key(&req.id) {
            return Err(Rejection::Duplicate(req.id));
        }
        let weights = *self
            .models
            .get(&req.model)
            .ok_or(Rejection::UnknownModel(req.model))?;
        let (p, h) = match req.pin {
            Some((p, h)) => {
                self.check_pin(p, h, req.model, req.kv_bytes)
                    .map_err(Rejection::PinUnusable)?;
                (p, h)
            }
            None => {
                let p = self
                    .pick(Role::Provider, req.model, req.kv_bytes, weights, None)
                    .ok_or(Rejection::NoCapacity {
                        role: Role::Provider,
                    })?;
                let dom = self.workers[&p].spec.domain;
                let h = self
                    .pick(Role::Helper, req.model, req.kv_bytes, weights, Some(dom))
                    .ok_or(Rejection::NoCapacity { role: Role::Helper })?;
                (p, h)
            }
        };
        for id in [p, h] {
            self.unindex(id);
            let w = self.workers.get_mut(&id).expect("checked");
            let n = w.models.entry(req.model).or_insert(0);
            if *n == 0 {
                w.used += weights;
            }
            *n += 1;
            w.used += req.kv_bytes;
            w.sessions += 1;
            self.reindex(id);
        }
        self.sessions.insert(
            req.id,
            SessionState {
                model: req.model,
                kv: req.kv_bytes,
                provider: p,
                helper: h,
            },
        );
        Ok(Assignment {
            session: req.id,
            provider: p,
            helper: h,
        })
    }

    /// Ends a session and frees its bytes (and its model's weight shares on a worker that no
    /// longer serves the model).
    pub fn release(&mut self, id: SessionId) -> Result<(), Rejection> {
        let s = self
            .sessions
            .remove(&id)
            .ok_or(Rejection::UnknownSession(id))?;
        let weights = self.models[&s.model];
        for wid in [s.provider, s.helper] {
            self.unindex(wid);
            let w = self
                .workers
                .get_mut(&wid)
                .expect("placed on a known worker");
            w.used -= s.kv;
            w.sessions -= 1;
            let n = w.models.get_mut(&s.model).expect("model held");
            *n -= 1;
            if *n == 0 {
                w.models.remove(&s.model);
                w.used -= weights;
            }
            self.reindex(wid);
        }
        Ok(())
    }

    /// Resizes a session's KV reservation (decoding grows it); refused without a change when
    /// either worker lacks the room.
    pub fn update_usage(&mut self, id: SessionId, kv_bytes: u64) -> Result<(), Rejection> {
        let s = self
            .sessions
            .get(&id)
            .ok_or(Rejection::UnknownSession(id))?;
        let (p, h, old) = (s.provider, s.helper, s.kv);
        if kv_bytes > old {
            for wid in [p, h] {
                let w = &self.workers[&wid];
                if w.free() < kv_bytes - old {
                    return Err(Rejection::NoCapacity { role: w.spec.role });
                }
            }
        }
        for wid in [p, h] {
            self.unindex(wid);
            let w = self.workers.get_mut(&wid).expect("known");
            w.used = w.used - old + kv_bytes;
            self.reindex(wid);
        }
        self.sessions.get_mut(&id).expect("present").kv = kv_bytes;
        Ok(())
    }

    /// Sets a worker's capacity (what it announced: memory for sessions, sessions at once);
    /// refused when its placed sessions already hold more.
    pub fn set_capacity(
        &mut self,
        id: WorkerId,
        mem_limit: u64,
        max_sessions: u32,
    ) -> Result<(), SchedulerError> {
        let w = self
            .workers
            .get(&id)
            .ok_or(SchedulerError::UnknownWorker(id))?;
        if w.used > mem_limit || w.sessions > max_sessions {
            return Err(SchedulerError::BelowUse(id));
        }
        self.unindex(id);
        let spec = &mut self.workers.get_mut(&id).expect("checked").spec;
        spec.mem_limit = mem_limit;
        spec.max_sessions = max_sessions;
        self.reindex(id);
        Ok(())
    }

    /// Changes a worker's health. A lost worker's sessions are released (on both of their
    /// workers) and returned, for the coordinator to re-place or fail.
    pub fn set_health(
        &mut self,
        id: WorkerId,
        health: Health,
    ) -> Result<Vec<SessionId>, SchedulerError> {
        if !self.workers.contains_key(&id) {
            return Err(SchedulerError::UnknownWorker(id));
        }
        self.unindex(id);
        self.workers.get_mut(&id).expect("checked").spec.health = health;
        self.reindex(id);
        let mut affected = Vec::new();
        if health == Health::Lost {
            affected = self
                .sessions
                .iter()
                .filter(|(_, s)| s.provider == id || s.helper == id)
                .map(|(k, _)| *k)
                .collect();
            affected.sort_unstable();
            for s in &affected {
                self.release(*s).expect("listed above");
            }
        }
        Ok(affected)
    }

    /// The pair of a placed session.
    pub fn assignment(&self, id: SessionId) -> Option<Assignment> {
        self.sessions.get(&id).map(|s| Assignment {
            session: id,
            provider: s.provider,
            helper: s.helper,
        })
    }

    /// Sessions placed.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Bytes in use and sessions on a worker.
    pub fn usage(&self, id: WorkerId) -> Option<(u64, u32)> {
        self.workers.get(&id).map(|w| (w.used, w.sessions))
    }

    /// Recomputes every worker's accounting from the sessions and checks the invariants
    /// (capacity, session limits, roles, trust domains, health, index consistency); the
    /// description of the first violation otherwise.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut used: HashMap<WorkerId, u64> = HashMap::new();
        let mut count: HashMap<WorkerId, u32> = HashMap::new();
        let mut held: HashMap<(WorkerId, ModelId), u32> = HashMap::new();
        for (sid, s) in &self.sessions {
            let (p, h) = (&self.workers[&s.provider], &self.workers[&s.helper]);
            if p.spec.role != Role::Provider || h.spec.role != Role::Helper {
                return Err(format!("session {sid}: roles"));
            }
            if p.spec.domain == h.spec.domain {
                return Err(format!("session {sid}: same trust domain"));
            }
            for w in [p, h] {
                if w.spec.health == Health::Lost {
                    return Err(format!("session {sid} on lost worker {}", w.spec.id));
                }
                *used.entry(w.spec.id).or_default() += s.kv;
                *count.entry(w.spec.id).or_default() += 1;
                *held.entry((w.spec.id, s.model)).or_default() += 1;
            }
        }
        for (wid, m) in held.keys() {
            *used.entry(*wid).or_default() += self.models[m];
        }
        for (id, w) in &self.workers {
            let u = used.get(id).copied().unwrap_or(0);
            let c = count.get(id).copied().unwrap_or(0);
            if u != w.used || c != w.sessions {
                return Err(format!(
                    "worker {id}: accounting {}/{} vs {u}/{c}",
                    w.used, w.sessions
                ));
            }
            if w.used > w.spec.mem_limit || w.sessions > w.spec.max_sessions {
                return Err(format!("worker {id} over-committed"));
            }
            let indexed = self.idx.by_role[slot(w.spec.role)].contains(&(w.free(), *id));
            if indexed != w.eligible() {
                return Err(format!("worker {id}: index out of date"));
            }
        }
        Ok(())
    }
}
