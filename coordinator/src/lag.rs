//! The jobs topic's lag (`marill_coordinator_kafka_lag_messages`), read off the coordinator's
//! loop: the broker round trips (committed offsets, watermarks) take up to a timeout each, and
//! the loop must keep polling Kafka and its pairs meanwhile. The loop publishes the partitions
//! it is assigned (a local call); this thread reads the group's committed offsets and the
//! watermarks of those partitions every few seconds with its own client, which never joins the
//! group, and sets the gauge. A failure is logged and the gauge keeps its last value.

use crate::kafka::KafkaSettings;
use crate::CoordinatorError;
use marill_metrics::prometheus::IntGauge;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The partitions the coordinator is assigned now (`None` before its first assignment).
pub type Assigned = Arc<Mutex<Option<Vec<i32>>>>;

/// How often the lag is read.
pub const EVERY: Duration = Duration::from_secs(5);

/// Starts the thread; it ends when `stop` is set.
pub fn spawn(
    settings: &KafkaSettings,
    group: &str,
    topic: &'static str,
    assigned: Assigned,
    gauge: IntGauge,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, CoordinatorError> {
    let client = settings.group_reader(group)?;
    std::thread::Builder::new()
        .name("kafka-lag".into())
        .spawn(move || {
            let mut last: Option<Instant> = None;
            while !stop.load(Ordering::Relaxed) {
                if last.is_none_or(|t| t.elapsed() >= EVERY) {
                    last = Some(Instant::now());
                    let parts = assigned.lock().ok().and_then(|a| a.clone());
                    if let Some(parts) = parts {
                        match lag(&client, topic, &parts, Duration::from_secs(2)) {
                            Ok(l) => gauge.set(l),
                            Err(e) => tracing::warn!(error = %e, "reading the jobs topic's lag"),
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
        .map_err(|e| CoordinatorError::Io(e.to_string()))
}

/// Messages of `topic`'s partitions `parts` past the group's committed offsets.
pub fn lag(
    client: &BaseConsumer,
    topic: &str,
    parts: &[i32],
    timeout: Duration,
) -> Result<i64, CoordinatorError> {
    if parts.is_empty() {
        return Ok(0);
    }
    let mut tpl = TopicPartitionList::new();
    for p in parts {
        tpl.add_partition(topic, *p);
    }
    let committed = client.committed_offsets(tpl, timeout)?;
    let mut lag = 0;
    for e in committed.elements_for_topic(topic) {
        let (low, high) = client.fetch_watermarks(topic, e.partition(), timeout)?;
        let from = match e.offset() {
            Offset::Offset(o) => o.max(low),
            _ => low,
        };
        lag += (high - from).max(0);
    }
    Ok(lag)
}
