//! What only the coordination directory does (the state file, automatic
//! compaction, the older tools' records, the archive's lines), through the
//! library with a clock the test moves; and the conformance suite's property
//! test run with compaction on. What every store does is in the conformance
//! suite (`tests/conformance.rs`).

use std::fs;
use std::path::Path;
use std::time::Duration;

use coord_core::{ClaimRequest, ErrorKind, Filter, Priority, Status, Store};
use coord_file::{CLAIMS_FILE, FileStore, STATE_FILE};
use coord_testkit::conformance::complete;

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
    let (dir, _clock, store) = setup();
    let mut last = None;
    for work_type in ["x", "y"] {
        let c = store.claim(&high("a", work_type)).unwrap();
        complete(&store, &c.work_item_id, "a");
        last = c.fence;
    }
    // Every record leaves the claims file, and with them their fences...
    assert_eq!(store.cleanup("a", Duration::ZERO).unwrap().len(), 2);
    assert_eq!(store.list(&Filter::default()).unwrap(), vec![]);
    assert!(!dir.path().join(coord_file::CLEANUP_INTENT).exists());
    // ...but the state file keeps the highest, so the next one is above it.
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join(STATE_FILE)).unwrap()).unwrap();
    assert_eq!(state["fence"], last.unwrap());
    let again = store.claim(&high("a", "x")).unwrap();
    assert_eq!(again.fence, Some(last.unwrap() + 1));
    assert_eq!(archive_ids(dir.path()).len(), 2);
}

#[test]
fn automatic_compaction_keeps_the_claims_file_small() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::new("2026-01-01T00:00:00Z");
    let store = FileStore::with_options(
        dir.path(),
        at_time(clock.clone()).compact_at(10).compact_keep(3),
    );
    let mut all = Vec::new();
    for _ in 0..40 {
        clock.advance(Duration::from_millis(10));
        let c = store.claim(&ClaimRequest::new("a", "t")).unwrap();
        complete(&store, &c.work_item_id, "a");
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

#[test]
fn cleanup_appends_after_an_archived_item_of_any_size() {
    let (dir, _clock, store) = setup();
    for size in [200_000, 10] {
        let c = store
            .claim(&ClaimRequest::new("a", "t").description("x".repeat(size)))
            .unwrap();
        complete(&store, &c.work_item_id, "a");
        assert_eq!(
            store.cleanup("a", Duration::ZERO).unwrap().len(),
            1,
            "description of {size} bytes"
        );
    }
    assert_eq!(archive_ids(dir.path()).len(), 2);
}

/// The conformance suite's property test, with automatic compaction moving
/// items to the archive every few changes.
#[test]
fn random_operations_keep_every_invariant_while_compaction_runs() {
    coord_testkit::conformance::random_operations_keep_every_invariant(|| {
        support::FileHarness::new(|options| options.compact_at(6).compact_keep(2))
    });
}
