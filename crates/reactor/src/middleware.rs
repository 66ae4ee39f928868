//! Hooks around every saga and step: [`Middleware`], and [`Both`] to use
//! two at once.

use std::time::Duration;

/// Hooks around every saga and step, for logging, metrics and tracing. All
/// methods default to doing nothing.
pub trait Middleware<E> {
    /// The saga `name` begins (before its first step).
    fn saga_started(&self, _name: &'static str) {}
    /// The saga `name` ended after `elapsed`: `Ok`, or `Err` with the step
    /// whose failure stood (its undos already ran).
    fn saga_finished(&self, _name: &'static str, _elapsed: Duration, _outcome: Result<(), &str>) {}
    fn before_step(&self, _step: &str) {}
    fn after_step(&self, _step: &str, _elapsed: Duration) {}
    /// The step's `run` failed with `error` on failure number `attempt`.
    fn on_error(&self, _step: &str, _error: &E, _attempt: u32) {}
    /// The step's compensation asked for another attempt.
    fn on_retry(&self, _step: &str, _attempt: u32) {}
    /// A completed step was undone; `result` says whether the undo worked.
    fn on_undo(&self, _step: &str, _result: Result<(), &E>) {}
}

/// Two middlewares, each told everything, the first first.
#[derive(Debug, Clone, Copy)]
pub struct Both<A, B>(pub A, pub B);

impl<E, A: Middleware<E>, B: Middleware<E>> Middleware<E> for Both<A, B> {
    fn saga_started(&self, name: &'static str) {
        self.0.saga_started(name);
        self.1.saga_started(name);
    }
    fn saga_finished(&self, name: &'static str, elapsed: Duration, outcome: Result<(), &str>) {
        self.0.saga_finished(name, elapsed, outcome);
        self.1.saga_finished(name, elapsed, outcome);
    }
    fn before_step(&self, step: &str) {
        self.0.before_step(step);
        self.1.before_step(step);
    }
    fn after_step(&self, step: &str, elapsed: Duration) {
        self.0.after_step(step, elapsed);
        self.1.after_step(step, elapsed);
    }
    fn on_error(&self, step: &str, error: &E, attempt: u32) {
        self.0.on_error(step, error, attempt);
        self.1.on_error(step, error, attempt);
    }
    fn on_retry(&self, step: &str, attempt: u32) {
        self.0.on_retry(step, attempt);
        self.1.on_retry(step, attempt);
    }
    fn on_undo(&self, step: &str, result: Result<(), &E>) {
        self.0.on_undo(step, result);
        self.1.on_undo(step, result);
    }
}

impl<E, M: Middleware<E> + ?Sized> Middleware<E> for &M {
    fn saga_started(&self, name: &'static str) {
        (**self).saga_started(name);
    }
    fn saga_finished(&self, name: &'static str, elapsed: Duration, outcome: Result<(), &str>) {
        (**self).saga_finished(name, elapsed, outcome);
    }
    fn before_step(&self, step: &str) {
        (**self).before_step(step);
    }
    fn after_step(&self, step: &str, elapsed: Duration) {
        (**self).after_step(step, elapsed);
    }
    fn on_error(&self, step: &str, error: &E, attempt: u32) {
        (**self).on_error(step, error, attempt);
    }
    fn on_retry(&self, step: &str, attempt: u32) {
        (**self).on_retry(step, attempt);
    }
    fn on_undo(&self, step: &str, result: Result<(), &E>) {
        (**self).on_undo(step, result);
    }
}
