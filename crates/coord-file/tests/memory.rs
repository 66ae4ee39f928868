//! A long-lived store skips re-reading what it wrote itself (the claims
//! file, the event log's tail) and keeps its shell-lock staging file. These
//! tests check that no shortcut ever hides another writer's work.

use std::fs;
use std::path::Path;

use coord_core::{ClaimRequest, Filter, Store};
use coord_file::{CLAIMS_FILE, EVENT_LOG, FileStore, LEGACY_LOCK_FILE};
use coord_testkit::replace_by_rename;
use serde_json::Value;

/// A store that has made enough changes to remember its files.
fn warmed_up(dir: &Path) -> (FileStore, Vec<String>) {
    let store = FileStore::new(dir);
    let ids = (0..3)
        .map(|i| {
            store
                .claim(&ClaimRequest::new("a", "t").description(format!("desc-{i}")))
                .unwrap()
                .work_item_id
        })
        .collect();
    (store, ids)
}

#[test]
fn a_claims_file_another_tool_replaced_at_the_same_size_is_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let (store, ids) = warmed_up(dir.path());
    let path = dir.path().join(CLAIMS_FILE);
    let before = fs::read_to_string(&path).unwrap();
    let edited = before.replace("desc-1", "desc-X");
    assert_eq!(edited.len(), before.len());
    replace_by_rename(&path, edited.as_bytes());

    let seen = store.get(&ids[1]).unwrap();
    assert_eq!(
        seen.description, "desc-X",
        "a read sees the other tool's edit"
    );
    store
        .claim(&ClaimRequest::new("a", "t").description("desc-3"))
        .unwrap();
    let after = fs::read_to_string(&path).unwrap();
    assert!(
        after.contains("desc-X") && !after.contains("desc-1"),
        "the next change kept the edit:\n{after}"
    );
}

#[test]
fn a_change_by_another_store_is_kept_by_the_next_change_of_this_one() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = warmed_up(dir.path());
    let other = FileStore::new(dir.path())
        .claim(&ClaimRequest::new("b", "u"))
        .unwrap();
    store.claim(&ClaimRequest::new("a", "t")).unwrap();
    let all = FileStore::new(dir.path()).list(&Filter::default()).unwrap();
    assert_eq!(all.len(), 5);
    assert!(all.iter().any(|c| c.work_item_id == other.work_item_id));
}

#[test]
fn events_a_dead_writer_left_after_this_stores_last_append_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = warmed_up(dir.path());
    let log = dir.path().join(EVENT_LOG);
    let text = fs::read_to_string(&log).unwrap();
    // A writer killed between its write-ahead and its commit: an event of
    // the next revision that the claims file never got.
    let mut ghost: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let next = ghost["revision"].as_u64().unwrap() + 1;
    ghost["revision"] = next.into();
    ghost["work_item_id"] = "ghost".into();
    fs::write(&log, format!("{text}{ghost}\n")).unwrap();

    store.claim(&ClaimRequest::new("a", "t")).unwrap();
    let events = store.events(0).unwrap().events;
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(
        events
            .iter()
            .all(|e| e.work_item_id.as_deref() != Some("ghost")),
        "{events:?}"
    );
    assert!(!fs::read_to_string(&log).unwrap().contains("ghost"));
}

#[test]
fn events_another_store_appended_are_followed_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = warmed_up(dir.path());
    FileStore::new(dir.path())
        .claim(&ClaimRequest::new("b", "u"))
        .unwrap();
    store.claim(&ClaimRequest::new("a", "t")).unwrap();
    let revisions: Vec<u64> = store
        .events(0)
        .unwrap()
        .events
        .iter()
        .filter_map(|e| e.revision)
        .collect();
    assert_eq!(revisions, [1, 2, 3, 4, 5]);
}

fn staging_files(dir: &Path) -> Vec<String> {
    let prefix = format!(".{LEGACY_LOCK_FILE}.coord-tmp.");
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

#[test]
fn a_kept_shell_lock_staging_file_is_made_again_when_swept_and_removed_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = warmed_up(dir.path());
    let kept = staging_files(dir.path());
    assert_eq!(kept.len(), 1, "a long-lived store keeps one: {kept:?}");
    // Another process's sweep removes it while this store is between changes.
    fs::remove_file(dir.path().join(&kept[0])).unwrap();
    store.claim(&ClaimRequest::new("a", "t")).unwrap();
    assert_eq!(staging_files(dir.path()).len(), 1);
    assert!(!dir.path().join(LEGACY_LOCK_FILE).exists());
    drop(store);
    assert_eq!(staging_files(dir.path()), Vec::<String>::new());
}
