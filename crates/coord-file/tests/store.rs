//! The directory store through its library API: compensation under injected
//! write failures, the replaceable policy, other tools' records.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use coord_core::{
    Action, Actor, ClaimRequest, CoordError, ErrorKind, ExclusivePerWorkType, Filter, Priority,
    Status, Store,
};
use coord_file::{CLAIMS_FILE, EVENT_LOG, FileStore, FileStoreOptions};
use coord_testkit::conformance::complete;

use reactor_file::{AtomicWriter, WriteStage};

mod support;
use support::{Clock, at_time};

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
    FileStore::with_options(dir, FileStoreOptions::default().writer(writer))
}

/// The names in `dir`, but the shell-tool lock's staging file a live store
/// keeps between changes.
fn dir_names(dir: &Path) -> Vec<String> {
    let staging = format!(".{CLAIMS_FILE}.lock.coord-tmp.{}.", std::process::id());
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| !name.starts_with(&staging))
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
        let events_before = fs::read(dir.path().join(EVENT_LOG)).unwrap();

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
            ["agent_status.json", "coord.lock", EVENT_LOG, CLAIMS_FILE],
            "stage {stage:?}: no temp file left"
        );
        assert_eq!(
            fs::read(dir.path().join(EVENT_LOG)).unwrap(),
            events_before,
            "no event for a failed change"
        );

        let err = store_with(dir.path(), failing_once_at(stage, io::ErrorKind::Other, 1))
            .act(
                &first.work_item_id,
                &Action::Complete { result: None },
                &Actor::new("agent_a"),
            )
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
    assert_eq!(
        dir_names(dir.path()),
        ["coord.lock"],
        "no claims file and no event"
    );
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
        FileStoreOptions::default().policy(Arc::new(ExclusivePerWorkType)),
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
    // Five minutes into the legacy record's 30-minute estimated lease.
    let store = FileStore::with_options(dir.path(), at_time(Clock::new("2024-12-15T15:22:50Z")));

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
    assert_eq!(old.extra["estimated_duration"], "30m");
    assert_eq!(old.coordination_id, None);

    store
        .act(
            "work_1750007870129746333",
            &Action::Progress { percent: 50 },
            &Actor::new("agent_1750007870129748000"),
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
            .act(
                "work_1",
                &Action::Complete { result: None },
                &Actor::new("a")
            )
            .unwrap_err()
            .kind(),
        ErrorKind::ValidationFailed
    );
    assert_eq!(fs::read(&path).unwrap(), garbage);
}

#[test]
fn a_record_with_a_mistyped_field_is_refused_not_carried_into_the_next_write() {
    // Found by the fuzz test: `max_attempts` is not a field decisions read,
    // but `list` could not show this record, so no change may keep it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(CLAIMS_FILE);
    let bad = "[\n  {\"work_item_id\":\"work_1\",\"work_type\":\"t\",\"priority\":\"low\",\"status\":\"pending\",\"max_attempts\":3.0}\n]\n";
    fs::write(&path, bad).unwrap();
    let store = FileStore::new(dir.path());
    let err = store.claim(&ClaimRequest::new("a", "t")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValidationFailed);
    assert!(err.to_string().contains("record 0"), "{err}");
    assert_eq!(
        store.list(&Filter::default()).unwrap_err().kind(),
        ErrorKind::ValidationFailed
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), bad);
}

#[test]
fn stale_temp_files_of_a_killed_writer_are_removed_by_the_next_writer() {
    let dir = tempfile::tempdir().unwrap();
    let stale = [
        format!(".{CLAIMS_FILE}.coord-tmp.99999.1.0"),
        ".agent_status.json.coord-tmp.99999.1.0".to_owned(),
        ".coord_state.json.coord-tmp.99999.1.0".to_owned(),
        ".work_claims.json.lock.coord-tmp.99999".to_owned(),
    ];
    for name in &stale {
        fs::write(dir.path().join(name), "half a file").unwrap();
    }
    fs::write(dir.path().join("notes.txt"), "not coord's").unwrap();
    FileStore::new(dir.path())
        .claim(&ClaimRequest::new("a", "t"))
        .unwrap();
    for name in &stale {
        assert!(!dir.path().join(name).exists(), "{name} was not swept");
    }
    assert!(dir.path().join("notes.txt").exists());
}

/// A writer whose appends to the file named `name` fail at each of
/// `stages` (an `Append` failure writes half its bytes first, as a full
/// disk does).
fn failing_appends_to(name: &'static str, stages: &'static [WriteStage]) -> AtomicWriter {
    AtomicWriter::with_faults(Arc::new(move |path: &Path, stage: WriteStage| {
        if path.file_name().is_some_and(|n| n == name) && stages.contains(&stage) {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("injected failure at {stage:?}"),
            ));
        }
        Ok(())
    }))
}

/// Every file of `dir` and a digest of its bytes, the shell-lock staging
/// file of a live store aside (a digest, so a failure prints names).
fn files(dir: &Path) -> Vec<(String, usize, u64)> {
    use std::hash::{Hash, Hasher};
    dir_names(dir)
        .into_iter()
        .map(|name| {
            let bytes = fs::read(dir.join(&name)).unwrap();
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut hasher);
            (name, bytes.len(), hasher.finish())
        })
        .collect()
}

/// `n` finished items, and one cleanup already in the archive.
fn finished(dir: &Path, n: usize) -> FileStore {
    let store = FileStore::new(dir);
    for i in 0..n {
        let claim = store.claim(&ClaimRequest::new("a", "build")).unwrap();
        store
            .act(
                &claim.work_item_id,
                &Action::Complete {
                    result: Some(format!("result {i}")),
                },
                &Actor::new("a"),
            )
            .unwrap();
        if i == 0 {
            store.cleanup("a", std::time::Duration::ZERO).unwrap();
        }
    }
    store
}

const ARCHIVE: &str = "work_claims.archive.jsonl";
const INTENT: &str = "cleanup.intent.json";

/// A cleanup whose archive append fails (a full disk) leaves every file
/// as it was: the partial append is cut back, then the intent goes.
#[test]
fn a_failed_archive_append_leaves_every_file_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    finished(dir.path(), 30);
    let before = files(dir.path());
    let store = store_with(
        dir.path(),
        failing_appends_to(ARCHIVE, &[WriteStage::Append]),
    );
    let err = store.cleanup("a", std::time::Duration::ZERO).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AtomicWriteFailed, "{err}");
    assert!(err.to_string().contains(ARCHIVE), "{err}");
    assert_eq!(files(dir.path()), before);

    let warnings = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&warnings);
    let store = FileStore::with_options(
        dir.path(),
        FileStoreOptions::default()
            .on_warning(Arc::new(move |w| seen.lock().unwrap().push(w.kind))),
    );
    assert_eq!(
        store.cleanup("a", std::time::Duration::ZERO).unwrap().len(),
        29
    );
    assert_eq!(store.archived().unwrap().len(), 30);
    assert!(warnings.lock().unwrap().is_empty(), "{warnings:?}");
}

/// When even cutting the partial append back fails, the intent stays, and
/// the next writer settles the archive with it.
#[test]
fn an_append_that_cannot_be_cut_back_keeps_its_intent_for_the_next_writer() {
    let dir = tempfile::tempdir().unwrap();
    finished(dir.path(), 10);
    let archive_before = fs::read(dir.path().join(ARCHIVE)).unwrap();
    let claims_before = fs::read(dir.path().join(CLAIMS_FILE)).unwrap();
    let store = store_with(
        dir.path(),
        failing_appends_to(ARCHIVE, &[WriteStage::Append, WriteStage::CutBack]),
    );
    let err = store.cleanup("a", std::time::Duration::ZERO).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AtomicWriteFailed, "{err}");
    assert!(dir.path().join(INTENT).exists(), "the intent survives");
    assert!(fs::read(dir.path().join(ARCHIVE)).unwrap().len() > archive_before.len());
    assert_eq!(
        fs::read(dir.path().join(CLAIMS_FILE)).unwrap(),
        claims_before
    );

    // The next writer rolls the half-done cleanup back, and cleanup works.
    let store = FileStore::new(dir.path());
    assert_eq!(store.list(&Filter::default()).unwrap().len(), 9);
    assert_eq!(
        store.cleanup("a", std::time::Duration::ZERO).unwrap().len(),
        9
    );
    assert!(!dir.path().join(INTENT).exists());
    assert_eq!(store.archived().unwrap().len(), 10);
}

/// A torn last line in the archive (a writer that died mid-append, or an
/// older coord that did not cut its failed append back) is settled by the
/// next cleanup, as the event log's is, and readers skip it meanwhile.
#[test]
fn a_torn_archive_tail_is_settled_by_the_next_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = finished(dir.path(), 5);
    let path = dir.path().join(ARCHIVE);
    let whole = fs::read(&path).unwrap();
    let mut torn = whole.clone();
    torn.extend_from_slice(b"{\"work_item_id\":\"work_9\",\"work_ty");
    fs::write(&path, &torn).unwrap();
    assert_eq!(
        store.archived().unwrap().len(),
        1,
        "readers skip the torn line"
    );
    assert_eq!(
        store.cleanup("a", std::time::Duration::ZERO).unwrap().len(),
        4
    );
    let archived = store.archived().unwrap();
    assert_eq!(archived.len(), 5);
    let after = fs::read(&path).unwrap();
    assert!(after.starts_with(&whole) && after.ends_with(b"\n"));
    assert!(!String::from_utf8(after).unwrap().contains("work_9"));

    // A whole last line that is not an object is not ours: refused.
    fs::write(&path, [whole.as_slice(), b"not json\n"].concat()).unwrap();
    store.claim(&ClaimRequest::new("a", "x")).unwrap();
    let claim = store.claim(&ClaimRequest::new("a", "x")).unwrap();
    complete(&store, &claim.work_item_id, "a");
    let err = store.cleanup("a", std::time::Duration::ZERO).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValidationFailed, "{err}");
}

/// A change whose event log append fails leaves the log and the claims
/// file as they were.
#[test]
fn a_failed_event_log_append_leaves_every_file_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let store = finished(dir.path(), 3);
    drop(store);
    let before = files(dir.path());
    let store = store_with(
        dir.path(),
        failing_appends_to(EVENT_LOG, &[WriteStage::Append]),
    );
    let err = store.claim(&ClaimRequest::new("a", "build")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AtomicWriteFailed, "{err}");
    assert!(err.to_string().contains(EVENT_LOG), "{err}");
    assert_eq!(files(dir.path()), before);
}
