//! One change in one transaction, in as few round trips as possible.
//!
//! A change's reads and locks go to the server as one batch of statements
//! (`BEGIN; ...`), its writes and `COMMIT` as another: two round trips for
//! a claim, `next` or transition in the common case, where pgbench's
//! one-row insert takes one. The batches use PostgreSQL's simple query
//! protocol, which runs several statements per message, so values travel
//! as escaped literals (see [`lit`]); every statement in a batch still gets
//! its own snapshot, so a row read after a lock is taken sees the commits
//! the lock waited for. A change that is one statement alone (a claim that
//! excludes nobody, `next` of plain work) goes instead over the extended
//! protocol with binary arguments ([`Conn::query`]), which the server
//! neither parses nor analyses per call.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::OnceLock;

use coord_core::transition::{self, Change, NewIds};
use coord_core::{
    AgentRecord, AgentRegistration, Claim, ClaimHead, ConflictPolicy, CoordError, Event, Priority,
    Status, Timestamp,
};
use postgres::types::{ToSql, Type};
use postgres::{Client, Row, SimpleQueryMessage, SimpleQueryRow};
use serde::Serialize;

use crate::schema::LOCK_CLASS;
use crate::store::{Fail, PgStoreOptions};

/// `s` as an SQL string literal. Connections run with
/// `standard_conforming_strings = on` (see `PgStore::connect`), where a quote
/// doubled is the only escape; backslashes are plain characters.
pub(crate) fn lit(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    let mut parts = s.split('\'');
    out.push_str(parts.next().unwrap_or_default());
    for part in parts {
        out.push_str("''");
        out.push_str(part);
    }
    out.push('\'');
    out
}

/// `value` as a `jsonb` literal.
pub(crate) fn json_lit(value: &impl Serialize) -> String {
    let text = serde_json::to_string(value).expect("coord's values always serialise");
    format!("{}::jsonb", lit(&text))
}

/// A text array literal: `ARRAY['a','b']::text[]`.
pub(crate) fn text_array(items: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let items: Vec<String> = items.into_iter().map(|s| lit(s.as_ref())).collect();
    format!("ARRAY[{}]::text[]", items.join(","))
}

pub(crate) fn micros(t: Option<Timestamp>) -> Option<i64> {
    t.map(Timestamp::as_unix_micros)
}

/// The `priority` column: higher is more urgent, as `Priority` orders.
pub(crate) fn rank(p: Priority) -> i16 {
    Priority::ALL.iter().position(|q| *q == p).unwrap_or(0) as i16
}

/// Runs `sql` (any number of statements) in one round trip and returns
/// each statement's rows.
fn simple_batch(
    client: &mut Client,
    sql: &str,
) -> Result<Vec<Vec<SimpleQueryRow>>, postgres::Error> {
    let mut results = Vec::new();
    let mut rows = Vec::new();
    for message in client.simple_query(sql)? {
        match message {
            SimpleQueryMessage::Row(row) => rows.push(row),
            SimpleQueryMessage::CommandComplete(_) => results.push(std::mem::take(&mut rows)),
            _ => {}
        }
    }
    Ok(results)
}

/// A connection, and which of coord's statements it has prepared.
///
/// Statements are prepared on first use, in the same round trip that
/// first runs them: a long-lived worker plans each once, and a one-shot
/// `coord` process prepares only the one or two it runs.
pub(crate) struct Conn {
    pub client: Client,
    prepared: HashSet<&'static str>,
    /// Statements prepared over the extended protocol (see [`Conn::query`]).
    extended: HashMap<&'static str, postgres::Statement>,
    /// A batch with new `PREPARE`s failed: which of them ran is unknown
    /// until asked.
    unsure: bool,
    /// Batches sent, for tests that count round trips.
    #[cfg(test)]
    pub trips: u64,
}

impl Conn {
    pub fn new(client: Client) -> Self {
        Conn {
            client,
            prepared: HashSet::new(),
            extended: HashMap::new(),
            unsure: false,
            #[cfg(test)]
            trips: 0,
        }
    }

    /// Runs `sql` in one round trip, first preparing the statements it
    /// `EXECUTE`s that this connection has not prepared yet; returns each of
    /// `sql`'s statements' rows.
    pub fn batch(&mut self, sql: &str) -> Result<Vec<Vec<SimpleQueryRow>>, postgres::Error> {
        #[cfg(test)]
        {
            self.trips += 1;
        }
        if self.unsure {
            // PREPAREs outlive a failed transaction: ask which exist.
            let names = simple_batch(&mut self.client, "SELECT name FROM pg_prepared_statements")?;
            self.prepared = statements()
                .iter()
                .map(|s| s.name)
                .filter(|n| names[0].iter().any(|r| r.get(0) == Some(*n)))
                .collect();
            self.unsure = false;
        }
        let mut prefix = String::new();
        let mut new = Vec::new();
        for name in executed(sql) {
            if self.prepared.contains(name) || new.contains(&name) {
                continue;
            }
            let statement = statements()
                .iter()
                .find(|s| s.name == name)
                .expect("every EXECUTE names a statement coord prepares");
            prefix.push_str(&format!(
                "PREPARE {}{} AS {};",
                statement.name, statement.params, statement.sql
            ));
            new.push(statement.name);
        }
        if new.is_empty() {
            return simple_batch(&mut self.client, sql);
        }
        match simple_batch(&mut self.client, &format!("{prefix}{sql}")) {
            Ok(mut results) => {
                self.prepared.extend(&new);
                results.drain(..new.len());
                Ok(results)
            }
            Err(e) => {
                self.unsure = true;
                Err(e)
            }
        }
    }

    /// Runs statement `name` alone over the extended protocol, with binary
    /// arguments: one round trip once prepared (its first use on this
    /// connection prepares it, one more). The server then neither parses
    /// nor analyses anything per call, where an `EXECUTE` in a simple query
    /// has it parse the call and convert each literal argument: for a
    /// claim, about 10% of the server's work.
    pub fn query(
        &mut self,
        name: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error> {
        #[cfg(test)]
        {
            self.trips += 1;
        }
        let statement = match self.extended.get(name) {
            Some(statement) => statement.clone(),
            None => {
                #[cfg(test)]
                {
                    self.trips += 1;
                }
                let s = statements()
                    .iter()
                    .find(|s| s.name == name)
                    .expect("a statement coord prepares");
                let prepared = self.client.prepare_typed(&s.sql, &s.types())?;
                self.extended.insert(name, prepared.clone());
                prepared
            }
        };
        self.client.query(&statement, params)
    }
}

/// The names of coord's statements that `sql` runs with `EXECUTE`.
fn executed(sql: &str) -> Vec<&'static str> {
    let mut names = Vec::new();
    let mut rest = sql;
    while let Some(at) = rest.find("EXECUTE coord_") {
        let name_start = &rest[at + "EXECUTE ".len()..];
        let end = name_start
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(name_start.len());
        if let Some(s) = statements().iter().find(|s| s.name == &name_start[..end]) {
            names.push(s.name);
        }
        rest = &name_start[end..];
    }
    names
}

/// The text of column `i`, which the statement guarantees is not NULL.
fn text(row: &SimpleQueryRow, i: usize) -> Result<&str, Fail> {
    row.try_get(i)?
        .ok_or_else(|| Fail::Coord(CoordError::validation("a NOT NULL column came back NULL")))
}

pub(crate) fn number(row: &SimpleQueryRow, i: usize) -> Result<u64, Fail> {
    parse_number(text(row, i)?)
}

fn parse_number(t: &str) -> Result<u64, Fail> {
    t.parse().map_err(|_| {
        Fail::Coord(CoordError::validation(format!(
            "expected a number from the database, got {t:?}"
        )))
    })
}

/// A claim from a `doc::text` column.
pub(crate) fn claim_from(row: &SimpleQueryRow) -> Result<Claim, Fail> {
    claim_from_doc(text(row, 0)?)
}

/// A claim from the text of a row's `doc`.
pub(crate) fn claim_from_doc(doc: &str) -> Result<Claim, Fail> {
    serde_json::from_str(doc).map_err(|e| {
        Fail::Coord(CoordError::validation(format!(
            "a row of coord_claims is not a claim coord can read: {e}"
        )))
    })
}

/// One of coord's prepared statements.
pub(crate) struct Statement {
    pub name: &'static str,
    /// The parameter types, as `PREPARE` takes them: `(int8, text)`.
    pub params: &'static str,
    pub sql: String,
}

impl Statement {
    /// The parameter types, for the extended protocol.
    fn types(&self) -> Vec<Type> {
        let inner = self.params.trim_start_matches('(').trim_end_matches(')');
        inner
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| match t {
                "text" => Type::TEXT,
                "int2" => Type::INT2,
                "int4" => Type::INT4,
                "int8" => Type::INT8,
                "jsonb" => Type::JSONB,
                "int2[]" => Type::INT2_ARRAY,
                "text[]" => Type::TEXT_ARRAY,
                other => panic!("coord's statements take no {other} parameter"),
            })
            .collect()
    }
}

/// The statements batches run by name (see [`Conn::batch`]): PostgreSQL
/// then plans each once per connection rather than on every change.
pub(crate) fn statements() -> &'static [Statement] {
    static STATEMENTS: OnceLock<Vec<Statement>> = OnceLock::new();
    STATEMENTS.get_or_init(|| {
        statement_list()
            .into_iter()
            .map(|(signature, sql)| {
                let (name, params) =
                    signature.split_at(signature.find('(').unwrap_or(signature.len()));
                Statement { name, params, sql }
            })
            .collect()
    })
}

/// Whether a lease has lapsed by `$1`: the earliest deadline up to `$1`,
/// which only in-progress rows have, read from the deadline index (an
/// aggregate's other plan, reading the whole table, never looks cheaper).
/// It names no status, so PostgreSQL has no other index to read it from;
/// with the status named, statistics taken while nothing was in progress
/// let it read every in-progress row through the live-by-type index (see
/// `schema::LAYOUT`). The range keeps the scan off the entries of items
/// finished since the last vacuum, whose deadlines are mostly still to come.
pub(crate) const LAPSED: &str =
    "((SELECT min(lease_deadline) FROM coord_claims WHERE lease_deadline <= $1) IS NOT NULL)";

/// Makes an `UPDATE ... FROM jsonb_to_recordset($1)` find its rows by
/// primary key: planned once for any number of rows, the join alone would
/// scan the whole table.
const BY_KEY: &str =
    "c.work_item_id = ANY(ARRAY(SELECT r->>'id' FROM jsonb_array_elements($1) AS r))";

fn statement_list() -> Vec<(&'static str, String)> {
    let claim_row = "id text, work_type text, priority int2, status text, agent_id text, \
         lease_deadline int8, posted_at int8, retry_at int8, finished_at int8, doc jsonb";
    vec![
        (
            "coord_lapsed(int8, text)",
            // Gated by `LAPSED`, so when nothing has lapsed (nearly always)
            // no in-progress row is read, whichever index PostgreSQL picks.
            format!(
                "SELECT doc::text FROM coord_claims \
                 WHERE status = 'in_progress' AND lease_deadline <= $1 \
                   AND ($2::text IS NULL OR work_item_id <> $2) AND {LAPSED} \
                 ORDER BY lease_deadline FOR UPDATE SKIP LOCKED"
            ),
        ),
        (
            "coord_lock_types(text[])",
            format!(
                "SELECT count(pg_advisory_xact_lock({LOCK_CLASS}, k)) FROM \
                 (SELECT DISTINCT hashtext(t) AS k FROM unnest($1) AS t ORDER BY 1) AS s"
            ),
        ),
        (
            "coord_held(text[])",
            "SELECT doc::text FROM coord_claims WHERE status = 'in_progress' \
             AND work_type = ANY($1) ORDER BY work_item_id FOR UPDATE"
                .to_owned(),
        ),
        (
            "coord_item(text)",
            "SELECT doc::text FROM coord_claims WHERE work_item_id = $1 FOR UPDATE".to_owned(),
        ),
        (
            // Read without locks: a row another `next` is taking still shows
            // (it is skipped, or waited for, when this one tries to lock it),
            // and this one locks only the row it chose.
            "coord_candidates(int8, text[], text[], int4)",
            "SELECT doc::text FROM coord_claims \
             WHERE status = 'pending' AND (retry_at IS NULL OR retry_at <= $1) \
               AND (cardinality($2) = 0 OR work_type = ANY($2)) \
               AND NOT (work_item_id = ANY($3)) \
             ORDER BY priority DESC, posted_at NULLS FIRST, seq \
             LIMIT $4"
                .to_owned(),
        ),
        (
            // The chosen candidate, locked unless another transaction holds
            // it, and only while it is still ready.
            "coord_take_ready(text, int8)",
            "SELECT doc::text FROM coord_claims WHERE work_item_id = $1 AND status = 'pending' \
               AND (retry_at IS NULL OR retry_at <= $2) FOR UPDATE SKIP LOCKED"
                .to_owned(),
        ),
        (
            // The same, waiting for whoever holds it (up to lock_timeout).
            "coord_wait_ready(text, int8)",
            "SELECT doc::text FROM coord_claims WHERE work_item_id = $1 AND status = 'pending' \
               AND (retry_at IS NULL OR retry_at <= $2) FOR UPDATE"
                .to_owned(),
        ),
        (
            "coord_existing(text[])",
            "SELECT work_item_id FROM coord_claims WHERE work_item_id = ANY($1) FOR SHARE"
                .to_owned(),
        ),
        (
            "coord_items(text[])",
            "SELECT doc::text FROM coord_claims WHERE work_item_id = ANY($1)".to_owned(),
        ),
        (
            // A claim's one-round-trip path (see `PgStore::claim`): the new
            // row and its event, stamped with a revision and a fence drawn
            // here, inside the transaction, as `Change::at_revision` and
            // `transition::claim` would have; returns the two numbers.
            // Nothing at all when a lapsed lease waits to be written down
            // (before `$12`, the time). The row's columns come as arguments
            // of their own types (`ClaimRow::arguments`): unpacking them from
            // one `jsonb` record cost the server about 10% of a claim. The
            // inserts run whether or not the result reads them, and a failed
            // one fails the statement, so the numbers come from `n` alone.
            "coord_claim_blind(text, text, int2, text, text, int8, int8, int8, int8, jsonb, jsonb, int8)",
            format!(
                "WITH n AS (SELECT nextval('coord_revision') AS r, nextval('coord_fence') AS f \
               WHERE NOT {lapsed}), \
             ins AS ( \
               INSERT INTO coord_claims (work_item_id, work_type, priority, status, agent_id, \
                   lease_deadline, posted_at, retry_at, finished_at, depends_on, doc) \
               SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, '{{}}', \
                   $10 || jsonb_build_object('fence', n.f, 'revision', n.r) \
               FROM n), \
             log AS ( \
               INSERT INTO coord_events (doc) \
               SELECT $11 || jsonb_build_object('fence', n.f, 'revision', n.r) FROM n) \
             SELECT n.r, n.f FROM n",
                lapsed = LAPSED.replace("$1", "$12")
            ),
        ),
        // `next`'s one-statement path, for any work type and for some.
        ("coord_next_blind(int8, int2[], jsonb, text[], jsonb, jsonb)", next_blind("")),
        (
            "coord_next_blind_typed(int8, int2[], jsonb, text[], jsonb, jsonb, text[])",
            next_blind("AND work_type = ANY($7)"),
        ),
        (
            "coord_revision_only",
            "SELECT nextval('coord_revision')".to_owned(),
        ),
        (
            "coord_fence_only",
            "SELECT NULL::int8, nextval('coord_fence')".to_owned(),
        ),
        (
            "coord_revision_and_fence",
            "SELECT nextval('coord_revision'), nextval('coord_fence')".to_owned(),
        ),
        (
            "coord_insert(jsonb)",
            format!(
                "INSERT INTO coord_claims (work_item_id, work_type, priority, status, agent_id, \
                     lease_deadline, posted_at, retry_at, finished_at, depends_on, doc) \
                 SELECT v.id, v.work_type, v.priority, v.status, v.agent_id, v.lease_deadline, \
                     v.posted_at, v.retry_at, v.finished_at, \
                     ARRAY(SELECT jsonb_array_elements_text(coalesce(v.doc->'depends_on', '[]'))), \
                     v.doc \
                 FROM jsonb_to_recordset($1) AS v({claim_row})"
            ),
        ),
        (
            "coord_update(jsonb)",
            format!(
                "UPDATE coord_claims AS c SET status = v.status, agent_id = v.agent_id, \
                     lease_deadline = v.lease_deadline, retry_at = v.retry_at, \
                     finished_at = v.finished_at, doc = v.doc \
                 FROM jsonb_to_recordset($1) AS v({claim_row}) \
                 WHERE c.work_item_id = v.id AND {BY_KEY}"
            ),
        ),
        (
            // The usual write of `next` and of a transition: one statement.
            "coord_update_and_log(jsonb, jsonb)",
            format!(
                "WITH log AS ( \
                   INSERT INTO coord_events (doc) \
                   SELECT e FROM jsonb_array_elements($2) WITH ORDINALITY AS t(e, n) ORDER BY n) \
                 UPDATE coord_claims AS c SET status = v.status, agent_id = v.agent_id, \
                     lease_deadline = v.lease_deadline, retry_at = v.retry_at, \
                     finished_at = v.finished_at, doc = v.doc \
                 FROM jsonb_to_recordset($1) AS v({claim_row}) \
                 WHERE c.work_item_id = v.id AND {BY_KEY}"
            ),
        ),
        (
            "coord_log(jsonb)",
            "INSERT INTO coord_events (doc) \
             SELECT e FROM jsonb_array_elements($1) WITH ORDINALITY AS t(e, n) ORDER BY n"
                .to_owned(),
        ),
        (
            // A new record, or only `last_seen` moved on an existing one:
            // `AgentRecord::seen` for a plain sighting.
            "coord_seen(text, jsonb)",
            "INSERT INTO coord_agents (agent_id, doc) VALUES ($1, $2) \
             ON CONFLICT (agent_id) DO UPDATE \
             SET doc = coord_agents.doc || jsonb_build_object('last_seen', excluded.doc->'last_seen')"
                .to_owned(),
        ),
    ]
}

/// `next`'s one-statement path (see `PgStore::next`). `top` peeks, without
/// a lock, at the best ready item (of the work types `$7`, with
/// `type_filter`; pending, past its `retry_at`, every dependency completed).
/// When that item is of a priority that conflicts with nothing (`$2`, the
/// `priority` column's values) and no lapsed lease waits to be written
/// down, the best such item no other transaction holds is locked and taken:
/// `take.rs`'s patch (`$3` its columns, `$4` the fields cleared, `$5` those
/// set) with a fence drawn after its lock, and its event (`$6` and the
/// item's fields). Returns the taken item; one NULL when nothing ready is
/// pending (held rows count: they may be given up); no row when the store
/// must take the path that reads first.
///
/// It locks only a row it takes. A row it locked to look at and then left
/// would make concurrent `next`s skip an item nobody takes.
///
/// Two statements rather than one with `cardinality($7) = 0 OR ...`: the
/// plan PostgreSQL keeps for a prepared statement guesses how selective
/// such a condition is, and a low guess makes it sort every pending item
/// instead of reading the queue's index in order.
fn next_blind(type_filter: &str) -> String {
    let ready = format!(
        "status = 'pending' AND (retry_at IS NULL OR retry_at <= $1) {type_filter} \
         AND (cardinality(c.depends_on) = 0 OR NOT EXISTS ( \
             SELECT 1 FROM unnest(c.depends_on) AS d(id) WHERE NOT EXISTS ( \
                 SELECT 1 FROM coord_claims AS x \
                 WHERE x.work_item_id = d.id AND x.status = 'completed')))"
    );
    format!(
        "WITH lapsed AS (SELECT 1 WHERE {LAPSED}), \
         top AS (SELECT priority FROM coord_claims AS c WHERE {ready} \
             ORDER BY priority DESC, posted_at NULLS FIRST, seq LIMIT 1), \
         best AS (SELECT work_item_id FROM coord_claims AS c \
             WHERE {ready} AND priority = ANY($2) \
               AND (SELECT priority FROM top) = ANY($2) AND NOT EXISTS (SELECT 1 FROM lapsed) \
             ORDER BY priority DESC, posted_at NULLS FIRST, seq \
             LIMIT 1 FOR UPDATE SKIP LOCKED), \
         n AS (SELECT best.work_item_id AS id, nextval('coord_revision') AS r, \
                 nextval('coord_fence') AS f FROM best), \
         v AS (SELECT * FROM jsonb_to_record($3) AS v(status text, agent_id text, \
                 lease_deadline int8, retry_at int8, finished_at int8)), \
         took AS ( \
           UPDATE coord_claims AS c SET status = v.status, agent_id = v.agent_id, \
               lease_deadline = v.lease_deadline, retry_at = v.retry_at, \
               finished_at = v.finished_at, \
               doc = (c.doc - $4) || $5 || jsonb_build_object('fence', n.f, 'revision', n.r) \
           FROM n, v WHERE c.work_item_id = n.id \
           RETURNING c.doc, c.work_item_id, c.work_type, n.f, n.r), \
         log AS ( \
           INSERT INTO coord_events (doc) \
           SELECT $6 || jsonb_build_object('work_item_id', work_item_id, \
               'work_type', work_type, 'priority', doc->'priority', 'fence', f, 'revision', r) \
           FROM took) \
         SELECT doc::text FROM took \
         UNION ALL SELECT NULL WHERE NOT EXISTS (SELECT 1 FROM top) \
           AND NOT EXISTS (SELECT 1 FROM lapsed)"
    )
}

/// Statements a change's first batch is made of: `EXECUTE`s of the
/// prepared statements, with literal arguments.
pub(crate) mod read {
    use super::{lit, text_array};

    fn opt(s: Option<&str>) -> String {
        s.map_or_else(|| "NULL".to_owned(), lit)
    }

    /// The lapsed leases no other transaction holds (it writes its own).
    pub fn lapsed(now: i64, except: Option<&str>) -> String {
        format!("EXECUTE coord_lapsed({now}, {})", opt(except))
    }

    /// Exclusion on `work_types`: their advisory locks (in one order, so
    /// two takers cannot deadlock), then, in a later statement and so a
    /// later snapshot, their in-progress rows.
    pub fn exclusion(schema: &str, work_types: &[&str]) -> [String; 2] {
        let keys: Vec<String> = work_types
            .iter()
            .map(|t| crate::store::type_key(schema, t))
            .collect();
        [
            format!("EXECUTE coord_lock_types({})", text_array(&keys)),
            format!("EXECUTE coord_held({})", text_array(work_types)),
        ]
    }

    /// One item, locked.
    pub fn item(id: &str) -> String {
        format!("EXECUTE coord_item({})", lit(id))
    }

    /// The chosen candidate, locked if no other transaction holds it
    /// (`wait`: once it lets go), while still ready.
    pub fn ready(id: &str, now: i64, wait: bool) -> String {
        let name = if wait {
            "coord_wait_ready"
        } else {
            "coord_take_ready"
        };
        format!("EXECUTE {name}({}, {now})", lit(id))
    }

    /// Pending items `next` may take, best first, not locked.
    pub fn candidates(now: i64, work_types: &[String], passed: &[String], limit: usize) -> String {
        format!(
            "EXECUTE coord_candidates({now}, {}, {}, {limit})",
            text_array(work_types),
            text_array(passed)
        )
    }

    /// Which of `ids` exist; `FOR SHARE` keeps them from being archived
    /// until the transaction ends.
    pub fn existing_for_share(ids: &[&str]) -> String {
        format!("EXECUTE coord_existing({})", text_array(ids))
    }

    /// The items `ids` (not locked: only their status is read).
    pub fn items(ids: &[&str]) -> String {
        format!("EXECUTE coord_items({})", text_array(ids))
    }

    /// The change's revision and, when it takes an item, a fence. Drawn
    /// after the item is locked, so a later tenure always gets a larger one.
    pub fn numbers(fence: bool) -> String {
        if fence {
            "EXECUTE coord_revision_and_fence".to_owned()
        } else {
            "EXECUTE coord_revision_only".to_owned()
        }
    }

    /// A fence alone, for a change that drew its revision before it locked
    /// the item it takes.
    pub fn fence() -> String {
        "EXECUTE coord_fence_only".to_owned()
    }
}

/// One change in progress: the open transaction, and what it will write.
pub(crate) struct Tx<'c, 'o> {
    conn: &'c mut Conn,
    /// Whether `BEGIN` went out and neither `COMMIT` nor `ROLLBACK` did.
    open: bool,

    pub now: Timestamp,
    pub options: &'o PgStoreOptions,
    revision: Option<u64>,
    fence: Option<u64>,
    /// Items changed so far (their newest state, and whether they are
    /// new), written at commit.
    changed: HashMap<String, (Claim, bool)>,
    /// Ids in `changed`, in the order they were first changed.
    order: Vec<String>,
    events: Vec<Event>,
}

impl Drop for Tx<'_, '_> {
    fn drop(&mut self) {
        if self.open {
            // Nothing was committed; a broken connection rolls back anyway.
            let _ = self.conn.client.simple_query("ROLLBACK");
        }
    }
}

impl<'c, 'o> Tx<'c, 'o> {
    /// Opens the transaction and runs `statements` in the same round trip.
    pub fn begin(
        conn: &'c mut Conn,
        options: &'o PgStoreOptions,
        now: Timestamp,
        statements: &[String],
    ) -> Result<(Self, Vec<Vec<SimpleQueryRow>>), Fail> {
        let tx = Tx {
            conn,
            open: true,
            now,
            options,
            revision: None,
            fence: None,
            changed: HashMap::new(),
            order: Vec::new(),
            events: Vec::new(),
        };
        let mut sql = String::from("BEGIN;");
        for s in statements {
            sql.push_str(s);
            sql.push(';');
        }
        let mut results = tx.conn.batch(&sql)?;
        results.remove(0); // BEGIN's
        Ok((tx, results))
    }

    /// Runs more statements in the open transaction, in one round trip.
    pub fn run(&mut self, statements: &[String]) -> Result<Vec<Vec<SimpleQueryRow>>, Fail> {
        Ok(self.conn.batch(&statements.join(";"))?)
    }

    pub fn policy(&self) -> &dyn ConflictPolicy {
        self.options.policy.as_ref()
    }

    /// Takes the numbers of a [`read::numbers`] or [`read::fence`]
    /// statement. A change has one revision: once drawn, it is kept.
    pub fn numbers(&mut self, rows: &[SimpleQueryRow]) -> Result<(), Fail> {
        let row = rows
            .first()
            .ok_or_else(|| CoordError::validation("nextval returned no row"))?;
        if let Some(revision) = row.try_get(0)? {
            assert!(self.revision.is_none(), "a change draws its revision once");
            self.revision = Some(parse_number(revision)?);
        }
        if row.columns().len() > 1 {
            self.fence = Some(number(row, 1)?);
        }
        Ok(())
    }

    pub fn fence(&self) -> u64 {
        self.fence.expect("the fence is drawn with the item's lock")
    }

    /// The item as this transaction sees it: changed here, or as read.
    pub fn current(&self, read: Claim) -> Claim {
        match self.changed.get(&read.work_item_id) {
            Some((c, _)) => c.clone(),
            None => read,
        }
    }

    /// Items this change itself put back on the queue.
    pub fn requeued(&self) -> impl Iterator<Item = &Claim> {
        self.order
            .iter()
            .map(|id| &self.changed[id].0)
            .filter(|c| c.status == Status::Pending)
    }

    /// Records `change` (stamped with this revision) to be written.
    pub fn record(&mut self, change: Change, new: bool) -> Claim {
        let change = change.at_revision(self.revision.expect("numbers are drawn first"));
        let id = change.claim.work_item_id.clone();
        match self.changed.get_mut(&id) {
            Some(entry) => entry.0 = change.claim.clone(),
            None => {
                self.order.push(id.clone());
                self.changed.insert(id, (change.claim.clone(), new));
            }
        }
        self.events.extend(change.event);
        change.claim
    }

    /// Writes down the lapsed leases of a [`read::lapsed`] statement.
    pub fn expire(&mut self, rows: &[SimpleQueryRow]) -> Result<Vec<Claim>, Fail> {
        let mut expired = Vec::new();
        for row in rows {
            let claim = self.current(claim_from(row)?);
            if let Some(change) = transition::expire(&claim, self.now) {
                expired.push(self.record(change, false));
            }
        }
        Ok(expired)
    }

    /// The live claims among the rows of a [`read::exclusion`], writing
    /// down lapsed ones.
    pub fn live(&mut self, rows: &[SimpleQueryRow]) -> Result<Vec<ClaimHead>, Fail> {
        let mut live = Vec::new();
        for row in rows {
            let claim = self.current(claim_from(row)?);
            match transition::expire(&claim, self.now) {
                Some(change) => {
                    self.record(change, false);
                }
                None if claim.head().is_live(self.now) => live.push(claim.head()),
                None => {}
            }
        }
        Ok(live)
    }

    /// Ids for a new item. Two machines minting the same id in the same
    /// nanosecond make the insert fail, and the change runs again.
    pub fn new_ids(&self) -> NewIds {
        NewIds::fresh(|id| self.changed.contains_key(id))
    }

    /// Writes every change and event, records `seen` as active, and
    /// commits: one round trip.
    pub fn commit(mut self, seen: Option<&str>) -> Result<(), Fail> {
        let mut sql = String::new();

        let (mut new, mut old) = (Vec::new(), Vec::new());
        for id in &self.order {
            let (claim, is_new) = &self.changed[id];
            if *is_new { &mut new } else { &mut old }.push(row_of(claim));
        }
        if !new.is_empty() {
            sql.push_str(&format!("EXECUTE coord_insert({});", json_lit(&new)));
        }
        match (old.is_empty(), self.events.is_empty()) {
            (false, false) => sql.push_str(&format!(
                "EXECUTE coord_update_and_log({}, {});",
                json_lit(&old),
                json_lit(&self.events)
            )),
            (false, true) => sql.push_str(&format!("EXECUTE coord_update({});", json_lit(&old))),
            (true, false) => {
                sql.push_str(&format!("EXECUTE coord_log({});", json_lit(&self.events)));
            }
            (true, true) => {}
        }
        if let Some(agent) = seen {
            sql.push_str(&seen_sql(agent, self.now));
        }
        sql.push_str("COMMIT");
        // A statement that fails skips the rest of the batch, COMMIT too,
        // and leaves the transaction aborted: Drop then rolls it back.
        self.conn.batch(&sql)?;
        self.open = false;
        Ok(())
    }
}

/// A claim as the columns of its row.
#[derive(Serialize)]
pub(crate) struct ClaimRow<'a> {
    pub id: &'a str,
    pub work_type: &'a str,
    pub priority: i16,
    pub status: &'static str,
    pub agent_id: Option<&'a str>,
    pub lease_deadline: Option<i64>,
    pub posted_at: Option<i64>,
    pub retry_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub doc: &'a Claim,
}

impl ClaimRow<'_> {
    /// The row as a statement's arguments: its columns in the order of
    /// `coord_claims`, then the document.
    pub fn arguments(&self) -> String {
        let text = |v: Option<&str>| v.map_or_else(|| "NULL".to_owned(), lit);
        let number = |v: Option<i64>| v.map_or_else(|| "NULL".to_owned(), |n| n.to_string());
        format!(
            "{}, {}, {}, {}, {}, {}, {}, {}, {}, {}",
            lit(self.id),
            lit(self.work_type),
            self.priority,
            lit(self.status),
            text(self.agent_id),
            number(self.lease_deadline),
            number(self.posted_at),
            number(self.retry_at),
            number(self.finished_at),
            json_lit(self.doc)
        )
    }

    /// The row's columns but the document, by name.
    pub fn columns(&self) -> serde_json::Map<String, serde_json::Value> {
        let serde_json::Value::Object(map) = serde_json::json!({
            "id": self.id,
            "work_type": self.work_type,
            "priority": self.priority,
            "status": self.status,
            "agent_id": self.agent_id,
            "lease_deadline": self.lease_deadline,
            "posted_at": self.posted_at,
            "retry_at": self.retry_at,
            "finished_at": self.finished_at,
        }) else {
            unreachable!("json! of braces is an object")
        };
        map
    }
}

pub(crate) fn row_of(c: &Claim) -> ClaimRow<'_> {
    let head = c.head();
    ClaimRow {
        id: &c.work_item_id,
        work_type: &c.work_type,
        priority: rank(c.priority),
        status: c.status.as_str(),
        agent_id: c.agent_id.as_deref(),
        lease_deadline: if c.status == Status::InProgress {
            micros(head.lease_deadline())
        } else {
            None
        },
        posted_at: micros(c.posted_at),
        retry_at: micros(c.retry_at),
        // A final item without its time counts as finished long ago.
        finished_at: c
            .status
            .is_final()
            .then(|| micros(head.finished_at()).unwrap_or(0)),
        doc: c,
    }
}

/// Records `agent` as seen at `now` (see `coord_seen`).
pub(crate) fn seen_sql(agent: &str, now: Timestamp) -> String {
    let sighting = AgentRegistration {
        agent_id: agent.to_owned(),
        team: None,
        capacity: None,
    };
    let record = AgentRecord::seen(None, &sighting, now).expect("a new agent is always recorded");
    format!("EXECUTE coord_seen({}, {});", lit(agent), json_lit(&record))
}

/// The ids of `rows` of a `SELECT work_item_id` statement.
pub(crate) fn ids_of(rows: &[SimpleQueryRow]) -> Result<BTreeSet<String>, Fail> {
    rows.iter().map(|r| text(r, 0).map(str::to_owned)).collect()
}

/// The advisory lock that orders readers numbering the event log.
pub(crate) fn sequencer_lock(schema: &str) -> String {
    format!(
        "SELECT pg_advisory_xact_lock({LOCK_CLASS}, hashtext({}))",
        lit(&format!("{schema}#events"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_statement_declares_parameter_types_the_extended_protocol_knows() {
        for statement in statements() {
            let types = statement.types();
            let declared =
                statement.params.matches(',').count() + usize::from(statement.params.len() > 2);
            assert_eq!(types.len(), declared, "{}", statement.name);
        }
    }

    #[test]
    fn literals_double_quotes_and_keep_everything_else() {
        assert_eq!(lit("plain"), "'plain'");
        assert_eq!(lit("it's"), "'it''s'");
        assert_eq!(lit(""), "''");
        assert_eq!(lit("''"), "''''''");
        assert_eq!(lit("a'"), "'a'''");
        assert_eq!(lit(r"back\slash"), r"'back\slash'");
        assert_eq!(lit("'; DROP TABLE x; --"), "'''; DROP TABLE x; --'");
        assert_eq!(text_array(["a", "b'c"]), "ARRAY['a','b''c']::text[]");
    }
}
