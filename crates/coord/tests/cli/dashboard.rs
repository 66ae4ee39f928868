//! `coord dashboard`: one frame as text (`--once`) on both stores, and the
//! live board driven in a real terminal (tmux): it shows a claim, shows a
//! claim made after it started, and quits on `q` with the terminal put
//! back as it was.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use coord_testkit::shared_cluster;

use crate::support::{Env, id_of, run_on_database};

#[test]
fn once_prints_the_counts_the_live_claims_the_queue_and_the_events() {
    let env = Env::new();
    env.run_as(
        "alice",
        &["claim", "deploy", "ship 1.4", "--priority", "high"],
    )
    .expect_ok();
    let docs = env
        .run_as("bob", &["claim", "docs", "write the guide"])
        .expect_ok();
    env.run_as("bob", &["progress", &id_of(&docs), "40"])
        .expect_ok();
    env.run_as("boss", &["post", "build", "nightly", "--priority", "low"])
        .expect_ok();
    env.run_as("boss", &["post", "tests", "unit tests"])
        .expect_ok();
    let run = env.run(&["dashboard", "--once"]);
    assert_eq!(run.code, 0, "{run:?}");
    let frame = &run.stdout;
    assert!(frame.contains("4 items"), "{frame}");
    assert!(frame.contains("in_progress: 2"), "{frame}");
    assert!(
        frame.contains("ship 1.4") && frame.contains("alice"),
        "{frame}"
    );
    assert!(frame.contains("[####      ] 40%"), "{frame}");
    // The queue in the order next takes it: medium before low.
    let unit = frame.find("unit tests").expect("the queued item");
    let nightly = frame.find("nightly").expect("the other queued item");
    assert!(unit < nightly, "{frame}");
    assert!(frame.contains("posted"), "the latest events: {frame}");
}

#[test]
fn text_from_the_store_cannot_reach_the_terminal_raw() {
    let env = Env::new();
    env.run(&["post", "tests", "evil \u{1b}[2J description"])
        .expect_ok();
    let frame = env.run(&["dashboard", "--once"]).stdout;
    assert!(!frame.contains('\u{1b}'), "{frame:?}");
    assert!(frame.contains("evil \\u{1b}[2J"), "{frame}");
}

#[test]
fn the_live_dashboard_needs_a_terminal() {
    let env = Env::new();
    env.run(&["post", "tests", "something to show"]).expect_ok();
    let err = env
        .run(&["dashboard"])
        .expect_error("coordination_validation_failed", 6);
    assert!(err["message"].as_str().unwrap().contains("--once"), "{err}");
}

#[test]
fn once_on_postgresql_shows_its_claims() {
    let tmp = tempfile::tempdir().unwrap();
    let schema = shared_cluster().fresh_schema("cli_dashboard");
    let coord = |args: &[&str]| run_on_database(tmp.path(), &schema, "alice", args);
    coord(&["claim", "deploy", "from the database"]).expect_ok();
    let run = coord(&["dashboard", "--once"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("from the database"), "{}", run.stdout);
}

/// A tmux server of the test's own (its own socket), one 160x50 window.
struct Tmux {
    socket: std::path::PathBuf,
}

impl Tmux {
    fn start(dir: &Path, script: &str) -> Tmux {
        let tmux = Tmux {
            socket: dir.join("tmux.sock"),
        };
        let status = tmux
            .command(&[
                "new-session",
                "-d",
                "-x",
                "160",
                "-y",
                "50",
                "sh",
                "-c",
                script,
            ])
            .status()
            .expect("tmux runs");
        assert!(status.success(), "tmux new-session failed");
        tmux
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.arg("-S").arg(&self.socket).args(args);
        cmd
    }

    fn screen(&self) -> String {
        let out = self
            .command(&["capture-pane", "-p"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} on the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command(&["kill-server"]).status();
    }
}

#[test]
fn the_live_dashboard_follows_the_board_and_quits_on_q_leaving_the_terminal_as_it_was() {
    let env = Env::new();
    env.run_as("alice", &["claim", "deploy", "the first claim"])
        .expect_ok();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path();
    let script = format!(
        "stty -g > {s}/before; echo READY; COORD_DIR={dir} {coord} dashboard; \
         echo \"EXIT=$?\"; stty -g > {s}/after; sleep 60",
        s = state.display(),
        dir = env.dir.display(),
        coord = env!("CARGO_BIN_EXE_coord"),
    );
    let tmux = Tmux::start(state, &script);
    tmux.wait_for("first claim", |s| s.contains("the first claim"));
    // A claim made while it runs shows without a restart.
    env.run_as("bob", &["claim", "docs", "made while it ran"])
        .expect_ok();
    tmux.wait_for("new claim", |s| s.contains("made while it ran"));
    tmux.command(&["send-keys", "q"]).status().unwrap();
    let screen = tmux.wait_for("exit", |s| s.contains("EXIT="));
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert!(
        screen.contains("READY"),
        "the screen before it came back: {screen}"
    );
    assert!(
        !screen.contains("live claims"),
        "the board was left up: {screen}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !state.join("after").exists() {
        assert!(Instant::now() < deadline, "no terminal settings after");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100));
    let before = std::fs::read_to_string(state.join("before")).unwrap();
    let after = std::fs::read_to_string(state.join("after")).unwrap();
    assert_eq!(before, after, "the terminal's modes were not put back");
}

#[test]
fn the_live_dashboard_on_postgresql_shows_a_claim_made_while_it_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let schema = shared_cluster().fresh_schema("cli_dashboard_live");
    run_on_database(
        tmp.path(),
        &schema,
        "alice",
        &["claim", "deploy", "already there"],
    )
    .expect_ok();
    let script = format!(
        "COORD_DATABASE_URL='{url}' COORD_SCHEMA={schema} {coord} dashboard; echo \"EXIT=$?\"; sleep 60",
        url = shared_cluster().url(),
        coord = env!("CARGO_BIN_EXE_coord"),
    );
    let tmux = Tmux::start(tmp.path(), &script);
    tmux.wait_for("the first claim", |s| s.contains("already there"));
    run_on_database(
        tmp.path(),
        &schema,
        "bob",
        &["claim", "docs", "made meanwhile"],
    )
    .expect_ok();
    tmux.wait_for("the new claim", |s| s.contains("made meanwhile"));
    tmux.command(&["send-keys", "q"]).status().unwrap();
    let screen = tmux.wait_for("exit", |s| s.contains("EXIT="));
    assert!(screen.contains("EXIT=0"), "{screen}");
}
