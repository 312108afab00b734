//! End to end over the network: `marill dealer`, two `marill worker`s and `marill client
//! generate` as four processes on 127.0.0.1, every link encrypted and mutually authenticated
//! (CURVE, allow-listed keys). The private generation on SmolLM2 must agree with plaintext on
//! every token; a client whose key is not allow-listed gets a clear error, not a hang (on a
//! tiny random model: the allow-list does not depend on the model). CI fetches SmolLM2 first
//! (`scripts/fetch-smollm2.sh`); without it the SmolLM2 tests fail, naming that command.

mod common;

use common::{free_port, marill, metric, smollm2, temp, Procs};
use std::path::Path;
use std::process::{Output, Stdio};

/// Public layers of the SmolLM2 runs (2 private layers of 30: quick).
const SMOLLM2_PUBLIC: &str = "28";

fn keys(dir: &Path) {
    let st = marill(&["keys", "generate", "--out", dir.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
}

fn endpoint() -> String {
    format!("tcp://127.0.0.1:{}", free_port())
}

/// Starts a dealer (with `extra` flags); returns it and its provider and helper endpoints.
fn start_dealer(keys: &Path, idle: &str, extra: &[&str]) -> (Procs, String, String) {
    let (d0, d1) = (endpoint(), endpoint());
    let mut args = vec![
        "dealer",
        "--keys",
        keys.to_str().unwrap(),
        "--provider-endpoint",
        &d0,
        "--helper-endpoint",
        &d1,
        "--idle-timeout-s",
        idle,
    ];
    args.extend_from_slice(extra);
    let dealer = marill(&args).stderr(Stdio::null()).spawn().unwrap();
    (Procs(vec![dealer]), d0, d1)
}

/// Starts a provider and a helper on the dealer at `d0`/`d1` serving `model` with `n_public`
/// public layers; returns them and the two client endpoints.
fn start_pair(
    keys: &Path,
    (model, n_public): (&str, &str),
    idle: &str,
    d0: &str,
    d1: &str,
) -> (Procs, String, String) {
    let (peer, c0, c1) = (endpoint(), endpoint(), endpoint());
    let k = keys.to_str().unwrap();
    let common = ["--n-public", n_public, "--idle-timeout-s", idle];
    let mut procs = Procs(Vec::new());
    for (role, client_ep, dealer_ep) in [("provider", &c0, d0), ("helper", &c1, d1)] {
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

/// Starts dealer (one session), provider and helper; returns them and the two client
/// endpoints.
fn start_workers(keys: &Path, model: (&str, &str), idle: &str) -> (Procs, String, String) {
    let (mut procs, d0, d1) = start_dealer(keys, idle, &["--exit-when-done"]);
    let (mut pair, c0, c1) = start_pair(keys, model, idle, &d0, &d1);
    procs.0.append(&mut pair.0);
    (procs, c0, c1)
}

fn client(
    keys: &Path,
    (model, n_public): (&str, &str),
    c0: &str,
    c1: &str,
    timeout: &str,
) -> Output {
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
        n_public,
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
    let model = smollm2();
    let model = (model.as_str(), SMOLLM2_PUBLIC);
    let dir = temp("keys-ok");
    keys(&dir);
    let (mut procs, c0, c1) = start_workers(&dir, model, "120");
    let out = client(&dir, model, &c0, &c1, "120");
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
    let (good, bad, tiny) = (temp("keys-good"), temp("keys-bad"), temp("allow-tiny"));
    keys(&good);
    keys(&bad);
    // the key check comes before any model work: a tiny random model (2 of its 4 layers
    // public) serves as well as SmolLM2 and needs no download
    marill_model::tiny::write_tiny_model(&tiny, &Default::default()).unwrap();
    let model = (tiny.to_str().unwrap(), "2");
    // the intruder knows the workers' public keys but holds its own client key
    for role in ["provider", "helper"] {
        std::fs::copy(
            good.join(format!("{role}.pub")),
            bad.join(format!("{role}.pub")),
        )
        .unwrap();
    }
    let (_procs, c0, c1) = start_workers(&good, model, "30");
    let out = client(&bad, model, &c0, &c1, "5");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no message from provider within 5 s"),
        "unexpected error: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&good);
    let _ = std::fs::remove_dir_all(&bad);
    let _ = std::fs::remove_dir_all(&tiny);
}

/// A dealer that saw a step's shape streams the next step of that shape to both workers
/// unasked: a second session with the same prompt, on a new pair (a new epoch, fresh seeds),
/// gets every bundle streamed, none on request, the decode steps' bundles generated ahead of
/// demand while the pair was idle, and still agrees with plaintext.
#[test]
fn a_second_session_of_the_same_shape_is_streamed_by_the_dealer() {
    let model = smollm2();
    let model = (model.as_str(), SMOLLM2_PUBLIC);
    let dir = temp("keys-stream");
    keys(&dir);
    let addr = format!("127.0.0.1:{}", free_port());
    let (_dealer, d0, d1) = start_dealer(&dir, "120", &["--metrics-addr", &addr]);
    let series = |name: &str, party: &str| metric(&addr, &format!("{name}{{party=\"{party}\"}}"));
    let (mut served, mut streamed) = (Vec::new(), Vec::new());
    for session in 0..2 {
        let (mut pair, c0, c1) = start_pair(&dir, model, "120", &d0, &d1);
        let out = client(&dir, model, &c0, &c1, "120");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "session {session} failed: {stderr}");
        common::assert_agrees(&stderr, 0.5);
        for c in &mut pair.0 {
            assert!(c.wait().unwrap().success(), "a worker failed");
        }
        pair.0.clear();
        served.push(["provider", "helper"].map(|p| series("marill_dealer_served_total", p) as u64));
        streamed
            .push(["provider", "helper"].map(|p| series("marill_dealer_streamed_total", p) as u64));
        if session == 0 {
            // the load, the prefill (5 rows) and three decode steps at positions 5, 6, 7: their
            // keys (6, 7, 8) fall in one bucket, so three shapes; the first decode step teaches
            // the dealer the bucket's manifest and the next two are streamed
            assert_eq!(metric(&addr, "marill_dealer_manifests"), 3.0);
            for (i, p) in ["provider", "helper"].iter().enumerate() {
                assert!(streamed[0][i] > 0, "{p}: no decode step streamed");
            }
        }
    }
    assert_eq!(metric(&addr, "marill_dealer_epoch"), 1.0);
    // the decode steps after the prefill and after each decode were predicted and generated
    // ahead while the pair was idle; none was generated for nothing
    let ahead = |o: &str| {
        metric(
            &addr,
            &format!("marill_dealer_ahead_bundles{{outcome=\"{o}\"}}"),
        )
    };
    assert!(ahead("used") > 0.0, "nothing was generated ahead");
    assert_eq!(ahead("skipped"), 0.0);
    for (i, p) in ["provider", "helper"].iter().enumerate() {
        let second = served[1][i] - served[0][i];
        assert_eq!(
            served[0][i], second,
            "{p}: the same steps take the same bundles"
        );
        assert_eq!(
            streamed[1][i] - streamed[0][i],
            second,
            "{p}: every bundle of the second session is streamed"
        );
        // the two streamed decode steps of the first session took the same bundles each
        assert!(streamed[0][i] < served[0][i], "{p}");
        // streamed steps travel in frames of many bundles: two in the first session, five
        // (load, prefill, three decodes) in the second, at most three frames each, and the
        // steps shipped ahead (one predicted past each session's end) three more each
        let frames = series("marill_dealer_stream_frames_total", p) as u64;
        assert!(
            (7..=27).contains(&frames),
            "{p}: {frames} frames for 7 streamed steps"
        );
        // decode steps predicted while the step before them ran were shipped to the worker
        // before they began, and used
        assert!(
            series("marill_dealer_shipped_used_bundles_total", p) > 0.0,
            "{p}: no step was shipped ahead and used"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
