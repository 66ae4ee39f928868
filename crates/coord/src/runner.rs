//! `coord run` and `coord work`: the CLI side of `coord_runner`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use coord_core::KeyedChange;
use coord_runner::{Finish, RunOptions, Shutdown, SignalMode, WorkOptions, watch_signals};
use serde_json::json;

use crate::backend::Backend;
use crate::cli::{Cli, RunArgs, WorkArgs};
use crate::metrics::Metrics;
use crate::otlp::MetricsExporter;
use crate::output;

/// Where a long-lived command's metrics go: a scrape of `--metrics-listen`
/// reads them, and `otlp` (when configured) is sent them.
#[derive(Debug, Clone, Copy)]
pub struct Published<'a> {
    pub metrics: &'a Metrics,
    pub otlp: Option<&'a MetricsExporter>,
}

impl Published<'_> {
    /// Sends the metrics to the OTLP collector every interval until
    /// `stop` says so (or is dropped), and once more then.
    pub fn send_until(&self, store: &dyn coord_core::Store, stop: &std::sync::mpsc::Receiver<()>) {
        let Some(exporter) = self.otlp else {
            return;
        };
        loop {
            let last = !matches!(
                stop.recv_timeout(exporter.interval()),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout)
            );
            match self.metrics.snapshot(store) {
                Ok(snapshot) => exporter.send(&snapshot),
                Err(e) => tracing::warn!(error = %e, "metrics not read"),
            }
            if last {
                return;
            }
        }
    }
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Tells the registry the agent's process ended; a failure to say so is
/// logged, not the command's error.
fn mark_stopped(store: &dyn coord_core::Store, agent: &str) {
    if let Err(e) = store.agent_stopped(agent) {
        tracing::warn!(error = %e, agent, "could not mark the agent stopped");
    }
}

pub fn run(cli: &Cli, args: &RunArgs, backend: &Backend, agent: &str) -> ExitCode {
    let store = backend.store();
    let RunArgs {
        what,
        result,
        grace,
        command,
    } = args;
    let request = match what.request(agent) {
        Ok(request) => request,
        Err(e) => return output::fail(&e),
    };
    // A claim that cannot be had runs nothing. Where an answer can be
    // lost, its key makes a retry after a broken connection safe: a claim
    // that committed is answered.
    let claimed = KeyedChange::Claim(&request).retrying(store, what.retry.policy(), "coord-run");
    let claim = match claimed {
        Ok(claim) => claim,
        Err(e) => return output::fail(&e),
    };
    let shutdown = Shutdown::new();
    let signals = match watch_signals(&shutdown, SignalMode::Forward) {
        Ok(handle) => handle,
        Err(e) => {
            output::warn(
                "signals_not_forwarded",
                &format!("cannot watch signals: {e}"),
            );
            return output::fail(&coord_core::CoordError::internal(format!(
                "cannot watch signals: {e}"
            )));
        }
    };
    let options = RunOptions::new(command.clone())
        .store_env(backend.child_env(cli))
        .grace(*grace)
        .result(result.clone())
        .spinner(true)
        .trace_parent(store.trace_parent());
    let outcome = coord_runner::supervise(store, &claim, agent, &options, &shutdown);
    signals.close();
    mark_stopped(store, agent);
    match (&outcome.finish, &outcome.error) {
        (Finish::LeaseLost, Some(e)) => {
            output::fail(e);
            ExitCode::from(output::exit_code(coord_core::ErrorKind::LeaseExpired))
        }
        // The child ran, but its outcome could not be recorded: say so, and
        // exit with the error's code so scripts notice.
        (_, Some(e)) => output::fail(e),
        _ => exit(outcome.exit_code()),
    }
}

pub fn work(
    cli: &Cli,
    args: &WorkArgs,
    backend: &Backend,
    agent: &str,
    published: Option<Published<'_>>,
) -> ExitCode {
    let store = backend.store();
    let WorkArgs {
        work_types,
        lease,
        concurrency,
        max_items,
        idle_exit,
        grace,
        retry_backoff,
        metrics_listen,
        command,
    } = args;
    // Refused before any slot starts, as `next` refuses it (a bad lease or
    // work type would stop every slot with the same error).
    let request = coord_core::NextRequest::new(agent)
        .work_types(work_types.iter().cloned())
        .lease(lease.lease);
    if let Err(e) = request.validate() {
        return output::fail(&e);
    }
    // Bound before any work, so a bad or busy address is refused at once.
    let listener = match metrics_listen
        .as_deref()
        .map(crate::metrics::bind)
        .transpose()
    {
        Ok(listener) => listener,
        Err(e) => return output::fail(&e),
    };
    let shutdown = Shutdown::new();
    let signals = match watch_signals(&shutdown, SignalMode::Stop) {
        Ok(handle) => handle,
        Err(e) => {
            return output::fail(&coord_core::CoordError::internal(format!(
                "cannot watch signals: {e}"
            )));
        }
    };
    let run = RunOptions::new(command.clone())
        .store_env(backend.child_env(cli))
        .grace(*grace)
        .requeue_backoff(Some(*retry_backoff));
    let options = WorkOptions::new(run)
        .work_types(work_types.clone())
        .lease(lease.lease)
        .concurrency(usize::from(*concurrency))
        .max_items(*max_items)
        .idle_exit(*idle_exit);
    let done = AtomicBool::new(false);
    let report = std::thread::scope(|scope| {
        if let (Some(listener), Some(published)) = (&listener, published) {
            let done = &done;
            scope.spawn(move || {
                crate::metrics::serve(listener, published.metrics, store, &|| {
                    done.load(Ordering::SeqCst)
                })
            });
        }
        // Dropped when the work ends: the exporter then sends a last time.
        let (stop_exporting, stopped) = std::sync::mpsc::channel::<()>();
        if let Some(published) = published {
            scope.spawn(move || published.send_until(store, &stopped));
        }
        let report = coord_runner::work(store, agent, &options, &shutdown);
        done.store(true, Ordering::SeqCst);
        drop(stop_exporting);
        report
    });
    signals.close();
    mark_stopped(store, agent);
    let mut summary = json!({"summary": {
        "agent_id": agent,
        "taken": report.taken,
        "completed": report.completed,
        "failed": report.failed,
        "requeued": report.requeued,
        "released": report.released,
        "lease_lost": report.lease_lost,
        "errors": report.errors,
    }});
    // On a directory: how many durable writes of the claims file the
    // worker's changes took (group commit writes busy slots' together).
    if let Backend::File(store) = backend {
        summary["summary"]["claims_writes"] = json!(store.claims_writes());
    }
    eprintln!("{summary}");
    if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
