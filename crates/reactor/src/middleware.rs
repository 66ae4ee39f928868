//! Hooks around every step: [`Middleware`].

use std::time::Duration;

/// Hooks around every step, for logging, metrics and tracing. All methods
/// default to doing nothing.
pub trait Middleware<E> {
    fn before_step(&self, _step: &str) {}
    fn after_step(&self, _step: &str, _elapsed: Duration) {}
    /// The step's `run` failed with `error` on failure number `attempt`.
    fn on_error(&self, _step: &str, _error: &E, _attempt: u32) {}
    /// The step's compensation asked for another attempt.
    fn on_retry(&self, _step: &str, _attempt: u32) {}
    /// A completed step was undone; `result` says whether the undo worked.
    fn on_undo(&self, _step: &str, _result: Result<(), &E>) {}
}
