//! `coord-torture`: N agent processes run random operations on one store
//! for T seconds while a killer sends SIGKILL to random agents (and starts
//! new ones) at random moments. Then a checker verifies the store, the
//! event log and every acknowledgement the agents logged. A failing run
//! prints the seed that reproduces its schedule.
//!
//! The store is a coordination directory, or with `--postgres` a throwaway
//! PostgreSQL cluster (or `--database-url` an existing database), where a
//! cutter also terminates random agents' database connections. On a
//! directory every fourth agent is long-lived: four threads sharing one
//! store, whose changes group commit writes together; each thread logs as
//! an agent of its own, and a kill takes all four at once.
//!
//! ```text
//! coord-torture [--agents 20] [--seconds 10] [--seed N] [--dir DIR]
//!               [--postgres | --database-url URL [--schema NAME]] [--skew-seconds S]
//! ```
//!
//! On PostgreSQL, `--skew-seconds S` runs the first agent with a client
//! clock S seconds ahead and the second S seconds behind: the database's
//! clock must decide, so the checker still finds no lease taken early.

mod agent;
mod check;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use coord_core::Store;
use coord_file::{FileStore, FileStoreOptions};
use coord_pg::{PgStore, PgStoreOptions};
use coord_testkit::{PgCluster, PgClusterOptions, skewed_clock};

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
    /// Where logs (and the coordination directory) go (default: a new
    /// temporary directory, kept on failure)
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Run against a throwaway PostgreSQL cluster instead of a directory
    #[arg(long, conflicts_with = "database_url")]
    postgres: bool,
    /// Run against this PostgreSQL database instead of a directory
    #[arg(long)]
    database_url: Option<String>,
    /// PostgreSQL: the first agent's clock runs this many seconds ahead,
    /// the second's as many behind
    #[arg(long, default_value_t = 0)]
    skew_seconds: i64,
    /// The schema to use in that database (default: `torture_<seed>`)
    #[arg(long)]
    schema: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// One agent (started by the orchestrator)
    Agent {
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long)]
        database_url: Option<String>,
        #[arg(long)]
        schema: Option<String>,
        #[arg(long)]
        id: String,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        log: PathBuf,
        /// Seconds the agent's clock is off (PostgreSQL)
        #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
        clock_offset_s: i64,
        /// Threads sharing one store in this process (a directory only):
        /// a long-lived agent, whose changes group commit writes together.
        /// Each logs as its own agent, `<id>_t<n>`.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
}

/// The store under test.
#[derive(Debug, Clone)]
enum Target {
    Dir(PathBuf),
    Pg { url: String, schema: String },
}

/// The directory store an agent uses: compacting often, so cleanup runs
/// under the kills too.
fn file_store(dir: &Path) -> FileStore {
    FileStore::with_options(
        dir,
        FileStoreOptions::default()
            .lock_timeout(Duration::from_secs(30))
            .compact_at(40)
            .compact_keep(10)
            .on_warning(std::sync::Arc::new(|_| {})),
    )
}

impl Target {
    /// The store, with a client clock `clock_offset_s` seconds off (on
    /// PostgreSQL; a directory is on one machine and one clock).
    fn open(&self, clock_offset_s: i64) -> Box<dyn Store> {
        match self {
            Target::Dir(dir) => Box::new(file_store(dir)),
            Target::Pg { url, schema } => {
                // The database may be restarting its connections under us.
                let options = PgStoreOptions::default()
                    .schema(schema.clone())
                    .lock_timeout(Duration::from_secs(30))
                    .clock(skewed_clock(clock_offset_s));
                loop {
                    match PgStore::connect(url, options.clone()) {
                        Ok(store) => return Box::new(store),
                        Err(_) => thread::sleep(Duration::from_millis(50)),
                    }
                }
            }
        }
    }

    fn args(&self) -> Vec<String> {
        match self {
            Target::Dir(dir) => vec!["--dir".into(), dir.display().to_string()],
            Target::Pg { url, schema } => vec![
                "--database-url".into(),
                url.clone(),
                "--schema".into(),
                schema.clone(),
            ],
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Role::Agent {
        dir,
        database_url,
        schema,
        id,
        seed,
        log,
        clock_offset_s,
        threads,
    }) = cli.role
    {
        let target = match (dir, database_url) {
            (Some(dir), None) => Target::Dir(dir),
            (None, Some(url)) => Target::Pg {
                url,
                schema: schema.unwrap_or_else(|| "coord".into()),
            },
            _ => panic!("an agent needs --dir or --database-url"),
        };
        match (&target, threads) {
            (Target::Dir(dir), n) if n > 1 => {
                let store = file_store(dir);
                thread::scope(|scope| {
                    for t in 0..n {
                        let (store, id) = (&store, format!("{id}_t{t}"));
                        let log = log.with_file_name(format!("{id}.jsonl"));
                        scope.spawn(move || agent::run(store, &id, seed ^ t as u64, &log));
                    }
                    // How many writes of the claims file their changes took,
                    // as of the last look before the kill.
                    let writes = log.with_extension("writes");
                    loop {
                        thread::sleep(Duration::from_millis(50));
                        let _ = std::fs::write(&writes, store.claims_writes().to_string());
                    }
                });
            }
            _ => agent::run(target.open(clock_offset_s).as_ref(), &id, seed, &log),
        }
        return ExitCode::SUCCESS;
    }
    let seed = cli.seed.unwrap_or_else(|| fastrand::u64(..));
    let temp = tempfile::tempdir().expect("a temporary directory");
    let base = cli.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    let cluster = if cli.postgres {
        match PgCluster::start(&PgClusterOptions::default()) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("coord-torture: cannot start a PostgreSQL cluster: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let url = cluster
        .as_ref()
        .map(PgCluster::url)
        .or(cli.database_url.clone());
    let target = match url {
        Some(url) => Target::Pg {
            url,
            schema: cli
                .schema
                .clone()
                .unwrap_or_else(|| format!("torture_{seed}")),
        },
        None => Target::Dir(base.join("coord")),
    };
    println!(
        "coord-torture: seed {seed}, {} agents, {} s, {} (logs in {})",
        cli.agents,
        cli.seconds,
        match &target {
            Target::Dir(dir) => format!("directory {}", dir.display()),
            Target::Pg { schema, .. } if cli.skew_seconds != 0 => format!(
                "PostgreSQL schema {schema}, two agents' clocks {} s off",
                cli.skew_seconds
            ),
            Target::Pg { schema, .. } => format!("PostgreSQL schema {schema}"),
        },
        base.display()
    );
    let report = orchestrate(
        &base,
        &target,
        cli.agents,
        Duration::from_secs(cli.seconds),
        seed,
        cli.skew_seconds,
    );
    println!("{report}");
    let store = target.open(0);
    let verdict = match &target {
        Target::Dir(dir) => check::check(
            store.as_ref(),
            || FileStore::new(dir).archived(),
            check::Order::Global,
            check::Run::Kills,
            &base.join("logs"),
        ),
        Target::Pg { url, schema } => {
            let options = PgStoreOptions::default().schema(schema.clone());
            check::check(
                store.as_ref(),
                || PgStore::connect(url, options)?.archived(),
                check::Order::PerItemAndWorkType,
                check::Run::KillsAndCutConnections,
                &base.join("logs"),
            )
        }
    };
    match verdict {
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

fn spawn_agent(
    base: &Path,
    target: &Target,
    slot: usize,
    incarnation: usize,
    seed: u64,
    skew_seconds: i64,
) -> Child {
    let id = format!("agent_{slot}_{incarnation}");
    let mut rng = fastrand::Rng::with_seed(seed ^ ((slot as u64) << 40) ^ incarnation as u64);
    let mut command = Command::new(std::env::current_exe().expect("our own path"));
    if matches!(target, Target::Dir(_)) && rng.u8(..3) == 0 {
        command.env(
            "COORD_CRASH_AT",
            CRASH_POINTS[rng.usize(..CRASH_POINTS.len())],
        );
    } else {
        command.env_remove("COORD_CRASH_AT");
    }
    command
        .arg("agent")
        .args(target.args())
        .args(["--id", &id, "--seed"])
        .arg((seed ^ ((slot as u64) << 32) ^ incarnation as u64).to_string())
        .arg("--log")
        .arg(base.join("logs").join(format!("{id}.jsonl")))
        // Every fourth agent on a directory is long-lived: four threads on
        // one store, written together by group commit.
        .args(match target {
            Target::Dir(_) if slot % 4 == 3 => vec!["--threads", "4"],
            _ => vec![],
        })
        .arg("--clock-offset-s")
        .arg(
            match slot {
                0 => skew_seconds,
                1 => -skew_seconds,
                _ => 0,
            }
            .to_string(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("an agent starts")
}

/// What the long-lived agents' group commit did: their threads'
/// acknowledged operations, and the writes of the claims file they took
/// (as each process last reported before it was killed).
fn group_commit_summary(logs: &Path) -> String {
    let (mut acks, mut writes) = (0usize, 0u64);
    for entry in std::fs::read_dir(logs).into_iter().flatten().flatten() {
        let path = entry.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.ends_with(".writes") {
            writes += std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .unwrap_or(0);
        } else if name.contains("_t") && name.ends_with(".jsonl") {
            acks += std::fs::read_to_string(&path)
                .map(|t| {
                    t.lines()
                        .filter(|l| l.contains("\"phase\":\"ack\""))
                        .count()
                })
                .unwrap_or(0);
        }
    }
    format!(
        "long-lived agents (four threads on one store): {acks} acknowledged operations in about {writes} writes of the claims file"
    )
}

/// Runs the agents, the killer, and the sampler (for a directory) or the
/// connection cutter (for PostgreSQL); returns a summary line.
fn orchestrate(
    base: &Path,
    target: &Target,
    agents: usize,
    duration: Duration,
    seed: u64,
    skew_seconds: i64,
) -> String {
    if let Target::Dir(dir) = target {
        std::fs::create_dir_all(dir).expect("the coordination directory");
    } else {
        // Agents race to make the tables; one store made first avoids it.
        drop(target.open(0));
    }
    std::fs::create_dir_all(base.join("logs")).expect("the log directory");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut children: Vec<(Child, usize)> = (0..agents)
        .map(|slot| (spawn_agent(base, target, slot, 0, seed, skew_seconds), 0))
        .collect();
    let stop = AtomicBool::new(false);
    let samples = AtomicUsize::new(0);
    let bad_samples = AtomicUsize::new(0);
    let cuts = AtomicUsize::new(0);
    let mut kills = 0;
    let mut crashes = 0;
    thread::scope(|scope| {
        // The claims file must parse at every moment, read without a lock.
        scope.spawn(|| {
            let Target::Dir(dir) = target else {
                return;
            };
            let path = dir.join(coord_file::CLAIMS_FILE);
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
        // Connections cut under random agents, wherever they are.
        scope.spawn(|| {
            let Target::Pg { url, .. } = target else {
                return;
            };
            let mut rng = fastrand::Rng::with_seed(seed ^ 0xc07);
            let Ok(mut client) = postgres::Client::connect(url, postgres::NoTls) else {
                return;
            };
            while !stop.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(rng.u64(20..200)));
                if let Ok(rows) = client.query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() \
                       AND datname = current_database() ORDER BY random() LIMIT 1",
                    &[],
                ) && rows.first().is_some_and(|r| r.get::<_, bool>(0))
                {
                    cuts.fetch_add(1, Ordering::SeqCst);
                }
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
                    *child = spawn_agent(base, target, slot, *incarnation, seed, skew_seconds);
                }
            }
            let slot = rng.usize(..agents);
            let (child, incarnation) = &mut children[slot];
            let _ = child.kill(); // SIGKILL, wherever it is
            let _ = child.wait();
            kills += 1;
            *incarnation += 1;
            *child = spawn_agent(base, target, slot, *incarnation, seed, skew_seconds);
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
    match target {
        Target::Dir(_) => format!(
            "coord-torture: {kills} kills, {crashes} self-kills at crash points; the claims file parsed in {} of {} samples taken during the run; {}",
            samples.load(Ordering::SeqCst) - bad,
            samples.load(Ordering::SeqCst),
            group_commit_summary(&base.join("logs")),
        ),
        Target::Pg { .. } => format!(
            "coord-torture: {kills} kills, {} database connections cut",
            cuts.load(Ordering::SeqCst)
        ),
    }
}
