//! What only the coordination directory does (the state file, automatic
//! compaction, the older tools' records, the archive's lines), through the
//! library with a clock the test moves; and a property test that random
//! operation sequences keep the store's invariants. What every store does
//! is in the conformance suite (`tests/conformance.rs`).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;
use std::time::Duration;

use coord_core::{
    Action, Actor, Claim, ClaimRequest, ErrorKind, EventKind, Filter, NextRequest, PostRequest,
    Priority, Status, Store,
};
use coord_file::{CLAIMS_FILE, FileStore, FileStoreOptions, STATE_FILE};
use proptest::prelude::*;

mod support;
use support::{Clock, at_time};

const MIN: Duration = Duration::from_secs(60);

fn setup() -> (tempfile::TempDir, Clock, FileStore) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::new("2026-01-01T00:00:00Z");
    let store = FileStore::with_options(dir.path(), at_time(clock.clone()));
    (dir, clock, store)
}

fn high(agent: &str, work_type: &str) -> ClaimRequest {
    ClaimRequest::new(agent, work_type)
        .priority(Priority::High)
        .lease(MIN)
}

fn archive_ids(dir: &Path) -> Vec<String> {
    FileStore::new(dir)
        .archived()
        .unwrap()
        .iter()
        .map(|v| v["work_item_id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn cleanup_records_the_fence_high_water_in_the_state_file() {
    let (dir, clock, store) = setup();
    let done = store.claim(&high("a", "x")).unwrap();
    store
        .act(
            &done.work_item_id,
            &Action::Complete { result: None },
            &Actor::new("a"),
        )
        .unwrap();
    let live = store
        .claim(&high("a", "y").lease(Duration::from_secs(7200)))
        .unwrap();
    clock.advance(Duration::from_secs(3600));
    let recent = store.claim(&high("a", "z")).unwrap();
    store
        .act(
            &recent.work_item_id,
            &Action::Fail {
                reason: None,
                requeue: false,
                retry_after: None,
            },
            &Actor::new("a"),
        )
        .unwrap();

    let moved = store.cleanup("a", Duration::from_secs(1800)).unwrap();
    assert_eq!(moved, std::slice::from_ref(&done.work_item_id));
    assert_eq!(
        archive_ids(dir.path()),
        std::slice::from_ref(&done.work_item_id)
    );
    let left: Vec<String> = store
        .list(&Filter::default())
        .unwrap()
        .into_iter()
        .map(|c| c.work_item_id)
        .collect();
    assert_eq!(
        left,
        [live.work_item_id.clone(), recent.work_item_id.clone()]
    );
    assert!(!dir.path().join(coord_file::CLEANUP_INTENT).exists());

    // Archive everything, then claim again: the fence still grows.
    store
        .act(
            &live.work_item_id,
            &Action::Complete { result: None },
            &Actor::new("a"),
        )
        .unwrap();
    store.cleanup("a", Duration::ZERO).unwrap();
    assert_eq!(store.list(&Filter::default()).unwrap(), vec![]);
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join(STATE_FILE)).unwrap()).unwrap();
    assert_eq!(state["fence"], recent.fence.unwrap());
    let again = store.claim(&high("a", "x")).unwrap();
    assert_eq!(again.fence, Some(recent.fence.unwrap() + 1));
}

#[test]
fn automatic_compaction_keeps_the_claims_file_small() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::new("2026-01-01T00:00:00Z");
    let store = FileStore::with_options(
        dir.path(),
        FileStoreOptions {
            compact_at: 10,
            compact_keep: 3,
            ..at_time(clock.clone())
        },
    );
    let mut all = Vec::new();
    for _ in 0..40 {
        clock.advance(Duration::from_millis(10));
        let c = store.claim(&ClaimRequest::new("a", "t")).unwrap();
        store
            .act(
                &c.work_item_id,
                &Action::Complete { result: None },
                &Actor::new("a"),
            )
            .unwrap();
        all.push(c.work_item_id);
        let in_file = store.list(&Filter::default()).unwrap().len();
        assert!(in_file <= 11, "{in_file} finished items in the claims file");
    }
    let in_file: Vec<String> = store
        .list(&Filter::default())
        .unwrap()
        .into_iter()
        .map(|c| c.work_item_id)
        .collect();
    let archived = archive_ids(dir.path());
    let mut both: Vec<String> = in_file.iter().chain(&archived).cloned().collect();
    both.sort();
    let mut expected = all.clone();
    expected.sort();
    assert_eq!(both, expected, "every item in exactly one place");
    assert_eq!(in_file, all[all.len() - in_file.len()..], "the newest stay");
}

#[test]
fn claims_of_the_older_tools_lapse_after_their_estimated_duration() {
    let (dir, clock, store) = setup();
    let legacy = r#"[{"work_item_id": "work_1", "agent_id": "agent_sh", "work_type": "lint", "priority": "high",
      "claimed_at": "2026-01-01T00:00:00Z", "estimated_duration": "10m", "status": "active"}]"#;
    fs::write(dir.path().join(CLAIMS_FILE), legacy).unwrap();
    assert_eq!(
        store.claim(&high("me", "lint")).unwrap_err().kind(),
        ErrorKind::Conflict
    );
    clock.advance(Duration::from_secs(601));
    store.claim(&high("me", "lint")).unwrap();
    assert_eq!(store.get("work_1").unwrap().status, Status::Expired);
}

// ---------------------------------------------------------------------------
// Random sequences of operations with a moving clock.

#[derive(Debug, Clone)]
enum Op {
    Claim {
        agent: u8,
        work_type: u8,
        priority: Priority,
        lease_s: u64,
    },
    Post {
        work_type: u8,
        priority: Priority,
        after_prev: bool,
    },
    Next {
        agent: u8,
        lease_s: u64,
    },
    Heartbeat {
        item: usize,
    },
    Progress {
        item: usize,
        percent: i64,
    },
    Complete {
        item: usize,
        force: bool,
    },
    Fail {
        item: usize,
        requeue: bool,
    },
    Release {
        item: usize,
    },
    Wait {
        s: u64,
    },
    Cleanup {
        older_than_s: u64,
    },
    Reap,
}

fn op() -> impl Strategy<Value = Op> {
    let priority = prop::sample::select(Priority::ALL.to_vec());
    prop_oneof![
        3 => (0u8..3, 0u8..2, priority.clone(), 1u64..120).prop_map(|(agent, work_type, priority, lease_s)| Op::Claim { agent, work_type, priority, lease_s }),
        3 => (0u8..2, priority, any::<bool>()).prop_map(|(work_type, priority, after_prev)| Op::Post { work_type, priority, after_prev }),
        3 => (0u8..3, 1u64..120).prop_map(|(agent, lease_s)| Op::Next { agent, lease_s }),
        1 => any::<usize>().prop_map(|item| Op::Heartbeat { item }),
        1 => (any::<usize>(), -5i64..110).prop_map(|(item, percent)| Op::Progress { item, percent }),
        2 => (any::<usize>(), prop::bool::weighted(0.1)).prop_map(|(item, force)| Op::Complete { item, force }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(item, requeue)| Op::Fail { item, requeue }),
        1 => any::<usize>().prop_map(|item| Op::Release { item }),
        2 => (1u64..90).prop_map(|s| Op::Wait { s }),
        1 => (0u64..200).prop_map(|older_than_s| Op::Cleanup { older_than_s }),
        1 => Just(Op::Reap),
    ]
}

/// Checks what must hold after every operation.
fn check(dir: &Path, store: &FileStore, clock: &Clock, created: &HashSet<String>) {
    let now = clock.now();
    let claims: Vec<Claim> = store.list(&Filter::default()).unwrap();
    let archived = archive_ids(dir);
    let in_claims: HashSet<String> = claims.iter().map(|c| c.work_item_id.clone()).collect();
    assert_eq!(
        in_claims.len(),
        claims.len(),
        "no id twice in the claims file"
    );
    let in_archive: HashSet<String> = archived.iter().cloned().collect();
    assert_eq!(
        in_archive.len(),
        archived.len(),
        "no id twice in the archive"
    );
    assert!(in_claims.is_disjoint(&in_archive), "no item in both files");
    let everywhere: HashSet<String> = in_claims.union(&in_archive).cloned().collect();
    assert_eq!(&everywhere, created, "every item in exactly one place");

    let mut exclusive: HashMap<&str, usize> = HashMap::new();
    let mut holders: HashMap<u64, &str> = HashMap::new();
    for c in &claims {
        if c.head().is_live(now) && c.priority >= Priority::High {
            *exclusive.entry(&c.work_type).or_default() += 1;
        }
        if c.status == Status::InProgress {
            let fence = c.fence.expect("an in-progress item has a fence");
            assert!(
                holders.insert(fence, &c.work_item_id).is_none(),
                "two items at fence {fence}"
            );
            assert!(c.agent_id.is_some(), "an in-progress item has an owner");
        }
        if c.status == Status::Pending {
            assert!(c.agent_id.is_none(), "a pending item has no owner");
        }
    }
    assert!(
        exclusive.values().all(|n| *n <= 1),
        "at most one live exclusive claim per work type: {exclusive:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_every_invariant(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::new("2026-01-01T00:00:00Z");
        let store = FileStore::with_options(dir.path(), FileStoreOptions { compact_at: 6, compact_keep: 2, ..at_time(clock.clone()) });
        let mut created: HashSet<String> = HashSet::new();
        let mut ids: Vec<String> = Vec::new();
        let mut last_fence = 0u64;
        let agent = |n: u8| format!("agent_{n}");
        for op in ops {
            let pick = |item: usize| if ids.is_empty() { "work_missing".to_owned() } else { ids[item % ids.len()].clone() };
            // Acts as whoever holds the item, so most actions can succeed.
            let owner = |id: &str| store.get(id).ok().and_then(|c| c.agent_id).unwrap_or_else(|| "agent_0".into());
            let result: Result<Option<Claim>, coord_core::CoordError> = match op {
                Op::Claim { agent: a, work_type, priority, lease_s } => store
                    .claim(&ClaimRequest::new(agent(a), format!("type_{work_type}")).priority(priority).lease(Duration::from_secs(lease_s)))
                    .map(Some),
                Op::Post { work_type, priority, after_prev } => {
                    let mut req = PostRequest::new("poster", format!("type_{work_type}")).priority(priority);
                    if after_prev && let Some(prev) = ids.last() {
                        req = req.after([prev.clone()]);
                    }
                    store.post(&req).map(Some)
                }
                Op::Next { agent: a, lease_s } => store.next(&NextRequest::new(agent(a)).lease(Duration::from_secs(lease_s))).map(Some),
                Op::Heartbeat { item } => { let id = pick(item); let o = owner(&id); store.act(&id, &Action::Heartbeat { lease: None }, &Actor::new(&o)).map(Some) }
                Op::Progress { item, percent } => { let id = pick(item); let o = owner(&id); store.act(&id, &Action::Progress { percent }, &Actor::new(&o)).map(Some) }
                Op::Complete { item, force } => {
                    let id = pick(item);
                    let o = if force { "intruder".to_owned() } else { owner(&id) };
                    store.act(&id, &Action::Complete { result: None }, &Actor::new(&o).force(force)).map(Some)
                }
                Op::Fail { item, requeue } => { let id = pick(item); let o = owner(&id); store.act(&id, &Action::Fail { reason: None, requeue, retry_after: None }, &Actor::new(&o)).map(Some) }
                Op::Release { item } => { let id = pick(item); let o = owner(&id); store.act(&id, &Action::Release, &Actor::new(&o)).map(Some) }
                Op::Wait { s } => { clock.advance(Duration::from_secs(s)); Ok(None) }
                Op::Cleanup { older_than_s } => store.cleanup("janitor", Duration::from_secs(older_than_s)).map(|_| None),
                Op::Reap => store.reap("janitor").map(|_| None),
            };
            match result {
                Ok(Some(c)) => {
                    if created.insert(c.work_item_id.clone()) {
                        ids.push(c.work_item_id.clone());
                    }
                    if matches!(op, Op::Claim { .. } | Op::Next { .. }) {
                        let fence = c.fence.unwrap();
                        prop_assert!(fence > last_fence, "fence {fence} after {last_fence}");
                        last_fence = fence;
                    }
                }
                Ok(None) => {}
                Err(e) => prop_assert!(
                    matches!(e.kind(), ErrorKind::Conflict | ErrorKind::NotFound | ErrorKind::ValidationFailed
                        | ErrorKind::LeaseExpired | ErrorKind::NotOwner | ErrorKind::NothingToTake),
                    "unexpected error kind: {e}"
                ),
            }
            check(dir.path(), &store, &clock, &created);
        }
        // The event log agrees: fences of acquisitions strictly increase.
        let fences: Vec<u64> = store.events(0).unwrap().events.iter()
            .filter(|e| e.event == EventKind::Claimed).filter_map(|e| e.fence).collect();
        prop_assert!(fences.windows(2).all(|w| w[0] < w[1]), "{fences:?}");
    }
}

#[test]
fn cleanup_appends_after_an_archived_item_of_any_size() {
    let (dir, _clock, store) = setup();
    for size in [200_000, 10] {
        let c = store
            .claim(&ClaimRequest::new("a", "t").description("x".repeat(size)))
            .unwrap();
        store
            .act(
                &c.work_item_id,
                &Action::Complete { result: None },
                &Actor::new("a"),
            )
            .unwrap();
        assert_eq!(
            store.cleanup("a", Duration::ZERO).unwrap().len(),
            1,
            "description of {size} bytes"
        );
    }
    assert_eq!(archive_ids(dir.path()).len(), 2);
}
