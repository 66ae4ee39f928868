//! The short form of the torture test, run by CI: 20 agents for 6 seconds.
//! Longer on demand: `cargo run --release -p coord-torture -- --seconds 120`.

use std::process::Command;

#[test]
fn twenty_agents_killed_at_random_lose_and_double_nothing() {
    let out = Command::new(env!("CARGO_BIN_EXE_coord-torture"))
        .args(["--agents", "20", "--seconds", "6"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("coord-torture: PASS"), "{stdout}");
    // The run did real work: kills happened and operations were acknowledged.
    let counts: Vec<usize> = stdout
        .lines()
        .find(|l| l.contains(" kills, "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|w| w.trim_end_matches(',').parse().ok())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        // Self-kills at crash points are likely but not certain in 6 s; the
        // CLI crash tests cover each point deterministically.
        counts.len() >= 2 && counts[0] >= 10,
        "kills: {stdout}"
    );
}
