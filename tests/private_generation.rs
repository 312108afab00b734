//! End to end: `marill generate` on SmolLM2-135M (LF = 0.5, LoRA r = 8 with B = 0) runs the
//! private suffix under 2PC and must agree with plaintext inference of the same model on every
//! generated token, with a bounded logit error. CI fetches the model first
//! (`scripts/fetch-smollm2.sh`); without it the test fails, naming that command.

mod common;

use std::process::Output;

/// `marill generate` on SmolLM2 and the prompt "The capital of France is", with `extra`.
fn generate(extra: &[&str]) -> Output {
    let model = common::smollm2();
    let mut args = vec![
        "generate",
        "--model",
        &model,
        "--prompt",
        "The capital of France is",
    ];
    args.extend_from_slice(extra);
    common::marill(&args).output().expect("run marill")
}

#[test]
fn private_generation_agrees_with_plaintext() {
    let out = generate(&["--max-new-tokens", "4", "--check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "marill failed: {stderr}");
    assert!(stdout.contains("Paris"), "unexpected text: {stdout}");
    common::assert_agrees(&stderr, 0.5);
    // the last line: tokens, time, online cost and the dealer bytes the steps consumed
    let last = stderr
        .lines()
        .find(|l| l.contains(" tokens in "))
        .unwrap_or_else(|| panic!("no summary line: {stderr}"));
    assert!(
        last.starts_with("4 tokens in ") && last.contains("; dealer: ") && last.ends_with(" MB"),
        "{last}"
    );
}

/// A prompt plus `--max-new-tokens` past the longest sequence served is refused before any
/// 2PC work, naming both numbers.
#[test]
fn a_generation_past_the_longest_sequence_is_refused_at_once() {
    let out = generate(&["--max-new-tokens", "100000"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it ran: {stderr}");
    assert!(
        stderr.contains(
            "the prompt (5 tokens) plus --max-new-tokens 100000 exceeds the suffix's maximum \
             sequence length of 256 tokens"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains(" tokens in "), "{stderr}");
}
