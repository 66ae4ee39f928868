//! Reading history: `show` finds archived items; `log` by work item, since
//! a time, and the last N.

use serde_json::Value;

use crate::support::{Env, id_of};

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[test]
fn show_finds_an_item_cleanup_archived() {
    let env = Env::new();
    let claim = env.run(&["claim", "build", "the release"]).expect_ok();
    let id = id_of(&claim);
    env.run_as(claim["agent_id"].as_str().unwrap(), &["complete", &id])
        .expect_ok();
    env.run(&["cleanup", "--older-than", "0s"]).expect_ok();
    assert!(
        env.records().is_empty(),
        "archived, gone from the claims file"
    );
    let shown = env.run(&["show", &id]).expect_ok();
    assert_eq!(shown["archived"], true);
    assert_eq!(shown["status"], "completed");
    assert_eq!(shown["description"], "the release");
    let human = env.run(&["--human", "show", &id]);
    assert!(
        human.stdout.trim_end().ends_with("(archived)"),
        "{}",
        human.stdout
    );
    env.run(&["show", "work_0"]).expect_error("not_found", 4);
}

#[test]
fn the_log_reads_by_work_item_since_a_time_and_the_last_n() {
    let env = Env::new();
    let first = env.run(&["post", "tests", "one"]).expect_ok();
    env.run(&["post", "tests", "two"]).expect_ok();
    env.run(&["post", "tests", "three"]).expect_ok();
    let taken = env.run(&["next"]).expect_ok();
    assert_eq!(id_of(&taken), id_of(&first));
    let all = lines(&env.run(&["log"]).stdout);
    assert_eq!(all.len(), 4);
    let mine = lines(&env.run(&["log", "--work-item", &id_of(&first)]).stdout);
    assert_eq!(mine.len(), 2, "posted and taken: {mine:?}");
    assert!(
        mine.iter()
            .all(|e| e["work_item_id"] == first["work_item_id"])
    );
    let last = lines(&env.run(&["log", "-n", "2"]).stdout);
    assert_eq!(last, all[2..], "the last two");
    assert_eq!(lines(&env.run(&["log", "--since", "1h"]).stdout), all);
    let future = lines(&env.run(&["log", "--since", "2999-01-01T00:00:00Z"]).stdout);
    assert!(future.is_empty(), "{future:?}");
    let from_second = all[1]["time"].as_str().unwrap();
    let since = lines(&env.run(&["log", "--since", from_second]).stdout);
    assert_eq!(since, all[1..]);
    let bad = env.run(&["log", "--since", "last tuesday"]);
    assert_eq!(bad.code, 2, "{bad:?}");
}

#[test]
fn reads_show_a_lapsed_lease_as_lapsed_without_writing() {
    let env = Env::new();
    let claim = env
        .run_as("alice", &["claim", "build", "--lease", "150ms"])
        .expect_ok();
    let id = id_of(&claim);
    assert!(claim.get("lease_lapsed").is_none(), "{claim}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let before = std::fs::read(env.claims_path()).unwrap();
    let listed = env.run(&["list"]).expect_ok();
    assert_eq!(listed[0]["lease_lapsed"], true, "{listed}");
    assert_eq!(listed[0]["status"], "in_progress");
    assert_eq!(env.run(&["show", &id]).expect_ok()["lease_lapsed"], true);
    let human = env.run(&["--human", "list"]).stdout;
    assert!(human.contains("lease lapsed at"), "{human}");
    assert_eq!(
        std::fs::read(env.claims_path()).unwrap(),
        before,
        "a read wrote"
    );
}

#[test]
fn agents_show_what_each_holds() {
    let env = Env::new();
    let held = env.run_as("alice", &["claim", "build"]).expect_ok();
    env.run_as("bob", &["post", "tests", "queued"]).expect_ok();
    let agents = env.run(&["agents"]).expect_ok();
    let entry = |name: &str| {
        agents
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["agent_id"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(entry("alice")["holds"], serde_json::json!([id_of(&held)]));
    assert_eq!(entry("bob")["holds"], serde_json::json!([]));
    let table = env.run(&["--human", "agents"]).stdout;
    assert!(table.contains(&id_of(&held)), "{table}");
}

#[test]
fn a_worker_that_ended_is_stopped_and_one_that_lets_its_lease_lapse_is_stale() {
    let env = Env::new();
    env.run(&["post", "job", "one"]).expect_ok();
    let run = env.run_as("worker_1", &["work", "--max-items", "1", "--", "true"]);
    assert_eq!(run.code, 0, "{run:?}");
    let status = |name: &str| {
        let agents = env.run(&["agents"]).expect_ok();
        agents
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["agent_id"] == name)
            .map(|a| a["status"].clone())
            .unwrap()
    };
    assert_eq!(status("worker_1"), "stopped");
    // Acting again, it is active again.
    env.run_as("worker_1", &["claim", "build"]).expect_ok();
    assert_eq!(status("worker_1"), "active");
    // A holder whose lease lapsed is gone, seen a moment ago or not.
    env.run_as("crashed", &["claim", "deploy", "--lease", "150ms"])
        .expect_ok();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(status("crashed"), "stale");
}

#[test]
fn on_postgresql_a_worker_that_ended_is_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let schema = coord_testkit::shared_cluster().fresh_schema("cli_stopped");
    let coord = |agent: &str, args: &[&str]| {
        crate::support::run_on_database(tmp.path(), &schema, agent, args)
    };
    coord("boss", &["post", "job", "one"]).expect_ok();
    assert_eq!(
        coord("worker_1", &["work", "--max-items", "1", "--", "true"]).code,
        0
    );
    let agents = coord("boss", &["agents"]).expect_ok();
    let worker = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent_id"] == "worker_1")
        .unwrap();
    assert_eq!(worker["status"], "stopped", "{worker}");
    coord("worker_1", &["claim", "build"]).expect_ok();
    let agents = coord("boss", &["agents"]).expect_ok();
    let worker = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent_id"] == "worker_1")
        .unwrap();
    assert_eq!(worker["status"], "active", "{worker}");
}

#[test]
fn list_takes_the_newest_n_and_items_changed_since_a_time() {
    let env = Env::new();
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(id_of(
            &env.run(&["post", "tests", &format!("item {n}")])
                .expect_ok(),
        ));
    }
    let ids_of = |v: Value| -> Vec<String> { v.as_array().unwrap().iter().map(id_of).collect() };
    assert_eq!(
        ids_of(env.run(&["list", "--limit", "2"]).expect_ok()),
        ids[2..]
    );
    assert_eq!(ids_of(env.run(&["list", "--limit", "9"]).expect_ok()), ids);
    let second = env.run(&["show", &ids[1]]).expect_ok();
    let since = second["posted_at"].as_str().unwrap().to_owned();
    assert_eq!(
        ids_of(env.run(&["list", "--since", &since]).expect_ok()),
        ids[1..]
    );
    assert_eq!(ids_of(env.run(&["list", "--since", "1h"]).expect_ok()), ids);
    assert!(
        ids_of(
            env.run(&["list", "--since", "2999-01-01T00:00:00Z"])
                .expect_ok()
        )
        .is_empty()
    );
    assert_eq!(env.run(&["list", "--since", "someday"]).code, 2);
}

#[test]
fn an_item_after_a_failed_one_shows_what_blocks_it() {
    let env = Env::new();
    let first = env
        .run(&["post", "build", "compile", "--max-attempts", "1"])
        .expect_ok();
    let second = env
        .run(&[
            "post",
            "deploy",
            "ship",
            "--after",
            &id_of(&first),
            "--on-dependency-failure",
            "wait",
        ])
        .expect_ok();
    assert!(second.get("blocked_by").is_none());
    let taken = env.run_as("w", &["next"]).expect_ok();
    env.run_as("w", &["fail", &id_of(&taken), "--reason", "red"])
        .expect_ok();
    let listed = env.run(&["list", "--status", "pending"]).expect_ok();
    assert_eq!(listed[0]["blocked_by"], serde_json::json!([id_of(&first)]));
    let shown = env.run(&["show", &id_of(&second)]).expect_ok();
    assert_eq!(shown["blocked_by"], serde_json::json!([id_of(&first)]));
}

#[test]
fn nothing_to_take_says_how_many_wait_and_how_many_are_blocked() {
    let env = Env::new();
    let failing = env
        .run(&["post", "build", "compile", "--max-attempts", "1"])
        .expect_ok();
    let taken = env
        .run_as("w", &["next", "--work-type", "build"])
        .expect_ok();
    assert_eq!(id_of(&taken), id_of(&failing));
    env.run_as("w", &["fail", &id_of(&taken)]).expect_ok();
    env.run(&[
        "post",
        "deploy",
        "blocked",
        "--after",
        &id_of(&failing),
        "--on-dependency-failure",
        "wait",
    ])
    .expect_ok();
    let running = env.run(&["post", "build", "still running"]).expect_ok();
    env.run_as("w2", &["next", "--work-type", "build"])
        .expect_ok();
    env.run(&["post", "deploy", "waits", "--after", &id_of(&running)])
        .expect_ok();
    let err = env
        .run(&["next", "--work-type", "deploy"])
        .expect_error("nothing_to_take", 10);
    assert_eq!(err["waiting"], 2, "{err}");
    assert_eq!(err["blocked"], 1, "{err}");
    assert_eq!(err["work_types"], serde_json::json!(["deploy"]));
}
