//! Coordination directories that try to break coord: counters at their
//! end, records nested past any sane depth, duplicate ids, links where
//! files should be, another tool's agent registry. Each is refused with a
//! clear error that leaves every file as it was, or read as what it is.

use std::fs;
use std::path::Path;

use coord_core::{Action, Actor, ClaimRequest, ErrorKind, Filter, NextRequest, PostRequest, Store};
use coord_file::{CLAIMS_FILE, FileStore, STATE_FILE};

/// Every file of `dir` with its bytes, the shell-lock staging file of a
/// live store aside.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            let name = e.file_name().into_string().unwrap();
            let bytes = fs::read(e.path()).unwrap();
            (name, bytes)
        })
        .filter(|(name, _)| !name.contains(".coord-tmp."))
        .collect();
    files.sort();
    files
}

#[test]
fn an_exhausted_fence_counter_is_refused_not_wrapped() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path());
    store.claim(&ClaimRequest::new("a", "build")).unwrap();
    fs::write(
        dir.path().join(STATE_FILE),
        format!("{{\"fence\": {}, \"revision\": 0}}\n", u64::MAX - 1),
    )
    .unwrap();
    let last = store.claim(&ClaimRequest::new("a", "build")).unwrap();
    assert_eq!(last.fence, Some(u64::MAX));
    let before = snapshot(dir.path());
    for attempt in [store.claim(&ClaimRequest::new("a", "build")), {
        store.post(&PostRequest::new("a", "queue")).unwrap();
        store.next(&NextRequest::new("a"))
    }] {
        let err = attempt.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValidationFailed, "{err}");
        assert!(
            err.to_string().contains("fence counter is exhausted"),
            "{err}"
        );
    }
    // The refused `next` changed nothing (the post before it did).
    let after_post = snapshot(dir.path());
    store.next(&NextRequest::new("a")).unwrap_err();
    assert_eq!(snapshot(dir.path()), after_post);
    assert_ne!(before, after_post, "the post itself went through");
}

#[test]
fn an_exhausted_revision_counter_is_refused_not_wrapped() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path());
    let claim = store.claim(&ClaimRequest::new("a", "build")).unwrap();
    let path = dir.path().join(CLAIMS_FILE);
    let text = fs::read_to_string(&path).unwrap().replace(
        &format!("\"revision\":{}", claim.revision.unwrap()),
        &format!("\"revision\":{}", u64::MAX),
    );
    fs::write(&path, text).unwrap();
    let before = snapshot(dir.path());
    let actor = Actor::new("a");
    for err in [
        store.claim(&ClaimRequest::new("a", "build")).unwrap_err(),
        store
            .act(
                &claim.work_item_id,
                &Action::Complete { result: None },
                &actor,
            )
            .unwrap_err(),
        store.reap("a").unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::ValidationFailed, "{err}");
        assert!(
            err.to_string().contains("revision counter is exhausted"),
            "{err}"
        );
    }
    assert_eq!(snapshot(dir.path()), before);
    // Reading still works.
    assert_eq!(store.list(&Filter::default()).unwrap().len(), 1);
}
