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

/// The older shell tools' `claim` writes agents without `last_seen` or
/// `registered_at`: coord lists them, records other agents beside them
/// without touching their bytes, and registers them keeping their fields.
#[test]
fn the_shell_tools_agent_entries_are_read_listed_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(coord_file::AGENT_FILE);
    let shell_entry = "{\n    \"agent_id\": \"agent_shell_1\",\n    \"team\": \"blue\",\n    \"status\": \"active\",\n    \"current_workload\": 1\n  }";
    fs::write(&path, format!("[\n  {shell_entry}\n]\n")).unwrap();
    let warnings = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = warnings.clone();
    let store = FileStore::with_options(
        dir.path(),
        coord_file::FileStoreOptions {
            on_warning: std::sync::Arc::new(move |w| seen.lock().unwrap().push(w.message.clone())),
            ..Default::default()
        },
    );
    let agents = store.agents().unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].agent_id, "agent_shell_1");
    assert_eq!(agents[0].last_seen, None);
    assert_eq!(agents[0].extra["current_workload"], 1);

    store
        .claim(&ClaimRequest::new("agent_coord", "build"))
        .unwrap();
    assert!(warnings.lock().unwrap().is_empty(), "{warnings:?}");
    let text = fs::read_to_string(&path).unwrap();
    assert!(
        text.contains(shell_entry),
        "the shell tool's entry keeps its bytes:\n{text}"
    );
    assert_eq!(store.agents().unwrap().len(), 2);

    let registered = store
        .register_agent(&coord_core::AgentRegistration {
            agent_id: "agent_shell_1".into(),
            team: None,
            capacity: Some(2),
        })
        .unwrap();
    assert_eq!(registered.capacity, Some(2));
    assert!(registered.last_seen.is_some() && registered.registered_at.is_some());
    let raw: serde_json::Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(raw[0]["current_workload"], 1);
    assert_eq!(raw[0]["status"], "active", "its own fields stay");
    assert_eq!(raw[0]["team"], "blue");

    // An entry without an agent id is not an agent: the registry is refused,
    // and left as it is.
    fs::write(&path, "[{\"team\": \"red\"}]").unwrap();
    assert_eq!(
        store.agents().unwrap_err().kind(),
        ErrorKind::ValidationFailed
    );
}
