//! Where a command's secret randomness comes from: the operating system's CSPRNG
//! ([`Seed::random`]), or a number given with `--seed` for a reproducible test or benchmark run.
//!
//! The dealer's seed, the split of the private weights into shares and the client's input masks
//! are secrets: a seeded run makes them predictable to anyone who knows the number, so it is
//! announced on standard error and is meant for tests and benchmarks on public data only.
//! `tests/secret_seeds.rs` checks that no other source seeds secret material.

use marill_mpc::prg::Seed;

/// The source of a command's secret seeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seeding {
    /// fresh seeds from the OS CSPRNG (the default)
    Os,
    /// seeds derived from a number given with `--seed` (reproducible, not secret)
    Fixed(u64),
}

/// What each secret seed is for (distinct labels give independent seeds from one `--seed`).
#[derive(Clone, Copy, Debug)]
pub enum Purpose {
    /// the dealer's seed
    Dealer,
    /// the split of the private weights into the provider's and the helper's shares
    WeightSplit,
    /// the client's input masks of session `n`
    InputMasks(u64),
}

impl Purpose {
    fn label(self) -> u64 {
        match self {
            Purpose::Dealer => 0,
            Purpose::WeightSplit => 0x9e37,
            Purpose::InputMasks(n) => 0x6d61_736b_0000_0000 ^ n,
        }
    }
}

impl Seeding {
    /// The seeding a `--seed` option asks for; a given seed is announced on standard error.
    pub fn from_arg(seed: Option<u64>) -> Self {
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

    /// The seed for `purpose`: fresh from the OS CSPRNG, or derived from the given number.
    pub fn seed(self, purpose: Purpose) -> Seed {
        match self {
            Seeding::Os => Seed::random(),
            Seeding::Fixed(s) => Seed::from_u64(s ^ purpose.label()),
        }
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
    use super::*;

    #[test]
    fn fixed_seeds_repeat_and_os_seeds_do_not() {
        let f = Seeding::Fixed(7);
        assert_eq!(f.seed(Purpose::Dealer), f.seed(Purpose::Dealer));
        assert_ne!(f.seed(Purpose::Dealer), f.seed(Purpose::WeightSplit));
        assert_ne!(
            f.seed(Purpose::InputMasks(0)),
            f.seed(Purpose::InputMasks(1))
        );
        assert_ne!(
            Seeding::Os.seed(Purpose::Dealer),
            Seeding::Os.seed(Purpose::Dealer)
        );
        assert_eq!(Seeding::from_arg(None), Seeding::Os);
    }
}
