//! Idempotency keys in a coordination directory: the key is written ahead
//! of the claims file and counts only once that commits; a write that fails
//! takes the key back with it, and a writer that died between the two
//! leaves no key behind that answers for a change that never happened.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use coord_core::{ErrorKind, Filter, IdempotencyKey, KeyedChange, PostRequest, Store};
use coord_file::{CLAIMS_FILE, FileStore, FileStoreOptions, KEYS_FILE, STATE_FILE};
use reactor_file::{AtomicWriter, WriteStage};

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::new(k).unwrap()
}

fn post(description: &str) -> PostRequest {
    PostRequest::new("agent", "tests").description(description)
}

/// A writer whose next `times` writes of the claims file fail at `stage`.
fn failing_claims_writes(stage: WriteStage, times: u32) -> AtomicWriter {
    let left = Arc::new(AtomicU32::new(times));
    AtomicWriter::with_faults(Arc::new(move |path: &Path, s: WriteStage| {
        let claims = path.file_name().is_some_and(|n| n == CLAIMS_FILE);
        if claims && s == stage && left.load(Ordering::SeqCst) > 0 {
            left.fetch_sub(1, Ordering::SeqCst);
            return Err(io::Error::other(format!("injected failure at {s:?}")));
        }
        Ok(())
    }))
}

#[test]
fn a_keyed_change_whose_claims_write_failed_takes_its_key_back() {
    let dir = tempfile::tempdir().unwrap();
    let plain = FileStore::new(dir.path());
    plain
        .apply_once(&key("earlier"), &KeyedChange::Post(&post("earlier")))
        .unwrap();
    let keys_before = fs::read(dir.path().join(KEYS_FILE)).unwrap();
    let request = post("the one");
    let change = KeyedChange::Post(&request);
    for stage in WriteStage::ALL {
        let store = FileStore::with_options(
            dir.path(),
            FileStoreOptions::default().writer(failing_claims_writes(stage, 1)),
        );
        let Err(e) = store.apply_once(&key("k"), &change) else {
            continue; // a stage a replacing write does not pass through
        };
        assert_eq!(e.kind(), ErrorKind::AtomicWriteFailed, "{stage:?}: {e}");
        assert_eq!(
            fs::read(dir.path().join(KEYS_FILE)).unwrap(),
            keys_before,
            "{stage:?}: the key went back with the change"
        );
    }
    let made = plain.apply_once(&key("k"), &change).unwrap();
    assert_eq!(plain.apply_once(&key("k"), &change).unwrap(), made);
    assert_eq!(plain.list(&Filter::default()).unwrap().len(), 2);
}

#[test]
fn the_key_of_a_writer_that_died_before_its_claims_file_answers_for_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path());
    store.post(&post("first")).unwrap();
    // The files as they were, then a keyed post that commits...
    let claims = fs::read(dir.path().join(CLAIMS_FILE)).unwrap();
    let state = fs::read(dir.path().join(STATE_FILE)).ok();
    let request = post("keyed");
    let change = KeyedChange::Post(&request);
    let ghost = store.apply_once(&key("k"), &change).unwrap();
    // ...and its claims file taken back: the writer died after its events
    // and key, before its commit.
    fs::write(dir.path().join(CLAIMS_FILE), &claims).unwrap();
    if let Some(state) = state {
        fs::write(dir.path().join(STATE_FILE), state).unwrap();
    }
    // Another process's change commits the revision the dead one drew.
    let fresh = FileStore::new(dir.path());
    fresh.post(&post("unkeyed")).unwrap();
    let retried = fresh.apply_once(&key("k"), &change).unwrap();
    let items = fresh.list(&Filter::default()).unwrap();
    assert!(
        items.iter().any(|c| c == &retried),
        "the retry answers with an item that exists, not {ghost:?}: {items:?}"
    );
    assert_eq!(items.len(), 3, "first, unkeyed, keyed: {items:?}");
}
