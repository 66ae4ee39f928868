//! One child under one claim.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::thread;
use std::time::{Duration, Instant};

use coord_core::{
    Action, Actor, Claim, CoordError, DEFAULT_LEASE, ErrorKind, KeyedChange, RetryPolicy, Status,
    Store,
};

use crate::child::{self, Output};
use crate::shutdown::Shutdown;
use crate::spawn::Child;

/// How often the runner looks at the child, its signals and its lease.
const POLL: Duration = Duration::from_millis(50);

/// How to run the child: [`RunOptions::new`] and a method per field.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunOptions {
    /// The program and its arguments.
    pub command: Vec<OsString>,
    /// Where the child finds the store (e.g. `COORD_DIR`), besides the claim.
    pub store_env: Vec<(&'static str, String)>,
    /// After SIGTERM, how long the child has before SIGKILL; in a worker,
    /// also how long a stop request waits for a running child.
    pub grace: Duration,
    /// The `result` of a completed claim (default: the child's last line of
    /// output, which then passes through the runner).
    pub result: Option<String>,
    /// Failures go back to the queue, backing off from this delay (workers).
    pub requeue_backoff: Option<Duration>,
    /// An elapsed-time spinner on stderr, when stderr is a terminal.
    pub spinner: bool,
    /// The child's `TRACEPARENT`: the span of the change that took its
    /// item, so the child's own spans join that trace.
    pub trace_parent: Option<String>,
}

impl RunOptions {
    /// Runs `command` (the program, then its arguments): no store
    /// variables, a grace period of 10 s, the child's last line as the
    /// result, failures not requeued, no spinner.
    pub fn new(command: Vec<OsString>) -> Self {
        RunOptions {
            command,
            store_env: Vec::new(),
            grace: Duration::from_secs(10),
            result: None,
            requeue_backoff: None,
            spinner: false,
            trace_parent: None,
        }
    }

    coord_core::setters! {
        store_env: Vec<(&'static str, String)>,
        grace: Duration,
        result: Option<String>,
        requeue_backoff: Option<Duration>,
        trace_parent: Option<String>,
        spinner: bool,
    }
}

/// What became of the claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Completed,
    Failed,
    /// Failed, and back on the queue for another attempt.
    Requeued,
    /// Handed back unfinished (a worker stopping).
    Released,
    /// The lease was lost while the child ran: nothing was recorded, the
    /// new owner (if any) is protected by the fence.
    LeaseLost,
}

/// How a supervised run ended.
#[derive(Debug)]
pub struct RunOutcome {
    /// The child's exit status (`None` if it could not be started).
    pub status: Option<ExitStatus>,
    pub finish: Finish,
    /// Why the lease was lost, or why recording the outcome failed.
    pub error: Option<CoordError>,
}

impl RunOutcome {
    /// The exit code a runner should exit with: the child's code, 128 +
    /// the signal that killed it, 127 if it could not be started.
    pub fn exit_code(&self) -> i32 {
        match self.status {
            Some(s) => s
                .code()
                .or_else(|| s.signal().map(|n| 128 + n))
                .unwrap_or(1),
            None => 127,
        }
    }
}

/// Says how a child ended, for a claim's `reason`.
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => "ended in an unknown way".to_owned(),
    }
}

/// A descriptor that turns readable when `child` exits (Linux's pidfd).
fn child_exit_fd(child: &Child) -> Option<rustix::fd::OwnedFd> {
    rustix::process::pidfd_open(child.pid(), rustix::process::PidfdFlags::empty()).ok()
}

/// Waits until the child behind `exited` exits, its `output` has
/// something to read (then reads it), or `limit` passes.
fn wait_for_child(
    exited: Option<&rustix::fd::OwnedFd>,
    output: Option<&mut Output>,
    limit: Duration,
) {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let timeout = Timespec {
        tv_sec: i64::try_from(limit.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(limit.subsec_nanos()),
    };
    let readable = {
        let pipe = output.as_ref().and_then(|o| o.fd());
        let mut fds: Vec<PollFd<'_>> = exited
            .map(|fd| PollFd::new(fd, PollFlags::IN))
            .into_iter()
            .chain(pipe.map(|fd| PollFd::from_borrowed_fd(fd, PollFlags::IN)))
            .collect();
        if fds.is_empty() {
            thread::sleep(limit);
            return;
        }
        // Interrupted or failed, the caller looks again after at most `limit`.
        let _ = rustix::event::poll(&mut fds, Some(&timeout));
        pipe.is_some() && fds.last().is_some_and(|fd| !fd.revents().is_empty())
    };
    if readable && let Some(output) = output {
        output.read_some();
    }
}

fn send(child: &Child, signal: i32) {
    if let Some(signal) = rustix::process::Signal::from_named_raw(signal) {
        child.signal(signal);
    }
}

/// Renews the lease every third of it until told to stop; reports a lost
/// lease. Other errors (a busy lock) are retried at the next beat.
fn heartbeat(
    store: &(dyn Store + Sync),
    id: &str,
    actor: Actor<'_>,
    interval: Duration,
    stop: mpsc::Receiver<()>,
    lost: mpsc::Sender<CoordError>,
) {
    // Started when the first beat is due.
    loop {
        match store.act(id, &Action::Heartbeat { lease: None }, &actor) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::LeaseExpired | ErrorKind::NotOwner | ErrorKind::NotFound
                ) =>
            {
                let _ = lost.send(e);
                return;
            }
            Err(e) => tracing::warn!(error = %e, work_item_id = id, "heartbeat failed; retrying"),
        }
        match stop.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}

/// How often a child's lease is renewed: every third of it.
fn beat_interval(lease: Duration) -> Duration {
    (lease / 3).max(Duration::from_millis(10))
}

/// How long recording a child's outcome keeps trying through a busy lock.
const RECORD_PATIENCE: Duration = Duration::from_secs(30);

/// Records how the child ended. A busy lock or a broken connection is
/// waited out (with backoff, for a while): giving up would leave the claim
/// to lapse with its lease. Where an answer can be lost, the change goes
/// under a key of its own, so an attempt that committed but lost its
/// answer is not made again.
fn record(
    store: &(dyn Store + Sync),
    id: &str,
    action: &Action,
    actor: &Actor<'_>,
) -> Result<Claim, CoordError> {
    let change = KeyedChange::Act {
        work_item_id: id,
        action,
        actor: *actor,
    };
    change.retrying(
        store,
        RetryPolicy::wait_for(RECORD_PATIENCE),
        "coord-record",
    )
}

/// The longest a failed item waits before it may be taken again.
const MAX_REQUEUE_DELAY: Duration = Duration::from_secs(300);

/// The delay before a failed item may be taken again: the one backoff
/// schedule, by attempt (the first failure waits up to `base`).
fn requeue_delay(base: Duration, attempt: u32) -> Duration {
    coord_core::backoff(base, MAX_REQUEUE_DELAY, attempt.saturating_sub(1))
}

/// The longest description handed to a child in `COORD_DESCRIPTION`.
const DESCRIPTION_ENV_MAX: usize = 100 * 1024;

/// The item's payload as a file for its child, removed on drop.
struct PayloadFile {
    path: std::path::PathBuf,
}

impl PayloadFile {
    fn write(payload: &serde_json::Value) -> std::io::Result<PayloadFile> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "coord-payload-{}-{}.json",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, payload.to_string())?;
        Ok(PayloadFile { path })
    }
}

impl Drop for PayloadFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Runs `options.command` for `claim`, which `agent` holds, and records the
/// outcome in `store`. `shutdown` carries signals to forward and, in a
/// worker, the request to stop.
pub fn supervise(
    store: &(dyn Store + Sync),
    claim: &Claim,
    agent: &str,
    options: &RunOptions,
    shutdown: &Shutdown,
) -> RunOutcome {
    let ended = run_child(store, claim, agent, options, shutdown);
    settle(store, claim, agent, ended)
}

/// How a child's run ended: its status, and the change that records it,
/// or the outcome when there is nothing to record.
pub(crate) struct Ended {
    status: Option<ExitStatus>,
    record: Result<Action, RunOutcome>,
}

impl Ended {
    fn record(status: Option<ExitStatus>, action: Action) -> Ended {
        Ended {
            status,
            record: Ok(action),
        }
    }

    fn as_is(outcome: RunOutcome) -> Ended {
        Ended {
            status: outcome.status,
            record: Err(outcome),
        }
    }
}

/// The first half of [`supervise`]: runs the child under the claim's
/// heartbeats until it ends, and says what to record.
pub(crate) fn run_child(
    store: &(dyn Store + Sync),
    claim: &Claim,
    agent: &str,
    options: &RunOptions,
    shutdown: &Shutdown,
) -> Ended {
    let id = claim.work_item_id.as_str();
    let actor = Actor::new(agent).fence(claim.fence);
    let mut env: Vec<(&str, String)> = vec![
        ("COORD_WORK_ITEM_ID", id.to_owned()),
        ("COORD_AGENT_ID", agent.to_owned()),
        ("COORD_WORK_TYPE", claim.work_type.clone()),
    ];
    env.extend(claim.fence.map(|f| ("COORD_FENCE", f.to_string())));
    env.extend(claim.attempt.map(|a| ("COORD_ATTEMPT", a.to_string())));
    env.extend(options.store_env.iter().cloned());
    if let Some(parent) = &options.trace_parent {
        env.push(("TRACEPARENT", parent.clone()));
    }
    // Environment strings have a size limit of their own (128 KiB on
    // Linux): a longer description is for `coord show`.
    if claim.description.len() <= DESCRIPTION_ENV_MAX {
        env.push(("COORD_DESCRIPTION", claim.description.clone()));
    }
    // Removed when this function ends, whichever way.
    let payload_file = match claim.extra.get("payload").map(PayloadFile::write) {
        Some(Ok(file)) => Some(file),
        Some(Err(e)) => {
            tracing::warn!(error = %e, work_item_id = id, "cannot write the payload file");
            None
        }
        None => None,
    };
    if let Some(file) = &payload_file {
        env.push(("COORD_PAYLOAD_FILE", file.path.display().to_string()));
    }
    let capture = options.result.is_none();

    let (mut child, stdout) = match child::spawn(&options.command, &env, capture) {
        Ok(started) => started,
        Err(e) => {
            let reason = format!(
                "cannot start {:?}: {e}",
                options.command.first().unwrap_or(&OsString::new())
            );
            return Ended::record(None, fail(claim, options, reason));
        }
    };
    let spinner = (options.spinner && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message(format!("{} {id}", claim.work_type));
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}]")
                .expect("a valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    });

    let lease = claim.lease_ms.map_or(DEFAULT_LEASE, Duration::from_millis);
    let interval = beat_interval(lease);
    let (status, lost, stopped, last_line) = thread::scope(|scope| {
        let (stop_tx, stop_rx) = mpsc::channel();
        let (lost_tx, lost_rx) = mpsc::channel();
        // The heartbeat thread starts only when the first beat is due: a
        // child that ends sooner costs no thread.
        let mut beats = Some(move || {
            scope.spawn(move || heartbeat(store, id, actor, interval, stop_rx, lost_tx));
        });
        let mut start_beating = || beats.take().map_or((), |start| start());
        let mut output = stdout.map(Output::new);
        let (status, lost, stopped) = watch(
            &mut child,
            output.as_mut(),
            Beats {
                due: Instant::now() + interval,
                start: &mut start_beating,
                lost: &lost_rx,
            },
            shutdown,
            options.grace,
        );
        drop(stop_tx);
        (status, lost, stopped, output.and_then(Output::finish))
    });
    if let Some(bar) = spinner {
        bar.finish_and_clear();
    }
    let status = match status {
        Ok(status) => status,
        Err(e) => {
            return Ended::as_is(RunOutcome {
                status: None,
                finish: Finish::Failed,
                error: Some(CoordError::internal(format!(
                    "cannot wait for the child: {e}"
                ))),
            });
        }
    };

    if let Some(error) = lost {
        tracing::warn!(work_item_id = id, %error, "lease lost; the child was stopped and nothing was recorded");
        return Ended::as_is(RunOutcome {
            status: Some(status),
            finish: Finish::LeaseLost,
            error: Some(error),
        });
    }
    let action = if stopped {
        Action::Release
    } else if status.success() {
        Action::Complete {
            result: options.result.clone().or(last_line),
        }
    } else {
        fail(claim, options, describe(status))
    };
    Ended::record(Some(status), action)
}

/// The second half of [`supervise`]: records how the child ended.
pub(crate) fn settle(
    store: &(dyn Store + Sync),
    claim: &Claim,
    agent: &str,
    ended: Ended,
) -> RunOutcome {
    let action = match ended.record {
        Ok(action) => action,
        Err(outcome) => return outcome,
    };
    let actor = Actor::new(agent).fence(claim.fence);
    match record(store, &claim.work_item_id, &action, &actor) {
        Ok(after) => RunOutcome {
            status: ended.status,
            finish: match action {
                Action::Release => Finish::Released,
                Action::Complete { .. } => Finish::Completed,
                _ if after.status == Status::Pending => Finish::Requeued,
                _ => Finish::Failed,
            },
            error: None,
        },
        Err(e) => lost_or_failed(ended.status, e),
    }
}

/// The child's heartbeats: when the first is due, how to start them, and
/// where a lost lease is reported.
struct Beats<'a> {
    due: Instant,
    start: &'a mut dyn FnMut(),
    lost: &'a mpsc::Receiver<CoordError>,
}

/// Waits for the child, forwarding signals and its output, starting its
/// heartbeats when due; stops it when the lease is lost or (in a worker) a
/// stop request outlives the grace period. Returns its status, the
/// lost-lease error if any, and whether a stop request ended it.
fn watch(
    child: &mut Child,
    mut output: Option<&mut Output>,
    beats: Beats<'_>,
    shutdown: &Shutdown,
    grace: Duration,
) -> (std::io::Result<ExitStatus>, Option<CoordError>, bool) {
    let mut lost = None;
    let mut stop_requested_at: Option<Instant> = None;
    let mut term_sent_at: Option<Instant> = None;
    let mut stopped = false;
    let mut beating = false;
    // The child's exit ends a wait at once through its pidfd; without one
    // (an old kernel), the wait is a poll.
    let exited = child_exit_fd(child);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return (Ok(status), lost, stopped),
            Ok(None) => {}
            Err(e) => return (Err(e), lost, stopped),
        }
        for signal in shutdown.take_forwarded() {
            send(child, signal);
        }
        if !beating && Instant::now() >= beats.due {
            (beats.start)();
            beating = true;
        }
        let limit = if beating {
            POLL
        } else {
            POLL.min(beats.due.saturating_duration_since(Instant::now()))
        };
        wait_for_child(exited.as_ref(), output.as_deref_mut(), limit);
        if lost.is_none() {
            match beats.lost.try_recv() {
                Ok(error) => {
                    // Stop the child at once: its work no longer counts.
                    lost = Some(error);
                    send(child, signal_hook::consts::SIGTERM);
                    term_sent_at = Some(Instant::now());
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
            }
        }
        if shutdown.is_requested() && lost.is_none() && term_sent_at.is_none() {
            let since = *stop_requested_at.get_or_insert_with(Instant::now);
            if shutdown.is_urgent() || since.elapsed() >= grace {
                stopped = true;
                send(child, signal_hook::consts::SIGTERM);
                term_sent_at = Some(Instant::now());
            }
        }
        if let Some(at) = term_sent_at
            && (at.elapsed() >= grace || shutdown.is_urgent())
        {
            child.signal(rustix::process::Signal::KILL);
        }
    }
}

fn lost_or_failed(status: Option<ExitStatus>, error: CoordError) -> RunOutcome {
    let finish = if matches!(error.kind(), ErrorKind::LeaseExpired | ErrorKind::NotOwner) {
        Finish::LeaseLost
    } else {
        Finish::Failed
    };
    RunOutcome {
        status,
        finish,
        error: Some(error),
    }
}

/// The change that records a failed run: back to the queue after a
/// backoff for a worker that requeues, else final.
fn fail(claim: &Claim, options: &RunOptions, reason: String) -> Action {
    Action::Fail {
        reason: Some(reason),
        requeue: options.requeue_backoff.is_some(),
        retry_after: options
            .requeue_backoff
            .map(|base| requeue_delay(base, claim.attempt.unwrap_or(1))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requeue_delays_grow_and_stay_capped() {
        for attempt in 1..40 {
            let cap = Duration::from_millis(100)
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(Duration::from_secs(300));
            assert!(requeue_delay(Duration::from_millis(100), attempt) <= cap);
        }
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        let outcome = |raw: i32| RunOutcome {
            status: Some(ExitStatus::from_raw(raw)),
            finish: Finish::Failed,
            error: None,
        };
        assert_eq!(outcome(3 << 8).exit_code(), 3);
        assert_eq!(outcome(9).exit_code(), 137);
        assert_eq!(describe(ExitStatus::from_raw(9)), "killed by signal 9");
        assert_eq!(describe(ExitStatus::from_raw(2 << 8)), "exit status 2");
    }
}
