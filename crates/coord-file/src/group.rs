//! Group commit: the changes threads sharing one store make at the same
//! time are written together.
//!
//! Each change joins a queue. If no thread is leading, its thread leads:
//! it takes every change queued so far and makes them (one change alone
//! exactly as without group commit; several with one directory lock, one
//! read, one decision after another and one durable write,
//! `changes::batch`), answering each, and then hands the lead to the
//! oldest change still queued, if any. Else it sleeps on its own condition
//! variable (no polling) until its change is answered or the lead is
//! handed to it: a batch wakes exactly the threads it answered and the next
//! leader, not every waiter. Each waiter gets its own answer only after
//! the write, and takes its own spans' trace parent. Other processes on
//! the same directory go on beside it: the directory lock orders them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use coord_core::CoordError;
use coord_core::trace::SpanRecord;

use crate::changes::{Job, Outcome};

/// A change waiting to be made, its answer once it is, and whether its
/// thread was handed the lead.
pub(crate) struct Waiting {
    pub job: Job,
    slot: Mutex<Slot>,
    wake: Condvar,
}

#[derive(Default)]
struct Slot {
    answer: Option<Answered>,
    lead: bool,
}

/// A change's answer, and the spans recorded for it (its thread makes
/// them its last run, for `Store::trace_parent`).
pub(crate) struct Answered {
    pub result: Result<Outcome, CoordError>,
    pub spans: Vec<SpanRecord>,
}

/// What a waiting thread is woken for.
enum Turn {
    Answered(Answered),
    Lead,
}

impl Waiting {
    fn new(job: Job) -> Waiting {
        Waiting {
            job,
            slot: Mutex::default(),
            wake: Condvar::new(),
        }
    }

    /// Gives the change its answer and wakes its thread.
    pub(crate) fn answer(&self, answered: Answered) {
        lock(&self.slot).answer = Some(answered);
        self.wake.notify_one();
    }

    fn is_answered(&self) -> bool {
        lock(&self.slot).answer.is_some()
    }

    fn take_answer(&self) -> Option<Answered> {
        lock(&self.slot).answer.take()
    }

    /// Hands the lead to this change's thread and wakes it.
    fn lead(&self) {
        lock(&self.slot).lead = true;
        self.wake.notify_one();
    }

    /// Sleeps until the change is answered or its thread is to lead.
    fn wait(&self) -> Turn {
        let mut slot = lock(&self.slot);
        loop {
            if let Some(answered) = slot.answer.take() {
                return Turn::Answered(answered);
            }
            if std::mem::take(&mut slot.lead) {
                return Turn::Lead;
            }
            slot = self.wake.wait(slot).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The queue and whether a thread leads, and how many durable writes of
/// the claims file the store made.
#[derive(Default)]
pub(crate) struct GroupCommit {
    state: Mutex<State>,
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

/// Ends a thread's lead when dropped (also by a panic in `make`): a change
/// of its batch left unanswered is answered with an error, and the lead
/// goes to the oldest change still queued, or to nobody.
struct HandOver<'g> {
    group: &'g GroupCommit,
    batch: Vec<Arc<Waiting>>,
}

impl Drop for HandOver<'_> {
    fn drop(&mut self) {
        for waiting in &self.batch {
            if !waiting.is_answered() {
                waiting.answer(Answered {
                    result: Err(CoordError::internal("a change was left unanswered")),
                    spans: Vec::new(),
                });
            }
        }
        let mut state = lock(&self.group.state);
        match state.queue.first() {
            Some(next) => next.lead(),
            None => state.leading = false,
        }
    }
}

impl GroupCommit {
    /// Makes `job` with whatever else is queued: `make` gets the changes
    /// to make together (this one among them) and answers each.
    pub(crate) fn submit(&self, job: Job, make: impl FnOnce(&[Arc<Waiting>])) -> Answered {
        let me = Arc::new(Waiting::new(job));
        let lead_now = {
            let mut state = lock(&self.state);
            state.queue.push(Arc::clone(&me));
            !std::mem::replace(&mut state.leading, true)
        };
        if !lead_now && let Turn::Answered(answered) = me.wait() {
            return answered;
        }
        // This thread leads: its change is among those queued.
        let batch = std::mem::take(&mut lock(&self.state).queue);
        let hand_over = HandOver { group: self, batch };
        make(&hand_over.batch);
        drop(hand_over);
        me.take_answer().unwrap_or_else(|| Answered {
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
