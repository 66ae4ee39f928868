//! The checker: after the run, settle the store like any writer would,
//! then verify the store, the event log and every acknowledgement.
//!
//! What it holds the run to:
//! - every item is in exactly one place (the claims or the archive);
//! - the event log replays through the state machine (every `from` is the
//!   item's state so far, every `from` → `to` legal for its event), ends in
//!   each item's stored state, and never shows two owners or two live
//!   exclusive claims of one work type; fences grow;
//! - every acknowledged change is in the store and the log;
//! - no acknowledged action on an item started after the lease its agent
//!   last held on it had ended (the store must refuse those);
//! - the only refusals are those agents acting with their own id and fence
//!   can meet (`coordination_conflict`, `lease_expired`, `not_found`,
//!   `nothing_to_take`; on PostgreSQL, whose connections the run cuts, also
//!   `database_error`);
//! - no `next` said `nothing_to_take` while an item it could take (of a
//!   priority that conflicts with nothing, no dependencies) was surely
//!   pending for the whole call: made pending by a change acknowledged
//!   before the call began, and changed next by a change decided after it
//!   ended, by a call that began after it ended if that call was
//!   acknowledged.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;

use coord_core::{Claim, Event, EventKind, Filter, Priority, Status, Store};
use serde_json::Value;

/// Reads JSON lines, skipping a torn last line (a killed agent's).
fn json_lines(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// How the log orders fences and revisions. A coordination directory has
/// one writer at a time, so they grow along the whole log. PostgreSQL
/// commits unrelated changes side by side: fences grow along each item's
/// history and each exclusive work type's, and revisions only name changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Global,
    PerItemAndWorkType,
}

/// What the run did to the store besides the agents' operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// Agents were killed.
    Kills,
    /// Agents were killed and their database connections cut.
    KillsAndCutConnections,
}

/// The refusals an agent acting with its own id and fence can meet; an
/// operator's `cancel` or `retry` of an item in a state it does not act on
/// is refused as a forbidden transition too.
fn expected_refusal(kind: &str, op: &str, run: Run) -> bool {
    matches!(
        kind,
        "coordination_conflict" | "lease_expired" | "not_found" | "nothing_to_take"
    ) || (run == Run::KillsAndCutConnections && kind == "database_error")
        || (matches!(op, "cancel" | "retry") && kind == "coordination_validation_failed")
}

/// Whether `event` may take an item from `from` to `to`.
fn legal(event: EventKind, from: Option<Status>, to: Option<Status>) -> bool {
    use Status::*;
    matches!(
        (event, from, to),
        (EventKind::Posted, None, Some(Pending))
            | (EventKind::Claimed, None | Some(Pending), Some(InProgress))
            | (EventKind::Progress, Some(InProgress), Some(InProgress))
            | (EventKind::Completed, Some(InProgress), Some(Completed))
            | (EventKind::Failed, Some(InProgress), Some(Failed))
            | (
                EventKind::Requeued | EventKind::Released,
                Some(InProgress),
                Some(Pending)
            )
            | (
                EventKind::Expired,
                Some(InProgress),
                Some(Pending | Failed | Expired)
            )
            | (
                EventKind::Cancelled,
                Some(Pending | InProgress),
                Some(Cancelled)
            )
            | (EventKind::DependencyFailed, Some(Pending), Some(Failed))
            | (
                EventKind::Retried,
                Some(Failed | Expired | Cancelled),
                Some(Pending)
            )
    )
}

/// Checks the store after the run. `settle` is a change any writer would
/// make (it settles what killed writers left half-done); `archived` reads
/// the archive.
pub fn check(
    store: &dyn Store,
    archived: impl FnOnce() -> Result<Vec<Value>, coord_core::CoordError>,
    order: Order,
    run: Run,
    logs: &Path,
) -> Result<String, Vec<String>> {
    let mut problems = Vec::new();
    if logs.join("bad-samples").exists() {
        problems.push("the claims file did not parse in some samples taken during the run (see logs/bad-sample.json)".to_owned());
    }
    // A writer settles whatever the killed ones left half-done.
    if let Err(e) = store.reap("checker") {
        return Err(vec![format!(
            "the settling change after the run failed: {e}"
        )]);
    }
    let claims: Vec<Claim> = match store.list(&Filter::default()) {
        Ok(c) => c,
        Err(e) => return Err(vec![format!("the claims cannot be read: {e}")]),
    };
    let archived: Vec<Value> = match archived() {
        Ok(a) => a,
        Err(e) => return Err(vec![format!("the archive cannot be read: {e}")]),
    };
    let events = match store.events(0) {
        Ok(page) => page.events,
        Err(e) => return Err(vec![format!("the event log cannot be read: {e}")]),
    };

    // Every item in exactly one place.
    let mut place: HashMap<String, &'static str> = HashMap::new();
    let mut status: HashMap<String, String> = HashMap::new();
    let mut has_dependencies: HashSet<String> = HashSet::new();
    for c in &claims {
        if place.insert(c.work_item_id.clone(), "claims").is_some() {
            problems.push(format!("{} is twice in the claims file", c.work_item_id));
        }
        status.insert(c.work_item_id.clone(), c.status.as_str().to_owned());
        if !c.depends_on.is_empty() {
            has_dependencies.insert(c.work_item_id.clone());
        }
    }
    for a in &archived {
        let id = a["work_item_id"].as_str().unwrap_or_default().to_owned();
        if let Some(other) = place.insert(id.clone(), "archive") {
            problems.push(format!("{id} is in the archive and in the {other}"));
        }
        status.insert(
            id.clone(),
            a["status"].as_str().unwrap_or_default().to_owned(),
        );
        if a["depends_on"].as_array().is_some_and(|d| !d.is_empty()) {
            has_dependencies.insert(id);
        }
    }

    let replayed = replay(&events, order, &place, &status, &mut problems);
    for c in claims.iter().filter(|c| c.status == Status::InProgress) {
        let expected = (c.agent_id.clone().unwrap_or_default(), c.fence.unwrap_or(0));
        if replayed.holder.get(&c.work_item_id) != Some(&expected) {
            problems.push(format!(
                "{} is held by {expected:?} but the log says {:?}",
                c.work_item_id,
                replayed.holder.get(&c.work_item_id)
            ));
        }
    }
    for id in &replayed.created {
        if !place.contains_key(id) {
            problems.push(format!(
                "{id} was created but is in neither the claims file nor the archive"
            ));
        }
    }

    // The agents' own logs: every acknowledgement, every refusal.
    let mut acks = 0;
    let mut refusals: HashMap<String, usize> = HashMap::new();
    let mut acked_at: HashMap<(String, u64), i64> = HashMap::new();
    // When the earliest acknowledged call that made each (item, revision)
    // began: a change whose call began before another call ended may have
    // been decided before it, whatever its logged time says.
    let mut call_began: HashMap<(String, u64), i64> = HashMap::new();
    let mut nothing_calls: Vec<(String, i64, i64)> = Vec::new();
    // When each change was known committed (its earliest acknowledgement),
    // and the latest deadline acknowledged for each holding (item, fence).
    let mut committed_by: HashMap<u64, i64> = HashMap::new();
    let mut lease_of: HashMap<(String, u64), i64> = HashMap::new();
    for entry in fs::read_dir(logs).map_err(|e| vec![format!("cannot list the agent logs: {e}")])? {
        let path = entry.map_err(|e| vec![e.to_string()])?.path();
        if path.extension().is_none_or(|x| x != "jsonl") {
            continue;
        }
        let agent = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        // The lease deadline of the agent's last acknowledgement per item.
        let mut deadline: HashMap<String, i64> = HashMap::new();
        let mut started: HashMap<u64, Value> = HashMap::new();
        for line in json_lines(&path) {
            let seq = line["seq"].as_u64().unwrap_or(u64::MAX);
            match line["phase"].as_str() {
                Some("start") => {
                    started.insert(seq, line);
                }
                Some("error") => {
                    let kind = line["kind"].as_str().unwrap_or("?").to_owned();
                    let op = line["op"].as_str().unwrap_or_default();
                    if !expected_refusal(&kind, op, run) {
                        problems.push(format!(
                            "{agent}'s {op} was refused with {kind}, which an agent acting with its \
                             own id and fence must never meet: {}",
                            line["message"]
                        ));
                    }
                    if op == "next"
                        && kind == "nothing_to_take"
                        && let Some(start) = started.get(&seq).and_then(|s| s["at"].as_i64())
                        && let Some(end) = line["at"].as_i64()
                    {
                        nothing_calls.push((agent.clone(), start, end));
                    }
                    *refusals.entry(kind).or_default() += 1;
                }
                Some("ack") => {
                    acks += 1;
                    let start = started.get(&seq);
                    check_lease(&agent, &line, start, &mut deadline, &mut problems);
                    let at = line["at"].as_i64().unwrap_or(i64::MAX);
                    let began = start.and_then(|s| s["at"].as_i64()).unwrap_or(at);
                    for item in acknowledged_items(&line) {
                        let key = (
                            item["work_item_id"].as_str().unwrap_or_default().to_owned(),
                            item["revision"].as_u64().unwrap_or(0),
                        );
                        let revision = key.1;
                        let first = call_began.entry(key.clone()).or_insert(began);
                        *first = (*first).min(began);
                        let known = acked_at.entry(key).or_insert(at);
                        *known = (*known).min(at);
                        let committed = committed_by.entry(revision).or_insert(at);
                        *committed = (*committed).min(at);
                        if let (Some(id), Some(fence), Some(until)) = (
                            item["work_item_id"].as_str(),
                            item["fence"].as_u64(),
                            item["lease_expires_at"]
                                .as_str()
                                .and_then(|t| t.parse::<coord_core::Timestamp>().ok()),
                        ) {
                            let latest = lease_of.entry((id.to_owned(), fence)).or_insert(i64::MIN);
                            *latest = (*latest).max(until.as_unix_micros());
                        }
                    }
                    check_ack(&line, &place, &status, &replayed, &mut problems);
                }
                _ => {}
            }
        }
    }
    check_lapses(&events, &committed_by, &lease_of, &mut problems);
    check_nothing_to_take(
        &events,
        &nothing_calls,
        &acked_at,
        &call_began,
        &has_dependencies,
        &mut problems,
    );
    if problems.is_empty() {
        let mut refusals: Vec<String> = refusals.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        refusals.sort();
        let count = |kind: EventKind| events.iter().filter(|e| e.event == kind).count();
        Ok(format!(
            "{acks} acknowledged operations, {} events ({} cancelled, {} retried, {} failed with \
             a dependency), {} items ({} archived); {} nothing_to_take answers checked; refused \
             operations: {}",
            events.len(),
            count(EventKind::Cancelled),
            count(EventKind::Retried),
            count(EventKind::DependencyFailed),
            place.len(),
            archived.len(),
            nothing_calls.len(),
            refusals.join(", ")
        ))
    } else {
        Err(problems)
    }
}

/// How far (µs) a store may act ahead of the machine's clock: PostgreSQL's
/// time is the server's, read a one-way trip late (never behind it).
const CLOCK_TOLERANCE_US: i64 = 250_000;

/// No lease is written down as lapsed before it ended by the machine's
/// clock: the change that wrote an `expired` event was acknowledged (to
/// someone) at a time no earlier than the deadline its holder was given.
/// A store that trusted a fast client's clock would take live work here.
fn check_lapses(
    events: &[Event],
    committed_by: &HashMap<u64, i64>,
    lease_of: &HashMap<(String, u64), i64>,
    problems: &mut Vec<String>,
) {
    for e in events.iter().filter(|e| e.event == EventKind::Expired) {
        let (Some(id), Some(fence), Some(revision)) = (&e.work_item_id, e.fence, e.revision) else {
            continue;
        };
        if let (Some(&until), Some(&committed)) = (
            lease_of.get(&(id.clone(), fence)),
            committed_by.get(&revision),
        ) && until > committed + CLOCK_TOLERANCE_US
        {
            problems.push(format!(
                "{id}'s lease (fence {fence}) was written down as lapsed by revision {revision}, \
                 acknowledged at {committed}, before the lease ended at {until} (µs since the \
                 epoch): its work could have two owners at once"
            ));
        }
    }
}

/// What replaying the event log found.
struct Replayed {
    holder: HashMap<String, (String, u64)>,
    created: HashSet<String>,
    logged: HashSet<(String, u64)>,
    /// Items an operator sent back to the queue at least once.
    retried: HashSet<String>,
}

/// Replays the log through the state machine.
fn replay(
    events: &[Event],
    order: Order,
    place: &HashMap<String, &'static str>,
    stored: &HashMap<String, String>,
    problems: &mut Vec<String>,
) -> Replayed {
    let mut holder: HashMap<String, (String, u64)> = HashMap::new();
    let mut exclusive: HashMap<String, String> = HashMap::new();
    let mut created: HashSet<String> = HashSet::new();
    let mut logged: HashSet<(String, u64)> = HashSet::new();
    let mut retried: HashSet<String> = HashSet::new();
    let mut state: HashMap<String, Status> = HashMap::new();
    let mut last_fence = 0;
    let mut item_fence: HashMap<String, u64> = HashMap::new();
    let mut type_fence: HashMap<String, u64> = HashMap::new();
    let mut last_revision = 0;
    for e in events {
        let Some(id) = e.work_item_id.clone() else {
            continue;
        };
        let revision = e.revision.unwrap_or(0);
        if order == Order::Global && revision < last_revision {
            problems.push(format!(
                "revision {revision} of {id} logged after revision {last_revision}"
            ));
        }
        last_revision = revision;
        logged.insert((id.clone(), revision));
        if e.event == EventKind::Retried {
            retried.insert(id.clone());
        }
        let before = state.get(&id).copied();
        if e.from != before || !legal(e.event, e.from, e.to) {
            problems.push(format!(
                "{id}: a {:?} event from {:?} to {:?} where the log had it {before:?}",
                e.event, e.from, e.to
            ));
        }
        if let Some(to) = e.to {
            state.insert(id.clone(), to);
        }
        let work_type = e.work_type.clone().unwrap_or_default();
        let is_exclusive = e.priority.is_some_and(|p| p >= Priority::High);
        match e.event {
            EventKind::Posted => {
                if !created.insert(id.clone()) {
                    problems.push(format!("{id} posted twice"));
                }
            }
            EventKind::Claimed => {
                if e.from.is_none() && !created.insert(id.clone()) {
                    problems.push(format!("{id} created twice"));
                }
                let fence = e.fence.unwrap_or(0);
                let previous = match order {
                    Order::Global => last_fence,
                    Order::PerItemAndWorkType => {
                        let of_item = item_fence.get(&id).copied().unwrap_or(0);
                        let of_type = if is_exclusive {
                            type_fence.get(&work_type).copied().unwrap_or(0)
                        } else {
                            0
                        };
                        of_item.max(of_type)
                    }
                };
                if fence <= previous {
                    problems.push(format!(
                        "fence {fence} of {id} does not exceed the previous fence {previous}"
                    ));
                }
                last_fence = last_fence.max(fence);
                item_fence.insert(id.clone(), fence);
                if is_exclusive {
                    type_fence.insert(work_type.clone(), fence);
                }
                let agent = e.agent.clone().unwrap_or_default();
                if let Some((other, f)) = holder.get(&id) {
                    problems.push(format!(
                        "{id} claimed by {agent} while {other} held it at fence {f}"
                    ));
                }
                holder.insert(id.clone(), (agent, fence));
                if is_exclusive {
                    if let Some(other) = exclusive.get(&work_type)
                        && *other != id
                    {
                        problems.push(format!(
                            "two live exclusive claims of {work_type}: {other} and {id}"
                        ));
                    }
                    exclusive.insert(work_type, id);
                }
            }
            EventKind::Progress => match holder.get(&id) {
                Some((agent, _)) if e.agent.as_ref() == Some(agent) => {}
                other => problems.push(format!(
                    "progress on {id} by {:?}, held by {other:?}",
                    e.agent
                )),
            },
            EventKind::Completed
            | EventKind::Failed
            | EventKind::Requeued
            | EventKind::Released
            | EventKind::Expired
            | EventKind::Cancelled
            | EventKind::DependencyFailed
            | EventKind::Retried => {
                if e.from == Some(Status::InProgress) && holder.remove(&id).is_none() {
                    problems.push(format!(
                        "{id} {:?} by {:?} while nobody held it",
                        e.event, e.agent
                    ));
                }
                if exclusive.get(&work_type) == Some(&id) {
                    exclusive.remove(&work_type);
                }
            }
            EventKind::LockBroken => {}
        }
    }
    // The log ends where the store is.
    for (id, replayed) in &state {
        if let Some(stored) = stored.get(id)
            && stored != replayed.as_str()
        {
            problems.push(format!(
                "{id} is {stored} in the {}, but the log ends with it {replayed}",
                place.get(id).copied().unwrap_or("store")
            ));
        }
    }
    Replayed {
        holder,
        created,
        logged,
        retried,
    }
}

/// The item records an acknowledgement carries.
fn acknowledged_items(line: &Value) -> Vec<&Value> {
    let result = &line["result"];
    match line["op"].as_str().unwrap_or_default() {
        "cleanup" => Vec::new(),
        "reap" => result["expired"].as_array().into_iter().flatten().collect(),
        "cancel" | "retry" | "cancel_type" => {
            result["changed"].as_array().into_iter().flatten().collect()
        }
        "archive_newest" => vec![&result["claimed"], &result["completed"]],
        _ => vec![result],
    }
}

/// An acknowledged action on an item must have started before the lease
/// its agent last held on it ended (the store decides after the action
/// starts, so a later start means the store accepted a lapsed lease).
/// Records the lease the acknowledgement itself gives.
fn check_lease(
    agent: &str,
    ack: &Value,
    start: Option<&Value>,
    deadline: &mut HashMap<String, i64>,
    problems: &mut Vec<String>,
) {
    let op = ack["op"].as_str().unwrap_or_default();
    let result = &ack["result"];
    let id = result["work_item_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if matches!(
        op,
        "heartbeat" | "progress" | "complete" | "fail" | "release"
    ) && let Some(start) = start.and_then(|s| s["at"].as_i64())
        && let Some(&held_until) = deadline.get(&id)
        && start >= held_until
    {
        problems.push(format!(
            "{agent}'s {op} of {id} was acknowledged though it started at {start}, after the \
             lease it held ended at {held_until} (µs since the epoch)"
        ));
    }
    if matches!(op, "claim" | "next" | "heartbeat" | "progress")
        && let Some(until) = result["lease_expires_at"]
            .as_str()
            .and_then(|t| t.parse::<coord_core::Timestamp>().ok())
    {
        deadline.insert(id, until.as_unix_micros());
    }
}

/// No `next` said `nothing_to_take` while an item it could take was surely
/// pending for the whole call (see the module docs for "surely").
fn check_nothing_to_take(
    events: &[Event],
    calls: &[(String, i64, i64)],
    acked_at: &HashMap<(String, u64), i64>,
    call_began: &HashMap<(String, u64), i64>,
    has_dependencies: &HashSet<String>,
    problems: &mut Vec<String>,
) {
    // Each item's events, in log order: when decided, and what they left.
    let mut timeline: HashMap<&str, Vec<&Event>> = HashMap::new();
    for e in events {
        if let Some(id) = &e.work_item_id {
            timeline.entry(id).or_default().push(e);
        }
    }
    let takable = |e: &Event| {
        e.priority.is_some_and(|p| p <= Priority::Medium)
            && !has_dependencies.contains(e.work_item_id.as_deref().unwrap_or_default())
    };
    for (agent, start, end) in calls {
        for (id, history) in &timeline {
            let at = |e: &Event| e.time.as_unix_micros();
            // The last change decided before the call began...
            let Some(i) = history.iter().rposition(|e| at(e) < *start) else {
                continue;
            };
            let made = history[i];
            let acknowledged = acked_at
                .get(&((*id).to_owned(), made.revision.unwrap_or(0)))
                .is_some_and(|ack| ack < start);
            // ...left it pending, committed before the call began, and the
            // next change was decided after the call ended, not acknowledged
            // before, and not made by a call that began before it ended (the
            // log's times are the store's clock, on PostgreSQL the client's
            // estimate of the server's; the calls' are the agents': only an
            // acknowledgement or a call's start orders them for sure).
            let still = history.get(i + 1).is_none_or(|next| {
                let key = ((*id).to_owned(), next.revision.unwrap_or(0));
                at(next) > *end
                    && acked_at.get(&key).is_none_or(|ack| ack > end)
                    && call_began.get(&key).is_none_or(|began| began > end)
            });
            if made.to == Some(Status::Pending) && acknowledged && still && takable(made) {
                problems.push(format!(
                    "{agent}'s next said nothing_to_take between {start} and {end} while {id} \
                     ({:?}, no dependencies) was pending and ready throughout",
                    made.priority
                ));
            }
        }
    }
}

fn check_ack(
    line: &Value,
    place: &HashMap<String, &'static str>,
    status: &HashMap<String, String>,
    replayed: &Replayed,
    problems: &mut Vec<String>,
) {
    let logged = &replayed.logged;
    let op = line["op"].as_str().unwrap_or_default();
    let result = &line["result"];
    let archived = match op {
        "cleanup" => result["archived"].as_array(),
        "archive_newest" => result["archived"].as_array(),
        _ => None,
    };
    for id in archived.into_iter().flatten() {
        let id = id.as_str().unwrap_or_default();
        if place.get(id) != Some(&"archive") {
            problems.push(format!(
                "acknowledged archiving of {id}, but it is not in the archive"
            ));
        }
    }
    for item in acknowledged_items(line) {
        let id = item["work_item_id"].as_str().unwrap_or_default();
        if !place.contains_key(id) {
            problems.push(format!(
                "acknowledged {op} of {id}, which is in neither file"
            ));
            continue;
        }
        let revision = item["revision"].as_u64().unwrap_or(0);
        if op != "heartbeat" && !logged.contains(&(id.to_owned(), revision)) {
            problems.push(format!(
                "acknowledged {op} of {id} at revision {revision} is missing from the event log"
            ));
        }
        let final_status = status.get(id).map(String::as_str);
        match item["status"].as_str() {
            // Only an operator's retry brings an item back from its end.
            Some("failed" | "expired" | "cancelled") if replayed.retried.contains(id) => {}
            Some(s @ ("completed" | "failed" | "expired" | "cancelled"))
                if final_status != Some(s) =>
            {
                problems.push(format!(
                    "acknowledged {op} left {id} {s}, but it is now {final_status:?}"
                ));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event of `id` at `micros` (the store's clock) leaving it `to`.
    fn event(id: &str, kind: &str, to: &str, micros: i64, revision: u64) -> Event {
        let time = coord_core::Timestamp::from_unix_nanos(i128::from(micros) * 1000).unwrap();
        serde_json::from_value(serde_json::json!({
            "time": time, "agent": "a", "work_item_id": id, "from": null, "to": to,
            "fence": null, "event": kind, "revision": revision, "priority": "low",
        }))
        .unwrap()
    }

    fn problems(claim_began: i64, claim_acked_at: i64) -> Vec<String> {
        // Pending from t=10 (acknowledged at 9); taken by a change the
        // store stamped 40, made by a call that began at `claim_began` and
        // heard back at `claim_acked_at`.
        let events = [
            event("w", "posted", "pending", 10, 1),
            event("w", "claimed", "in_progress", 40, 2),
        ];
        let acked = HashMap::from([
            (("w".to_owned(), 1), 9),
            (("w".to_owned(), 2), claim_acked_at),
        ]);
        let began = HashMap::from([(("w".to_owned(), 1), 8), (("w".to_owned(), 2), claim_began)]);
        let calls = [("b".to_owned(), 25, 35)];
        let mut found = Vec::new();
        check_nothing_to_take(&events, &calls, &acked, &began, &HashSet::new(), &mut found);
        found
    }

    #[test]
    fn nothing_to_take_is_a_violation_only_while_the_item_was_surely_pending() {
        assert_eq!(
            problems(38, 41).len(),
            1,
            "taken after the call: it was there"
        );
        // The store's clock ran ahead of the agents': the take was heard
        // of before the call began, so the item was not surely pending.
        assert!(problems(15, 20).is_empty());
        // The take's call began before the call ended: whatever time the
        // store gave it, it may have been decided first.
        assert!(problems(34, 41).is_empty());
    }
}
