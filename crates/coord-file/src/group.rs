//! Group commit: the changes threads sharing one store make at the same
//! time are written together.
//!
//! Each change joins a queue, then waits for the store's leader lock (a
//! mutex: waiting threads sleep in its queue, they do not poll). Whoever
//! gets it finds its change answered already (an earlier leader took it
//! with its own), or takes every change queued so far and makes them:
//! one change alone exactly as without group commit, several with one
//! directory lock, one read, one decision after another, and one durable
//! write (`changes::batch`). Each waiter gets its own answer only after
//! that write, and takes its own spans' trace parent. Other processes on
//! the same directory go on beside it: the directory lock orders them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

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
}

/// The queue, the leader lock, and how many durable writes of the claims
/// file the store made.
#[derive(Default)]
pub(crate) struct GroupCommit {
    queue: Mutex<Vec<Arc<Waiting>>>,
    leader: Mutex<()>,
    writes: AtomicU64,
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
        lock(&self.queue).push(Arc::clone(&me));
        let _leader = lock(&self.leader);
        if let Some(answered) = me.take() {
            return answered;
        }
        let jobs = std::mem::take(&mut *lock(&self.queue));
        make(&jobs);
        me.take().unwrap_or_else(|| Answered {
            result: Err(CoordError::internal("a change was left unanswered")),
            spans: Vec::new(),
        })
    }

    /// Counts a durable write of the claims file.
    pub(crate) fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}
