//! The coordinator's loop: consume jobs (consumer group, manual commits), validate, place each
//! new session on a worker pair through `marill-scheduler`, route a session's later steps to the
//! same pair, publish every outcome on `marill.results` (keyed by job id) and every rejected
//! message on `marill.dead-letter`, and commit a message's offset only after its outcome is
//! acknowledged by the broker (at least once). A redelivered job whose result is already on
//! `marill.results` (published by this run, or read from the topic's tail at start: a restart
//! or another coordinator) is answered with the same bytes, so a job never has two different
//! visible results.
//!
//! Each worker pair serves several sessions at once, one per *lane* (its workers keep a KV
//! cache per lane; the pair's hello says how many): a new session goes to a free lane of the
//! ready pair with the fewest open sessions (`lanes.rs`) whose two workers have room for its
//! KV cache (`marill-scheduler`, against the memory each worker announced in its hello) and
//! keeps that lane for all its steps; its steps run one at a time, while the steps of
//! different sessions run concurrently. Sessions wait in arrival order for a lane with room;
//! when no pair in service could hold even one session, a new session is refused at once with
//! the reason. A draining pair (`SIGTERM` to a worker) takes no new session: a step 0 it
//! refused for its drain goes to another pair. A closed session (ended, expired, closed by
//! its client, failed) frees its lane, and both workers are told to drop its cache. A pair that
//! fails a step or is lost goes out of service until it answers a hello again, and every
//! session on it is closed (its workers restart, their caches gone). A session idle for longer
//! than its limit is closed. Kafka is polled on this thread; the pairs' blocking links live on
//! their own threads.

use crate::kafka::{self, produce, KafkaSettings};
use crate::lag;
use crate::lanes::Lanes;
use crate::metrics::CoordinatorMetrics;
use crate::offsets::OffsetTracker;
use crate::pairs::{
    self, ControlKeys, PairEndpoints, PairEvent, PairMemory, PairTask, StepDone, StepTask,
};
use crate::CoordinatorError;
use marill_proto::job::{
    DeadLetter, Job, JobResult, Outcome, DEAD_LETTER_TOPIC, JOBS_TOPIC, RESULTS_TOPIC,
};
use marill_scheduler::{Health, Role, Scheduler, SessionRequest, WorkerSpec};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Message as _, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A model this coordinator's pairs serve.
#[derive(Clone, Debug)]
pub struct ServedModel {
    /// name in jobs
    pub name: String,
}

/// Everything the coordinator needs.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// Kafka connection
    pub kafka: KafkaSettings,
    /// consumer group
    pub group: String,
    /// the worker pairs
    pub pairs: Vec<PairEndpoints>,
    /// control-link keys
    pub keys: ControlKeys,
    /// the model served by every pair
    pub model: ServedModel,
    /// a step not answered within this fails and loses its pair
    pub step_timeout: Duration,
    /// an open session with no step for this long is closed
    pub session_idle: Duration,
    /// stop after this long with nothing received, pending or running (None: run until stopped)
    pub exit_when_idle: Option<Duration>,
    /// create the three topics at start (off where they are provisioned otherwise, e.g. on
    /// librdkafka's mock broker, which has no CreateTopics)
    pub create_topics: bool,
    /// partitions of the jobs topic when it is created here (the most coordinators that
    /// share the jobs: each partition is consumed by one member of the group)
    pub job_partitions: u32,
}

/// What the coordinator did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoordinatorStats {
    /// jobs whose outcome was Done
    pub done: u64,
    /// jobs whose outcome was Failed
    pub failed: u64,
    /// messages sent to the dead-letter topic
    pub dead_lettered: u64,
    /// redelivered jobs answered from the published result
    pub duplicates: u64,
    /// sessions opened
    pub sessions: u64,
}

struct Session {
    pair: usize,
    /// its lane on the pair, the same for all its steps
    lane: u32,
    sched_id: u64,
    next_step: u32,
    busy: bool,
    last_activity: Instant,
    queue: VecDeque<Job>,
    /// the step running now is the session's last
    last_step_was_last: bool,
    /// its step 0 until that step ran: placed again elsewhere if its pair refused it because
    /// a worker drains
    first: Option<Job>,
}

struct State {
    cfg: CoordinatorConfig,
    producer: rdkafka::producer::FutureProducer,
    sched: Scheduler,
    pair_tx: Vec<Sender<PairTask>>,
    /// which session occupies each lane of each pair
    lanes: Lanes,
    pair_lost: Vec<bool>,
    /// both workers answered the hello
    pair_ready: Vec<bool>,
    /// a worker of the pair drains: no new session goes there
    pair_draining: Vec<bool>,
    /// what each pair's workers announced for KV caches
    pair_memory: Vec<PairMemory>,
    sessions: HashMap<String, Session>,
    waiting: VecDeque<Job>,
    /// job id → the offsets waiting for its outcome
    in_flight: HashMap<String, Vec<(i32, i64)>>,
    /// published results by job id (bounded, oldest dropped first)
    published: HashMap<String, Vec<u8>>,
    published_order: VecDeque<String>,
    tracker: OffsetTracker,
    next_sched_id: u64,
    stats: CoordinatorStats,
    metrics: CoordinatorMetrics,
    /// arrival time of each job in flight
    arrived: HashMap<String, Instant>,
}

const MAX_REMEMBERED_RESULTS: usize = 100_000;
/// Sets its flag when dropped (stops a helper thread however the loop ends).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
/// How long after a failed commit the coordinator commits again.
const COMMIT_RETRY: Duration = Duration::from_secs(1);
const KV_RESERVE: u64 = 1;
/// The most lanes the coordinator uses on a pair (a pair announcing more gets this many): the
/// scheduler's per-worker session limit, while the lanes themselves are counted by [`Lanes`].
const MAX_LANES: u32 = 1024;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs the coordinator until `stop` is set (or, with `exit_when_idle`, until idle), updating
/// `metrics` as it goes.
pub fn run(
    cfg: CoordinatorConfig,
    stop: Arc<AtomicBool>,
    metrics: CoordinatorMetrics,
) -> Result<CoordinatorStats, CoordinatorError> {
    if cfg.create_topics {
        cfg.kafka.ensure_topics(
            &[JOBS_TOPIC],
            cfg.job_partitions.clamp(1, i32::MAX as u32) as i32,
        )?;
        cfg.kafka
            .ensure_topics(&[RESULTS_TOPIC, DEAD_LETTER_TOPIC], 4)?;
    }
    let consumer: BaseConsumer = cfg.kafka.group_consumer(&cfg.group)?;
    consumer.subscribe(&[JOBS_TOPIC])?;
    let producer = cfg.kafka.producer()?;
    let (done_tx, done_rx) = channel::<PairEvent>();
    let mut pair_tx = Vec::new();
    let mut workers = Vec::new();
    for (i, ends) in cfg.pairs.iter().enumerate() {
        pair_tx.push(
            pairs::spawn(
                i,
                ends.clone(),
                cfg.keys.clone(),
                cfg.step_timeout,
                done_tx.clone(),
            )
            .map_err(|e| CoordinatorError::Io(e.to_string()))?,
        );
        for (role, domain) in [(Role::Provider, 0), (Role::Helper, 1)] {
            workers.push(WorkerSpec {
                id: (2 * i + domain) as u32,
                role,
                domain: domain as u32,
                mem_limit: u64::MAX / 4,
                max_sessions: MAX_LANES,
                health: Health::Healthy,
            });
        }
    }
    drop(done_tx);
    let sched = Scheduler::new(&workers, &BTreeMap::from([(0, 0)]))
        .map_err(|e| CoordinatorError::Config(e.to_string()))?;
    let n = cfg.pairs.len();
    let mut st = State {
        cfg,
        producer,
        sched,
        pair_tx,
        lanes: Lanes::new(n),
        pair_lost: vec![false; n],
        pair_ready: vec![false; n],
        pair_draining: vec![false; n],
        pair_memory: vec![PairMemory::default(); n],
        sessions: HashMap::new(),
        waiting: VecDeque::new(),
        in_flight: HashMap::new(),
        published: HashMap::new(),
        published_order: VecDeque::new(),
        tracker: OffsetTracker::default(),
        next_sched_id: 1,
        stats: CoordinatorStats::default(),
        metrics,
        arrived: HashMap::new(),
    };
    // results published before this coordinator started (by it or by another): a redelivered
    // job is answered with the same bytes after a restart too
    let earlier = kafka::read_tail(
        &st.cfg.kafka,
        RESULTS_TOPIC,
        (MAX_REMEMBERED_RESULTS / 4) as i64,
        Duration::from_secs(60),
    )?;
    let n = earlier.len();
    for (key, bytes) in earlier {
        st.remember(String::from_utf8_lossy(&key).into_owned(), bytes);
    }
    tracing::info!(results = n, "published results remembered");
    st.update_gauges();
    let mut last_event = Instant::now();
    // the lag is read by its own thread; the loop tells it its partitions
    let assigned: lag::Assigned = Arc::default();
    let lag_stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
    lag::spawn(
        &st.cfg.kafka,
        &st.cfg.group,
        JOBS_TOPIC,
        assigned.clone(),
        st.metrics.kafka_lag.clone(),
        lag_stop.0.clone(),
    )?;
    let mut lag_told: Option<Instant> = None;
    let mut commit_after: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        // the partitions this coordinator is assigned, for the lag thread (a local call)
        if lag_told.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            lag_told = Some(Instant::now());
            if let Ok(a) = consumer.assignment() {
                let parts: Vec<i32> = a
                    .elements_for_topic(JOBS_TOPIC)
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                if let Ok(mut slot) = assigned.lock() {
                    *slot = (!parts.is_empty()).then_some(parts);
                }
            }
        }
        let mut event = st.drain_done(&done_rx)?;
        if let Some(r) = consumer.poll(Duration::from_millis(20)) {
            event = true;
            match r {
                Ok(m) => {
                    let (p, o) = (m.partition(), m.offset());
                    st.tracker.begin(p, o);
                    st.handle(p, o, m.payload().unwrap_or(&[]))?;
                }
                Err(e) => tracing::warn!(error = %e, "kafka consumer error"),
            }
        }
        st.expire();
        st.dispatch();
        st.update_gauges();
        let commits = if commit_after.is_none_or(|t| Instant::now() >= t) {
            st.tracker.to_commit()
        } else {
            Vec::new()
        };
        if !commits.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (p, pos) in &commits {
                tpl.add_partition_offset(JOBS_TOPIC, *p, Offset::Offset(*pos))?;
            }
            commit_after = None;
            if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                // the broker away, or this member fenced until it rejoins the group after an
                // outage: not fatal. The positions are committed again later; what the group
                // redelivers meanwhile is answered from the published results.
                tracing::warn!(error = %e, "committing offsets failed: retrying in 1 s");
                st.tracker.retry(&commits);
                commit_after = Some(Instant::now() + COMMIT_RETRY);
            }
        }
        let busy = st.tracker.pending() > 0 || !st.sessions.is_empty() || !st.waiting.is_empty();
        if event || busy {
            last_event = Instant::now();
        }
        if let Some(idle) = st.cfg.exit_when_idle {
            if last_event.elapsed() > idle {
                break;
            }
        }
    }
    Ok(st.stats)
}

impl State {
    fn handle(
        &mut self,
        partition: i32,
        offset: i64,
        payload: &[u8],
    ) -> Result<(), CoordinatorError> {
        let job = match Job::decode(payload) {
            Ok(j) => j,
            Err(e) => {
                let dl = DeadLetter {
                    topic: JOBS_TOPIC.into(),
                    partition,
                    offset,
                    reason: e.to_string(),
                    payload: payload.to_vec(),
                };
                self.publish(
                    DEAD_LETTER_TOPIC,
                    &format!("{partition}:{offset}"),
                    &dl.encode(),
                )?;
                self.stats.dead_lettered += 1;
                self.metrics.jobs.with_label_values(&["dead_letter"]).inc();
                tracing::info!(partition, offset, reason = %e, "job rejected to the dead-letter topic");
                self.tracker.done(partition, offset);
                return Ok(());
            }
        };
        tracing::debug!(partition, offset, job = %job.job_id, step = job.step, "job taken");
        if let Some(bytes) = self.published.get(&job.job_id) {
            // redelivered: the same result again (idempotent by job id)
            self.publish(RESULTS_TOPIC, &job.job_id, &bytes.clone())?;
            self.stats.duplicates += 1;
            self.metrics.jobs.with_label_values(&["duplicate"]).inc();
            self.tracker.done(partition, offset);
            return Ok(());
        }
        if let Some(offs) = self.in_flight.get_mut(&job.job_id) {
            offs.push((partition, offset));
            self.stats.duplicates += 1;
            self.metrics.jobs.with_label_values(&["duplicate"]).inc();
            return Ok(());
        }
        self.in_flight
            .insert(job.job_id.clone(), vec![(partition, offset)]);
        self.arrived.insert(job.job_id.clone(), Instant::now());
        let model = &self.cfg.model;
        let refuse = if job.model != model.name {
            Some(format!(
                "model {} is not served here (serving {})",
                job.model, model.name
            ))
        } else if job.deadline_ms < now_ms() {
            Some("deadline passed before the job was taken".into())
        } else {
            None
        };
        if let Some(reason) = refuse {
            return self.finish(
                &job.job_id,
                &job.session,
                job.step,
                Outcome::Failed { reason },
            );
        }
        if job.step == 0 {
            if self.sessions.contains_key(&job.session) {
                let reason = format!("session {} is already open", job.session);
                return self.finish(&job.job_id, &job.session, 0, Outcome::Failed { reason });
            }
            self.waiting.push_back(job);
            return Ok(());
        }
        match self.sessions.get_mut(&job.session) {
            Some(s) if s.next_step + s.queue.len() as u32 == job.step => {
                s.last_activity = Instant::now();
                s.queue.push_back(job);
                Ok(())
            }
            Some(s) => {
                let reason = format!(
                    "step {} of session {} is out of order (next is {})",
                    job.step,
                    job.session,
                    s.next_step + s.queue.len() as u32
                );
                self.finish(
                    &job.job_id,
                    &job.session,
                    job.step,
                    Outcome::Failed { reason },
                )
            }
            None => {
                let reason = format!(
                    "session {} is not open (ended, expired or never opened)",
                    job.session
                );
                self.finish(
                    &job.job_id,
                    &job.session,
                    job.step,
                    Outcome::Failed { reason },
                )
            }
        }
    }

    /// Produces one message and waits for its acknowledgement, through a broker restart: a
    /// failed produce (e.g. the idempotent producer's fatal `OutOfOrderSequenceNumber` once a
    /// restarted broker has lost its producer state) gets a fresh producer and another try, up
    /// to 5 more over ~15 s. Results and dead letters are keyed and idempotent, so a message
    /// that did reach the broker before the failure is only repeated.
    fn publish(&mut self, topic: &str, key: &str, bytes: &[u8]) -> Result<(), CoordinatorError> {
        let mut tries = 0u64;
        loop {
            match produce(&self.producer, topic, key, bytes) {
                Ok(()) => return Ok(()),
                Err(e) if tries < 5 => {
                    tries += 1;
                    tracing::warn!(topic, error = %e, tries, "producing failed: trying again with a fresh producer");
                    std::thread::sleep(Duration::from_secs(tries));
                    self.producer = self.cfg.kafka.producer()?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Publishes an outcome, remembers it, and releases the offsets that waited for it.
    fn finish(
        &mut self,
        job_id: &str,
        session: &str,
        step: u32,
        outcome: Outcome,
    ) -> Result<(), CoordinatorError> {
        let label = match &outcome {
            Outcome::Done {
                bytes_sent, rounds, ..
            } => {
                self.stats.done += 1;
                for (party, b) in ["provider", "helper"].iter().zip(bytes_sent) {
                    self.metrics
                        .online_bytes
                        .with_label_values(&[party])
                        .inc_by(*b);
                }
                self.metrics.rounds.inc_by(*rounds);
                "done"
            }
            Outcome::Closed => {
                self.stats.done += 1;
                "closed"
            }
            Outcome::Failed { reason } => {
                self.stats.failed += 1;
                tracing::info!(job_id, session, step, reason = %reason, "job failed");
                "failed"
            }
        };
        self.metrics.jobs.with_label_values(&[label]).inc();
        if let Some(t) = self.arrived.remove(job_id) {
            let phase = if step == 0 { "prefill" } else { "decode" };
            self.metrics
                .job_seconds
                .with_label_values(&[phase])
                .observe(t.elapsed().as_secs_f64());
        }
        let r = JobResult {
            job_id: job_id.to_string(),
            session: session.to_string(),
            step,
            outcome,
        };
        let bytes = r.encode();
        self.publish(RESULTS_TOPIC, job_id, &bytes)?;
        tracing::debug!(job = %job_id, result = label, "result published");
        self.remember(job_id.to_string(), bytes);
        for (p, o) in self.in_flight.remove(job_id).unwrap_or_default() {
            self.tracker.done(p, o);
        }
        Ok(())
    }

    fn drain_done(&mut self, rx: &Receiver<PairEvent>) -> Result<bool, CoordinatorError> {
        let mut any = false;
        while let Ok(ev) = rx.try_recv() {
            any = true;
            match ev {
                PairEvent::Ready {
                    pair,
                    lanes,
                    draining,
                    memory,
                } => self.ready(pair, lanes, draining, memory)?,
                PairEvent::Draining { pair } => self.draining(pair),
                PairEvent::Lost { pair, reason } => {
                    tracing::warn!(pair, reason = %reason, "worker pair did not become ready");
                    self.retire(pair)?;
                }
                PairEvent::Done(d) => self.step_done(d)?,
            }
        }
        Ok(any)
    }

    /// A worker of pair `pair` drains: its open sessions go on, no new one goes there.
    fn draining(&mut self, pair: usize) {
        if !self.pair_draining[pair] {
            self.pair_draining[pair] = true;
            tracing::info!(
                pair,
                open = self.lanes.open(pair),
                "worker pair draining: no new session goes there"
            );
        }
    }

    /// Pair `pair` answered its hello with `lanes` lanes: it takes sessions (unless a worker
    /// drains).
    fn ready(
        &mut self,
        pair: usize,
        lanes: u32,
        draining: bool,
        memory: PairMemory,
    ) -> Result<(), CoordinatorError> {
        let serving = self.pair_ready[pair] && !self.pair_lost[pair];
        if draining && serving {
            // the same workers, draining: their sessions and caches are still there
            self.draining(pair);
            return Ok(());
        }
        self.pair_draining[pair] = draining;
        if self.pair_lost[pair] {
            // its workers answer again (restarted): back into service
            self.pair_lost[pair] = false;
            for w in [2 * pair, 2 * pair + 1] {
                let _ = self.sched.set_health(w as u32, Health::Healthy);
            }
            tracing::info!(pair, lanes, kv_room = ?memory.room, session_kv = memory.session_kv, "worker pair back in service");
        } else {
            tracing::info!(pair, lanes, kv_room = ?memory.room, session_kv = memory.session_kv, "worker pair ready");
        }
        // a session still placed here did not outlive the probe (normally closed already when
        // the pair went out of service)
        self.pair_ready[pair] = false;
        self.close_all(pair)?;
        let lanes = lanes.clamp(1, MAX_LANES);
        self.lanes.reset(pair, lanes);
        // the scheduler places against what the workers announced (their sessions were
        // closed above: nothing is placed on them)
        for (k, w) in [2 * pair, 2 * pair + 1].into_iter().enumerate() {
            self.sched
                .set_capacity(w as u32, memory.room[k], lanes)
                .map_err(|e| CoordinatorError::Config(e.to_string()))?;
        }
        self.pair_memory[pair] = memory;
        self.pair_ready[pair] = true;
        Ok(())
    }

    /// A step ended: its outcome is published, its session goes on or is closed, and a pair
    /// that failed it goes out of service with all its sessions.
    fn step_done(&mut self, d: StepDone) -> Result<(), CoordinatorError> {
        if d.refused && !d.pair_lost {
            return self.step_refused(d);
        }
        let failed = matches!(d.outcome, Outcome::Failed { .. });
        if d.pair_lost {
            self.mark_lost(d.pair);
        } else if failed {
            // the pair's thread probes it again (a worker exits after reporting a failure
            // inside the 2PC): no step goes to it until it answers ready
            self.pair_ready[d.pair] = false;
        }
        // the session's running step (it was not closed meanwhile, e.g. by its pair's failure
        // while this step was in flight)
        let mine = self
            .sessions
            .get(&d.session)
            .is_some_and(|s| s.pair == d.pair && s.busy && s.next_step == d.step);
        let last = mine
            && self
                .sessions
                .get(&d.session)
                .is_some_and(|s| s.queue.is_empty() && s.last_step_was_last);
        self.finish(&d.job_id, &d.session, d.step, d.outcome)?;
        if mine {
            if let Some(s) = self.sessions.get_mut(&d.session) {
                s.busy = false;
                s.next_step = d.step + 1;
                s.last_activity = Instant::now();
                s.first = None;
            }
            if failed || last || d.pair_lost {
                self.close(&d.session, "ended")?;
            }
        }
        if failed || d.pair_lost {
            self.close_all(d.pair)?;
        }
        Ok(())
    }

    /// A step both workers refused before any 2PC work (e.g. a share that does not open under
    /// its binding, or a step injected into a session without the session's secret): its
    /// failure is published, the pair stays in service, and the session stays open at the
    /// same step for its client (a refused step 0 closes it: nothing was opened), so a job
    /// forged by the broker or another client costs nobody else their session.
    fn step_refused(&mut self, d: StepDone) -> Result<(), CoordinatorError> {
        let mine = self
            .sessions
            .get(&d.session)
            .is_some_and(|s| s.pair == d.pair && s.busy && s.next_step == d.step);
        if mine && d.step == 0 && d.draining {
            // refused because a worker drains: the session goes to another pair, no result
            // yet (the workers' drain notice may still be on its way)
            self.draining(d.pair);
            if let Some(job) = self
                .sessions
                .get_mut(&d.session)
                .and_then(|s| s.first.take())
            {
                tracing::info!(session = %d.session, pair = d.pair, "step 0 refused by a draining pair: placed again");
                self.close(&d.session, "moved off a draining pair")?;
                self.waiting.push_front(job);
                return Ok(());
            }
        }
        self.finish(&d.job_id, &d.session, d.step, d.outcome)?;
        if mine {
            if d.step == 0 {
                self.close(&d.session, "refused its first step")?;
            } else if let Some(s) = self.sessions.get_mut(&d.session) {
                s.busy = false;
                s.last_activity = Instant::now();
            }
        }
        Ok(())
    }

    /// Closes a session: fails its queued steps, frees its lane (both workers are told to drop
    /// its cache while the pair is in service; otherwise they restart without it, and the next
    /// session on the lane replaces it anyway).
    fn close(&mut self, session: &str, why: &str) -> Result<(), CoordinatorError> {
        if let Some(s) = self.sessions.remove(session) {
            let _ = self.sched.release(s.sched_id);
            let freed = self.lanes.free(s.pair, s.lane, session);
            if freed && self.pair_ready[s.pair] && !self.pair_lost[s.pair] {
                let end = PairTask::End {
                    session: session.to_string(),
                    lane: s.lane,
                };
                // a pair thread that is gone shows at the next step sent to it
                let _ = self.pair_tx[s.pair].send(end);
            }
            for j in s.queue {
                let reason = format!("session {session} {why} before this step ran");
                self.finish(&j.job_id, &j.session, j.step, Outcome::Failed { reason })?;
            }
        }
        Ok(())
    }

    /// Closes every session on `pair`, which is out of service (its workers restart or are
    /// gone, and their caches with them); a step of theirs still running there is published
    /// when it ends.
    fn close_all(&mut self, pair: usize) -> Result<(), CoordinatorError> {
        let mut on: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.pair == pair)
            .map(|(k, _)| k.clone())
            .collect();
        on.sort_unstable();
        for k in on {
            self.close(&k, "lost its worker pair")?;
        }
        Ok(())
    }

    /// Fails waiting jobs past their deadline; closes idle sessions.
    fn expire(&mut self) {
        let now = now_ms();
        let mut expired = Vec::new();
        self.waiting.retain(|j| {
            let keep = j.deadline_ms >= now;
            if !keep {
                expired.push((j.job_id.clone(), j.session.clone(), j.step));
            }
            keep
        });
        for (id, s, step) in expired {
            let reason = "deadline passed while waiting for a worker pair".to_string();
            if let Err(e) = self.finish(&id, &s, step, Outcome::Failed { reason }) {
                tracing::warn!(error = %e, "publishing an expiry");
            }
        }
        let idle = self.cfg.session_idle;
        let stale: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.busy && s.queue.is_empty() && s.last_activity.elapsed() > idle)
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            tracing::info!(session = %k, "session idle: closed");
            if let Err(e) = self.close(&k, "expired") {
                tracing::warn!(error = %e, "closing an idle session");
            }
        }
    }

    /// Starts every step that can run: queued steps of open sessions, then new sessions on
    /// free pairs (placed by the scheduler).
    fn dispatch(&mut self) {
        let ready: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.busy && !s.queue.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for k in ready {
            // (a session listed here may have been closed meanwhile: its pair was lost)
            let Some(s) = self.sessions.get_mut(&k) else {
                continue;
            };
            let job = s.queue.pop_front().expect("non-empty");
            if job.rows == 0 {
                // an end step: nothing runs on the workers
                let r = self
                    .finish(&job.job_id, &job.session, job.step, Outcome::Closed)
                    .and_then(|_| self.close(&job.session, "closed by the client"));
                if let Err(e) = r {
                    tracing::warn!(error = %e, "closing a session");
                }
                continue;
            }
            s.busy = true;
            s.last_step_was_last = job.last;
            let (pair, lane) = (s.pair, s.lane);
            self.send(pair, lane, job);
        }
        while !self.waiting.is_empty() {
            let id = self.next_sched_id;
            // a free lane of a ready pair, the least loaded first; the scheduler accounts the
            // session on the pair's two workers
            let candidates = self
                .lanes
                .candidates(|i| self.pair_ready[i] && !self.pair_lost[i] && !self.pair_draining[i]);
            let placed = candidates.into_iter().find(|&(i, _)| {
                let req = SessionRequest {
                    id,
                    model: 0,
                    kv_bytes: self.pair_memory[i].session_kv.max(KV_RESERVE),
                    pin: Some(((2 * i) as u32, (2 * i + 1) as u32)),
                };
                self.sched.place(&req).is_ok()
            });
            self.metrics
                .scheduler_decisions
                .with_label_values(&[if placed.is_some() {
                    "placed"
                } else {
                    "rejected"
                }])
                .inc();
            let Some((pair, lane)) = placed else {
                if let Some(reason) = self.fits_nowhere() {
                    let job = self.waiting.pop_front().expect("front");
                    if let Err(e) =
                        self.finish(&job.job_id, &job.session, 0, Outcome::Failed { reason })
                    {
                        tracing::warn!(error = %e, "publishing a failure");
                    }
                    continue;
                }
                if self.pair_lost.iter().all(|l| *l) {
                    let job = self.waiting.pop_front().expect("front");
                    let reason = "no worker pair is available".to_string();
                    if let Err(e) =
                        self.finish(&job.job_id, &job.session, 0, Outcome::Failed { reason })
                    {
                        tracing::warn!(error = %e, "publishing a failure");
                    }
                    continue;
                }
                break;
            };
            self.next_sched_id += 1;
            let job = self.waiting.pop_front().expect("front");
            let taken = self.lanes.occupy(pair, lane, &job.session);
            debug_assert!(taken, "a candidate lane is free");
            if let Some(t) = self.arrived.get(&job.job_id) {
                self.metrics
                    .queue_wait_seconds
                    .observe(t.elapsed().as_secs_f64());
            }
            self.stats.sessions += 1;
            self.sessions.insert(
                job.session.clone(),
                Session {
                    pair,
                    lane,
                    sched_id: id,
                    next_step: 0,
                    busy: true,
                    last_activity: Instant::now(),
                    queue: VecDeque::new(),
                    last_step_was_last: job.last,
                    first: Some(job.clone()),
                },
            );
            self.send(pair, lane, job);
        }
    }

    /// Why no session can be placed on any pair in service even once the others end: every
    /// such pair has a worker without memory for one session's KV cache. `None` while some
    /// pair could take one (or no pair is in service yet: sessions wait for one).
    fn fits_nowhere(&self) -> Option<String> {
        let serving: Vec<usize> = (0..self.pair_lost.len())
            .filter(|&i| self.pair_ready[i] && !self.pair_lost[i])
            .collect();
        let fits = |m: &PairMemory| m.room.iter().all(|r| *r >= m.session_kv.max(KV_RESERVE));
        if serving.is_empty() || serving.iter().any(|&i| fits(&self.pair_memory[i])) {
            return None;
        }
        let m = &self.pair_memory[serving[0]];
        Some(format!(
            "no worker pair has memory for a session: a session's KV cache takes {} bytes, \
             the workers have {} and {} bytes for KV caches",
            m.session_kv, m.room[0], m.room[1]
        ))
    }

    /// Takes a pair out of service until its thread reports it ready again (its workers are
    /// gone or out of step), closing its sessions.
    fn retire(&mut self, pair: usize) -> Result<(), CoordinatorError> {
        self.mark_lost(pair);
        self.close_all(pair)
    }

    /// Marks a pair lost (here and in the scheduler).
    fn mark_lost(&mut self, pair: usize) {
        if !self.pair_lost[pair] {
            self.pair_lost[pair] = true;
            for w in [2 * pair, 2 * pair + 1] {
                let _ = self.sched.set_health(w as u32, Health::Lost);
            }
            tracing::warn!(pair, "worker pair lost");
        }
    }

    /// Keeps a published result for redeliveries of its job (the oldest forgotten first).
    fn remember(&mut self, job_id: String, bytes: Vec<u8>) {
        if self.published.insert(job_id.clone(), bytes).is_none() {
            self.published_order.push_back(job_id);
        }
        while self.published_order.len() > MAX_REMEMBERED_RESULTS {
            if let Some(old) = self.published_order.pop_front() {
                self.published.remove(&old);
            }
        }
    }

    fn update_gauges(&self) {
        let m = &self.metrics;
        m.sessions_active.set(self.sessions.len() as i64);
        m.sessions_waiting.set(self.waiting.len() as i64);
        let lost = self.pair_lost.iter().filter(|l| **l).count();
        let serving: Vec<usize> = (0..self.pair_lost.len())
            .filter(|&i| self.pair_ready[i] && !self.pair_lost[i])
            .collect();
        let draining = serving.iter().filter(|&&i| self.pair_draining[i]).count();
        let ready = serving.len() - draining;
        m.pairs.with_label_values(&["ready"]).set(ready as i64);
        m.pairs
            .with_label_values(&["draining"])
            .set(draining as i64);
        m.pairs
            .with_label_values(&["starting"])
            .set((self.pair_lost.len() - lost - serving.len()) as i64);
        m.pairs.with_label_values(&["lost"]).set(lost as i64);
        m.uncommitted_messages.set(self.tracker.pending() as i64);
    }

    /// Hands a step to its pair's thread, on the session's lane.
    fn send(&mut self, pair: usize, lane: u32, job: Job) {
        tracing::debug!(job = %job.job_id, pair, lane, "step handed to its pair");
        if let Err(e) = self.pair_tx[pair].send(PairTask::Step(Box::new(StepTask { job, lane }))) {
            // the pair's thread ended: the pair is lost, the step fails now
            let PairTask::Step(task) = e.0 else {
                return;
            };
            let job = task.job;
            tracing::warn!(pair, "pair thread gone");
            let reason = format!("worker pair {pair} is gone");
            let r = self
                .finish(
                    &job.job_id,
                    &job.session,
                    job.step,
                    Outcome::Failed { reason },
                )
                .and_then(|_| self.retire(pair));
            if let Err(e) = r {
                tracing::warn!(error = %e, "publishing a failure");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pairs::tests::{failed, fake, fake_with, output, ready, sealed, Fake};
    use marill_proto::ControlMessage;
    use rdkafka::mocking::MockCluster;

    fn job(session: &str) -> Job {
        Job {
            job_id: format!("j-{session}"),
            session: session.into(),
            step: 0,
            last: false,
            model: "m".into(),
            n_public: 2,
            rows: 1,
            out_rows: 1,
            deadline_ms: now_ms() + 60_000,
            reply_key: [0; 32],
            shares: [sealed(1), sealed(2)],
        }
    }

    /// A coordinator's configuration on `k` for the pairs of fake workers `w` (provider,
    /// helper, provider, helper, ...; each trust domain's workers share a key).
    fn config(
        k: &KafkaSettings,
        group: &str,
        own: marill_transport::KeyPair,
        w: &[&Fake],
        session_idle: Duration,
    ) -> CoordinatorConfig {
        CoordinatorConfig {
            kafka: k.clone(),
            group: group.into(),
            pairs: w
                .chunks(2)
                .map(|p| PairEndpoints {
                    provider: p[0].endpoint.clone(),
                    helper: p[1].endpoint.clone(),
                })
                .collect(),
            keys: ControlKeys {
                own,
                provider: w[0].public.clone(),
                helper: w[1].public.clone(),
            },
            model: ServedModel { name: "m".into() },
            step_timeout: Duration::from_secs(20),
            session_idle,
            exit_when_idle: None,
            create_topics: false,
            job_partitions: 4,
        }
    }

    #[test]
    fn sessions_share_a_pair_on_their_own_lanes_and_a_failed_step_closes_the_pair_s_sessions() {
        let mock = MockCluster::new(1).unwrap();
        for t in [JOBS_TOPIC, RESULTS_TOPIC, DEAD_LETTER_TOPIC] {
            mock.create_topic(t, 1, 1).unwrap();
        }
        let k = KafkaSettings::new(mock.bootstrap_servers());
        let own = marill_transport::KeyPair::generate().unwrap();
        let (p, h) = (fake(&own.public), fake(&own.public));
        let cfg = config(&k, "lanes", own, &[&p, &h], Duration::from_secs(1));
        let producer = k.producer().unwrap();
        for s in ["a", "b", "c"] {
            produce(&producer, JOBS_TOPIC, s, &job(s).encode()).unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let metrics = CoordinatorMetrics::unregistered();
        let coordinator = {
            let (stop, metrics) = (stop.clone(), metrics.clone());
            std::thread::spawn(move || run(cfg, stop, metrics))
        };
        p.hello(2);
        h.hello(3);
        // two lanes: a and b run at once, each on its own lane; c waits for a free lane
        for (w, share) in [(&p, sealed(1)), (&h, sealed(2))] {
            assert_eq!(w.step(), ("j-a".into(), 0, share.clone()));
            assert_eq!(w.step(), ("j-b".into(), 1, share));
        }
        p.say.send(output("j-a", 10, 1)).unwrap();
        h.say.send(output("j-a", 11, 1)).unwrap();
        // a, idle past its limit, is closed: both workers free its lane, and c takes it
        for w in [&p, &h] {
            match w.next() {
                ControlMessage::SessionEnd { session, lane } => {
                    assert_eq!((session.as_str(), lane), ("a", 0))
                }
                m => panic!("{m:?}"),
            }
            assert_eq!(w.step().1, 0, "c on the lane a freed");
        }
        // c fails while b runs: b ends, then the pair is probed; no session end goes to a
        // pair out of service
        h.say
            .send(failed("j-c", "step failed inside the 2PC"))
            .unwrap();
        p.say.send(output("j-b", 10, 1)).unwrap();
        h.say.send(output("j-b", 11, 1)).unwrap();
        p.hello(2);
        h.hello(2);
        let settled = Instant::now() + Duration::from_secs(10);
        let jobs = |o: &str| metrics.jobs.with_label_values(&[o]).get();
        while (jobs("done"), jobs("failed"), metrics.sessions_active.get()) != (2, 1, 0) {
            assert!(Instant::now() < settled, "the outcomes are not all out");
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        let stats = coordinator.join().unwrap().unwrap();
        assert_eq!((stats.sessions, stats.done, stats.failed), (3, 2, 1));
    }

    #[test]
    fn a_first_step_refused_by_a_draining_pair_is_placed_on_another_not_failed() {
        let mock = MockCluster::new(1).unwrap();
        for t in [JOBS_TOPIC, RESULTS_TOPIC, DEAD_LETTER_TOPIC] {
            mock.create_topic(t, 1, 1).unwrap();
        }
        let k = KafkaSettings::new(mock.bootstrap_servers());
        let own = marill_transport::KeyPair::generate().unwrap();
        // one key per trust domain: providers share theirs, helpers theirs
        let domains = [
            marill_transport::KeyPair::generate().unwrap(),
            marill_transport::KeyPair::generate().unwrap(),
        ];
        let workers: Vec<_> = (0..4)
            .map(|i| fake_with(&own.public, domains[i % 2].clone()))
            .collect();
        let refs: Vec<&Fake> = workers.iter().collect();
        let cfg = config(&k, "drain", own, &refs, Duration::from_secs(60));
        let stop = Arc::new(AtomicBool::new(false));
        let metrics = CoordinatorMetrics::unregistered();
        let coordinator = {
            let (stop, metrics) = (stop.clone(), metrics.clone());
            std::thread::spawn(move || run(cfg, stop, metrics))
        };
        for w in &workers {
            w.hello(1);
        }
        let pairs = |s: &str| metrics.pairs.with_label_values(&[s]).get();
        let settled = Instant::now() + Duration::from_secs(30);
        while pairs("ready") != 2 {
            assert!(Instant::now() < settled, "the pairs are not ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        let producer = k.producer().unwrap();
        produce(&producer, JOBS_TOPIC, "a", &job("a").encode()).unwrap();
        // a goes to pair 0, whose provider begins to drain before it runs: both refuse it
        assert_eq!(workers[0].step().0, "j-a");
        assert_eq!(workers[1].step().0, "j-a");
        workers[0].say.send(ready(1, true)).unwrap();
        let refused = ControlMessage::SessionFailed {
            session: "a".into(),
            job_id: "j-a".into(),
            step: 0,
            reason: "the worker is draining: it takes no new session".into(),
            refused: true,
            draining: true,
        };
        workers[0].say.send(refused.clone()).unwrap();
        workers[1].say.send(refused).unwrap();
        // pair 0 frees the lane (its probes, as a draining pair's, answered meanwhile at both
        // workers); a runs on pair 1
        let mut ended = [false; 2];
        while ended != [true, true] {
            assert!(Instant::now() < settled, "pair 0 did not free the lane");
            for (k, w) in workers[..2].iter().enumerate() {
                match w.try_next(Duration::from_millis(50)) {
                    Some(ControlMessage::SessionEnd { session, .. }) => {
                        assert_eq!(session, "a");
                        ended[k] = true;
                    }
                    Some(ControlMessage::Probe) => w.say.send(ready(1, true)).unwrap(),
                    Some(m) => panic!("{m:?}"),
                    None => {}
                }
            }
        }
        assert_eq!(workers[2].step().0, "j-a");
        assert_eq!(workers[3].step().0, "j-a");
        workers[2].say.send(output("j-a", 10, 1)).unwrap();
        workers[3].say.send(output("j-a", 11, 1)).unwrap();
        let jobs = |o: &str| metrics.jobs.with_label_values(&[o]).get();
        while jobs("done") != 1 {
            assert!(Instant::now() < settled, "a did not finish");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(jobs("failed"), 0, "the refusal was published as a failure");
        assert_eq!((pairs("ready"), pairs("draining")), (1, 1));
        stop.store(true, Ordering::Relaxed);
        let stats = coordinator.join().unwrap().unwrap();
        assert_eq!((stats.sessions, stats.done, stats.failed), (2, 1, 0));
    }
}
