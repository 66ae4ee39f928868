//! Group commit: the changes threads sharing one store make at the same
//! time are written together.
//!
//! Each change joins a queue. If no thread is leading, its thread leads:
//! it takes every change queued so far and makes them (one change alone
//! exactly as without group commit; several with one directory lock, one
//! read, one decision after another and one durable write,
//! `changes::batch`), answers each, and wakes the waiters. Else it sleeps
//! on a condition variable (no polling) until its change is answered or
//! nobody leads. Answered threads return at once, not one after another
//! behind the next leader's write. Each waiter gets its own answer only
//! after the write, and takes its own spans' trace parent. Other processes
//! on the same directory go on beside it: the directory lock orders them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use coord_core::CoordError;
use coord_core::trace::SpanRecord;

use crate::changes::{Job, Outcome};

/// A change waiting to be made, and its answer once it is.
pub(crate) struct Waiting {
    pub job: Job,
    answer: Mutex<Option<Answered>>,
}

/// A change's answer, and the spans recorded for it (its thread makes
/// them its last run, for `Store::trace_parent`).
pub(crate) struct Answered {
    pub result: Result<Outcome, CoordError>,
    pub spans: Vec<SpanRecord>,
}

impl Waiting {
    pub(crate) fn answer(&self, answered: Answered) {
        *lock(&self.answer) = Some(answered);
    }

    fn take(&self) -> Option<Answered> {
        lock(&self.answer).take()
    }

    fn answer_missing(&self) -> bool {
        lock(&self.answer).is_none()
    }
}

/// Ends a thread's lead when dropped (also by a panic in `make`), and
/// wakes every waiter: the answered return, one of the others leads.
struct Unlead<'g>(&'g GroupCommit);

impl Drop for Unlead<'_> {
    fn drop(&mut self) {
        lock(&self.0.state).leading = false;
        self.0.changed.notify_all();
    }
}

/// The queue and whether a thread leads, the condition waiters sleep on,
/// and how many durable writes of the claims file the store made.
#[derive(Default)]
pub(crate) struct GroupCommit {
    state: Mutex<State>,
    changed: Condvar,
    writes: AtomicU64,
}

#[derive(Default)]
struct State {
    queue: Vec<Arc<Waiting>>,
    leading: bool,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("writes", &self.writes.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A poisoned lock only means a thread panicked while holding it; what it
/// guards is still whole (a queue, an answer slot).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl GroupCommit {
    /// Makes `job` with whatever else is queued: `make` gets the changes
    /// to make together (this one among them) and answers each.
    pub(crate) fn submit(&self, job: Job, make: impl FnOnce(&[Arc<Waiting>])) -> Answered {
        let me = Arc::new(Waiting {
            job,
            answer: Mutex::new(None),
        });
        let mut state = lock(&self.state);
        state.queue.push(Arc::clone(&me));
        let mut make = Some(make);
        loop {
            if let Some(answered) = me.take() {
                return answered;
            }
            if state.leading {
                state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Nobody leads and this change waits: this thread leads.
            state.leading = true;
            let jobs = std::mem::take(&mut state.queue);
            drop(state);
            // Whatever happens in `make`, the next waiter may lead after.
            let unlead = Unlead(self);
            if let Some(make) = make.take() {
                make(&jobs);
            }
            drop(unlead);
            state = lock(&self.state);
            if make.is_none() && me.answer_missing() {
                return Answered {
                    result: Err(CoordError::internal("a change was left unanswered")),
                    spans: Vec::new(),
                };
            }
        }
    }

    /// Counts a durable write of the claims file.
    pub(crate) fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}
