//! Waking on commit on PostgreSQL: an idle `coord log --follow` and an idle
//! `coord work` cost the database (almost) no transactions, a post wakes
//! the worker and a claim reaches the follower at once, and a follower that
//! loses its connections catches up without missing or repeating an event.
//! Each test has a database of its own, so its transaction count is its.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::thread;
use std::time::{Duration, Instant};

use coord_testkit::shared_cluster;
use serde_json::Value;

use crate::support::{Finish, Run, command_in};

/// A database of its own on the shared cluster, and `coord` pointed at it.
struct Db {
    _tmp: tempfile::TempDir,
    name: String,
}

impl Db {
    fn new(prefix: &str) -> Db {
        let name = shared_cluster().fresh_schema(prefix);
        admin()
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        Db {
            _tmp: tempfile::tempdir().unwrap(),
            name,
        }
    }

    fn url(&self, application: &str) -> String {
        format!(
            "{} dbname={} application_name={application}",
            shared_cluster().url().replace("dbname=postgres", ""),
            self.name
        )
    }

    fn command(&self, application: &str, agent: &str, args: &[&str]) -> Command {
        let mut cmd = command_in(&self._tmp.path().join("unused"), agent, args);
        cmd.env("COORD_DATABASE_URL", self.url(application));
        cmd
    }

    fn run(&self, agent: &str, args: &[&str]) -> Run {
        self.command("coord_test", agent, args).finish().into()
    }

    /// `coord log --follow` (application name `follower`), and its lines.
    fn follower(&self) -> (Child, Receiver<(Instant, String)>) {
        let mut follower = self
            .command("follower", "reader", &["log", "--follow"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = lines_of(&mut follower);
        (follower, lines)
    }

    /// Transactions committed or rolled back in this database so far, as
    /// the statistics say.
    fn transactions(&self) -> i64 {
        admin()
            .query_one(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1",
                &[&self.name],
            )
            .unwrap()
            .get(0)
    }
}

fn admin() -> postgres::Client {
    postgres::Client::connect(&shared_cluster().url(), postgres::NoTls).unwrap()
}

/// The child's stdout lines as they come, with when they came.
fn lines_of(child: &mut Child) -> Receiver<(Instant, String)> {
    let stdout = child.stdout.take().unwrap();
    let (send, receive) = channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if send.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    receive
}

/// Stops `child` (it runs until told).
fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn micros(value: &Value) -> i64 {
    value
        .as_str()
        .and_then(|t| t.parse::<coord_core::Timestamp>().ok())
        .map(coord_core::Timestamp::as_unix_micros)
        .unwrap_or_else(|| panic!("not a time: {value}"))
}

#[test]
fn an_idle_follower_and_an_idle_worker_make_almost_no_transactions() {
    let db = Db::new("wake_idle");
    db.run("boss", &["list"]).expect_ok(); // makes the schema
    let follower = db
        .command("follower", "reader", &["log", "--follow"])
        .spawn()
        .unwrap();
    let worker = db
        .command("worker", "worker", &["work", "--", "true"])
        .spawn()
        .unwrap();
    // Their start (connections, a first read and `next`), then quiet.
    thread::sleep(Duration::from_secs(2));
    let before = db.transactions();
    thread::sleep(Duration::from_secs(4));
    // Statistics reach the shared view within a second of a busy backend's
    // last transaction; a quiet one has nothing to report.
    thread::sleep(Duration::from_millis(1500));
    let during = db.transactions() - before;
    stop(follower);
    stop(worker);
    assert!(
        during <= 3,
        "{during} transactions in 4 s of nothing happening"
    );
}

#[test]
fn a_post_wakes_an_idle_worker_and_a_claim_reaches_a_follower_at_once() {
    let db = Db::new("wake_now");
    db.run("boss", &["list"]).expect_ok();
    let (follower, lines) = db.follower();
    let worker = db
        .command(
            "worker",
            "worker",
            &["work", "--max-items", "1", "--", "true"],
        )
        .spawn()
        .unwrap();
    // Long enough for a polling worker to back off to its longest sleep.
    thread::sleep(Duration::from_secs(3));

    let posted = db.run("boss", &["post", "build", "wake up"]).expect_ok();
    let run: Run = worker.finish().into();
    assert_eq!(run.code, 0, "{run:?}");
    let item = db.run("boss", &["show", posted["work_item_id"].as_str().unwrap()]);
    let item = item.expect_ok();
    let waited = micros(&item["claimed_at"]) - micros(&item["posted_at"]);
    assert!(waited < 500_000, "taken {waited} µs after it was posted");

    let claim = db.run("claimer", &["claim", "deploy", "now"]).expect_ok();
    let claimed = Instant::now();
    let id = claim["work_item_id"].as_str().unwrap().to_owned();
    // Earlier events (the worker's item) may still be on their way.
    let at = loop {
        let (at, line) = lines
            .recv_timeout(Duration::from_secs(10))
            .expect("the follower printed the claim");
        if line.contains(&id) {
            assert!(line.contains("\"claimed\""), "{line}");
            break at;
        }
    };
    stop(follower);
    let late = at.saturating_duration_since(claimed);
    assert!(
        late < Duration::from_millis(500),
        "the claim reached the follower after {late:?}"
    );
}

#[test]
fn a_follower_whose_connections_are_cut_misses_and_repeats_nothing() {
    let db = Db::new("wake_cut");
    for n in 0..3 {
        db.run("boss", &["post", "build", &format!("before {n}")])
            .expect_ok();
    }
    let (follower, lines) = db.follower();
    let mut seen = Vec::new();
    let collect = |seen: &mut Vec<String>, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while seen.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok((_, line)) => seen.push(line),
                Err(_) => panic!("the follower printed {} of {n} events", seen.len()),
            }
        }
    };
    collect(&mut seen, 3);

    let cut: i64 = admin()
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND application_name = 'follower'",
            &[&db.name],
        )
        .unwrap()
        .get(0);
    assert!(cut >= 1, "the follower's sessions were found and cut");
    for n in 0..3 {
        db.run("boss", &["post", "build", &format!("after {n}")])
            .expect_ok();
    }
    collect(&mut seen, 6);
    // Nothing more comes: no event twice.
    thread::sleep(Duration::from_millis(700));
    while let Ok((_, line)) = lines.try_recv() {
        seen.push(line);
    }
    stop(follower);
    let logged: Vec<String> = db
        .run("x", &["log"])
        .stdout
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(seen, logged);
}

#[test]
fn an_idle_worker_waits_on_one_connection_and_stops_at_once_on_sigterm() {
    let db = Db::new("wake_stop");
    db.run("boss", &["list"]).expect_ok();
    let worker = db
        .command(
            "worker",
            "worker",
            &["work", "--concurrency", "8", "--", "true"],
        )
        .spawn()
        .unwrap();
    // Every slot is waiting by now: one of them in the database, for all.
    thread::sleep(Duration::from_secs(1));
    let sessions: i64 = admin()
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = $1 AND application_name = 'worker'",
            &[&db.name],
        )
        .unwrap()
        .get(0);
    assert_eq!(sessions, 2, "the store's connection and one waiting");
    let status = Command::new("kill")
        .args(["-15", &worker.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let asked = Instant::now();
    let run: Run = worker.finish().into();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "stopped {:?} after SIGTERM",
        asked.elapsed()
    );
}
