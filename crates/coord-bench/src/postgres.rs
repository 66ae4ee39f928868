//! The `postgres` scenario: the PostgreSQL store against `pgbench` on the
//! same throwaway server (fsync on), at the same client counts.
//!
//! - Baseline: `pgbench` running a one-row `INSERT` transaction over
//!   persistent connections (`-c N -j N`), and with a new connection per
//!   transaction (`-C`). For `next`, also `pgbench` popping a bare queue
//!   (lock the oldest pending row, skipping locked ones, and mark it taken):
//!   the least a queue in PostgreSQL does per item.
//! - coord: N threads, each holding its own `PgStore` (one connection),
//!   claiming (medium priority, so no claim waits for another), then taking
//!   posted items with `next`, and with `next_many` taking
//!   [`BATCH`] at a time (as `coord work` does for its free slots); and
//!   `coord claim` processes one after the other, each opening its own
//!   connection.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use coord_core::{ClaimRequest, ErrorKind, NextRequest, PostRequest, Store};
use coord_pg::{PgStore, PgStoreOptions};
use coord_testkit::{PgCluster, PgClusterOptions};
use serde_json::{Value, json};

/// How many items a client of the batch phase takes per `next_many`.
const BATCH: usize = 4;

/// Posts `items` pending items to `schema`, from 16 clients (posting is
/// not what is measured).
fn post_items(url: &str, schema: &str, items: usize) {
    let posters = 16;
    for_clients(url, schema, posters, 600.0, move |store, i, n| {
        let mine = items / posters + 1;
        n < mine
            && store
                .post(&PostRequest::new(format!("boss_{i}"), "job"))
                .is_ok()
    });
}

/// `pgbench` transactions per second, from its summary line.
fn pgbench(cluster: &PgCluster, script: &Path, extra: &[String]) -> Result<f64, String> {
    let out = cluster
        .server_command("pgbench")
        .args(["-n", "-h"])
        .arg(cluster.socket_dir())
        .args(["-U", "postgres", "-f"])
        .arg(script)
        .args(extra)
        .arg("postgres")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run pgbench: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "pgbench failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix("tps = ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .ok_or_else(|| format!("no tps line in pgbench's output: {text}"))
}

fn skipped(why: String) -> Value {
    println!("skipped: {why}");
    json!({"skipped": why})
}

fn psql(cluster: &PgCluster, sql: &str) {
    let status = cluster
        .server_command("psql")
        .args(["-q", "-h"])
        .arg(cluster.socket_dir())
        .args(["-U", "postgres", "-d", "postgres", "-c", sql])
        .stdout(Stdio::null())
        .status()
        .expect("psql runs");
    assert!(status.success(), "psql -c {sql:?} failed");
}

/// Runs `op` on `clients` threads (each with its own store) for `secs`;
/// returns operations per second.
fn for_clients(
    url: &str,
    schema: &str,
    clients: usize,
    secs: f64,
    op: impl Fn(&PgStore, usize, usize) -> bool + Send + Sync + 'static,
) -> f64 {
    let op = Arc::new(op);
    let barrier = Arc::new(Barrier::new(clients + 1));
    let deadline = Duration::from_secs_f64(secs);
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let options = PgStoreOptions::default().schema(schema.to_owned());
            let store = PgStore::connect(url, options).expect("a bench client connects");
            let (op, barrier) = (Arc::clone(&op), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                let t = Instant::now();
                let mut n = 0;
                while t.elapsed() < deadline && op(&store, i, n) {
                    n += 1;
                }
                n
            })
        })
        .collect();
    barrier.wait();
    let t = Instant::now();
    let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    total as f64 / t.elapsed().as_secs_f64()
}

pub fn run(quick: bool) -> Value {
    println!(
        "\n## postgres: the PostgreSQL store vs pgbench on the same server (fsync on), median of {} rounds",
        if quick { 1 } else { 5 }
    );
    let cluster = match PgCluster::start(&PgClusterOptions {
        durable: true,
        max_connections: 200,
        tls: false,
    }) {
        Ok(c) => c,
        Err(e) => return skipped(e),
    };
    let url = cluster.url();
    let secs: f64 = if quick { 2.0 } else { 3.0 };
    let rounds = if quick { 1 } else { 5 };
    let script_dir = tempfile::tempdir().expect("a temp dir");
    let script = script_dir.path().join("insert.sql");
    std::fs::write(
        &script,
        "INSERT INTO bench_insert (payload) VALUES ('x');\n",
    )
    .unwrap();
    // pgbench runs as the server's user when we are root: let it read the script.
    let _ = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(script_dir.path())
        .status();
    psql(
        &cluster,
        "CREATE TABLE bench_insert (id bigserial PRIMARY KEY, payload text)",
    );
    let pop_script = script_dir.path().join("pop.sql");
    std::fs::write(
        &pop_script,
        "WITH best AS (SELECT id FROM bench_queue WHERE status = 'pending' \
           ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) \
         UPDATE bench_queue AS q SET status = 'taken', agent = 'w' \
         FROM best WHERE q.id = best.id;\n",
    )
    .unwrap();

    println!(
        "{:>8} {:>12} {:>14} {:>8} {:>12} {:>8} {:>10} {:>8} {:>12} {:>14}",
        "clients",
        "pgbench tps",
        "coord claim/s",
        "ratio",
        "coord next/s",
        "ratio",
        "bare pop/s",
        "next/pop",
        format!("next x{BATCH}/s"),
        format!("x{BATCH}/pop range"),
    );
    let mut rows = Vec::new();
    let mut at_16 = None;
    for clients in [1usize, 4, 16, 64] {
        // Rounds alternate the baseline and coord, so a slow spell of the
        // machine falls on both; each figure is the median of its rounds.
        let (mut bases, mut claim_rates, mut next_rates, mut pops) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut batch_rates = Vec::new();
        // `script` run by pgbench over `clients` persistent connections.
        let persistent = |script: &Path| {
            let duration = format!("{}", secs.ceil() as u64);
            let n = clients.to_string();
            pgbench(
                &cluster,
                script,
                &[
                    "-c".into(),
                    n.clone(),
                    "-j".into(),
                    n,
                    "-T".into(),
                    duration,
                ],
            )
        };
        for round in 0..rounds {
            match persistent(&script) {
                Ok(tps) => bases.push(tps),
                Err(e) => return skipped(e),
            }
            let schema = format!("bench_{clients}_{round}");
            let claims = for_clients(&url, &schema, clients, secs, |store, i, n| {
                store
                    .claim(
                        &ClaimRequest::new(format!("bench_{i}"), "bench")
                            .description(n.to_string()),
                    )
                    .map_err(|e| panic!("a claim failed: {e}"))
                    .is_ok()
            });
            // Enough posted items for `next` to take for the whole interval.
            let items = ((claims * secs * 1.5) as usize).max(200);
            post_items(&url, &schema, items);
            let nexts = for_clients(&url, &schema, clients, secs, |store, i, _| {
                match store.next(&NextRequest::new(format!("worker_{i}"))) {
                    Ok(_) => true,
                    Err(e) if e.kind() == ErrorKind::NothingToTake => false,
                    Err(e) => panic!("next failed: {e}"),
                }
            });
            // Taking `BATCH` at a time, from a queue of its own.
            let batch_schema = format!("{schema}_batch");
            // Batches take about twice what single takes do (ample).
            post_items(&url, &batch_schema, items * 3);
            let batches = for_clients(
                &url,
                &batch_schema,
                clients,
                secs,
                |store, i, _| match store.next_many(&NextRequest::new(format!("worker_{i}")), BATCH)
                {
                    Ok(taken) => {
                        assert!(!taken.is_empty());
                        true
                    }
                    Err(e) if e.kind() == ErrorKind::NothingToTake => false,
                    Err(e) => panic!("next_many failed: {e}"),
                },
            );
            // Calls per second, as items: a short batch at the very end of
            // the queue is counted full, a bias of at most one call.
            batch_rates.push(batches * BATCH as f64);
            // The bare queue, fresh like coord's, with more items than it
            // can pop in the interval (no pop faster than an insert).
            let queued = items.max((bases.last().copied().unwrap_or(0.0) * secs * 1.5) as usize);
            psql(
                &cluster,
                &format!(
                    "SET client_min_messages = warning; DROP TABLE IF EXISTS bench_queue; \
                     CREATE TABLE bench_queue (id bigserial PRIMARY KEY, \
                         status text NOT NULL, agent text, payload text); \
                     CREATE INDEX ON bench_queue (id) WHERE status = 'pending'; \
                     INSERT INTO bench_queue (status, payload) \
                         SELECT 'pending', 'x' FROM generate_series(1, {queued}); \
                     ANALYZE bench_queue"
                ),
            );
            match persistent(&pop_script) {
                Ok(tps) => pops.push(tps),
                Err(e) => return skipped(e),
            }
            claim_rates.push(claims);
            next_rates.push(nexts);
        }
        let (base, claims, nexts, pop) = (
            crate::median(bases),
            crate::median(claim_rates),
            crate::median(next_rates),
            crate::median(pops.clone()),
        );
        // Each round's batch rate against the same round's pop.
        let batch_ratios: Vec<f64> = batch_rates.iter().zip(&pops).map(|(b, p)| b / p).collect();
        let (batch_low, batch_high) = (
            batch_ratios.iter().copied().fold(f64::INFINITY, f64::min),
            batch_ratios.iter().copied().fold(0.0, f64::max),
        );
        let batch = crate::median(batch_rates);
        let batch_ratio = crate::median(batch_ratios);
        println!(
            "{clients:>8} {base:>12.0} {claims:>14.0} {:>8.2} {nexts:>12.0} {:>8.2} {pop:>10.0} {:>8.2} {batch:>12.0} {:>14}",
            claims / base,
            nexts / base,
            nexts / pop,
            format!("{batch_ratio:.2} ({batch_low:.2}-{batch_high:.2})"),
        );
        if clients == 16 {
            at_16 = Some((
                claims / base,
                nexts / base,
                nexts / pop,
                pop / base,
                batch_ratio,
            ));
        }
        rows.push(
            json!({"clients": clients, "pgbench_tps": base, "claims_per_s": claims,
            "claim_ratio": claims / base, "next_per_s": nexts, "next_ratio": nexts / base,
            "pgbench_pop_tps": pop, "next_vs_pop": nexts / pop,
            "batch": BATCH, "batch_items_per_s": batch, "batch_vs_pop": batch_ratio,
            "batch_vs_pop_range": [batch_low, batch_high]}),
        );
    }
    if let Some((c, n, n_pop, pop, batch)) = at_16 {
        println!("at 16 clients: claims {c:.2}, next {n:.2} of pgbench's rate (target >= 0.50)");
        println!(
            "at 16 clients: next {n_pop:.2} of a bare queue pop, which itself reaches {pop:.2} of the insert"
        );
        println!(
            "at 16 clients: next_many({BATCH}) {batch:.2} of a bare queue pop (target >= 0.85)"
        );
    }

    // One `coord claim` process per claim, vs pgbench with a new
    // connection per transaction.
    let n = if quick { 30 } else { 150 };
    let coord = std::env::current_exe()
        .expect("our own path")
        .with_file_name("coord");
    let one_shot = if coord.exists() {
        let base = pgbench(
            &cluster,
            &script,
            &[
                "-C".into(),
                "-c".into(),
                "1".into(),
                "-t".into(),
                n.to_string(),
            ],
        )
        .unwrap_or(f64::NAN);
        let t = Instant::now();
        for _ in 0..n {
            let status = Command::new(&coord)
                .args(["--agent", "bench", "claim", "one_shot"])
                .env("COORD_DATABASE_URL", &url)
                .env("COORD_SCHEMA", "bench_cli")
                .stdout(Stdio::null())
                .status()
                .expect("coord runs");
            assert!(status.success(), "coord claim failed");
        }
        let cli = n as f64 / t.elapsed().as_secs_f64();
        println!(
            "one-shot: coord claim processes {cli:.0}/s, pgbench -C {base:.0}/s, ratio {:.2}",
            cli / base
        );
        json!({"invocations": n, "coord_claim_per_s": cli, "pgbench_connect_tps": base, "ratio": cli / base})
    } else {
        println!("one-shot: skipped (build the binaries first: cargo build --release --bins)");
        json!({"skipped": "binaries not built"})
    };
    json!({"seconds_per_run": secs, "rounds": rounds, "rows": rows, "target_ratio_at_16": 0.5, "one_shot": one_shot})
}
