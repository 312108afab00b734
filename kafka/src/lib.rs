//! Kafka clients (rdkafka) with the settings Marill relies on: manual offset commits for the
//! coordinator's consumer group, acknowledged produces (`acks=all`, idempotent producer), and
//! short group timeouts where a test broker needs them. Shared by the coordinator and the
//! cluster's client (which imports this and the job schema, not the coordinator).

#![deny(missing_docs)]

/// The Kafka client library.
pub use rdkafka;

/// A Kafka client or broker error.
#[derive(Debug, thiserror::Error)]
#[error("kafka: {0}")]
pub struct KafkaError(pub String);

impl From<rdkafka::error::KafkaError> for KafkaError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        KafkaError(e.to_string())
    }
}

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;

/// Connection settings shared by every client.
#[derive(Clone, Debug)]
pub struct KafkaSettings {
    /// `bootstrap.servers`
    pub brokers: String,
    /// extra librdkafka properties (e.g. `session.timeout.ms`)
    pub overrides: Vec<(String, String)>,
}

impl KafkaSettings {
    /// Settings for `brokers` with no override.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            overrides: Vec::new(),
        }
    }

    fn base(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        c.set("log_level", "3");
        for (k, v) in &self.overrides {
            c.set(k, v);
        }
        c
    }

    /// An acknowledged producer.
    pub fn producer(&self) -> Result<FutureProducer, KafkaError> {
        let mut c = self.base();
        c.set("acks", "all");
        c.set("enable.idempotence", "true");
        c.set("message.timeout.ms", "30000");
        // latency over batching: a job is one message waited on
        c.set_default_if_absent("linger.ms", "0");
        Ok(c.create()?)
    }

    /// A consumer in `group` that never commits by itself.
    pub fn group_consumer(&self, group: &str) -> Result<BaseConsumer, KafkaError> {
        let mut c = self.base();
        c.set("group.id", group);
        c.set("enable.auto.commit", "false");
        c.set("enable.auto.offset.store", "false");
        c.set("auto.offset.reset", "earliest");
        c.set_default_if_absent("session.timeout.ms", "6000");
        c.set_default_if_absent("fetch.wait.max.ms", "10");
        Ok(c.create()?)
    }

    /// A client that reads group `group`'s committed offsets without joining the group (it
    /// never subscribes).
    pub fn group_reader(&self, group: &str) -> Result<BaseConsumer, KafkaError> {
        let mut c = self.base();
        c.set("group.id", group);
        c.set("enable.auto.commit", "false");
        Ok(c.create()?)
    }

    /// A consumer outside any group (the client reads its results from assigned positions).
    pub fn reader(&self) -> Result<BaseConsumer, KafkaError> {
        let mut c = self.base();
        c.set("group.id", "marill-reader");
        c.set("enable.auto.commit", "false");
        c.set_default_if_absent("fetch.wait.max.ms", "10");
        Ok(c.create()?)
    }

    /// Creates `topics` with `partitions` each (an existing topic is left as it is).
    pub fn ensure_topics(&self, topics: &[&str], partitions: i32) -> Result<(), KafkaError> {
        let admin: AdminClient<DefaultClientContext> = self.base().create()?;
        let new: Vec<NewTopic> = topics
            .iter()
            .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
            .collect();
        let opts = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(10)))
            .request_timeout(Some(Duration::from_secs(10)));
        let res = futures::executor::block_on(admin.create_topics(&new, &opts))?;
        for r in res {
            if let Err((topic, code)) = r {
                if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                    return Err(KafkaError(format!("creating {topic}: {code}")));
                }
            }
        }
        Ok(())
    }
}

trait SetDefault {
    fn set_default_if_absent(&mut self, k: &str, v: &str);
}

impl SetDefault for ClientConfig {
    fn set_default_if_absent(&mut self, k: &str, v: &str) {
        if self.get(k).is_none() {
            self.set(k, v);
        }
    }
}

/// Produces one message and waits for the broker's acknowledgement.
pub fn produce(
    p: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
) -> Result<(), KafkaError> {
    let rec = FutureRecord::to(topic).key(key).payload(payload);
    let fut = p
        .send_result(rec)
        .map_err(|(e, _)| KafkaError(format!("queueing to {topic}: {e}")))?;
    match futures::executor::block_on(fut) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(KafkaError(format!("producing to {topic}: {e}"))),
        Err(_) => Err(KafkaError(format!("producing to {topic}: cancelled"))),
    }
}

/// A message's key and payload.
pub type Keyed = (Vec<u8>, Vec<u8>);

/// The last `per_partition` messages of every partition of `topic` as (key, payload), read from
/// assigned positions outside any group. Stops at each partition's high watermark as it was
/// when called, or at `deadline` (then returns what it read and says so in the log).
pub fn read_tail(
    settings: &KafkaSettings,
    topic: &str,
    per_partition: i64,
    deadline: Duration,
) -> Result<Vec<Keyed>, KafkaError> {
    use rdkafka::consumer::Consumer;
    use rdkafka::{Message, Offset, TopicPartitionList};
    let c = settings.reader()?;
    let timeout = Duration::from_secs(5);
    let md = c.fetch_metadata(Some(topic), timeout)?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = std::collections::HashMap::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) = c.fetch_watermarks(topic, p.id(), timeout)?;
        if high > low {
            let from = low.max(high - per_partition);
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(from))?;
            ends.insert(p.id(), high);
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return Ok(out);
    }
    c.assign(&tpl)?;
    let start = std::time::Instant::now();
    while !ends.is_empty() {
        if start.elapsed() > deadline {
            tracing::warn!(
                topic,
                read = out.len(),
                "stopped reading the topic's tail at the deadline"
            );
            break;
        }
        let Some(m) = c.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m?;
        if let Some(key) = m.key() {
            out.push((key.to_vec(), m.payload().unwrap_or(&[]).to_vec()));
        }
        if ends
            .get(&m.partition())
            .is_some_and(|&end| m.offset() + 1 >= end)
        {
            ends.remove(&m.partition());
        }
    }
    Ok(out)
}
