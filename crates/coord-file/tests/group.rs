//! Group commit: threads sharing one `FileStore` that change it at once
//! are written together, each answered with exactly its own outcome; a
//! refused change fails alone, a failed write fails the whole batch and
//! leaves every file as it was.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use coord_core::{ClaimRequest, ErrorKind, Filter, PostRequest, Priority, Store};
use coord_file::{CLAIMS_FILE, EVENT_LOG, FileStore, FileStoreOptions};
use reactor_file::{AtomicWriter, WriteStage};

const THREADS: usize = 8;

/// `THREADS` threads each making `per` claims on `store` at once; every
/// answer is checked to be the caller's own. Returns the claims.
fn claim_at_once(store: &FileStore, per: usize) -> Vec<coord_core::Claim> {
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    (0..per)
                        .map(|i| {
                            let agent = format!("agent_{t}");
                            let text = format!("{t}-{i}");
                            let request =
                                ClaimRequest::new(agent.as_str(), "build").description(&text);
                            let claim = store.claim(&request).unwrap();
                            assert_eq!(claim.agent_id.as_deref(), Some(agent.as_str()));
                            assert_eq!(claim.description, text, "its own answer");
                            claim
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

#[test]
fn threads_claiming_at_once_land_in_fewer_writes_each_with_its_own_answer() {
    let per = 25;
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path().join("coordination"));
    let claims = claim_at_once(&store, per);
    let total = THREADS * per;
    let ids: HashSet<&str> = claims.iter().map(|c| c.work_item_id.as_str()).collect();
    let fences: HashSet<u64> = claims.iter().map(|c| c.fence.unwrap()).collect();
    let revisions: HashSet<u64> = claims.iter().map(|c| c.revision.unwrap()).collect();
    assert_eq!(
        (ids.len(), fences.len(), revisions.len()),
        (total, total, total),
        "distinct ids, fences and revisions"
    );
    let stored = store.list(&Filter::default()).unwrap();
    assert_eq!(stored.len(), total);
    for claim in &claims {
        assert!(stored.contains(claim), "{} as answered", claim.work_item_id);
    }
    assert_eq!(store.events(0).unwrap().events.len(), total);
    let writes = store.claims_writes();
    assert!(
        writes < total as u64,
        "{total} changes in {writes} writes of the claims file"
    );

    // Without group commit every change is a write of its own.
    let alone_dir = tempfile::tempdir().unwrap();
    let alone = FileStore::with_options(
        alone_dir.path(),
        FileStoreOptions::default().group_commit(false),
    );
    claim_at_once(&alone, per);
    assert_eq!(alone.claims_writes(), total as u64);
}

#[test]
fn a_refused_change_in_a_batch_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path());
    for round in 0..10 {
        let work_type = format!("deploy_{round}");
        let barrier = Barrier::new(THREADS);
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (barrier, store, work_type) = (&barrier, &store, &work_type);
                    scope.spawn(move || {
                        barrier.wait();
                        let agent = format!("agent_{t}");
                        let exclusive = store.claim(
                            &ClaimRequest::new(agent.as_str(), work_type.as_str())
                                .priority(Priority::High),
                        );
                        let queued = store.post(&PostRequest::new(agent.as_str(), "tests"));
                        (exclusive, queued.unwrap())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let won = results.iter().filter(|(e, _)| e.is_ok()).count();
        assert_eq!(won, 1, "round {round}: one exclusive claim");
        for (exclusive, _) in &results {
            if let Err(e) = exclusive {
                assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
            }
        }
    }
    let items = store.list(&Filter::default()).unwrap();
    assert_eq!(items.len(), 10 + 10 * THREADS, "each winner and every post");
}

#[test]
fn a_failed_write_fails_every_change_of_its_batch_and_changes_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let first_writing = Arc::new(AtomicBool::new(false));
    let writing = Arc::clone(&first_writing);
    // The first write of the claims file is slow, so the other threads'
    // changes queue behind it; the second (their batch) fails.
    let writer = AtomicWriter::with_faults(Arc::new(move |file: &Path, stage: WriteStage| {
        if !file.ends_with(CLAIMS_FILE) || stage != WriteStage::Rename {
            return Ok(());
        }
        match counted.fetch_add(1, Ordering::SeqCst) {
            0 => {
                writing.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(500));
                Ok(())
            }
            1 => Err(io::Error::other("injected failure of the batch's write")),
            _ => Ok(()),
        }
    }));
    let store = FileStore::with_options(&path, FileStoreOptions::default().writer(writer));
    let barrier = Barrier::new(THREADS);
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (barrier, store, first_writing) = (&barrier, &store, &first_writing);
                scope.spawn(move || {
                    // The first thread goes ahead; the rest come while it writes.
                    barrier.wait();
                    while t > 0 && !first_writing.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    store.claim(&ClaimRequest::new(format!("agent_{t}"), "build"))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(results[0].is_ok(), "{:?}", results[0]);
    let before = fs::read(path.join(CLAIMS_FILE)).unwrap();
    let events_before = fs::read(path.join(EVENT_LOG)).unwrap();
    for result in &results[1..] {
        let err = result.as_ref().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AtomicWriteFailed, "{err}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one write for the batch");
    assert_eq!(store.list(&Filter::default()).unwrap().len(), 1);
    assert_eq!(fs::read(path.join(CLAIMS_FILE)).unwrap(), before);
    assert_eq!(fs::read(path.join(EVENT_LOG)).unwrap(), events_before);
    // The store goes on.
    store
        .claim(&ClaimRequest::new("agent_late", "build"))
        .unwrap();
    assert_eq!(store.list(&Filter::default()).unwrap().len(), 2);
}
