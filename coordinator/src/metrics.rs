//! The coordinator's Prometheus series (`marill_coordinator_*`).

use marill_metrics::prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use marill_metrics::{register, MetricsError};

/// Latency buckets of a step (seconds): 5 ms … 5 min.
const STEP_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// The coordinator's series.
#[derive(Clone)]
pub struct CoordinatorMetrics {
    /// jobs by outcome: done, closed, failed, dead_letter, duplicate
    pub jobs: IntCounterVec,
    /// time from a job's arrival to its published outcome, by phase (prefill, decode)
    pub job_seconds: HistogramVec,
    /// time a new session waited for a free worker pair
    pub queue_wait_seconds: Histogram,
    /// open sessions
    pub sessions_active: IntGauge,
    /// sessions waiting for a pair
    pub sessions_waiting: IntGauge,
    /// worker pairs by state (starting, ready, draining, lost)
    pub pairs: IntGaugeVec,
    /// scheduler decisions by result (placed, rejected)
    pub scheduler_decisions: IntCounterVec,
    /// consumed messages whose outcome is not yet acknowledged (their offsets uncommitted)
    pub uncommitted_messages: IntGauge,
    /// jobs in this coordinator's partitions without a committed outcome (broker offsets)
    pub kafka_lag: IntGauge,
    /// online bytes sent per party in finished steps
    pub online_bytes: IntCounterVec,
    /// 2PC rounds of finished steps
    pub rounds: IntCounter,
}

impl CoordinatorMetrics {
    /// The series, registered in `r`, every labelled series present from the start at 0.
    pub fn new(r: &Registry) -> Result<Self, MetricsError> {
        let m = Self::create(r)?;
        for o in ["done", "closed", "failed", "dead_letter", "duplicate"] {
            m.jobs.with_label_values(&[o]);
        }
        for phase in ["prefill", "decode"] {
            m.job_seconds.with_label_values(&[phase]);
        }
        for s in ["starting", "ready", "draining", "lost"] {
            m.pairs.with_label_values(&[s]);
        }
        for d in ["placed", "rejected"] {
            m.scheduler_decisions.with_label_values(&[d]);
        }
        for party in ["provider", "helper"] {
            m.online_bytes.with_label_values(&[party]);
        }
        Ok(m)
    }

    fn create(r: &Registry) -> Result<Self, MetricsError> {
        let p = "marill_coordinator_";
        Ok(Self {
            jobs: register(
                r,
                IntCounterVec::new(
                    Opts::new(format!("{p}jobs_total"), "Jobs by outcome"),
                    &["outcome"],
                )?,
            )?,
            job_seconds: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        format!("{p}job_seconds"),
                        "Time from a job's arrival to its published outcome",
                    )
                    .buckets(STEP_BUCKETS.to_vec()),
                    &["phase"],
                )?,
            )?,
            queue_wait_seconds: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        format!("{p}queue_wait_seconds"),
                        "Time a new session waited for a free worker pair",
                    )
                    .buckets(STEP_BUCKETS.to_vec()),
                )?,
            )?,
            sessions_active: register(
                r,
                IntGauge::new(format!("{p}sessions_active"), "Open sessions")?,
            )?,
            sessions_waiting: register(
                r,
                IntGauge::new(
                    format!("{p}sessions_waiting"),
                    "Sessions waiting for a worker pair",
                )?,
            )?,
            pairs: register(
                r,
                IntGaugeVec::new(
                    Opts::new(format!("{p}pairs"), "Worker pairs by state"),
                    &["state"],
                )?,
            )?,
            scheduler_decisions: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        format!("{p}scheduler_decisions_total"),
                        "Placement decisions by result",
                    ),
                    &["result"],
                )?,
            )?,
            uncommitted_messages: register(
                r,
                IntGauge::new(
                    format!("{p}uncommitted_messages"),
                    "Consumed jobs whose outcome is not yet acknowledged",
                )?,
            )?,
            kafka_lag: register(
                r,
                IntGauge::new(
                    format!("{p}kafka_lag_messages"),
                    "Jobs in this coordinator's partitions without a committed outcome (high watermark − committed offset)",
                )?,
            )?,
            online_bytes: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        format!("{p}online_bytes_total"),
                        "Online bytes sent by each party in finished steps",
                    ),
                    &["party"],
                )?,
            )?,
            rounds: register(
                r,
                IntCounter::new(format!("{p}rounds_total"), "2PC rounds of finished steps")?,
            )?,
        })
    }

    /// Series registered nowhere (when no endpoint is wanted).
    pub fn unregistered() -> Self {
        Self::new(&Registry::new()).expect("fresh registry")
    }
}
