//! `coord-bench`: how fast coord is, as ratios against baselines measured
//! in the same run (these machines are shared and noisy).
//!
//! ```text
//! cargo build --release --bins && ./target/release/coord-bench [--quick] [SCENARIO ...]
//! ```
//!
//! Scenarios: `durable` (one claimer vs the bare durable-update loop),
//! `contention` (1/4/16/64 processes), `growth` (live and finished items),
//! `process` (a `coord claim` invocation vs a minimal program and `true`),
//! `postgres` (the PostgreSQL store vs `pgbench` on a throwaway server of
//! its own). Each prints a table;
//! all results go to one JSON file.

mod bare;
mod postgres;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use coord_core::transition::{self, Action, Actor, NewIds};
use coord_core::{ClaimRequest, NextRequest, PostRequest, Store, Timestamp};
use coord_file::{CLAIMS_FILE, FileStore, FileStoreOptions};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(name = "coord-bench")]
struct Cli {
    #[command(subcommand)]
    worker: Option<Worker>,
    /// Smaller sizes, for a smoke run
    #[arg(long)]
    quick: bool,
    /// Where to write the JSON results
    #[arg(long, default_value = "target/coord-bench.json")]
    out: PathBuf,
    /// Where to make the benchmark directories (default: the system temp dir)
    #[arg(long)]
    base: Option<PathBuf>,
    /// Which scenarios to run (default: all)
    scenarios: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum Worker {
    /// One contention worker (started by the benchmark)
    Worker {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        agent: String,
        #[arg(long)]
        pairs: usize,
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Some(Worker::Worker {
        dir,
        agent,
        pairs,
        out,
    }) = cli.worker
    {
        contention_worker(&dir, &agent, pairs, &out);
        return;
    }
    let base = cli.base.clone().unwrap_or_else(std::env::temp_dir);
    let wanted = |name: &str| cli.scenarios.is_empty() || cli.scenarios.iter().any(|s| s == name);
    let machine = machine(&base);
    println!(
        "coord-bench on {}",
        machine["summary"].as_str().unwrap_or_default()
    );
    let mut results = serde_json::Map::new();
    let mut single_rate = None;
    if wanted("durable") {
        let r = durable(&base, cli.quick);
        single_rate = r["coord_transitions_per_s"].as_f64();
        results.insert("durable".into(), r);
    }
    if wanted("contention") {
        results.insert(
            "contention".into(),
            contention(&base, cli.quick, single_rate),
        );
    }
    if wanted("growth") {
        results.insert("growth".into(), growth(&base, cli.quick));
    }
    if wanted("process") {
        results.insert("process".into(), process(&base, cli.quick));
    }
    if wanted("work") {
        results.insert("work".into(), work(&base, cli.quick));
    }
    if wanted("postgres") {
        results.insert("postgres".into(), postgres::run(cli.quick));
    }
    let report = json!({"machine": machine, "quick": cli.quick, "results": results});
    if let Some(parent) = cli.out.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(
        &cli.out,
        serde_json::to_string_pretty(&report).expect("JSON"),
    )
    .expect("the results file");
    println!("\nresults written to {}", cli.out.display());
}

/// Long-lived throughput on a directory, all in one run: the one-writer
/// ceiling (sequential durable replacements of a small file by one
/// process, the bare loop), the library's own loop (`next` then `complete`
/// on one store) with one thread and with eight sharing the store (group
/// commit; and without it, for comparison), and `coord work -- true` with
/// one slot and with eight. Transitions are two per item (take, complete);
/// writes per transition count the durable replacements of the claims file
/// (`FileStore::claims_writes`, and `coord work`'s summary).
fn work(base: &Path, quick: bool) -> Value {
    // One round's figures: the ceiling's, then each loop's (items per
    // second, writes per transition).
    type Round = [(f64, f64); 6];
    let n = if quick { 160 } else { 400 };
    let coord = std::env::current_exe()
        .expect("our own path")
        .with_file_name("coord");
    println!(
        "\n## work: {n} queued items; library loop and `coord work -- true` against the one-writer ceiling, median of 3"
    );
    if !coord.exists() {
        println!("skipped: build the binaries first (cargo build --release --bins)");
        return json!({"skipped": "binaries not built"});
    }
    let queue = |dir: &Path| {
        let store = store(dir);
        for i in 0..n {
            store
                .post(&PostRequest::new("boss", "job").description(i.to_string()))
                .expect("a post");
        }
    };
    // Items per second, and writes of the claims file per transition.
    let library = |threads: usize, group: bool| -> (f64, f64) {
        let d = dir_in(base);
        queue(d.path());
        let store =
            FileStore::with_options(d.path(), FileStoreOptions::default().group_commit(group));
        let before = store.claims_writes();
        let t = Instant::now();
        std::thread::scope(|scope| {
            for k in 0..threads {
                let store = &store;
                scope.spawn(move || {
                    let agent = format!("w{k}");
                    while let Ok(item) = store.next(&NextRequest::new(agent.as_str())) {
                        let done = Action::Complete { result: None };
                        store
                            .act(
                                &item.work_item_id,
                                &done,
                                &Actor::new(&agent).fence(item.fence),
                            )
                            .expect("a completion");
                    }
                });
            }
        });
        let rate = n as f64 / t.elapsed().as_secs_f64();
        (
            rate,
            (store.claims_writes() - before) as f64 / (2 * n) as f64,
        )
    };
    let worker = |slots: usize| -> (f64, f64) {
        let d = dir_in(base);
        queue(d.path());
        let t = Instant::now();
        let out = Command::new(&coord)
            .args(["--agent", "w", "--no-telemetry", "work", "--max-items"])
            .arg(n.to_string())
            .arg("--concurrency")
            .arg(slots.to_string())
            .args(["--", "true"])
            .env("COORD_DIR", d.path())
            .stdout(Stdio::null())
            .output()
            .expect("coord work runs");
        assert!(out.status.success(), "coord work failed");
        let rate = n as f64 / t.elapsed().as_secs_f64();
        let summary: Value = String::from_utf8_lossy(&out.stderr)
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .unwrap_or_default();
        let writes = summary["summary"]["claims_writes"]
            .as_f64()
            .unwrap_or(f64::NAN);
        (rate, writes / (2 * n) as f64)
    };
    let mut rounds: Vec<Round> = Vec::new();
    let mut spawns: Vec<f64> = Vec::new();
    for _ in 0..3 {
        let d = dir_in(base);
        let lock = bare::lock_file(d.path()).expect("a lock file");
        let t = Instant::now();
        for _ in 0..n {
            bare::durable_update(d.path(), &lock, SMALL_FILE).expect("a bare update");
        }
        let ceiling = n as f64 / t.elapsed().as_secs_f64();
        // The machine's own limit for `-- true`: starting it, one after
        // another, from this small process (std uses posix_spawn here).
        let t = Instant::now();
        for _ in 0..n {
            Command::new("true").status().expect("true runs");
        }
        spawns.push(n as f64 / t.elapsed().as_secs_f64());
        rounds.push([
            (ceiling, 1.0),
            library(1, true),
            library(8, true),
            library(8, false),
            worker(1),
            worker(8),
        ]);
    }
    let med = |i: usize| median(rounds.iter().map(|r| r[i].0).collect());
    let writes = |i: usize| median(rounds.iter().map(|r| r[i].1).collect());
    let ceiling = med(0);
    let names = [
        "one-writer ceiling (bare durable replacements)",
        "library loop, 1 thread",
        "library loop, 8 threads (group commit)",
        "library loop, 8 threads (no group commit)",
        "coord work --concurrency 1 -- true",
        "coord work --concurrency 8 -- true",
    ];
    println!(
        "{:<48} {:>10} {:>12} {:>14}",
        "", "items/s", "transitions/s", "writes/transition"
    );
    println!("{:<48} {:>10} {ceiling:>12.0}", names[0], "");
    for (i, name) in names.iter().enumerate().skip(1) {
        println!(
            "{name:<48} {:>10.0} {:>12.0} {:>14.2}",
            med(i),
            2.0 * med(i),
            writes(i)
        );
    }
    let spawn_rate = median(spawns.clone());
    println!(
        "{:<48} {spawn_rate:>10.0}",
        "`true` started one after another"
    );
    let ratio = |label: &str, value: f64| println!("{label:<72} {value:>6.2}");
    ratio(
        "library x8 transitions / one-writer ceiling (target >= 2)",
        2.0 * med(2) / ceiling,
    );
    ratio("library x8 / library x1 (target >= 4)", med(2) / med(1));
    ratio("work x8 / library x8 (target >= 0.7)", med(5) / med(2));
    ratio(
        "work x8 transitions / one-writer ceiling (target >= 1)",
        2.0 * med(5) / ceiling,
    );
    ratio(
        "work x8 / `true` started one after another",
        med(5) / spawn_rate,
    );
    // Each round's own ratios, for the range.
    let range = |f: &dyn Fn(&Round) -> f64| {
        let v: Vec<f64> = rounds.iter().map(f).collect();
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        json!([lo, hi])
    };
    json!({
        "items": n,
        "ceiling_transitions_per_s": ceiling,
        "library_1_per_s": med(1),
        "library_8_per_s": med(2),
        "library_8_no_group_commit_per_s": med(3),
        "work_1_per_s": med(4),
        "work_8_per_s": med(5),
        "writes_per_transition": {
            "library_8": writes(2), "library_8_no_group_commit": writes(3), "work_8": writes(5)
        },
        "ratio_library_8_to_ceiling": 2.0 * med(2) / ceiling,
        "ratio_library_8_to_ceiling_range": range(&|r| 2.0 * r[2].0 / r[0].0),
        "ratio_library_8_to_library_1": med(2) / med(1),
        "ratio_work_8_to_library_8": med(5) / med(2),
        "ratio_work_8_to_library_8_range": range(&|r| r[5].0 / r[2].0),
        "ratio_work_8_to_ceiling": 2.0 * med(5) / ceiling,
        "true_starts_per_s": spawn_rate,
        "ratio_work_8_to_true_starts": med(5) / spawn_rate,
    })
}

fn machine(base: &Path) -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    #[allow(clippy::unnecessary_cast)] // f_type's type differs by platform
    let fs = rustix::fs::statfs(base).map_or(0, |s| s.f_type as i64);
    let fs_name = match fs {
        0xEF53 => "ext4",
        0x0102_1994 => "tmpfs",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x794C_7630 => "overlayfs",
        _ => "other",
    };
    json!({
        "cpu": cpu, "cores": cores, "kernel": kernel, "filesystem": fs_name, "base": base.display().to_string(),
        "date": Timestamp::now().to_string(),
        "summary": format!("{cpu}, {cores} cores, Linux {kernel}, {fs_name} at {}", base.display()),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn dir_in(base: &Path) -> tempfile::TempDir {
    tempfile::tempdir_in(base).expect("a benchmark directory")
}

/// A store as the CLI makes one for an agent that gives its id.
fn store(dir: &Path) -> FileStore {
    store_with(dir, true)
}

/// The same, with or without the shell tools' lock file protocol.
fn store_with(dir: &Path, shell_lock: bool) -> FileStore {
    FileStore::with_options(
        dir,
        FileStoreOptions::default()
            .lock_timeout(Duration::from_secs(300))
            .shell_lock(shell_lock)
            .on_warning(std::sync::Arc::new(|_| {})),
    )
}

/// One claim and its completion: two durable transitions.
fn claim_and_complete(
    store: &FileStore,
    agent: &str,
) -> Result<(Duration, Duration), coord_core::CoordError> {
    let t = Instant::now();
    let c = store.claim(&ClaimRequest::new(agent, "bench"))?;
    let claimed = t.elapsed();
    let t = Instant::now();
    store.act(
        &c.work_item_id,
        &Action::Complete { result: None },
        &Actor::new(agent),
    )?;
    Ok((claimed, t.elapsed()))
}

const SMALL_FILE: &[u8] = br#"[
  {"work_item_id":"work_1795678013567912756","agent_id":"agent_alice","work_type":"deploy","description":"ship release 1.4","priority":"high","claimed_at":"2026-11-26T07:26:53.567792Z","status":"in_progress","coordination_id":"coord_1795678013567912756","origin":"claim","fence":1,"revision":1,"lease_expires_at":"2026-11-26T07:56:53.567792Z","lease_ms":1800000}
]
"#;

/// Scenario 1: durable single-claimer throughput vs the bare loop.
fn durable(base: &Path, quick: bool) -> Value {
    let n = if quick { 60 } else { 300 };
    let (mut bare_rates, mut coord_rates, mut lean_rates) = (Vec::new(), Vec::new(), Vec::new());
    let coord_rate = |shell_lock: bool| {
        let dir = dir_in(base);
        let store = store_with(dir.path(), shell_lock);
        let t = Instant::now();
        for _ in 0..n / 2 {
            claim_and_complete(&store, "bench").expect("a claim");
        }
        (n / 2 * 2) as f64 / t.elapsed().as_secs_f64()
    };
    for _ in 0..3 {
        let dir = dir_in(base);
        let lock = bare::lock_file(dir.path()).expect("a lock file");
        let t = Instant::now();
        for _ in 0..n {
            bare::durable_update(dir.path(), &lock, SMALL_FILE).expect("a bare update");
        }
        bare_rates.push(n as f64 / t.elapsed().as_secs_f64());
        coord_rates.push(coord_rate(true));
        lean_rates.push(coord_rate(false));
    }
    let (bare, coord, lean) = (median(bare_rates), median(coord_rates), median(lean_rates));
    let ratio = coord / bare;
    println!("\n## durable: one claimer, {n} transitions per round, median of 3 rounds");
    println!("{:<44} {:>12}", "", "per second");
    println!(
        "{:<44} {:>12.0}",
        "bare loop (lock, write, fsync, rename, fsync dir)", bare
    );
    println!(
        "{:<44} {:>12.0}",
        "coord transitions (claim, complete)", coord
    );
    println!(
        "{:<44} {:>12.0}",
        "coord without the shell-tool lock file", lean
    );
    println!(
        "{:<44} {:>12.2}   (target >= 0.80)",
        "ratio coord / bare", ratio
    );
    println!(
        "{:<44} {:>12.2}",
        "ratio coord without shell lock / bare",
        lean / bare
    );
    json!({"transitions_per_round": n, "bare_updates_per_s": bare, "coord_transitions_per_s": coord, "ratio": ratio,
        "coord_without_shell_lock_per_s": lean, "ratio_without_shell_lock": lean / bare, "target": 0.8})
}

/// Scenario 2: P processes each claiming and completing on one directory.
fn contention(base: &Path, quick: bool, single_rate: Option<f64>) -> Value {
    let total = if quick { 120 } else { 480 };
    let me = std::env::current_exe().expect("our own path");
    let mut rows = Vec::new();
    println!(
        "\n## contention: P processes claiming and completing on one directory ({total} transitions in all)"
    );
    println!(
        "{:>4} {:>14} {:>10} {:>10} {:>9} {:>10}",
        "P", "transitions/s", "p50 ms", "p99 ms", "failures", "vs single"
    );
    let mut single = single_rate;
    for p in [1usize, 4, 16, 64] {
        let dir = dir_in(base);
        let pairs = (total / 2 / p).max(2);
        let mut workers: Vec<_> = (0..p)
            .map(|i| {
                Command::new(&me)
                    .args([
                        "worker",
                        "--agent",
                        &format!("worker_{i}"),
                        "--pairs",
                        &pairs.to_string(),
                        "--dir",
                    ])
                    .arg(dir.path())
                    .arg("--out")
                    .arg(dir.path().join(format!("latency_{i}.json")))
                    .stdin(Stdio::piped())
                    .spawn()
                    .expect("a worker starts")
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200)); // let them all start
        let t = Instant::now();
        for w in &mut workers {
            // The go signal: workers wait for their stdin to close.
            drop(w.stdin.take());
        }
        for w in &mut workers {
            assert!(
                w.wait().expect("a worker ends").success(),
                "a worker failed"
            );
        }
        let wall = t.elapsed().as_secs_f64();
        let mut latencies = Vec::new();
        let mut failures = 0;
        for i in 0..p {
            let r: Value = serde_json::from_slice(
                &std::fs::read(dir.path().join(format!("latency_{i}.json"))).expect("results"),
            )
            .expect("JSON");
            latencies.extend(
                r["latencies_us"]
                    .as_array()
                    .expect("latencies")
                    .iter()
                    .filter_map(Value::as_f64),
            );
            failures += r["errors"].as_u64().unwrap_or(0);
        }
        latencies.sort_by(f64::total_cmp);
        let rate = (pairs * p * 2) as f64 / wall;
        let single_rate = *single.get_or_insert(rate);
        let (p50, p99) = (
            percentile(&latencies, 0.5) / 1000.0,
            percentile(&latencies, 0.99) / 1000.0,
        );
        println!(
            "{p:>4} {rate:>14.0} {p50:>10.2} {p99:>10.2} {failures:>9} {:>10.2}",
            rate / single_rate
        );
        rows.push(json!({"processes": p, "transitions": pairs * p * 2, "transitions_per_s": rate, "p50_ms": p50, "p99_ms": p99,
            "failures": failures, "ratio_to_single": rate / single_rate}));
    }
    println!("target: 16 processes keep >= 0.70 of the single claimer's rate; no failures");
    json!({"rows": rows, "target_ratio_at_16": 0.7})
}

fn contention_worker(dir: &Path, agent: &str, pairs: usize, out: &Path) {
    let mut go = [0u8; 1];
    let _ = std::io::stdin().read(&mut go);
    let store = store(dir);
    let mut latencies = Vec::with_capacity(pairs * 2);
    let mut errors = 0;
    for _ in 0..pairs {
        match claim_and_complete(&store, agent) {
            Ok((a, b)) => latencies.extend([a.as_secs_f64() * 1e6, b.as_secs_f64() * 1e6]),
            Err(_) => errors += 1,
        }
    }
    let mut f = std::fs::File::create(out).expect("the results file");
    f.write_all(
        json!({"latencies_us": latencies, "errors": errors})
            .to_string()
            .as_bytes(),
    )
    .expect("written");
}

/// A claims file with `live` in-progress and `finished` completed items.
fn seeded_claims(live: usize, finished: usize) -> Vec<u8> {
    seeded_queue(0, live, finished)
}

/// A claims file with `pending` posted items, then `live` in-progress and
/// `finished` completed ones.
fn seeded_queue(pending: usize, live: usize, finished: usize) -> Vec<u8> {
    let now = Timestamp::now();
    let mut out = b"[".to_vec();
    for i in 0..pending + live + finished {
        let ids = NewIds {
            work_item_id: format!("work_{}", 1_000_000 + i),
            coordination_id: format!("coord_{}", 1_000_000 + i),
        };
        let description = "a benchmark item of a typical size, with a sentence of description";
        if i < pending {
            let req = PostRequest::new("boss", format!("type_{}", i % 20)).description(description);
            let claim = transition::post(&req, ids, now).claim;
            out.extend_from_slice(if i == 0 { b"\n  " } else { b",\n  " });
            out.extend_from_slice(serde_json::to_string(&claim).expect("JSON").as_bytes());
            continue;
        }
        let req = ClaimRequest::new(format!("agent_{}", i % 50), format!("type_{}", i % 20))
            .description(description)
            .lease(Duration::from_secs(86_400));
        let mut claim = transition::claim(&req, ids, i as u64 + 1, now).claim;
        if i >= pending + live {
            let done = transition::apply(
                &claim,
                &Action::Complete {
                    result: Some("ok".into()),
                },
                &Actor::new(claim.agent_id.as_deref().unwrap_or("")),
                now,
            )
            .expect("complete");
            claim = done.claim;
        }
        out.extend_from_slice(if i == 0 { b"\n  " } else { b",\n  " });
        out.extend_from_slice(serde_json::to_string(&claim).expect("JSON").as_bytes());
    }
    out.extend_from_slice(b"\n]\n");
    out
}

/// p50s of `m` timed claims in `dir` (after two unmeasured ones) and of
/// `m` bare durable rewrites of a file of the claims file's size, taken in
/// turn (claim, rewrite, claim, ...) so that both see the machine's load
/// as it drifts. Returns (claim p50, bare p50, the file's size).
fn claim_and_bare_p50(base: &Path, dir: &Path, m: usize) -> (f64, f64, u64) {
    op_and_bare_p50(base, dir, m, |store| {
        store
            .claim(&ClaimRequest::new("bench", "bench"))
            .expect("a claim");
    })
}

/// The same for `op`, any one change.
fn op_and_bare_p50(base: &Path, dir: &Path, m: usize, op: impl Fn(&FileStore)) -> (f64, f64, u64) {
    let store = store(dir);
    for _ in 0..2 {
        op(&store);
    }
    // Compare with a file the size of the claims file as measured.
    let size = std::fs::metadata(dir.join(CLAIMS_FILE)).map_or(0, |md| md.len());
    let bytes = vec![b' '; size as usize];
    let bare_dir = dir_in(base);
    let lock = bare::lock_file(bare_dir.path()).expect("a lock file");
    let (mut ops, mut bares) = (Vec::with_capacity(m), Vec::with_capacity(m));
    for _ in 0..m {
        let t = Instant::now();
        op(&store);
        ops.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        bare::durable_update(bare_dir.path(), &lock, &bytes).expect("a bare update");
        bares.push(t.elapsed().as_secs_f64() * 1e6);
    }
    ops.sort_by(f64::total_cmp);
    bares.sort_by(f64::total_cmp);
    (percentile(&ops, 0.5), percentile(&bares, 0.5), size)
}

/// Scenario 3: claim latency as the store grows.
fn growth(base: &Path, quick: bool) -> Value {
    let m = if quick { 15 } else { 41 };
    let finished = if quick { 20_000 } else { 100_000 };
    println!(
        "\n## growth: claim latency (p50 of {m}) vs a bare durable rewrite of a file of the same size, taken in turn"
    );
    println!(
        "{:>8} {:>10} {:>10} {:>14} {:>9}",
        "live", "finished", "file KB", "claim p50 ms", "vs bare"
    );
    let mut rows = Vec::new();
    let mut p50_by_live = Vec::new();
    for (live, done) in [(10, 0), (1_000, 0), (10_000, 0), (10, finished)] {
        let dir = dir_in(base);
        let bytes = seeded_claims(live, done);
        std::fs::write(dir.path().join(CLAIMS_FILE), &bytes).expect("seeded");
        let (claim, bare, size) = claim_and_bare_p50(base, dir.path(), m);
        println!(
            "{live:>8} {done:>10} {:>10} {:>14.2} {:>9.2}",
            size / 1024,
            claim / 1000.0,
            claim / bare
        );
        if done == 0 {
            p50_by_live.push((live, claim));
        }
        rows.push(json!({"live": live, "finished": done, "file_bytes": size, "claim_p50_us": claim, "bare_rewrite_p50_us": bare, "ratio_to_bare": claim / bare}));
    }
    let none = rows[0]["claim_p50_us"].as_f64().unwrap_or(1.0);
    let with_finished = rows[3]["claim_p50_us"].as_f64().unwrap_or(0.0);
    let slope = (p50_by_live[2].1 - p50_by_live[1].1)
        / ((p50_by_live[2].0 - p50_by_live[1].0) as f64 / 1000.0);
    println!(
        "finished items: p50 with {finished} finished / p50 with none = {:.2} (target <= 1.5)",
        with_finished / none
    );
    println!(
        "at 10,000 live items a claim costs {:.2}x a bare rewrite of the same file (target <= 1.5)",
        rows[2]["ratio_to_bare"].as_f64().unwrap_or(0.0)
    );
    println!(
        "complexity: linear in live items, {slope:.0} us per 1,000 live items (the file is rewritten whole)"
    );
    // `next` chooses among every pending item beside every live claim.
    let (pending, live) = (5_000, 5_000);
    let dir = dir_in(base);
    std::fs::write(dir.path().join(CLAIMS_FILE), seeded_queue(pending, live, 0)).expect("seeded");
    let (next, bare, size) = op_and_bare_p50(base, dir.path(), m, |store| {
        store
            .next(&NextRequest::new("bench"))
            .expect("an item to take");
    });
    println!(
        "next with {pending} pending and {live} live items ({} KB): p50 {:.2} ms, {:.2}x a bare rewrite of the same file",
        size / 1024,
        next / 1000.0,
        next / bare
    );
    json!({"rows": rows, "finished_ratio": with_finished / none, "us_per_1000_live": slope,
        "next": {"pending": pending, "live": live, "file_bytes": size, "next_p50_us": next,
            "bare_rewrite_p50_us": bare, "ratio_to_bare": next / bare},
        "targets": {"finished_ratio": 1.5, "ratio_to_bare_at_10000": 1.5}})
}

/// Scenario 5: one `coord claim` process vs a minimal durable update and `true`.
fn process(base: &Path, quick: bool) -> Value {
    let n = if quick { 30 } else { 150 };
    let bin = std::env::current_exe().expect("our own path");
    let coord = bin.with_file_name("coord");
    let once = bin.with_file_name("durable-once");
    println!("\n## process: {n} sequential invocations each");
    if !coord.exists() || !once.exists() {
        println!("skipped: build the binaries first (cargo build --release --bins)");
        return json!({"skipped": "binaries not built"});
    }
    let time = |mut make: Box<dyn FnMut() -> Command>| {
        let t = Instant::now();
        for _ in 0..n {
            let status = make().stdout(Stdio::null()).status().expect("it runs");
            assert!(status.success());
        }
        n as f64 / t.elapsed().as_secs_f64()
    };
    let (mut truth, mut bare, mut claims) = (Vec::new(), Vec::new(), Vec::new());
    // `coord claim` with its spans written (the default) and without,
    // alternated within each round: telemetry's cost.
    let (mut quiet, mut telemetry_ratios) = (Vec::new(), Vec::new());
    for round in 0..3 {
        truth.push(time(Box::new(|| Command::new("true"))));
        let d = dir_in(base);
        let p = d.path().to_owned();
        let once = once.clone();
        bare.push(time(Box::new(move || {
            let mut c = Command::new(&once);
            c.arg(&p);
            c
        })));
        // Each in a fresh directory of its own, taking turns at going first.
        let (d2, d3) = (dir_in(base), dir_in(base));
        let claim = |telemetry: &'static str, dir: &Path| {
            let (coord, dir) = (coord.clone(), dir.to_owned());
            Box::new(move || {
                let mut c = Command::new(&coord);
                c.args(["--agent", "bench", "claim", "bench"])
                    .env("COORD_DIR", &dir)
                    .env("COORD_TELEMETRY", telemetry);
                c
            }) as Box<dyn FnMut() -> Command>
        };
        let (on, off) = if round % 2 == 0 {
            let on = time(claim("on", d2.path()));
            (on, time(claim("off", d3.path())))
        } else {
            let off = time(claim("off", d3.path()));
            (time(claim("on", d2.path())), off)
        };
        claims.push(on);
        quiet.push(off);
        telemetry_ratios.push(on / off);
        drop((d, d2, d3));
    }
    let (low, high) = (
        telemetry_ratios
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min),
        telemetry_ratios.iter().copied().fold(0.0, f64::max),
    );
    let telemetry_ratio = median(telemetry_ratios);
    let quiet = median(quiet);
    let (truth, bare, claims) = (median(truth), median(bare), median(claims));
    println!("{:<40} {:>12}", "", "per second");
    println!("{:<40} {:>12.0}", "true", truth);
    println!(
        "{:<40} {:>12.0}",
        "durable-once (one bare durable update)", bare
    );
    println!("{:<40} {:>12.0}", "coord claim", claims);
    println!("{:<40} {:>12.0}", "coord claim, COORD_TELEMETRY=off", quiet);
    println!(
        "{:<40} {:>12.2}   (target >= 0.60, aim 0.80)",
        "ratio coord claim / durable-once",
        claims / bare
    );
    println!(
        "{:<40} {:>12.2}",
        "ratio coord claim / true",
        claims / truth
    );
    println!(
        "{:<40} {:>12.2}   (range {low:.2}-{high:.2}; target >= 0.95)",
        "ratio coord claim with spans / without", telemetry_ratio
    );
    json!({"invocations": n, "true_per_s": truth, "durable_once_per_s": bare, "coord_claim_per_s": claims,
        "coord_claim_no_telemetry_per_s": quiet, "telemetry_ratio": telemetry_ratio,
        "telemetry_ratio_range": [low, high],
        "ratio_to_durable_once": claims / bare, "ratio_to_true": claims / truth, "target": 0.6, "aim": 0.8})
}
