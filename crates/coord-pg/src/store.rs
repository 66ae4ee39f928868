use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use coord_core::transition::{self, Action, Actor, NewIds};
use coord_core::{
    AgentRecord, AgentRegistration, Claim, ClaimHead, ClaimRequest, Clock, ConflictPolicy,
    CoordError, Event, EventPage, Filter, NextRequest, PostRequest, Priority, SeedPolicy,
    Sightings, Slot, Status, Store, Timestamp, find_conflict, needs_exclusion, system_clock,
    validate_name,
};
use postgres::error::SqlState;
use postgres::types::{Json, ToSql};
use postgres::{Client, Config, NoTls, Row, Transaction};

use crate::schema::{self, Migrated};
use crate::take::TakeShape;
use crate::tx::{
    Conn, Tx, claim_from, claim_from_doc, ids_of, json_lit, number, rank, read, row_of, seen_sql,
    text_array,
};

/// How a [`PgStore`] behaves; `Default` gives the documented defaults.
#[derive(Clone)]
pub struct PgStoreOptions {
    /// The schema holding coord's tables (default `coord`), created if
    /// missing. Stores with different schemas are independent.
    pub schema: String,
    /// How long a change waits for a lock another change holds (default
    /// 10 s), as PostgreSQL's `lock_timeout`.
    pub lock_timeout: Duration,
    /// Which claims exclude each other (default [`SeedPolicy`]). Conflicts
    /// must stay within one work type: exclusion is locked per work type.
    pub policy: Arc<dyn ConflictPolicy>,
    pub clock: Clock,
    /// Record acting agents in `coord_agents` (default on).
    pub track_agents: bool,
}

impl Default for PgStoreOptions {
    fn default() -> Self {
        PgStoreOptions {
            schema: "coord".to_owned(),
            lock_timeout: Duration::from_secs(10),
            policy: Arc::new(SeedPolicy),
            clock: system_clock(),
            track_agents: true,
        }
    }
}

impl fmt::Debug for PgStoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStoreOptions")
            .field("schema", &self.schema)
            .field("lock_timeout", &self.lock_timeout)
            .field("policy", &self.policy)
            .field("track_agents", &self.track_agents)
            .finish_non_exhaustive()
    }
}

/// Work items kept in a PostgreSQL database.
///
/// Holds one connection, opened on [`PgStore::connect`] and opened again
/// when it breaks. Operations from several threads take turns on it.
pub struct PgStore {
    config: Config,
    options: PgStoreOptions,
    conn: Mutex<Option<Conn>>,
    /// When this store last recorded each agent (see `SEEN_PRECISION`).
    sightings: Sightings,
    /// What `take` does, learnt for the last agent and lease that took
    /// work (see `take.rs`); `None` inside when it is not a patch.
    take_shape: Mutex<Option<(String, Duration, Option<TakeShape>)>>,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// How often a change that hit a deadlock or an id clash is run again.
const MAX_ATTEMPTS: u32 = 8;

/// Candidates `next` reads at a time when it must read first.
const NEXT_PAGE: usize = 32;

/// Why a transaction did not commit.
pub(crate) enum Fail {
    Coord(CoordError),
    Db(postgres::Error),
}

impl From<CoordError> for Fail {
    fn from(e: CoordError) -> Self {
        Fail::Coord(e)
    }
}

impl From<postgres::Error> for Fail {
    fn from(e: postgres::Error) -> Self {
        Fail::Db(e)
    }
}

/// Errors worth running the whole transaction again for: PostgreSQL broke
/// a deadlock, or two machines minted the same item id.
fn retryable(e: &postgres::Error) -> bool {
    let Some(db) = e.as_db_error() else {
        return false;
    };
    let code = db.code();
    *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::T_R_SERIALIZATION_FAILURE
        || (*code == SqlState::UNIQUE_VIOLATION && db.constraint() == Some("coord_claims_pkey"))
}

impl PgStore {
    /// Connects to the database `url` (a libpq connection string or URI,
    /// e.g. `postgresql://user@host/db` or `host=/run/postgresql dbname=x`)
    /// and creates coord's tables if they are missing.
    pub fn connect(url: &str, options: PgStoreOptions) -> Result<PgStore, CoordError> {
        let config = Config::from_str(url).map_err(|e| {
            CoordError::validation(format!("not a valid PostgreSQL connection string: {e}"))
        })?;
        if let Some(problem) = schema::schema_name_problem(&options.schema) {
            return Err(CoordError::validation(format!(
                "schema {:?} {problem}",
                options.schema
            )));
        }
        // Session settings travel with the connection's start-up message:
        // no round trip, and no transaction can undo them.
        let mut config = config;
        // PostgreSQL keeps `lock_timeout` in an int of milliseconds (0 would
        // mean "wait for ever"): a longer wait is its longest.
        let lock_timeout_ms = options.lock_timeout.as_millis().clamp(1, i32::MAX as u128);
        let settings = format!(
            "-c search_path={} -c lock_timeout={lock_timeout_ms} -c standard_conforming_strings=on",
            options.schema,
        );
        let options_text = match config.get_options() {
            Some(theirs) => format!("{theirs} {settings}"),
            None => settings,
        };
        config.options(&options_text);
        let store = PgStore {
            config,
            options,
            conn: Mutex::new(None),
            sightings: Sightings::default(),
            take_shape: Mutex::default(),
        };
        let conn = store.open()?;
        *store.slot() = Some(conn);
        Ok(store)
    }

    pub fn options(&self) -> &PgStoreOptions {
        &self.options
    }

    fn slot(&self) -> MutexGuard<'_, Option<Conn>> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a connection ready for changes: session settings, and the
    /// tables (made or brought up to date if needed). A store that is up
    /// to date costs one round trip after the connection's own start.
    fn open(&self) -> Result<Conn, CoordError> {
        let client = self.config.connect(NoTls).map_err(|e| self.db_error(e))?;
        let mut conn = Conn::new(client);
        let schema = &self.options.schema;
        let current = conn.batch(&schema::current_sql());
        let up_to_date = match current {
            Ok(results) => !results[0].is_empty(),
            Err(e)
                if e.code() == Some(&SqlState::UNDEFINED_TABLE)
                    || e.code() == Some(&SqlState::INVALID_SCHEMA_NAME) =>
            {
                false
            }
            Err(e) => return Err(self.db_error(e)),
        };
        if !up_to_date {
            let mut tx = conn.client.transaction().map_err(|e| self.db_error(e))?;
            let migrated = schema::migrate(&mut tx, schema)
                .and_then(|m| tx.commit().map(|()| m))
                .map_err(|e| self.db_error(e))?;
            if let Migrated::Newer(version) = migrated {
                return Err(CoordError::validation(format!(
                    "the database schema {schema:?} is at version {version}, newer than this \
                     coord understands ({}); upgrade coord",
                    schema::SCHEMA_VERSION
                )));
            }
        }
        Ok(conn)
    }

    fn db_error(&self, e: postgres::Error) -> CoordError {
        if e.code() == Some(&SqlState::SEQUENCE_GENERATOR_LIMIT_EXCEEDED) {
            // Sequences stop at their largest value rather than wrap.
            let message = e.as_db_error().map(|d| d.message()).unwrap_or_default();
            let counter = if message.contains("coord_fence") {
                "fence"
            } else {
                "revision"
            };
            return CoordError::counter_exhausted(counter, i64::MAX as u64);
        }
        if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
            return CoordError::LockTimeout {
                path: PathBuf::from(format!("postgresql:{}", self.options.schema)),
                waited: self.options.lock_timeout,
            };
        }
        if e.code() == Some(&SqlState::UNTRANSLATABLE_CHARACTER)
            || e.code() == Some(&SqlState::CHARACTER_NOT_IN_REPERTOIRE)
        {
            return CoordError::validation(format!(
                "PostgreSQL cannot store this text (a NUL character?): {}",
                e.as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_owned())
            ));
        }
        let message = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            // Name the cause too: "error connecting to server" alone says
            // nothing of a wrong socket path or a refused password.
            None => match std::error::Error::source(&e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            },
        };
        CoordError::Database {
            message,
            source: Some(Box::new(e)),
        }
    }

    /// Runs `body` on the connection (opened again if it broke), running it
    /// again after a deadlock or an id clash.
    fn with_client<T>(
        &self,
        mut body: impl FnMut(&mut Client) -> Result<T, Fail>,
    ) -> Result<T, CoordError> {
        self.with_conn(|conn| body(&mut conn.client))
    }

    /// Runs `body` on the connection (opened again if it broke), running it
    /// again after a deadlock or an id clash.
    fn with_conn<T>(
        &self,
        mut body: impl FnMut(&mut Conn) -> Result<T, Fail>,
    ) -> Result<T, CoordError> {
        let mut slot = self.slot();
        let mut attempt = 0;
        loop {
            attempt += 1;
            if slot.as_ref().is_none_or(|c| c.client.is_closed()) {
                *slot = Some(self.open()?);
            }
            let conn = slot.as_mut().expect("opened above");
            match body(conn) {
                Ok(value) => return Ok(value),
                Err(Fail::Coord(e)) => return Err(e),
                Err(Fail::Db(e)) if retryable(&e) && attempt < MAX_ATTEMPTS => {
                    tracing::debug!("running a transaction again after: {e}");
                }
                Err(Fail::Db(e)) => {
                    if conn.client.is_closed() {
                        *slot = None;
                    }
                    return Err(self.db_error(e));
                }
            }
        }
    }

    /// Runs a change: `body` opens its transaction with [`Tx::begin`],
    /// decides, and commits with the `seen` agent it is given (the acting
    /// agent, when its `last_seen` may need writing). Run again after a
    /// deadlock or an id clash.
    fn change<T>(
        &self,
        agent: Option<&str>,
        mut body: impl FnMut(&mut Conn, Timestamp, Option<&str>) -> Result<T, Fail>,
    ) -> Result<T, CoordError> {
        let mut seen_at = None;
        let value = self.with_conn(|conn| {
            let now = (self.options.clock)();
            let seen = agent.filter(|a| self.options.track_agents && self.sightings.due(a, now));
            let value = body(conn, now, seen)?;
            seen_at = seen.map(|_| now);
            Ok(value)
        })?;
        if let (Some(agent), Some(now)) = (agent, seen_at) {
            self.sightings.record(agent, now);
        }
        Ok(value)
    }

    /// What `take` does for `request`'s agent and lease, learnt on first use.
    fn take_shape(&self, request: &NextRequest) -> Option<TakeShape> {
        let mut slot = self.take_shape.lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            Some((agent, lease, shape))
                if *agent == request.agent_id && *lease == request.lease =>
            {
                shape.clone()
            }
            _ => {
                let shape = TakeShape::learn(request, (self.options.clock)());
                *slot = Some((request.agent_id.clone(), request.lease, shape.clone()));
                shape
            }
        }
    }

    /// `next` when the best candidate needs more looked at (a priority that
    /// may conflict, dependencies, lapsed leases to write down): read the
    /// ready items without locks, lock what deciding needs, decide with
    /// `transition::pick_next_from`, then lock only the chosen row.
    ///
    /// Locking just that row keeps other `next`s from skipping rows nobody
    /// will take. A row another transaction holds is skipped and the choice
    /// made again; when every row this `next` could take was held, it waits
    /// for them in turn (a taker may give its row up), so "nothing to take"
    /// means nothing ready was left that it may take.
    fn next_reading_first(
        &self,
        conn: &mut Conn,
        request: &NextRequest,
        now: Timestamp,
        seen: Option<&str>,
    ) -> Result<Claim, Fail> {
        let micros = now.as_unix_micros();
        let policy = Arc::clone(&self.options.policy);
        let types = &request.work_types;
        let (mut tx, mut rows) = Tx::begin(
            conn,
            &self.options,
            now,
            &[read::candidates(micros, types, &[], NEXT_PAGE)],
        )?;
        let mut page = rows.swap_remove(0);
        let mut passed: Vec<String> = Vec::new();
        // Items another transaction held when this one tried them.
        let mut busy: Vec<Claim> = Vec::new();
        let mut lapsed_written = false;
        loop {
            let mut candidates: Vec<Claim> = Vec::with_capacity(page.len());
            for row in &page {
                candidates.push(tx.current(claim_from(row)?));
            }
            // What deciding needs, in one round trip: the exclusive work
            // types' locks (all in one statement, in one order, so two
            // `next`s cannot wait on each other) and their live claims; the
            // lapsed leases; the dependencies' states.
            let heads: Vec<ClaimHead> = candidates.iter().map(Claim::head).collect();
            let exclusive: BTreeSet<&str> = heads
                .iter()
                .filter(|h| needs_exclusion(policy.as_ref(), Slot::from(*h)))
                .map(|h| h.work_type.as_str())
                .collect();
            let dependencies: BTreeSet<&str> = heads
                .iter()
                .flat_map(|h| h.depends_on.iter().map(String::as_str))
                .collect();
            let mut reads = Vec::new();
            if !exclusive.is_empty() {
                let types: Vec<&str> = exclusive.iter().copied().collect();
                reads.extend(read::exclusion(&self.options.schema, &types));
            }
            if !lapsed_written {
                reads.push(read::lapsed(micros, None));
                reads.push(read::numbers(false));
            }
            if !dependencies.is_empty() {
                let ids: Vec<&str> = dependencies.iter().copied().collect();
                reads.push(read::items(&ids));
            }
            let mut context: Vec<ClaimHead> = Vec::new();
            if !reads.is_empty() {
                let results = tx.run(&reads)?;
                let mut at = if exclusive.is_empty() { 0 } else { 2 };
                if !lapsed_written {
                    // The revision first: writing a lapse down stamps it.
                    tx.numbers(&results[at + 1])?;
                }
                if !exclusive.is_empty() {
                    context.extend(tx.live(&results[1])?);
                }
                if !lapsed_written {
                    tx.expire(&results[at])?;
                    at += 2;
                    lapsed_written = true;
                    // Items this change itself put back on the queue.
                    let read: HashSet<String> =
                        candidates.iter().map(|c| c.work_item_id.clone()).collect();
                    let requeued: Vec<Claim> = tx
                        .requeued()
                        .filter(|c| !read.contains(&c.work_item_id))
                        .cloned()
                        .collect();
                    candidates.extend(requeued);
                }
                if !dependencies.is_empty() {
                    for row in &results[at] {
                        context.push(tx.current(claim_from(row)?).head());
                    }
                }
            }
            let heads: Vec<ClaimHead> = candidates.iter().map(Claim::head).collect();
            let mut excluded: HashSet<usize> = HashSet::new();
            loop {
                let open: Vec<usize> = (0..heads.len()).filter(|i| !excluded.contains(i)).collect();
                let refs: Vec<&ClaimHead> = open.iter().map(|&i| &heads[i]).collect();
                let Some(k) =
                    transition::pick_next_from(&refs, &context, request, policy.as_ref(), now)
                else {
                    break;
                };
                let chosen = &candidates[open[k]];
                if let Some(claim) = self.take_if_free(&mut tx, chosen, request, micros, false)? {
                    tx.commit(seen)?;
                    return Ok(claim);
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
        // Every item this `next` could take was held by another transaction:
        // wait for each in turn; one its taker gave up is this one's.
        for waited in busy {
            let head = waited.head();
            // What deciding on it needs, taken before the savepoint (rolling
            // back to it must not let go of what recorded changes rely on).
            let exclusive = needs_exclusion(policy.as_ref(), Slot::from(&head));
            let mut reads = Vec::new();
            if exclusive {
                reads.extend(read::exclusion(
                    &self.options.schema,
                    &[head.work_type.as_str()],
                ));
            }
            let dependencies: Vec<&str> = head.depends_on.iter().map(String::as_str).collect();
            if !dependencies.is_empty() {
                reads.push(read::items(&dependencies));
            }
            let mut context = Vec::new();
            if !reads.is_empty() {
                let results = tx.run(&reads)?;
                if exclusive {
                    context.extend(tx.live(&results[1])?);
                }
                if !dependencies.is_empty() {
                    for row in results.last().expect("the dependencies' rows") {
                        context.push(tx.current(claim_from(row)?).head());
                    }
                }
            }
            let results = tx.run(&[
                "SAVEPOINT coord_wait".to_owned(),
                read::ready(&waited.work_item_id, micros, true),
            ])?;
            let Some(row) = results[1].first() else {
                continue; // taken, or no longer ready
            };
            let item = tx.current(claim_from(row)?);
            let head = item.head();
            if transition::pick_next_from(&[&head], &context, request, policy.as_ref(), now)
                .is_some()
                && let Some(claim) = self.take_if_free(&mut tx, &item, request, micros, true)?
            {
                tx.commit(seen)?;
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

    /// Takes `item` for `request` if it can be locked (`already_waited`:
    /// the caller holds its lock) and is still ready, with a fence drawn
    /// after the lock; `None` when another transaction holds it or took it.
    fn take_if_free(
        &self,
        tx: &mut Tx<'_, '_>,
        item: &Claim,
        request: &NextRequest,
        micros: i64,
        already_waited: bool,
    ) -> Result<Option<Claim>, Fail> {
        // An item this change put back on the queue itself is locked by it.
        let ours = tx.requeued().any(|c| c.work_item_id == item.work_item_id);
        let mut reads = Vec::new();
        if !ours && !already_waited {
            reads.push(read::ready(&item.work_item_id, micros, false));
        }
        reads.push(read::fence());
        let results = tx.run(&reads)?;
        if !ours && !already_waited && results[0].is_empty() {
            return Ok(None);
        }
        tx.numbers(results.last().expect("the numbers' row"))?;
        let current = tx.current(item.clone());
        let change = transition::take(&current, request, tx.fence(), tx.now)?;
        Ok(Some(tx.record(change, false)))
    }

    /// Every archived item as it stood when it was archived, oldest first.
    pub fn archived(&self) -> Result<Vec<serde_json::Value>, CoordError> {
        self.with_client(|client| {
            let rows = client.query("SELECT doc FROM coord_archive ORDER BY seq", &[])?;
            Ok(rows
                .iter()
                .map(|r| r.get::<_, Json<serde_json::Value>>(0).0)
                .collect())
        })
    }
}

/// Reads a `doc` column as a claim (extended protocol rows).
fn claim_of(row: &Row) -> Result<Claim, Fail> {
    row.try_get::<_, Json<Claim>>("doc")
        .map(|j| j.0)
        .map_err(|e| {
            Fail::Coord(CoordError::validation(format!(
                "a row of coord_claims is not a claim coord can read: {e}"
            )))
        })
}

/// Two claims that may exclude each other lock the same key.
pub(crate) fn type_key(schema: &str, work_type: &str) -> String {
    format!("{schema}/{work_type}")
}

/// Records `registration` in `coord_agents` and returns the record.
fn upsert_agent(
    tx: &mut Transaction<'_>,
    registration: &AgentRegistration,
    now: Timestamp,
) -> Result<AgentRecord, Fail> {
    let existing: Option<AgentRecord> = tx
        .query_opt(
            "SELECT doc FROM coord_agents WHERE agent_id = $1 FOR UPDATE",
            &[&registration.agent_id],
        )?
        .map(|row| {
            row.try_get::<_, Json<AgentRecord>>(0)
                .map(|j| j.0)
                .map_err(|e| {
                    CoordError::validation(format!(
                        "the row of agent {} in coord_agents is not an agent record: {e}",
                        registration.agent_id
                    ))
                })
        })
        .transpose()?;
    let Some(record) = AgentRecord::seen(existing.as_ref(), registration, now) else {
        return Ok(existing.expect("only a known agent is up to date"));
    };
    tx.execute(
        "INSERT INTO coord_agents (agent_id, doc) VALUES ($1, $2) \
         ON CONFLICT (agent_id) DO UPDATE SET doc = excluded.doc",
        &[&record.agent_id, &Json(&record)],
    )?;
    Ok(record)
}

/// A claim that reads nothing, in one round trip: one statement inserts
/// the new row and its event (their fence and revision drawn by the
/// statement), unless a lapsed lease waits to be written down; the agent's
/// sighting goes with it. A message of several statements is one implicit
/// transaction, so no `BEGIN` or `COMMIT` is needed. `None` when a lapsed
/// lease waits: nothing was written, and the caller takes the path that
/// writes it down.
fn blind_claim(
    conn: &mut Conn,
    request: &ClaimRequest,
    now: Timestamp,
    seen: Option<&str>,
) -> Result<Option<Claim>, Fail> {
    let ids = NewIds::fresh(|_| false);
    // Fence and revision are placeholders the statement replaces.
    let change = transition::claim(request, ids.clone(), 0, now);
    let row = row_of(&change.claim);
    let numbers = match seen {
        // The common case: one statement, over the extended protocol.
        None => {
            let (doc, event) = (Json(row.doc), Json(&change.event));
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
                json_lit(&change.event),
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
    // The row holds what the same transition makes with these numbers; only
    // they come back, which spares both sides a document's worth of JSON.
    let (revision, fence) = numbers;
    Ok(Some(
        transition::claim(request, ids, fence, now)
            .at_revision(revision)
            .claim,
    ))
}

/// What [`blind_next`] found.
enum Blind {
    Took(Box<Claim>),
    NothingToTake,
    /// The best candidate needs more looked at, or a lapsed lease waits:
    /// nothing was written but the agent's sighting.
    ReadFirst,
}

/// `next` in one round trip when the best free candidate can be taken
/// without looking at any other row: one statement picks it, applies what
/// `transition::take` does (as a patch learnt from it, see `take.rs`) and
/// logs the event. `None`, having sent nothing, when no priority is free of
/// conflicts or `take` is not a patch.
fn blind_next(
    conn: &mut Conn,
    request: &NextRequest,
    shape: &TakeShape,
    policy: &dyn ConflictPolicy,
    now: Timestamp,
    seen: Option<&str>,
) -> Result<Option<Blind>, Fail> {
    let free: Vec<i16> = Priority::ALL
        .into_iter()
        .filter(|p| policy.never_conflicts(*p))
        .map(rank)
        .collect();
    let patch = match shape.patch(request, now) {
        Some(patch) if !free.is_empty() => patch,
        _ => return Ok(None),
    };
    let typed = !request.work_types.is_empty();
    // The taken item's document; `Some(None)` when there is nothing to
    // take; `None` when the store must read first.
    let found: Option<Option<String>> = match seen {
        // The common case: one statement, over the extended protocol.
        None => {
            let micros = now.as_unix_micros();
            let (columns, set, event) =
                (Json(&patch.columns), Json(&patch.set), Json(&patch.event));
            let mut params: Vec<&(dyn ToSql + Sync)> =
                vec![&micros, &free, &columns, &patch.clear, &set, &event];
            if typed {
                params.push(&request.work_types);
            }
            let name = if typed {
                "coord_next_blind_typed"
            } else {
                "coord_next_blind"
            };
            let rows = conn.query(name, &params)?;
            rows.first().map(|row| row.try_get(0)).transpose()?
        }
        // With the agent's sighting, in the same implicit transaction.
        Some(agent) => {
            let free: Vec<String> = free.iter().map(i16::to_string).collect();
            let sql = format!(
                "EXECUTE coord_next_blind{}({}, ARRAY[{}]::int2[], {}, {}, {}, {}{});{}",
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
            results
                .first()
                .and_then(|rows| rows.first())
                .map(|row| row.get(0).map(str::to_owned))
        }
    };
    Ok(Some(match found {
        Some(None) => Blind::NothingToTake,
        Some(Some(doc)) => Blind::Took(Box::new(claim_from_doc(&doc)?)),
        None => Blind::ReadFirst,
    }))
}

impl Store for PgStore {
    /// A claim that may exclude none (medium priority, by default) reads
    /// nothing first: one round trip (`blind_claim`). When a lapsed lease
    /// waits to be written down, it takes the path that reads and writes
    /// the expiry down, like a claim that may exclude others.
    fn claim(&self, request: &ClaimRequest) -> Result<Claim, CoordError> {
        request.validate()?;
        let slot = Slot {
            work_type: &request.work_type,
            priority: request.priority,
        };
        let exclusive = needs_exclusion(self.options.policy.as_ref(), slot);
        self.change(Some(&request.agent_id), |conn, now, mut seen| {
            if !exclusive {
                if let Some(claim) = blind_claim(conn, request, now, seen)? {
                    return Ok(claim);
                }
                seen = None; // written with the blind attempt
            }
            let mut reads = Vec::new();
            if exclusive {
                reads.extend(read::exclusion(&self.options.schema, &[&request.work_type]));
            }
            reads.push(read::lapsed(now.as_unix_micros(), None));
            reads.push(read::numbers(true));
            let (mut tx, rows) = Tx::begin(conn, &self.options, now, &reads)?;
            let lapsed = if exclusive { 2 } else { 0 };
            tx.numbers(&rows[lapsed + 1])?;
            let live = if exclusive {
                tx.live(&rows[1])?
            } else {
                Vec::new()
            };
            tx.expire(&rows[lapsed])?;
            if let Some(holder) = find_conflict(tx.policy(), slot, &live, now) {
                return Err(CoordError::Conflict {
                    work_type: request.work_type.clone(),
                    conflicting_work_item_id: holder.work_item_id.clone(),
                }
                .into());
            }
            let change = transition::claim(request, tx.new_ids(), tx.fence(), now);
            let claim = tx.record(change, true);
            tx.commit(seen)?;
            Ok(claim)
        })
    }

    fn post(&self, request: &PostRequest) -> Result<Claim, CoordError> {
        request.validate()?;
        self.change(Some(&request.agent_id), |conn, now, seen| {
            let deps: Vec<&str> = request.depends_on.iter().map(String::as_str).collect();
            let mut reads = vec![
                read::lapsed(now.as_unix_micros(), None),
                read::numbers(false),
            ];
            if !deps.is_empty() {
                // FOR SHARE: a cleanup cannot archive them before we commit.
                reads.push(read::existing_for_share(&deps));
            }
            let (mut tx, rows) = Tx::begin(conn, &self.options, now, &reads)?;
            let found = match rows.get(2) {
                Some(rows) => ids_of(rows)?,
                None => BTreeSet::new(),
            };
            if let Some(missing) = request.depends_on.iter().find(|d| !found.contains(*d)) {
                return Err(CoordError::NotFound {
                    work_item_id: missing.clone(),
                }
                .into());
            }
            tx.numbers(&rows[1])?;
            tx.expire(&rows[0])?;
            let claim = tx.record(transition::post(request, tx.new_ids(), now), true);
            tx.commit(seen)?;
            Ok(claim)
        })
    }

    fn next(&self, request: &NextRequest) -> Result<Claim, CoordError> {
        request.validate()?;
        let policy = Arc::clone(&self.options.policy);
        let shape = self.take_shape(request);
        self.change(Some(&request.agent_id), |conn, now, mut seen| {
            let blind = match &shape {
                Some(shape) => blind_next(conn, request, shape, policy.as_ref(), now, seen)?,
                None => None,
            };
            match blind {
                Some(Blind::Took(claim)) => return Ok(*claim),
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
            self.next_reading_first(conn, request, now, seen)
        })
    }

    fn act(
        &self,
        work_item_id: &str,
        action: &Action,
        actor: &Actor<'_>,
    ) -> Result<Claim, CoordError> {
        validate_name("the agent id", actor.agent_id)?;
        self.change(Some(actor.agent_id), |conn, now, seen| {
            let reads = [
                read::item(work_item_id),
                read::lapsed(now.as_unix_micros(), Some(work_item_id)),
                read::numbers(false),
            ];
            let (mut tx, rows) = Tx::begin(conn, &self.options, now, &reads)?;
            let row = rows[0].first().ok_or_else(|| CoordError::NotFound {
                work_item_id: work_item_id.to_owned(),
            })?;
            let old = claim_from(row)?;
            // The target first: a forced change to a lapsed claim acts on it
            // as it stands, before its expiry would be written down.
            let change = transition::apply(&old, action, actor, now)?;
            tx.numbers(&rows[2])?;
            tx.expire(&rows[1])?;
            let claim = tx.record(change, false);
            tx.commit(seen)?;
            Ok(claim)
        })
    }

    fn reap(&self, agent_id: &str) -> Result<Vec<Claim>, CoordError> {
        self.change(Some(agent_id), |conn, now, seen| {
            let reads = [
                read::lapsed(now.as_unix_micros(), None),
                read::numbers(false),
            ];
            let (mut tx, rows) = Tx::begin(conn, &self.options, now, &reads)?;
            tx.numbers(&rows[1])?;
            let expired = tx.expire(&rows[0])?;
            tx.commit(seen)?;
            Ok(expired)
        })
    }

    fn cleanup(&self, agent_id: &str, older_than: Duration) -> Result<Vec<String>, CoordError> {
        self.change(Some(agent_id), |conn, now, seen| {
            let cutoff = now
                .as_unix_micros()
                .saturating_sub(i64::try_from(older_than.as_micros()).unwrap_or(i64::MAX));
            // Lock first, then decide in a later statement: its snapshot
            // sees any item that came to depend on these while we waited.
            let reads = [
                format!(
                    "SELECT work_item_id FROM coord_claims \
                     WHERE finished_at IS NOT NULL AND finished_at <= {cutoff} FOR UPDATE"
                ),
                format!(
                    "WITH needed AS ( \
                       SELECT DISTINCT unnest(depends_on) AS id FROM coord_claims \
                       WHERE status IN ('pending', 'in_progress') AND cardinality(depends_on) > 0), \
                     moved AS ( \
                       DELETE FROM coord_claims AS c WHERE c.finished_at IS NOT NULL \
                         AND c.finished_at <= {cutoff} \
                         AND c.work_item_id NOT IN (SELECT id FROM needed) \
                       RETURNING c.work_item_id, c.seq, c.doc) \
                     INSERT INTO coord_archive (work_item_id, archived_at, doc) \
                     SELECT work_item_id, {}, doc FROM moved ORDER BY seq \
                     ON CONFLICT (work_item_id) DO UPDATE \
                       SET archived_at = excluded.archived_at, doc = excluded.doc \
                     RETURNING seq, work_item_id",
                    now.as_unix_micros()
                ),
            ];
            let (tx, rows) = Tx::begin(conn, &self.options, now, &reads)?;
            let mut moved = Vec::with_capacity(rows[1].len());
            for row in &rows[1] {
                let seq: i64 = row.get(0).and_then(|s| s.parse().ok()).unwrap_or(0);
                moved.push((seq, row.get(1).unwrap_or_default().to_owned()));
            }
            moved.sort();
            tx.commit(seen)?;
            Ok(moved.into_iter().map(|(_, id)| id).collect())
        })
    }

    fn get(&self, work_item_id: &str) -> Result<Claim, CoordError> {
        self.with_client(|client| {
            let row = client
                .query_opt(
                    "SELECT doc FROM coord_claims WHERE work_item_id = $1",
                    &[&work_item_id],
                )?
                .ok_or_else(|| CoordError::NotFound {
                    work_item_id: work_item_id.to_owned(),
                })?;
            claim_of(&row)
        })
    }

    fn list(&self, filter: &Filter) -> Result<Vec<Claim>, CoordError> {
        self.with_client(|client| {
            let rows = client.query(
                "SELECT doc FROM coord_claims \
                 WHERE ($1::text IS NULL OR status = $1) \
                   AND ($2::text IS NULL OR work_type = $2) \
                   AND ($3::text IS NULL OR agent_id = $3) \
                 ORDER BY seq",
                &[
                    &filter.status.map(Status::as_str),
                    &filter.work_type,
                    &filter.owner,
                ],
            )?;
            rows.iter().map(claim_of).collect()
        })
    }

    fn register_agent(&self, registration: &AgentRegistration) -> Result<AgentRecord, CoordError> {
        registration.validate()?;
        self.with_client(|client| {
            let now = (self.options.clock)();
            let mut tx = client.transaction()?;
            let record = upsert_agent(&mut tx, registration, now)?;
            tx.commit()?;
            Ok(record)
        })
    }

    fn agents(&self) -> Result<Vec<AgentRecord>, CoordError> {
        self.with_client(|client| {
            let rows = client.query("SELECT doc FROM coord_agents ORDER BY agent_id", &[])?;
            rows.iter()
                .map(|row| {
                    row.try_get::<_, Json<AgentRecord>>(0)
                        .map(|j| j.0)
                        .map_err(|e| {
                            Fail::Coord(CoordError::validation(format!(
                                "a row of coord_agents is not an agent record: {e}"
                            )))
                        })
                })
                .collect()
        })
    }

    /// Events after `cursor`, in an order consistent with every item's and
    /// every work type's history.
    ///
    /// Writers draw event ids while they hold their locks, but commit in any
    /// order, so a reader cannot trust "ids after the last one I saw". Each
    /// reader therefore first numbers, under one advisory lock, the
    /// committed events that have no number yet (`seq`, in id order), and
    /// then reads by `seq`: a late commit gets a later number, never a gap.
    fn events(&self, cursor: u64) -> Result<EventPage, CoordError> {
        self.with_conn(|conn| {
            let numbered = conn.batch(&format!(
                "BEGIN; {}; \
                 WITH base AS (SELECT coalesce(max(seq), 0) AS b FROM coord_events), \
                      todo AS (SELECT id, row_number() OVER (ORDER BY id) AS n \
                               FROM coord_events WHERE seq IS NULL) \
                 UPDATE coord_events AS e SET seq = base.b + todo.n \
                 FROM todo, base WHERE e.id = todo.id; COMMIT",
                crate::tx::sequencer_lock(&self.options.schema)
            ));
            if let Err(e) = numbered {
                // A failed statement leaves the transaction open and aborted.
                let _ = conn.client.simple_query("ROLLBACK");
                return Err(e.into());
            }
            let client = &mut conn.client;
            let after = i64::try_from(cursor).unwrap_or(i64::MAX);
            let rows = client.query(
                "SELECT seq, doc FROM coord_events WHERE seq > $1 ORDER BY seq",
                &[&after],
            )?;
            let mut events = Vec::with_capacity(rows.len());
            let mut last = cursor;
            for row in &rows {
                last = row.get::<_, i64>(0) as u64;
                events.push(row.try_get::<_, Json<Event>>(1).map(|j| j.0).map_err(|e| {
                    Fail::Coord(CoordError::validation(format!(
                        "event {last} in coord_events is not an event coord can read: {e}"
                    )))
                })?);
            }
            Ok(EventPage {
                events,
                cursor: last,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coord_core::ExclusivePerWorkType;
    use coord_testkit::{TestClock, shared_cluster};

    fn store(policy: Arc<dyn ConflictPolicy>) -> (PgStore, TestClock) {
        let cluster = shared_cluster();
        let clock = TestClock::new("2026-01-01T00:00:00Z");
        let options = PgStoreOptions {
            schema: cluster.fresh_schema("blind"),
            clock: clock.as_fn(),
            policy,
            ..PgStoreOptions::default()
        };
        (PgStore::connect(&cluster.url(), options).unwrap(), clock)
    }

    /// Round trips `op` took on `store`'s connection.
    fn trips<T>(store: &PgStore, op: impl FnOnce(&PgStore) -> T) -> (T, u64) {
        let before = store.slot().as_ref().unwrap().trips;
        let value = op(store);
        (value, store.slot().as_ref().unwrap().trips - before)
    }

    fn post(store: &PgStore, request: PostRequest) -> Claim {
        store.post(&request).unwrap()
    }

    #[test]
    fn a_claim_that_excludes_nobody_is_one_round_trip_and_returns_the_row_it_wrote() {
        let (store, _clock) = store(Arc::new(SeedPolicy));
        let request = ClaimRequest::new("agent", "build").description("it's \\ \"quoted\"");
        let (claim, n) = trips(&store, |s| s.claim(&request).unwrap());
        assert_eq!(n, 1);
        assert_eq!(store.get(&claim.work_item_id).unwrap(), claim);
        let event = store.events(0).unwrap().events.pop().unwrap();
        assert_eq!((event.fence, event.revision), (claim.fence, claim.revision));

        // With the agent's sighting fresh, the claim's statement goes alone
        // over the extended protocol: prepared on first use, then one round
        // trip; the rows and events are those the claims describe.
        let (second, n) = trips(&store, |s| s.claim(&request).unwrap());
        assert_eq!(n, 2);
        let (third, n) = trips(&store, |s| s.claim(&request).unwrap());
        assert_eq!(n, 1);
        for c in [&second, &third] {
            assert_eq!(store.get(&c.work_item_id).unwrap(), *c);
        }
        let logged: Vec<_> = store
            .events(0)
            .unwrap()
            .events
            .into_iter()
            .map(|e| (e.work_item_id, e.fence, e.revision))
            .collect();
        let claims = [&claim, &second, &third];
        let expected: Vec<_> = claims
            .iter()
            .map(|c| (Some(c.work_item_id.clone()), c.fence, c.revision))
            .collect();
        assert_eq!(logged, expected);
        assert!(claim.fence < second.fence && second.fence < third.fence);
        assert!(claim.revision < second.revision && second.revision < third.revision);
    }

    /// Sequences stop at their largest value; a change that needs one more
    /// is refused with the directory store's error, and writes nothing.
    #[test]
    fn an_exhausted_counter_is_refused_and_writes_nothing() {
        let (store, _clock) = store(Arc::new(SeedPolicy));
        store.claim(&ClaimRequest::new("agent", "build")).unwrap();
        let count = |store: &PgStore| store.list(&Filter::default()).unwrap().len();
        for (sequence, counter) in [("coord_fence", "fence"), ("coord_revision", "revision")] {
            store
                .slot()
                .as_mut()
                .unwrap()
                .batch(&format!("SELECT setval('{sequence}', 9223372036854775807)"))
                .unwrap();
            for priority in [Priority::Medium, Priority::High] {
                let request = ClaimRequest::new("agent", "build").priority(priority);
                let err = store.claim(&request).unwrap_err();
                assert_eq!(err.kind(), coord_core::ErrorKind::ValidationFailed, "{err}");
                assert!(
                    err.to_string()
                        .contains(&format!("{counter} counter is exhausted")),
                    "{err}"
                );
            }
            assert_eq!(count(&store), 1);
            store
                .slot()
                .as_mut()
                .unwrap()
                .batch(&format!("SELECT setval('{sequence}', 100)"))
                .unwrap();
        }
    }

    /// A ready item another transaction holds is not "nothing to take":
    /// `next` waits for it, takes it if it is given up, and says nothing is
    /// left only once it is gone.
    #[test]
    fn next_waits_for_a_held_item_instead_of_saying_nothing_is_left() {
        let (store, _clock) = store(Arc::new(SeedPolicy));
        let schema = store.options.schema.clone();
        for given_up in [true, false] {
            let item = post(&store, PostRequest::new("boss", "build"));
            let mut other = postgres::Client::connect(&shared_cluster().url(), NoTls).unwrap();
            let mut hold = other.transaction().unwrap();
            hold.execute(
                &format!("SELECT 1 FROM {schema}.coord_claims WHERE work_item_id = $1 FOR UPDATE"),
                &[&item.work_item_id],
            )
            .unwrap();
            let started = std::time::Instant::now();
            let result = std::thread::scope(|scope| {
                let taker = scope.spawn(|| store.next(&NextRequest::new("worker")));
                std::thread::sleep(Duration::from_millis(300));
                if given_up {
                    hold.rollback().unwrap();
                } else {
                    hold.execute(
                        &format!(
                            "UPDATE {schema}.coord_claims SET status = 'completed' \
                             WHERE work_item_id = $1"
                        ),
                        &[&item.work_item_id],
                    )
                    .unwrap();
                    hold.commit().unwrap();
                }
                taker.join().unwrap()
            });
            assert!(started.elapsed() >= Duration::from_millis(300));
            match result {
                Ok(taken) if given_up => assert_eq!(taken.work_item_id, item.work_item_id),
                Err(e) if !given_up => {
                    assert_eq!(e.kind(), coord_core::ErrorKind::NothingToTake, "{e}")
                }
                other => panic!("given up: {given_up}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_store_brings_an_older_layout_up_to_date_and_leaves_a_newer_one() {
        let (store, _clock) = store(Arc::new(SeedPolicy));
        let schema = store.options.schema.clone();
        let claim = store.claim(&ClaimRequest::new("agent", "build")).unwrap();
        let indexes = |store: &PgStore| -> Vec<String> {
            let mut slot = store.slot();
            let rows = slot
                .as_mut()
                .unwrap()
                .batch(&format!(
                    "SELECT indexname FROM pg_indexes WHERE schemaname = '{schema}' \
                     AND indexname IN ('coord_claims_lease', 'coord_claims_deadline'); \
                     SELECT value FROM coord_meta WHERE key = 'layout'"
                ))
                .unwrap();
            let mut found: Vec<String> = rows[0]
                .iter()
                .map(|r| r.get(0).unwrap().to_owned())
                .collect();
            found.extend(
                rows[1]
                    .iter()
                    .map(|r| format!("layout {}", r.get(0).unwrap())),
            );
            found
        };
        assert_eq!(indexes(&store), ["coord_claims_deadline", "layout 2"]);

        // The layout a coord of before layouts made: the lease index on
        // in-progress rows, no `layout` row.
        store
            .slot()
            .as_mut()
            .unwrap()
            .batch(
                "DROP INDEX coord_claims_deadline; \
                 CREATE INDEX coord_claims_lease ON coord_claims (lease_deadline) \
                     WHERE status = 'in_progress'; \
                 DELETE FROM coord_meta WHERE key = 'layout'",
            )
            .unwrap();
        let options = PgStoreOptions {
            schema: schema.clone(),
            ..PgStoreOptions::default()
        };
        let upgraded = PgStore::connect(&shared_cluster().url(), options.clone()).unwrap();
        assert_eq!(indexes(&upgraded), ["coord_claims_deadline", "layout 2"]);
        assert_eq!(upgraded.get(&claim.work_item_id).unwrap(), claim);

        // A newer layout is a layout this store can work on, as it is.
        upgraded
            .slot()
            .as_mut()
            .unwrap()
            .batch("UPDATE coord_meta SET value = 3 WHERE key = 'layout'")
            .unwrap();
        let later = PgStore::connect(&shared_cluster().url(), options).unwrap();
        assert_eq!(indexes(&later), ["coord_claims_deadline", "layout 3"]);
        later.claim(&ClaimRequest::new("agent", "build")).unwrap();
    }

    /// The most rows any scan in `plan` (EXPLAIN ANALYZE's JSON) read,
    /// those its filter dropped included.
    fn most_rows_scanned(plan: &serde_json::Value) -> f64 {
        let own = ["Actual Rows", "Rows Removed by Filter"]
            .iter()
            .filter_map(|k| plan.get(k).and_then(serde_json::Value::as_f64))
            .sum::<f64>()
            * plan
                .get("Actual Loops")
                .and_then(|l| l.as_f64())
                .unwrap_or(1.0);
        let below = plan
            .get("Plans")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten();
        below.map(most_rows_scanned).fold(own, f64::max)
    }

    #[test]
    fn the_lapsed_lease_probe_reads_no_in_progress_row_whatever_the_statistics() {
        let (store, clock) = store(Arc::new(SeedPolicy));
        store.claim(&ClaimRequest::new("agent", "build")).unwrap();
        let now = clock.now().as_unix_micros();
        let mut slot = store.slot();
        let conn = slot.as_mut().unwrap();
        // Statistics taken while nothing is in progress, then 50,000 items
        // in progress with deadlines to come: the case where a probe naming
        // the status (layout 1's) read every in-progress row through the
        // live-by-type index (checked: 50,001 rows).
        conn.batch(
            "INSERT INTO coord_claims (work_item_id, work_type, priority, status, posted_at, doc) \
             SELECT 'w' || g, 'job', 1, 'pending', g, '{}' \
             FROM generate_series(1, 50000) AS g",
        )
        .unwrap();
        conn.batch("VACUUM ANALYZE coord_claims").unwrap();
        conn.batch(&format!(
            "UPDATE coord_claims SET status = 'in_progress', agent_id = 'a', \
                 lease_deadline = {now} + 60000000, posted_at = NULL \
             WHERE status = 'pending'"
        ))
        .unwrap();
        let explain = |conn: &mut Conn, sql: &str| -> f64 {
            let results = conn
                .batch(&format!(
                    "BEGIN; EXPLAIN (ANALYZE, FORMAT JSON) {sql}; ROLLBACK"
                ))
                .unwrap();
            let text = results[1][0].get(0).unwrap();
            let json: serde_json::Value = serde_json::from_str(text).unwrap();
            most_rows_scanned(&json[0]["Plan"])
        };
        let probes = [
            format!(
                "SELECT {}",
                crate::tx::LAPSED.replace("$1", &now.to_string())
            ),
            format!("EXECUTE coord_lapsed({now}, NULL)"),
            format!(
                "EXECUTE coord_claim_blind('x', 'build', 1, 'in_progress', 'agent', {}, \
                 NULL, NULL, NULL, '{{}}'::jsonb, '{{}}'::jsonb, {now})",
                now + 1
            ),
        ];
        for probe in &probes {
            let rows = explain(conn, probe);
            assert!(rows <= 2.0, "{probe}: a scan read {rows} rows");
        }
    }

    #[test]
    fn next_takes_plain_work_in_one_round_trip_as_take_would() {
        let (store, _clock) = store(Arc::new(SeedPolicy));
        let request = NextRequest::new("worker");
        // First with the agent's sighting, in one simple-query message; then,
        // the sighting fresh, the statement alone over the extended protocol
        // (prepared on first use, then one round trip). Each does what
        // `take` does, with a fence drawn after the item's.
        for round_trips in [1, 2, 1] {
            let posted = post(&store, PostRequest::new("boss", "build"));
            let (taken, n) = trips(&store, |s| s.next(&request).unwrap());
            assert_eq!(n, round_trips);
            let fence = taken.fence.unwrap();
            let expected =
                transition::take(&posted, &request, fence, store.options.clock.as_ref()())
                    .unwrap()
                    .at_revision(taken.revision.unwrap());
            assert_eq!(taken, expected.claim);
            assert_eq!(store.get(&posted.work_item_id).unwrap(), taken);
            let event = store.events(0).unwrap().events.pop().unwrap();
            assert_eq!(Some(event), expected.event);
            assert!(fence > posted.fence.unwrap_or(0));
        }

        // Asked for some work types: the best of those.
        let build = post(&store, PostRequest::new("boss", "build"));
        let lint = post(&store, PostRequest::new("boss", "lint"));
        let typed = NextRequest::new("worker").work_types(["lint"]);
        let (taken, n) = trips(&store, |s| s.next(&typed).unwrap());
        assert_eq!(
            (taken.work_item_id.as_str(), n),
            (lint.work_item_id.as_str(), 2)
        );
        let (nothing, n) = trips(&store, |s| s.next(&typed));
        assert_eq!(
            nothing.unwrap_err().kind(),
            coord_core::ErrorKind::NothingToTake
        );
        assert_eq!(n, 1);
        // Quotes and backslashes travel as they are.
        let odd = NextRequest::new(r#"o'brien \"x\" \\"#);
        let taken = store.next(&odd).unwrap();
        assert_eq!(taken.work_item_id, build.work_item_id);
        assert_eq!(taken.agent_id.as_deref(), Some(odd.agent_id.as_str()));
        assert_eq!(store.get(&build.work_item_id).unwrap(), taken);

        let (nothing, n) = trips(&store, |s| s.next(&request));
        assert_eq!(
            nothing.unwrap_err().kind(),
            coord_core::ErrorKind::NothingToTake
        );
        assert_eq!(n, 1, "an empty queue is known in one round trip");
    }

    #[test]
    fn next_reads_first_when_the_best_item_needs_more_looked_at() {
        let (store, clock) = store(Arc::new(SeedPolicy));
        let request = NextRequest::new("worker");
        // Exclusive work: the live claims of its type must be read.
        let high = post(
            &store,
            PostRequest::new("boss", "deploy").priority(Priority::High),
        );
        let (held, n) = trips(&store, |s| s.next(&request).unwrap());
        assert_eq!(
            (held.work_item_id.as_str(), n > 1),
            (high.work_item_id.as_str(), true)
        );

        // Waiting on a dependency: the one behind it is taken instead.
        let first = post(
            &store,
            PostRequest::new("boss", "build").priority(Priority::High),
        );
        let blocked = post(
            &store,
            PostRequest::new("boss", "build")
                .priority(Priority::Critical)
                .after([first.work_item_id.clone()]),
        );
        let (taken, n) = trips(&store, |s| s.next(&request).unwrap());
        assert_eq!(taken.work_item_id, first.work_item_id);
        assert!(n > 1);
        assert_eq!(
            store.get(&blocked.work_item_id).unwrap().status,
            Status::Pending
        );

        // Lapsed leases are written down before anything is taken.
        post(&store, PostRequest::new("boss", "lint"));
        clock.advance(request.lease + Duration::from_secs(1));
        let (taken, n) = trips(&store, |s| s.next(&request).unwrap());
        assert!(n > 1);
        assert_ne!(taken.work_item_id, blocked.work_item_id);
        let lapsed = store.get(&high.work_item_id).unwrap();
        assert!(lapsed.status != Status::InProgress || lapsed.fence > held.fence);
        let kinds: Vec<_> = store
            .events(0)
            .unwrap()
            .events
            .iter()
            .map(|e| e.event)
            .collect();
        assert!(kinds.contains(&coord_core::EventKind::Expired), "{kinds:?}");
    }

    #[test]
    fn a_policy_that_does_not_say_what_never_conflicts_reads_first() {
        let (store, _clock) = store(Arc::new(ExclusivePerWorkType));
        let posted = post(&store, PostRequest::new("boss", "build"));
        let (taken, n) = trips(&store, |s| s.next(&NextRequest::new("worker")).unwrap());
        assert_eq!(taken.work_item_id, posted.work_item_id);
        assert!(n > 1);
        let agents: Vec<String> = store
            .agents()
            .unwrap()
            .into_iter()
            .map(|a| a.agent_id)
            .collect();
        assert!(
            agents.contains(&"worker".to_owned()),
            "the worker is seen: {agents:?}"
        );
    }
}
