//! `reactor`: a small saga workflow engine.
//!
//! A [`Workflow`] is a set of named [`Step`]s. Each step declares the named
//! inputs it reads (workflow inputs or earlier steps' outputs), so the steps
//! form a DAG, and running the workflow executes them in dependency order.
//!
//! When a step fails, its [`Step::compensate`] decides what happens: retry the
//! step, recover with a value, or fail (with the same or another error). When
//! the failure stands, every step that had already completed is undone with
//! [`Step::undo`], in reverse completion order. An undo that fails is reported
//! in the returned [`Failure`], never swallowed.
//!
//! [`Middleware`] sees every step start, finish, fail, retry and undo, so
//! telemetry can be attached without touching the steps.
//!
//! Architecture invariant: this crate knows nothing of files, claims or JSON.

mod middleware;
mod step;
mod values;
mod workflow;

pub use middleware::Middleware;
pub use step::{Compensation, FnStep, Step, from_fn};
pub use values::{InputError, Inputs, Values};
pub use workflow::{BuildError, Failure, UndoFailure, Workflow, WorkflowBuilder};
