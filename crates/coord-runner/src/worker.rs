//! `coord work`: a pool of slots, each taking the next item and running the
//! command for it, until told to stop, out of items, or idle too long.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use coord_core::{
    Claim, CoordError, ErrorKind, IdempotencyKey, KeyedChange, NextRequest, RetryPolicy,
    SAFETY_POLL, Store,
};

use crate::shutdown::Shutdown;
use crate::supervise::{Finish, RunOptions, supervise};
use crate::wake::WorkSignal;

/// How the worker loop behaves: [`WorkOptions::new`] and a method per
/// field.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkOptions {
    /// Only items of these work types (any when empty).
    pub work_types: Vec<String>,
    pub lease: Duration,
    /// How many children run at once.
    pub concurrency: usize,
    /// Stop after taking this many items in all.
    pub max_items: Option<usize>,
    /// Stop when there was nothing to take for this long.
    pub idle_exit: Option<Duration>,
    pub run: RunOptions,
}

impl WorkOptions {
    /// Runs `run` for each item taken: any work type, the default lease,
    /// one at a time, until stopped.
    pub fn new(run: RunOptions) -> Self {
        WorkOptions {
            work_types: Vec::new(),
            lease: coord_core::DEFAULT_LEASE,
            concurrency: 1,
            max_items: None,
            idle_exit: None,
            run,
        }
    }

    coord_core::setters! {
        work_types: Vec<String>,
        lease: Duration,
        concurrency: usize,
        max_items: Option<usize>,
        idle_exit: Option<Duration>,
    }
}

/// What a worker did, for its summary line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkReport {
    pub taken: usize,
    pub completed: usize,
    pub failed: usize,
    pub requeued: usize,
    pub released: usize,
    pub lease_lost: usize,
    /// Errors that stopped a slot (a store it cannot read, say).
    pub errors: Vec<String>,
}

/// Runs the worker loop as `agent` until it is stopped, has taken
/// `max_items`, or stayed idle for `idle_exit`.
pub fn work(
    store: &(dyn Store + Sync),
    agent: &str,
    options: &WorkOptions,
    shutdown: &Shutdown,
) -> WorkReport {
    let reserved = AtomicUsize::new(0);
    let report = Mutex::new(WorkReport::default());
    let signal = WorkSignal::new(store);
    thread::scope(|scope| {
        for slot in 0..options.concurrency.max(1) {
            let (reserved, report, signal) = (&reserved, &report, &signal);
            // A slot's thread lives as long as its children: their parent-
            // death signal is tied to the thread that started them.
            thread::Builder::new()
                .name(format!("coord-work-{slot}"))
                .spawn_scoped(scope, move || {
                    run_slot(store, agent, options, shutdown, reserved, report, signal)
                })
                .expect("a worker thread starts");
        }
    });
    report.into_inner().expect("not poisoned")
}

fn run_slot(
    store: &(dyn Store + Sync),
    agent: &str,
    options: &WorkOptions,
    shutdown: &Shutdown,
    reserved: &AtomicUsize,
    report: &Mutex<WorkReport>,
    signal: &WorkSignal,
) {
    let request = NextRequest::new(agent)
        .work_types(options.work_types.iter().cloned())
        .lease(options.lease);
    let polling = RetryPolicy {
        max_retries: None,
        max_wait: None,
        min_delay: Duration::from_millis(50),
        max_delay: Duration::from_secs(1),
    };
    let mut delays = polling.delays();
    let mut idle_since = Instant::now();
    // One key per item taken, kept across the retries of its take.
    let mut take_key = IdempotencyKey::fresh("coord-next");
    while !shutdown.is_requested() {
        // Reserve one of `max_items` before taking, so slots never overshoot.
        let n = reserved.fetch_add(1, Ordering::SeqCst);
        if options.max_items.is_some_and(|max| n >= max) {
            return;
        }
        let seen = signal.generation();
        match take(store, &take_key, &request) {
            Ok(claim) => {
                take_key = IdempotencyKey::fresh("coord-next");
                idle_since = Instant::now();
                delays = polling.delays();
                report.lock().expect("not poisoned").taken += 1;
                let outcome = supervise(store, &claim, agent, &options.run, shutdown);
                let mut r = report.lock().expect("not poisoned");
                match outcome.finish {
                    Finish::Completed => r.completed += 1,
                    Finish::Failed => r.failed += 1,
                    Finish::Requeued => r.requeued += 1,
                    Finish::Released => r.released += 1,
                    Finish::LeaseLost => r.lease_lost += 1,
                }
                if let Some(e) = outcome
                    .error
                    .filter(|_| outcome.finish != Finish::LeaseLost)
                {
                    r.errors.push(e.to_string());
                }
            }
            Err(e) if RetryPolicy::is_retryable(&e) => {
                reserved.fetch_sub(1, Ordering::SeqCst);
                if options
                    .idle_exit
                    .is_some_and(|idle| idle_since.elapsed() >= idle)
                {
                    return;
                }
                let delay = delays.next().unwrap_or(polling.max_delay);
                // Nothing to take: until the store may have work (and at
                // least once per `SAFETY_POLL`, or when idle too long).
                let limit = options.idle_exit.map_or(SAFETY_POLL, |idle| {
                    idle.saturating_sub(idle_since.elapsed()).min(SAFETY_POLL)
                });
                let stop = if e.kind() == ErrorKind::NothingToTake {
                    signal.wait(seen, shutdown, limit, delay)
                } else {
                    shutdown.wait(delay)
                };
                if stop {
                    return;
                }
            }
            Err(e) => {
                reserved.fetch_sub(1, Ordering::SeqCst);
                stop_slot(report, &e);
                return;
            }
        }
    }
}

/// How often a take that lost its connection is sent again.
const TAKE_RETRIES: u32 = 4;

/// Takes an item under `key`. A broken connection is retried with the same
/// key a few times, so a take that committed but lost its answer is
/// answered, not left held by nobody until its lease lapses.
fn take(
    store: &(dyn Store + Sync),
    key: &IdempotencyKey,
    request: &NextRequest,
) -> Result<Claim, CoordError> {
    let change = KeyedChange::Next(request);
    let mut delays = RetryPolicy::retries(TAKE_RETRIES).delays();
    loop {
        match store.apply_once(key, &change) {
            Err(e) if e.kind() == ErrorKind::Database => match delays.next() {
                Some(delay) => {
                    tracing::warn!(error = %e, "taking work failed; trying again with its key");
                    std::thread::sleep(delay);
                }
                None => return Err(e),
            },
            other => return other,
        }
    }
}

fn stop_slot(report: &Mutex<WorkReport>, error: &CoordError) {
    tracing::error!(%error, kind = error.kind().as_str(), "a worker slot stopped");
    report
        .lock()
        .expect("not poisoned")
        .errors
        .push(error.to_string());
}
