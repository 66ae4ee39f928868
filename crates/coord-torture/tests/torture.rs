//! The short forms of the torture test, run by CI: 20 agents for 6 seconds,
//! on a coordination directory and on a throwaway PostgreSQL cluster.
//! Longer on demand: `cargo run --release -p coord-torture -- --seconds 120`.

use std::process::Command;

/// What a passing run reported.
struct Report {
    stdout: String,
    /// The numbers of its " kills, " line: kills, then self-kills at crash
    /// points (directory) or connections cut (PostgreSQL).
    counts: Vec<usize>,
    acknowledged: usize,
}

/// Runs `coord-torture` with `args` and checks that it passed.
fn torture(args: &[&str]) -> Report {
    // The run's own length and the check, with room to spare: a run that
    // hangs fails here instead of hanging the suite.
    let out = coord_testkit::output_within(
        Command::new(env!("CARGO_BIN_EXE_coord-torture")).args(args),
        std::time::Duration::from_secs(300),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("coord-torture: PASS"), "{stdout}");
    let counts = stdout
        .lines()
        .find(|l| l.contains(" kills, "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|w| w.trim_end_matches(',').parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let acknowledged = stdout
        .lines()
        .find_map(|l| l.strip_prefix("coord-torture: PASS "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Report {
        stdout,
        counts,
        acknowledged,
    }
}

#[test]
fn twenty_agents_killed_at_random_lose_and_double_nothing() {
    let run = torture(&["--agents", "20", "--seconds", "6"]);
    // The run did real work: kills happened and operations were acknowledged.
    // Self-kills at crash points are likely but not certain in 6 s; the CLI
    // crash tests cover each point deterministically.
    assert!(
        run.counts.len() >= 2 && run.counts[0] >= 10,
        "kills: {}",
        run.stdout
    );
    assert!(run.acknowledged >= 100, "{}", run.stdout);
}

#[test]
fn twenty_agents_on_postgresql_killed_and_cut_off_at_random_lose_and_double_nothing() {
    let run = torture(&["--postgres", "--agents", "20", "--seconds", "6"]);
    assert!(
        run.counts.len() >= 2 && run.counts[0] >= 10 && run.counts[1] >= 5,
        "kills and cut connections: {}",
        run.stdout
    );
    assert!(run.acknowledged >= 100, "{}", run.stdout);
}

#[test]
fn on_postgresql_agents_whose_clocks_are_ten_minutes_off_take_no_live_lease() {
    let run = torture(&[
        "--postgres",
        "--agents",
        "20",
        "--seconds",
        "6",
        "--skew-seconds",
        "600",
    ]);
    assert!(
        run.stdout.contains("two agents' clocks 600 s off"),
        "{}",
        run.stdout
    );
    assert!(run.acknowledged >= 100, "{}", run.stdout);
}
