//! `coord run` and `coord work` with real processes: children that succeed,
//! fail, are killed or ignore SIGTERM; a runner killed with SIGKILL; a lease
//! lost while the child runs; a pool of workers draining a queue.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

const COORD: &str = env!("CARGO_BIN_EXE_coord");

/// Polls `done` every 20 ms for up to 10 s.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, signal: i32) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Whether `pid` is gone (or a zombie nobody reaped yet).
fn is_dead(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn only_item(env: &Env) -> Value {
    let records = env.records();
    assert_eq!(records.len(), 1, "{records:?}");
    records[0].clone()
}

#[test]
fn a_child_that_succeeds_completes_the_claim_with_its_last_line() {
    let env = Env::new();
    let script = r#"echo "id=$COORD_WORK_ITEM_ID fence=$COORD_FENCE agent=$COORD_AGENT_ID type=$COORD_WORK_TYPE"
echo "dir=$COORD_DIR"
cd / && "$COORD" progress "$COORD_WORK_ITEM_ID" 50 >/dev/null
echo "built 3 crates""#;
    // A relative --dir: the child gets it absolute, so it works from anywhere.
    let run: Run = env
        .command(&["run", "build", "compile", "--", "sh", "-c", script])
        .env("COORD", COORD)
        .env("COORD_DIR", env.dir.file_name().unwrap())
        .current_dir(env.dir.parent().unwrap())
        .finish()
        .into();
    assert_eq!(run.code, 0, "{run:?}");
    let item = only_item(&env);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            format!(
                "id={} fence={} agent=agent_test type=build",
                id_of(&item),
                item["fence"]
            )
            .as_str(),
            format!("dir={}", env.dir.display()).as_str(),
            "built 3 crates"
        ],
        "the child's output passes through"
    );
    assert_eq!(
        (item["status"].as_str(), item["result"].as_str()),
        (Some("completed"), Some("built 3 crates"))
    );
    let kinds: Vec<String> = env
        .events()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        ["claimed", "progress", "completed"],
        "the child reported progress as the owner"
    );
}

#[test]
fn a_child_s_output_passes_through_whole_and_its_last_line_is_the_result() {
    let env = Env::new();
    // More than a pipe holds, a blank line, then a last line without its
    // newline, longer than a result keeps.
    let script = r#"i=0; while [ $i -lt 3000 ]; do echo "line $i of a long output"; i=$((i+1)); done
echo
printf '  %0300d  ' 7"#;
    let run: Run = env
        .command(&["run", "build", "--", "sh", "-c", script])
        .finish()
        .into();
    assert_eq!(run.code, 0, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3002, "every line passes through");
    assert_eq!(lines[2999], "line 2999 of a long output");
    assert!(run.stdout.ends_with("7  "), "the unended line too");
    let item = only_item(&env);
    let expected = format!("{:0>200}", "");
    assert_eq!(item["result"].as_str(), Some(expected.as_str()));
}

#[test]
fn heartbeats_keep_the_lease_of_a_child_that_outlives_it() {
    let env = Env::new();
    let run: Run = env
        .command(&["run", "build", "--lease", "600ms", "--", "sleep", "1.5"])
        .finish()
        .into();
    assert_eq!(run.code, 0, "{run:?}");
    let item = only_item(&env);
    assert_eq!(item["status"], "completed", "{item}");
    // Completed two and a half leases after the claim: only renewals let it.
    let completed: jiff::Timestamp = item["completed_at"].as_str().unwrap().parse().unwrap();
    let claimed: jiff::Timestamp = item["claimed_at"].as_str().unwrap().parse().unwrap();
    assert!(completed.duration_since(claimed).as_secs_f64() >= 1.5);
}

#[test]
fn exit_statuses_propagate_and_fail_the_claim() {
    let env = Env::new();
    let run = env.run(&["run", "build", "--", "sh", "-c", "exit 3"]);
    assert_eq!(run.code, 3);
    let item = only_item(&env);
    assert_eq!(
        (item["status"].as_str(), item["reason"].as_str()),
        (Some("failed"), Some("exit status 3"))
    );

    let env = Env::new();
    let run = env.run(&["run", "build", "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(run.code, 137, "128 + SIGKILL");
    assert_eq!(only_item(&env)["reason"], "killed by signal 9");

    let env = Env::new();
    let run = env.run(&["run", "build", "--", "/no/such/program"]);
    assert_eq!(run.code, 127);
    assert!(
        only_item(&env)["reason"]
            .as_str()
            .unwrap()
            .starts_with("cannot start")
    );

    let env = Env::new();
    let run = env.run(&["run", "build", "--result", "shipped", "--", "true"]);
    assert_eq!(run.code, 0);
    assert_eq!(only_item(&env)["result"], "shipped");
}

#[test]
fn a_conflict_exits_with_its_code_without_running_the_command() {
    let env = Env::new();
    env.run_as("holder", &["claim", "deploy", "-p", "high"])
        .expect_ok();
    let marker = env.dir.join("ran");
    let run = env.run(&[
        "run",
        "deploy",
        "-p",
        "high",
        "--",
        "touch",
        marker.to_str().unwrap(),
    ]);
    run.expect_error("coordination_conflict", 3);
    assert!(!marker.exists());
}

#[test]
fn signals_are_forwarded_to_the_child() {
    let env = Env::new();
    fs::create_dir_all(&env.dir).unwrap();
    let ready = env.dir.join("ready");
    let script = format!(
        "trap 'exit 5' TERM; touch {}; while :; do sleep 0.05; done",
        ready.display()
    );
    let runner = env.spawn(&["run", "build", "--", "sh", "-c", &script]);
    wait_until("the child to start", || ready.exists());
    signal(&runner, 15);
    let run: Run = runner.finish().into();
    assert_eq!(run.code, 5, "the child's own answer to SIGTERM: {run:?}");
    assert_eq!(only_item(&env)["reason"], "exit status 5");
}

#[test]
fn a_lost_lease_stops_a_child_that_ignores_sigterm_and_records_nothing() {
    let env = Env::new();
    fs::create_dir_all(&env.dir).unwrap();
    let pid_file = env.dir.join("child.pid");
    let script = format!(
        "trap '' TERM; echo $$ > {}; while :; do sleep 0.05; done",
        pid_file.display()
    );
    let runner = env.spawn(&[
        "run", "deploy", "-p", "high", "--lease", "1s", "--grace", "300ms", "--", "sh", "-c",
        &script,
    ]);
    wait_until("the child to start", || read_pid(&pid_file).is_some());
    let child_pid = read_pid(&pid_file).unwrap();
    let id = id_of(&only_item(&env));
    // An operator takes the item away: the runner's next heartbeat learns
    // that its tenure is over.
    env.run_as(
        "operator",
        &["fail", &id, "--force", "--reason", "reassigned"],
    )
    .expect_ok();
    let started = Instant::now();
    let run: Run = runner.finish().into();
    let err = run.error();
    assert_eq!(
        (run.code, err["error"].as_str()),
        (8, Some("lease_expired")),
        "{run:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    wait_until("the child to die", || is_dead(child_pid));
    let item = only_item(&env);
    assert_eq!(
        (item["status"].as_str(), item["reason"].as_str()),
        (Some("failed"), Some("reassigned"))
    );
}

#[test]
fn a_runner_that_slept_past_its_lease_stops_the_child_and_exits_lease_expired() {
    let env = Env::new();
    fs::create_dir_all(&env.dir).unwrap();
    let pid_file = env.dir.join("child.pid");
    let script = format!("echo $$ > {}; exec sleep 30", pid_file.display());
    let runner = env.spawn(&[
        "run", "build", "--lease", "1s", "--grace", "200ms", "--", "sh", "-c", &script,
    ]);
    wait_until("the child to start", || read_pid(&pid_file).is_some());
    let child_pid = read_pid(&pid_file).unwrap();
    // The machine "sleeps": the runner is stopped past its lease.
    signal(&runner, 19); // SIGSTOP
    thread::sleep(Duration::from_millis(1500));
    signal(&runner, 18); // SIGCONT
    let run: Run = runner.finish().into();
    assert_eq!(run.code, 8, "{run:?}");
    assert_eq!(run.error()["error"], "lease_expired");
    wait_until("the child to die", || is_dead(child_pid));
    let item = only_item(&env);
    assert_eq!(
        item["status"], "in_progress",
        "nothing was recorded; the next writer expires it"
    );
    env.run(&["reap"]).expect_ok();
    assert_eq!(only_item(&env)["status"], "expired");
}

#[test]
fn a_runner_killed_with_sigkill_takes_its_child_along_and_its_claim_expires() {
    let env = Env::new();
    fs::create_dir_all(&env.dir).unwrap();
    let pid_file = env.dir.join("child.pid");
    let script = format!("echo $$ > {}; exec sleep 30", pid_file.display());
    let mut runner = env.spawn(&[
        "run", "deploy", "-p", "high", "--lease", "1s", "--", "sh", "-c", &script,
    ]);
    wait_until("the child to start", || read_pid(&pid_file).is_some());
    let child_pid = read_pid(&pid_file).unwrap();
    let id = id_of(&only_item(&env));
    runner.kill().unwrap(); // SIGKILL
    // Not `finish`: it would read the runner's output, which the orphan
    // holds open until it ends.
    runner.wait().unwrap();
    wait_until("the orphan to die", || is_dead(child_pid));

    let taken = env
        .run_as(
            "successor",
            &["claim", "deploy", "-p", "high", "--wait-for", "5s"],
        )
        .expect_ok();
    assert_ne!(id_of(&taken), id);
    let old = env.run(&["show", &id]).expect_ok();
    assert_eq!(old["status"], "expired", "never completed");
    assert!(!env.events().iter().any(|e| e["event"] == "completed"));
}

#[test]
fn a_worker_killed_with_sigkill_takes_every_slots_child_along() {
    let env = Env::new();
    for i in 0..3 {
        env.run(&["post", "job", &format!("job {i}")]).expect_ok();
    }
    let pids = env.dir.join("pids");
    fs::create_dir_all(&pids).unwrap();
    let script = format!(
        "echo $$ > {}/$COORD_WORK_ITEM_ID; exec sleep 30",
        pids.display()
    );
    let mut worker = env.spawn(&["work", "--concurrency", "3", "--", "sh", "-c", &script]);
    let started = || -> Vec<u32> {
        fs::read_dir(&pids)
            .unwrap()
            .filter_map(|e| read_pid(&e.unwrap().path()))
            .collect()
    };
    wait_until("three children to start", || started().len() == 3);
    let children = started();
    assert!(children.iter().all(|&pid| !is_dead(pid)));
    worker.kill().unwrap(); // SIGKILL
    worker.wait().unwrap(); // (see above: not `finish`)
    for pid in children {
        wait_until("an orphan to die", || is_dead(pid));
    }
}

#[test]
fn workers_drain_the_queue_each_item_exactly_once_retrying_failures() {
    let env = Env::new();
    let ids: Vec<String> = (0..100)
        .map(|i| {
            id_of(
                &env.run(&["post", "job", &format!("job {i}"), "--max-attempts", "3"])
                    .expect_ok(),
            )
        })
        .collect();
    let flaky: Vec<&String> = ids.iter().filter(|id| id.ends_with('0')).collect();
    let log = env.dir.join("runs.log");
    // Items whose id ends in 0 fail their first attempt.
    let script = r#"echo "$COORD_WORK_ITEM_ID $COORD_ATTEMPT" >> "$RUNS"
case "$COORD_WORK_ITEM_ID" in *0) [ "$COORD_ATTEMPT" = 1 ] && exit 1;; esac
exit 0"#;
    let workers: Vec<Child> = (0..2)
        .map(|w| {
            env.command(&[
                "work",
                "--concurrency",
                "4",
                "--idle-exit",
                "2s",
                "--retry-backoff",
                "20ms",
                "--lock-timeout",
                "60s",
                "--",
                "sh",
                "-c",
                script,
            ])
            .env("COORD_AGENT_ID", format!("worker_{w}"))
            .env("RUNS", &log)
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
        })
        .collect();
    let mut summaries = Vec::new();
    for w in workers {
        let run: Run = w.finish().into();
        assert_eq!(run.code, 0, "{run:?}");
        let line: Value = serde_json::from_str(run.stderr.lines().last().unwrap()).unwrap();
        summaries.push(line["summary"].clone());
    }
    let total = |key: &str| {
        summaries
            .iter()
            .map(|s| s[key].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(total("completed"), 100);
    assert_eq!(total("requeued"), flaky.len() as u64);
    assert_eq!(total("taken"), 100 + flaky.len() as u64);

    let done = env.run(&["list", "--status", "completed"]).expect_ok();
    assert_eq!(done.as_array().unwrap().len() + env.archive().len(), 100);
    let mut completions: HashMap<String, usize> = HashMap::new();
    for e in env.events().iter().filter(|e| e["event"] == "completed") {
        *completions
            .entry(e["work_item_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(completions.len(), 100);
    assert!(
        completions.values().all(|n| *n == 1),
        "each item completed exactly once"
    );
    let runs = fs::read_to_string(&log).unwrap();
    assert_eq!(
        runs.lines().count(),
        100 + flaky.len(),
        "each flaky item ran twice, the rest once"
    );
}

#[test]
fn a_stopped_worker_lets_children_finish_within_the_grace_period() {
    let env = Env::new();
    for i in 0..2 {
        env.run(&["post", "job", &format!("job {i}")]).expect_ok();
    }
    let worker = env.spawn(&[
        "work",
        "--concurrency",
        "2",
        "--grace",
        "10s",
        "--",
        "sleep",
        "0.5",
    ]);
    wait_until("both items to be taken", || {
        env.records()
            .iter()
            .filter(|r| r["status"] == "in_progress")
            .count()
            == 2
    });
    signal(&worker, 15);
    let run: Run = worker.finish().into();
    assert_eq!(run.code, 0, "{run:?}");
    let summary: Value = serde_json::from_str(run.stderr.lines().last().unwrap()).unwrap();
    assert_eq!(summary["summary"]["completed"], 2);
    assert!(env.records().iter().all(|r| r["status"] == "completed"));
}

#[test]
fn a_stopped_worker_releases_items_whose_children_outlive_the_grace_period() {
    let env = Env::new();
    for i in 0..3 {
        env.run(&["post", "job", &format!("job {i}")]).expect_ok();
    }
    let worker = env.spawn(&[
        "work",
        "--concurrency",
        "2",
        "--grace",
        "300ms",
        "--",
        "sleep",
        "30",
    ]);
    wait_until("two items to be taken", || {
        env.records()
            .iter()
            .filter(|r| r["status"] == "in_progress")
            .count()
            == 2
    });
    let started = Instant::now();
    signal(&worker, 2); // SIGINT, as from a terminal
    let run: Run = worker.finish().into();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let summary: Value = serde_json::from_str(run.stderr.lines().last().unwrap()).unwrap();
    assert_eq!(
        (
            summary["summary"]["released"].as_u64(),
            summary["summary"]["taken"].as_u64()
        ),
        (Some(2), Some(2))
    );
    assert!(
        env.records().iter().all(|r| r["status"] == "pending"),
        "all back on the queue"
    );
    let released = env
        .events()
        .iter()
        .filter(|e| e["event"] == "released")
        .count();
    assert_eq!(released, 2);
}

#[test]
fn max_items_bounds_a_worker() {
    let env = Env::new();
    for i in 0..5 {
        env.run(&["post", "job", &format!("job {i}")]).expect_ok();
    }
    let run = env.run(&[
        "work",
        "--concurrency",
        "2",
        "--max-items",
        "3",
        "--",
        "true",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let done = env
        .records()
        .iter()
        .filter(|r| r["status"] == "completed")
        .count();
    assert_eq!(done, 3);
}

#[test]
fn a_worker_takes_for_all_its_free_slots_in_one_change() {
    let env = Env::new();
    for i in 0..8 {
        env.run(&["post", "job", &format!("job {i}")]).expect_ok();
    }
    let run = env.run(&[
        "work",
        "--concurrency",
        "4",
        "--max-items",
        "8",
        "--",
        "sh",
        "-c",
        "sleep 0.3",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let records = env.records();
    assert!(
        records.iter().all(|r| r["status"] == "completed"),
        "{records:?}"
    );
    // Takes of one change share its revision: four slots, free at the
    // start, were served by one take.
    let mut per_revision: std::collections::BTreeMap<u64, usize> = Default::default();
    for e in env.events().iter().filter(|e| e["event"] == "claimed") {
        *per_revision
            .entry(e["revision"].as_u64().unwrap())
            .or_default() += 1;
    }
    assert_eq!(per_revision.values().sum::<usize>(), 8);
    assert_eq!(per_revision.values().max(), Some(&4), "{per_revision:?}");
    // A directory loses no answer to a live worker: it keys nothing there.
    assert!(!env.dir.join("idempotency_keys.json").exists());
}

#[test]
fn a_busy_lock_when_the_child_ends_is_waited_out_not_given_up() {
    let env = Env::new();
    fs::create_dir_all(&env.dir).unwrap();
    let ready = env.dir.join("ready");
    let script = format!("touch {}; sleep 0.5", ready.display());
    let runner = env.spawn(&[
        "--lock-timeout",
        "200ms",
        "run",
        "build",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    wait_until("the child to start", || ready.exists());
    // Another process holds the directory lock past the child's end.
    let held = hold_lock(&env.dir);
    thread::sleep(Duration::from_millis(1500));
    drop(held);
    let run: Run = runner.finish().into();
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(only_item(&env)["status"], "completed");
}

/// GETs `/metrics` from `addr`; the body, once something answers.
fn scrape(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: coord\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text.split_once("\r\n\r\n")?.1.to_owned())
}

#[test]
fn a_worker_serves_its_metrics_in_prometheus_text_format() {
    let env = Env::new();
    for i in 0..3 {
        env.run(&["post", "job", &format!("job {i}")]).expect_ok();
    }
    env.run(&["claim", "deploy", "--priority", "high"])
        .expect_ok();
    env.run(&["claim", "deploy", "--priority", "high"])
        .expect_error("coordination_conflict", 3);
    let addr = {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap().to_string()
    };
    let spans_before = fs::read(env.dir.join("telemetry_spans.jsonl")).unwrap();
    let worker = env.spawn(&[
        "--no-telemetry",
        "work",
        "--metrics-listen",
        &addr,
        "--idle-exit",
        "3s",
        "--",
        "true",
    ]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        if let Some(text) = scrape(&addr)
            && text.contains("outcome=\"ok\"")
            && text.contains("status=\"completed\"} 3")
        {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "no metrics at {addr}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let run: Run = worker.finish().into();
    assert_eq!(run.code, 0, "{run:?}");
    for expected in [
        "coord_changes_total{store=\"directory\",change=\"next\",outcome=\"ok\"}",
        "coord_changes_total{store=\"directory\",change=\"complete\",outcome=\"ok\"} 3",
        "coord_items{status=\"completed\"} 3",
        "coord_items{status=\"in_progress\"} 1",
        "coord_items_by_priority{priority=\"high\"} 1",
        "coord_step_duration_seconds_count{store=\"directory\",step=\"write_claims_atomically\"}",
        "# TYPE coord_change_duration_seconds histogram",
    ] {
        assert!(metrics.contains(expected), "no {expected} in:\n{metrics}");
    }
    // The worker's own process saw no conflict (the refused claim was another's).
    assert!(!metrics.contains("coord_conflicts_total{"), "{metrics}");
    // --no-telemetry: metrics still, but no spans written.
    let spans_after = fs::read(env.dir.join("telemetry_spans.jsonl")).unwrap();
    assert_eq!(spans_after, spans_before);
}

#[test]
fn a_metrics_address_that_cannot_be_listened_on_is_refused_before_any_work() {
    let env = Env::new();
    env.run(&["post", "job", "waits"]).expect_ok();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    for addr in ["not an address", busy.as_str()] {
        let err = env
            .run(&["work", "--metrics-listen", addr, "--", "true"])
            .expect_error("coordination_validation_failed", 6);
        assert!(
            err["message"]
                .as_str()
                .unwrap()
                .contains("--metrics-listen"),
            "{err}"
        );
    }
    let pending = env
        .records()
        .iter()
        .filter(|r| r["status"] == "pending")
        .count();
    assert_eq!(pending, 1, "nothing was taken");
}
