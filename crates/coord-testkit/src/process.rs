//! Waiting for a child process with a time limit: a test whose child hangs
//! (a regression that never lets go of a lock, a runner that never stops its
//! child) fails with what the child printed, instead of hanging the suite.

use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a test waits for a `coord` process by default: far longer than
/// any of them takes, short of hanging CI.
pub const CHILD_LIMIT: Duration = Duration::from_secs(120);

/// Waits for `child` and collects its output, up to `limit`; past it, the
/// child is killed and the test fails, saying `what` hung.
pub fn wait_within(child: Child, limit: Duration, what: &str) -> Output {
    let pid = child.id();
    let (done, finished) = mpsc::channel();
    // On a thread of its own, so the child's pipes keep being drained.
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(limit) {
        Ok(output) => output.expect("waiting for a child"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            let printed = finished
                .recv_timeout(Duration::from_secs(10))
                .ok()
                .and_then(Result::ok)
                .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                .unwrap_or_default();
            panic!("{what} still ran after {limit:?}, and was killed; it printed: {printed}");
        }
    }
}

/// Runs `command` to its end with its output captured, up to `limit` (see
/// [`wait_within`]).
pub fn output_within(command: &mut Command, limit: Duration) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    wait_within(child, limit, &format!("{command:?}"))
}
