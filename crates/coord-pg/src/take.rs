//! `next` in one statement: what [`transition::take`] does to a pending
//! item, as a patch the database applies to whichever item it picks.
//!
//! Taking a pending item sets some fields to values that depend only on
//! the request and the time, clears others, and carries the rest. So the
//! transition's effect can be learnt from the transition itself: take two
//! items that differ in every field and compare each with what `take` made
//! of it. A field that came out the same for both was set; one that came
//! out missing for both was cleared; one that kept each item's own value
//! was carried. Anything else means `take` now depends on the item in a
//! way no patch can say, and the store takes the path that reads the item
//! and runs `take` itself. The rules stay in one place: Rust.
//!
//! Learning the shape (which fields are set, cleared, carried) costs about
//! 50 µs, so a store learns it once per agent and lease ([`TakeShape`]);
//! each `next` then runs `take` on one template for the values. That the
//! shape does not change with the time is the one thing assumed; the
//! property test below checks it at later times on any pending item.

use std::collections::BTreeSet;

use coord_core::transition;
use coord_core::{Claim, NextRequest, OnDependencyFailure, Origin, Priority, Status, Timestamp};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::rows::row_of;

/// The fence and revision, which the statement draws itself.
const DRAWN: [&str; 2] = ["fence", "revision"];

/// The event's fields the statement copies from the item's row.
const EVENT_FROM_ITEM: [&str; 3] = ["work_item_id", "work_type", "priority"];

/// The columns of `coord_claims` the statement sets, and those it leaves.
const SET_COLUMNS: [&str; 5] = [
    "status",
    "agent_id",
    "lease_deadline",
    "retry_at",
    "finished_at",
];
const KEPT_COLUMNS: [&str; 4] = ["id", "work_type", "priority", "posted_at"];

/// Which fields taking a pending item sets, clears and carries, learnt
/// from `take` for one agent and lease.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TakeShape {
    /// Fields removed from the item's document...
    clear: Vec<String>,
    /// ...and fields then set in it (before the fence and revision).
    set: Vec<String>,
    /// The event's fields but those copied from the item and the drawn
    /// fence and revision.
    event: Vec<String>,
}

/// What taking any pending item does, for one request at one time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TakePatch {
    /// The set columns' new values, as `jsonb_to_record` reads them.
    pub columns: Value,
    pub clear: Vec<String>,
    pub set: Map<String, Value>,
    pub event: Map<String, Value>,
}

fn object(value: &impl Serialize) -> Map<String, Value> {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => map,
        _ => unreachable!("claims, events and rows serialise as JSON objects"),
    }
}

impl TakeShape {
    /// Learns what `transition::take` does for `request`, or `None` when it
    /// cannot be written as a patch (or refuses the items).
    pub(crate) fn learn(request: &NextRequest, now: Timestamp) -> Option<TakeShape> {
        let items = [template(0), template(1)];
        let taken = [
            transition::take(&items[0], request, 0, now).ok()?,
            transition::take(&items[1], request, 0, now).ok()?,
        ];
        let before = items.each_ref().map(object);
        let after = taken.each_ref().map(|c| object(&c.claim));

        let (mut set, mut clear) = (Vec::new(), Vec::new());
        let keys: BTreeSet<&String> = before.iter().chain(&after).flat_map(Map::keys).collect();
        for key in keys.into_iter().filter(|k| !DRAWN.contains(&k.as_str())) {
            if (0..2).all(|i| after[i].get(key) == before[i].get(key)) {
                continue; // carried
            }
            match (after[0].get(key), after[1].get(key)) {
                (Some(a), Some(b)) if a == b => set.push(key.clone()),
                (None, None) => clear.push(key.clone()),
                _ => return None,
            }
        }

        let rows_before = items.each_ref().map(|c| row_of(c).columns());
        let rows_after = taken.each_ref().map(|c| row_of(&c.claim).columns());
        if SET_COLUMNS
            .iter()
            .any(|c| rows_after[0].get(*c) != rows_after[1].get(*c))
            || KEPT_COLUMNS
                .iter()
                .any(|c| (0..2).any(|i| rows_after[i].get(*c) != rows_before[i].get(*c)))
        {
            return None;
        }

        let events = [taken[0].event.as_ref()?, taken[1].event.as_ref()?].map(object);
        let mut event = Vec::new();
        let keys: BTreeSet<&String> = events.iter().flat_map(Map::keys).collect();
        for key in keys.into_iter().filter(|k| !DRAWN.contains(&k.as_str())) {
            if EVENT_FROM_ITEM.contains(&key.as_str()) {
                if (0..2).any(|i| events[i].get(key) != before[i].get(key)) {
                    return None;
                }
                continue;
            }
            match (events[0].get(key), events[1].get(key)) {
                (Some(a), Some(b)) if a == b => event.push(key.clone()),
                _ => return None,
            }
        }
        Some(TakeShape { clear, set, event })
    }

    /// The patch for `request` at `now`: `take` run on one template gives
    /// the values. `request` must have the agent and lease the shape was
    /// learnt for.
    pub(crate) fn patch(&self, request: &NextRequest, now: Timestamp) -> Option<TakePatch> {
        let taken = transition::take(&template(0), request, 0, now).ok()?;
        let (claim, event) = (object(&taken.claim), object(taken.event.as_ref()?));
        let pick = |map: &Map<String, Value>, keys: &[String]| -> Option<Map<String, Value>> {
            keys.iter()
                .map(|k| Some((k.clone(), map.get(k)?.clone())))
                .collect()
        };
        let columns = row_of(&taken.claim).columns();
        Some(TakePatch {
            columns: Value::Object(
                SET_COLUMNS
                    .iter()
                    .map(|c| ((*c).to_owned(), columns[*c].clone()))
                    .collect(),
            ),
            clear: self.clear.clone(),
            set: pick(&claim, &self.set)?,
            event: pick(&event, &self.event)?,
        })
    }
}

/// A pending item with every field filled; `0` and `1` differ in every
/// field but the status. The struct literal names every field, so a new
/// one does not compile until it is given two different values here.
fn template(which: u8) -> Claim {
    let i = u64::from(which);
    let at = |secs: i64| {
        Timestamp::from_unix_nanos(i128::from(secs + 1000 * i64::from(which)) * 1_000_000_000)
            .expect("a time in range")
    };
    let text = |name: &str| format!("{name}_{which}");
    let mut extra = Map::new();
    extra.insert("team".to_owned(), json!(text("team")));
    Claim {
        work_item_id: text("work"),
        agent_id: Some(text("agent")),
        work_type: text("type"),
        description: text("description"),
        priority: [Priority::Medium, Priority::Low][usize::from(which)],
        claimed_at: Some(at(1)),
        status: Status::Pending,
        coordination_id: Some(text("coord")),
        origin: Some([Origin::Queue, Origin::Claim][usize::from(which)]),
        fence: Some(10 + i),
        revision: Some(20 + i),
        lease_expires_at: Some(at(2)),
        lease_ms: Some(30_000 + i),
        posted_at: Some(at(3)),
        posted_by: Some(text("poster")),
        depends_on: vec![text("dependency")],
        attempt: Some(2 + u32::from(which)),
        max_attempts: Some(5 + u32::from(which)),
        retry_at: Some(at(4)),
        progress: Some(10 + which),
        last_update: Some(at(5)),
        completed_at: Some(at(6)),
        failed_at: Some(at(7)),
        expired_at: Some(at(8)),
        cancelled_at: Some(at(9)),
        on_dependency_failure: Some(
            [OnDependencyFailure::Fail, OnDependencyFailure::Wait][usize::from(which)],
        ),
        result: Some(text("result")),
        reason: Some(text("reason")),
        extra,
    }
}

/// `patch` applied to `item` as the statement applies it, with `fence` and
/// `revision` drawn; for tests.
#[cfg(test)]
fn apply(patch: &TakePatch, item: &Claim, fence: u64, revision: u64) -> (Value, Value) {
    let mut doc = object(item);
    for key in &patch.clear {
        doc.remove(key);
    }
    doc.extend(patch.set.clone());
    doc.insert("fence".into(), json!(fence));
    doc.insert("revision".into(), json!(revision));
    let mut event = patch.event.clone();
    for key in EVENT_FROM_ITEM {
        event.insert(key.into(), doc[key].clone());
    }
    event.insert("fence".into(), json!(fence));
    event.insert("revision".into(), json!(revision));
    (Value::Object(doc), Value::Object(event))
}

#[cfg(test)]
mod tests {
    use super::*;
    use coord_core::{Decision, decide};
    use proptest::prelude::*;
    use std::time::Duration;

    fn request() -> NextRequest {
        let mut r = NextRequest::new("worker_1");
        r.lease = Duration::from_secs(90);
        r
    }

    fn now() -> Timestamp {
        "2026-11-26T12:00:00.123456Z".parse().unwrap()
    }

    #[test]
    fn the_templates_differ_in_every_field_but_the_status() {
        let (a, b) = (object(&template(0)), object(&template(1)));
        let claim_fields = a.len() - 1; // less `extra`'s one key
        assert_eq!(a.len(), b.len());
        assert!(claim_fields >= 26, "every field is filled: {a:?}");
        for (key, value) in &a {
            if key != "status" {
                assert_ne!(Some(value), b.get(key), "{key}");
            }
        }
    }

    #[test]
    fn take_is_a_patch_that_clears_the_last_tenures_outcome() {
        let shape = TakeShape::learn(&request(), now()).expect("take is a patch");
        let patch = shape.patch(&request(), now()).unwrap();
        assert_eq!(patch.clear, ["progress", "reason", "result", "retry_at"]);
        assert_eq!(patch.set["status"], "in_progress");
        assert_eq!(patch.set["agent_id"], "worker_1");
        assert_eq!(patch.set["lease_ms"], 90_000);
        assert!(!patch.set.contains_key("fence"));
        assert_eq!(patch.columns["status"], "in_progress");
        assert_eq!(patch.event["event"], "claimed");
        assert_eq!(patch.event["from"], "pending");
    }

    fn field_choice() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(0u8..3, 40)
    }

    proptest! {
        /// On any pending item (each field from one template, the other, or
        /// absent), at any later time, the patch of a shape learnt once does
        /// exactly what the decision layer's `take` does, event and columns
        /// included.
        #[test]
        fn the_patch_does_what_take_does_on_any_pending_item(
            choice in field_choice(),
            later_ms in 0i64..10_000_000,
        ) {
            let (a, b) = (object(&template(0)), object(&template(1)));
            let required = ["work_item_id", "work_type", "priority", "status"];
            let mut doc = Map::new();
            for (n, (key, value)) in a.iter().enumerate() {
                match choice[n % choice.len()] {
                    0 => { doc.insert(key.clone(), value.clone()); }
                    1 => { doc.insert(key.clone(), b[key].clone()); }
                    _ if required.contains(&key.as_str()) => {
                        doc.insert(key.clone(), value.clone());
                    }
                    _ => {}
                }
            }
            let item: Claim = serde_json::from_value(Value::Object(doc)).unwrap();
            let then = Timestamp::from_unix_nanos(
                now().as_unix_nanos() + i128::from(later_ms) * 1_000_000,
            ).unwrap();
            let patch = TakeShape::learn(&request(), now()).unwrap().patch(&request(), then).unwrap();
            let mut decision = Decision::begin(88, then, [], None);
            let taken = decide::take(&mut decision, &item, &request(), 77).unwrap();
            let (doc, event) = apply(&patch, &item, 77, 88);
            prop_assert_eq!(doc, serde_json::to_value(&taken).unwrap());
            prop_assert_eq!(event, serde_json::to_value(&decision.events()[0]).unwrap());
            prop_assert_eq!(
                Value::Object(SET_COLUMNS.iter()
                    .map(|c| (c.to_string(), row_of(&taken).columns()[*c].clone()))
                    .collect()),
                patch.columns
            );
        }
    }
}
