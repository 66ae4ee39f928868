//! The CLI contract of the foundation: the seed's six results, concurrency,
//! every error kind and its exit code.

use std::collections::HashSet;
use std::fs;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

// --- The seed's six results ---------------------------------------------------

#[test]
fn seed_1_a_single_agent_claims() {
    let env = Env::new();
    let claim = env
        .run(&[
            "--agent",
            "agent_42",
            "claim",
            "performance_optimization",
            "speed it up",
            "--priority",
            "medium",
        ])
        .expect_ok();
    assert_eq!(claim["agent_id"], "agent_42");
    assert_eq!(claim["work_type"], "performance_optimization");
    assert_eq!(claim["description"], "speed it up");
    assert_eq!(claim["status"], "in_progress");
    assert_eq!(env.records(), vec![claim]);
}

#[test]
fn seed_2_the_file_is_valid_json_with_every_required_field() {
    let env = Env::new();
    let claim: Run = env
        .command(&["claim", "docs"])
        .env_remove("COORD_AGENT_ID")
        .finish()
        .into();
    let claim = claim.expect_ok();
    assert!(
        is_id(&claim["agent_id"], "agent_"),
        "a generated agent id: {claim}"
    );
    assert_eq!(claim["priority"], "medium", "the default priority");
    let records = env.records();
    assert_eq!(records.len(), 1);
    assert_seed_record(&records[0]);
}

#[test]
fn seed_3_a_high_priority_conflict_is_detected() {
    let env = Env::new();
    let first = env.run(&["claim", "deploy", "-p", "high"]).expect_ok();
    let err = env
        .run(&["claim", "deploy", "-p", "critical"])
        .expect_error("coordination_conflict", 3);
    assert_eq!(err["conflicting_work_item_id"], first["work_item_id"]);
    assert_eq!(err["work_type"], "deploy");
    // Other work types, and medium work of the same type, are not blocked.
    env.run(&["claim", "review", "-p", "high"]).expect_ok();
    env.run(&["claim", "deploy", "-p", "medium"]).expect_ok();
    // Once the holder finishes, the type is free again.
    env.run(&["complete", first["work_item_id"].as_str().unwrap()])
        .expect_ok();
    env.run(&["claim", "deploy", "-p", "high"]).expect_ok();
    assert_eq!(env.records().len(), 4);
}

#[test]
fn seed_4_three_medium_claims_of_one_type_all_succeed() {
    let env = Env::new();
    let ids: HashSet<String> = (0..3)
        .map(|_| {
            env.run(&["claim", "refactor", "-p", "medium"]).expect_ok()["work_item_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(env.records().len(), 3);
}

/// `n` processes claim at once; returns their runs.
fn claim_concurrently(env: &Env, n: usize, work_type: &str, priority: &str) -> Vec<Run> {
    // The directory exists first so every process races on the lock, not on mkdir.
    fs::create_dir_all(&env.dir).unwrap();
    let children = (0..n)
        .map(|i| {
            env.spawn(&[
                "--agent",
                &format!("agent_{i}"),
                "claim",
                work_type,
                "-p",
                priority,
            ])
        })
        .collect();
    wait_all(children)
}

fn assert_all_claimed(env: &Env, runs: &[Run]) {
    let ids: HashSet<String> = runs
        .iter()
        .map(|r| r.expect_ok()["work_item_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), runs.len(), "distinct ids");
    let records = env.records();
    assert_eq!(records.len(), runs.len(), "no claim lost or doubled");
    let stored: HashSet<String> = records
        .iter()
        .map(|r| r["work_item_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(stored, ids);
    let coordination_ids: HashSet<&str> = records
        .iter()
        .map(|r| r["coordination_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        coordination_ids.len(),
        runs.len(),
        "distinct coordination ids"
    );
    records.iter().for_each(assert_seed_record);
}

#[test]
fn seed_5_concurrent_medium_claims_all_succeed() {
    for n in [5, 20, 64] {
        let env = Env::new();
        let runs = claim_concurrently(&env, n, "analysis", "medium");
        assert_all_claimed(&env, &runs);
    }
}

#[test]
fn seed_5_concurrent_high_claims_of_one_type_give_exactly_one_winner() {
    let env = Env::new();
    let runs = claim_concurrently(&env, 5, "migration", "high");
    let winners: Vec<&Run> = runs.iter().filter(|r| r.code == 0).collect();
    assert_eq!(winners.len(), 1, "{runs:?}");
    let winner = winners[0].json();
    for loser in runs.iter().filter(|r| r.code != 0) {
        let err = loser.expect_error("coordination_conflict", 3);
        assert_eq!(err["conflicting_work_item_id"], winner["work_item_id"]);
    }
    assert_eq!(env.records(), vec![winner]);
}

#[test]
fn seed_6_every_record_has_the_json_structure() {
    let env = Env::new();
    for (work_type, priority) in [
        ("a", "low"),
        ("b", "medium"),
        ("c", "high"),
        ("d", "critical"),
    ] {
        env.run(&["claim", work_type, "some work", "-p", priority])
            .expect_ok();
    }
    let id = env.records()[0]["work_item_id"]
        .as_str()
        .unwrap()
        .to_owned();
    env.run(&["complete", &id, "--result", "fine"]).expect_ok();
    let records = env.records();
    assert_eq!(records.len(), 4);
    records.iter().for_each(assert_seed_record);
    // Every record is on its own line, so the file reads well and greps well.
    let text = fs::read_to_string(env.claims_path()).unwrap();
    assert_eq!(text.lines().count(), 6, "{text}");
}

// --- Lifecycle ------------------------------------------------------------------

#[test]
fn progress_complete_and_fail_print_the_updated_claim() {
    let env = Env::new();
    let id = env.run(&["claim", "build"]).expect_ok()["work_item_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let progressed = env.run(&["progress", &id, "40"]).expect_ok();
    assert_eq!(progressed["progress"], 40);
    assert!(progressed["last_update"].is_string());
    let done = env
        .run(&["complete", &id, "--result", "all green"])
        .expect_ok();
    assert_eq!(done["status"], "completed");
    assert_eq!(done["result"], "all green");
    assert!(done["completed_at"].is_string());
    assert_eq!(env.run(&["show", &id]).expect_ok(), done);

    let other = env.run(&["claim", "build"]).expect_ok()["work_item_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let failed = env
        .run(&["fail", &other, "--reason", "disk full"])
        .expect_ok();
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["reason"], "disk full");
    assert!(failed["failed_at"].is_string());
}

#[test]
fn list_filters_by_status_work_type_and_owner() {
    let env = Env::new();
    let a = env.run(&["--agent", "alice", "claim", "build"]).expect_ok();
    env.run(&["--agent", "bob", "claim", "build"]).expect_ok();
    env.run(&["--agent", "bob", "claim", "test"]).expect_ok();
    env.run(&[
        "--agent",
        "alice",
        "complete",
        a["work_item_id"].as_str().unwrap(),
    ])
    .expect_ok();

    let count = |args: &[&str]| env.run(args).expect_ok().as_array().unwrap().len();
    assert_eq!(count(&["list"]), 3);
    assert_eq!(count(&["list", "--status", "in_progress"]), 2);
    assert_eq!(count(&["list", "--status", "completed"]), 1);
    assert_eq!(count(&["list", "--work-type", "build"]), 2);
    assert_eq!(count(&["list", "--owner", "bob"]), 2);
    assert_eq!(count(&["list", "--owner", "bob", "--work-type", "test"]), 1);
    assert_eq!(count(&["list", "--owner", "nobody"]), 0);
}

#[test]
fn reading_a_missing_directory_is_refused_and_an_empty_one_lists_nothing() {
    let env = Env::new();
    env.run(&["list"]).expect_error("file_read_error", 7);
    assert!(!env.dir.exists(), "readers do not create the directory");
    fs::create_dir_all(&env.dir).unwrap();
    assert_eq!(env.run(&["list"]).expect_ok(), Value::Array(vec![]));
    env.run(&["show", "work_1"]).expect_error("not_found", 4);
}

#[test]
fn the_agent_id_comes_from_the_environment_too() {
    let env = Env::new();
    let claim: Run = env
        .command(&["claim", "x"])
        .env("COORD_AGENT_ID", "from_env")
        .finish()
        .into();
    assert_eq!(claim.expect_ok()["agent_id"], "from_env");
}

// --- Every error kind, from the CLI ---------------------------------------------

#[test]
fn not_found_is_exit_4() {
    let env = Env::new();
    env.run(&["claim", "x"]).expect_ok();
    for args in [
        &["progress", "work_0", "5"][..],
        &["complete", "work_0"],
        &["fail", "work_0"],
        &["show", "work_0"],
    ] {
        let err = env.run(args).expect_error("not_found", 4);
        assert_eq!(err["work_item_id"], "work_0");
    }
}

#[test]
fn validation_failures_are_exit_6_and_change_nothing() {
    let env = Env::new();
    let id = env.run(&["claim", "x"]).expect_ok()["work_item_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = fs::read(env.claims_path()).unwrap();
    for args in [
        &["claim", ""][..],
        &["claim", "   "],
        &["--agent", "", "claim", "x"],
        &["progress", &id, "101"],
        &["progress", &id, "-1"],
    ] {
        let err = env
            .run(args)
            .expect_error("coordination_validation_failed", 6);
        assert_eq!(err["reason"], "input", "{args:?}");
        assert_eq!(
            fs::read(env.claims_path()).unwrap(),
            before,
            "{args:?} changed the file"
        );
    }
    env.run(&["complete", &id]).expect_ok();
    let completed = fs::read(env.claims_path()).unwrap();
    for args in [
        &["complete", &id][..],
        &["fail", &id],
        &["progress", &id, "5"],
    ] {
        let err = env
            .run(args)
            .expect_error("coordination_validation_failed", 6);
        assert!(
            err["message"]
                .as_str()
                .unwrap()
                .contains("only an in-progress claim"),
            "{err}"
        );
        assert_eq!(err["reason"], "transition", "{err}");
        assert_eq!(fs::read(env.claims_path()).unwrap(), completed);
    }
}

#[test]
fn a_corrupt_claims_file_is_exit_6_and_keeps_every_byte() {
    for garbage in [
        &b"{\"not\": \"an array\"}"[..],
        b"[{\"work_item_id\": 1}]",
        b"[1,",
        b"\xff\xfe",
        b"[\"x\"]",
    ] {
        let env = Env::new();
        fs::create_dir_all(&env.dir).unwrap();
        fs::write(env.claims_path(), garbage).unwrap();
        for args in [
            &["claim", "x"][..],
            &["list"],
            &["show", "work_1"],
            &["complete", "work_1"],
        ] {
            let err = env
                .run(args)
                .expect_error("coordination_validation_failed", 6);
            assert!(
                err["message"]
                    .as_str()
                    .unwrap()
                    .contains("work_claims.json"),
                "{err}"
            );
            assert_eq!(err["reason"], "stored_data", "{err}");
        }
        assert_eq!(fs::read(env.claims_path()).unwrap(), garbage);
    }
}

#[test]
fn an_unreadable_claims_file_is_exit_7_file_read_error() {
    let env = Env::new();
    // A directory where the claims file should be: reading it fails even as root.
    fs::create_dir_all(env.claims_path()).unwrap();
    for args in [&["claim", "x"][..], &["list"]] {
        let err = env.run(args).expect_error("file_read_error", 7);
        assert!(err["path"].as_str().unwrap().ends_with(CLAIMS), "{err}");
    }
    assert!(env.claims_path().is_dir());
}

#[test]
fn a_coordination_dir_that_is_a_file_is_exit_7() {
    let env = Env::new();
    fs::write(&env.dir, "not a directory").unwrap();
    env.run(&["claim", "x"]).expect_error("file_read_error", 7);
    assert_eq!(fs::read_to_string(&env.dir).unwrap(), "not a directory");
}

#[test]
#[allow(unsafe_code)] // pre_exec runs async-signal-safe libc calls in the child
fn a_failed_write_is_exit_7_atomic_write_failed_and_keeps_the_file() {
    use std::os::unix::process::CommandExt;
    let env = Env::new();
    env.run(&["claim", "first"]).expect_ok();
    let before = fs::read(env.claims_path()).unwrap();
    let mut cmd = env.command(&["claim", "second"]);
    // A file size limit smaller than the new claims file makes the write fail
    // with EFBIG, even for root. SIGXFSZ is ignored so the write returns an
    // error instead of killing the process.
    let limit = before.len() as libc::rlim_t;
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let rl = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &rl) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let events_before = fs::read(env.dir.join("coordination_events.jsonl")).unwrap();
    let run: Run = cmd.finish().into();
    let err = run.expect_error("atomic_write_failed", 7);
    // The event log is written ahead of the claims file, so it hits the
    // limit first; either way nothing of the change may remain.
    let path = err["path"].as_str().unwrap();
    assert!(
        path.ends_with("coordination_events.jsonl") || path.ends_with(CLAIMS),
        "{err}"
    );
    assert_eq!(fs::read(env.claims_path()).unwrap(), before);
    assert_eq!(
        fs::read(env.dir.join("coordination_events.jsonl")).unwrap(),
        events_before
    );
    let leftovers: Vec<_> = fs::read_dir(&env.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("coord-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_held_lock_is_waited_for_then_exit_5_lock_timeout() {
    let env = Env::new();
    let held = hold_lock(&env.dir);
    let started = std::time::Instant::now();
    let err = env
        .run(&["--lock-timeout", "300ms", "claim", "x"])
        .expect_error("lock_timeout", 5);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(err["waited_ms"], 300);
    assert!(!env.claims_path().exists());

    // A claimer that waits long enough gets through once the lock is free.
    let child = env.spawn(&["--lock-timeout", "20s", "claim", "x"]);
    std::thread::sleep(Duration::from_millis(300));
    drop(held);
    let run: Run = child.finish().into();
    run.expect_ok();
}

#[test]
fn usage_errors_keep_the_parsers_exit_2() {
    let env = Env::new();
    for args in [
        &["claim", "x", "--priority", "urgent"][..],
        &["claim"],
        &["frobnicate"],
        &["claim", "x", "--bogus"],
        &["progress", "work_1", "half"],
        &["--lock-timeout", "soon", "list"],
        &["list", "--status", "sleeping"],
    ] {
        let run = env.run(args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(run.stdout.is_empty(), "{args:?}: {run:?}");
        assert!(run.stderr.starts_with("error: "), "{args:?}: {run:?}");
        assert!(run.stderr.ends_with("try '--help'.\n"), "{args:?}: {run:?}");
    }
    assert!(!env.dir.exists());
}

#[test]
fn files_of_the_older_tools_keep_unknown_fields_and_active_statuses() {
    let env = Env::new();
    fs::create_dir_all(&env.dir).unwrap();
    // Claimed by the shell helper a minute ago, for 30 minutes.
    let claimed_at = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60);
    let legacy = format!(
        r#"[
  {{"work_item_id": "work_1", "agent_id": "agent_sh", "reactor_id": "r1", "work_type": "lint", "description": "from bash",
   "priority": "high", "team": "core", "claimed_at": "{claimed_at}", "estimated_duration": "30m",
   "status": "active", "telemetry": {{"trace_id": "t-1"}}}}
]"#
    );
    fs::write(env.claims_path(), &legacy).unwrap();
    env.run(&["claim", "lint", "-p", "high"])
        .expect_error("coordination_conflict", 3);
    env.run(&["claim", "lint"]).expect_ok();
    let records = env.records();
    assert_eq!(records.len(), 2);
    let old = &records[0];
    assert_eq!(old["status"], "active");
    assert_eq!(old["team"], "core");
    assert_eq!(old["telemetry"]["trace_id"], "t-1");
    assert_eq!(old["reactor_id"], "r1");
    assert_eq!(old["estimated_duration"], "30m");
    let shown = env.run(&["show", "work_1"]).expect_ok();
    assert_eq!(
        shown["status"], "in_progress",
        "output uses the documented status names"
    );
    assert_eq!(shown["team"], "core", "output keeps other tools' fields");
}

#[test]
fn human_output_is_for_people_and_json_stays_the_default() {
    let env = Env::new();
    let run = env.run(&["--human", "claim", "deploy", "ship it", "-p", "high"]);
    assert_eq!(run.code, 0, "{run:?}");
    let id = id_of(&env.records()[0]);
    assert!(run.stdout.starts_with(&id), "{run:?}");
    assert!(
        run.stdout
            .contains("in_progress  deploy (high)  held by agent_test"),
        "{run:?}"
    );
    assert!(
        serde_json::from_str::<Value>(&run.stdout).is_err(),
        "not JSON"
    );

    let refused = env.run(&["--human", "claim", "deploy", "-p", "critical"]);
    assert_eq!(refused.code, 3, "exit codes do not change");
    assert!(
        refused.stderr.starts_with("error[coordination_conflict]: "),
        "{refused:?}"
    );

    let log = env.run(&["--human", "log"]);
    assert!(
        log.stdout.contains("  claimed  ") && log.stdout.contains(&id),
        "{log:?}"
    );
    assert_eq!(
        env.run(&["--human", "list", "--status", "failed"]).stdout,
        "no work items\n"
    );
    // Without the flag, the same commands print JSON, also on a terminal.
    env.run(&["show", &id]).expect_ok();
}

/// An environment variable that is set but empty counts as unset, and a
/// flag on the command line beats a variable (`--dir` beats a database URL
/// from the environment).
#[test]
fn empty_variables_count_as_unset_and_flags_beat_variables() {
    let env = Env::new();
    let cwd = env.dir.parent().unwrap().to_owned();
    let with_empty = |args: &[&str]| -> Run {
        let mut cmd = env.command(args);
        for var in [
            "COORD_DIR",
            "COORD_DATABASE_URL",
            "COORD_SCHEMA",
            "COORD_SYNC_EVENTS",
            "COORD_NO_SHELL_LOCK",
            "COORD_ALLOW_UNSAFE_FILESYSTEM",
            "COORD_COMPACT_AT",
            "COORD_COMPACT_KEEP",
            "COORD_FENCE",
            "COORD_LOG",
        ] {
            cmd.env(var, "");
        }
        cmd.current_dir(&cwd).finish().into()
    };
    let claim = with_empty(&["claim", "build"]).expect_ok();
    let default_dir = cwd.join("agent_coordination");
    assert!(default_dir.join(CLAIMS).exists(), "the default directory");
    with_empty(&["complete", &id_of(&claim)]).expect_ok();
    let all = with_empty(&["list"]).expect_ok();
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");

    // A flag beats its variable, and --dir beats a database from the
    // environment; both flags at once name two stores.
    let elsewhere = cwd.join("elsewhere");
    let run: Run = env
        .command(&["--dir", elsewhere.to_str().unwrap(), "claim", "build"])
        .env(
            "COORD_DATABASE_URL",
            "postgresql://coord@nowhere.invalid/coord",
        )
        .finish()
        .into();
    run.expect_ok();
    assert!(elsewhere.join(CLAIMS).exists());
    let both = env.run(&[
        "--dir",
        "x",
        "--database-url",
        "postgresql://nowhere.invalid/db",
        "list",
    ]);
    assert_eq!(both.code, 2, "{both:?}");
    assert!(both.stderr.contains("--dir and --database-url"), "{both:?}");
}

/// A directory coord cannot write to (read-only, or a full disk) fails a
/// change with `atomic_write_failed` naming the file it could not write,
/// not `file_read_error` naming a file that does not exist; reading still
/// works, and nothing changes.
#[test]
fn a_directory_that_cannot_be_written_is_atomic_write_failed_naming_the_file() {
    let Some(disk) = coord_testkit::Tmpfs::mount("400k") else {
        return;
    };
    let dir = disk.path().join("coordination");
    run_in(&dir, "agent_test", &["claim", "build"]).expect_ok();
    let before = fs::read(dir.join(CLAIMS)).unwrap();

    // A full disk: the shell tools' lock file (our pid in it) cannot be made.
    let filler = disk.fill();
    let err =
        run_in(&dir, "agent_test", &["claim", "build"]).expect_error("atomic_write_failed", 7);
    assert!(
        err["path"]
            .as_str()
            .unwrap()
            .ends_with("work_claims.json.lock"),
        "{err}"
    );
    assert!(
        err["message"].as_str().unwrap().contains("No space left"),
        "{err}"
    );
    // Without it, the claims file itself cannot be written.
    let err = run_in(&dir, "agent_test", &["--no-shell-lock", "claim", "build"])
        .expect_error("atomic_write_failed", 7);
    assert!(err["path"].as_str().unwrap().ends_with(CLAIMS), "{err}");
    assert_eq!(fs::read(dir.join(CLAIMS)).unwrap(), before);
    fs::remove_file(filler).unwrap();

    // Read-only: the lock file cannot be made.
    fs::remove_file(dir.join("coord.lock")).unwrap();
    disk.read_only();
    let err =
        run_in(&dir, "agent_test", &["claim", "build"]).expect_error("atomic_write_failed", 7);
    assert!(
        err["path"].as_str().unwrap().ends_with("coord.lock"),
        "{err}"
    );
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("Read-only file system"),
        "{err}"
    );
    let listed = run_in(&dir, "agent_test", &["list"]).expect_ok();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(fs::read(dir.join(CLAIMS)).unwrap(), before);
}

/// A store whose fence counter is at its end refuses, saying so.
#[test]
fn an_exhausted_counter_is_exit_6_with_its_reason() {
    let env = Env::new();
    env.run(&["claim", "x"]).expect_ok();
    fs::write(
        env.dir.join("coord_state.json"),
        format!("{{\"fence\": {}, \"revision\": 0}}", u64::MAX),
    )
    .unwrap();
    let err = env
        .run(&["claim", "x"])
        .expect_error("coordination_validation_failed", 6);
    assert_eq!(err["reason"], "exhausted", "{err}");
}

#[test]
fn completions_and_the_man_page_come_from_the_command_line_itself() {
    let env = Env::new();
    let bash = env.run(&["completions", "bash"]);
    assert_eq!(bash.code, 0, "{bash:?}");
    assert!(bash.stdout.contains("_coord()"), "{}", bash.stdout);
    for word in [
        "claim",
        "dashboard",
        "--idempotency-key",
        "--metrics-listen",
    ] {
        assert!(
            bash.stdout.contains(word),
            "no {word} in the bash completions"
        );
    }
    let zsh = env.run(&["completions", "zsh"]);
    assert!(zsh.stdout.starts_with("#compdef coord"), "{}", zsh.stdout);
    let man = env.run(&["man"]);
    assert_eq!(man.code, 0, "{man:?}");
    assert!(man.stdout.contains(".TH coord 1"), "{}", man.stdout);
    assert!(man.stdout.contains("claim"), "{}", man.stdout);
    assert_eq!(env.run(&["completions", "nosh"]).code, 2);
    assert!(!env.dir.exists(), "no store was opened");
}
