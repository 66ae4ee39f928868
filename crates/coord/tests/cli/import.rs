//! `coord import --from DIR`: a coordination directory copied into
//! PostgreSQL, all or nothing, never twice, the directory left as it was.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use coord_testkit::shared_cluster;
use serde_json::Value;

use crate::support::{Env, Finish, Run, command_in, id_of};

/// `coord` on a fresh schema of the shared cluster.
struct Database {
    _tmp: tempfile::TempDir,
    schema: String,
}

impl Database {
    fn new() -> Database {
        Database {
            _tmp: tempfile::tempdir().unwrap(),
            schema: shared_cluster().fresh_schema("import"),
        }
    }

    fn command(&self, agent: &str, args: &[&str]) -> Command {
        let mut cmd = command_in(&self._tmp.path().join("unused"), agent, args);
        cmd.env("COORD_DATABASE_URL", shared_cluster().url())
            .env("COORD_SCHEMA", &self.schema);
        cmd
    }

    fn run(&self, agent: &str, args: &[&str]) -> Run {
        self.command(agent, args).finish().into()
    }

    fn import(&self, dir: &Path) -> Run {
        self.run(
            "importer",
            &["import", "--from", &dir.display().to_string()],
        )
    }
}

/// Every file under `dir` and its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut all = BTreeMap::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            all.insert(path.display().to_string(), fs::read(&path).unwrap());
        }
    }
    all
}

/// A directory with live, pending, finished and archived work, agents, an
/// item with a field coord does not know, and fences up to a few.
fn a_used_directory() -> Env {
    let env = Env::new();
    env.run_as(
        "builder",
        &["claim", "deploy", "ship it", "--priority", "high"],
    )
    .expect_ok();
    env.run_as("boss", &["post", "test", "run the tests"])
        .expect_ok();
    env.run_as("boss", &["post", "lint", "lint it", "--priority", "low"])
        .expect_ok();
    let done = env
        .run_as("finisher", &["claim", "docs", "write docs"])
        .expect_ok();
    env.run_as("finisher", &["complete", &id_of(&done)])
        .expect_ok();
    let old = env
        .run_as("finisher", &["claim", "old", "archived work"])
        .expect_ok();
    env.run_as("finisher", &["complete", &id_of(&old)])
        .expect_ok();
    env.run_as("finisher", &["cleanup", "--older-than", "0s"])
        .expect_ok();
    env.run_as("builder", &["agent", "register", "--team", "infra"])
        .expect_ok();
    env.run_as("ops", &["pause", "lint"]).expect_ok();
    // A field another tool wrote, which coord keeps.
    let mut records = env.records();
    records[0]["x_ticket"] = serde_json::json!({"id": 42, "tags": ["a", "b"]});
    fs::write(
        env.claims_path(),
        serde_json::to_vec_pretty(&records).unwrap(),
    )
    .unwrap();
    env
}

/// The event log as `coord log` prints it, without the store's cursor.
fn log(run: &Run) -> Vec<Value> {
    assert_eq!(run.code, 0, "{run:?}");
    run.stdout
        .lines()
        .map(|l| {
            let mut event: Value = serde_json::from_str(l).unwrap();
            event.as_object_mut().unwrap().remove("seq");
            event
        })
        .collect()
}

#[test]
fn a_directory_is_copied_whole_and_a_second_import_adds_nothing() {
    let env = a_used_directory();
    let before = files(&env.dir);
    let db = Database::new();

    let imported = db.import(&env.dir).expect_ok();
    let dir_list = env.run(&["list"]).expect_ok();
    let dir_events = log(&env.run(&["log"]));
    assert_eq!(
        imported["imported"],
        serde_json::json!({
            "items": dir_list.as_array().unwrap().len(),
            "archived": env.archive().len(),
            "events": dir_events.len(),
            "agents": env.run(&["agents"]).expect_ok().as_array().unwrap().len(),
            "paused": 1,
        })
    );
    assert_eq!(
        db.run("x", &["stats"]).expect_ok()["paused"],
        serde_json::json!(["lint"]),
        "the paused work type is paused in the database too"
    );
    assert_eq!(
        db.run("x", &["list"]).expect_ok(),
        dir_list,
        "items as they were"
    );
    assert_eq!(
        db.run("x", &["list"]).expect_ok()[0]["x_ticket"]["id"],
        42,
        "unknown fields kept"
    );
    assert_eq!(log(&db.run("x", &["log"])), dir_events);
    let builder = db.run("x", &["agents"]).expect_ok();
    assert!(
        builder
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["agent_id"] == "builder" && a["team"] == "infra"),
        "{builder}"
    );
    assert_eq!(files(&env.dir), before, "the directory is only read");

    // The imported live claim still holds its work type, and new fences go
    // on above every imported one.
    let taken = db.run("other", &["claim", "deploy", "again", "--priority", "high"]);
    taken.expect_error("coordination_conflict", 3);
    let highest = dir_list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["fence"].as_u64())
        .max()
        .unwrap();
    let next = db.run("worker", &["next"]).expect_ok();
    assert!(next["fence"].as_u64().unwrap() > highest, "{next}");

    let again = db.import(&env.dir).expect_ok();
    assert_eq!(
        again["imported"],
        serde_json::json!({"items": 0, "archived": 0, "events": 0, "agents": 0, "paused": 0})
    );
    assert_eq!(files(&env.dir), before);
}

#[test]
fn a_damaged_directory_is_refused_with_its_own_error_and_nothing_is_written() {
    let env = a_used_directory();
    let mut text = fs::read_to_string(env.claims_path()).unwrap();
    text.truncate(text.len() / 2);
    fs::write(env.claims_path(), &text).unwrap();
    let before = files(&env.dir);
    let db = Database::new();
    let direct = env.run(&["list"]);
    let refused = db.import(&env.dir);
    assert_ne!(direct.code, 0, "{direct:?}");
    assert_eq!(refused.code, direct.code, "{refused:?}");
    assert_eq!(refused.error()["error"], direct.error()["error"]);
    assert_eq!(db.run("x", &["list"]).expect_ok(), serde_json::json!([]));
    assert_eq!(log(&db.run("x", &["log"])), Vec::<Value>::new());
    assert_eq!(files(&env.dir), before);

    let missing = db.import(&env.dir.join("nothing-here"));
    missing.expect_error("coordination_validation_failed", 6);
}

#[test]
fn import_needs_a_database() {
    let env = a_used_directory();
    let other = Env::new();
    let run = other.run(&["import", "--from", &env.dir.display().to_string()]);
    let err = run.expect_error("coordination_validation_failed", 6);
    assert!(
        err["message"].as_str().unwrap().contains("--database-url"),
        "{err}"
    );
}
