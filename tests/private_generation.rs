//! End to end: `marill generate` on SmolLM2-135M (LF = 0.5, LoRA r = 8 with B = 0) runs the
//! private suffix under 2PC and must agree with plaintext inference of the same model on every
//! generated token, with a bounded logit error. CI fetches the model first
//! (`scripts/fetch-smollm2.sh`); without it the test fails, naming that command.

mod common;

use std::process::Command;

#[test]
fn private_generation_agrees_with_plaintext() {
    let model = common::smollm2();
    let out = Command::new(env!("CARGO_BIN_EXE_marill"))
        .args([
            "generate",
            "--model",
            &model,
            "--prompt",
            "The capital of France is",
            "--max-new-tokens",
            "4",
            "--check",
        ])
        .output()
        .expect("run marill");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "marill failed: {stderr}");
    assert!(stdout.contains("Paris"), "unexpected text: {stdout}");
    common::assert_agrees(&stderr, 0.5);
}
