//! `coord-torture`: N agent processes run random operations on one
//! coordination directory for T seconds while a killer sends SIGKILL to
//! random agents (and starts new ones) at random moments. Then a checker
//! verifies the store, the event log and every acknowledgement the agents
//! logged. A failing run prints the seed that reproduces its schedule.
//!
//! ```text
//! coord-torture [--agents 20] [--seconds 10] [--seed N] [--dir DIR]
//! ```

mod agent;
mod check;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "coord-torture")]
struct Cli {
    #[command(subcommand)]
    role: Option<Role>,
    /// Agent processes running at once
    #[arg(long, default_value_t = 20)]
    agents: usize,
    /// How long the agents run
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The seed of the whole run (agents' choices and the killer's)
    #[arg(long)]
    seed: Option<u64>,
    /// The coordination directory (default: a new temporary one, kept on failure)
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// One agent (started by the orchestrator)
    Agent {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        id: String,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        log: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Role::Agent { dir, id, seed, log }) = cli.role {
        agent::run(&dir, &id, seed, &log);
        return ExitCode::SUCCESS;
    }
    let seed = cli.seed.unwrap_or_else(|| fastrand::u64(..));
    let temp = tempfile::tempdir().expect("a temporary directory");
    let base = cli.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    println!(
        "coord-torture: seed {seed}, {} agents, {} s, in {}",
        cli.agents,
        cli.seconds,
        base.display()
    );
    let report = orchestrate(&base, cli.agents, Duration::from_secs(cli.seconds), seed);
    println!("{report}");
    match check::check(&base.join("coord"), &base.join("logs")) {
        Ok(summary) => {
            println!("coord-torture: PASS {summary}");
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for p in &problems {
                eprintln!("coord-torture: VIOLATION {p}");
            }
            let kept = temp.keep();
            eprintln!(
                "coord-torture: FAIL with {} violations; reproduce with --seed {seed} (files kept in {})",
                problems.len(),
                if cli.dir.is_some() {
                    base.display().to_string()
                } else {
                    kept.display().to_string()
                }
            );
            ExitCode::FAILURE
        }
    }
}

/// The moments where a kill hurts most. A third of the agents also kill
/// themselves at one of them, so every run covers them, not only the random
/// kills (which mostly find agents waiting for the lock).
const CRASH_POINTS: [&str; 6] = [
    "commit:events-written",
    "cleanup:intent-written",
    "cleanup:archive-partial",
    "cleanup:archive-appended",
    "cleanup:claims-written",
    "cleanup:revision-raised",
];

fn spawn_agent(base: &Path, slot: usize, incarnation: usize, seed: u64) -> Child {
    let id = format!("agent_{slot}_{incarnation}");
    let mut rng = fastrand::Rng::with_seed(seed ^ ((slot as u64) << 40) ^ incarnation as u64);
    let mut command = Command::new(std::env::current_exe().expect("our own path"));
    if rng.u8(..3) == 0 {
        command.env(
            "COORD_CRASH_AT",
            CRASH_POINTS[rng.usize(..CRASH_POINTS.len())],
        );
    } else {
        command.env_remove("COORD_CRASH_AT");
    }
    command
        .args(["agent", "--dir"])
        .arg(base.join("coord"))
        .args(["--id", &id, "--seed"])
        .arg((seed ^ ((slot as u64) << 32) ^ incarnation as u64).to_string())
        .arg("--log")
        .arg(base.join("logs").join(format!("{id}.jsonl")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("an agent starts")
}

/// Runs the agents, the killer and the sampler; returns a summary line.
fn orchestrate(base: &Path, agents: usize, duration: Duration, seed: u64) -> String {
    std::fs::create_dir_all(base.join("coord")).expect("the coordination directory");
    std::fs::create_dir_all(base.join("logs")).expect("the log directory");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut children: Vec<(Child, usize)> = (0..agents)
        .map(|slot| (spawn_agent(base, slot, 0, seed), 0))
        .collect();
    let stop = AtomicBool::new(false);
    let samples = AtomicUsize::new(0);
    let bad_samples = AtomicUsize::new(0);
    let mut kills = 0;
    let mut crashes = 0;
    thread::scope(|scope| {
        // The claims file must parse at every moment, read without a lock.
        scope.spawn(|| {
            let path = base.join("coord").join(coord_file::CLAIMS_FILE);
            while !stop.load(Ordering::SeqCst) {
                if let Ok(bytes) = std::fs::read(&path) {
                    samples.fetch_add(1, Ordering::SeqCst);
                    if serde_json::from_slice::<Vec<serde_json::Value>>(&bytes).is_err() {
                        bad_samples.fetch_add(1, Ordering::SeqCst);
                        let _ = std::fs::write(base.join("logs").join("bad-sample.json"), &bytes);
                    }
                }
                thread::sleep(Duration::from_millis(5));
            }
        });
        let started = Instant::now();
        while started.elapsed() < duration {
            thread::sleep(Duration::from_millis(rng.u64(20..200)));
            // Agents that killed themselves at a crash point come back too.
            for (slot, (child, incarnation)) in children.iter_mut().enumerate() {
                if let Ok(Some(_)) = child.try_wait() {
                    crashes += 1;
                    *incarnation += 1;
                    *child = spawn_agent(base, slot, *incarnation, seed);
                }
            }
            let slot = rng.usize(..agents);
            let (child, incarnation) = &mut children[slot];
            let _ = child.kill(); // SIGKILL, wherever it is
            let _ = child.wait();
            kills += 1;
            *incarnation += 1;
            *child = spawn_agent(base, slot, *incarnation, seed);
        }
        for (child, _) in &mut children {
            let _ = child.kill();
            let _ = child.wait();
        }
        stop.store(true, Ordering::SeqCst);
    });
    let bad = bad_samples.load(Ordering::SeqCst);
    if bad > 0 {
        std::fs::write(base.join("logs").join("bad-samples"), bad.to_string()).expect("a note");
    }
    format!(
        "coord-torture: {kills} kills, {crashes} self-kills at crash points; the claims file parsed in {} of {} samples taken during the run",
        samples.load(Ordering::SeqCst) - bad,
        samples.load(Ordering::SeqCst)
    )
}
