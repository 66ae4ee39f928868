//! What operators do to items not theirs, on both stores: `cancel` and
//! `retry` by id and by filter (with `--dry-run`), the cascade of a
//! dependency that ends badly (`post --on-dependency-failure`), and
//! `pause`/`resume` of a work type.

use serde_json::Value;

use crate::support::{Env, Run, id_of, run_on_database};

/// A store to run commands on: a directory, or a schema of the shared
/// PostgreSQL cluster.
enum On {
    Dir(Env),
    Db {
        scratch: tempfile::TempDir,
        schema: String,
    },
}

impl On {
    fn both(name: &str) -> [On; 2] {
        [
            On::Dir(Env::new()),
            On::Db {
                scratch: tempfile::tempdir().unwrap(),
                schema: coord_testkit::shared_cluster().fresh_schema(name),
            },
        ]
    }

    fn run_as(&self, agent: &str, args: &[&str]) -> Run {
        match self {
            On::Dir(env) => env.run_as(agent, args),
            On::Db { scratch, schema } => run_on_database(scratch.path(), schema, agent, args),
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_as("ops", args)
    }

    fn name(&self) -> &'static str {
        match self {
            On::Dir(_) => "directory",
            On::Db { .. } => "postgresql",
        }
    }

    fn status(&self, id: &str) -> String {
        self.run(&["show", id]).expect_ok()["status"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

fn ids(items: &Value) -> Vec<String> {
    let mut ids: Vec<String> = items.as_array().unwrap().iter().map(id_of).collect();
    ids.sort();
    ids
}

#[test]
fn a_failed_dependency_fails_what_follows_unless_it_waits_and_retry_brings_it_back() {
    for on in On::both("cli_cascade") {
        let store = on.name();
        let build = on
            .run(&["post", "build", "compile", "--max-attempts", "1"])
            .expect_ok();
        let build_id = id_of(&build);
        let deploy = on
            .run(&["post", "deploy", "ship", "--after", &build_id])
            .expect_ok();
        let docs = on
            .run(&[
                "post",
                "docs",
                "publish",
                "--after",
                &build_id,
                "--on-dependency-failure",
                "wait",
            ])
            .expect_ok();
        assert_eq!(docs["on_dependency_failure"], "wait", "{store}");
        assert!(deploy.get("on_dependency_failure").is_none(), "{store}");
        on.run_as("w", &["next", "--work-type", "build"])
            .expect_ok();
        on.run_as("w", &["fail", &build_id, "--reason", "red"])
            .expect_ok();
        let failed = on.run(&["show", &id_of(&deploy)]).expect_ok();
        assert_eq!(failed["status"], "failed", "{store}");
        assert_eq!(
            failed["reason"],
            format!("dependency {build_id} failed"),
            "{store}"
        );
        let waiting = on.run(&["show", &id_of(&docs)]).expect_ok();
        assert_eq!(waiting["status"], "pending", "{store}");
        assert_eq!(
            waiting["blocked_by"],
            serde_json::json!([build_id]),
            "{store}"
        );
        let log = on.run(&["log"]).stdout;
        assert!(
            log.contains("\"event\":\"dependency_failed\""),
            "{store}: {log}"
        );

        // Retry sends the build back; the docs it blocked can follow it.
        let back = on.run(&["retry", &build_id]).expect_ok();
        assert_eq!(
            (back["status"].as_str(), back["attempt"].as_u64()),
            (Some("pending"), Some(2)),
            "{store}"
        );
        on.run_as("w", &["next", "--work-type", "build"])
            .expect_ok();
        on.run_as("w", &["complete", &build_id]).expect_ok();
        let next = on.run_as("w", &["next"]).expect_ok();
        assert_eq!(id_of(&next), id_of(&docs), "{store}");
        // The failed deploy is retried by filter, after a dry run.
        let would = on
            .run(&["retry", "--status", "failed", "--dry-run"])
            .expect_ok();
        assert_eq!(ids(&would), vec![id_of(&deploy)], "{store}");
        assert_eq!(
            would[0]["status"], "failed",
            "a dry run shows items as they are"
        );
        assert_eq!(
            on.status(&id_of(&deploy)),
            "failed",
            "{store}: nothing changed"
        );
        let retried = on.run(&["retry", "--status", "failed"]).expect_ok();
        assert_eq!(ids(&retried), vec![id_of(&deploy)], "{store}");
        assert_eq!(on.status(&id_of(&deploy)), "pending", "{store}");
    }
}

#[test]
fn cancel_by_id_by_filter_and_by_force_on_both_stores() {
    for on in On::both("cli_cancel") {
        let store = on.name();
        let items: Vec<Value> = (0..3)
            .map(|i| on.run(&["post", "lint", &format!("lint {i}")]).expect_ok())
            .collect();
        let other = on.run(&["post", "tests", "keep me"]).expect_ok();
        let held = on.run_as("w", &["next", "--work-type", "lint"]).expect_ok();
        // One by id, with a reason.
        let one = on
            .run(&["cancel", &id_of(&items[2]), "--reason", "duplicate"])
            .expect_ok();
        assert_eq!(
            (one["status"].as_str(), one["reason"].as_str()),
            (Some("cancelled"), Some("duplicate")),
            "{store}"
        );
        assert!(one["cancelled_at"].is_string(), "{store}");
        // Twice is refused, naming why.
        let err = on
            .run(&["cancel", &id_of(&items[2])])
            .expect_error("coordination_validation_failed", 6);
        assert!(
            err["message"]
                .as_str()
                .unwrap()
                .contains("already cancelled"),
            "{store}"
        );
        on.run(&["cancel", "work_nope"])
            .expect_error("not_found", 4);
        // The rest of the type by filter: the one in progress is passed over.
        let dry = on
            .run(&["cancel", "--work-type", "lint", "--dry-run"])
            .expect_ok();
        assert_eq!(ids(&dry), vec![id_of(&items[1])], "{store}");
        assert_eq!(on.status(&id_of(&items[1])), "pending", "{store}");
        let bulk = on.run(&["cancel", "--work-type", "lint"]).expect_ok();
        assert_eq!(ids(&bulk), vec![id_of(&items[1])], "{store}");
        assert_eq!(on.status(&id_of(&other)), "pending", "{store}");
        // In progress: only with --force, and the owner has lost it.
        let err = on
            .run(&["cancel", &id_of(&held)])
            .expect_error("coordination_validation_failed", 6);
        assert!(
            err["message"].as_str().unwrap().contains("--force"),
            "{store}"
        );
        on.run(&["cancel", &id_of(&held), "--force"]).expect_ok();
        on.run_as("w", &["complete", &id_of(&held)])
            .expect_error("lease_expired", 8);
        let agents = on.run(&["agents"]).expect_ok();
        let w = agents
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["agent_id"] == "w")
            .unwrap();
        assert_eq!(w["holds"], serde_json::json!([]), "{store}");
        let stats = on.run(&["stats"]).expect_ok();
        assert_eq!(stats["last_hour"]["cancelled"], 3, "{store}: {stats}");
        assert_eq!(
            stats["items"]["by_status"]["cancelled"], 3,
            "{store}: {stats}"
        );
    }
}

#[test]
fn a_bulk_operation_needs_a_filter_it_can_use_and_not_an_id_too() {
    let env = Env::new();
    let item = env.run(&["post", "lint", "x"]).expect_ok();
    for args in [
        vec!["cancel"],
        vec!["retry"],
        vec!["cancel", "work_1", "--work-type", "lint"],
        vec!["cancel", "--status", "bogus"],
    ] {
        assert_eq!(env.run(&args).code, 2, "{args:?}");
    }
    let err = env
        .run(&["cancel", "--status", "completed"])
        .expect_error("coordination_validation_failed", 6);
    assert!(
        err["message"].as_str().unwrap().contains("pending"),
        "{err}"
    );
    let err = env
        .run(&["retry", "--status", "pending"])
        .expect_error("coordination_validation_failed", 6);
    assert!(err["message"].as_str().unwrap().contains("failed"), "{err}");
    // None of it changed anything.
    assert_eq!(
        env.run(&["show", &id_of(&item)]).expect_ok()["status"],
        "pending"
    );
    assert_eq!(env.events().len(), 1);
}

#[test]
fn a_paused_work_type_waits_until_resumed_and_says_so_everywhere() {
    for on in On::both("cli_pause") {
        let store = on.name();
        let build = on.run(&["post", "build", "compile"]).expect_ok();
        let tests = on
            .run(&["post", "tests", "check", "--priority", "low"])
            .expect_ok();
        let paused = on.run(&["pause", "build"]).expect_ok();
        assert_eq!(paused[0]["work_type"], "build", "{store}");
        assert_eq!(paused[0]["paused_by"], "ops", "{store}");
        assert!(paused[0]["paused_at"].is_string(), "{store}");
        let taken = on.run_as("w", &["next"]).expect_ok();
        assert_eq!(id_of(&taken), id_of(&tests), "{store}");
        let err = on
            .run_as("w", &["next"])
            .expect_error("nothing_to_take", 10);
        assert_eq!(err["paused"], serde_json::json!(["build"]), "{store}");
        let listed = on.run(&["list", "--status", "pending"]).expect_ok();
        assert_eq!(listed[0]["work_type_paused"], true, "{store}");
        let shown = on.run(&["show", &id_of(&build)]).expect_ok();
        assert_eq!(shown["work_type_paused"], true, "{store}");
        let stats = on.run(&["stats"]).expect_ok();
        assert_eq!(stats["paused"], serde_json::json!(["build"]), "{store}");
        // Held claims go on; resuming hands the type out again.
        assert_eq!(
            on.run(&["resume", "build"]).expect_ok(),
            serde_json::json!([])
        );
        let taken = on.run_as("w", &["next"]).expect_ok();
        assert_eq!(id_of(&taken), id_of(&build), "{store}");
        assert!(taken.get("work_type_paused").is_none(), "{store}");
        on.run(&["pause", ""])
            .expect_error("coordination_validation_failed", 6);
    }
}
