//! [`PgStore`]: the store, its one connection (opened again when it
//! breaks), the transaction around each change (run again after a
//! deadlock or an id clash), and the reads, which need no transaction of
//! their own. What each change reads and writes is in `changes`.

use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use coord_core::operate::{OperateRequest, Paused};
use coord_core::trace::{RunSpans, item_attributes, outcome_attributes};
use coord_core::transition::{Action, Actor};
use coord_core::{
    AgentRecord, AgentRegistration, Answer, Claim, ClaimRequest, CoordError, EXPIRING_WITHIN,
    Event, EventPage, Filter, IdempotencyKey, KeyedChange, LockName, NextRequest, PostRequest,
    Priority, Sightings, Stats, Status, Store, Timestamp, Wakeup, system_clock, validate_name,
};
use postgres::config::SslMode;
use postgres::error::SqlState;
use postgres::types::Json;
use postgres::{Client, Config, Transaction};
use serde_json::{Map, Value};

use crate::changes;
use crate::conn::Conn;
use crate::fail::{Fail, retryable};
use crate::keys::{self, KeyedCall};
use crate::options::PgStoreOptions;
use crate::rows::claim_from_doc;
use crate::schema::{self, Migrated};
use crate::spans;
use crate::take::TakeShape;
use crate::time::{self, ServerClock};
use crate::tls::{self, MakeTlsConnector};
use crate::wakeup::LogWaiter;

/// Work items kept in a PostgreSQL database.
///
/// Holds one connection, opened on [`PgStore::connect`] and opened again
/// when it breaks. Operations from several threads take turns on it.
pub struct PgStore {
    config: Config,
    /// `None` when TLS is never tried (see `tls.rs`).
    tls: Option<MakeTlsConnector>,
    /// Where every time the store compares or writes comes from.
    time: ServerClock,
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

impl PgStore {
    /// Connects to the database `url` (a libpq connection string or URI,
    /// e.g. `postgresql://user@host/db` or `host=/run/postgresql dbname=x`)
    /// and creates coord's tables if they are missing.
    pub fn connect(url: &str, options: PgStoreOptions) -> Result<PgStore, CoordError> {
        let tls = tls::settings(url, |name| std::env::var(name).ok())?;
        let mut config = Config::from_str(&tls.rest).map_err(|e| {
            CoordError::invalid_input(format!("not a valid PostgreSQL connection string: {e}"))
        })?;
        let connector = tls.connector(config.get_hosts())?;
        config.ssl_mode(match connector {
            Some(_) => tls.wire_mode(),
            None => SslMode::Disable,
        });
        if let Some(problem) = schema::schema_name_problem(&options.schema) {
            return Err(CoordError::invalid_input(format!(
                "schema {:?} {problem}",
                options.schema
            )));
        }
        if !schema::policy_fits_schema(options.policy.as_ref()) {
            return Err(CoordError::invalid_input(format!(
                "the conflict policy {:?} lets two high or critical claims of one work type \
                 run together; the PostgreSQL store's schema refuses that (one live high or \
                 critical claim per work type), so it needs a policy at least as strict",
                options.policy
            )));
        }
        // Session settings travel with the connection's start-up message:
        // no round trip, and no transaction can undo them.
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
            tls: connector,
            time: ServerClock::new(options.clock.clone()),
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

    /// Reads the server's clock on `conn` (one round trip).
    fn read_server_clock(&self, conn: &mut Conn) -> Result<(), postgres::Error> {
        let sent = self.time.client_now();
        let rows = conn.batch(time::SERVER_NOW_SQL)?;
        // A reading that is not a number keeps the last one.
        if let Ok(micros) = server_micros(&rows[0]) {
            self.time.record(sent, micros);
        }
        Ok(())
    }

    fn slot(&self) -> MutexGuard<'_, Option<Conn>> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a connection ready for changes: session settings, and the
    /// tables (made or brought up to date if needed). A store that is up
    /// to date costs one round trip after the connection's own start.
    fn open(&self) -> Result<Conn, CoordError> {
        let client = tls::connect(&self.config, self.tls.as_ref()).map_err(|e| {
            match self.db_error(e) {
                // Where it tried, so the reader knows which server or socket.
                CoordError::Database { message, source } => CoordError::Database {
                    message: format!("{message} (connecting to {})", self.server()),
                    source,
                },
                other => other,
            }
        })?;
        let mut conn = Conn::new(client);
        let schema = &self.options.schema;
        // The server's clock rides along with the layout check.
        let sent = self.time.client_now();
        let current = conn.batch(&format!(
            "{}; {}",
            time::SERVER_NOW_SQL,
            schema::current_sql()
        ));
        let up_to_date = match current {
            Ok(results) => {
                self.time.record(sent, server_micros(&results[0])?);
                !results[1].is_empty()
            }
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
            let migrated = schema::migrate(&mut tx, schema).map_err(|e| self.db_error(e))?;
            match migrated {
                Migrated::Current => {
                    tx.commit().map_err(|e| self.db_error(e))?;
                    self.read_server_clock(&mut conn)
                        .map_err(|e| self.db_error(e))?;
                }
                Migrated::Newer(version) => {
                    return Err(CoordError::damaged(format!(
                        "the database schema {schema:?} is at version {version}, newer than \
                         this coord understands ({}); upgrade coord",
                        schema::SCHEMA_VERSION
                    )));
                }
                Migrated::DuplicateExclusive(duplicates) => {
                    let listed: Vec<String> = duplicates
                        .iter()
                        .map(|(work_type, ids)| format!("{work_type:?}: {ids}"))
                        .collect();
                    return Err(CoordError::damaged(format!(
                        "the schema {schema:?} cannot be brought up to layout {}, which refuses \
                         a second live high or critical claim of one work type: these work \
                         types have more than one ({}). End all but one of each (coord fail \
                         ID --force, or complete) with a coord that knows the older layout, \
                         then connect again; nothing was changed",
                        schema::LAYOUT,
                        listed.join("; ")
                    )));
                }
            }
        }
        Ok(conn)
    }

    /// The servers the configuration names: `host:port`, or the socket
    /// file a Unix host means.
    fn server(&self) -> String {
        use postgres::config::Host;
        let ports = self.config.get_ports();
        let port = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, host)| match host {
                Host::Tcp(name) => format!("{name}:{}", port(i)),
                Host::Unix(dir) => format!("{}/.s.PGSQL.{}", dir.display(), port(i)),
            })
            .collect();
        if hosts.is_empty() {
            "the default socket".to_owned()
        } else {
            hosts.join(", ")
        }
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
                lock: LockName::Database {
                    schema: self.options.schema.clone(),
                },
                waited: self.options.lock_timeout,
            };
        }
        if e.code() == Some(&SqlState::UNTRANSLATABLE_CHARACTER)
            || e.code() == Some(&SqlState::CHARACTER_NOT_IN_REPERTOIRE)
        {
            return CoordError::invalid_input(format!(
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
    pub(crate) fn with_client<T>(
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
            } else if self.time.stale() {
                let conn = slot.as_mut().expect("checked above");
                if let Err(e) = self.read_server_clock(conn) {
                    if conn.client.is_closed() {
                        *slot = Some(self.open()?);
                    } else {
                        return Err(self.db_error(e));
                    }
                }
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

    /// Runs a change: `body` opens its transaction (`Tx::begin`),
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
            let now = self.time.now();
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

    /// [`Store::apply_once`], untraced.
    fn apply_keyed(
        &self,
        call: &KeyedCall,
        key: &IdempotencyKey,
        change: &KeyedChange<'_>,
    ) -> Result<Claim, CoordError> {
        self.change(Some(change.agent_id()), |conn, now, seen| {
            if let Some(remembered) = keys::lookup(&mut conn.client, call, now)? {
                return Ok(remembered.replay(key, change)?);
            }
            conn.keyed = Some(call.clone());
            let made = match *change {
                KeyedChange::Claim(r) => changes::claim(conn, &self.options, r, now, seen),
                KeyedChange::Post(r) => changes::post(conn, r, now, seen),
                KeyedChange::Next(r) => changes::next(conn, &self.options, None, r, 1, now, seen)
                    .map(|mut taken| taken.pop().expect("at least one taken")),
                KeyedChange::Act {
                    work_item_id,
                    action,
                    ref actor,
                } => changes::act(conn, work_item_id, action, actor, now, seen),
            };
            conn.keyed = None;
            let Err(Fail::Coord(error)) = made else {
                return made;
            };
            // A refusal changed nothing: its key goes in on its own.
            let refused = Err(error);
            if let Some(answer @ Answer::Refused(_)) = Answer::of(&refused) {
                conn.batch(&call.remember_sql(&answer, now))?;
            }
            Ok(refused?)
        })
    }

    /// Runs the change `name` by `agent`; with a span file, its span (and
    /// one per round trip under it) is appended there, described by what
    /// it ended with. A span file that cannot be written changes nothing of
    /// the change's result (it is logged).
    fn traced<T>(
        &self,
        name: &str,
        agent: Option<&str>,
        describe: impl Fn(&T, &mut Map<String, Value>),
        change: impl FnOnce() -> Result<T, CoordError>,
    ) -> Result<T, CoordError> {
        let (file, sink) = (&self.options.telemetry_file, &self.options.span_sink);
        if file.is_none() && sink.is_none() {
            return change();
        }
        let mut run = RunSpans::start(name, self.options.trace_parent, system_clock());
        spans::collect();
        let result = change();
        let mut attributes = outcome_attributes(agent, "postgresql", &result, describe);
        spans::finish_trips(&mut run, &mut attributes, result.is_ok());
        let records = run.finish(result.is_ok(), attributes);
        coord_core::trace::remember_run(&records);
        if let Some(path) = file
            && let Err(e) = spans::append(path, &records)
        {
            tracing::warn!(error = %e, file = %path.display(), "spans not written");
        }
        if let Some(sink) = sink {
            sink(&records);
        }
        result
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
                let shape = TakeShape::learn(request, self.time.now());
                *slot = Some((request.agent_id.clone(), request.lease, shape.clone()));
                shape
            }
        }
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

/// The attributes of a change that ended with several items (or ids).
#[allow(clippy::ptr_arg)] // it describes a change's own `Vec` result
fn many_attributes<T>(items: &Vec<T>, attributes: &mut Map<String, Value>) {
    attributes.insert("coord.items".into(), items.len().into());
}

/// The server's clock from `rows` (`time::SERVER_NOW_SQL`'s one row).
fn server_micros(rows: &[postgres::SimpleQueryRow]) -> Result<i64, CoordError> {
    rows.first()
        .and_then(|row| row.get(0))
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| CoordError::internal("the server's clock read as no number"))
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
                    CoordError::damaged(format!(
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
        let agent = Some(request.agent_id.as_str());
        self.traced("claim", agent, item_attributes, || {
            self.change(agent, |conn, now, seen| {
                changes::claim(conn, &self.options, request, now, seen)
            })
        })
    }

    fn post(&self, request: &PostRequest) -> Result<Claim, CoordError> {
        request.validate()?;
        let agent = Some(request.agent_id.as_str());
        self.traced("post", agent, item_attributes, || {
            self.change(agent, |conn, now, seen| {
                changes::post(conn, request, now, seen)
            })
        })
    }

    fn next(&self, request: &NextRequest) -> Result<Claim, CoordError> {
        let mut taken = self.next_many(request, 1)?;
        Ok(taken.pop().expect("next_many takes at least one"))
    }

    fn next_many(&self, request: &NextRequest, max: usize) -> Result<Vec<Claim>, CoordError> {
        request.validate_many(max)?;
        let shape = self.take_shape(request);
        let agent = Some(request.agent_id.as_str());
        self.traced("next", agent, many_attributes, || {
            self.change(agent, |conn, now, seen| {
                changes::next(conn, &self.options, shape.as_ref(), request, max, now, seen)
            })
        })
    }

    fn act(
        &self,
        work_item_id: &str,
        action: &Action,
        actor: &Actor<'_>,
    ) -> Result<Claim, CoordError> {
        validate_name("the agent id", actor.agent_id)?;
        let agent = Some(actor.agent_id);
        self.traced(action.name(), agent, item_attributes, || {
            self.change(agent, |conn, now, seen| {
                changes::act(conn, work_item_id, action, actor, now, seen)
            })
        })
    }

    fn apply_once(
        &self,
        key: &IdempotencyKey,
        change: &KeyedChange<'_>,
    ) -> Result<Claim, CoordError> {
        change.validate()?;
        let call = KeyedCall::new(key, change);
        let agent = Some(change.agent_id());
        self.traced(change.name(), agent, item_attributes, || {
            self.apply_keyed(&call, key, change)
        })
    }

    fn reap(&self, agent_id: &str) -> Result<Vec<Claim>, CoordError> {
        self.traced("reap", Some(agent_id), many_attributes, || {
            self.change(Some(agent_id), |conn, now, seen| {
                changes::reap(conn, now, seen)
            })
        })
    }

    fn operate(&self, request: &OperateRequest) -> Result<Vec<Claim>, CoordError> {
        request.validate()?;
        let agent = Some(request.agent_id.as_str());
        self.traced(request.operation.name(), agent, many_attributes, || {
            self.change(agent, |conn, now, seen| {
                changes::operate(conn, request, now, seen)
            })
        })
    }

    fn cleanup(&self, agent_id: &str, older_than: Duration) -> Result<Vec<String>, CoordError> {
        self.traced("cleanup", Some(agent_id), many_attributes, || {
            self.change(Some(agent_id), |conn, now, seen| {
                changes::cleanup(conn, older_than, now, seen)
            })
        })
    }

    /// A connection can break during a commit.
    fn may_lose_answers(&self) -> bool {
        true
    }

    /// Counted in the database: items by aggregate queries, the event log
    /// from the last day only (its times sort as text: coord writes them in
    /// one form).
    fn stats(&self, stale_after: Duration) -> Result<Stats, CoordError> {
        let now = self.now();
        let day_ago = now.saturating_sub(Duration::from_secs(86_400)).to_string();
        let soon = now.saturating_add(EXPIRING_WITHIN).as_unix_micros();
        let (counts, oldest, expiring, events) = self.with_client(|client| {
            let counts = client.query(
                "SELECT status, priority, work_type, agent_id, count(*), \
                     GROUPING(status, priority, work_type, agent_id) FROM coord_claims \
                 GROUP BY GROUPING SETS ((status), (priority), (work_type), (status, agent_id))",
                &[],
            )?;
            let oldest = client.query_opt(
                "SELECT doc FROM coord_claims WHERE status = 'in_progress' \
                 ORDER BY doc->>'claimed_at' LIMIT 1",
                &[],
            )?;
            let expiring: i64 = client
                .query_one(
                    "SELECT count(*) FROM coord_claims \
                     WHERE status = 'in_progress' AND lease_deadline <= $1",
                    &[&soon],
                )?
                .get(0);
            let events = client.query(
                "SELECT doc FROM coord_events WHERE doc->>'time' > $1 ORDER BY id",
                &[&day_ago],
            )?;
            Ok((counts, oldest, expiring, events))
        })?;
        let events: Vec<Event> = events
            .iter()
            .filter_map(|row| row.try_get::<_, Json<Event>>(0).ok().map(|j| j.0))
            .collect();
        let oldest: Vec<Claim> = oldest
            .and_then(|row| row.try_get::<_, Json<Claim>>(0).ok().map(|j| j.0))
            .into_iter()
            .collect();
        // The log's figures and the oldest claim as every store works them
        // out; the counts from the database.
        let mut stats = Stats::compute(&oldest, &events, &self.agents()?, now, stale_after);
        let mut items = coord_core::ItemCounts::default();
        let name = |rank: i16| {
            Priority::ALL
                .get(usize::try_from(rank).unwrap_or(usize::MAX))
                .map_or_else(|| rank.to_string(), |p| p.as_str().to_owned())
        };
        // GROUPING's bits, high to low: status, priority, work type, agent
        // (a set bit: that column is not in the row's grouping set).
        const BY_STATUS: i32 = 0b0111;
        const BY_PRIORITY: i32 = 0b1011;
        const BY_WORK_TYPE: i32 = 0b1101;
        const BY_STATUS_AND_AGENT: i32 = 0b0110;
        for row in &counts {
            let n = u64::try_from(row.get::<_, i64>(4)).unwrap_or(0);
            match row.get::<_, i32>(5) {
                BY_STATUS => {
                    items.total += n;
                    items.by_status.insert(row.get(0), n);
                }
                BY_PRIORITY => {
                    items.by_priority.insert(name(row.get(1)), n);
                }
                BY_WORK_TYPE => {
                    items.by_work_type.insert(row.get(2), n);
                }
                BY_STATUS_AND_AGENT => {
                    let status: String = row.get(0);
                    if let (true, Some(agent)) =
                        (status == "in_progress", row.get::<_, Option<String>>(3))
                    {
                        items.live_by_agent.insert(agent, n);
                    }
                }
                _ => {}
            }
        }
        stats.items = items;
        stats.expiring_within_minute = u64::try_from(expiring).unwrap_or(0);
        stats.paused = self.paused()?.into_iter().map(|p| p.work_type).collect();
        Ok(stats)
    }

    fn archived_item(&self, work_item_id: &str) -> Result<Option<Value>, CoordError> {
        self.with_client(|client| {
            let row = client.query_opt(
                "SELECT doc FROM coord_archive WHERE work_item_id = $1",
                &[&work_item_id],
            )?;
            Ok(row.map(|r| r.get::<_, Json<Value>>(0).0))
        })
    }

    /// The last change span this thread recorded (with a span file or
    /// an exporter).
    fn trace_parent(&self) -> Option<String> {
        let recording = self.options.telemetry_file.is_some() || self.options.span_sink.is_some();
        if recording {
            coord_core::trace::last_run()
        } else {
            None
        }
    }

    fn get(&self, work_item_id: &str) -> Result<Claim, CoordError> {
        self.with_client(|client| {
            let row = client
                .query_opt(
                    "SELECT doc::text FROM coord_claims WHERE work_item_id = $1",
                    &[&work_item_id],
                )?
                .ok_or_else(|| CoordError::NotFound {
                    work_item_id: work_item_id.to_owned(),
                })?;
            claim_from_doc(row.try_get(0)?)
        })
    }

    fn list(&self, filter: &Filter) -> Result<Vec<Claim>, CoordError> {
        self.with_client(|client| {
            let rows = client.query(
                "SELECT doc::text FROM coord_claims \
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
            rows.iter()
                .map(|row| claim_from_doc(row.try_get(0)?))
                .collect()
        })
    }

    /// A connection of its own that waits in the database for the next
    /// change (`wakeup.rs`).
    fn wakeup(&self) -> Result<Option<Box<dyn Wakeup>>, CoordError> {
        let waiter = LogWaiter::start(self.config.clone(), self.tls.clone())
            .map_err(|e| self.db_error(e))?;
        Ok(Some(Box::new(waiter)))
    }

    /// The database's clock as last read, plus the time elapsed since on
    /// the client's clock (see `time.rs`).
    fn now(&self) -> Timestamp {
        self.time.now()
    }

    fn register_agent(&self, registration: &AgentRegistration) -> Result<AgentRecord, CoordError> {
        registration.validate()?;
        self.with_client(|client| {
            let now = self.time.now();
            let mut tx = client.transaction()?;
            let record = upsert_agent(&mut tx, registration, now)?;
            tx.commit()?;
            Ok(record)
        })
    }

    fn agent_stopped(&self, agent_id: &str) -> Result<(), CoordError> {
        if !self.options.track_agents {
            return Ok(());
        }
        self.with_client(|client| {
            let stopped = serde_json::json!({ coord_core::STOPPED_AT: self.time.now() });
            client.execute(
                "UPDATE coord_agents SET doc = doc || $2 WHERE agent_id = $1",
                &[&agent_id, &Json(&stopped)],
            )?;
            Ok(())
        })
    }

    fn pause(
        &self,
        agent_id: &str,
        work_type: &str,
        pause: bool,
    ) -> Result<Vec<Paused>, CoordError> {
        Paused::validate(agent_id, work_type)?;
        self.with_client(|client| {
            if pause {
                let paused = Paused {
                    work_type: work_type.to_owned(),
                    paused_by: agent_id.to_owned(),
                    paused_at: self.time.now(),
                };
                client.execute(
                    "INSERT INTO coord_paused (work_type, doc) VALUES ($1, $2) \
                     ON CONFLICT (work_type) DO NOTHING",
                    &[&work_type, &Json(&paused)],
                )?;
            } else {
                client.execute(
                    "DELETE FROM coord_paused WHERE work_type = $1",
                    &[&work_type],
                )?;
            }
            Ok(())
        })?;
        self.paused()
    }

    fn paused(&self) -> Result<Vec<Paused>, CoordError> {
        self.with_client(|client| {
            let rows = client.query("SELECT doc FROM coord_paused ORDER BY work_type", &[])?;
            rows.iter()
                .map(|row| {
                    row.try_get::<_, Json<Paused>>(0).map(|j| j.0).map_err(|e| {
                        Fail::Coord(CoordError::damaged(format!(
                            "a row of coord_paused is not a paused work type: {e}"
                        )))
                    })
                })
                .collect()
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
                            Fail::Coord(CoordError::damaged(format!(
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
                "BEGIN; {}; {}; COMMIT",
                crate::sql::sequencer_lock(&self.options.schema),
                crate::sql::SEQUENCE_EVENTS
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
                    Fail::Coord(CoordError::damaged(format!(
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
    use crate::conn::Conn;
    use coord_core::ExclusivePerWorkType;
    use coord_core::transition;
    use coord_core::{ConflictPolicy, Priority, SeedPolicy};
    use coord_testkit::{TestClock, shared_cluster};
    use std::sync::Arc;

    fn store(policy: Arc<dyn ConflictPolicy>) -> (PgStore, TestClock) {
        let cluster = shared_cluster();
        let clock = TestClock::new("2026-01-01T00:00:00Z");
        let options = PgStoreOptions::default()
            .schema(cluster.fresh_schema("blind"))
            .clock(clock.as_fn())
            .policy(policy);
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
            let mut other =
                postgres::Client::connect(&shared_cluster().url(), postgres::NoTls).unwrap();
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
                     AND indexname IN ('coord_claims_lease', 'coord_claims_deadline', \
                     'coord_claims_exclusive', 'coord_idempotency_keys_used', 'coord_paused_pkey') \
                     ORDER BY indexname; \
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
        let current = [
            "coord_claims_deadline",
            "coord_claims_exclusive",
            "coord_idempotency_keys_used",
            "coord_paused_pkey",
            "layout 6",
        ];
        assert_eq!(indexes(&store), current);

        // The layout a coord of before layouts made: the lease index on
        // in-progress rows, no `layout` row.
        store
            .slot()
            .as_mut()
            .unwrap()
            .batch(
                "DROP INDEX coord_claims_deadline; \
                 ALTER TABLE coord_claims DROP CONSTRAINT coord_claims_exclusive; \
                 DROP TABLE coord_idempotency_keys; \
                 DROP TABLE coord_paused; \
                 CREATE INDEX coord_claims_lease ON coord_claims (lease_deadline) \
                     WHERE status = 'in_progress'; \
                 DELETE FROM coord_meta WHERE key = 'layout'",
            )
            .unwrap();
        let options = PgStoreOptions::default().schema(schema.clone());
        let upgraded = PgStore::connect(&shared_cluster().url(), options.clone()).unwrap();
        assert_eq!(indexes(&upgraded), current);
        assert_eq!(upgraded.get(&claim.work_item_id).unwrap(), claim);

        // A newer layout is a layout this store can work on, as it is.
        upgraded
            .slot()
            .as_mut()
            .unwrap()
            .batch("UPDATE coord_meta SET value = 7 WHERE key = 'layout'")
            .unwrap();
        let later = PgStore::connect(&shared_cluster().url(), options).unwrap();
        assert_eq!(
            indexes(&later),
            [
                "coord_claims_deadline",
                "coord_claims_exclusive",
                "coord_idempotency_keys_used",
                "coord_paused_pkey",
                "layout 7"
            ]
        );
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
        let (store, _clock) = store(Arc::new(SeedPolicy));
        store.claim(&ClaimRequest::new("agent", "build")).unwrap();
        let now = store.now().as_unix_micros();
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
                crate::sql::LAPSED.replace("$1", &now.to_string())
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
            let expected = transition::take(&posted, &request, fence, store.now())
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

    /// Runs `sql` on `store`'s own connection (its schema on the path).
    fn run_sql(store: &PgStore, sql: &str) -> Result<(), postgres::Error> {
        store.slot().as_mut().unwrap().batch(sql).map(drop)
    }

    /// SQL that copies `item`'s row under the id `id`, with `priority` and
    /// `work_type` of its own: a second writer that does not ask coord.
    fn copy_row(item: &Claim, id: &str, priority: i16, work_type: &str) -> String {
        format!(
            "INSERT INTO coord_claims (work_item_id, work_type, priority, status, doc) \
             SELECT '{id}', '{work_type}', {priority}, status, doc FROM coord_claims \
             WHERE work_item_id = '{}'",
            item.work_item_id
        )
    }

    #[test]
    fn the_schema_refuses_a_second_live_high_or_critical_claim_of_a_work_type_whoever_writes_it() {
        let (store, _clock) = store(Arc::new(SeedPolicy));
        let live = store
            .claim(&ClaimRequest::new("agent", "deploy").priority(Priority::High))
            .unwrap();
        for (id, priority) in [("rogue-high", 2), ("rogue-critical", 3)] {
            let refused = run_sql(&store, &copy_row(&live, id, priority, "deploy")).unwrap_err();
            assert_eq!(
                refused.code(),
                Some(&SqlState::EXCLUSION_VIOLATION),
                "{refused}"
            );
        }
        // Work that excludes nobody, and exclusive work of another type.
        run_sql(&store, &copy_row(&live, "medium", 1, "deploy")).unwrap();
        run_sql(&store, &copy_row(&live, "other", 3, "release")).unwrap();
        // One statement may write down the live claim and add the next: the
        // check waits for the commit.
        run_sql(
            &store,
            &format!(
                "{}; UPDATE coord_claims SET status = 'expired' WHERE work_item_id = '{}'",
                copy_row(&live, "successor", 3, "deploy"),
                live.work_item_id
            ),
        )
        .unwrap();
        let mut slot = store.slot();
        let rows = slot
            .as_mut()
            .unwrap()
            .batch(
                "SELECT string_agg(work_item_id, ', ' ORDER BY seq) FROM coord_claims \
                 WHERE work_type = 'deploy' AND priority >= 2 AND status = 'in_progress'",
            )
            .unwrap();
        assert_eq!(rows[0][0].get(0), Some("successor"));
    }

    #[test]
    fn a_schema_with_two_live_exclusive_claims_of_a_type_is_named_and_left_as_it_was() {
        let (store, _clock) = store(Arc::new(SeedPolicy));
        let schema = store.options.schema.clone();
        let live = store
            .claim(&ClaimRequest::new("agent", "deploy").priority(Priority::High))
            .unwrap();
        // Layout 2 had no constraint, so two writers could both win.
        run_sql(
            &store,
            &format!(
                "ALTER TABLE coord_claims DROP CONSTRAINT coord_claims_exclusive; \
                 UPDATE coord_meta SET value = 2 WHERE key = 'layout'; {}",
                copy_row(&live, "twin", 3, "deploy")
            ),
        )
        .unwrap();
        let layout = |store: &PgStore| -> String {
            let mut slot = store.slot();
            let rows = slot
                .as_mut()
                .unwrap()
                .batch(
                    "SELECT value::text || ' ' || (SELECT count(*) FROM pg_constraint \
                     WHERE conname = 'coord_claims_exclusive' \
                     AND conrelid = 'coord_claims'::regclass)::text \
                     FROM coord_meta WHERE key = 'layout'",
                )
                .unwrap();
            rows[0][0].get(0).unwrap().to_owned()
        };
        let options = PgStoreOptions::default().schema(schema);
        let refused = PgStore::connect(&shared_cluster().url(), options.clone()).unwrap_err();
        let message = refused.to_string();
        assert_eq!(refused.kind(), coord_core::ErrorKind::ValidationFailed);
        assert!(
            message.contains(&format!("\"deploy\": {}, twin", live.work_item_id)),
            "{message}"
        );
        assert_eq!(layout(&store), "2 0", "nothing changed");

        // With one of them ended, the upgrade goes through.
        run_sql(
            &store,
            "UPDATE coord_claims SET status = 'failed' WHERE work_item_id = 'twin'",
        )
        .unwrap();
        let upgraded = PgStore::connect(&shared_cluster().url(), options).unwrap();
        assert_eq!(layout(&upgraded), "6 1");
    }

    /// Lets any two claims run together.
    #[derive(Debug)]
    struct NothingConflicts;

    impl ConflictPolicy for NothingConflicts {
        fn conflicts(&self, _: coord_core::Slot<'_>, _: coord_core::Slot<'_>) -> bool {
            false
        }
    }

    #[test]
    fn a_policy_more_permissive_than_the_schema_is_refused() {
        let cluster = shared_cluster();
        let options = PgStoreOptions::default()
            .schema(cluster.fresh_schema("permissive"))
            .policy(Arc::new(NothingConflicts));
        let refused = PgStore::connect(&cluster.url(), options).unwrap_err();
        assert_eq!(refused.kind(), coord_core::ErrorKind::ValidationFailed);
        assert!(
            refused.to_string().contains("NothingConflicts"),
            "{refused}"
        );
        // A stricter policy than the seed's is welcome.
        store(Arc::new(ExclusivePerWorkType));
    }
}

#[cfg(test)]
mod next_is_the_decision_layers {
    //! PostgreSQL's `next` decides in SQL which item is ready and whether
    //! it may take it in one statement; held here to the decision layer.

    use super::*;
    use coord_core::decide;
    use coord_core::transition::{self, NewIds};
    use coord_core::{ClaimHead, Decision, Priority, SeedPolicy};
    use coord_testkit::shared_cluster;
    use proptest::prelude::*;

    /// One item of a generated queue: its priority, how old it is, what
    /// state it is in (0-2 pending, 3 completed, 4 in progress), whether it
    /// backs off past now, and which earlier item it depends on.
    type Item = (usize, u8, u8, bool, Option<usize>);

    fn queue(items: &[Item], now: Timestamp) -> Vec<Claim> {
        let mut claims: Vec<Claim> = Vec::new();
        for (n, &(priority, age, mut state, backing_off, dependency)) in items.iter().enumerate() {
            // A second live exclusive claim of a type is a state no store
            // may reach (the schema refuses it): that item waits instead.
            let exclusive = Priority::ALL[priority] >= Priority::High;
            let type_held = claims.iter().any(|c| {
                c.work_type == format!("type_{}", n % 3)
                    && c.status == Status::InProgress
                    && c.priority >= Priority::High
            });
            if state == 4 && exclusive && type_held {
                state = 0;
            }
            let ids = NewIds {
                work_item_id: format!("work_{n}"),
                coordination_id: format!("coord_{n}"),
            };
            let mut request = PostRequest::new("boss", format!("type_{}", n % 3))
                .priority(Priority::ALL[priority]);
            if let Some(d) = dependency.filter(|d| *d < n) {
                request = request.after([format!("work_{d}")]);
            }
            let posted_at = now.saturating_sub(Duration::from_secs(u64::from(age) * 10 + 1));
            let mut claim = transition::post(&request, ids, posted_at).claim;
            if backing_off {
                claim.retry_at = Some(now.saturating_add(Duration::from_secs(60)));
            }
            match state {
                3 => {
                    claim.status = Status::Completed;
                    claim.completed_at = Some(posted_at);
                }
                4 => {
                    claim.status = Status::InProgress;
                    claim.agent_id = Some("holder".into());
                    claim.fence = Some(1);
                    claim.lease_expires_at = Some(now.saturating_add(Duration::from_secs(600)));
                }
                _ => {}
            }
            claims.push(claim);
        }
        claims
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Over any queue (priorities, ages, dependencies done or not,
        /// backoff, live exclusive claims), `next` takes the item the
        /// decision layer chooses, or says nothing is left when it chooses
        /// none: whichever path (one statement or reading first) it takes.
        #[test]
        fn next_takes_what_the_decision_layer_chooses(
            // Mostly work of priorities that conflict with nothing, so the
            // one-statement path decides often.
            items in proptest::collection::vec(
                (prop_oneof![4 => Just(0usize), 4 => Just(1), 1 => Just(2), 1 => Just(3)],
                 0u8..20, 0u8..5, proptest::bool::weighted(0.2),
                 proptest::option::weighted(0.5, 0usize..12)),
                1..12,
            ),
        ) {
            let cluster = shared_cluster();
            let clock = coord_testkit::TestClock::new("2026-01-01T00:00:00Z");
            let options = PgStoreOptions::default()
                .schema(cluster.fresh_schema("choose"))
                .clock(clock.as_fn());
            let store = PgStore::connect(&cluster.url(), options).unwrap();
            let now = store.now();
            let claims = queue(&items, now);
            let rows: Vec<_> = claims.iter().map(crate::rows::row_of).collect();
            store
                .slot()
                .as_mut()
                .unwrap()
                .batch(&format!("EXECUTE coord_insert({})", crate::sql::json_lit(&rows)))
                .unwrap();
            let request = NextRequest::new("worker");
            let heads: Vec<ClaimHead> = claims.iter().map(Claim::head).collect();
            let refs: Vec<&ClaimHead> = heads.iter().collect();
            let decision = Decision::begin(1, now, [], None);
            let chosen = decide::choose_next(&decision, &refs, [], &request, &SeedPolicy);
            match (store.next(&request), chosen) {
                (Ok(taken), Some(i)) => prop_assert_eq!(&taken.work_item_id, &claims[i].work_item_id),
                (Err(e), None) => prop_assert_eq!(e.kind(), coord_core::ErrorKind::NothingToTake),
                (got, expected) => prop_assert!(false, "took {got:?}, the decision layer chose {expected:?}"),
            }
        }
    }
}
