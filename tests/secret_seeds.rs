//! A guard over the source tree: secret randomness comes from the OS CSPRNG only.
//!
//! Every secret seed (dealer seeds, the split of the private weights, the client's input masks)
//! must come from `Seed::random` (`getrandom`). This test reads the non-test code of every crate
//! (each file up to its `#[cfg(test)]` module) and fails on:
//! - std's `RandomState` (SipHash keys, nothing cryptographic promised) anywhere;
//! - the clock near a seed (a time-derived seed);
//! - fixed seeds (`Seed::from_u64`, `Seed([...])`, `seed_from_u64`) outside the files that serve
//!   tests, benchmarks, the fuzzer, synthetic weights or the announced `--seed` path.
//!
//! A new use of a fixed seed in production code fails here and must be argued into the
//! allow-list below.

use std::path::{Path, PathBuf};

/// Files where a fixed seed is legitimate, and why.
const FIXED_SEED_ALLOWED: &[(&str, &str)] = &[
    (
        "mpc/src/prg.rs",
        "defines Seed::from_u64 and the announced --seed path (Seeding::Fixed)",
    ),
    ("mpc/src/testing.rs", "test and benchmark harness"),
    (
        "suffix/src/weights.rs",
        "synthetic random weights for tests and benchmarks",
    ),
    (
        "model/src/lora.rs",
        "generated stand-in adapters (public --adapter-seed)",
    ),
    (
        "model/src/tiny.rs",
        "the tiny synthetic model of tests and bench cluster",
    ),
    (
        "model/src/train/data.rs",
        "training data order (not secret)",
    ),
    ("src/fuzz.rs", "the fuzzer's reproducible mutations"),
    ("src/bench/ops.rs", "benchmark on synthetic data"),
    ("src/bench/suffix.rs", "benchmark on synthetic data"),
];

const CRATES: &[&str] = &[
    "src",
    "mpc/src",
    "model/src",
    "suffix/src",
    "transport/src",
    "proto/src",
    "coordinator/src",
    "scheduler/src",
    "metrics/src",
    "workers/src",
    "dealer-pool/src",
    "client/src",
    "kafka/src",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The file's lines before its test module.
fn production_lines(text: &str) -> Vec<(usize, &str)> {
    text.lines()
        .enumerate()
        .take_while(|(_, l)| !l.starts_with("#[cfg(test)]"))
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .collect()
}

/// The offences of one file (path relative to the workspace root).
fn offences(rel: &str, text: &str) -> Vec<String> {
    let lines = production_lines(text);
    let mut out = Vec::new();
    let fixed_ok = FIXED_SEED_ALLOWED.iter().any(|(f, _)| *f == rel);
    for (k, &(n, l)) in lines.iter().enumerate() {
        if l.contains("RandomState") {
            out.push(format!("{rel}:{n}: std's RandomState is not a CSPRNG: {l}"));
        }
        let fixed = ["Seed::from_u64(", "Seed([", "seed_from_u64("]
            .iter()
            .any(|p| l.contains(p));
        if fixed && !fixed_ok {
            out.push(format!(
                "{rel}:{n}: a fixed seed outside tests and benchmarks: {l}"
            ));
        }
        // a clock reading as a number (an Instant cannot become one without a second reading)
        let clock = ["SystemTime", "UNIX_EPOCH", "as_nanos", "subsec_nanos"]
            .iter()
            .any(|p| l.contains(p));
        let near = lines[k.saturating_sub(3)..(k + 4).min(lines.len())]
            .iter()
            .any(|(_, m)| m.to_lowercase().contains("seed"));
        if clock && near {
            out.push(format!("{rel}:{n}: the clock near a seed: {l}"));
        }
    }
    out
}

#[test]
fn secret_seeds_come_from_the_os_csprng_only() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for c in CRATES {
        rust_files(&root.join(c), &mut files);
    }
    assert!(files.len() > 50, "only {} files found", files.len());
    let mut all = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(root).expect("under the root");
        let text = std::fs::read_to_string(f).expect("readable source");
        all.extend(offences(&rel.display().to_string(), &text));
    }
    assert!(
        all.is_empty(),
        "secret randomness from a weak source:\n{}",
        all.join("\n")
    );
    // every allow-listed file still exists (a stale entry would silently allow a new file)
    for (f, why) in FIXED_SEED_ALLOWED {
        assert!(
            root.join(f).exists(),
            "{f} ({why}) is allow-listed but gone"
        );
    }
}

/// The guard catches each kind of weak source (what it caught in this project: `Seed::random`
/// was SipHash of std's RandomState mixed with the clock).
#[test]
fn the_guard_catches_weak_sources() {
    let old = r#"
    pub fn random() -> Self {
        let a = std::collections::hash_map::RandomState::new();
        let mut h1 = a.build_hasher();
        h1.write_u128(std::time::SystemTime::now().as_nanos());
        let mut seed = [0u8; 16];
    }
"#;
    let o = offences("mpc/src/prg.rs", old);
    assert!(o.iter().any(|m| m.contains("RandomState")), "{o:?}");
    assert!(
        o.iter().any(|m| m.contains("the clock near a seed")),
        "{o:?}"
    );
    let fixed = "let dealer = Dealer::new(Seed::from_u64(7));";
    assert_eq!(offences("src/net/dealer.rs", fixed).len(), 1);
    assert!(offences("src/bench/ops.rs", fixed).is_empty());
    // test modules are not production code
    let test_only = "fn f() {}\n#[cfg(test)]\nmod tests { fn g() { Seed::from_u64(1); } }";
    assert!(offences("src/net/dealer.rs", test_only).is_empty());
}
