//! One worker pair runs several sessions at once, one per lane of its peer and dealer links:
//! a cluster of one pair whose workers serve 4 sessions at once (tansu, a dealer, a provider, a
//! helper and the coordinator as separate processes) serves 8 sessions submitted 4 at a time,
//! every one equal to plaintext; the provider's log shows sessions open on several lanes at
//! the same time, each lane holding one session at a time, and every session ended (its lane
//! freed by the coordinator's SessionEnd).

mod common;

use common::TestCluster;
use std::collections::HashMap;

/// `(opened or ended, session, lane)` from a worker's log lines.
fn events(log: &str) -> Vec<(bool, String, u32)> {
    log.lines()
        .filter_map(|l| {
            // "provider: session S opened on lane L" (a tracing line: after its timestamp,
            // level and span)
            let at = l.find("provider: session ")? + "provider: session ".len();
            let rest = &l[at..];
            let (session, rest) = rest.split_once(' ')?;
            let (opened, lane) = if let Some(x) = rest.strip_prefix("opened on lane ") {
                (true, x)
            } else {
                (false, rest.strip_prefix("ended on lane ")?)
            };
            Some((opened, session.to_string(), lane.trim().parse().ok()?))
        })
        .collect()
}

#[test]
fn one_pair_runs_several_sessions_at_once() {
    let mut c = TestCluster::start_with("lanes", 1, &["--sessions", "4"]);
    c.coordinator();
    c.serve_batch(8, 2, "eight sessions on one pair of 4 lanes");
    // the last sessions' ends reach the worker just after their results
    c.wait_log("provider-0", "ended on lane", 30);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let ev = events(&c.log_text("provider-0"));
    let mut on_lane: HashMap<u32, String> = HashMap::new();
    let (mut open, mut most, mut opened, mut ended) = (0usize, 0usize, 0, 0);
    for (is_open, session, lane) in &ev {
        if *is_open {
            let before = on_lane.insert(*lane, session.clone());
            assert!(
                before.is_none(),
                "lane {lane} opened {session} while holding {before:?}"
            );
            open += 1;
            opened += 1;
            most = most.max(open);
        } else {
            assert_eq!(on_lane.remove(lane).as_ref(), Some(session), "lane {lane}");
            open -= 1;
            ended += 1;
        }
    }
    assert_eq!(opened, 8, "{ev:?}");
    assert_eq!(ended, 8, "every session's lane freed: {ev:?}");
    assert!(most >= 2, "sessions never overlapped: {ev:?}");
    let lanes: std::collections::BTreeSet<u32> = ev.iter().map(|e| e.2).collect();
    assert!(
        lanes.len() >= 2 && lanes.iter().all(|l| *l < 4),
        "{lanes:?}"
    );
}
