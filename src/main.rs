//! `marill`: the one binary of Marill (see `marill --help`).

mod bench;

use anyhow::Result;
use clap::{Parser, Subcommand};

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
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench { which } => bench::run(which),
    }
}
