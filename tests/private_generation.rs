//! End to end: `marill generate` on SmolLM2-135M (LF = 0.5, LoRA r = 8 with B = 0) runs the
//! private suffix under 2PC and must agree with plaintext inference of the same model on every
//! generated token, with a bounded logit error. CI fetches the model first
//! (`scripts/fetch-smollm2.sh`); without it the test says so and is skipped.

mod common;

use std::process::Command;

const MODEL: &str = "target/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

#[test]
fn private_generation_agrees_with_plaintext() {
    let root = env!("CARGO_MANIFEST_DIR");
    let model = format!("{root}/{MODEL}");
    if !std::path::Path::new(&model).exists() {
        eprintln!("skipped: {model} absent (run scripts/fetch-smollm2.sh)");
        return;
    }
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
