//! Bad input, generated: arbitrary bytes and mutations of valid files as each
//! of the directory's files. coord must answer with a result or a clear
//! error, never panic, and never write over a file it could not parse.

use std::fs;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use coord_core::{
    Action, Actor, AgentRegistration, ClaimRequest, CoordError, ErrorKind, Filter, NextRequest,
    PostRequest, Store,
};
use coord_file::{
    AGENT_FILE, ARCHIVE, CLAIMS_FILE, CLEANUP_INTENT, EVENT_LOG, FileStore, FileStoreOptions,
    STATE_FILE,
};
use coord_testkit::conformance::complete;
use proptest::prelude::*;

/// The files coord reads whole, and so must never write over when they do
/// not parse; then the append-only ones.
const WHOLE: [&str; 4] = [CLAIMS_FILE, STATE_FILE, AGENT_FILE, CLEANUP_INTENT];
const APPEND_ONLY: [&str; 2] = [EVENT_LOG, ARCHIVE];

/// A directory with every file in a valid state, made once.
fn template() -> &'static Vec<(&'static str, Vec<u8>)> {
    static TEMPLATE: OnceLock<Vec<(&'static str, Vec<u8>)>> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let a = store.claim(&ClaimRequest::new("alice", "build")).unwrap();
        complete(&store, &a.work_item_id, "alice");
        store
            .post(&PostRequest::new("bob", "test").description("a queued item"))
            .unwrap();
        store.claim(&ClaimRequest::new("carol", "deploy")).unwrap();
        store.cleanup("janitor", Duration::ZERO).unwrap();
        store
            .register_agent(&AgentRegistration {
                agent_id: "alice".into(),
                team: Some("t".into()),
                capacity: Some(2),
            })
            .unwrap();
        let mut files: Vec<(&'static str, Vec<u8>)> = WHOLE
            .iter()
            .chain(&APPEND_ONLY)
            .filter_map(|name| fs::read(dir.path().join(name)).ok().map(|b| (*name, b)))
            .collect();
        // A valid intent (as if a cleanup of nothing was interrupted).
        files.push((
            CLEANUP_INTENT,
            br#"{"archive_len":0,"work_item_ids":[],"revision":1}"#.to_vec(),
        ));
        files
    })
}

#[derive(Debug, Clone)]
enum Damage {
    Replace(Vec<u8>),
    Flip { at: usize, byte: u8 },
    Cut { at: usize },
    Insert { at: usize, bytes: Vec<u8> },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Damage::Replace),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Damage::Flip { at, byte }),
        any::<usize>().prop_map(|at| Damage::Cut { at }),
        (
            any::<usize>(),
            prop::collection::vec(
                prop::sample::select(b"{}[]\",:0123456789-.aeflnrstu \n".to_vec()),
                1..8
            )
        )
            .prop_map(|(at, bytes)| Damage::Insert { at, bytes }),
    ]
}

fn apply(valid: &[u8], damage: &Damage) -> Vec<u8> {
    let mut b = valid.to_vec();
    let at = |n: usize| if b.is_empty() { 0 } else { n % (b.len() + 1) };
    match damage {
        Damage::Replace(bytes) => return bytes.clone(),
        Damage::Flip { at: n, byte } => {
            if !b.is_empty() {
                let i = n % b.len();
                b[i] = *byte;
            }
        }
        Damage::Cut { at: n } => {
            let i = at(*n);
            b.truncate(i);
        }
        Damage::Insert { at: n, bytes } => {
            let i = at(*n);
            b.splice(i..i, bytes.iter().copied());
        }
    }
    b
}

/// Every command coord has, against the store.
fn commands(store: &FileStore) -> Vec<(&'static str, Result<(), CoordError>)> {
    let first_id = store
        .list(&Filter::default())
        .ok()
        .and_then(|l| l.first().map(|c| c.work_item_id.clone()))
        .unwrap_or_else(|| "work_1".into());
    vec![
        (
            "claim",
            store.claim(&ClaimRequest::new("zed", "fuzz")).map(drop),
        ),
        (
            "post",
            store.post(&PostRequest::new("zed", "fuzz")).map(drop),
        ),
        ("next", store.next(&NextRequest::new("zed")).map(drop)),
        (
            "complete",
            store
                .act(
                    &first_id,
                    &Action::Complete { result: None },
                    &Actor::new("zed").force(true),
                )
                .map(drop),
        ),
        ("reap", store.reap("zed").map(drop)),
        ("cleanup", store.cleanup("zed", Duration::ZERO).map(drop)),
        ("list", store.list(&Filter::default()).map(drop)),
        ("show", store.get(&first_id).map(drop)),
        ("agents", store.agents().map(drop)),
        ("events", store.events(0).map(drop)),
        ("archived", store.archived().map(drop)),
        (
            "register",
            store
                .register_agent(&AgentRegistration {
                    agent_id: "zed".into(),
                    team: None,
                    capacity: None,
                })
                .map(drop),
        ),
    ]
}

/// Whether coord can read `name` as it stands.
fn parses(dir: &Path, name: &str) -> bool {
    let bytes = match fs::read(dir.join(name)) {
        Ok(b) => b,
        Err(_) => return true,
    };
    let store = FileStore::new(dir);
    match name {
        CLAIMS_FILE => store.list(&Filter::default()).is_ok(),
        AGENT_FILE => store.agents().is_ok(),
        STATE_FILE => serde_json::from_slice::<serde_json::Value>(&bytes).is_ok_and(|v| {
            v.get("fence").is_some_and(|f| f.is_u64())
                && v.get("revision").is_none_or(|r| r.is_u64())
        }),
        CLEANUP_INTENT => serde_json::from_slice::<serde_json::Value>(&bytes).is_ok_and(|v| {
            v["archive_len"].is_u64()
                && v["revision"].is_u64()
                && v["work_item_ids"]
                    .as_array()
                    .is_some_and(|a| a.iter().all(|i| i.is_string()))
        }),
        _ => true,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn damaged_files_get_clear_errors_and_are_never_written_over(which in 0usize..6, damage in damage()) {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in template() {
            if *name != CLEANUP_INTENT {
                fs::write(dir.path().join(name), bytes).unwrap();
            }
        }
        let name = [CLAIMS_FILE, STATE_FILE, AGENT_FILE, CLEANUP_INTENT, EVENT_LOG, ARCHIVE][which];
        let valid = template().iter().find(|(n, _)| *n == name).map(|(_, b)| b.clone()).unwrap();
        let damaged = apply(&valid, &damage);
        fs::write(dir.path().join(name), &damaged).unwrap();
        let readable = parses(dir.path(), name);

        let store = FileStore::with_options(dir.path(), FileStoreOptions::default().lock_timeout(Duration::from_secs(5)));
        for (command, result) in commands(&store) {
            if let Err(e) = &result {
                prop_assert!(!e.to_string().is_empty());
                prop_assert!(
                    matches!(e.kind(), ErrorKind::ValidationFailed | ErrorKind::FileRead | ErrorKind::NotFound
                        | ErrorKind::NothingToTake | ErrorKind::Conflict | ErrorKind::AtomicWriteFailed),
                    "{command}: unexpected {e}"
                );
            }
            let now = fs::read(dir.path().join(name)).ok();
            if WHOLE.contains(&name) && !readable {
                prop_assert_eq!(now.as_deref(), Some(&damaged[..]), "{} written over by {}", name, command);
            }
        }
        // Whatever happened, the claims file coord leaves is one it can read.
        if name != CLAIMS_FILE || readable {
            prop_assert!(store.list(&Filter::default()).is_ok() || !parses(dir.path(), CLEANUP_INTENT));
        }
    }
}
