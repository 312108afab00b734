//! `marill`: the one binary of Marill (see `marill --help`).

mod bench;
mod cluster;
mod fuzz;
mod gateway;
mod generate;
mod heap;
mod layered;
mod net;
mod plan;
mod secure;
mod tune;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Marill: private LLM inference with two-party computation and a dealer.
#[derive(Parser)]
#[command(name = "marill", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmarks (markdown on stdout; `--json PATH` writes the rows as a JSON array).
    Bench {
        #[command(subcommand)]
        which: bench::BenchCommand,
    },
    /// A private generation on a real model, in one process: the client runs the public prefix,
    /// two parties run the private suffix under 2PC with a dealer.
    Generate(generate::LocalArgs),
    /// Evaluations.
    Eval {
        #[command(subcommand)]
        which: EvalCommand,
    },
    /// CURVE key pairs for the processes.
    Keys {
        #[command(subcommand)]
        which: KeysCommand,
    },
    /// A worker pair's dealer: serves correlated randomness to a provider and a helper on every
    /// lane, generating the next steps' material ahead while the pair is idle.
    Dealer(net::dealer::DealerArgs),
    /// A worker process: the provider (holds the model) or the helper (holds shares).
    Worker(net::worker::WorkerArgs),
    /// The coordinator: takes jobs from Kafka, places sessions on worker pairs, publishes
    /// results.
    Coordinator(cluster::CoordinatorArgs),
    /// Everything in one process (embedded Kafka-protocol broker, coordinator, provider,
    /// helper, dealer), then a private generation through Kafka (a default prompt when none is
    /// given); with --serve ADDR, the OpenAI-compatible API over it instead, until stopped.
    Dev(cluster::dev::DevArgs),
    /// The OpenAI-compatible HTTP API on the client's side, in front of the cluster:
    /// completions and chat completions (streamed or not), sampling at the client. It sees the
    /// prompt: run it where the prompt may be seen, never at the provider.
    Gateway(gateway::GatewayArgs),
    /// Mutation fuzzing of every decoder that reads another party's or process's bytes (link
    /// messages, Kafka envelopes, shares, sealed shares, correlation bundles, settings files):
    /// executions, accepted, rejected and panics per decoder; fails on any panic.
    Fuzz(fuzz::FuzzArgs),
    /// Configuration: `reference` prints the worker's and the dealer's keys (markdown), `check`
    /// validates a file without starting anything.
    Config {
        #[command(subcommand)]
        which: ConfigCommand,
    },
    /// Capacity planning: `measure` the cost of a request, then pairs, dealers, bandwidth and
    /// memory for a target load (`--requests-per-day`); `check` against `marill bench cluster`.
    Plan(plan::PlanArgs),
    /// The client of a private generation: against two workers (direct mode) or through the
    /// cluster (Kafka).
    Client {
        #[command(subcommand)]
        which: ClientCommand,
    },
    /// Marill fine-tuning: `train` LoRA adapters on the private layers (layer freezing, head
    /// merging or the head-pruning baseline) and export them; `eval` held-out perplexity and
    /// next-token accuracy in plaintext and under secure inference.
    Tune {
        #[command(subcommand)]
        which: tune::TuneCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Writes key pairs for client, provider, helper and dealer.
    Generate(net::keys::KeysArgs),
}

#[derive(Subcommand)]
enum ClientCommand {
    /// A private generation: public prefix and head here, private suffix at the workers.
    Generate(net::client::ClientArgs),
    /// Many private sessions through the cluster at once (Kafka), each compared with
    /// plaintext; prints sessions, jobs, agreement and jobs/s.
    Batch(cluster::BatchArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Every key of `marill worker` and `marill dealer` with its default and variable (the
    /// coordinator's: `marill coordinator --print-reference`).
    Reference,
    /// Validates a configuration file for a component (unknown keys, invalid values, and for
    /// the coordinator missing required keys), as the component would read it at start.
    Check {
        /// coordinator, worker or dealer
        #[arg(value_parser = ["coordinator", "worker", "dealer"])]
        component: String,
        /// The file (TOML or YAML, by extension)
        file: std::path::PathBuf,
    },
}

/// `marill config check`: reads `file` as `component` would (environment included).
fn check_config(component: &str, file: &std::path::Path) -> Result<()> {
    if component == "coordinator" {
        cluster::settings::CoordinatorSettings::load(&cluster::settings::CliOverrides {
            file: Some(file.to_path_buf()),
            values: Vec::new(),
        })?;
    } else {
        let argv: Vec<std::ffi::OsString> = vec![
            "marill".into(),
            component.into(),
            "--config".into(),
            file.into(),
        ];
        layered::apply(Cli::command(), &argv)?;
    }
    println!("{}: valid {component} configuration", file.display());
    Ok(())
}

/// The worker's and the dealer's key tables, as `docs/configuration.md` holds them.
fn layered_reference() -> String {
    let cmd = layered::apply(Cli::command(), &[]).expect("no file to read");
    layered::LAYERED
        .iter()
        .map(|name| {
            format!(
                "### `marill {name}`\n\n{}",
                layered::reference_markdown(&cmd, name)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Subcommand)]
enum EvalCommand {
    /// Secure vs plaintext inference on real prompts: next-token top-1 agreement, identical
    /// greedy generations, max abs logit error.
    Fidelity(generate::FidelityArgs),
}

fn main() -> Result<()> {
    // before any thread starts: two heap arenas, not eight per core (see `heap`)
    heap::cap_arenas();
    // structured logs on stderr; `MARILL_LOG` filters (e.g. `MARILL_LOG=debug`), default info
    let filter = tracing_subscriber::EnvFilter::try_from_env("MARILL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // the worker's and the dealer's flags read a configuration file and the environment too
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let matches = layered::apply(Cli::command(), &argv)?.get_matches_from(&argv);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Bench { which } => bench::run(which),
        Command::Generate(a) => generate::generate(a),
        Command::Eval { which } => match which {
            EvalCommand::Fidelity(a) => generate::fidelity(a),
        },
        Command::Keys { which } => match which {
            KeysCommand::Generate(a) => net::keys::generate(a),
        },
        Command::Dealer(a) => net::dealer::run(a),
        Command::Worker(a) => net::worker::run(a),
        Command::Coordinator(a) => cluster::coordinator(a),
        Command::Dev(a) => cluster::dev::run(a),
        Command::Gateway(a) => gateway::run(a),
        Command::Fuzz(a) => fuzz::run(a),
        Command::Config { which } => match which {
            ConfigCommand::Reference => {
                print!("{}", layered_reference());
                Ok(())
            }
            ConfigCommand::Check { component, file } => check_config(&component, &file),
        },
        Command::Plan(a) => plan::run(a),
        Command::Tune { which } => tune::run(which),
        Command::Client { which } => match which {
            ClientCommand::Generate(a) => net::client::generate(a),
            ClientCommand::Batch(a) => cluster::batch(a),
        },
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_configuration_document_lists_the_worker_and_dealer_keys() {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/configuration.md"
        ))
        .unwrap();
        assert!(
            doc.contains(&super::layered_reference()),
            "docs/configuration.md is stale: run `marill config reference`"
        );
    }

    #[test]
    fn config_check_accepts_good_files_and_names_the_bad_key() {
        let dir = std::env::temp_dir().join(format!("marill-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (component, name, text, ok) in [
            ("worker", "w.yaml", "role: helper\nmax_seq: 64\n", true),
            ("worker", "x.yaml", "role: helper\nmaxseq: 64\n", false),
            (
                "dealer",
                "d.toml",
                "keys = \"/k\"\nidle_timeout_s = 5\n",
                true,
            ),
            ("dealer", "e.toml", "idle_timeout_s = \"soon\"\n", false),
            (
                "coordinator",
                "c.toml",
                "brokers = \"k:9092\"\nkeys = \"/k\"\npairs = [\"tcp://a:1,tcp://b:2\"]\n",
                true,
            ),
            (
                "coordinator",
                "n.toml",
                "brokers = \"k:9092\"\nkeys = \"/k\"\n",
                false,
            ),
        ] {
            let f = dir.join(name);
            std::fs::write(&f, text).unwrap();
            let r = super::check_config(component, &f);
            assert_eq!(r.is_ok(), ok, "{component} {text}: {r:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
