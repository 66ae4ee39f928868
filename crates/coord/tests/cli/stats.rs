//! `coord stats`: the board's figures, the same on both stores, checked
//! against a store the test builds.

use coord_testkit::shared_cluster;
use serde_json::{Value, json};

use crate::support::{Env, Run, id_of, run_on_database};

/// Builds the same board through `coord` and returns its stats: two
/// agents, a live high claim and a live medium one, a queue item taken and
/// completed, one failed for good, one still pending.
fn board(coord: &dyn Fn(&str, &[&str]) -> Run) -> Value {
    coord("alice", &["claim", "deploy", "ship", "--priority", "high"]).expect_ok();
    coord("bob", &["claim", "docs", "--lease", "30s"]).expect_ok();
    coord("boss", &["post", "tests", "unit", "--max-attempts", "1"]).expect_ok();
    coord("boss", &["post", "tests", "lint", "--max-attempts", "1"]).expect_ok();
    coord("boss", &["post", "build", "later", "--priority", "low"]).expect_ok();
    let first = coord("carol", &["next", "--work-type", "tests"]).expect_ok();
    coord("carol", &["complete", &id_of(&first)]).expect_ok();
    let second = coord("carol", &["next", "--work-type", "tests"]).expect_ok();
    coord("carol", &["fail", &id_of(&second), "--reason", "red"]).expect_ok();
    // A refused claim changes nothing.
    coord("dave", &["claim", "deploy", "--priority", "high"])
        .expect_error("coordination_conflict", 3);
    coord("alice", &["stats"]).expect_ok()
}

fn check(stats: &Value) {
    let items = &stats["items"];
    assert_eq!(items["total"], 5, "{stats}");
    assert_eq!(
        items["by_status"],
        json!({"in_progress": 2, "completed": 1, "failed": 1, "pending": 1})
    );
    assert_eq!(
        items["by_priority"],
        json!({"high": 1, "medium": 3, "low": 1})
    );
    assert_eq!(
        items["by_work_type"],
        json!({"deploy": 1, "docs": 1, "tests": 2, "build": 1})
    );
    assert_eq!(items["live_by_agent"], json!({"alice": 1, "bob": 1}));
    assert_eq!(stats["oldest_live"]["work_type"], "deploy");
    assert_eq!(stats["oldest_live"]["agent_id"], "alice");
    // bob's 30 s lease ends within the minute.
    assert_eq!(stats["expiring_within_minute"], 1);
    // dave, refused, changed nothing and was not recorded.
    assert_eq!(stats["agents"]["active"], 4, "alice, bob, boss, carol");
    assert_eq!(stats["agents"]["stale"], 0);
    for window in ["last_hour", "last_day"] {
        assert_eq!(
            stats[window],
            json!({"posted": 3, "claimed": 4, "completed": 1, "failed": 1,
                   "requeued": 0, "released": 0, "expired": 0, "cancelled": 0,
                   "retried": 0}),
            "{window}"
        );
    }
    assert_eq!(stats["wait"]["samples"], 2, "two queue items were taken");
    assert!(stats["wait"]["p95_ms"].as_u64().unwrap() >= stats["wait"]["p50_ms"].as_u64().unwrap());
}

#[test]
fn stats_on_a_directory_count_what_the_test_built() {
    let env = Env::new();
    let coord = |agent: &str, args: &[&str]| env.run_as(agent, args);
    check(&board(&coord));
    let human = env.run(&["--human", "stats"]);
    assert_eq!(human.code, 0, "{human:?}");
    assert!(human.stdout.contains("by status:"), "{}", human.stdout);
    assert!(human.stdout.contains("in_progress"), "{}", human.stdout);
}

#[test]
fn stats_on_postgresql_count_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let schema = shared_cluster().fresh_schema("cli_stats");
    let coord = |agent: &str, args: &[&str]| run_on_database(tmp.path(), &schema, agent, args);
    check(&board(&coord));
}
