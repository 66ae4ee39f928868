//! `coord --database-url`: the same contract on PostgreSQL, with real
//! processes racing for work on a throwaway cluster (a schema per test).

use std::collections::HashSet;
use std::process::Command;

use coord_testkit::shared_cluster;
use serde_json::Value;

use crate::support::{Finish, Run, command_in};

/// A schema of its own on the shared cluster, and `coord` pointed at it.
struct PgEnv {
    _tmp: tempfile::TempDir,
    url: String,
    schema: String,
}

impl PgEnv {
    fn new() -> PgEnv {
        let cluster = shared_cluster();
        PgEnv {
            _tmp: tempfile::tempdir().unwrap(),
            url: cluster.url(),
            schema: cluster.fresh_schema("cli"),
        }
    }

    fn command(&self, agent: &str, args: &[&str]) -> Command {
        // The directory must stay untouched: the database is the store.
        let mut cmd = command_in(&self._tmp.path().join("unused"), agent, args);
        cmd.env("COORD_DATABASE_URL", &self.url)
            .env("COORD_SCHEMA", &self.schema);
        cmd
    }

    fn run(&self, agent: &str, args: &[&str]) -> Run {
        self.command(agent, args).finish().into()
    }

    /// Starts `n` processes at once and waits for them all.
    fn race(&self, n: usize, args: impl Fn(usize) -> Vec<String>) -> Vec<Run> {
        let children: Vec<_> = (0..n)
            .map(|i| {
                let args = args(i);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                self.command(&format!("agent_{i}"), &args).spawn().unwrap()
            })
            .collect();
        children.into_iter().map(|c| c.finish().into()).collect()
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn twenty_processes_racing_for_exclusive_work_get_exactly_one_claim() {
    let env = PgEnv::new();
    let runs = env.race(20, |_| {
        strings(&["claim", "deploy", "ship it", "-p", "high"])
    });
    let won: Vec<&Run> = runs.iter().filter(|r| r.code == 0).collect();
    assert_eq!(won.len(), 1, "{runs:?}");
    for r in runs.iter().filter(|r| r.code != 0) {
        r.expect_error("coordination_conflict", 3);
    }
    let listed = env.run("x", &["list"]).expect_ok();
    let items = listed.as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["work_item_id"], won[0].json()["work_item_id"]);
    assert!(
        env._tmp.path().read_dir().unwrap().next().is_none(),
        "no coordination directory was made"
    );
}

#[test]
fn twenty_processes_that_do_not_conflict_all_succeed() {
    let env = PgEnv::new();
    let runs = env.race(20, |i| {
        if i % 2 == 0 {
            strings(&["claim", "build", "medium work"])
        } else {
            vec![
                "claim".into(),
                format!("deploy_{i}"),
                "own type".into(),
                "-p".into(),
                "high".into(),
            ]
        }
    });
    let ids: HashSet<String> = runs
        .iter()
        .map(|r| r.expect_ok()["work_item_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 20);
    let listed = env.run("x", &["list"]).expect_ok();
    assert_eq!(listed.as_array().unwrap().len(), 20);
}

#[test]
fn workers_in_separate_processes_take_each_posted_item_once() {
    let env = PgEnv::new();
    let mut posted = HashSet::new();
    for n in 0..24 {
        let run = env.run("boss", &["post", &format!("t{}", n % 5), "job"]);
        posted.insert(run.expect_ok()["work_item_id"].as_str().unwrap().to_owned());
    }
    let runs = env.race(8, |_| {
        strings(&[
            "work",
            "--idle-exit",
            "1s",
            "--",
            "sh",
            "-c",
            "echo $COORD_WORK_ITEM_ID",
        ])
    });
    for r in &runs {
        assert_eq!(r.code, 0, "{r:?}");
    }
    let done = env.run("x", &["list", "--status", "completed"]).expect_ok();
    let done: Vec<String> = done
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["work_item_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(done.len(), posted.len(), "each item completed once");
    assert_eq!(done.into_iter().collect::<HashSet<_>>(), posted);
    // Each completion is in the log once.
    let log = env.run("x", &["log"]);
    let completed = log
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"] == "completed")
        .count();
    assert_eq!(completed, 24);
}

#[test]
fn run_hands_the_child_the_database_and_records_its_outcome() {
    let env = PgEnv::new();
    let run: Run = env
        .command(
        "runner",
        &[
            "run",
            "report",
            "--",
            "sh",
            "-c",
            r#"test -n "$COORD_DATABASE_URL" && "$COORD" progress "$COORD_WORK_ITEM_ID" 40 >/dev/null && echo "schema=$COORD_SCHEMA""#,
        ],
    )
        .env("COORD", env!("CARGO_BIN_EXE_coord"))
        .finish()
        .into();
    assert_eq!(run.code, 0, "{run:?}");
    let items = env.run("x", &["list"]).expect_ok();
    let item = &items.as_array().unwrap()[0];
    assert_eq!(item["status"], "completed");
    assert_eq!(item["result"], format!("schema={}", env.schema));
}

#[test]
fn an_unreachable_database_is_a_database_error() {
    let env = PgEnv::new();
    let mut cmd = env.command("x", &["list"]);
    cmd.env("COORD_DATABASE_URL", "host=/nonexistent/socket user=nobody");
    let run: Run = cmd.finish().into();
    let err = run.expect_error("database_error", 12);
    let message = err["message"].as_str().unwrap();
    assert!(message.contains("connect"), "{err}");
    // It names where it tried.
    assert!(
        message.contains("/nonexistent/socket/.s.PGSQL.5432"),
        "{err}"
    );
    let mut bad = env.command("x", &["list"]);
    bad.env("COORD_DATABASE_URL", "this is not = a url=");
    let run: Run = bad.finish().into();
    run.expect_error("coordination_validation_failed", 6);
}

#[test]
fn a_claim_waiting_past_lock_timeout_is_a_lock_timeout_and_changes_nothing() {
    let env = PgEnv::new();
    env.run("a", &["list"]).expect_ok(); // makes the schema
    // Another session holds the work type's lock, as a slow claimer would.
    let mut other = postgres::Client::connect(&env.url, postgres::NoTls).unwrap();
    let mut tx = other.transaction().unwrap();
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&0x636f_6f72_i32, &format!("{}/deploy", env.schema)],
    )
    .unwrap();
    let started = std::time::Instant::now();
    let run = env.run(
        "a",
        &["claim", "deploy", "-p", "high", "--lock-timeout", "300ms"],
    );
    let err = run.expect_error("lock_timeout", 5);
    assert_eq!(err["path"], format!("postgresql:{}", env.schema));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // Work that excludes nobody takes no lock, and goes through.
    env.run("a", &["claim", "deploy", "-p", "low"]).expect_ok();
    tx.rollback().unwrap();
    let items = env.run("x", &["list"]).expect_ok();
    assert_eq!(items.as_array().unwrap().len(), 1, "{items}");
}

/// PostgreSQL's own schemas are refused before anything is written, and an
/// absurd lock timeout is PostgreSQL's longest, not an error.
#[test]
fn system_schemas_are_refused_and_any_lock_timeout_is_taken() {
    let env = PgEnv::new();
    for schema in ["pg_catalog", "information_schema", "pg_anything"] {
        let mut cmd = env.command("a", &["claim", "build"]);
        cmd.env("COORD_SCHEMA", schema);
        let run: Run = cmd.finish().into();
        let err = run.expect_error("coordination_validation_failed", 6);
        assert!(
            err["message"]
                .as_str()
                .unwrap()
                .contains("PostgreSQL's own"),
            "{err}"
        );
    }
    env.run(
        "a",
        &["--lock-timeout", "18446744073709551615", "claim", "build"],
    )
    .expect_ok();
}

/// 120 `coord next` processes at once over 100 items of five work types,
/// 25 of each priority (one high or critical item per type can be held at
/// a time): they take exactly the 55 that can be taken, best first, and the
/// other 65 are told nothing is left (exit 10).
#[test]
fn concurrent_next_processes_take_every_ready_item_best_first() {
    let env = PgEnv::new();
    let priorities = ["low", "medium", "high", "critical"];
    for n in 0..100 {
        let work_type = format!("deploy_{}", n % 5);
        env.run(
            "boss",
            &["post", &work_type, "item", "-p", priorities[n % 4]],
        )
        .expect_ok();
    }
    // All 120 at once: held at the table's lock until every one waits there.
    let mut gate = postgres::Client::connect(&env.url, postgres::NoTls).unwrap();
    let mut tx = gate.transaction().unwrap();
    tx.batch_execute(&format!(
        "LOCK TABLE {}.coord_claims IN EXCLUSIVE MODE",
        env.schema
    ))
    .unwrap();
    let children: Vec<_> = (0..120)
        .map(|i| {
            env.command(&format!("agent_{i}"), &["next", "--lease", "10m"])
                .spawn()
                .unwrap()
        })
        .collect();
    let mut watcher = postgres::Client::connect(&env.url, postgres::NoTls).unwrap();
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(30) {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND datname = current_database()",
                &[],
            )
            .unwrap()
            .get(0);
        if waiting >= 120 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    tx.commit().unwrap();
    let runs: Vec<Run> = children.into_iter().map(|c| c.finish().into()).collect();
    let mut taken = std::collections::HashMap::new();
    for run in &runs {
        match run.code {
            0 => {
                *taken
                    .entry(run.json()["priority"].as_str().unwrap().to_owned())
                    .or_insert(0) += 1
            }
            10 => {
                run.expect_error("nothing_to_take", 10);
            }
            _ => panic!("{run:?}"),
        }
    }
    let count = |p: &str| taken.get(p).copied().unwrap_or(0);
    assert_eq!(
        [
            count("critical"),
            count("high"),
            count("medium"),
            count("low")
        ],
        [5, 0, 25, 25],
        "{taken:?}"
    );
}
