//! [`TracingMiddleware`]: every saga step reported to `tracing`.

use std::time::Duration;

use reactor::Middleware;

/// Reports every workflow step to `tracing`: spans of work at `debug`,
/// failures and rollbacks at `warn`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingMiddleware;

impl<E: std::fmt::Display> Middleware<E> for TracingMiddleware {
    fn before_step(&self, step: &str) {
        tracing::debug!(step, "step started");
    }

    fn after_step(&self, step: &str, elapsed: Duration) {
        tracing::debug!(
            step,
            elapsed_us = elapsed.as_micros() as u64,
            "step finished"
        );
    }

    fn on_error(&self, step: &str, error: &E, attempt: u32) {
        tracing::debug!(step, attempt, %error, "step failed");
    }

    fn on_retry(&self, step: &str, attempt: u32) {
        tracing::info!(step, attempt, "step retried by its compensation");
    }

    fn on_undo(&self, step: &str, result: Result<(), &E>) {
        match result {
            Ok(()) => tracing::info!(step, "step undone"),
            Err(error) => tracing::warn!(step, %error, "undo failed"),
        }
    }
}
