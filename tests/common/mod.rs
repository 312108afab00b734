//! Helpers shared by the end-to-end tests.

/// Checks the `--check` line of a private generation: every token equal to plaintext and the
/// max abs logit error below `bound`. The line reads
/// "plaintext check: next-token agreement A/B, max abs logit error E".
pub fn assert_agrees(stderr: &str, bound: f64) {
    let line = stderr
        .lines()
        .find(|l| l.contains("plaintext check"))
        .unwrap_or_else(|| panic!("no check line in {stderr}"));
    let agree = line
        .split("agreement ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap();
    let (a, b) = agree.split_once('/').unwrap();
    assert_eq!(a, b, "secure and plaintext tokens differ: {line}");
    let err: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(err < bound, "logit error too large: {line}");
}
