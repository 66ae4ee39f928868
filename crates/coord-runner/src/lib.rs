//! `coord-runner`: runs a command under a claim, so nobody hand-writes the
//! claim / heartbeat / complete loop around their job.
//!
//! - [`supervise`] runs one child for one claim: the claim in its
//!   environment, heartbeats at a third of the lease, signals forwarded,
//!   the child stopped if the lease is lost, the claim completed or failed by
//!   the child's exit status.
//! - [`work`] is a worker loop over the queue: take `next`, supervise, repeat,
//!   with graceful shutdown on SIGTERM / SIGINT.
//!
//! Architecture invariant: works on any [`coord_core::Store`]; knows nothing
//! of files. It prints nothing on stdout (the child's output passes through);
//! the spinner for humans goes to stderr, and only on a terminal.

mod child;
mod shutdown;
mod spawn;
mod supervise;
mod wake;
mod worker;

pub use shutdown::{Shutdown, SignalMode, watch_signals};
pub use supervise::{Finish, RunOptions, RunOutcome, supervise};
pub use worker::{WorkOptions, WorkReport, work};
