//! `coord`: the command-line face of coord. Parses arguments, calls the
//! store, prints JSON, maps errors to exit codes. Nothing else.
//!
//! Architecture invariant: only this crate decides exit codes and prints.

mod backend;
mod cli;
mod dashboard;
mod metrics;
mod otlp;
mod output;
mod runner;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use coord_core::operate::{OperateRequest, Operation};
use coord_core::trace::SpanSink;
use coord_core::{
    Action, Actor, AgentRegistration, Claim, CoordError, Filter, IdempotencyKey, KeyedChange,
    NextRequest, PostRequest, Store, Timestamp,
};
use coord_file::FileStore;
use coord_pg::ImportSource;
use serde_json::json;

use backend::Backend;
use cli::{AgentCommand, Cli, Command, HoldArgs, KeyArg};
use output::Output;

fn main() -> ExitCode {
    let mut cli = match Cli::parse_args(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(e) => return output::usage_error(e),
    };
    cli.find_dir();
    // Made from the command line's definition alone: no store is opened.
    match &cli.command {
        Command::Completions { shell } => {
            let mut command = Cli::full_command();
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut command, "coord", &mut out);
            return output::print(&Output::Text(String::from_utf8_lossy(&out).into_owned()));
        }
        Command::Man => {
            let mut out = Vec::new();
            if let Err(e) = clap_mangen::Man::new(Cli::full_command()).render(&mut out) {
                return output::fail(&CoordError::internal(format!(
                    "cannot render the man page: {e}"
                )));
            }
            return output::print(&Output::Text(String::from_utf8_lossy(&out).into_owned()));
        }
        _ => {}
    }
    output::set_human(cli.human);
    init_tracing();
    let exporter = otlp::Exporter::from_env().filter(|_| cli.telemetry_on());
    // Metrics are kept by the one long-lived command, when they go anywhere.
    let metrics_exporter = match &cli.command {
        Command::Work(_) if cli.telemetry_on() => otlp::MetricsExporter::from_env(),
        _ => None,
    };
    let metrics = match &cli.command {
        Command::Work(work) if work.metrics_listen.is_some() || metrics_exporter.is_some() => {
            Some(metrics::Metrics::new())
        }
        _ => None,
    };
    let sinks: Vec<SpanSink> = exporter
        .as_ref()
        .map(otlp::Exporter::sink)
        .into_iter()
        .chain(metrics.as_ref().map(metrics::Metrics::sink))
        .collect();
    let sink: Option<SpanSink> = match sinks.len() {
        0 => None,
        1 => sinks.into_iter().next(),
        _ => Some(Arc::new(
            move |spans: &[coord_core::trace::SpanRecord]| {
                for sink in &sinks {
                    sink(spans);
                }
            },
        )),
    };
    let code = dispatch(&cli, sink, metrics.as_deref(), metrics_exporter.as_ref());
    // The spans left, sent before the process ends.
    if let Some(exporter) = exporter {
        exporter.shutdown();
    }
    code
}

/// Opens the store and runs the command on it; spans also go to `sink`,
/// and `coord work` serves `metrics` and sends them to `metrics_exporter`.
fn dispatch(
    cli: &Cli,
    sink: Option<SpanSink>,
    metrics: Option<&metrics::Metrics>,
    metrics_exporter: Option<&otlp::MetricsExporter>,
) -> ExitCode {
    let (agent, agent_given) = cli.agent_id();
    let backend = match Backend::open(cli, agent_given, sink) {
        Ok(backend) => backend,
        Err(e) => return output::fail(&e),
    };
    let store = backend.store();
    if let Err(e) = reads_an_existing_directory(cli, &backend) {
        return output::fail(&e);
    }
    match &cli.command {
        Command::Log(log) => return output::follow_log(store, log),
        Command::Run(run) => return runner::run(cli, run, &backend, &agent),
        Command::Work(work) => {
            let published = metrics.map(|metrics| runner::Published {
                metrics,
                otlp: metrics_exporter,
            });
            return runner::work(cli, work, &backend, &agent, published);
        }
        Command::Import(import) => {
            return match import_dir(&backend, &import.from) {
                Ok(out) => output::print(&out),
                Err(error) => output::fail(&error),
            };
        }
        _ => {}
    }
    match run(cli, store, &agent) {
        Ok(out) => output::print(&out),
        Err(error) if error.kind() == coord_core::ErrorKind::NothingToTake => {
            output::fail_with(&error, why_nothing(store, &cli.command))
        }
        Err(error) => output::fail(&hint(error, agent_given)),
    }
}

/// A command that only reads (`list`, `show`, `agents`, `stats`,
/// `dashboard`, `log` without `--follow`) on a directory that is not there
/// says so, instead of printing an empty board; `claim` and `post` make it,
/// and `log --follow` waits for it.
fn reads_an_existing_directory(cli: &Cli, backend: &Backend) -> Result<(), CoordError> {
    let Backend::File(store) = backend else {
        return Ok(());
    };
    let reads = match &cli.command {
        Command::List(_)
        | Command::Show(_)
        | Command::Agents(_)
        | Command::Stats(_)
        | Command::Dashboard(_) => true,
        Command::Log(log) => !log.follow,
        _ => false,
    };
    if !reads || store.dir().is_dir() {
        return Ok(());
    }
    let path = std::path::absolute(store.dir()).unwrap_or_else(|_| store.dir().to_owned());
    let source = if path.exists() {
        std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            "it exists but is not a directory",
        )
    } else {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no coordination directory there (claim or post makes one; give --dir or \
             COORD_DIR, or run from a directory that holds agent_coordination/ or is below one)",
        )
    };
    Err(CoordError::FileRead {
        source: Box::new(source),
        path,
    })
}

/// `coord import --from DIR`: reads the directory as its own store does
/// (refusing what that store refuses), then copies it in one transaction.
fn import_dir(backend: &Backend, from: &Path) -> Result<Output, CoordError> {
    let Backend::Pg(database) = backend else {
        return Err(CoordError::invalid_input(
            "coord import copies a directory into a database: give --database-url or \
             COORD_DATABASE_URL",
        ));
    };
    if !from.is_dir() {
        return Err(CoordError::invalid_input(format!(
            "--from {}: no such directory",
            from.display()
        )));
    }
    let source = FileStore::new(from);
    let read = ImportSource::new(
        source.list(&Filter::default())?,
        source.archived()?,
        source.events(0)?.events,
        source.agents()?,
    )
    .paused(source.paused()?);
    let imported = database.import(&read)?;
    Ok(Output::Value(json!({ "imported": imported })))
}

/// A generated agent id can never own an existing claim: say so.
fn hint(error: CoordError, agent_given: bool) -> CoordError {
    match error {
        CoordError::NotOwner {
            work_item_id,
            owner,
            agent,
        } if !agent_given => CoordError::NotOwner {
            work_item_id,
            owner,
            agent: format!("{agent} (no --agent or COORD_AGENT_ID was given)"),
        },
        other => other,
    }
}

/// Makes `change`, once per key when `--idempotency-key` is given.
fn once(store: &dyn Store, key: &KeyArg, change: KeyedChange<'_>) -> Result<Claim, CoordError> {
    match &key.idempotency_key {
        None => change.apply(store),
        Some(k) => store.apply_once(&IdempotencyKey::new(k.as_str())?, &change),
    }
}

fn act(
    store: &dyn Store,
    id: &str,
    action: Action,
    agent: &str,
    hold: &HoldArgs,
) -> Result<Output, CoordError> {
    let change = KeyedChange::Act {
        work_item_id: id,
        action: &action,
        actor: Actor::new(agent).fence(hold.fence).force(hold.force),
    };
    Ok(Output::One(Box::new(once(store, &hold.key, change)?)))
}

fn run(cli: &Cli, store: &dyn Store, agent: &str) -> Result<Output, CoordError> {
    Ok(match &cli.command {
        Command::Claim(claim) => {
            let request = claim.what.request(agent)?;
            let change = KeyedChange::Claim(&request);
            let policy = claim.what.retry.policy();
            Output::One(Box::new(policy.run(|| once(store, &claim.key, change))?))
        }
        Command::Post(post) => {
            let (description, payload) = post.text.resolve(post.description.as_deref())?;
            let request = PostRequest::new(agent, post.work_type.as_str())
                .description(description)
                .payload(payload)
                .priority(post.priority)
                .after(post.after.iter().cloned())
                .max_attempts(post.max_attempts)
                .on_dependency_failure(post.on_dependency_failure);
            let change = KeyedChange::Post(&request);
            Output::One(Box::new(once(store, &post.key, change)?))
        }
        Command::Next(next) => {
            let request = NextRequest::new(agent)
                .work_types(next.work_types.iter().cloned())
                .lease(next.lease.lease);
            let change = KeyedChange::Next(&request);
            let policy = next.retry.policy();
            Output::One(Box::new(policy.run(|| once(store, &next.key, change))?))
        }
        Command::Heartbeat(beat) => act(
            store,
            &beat.id,
            Action::Heartbeat { lease: beat.lease },
            agent,
            &beat.hold,
        )?,
        Command::Progress(progress) => act(
            store,
            &progress.id,
            Action::Progress {
                percent: progress.percent,
            },
            agent,
            &progress.hold,
        )?,
        Command::Complete(complete) => act(
            store,
            &complete.id,
            Action::Complete {
                result: complete.result.clone(),
            },
            agent,
            &complete.hold,
        )?,
        Command::Fail(fail) => {
            let action = Action::Fail {
                reason: fail.reason.clone(),
                requeue: fail.requeue,
                retry_after: fail.retry_after,
            };
            act(store, &fail.id, action, agent, &fail.hold)?
        }
        Command::Release(release) => {
            act(store, &release.id, Action::Release, agent, &release.hold)?
        }
        Command::Cancel(cancel) => {
            let operation = Operation::Cancel {
                reason: cancel.reason.clone(),
                force: cancel.force,
            };
            operate(
                store,
                agent,
                operation,
                cancel.id.as_deref(),
                &cancel.select,
            )?
        }
        Command::Retry(retry) => {
            let operation = Operation::Retry {
                reset_attempts: retry.reset_attempts,
            };
            operate(store, agent, operation, retry.id.as_deref(), &retry.select)?
        }
        Command::Pause(pause) => {
            Output::Value(json!(store.pause(agent, &pause.work_type, true)?))
        }
        Command::Resume(resume) => {
            Output::Value(json!(store.pause(agent, &resume.work_type, false)?))
        }
        Command::Reap => Output::Many(store.reap(agent)?),
        Command::Cleanup(cleanup) => {
            let ids = store.cleanup(agent, cleanup.older_than)?;
            Output::Value(json!({"archived": ids.len(), "work_item_ids": ids}))
        }
        Command::List(list) => {
            let now = store.now();
            let mut items = store.list(&Filter {
                status: list.status,
                work_type: list.work_type.clone(),
                owner: list.owner.clone(),
            })?;
            if let Some(since) = list.since.map(|s| s.at(now)) {
                // An item's last change: its `last_update`, else when it
                // was claimed or posted.
                items.retain(|c| {
                    c.last_update
                        .or(c.claimed_at)
                        .or(c.posted_at)
                        .is_some_and(|t| t >= since)
                });
            }
            if let Some(limit) = list.limit {
                items.drain(..items.len().saturating_sub(limit));
            }
            let blocked = blocked_by(store, &items)?;
            let paused = paused_types(store)?;
            let items = items.into_iter().map(|mut c| {
                if let Some(ids) = blocked.get(&c.work_item_id) {
                    c.extra.insert("blocked_by".into(), json!(ids));
                }
                mark_paused(mark_lapsed(c, now), &paused)
            });
            Output::Many(items.collect())
        }
        Command::Show(show) => match store.get(&show.id) {
            Ok(mut claim) => {
                if let Some(ids) =
                    blocked_by(store, std::slice::from_ref(&claim))?.remove(&claim.work_item_id)
                {
                    claim.extra.insert("blocked_by".into(), json!(ids));
                }
                let paused = paused_types(store)?;
                Output::One(Box::new(mark_paused(
                    mark_lapsed(claim, store.now()),
                    &paused,
                )))
            }
            // Not live: perhaps archived by a cleanup.
            Err(CoordError::NotFound { work_item_id }) => match store.archived_item(&show.id)? {
                Some(mut item) => {
                    item["archived"] = json!(true);
                    Output::Archived(item)
                }
                None => return Err(CoordError::NotFound { work_item_id }),
            },
            Err(e) => return Err(e),
        },
        Command::Agent {
            command: AgentCommand::Register { team, capacity },
        } => {
            let registration = AgentRegistration {
                agent_id: agent.to_owned(),
                team: team.clone(),
                capacity: *capacity,
            };
            Output::Value(agent_json(
                &store.register_agent(&registration)?,
                Duration::MAX,
                store.now(),
            ))
        }
        Command::Agents(agents) => {
            let live = store.list(&Filter {
                status: Some(coord_core::Status::InProgress),
                ..Filter::default()
            })?;
            Output::Agents(
                store
                    .agents()?
                    .iter()
                    .map(|a| {
                        let now = store.now();
                        let mut entry = agent_json(a, agents.stale_after, now);
                        let held: Vec<&coord_core::Claim> = live
                            .iter()
                            .filter(|c| c.agent_id.as_deref() == Some(a.agent_id.as_str()))
                            .collect();
                        // Whoever lets a lease lapse is gone, whatever its
                        // last sighting says.
                        let lapsed = held
                            .iter()
                            .any(|c| c.lease_expires_at.is_some_and(|end| end <= now));
                        if lapsed && entry["status"] == "active" {
                            entry["status"] = json!("stale");
                        }
                        let ids: Vec<&str> = held.iter().map(|c| c.work_item_id.as_str()).collect();
                        entry["holds"] = json!(ids);
                        entry
                    })
                    .collect(),
            )
        }
        Command::Stats(stats) => Output::Stats(Box::new(store.stats(stats.stale_after)?)),
        Command::Dashboard(args) if args.once => Output::Text(dashboard::once(store)?),
        Command::Dashboard(_) => {
            dashboard::live(store)?;
            Output::Nothing
        }
        Command::Log(_)
        | Command::Run(_)
        | Command::Work(_)
        | Command::Import(_)
        | Command::Completions { .. }
        | Command::Man => {
            unreachable!("handled before")
        }
    })
}

/// `coord cancel` and `coord retry`: the operation on `id`, or on what
/// `select` selects; by id the item is printed, by filter an array. A dry
/// run decides on what the store holds now, without a lock, and prints
/// the items it would change as they are.
fn operate(
    store: &dyn Store,
    agent: &str,
    operation: Operation,
    id: Option<&str>,
    select: &cli::SelectArgs,
) -> Result<Output, CoordError> {
    let request = OperateRequest {
        agent_id: agent.to_owned(),
        operation,
        target: select.target(id),
    };
    request.validate()?;
    let changed = if select.dry_run {
        let items = store.list(&Filter::default())?;
        let now = store.now();
        let lapsed = items.iter().filter(|c| c.head().is_lapsed(now)).cloned();
        let mut decision = coord_core::Decision::begin(0, now, lapsed, None);
        let ids: std::collections::HashSet<String> =
            coord_core::decide::operate(&mut decision, &items, &request)?
                .into_iter()
                .map(|c| c.work_item_id)
                .collect();
        items
            .into_iter()
            .filter(|c| ids.contains(&c.work_item_id))
            .collect()
    } else {
        store.operate(&request)?
    };
    Ok(match (id, changed.len()) {
        (Some(_), 1) => Output::One(Box::new(changed.into_iter().next().expect("one item"))),
        _ => Output::Many(changed),
    })
}

/// An agent as printed: its record plus `status` (`active` or `stale`, at
/// the store's `now`).
/// Why `next` found nothing to take: how many pending items of its work
/// types wait (for a retry time, a dependency, an exclusive claim to end,
/// a paused work type, or another taker), how many of those are blocked by
/// a dependency that ended badly, and the paused work types if any.
/// Nothing when they cannot be read.
fn why_nothing(store: &dyn Store, command: &Command) -> Vec<(&'static str, serde_json::Value)> {
    let Command::Next(next) = command else {
        return Vec::new();
    };
    let Ok(mut pending) = store.list(&Filter {
        status: Some(coord_core::Status::Pending),
        ..Filter::default()
    }) else {
        return Vec::new();
    };
    if !next.work_types.is_empty() {
        pending.retain(|c| next.work_types.contains(&c.work_type));
    }
    let blocked = blocked_by(store, &pending).map_or(0, |b| b.len());
    let mut why = vec![
        ("waiting", json!(pending.len())),
        ("blocked", json!(blocked)),
    ];
    if let Ok(paused) = paused_types(store)
        && !paused.is_empty()
    {
        let mut paused: Vec<String> = paused.into_iter().collect();
        paused.sort();
        why.push(("paused", json!(paused)));
    }
    why
}

/// For each pending item of `items` that waits on a dependency that
/// ended without completing (failed, expired or cancelled), those
/// dependencies: it cannot be taken until they are retried.
fn blocked_by(
    store: &dyn Store,
    items: &[coord_core::Claim],
) -> Result<std::collections::HashMap<String, Vec<String>>, CoordError> {
    use coord_core::Status;
    let mut blocked = std::collections::HashMap::new();
    let waiting: Vec<&coord_core::Claim> = items
        .iter()
        .filter(|c| c.status == Status::Pending && !c.depends_on.is_empty())
        .collect();
    if waiting.is_empty() {
        return Ok(blocked);
    }
    let all = store.list(&Filter::default())?;
    let status: std::collections::HashMap<&str, Status> = all
        .iter()
        .map(|c| (c.work_item_id.as_str(), c.status))
        .collect();
    for item in waiting {
        let ended: Vec<String> = item
            .depends_on
            .iter()
            .filter(|d| status.get(d.as_str()).is_some_and(|s| s.ended_badly()))
            .cloned()
            .collect();
        if !ended.is_empty() {
            blocked.insert(item.work_item_id.clone(), ended);
        }
    }
    Ok(blocked)
}

/// The work types `next` does not hand out now.
fn paused_types(store: &dyn Store) -> Result<std::collections::HashSet<String>, CoordError> {
    Ok(store.paused()?.into_iter().map(|p| p.work_type).collect())
}

/// A pending item of a paused work type is shown with
/// `"work_type_paused": true`: `next` passes it over until `coord resume`.
fn mark_paused(
    mut claim: coord_core::Claim,
    paused: &std::collections::HashSet<String>,
) -> coord_core::Claim {
    if claim.status == coord_core::Status::Pending && paused.contains(&claim.work_type) {
        claim.extra.insert("work_type_paused".into(), json!(true));
    }
    claim
}

/// A claim whose lease has passed but that no change has written down yet
/// (it will be, as `expired` or `failed`, by the next writer) is shown with
/// `"lease_lapsed": true`; nothing is written.
fn mark_lapsed(mut claim: coord_core::Claim, now: Timestamp) -> coord_core::Claim {
    let lapsed = claim.status == coord_core::Status::InProgress
        && claim.lease_expires_at.is_some_and(|end| end <= now);
    if lapsed {
        claim.extra.insert("lease_lapsed".into(), json!(true));
    }
    claim
}

fn agent_json(
    agent: &coord_core::AgentRecord,
    stale_after: Duration,
    now: Timestamp,
) -> serde_json::Value {
    let mut value = serde_json::to_value(agent).expect("an agent always serialises");
    value["status"] = json!(agent.status(now, stale_after));
    value
}

/// Logs go to stderr, and only when asked for with `COORD_LOG` (for example
/// `COORD_LOG=debug`), so the JSON contract on stdout and stderr stays clean.
fn init_tracing() {
    let Some(spec) = std::env::var("COORD_LOG").ok().filter(|s| !s.is_empty()) else {
        return;
    };
    match spec.parse::<tracing_subscriber::filter::Targets>() {
        Ok(filter) => {
            use tracing_subscriber::prelude::*;
            tracing_subscriber::registry()
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_filter(filter),
                )
                .init();
        }
        Err(e) => eprintln!("coord: ignoring COORD_LOG={spec:?}: {e}"),
    }
}
