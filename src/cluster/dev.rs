//! `marill dev`: the whole cluster in one process — librdkafka's built-in mock broker, a
//! dealer, a provider and a helper worker (coordinated front), the coordinator — then one
//! private generation through Kafka, printed with a progress bar (of `--prompt`, or a default
//! prompt); with `--serve ADDR`, the OpenAI-compatible API (`marill gateway`'s) over the
//! embedded cluster instead, until SIGINT or SIGTERM. Every component is the code
//! the separate processes run (the same command-line entry points, parsed from arguments);
//! links are CURVE-encrypted zeromq on 127.0.0.1, shares travel sealed.

use super::launch::free_port;
use crate::generate::{generate_remote, load, GenerateArgs};
use crate::net::{dealer::DealerArgs, worker::WorkerArgs};
use anyhow::{anyhow, Context, Result};
use clap::{Args, Parser};
use marill_client::cluster::KafkaRunner;
use marill_coordinator::rdkafka::mocking::MockCluster;
use marill_coordinator::{
    ControlKeys, CoordinatorConfig, KafkaSettings, PairEndpoints, ServedModel,
};
use marill_proto::job::{DEAD_LETTER_TOPIC, JOBS_TOPIC, RESULTS_TOPIC};
use marill_transport::KeyPair;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Arguments of `marill dev`.
#[derive(Args)]
pub struct DevArgs {
    /// Serve the OpenAI-compatible API at this address (e.g. 127.0.0.1:8080) over the embedded
    /// cluster and stay up, instead of one generation (requests carry their prompts).
    #[arg(long, conflicts_with_all = ["prompt", "check"])]
    serve: Option<String>,
    /// The embedded workers' longest sequence (prompt plus new tokens).
    #[arg(long, default_value_t = marill_model::suffix::DEFAULT_MAX_SEQ)]
    max_seq: usize,
    #[command(flatten)]
    http: crate::gateway::ServeArgs,
    #[command(flatten)]
    generate: GenerateArgs,
}

#[derive(Parser)]
struct Worker {
    #[command(flatten)]
    a: WorkerArgs,
}

#[derive(Parser)]
struct Dealer {
    #[command(flatten)]
    a: DealerArgs,
}

/// Runs `marill dev`.
pub fn run(a: DevArgs) -> Result<()> {
    let a = DevArgs {
        generate: a.generate.with_default_prompt(),
        ..a
    };
    let dir = std::env::temp_dir().join(format!("marill-dev-{}", std::process::id()));
    crate::net::keys::write_all(&dir)?;
    let result = run_in(&a, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(a: &DevArgs, keys: &std::path::Path) -> Result<()> {
    let mock = MockCluster::new(1).context("starting the embedded Kafka-protocol broker")?;
    for topic in [JOBS_TOPIC, RESULTS_TOPIC, DEAD_LETTER_TOPIC] {
        mock.create_topic(topic, 4, 1)
            .with_context(|| format!("creating {topic}"))?;
    }
    let kafka = KafkaSettings::new(mock.bootstrap_servers());
    eprintln!("dev: embedded broker at {}", mock.bootstrap_servers());
    let ep = |p: u16| format!("tcp://127.0.0.1:{p}");
    let [dp, dh, peer, cp, ch] = [(); 5].map(|_| free_port());
    let (dp, dh, peer, cp, ch) = (dp?, dh?, peer?, cp?, ch?);
    let keys_s = keys.display().to_string();
    let dealer = Dealer::try_parse_from([
        "dealer",
        "--keys",
        &keys_s,
        "--provider-endpoint",
        &ep(dp),
        "--helper-endpoint",
        &ep(dh),
    ])?;
    std::thread::spawn(move || crate::net::dealer::run(dealer.a));
    let (model, tok) = load(a.generate.model_args())?;
    if a.serve.is_none() {
        a.generate.check_length(&tok, a.max_seq, "the workers'")?;
    }
    let n_public = model
        .marill_spec()
        .ok_or_else(|| anyhow!("model without a Marill spec"))?
        .n_public();
    for (role, dealer_ep, control) in [("provider", dp, cp), ("helper", dh, ch)] {
        let mut args: Vec<String> = [
            "worker",
            "--role",
            role,
            "--keys",
            &keys_s,
            "--control-endpoint",
            &ep(control),
            "--peer-endpoint",
            &ep(peer),
            "--dealer-endpoint",
            &ep(dealer_ep),
            "--max-seq",
            &a.max_seq.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(a.generate.model_args().to_args());
        let w = Worker::try_parse_from(&args)?;
        std::thread::spawn(move || {
            if let Err(e) = crate::net::worker::run(w.a) {
                eprintln!("dev: worker failed: {e:#}");
            }
        });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let cfg = CoordinatorConfig {
        kafka: kafka.clone(),
        group: "marill-coordinator".into(),
        pairs: vec![PairEndpoints {
            provider: ep(cp),
            helper: ep(ch),
        }],
        keys: ControlKeys {
            own: KeyPair::load(keys, "coordinator")?,
            provider: KeyPair::load_public(keys, "provider")?,
            helper: KeyPair::load_public(keys, "helper")?,
        },
        model: ServedModel {
            name: "default".into(),
        },
        step_timeout: Duration::from_secs(300),
        session_idle: Duration::from_secs(60),
        exit_when_idle: None,
        create_topics: false,
        job_partitions: 4,
    };
    let s = stop.clone();
    let metrics = marill_coordinator::CoordinatorMetrics::unregistered();
    let coord = std::thread::spawn(move || marill_coordinator::run(cfg, s, metrics));
    // the coordinator creates the topics; wait for them
    let target = super::target(kafka, keys, "default", Duration::from_secs(300), 1)?;
    let gamma: Vec<f32> = model.norm().weight().to_vec1()?;
    let mut runner = Err(anyhow!("not tried"));
    for _ in 0..100 {
        if coord.is_finished() {
            let r = coord.join().map_err(|_| anyhow!("coordinator panicked"))?;
            return Err(anyhow!("the coordinator stopped: {:?}", r.err()));
        }
        runner = KafkaRunner::new(target.clone(), n_public, gamma.clone());
        if runner.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let runner = runner.context("waiting for the coordinator's topics")?;
    let r = if let Some(addr) = &a.serve {
        eprintln!("dev: coordinator, provider, helper and dealer up");
        drop(runner);
        crate::gateway::serve(
            addr,
            model,
            tok,
            target,
            a.max_seq,
            &a.http,
            a.generate.model_args().model_path(),
        )
    } else {
        eprintln!(
            "dev: coordinator, provider, helper and dealer up; session {}",
            runner.session()
        );
        generate_remote(&a.generate, &model, &tok, a.max_seq, Box::new(runner))
    };
    stop.store(true, Ordering::Relaxed);
    let stats = coord
        .join()
        .map_err(|_| anyhow!("coordinator panicked"))??;
    eprintln!(
        "dev: coordinator: {} jobs done, {} failed, {} dead-lettered",
        stats.done, stats.failed, stats.dead_lettered
    );
    r
}
