//! Coordination directories that try to break coord: counters at their
//! end, records nested past any sane depth, duplicate ids, links where
//! files should be, another tool's agent registry. Each is refused with a
//! clear error that leaves every file as it was, or read as what it is.

use std::fs;
use std::path::Path;

use coord_core::{Action, Actor, ClaimRequest, ErrorKind, Filter, NextRequest, PostRequest, Store};
use coord_file::{CLAIMS_FILE, FileStore, STATE_FILE};
use coord_testkit::conformance::complete;

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
        coord_file::FileStoreOptions::default().on_warning(std::sync::Arc::new(move |w| {
            seen.lock().unwrap().push(w.message.clone())
        })),
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

/// A record with a field nested `depth` levels deep (or that many brackets
/// inside a string), in coord's layout or pretty-printed.
fn nested_record_file(depth: usize, in_string: bool, pretty: bool) -> (String, String) {
    let nested = if in_string {
        format!("\"{}\"", "[".repeat(depth))
    } else {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    };
    let record = format!(
        "{{\"work_item_id\":\"work_1\",\"work_type\":\"t\",\"priority\":\"low\",\"status\":\"pending\",\"x\":{nested}}}"
    );
    let file = if pretty {
        format!("[ {record} ]")
    } else {
        format!("[\n  {record}\n]\n")
    };
    (record, file)
}

/// Every command reads a record, or every command refuses it: nesting a
/// full decode cannot read (past serde_json's limit) is refused by writers
/// too, and the file is never rewritten.
#[test]
fn deep_nesting_is_read_or_refused_alike_by_every_command() {
    for depth in [1, 98, 100, 101, 125, 126, 127, 128, 129, 300, 5000] {
        for in_string in [false, true] {
            for pretty in [false, true] {
                let dir = tempfile::tempdir().unwrap();
                let (record, file) = nested_record_file(depth, in_string, pretty);
                let path = dir.path().join(CLAIMS_FILE);
                fs::write(&path, &file).unwrap();
                let readable = serde_json::from_str::<coord_core::Claim>(&record).is_ok();
                let store = FileStore::new(dir.path());
                let case = format!("depth {depth}, in a string: {in_string}, pretty: {pretty}");
                assert_eq!(
                    store.list(&Filter::default()).is_ok(),
                    readable,
                    "list, {case}"
                );
                assert_eq!(store.get("work_1").is_ok(), readable, "show, {case}");
                let claimed = store.claim(&ClaimRequest::new("a", "build"));
                assert_eq!(claimed.is_ok(), readable, "claim, {case}");
                if !readable {
                    assert_eq!(fs::read_to_string(&path).unwrap(), file, "{case}");
                    let err = claimed.unwrap_err();
                    assert_eq!(err.kind(), ErrorKind::ValidationFailed);
                    assert!(err.to_string().contains("recursion limit"), "{err}");
                }
                if in_string {
                    assert!(readable, "brackets in a string are text: {case}");
                }
            }
        }
    }
}

#[test]
fn a_claims_file_with_a_duplicate_id_is_refused_naming_it() {
    let record = |id: &str, t: &str| {
        format!(
            "{{\"work_item_id\":\"{id}\",\"work_type\":\"{t}\",\"priority\":\"low\",\"status\":\"pending\"}}"
        )
    };
    for (a, b) in [
        ("work_5", "work_5"),
        ("work_9", "job-1"),
        ("job-1", "job-1"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CLAIMS_FILE);
        let mut records = vec![
            record(a, "one"),
            record("work_7", "two"),
            record(b, "three"),
        ];
        if a != b {
            records.push(record(a, "four"));
        }
        let file = format!("[\n  {}\n]\n", records.join(",\n  "));
        fs::write(&path, &file).unwrap();
        let store = FileStore::new(dir.path());
        for err in [
            store.list(&Filter::default()).unwrap_err(),
            store.claim(&ClaimRequest::new("a", "build")).unwrap_err(),
        ] {
            assert_eq!(err.kind(), ErrorKind::ValidationFailed, "{err}");
            assert!(err.to_string().contains(&format!("{a:?}")), "{err}");
            assert!(err.to_string().contains("unique"), "{err}");
        }
        assert_eq!(fs::read_to_string(&path).unwrap(), file);
    }
    // Ids in another order than minted are fine while distinct.
    let dir = tempfile::tempdir().unwrap();
    let file = format!(
        "[\n  {},\n  {}\n]\n",
        record("work_9", "a"),
        record("work_2", "b")
    );
    fs::write(dir.path().join(CLAIMS_FILE), file).unwrap();
    assert_eq!(
        FileStore::new(dir.path())
            .list(&Filter::default())
            .unwrap()
            .len(),
        2
    );
}

/// A symbolic link where coord replaces files by rename would become a
/// copy, its target left stale: refused, with both left as they were.
#[test]
fn symbolic_links_are_refused_where_coord_replaces_files() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("claims.json");
    fs::write(&target, "[]\n").unwrap();
    let link = dir.path().join(CLAIMS_FILE);
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let store = FileStore::new(dir.path());
    for err in [
        store.claim(&ClaimRequest::new("a", "build")).unwrap_err(),
        store.list(&Filter::default()).unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::ValidationFailed, "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read_to_string(&target).unwrap(), "[]\n");

    // The state file, replaced by cleanup: refused too.
    fs::remove_file(&link).unwrap();
    let claim = store.claim(&ClaimRequest::new("a", "build")).unwrap();
    complete(&store, &claim.work_item_id, "a");
    let state_target = elsewhere.path().join("state.json");
    fs::write(&state_target, "{\"fence\": 0}\n").unwrap();
    std::os::unix::fs::symlink(&state_target, dir.path().join(STATE_FILE)).unwrap();
    let err = store.cleanup("a", std::time::Duration::ZERO).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AtomicWriteFailed, "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(
        fs::read_to_string(&state_target).unwrap(),
        "{\"fence\": 0}\n"
    );
    assert_eq!(store.list(&Filter::default()).unwrap().len(), 1);
}
