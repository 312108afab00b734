//! Steps that reach one worker of a pair and not the other never mix two sessions' shares.
//! The test plays the coordinator itself over real CURVE control links to a real provider and
//! helper (separate processes, with their dealer): a step the coordinator once queued for a
//! worker that then restarted reaches only that worker, and so the two ends of a lane would
//! pair different sessions' messages.
//!
//! - A later step of a session that is not open on its lane is refused by each worker by
//!   itself, without touching the lane, and the lane then serves the next session.
//! - A first step that only the provider got leaves the provider waiting on the lane. The
//!   next session's first step, sent to both, then meets a different step at the two ends:
//!   the step agreement opens the steps' tags and sees it. Both workers fail the step saying
//!   the lane is out of step, and both exit for their supervisors. Before the tags, the
//!   agreement paired the two sessions' flags, and the pair ran the 2PC on two sessions'
//!   shares, which gave a wrong answer or an error deep inside a protocol.

mod common;

use common::TestCluster;
use marill_mpc::FixedPoint;
use marill_proto::job::{StepShare, SESSION_SECRET_LEN};
use marill_proto::ControlMessage;
use marill_transport::seal::seal;
use marill_transport::{Binding, KeyPair, Link, LinkConfig, Role, SealKeyPair};
use std::time::{Duration, Instant};

const PARTIES: [&str; 2] = ["provider", "helper"];

/// The coordinator's control links to pair 0's provider and helper.
fn control_links(c: &TestCluster) -> [Link; 2] {
    let own = KeyPair::load(&c.keys, "coordinator").unwrap();
    let (cp, ch) = &c.control[0];
    [(cp, "provider"), (ch, "helper")].map(|(ep, name)| {
        let mut cfg = LinkConfig::new(name);
        cfg.timeout = Duration::from_secs(60);
        let server_public = KeyPair::load_public(&c.keys, name).unwrap();
        Link::open(
            Role::Client {
                endpoint: ep.clone(),
                server_public,
            },
            &own,
            cfg,
        )
        .unwrap()
    })
}

fn send(l: &Link, m: &ControlMessage) {
    l.send(&marill_proto::encode(m)).unwrap();
}

fn next(l: &Link) -> ControlMessage {
    marill_proto::decode(&l.recv().unwrap()).unwrap()
}

/// Both workers' hellos: (first layer, d_model).
fn hello(links: &[Link; 2]) -> (usize, usize) {
    let mut shape = None;
    for l in links {
        send(l, &ControlMessage::Probe);
        match next(l) {
            ControlMessage::Ready {
                first_layer,
                d_model,
                ..
            } => shape = Some((first_layer, d_model)),
            m => panic!("{}", marill_proto::describe(&m)),
        }
    }
    shape.unwrap()
}

/// Session `session`'s step `step` on lane 0 for worker `party` (0 provider, 1 helper): one
/// row of a small hidden state, shared as (x, 0), sealed to the worker's trust domain.
fn step(
    c: &TestCluster,
    shape: (usize, usize),
    session: &str,
    step: u32,
    party: usize,
) -> ControlMessage {
    let (first_layer, d) = shape;
    let fx = FixedPoint::default();
    let x: Vec<f64> = (0..d).map(|i| 0.25 * ((i % 7) as f64 - 3.0)).collect();
    let share = match party {
        0 => fx.encode_slice(&x).unwrap(),
        _ => vec![0; d],
    };
    let job_id = format!("{session}-{step}");
    let reply_key = SealKeyPair::generate().public.0;
    let binding = Binding {
        job_id: &job_id,
        session,
        step,
        party: PARTIES[party],
        direction: "in",
        reply_key: &reply_key,
    };
    let domain = SealKeyPair::load_public(&c.keys, PARTIES[party]).unwrap();
    let share = StepShare {
        secret: [1; SESSION_SECRET_LEN],
        values: share,
    };
    let share = seal(&domain, &binding, &share.to_bytes()).unwrap();
    ControlMessage::SessionStep {
        session: session.into(),
        lane: 0,
        job_id,
        step,
        n_public: first_layer,
        reply_key,
        out_rows: 1,
        share,
    }
}

/// The step's end at one worker: Ok(()) for an output, Err(reason) for a failure.
fn outcome(l: &Link) -> Result<(), String> {
    match next(l) {
        ControlMessage::SessionOutput { .. } => Ok(()),
        ControlMessage::SessionFailed { reason, .. } => Err(reason),
        m => panic!("{}", marill_proto::describe(&m)),
    }
}

#[test]
fn a_step_only_one_worker_got_never_mixes_two_sessions() {
    let mut c = TestCluster::start_with("out-of-step", 1, &["--idle-timeout-s", "30"]);
    let logs = c.logs();
    let links = control_links(&c);
    let shape = hello(&links);

    // a later step of a session not open on the lane: refused at each end by itself
    for (l, p) in links.iter().zip(0..) {
        send(l, &step(&c, shape, "s-never-opened", 3, p));
    }
    for l in &links {
        let why = outcome(l).unwrap_err();
        assert!(why.contains("no such session is open on lane 0"), "{why}");
    }
    // and the lane serves the next session at both ends
    for (l, p) in links.iter().zip(0..) {
        send(l, &step(&c, shape, "s-good", 0, p));
    }
    for l in &links {
        outcome(l).unwrap_or_else(|e| panic!("{e} ({logs})"));
    }

    // a first step only the provider got, then the next session's first step at both
    send(&links[0], &step(&c, shape, "s-stale", 0, 0));
    std::thread::sleep(Duration::from_millis(300));
    for (l, p) in links.iter().zip(0..) {
        send(l, &step(&c, shape, "s-next", 0, p));
    }
    // each worker fails one step: the provider its stale one, the helper the next
    let mut reasons = Vec::new();
    for l in &links {
        match next(l) {
            ControlMessage::SessionFailed {
                session, reason, ..
            } => reasons.push((session, reason)),
            ControlMessage::SessionOutput { session, .. } => {
                panic!("{session} gave an output: two sessions' shares were mixed ({logs})")
            }
            m => panic!("{}", marill_proto::describe(&m)),
        }
    }
    assert!(
        reasons.iter().all(|(_, r)| r.contains("out of step")),
        "{reasons:?} ({logs})"
    );
    // both workers exit for their supervisors, saying why
    for (role, name) in [(0, "provider"), (1, "helper")] {
        let start = Instant::now();
        c.wait_exit(0, role, 30);
        let text = c.log_text(&format!("{name}-0"));
        assert!(text.contains("the lane is out of step"), "{name}: {text}");
        eprintln!("the {name} exited {:?} after", start.elapsed());
    }
    let _ = std::fs::remove_dir_all(&c.dir);
}
