//! Every change to a store, decided once for every store.
//!
//! A store reads what a change needs (under its lock, or in its
//! transaction), hands it to the function here for that change, and makes
//! the [`Decision`] it gets back atomic and durable. Nothing here does I/O
//! or reads a clock: the time of the change, its revision and its fence
//! come in with what the store read, so every rule is tested without a
//! store (and the stores, through the conformance suite, against the same
//! rules).
//!
//! | change | what the store reads for it |
//! |---|---|
//! | [`claim`] | the lapsed leases; if the claim may exclude others ([`crate::needs_exclusion`]), the live claims of its work type |
//! | [`post`] | the lapsed leases; which of its dependencies exist |
//! | [`choose_next`] then [`take`] | the lapsed leases; the pending candidates, best first; their dependencies and the live claims of their exclusive work types; then, once the chosen item is locked, a fence |
//! | [`act`] | the item; the lapsed leases but the item's own |
//! | [`reap`] | the lapsed leases |
//! | [`cleanup`] | the lapsed leases; the finished items [`Sweep::finished_before`] names; which items unfinished ones depend on |
//! | [`operate`] (cancel, retry) | the lapsed leases; the item by id, or the items of the statuses it acts on |
//!
//! Every change starts with [`Decision::begin`], which writes down every
//! lapsed lease it is given, and ends with [`cascade`], which fails the
//! pending items that depend on an item it ended without completing (the
//! store reads them when asked): those rules live here, and only here.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::error::CoordError;
use crate::event::Event;
use crate::model::{Claim, ClaimHead, ClaimRequest, NextRequest, PostRequest, Status};
use crate::operate::{OperateRequest, Target};
use crate::policy::{ConflictPolicy, Slot, find_conflict};
use crate::time::Timestamp;
use crate::transition::{self, Action, Actor, Change, NewIds};

/// One item a change writes: its new state, and its state as the store read
/// it (`None` for a new item), so a store can write only what changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub claim: Claim,
    pub before: Option<Claim>,
}

impl Written {
    pub fn is_new(&self) -> bool {
        self.before.is_none()
    }
}

/// A change in the making, then decided: the items it writes (each once, in
/// the order first changed), its events in order, and the items it moves
/// to the archive, all of one store revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    revision: u64,
    now: Timestamp,
    written: Vec<Written>,
    /// Where each written item is in `written`.
    index: HashMap<String, usize>,
    events: Vec<Event>,
    archived: Vec<String>,
}

impl Decision {
    /// Starts a change that commits as store `revision` at `now`, writing
    /// down every lapsed lease among `lapsed` (items the store read as in
    /// progress; those whose lease holds are left alone), but `except`'s,
    /// the item an action acts on as it stands.
    pub fn begin(
        revision: u64,
        now: Timestamp,
        lapsed: impl IntoIterator<Item = Claim>,
        except: Option<&str>,
    ) -> Decision {
        let mut decision = Decision {
            revision,
            now,
            written: Vec::new(),
            index: HashMap::new(),
            events: Vec::new(),
            archived: Vec::new(),
        };
        decision.write_down(lapsed, except);
        decision
    }

    /// Writes down the lapsed leases among items a later read of the same
    /// change found in progress (the live claims of a work type it locked
    /// only then): as [`Decision::begin`] does.
    pub fn write_down_lapsed(&mut self, more: impl IntoIterator<Item = Claim>) {
        self.write_down(more, None);
    }

    fn write_down(&mut self, lapsed: impl IntoIterator<Item = Claim>, except: Option<&str>) {
        for claim in lapsed {
            if Some(claim.work_item_id.as_str()) == except {
                continue;
            }
            let current = self.current(&claim);
            if let Some(change) = transition::expire(&current, self.now) {
                self.record(change, claim);
            }
        }
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The time of the change.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// `read` as this change has left it so far.
    pub fn current(&self, read: &Claim) -> Claim {
        match self.index.get(&read.work_item_id) {
            Some(&i) => self.written[i].claim.clone(),
            None => read.clone(),
        }
    }

    /// Whether this change writes the item `work_item_id`.
    pub fn writes(&self, work_item_id: &str) -> bool {
        self.index.contains_key(work_item_id)
    }

    /// Records `change` of the item the store read as `read` (its first
    /// state is kept as `before`), stamped with this change's revision.
    fn record(&mut self, change: Change, read: Claim) -> Claim {
        self.record_item(change, Some(read))
    }

    /// Records a change of a new item.
    fn record_new(&mut self, change: Change) -> Claim {
        self.record_item(change, None)
    }

    fn record_item(&mut self, change: Change, before: Option<Claim>) -> Claim {
        let change = change.at_revision(self.revision);
        let id = change.claim.work_item_id.clone();
        match self.index.get(&id) {
            Some(&i) => self.written[i].claim = change.claim.clone(),
            None => {
                self.index.insert(id, self.written.len());
                self.written.push(Written {
                    claim: change.claim.clone(),
                    before,
                });
            }
        }
        self.events.extend(change.event);
        change.claim
    }

    /// The items this change writes, in the order first changed.
    pub fn written(&self) -> &[Written] {
        &self.written
    }

    /// The items this change put back on the queue (a lapsed lease of a
    /// queue item with attempts left): `next` may take them too.
    pub fn requeued(&self) -> impl Iterator<Item = &Claim> {
        self.written
            .iter()
            .map(|w| &w.claim)
            .filter(|c| c.status == Status::Pending)
    }

    /// The lapsed leases this change wrote down, as they now stand.
    pub fn expired(&self) -> Vec<Claim> {
        self.written
            .iter()
            .filter(|w| {
                w.before
                    .as_ref()
                    .is_some_and(|b| b.status == Status::InProgress)
            })
            .filter(|w| w.claim.status != Status::InProgress)
            .map(|w| w.claim.clone())
            .collect()
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The items this change moves to the archive.
    pub fn archived(&self) -> &[String] {
        &self.archived
    }

    /// Whether the change writes nothing at all.
    pub fn is_empty(&self) -> bool {
        self.written.is_empty() && self.events.is_empty() && self.archived.is_empty()
    }

    /// The written items and the events, to hand to the store's writes.
    pub fn into_parts(self) -> (Vec<Written>, Vec<Event>, Vec<String>) {
        (self.written, self.events, self.archived)
    }
}

/// Claims `request` on the spot, unless a live claim in `live` conflicts
/// with it under `policy`: the store passes the live claims of the work
/// type (a claim that cannot exclude anyone needs none).
pub fn claim<'h>(
    decision: &mut Decision,
    request: &ClaimRequest,
    live: impl IntoIterator<Item = &'h ClaimHead>,
    policy: &dyn ConflictPolicy,
    ids: NewIds,
    fence: u64,
) -> Result<Claim, CoordError> {
    let slot = Slot {
        work_type: &request.work_type,
        priority: request.priority,
    };
    // Work that conflicts with nothing need not look at any claim.
    if !policy.never_conflicts(request.priority)
        && let Some(holder) = find_conflict(policy, slot, live, decision.now)
    {
        return Err(CoordError::Conflict {
            work_type: request.work_type.clone(),
            conflicting_work_item_id: holder.work_item_id.clone(),
        });
    }
    Ok(decision.record_new(transition::claim(request, ids, fence, decision.now)))
}

/// Posts `request` to the queue, once every item it depends on exists
/// (`status_of` gives their status as the store read them, `None` for
/// one that is not there). A dependency that already ended without
/// completing fails the new item at once, unless it was posted to wait
/// (as [`cascade`] would have, had the dependency ended after it).
pub fn post(
    decision: &mut Decision,
    request: &PostRequest,
    status_of: impl Fn(&str) -> Option<Status>,
    ids: NewIds,
) -> Result<Claim, CoordError> {
    let mut ended = None;
    for dependency in &request.depends_on {
        let status = match decision.index.get(dependency) {
            Some(&i) => Some(decision.written[i].claim.status),
            None => status_of(dependency),
        };
        match status {
            None => {
                return Err(CoordError::NotFound {
                    work_item_id: dependency.clone(),
                });
            }
            Some(s) if s.ended_badly() && ended.is_none() => ended = Some((dependency, s)),
            Some(_) => {}
        }
    }
    let posted = decision.record_new(transition::post(request, ids, decision.now));
    let Some((dependency, how)) = ended else {
        return Ok(posted);
    };
    let by = request.agent_id.as_str();
    match transition::fail_for_dependency(&posted, dependency, how, by, decision.now) {
        Some(change) => Ok(decision.record(change, posted)),
        None => Ok(posted),
    }
}

/// Which of `candidates` `next` takes (a position in them), as this change
/// sees them: items it put back on the queue count as pending. `context`
/// holds the other items the choice depends on (the candidates'
/// dependencies, the live claims of their work types), which are never
/// chosen themselves. See [`transition::pick_next_from`].
pub fn choose_next<'h>(
    decision: &Decision,
    candidates: &[&'h ClaimHead],
    context: impl IntoIterator<Item = &'h ClaimHead>,
    request: &NextRequest,
    policy: &dyn ConflictPolicy,
) -> Option<usize> {
    // The few items this change wrote, as they stand now.
    let changed: HashMap<&str, ClaimHead> = decision
        .written
        .iter()
        .map(|w| (w.claim.work_item_id.as_str(), w.claim.head()))
        .collect();
    if changed.is_empty() {
        return transition::pick_next_from(candidates, context, request, policy, decision.now);
    }
    let now_candidates: Vec<&ClaimHead> = candidates
        .iter()
        .map(|h| changed.get(h.work_item_id.as_str()).unwrap_or(h))
        .collect();
    let context: Vec<&ClaimHead> = context
        .into_iter()
        .map(|h| changed.get(h.work_item_id.as_str()).unwrap_or(h))
        .collect();
    transition::pick_next_from(&now_candidates, context, request, policy, decision.now)
}

/// `item` (pending, read by the store) taken for `request` at `fence`.
pub fn take(
    decision: &mut Decision,
    item: &Claim,
    request: &NextRequest,
    fence: u64,
) -> Result<Claim, CoordError> {
    let current = decision.current(item);
    let change = transition::take(&current, request, fence, decision.now)?;
    Ok(decision.record(change, item.clone()))
}

/// `action` by `actor` on `item` as it stands (its own lapsed lease, if it
/// lapsed, is not written down first: see [`Decision::begin`]'s `except`).
pub fn act(
    decision: &mut Decision,
    item: &Claim,
    action: &Action,
    actor: &Actor<'_>,
) -> Result<Claim, CoordError> {
    let change = transition::apply(item, action, actor, decision.now)?;
    Ok(decision.record(change, item.clone()))
}

/// `request` applied to `items`, what the store read for it (the item by
/// id, or the candidates of its match; it may read more than it selects),
/// as this change sees them. By id, the item must be among them and the
/// operation must be able to act on it; by match, every item it selects and
/// can act on is changed and the rest passed over. Returns the changed
/// items, in the order read.
pub fn operate(
    decision: &mut Decision,
    items: &[Claim],
    request: &OperateRequest,
) -> Result<Vec<Claim>, CoordError> {
    let now = decision.now;
    let by = request.agent_id.as_str();
    if let Target::Item(id) = &request.target {
        let item = items
            .iter()
            .find(|c| c.work_item_id == *id)
            .ok_or_else(|| CoordError::NotFound {
                work_item_id: id.clone(),
            })?;
        let change = request.operation.apply(&decision.current(item), by, now)?;
        return Ok(vec![decision.record(change, item.clone())]);
    }
    let mut changed = Vec::new();
    for item in items {
        let current = decision.current(item);
        if !request.selects(&current, now) {
            continue;
        }
        if let Ok(change) = request.operation.apply(&current, by, now) {
            changed.push(decision.record(change, item.clone()));
        }
    }
    Ok(changed)
}

/// Fails the pending items that depend on an item this change ended without
/// completing (failed, expired, cancelled), as `--on-dependency-failure
/// fail` (the default) asks, and the items that depend on those, and so on.
/// `read_dependents(ids)` gives the pending items that depend on any of
/// `ids` (the store locks them, and may give more: the rest are passed
/// over). Call it once a change has decided everything else.
pub fn cascade<E: From<CoordError>>(
    decision: &mut Decision,
    mut read_dependents: impl FnMut(&[String]) -> Result<Vec<Claim>, E>,
) -> Result<(), E> {
    let mut followed: HashSet<String> = HashSet::new();
    loop {
        let ended: Vec<(String, Status, String)> = decision
            .written
            .iter()
            .filter(|w| {
                w.claim.status.ended_badly()
                    && w.before.as_ref().is_none_or(|b| !b.status.ended_badly())
                    && !followed.contains(&w.claim.work_item_id)
            })
            .map(|w| {
                let id = &w.claim.work_item_id;
                // Whoever ended it causes what follows.
                let by = decision
                    .events
                    .iter()
                    .rev()
                    .find(|e| e.work_item_id.as_ref() == Some(id))
                    .and_then(|e| e.agent.clone())
                    .unwrap_or_else(|| "coord".to_owned());
                (id.clone(), w.claim.status, by)
            })
            .collect();
        if ended.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = ended.iter().map(|(id, ..)| id.clone()).collect();
        followed.extend(ids.iter().cloned());
        for dependent in read_dependents(&ids)? {
            let current = decision.current(&dependent);
            let Some((dependency, how, by)) = ended
                .iter()
                .find(|(id, ..)| current.depends_on.contains(id))
            else {
                continue;
            };
            if let Some(change) =
                transition::fail_for_dependency(&current, dependency, *how, by, decision.now)
            {
                decision.record(change, dependent);
            }
        }
    }
}

/// Writes down every lapsed lease: [`Decision::begin`] did; this returns
/// what it wrote down, for `reap`'s answer.
pub fn reap(decision: &Decision) -> Vec<Claim> {
    decision.expired()
}

/// Which finished items a cleanup moves to the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sweep {
    /// Those that finished longer ago than this (`coord cleanup`).
    OlderThan(Duration),
    /// All but the newest `n` (the directory's automatic compaction).
    AllBut(usize),
}

impl Sweep {
    /// The store need only read finished items that finished at or before
    /// this time (`None`: every finished item).
    pub fn finished_before(self, now: Timestamp) -> Option<Timestamp> {
        match self {
            Sweep::OlderThan(age) => Some(now.saturating_sub(age)),
            Sweep::AllBut(_) => None,
        }
    }
}

/// Chooses the finished items among `items` that `sweep` moves to the
/// archive, in the order given, and records the move. An item an unfinished
/// item depends on (`needed`) stays, so `next` can still see that it
/// completed. `items` may hold unfinished ones too: they are passed over.
pub fn cleanup<'h>(
    decision: &mut Decision,
    items: impl IntoIterator<Item = &'h ClaimHead>,
    needed: &HashSet<&str>,
    sweep: Sweep,
) -> Vec<String> {
    let now = decision.now;
    let written = &decision.index;
    // (position, finish time): a final item without its time counts as
    // finished long ago. Items this change changed (a lapse written down)
    // finished just now, and are swept by a later cleanup.
    let mut finished: Vec<(usize, i128, &str)> = items
        .into_iter()
        .filter(|h| h.status.is_final() && !written.contains_key(&h.work_item_id))
        .filter(|h| !needed.contains(h.work_item_id.as_str()))
        .enumerate()
        .map(|(i, h)| {
            let at = h.finished_at().map_or(0, Timestamp::as_unix_nanos);
            (i, at, h.work_item_id.as_str())
        })
        .collect();
    match sweep {
        Sweep::OlderThan(_) => {
            let cutoff = sweep
                .finished_before(now)
                .expect("an age gives a cutoff")
                .as_unix_nanos();
            finished.retain(|(_, at, _)| *at <= cutoff);
        }
        Sweep::AllBut(keep) => {
            finished.sort_by_key(|(i, at, _)| (*at, *i));
            finished.truncate(finished.len().saturating_sub(keep));
            finished.sort_by_key(|(i, _, _)| *i);
        }
    }
    let ids: Vec<String> = finished
        .into_iter()
        .map(|(_, _, id)| id.to_owned())
        .collect();
    decision.archived.extend(ids.iter().cloned());
    ids
}

/// The ids unfinished items among `items` depend on: cleanup keeps those.
pub fn needed_by_unfinished<'h>(
    items: impl IntoIterator<Item = &'h ClaimHead>,
) -> HashSet<&'h str> {
    items
        .into_iter()
        .filter(|h| !h.status.is_final())
        .flat_map(|h| h.depends_on.iter().map(String::as_str))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Priority;
    use crate::{ErrorKind, EventKind, Origin, SeedPolicy};

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix_nanos(i128::from(secs) * 1_000_000_000).unwrap()
    }

    fn ids(n: u32) -> NewIds {
        NewIds {
            work_item_id: format!("work_{n}"),
            coordination_id: format!("coord_{n}"),
        }
    }

    /// An item claimed at 1000 with a 60 s lease, by `agent`.
    fn held(n: u32, agent: &str, priority: Priority, origin: Origin) -> Claim {
        let request = ClaimRequest::new(agent, "build")
            .priority(priority)
            .lease(Duration::from_secs(60));
        let mut c = transition::claim(&request, ids(n), u64::from(n), at(1000)).claim;
        c.origin = Some(origin);
        c.revision = Some(1);
        c
    }

    #[test]
    fn every_change_writes_down_the_lapsed_leases_first_with_one_revision() {
        let lapsed = [
            held(1, "a", Priority::Low, Origin::Claim),
            held(2, "b", Priority::Low, Origin::Queue),
        ];
        let decision = Decision::begin(7, at(2000), lapsed.clone(), None);
        let written: Vec<_> = decision.written().iter().map(|w| w.claim.status).collect();
        assert_eq!(written, [Status::Expired, Status::Pending]);
        assert!(
            decision
                .written()
                .iter()
                .all(|w| w.claim.revision == Some(7))
        );
        assert!(decision.events().iter().all(|e| e.revision == Some(7)));
        assert_eq!(decision.requeued().count(), 1);
        assert_eq!(reap(&decision).len(), 2);

        // A lease that holds is left alone; the item acted on is skipped.
        let decision = Decision::begin(7, at(1030), lapsed.clone(), None);
        assert!(decision.is_empty());
        let decision = Decision::begin(7, at(2000), lapsed, Some("work_1"));
        assert_eq!(decision.written().len(), 1);
    }

    #[test]
    fn a_claim_checks_conflicts_only_where_the_policy_says_it_may_conflict() {
        let holder = held(1, "a", Priority::High, Origin::Claim);
        let heads = [holder.head()];
        let high = ClaimRequest::new("b", "build").priority(Priority::High);
        let mut decision = Decision::begin(2, at(1010), [], None);
        let err = claim(&mut decision, &high, &heads, &SeedPolicy, ids(5), 9).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
        assert!(decision.is_empty(), "a refused change writes nothing");
        // Once its lease lapsed, the holder blocks nobody (and is written down).
        let mut decision = Decision::begin(2, at(2000), [holder.clone()], None);
        let claimed = claim(&mut decision, &high, &heads, &SeedPolicy, ids(5), 9).unwrap();
        assert_eq!((claimed.fence, claimed.revision), (Some(9), Some(2)));
        assert_eq!(decision.events().len(), 2);
        assert_eq!(decision.events()[0].event, EventKind::Expired);
        let medium = ClaimRequest::new("b", "build");
        let mut decision = Decision::begin(2, at(1010), [], None);
        claim(&mut decision, &medium, &heads, &SeedPolicy, ids(6), 9).unwrap();
    }

    #[test]
    fn a_post_needs_every_dependency_to_exist() {
        let request = PostRequest::new("p", "build").after(["work_1", "work_2"]);
        let mut decision = Decision::begin(3, at(1000), [], None);
        let err = post(
            &mut decision,
            &request,
            |id| (id == "work_1").then_some(Status::Pending),
            ids(9),
        )
        .unwrap_err();
        assert!(
            matches!(err, CoordError::NotFound { ref work_item_id } if work_item_id == "work_2")
        );
        let posted = post(&mut decision, &request, |_| Some(Status::Completed), ids(9)).unwrap();
        assert_eq!(posted.depends_on, ["work_1", "work_2"]);
        assert!(decision.written()[0].is_new());
    }

    #[test]
    fn next_sees_what_the_change_put_back_on_the_queue() {
        let lapsed = held(1, "a", Priority::Low, Origin::Queue);
        let heads = [lapsed.head()];
        let refs: Vec<&ClaimHead> = heads.iter().collect();
        let request = NextRequest::new("w");
        let mut decision = Decision::begin(4, at(2000), [lapsed.clone()], None);
        let chosen = choose_next(&decision, &refs, [], &request, &SeedPolicy).unwrap();
        let taken = take(&mut decision, &lapsed, &request, 10).unwrap();
        assert_eq!(chosen, 0);
        assert_eq!((taken.status, taken.fence), (Status::InProgress, Some(10)));
        assert_eq!(decision.written().len(), 1, "one item, written once");
        assert_eq!(decision.written()[0].before.as_ref(), Some(&lapsed));
        let kinds: Vec<_> = decision.events().iter().map(|e| e.event).collect();
        assert_eq!(kinds, [EventKind::Expired, EventKind::Claimed]);
    }

    #[test]
    fn an_action_is_decided_on_its_item_as_it_stands() {
        let item = held(1, "a", Priority::Low, Origin::Claim);
        let other = held(2, "b", Priority::Low, Origin::Claim);
        let forced = Actor::new("op").force(true);
        let mut decision = Decision::begin(5, at(2000), [item.clone(), other], Some("work_1"));
        let done = act(
            &mut decision,
            &item,
            &Action::Complete { result: None },
            &forced,
        )
        .unwrap();
        assert_eq!(done.status, Status::Completed, "not expired first");
        let kinds: Vec<_> = decision.events().iter().map(|e| e.event).collect();
        assert_eq!(kinds, [EventKind::Expired, EventKind::Completed]);
    }

    #[test]
    fn cleanup_moves_what_the_sweep_selects_but_what_unfinished_work_needs() {
        let mut items: Vec<Claim> = Vec::new();
        for (n, finished_at) in [(1, 100), (2, 200), (3, 300), (4, 400)] {
            let mut done = held(n, "a", Priority::Low, Origin::Queue);
            done.status = Status::Completed;
            done.completed_at = Some(at(finished_at));
            items.push(done);
        }
        let mut waiting = held(5, "a", Priority::Low, Origin::Queue);
        waiting.status = Status::Pending;
        waiting.depends_on = vec!["work_2".into()];
        items.push(waiting);
        let heads: Vec<ClaimHead> = items.iter().map(Claim::head).collect();
        let needed = needed_by_unfinished(&heads);
        let mut decision = Decision::begin(6, at(1000), [], None);
        let moved = cleanup(
            &mut decision,
            &heads,
            &needed,
            Sweep::OlderThan(Duration::from_secs(750)),
        );
        assert_eq!(moved, ["work_1"], "finished by 250, and not needed");
        let mut decision = Decision::begin(6, at(1000), [], None);
        let moved = cleanup(&mut decision, &heads, &needed, Sweep::AllBut(1));
        assert_eq!(
            moved,
            ["work_1", "work_3"],
            "all but the newest, in file order"
        );
        assert_eq!(decision.archived(), ["work_1", "work_3"]);
    }
}
