//! Marill's coordinator (see `../shared/ARCHITECTURE.md` §2): Kafka intake with a consumer
//! group and manual commits, placement through `marill-scheduler`, one control thread per
//! worker pair, results and dead letters on their topics.
//!
//! Delivery: at least once. A job's offset is committed only after its outcome is acknowledged
//! by the broker ([`offsets::OffsetTracker`]); a job redelivered to this coordinator is answered
//! with the result it already published (idempotent by job id). Clients take the first result
//! of a job id, and every result of a job id is the same bytes.

#![deny(missing_docs)]

pub mod coordinator;
pub mod lag;
mod lanes;
pub mod metrics;
pub mod offsets;
pub mod pairs;

pub use coordinator::{run, CoordinatorConfig, CoordinatorStats, ServedModel};
/// The Kafka clients (`marill-kafka`), re-exported for the coordinator's own users.
pub use marill_kafka as kafka;
pub use marill_kafka::KafkaSettings;
pub use metrics::CoordinatorMetrics;
pub use pairs::{ControlKeys, PairEndpoints};

use thiserror::Error;

/// Coordinator failures (fatal to its loop; a job's own failure is an outcome, not an error).
#[derive(Debug, Error)]
pub enum CoordinatorError {
    /// Kafka client or broker error.
    #[error("kafka: {0}")]
    Kafka(String),
    /// Invalid configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// Thread or I/O error.
    #[error("io: {0}")]
    Io(String),
}

impl From<rdkafka::error::KafkaError> for CoordinatorError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        CoordinatorError::Kafka(e.to_string())
    }
}

impl From<marill_kafka::KafkaError> for CoordinatorError {
    fn from(e: marill_kafka::KafkaError) -> Self {
        CoordinatorError::Kafka(e.0)
    }
}
/// The Kafka client library (for clients of the cluster).
pub use rdkafka;
