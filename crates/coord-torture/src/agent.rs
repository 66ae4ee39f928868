//! One agent: random operations through the library (an operator's cancel
//! and retry among them), each logged before it starts and when it is
//! acknowledged, until it is killed.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use coord_core::operate::{Match, OperateRequest, Operation, Target};
use coord_core::{
    Action, Actor, Claim, ClaimRequest, CoordError, NextRequest, PostRequest, Priority, Store,
};
use serde_json::{Value, json};

const WORK_TYPES: [&str; 4] = ["build", "test", "deploy", "docs"];

struct Held {
    id: String,
    fence: Option<u64>,
}

pub fn run(store: &dyn Store, agent: &str, seed: u64, log: &Path) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("the agent log");
    let mut held: Vec<Held> = Vec::new();
    let mut posted: Vec<String> = Vec::new();
    for seq in 0u64.. {
        let priority = Priority::ALL[rng.usize(..4)];
        let work_type = WORK_TYPES[rng.usize(..WORK_TYPES.len())];
        let lease = Duration::from_millis(rng.u64(300..1500));
        let roll = rng.u32(..106);
        // Acting on an item needs one; without, take work instead.
        let pick = (!held.is_empty()).then(|| rng.usize(..held.len()));
        let (op, detail) = match (roll, pick) {
            (0..20, _) | (55..95, None) => (
                "claim",
                json!({"work_type": work_type, "priority": priority}),
            ),
            (20..35, _) => (
                "post",
                json!({"work_type": work_type, "priority": priority}),
            ),
            (35..55, _) => ("next", json!({})),
            (55..63, Some(_)) => ("heartbeat", json!({})),
            (63..70, Some(_)) => ("progress", json!({})),
            (70..82, Some(_)) => ("complete", json!({})),
            (82..90, Some(_)) => ("fail", json!({"requeue": rng.bool()})),
            (90..95, Some(_)) => ("release", json!({})),
            (95..97, _) => ("cleanup", json!({})),
            // Claim, complete and archive at once: the item archived then
            // holds the highest fence, which the store must still never
            // hand out again.
            (97..98, _) => ("archive_newest", json!({"work_type": work_type})),
            // An operator's: cancel (sometimes under its owner) or retry
            // an item this agent posted or holds, or cancel a work type's
            // pending items at once.
            (100..102, _) => ("cancel", json!({"force": rng.bool()})),
            (102..104, _) => ("retry", json!({"reset_attempts": rng.bool()})),
            (104..106, _) => ("cancel_type", json!({"work_type": work_type})),
            _ => ("reap", json!({})),
        };
        let target = pick.filter(|_| {
            matches!(
                op,
                "heartbeat" | "progress" | "complete" | "fail" | "release"
            )
        });
        let mut item = target.map(|i| held[i].id.clone());
        if matches!(op, "cancel" | "retry") {
            let known: Vec<&String> = posted.iter().chain(held.iter().map(|h| &h.id)).collect();
            item = (!known.is_empty()).then(|| known[rng.usize(..known.len())].clone());
        }
        log_line(
            &mut out,
            &json!({"seq": seq, "phase": "start", "at": micros_now(), "op": op, "item": item, "detail": detail}),
        );
        let actor_fence = target.and_then(|i| held[i].fence);
        let act = |action: Action| {
            let id = item.as_deref().expect("acting ops have an item");
            store.act(id, &action, &Actor::new(agent).fence(actor_fence))
        };
        let result: Result<Value, CoordError> = match op {
            "claim" => store
                .claim(
                    &ClaimRequest::new(agent, work_type)
                        .priority(priority)
                        .lease(lease),
                )
                .map(|c| claim_json(&c)),
            "post" => {
                let mut req = PostRequest::new(agent, work_type).priority(priority);
                if rng.u8(..4) == 0
                    && let Some(dep) = posted.last()
                {
                    req = req.after([dep.clone()]);
                }
                store.post(&req).map(|c| claim_json(&c))
            }
            "next" => store
                .next(&NextRequest::new(agent).lease(lease))
                .map(|c| claim_json(&c)),
            "heartbeat" => act(Action::Heartbeat { lease: None }).map(|c| claim_json(&c)),
            "progress" => act(Action::Progress {
                percent: rng.i64(0..=100),
            })
            .map(|c| claim_json(&c)),
            "complete" => act(Action::Complete {
                result: Some(format!("done by {agent}")),
            })
            .map(|c| claim_json(&c)),
            "fail" => act(Action::Fail {
                reason: Some("torture".into()),
                requeue: detail["requeue"].as_bool().unwrap_or(false),
                retry_after: None,
            })
            .map(|c| claim_json(&c)),
            "release" => act(Action::Release).map(|c| claim_json(&c)),
            "cleanup" => store
                .cleanup(agent, Duration::from_millis(rng.u64(0..2000)))
                .map(|ids| json!({"archived": ids})),
            "archive_newest" => archive_newest(store, agent, work_type),
            "cancel" | "retry" | "cancel_type" => {
                let operation = match op {
                    "retry" => Operation::Retry {
                        reset_attempts: detail["reset_attempts"].as_bool().unwrap_or(false),
                    },
                    _ => Operation::Cancel {
                        reason: Some("torture".into()),
                        force: detail["force"].as_bool().unwrap_or(false),
                    },
                };
                let target = match &item {
                    Some(id) if op != "cancel_type" => Target::Item(id.clone()),
                    _ => Target::Matching(Match {
                        work_type: Some(work_type.to_owned()),
                        ..Match::default()
                    }),
                };
                store
                    .operate(&OperateRequest {
                        agent_id: agent.to_owned(),
                        operation,
                        target,
                    })
                    .map(|items| json!({"changed": items.iter().map(claim_json).collect::<Vec<_>>()}))
            }
            _ => store
                .reap(agent)
                .map(|items| json!({"expired": items.iter().map(claim_json).collect::<Vec<_>>()})),
        };
        match &result {
            Ok(value) => {
                log_line(
                    &mut out,
                    &json!({"seq": seq, "phase": "ack", "at": micros_now(), "op": op, "result": value}),
                );
                match op {
                    "claim" | "next" => held.push(Held {
                        id: value["work_item_id"].as_str().expect("an id").to_owned(),
                        fence: value["fence"].as_u64(),
                    }),
                    "post" => {
                        posted.push(value["work_item_id"].as_str().expect("an id").to_owned())
                    }
                    "complete" | "fail" | "release" => {
                        held.retain(|h| Some(&h.id) != item.as_ref())
                    }
                    // What it cancelled under itself it holds no more.
                    "cancel" | "cancel_type" => {
                        let gone: Vec<&str> = value["changed"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|c| c["work_item_id"].as_str())
                            .collect();
                        held.retain(|h| !gone.contains(&h.id.as_str()));
                    }
                    _ => {}
                }
            }
            Err(e) => {
                log_line(
                    &mut out,
                    &json!({"seq": seq, "phase": "error", "at": micros_now(), "op": op, "kind": e.kind().as_str(), "message": e.to_string()}),
                );
                if target.is_some() {
                    held.retain(|h| Some(&h.id) != item.as_ref());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(rng.u64(0..4)));
    }
}

/// Claims low-priority work, completes it and archives every finished
/// item at once; acknowledges the three steps' results.
fn archive_newest(store: &dyn Store, agent: &str, work_type: &str) -> Result<Value, CoordError> {
    let claim = store.claim(&ClaimRequest::new(agent, work_type).priority(Priority::Low))?;
    let done = store.act(
        &claim.work_item_id,
        &Action::Complete { result: None },
        &Actor::new(agent).fence(claim.fence),
    )?;
    let archived = store.cleanup(agent, Duration::ZERO)?;
    Ok(json!({"claimed": claim_json(&claim), "completed": claim_json(&done), "archived": archived}))
}

/// The wall clock in microseconds since the Unix epoch: when an operation
/// started and was acknowledged, for the checker to compare with leases.
fn micros_now() -> i64 {
    coord_core::Timestamp::now().as_unix_micros()
}

fn claim_json(claim: &Claim) -> Value {
    serde_json::to_value(claim).expect("a claim serialises")
}

fn log_line(out: &mut std::fs::File, value: &Value) {
    let mut line = serde_json::to_vec(value).expect("JSON");
    line.push(b'\n');
    // One write per line: a kill leaves at most one torn last line.
    out.write_all(&line).expect("the agent log is writable");
}
