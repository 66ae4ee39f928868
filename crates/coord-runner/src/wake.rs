//! One wait for new work, shared by a worker's slots: the slot that finds
//! the waiter free waits in the store for everyone (one connection per
//! worker, however many slots), the others wait for its word in this
//! process. A store that cannot wake anyone leaves the slots polling.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, TryLockError};
use std::thread;
use std::time::{Duration, Instant};

use coord_core::{Store, Wakeup};

use crate::shutdown::Shutdown;

/// How often a waiting slot, or the helper of the slot waiting in the
/// store, looks whether the worker was told to stop (in this process).
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// Whether the store may have new work, as a count of wake-ups.
pub(crate) struct WorkSignal {
    waiter: Option<Mutex<Box<dyn Wakeup>>>,
    generation: Mutex<u64>,
    changed: Condvar,
}

impl WorkSignal {
    /// Made before any slot's first `next`, so no change slips between.
    pub fn new(store: &dyn Store) -> WorkSignal {
        let waiter = store.wakeup().unwrap_or_else(|e| {
            tracing::warn!(%e, "waiting for work by polling: cannot wait for changes");
            None
        });
        WorkSignal {
            waiter: waiter.map(Mutex::new),
            generation: Mutex::new(0),
            changed: Condvar::new(),
        }
    }

    /// Read before a `next`, and handed to `wait` if it found nothing.
    pub fn generation(&self) -> u64 {
        *self.generation.lock().expect("not poisoned")
    }

    /// Wakes every slot waiting for work (another slot took some for it).
    pub fn notify(&self) {
        *self.generation.lock().expect("not poisoned") += 1;
        self.changed.notify_all();
    }

    /// Waits until the store may have work the slot's `next` (made at
    /// generation `seen`) did not, another slot handed it work, `limit`
    /// passes, or the worker is told to stop; returns whether to stop.
    /// Without a waiter, or when waiting in the store fails, at most one
    /// polling `delay`.
    pub fn wait(&self, seen: u64, shutdown: &Shutdown, limit: Duration, delay: Duration) -> bool {
        let limit = if self.waiter.is_some() {
            limit
        } else {
            delay.min(limit)
        };
        let started = Instant::now();
        loop {
            if shutdown.is_requested() {
                return true;
            }
            let left = limit.saturating_sub(started.elapsed());
            if self.generation() != seen || left.is_zero() {
                return false;
            }
            match self.waiter.as_ref().map(Mutex::try_lock) {
                Some(Ok(mut waiter)) => match wait_in_store(waiter.as_mut(), shutdown, left) {
                    Ok(true) => self.notify(),
                    Ok(false) => {}
                    Err(e) => {
                        drop(waiter);
                        tracing::warn!(%e, "waiting for work by polling");
                        self.notify();
                        return shutdown.wait(delay);
                    }
                },
                Some(Err(TryLockError::Poisoned(_))) => return shutdown.wait(delay),
                // Another slot waits in the store, or none can: wait for a
                // word in this process.
                None | Some(Err(TryLockError::WouldBlock)) => {
                    let generation = self.generation.lock().expect("not poisoned");
                    let _ = self
                        .changed
                        .wait_timeout_while(generation, left.min(LOOK_EVERY), |g| *g == seen)
                        .expect("not poisoned");
                }
            }
        }
    }
}

/// One wait in the store, cut short by a shutdown through the wakeup's
/// interrupter (without one, it waits in slices of `LOOK_EVERY`).
fn wait_in_store(
    wakeup: &mut dyn Wakeup,
    shutdown: &Shutdown,
    limit: Duration,
) -> Result<bool, coord_core::CoordError> {
    let Some(interrupt) = wakeup.interrupter() else {
        return wakeup.wait(limit.min(LOOK_EVERY));
    };
    let waiting = AtomicBool::new(true);
    thread::scope(|scope| {
        scope.spawn(|| {
            while waiting.load(Ordering::SeqCst) {
                if shutdown.wait(LOOK_EVERY) {
                    interrupt();
                    return;
                }
            }
        });
        let woken = wakeup.wait(limit);
        waiting.store(false, Ordering::SeqCst);
        woken
    })
}
