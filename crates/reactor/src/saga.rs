//! Running a saga: [`saga`], and the [`Saga`] its body runs its steps
//! through.

use std::fmt;
use std::time::Instant;

use crate::middleware::Middleware;
use crate::step::{Compensation, Step};

/// How many times one step may run before its last error stands, whatever
/// its compensation says. Keeps a compensation that always retries finite.
const MAX_ATTEMPTS: u32 = 5;

/// A failed saga: the step whose failure stood, its error, and every undo
/// that itself failed while the completed steps were being reverted.
#[derive(Debug)]
pub struct Failure<E> {
    pub step: &'static str,
    pub error: E,
    pub undo_failures: Vec<UndoFailure<E>>,
}

/// An undo that failed during the rollback of a saga.
#[derive(Debug)]
pub struct UndoFailure<E> {
    pub step: &'static str,
    pub error: E,
}

impl<E: fmt::Display> fmt::Display for Failure<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step `{}` failed: {}", self.step, self.error)?;
        for u in &self.undo_failures {
            write!(f, "; undo of `{}` also failed: {}", u.step, u.error)?;
        }
        Ok(())
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for Failure<E> {}

/// A completed step, kept for its undo.
trait Undo<E> {
    fn undo(&mut self) -> Result<(), E>;
}

impl<E, S: Step<E>> Undo<E> for S {
    fn undo(&mut self) -> Result<(), E> {
        Step::undo(self)
    }
}

/// A saga in progress: the steps it completed, newest last, for their
/// undos. Steps outlive the saga's body (`'a`), so what an undo needs is
/// the step's own, not a borrow of the body's values.
pub struct Saga<'a, E> {
    middleware: &'a dyn Middleware<E>,
    completed: Vec<(&'static str, Box<dyn Undo<E> + 'a>)>,
    /// The step whose failure the body returned, if one failed.
    failed: Option<&'static str>,
}

impl<E> fmt::Debug for Saga<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let completed: Vec<&str> = self.completed.iter().map(|(name, _)| *name).collect();
        f.debug_struct("Saga")
            .field("completed", &completed)
            .finish_non_exhaustive()
    }
}

/// Runs `body`, a saga: on success its value; on failure every completed
/// step's undo, newest first, and a [`Failure`].
pub fn saga<'a, T, E>(
    middleware: &'a dyn Middleware<E>,
    body: impl FnOnce(&mut Saga<'a, E>) -> Result<T, E>,
) -> Result<T, Failure<E>> {
    named_saga("saga", middleware, body)
}

/// [`saga`], by the name its middleware is given.
pub fn named_saga<'a, T, E>(
    name: &'static str,
    middleware: &'a dyn Middleware<E>,
    body: impl FnOnce(&mut Saga<'a, E>) -> Result<T, E>,
) -> Result<T, Failure<E>> {
    let started = Instant::now();
    middleware.saga_started(name);
    let mut saga = Saga {
        middleware,
        completed: Vec::new(),
        failed: None,
    };
    match body(&mut saga) {
        Ok(value) => {
            middleware.saga_finished(name, started.elapsed(), Ok(()));
            Ok(value)
        }
        Err(error) => {
            let undo_failures = saga.undo_all();
            let step = saga.failed.unwrap_or("(between steps)");
            middleware.saga_finished(name, started.elapsed(), Err(step));
            Err(Failure {
                step,
                error,
                undo_failures,
            })
        }
    }
}

impl<'a, E> Saga<'a, E> {
    /// Runs `step` as the step `name`: its compensation handles its
    /// failures (bounded by five runs); once it completed, its
    /// undo runs if the saga fails later.
    pub fn step<S: Step<E> + 'a>(
        &mut self,
        name: &'static str,
        mut step: S,
    ) -> Result<S::Output, E> {
        self.middleware.before_step(name);
        let started = Instant::now();
        let mut attempt = 0;
        let output = loop {
            attempt += 1;
            let error = match step.run() {
                Ok(output) => break output,
                Err(error) => error,
            };
            self.middleware.on_error(name, &error, attempt);
            if attempt >= MAX_ATTEMPTS {
                self.failed = Some(name);
                return Err(error);
            }
            match step.compensate(error, attempt) {
                Compensation::Retry => self.middleware.on_retry(name, attempt),
                Compensation::Recover(output) => break output,
                Compensation::Fail(error) => {
                    self.failed = Some(name);
                    return Err(error);
                }
            }
        };
        self.middleware.after_step(name, started.elapsed());
        self.completed.push((name, Box::new(step)));
        Ok(output)
    }

    /// Runs `work` as the step `name`: a step with nothing to undo (a read,
    /// a decision, a computation).
    pub fn run<T>(
        &mut self,
        name: &'static str,
        work: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        self.middleware.before_step(name);
        let started = Instant::now();
        match work() {
            Ok(output) => {
                self.middleware.after_step(name, started.elapsed());
                Ok(output)
            }
            Err(error) => {
                self.middleware.on_error(name, &error, 1);
                self.failed = Some(name);
                Err(error)
            }
        }
    }

    /// Undoes every completed step, newest first; returns the undos that
    /// failed (the others still ran).
    fn undo_all(&mut self) -> Vec<UndoFailure<E>> {
        let mut failures = Vec::new();
        while let Some((name, mut step)) = self.completed.pop() {
            let result = step.undo();
            self.middleware.on_undo(name, result.as_ref().map(|_| ()));
            if let Err(error) = result {
                failures.push(UndoFailure { step: name, error });
            }
        }
        failures
    }
}

/// No middleware.
impl<E> Middleware<E> for () {}
