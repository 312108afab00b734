//! Property tests: for any sequence of operations the scheduler never over-commits memory or
//! session limits, pairs a provider with a helper of another trust domain, keeps sessions off
//! lost workers, keeps its indexes consistent, returns to zero when everything is released, and
//! `solve` is deterministic and keeps valid previous assignments.

use marill_scheduler::{
    solve, Health, Placement, Problem, Rejection, Role, Scheduler, SchedulerError, SessionRequest,
    WorkerSpec,
};
use proptest::prelude::*;
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
enum Op {
    Place { model: u32, kv: u64 },
    Release(usize),
    Resize(usize, u64),
    Health(u32, u8),
    Capacity(u32, u64, u32),
}

fn workers(n: u32) -> Vec<WorkerSpec> {
    (0..n)
        .map(|i| WorkerSpec {
            id: i,
            role: if i % 2 == 0 {
                Role::Provider
            } else {
                Role::Helper
            },
            domain: i % 3,
            mem_limit: 1000 + 300 * (i as u64 % 4),
            max_sessions: 1 + i % 4,
            health: Health::Healthy,
        })
        .collect()
}

fn models() -> BTreeMap<u32, u64> {
    (0..3).map(|m| (m, 100 + 150 * m as u64)).collect()
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u32..4, 1u64..400).prop_map(|(model, kv)| Op::Place { model, kv }),
        2 => (0usize..64).prop_map(Op::Release),
        1 => (0usize..64, 1u64..500).prop_map(|(i, kv)| Op::Resize(i, kv)),
        1 => (0u32..10, 0u8..3).prop_map(|(w, h)| Op::Health(w, h)),
        1 => (0u32..11, 0u64..2000, 0u32..5).prop_map(|(w, m, n)| Op::Capacity(w, m, n)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn invariants_hold_under_any_operations(ops in proptest::collection::vec(op(), 1..120)) {
        let mut s = Scheduler::new(&workers(10), &models()).unwrap();
        let mut live: Vec<u64> = Vec::new();
        let mut next = 0u64;
        for o in ops {
            match o {
                Op::Place { model, kv } => {
                    next += 1;
                    match s.place(&SessionRequest { id: next, model, kv_bytes: kv, pin: None }) {
                        Ok(a) => {
                            prop_assert!(a.provider % 2 == 0 && a.helper % 2 == 1);
                            live.push(next);
                        }
                        Err(Rejection::NoCapacity { .. }) => {}
                        Err(Rejection::UnknownModel(m)) => prop_assert_eq!(m, 3),
                        Err(e) => prop_assert!(false, "unexpected {e}"),
                    }
                }
                Op::Release(i) if !live.is_empty() => {
                    let id = live.swap_remove(i % live.len());
                    s.release(id).unwrap();
                }
                Op::Resize(i, kv) if !live.is_empty() => {
                    let _ = s.update_usage(live[i % live.len()], kv);
                }
                Op::Health(w, h) => {
                    let h = [Health::Healthy, Health::Draining, Health::Lost][h as usize];
                    let gone = s.set_health(w, h).unwrap();
                    live.retain(|id| !gone.contains(id));
                    for id in &gone {
                        prop_assert!(s.assignment(*id).is_none());
                    }
                }
                Op::Capacity(w, mem, n) => {
                    // an announced capacity: taken when the worker's sessions fit in it,
                    // refused (and nothing changes) otherwise
                    let before = s.usage(w);
                    match s.set_capacity(w, mem, n) {
                        Ok(()) => {}
                        Err(SchedulerError::BelowUse(id)) => {
                            prop_assert_eq!(id, w);
                            let (used, sessions) = before.unwrap();
                            prop_assert!(used > mem || sessions > n);
                        }
                        Err(SchedulerError::UnknownWorker(id)) => prop_assert_eq!(id, 10),
                        Err(e) => prop_assert!(false, "unexpected {e}"),
                    }
                }
                _ => {}
            }
            prop_assert_eq!(s.check_invariants(), Ok(()));
            prop_assert_eq!(s.session_count(), live.len());
        }
        for id in live {
            s.release(id).unwrap();
        }
        for w in 0..10 {
            prop_assert_eq!(s.usage(w), Some((0, 0)));
        }
    }

    #[test]
    fn solve_is_deterministic_and_sticky(n in 1usize..60, lost in 0u32..10) {
        let sessions: Vec<SessionRequest> = (0..n as u64)
            .map(|id| SessionRequest { id, model: (id % 3) as u32, kv_bytes: 50 + id % 200, pin: None })
            .collect();
        let p = Problem { workers: workers(10), models: models(), sessions };
        let first = solve(&p, &Placement::default()).unwrap();
        prop_assert_eq!(&solve(&p, &Placement::default()).unwrap(), &first);
        // same problem again: every assignment is kept
        let again = solve(&p, &first).unwrap();
        prop_assert_eq!(&again.assignments, &first.assignments);
        // one worker lost: the others' sessions keep their pairs, none lands on the lost one
        let mut p2 = p.clone();
        p2.workers[lost as usize].health = Health::Lost;
        let after = solve(&p2, &first).unwrap();
        for (id, a) in &after.assignments {
            prop_assert!(a.provider != lost && a.helper != lost);
            if let Some(b) = first.assignments.get(id) {
                if b.provider != lost && b.helper != lost {
                    prop_assert_eq!(a, b);
                }
            }
        }
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let mut w = workers(4);
    w[1].id = 0;
    assert!(Scheduler::new(&w, &models()).is_err());
    let mut s = Scheduler::new(&workers(4), &models()).unwrap();
    assert!(matches!(s.release(9), Err(Rejection::UnknownSession(9))));
    assert!(s.set_health(99, Health::Lost).is_err());
    let r = SessionRequest {
        id: 1,
        model: 0,
        kv_bytes: 10,
        pin: None,
    };
    s.place(&r).unwrap();
    assert!(matches!(s.place(&r), Err(Rejection::Duplicate(1))));
    let pinned = SessionRequest {
        id: 2,
        model: 0,
        kv_bytes: 10,
        pin: Some((0, 2)),
    };
    assert!(matches!(s.place(&pinned), Err(Rejection::PinUnusable(_))));
    assert!(matches!(
        s.place(&SessionRequest {
            id: 3,
            model: 0,
            kv_bytes: 1 << 40,
            pin: None
        }),
        Err(Rejection::NoCapacity {
            role: Role::Provider
        })
    ));
}

#[test]
fn weights_are_charged_once_per_worker_and_model() {
    let w = vec![
        WorkerSpec {
            id: 0,
            role: Role::Provider,
            domain: 0,
            mem_limit: 1000,
            max_sessions: 8,
            health: Health::Healthy,
        },
        WorkerSpec {
            id: 1,
            role: Role::Helper,
            domain: 1,
            mem_limit: 1000,
            max_sessions: 8,
            health: Health::Healthy,
        },
    ];
    let mut s = Scheduler::new(&w, &models()).unwrap();
    for id in 0..3 {
        s.place(&SessionRequest {
            id,
            model: 0,
            kv_bytes: 10,
            pin: None,
        })
        .unwrap();
    }
    assert_eq!(s.usage(0), Some((100 + 30, 3)));
    for id in 0..3 {
        s.release(id).unwrap();
    }
    assert_eq!(s.usage(0), Some((0, 0)));
}
