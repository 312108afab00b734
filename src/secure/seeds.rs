//! Where a command's secret randomness comes from: the operating system's CSPRNG
//! ([`Seed::random`]), or a number given with `--seed` for a reproducible test or benchmark run.
//!
//! The dealer's seed, the split of the private weights into shares and the client's input masks
//! are secrets: a seeded run makes them predictable to anyone who knows the number, so it is
//! announced on standard error and is meant for tests and benchmarks on public data only.
//! The seeds themselves come from `marill_mpc::prg::Seeding`; `tests/secret_seeds.rs` checks
//! that no other source seeds secret material.

use marill_mpc::prg::{Seed, Seeding};

/// The seeding a `--seed` option asks for; a given seed is announced on standard error.
pub fn seeding(seed: Option<u64>) -> Seeding {
    match seed {
        Some(s) => {
            eprintln!(
                "--seed {s}: secret randomness (dealer, weight shares, input masks) is derived \
                 from this number; the run is reproducible and its secrets are not secret (tests \
                 and benchmarks only)"
            );
            Seeding::Fixed(s)
        }
        None => Seeding::Os,
    }
}

/// A benchmark's seed: the given one, or a number drawn from the OS CSPRNG; either way printed,
/// so that a run can be repeated with `--seed`. Benchmarks run on synthetic data only.
pub fn bench_seed(seed: Option<u64>) -> u64 {
    match seed {
        Some(s) => {
            eprintln!("--seed {s}: a reproducible run (synthetic weights, inputs and dealer)");
            s
        }
        None => {
            let s = u64::from_le_bytes(Seed::random().0[..8].try_into().expect("8 bytes"));
            eprintln!("seed {s} drawn from the OS CSPRNG (--seed {s} repeats this run)");
            s
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn no_seed_means_the_os_csprng() {
        assert_eq!(super::seeding(None), marill_mpc::prg::Seeding::Os);
        assert_eq!(super::seeding(Some(3)), marill_mpc::prg::Seeding::Fixed(3));
    }
}
