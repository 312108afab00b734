//! The gateway's series (`marill_gateway_*`, see docs/metrics.md): requests by outcome, time
//! to first token, the time between tokens, tokens generated, sessions in flight, session
//! closes that failed. They carry
//! counts and durations only, never a prompt or a token.

use marill_metrics::prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};
use marill_metrics::{register, MetricsError};

/// Every request outcome, the labels of `marill_gateway_requests_total`.
pub const OUTCOMES: &[&str] = &[
    "ok",
    "bad_request",
    "not_found",
    "unauthorized",
    "busy",
    "unavailable",
    "failed",
    "cancelled",
];

/// The gateway's metrics.
#[derive(Clone)]
pub struct GatewayMetrics {
    requests: IntCounterVec,
    /// seconds from a request's arrival to its first generated token
    pub ttft: Histogram,
    /// seconds between two generated tokens of one request
    pub inter_token: Histogram,
    /// tokens generated
    pub tokens: IntCounter,
    /// prompt tokens taken
    pub prompt_tokens: IntCounter,
    /// private sessions running (a session's close after its response included)
    pub in_flight: IntGauge,
    /// session closes that failed (the close runs after the response; see [`crate::engine`])
    pub close_failures: IntCounter,
}

impl GatewayMetrics {
    /// Registers the series in `r` (every outcome at 0).
    pub fn new(r: &Registry) -> Result<Self, MetricsError> {
        // a private token takes about a second on a CPU pair: buckets from 50 ms to 2 min
        let buckets = vec![
            0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0,
        ];
        let requests = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "marill_gateway_requests_total",
                    "HTTP API requests by outcome",
                ),
                &["outcome"],
            )?,
        )?;
        for o in OUTCOMES {
            requests.with_label_values(&[o]);
        }
        Ok(Self {
            requests,
            ttft: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "marill_gateway_time_to_first_token_seconds",
                        "Seconds from a generation request's arrival to its first token",
                    )
                    .buckets(buckets.clone()),
                )?,
            )?,
            inter_token: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "marill_gateway_inter_token_seconds",
                        "Seconds between two generated tokens of one request",
                    )
                    .buckets(buckets),
                )?,
            )?,
            tokens: register(
                r,
                IntCounter::new(
                    "marill_gateway_tokens_total",
                    "Tokens generated (rate: tokens/s)",
                )?,
            )?,
            prompt_tokens: register(
                r,
                IntCounter::new(
                    "marill_gateway_prompt_tokens_total",
                    "Prompt tokens taken (after the chat template)",
                )?,
            )?,
            in_flight: register(
                r,
                IntGauge::new(
                    "marill_gateway_sessions_in_flight",
                    "Private sessions the gateway runs now (closes after the response included)",
                )?,
            )?,
            close_failures: register(
                r,
                IntCounter::new(
                    "marill_gateway_session_close_failures_total",
                    "Private sessions whose close (after the response) failed",
                )?,
            )?,
        })
    }

    /// Counts a request with `outcome` (one of [`OUTCOMES`]).
    pub fn request(&self, outcome: &str) {
        self.requests.with_label_values(&[outcome]).inc();
    }
}
