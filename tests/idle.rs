//! An idle cluster keeps serving: workers and the dealer wait for work without limit between
//! steps and requests; `--idle-timeout-s` bounds only the exchanges inside a step. The test
//! starts tansu, a dealer, a provider/helper pair and the coordinator with a 2-second timeout
//! (set through a YAML file, a flag over a TOML file, and environment variables: the settings
//! layers of `src/layered.rs` on real processes), lets them idle for several timeouts, checks
//! every process is still running, then runs a private generation through Kafka and compares
//! it with plaintext. A second test: a bad configuration stops a worker at start, naming the key.

mod common;

use common::{assert_agrees, free_port, marill, start_tansu, temp, Procs};
use std::time::Duration;

#[test]
fn an_idle_cluster_serves_after_its_timeout_has_passed() {
    let dir = temp("idle");
    let (keys, model) = (dir.join("keys"), dir.join("tiny"));
    marill_model::tiny::write_tiny_model(&model, &Default::default()).unwrap();
    let (k, m) = (keys.to_str().unwrap(), model.to_str().unwrap());
    assert!(marill(&["keys", "generate", "--out", k])
        .status()
        .unwrap()
        .success());

    let (tansu, brokers) = start_tansu();
    let mut procs = Procs(vec![tansu]);
    let log = |name: &str| std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let ep = || format!("tcp://127.0.0.1:{}", free_port());
    let (dp, dh, peer, cp, ch) = (ep(), ep(), ep(), ep(), ep());
    // the dealer from a YAML file, the provider from a TOML file with one flag on top, the
    // helper from environment variables: the three configuration layers on real processes
    let dealer_yaml = dir.join("dealer.yaml");
    std::fs::write(
        &dealer_yaml,
        format!("keys: {k}\nprovider_endpoint: {dp}\nhelper_endpoint: {dh}\nidle_timeout_s: 2\n"),
    )
    .unwrap();
    procs.0.push(
        marill(&["dealer", "--config", dealer_yaml.to_str().unwrap()])
            .stderr(log("dealer"))
            .spawn()
            .unwrap(),
    );
    let provider_toml = dir.join("provider.toml");
    std::fs::write(
        &provider_toml,
        format!(
            "role = \"provider\"\nkeys = \"{k}\"\nmodel = \"{m}\"\ncontrol_endpoint = \"{cp}\"\n\
             peer_endpoint = \"{peer}\"\ndealer_endpoint = \"{dp}\"\nidle_timeout_s = 600\n"
        ),
    )
    .unwrap();
    procs.0.push(
        marill(&["worker", "--config", provider_toml.to_str().unwrap()])
            .args(["--idle-timeout-s", "2"])
            .stderr(log("provider"))
            .spawn()
            .unwrap(),
    );
    let mut helper = marill(&["worker"]);
    for (key, v) in [
        ("ROLE", "helper"),
        ("KEYS", k),
        ("MODEL", m),
        ("CONTROL_ENDPOINT", &ch),
        ("PEER_ENDPOINT", &peer),
        ("DEALER_ENDPOINT", &dh),
        ("IDLE_TIMEOUT_S", "2"),
    ] {
        helper.env(format!("MARILL_WORKER_{key}"), v);
    }
    procs.0.push(helper.stderr(log("helper")).spawn().unwrap());
    let fast = [
        "--kafka-set",
        "session.timeout.ms=1000",
        "--kafka-set",
        "heartbeat.interval.ms=300",
    ];
    procs.0.push(
        marill(&["coordinator", "--brokers", &brokers, "--keys", k])
            .args(["--pair", &format!("{cp},{ch}")])
            .args(fast)
            .stderr(log("coordinator"))
            .spawn()
            .unwrap(),
    );

    // idle for several timeouts: nobody may give up
    std::thread::sleep(Duration::from_secs(8));
    for (i, c) in procs.0.iter_mut().enumerate() {
        assert!(
            c.try_wait().unwrap().is_none(),
            "process {i} exited while idle (logs in {})",
            dir.display()
        );
    }

    let out = marill(&["client", "generate", "--brokers", &brokers, "--keys", k])
        .args([
            "--model",
            m,
            "--prompt",
            "an idle cluster",
            "--max-new-tokens",
            "3",
        ])
        .args(["--check", "--timeout-s", "120"])
        .args(fast)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "generation failed:\n{stderr}");
    assert_agrees(&stderr, 0.05);
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_configuration_stops_a_worker_at_start_naming_the_key() {
    let dir = temp("badconfig");
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("w.toml");
    for (text, env, expect) in [
        (
            "role = \"provider\"\nmax_sequence = 9\n",
            None,
            "unknown key `max_sequence`",
        ),
        ("role = \"custodian\"\n", None, "`role`"),
        (
            "role = \"helper\"\n",
            Some(("MARILL_WORKER_MAX_SEQ", "many")),
            "MARILL_WORKER_MAX_SEQ",
        ),
    ] {
        std::fs::write(&f, text).unwrap();
        let mut c = marill(&["worker", "--config", f.to_str().unwrap()]);
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}: started anyway");
        assert!(stderr.contains(expect), "{text}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
