//! Crash points for tests: `COORD_CRASH_AT=<name>` makes the process SIGKILL
//! itself when it reaches the named point, so tests can prove that a writer
//! killed there loses and duplicates nothing. Unset, a point costs one
//! cached environment lookup.

use std::sync::OnceLock;

/// Kills this process with SIGKILL if `COORD_CRASH_AT` names `point`.
pub(crate) fn point(point: &str) {
    static TARGET: OnceLock<Option<String>> = OnceLock::new();
    let target = TARGET.get_or_init(|| {
        std::env::var("COORD_CRASH_AT")
            .ok()
            .filter(|t| !t.is_empty())
    });
    if target.as_deref() == Some(point) {
        let me = rustix::process::getpid();
        let _ = rustix::process::kill_process(me, rustix::process::Signal::KILL);
        // SIGKILL cannot be caught; this line is never reached.
        std::process::abort();
    }
}
