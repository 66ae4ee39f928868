//! Cleanup killed with SIGKILL at its critical points, and at random
//! moments: no item is ever lost or left in both the claims file and the
//! archive once the next writer has settled the interrupted move.

use std::collections::HashSet;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// A directory with `n` completed items (and one live one, claimed first:
/// the newest revisions are carried by the items a cleanup moves out).
fn finished_items(n: usize) -> (Env, HashSet<String>) {
    let env = Env::new();
    let mut ids = HashSet::new();
    ids.insert(id_of(&env.run(&["claim", "still running"]).expect_ok()));
    for i in 0..n {
        let id = id_of(&env.run(&["claim", "job", &format!("job {i}")]).expect_ok());
        env.run(&["complete", &id]).expect_ok();
        ids.insert(id);
    }
    (env, ids)
}

/// The event log's lines but `lock_broken` ones.
fn changes_logged(env: &Env) -> Vec<Value> {
    env.events()
        .into_iter()
        .filter(|e| e["event"] != "lock_broken")
        .collect()
}

/// Every item is in exactly one of the claims file and the archive.
fn assert_each_item_in_one_place(env: &Env, all: &HashSet<String>) {
    let in_claims: Vec<String> = env.records().iter().map(id_of).collect();
    let in_archive: Vec<String> = env.archive().iter().map(id_of).collect();
    let claims_set: HashSet<String> = in_claims.iter().cloned().collect();
    let archive_set: HashSet<String> = in_archive.iter().cloned().collect();
    assert_eq!(
        claims_set.len(),
        in_claims.len(),
        "an id twice in the claims file"
    );
    assert_eq!(
        archive_set.len(),
        in_archive.len(),
        "an id twice in the archive"
    );
    assert!(
        claims_set.is_disjoint(&archive_set),
        "items in both files: {:?}",
        claims_set.intersection(&archive_set)
    );
    let union: HashSet<String> = claims_set.union(&archive_set).cloned().collect();
    assert_eq!(&union, all, "items lost");
}

#[test]
fn cleanup_killed_at_each_critical_point_loses_and_duplicates_nothing() {
    for point in [
        "cleanup:intent-written",
        "cleanup:archive-partial",
        "cleanup:archive-appended",
        "cleanup:claims-written",
        "cleanup:revision-raised",
    ] {
        let (env, all) = finished_items(6);
        let logged = changes_logged(&env);
        let killed = env
            .command(&["cleanup", "--older-than", "0s"])
            .env("COORD_CRASH_AT", point)
            .finish();
        assert_eq!(
            killed.status.signal(),
            Some(9),
            "{point}: the crash point was reached"
        );
        assert!(
            env.dir.join("cleanup.intent.json").exists(),
            "{point}: the intent survives the crash"
        );

        // The next writer settles the move, whatever command it runs.
        let settle = env.run(&["reap"]);
        settle.expect_ok();
        // The killed writer also left the shell tools' lock file with its
        // dead pid; that is broken (and said) too.
        let warnings: Vec<Value> = settle
            .stderr
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let kinds: Vec<&str> = warnings
            .iter()
            .map(|w| w["warning"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["cleanup_recovered", "lock_broken"], "{point}");
        assert!(!env.dir.join("cleanup.intent.json").exists());
        assert_each_item_in_one_place(&env, &all);
        // Settling the move (and the broken lock) keeps every committed event.
        assert_eq!(
            changes_logged(&env),
            logged,
            "{point}: committed events lost"
        );
        let rolled_forward = matches!(point, "cleanup:claims-written" | "cleanup:revision-raised");
        assert_eq!(
            env.archive().len(),
            if rolled_forward { 6 } else { 0 },
            "{point}"
        );

        // And a cleanup after it completes the job exactly once.
        env.run(&["cleanup", "--older-than", "0s"]).expect_ok();
        assert_each_item_in_one_place(&env, &all);
        assert_eq!(env.archive().len(), 6, "{point}");
        assert_eq!(env.records().len(), 1, "{point}: only the live item stays");
    }
}

#[test]
fn cleanup_killed_at_random_moments_loses_and_duplicates_nothing() {
    let (env, mut all) = finished_items(40);
    let mut rng = 0x9E37_79B9_7F4A_7C15_u64;
    for round in 0..15 {
        // xorshift: a fixed sequence, so a failure repeats.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = Duration::from_micros(rng % 6000);
        let mut child = env.spawn(&["cleanup", "--older-than", "0s"]);
        std::thread::sleep(delay);
        let _ = child.kill();
        child.finish();
        // A writer settles any interrupted move; then check.
        env.run(&["reap"]).expect_ok();
        assert_each_item_in_one_place(&env, &all);
        if round % 5 == 4 {
            // More finished items, so later rounds have something to move.
            for _ in 0..3 {
                let id = id_of(&env.run(&["claim", "job"]).expect_ok());
                env.run(&["complete", &id]).expect_ok();
                all.insert(id);
            }
        }
    }
    env.run(&["cleanup", "--older-than", "0s"]).expect_ok();
    assert_each_item_in_one_place(&env, &all);
    assert_eq!(env.records().len(), 1, "only the live item stays");
}

#[test]
fn a_writer_killed_between_its_events_and_its_commit_leaves_no_trace_in_the_log() {
    let env = Env::new();
    let first = id_of(&env.run(&["claim", "job"]).expect_ok());
    let killed = env
        .command(&["claim", "job"])
        .env("COORD_CRASH_AT", "commit:events-written")
        .finish();
    assert_eq!(killed.status.signal(), Some(9));
    // The write-ahead line is in the file, but no reader shows it...
    let raw = std::fs::read_to_string(env.dir.join("coordination_events.jsonl")).unwrap();
    assert_eq!(raw.lines().count(), 2);
    let shown: Vec<Value> = env
        .run(&["log"])
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0]["work_item_id"], first.as_str());
    assert_eq!(env.records().len(), 1, "the claim never committed");
    // ...and the next writer drops it for good (and breaks the dead
    // writer's shell-tool lock file, which it logs).
    let second = id_of(&env.run(&["claim", "job"]).expect_ok());
    let events: Vec<Value> = env
        .events()
        .into_iter()
        .filter(|e| e["event"] != "lock_broken")
        .collect();
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e["work_item_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first.as_str(), second.as_str()]);
    let revisions: Vec<u64> = events
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(
        revisions,
        [1, 2],
        "the dead writer's revision was never committed, so it is reused"
    );
}

/// A cleanup that runs out of disk (a 400 KB tmpfs, 30 finished items,
/// the disk filled to a few pages) fails with `atomic_write_failed` and
/// leaves every file as it was: no partial record in the archive, no
/// intent left behind, no change to the state file. Once space is freed,
/// cleanup works and nothing warns.
#[test]
fn a_cleanup_that_fills_the_disk_leaves_every_file_as_it_was() {
    let mut failures = 0;
    for free_pages in 1..=6u64 {
        let Some(disk) = coord_testkit::Tmpfs::mount("400k") else {
            return;
        };
        let dir = disk.path().join("coordination");
        let mut ids = Vec::new();
        for i in 0..30 {
            let description = format!("item {i}, described at enough length to fill a page or two");
            let claim = run_in(&dir, "agent_test", &["claim", "build", &description]).expect_ok();
            ids.push(id_of(&claim));
            run_in(&dir, "agent_test", &["complete", &id_of(&claim)]).expect_ok();
        }
        let filler = disk.fill();
        let len = fs::metadata(&filler).unwrap().len();
        let file = fs::OpenOptions::new().write(true).open(&filler).unwrap();
        file.set_len(len.saturating_sub(free_pages * 4096)).unwrap();
        drop(file);
        let before = snapshot(&dir);

        let run = run_in(&dir, "agent_test", &["cleanup", "--older-than", "0s"]);
        if run.code == 0 {
            assert_eq!(run.json()["archived"], 30, "{run:?}");
        } else {
            failures += 1;
            let err = run.expect_error("atomic_write_failed", 7);
            assert!(
                err["message"].as_str().unwrap().contains("No space left"),
                "{err}"
            );
            assert_eq!(snapshot(&dir), before, "with {free_pages} pages free");
        }
        fs::remove_file(filler).unwrap();
        let run = run_in(&dir, "agent_test", &["cleanup", "--older-than", "0s"]);
        let cleaned = run.expect_ok();
        assert!(run.stderr.is_empty(), "no warning: {run:?}");
        let archived: Vec<String> = json_lines(&dir.join("work_claims.archive.jsonl"))
            .iter()
            .map(id_of)
            .collect();
        assert_eq!(
            archived, ids,
            "every item archived once, in order: {cleaned}"
        );
        // And a change after it warns of nothing (no failed compaction).
        let run = run_in(&dir, "agent_test", &["claim", "build"]);
        run.expect_ok();
        assert!(run.stderr.is_empty(), "{run:?}");
    }
    assert!(failures > 0, "no free-space setting made the cleanup fail");
}

/// Every file of `dir` by name, with its length and its bytes' hash (so a
/// failure prints what differs, not the bytes). The span file aside: it
/// records the failure too.
fn snapshot(dir: &std::path::Path) -> Vec<(String, usize, u64)> {
    use std::hash::{Hash, Hasher};
    let mut files: Vec<(String, usize, u64)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "telemetry_spans.jsonl")
        .map(|e| {
            let bytes = fs::read(e.path()).unwrap();
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut hasher);
            (
                e.file_name().into_string().unwrap(),
                bytes.len(),
                hasher.finish(),
            )
        })
        .collect();
    files.sort();
    files
}
