//! Each change on PostgreSQL, in one transaction: read what
//! `coord_core::decide` needs for it (locking what must not change under
//! the decision), decide, write the [`Decision`].
//!
//! Two changes have a one-statement path, taken when nothing needs
//! reading first: a claim that can exclude nobody, and `next` of plain
//! work. Each applies what the decision layer decides (the tests below and
//! `take.rs`'s hold them to it), and falls back to reading first when the
//! statement finds it cannot decide alone.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use coord_core::decide::{self, Sweep};
use coord_core::operate::{OperateRequest, Target};
use coord_core::transition::{Action, Actor, NewIds};
use coord_core::{
    Claim, ClaimHead, ClaimRequest, CoordError, Decision, NextRequest, PostRequest, Priority, Slot,
    Timestamp, needs_exclusion,
};
use postgres::types::{Json, ToSql};

use crate::conn::Conn;
use crate::fail::Fail;
use crate::options::PgStoreOptions;
use crate::rows::{claim_from, claim_from_doc, number, row_of, statuses_of};
use crate::sql::{json_lit, rank, read, seen_sql, text_array};
use crate::take::TakeShape;
use crate::tx::Tx;

/// Candidates `next` reads at a time when it must read first.
const NEXT_PAGE: usize = 32;

/// The claims of a batch's rows of `doc::text`.
fn claims_of(rows: &[postgres::SimpleQueryRow]) -> Result<Vec<Claim>, Fail> {
    rows.iter().map(claim_from).collect()
}

/// Claims work on the spot. A claim that can exclude nobody (medium
/// priority, by default) reads nothing first: one round trip
/// ([`blind_claim`]). When a lapsed lease waits to be written down, or the
/// claim may exclude others, the work type's lock is taken (if it may
/// exclude), its live claims and the lapsed leases are read, and the
/// decision layer decides.
pub(crate) fn claim(
    conn: &mut Conn,
    options: &PgStoreOptions,
    request: &ClaimRequest,
    now: Timestamp,
    mut seen: Option<&str>,
) -> Result<Claim, Fail> {
    let policy = options.policy.as_ref();
    let slot = Slot {
        work_type: &request.work_type,
        priority: request.priority,
    };
    let exclusive = needs_exclusion(policy, slot);
    // A keyed claim writes its key in its commit: the reading path.
    if !exclusive && conn.keyed.is_none() {
        if let Some(claim) = blind_claim(conn, options, request, now, seen)? {
            return Ok(claim);
        }
        seen = None; // written with the one-statement attempt
    }
    let mut reads = Vec::new();
    if exclusive {
        reads.extend(read::exclusion(&options.schema, &[&request.work_type]));
    }
    reads.push(read::lapsed(now.as_unix_micros(), None));
    reads.push(read::revision_and_fence());
    let (mut tx, rows) = Tx::begin(conn, now, &reads)?;
    let at = if exclusive { 2 } else { 0 };
    tx.numbers(&rows[at + 1])?;
    let held = if exclusive {
        claims_of(&rows[1])?
    } else {
        Vec::new()
    };
    let lapsed = claims_of(&rows[at])?;
    let mut decision =
        Decision::begin(tx.revision(), now, held.iter().cloned().chain(lapsed), None);
    let live: Vec<ClaimHead> = held.iter().map(|c| decision.current(c).head()).collect();
    let ids = NewIds::fresh(|id| decision.writes(id));
    let claim = decide::claim(&mut decision, request, &live, policy, ids, tx.fence())?;
    tx.commit_answering(decision, seen, &claim)?;
    Ok(claim)
}

/// A claim that reads nothing, in one round trip: one statement inserts
/// the new row and its event with a fence and revision it draws, unless a
/// lapsed lease waits to be written down; the agent's sighting goes with
/// it. A message of several statements is one implicit transaction, so no
/// `BEGIN` or `COMMIT` is needed. The row is the decision layer's claim,
/// decided with placeholder numbers the statement replaces (see
/// [`blind_claim_row`]). `None` when a lapsed lease waits: nothing was
/// written, and the caller takes the path that writes it down.
fn blind_claim(
    conn: &mut Conn,
    options: &PgStoreOptions,
    request: &ClaimRequest,
    now: Timestamp,
    seen: Option<&str>,
) -> Result<Option<Claim>, Fail> {
    let ids = NewIds::fresh(|_| false);
    let (claim, event) = blind_claim_row(options, request, ids.clone(), now)?;
    let row = row_of(&claim);
    let numbers = match seen {
        // The common case: one statement, over the extended protocol.
        None => {
            let (doc, event) = (Json(row.doc), Json(&event));
            let rows = conn.query(
                "coord_claim_blind",
                &[
                    &row.id,
                    &row.work_type,
                    &row.priority,
                    &row.status,
                    &row.agent_id,
                    &row.lease_deadline,
                    &row.posted_at,
                    &row.retry_at,
                    &row.finished_at,
                    &doc,
                    &event,
                    &now.as_unix_micros(),
                ],
            )?;
            let Some(row) = rows.first() else {
                return Ok(None);
            };
            // Both come from sequences that start at 1.
            let number = |i| row.try_get::<_, i64>(i).map(i64::unsigned_abs);
            (number(0)?, number(1)?)
        }
        // With the sighting, in the same implicit transaction: one message
        // of two statements.
        Some(agent) => {
            let sql = format!(
                "EXECUTE coord_claim_blind({}, {}, {});{}",
                row.arguments(),
                json_lit(&event),
                now.as_unix_micros(),
                seen_sql(agent, now)
            );
            let results = conn.batch(&sql)?;
            let Some(row) = results.first().and_then(|rows| rows.first()) else {
                return Ok(None);
            };
            (number(row, 0)?, number(row, 1)?)
        }
    };
    // The row holds what the same decision makes with these numbers; only
    // they come back, which spares both sides a document's worth of JSON.
    let (revision, fence) = numbers;
    let mut decision = Decision::begin(revision, now, [], None);
    Ok(Some(decide::claim(
        &mut decision,
        request,
        [],
        options.policy.as_ref(),
        ids,
        fence,
    )?))
}

/// The row and event a one-statement claim inserts, before the statement
/// stamps its fence and revision over them: the decision layer's claim with
/// no live claim to conflict with (the statement writes nothing while a
/// lapsed lease waits) and placeholder numbers.
fn blind_claim_row(
    options: &PgStoreOptions,
    request: &ClaimRequest,
    ids: NewIds,
    now: Timestamp,
) -> Result<(Claim, coord_core::Event), CoordError> {
    let mut decision = Decision::begin(0, now, [], None);
    let claim = decide::claim(&mut decision, request, [], options.policy.as_ref(), ids, 0)?;
    let event = decision.events()[0].clone();
    Ok((claim, event))
}

/// Adds a pending item to the queue, once its dependencies exist (locked
/// `FOR SHARE`, so a cleanup cannot archive them before this commits).
pub(crate) fn post(
    conn: &mut Conn,
    request: &PostRequest,
    now: Timestamp,
    seen: Option<&str>,
) -> Result<Claim, Fail> {
    let deps: Vec<&str> = request.depends_on.iter().map(String::as_str).collect();
    let mut reads = vec![read::lapsed(now.as_unix_micros(), None), read::revision()];
    if !deps.is_empty() {
        reads.push(read::existing_for_share(&deps));
    }
    let (mut tx, rows) = Tx::begin(conn, now, &reads)?;
    tx.numbers(&rows[1])?;
    let found = match rows.get(2) {
        Some(rows) => statuses_of(rows)?,
        None => HashMap::new(),
    };
    let mut decision = Decision::begin(tx.revision(), now, claims_of(&rows[0])?, None);
    let ids = NewIds::fresh(|id| decision.writes(id));
    let claim = decide::post(&mut decision, request, |d| found.get(d).copied(), ids)?;
    tx.commit_answering(decision, seen, &claim)?;
    Ok(claim)
}

/// What [`blind_next`] found.
enum Blind {
    /// The items taken, best first.
    Took(Vec<Claim>),
    NothingToTake,
    /// The best item needs more looked at, or a lapsed lease waits: nothing
    /// was locked or written but the agent's sighting.
    ReadFirst,
}

/// Takes up to `max` of the best ready items: in one statement when they
/// are plain work (see [`blind_next`]), else one, reading first
/// ([`next_reading_first`]).
pub(crate) fn next(
    conn: &mut Conn,
    options: &PgStoreOptions,
    shape: Option<&TakeShape>,
    request: &NextRequest,
    max: usize,
    now: Timestamp,
    mut seen: Option<&str>,
) -> Result<Vec<Claim>, Fail> {
    let blind = match shape.filter(|_| conn.keyed.is_none()) {
        Some(shape) => blind_next(conn, options, request, shape, max, now, seen)?,
        None => None,
    };
    match blind {
        Some(Blind::Took(taken)) => return Ok(taken),
        Some(Blind::NothingToTake) => {
            return Err(CoordError::NothingToTake {
                work_types: request.work_types.clone(),
            }
            .into());
        }
        // The sighting went with the one-statement attempt.
        Some(Blind::ReadFirst) => seen = None,
        None => {}
    }
    Ok(vec![next_reading_first(conn, options, request, now, seen)?])
}

/// The `priority` values of the priorities `options`' policy says never
/// conflict, when they are the lowest ones (as the default policy's low
/// and medium are): what the one-statement `next` can take.
fn free_priorities(options: &PgStoreOptions) -> Option<Vec<i16>> {
    let free: Vec<i16> = Priority::ALL
        .into_iter()
        .filter(|p| options.policy.never_conflicts(*p))
        .map(rank)
        .collect();
    let lowest = free.iter().zip(0..).all(|(rank, i)| *rank == i);
    (!free.is_empty() && lowest).then_some(free)
}

/// `next` in one round trip when the best ready items can be taken without
/// looking at any other row: one statement makes sure no ready item of a
/// priority that may conflict waits, locks and takes up to `max` of the best
/// free items, applying what the decision layer's `take` does (as a patch
/// learnt from it, see `take.rs`) and logs their events. `None`, having
/// sent nothing, when the policy's free priorities are not the lowest ones
/// or `take` is not a patch.
fn blind_next(
    conn: &mut Conn,
    options: &PgStoreOptions,
    request: &NextRequest,
    shape: &TakeShape,
    max: usize,
    now: Timestamp,
    seen: Option<&str>,
) -> Result<Option<Blind>, Fail> {
    let Some(free) = free_priorities(options) else {
        return Ok(None);
    };
    let Some(patch) = shape.patch(request, now) else {
        return Ok(None);
    };
    let limit = i64::try_from(max).unwrap_or(i64::MAX);
    let typed = !request.work_types.is_empty();
    // The taken items' documents; `Some(vec![None])` when there is nothing
    // to take; `None` when the store must read first.
    let found: Option<Vec<Option<String>>> = match seen {
        // The common case: one statement, over the extended protocol.
        None => {
            let micros = now.as_unix_micros();
            let (columns, set, event) =
                (Json(&patch.columns), Json(&patch.set), Json(&patch.event));
            let mut params: Vec<&(dyn ToSql + Sync)> =
                vec![&micros, &free, &columns, &patch.clear, &set, &event, &limit];
            if typed {
                params.push(&request.work_types);
            }
            let name = if typed {
                "coord_next_blind_typed"
            } else {
                "coord_next_blind"
            };
            let rows = conn.query(name, &params)?;
            let docs = rows
                .iter()
                .map(|row| row.try_get(0))
                .collect::<Result<Vec<Option<String>>, _>>()?;
            (!docs.is_empty()).then_some(docs)
        }
        // With the agent's sighting, in the same implicit transaction.
        Some(agent) => {
            let free: Vec<String> = free.iter().map(i16::to_string).collect();
            let sql = format!(
                "EXECUTE coord_next_blind{}({}, ARRAY[{}]::int2[], {}, {}, {}, {}, {limit}{});{}",
                if typed { "_typed" } else { "" },
                now.as_unix_micros(),
                free.join(","),
                json_lit(&patch.columns),
                text_array(&patch.clear),
                json_lit(&patch.set),
                json_lit(&patch.event),
                if typed {
                    format!(", {}", text_array(&request.work_types))
                } else {
                    String::new()
                },
                seen_sql(agent, now),
            );
            let results = conn.batch(&sql)?;
            let docs: Vec<Option<String>> = results
                .first()
                .map(|rows| {
                    rows.iter()
                        .map(|row| row.get(0).map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            (!docs.is_empty()).then_some(docs)
        }
    };
    let Some(docs) = found else {
        return Ok(Some(Blind::ReadFirst));
    };
    if docs.iter().any(Option::is_none) {
        return Ok(Some(Blind::NothingToTake));
    }
    let mut taken = docs
        .iter()
        .flatten()
        .map(|doc| claim_from_doc(doc))
        .collect::<Result<Vec<Claim>, _>>()?;
    // Fences were drawn best first.
    taken.sort_by_key(|c| c.fence);
    Ok(Some(Blind::Took(taken)))
}

/// `next` when the best candidate needs more looked at (a priority that
/// may conflict, dependencies, lapsed leases to write down): read the
/// ready items without locks, lock what deciding needs, decide
/// (`decide::choose_next`), then lock only the chosen row.
///
/// Locking just that row keeps other `next`s from skipping rows nobody
/// will take. A row another transaction holds is skipped and the choice
/// made again; when every row this `next` could take was held, it waits
/// for them in turn (a taker may give its row up), so "nothing to take"
/// means nothing ready was left that it may take.
fn next_reading_first(
    conn: &mut Conn,
    options: &PgStoreOptions,
    request: &NextRequest,
    now: Timestamp,
    seen: Option<&str>,
) -> Result<Claim, Fail> {
    let micros = now.as_unix_micros();
    let policy = options.policy.as_ref();
    let types = &request.work_types;
    let (mut tx, mut rows) = Tx::begin(
        conn,
        now,
        &[read::candidates(micros, types, &[], NEXT_PAGE)],
    )?;
    let mut page = rows.swap_remove(0);
    let mut passed: Vec<String> = Vec::new();
    // Items another transaction held when this one tried them.
    let mut busy: Vec<Claim> = Vec::new();
    let mut decision: Option<Decision> = None;
    let mut taken: Option<Claim> = None;
    'pages: loop {
        let mut candidates = claims_of(&page)?;
        // What deciding needs, in one round trip: the exclusive work types'
        // locks (all in one statement, in one order, so two `next`s cannot
        // wait on each other) and their live claims; the lapsed leases and
        // the revision, the first time; the dependencies' states.
        let heads: Vec<ClaimHead> = candidates.iter().map(Claim::head).collect();
        let exclusive: BTreeSet<&str> = heads
            .iter()
            .filter(|h| needs_exclusion(policy, Slot::from(*h)))
            .map(|h| h.work_type.as_str())
            .collect();
        let dependencies: BTreeSet<&str> = heads
            .iter()
            .flat_map(|h| h.depends_on.iter().map(String::as_str))
            .collect();
        let mut reads = Vec::new();
        if !exclusive.is_empty() {
            let types: Vec<&str> = exclusive.iter().copied().collect();
            reads.extend(read::exclusion(&options.schema, &types));
        }
        if decision.is_none() {
            reads.push(read::lapsed(micros, None));
            reads.push(read::revision());
        }
        if !dependencies.is_empty() {
            let ids: Vec<&str> = dependencies.iter().copied().collect();
            reads.push(read::items(&ids));
        }
        let results = tx.run(&reads)?;
        let held = if exclusive.is_empty() {
            Vec::new()
        } else {
            claims_of(&results[1])?
        };
        let at = if exclusive.is_empty() { 0 } else { 2 };
        let decision = match decision.as_mut() {
            Some(decision) => {
                decision.write_down_lapsed(held.iter().cloned());
                decision
            }
            None => {
                tx.numbers(&results[at + 1])?;
                let lapsed = claims_of(&results[at])?;
                let begun =
                    Decision::begin(tx.revision(), now, held.iter().cloned().chain(lapsed), None);
                // Items this change itself put back on the queue.
                let read: HashSet<String> =
                    candidates.iter().map(|c| c.work_item_id.clone()).collect();
                candidates.extend(
                    begun
                        .requeued()
                        .filter(|c| !read.contains(&c.work_item_id))
                        .cloned(),
                );
                decision.insert(begun)
            }
        };
        let mut context: Vec<ClaimHead> = held.iter().map(|c| decision.current(c).head()).collect();
        if !dependencies.is_empty() {
            for row in results.last().expect("the dependencies' rows") {
                context.push(decision.current(&claim_from(row)?).head());
            }
        }
        let heads: Vec<ClaimHead> = candidates.iter().map(Claim::head).collect();
        let mut excluded: HashSet<usize> = HashSet::new();
        loop {
            let open: Vec<usize> = (0..heads.len()).filter(|i| !excluded.contains(i)).collect();
            let refs: Vec<&ClaimHead> = open.iter().map(|&i| &heads[i]).collect();
            let Some(k) = decide::choose_next(decision, &refs, &context, request, policy) else {
                break;
            };
            let chosen = &candidates[open[k]];
            if let Some(claim) = take_if_free(&mut tx, decision, chosen, request, Lock::IfFree)? {
                taken = Some(claim);
                break 'pages;
            }
            excluded.insert(open[k]);
            busy.push(chosen.clone());
        }
        if page.len() == NEXT_PAGE {
            // Every candidate of this page was held back: look further.
            passed.extend(candidates.iter().map(|c| c.work_item_id.clone()));
            page = tx
                .run(&[read::candidates(micros, types, &passed, NEXT_PAGE)])?
                .swap_remove(0);
            continue;
        }
        break;
    }
    let mut decision = decision.expect("the first page's reads began the decision");
    if let Some(claim) = taken {
        tx.commit_answering(decision, seen, &claim)?;
        return Ok(claim);
    }
    // Every item this `next` could take was held by another transaction:
    // wait for each in turn; one its taker gave up is this one's.
    for waited in busy {
        let head = waited.head();
        // What deciding on it needs, taken before the savepoint (rolling
        // back to it must not let go of what recorded changes rely on).
        let exclusive = needs_exclusion(policy, Slot::from(&head));
        let mut reads = Vec::new();
        if exclusive {
            reads.extend(read::exclusion(&options.schema, &[head.work_type.as_str()]));
        }
        let dependencies: Vec<&str> = head.depends_on.iter().map(String::as_str).collect();
        if !dependencies.is_empty() {
            reads.push(read::items(&dependencies));
        }
        let mut context = Vec::new();
        if !reads.is_empty() {
            let results = tx.run(&reads)?;
            if exclusive {
                let held = claims_of(&results[1])?;
                decision.write_down_lapsed(held.iter().cloned());
                context.extend(held.iter().map(|c| decision.current(c).head()));
            }
            if !dependencies.is_empty() {
                for row in results.last().expect("the dependencies' rows") {
                    context.push(decision.current(&claim_from(row)?).head());
                }
            }
        }
        let results = tx.run(&[
            "SAVEPOINT coord_wait".to_owned(),
            read::ready_once_free(&waited.work_item_id, micros),
        ])?;
        let Some(row) = results[1].first() else {
            continue; // taken, or no longer ready
        };
        let item = claim_from(row)?;
        let head = decision.current(&item).head();
        if decide::choose_next(&decision, &[&head], &context, request, policy).is_some()
            && let Some(claim) = take_if_free(&mut tx, &mut decision, &item, request, Lock::Held)?
        {
            tx.commit_answering(decision, seen, &claim)?;
            return Ok(claim);
        }
        // Not this one's after all: let go of its row at once.
        tx.run(&["ROLLBACK TO SAVEPOINT coord_wait".to_owned()])?;
    }
    Err(CoordError::NothingToTake {
        work_types: request.work_types.clone(),
    }
    .into())
}

/// Whether the item a `next` chose still needs locking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lock {
    /// Lock it unless another transaction holds it.
    IfFree,
    /// This transaction holds it already.
    Held,
}

/// Takes `item` for `request` if it can be locked and is still ready, with
/// a fence drawn after the lock; `None` when another transaction holds it
/// or took it.
fn take_if_free(
    tx: &mut Tx<'_>,
    decision: &mut Decision,
    item: &Claim,
    request: &NextRequest,
    lock: Lock,
) -> Result<Option<Claim>, Fail> {
    // An item this change put back on the queue is locked by it already.
    let locked = lock == Lock::Held || decision.writes(&item.work_item_id);
    let mut reads = Vec::new();
    if !locked {
        reads.push(read::ready_if_free(
            &item.work_item_id,
            tx.now.as_unix_micros(),
        ));
    }
    reads.push(read::fence());
    let results = tx.run(&reads)?;
    let item = if locked {
        item.clone()
    } else {
        match results[0].first() {
            // As it stands now that it is locked.
            Some(row) => claim_from(row)?,
            None => return Ok(None),
        }
    };
    tx.numbers(results.last().expect("the fence's row"))?;
    Ok(Some(decide::take(decision, &item, request, tx.fence())?))
}

/// Applies `action` by `actor` to one item, locked.
pub(crate) fn act(
    conn: &mut Conn,
    work_item_id: &str,
    action: &Action,
    actor: &Actor<'_>,
    now: Timestamp,
    seen: Option<&str>,
) -> Result<Claim, Fail> {
    let reads = [
        read::item(work_item_id),
        read::lapsed(now.as_unix_micros(), Some(work_item_id)),
        read::revision(),
    ];
    let (mut tx, rows) = Tx::begin(conn, now, &reads)?;
    let row = rows[0].first().ok_or_else(|| CoordError::NotFound {
        work_item_id: work_item_id.to_owned(),
    })?;
    let item = claim_from(row)?;
    tx.numbers(&rows[2])?;
    let mut decision =
        Decision::begin(tx.revision(), now, claims_of(&rows[1])?, Some(work_item_id));
    let claim = decide::act(&mut decision, &item, action, actor)?;
    tx.commit_answering(decision, seen, &claim)?;
    Ok(claim)
}

/// Cancels or retries the item or items `request` names: the item (or the
/// items of the statuses the operation acts on) locked with the lapsed
/// leases, which may become retryable as this change writes them down.
pub(crate) fn operate(
    conn: &mut Conn,
    request: &OperateRequest,
    now: Timestamp,
    seen: Option<&str>,
) -> Result<Vec<Claim>, Fail> {
    let target = match &request.target {
        Target::Item(id) => read::item(id),
        Target::Matching(m) => {
            // Only the rows it may change are locked: of the filter's
            // status when it names one (one the operation acts on).
            let statuses: Vec<&str> = match m.status {
                Some(status) => vec![status.as_str()],
                None => request
                    .operation
                    .acts_on()
                    .iter()
                    .map(|s| s.as_str())
                    .collect(),
            };
            read::operable(&statuses, m.work_type.as_deref())
        }
    };
    let reads = [
        read::lapsed(now.as_unix_micros(), None),
        read::revision(),
        target,
    ];
    let (mut tx, rows) = Tx::begin(conn, now, &reads)?;
    tx.numbers(&rows[1])?;
    let lapsed = claims_of(&rows[0])?;
    let mut decision = Decision::begin(tx.revision(), now, lapsed.iter().cloned(), None);
    let mut items = claims_of(&rows[2])?;
    let read: HashSet<String> = items.iter().map(|c| c.work_item_id.clone()).collect();
    items.extend(
        lapsed
            .into_iter()
            .filter(|c| !read.contains(&c.work_item_id)),
    );
    let changed = decide::operate(&mut decision, &items, request)?;
    tx.commit(decision, seen)?;
    Ok(changed)
}

/// Writes down every lapsed lease no other transaction holds.
pub(crate) fn reap(
    conn: &mut Conn,
    now: Timestamp,
    seen: Option<&str>,
) -> Result<Vec<Claim>, Fail> {
    let reads = [read::lapsed(now.as_unix_micros(), None), read::revision()];
    let (mut tx, rows) = Tx::begin(conn, now, &reads)?;
    tx.numbers(&rows[1])?;
    let decision = Decision::begin(tx.revision(), now, claims_of(&rows[0])?, None);
    let expired = decide::reap(&decision);
    tx.commit(decision, seen)?;
    Ok(expired)
}

/// Moves items that finished more than `older_than` ago to the archive:
/// the finished items the sweep may move are locked first, then (a later
/// statement, a later snapshot, which sees any item that came to depend on
/// one while the lock was awaited) the items that depend on others are
/// read; the decision layer chooses.
pub(crate) fn cleanup(
    conn: &mut Conn,
    older_than: Duration,
    now: Timestamp,
    seen: Option<&str>,
) -> Result<Vec<String>, Fail> {
    let sweep = Sweep::OlderThan(older_than);
    let cutoff = sweep.finished_before(now).map(Timestamp::as_unix_micros);
    let reads = [
        read::lapsed(now.as_unix_micros(), None),
        read::revision(),
        read::finished(cutoff),
        read::dependents(),
    ];
    let (mut tx, rows) = Tx::begin(conn, now, &reads)?;
    tx.numbers(&rows[1])?;
    let mut decision = Decision::begin(tx.revision(), now, claims_of(&rows[0])?, None);
    let finished: Vec<ClaimHead> = claims_of(&rows[2])?.iter().map(Claim::head).collect();
    let dependents: Vec<ClaimHead> = claims_of(&rows[3])?.iter().map(Claim::head).collect();
    let needed = decide::needed_by_unfinished(&dependents);
    let moved = decide::cleanup(&mut decision, &finished, &needed, sweep);
    // Expired idempotency keys go with the finished items.
    tx.run(&[format!(
        "DELETE FROM coord_idempotency_keys WHERE used_at <= {}",
        crate::keys::expired_before(now)
    )])?;
    tx.commit(decision, seen)?;
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use coord_core::SeedPolicy;
    use proptest::prelude::*;
    use serde_json::Value;
    use std::sync::Arc;

    proptest! {
        /// The one-statement claim writes what the decision layer decides:
        /// its row, with the statement's fence and revision stamped over
        /// the placeholders (`doc || {fence, revision}`), is the claim and
        /// event `decide::claim` makes with those numbers.
        #[test]
        fn the_one_statement_claim_writes_what_the_decision_layer_decides(
            priority in 0usize..4,
            lease_ms in 100u64..100_000_000,
            description in ".{0,20}",
            nanos in 1_000_000_000_000_000_000i128..2_000_000_000_000_000_000,
            fence in 1u64..i64::MAX as u64,
            revision in 1u64..i64::MAX as u64,
        ) {
            let options = PgStoreOptions::default().policy(Arc::new(SeedPolicy));
            let request = ClaimRequest::new("agent", "build")
                .priority(Priority::ALL[priority])
                .description(description)
                .lease(Duration::from_millis(lease_ms));
            let now = Timestamp::from_unix_nanos(nanos).unwrap();
            let ids = NewIds { work_item_id: "work_1".into(), coordination_id: "coord_1".into() };
            let (row, event) = blind_claim_row(&options, &request, ids.clone(), now).unwrap();
            let stamp = |value: Value| {
                let Value::Object(mut map) = value else { unreachable!() };
                map.insert("fence".into(), fence.into());
                map.insert("revision".into(), revision.into());
                Value::Object(map)
            };
            let mut decision = Decision::begin(revision, now, [], None);
            let decided = decide::claim(&mut decision, &request, [], &SeedPolicy, ids, fence).unwrap();
            prop_assert_eq!(stamp(serde_json::to_value(&row).unwrap()), serde_json::to_value(&decided).unwrap());
            prop_assert_eq!(
                stamp(serde_json::to_value(&event).unwrap()),
                serde_json::to_value(&decision.events()[0]).unwrap()
            );
        }
    }
}
