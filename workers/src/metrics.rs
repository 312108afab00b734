//! A worker's Prometheus series (`marill_worker_*`): steps by outcome, their latency and the one
//! running now, online bytes and rounds, correlations consumed and their bytes, the time steps
//! waited for the dealer, the KV cache's bytes, the device's memory used and its limit.

use marill_metrics::memory::DeviceMemory;
use marill_metrics::prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use marill_metrics::{register, MetricsError};

/// The series of one worker process.
#[derive(Clone)]
pub struct WorkerMetrics {
    /// steps by outcome: done, refused (before any 2PC work), failed (inside the 2PC)
    pub steps: IntCounterVec,
    /// step latency by phase (prefill, decode)
    pub step_seconds: HistogramVec,
    /// steps of the phase running their 2PC now (prefill, decode)
    pub step_running: IntGaugeVec,
    /// sessions started (step 0)
    pub sessions: IntCounter,
    /// online bytes this worker sent to its peer
    pub online_bytes: IntCounter,
    /// 2PC rounds
    pub rounds: IntCounter,
    /// correlation bundles consumed
    pub correlations: IntCounter,
    /// explicit correlation bytes received from the dealer
    pub dealer_bytes: IntCounter,
    /// seconds steps waited for the dealer, by phase (a step whose material is in the worker's
    /// hands before it starts waits none)
    pub dealer_wait_seconds: HistogramVec,
    /// this worker's KV-cache shares
    pub kv_cache_bytes: IntGauge,
    /// bytes the memory owner accounts, by kind (weights, kv_reserved)
    pub accounted: IntGaugeVec,
    /// sessions open on the worker's lanes
    pub sessions_open: IntGauge,
    /// 1 while the worker drains (`SIGTERM`: no new session, the open ones finishing)
    pub draining: IntGauge,
}

impl WorkerMetrics {
    /// The series, registered in `r`, every labelled series present from the start at 0.
    pub fn new(r: &Registry) -> Result<Self, MetricsError> {
        let m = Self::create(r)?;
        for o in ["done", "refused", "failed"] {
            m.steps.with_label_values(&[o]);
        }
        for k in ["weights", "kv_reserved"] {
            m.accounted.with_label_values(&[k]);
        }
        for phase in ["prefill", "decode"] {
            m.step_seconds.with_label_values(&[phase]);
            m.step_running.with_label_values(&[phase]);
            m.dealer_wait_seconds.with_label_values(&[phase]);
        }
        Ok(m)
    }

    fn create(r: &Registry) -> Result<Self, MetricsError> {
        let p = "marill_worker_";
        register(r, DeviceMemory::new(p)?)?;
        let counter = |n: &str, h: &str| -> Result<IntCounter, MetricsError> {
            register(r, IntCounter::new(format!("{p}{n}"), h)?)
        };
        Ok(Self {
            steps: register(
                r,
                IntCounterVec::new(
                    Opts::new(format!("{p}steps_total"), "Steps by outcome"),
                    &["outcome"],
                )?,
            )?,
            step_seconds: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(format!("{p}step_seconds"), "Step latency by phase")
                        .buckets(vec![
                            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                            60.0,
                        ]),
                    &["phase"],
                )?,
            )?,
            step_running: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        format!("{p}step_running"),
                        "Steps of the phase running their 2PC now",
                    ),
                    &["phase"],
                )?,
            )?,
            sessions: counter("sessions_total", "Sessions started")?,
            online_bytes: counter("online_bytes_total", "Online bytes sent to the peer")?,
            rounds: counter("rounds_total", "2PC rounds")?,
            correlations: counter("correlations_total", "Correlation bundles consumed")?,
            dealer_bytes: counter(
                "dealer_bytes_total",
                "Explicit correlation bytes received from the dealer",
            )?,
            dealer_wait_seconds: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        format!("{p}dealer_wait_seconds"),
                        "Time a step waited for the dealer's correlations, by phase",
                    )
                    .buckets(vec![
                        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    ]),
                    &["phase"],
                )?,
            )?,
            kv_cache_bytes: register(
                r,
                IntGauge::new(format!("{p}kv_cache_bytes"), "KV-cache share bytes")?,
            )?,
            accounted: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        format!("{p}accounted_bytes"),
                        "Bytes the memory owner accounts: weights, and the KV caches reserved \
                         for open sessions (their most)",
                    ),
                    &["kind"],
                )?,
            )?,
            sessions_open: register(
                r,
                IntGauge::new(format!("{p}sessions_open"), "Sessions open on the lanes")?,
            )?,
            draining: register(
                r,
                IntGauge::new(
                    format!("{p}draining"),
                    "1 while the worker drains: it takes no new session and exits once its open \
                     ones have ended",
                )?,
            )?,
        })
    }
}
