//! The coordinator's Kafka paths against librdkafka's in-process mock broker (a Kafka-protocol
//! broker; the separate-process test against tansu is the workspace's `tests/cluster.rs`):
//! malformed messages go to the dead-letter topic with their reason, invalid jobs get a Failed
//! result, a redelivered job gets the very same result bytes, and offsets are committed once
//! every outcome is out.

use marill_coordinator::rdkafka::consumer::{BaseConsumer, Consumer};
use marill_coordinator::rdkafka::mocking::MockCluster;
use marill_coordinator::rdkafka::{Message, Offset, TopicPartitionList};
use marill_coordinator::{
    kafka::produce, ControlKeys, CoordinatorConfig, CoordinatorMetrics, KafkaSettings, ServedModel,
};
use marill_proto::job::{
    DeadLetter, Job, JobResult, Outcome, DEAD_LETTER_TOPIC, JOBS_TOPIC, RESULTS_TOPIC,
};
use marill_transport::{KeyPair, Sealed};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

fn read_all(k: &KafkaSettings, topic: &str) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    read_partition(k, topic, 0)
}

fn read_partition(
    k: &KafkaSettings,
    topic: &str,
    partition: i32,
) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    let c: BaseConsumer = k.reader().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let (_, high) = c
        .fetch_watermarks(topic, partition, Duration::from_secs(5))
        .unwrap();
    while (out.len() as i64) < high {
        if let Some(m) = c.poll(Duration::from_secs(5)) {
            let m = m.unwrap();
            out.push((
                m.key().map(|k| k.to_vec()),
                m.payload().unwrap_or(&[]).to_vec(),
            ));
        } else {
            panic!("{topic}: read {} of {high}", out.len());
        }
    }
    out
}

/// A coordinator serving model "m" from consumer group `group`, with no pair, that exits after
/// 6 idle seconds.
fn config(k: &KafkaSettings, group: &str) -> CoordinatorConfig {
    CoordinatorConfig {
        kafka: k.clone(),
        group: group.into(),
        pairs: Vec::new(),
        keys: ControlKeys {
            own: KeyPair::generate().unwrap(),
            provider: KeyPair::generate().unwrap().public,
            helper: KeyPair::generate().unwrap().public,
        },
        model: ServedModel { name: "m".into() },
        step_timeout: Duration::from_secs(5),
        session_idle: Duration::from_secs(5),
        exit_when_idle: Some(Duration::from_secs(6)),
        create_topics: false,
        job_partitions: 4,
    }
}

fn job(id: &str, model: &str) -> Job {
    let s = Sealed {
        enc: vec![1; 32],
        ct: vec![2; 40],
    };
    Job {
        job_id: id.into(),
        session: format!("s-{id}"),
        step: 0,
        last: false,
        model: model.into(),
        n_public: 28,
        rows: 3,
        out_rows: 1,
        deadline_ms: u64::MAX,
        reply_key: [0; 32],
        shares: [s.clone(), s],
    }
}

#[test]
fn bad_messages_dead_letters_failures_and_idempotent_results() {
    let mock = MockCluster::new(1).unwrap();
    for t in [JOBS_TOPIC, RESULTS_TOPIC, DEAD_LETTER_TOPIC] {
        mock.create_topic(t, 1, 1).unwrap();
    }
    let k = KafkaSettings::new(mock.bootstrap_servers());
    let p = k.producer().unwrap();
    produce(&p, JOBS_TOPIC, "x", b"not a job").unwrap();
    let mut truncated = job("j-trunc", "m").encode();
    truncated.truncate(20);
    produce(&p, JOBS_TOPIC, "x", &truncated).unwrap();
    let unknown = job("j-1", "other-model").encode();
    produce(&p, JOBS_TOPIC, "s-j-1", &unknown).unwrap();
    produce(&p, JOBS_TOPIC, "s-j-1", &unknown).unwrap(); // redelivered
    let cfg = config(&k, "g");
    let registry = marill_metrics::registry("coordinator").unwrap();
    let stats = marill_coordinator::run(
        cfg,
        Arc::new(AtomicBool::new(false)),
        CoordinatorMetrics::new(&registry).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (stats.dead_lettered, stats.failed, stats.duplicates),
        (2, 1, 1)
    );
    let text = marill_metrics::render(&registry);
    for series in [
        "marill_coordinator_jobs_total{outcome=\"dead_letter\"} 2",
        "marill_coordinator_jobs_total{outcome=\"failed\"} 1",
        "marill_coordinator_jobs_total{outcome=\"duplicate\"} 1",
        "marill_coordinator_uncommitted_messages 0",
    ] {
        assert!(text.contains(series), "{series} not in\n{text}");
    }
    let dl = read_all(&k, DEAD_LETTER_TOPIC);
    assert_eq!(dl.len(), 2);
    let first = DeadLetter::decode(&dl[0].1).unwrap();
    assert_eq!(
        (first.offset, first.payload.as_slice()),
        (0, &b"not a job"[..])
    );
    assert!(first.reason.contains("magic"), "{}", first.reason);
    let second = DeadLetter::decode(&dl[1].1).unwrap();
    assert!(second.reason.contains("malformed"), "{}", second.reason);
    let res = read_all(&k, RESULTS_TOPIC);
    assert_eq!(res.len(), 2);
    assert_eq!(
        res[0], res[1],
        "a redelivered job gets the same result bytes"
    );
    assert_eq!(res[0].0.as_deref(), Some(&b"j-1"[..]));
    let r = JobResult::decode(&res[0].1).unwrap();
    match r.outcome {
        Outcome::Failed { reason } => assert!(reason.contains("not served"), "{reason}"),
        o => panic!("unexpected {o:?}"),
    }
    // every offset committed after its outcome
    let c: BaseConsumer = k.group_consumer("g").unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(JOBS_TOPIC, 0);
    let committed = c.committed_offsets(tpl, Duration::from_secs(5)).unwrap();
    assert_eq!(
        committed.find_partition(JOBS_TOPIC, 0).unwrap().offset(),
        Offset::Offset(4)
    );
}

#[test]
fn jobs_without_an_outcome_show_as_queue_lag() {
    // valid jobs and a pair that never answers: the jobs wait, nothing is committed, and the
    // lag read from the broker's offsets counts them
    let mock = MockCluster::new(1).unwrap();
    for t in [JOBS_TOPIC, RESULTS_TOPIC, DEAD_LETTER_TOPIC] {
        mock.create_topic(t, 1, 1).unwrap();
    }
    let k = KafkaSettings::new(mock.bootstrap_servers());
    let p = k.producer().unwrap();
    for i in 0..3 {
        let j = job(&format!("lag-{i}"), "m");
        produce(&p, JOBS_TOPIC, &j.session, &j.encode()).unwrap();
    }
    let nowhere = || format!("tcp://127.0.0.1:{}", 1 + std::process::id() % 1000);
    let cfg = CoordinatorConfig {
        pairs: vec![marill_coordinator::PairEndpoints {
            provider: nowhere(),
            helper: nowhere(),
        }],
        step_timeout: Duration::from_secs(60),
        session_idle: Duration::from_secs(60),
        exit_when_idle: None,
        ..config(&k, "lag")
    };
    let registry = marill_metrics::registry("coordinator").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // the lag is read every 5 s: two reads, the first maybe before the assignment
            std::thread::sleep(Duration::from_secs(11));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        })
    };
    marill_coordinator::run(cfg, stop, CoordinatorMetrics::new(&registry).unwrap()).unwrap();
    stopper.join().unwrap();
    let text = marill_metrics::render(&registry);
    for series in [
        "marill_coordinator_kafka_lag_messages 3",
        "marill_coordinator_sessions_waiting 3",
    ] {
        assert!(text.contains(series), "{series} not in\n{text}");
    }
}

#[test]
fn a_restarted_coordinator_answers_a_redelivered_job_from_the_results_topic() {
    // a result published before this coordinator started (by an earlier run): its job,
    // delivered again, gets those very bytes and runs nowhere
    let mock = MockCluster::new(1).unwrap();
    for t in [JOBS_TOPIC, RESULTS_TOPIC, DEAD_LETTER_TOPIC] {
        mock.create_topic(t, 2, 1).unwrap();
    }
    let k = KafkaSettings::new(mock.bootstrap_servers());
    let p = k.producer().unwrap();
    let earlier = JobResult {
        job_id: "j-old".into(),
        session: "s-j-old".into(),
        step: 0,
        outcome: Outcome::Failed {
            reason: "published by the previous run".into(),
        },
    }
    .encode();
    produce(&p, RESULTS_TOPIC, "j-other", b"another job's result").unwrap();
    produce(&p, RESULTS_TOPIC, "j-old", &earlier).unwrap();
    let j = job("j-old", "m");
    produce(&p, JOBS_TOPIC, &j.session, &j.encode()).unwrap();
    let cfg = config(&k, "restart");
    let registry = marill_metrics::registry("coordinator").unwrap();
    let stats = marill_coordinator::run(
        cfg,
        Arc::new(AtomicBool::new(false)),
        CoordinatorMetrics::new(&registry).unwrap(),
    )
    .unwrap();
    assert_eq!((stats.duplicates, stats.failed), (1, 0));
    let again: Vec<Vec<u8>> = (0..2)
        .flat_map(|part| read_partition(&k, RESULTS_TOPIC, part))
        .filter(|(key, _)| key.as_deref() == Some(&b"j-old"[..]))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(again.len(), 2, "the result once before, once again");
    assert_eq!(again[0], again[1]);
}
