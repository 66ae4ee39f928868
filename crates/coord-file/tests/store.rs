//! The directory store through its library API: compensation under injected
//! write failures, the replaceable policy, other tools' records, and a
//! property test of random operation sequences against a model.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use coord_core::{
    Claim, ClaimRequest, CoordError, ErrorKind, ExclusivePerWorkType, Filter, Priority, Status,
    Store, Update,
};
use coord_file::{CLAIMS_FILE, FileStore, FileStoreOptions};
use proptest::prelude::*;
use reactor_file::{AtomicWriter, WriteStage};

fn failing_once_at(stage: WriteStage, kind: io::ErrorKind, times: u32) -> AtomicWriter {
    let left = Arc::new(AtomicU32::new(times));
    AtomicWriter::with_faults(Arc::new(move |_: &Path, s: WriteStage| {
        if s == stage && left.load(Ordering::SeqCst) > 0 {
            left.fetch_sub(1, Ordering::SeqCst);
            return Err(io::Error::new(kind, format!("injected failure at {s:?}")));
        }
        Ok(())
    }))
}

fn store_with(dir: &Path, writer: AtomicWriter) -> FileStore {
    FileStore::with_options(
        dir,
        FileStoreOptions {
            writer,
            ..FileStoreOptions::default()
        },
    )
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn a_failed_write_at_any_stage_leaves_the_claims_file_byte_for_byte() {
    for stage in WriteStage::ALL {
        let dir = tempfile::tempdir().unwrap();
        let first = FileStore::new(dir.path())
            .claim(&ClaimRequest::new("agent_a", "build"))
            .unwrap();
        let before = fs::read(dir.path().join(CLAIMS_FILE)).unwrap();

        let store = store_with(dir.path(), failing_once_at(stage, io::ErrorKind::Other, 1));
        let err = store
            .claim(&ClaimRequest::new("agent_b", "build"))
            .unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::AtomicWriteFailed,
            "stage {stage:?}: {err}"
        );
        assert_eq!(
            fs::read(dir.path().join(CLAIMS_FILE)).unwrap(),
            before,
            "stage {stage:?}"
        );
        assert_eq!(
            dir_names(dir.path()),
            ["coord.lock", CLAIMS_FILE],
            "stage {stage:?}: no temp file left"
        );

        let err = store_with(dir.path(), failing_once_at(stage, io::ErrorKind::Other, 1))
            .update(&first.work_item_id, &Update::Complete { result: None })
            .unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::AtomicWriteFailed,
            "stage {stage:?}: {err}"
        );
        assert_eq!(
            fs::read(dir.path().join(CLAIMS_FILE)).unwrap(),
            before,
            "stage {stage:?}"
        );

        // The store is usable again at once.
        store.claim(&ClaimRequest::new("agent_b", "build")).unwrap();
        assert_eq!(store.list(&Filter::default()).unwrap().len(), 2);
    }
}

#[test]
fn a_first_claim_whose_write_fails_leaves_no_claims_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(
        dir.path(),
        failing_once_at(WriteStage::SyncDir, io::ErrorKind::Other, 1),
    );
    store.claim(&ClaimRequest::new("a", "build")).unwrap_err();
    assert_eq!(dir_names(dir.path()), ["coord.lock"]);
}

#[test]
fn a_transient_write_error_is_retried_by_the_compensation() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(
        dir.path(),
        failing_once_at(WriteStage::Rename, io::ErrorKind::Interrupted, 1),
    );
    let claim = store.claim(&ClaimRequest::new("a", "build")).unwrap();
    assert_eq!(store.get(&claim.work_item_id).unwrap(), claim);
}

#[test]
fn a_restore_that_fails_is_reported_not_swallowed() {
    let dir = tempfile::tempdir().unwrap();
    FileStore::new(dir.path())
        .claim(&ClaimRequest::new("a", "build"))
        .unwrap();
    let store = store_with(
        dir.path(),
        failing_once_at(WriteStage::SyncDir, io::ErrorKind::Other, u32::MAX),
    );
    let err = store.claim(&ClaimRequest::new("b", "build")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AtomicWriteFailed);
    assert!(err.to_string().contains("cannot put back"), "{err}");
}

#[test]
fn the_conflict_policy_is_replaceable() {
    let dir = tempfile::tempdir().unwrap();
    let strict = FileStore::with_options(
        dir.path(),
        FileStoreOptions {
            policy: Arc::new(ExclusivePerWorkType),
            ..FileStoreOptions::default()
        },
    );
    let low = ClaimRequest::new("a", "docs").priority(Priority::Low);
    let held = strict.claim(&low).unwrap();
    match strict.claim(&low).unwrap_err() {
        CoordError::Conflict {
            conflicting_work_item_id,
            ..
        } => assert_eq!(conflicting_work_item_id, held.work_item_id),
        other => panic!("expected a conflict, got {other}"),
    }
    // The default policy lets low work run side by side.
    FileStore::new(dir.path()).claim(&low).unwrap();
}

const LEGACY: &str = r#"[
  {
    "work_item_id": "work_1750007870129746333",
    "agent_id": "agent_1750007870129748000",
    "reactor_id": "reactor_7",
    "work_type": "performance_optimization",
    "description": "written by the shell helper",
    "priority": "high",
    "team": "platform",
    "claimed_at": "2024-12-15T15:17:50Z",
    "estimated_duration": "30m",
    "status": "active",
    "telemetry": {"trace_id": "4bf92f35", "operation": "claim"}
  }
]
"#;

#[test]
fn records_of_the_older_tools_keep_their_fields_and_their_active_status_counts() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(CLAIMS_FILE), LEGACY).unwrap();
    let store = FileStore::new(dir.path());

    let err = store
        .claim(&ClaimRequest::new("me", "performance_optimization").priority(Priority::Critical))
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Conflict,
        "`active` counts as in progress"
    );

    store
        .claim(&ClaimRequest::new("me", "performance_optimization"))
        .unwrap();
    let text = fs::read_to_string(dir.path().join(CLAIMS_FILE)).unwrap();
    let legacy_record = &LEGACY[LEGACY.find('{').unwrap()..=LEGACY.rfind('}').unwrap()];
    assert!(
        text.contains(legacy_record),
        "the legacy record keeps every byte:\n{text}"
    );

    let old = store.get("work_1750007870129746333").unwrap();
    assert_eq!(old.status, Status::InProgress);
    assert_eq!(old.extra["team"], "platform");
    assert_eq!(old.coordination_id, None);

    store
        .update(
            "work_1750007870129746333",
            &Update::Progress { percent: 50 },
        )
        .unwrap();
    let records: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.path().join(CLAIMS_FILE)).unwrap()).unwrap();
    let legacy = &records[0];
    assert_eq!(
        legacy["status"], "active",
        "a progress update keeps the old spelling"
    );
    assert_eq!(legacy["telemetry"]["trace_id"], "4bf92f35");
    assert_eq!(legacy["reactor_id"], "reactor_7");
    assert_eq!(legacy["progress"], 50);
}

#[test]
fn a_corrupt_claims_file_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(CLAIMS_FILE);
    let garbage = b"[{\"work_item_id\": \"work_1\", \"agent_id\": ";
    fs::write(&path, garbage).unwrap();
    let store = FileStore::new(dir.path());
    assert_eq!(
        store
            .claim(&ClaimRequest::new("a", "t"))
            .unwrap_err()
            .kind(),
        ErrorKind::ValidationFailed
    );
    assert_eq!(
        store
            .update("work_1", &Update::Complete { result: None })
            .unwrap_err()
            .kind(),
        ErrorKind::ValidationFailed
    );
    assert_eq!(fs::read(&path).unwrap(), garbage);
}

#[test]
fn stale_temp_files_of_a_killed_writer_are_removed_by_the_next_writer() {
    let dir = tempfile::tempdir().unwrap();
    let stale = dir
        .path()
        .join(format!(".{CLAIMS_FILE}.coord-tmp.99999.1.0"));
    fs::write(&stale, "half a file").unwrap();
    FileStore::new(dir.path())
        .claim(&ClaimRequest::new("a", "t"))
        .unwrap();
    assert!(!stale.exists());
}

// ---------------------------------------------------------------------------
// Random sequences of operations, checked against a model.

#[derive(Debug, Clone)]
enum Op {
    Claim {
        agent: u8,
        work_type: u8,
        priority: Priority,
    },
    Progress {
        item: usize,
        percent: i64,
    },
    Complete {
        item: usize,
    },
    Fail {
        item: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let priority = prop::sample::select(Priority::ALL.to_vec());
    prop_oneof![
        3 => (0u8..3, 0u8..2, priority).prop_map(|(agent, work_type, priority)| Op::Claim { agent, work_type, priority }),
        2 => (any::<usize>(), -5i64..110).prop_map(|(item, percent)| Op::Progress { item, percent }),
        1 => any::<usize>().prop_map(|item| Op::Complete { item }),
        1 => any::<usize>().prop_map(|item| Op::Fail { item }),
    ]
}

/// What the model expects of each claim: its status and priority.
#[derive(Debug, Clone)]
struct Expected {
    work_type: String,
    priority: Priority,
    status: Status,
    progress: Option<u8>,
}

fn check_invariants(dir: &Path, store: &FileStore, model: &HashMap<String, Expected>) {
    let bytes = fs::read(dir.join(CLAIMS_FILE)).unwrap_or_else(|_| b"[]".to_vec());
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).expect("the file is always valid JSON");
    assert!(json.is_array());
    let claims: Vec<Claim> = store.list(&Filter::default()).unwrap();
    assert_eq!(
        claims.len(),
        model.len(),
        "every acknowledged claim is stored, once"
    );
    let mut live_exclusive: HashMap<&str, usize> = HashMap::new();
    for c in &claims {
        let e = &model[&c.work_item_id];
        assert_eq!(
            (c.status, c.priority, c.progress, &c.work_type),
            (e.status, e.priority, e.progress, &e.work_type)
        );
        if c.status == Status::InProgress && c.priority >= Priority::High {
            *live_exclusive.entry(&c.work_type).or_default() += 1;
        }
    }
    assert!(
        live_exclusive.values().all(|n| *n <= 1),
        "at most one live exclusive claim per work type"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_the_file_valid_and_the_conflict_rule_true(ops in prop::collection::vec(op(), 1..24)) {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let mut model: HashMap<String, Expected> = HashMap::new();
        let mut ids: Vec<String> = Vec::new();
        let pick = |ids: &[String], item: usize| {
            if ids.is_empty() || item.is_multiple_of(5) { "work_missing".to_owned() } else { ids[item % ids.len()].clone() }
        };
        for op in ops {
            match op {
                Op::Claim { agent, work_type, priority } => {
                    let work_type = format!("type_{work_type}");
                    let blocked = priority >= Priority::High && model.values().any(|e| {
                        e.work_type == work_type && e.status == Status::InProgress && e.priority >= Priority::High
                    });
                    let result = store.claim(&ClaimRequest::new(format!("agent_{agent}"), work_type.clone()).priority(priority));
                    match result {
                        Ok(c) => {
                            prop_assert!(!blocked, "claimed despite a live exclusive claim");
                            prop_assert!(!model.contains_key(&c.work_item_id), "ids are unique");
                            ids.push(c.work_item_id.clone());
                            model.insert(c.work_item_id, Expected { work_type, priority, status: Status::InProgress, progress: None });
                        }
                        Err(e) => {
                            prop_assert!(blocked, "refused without a conflict: {e}");
                            prop_assert_eq!(e.kind(), ErrorKind::Conflict);
                        }
                    }
                }
                Op::Progress { item, percent } => {
                    let id = pick(&ids, item);
                    let result = store.update(&id, &Update::Progress { percent });
                    match model.get_mut(&id) {
                        None => prop_assert_eq!(result.unwrap_err().kind(), ErrorKind::NotFound),
                        Some(e) if e.status == Status::InProgress && (0..=100).contains(&percent) => {
                            prop_assert_eq!(result.unwrap().progress, Some(percent as u8));
                            e.progress = Some(percent as u8);
                        }
                        Some(_) => prop_assert_eq!(result.unwrap_err().kind(), ErrorKind::ValidationFailed),
                    }
                }
                Op::Complete { item } | Op::Fail { item } => {
                    let id = pick(&ids, item);
                    let (update, status) = if matches!(op, Op::Complete { .. }) {
                        (Update::Complete { result: Some("done".into()) }, Status::Completed)
                    } else {
                        (Update::Fail { reason: Some("broke".into()) }, Status::Failed)
                    };
                    let result = store.update(&id, &update);
                    match model.get_mut(&id) {
                        None => prop_assert_eq!(result.unwrap_err().kind(), ErrorKind::NotFound),
                        Some(e) if e.status == Status::InProgress => {
                            prop_assert_eq!(result.unwrap().status, status);
                            e.status = status;
                            if status == Status::Completed {
                                e.progress = Some(100);
                            }
                        }
                        Some(_) => prop_assert_eq!(result.unwrap_err().kind(), ErrorKind::ValidationFailed),
                    }
                }
            }
            check_invariants(dir.path(), &store, &model);
        }
    }
}
