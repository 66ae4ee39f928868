//! The checker: after the run, settle the store like any writer would,
//! then verify the store, the event log and every acknowledgement.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;

use coord_core::{Claim, EventKind, Filter, Priority, Status, Store};
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

/// Checks the store after the run. `settle` is a change any writer would
/// make (it settles what killed writers left half-done); `archived` reads
/// the archive.
pub fn check(
    store: &dyn Store,
    archived: impl FnOnce() -> Result<Vec<Value>, coord_core::CoordError>,
    order: Order,
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
    for c in &claims {
        if place.insert(c.work_item_id.clone(), "claims").is_some() {
            problems.push(format!("{} is twice in the claims file", c.work_item_id));
        }
        status.insert(c.work_item_id.clone(), c.status.as_str().to_owned());
    }
    for a in &archived {
        let id = a["work_item_id"].as_str().unwrap_or_default().to_owned();
        if let Some(other) = place.insert(id.clone(), "archive") {
            problems.push(format!("{id} is in the archive and in the {other}"));
        }
        status.insert(id, a["status"].as_str().unwrap_or_default().to_owned());
    }

    // Replay the event log.
    let mut holder: HashMap<String, (String, u64)> = HashMap::new();
    let mut exclusive: HashMap<String, String> = HashMap::new();
    let mut created: HashSet<String> = HashSet::new();
    let mut logged: HashSet<(String, u64)> = HashSet::new();
    let mut last_fence = 0;
    let mut item_fence: HashMap<String, u64> = HashMap::new();
    let mut type_fence: HashMap<String, u64> = HashMap::new();
    let mut last_revision = 0;
    for e in &events {
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
            | EventKind::Expired => {
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
    for c in claims.iter().filter(|c| c.status == Status::InProgress) {
        let expected = (c.agent_id.clone().unwrap_or_default(), c.fence.unwrap_or(0));
        if holder.get(&c.work_item_id) != Some(&expected) {
            problems.push(format!(
                "{} is held by {expected:?} but the log says {:?}",
                c.work_item_id,
                holder.get(&c.work_item_id)
            ));
        }
    }
    for id in &created {
        if !place.contains_key(id) {
            problems.push(format!(
                "{id} was created but is in neither the claims file nor the archive"
            ));
        }
    }

    // Every acknowledgement is in the store and the log.
    let mut acks = 0;
    let mut errors: HashMap<String, usize> = HashMap::new();
    for entry in fs::read_dir(logs).map_err(|e| vec![format!("cannot list the agent logs: {e}")])? {
        let path = entry.map_err(|e| vec![e.to_string()])?.path();
        if path.extension().is_none_or(|x| x != "jsonl") {
            continue;
        }
        for line in json_lines(&path) {
            match line["phase"].as_str() {
                Some("error") => {
                    *errors
                        .entry(line["kind"].as_str().unwrap_or("?").to_owned())
                        .or_default() += 1
                }
                Some("ack") => {
                    acks += 1;
                    check_ack(&line, &place, &status, &logged, &mut problems);
                }
                _ => {}
            }
        }
    }
    if problems.is_empty() {
        let mut errors: Vec<String> = errors.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        errors.sort();
        Ok(format!(
            "{acks} acknowledged operations, {} events, {} items ({} archived); refused operations: {}",
            events.len(),
            place.len(),
            archived.len(),
            errors.join(", ")
        ))
    } else {
        Err(problems)
    }
}

fn check_ack(
    line: &Value,
    place: &HashMap<String, &'static str>,
    status: &HashMap<String, String>,
    logged: &HashSet<(String, u64)>,
    problems: &mut Vec<String>,
) {
    let op = line["op"].as_str().unwrap_or_default();
    let result = &line["result"];
    let mut items: Vec<&Value> = Vec::new();
    match op {
        "cleanup" => {
            for id in result["archived"].as_array().into_iter().flatten() {
                let id = id.as_str().unwrap_or_default();
                if place.get(id) != Some(&"archive") {
                    problems.push(format!(
                        "acknowledged archiving of {id}, but it is not in the archive"
                    ));
                }
            }
        }
        "reap" => items.extend(result["expired"].as_array().into_iter().flatten()),
        _ => items.push(result),
    }
    for item in items {
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
            Some(s @ ("completed" | "failed" | "expired")) if final_status != Some(s) => {
                problems.push(format!(
                    "acknowledged {op} left {id} {s}, but it is now {final_status:?}"
                ));
            }
            _ => {}
        }
    }
}
