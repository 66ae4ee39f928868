//! Retrying a claim or `next` with exponential backoff and full jitter.
//!
//! backon supplies the exponential schedule and the retry loop; full jitter
//! (sleep a uniform random time up to the schedule's delay, as in AWS's
//! "Exponential Backoff and Jitter") and the overall deadline are adaptors
//! on that schedule.

use std::time::{Duration, Instant};

use backon::BlockingRetryable;

use crate::error::{CoordError, ErrorKind};

/// How long and how often to retry. The default does not retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (`None`: as many as `max_wait` allows).
    pub max_retries: Option<u32>,
    /// The most time to spend retrying, sleeps included.
    pub max_wait: Option<Duration>,
    /// The first delay's upper bound; each retry doubles it.
    pub min_delay: Duration,
    /// The largest delay's upper bound.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: Some(0),
            max_wait: None,
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// Up to `n` retries.
    pub fn retries(n: u32) -> Self {
        RetryPolicy {
            max_retries: Some(n),
            ..Self::default()
        }
    }

    /// Retries until `wait` has passed.
    pub fn wait_for(wait: Duration) -> Self {
        RetryPolicy {
            max_retries: None,
            max_wait: Some(wait),
            ..Self::default()
        }
    }

    /// The errors that another attempt may cure: the way was blocked, not
    /// wrong.
    pub fn is_retryable(error: &CoordError) -> bool {
        matches!(
            error.kind(),
            ErrorKind::Conflict | ErrorKind::LockTimeout | ErrorKind::NothingToTake
        )
    }

    /// [`Self::is_retryable`], and for a call made under an idempotency key
    /// a database error too: the change may have committed, and the key
    /// makes sending it again safe.
    pub fn is_retryable_with_key(error: &CoordError) -> bool {
        Self::is_retryable(error) || error.kind() == ErrorKind::Database
    }

    /// The delays to sleep between attempts: exponential caps, each drawn
    /// uniformly from zero to its cap ([`backoff`]), until the retries or the
    /// time run out.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + Send + Sync + Unpin + use<> {
        let (min, max) = (self.min_delay, self.max_delay);
        let retries = self.max_retries.map_or(usize::MAX, |n| n as usize);
        // A wait too long to be a point in time is no deadline at all.
        let deadline = self.max_wait.and_then(|w| Instant::now().checked_add(w));
        (0..retries)
            .map(move |n| backoff(min, max, u32::try_from(n).unwrap_or(u32::MAX)))
            .map_while(move |delay| match deadline {
                None => Some(delay),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    (!left.is_zero()).then(|| delay.min(left))
                }
            })
    }

    /// Runs `op`, retrying retryable errors as the policy allows; returns the
    /// first success or the last error.
    pub fn run<T>(&self, op: impl FnMut() -> Result<T, CoordError>) -> Result<T, CoordError> {
        counted(op)
            .retry(self.delays())
            .sleep(std::thread::sleep)
            .when(Self::is_retryable)
            .call()
    }

    /// [`Self::run`] for an `op` made under an idempotency key: database
    /// errors are retried too ([`Self::is_retryable_with_key`]).
    pub fn run_keyed<T>(&self, op: impl FnMut() -> Result<T, CoordError>) -> Result<T, CoordError> {
        counted(op)
            .retry(self.delays())
            .sleep(std::thread::sleep)
            .when(Self::is_retryable_with_key)
            .call()
    }
}

/// `op`, each call made as the next attempt (the spans of its changes
/// say which, so retries can be counted).
fn counted<T>(
    mut op: impl FnMut() -> Result<T, CoordError>,
) -> impl FnMut() -> Result<T, CoordError> {
    let mut attempt = 0u32;
    move || {
        attempt = attempt.saturating_add(1);
        crate::trace::with_attempt(attempt, &mut op)
    }
}

/// The delay before retry number `retry` (0 for the first): drawn
/// uniformly from zero to `first`·2^`retry`, capped at `max` (full jitter).
/// The one backoff schedule: a blocked claim's retries and a failed queue
/// item's requeue (`coord work`) both use it.
pub fn backoff(first: Duration, max: Duration, retry: u32) -> Duration {
    let cap = first.saturating_mul(1 << retry.min(30)).min(max);
    cap.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn conflict() -> CoordError {
        CoordError::Conflict {
            work_type: "t".into(),
            conflicting_work_item_id: "w".into(),
        }
    }

    #[test]
    fn retries_retryable_errors_until_success() {
        let calls = Cell::new(0);
        let policy = RetryPolicy {
            min_delay: Duration::from_millis(1),
            ..RetryPolicy::retries(5)
        };
        let out = policy.run(|| {
            calls.set(calls.get() + 1);
            if calls.get() < 3 {
                Err(conflict())
            } else {
                Ok(calls.get())
            }
        });
        assert_eq!(out.unwrap(), 3);
    }

    #[test]
    fn stops_after_max_retries_and_on_other_errors() {
        let calls = Cell::new(0);
        let policy = RetryPolicy {
            min_delay: Duration::from_millis(1),
            ..RetryPolicy::retries(2)
        };
        let err = policy
            .run(|| -> Result<(), _> {
                calls.set(calls.get() + 1);
                Err(conflict())
            })
            .unwrap_err();
        assert_eq!((err.kind(), calls.get()), (ErrorKind::Conflict, 3));

        calls.set(0);
        let err = RetryPolicy::retries(5)
            .run(|| -> Result<(), _> {
                calls.set(calls.get() + 1);
                Err(CoordError::invalid_input("bad"))
            })
            .unwrap_err();
        assert_eq!((err.kind(), calls.get()), (ErrorKind::ValidationFailed, 1));
    }

    #[test]
    fn wait_for_bounds_the_total_time() {
        let started = Instant::now();
        let policy = RetryPolicy::wait_for(Duration::from_millis(200));
        let err = policy
            .run(|| -> Result<(), _> { Err(conflict()) })
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(150) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    /// A wait longer than the clock can count to (`--wait-for
    /// 9223372036854775807`) is no deadline, not a panic.
    #[test]
    fn a_wait_too_long_for_the_clock_has_no_deadline() {
        let policy = RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
            ..RetryPolicy::wait_for(Duration::MAX)
        };
        assert_eq!(policy.delays().take(50).count(), 50);
        let calls = Cell::new(0);
        let out = policy.run(|| {
            calls.set(calls.get() + 1);
            if calls.get() < 3 {
                Err(conflict())
            } else {
                Ok(())
            }
        });
        assert!(out.is_ok());
    }

    #[test]
    fn delays_are_fully_jittered_below_the_exponential_cap() {
        let policy = RetryPolicy {
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(80),
            ..RetryPolicy::retries(6)
        };
        let delays: Vec<Duration> = policy.delays().collect();
        assert_eq!(delays.len(), 6);
        let caps = [10, 20, 40, 80, 80, 80];
        for (d, cap) in delays.iter().zip(caps) {
            assert!(*d <= Duration::from_millis(cap), "{delays:?}");
        }
        // Full jitter spreads delays over [0, cap]: across many draws some
        // fall in the lower half of their cap.
        let low = (0..50)
            .flat_map(|_| policy.delays().zip(caps))
            .filter(|(d, cap)| *d < Duration::from_millis(*cap) / 2)
            .count();
        assert!(low > 0);
    }
}
