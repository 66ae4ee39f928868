//! `coord work`: a pool of slots, each running the command for one item at
//! a time, until told to stop, out of items, or idle too long. A slot with
//! nothing to run takes for every free slot in one change.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use coord_core::{
    Action, Actor, Claim, CoordError, ErrorKind, MAX_TAKE, NextRequest, RetryPolicy, SAFETY_POLL,
    Store,
};

use crate::shutdown::Shutdown;
use crate::supervise::{Finish, RunOptions, run_child, settle};
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

/// What a worker's slots share: the budget of `max_items`, the report,
/// the wait for new work, and the items one slot took for the others.
struct Pool<'a> {
    store: &'a (dyn Store + Sync),
    agent: &'a str,
    options: &'a WorkOptions,
    shutdown: &'a Shutdown,
    /// Items taken or being taken, of `max_items`.
    reserved: AtomicUsize,
    report: Mutex<WorkReport>,
    signal: WorkSignal,
    /// Items taken for free slots that have not started them yet, each
    /// with the `traceparent` of the take.
    handed: Mutex<VecDeque<Taken>>,
    /// Held while a slot takes, so two free slots do not both take for
    /// all the free slots.
    taking: Mutex<()>,
    /// Slots not running a child.
    free: AtomicUsize,
}

/// Runs the worker loop as `agent` until it is stopped, has taken
/// `max_items`, or stayed idle for `idle_exit`.
///
/// A slot that finds nothing handed to it takes for every free slot at
/// once (`Store::next_many`: one change, each item with its own lease and
/// fence), starts one item and hands the others over. Items handed over
/// and not started when the worker stops are released.
pub fn work(
    store: &(dyn Store + Sync),
    agent: &str,
    options: &WorkOptions,
    shutdown: &Shutdown,
) -> WorkReport {
    let slots = options.concurrency.max(1);
    let pool = Pool {
        store,
        agent,
        options,
        shutdown,
        reserved: AtomicUsize::new(0),
        report: Mutex::new(WorkReport::default()),
        signal: WorkSignal::new(store),
        handed: Mutex::new(VecDeque::new()),
        taking: Mutex::new(()),
        free: AtomicUsize::new(slots),
    };
    thread::scope(|scope| {
        for slot in 0..slots {
            let pool = &pool;
            // A slot's thread lives as long as its children: their parent-
            // death signal is tied to the thread that started them.
            thread::Builder::new()
                .name(format!("coord-work-{slot}"))
                .spawn_scoped(scope, move || pool.run_slot())
                .expect("a worker thread starts");
        }
    });
    pool.release_unstarted();
    pool.report.into_inner().expect("not poisoned")
}

/// An item taken, and the span of its take (for the child's
/// `TRACEPARENT`).
type Taken = (Claim, Option<String>);

/// Why a slot's take gave nothing to run.
enum NoItem {
    /// `max_items` are taken.
    Done,
    /// Nothing to take, or the way was blocked: try again later.
    Later(CoordError),
    /// An error that stops the slot.
    Stop(CoordError),
}

impl Pool<'_> {
    fn run_slot(&self) {
        self.slot_loop();
        // A slot that stopped is no longer one to take for.
        self.free.fetch_sub(1, Ordering::SeqCst);
    }

    fn slot_loop(&self) {
        let request = NextRequest::new(self.agent)
            .work_types(self.options.work_types.iter().cloned())
            .lease(self.options.lease);
        let polling = RetryPolicy {
            max_retries: None,
            max_wait: None,
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(1),
        };
        let mut delays = polling.delays();
        let mut idle_since = Instant::now();
        // What was taken while the last item's outcome was being recorded.
        let mut ahead: Option<(u64, Result<Taken, NoItem>)> = None;
        while !self.shutdown.is_requested() {
            let (seen, next) = ahead
                .take()
                .unwrap_or_else(|| (self.signal.generation(), self.next_item(&request)));
            match next {
                Ok(taken) => {
                    idle_since = Instant::now();
                    delays = polling.delays();
                    ahead = self.run_item(taken, &request);
                }
                Err(NoItem::Done) => return,
                Err(NoItem::Later(e)) => {
                    if self
                        .options
                        .idle_exit
                        .is_some_and(|idle| idle_since.elapsed() >= idle)
                    {
                        return;
                    }
                    let delay = delays.next().unwrap_or(polling.max_delay);
                    // Nothing to take: until the store may have work (and
                    // at least once per `SAFETY_POLL`, or when idle too
                    // long), or another slot hands this one an item.
                    let limit = self.options.idle_exit.map_or(SAFETY_POLL, |idle| {
                        idle.saturating_sub(idle_since.elapsed()).min(SAFETY_POLL)
                    });
                    let stop = if e.kind() == ErrorKind::NothingToTake {
                        self.signal.wait(seen, self.shutdown, limit, delay)
                    } else {
                        self.shutdown.wait(delay)
                    };
                    if stop {
                        return;
                    }
                }
                Err(NoItem::Stop(e)) => {
                    stop_slot(&self.report, &e);
                    return;
                }
            }
        }
        // Taken ahead but stopping: released with the items handed over.
        if let Some((_, Ok(taken))) = ahead {
            self.handed.lock().expect("not poisoned").push_back(taken);
        }
    }

    /// An item handed to this slot, or one it takes, with one for each
    /// other free slot (as `max_items` allows).
    fn next_item(&self, request: &NextRequest) -> Result<Taken, NoItem> {
        if let Some(claim) = self.handed_item() {
            return Ok(claim);
        }
        let _taking = self.taking.lock().expect("not poisoned");
        // Another slot may have taken for this one while it waited.
        if let Some(claim) = self.handed_item() {
            return Ok(claim);
        }
        let want = self.free.load(Ordering::SeqCst).clamp(1, MAX_TAKE);
        // Reserved before taking, so slots never overshoot `max_items`.
        let before = self.reserved.fetch_add(want, Ordering::SeqCst);
        let allowed = match self.options.max_items {
            Some(max) => want.min(max.saturating_sub(before)),
            None => want,
        };
        self.reserved.fetch_sub(want - allowed, Ordering::SeqCst);
        if allowed == 0 {
            return Err(NoItem::Done);
        }
        let taken = take(self.store, request, allowed);
        let got = taken.as_ref().map_or(0, Vec::len);
        self.reserved.fetch_sub(allowed - got, Ordering::SeqCst);
        let mut taken = match taken {
            Ok(taken) => taken.into_iter(),
            Err(e) if RetryPolicy::is_retryable(&e) => return Err(NoItem::Later(e)),
            Err(e) => return Err(NoItem::Stop(e)),
        };
        // Read on this thread, right after its take.
        let parent = self.store.trace_parent();
        let mine = taken.next().expect("next_many takes at least one");
        let mut handed = self.handed.lock().expect("not poisoned");
        handed.extend(taken.map(|claim| (claim, parent.clone())));
        if !handed.is_empty() {
            self.signal.notify();
        }
        Ok((mine, parent))
    }

    fn handed_item(&self) -> Option<Taken> {
        self.handed.lock().expect("not poisoned").pop_front()
    }

    /// Runs the command for the item taken and records how it went. While
    /// the outcome is recorded, the slot takes its next item (unless the
    /// worker is stopping), so that on a store that writes changes made at
    /// once together, both go in one write; returns that take, with the
    /// wake-up generation read before it.
    fn run_item(
        &self,
        (claim, parent): Taken,
        request: &NextRequest,
    ) -> Option<(u64, Result<Taken, NoItem>)> {
        self.free.fetch_sub(1, Ordering::SeqCst);
        self.report.lock().expect("not poisoned").taken += 1;
        let run = self.options.run.clone().trace_parent(parent);
        let ended = run_child(self.store, &claim, self.agent, &run, self.shutdown);
        self.free.fetch_add(1, Ordering::SeqCst);
        let (outcome, ahead) = thread::scope(|scope| {
            let ahead = (!self.shutdown.is_requested())
                .then(|| scope.spawn(|| (self.signal.generation(), self.next_item(request))));
            let outcome = settle(self.store, &claim, self.agent, ended);
            (
                outcome,
                ahead.map(|t| t.join().expect("a take does not panic")),
            )
        });
        let mut r = self.report.lock().expect("not poisoned");
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
        ahead
    }

    /// Hands back the items taken for slots that stopped before starting
    /// them: at once, not when their leases lapse.
    fn release_unstarted(&self) {
        let handed: Vec<Taken> = self
            .handed
            .lock()
            .expect("not poisoned")
            .drain(..)
            .collect();
        for (claim, _) in handed {
            let actor = Actor::new(self.agent).fence(claim.fence);
            if let Err(e) = self
                .store
                .act(&claim.work_item_id, &Action::Release, &actor)
            {
                tracing::warn!(error = %e, work_item_id = claim.work_item_id, "could not release an item taken but not started");
                self.report
                    .lock()
                    .expect("not poisoned")
                    .errors
                    .push(e.to_string());
            }
        }
    }
}

/// How often a take that lost its connection is sent again.
const TAKE_RETRIES: u32 = 4;

/// Takes up to `max` items. A broken connection is tried again a few
/// times: a take that committed but lost its answer leaves its items to
/// come back when their leases lapse, never to two owners.
fn take(
    store: &(dyn Store + Sync),
    request: &NextRequest,
    max: usize,
) -> Result<Vec<Claim>, CoordError> {
    let mut delays = RetryPolicy::retries(TAKE_RETRIES).delays();
    loop {
        match store.next_many(request, max) {
            Err(e) if e.kind() == ErrorKind::Database => match delays.next() {
                Some(delay) => {
                    tracing::warn!(error = %e, "taking work failed; trying again");
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
