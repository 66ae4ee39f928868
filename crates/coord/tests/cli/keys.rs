//! `--idempotency-key` / `COORD_IDEMPOTENCY_KEY`: a command sent again
//! with the same key answers as the first time and changes nothing, on
//! both stores; `coord run` keeps its own key from its child.

use coord_testkit::shared_cluster;
use serde_json::Value;

use crate::support::{Env, Finish, Run, id_of, run_on_database};

#[test]
fn a_post_sent_twice_with_one_key_posts_once() {
    let env = Env::new();
    let args = ["post", "tests", "run them", "--idempotency-key", "p-1"];
    let first = env.run(&args).expect_ok();
    let again = env.run(&args).expect_ok();
    assert_eq!(again, first);
    assert_eq!(env.records().len(), 1);
    // Without a key, or with an empty variable (unset), each call posts.
    env.run(&["post", "tests", "run them"]).expect_ok();
    let empty = env
        .command(&["post", "tests", "run them"])
        .env("COORD_IDEMPOTENCY_KEY", "")
        .finish();
    Run::from(empty).expect_ok();
    assert_eq!(env.records().len(), 3);
}

#[test]
fn the_key_may_come_from_the_environment_and_covers_acting_commands() {
    let env = Env::new();
    let keyed = |args: &[&str], key: &str| -> Run {
        env.command(args)
            .env("COORD_IDEMPOTENCY_KEY", key)
            .finish()
            .into()
    };
    let claim = keyed(&["claim", "deploy", "--priority", "high"], "c-1").expect_ok();
    let id = id_of(&claim);
    let fence = claim["fence"].to_string();
    let complete = ["complete", &id, "--fence", &fence, "--result", "shipped"];
    let done = keyed(&complete, "done-1").expect_ok();
    assert_eq!(done["status"], "completed");
    // Unkeyed, completing twice is refused; with the key it is answered.
    assert_eq!(keyed(&complete, "done-1").expect_ok(), done);
    let twice = env.run(&complete);
    assert_ne!(twice.code, 0, "{twice:?}");
    let events = env.events();
    assert_eq!(events.len(), 2, "claimed and completed once: {events:?}");
}

#[test]
fn a_key_sent_with_other_arguments_is_refused_and_changes_nothing() {
    let env = Env::new();
    env.run(&["post", "tests", "one", "--idempotency-key", "k"])
        .expect_ok();
    let before = env.records();
    let err = env
        .run(&["post", "tests", "two", "--idempotency-key", "k"])
        .expect_error("coordination_validation_failed", 6);
    assert_eq!(err["reason"], "input");
    let message = err["message"].as_str().unwrap();
    assert!(message.contains("different call"), "{message}");
    assert_eq!(env.records(), before);
    // A key that is no key at all is refused the same way.
    let long = "k".repeat(257);
    env.run(&["post", "tests", "one", "--idempotency-key", &long])
        .expect_error("coordination_validation_failed", 6);
}

#[test]
fn coord_run_keeps_its_key_from_the_child() {
    let env = Env::new();
    let run: Run = env
        .command(&[
            "run",
            "build",
            "--",
            "sh",
            "-c",
            "echo key=${COORD_IDEMPOTENCY_KEY:-none}",
        ])
        .env("COORD_IDEMPOTENCY_KEY", "the-runner's")
        .finish()
        .into();
    assert_eq!(run.code, 0, "{run:?}");
    let records = env.records();
    assert_eq!(records[0]["result"], "key=none", "{records:?}");
}

#[test]
fn on_postgresql_a_claim_sent_twice_with_one_key_claims_once() {
    let tmp = tempfile::tempdir().unwrap();
    let schema = shared_cluster().fresh_schema("cli_keys");
    let coord = |args: &[&str]| run_on_database(tmp.path(), &schema, "agent", args);
    let args = ["claim", "tests", "--idempotency-key", "c-1"];
    let first = coord(&args).expect_ok();
    assert_eq!(coord(&args).expect_ok(), first);
    let all = coord(&["list"]).expect_ok();
    assert_eq!(all.as_array().map(Vec::len), Some(1), "{all}");
    let other = coord(&["claim", "docs", "--idempotency-key", "c-1"])
        .expect_error("coordination_validation_failed", 6);
    assert_eq!(other["reason"], Value::from("input"));
}
