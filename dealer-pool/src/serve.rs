//! A dealer process (`marill dealer`): serves a worker pair's correlations on demand. Each worker has its own
//! encrypted link (only that worker's key is admitted); whichever asks first for bundle `id`
//! makes the dealer generate both halves, the other half waits (the logic of
//! `marill_mpc::correlation::SharedDealer`). Each worker's random half comes from the seed it
//! receives here, so only corrections travel. The dealer outlives its workers: a restarted
//! worker opens a new epoch with a fresh seed ([`crate::epochs`]), so no correlation is
//! ever handed out twice, also across restarts; `--exit-when-done` ends it once both workers
//! said goodbye on lane 0 (one session in direct mode).
//!
//! Each worker link is split into `--lanes` lanes (`marill_transport::mux`): a pair running
//! several sessions at once uses one lane per session, and each lane is an independent
//! correlation stream (its own seeds, epochs and ahead pool, its own serving thread); the
//! manifests of step shapes are shared by all lanes.

use crate::epochs::Epochs;
use anyhow::{anyhow, Result};
use marill_metrics::memory::DeviceMemory;
use marill_metrics::prometheus::{Gauge, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use marill_metrics::register;
use marill_mpc::correlation::{Bundle, BundleSupplier, CorrRequest, ManifestCache, StepKey};
use marill_mpc::prg::Seed;
use marill_mpc::PartyId;
use marill_proto::link::{recv_idle, send, typed};
use marill_proto::DealerMessage;
use marill_transport::{KeyPair, Lane, Link, LinkConfig, Mux, Role};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a dealer process runs with (the `marill dealer` flags, resolved).
#[derive(Clone, Debug)]
pub struct DealerConfig {
    /// key directory (`dealer.key`, `provider.pub`, `helper.pub`)
    pub keys: PathBuf,
    /// where the provider's link binds
    pub provider_endpoint: String,
    /// where the helper's link binds
    pub helper_endpoint: String,
    /// give up when a worker does not take a reply within this long
    pub idle_timeout_s: u64,
    /// serve Prometheus metrics on `GET /metrics` at this address
    pub metrics_addr: Option<String>,
    /// step manifests kept (0 serves every bundle on request)
    pub manifests: usize,
    /// megabytes of correlations generated ahead of demand while the pair is idle
    pub pool_mb: u64,
    /// ship a predicted step's correlations to its workers before the step starts
    pub ship_ahead: bool,
    /// lanes of each worker link (the most sessions the pair runs at once)
    pub lanes: u32,
    /// exit once both workers have said goodbye on lane 0
    pub exit_when_done: bool,
}

/// The dealer's series (`marill_dealer_*`).
#[derive(Clone)]
struct DealerMetrics {
    served: IntCounterVec,
    sent_bytes: IntCounterVec,
    bundles: IntGauge,
    generation_seconds: Gauge,
    stashed: IntGaugeVec,
    epoch: IntGauge,
    streamed: IntCounterVec,
    frames: IntCounterVec,
    shipped: IntCounterVec,
    ahead_used: IntCounterVec,
    manifests: IntGauge,
    ahead: IntGaugeVec,
    /// each lane's last pool figures; the gauges show their sums
    lanes: Arc<Mutex<Vec<PoolSnapshot>>>,
}

/// One lane's pool figures.
#[derive(Clone, Copy, Default)]
struct PoolSnapshot {
    bundles: u64,
    gen_nanos: u64,
    stashed: [usize; 2],
    ahead: (u64, u64),
    epoch: u64,
}

impl DealerMetrics {
    fn new(r: &Registry, lanes: u32) -> Result<Self> {
        register(r, DeviceMemory::new("marill_dealer_")?)?;
        let m = Self {
            served: register(
                r,
                IntCounterVec::new(
                    Opts::new("marill_dealer_served_total", "Bundles served, by party"),
                    &["party"],
                )?,
            )?,
            sent_bytes: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "marill_dealer_sent_bytes_total",
                        "Explicit correlation bytes sent, by party",
                    ),
                    &["party"],
                )?,
            )?,
            bundles: register(
                r,
                IntGauge::new(
                    "marill_dealer_generated_bundles",
                    "Bundles generated since start (both halves)",
                )?,
            )?,
            generation_seconds: register(
                r,
                Gauge::new(
                    "marill_dealer_generation_seconds",
                    "Time spent generating since start",
                )?,
            )?,
            epoch: register(
                r,
                IntGauge::new(
                    "marill_dealer_epoch",
                    "The pair's incarnation: a restarted worker opens a new epoch with a fresh seed",
                )?,
            )?,
            streamed: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "marill_dealer_streamed_total",
                        "Bundles streamed unasked (their step's manifest was known), by party",
                    ),
                    &["party"],
                )?,
            )?,
            frames: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "marill_dealer_stream_frames_total",
                        "Frames of streamed bundles sent (a streamed step travels in a few), \
                         by party",
                    ),
                    &["party"],
                )?,
            )?,
            shipped: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "marill_dealer_shipped_steps_total",
                        "Predicted steps whose bundles were shipped to the worker before the step \
                         began, by party",
                    ),
                    &["party"],
                )?,
            )?,
            ahead_used: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "marill_dealer_shipped_used_bundles_total",
                        "Bundles shipped ahead that their step used (the rest were dropped: \
                         another step came), by party",
                    ),
                    &["party"],
                )?,
            )?,
            ahead: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "marill_dealer_ahead_bundles",
                        "Bundles generated ahead of demand for a predicted step since start: \
                         used by it, or skipped (another step came)",
                    ),
                    &["outcome"],
                )?,
            )?,
            manifests: register(
                r,
                IntGauge::new(
                    "marill_dealer_manifests",
                    "Step manifests known (shapes whose bundles are streamed ahead of demand)",
                )?,
            )?,
            stashed: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "marill_dealer_stashed_bundles",
                        "Halves generated and waiting for their party",
                    ),
                    &["party"],
                )?,
            )?,
            lanes: Arc::new(Mutex::new(vec![PoolSnapshot::default(); lanes as usize])),
        };
        for p in ["provider", "helper"] {
            m.served.with_label_values(&[p]);
            m.sent_bytes.with_label_values(&[p]);
            m.stashed.with_label_values(&[p]);
            m.streamed.with_label_values(&[p]);
            m.frames.with_label_values(&[p]);
            m.shipped.with_label_values(&[p]);
            m.ahead_used.with_label_values(&[p]);
        }
        for o in ["used", "skipped"] {
            m.ahead.with_label_values(&[o]);
        }
        Ok(m)
    }

    /// The pool's series (halves stashed, bundles generated ahead), summed over the lanes,
    /// with `lane`'s figures from `d`.
    fn observe_pool(&self, lane: u32, d: &Epochs) {
        let st = d.stats();
        let Ok(mut lanes) = self.lanes.lock() else {
            return;
        };
        if let Some(slot) = lanes.get_mut(lane as usize) {
            *slot = PoolSnapshot {
                bundles: st.bundles,
                gen_nanos: st.gen_nanos,
                stashed: d.stashed(),
                ahead: d.ahead_counts(),
                epoch: d.epoch(),
            };
        }
        let sum = lanes
            .iter()
            .fold(PoolSnapshot::default(), |a, l| PoolSnapshot {
                bundles: a.bundles + l.bundles,
                gen_nanos: a.gen_nanos + l.gen_nanos,
                stashed: [a.stashed[0] + l.stashed[0], a.stashed[1] + l.stashed[1]],
                ahead: (a.ahead.0 + l.ahead.0, a.ahead.1 + l.ahead.1),
                epoch: a.epoch.max(l.epoch),
            });
        drop(lanes);
        self.bundles.set(sum.bundles as i64);
        self.generation_seconds.set(sum.gen_nanos as f64 / 1e9);
        for (p, n) in ["provider", "helper"].iter().zip(sum.stashed) {
            self.stashed.with_label_values(&[p]).set(n as i64);
        }
        self.ahead
            .with_label_values(&["used"])
            .set(sum.ahead.0 as i64);
        self.ahead
            .with_label_values(&["skipped"])
            .set(sum.ahead.1 as i64);
        self.epoch.set(sum.epoch as i64);
    }

    fn observe(&self, party: PartyId, lane: u32, bytes: usize, d: &Epochs) {
        let name = party_name(party);
        self.served.with_label_values(&[name]).inc();
        self.sent_bytes
            .with_label_values(&[name])
            .inc_by(bytes as u64);
        self.observe_pool(lane, d);
    }
}

/// What one party's serving thread keeps between messages.
struct PartyStream {
    link: Lane,
    party: PartyId,
    epochs: Arc<Mutex<Epochs>>,
    manifests: Arc<Mutex<ManifestCache>>,
    m: DealerMetrics,
    /// the step being recorded (its manifest was unknown): its key and requests so far
    recording: Option<(StepKey, Vec<CorrRequest>)>,
    /// a message that arrived while a stream was being sent
    pending: Option<DealerMessage>,
    /// the step under way and its first id
    current: Option<(StepKey, u64)>,
    /// the first id of the latest step this party began (in this epoch)
    begun: Option<u64>,
    /// the predicted step shipped ahead to the worker (key, first id, bundles), until its
    /// worker begins a step
    shipped: Option<(StepKey, u64, u64)>,
    /// the worker has its seed (a stream of this epoch)
    seeded: bool,
    /// ship predicted steps ahead ([`DealerConfig::ship_ahead`])
    ship: bool,
    /// every bundle of the current step was sent (streamed or shipped)
    current_sent: bool,
    served: u64,
}

impl PartyStream {
    fn epochs(&self) -> Result<std::sync::MutexGuard<'_, Epochs>> {
        self.epochs
            .lock()
            .map_err(|_| anyhow!("dealer state poisoned"))
    }

    fn manifests(&self) -> Result<std::sync::MutexGuard<'_, ManifestCache>> {
        self.manifests
            .lock()
            .map_err(|_| anyhow!("dealer state poisoned"))
    }

    /// Bundle `id` of kind `req` for this party, from the current epoch's dealer.
    fn bundle(&self, id: u64, req: &CorrRequest) -> Result<Bundle, String> {
        let dealer = self
            .epochs()
            .map_err(|e| e.to_string())?
            .dealer_for(self.party);
        dealer.and_then(|mut d| d.fetch(self.party, id, req).map_err(|e| e.to_string()))
    }

    fn sent(&mut self, bytes: usize, streamed: bool) -> Result<()> {
        self.served += 1;
        let name = party_name(self.party);
        if streamed {
            self.m.streamed.with_label_values(&[name]).inc();
        }
        self.m
            .observe(self.party, self.link.id(), bytes, &*self.epochs()?);
        Ok(())
    }

    /// A step begins: streams its bundles when its manifest is known, else records it.
    fn begin(&mut self, key: StepKey, asked: u64) -> Result<()> {
        self.recording = None;
        self.current = None;
        let first_id = match self.epochs()?.begin_step(self.party, key, asked) {
            Ok(first) => first,
            Err(e) => return Ok(send(&self.link, &DealerMessage::Error(e))?),
        };
        self.current = Some((key, first_id));
        self.begun = Some(first_id);
        self.current_sent = false;
        // the step its worker already holds: shipped ahead, as predicted, where it asked
        if let Some((k, f, count)) = self.shipped.take() {
            if k == key && f == first_id && asked == first_id {
                self.m
                    .ahead_used
                    .with_label_values(&[party_name(self.party)])
                    .inc_by(count);
                tracing::debug!(party = ?self.party, rows = key.rows, pos = key.pos, "the worker begins a step shipped ahead");
                self.current_sent = true;
                return self.predict_after(key, first_id);
            }
        }
        let Some(manifest) = self.manifests()?.get(&key) else {
            self.recording = Some((key, Vec::new()));
            return Ok(send(
                &self.link,
                &DealerMessage::StepStream { first_id, count: 0 },
            )?);
        };
        let count = manifest.len() as u64;
        send(&self.link, &DealerMessage::StepStream { first_id, count })?;
        self.stream(first_id, &manifest, true)?;
        self.current_sent = self.pending.is_none();
        self.predict_after(key, first_id)
    }

    /// A step whose bundles are all in its worker's hands has begun: predicts the decode step
    /// after it, to be generated (and shipped) while this one runs.
    fn predict_after(&mut self, key: StepKey, first_id: u64) -> Result<()> {
        if self.ship {
            self.predict_next(key, first_id)?;
        }
        Ok(())
    }

    /// Predicts that the decode step after step `key` (which began at `first_id`) comes
    /// next, when its manifest is known.
    fn predict_next(&mut self, key: StepKey, first_id: u64) -> Result<()> {
        let Some(next) = key.next_decode() else {
            return Ok(());
        };
        let manifest = self.manifests()?.get(&next);
        if let Some(m) = manifest {
            self.epochs()?.predict(first_id, next, m);
        }
        Ok(())
    }

    /// Sends the bundles `first_id..` of `manifest` in a few frames ([`frame_bounds`]). A
    /// message the worker sends meanwhile is kept for the serving loop; with `stop_if_spoken`
    /// the stream then stops (a worker that speaks during its step's stream no longer waits
    /// for it: it restarted), else it goes on (a stream shipped ahead crosses the worker's
    /// start of the step it is for).
    fn stream(
        &mut self,
        first_id: u64,
        manifest: &[CorrRequest],
        stop_if_spoken: bool,
    ) -> Result<()> {
        let mut batch = Vec::new();
        let mut bounds = frame_bounds(manifest.len()).into_iter().peekable();
        for (k, (id, req)) in (first_id..).zip(manifest.iter()).enumerate() {
            let b = match self.bundle(id, req) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(
                        "dealer: stream to {:?} stopped at bundle {id}: {e}",
                        self.party
                    );
                    return Ok(send(&self.link, &DealerMessage::Error(e))?);
                }
            };
            batch.push(b);
            if bounds.peek() != Some(&(k + 1)) {
                continue;
            }
            bounds.next();
            let sizes: Vec<usize> = batch.iter().map(|b| b.explicit.len()).collect();
            if let Err(e) = send(
                &self.link,
                &DealerMessage::Bundles(std::mem::take(&mut batch)),
            ) {
                // the worker is gone; its next incarnation asks for a seed (a new epoch)
                tracing::warn!("dealer: stream to {:?} stopped: {e}", self.party);
                return Ok(());
            }
            self.m
                .frames
                .with_label_values(&[party_name(self.party)])
                .inc();
            for bytes in sizes {
                self.sent(bytes, true)?;
            }
            if self.pending.is_none() {
                if let Some(bytes) = self.link.try_recv(Duration::ZERO)? {
                    self.pending = Some(typed(&bytes)?);
                }
            }
            if stop_if_spoken && self.pending.is_some() {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Between this party's steps, ships the predicted next step's bundles once all are
    /// generated, so that they cross the link (and are decrypted at the worker) before the step
    /// starts; `true` when it shipped them.
    fn ship_ahead(&mut self) -> Result<bool> {
        // between steps, or during one whose bundles were all sent (they precede the shipped
        // ones on the lane, so the worker takes them first)
        if !self.ship || (self.current.is_some() && !self.current_sent) || !self.seeded {
            return Ok(false);
        }
        let Some(c) = self.epochs()?.complete_prediction() else {
            return Ok(false);
        };
        // only the step after the one this party began last: a party a step behind its peer
        // (the peer began the next step and predicted the one after it) gets the prediction
        // once it has caught up, else it would drop it and find its ids spent later
        if self.begun != Some(c.after) {
            return Ok(false);
        }
        let (key, first_id, manifest) = (c.key, c.first, c.manifest);
        if self
            .shipped
            .is_some_and(|(k, f, _)| k == key && f == first_id)
        {
            return Ok(false);
        }
        let count = manifest.len() as u64;
        tracing::debug!(party = ?self.party, rows = key.rows, pos = key.pos, first_id, count, during_step = self.current.is_some(), "shipping a predicted step");
        self.shipped = Some((key, first_id, count));
        send(
            &self.link,
            &DealerMessage::AheadStream {
                key,
                first_id,
                count,
            },
        )?;
        self.m
            .shipped
            .with_label_values(&[party_name(self.party)])
            .inc();
        self.stream(first_id, &manifest, false)?;
        Ok(true)
    }

    /// The worker's next message; while there is none, the predicted next step is generated
    /// ahead (up to the pool's budget).
    fn next_message(&mut self) -> Result<DealerMessage> {
        loop {
            let generated = {
                let mut epochs = self.epochs()?;
                let g = epochs.generate_ahead();
                if g == Ok(true) {
                    self.m.observe_pool(self.link.id(), &epochs);
                }
                g
            }; // the state's lock is released before any wait on the link
            match generated {
                Ok(true) => {}
                Ok(false) => {
                    if self.ship_ahead()? {
                        if let Some(m) = self.pending.take() {
                            return Ok(m);
                        }
                        continue;
                    }
                    return Ok(recv_idle(&self.link)?);
                }
                Err(e) => {
                    tracing::warn!("dealer: generating ahead stopped: {e}");
                    return Ok(recv_idle(&self.link)?);
                }
            }
            if let Some(bytes) = self.link.try_recv(Duration::ZERO)? {
                return Ok(typed(&bytes)?);
            }
        }
    }

    fn serve(mut self, exit_when_done: bool) -> Result<u64> {
        let party = self.party;
        loop {
            let msg = match self.pending.take() {
                Some(m) => m,
                None => self.next_message()?,
            };
            match msg {
                DealerMessage::SeedRequest { party: p } if p == party => {
                    self.recording = None;
                    self.current = None;
                    self.begun = None;
                    self.shipped = None;
                    self.seeded = true;
                    let (epoch, seed) = self.epochs()?.seed(party);
                    let lane = self.link.id();
                    tracing::info!("dealer: {party:?} seeded in epoch {epoch} on lane {lane}");
                    send(&self.link, &DealerMessage::Seed { seed: seed.0 })?;
                }
                DealerMessage::StepBegin {
                    party: p,
                    key,
                    first_id,
                } if p == party => self.begin(key, first_id)?,
                DealerMessage::StepEnd { party: p } if p == party => {
                    if let Some((key, reqs)) = self.recording.take() {
                        let mut known = self.manifests()?;
                        known.insert(key, reqs);
                        self.m.manifests.set(known.len() as i64);
                    }
                    if let Some((key, first)) = self.current.take() {
                        self.predict_next(key, first)?;
                    }
                }
                DealerMessage::BundleRequest { party: p, id, req } if p == party => {
                    match self.bundle(id, &req) {
                        Ok(b) => {
                            let bytes = b.explicit.len();
                            send(&self.link, &DealerMessage::Bundle(b))?;
                            if let Some((_, reqs)) = &mut self.recording {
                                reqs.push(req);
                            }
                            self.sent(bytes, false)?;
                        }
                        Err(e) => {
                            // this worker's request fails (its step fails, it restarts); the
                            // dealer keeps serving
                            self.recording = None;
                            tracing::warn!("dealer: refused {party:?} bundle {id}: {e}");
                            send(&self.link, &DealerMessage::Error(e))?;
                        }
                    }
                }
                DealerMessage::Done { party: p } if p == party => {
                    if exit_when_done {
                        return Ok(self.served);
                    }
                }
                other => {
                    let what = marill_proto::describe(&other);
                    tracing::warn!("dealer: {party:?} sent an unexpected {what}");
                    send(
                        &self.link,
                        &DealerMessage::Error(format!("unexpected {what}")),
                    )?;
                }
            }
        }
    }
}

/// Where a streamed step of `count` bundles is cut into frames (the end of each frame): an
/// eighth first, so the worker starts while the rest is made, then three eighths, then the
/// rest. Three frames (and the step's header) per party per step, whatever its size.
fn frame_bounds(count: usize) -> Vec<usize> {
    let mut ends: Vec<usize> = [count.div_ceil(8), count.div_ceil(2), count]
        .into_iter()
        .filter(|e| *e > 0)
        .collect();
    ends.dedup();
    ends
}

fn party_name(p: PartyId) -> &'static str {
    ["provider", "helper"][p.index()]
}

/// Runs the dealer until stopped (with `--exit-when-done`: until both workers are done on
/// lane 0).
pub fn run(a: DealerConfig) -> Result<()> {
    if a.lanes == 0 {
        anyhow::bail!("--lanes must be at least 1");
    }
    let own = KeyPair::load(&a.keys, "dealer")?;
    let registry = marill_metrics::registry("dealer")?;
    let metrics = DealerMetrics::new(&registry, a.lanes)?;
    let _server = marill_metrics::serve_if(a.metrics_addr.as_deref(), registry, "dealer")?;
    let per_lane = (a.pool_mb << 20) / a.lanes as u64;
    let epochs: Vec<_> = (0..a.lanes)
        .map(|_| {
            let e = Epochs::new(Box::new(Seed::random)).with_ahead_budget(per_lane);
            Arc::new(Mutex::new(e))
        })
        .collect();
    let manifests = Arc::new(Mutex::new(ManifestCache::new(a.manifests)));
    let (ended_tx, ended) = std::sync::mpsc::channel::<(PartyId, u32, Result<u64>)>();
    let mut muxes = Vec::new();
    for (party, endpoint, name) in [
        (PartyId::P0, a.provider_endpoint.clone(), "provider"),
        (PartyId::P1, a.helper_endpoint.clone(), "helper"),
    ] {
        let mut cfg = LinkConfig::new(name);
        cfg.timeout = Duration::from_secs(a.idle_timeout_s);
        let link = Link::open(
            Role::Server {
                endpoint,
                allow: vec![KeyPair::load_public(&a.keys, name)?],
            },
            &own,
            cfg,
        )?;
        let (mux, lanes) = Mux::split(link, a.lanes)?;
        muxes.push(mux);
        for lane in lanes {
            let id = lane.id();
            let stream = PartyStream {
                link: lane,
                party,
                epochs: epochs[id as usize].clone(),
                manifests: manifests.clone(),
                m: metrics.clone(),
                recording: None,
                pending: None,
                current: None,
                begun: None,
                shipped: None,
                seeded: false,
                ship: a.ship_ahead,
                current_sent: false,
                served: 0,
            };
            let once = a.exit_when_done && id == 0;
            let tx = ended_tx.clone();
            std::thread::Builder::new()
                .name(format!("dealer-{name}-{id}"))
                .spawn(move || {
                    let _ = tx.send((party, id, stream.serve(once)));
                })?;
        }
    }
    drop(ended_tx);
    tracing::info!("dealer: serving provider and helper on {} lanes", a.lanes);
    // a lane's thread ends when its link fails (the dealer exits; its supervisor restarts it)
    // or, with --exit-when-done, when lane 0's worker said goodbye
    let mut total = 0;
    let mut done = [false; 2];
    while !(done[0] && done[1]) {
        let (party, lane, r) = ended
            .recv()
            .map_err(|_| anyhow!("every dealer thread ended"))?;
        total += r.map_err(|e| anyhow!("{} lane {lane}: {e}", party_name(party)))?;
        done[party.index()] = true;
    }
    let mut bytes = 0;
    for e in &epochs {
        let st = e
            .lock()
            .map_err(|_| anyhow!("dealer state poisoned"))?
            .stats();
        bytes += st.total_bytes();
    }
    tracing::info!(
        "dealer: session done, {total} bundles served, {:.1} MB sent",
        bytes as f64 / 1e6
    );
    drop(muxes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::frame_bounds;

    #[test]
    fn a_step_travels_in_at_most_three_frames_covering_every_bundle() {
        assert_eq!(frame_bounds(0), Vec::<usize>::new());
        assert_eq!(frame_bounds(1), vec![1]);
        assert_eq!(frame_bounds(2), vec![1, 2]);
        assert_eq!(frame_bounds(5800), vec![725, 2900, 5800]);
        for n in 1..200 {
            let b = frame_bounds(n);
            assert!(
                b.len() <= 3 && b.windows(2).all(|w| w[0] < w[1]),
                "{n}: {b:?}"
            );
            assert_eq!(*b.last().unwrap(), n);
        }
    }
}
