use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use coord_core::transition::{self, Action, Actor, Change, NewIds};
use coord_core::{
    AgentRecord, AgentRegistration, Claim, ClaimHead, ClaimRequest, ConflictPolicy, CoordError,
    Event, EventPage, Filter, NextRequest, PostRequest, Priority, SeedPolicy, Slot, Status, Store,
    Timestamp, find_conflict, needs_exclusion, validate_name,
};
use postgres::error::SqlState;
use postgres::types::Json;
use postgres::{Client, Config, NoTls, Row, Transaction};

use crate::schema::{self, LOCK_CLASS, Migrated};

/// The store's clock; tests replace it.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

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
            clock: Arc::new(Timestamp::now),
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
    client: Mutex<Option<Client>>,
    /// When this store last recorded each agent (see `SEEN_PRECISION`).
    recorded: Mutex<HashMap<String, Timestamp>>,
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

/// Candidates `next` locks at a time.
const NEXT_BATCH: i64 = 32;

/// Why a transaction did not commit.
enum Fail {
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
        if !schema::valid_schema_name(&options.schema) {
            return Err(CoordError::validation(format!(
                "schema {:?} is not a plain lower-case SQL name",
                options.schema
            )));
        }
        let store = PgStore {
            config,
            options,
            client: Mutex::new(None),
            recorded: Mutex::default(),
        };
        {
            let mut slot = store.slot();
            let mut client = store.open()?;
            let mut tx = client.transaction().map_err(|e| store.db_error(e))?;
            let migrated = schema::migrate(&mut tx, &store.options.schema)
                .and_then(|m| tx.commit().map(|()| m))
                .map_err(|e| store.db_error(e))?;
            if let Migrated::Newer(version) = migrated {
                return Err(CoordError::validation(format!(
                    "the database schema {:?} is at version {version}, newer than this coord \
                     understands ({}); upgrade coord",
                    store.options.schema,
                    schema::SCHEMA_VERSION
                )));
            }
            *slot = Some(client);
        }
        Ok(store)
    }

    pub fn options(&self) -> &PgStoreOptions {
        &self.options
    }

    fn slot(&self) -> MutexGuard<'_, Option<Client>> {
        self.client.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open(&self) -> Result<Client, CoordError> {
        let mut client = self.config.connect(NoTls).map_err(|e| self.db_error(e))?;
        client
            .batch_execute(&format!(
                "SET search_path TO \"{}\"; SET lock_timeout = {};",
                self.options.schema,
                self.options.lock_timeout.as_millis().max(1)
            ))
            .map_err(|e| self.db_error(e))?;
        Ok(client)
    }

    fn db_error(&self, e: postgres::Error) -> CoordError {
        if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
            return CoordError::LockTimeout {
                path: PathBuf::from(format!("postgresql:{}", self.options.schema)),
                waited: self.options.lock_timeout,
            };
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
        let mut slot = self.slot();
        let mut attempt = 0;
        loop {
            attempt += 1;
            if slot.as_ref().is_none_or(Client::is_closed) {
                *slot = Some(self.open()?);
            }
            let client = slot.as_mut().expect("opened above");
            match body(client) {
                Ok(value) => return Ok(value),
                Err(Fail::Coord(e)) => return Err(e),
                Err(Fail::Db(e)) if retryable(&e) && attempt < MAX_ATTEMPTS => {
                    tracing::debug!("running a transaction again after: {e}");
                }
                Err(Fail::Db(e)) => {
                    if client.is_closed() {
                        *slot = None;
                    }
                    return Err(self.db_error(e));
                }
            }
        }
    }

    /// Runs a change in one transaction: `body` reads and locks what it
    /// needs and records its changes; they are written and committed
    /// together, with the acting agent's `last_seen`.
    fn change<T>(
        &self,
        agent: Option<&str>,
        mut body: impl FnMut(&mut Tx<'_, '_>) -> Result<T, Fail>,
    ) -> Result<T, CoordError> {
        let mut touched = None;
        let value = self.with_client(|client| {
            let now = (self.options.clock)();
            let mut tx = Tx {
                tx: client.transaction()?,
                now,
                options: &self.options,
                revision: None,
                changed: HashMap::new(),
                order: Vec::new(),
                events: Vec::new(),
            };
            let value = body(&mut tx)?;
            touched = None;
            if let Some(agent) = agent.filter(|a| self.options.track_agents && self.stale(a, now)) {
                let seen = AgentRegistration {
                    agent_id: agent.to_owned(),
                    team: None,
                    capacity: None,
                };
                upsert_agent(&mut tx.tx, &seen, now)?;
                touched = Some((agent.to_owned(), now));
            }
            tx.commit()?;
            Ok(value)
        })?;
        if let Some((agent, now)) = touched {
            self.recorded
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(agent, now);
        }
        Ok(value)
    }

    /// Whether `agent`'s `last_seen` may need writing.
    fn stale(&self, agent: &str, now: Timestamp) -> bool {
        self.recorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(agent)
            .is_none_or(|at| at.saturating_add(coord_core::SEEN_PRECISION) <= now)
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

/// Reads a `doc` column as a claim.
fn claim_of(row: &Row) -> Result<Claim, Fail> {
    row.try_get::<_, Json<Claim>>("doc")
        .map(|j| j.0)
        .map_err(|e| {
            Fail::Coord(CoordError::validation(format!(
                "a row of coord_claims is not a claim coord can read: {e}"
            )))
        })
}

fn micros(t: Option<Timestamp>) -> Option<i64> {
    t.map(Timestamp::as_unix_micros)
}

fn rank(p: Priority) -> i16 {
    Priority::ALL.iter().position(|q| *q == p).unwrap_or(0) as i16
}

/// Two claims that may exclude each other lock the same key.
fn type_key(schema: &str, work_type: &str) -> String {
    format!("{schema}/{work_type}")
}

/// One change in progress: the transaction, and what it will write.
struct Tx<'c, 'o> {
    tx: Transaction<'c>,
    now: Timestamp,
    options: &'o PgStoreOptions,
    revision: Option<u64>,
    /// Items changed so far (their newest state), written at commit.
    changed: HashMap<String, (Claim, bool)>,
    /// Ids in `changed`, in the order they were first changed.
    order: Vec<String>,
    events: Vec<Event>,
}

impl Tx<'_, '_> {
    fn policy(&self) -> &dyn ConflictPolicy {
        self.options.policy.as_ref()
    }

    /// This change's revision, drawn on first use.
    fn revision(&mut self) -> Result<u64, Fail> {
        if let Some(r) = self.revision {
            return Ok(r);
        }
        let r: i64 = self
            .tx
            .query_one("SELECT nextval('coord_revision')", &[])?
            .get(0);
        self.revision = Some(r as u64);
        Ok(r as u64)
    }

    /// A new fence (and the revision, in the same round trip if not drawn).
    fn fence(&mut self) -> Result<u64, Fail> {
        if self.revision.is_none() {
            let row = self.tx.query_one(
                "SELECT nextval('coord_revision'), nextval('coord_fence')",
                &[],
            )?;
            self.revision = Some(row.get::<_, i64>(0) as u64);
            return Ok(row.get::<_, i64>(1) as u64);
        }
        let f: i64 = self
            .tx
            .query_one("SELECT nextval('coord_fence')", &[])?
            .get(0);
        Ok(f as u64)
    }

    /// The item as this transaction sees it: changed here, or as read.
    fn current(&self, read: Claim) -> Claim {
        match self.changed.get(&read.work_item_id) {
            Some((c, _)) => c.clone(),
            None => read,
        }
    }

    /// Records `change` (stamped with this revision) to be written.
    fn record(&mut self, change: Change, new: bool) -> Result<Claim, Fail> {
        let change = change.at_revision(self.revision()?);
        let id = change.claim.work_item_id.clone();
        match self.changed.get_mut(&id) {
            Some(entry) => entry.0 = change.claim.clone(),
            None => {
                self.order.push(id.clone());
                self.changed.insert(id, (change.claim.clone(), new));
            }
        }
        self.events.extend(change.event);
        Ok(change.claim)
    }

    /// Writes down lapsed leases, skipping items another transaction holds
    /// (it will write its own) and `except`.
    fn reap(&mut self, except: Option<&str>) -> Result<Vec<Claim>, Fail> {
        let rows = self.tx.query(
            "SELECT doc FROM coord_claims \
             WHERE status = 'in_progress' AND lease_deadline <= $1 \
               AND ($2::text IS NULL OR work_item_id <> $2) \
             ORDER BY lease_deadline FOR UPDATE SKIP LOCKED",
            &[&self.now.as_unix_micros(), &except],
        )?;
        let mut expired = Vec::new();
        for row in &rows {
            let claim = self.current(claim_of(row)?);
            if let Some(change) = transition::expire(&claim, self.now) {
                expired.push(self.record(change, false)?);
            }
        }
        Ok(expired)
    }

    /// Takes exclusion on `work_types`: their advisory locks (in one order,
    /// so two takers cannot deadlock), then their in-progress rows. Lapsed
    /// leases among them are written down; returns the live claims.
    fn exclude(&mut self, work_types: &BTreeSet<&str>) -> Result<Vec<ClaimHead>, Fail> {
        if work_types.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = work_types
            .iter()
            .map(|t| type_key(&self.options.schema, t))
            .collect();
        self.tx.execute(
            "SELECT count(pg_advisory_xact_lock($1, k)) \
             FROM (SELECT DISTINCT hashtext(t) AS k FROM unnest($2::text[]) AS t ORDER BY 1) AS s",
            &[&LOCK_CLASS, &keys],
        )?;
        let types: Vec<&str> = work_types.iter().copied().collect();
        let rows = self.tx.query(
            "SELECT doc FROM coord_claims WHERE status = 'in_progress' AND work_type = ANY($1) \
             ORDER BY work_item_id FOR UPDATE",
            &[&types],
        )?;
        let mut live = Vec::new();
        for row in &rows {
            let claim = self.current(claim_of(row)?);
            match transition::expire(&claim, self.now) {
                Some(change) => {
                    self.record(change, false)?;
                }
                None if claim.head().is_live(self.now) => live.push(claim.head()),
                None => {}
            }
        }
        Ok(live)
    }

    /// Ids for a new item. Two machines minting the same id in the same
    /// nanosecond make the insert fail, and the change runs again.
    fn new_ids(&self) -> NewIds {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        let taken = |id: &str| self.changed.contains_key(id);
        NewIds {
            work_item_id: coord_core::unique_id("work", nanos, taken),
            coordination_id: coord_core::unique_id("coord", nanos, taken),
        }
    }

    /// Writes every change and event in one statement, then commits.
    fn commit(self) -> Result<(), postgres::Error> {
        let Tx {
            mut tx,
            changed,
            order,
            events,
            ..
        } = self;
        if !changed.is_empty() || !events.is_empty() {
            let mut new = Columns::default();
            let mut old = Columns::default();
            for id in &order {
                let (claim, is_new) = &changed[id];
                if *is_new { &mut new } else { &mut old }.push(claim);
            }
            let events: Vec<Json<&Event>> = events.iter().map(Json).collect();
            tx.execute(
                "WITH new AS ( \
                   INSERT INTO coord_claims (work_item_id, work_type, priority, status, agent_id, \
                       lease_deadline, posted_at, retry_at, finished_at, depends_on, doc) \
                   SELECT v.id, v.work_type, v.priority, v.status, v.agent_id, v.lease_deadline, \
                       v.posted_at, v.retry_at, v.finished_at, \
                       ARRAY(SELECT jsonb_array_elements_text(coalesce(v.doc->'depends_on', '[]'))), \
                       v.doc \
                   FROM unnest($1::text[], $2::text[], $3::int2[], $4::text[], $5::text[], \
                       $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::jsonb[]) WITH ORDINALITY \
                       AS v(id, work_type, priority, status, agent_id, lease_deadline, posted_at, \
                            retry_at, finished_at, doc, n) \
                   ORDER BY v.n RETURNING 1 \
                 ), old AS ( \
                   UPDATE coord_claims AS c SET status = v.status, agent_id = v.agent_id, \
                       lease_deadline = v.lease_deadline, retry_at = v.retry_at, \
                       finished_at = v.finished_at, doc = v.doc \
                   FROM unnest($11::text[], $12::text[], $13::text[], $14::int8[], $15::int8[], \
                       $16::int8[], $17::jsonb[]) \
                       AS v(id, status, agent_id, lease_deadline, retry_at, finished_at, doc) \
                   WHERE c.work_item_id = v.id RETURNING 1 \
                 ), log AS ( \
                   INSERT INTO coord_events (doc) \
                   SELECT e.doc FROM unnest($18::jsonb[]) WITH ORDINALITY AS e(doc, n) ORDER BY e.n \
                   RETURNING 1 \
                 ) \
                 SELECT (SELECT count(*) FROM new), (SELECT count(*) FROM old), \
                        (SELECT count(*) FROM log)",
                &[
                    &new.ids,
                    &new.work_types,
                    &new.priorities,
                    &new.statuses,
                    &new.agents,
                    &new.lease_deadlines,
                    &new.posted_ats,
                    &new.retry_ats,
                    &new.finished_ats,
                    &new.docs,
                    &old.ids,
                    &old.statuses,
                    &old.agents,
                    &old.lease_deadlines,
                    &old.retry_ats,
                    &old.finished_ats,
                    &old.docs,
                    &events,
                ],
            )?;
        }
        tx.commit()
    }
}

/// Claims as the columns of the flush statement.
#[derive(Default)]
struct Columns<'a> {
    ids: Vec<&'a str>,
    work_types: Vec<&'a str>,
    priorities: Vec<i16>,
    statuses: Vec<&'static str>,
    agents: Vec<Option<&'a str>>,
    lease_deadlines: Vec<Option<i64>>,
    posted_ats: Vec<Option<i64>>,
    retry_ats: Vec<Option<i64>>,
    finished_ats: Vec<Option<i64>>,
    docs: Vec<Json<&'a Claim>>,
}

impl<'a> Columns<'a> {
    fn push(&mut self, c: &'a Claim) {
        let head = c.head();
        self.ids.push(&c.work_item_id);
        self.work_types.push(&c.work_type);
        self.priorities.push(rank(c.priority));
        self.statuses.push(c.status.as_str());
        self.agents.push(c.agent_id.as_deref());
        self.lease_deadlines
            .push(if c.status == Status::InProgress {
                micros(head.lease_deadline())
            } else {
                None
            });
        self.posted_ats.push(micros(c.posted_at));
        self.retry_ats.push(micros(c.retry_at));
        // A final item without its time counts as finished long ago.
        self.finished_ats.push(
            c.status
                .is_final()
                .then(|| micros(head.finished_at()).unwrap_or(0)),
        );
        self.docs.push(Json(c));
    }
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

impl Store for PgStore {
    fn claim(&self, request: &ClaimRequest) -> Result<Claim, CoordError> {
        request.validate()?;
        self.change(Some(&request.agent_id), |tx| {
            let slot = Slot {
                work_type: &request.work_type,
                priority: request.priority,
            };
            let mut types = BTreeSet::new();
            if needs_exclusion(tx.policy(), slot) {
                types.insert(request.work_type.as_str());
            }
            let live = tx.exclude(&types)?;
            tx.reap(None)?;
            if let Some(holder) = find_conflict(tx.policy(), slot, &live, tx.now) {
                return Err(CoordError::Conflict {
                    work_type: request.work_type.clone(),
                    conflicting_work_item_id: holder.work_item_id.clone(),
                }
                .into());
            }
            let fence = tx.fence()?;
            let change = transition::claim(request, tx.new_ids(), fence, tx.now);
            tx.record(change, true)
        })
    }

    fn post(&self, request: &PostRequest) -> Result<Claim, CoordError> {
        request.validate()?;
        self.change(Some(&request.agent_id), |tx| {
            if !request.depends_on.is_empty() {
                // FOR SHARE: a cleanup cannot archive them before we commit.
                let found: HashSet<String> = tx
                    .tx
                    .query(
                        "SELECT work_item_id FROM coord_claims WHERE work_item_id = ANY($1) \
                         FOR SHARE",
                        &[&request.depends_on],
                    )?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                if let Some(missing) = request.depends_on.iter().find(|d| !found.contains(*d)) {
                    return Err(CoordError::NotFound {
                        work_item_id: missing.clone(),
                    }
                    .into());
                }
            }
            tx.reap(None)?;
            let change = transition::post(request, tx.new_ids(), tx.now);
            tx.record(change, true)
        })
    }

    fn next(&self, request: &NextRequest) -> Result<Claim, CoordError> {
        request.validate()?;
        self.change(Some(&request.agent_id), |tx| {
            tx.reap(None)?;
            let mut passed: Vec<String> = Vec::new();
            loop {
                let rows = tx.tx.query(
                    "SELECT doc FROM coord_claims \
                     WHERE status = 'pending' AND (retry_at IS NULL OR retry_at <= $1) \
                       AND (cardinality($2::text[]) = 0 OR work_type = ANY($2)) \
                       AND NOT (work_item_id = ANY($3)) \
                     ORDER BY priority DESC, posted_at NULLS FIRST, seq \
                     LIMIT $4 FOR UPDATE SKIP LOCKED",
                    &[
                        &tx.now.as_unix_micros(),
                        &request.work_types,
                        &passed,
                        &NEXT_BATCH,
                    ],
                )?;
                let full_batch = rows.len() as i64 == NEXT_BATCH;
                let mut candidates: Vec<Claim> = Vec::with_capacity(rows.len() + 1);
                for row in &rows {
                    candidates.push(tx.current(claim_of(row)?));
                }
                // Items this change itself just put back on the queue.
                if passed.is_empty() {
                    let read: HashSet<&str> =
                        candidates.iter().map(|c| c.work_item_id.as_str()).collect();
                    let requeued: Vec<Claim> = tx
                        .order
                        .iter()
                        .map(|id| &tx.changed[id].0)
                        .filter(|c| {
                            c.status == Status::Pending && !read.contains(c.work_item_id.as_str())
                        })
                        .cloned()
                        .collect();
                    candidates.extend(requeued);
                }
                if candidates.is_empty() {
                    break;
                }
                let heads: Vec<ClaimHead> = candidates.iter().map(Claim::head).collect();
                let dependencies: Vec<&str> = heads
                    .iter()
                    .flat_map(|h| h.depends_on.iter().map(String::as_str))
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let mut context: Vec<ClaimHead> = Vec::new();
                if !dependencies.is_empty() {
                    for row in tx.tx.query(
                        "SELECT doc FROM coord_claims WHERE work_item_id = ANY($1)",
                        &[&dependencies],
                    )? {
                        context.push(tx.current(claim_of(&row)?).head());
                    }
                }
                let exclusive: BTreeSet<&str> = heads
                    .iter()
                    .filter(|h| needs_exclusion(tx.policy(), Slot::from(*h)))
                    .map(|h| h.work_type.as_str())
                    .collect();
                context.extend(tx.exclude(&exclusive)?);
                let refs: Vec<&ClaimHead> = heads.iter().collect();
                let policy = Arc::clone(&tx.options.policy);
                if let Some(i) =
                    transition::pick_next_from(&refs, &context, request, policy.as_ref(), tx.now)
                {
                    let fence = tx.fence()?;
                    let change = transition::take(&candidates[i], request, fence, tx.now)?;
                    return tx.record(change, false);
                }
                if !full_batch {
                    break;
                }
                passed.extend(candidates.into_iter().map(|c| c.work_item_id));
            }
            Err(CoordError::NothingToTake {
                work_types: request.work_types.clone(),
            }
            .into())
        })
    }

    fn act(
        &self,
        work_item_id: &str,
        action: &Action,
        actor: &Actor<'_>,
    ) -> Result<Claim, CoordError> {
        validate_name("the agent id", actor.agent_id)?;
        self.change(Some(actor.agent_id), |tx| {
            let row = tx
                .tx
                .query_opt(
                    "SELECT doc FROM coord_claims WHERE work_item_id = $1 FOR UPDATE",
                    &[&work_item_id],
                )?
                .ok_or_else(|| CoordError::NotFound {
                    work_item_id: work_item_id.to_owned(),
                })?;
            let old = claim_of(&row)?;
            // The target first: a forced change to a lapsed claim acts on it
            // as it stands, before its expiry would be written down.
            let change = transition::apply(&old, action, actor, tx.now)?;
            tx.reap(Some(work_item_id))?;
            tx.record(change, false)
        })
    }

    fn reap(&self, agent_id: &str) -> Result<Vec<Claim>, CoordError> {
        self.change(Some(agent_id), |tx| tx.reap(None))
    }

    fn cleanup(&self, agent_id: &str, older_than: Duration) -> Result<Vec<String>, CoordError> {
        self.change(Some(agent_id), |tx| {
            let cutoff = tx
                .now
                .as_unix_micros()
                .saturating_sub(i64::try_from(older_than.as_micros()).unwrap_or(i64::MAX));
            // Lock first, then decide in a later statement: its snapshot sees
            // any item that came to depend on these while we waited.
            let locked: Vec<String> = tx
                .tx
                .query(
                    "SELECT work_item_id FROM coord_claims \
                     WHERE finished_at IS NOT NULL AND finished_at <= $1 FOR UPDATE",
                    &[&cutoff],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect();
            if locked.is_empty() {
                return Ok(Vec::new());
            }
            let now = tx.now.as_unix_micros();
            let mut moved: Vec<(i64, String)> = tx
                .tx
                .query(
                    "WITH moved AS ( \
                       DELETE FROM coord_claims AS c WHERE c.work_item_id = ANY($1) \
                         AND NOT EXISTS (SELECT 1 FROM coord_claims AS p \
                             WHERE p.status IN ('pending', 'in_progress') \
                               AND p.depends_on @> ARRAY[c.work_item_id]) \
                       RETURNING c.work_item_id, c.seq, c.doc) \
                     INSERT INTO coord_archive (work_item_id, archived_at, doc) \
                     SELECT work_item_id, $2, doc FROM moved ORDER BY seq \
                     ON CONFLICT (work_item_id) DO UPDATE \
                       SET archived_at = excluded.archived_at, doc = excluded.doc \
                     RETURNING seq, work_item_id",
                    &[&locked, &now],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            moved.sort();
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
        validate_name("the agent id", &registration.agent_id)?;
        if let Some(team) = &registration.team {
            validate_name("the team", team)?;
        }
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
        self.with_client(|client| {
            let mut tx = client.transaction()?;
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                &[&LOCK_CLASS, &format!("{}#events", self.options.schema)],
            )?;
            tx.execute(
                "WITH base AS (SELECT coalesce(max(seq), 0) AS b FROM coord_events), \
                      todo AS (SELECT id, row_number() OVER (ORDER BY id) AS n \
                               FROM coord_events WHERE seq IS NULL) \
                 UPDATE coord_events AS e SET seq = base.b + todo.n \
                 FROM todo, base WHERE e.id = todo.id",
                &[],
            )?;
            tx.commit()?;
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
