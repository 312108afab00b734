//! End to end over the network: `marill dealer`, two `marill worker`s and `marill client
//! generate` as four processes on 127.0.0.1, every link encrypted and mutually authenticated
//! (CURVE, allow-listed keys). The private generation on SmolLM2 must agree with plaintext on
//! every token; a client whose key is not allow-listed gets a clear error, not a hang. CI fetches
//! the model first (`scripts/fetch-smollm2.sh`); without it the tests say so and are skipped.

mod common;

use common::{free_port, marill, temp, Procs};
use std::path::Path;
use std::process::{Output, Stdio};

const MODEL: &str = "target/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

fn model() -> Option<String> {
    let m = format!("{}/{MODEL}", env!("CARGO_MANIFEST_DIR"));
    if Path::new(&m).exists() {
        Some(m)
    } else {
        eprintln!("skipped: {m} absent (run scripts/fetch-smollm2.sh)");
        None
    }
}

fn keys(dir: &Path) {
    let st = marill(&["keys", "generate", "--out", dir.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Starts dealer, provider and helper; returns them and the two client endpoints.
fn start_workers(keys: &Path, model: &str, idle: &str) -> (Procs, String, String) {
    let ep = |_: ()| format!("tcp://127.0.0.1:{}", free_port());
    let (d0, d1, peer, c0, c1) = (ep(()), ep(()), ep(()), ep(()), ep(()));
    let k = keys.to_str().unwrap();
    let common = ["--n-public", "28", "--idle-timeout-s", idle];
    let dealer = marill(&[
        "dealer",
        "--keys",
        k,
        "--provider-endpoint",
        &d0,
        "--helper-endpoint",
        &d1,
        "--idle-timeout-s",
        idle,
        "--exit-when-done",
    ])
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut procs = Procs(vec![dealer]);
    for (role, client_ep, dealer_ep) in [("provider", &c0, &d0), ("helper", &c1, &d1)] {
        let mut args = vec![
            "worker",
            "--role",
            role,
            "--keys",
            k,
            "--client-endpoint",
            client_ep,
            "--peer-endpoint",
            &peer,
            "--dealer-endpoint",
            dealer_ep,
            "--model",
            model,
        ];
        args.extend_from_slice(&common);
        procs
            .0
            .push(marill(&args).stderr(Stdio::null()).spawn().unwrap());
    }
    (procs, c0, c1)
}

fn client(keys: &Path, model: &str, c0: &str, c1: &str, timeout: &str) -> Output {
    marill(&[
        "client",
        "generate",
        "--keys",
        keys.to_str().unwrap(),
        "--provider",
        c0,
        "--helper",
        c1,
        "--timeout-s",
        timeout,
        "--model",
        model,
        "--n-public",
        "28",
        "--prompt",
        "The capital of France is",
        "--max-new-tokens",
        "4",
        "--check",
    ])
    .output()
    .unwrap()
}

#[test]
fn four_processes_agree_with_plaintext() {
    let Some(model) = model() else { return };
    let dir = temp("keys-ok");
    keys(&dir);
    let (mut procs, c0, c1) = start_workers(&dir, &model, "120");
    let out = client(&dir, &model, &c0, &c1, "120");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "client failed: {stderr}");
    common::assert_agrees(&stderr, 0.5);
    // every process ends by itself once the client has said goodbye
    for c in &mut procs.0 {
        let st = c.wait().unwrap();
        assert!(st.success(), "a server process failed: {st}");
    }
    procs.0.clear();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_client_off_the_allow_list_gets_a_clear_error() {
    let Some(model) = model() else { return };
    let (good, bad) = (temp("keys-good"), temp("keys-bad"));
    keys(&good);
    keys(&bad);
    // the intruder knows the workers' public keys but holds its own client key
    for role in ["provider", "helper"] {
        std::fs::copy(
            good.join(format!("{role}.pub")),
            bad.join(format!("{role}.pub")),
        )
        .unwrap();
    }
    let (_procs, c0, c1) = start_workers(&good, &model, "30");
    let out = client(&bad, &model, &c0, &c1, "5");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no message from provider within 5 s"),
        "unexpected error: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&good);
    let _ = std::fs::remove_dir_all(&bad);
}
