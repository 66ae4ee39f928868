//! Leases, the queue, retries, the event log, the registry and the shell
//! tools' lock, end to end with real processes.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

#[test]
fn a_killed_agents_claim_expires_is_taken_over_and_its_late_complete_is_refused() {
    let env = Env::new();
    let claim = env
        .run_as(
            "victim",
            &["claim", "deploy", "-p", "high", "--lease", "1s"],
        )
        .expect_ok();
    let id = id_of(&claim);
    // The agent keeps its lease alive with heartbeats... until kill -9.
    let coord = env!("CARGO_BIN_EXE_coord");
    let mut agent = std::process::Command::new("sh")
        .args([
            "-c",
            "while \"$COORD\" heartbeat \"$ID\" >/dev/null; do sleep 0.2; done",
        ])
        .env("COORD_DIR", &env.dir)
        .env("COORD_AGENT_ID", "victim")
        .env("ID", &id)
        .env("COORD", coord)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(1500));
    env.run_as("rival", &["claim", "deploy", "-p", "high"])
        .expect_error("coordination_conflict", 3);
    agent.kill().unwrap(); // SIGKILL
    agent.finish();

    // Within a lease length of the last heartbeat, the work is free again.
    let taken = env
        .run_as(
            "rival",
            &["claim", "deploy", "-p", "high", "--wait-for", "5s"],
        )
        .expect_ok();
    assert!(taken["fence"].as_u64() > claim["fence"].as_u64());
    let late = env
        .run_as("victim", &["complete", &id])
        .expect_error("lease_expired", 8);
    assert_eq!(late["work_item_id"], id.as_str());
    assert_eq!(env.run(&["show", &id]).expect_ok()["status"], "expired");
    let expiry: Vec<Value> = env
        .events()
        .into_iter()
        .filter(|e| e["event"] == "expired")
        .collect();
    assert_eq!(expiry.len(), 1);
    assert_eq!(expiry[0]["work_item_id"], id.as_str());
    assert!(
        expiry[0]["reason"]
            .as_str()
            .unwrap()
            .contains("lease expired")
    );
}

#[test]
fn twenty_concurrent_next_callers_take_each_of_200_items_exactly_once() {
    let env = Env::new();
    let posted: HashSet<String> = (0..200)
        .map(|i| {
            id_of(
                &env.run(&["post", "batch", &format!("item {i}")])
                    .expect_ok(),
            )
        })
        .collect();
    assert_eq!(posted.len(), 200);
    let workers: Vec<_> = (0..20)
        .map(|w| {
            let dir = env.dir.clone();
            thread::spawn(move || {
                let mut taken = Vec::new();
                loop {
                    let run = run_in(
                        &dir,
                        &format!("worker_{w}"),
                        &["next", "--lock-timeout", "60s"],
                    );
                    match run.code {
                        0 => {
                            let item = run.json();
                            assert_eq!(item["agent_id"], format!("worker_{w}"));
                            taken.push(id_of(&item));
                        }
                        10 => return taken,
                        _ => panic!("next failed: {run:?}"),
                    }
                }
            })
        })
        .collect();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for w in workers {
        for id in w.join().unwrap() {
            *counts.entry(id).or_default() += 1;
        }
    }
    assert_eq!(counts.len(), 200, "every item taken");
    assert!(counts.values().all(|n| *n == 1), "no item taken twice");
    assert_eq!(counts.keys().cloned().collect::<HashSet<_>>(), posted);
    let claimed = env
        .events()
        .iter()
        .filter(|e| e["event"] == "claimed")
        .count();
    assert_eq!(claimed, 200);
    let in_progress = env.run(&["list", "--status", "in_progress"]).expect_ok();
    assert_eq!(in_progress.as_array().unwrap().len(), 200);
}

#[test]
fn dependencies_are_respected() {
    let env = Env::new();
    let build = id_of(&env.run(&["post", "build", "compile"]).expect_ok());
    let test = id_of(
        &env.run(&["post", "test", "run the tests", "--after", &build])
            .expect_ok(),
    );
    let ship = id_of(
        &env.run(&[
            "post", "ship", "release", "--after", &build, &test, "-p", "critical",
        ])
        .expect_ok(),
    );
    env.run(&["post", "x", "y", "--after", "work_404"])
        .expect_error("not_found", 4);

    let next = || env.run_as("w", &["next"]);
    assert_eq!(
        id_of(&next().expect_ok()),
        build,
        "only build is ready, though ship is critical"
    );
    next().expect_error("nothing_to_take", 10);
    env.run_as("w", &["complete", &build]).expect_ok();
    assert_eq!(id_of(&next().expect_ok()), test);
    env.run_as("w", &["complete", &test]).expect_ok();
    assert_eq!(id_of(&next().expect_ok()), ship);
}

#[test]
fn backoff_retries_succeed_once_the_way_is_clear() {
    let env = Env::new();
    let holder = id_of(
        &env.run_as("holder", &["claim", "deploy", "-p", "high"])
            .expect_ok(),
    );
    let dir = env.dir.clone();
    let releaser = thread::spawn(move || {
        thread::sleep(Duration::from_millis(700));
        run_in(&dir, "holder", &["complete", &holder]).expect_ok();
    });
    let started = Instant::now();
    env.run_as("waiter", &["claim", "deploy", "-p", "high", "--retry", "0"])
        .expect_error("coordination_conflict", 3);
    let claimed = env
        .run_as(
            "waiter",
            &["claim", "deploy", "-p", "high", "--wait-for", "20s"],
        )
        .expect_ok();
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "it waited for the holder"
    );
    assert_eq!(claimed["agent_id"], "waiter");
    releaser.join().unwrap();

    // `next` waits for work to be posted.
    let dir = env.dir.clone();
    let poster = thread::spawn(move || {
        thread::sleep(Duration::from_millis(500));
        run_in(&dir, "poster", &["post", "later", "arrives late"]).expect_ok();
    });
    let taken = env.run_as("w", &["next", "--retry", "30"]).expect_ok();
    assert_eq!(taken["work_type"], "later");
    poster.join().unwrap();
    env.run_as("w", &["next", "--wait-for", "300ms"])
        .expect_error("nothing_to_take", 10);
}

#[test]
fn contention_with_retries_loses_no_claim() {
    // 12 agents fight over one exclusive work type, each claiming and
    // completing 3 times with --wait-for: all 36 claims go through, one at
    // a time.
    let env = Env::new();
    fs::create_dir_all(&env.dir).unwrap();
    let agents: Vec<_> = (0..12)
        .map(|a| {
            let dir = env.dir.clone();
            thread::spawn(move || {
                for _ in 0..3 {
                    let agent = format!("agent_{a}");
                    let claimed = run_in(
                        &dir,
                        &agent,
                        &[
                            "claim",
                            "hot",
                            "-p",
                            "critical",
                            "--wait-for",
                            "60s",
                            "--lock-timeout",
                            "60s",
                        ],
                    );
                    let id = id_of(&claimed.expect_ok());
                    run_in(&dir, &agent, &["complete", &id, "--lock-timeout", "60s"]).expect_ok();
                }
            })
        })
        .collect();
    for a in agents {
        a.join().unwrap();
    }
    let done = env.run(&["list", "--status", "completed"]).expect_ok();
    let in_archive = env.archive().len();
    assert_eq!(done.as_array().unwrap().len() + in_archive, 36);
    // The event log shows one holder at a time.
    let mut holder: Option<String> = None;
    for e in env.events() {
        match e["event"].as_str().unwrap() {
            "claimed" => {
                assert!(
                    holder.is_none(),
                    "two live exclusive claims at once: {holder:?} and {e}"
                );
                holder = Some(e["work_item_id"].as_str().unwrap().to_owned());
            }
            "completed" => {
                assert_eq!(holder.as_deref(), e["work_item_id"].as_str());
                holder = None;
            }
            other => panic!("unexpected event {other}"),
        }
    }
}

#[test]
fn owner_fence_and_force_from_the_cli() {
    let env = Env::new();
    let item = env.run_as("alice", &["claim", "build"]).expect_ok();
    let id = id_of(&item);
    let fence = item["fence"].to_string();
    let err = env
        .run_as("bob", &["complete", &id])
        .expect_error("not_owner", 9);
    assert_eq!(err["owner"], "alice");
    env.run_as("alice", &["progress", &id, "10", "--fence", "999"])
        .expect_error("lease_expired", 8);
    let progressed: Run = env
        .command(&["progress", &id, "20"])
        .env("COORD_AGENT_ID", "alice")
        .env("COORD_FENCE", &fence)
        .finish()
        .into();
    assert_eq!(progressed.expect_ok()["progress"], 20);
    let hb = env
        .run_as("alice", &["heartbeat", &id, "--lease", "2h"])
        .expect_ok();
    assert_eq!(hb["lease_ms"], 7_200_000);
    let forced = env
        .run_as("bob", &["fail", &id, "--force", "--reason", "stuck"])
        .expect_ok();
    assert_eq!(forced["status"], "failed");
    let last = env.events().pop().unwrap();
    assert_eq!(
        (last["event"].as_str(), last["forced"].as_bool()),
        (Some("failed"), Some(true))
    );
    assert_eq!(last["agent"], "bob");

    // Without an agent id, coord says why it cannot be the owner.
    let other = id_of(&env.run_as("alice", &["claim", "build"]).expect_ok());
    let anonymous: Run = env
        .command(&["complete", &other])
        .env_remove("COORD_AGENT_ID")
        .finish()
        .into();
    let err = anonymous.expect_error("not_owner", 9);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("no --agent or COORD_AGENT_ID"),
        "{err}"
    );
}

#[test]
fn requeue_release_reap_and_cleanup_from_the_cli() {
    let env = Env::new();
    let id = id_of(
        &env.run(&["post", "flaky", "try me", "--max-attempts", "2"])
            .expect_ok(),
    );
    env.run_as("w", &["next"]).expect_ok();
    let back = env
        .run_as("w", &["fail", &id, "--requeue", "--reason", "timeout"])
        .expect_ok();
    assert_eq!(
        (back["status"].as_str(), back["attempt"].as_u64()),
        (Some("pending"), Some(2))
    );
    env.run_as("w", &["next", "--lease", "1s"]).expect_ok();
    thread::sleep(Duration::from_millis(1100));
    let reaped = env.run(&["reap"]).expect_ok();
    assert_eq!(reaped.as_array().unwrap().len(), 1);
    assert_eq!(reaped[0]["status"], "failed", "no attempts left");
    assert!(
        reaped[0]["reason"]
            .as_str()
            .unwrap()
            .contains("no attempts left")
    );

    let other = id_of(&env.run(&["post", "t", "d"]).expect_ok());
    env.run_as("w", &["next"]).expect_ok();
    let released = env.run_as("w", &["release", &other]).expect_ok();
    assert_eq!(released["status"], "pending");
    assert!(released.get("agent_id").is_none());

    let moved = env.run(&["cleanup", "--older-than", "0s"]).expect_ok();
    assert_eq!(moved["archived"], 1);
    assert_eq!(moved["work_item_ids"][0], id.as_str());
    assert_eq!(env.archive().len(), 1);
    assert_eq!(env.archive()[0]["work_item_id"], id.as_str());
    // Gone from the live items, still shown from the archive.
    assert!(
        env.records()
            .iter()
            .all(|r| r["work_item_id"] != id.as_str())
    );
    assert_eq!(env.run(&["show", &id]).expect_ok()["archived"], true);
}

#[test]
fn agents_register_and_are_listed_with_their_status() {
    let env = Env::new();
    let me = env
        .run_as(
            "alice",
            &["agent", "register", "--team", "platform", "--capacity", "2"],
        )
        .expect_ok();
    assert_eq!(
        (
            me["agent_id"].as_str(),
            me["team"].as_str(),
            me["capacity"].as_u64()
        ),
        (Some("alice"), Some("platform"), Some(2))
    );
    env.run_as("bob", &["claim", "x"]).expect_ok();
    let anonymous: Run = env
        .command(&["claim", "x"])
        .env_remove("COORD_AGENT_ID")
        .finish()
        .into();
    anonymous.expect_ok();
    let agents = env.run(&["agents"]).expect_ok();
    let ids: Vec<&str> = agents
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["alice", "bob"], "generated ids are not registered");
    assert!(
        agents
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["status"] == "active")
    );
    thread::sleep(Duration::from_millis(1100));
    let agents = env.run(&["agents", "--stale-after", "1s"]).expect_ok();
    assert!(
        agents
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["status"] == "stale")
    );
}

#[test]
fn the_event_log_records_every_change_and_can_be_followed() {
    let env = Env::new();
    let mut follower = env.spawn(&["log", "--follow"]);
    let id = id_of(&env.run_as("a", &["claim", "x"]).expect_ok());
    env.run_as("a", &["heartbeat", &id]).expect_ok();
    env.run_as("a", &["progress", &id, "50"]).expect_ok();
    env.run_as("a", &["complete", &id]).expect_ok();

    let mut lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    let followed: Vec<Value> = (0..3)
        .map(|_| serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap())
        .collect();
    follower.kill().unwrap();
    follower.finish();
    let kinds: Vec<&str> = followed
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["claimed", "progress", "completed"],
        "heartbeats are not logged"
    );
    for e in &followed {
        for key in ["time", "agent", "work_item_id", "from", "to", "fence"] {
            assert!(e.get(key).is_some(), "{key} missing in {e}");
        }
    }
    assert_eq!(
        (followed[2]["from"].as_str(), followed[2]["to"].as_str()),
        (Some("in_progress"), Some("completed"))
    );
    let printed: Vec<Value> = env
        .run(&["log"])
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(printed, followed);
}

#[test]
fn the_shell_tools_lock_file_is_honoured_and_a_dead_ones_is_broken_loudly() {
    let env = Env::new();
    fs::create_dir_all(&env.dir).unwrap();
    let legacy = env.dir.join("work_claims.json.lock");
    // A live holder (this test process): coord waits, then times out.
    fs::write(&legacy, format!("{}\n", std::process::id())).unwrap();
    env.run(&["--lock-timeout", "300ms", "claim", "x"])
        .expect_error("lock_timeout", 5);
    assert!(legacy.exists());
    // A dead holder: coord breaks the lock, warns, logs it, and goes on.
    let gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.finish();
    fs::write(&legacy, format!("{pid}\n")).unwrap();
    let run = env.run(&["claim", "x"]);
    run.expect_ok();
    let warning: Value = serde_json::from_str(run.stderr.lines().next().unwrap()).unwrap();
    assert_eq!(warning["warning"], "lock_broken");
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains(&pid.to_string())
    );
    assert!(env.events().iter().any(|e| e["event"] == "lock_broken"));
    assert!(
        !legacy.exists(),
        "coord removes its own lock file when done"
    );
    // Broken again after a change: the event carries the revision committed
    // then, like every event, so the log stays in revision order.
    fs::write(
        &legacy,
        format!(
            "{pid}
"
        ),
    )
    .unwrap();
    let run = env.run(&["claim", "y"]);
    run.expect_ok();
    assert!(run.stderr.contains("no longer running"), "{run:?}");
    let events = env.events();
    let revisions: Vec<u64> = events
        .iter()
        .map(|e| {
            e["revision"]
                .as_u64()
                .unwrap_or_else(|| panic!("no revision: {e}"))
        })
        .collect();
    assert!(revisions.is_sorted(), "{revisions:?}");
    let broken: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "lock_broken")
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(broken, [0, 1], "{events:?}");
    // Registering an agent breaks a dead lock as loudly as a change does.
    fs::write(&legacy, format!("{pid}\n")).unwrap();
    let run = env.run(&["agent", "register", "--team", "t"]);
    run.expect_ok();
    assert!(run.stderr.contains("lock_broken"), "{run:?}");
    assert_eq!(
        env.events()
            .iter()
            .filter(|e| e["event"] == "lock_broken")
            .count(),
        3
    );
}

/// The seed's shell helper, in Python: take `work_claims.json.lock` with
/// O_EXCL (holding our pid), read the array, append, write in place, drop
/// the lock. No flock, no rename: only the lock file protects it.
const SHELL_TOOL: &str = r#"
import json, os, sys, time
d, n = sys.argv[1], int(sys.argv[2])
lock, path = os.path.join(d, "work_claims.json.lock"), os.path.join(d, "work_claims.json")
for i in range(n):
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY); os.write(fd, b"%d\n" % os.getpid()); os.close(fd); break
        except FileExistsError:
            time.sleep(0.002)
    try:
        claims = json.load(open(path)) if os.path.exists(path) and os.path.getsize(path) else []
        claims.append({"work_item_id": "work_sh_%d_%d" % (os.getpid(), i), "agent_id": "shell", "work_type": "sh",
                       "description": "", "priority": "low", "claimed_at": "2026-01-01T00:00:00Z", "status": "active",
                       "team": "legacy"})
        with open(path, "w") as f: json.dump(claims, f, indent=2)
    finally:
        os.remove(lock)
"#;

#[test]
fn coord_and_the_shell_tools_share_a_directory_without_lost_updates() {
    let env = Env::new();
    fs::create_dir_all(&env.dir).unwrap();
    let shell_tools: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new("python3")
                .args(["-c", SHELL_TOOL, env.dir.to_str().unwrap(), "25"])
                .spawn()
                .expect("python3 plays the shell tool")
        })
        .collect();
    let coords: Vec<_> = (0..10)
        .map(|i| {
            let dir = env.dir.clone();
            thread::spawn(move || {
                for _ in 0..5 {
                    run_in(
                        &dir,
                        &format!("coord_{i}"),
                        &["claim", "rust", "--lock-timeout", "60s"],
                    )
                    .expect_ok();
                }
            })
        })
        .collect();
    for c in coords {
        c.join().unwrap();
    }
    for s in shell_tools {
        assert!(s.finish().status.success());
    }
    let records = env.records();
    let by_tool = |t: &str| records.iter().filter(|r| r["work_type"] == t).count();
    assert_eq!(
        (by_tool("sh"), by_tool("rust")),
        (50, 50),
        "no update lost on either side"
    );
}

#[test]
fn automatic_compaction_keeps_the_claims_file_bounded() {
    let env = Env::new();
    for _ in 0..12 {
        let id = id_of(
            &env.run(&["--compact-at", "5", "--compact-keep", "2", "claim", "t"])
                .expect_ok(),
        );
        env.run(&["--compact-at", "5", "--compact-keep", "2", "complete", &id])
            .expect_ok();
        assert!(env.records().len() <= 6, "{} records", env.records().len());
    }
    let kept = env.records().len();
    assert_eq!(kept + env.archive().len(), 12);
    assert!(env.archive().len() >= 6);
}
