//! `reactor`: a small saga engine, typed.
//!
//! A saga is plain code. Each step runs where it is written, through
//! [`Saga::step`] (a [`Step`], which may compensate its own failure and
//! undo its effect) or [`Saga::run`] (a closure, for a step with no effect
//! outside its output). A step's output is an ordinary value of its own
//! type, passed to the steps that need it as an argument: a wiring mistake
//! does not compile, and a reader can follow every value from the first
//! step to the last.
//!
//! When a step fails, its compensation decides what happens: run it again,
//! recover with a value, or fail. When the failure stands, [`saga`] undoes
//! every step that had completed and registered an undo, in reverse order,
//! and returns a [`Failure`] that names the step and every undo that failed
//! too (none is swallowed).
//!
//! [`Middleware`] sees every saga ([`named_saga`]) and step start, finish,
//! fail, retry and undo, by name, so telemetry hangs off the engine instead
//! of the steps.
//!
//! Architecture invariant: this crate knows nothing of files, claims or
//! JSON.

mod middleware;
mod saga;
mod step;

pub use middleware::{Both, Middleware};
pub use saga::{Failure, Saga, UndoFailure, named_saga, saga};
pub use step::{Compensation, Step};
