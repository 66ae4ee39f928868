//! What coord says to PostgreSQL: every statement it prepares, how values
//! are written as literals in a batch, and the statements a change's
//! batches are made of ([`read`]).
//!
//! The statements select, lock and store; they decide nothing a store
//! decides (that is `coord_core::decide`). The one-statement paths stamp a
//! fence and revision they draw into the document they write, and `next`'s
//! applies the patch `take.rs` learnt from the decision layer; each is held
//! to it by a property test.

use std::sync::OnceLock;

use coord_core::{AgentRecord, AgentRegistration, Priority, Timestamp};
use postgres::types::Type;
use serde::Serialize;

/// The first key of every advisory lock coord takes ("coor" in ASCII), so
/// they do not collide with other applications' locks.
pub const LOCK_CLASS: i32 = 0x636f_6f72;

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

/// One of coord's prepared statements.
pub(crate) struct Statement {
    pub name: &'static str,
    /// The parameter types, as `PREPARE` takes them: `(int8, text)`.
    pub params: &'static str,
    pub sql: String,
}

impl Statement {
    /// The parameter types, for the extended protocol.
    pub(crate) fn types(&self) -> Vec<Type> {
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
/// Whether coord's statement `name` may wait for a lock: it locks rows
/// without `SKIP LOCKED`, or takes an advisory lock.
pub(crate) fn waits_for_locks(name: &str) -> bool {
    statements().iter().any(|s| {
        s.name == name
            && (s.sql.contains("pg_advisory_xact_lock")
                || ((s.sql.contains("FOR UPDATE") || s.sql.contains("FOR SHARE"))
                    && !s.sql.contains("SKIP LOCKED")))
    })
}

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

/// The columns of a claim row as `jsonb_to_recordset` reads them (see
/// `rows::row_of`).
pub(crate) const CLAIM_ROW: &str = "id text, work_type text, priority int2, status text, \
     agent_id text, lease_deadline int8, posted_at int8, retry_at int8, finished_at int8, \
     doc jsonb";

fn statement_list() -> Vec<(&'static str, String)> {
    let claim_row = CLAIM_ROW;
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
            format!(
                "SELECT doc::text FROM coord_claims AS c \
                 WHERE status = 'pending' AND (retry_at IS NULL OR retry_at <= $1) \
                   AND (cardinality($2) = 0 OR work_type = ANY($2)) {NOT_PAUSED} \
                   AND NOT (work_item_id = ANY($3)) \
                 ORDER BY priority DESC, posted_at NULLS FIRST, seq \
                 LIMIT $4"
            ),
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
            "SELECT work_item_id, status FROM coord_claims WHERE work_item_id = ANY($1) FOR SHARE"
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
        (
            "coord_next_blind(int8, int2[], jsonb, text[], jsonb, jsonb, int8)",
            next_blind(""),
        ),
        (
            "coord_next_blind_typed(int8, int2[], jsonb, text[], jsonb, jsonb, int8, text[])",
            next_blind("AND work_type = ANY($8)"),
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
            // Moves items to the archive, as they stood; `$2` is the time.
            "coord_archive(text[], int8)",
            "WITH moved AS ( \
               DELETE FROM coord_claims WHERE work_item_id = ANY($1) \
               RETURNING work_item_id, seq, doc) \
             INSERT INTO coord_archive (work_item_id, archived_at, doc) \
             SELECT work_item_id, $2, doc FROM moved ORDER BY seq \
             ON CONFLICT (work_item_id) DO UPDATE \
               SET archived_at = excluded.archived_at, doc = excluded.doc"
                .to_owned(),
        ),
        (
            // The finished items a cleanup may move (at or before `$1`, any
            // when NULL), locked, in the order they came.
            "coord_finished(int8)",
            "SELECT doc::text FROM coord_claims WHERE finished_at IS NOT NULL \
               AND ($1::int8 IS NULL OR finished_at <= $1) ORDER BY seq FOR UPDATE"
                .to_owned(),
        ),
        (
            // The pending items that depend on any of `$1`, locked: what a
            // change that ended those items fails with them (`cascade`).
            "coord_dependents_of(text[])",
            "SELECT doc::text FROM coord_claims \
             WHERE status = 'pending' AND depends_on && $1 ORDER BY work_item_id FOR UPDATE"
                .to_owned(),
        ),
        (
            // The items of statuses `$1` (of work type `$2`, any when NULL),
            // locked: what a bulk cancel or retry may act on.
            "coord_operable(text[], text)",
            "SELECT doc::text FROM coord_claims \
             WHERE status = ANY($1) AND ($2::text IS NULL OR work_type = $2) \
             ORDER BY seq FOR UPDATE"
                .to_owned(),
        ),
        (
            // Unfinished items that depend on others: what cleanup keeps.
            "coord_dependents",
            "SELECT doc::text FROM coord_claims \
             WHERE finished_at IS NULL AND cardinality(depends_on) > 0"
                .to_owned(),
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

/// A condition on a `coord_claims AS c` row: its work type is not paused
/// (`coord pause`). The paused types are read once per statement (an
/// uncorrelated sub-select, computed before the scan) and each row only
/// compared with that array, nearly always empty. A correlated `NOT EXISTS`
/// on `coord_paused` (per row) made `next` about half as fast at one to
/// four clients (docs/benchmarks.md).
const NOT_PAUSED: &str = "AND c.work_type <> ALL (ARRAY(SELECT work_type FROM coord_paused))";

/// `next`'s one-statement path (see `PgStore::next`), for a policy whose
/// priorities that never conflict (`$2`, the `priority` column's values)
/// are the lowest ones. `blocking` probes, without a lock, for a ready item
/// (of the work types `$8`, with `type_filter`; pending, past its
/// `retry_at`, every dependency completed) of a higher priority: then, or
/// when a lapsed lease waits to be written down, nothing is taken. Else the
/// best ready items no other transaction holds, up to `$7`, are locked and
/// taken: `take.rs`'s patch (`$3` its columns, `$4` the fields cleared, `$5`
/// those set) with fences drawn after their locks, one revision for all,
/// and an event each (`$6` and the item's fields). Returns the taken items;
/// one NULL when nothing ready is pending (held rows count: they may be
/// given up); no row when the store must take the path that reads first.
///
/// The probe reads only the index entries of the higher priorities: a
/// look at the best ready item of any priority would read past the entries
/// of every item taken since the last vacuum, a second time (the take reads
/// them too), and costs about a tenth of the rate (docs/benchmarks.md).
///
/// It locks only rows it takes. A row it locked to look at and then left
/// would make concurrent `next`s skip an item nobody takes.
///
/// Two statements rather than one with `cardinality($8) = 0 OR ...`: the
/// plan PostgreSQL keeps for a prepared statement guesses how selective
/// such a condition is, and a low guess makes it sort every pending item
/// instead of reading the queue's index in order.
fn next_blind(type_filter: &str) -> String {
    let ready = format!(
        "status = 'pending' AND (retry_at IS NULL OR retry_at <= $1) {type_filter} {NOT_PAUSED} \
         AND (cardinality(c.depends_on) = 0 OR NOT EXISTS ( \
             SELECT 1 FROM unnest(c.depends_on) AS d(id) WHERE NOT EXISTS ( \
                 SELECT 1 FROM coord_claims AS x \
                 WHERE x.work_item_id = d.id AND x.status = 'completed')))"
    );
    format!(
        "WITH lapsed AS (SELECT 1 WHERE {LAPSED}), \
         blocking AS (SELECT 1 FROM coord_claims AS c WHERE {ready} \
             AND priority > (SELECT max(p) FROM unnest($2) AS f(p)) LIMIT 1), \
         best AS (SELECT work_item_id FROM coord_claims AS c \
             WHERE {ready} AND priority = ANY($2) \
               AND NOT EXISTS (SELECT 1 FROM blocking) AND NOT EXISTS (SELECT 1 FROM lapsed) \
             ORDER BY priority DESC, posted_at NULLS FIRST, seq \
             LIMIT $7 FOR UPDATE SKIP LOCKED), \
         rev AS (SELECT nextval('coord_revision') AS r), \
         n AS (SELECT best.work_item_id AS id, rev.r, nextval('coord_fence') AS f \
                 FROM best, rev), \
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
           FROM took ORDER BY f) \
         SELECT doc::text FROM took \
         UNION ALL SELECT NULL WHERE NOT EXISTS (SELECT 1 FROM best) \
           AND NOT EXISTS (SELECT 1 FROM blocking) AND NOT EXISTS (SELECT 1 FROM lapsed) \
           AND NOT EXISTS (SELECT 1 FROM coord_claims AS c WHERE {ready})"
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
            .map(|t| super::type_key(schema, t))
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

    /// The chosen candidate, locked unless another transaction holds it,
    /// while still ready.
    pub fn ready_if_free(id: &str, now: i64) -> String {
        format!("EXECUTE coord_take_ready({}, {now})", lit(id))
    }

    /// The chosen candidate, locked once whoever holds it lets go, while
    /// still ready.
    pub fn ready_once_free(id: &str, now: i64) -> String {
        format!("EXECUTE coord_wait_ready({}, {now})", lit(id))
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

    /// The change's revision.
    pub fn revision() -> String {
        "EXECUTE coord_revision_only".to_owned()
    }

    /// The change's revision and the fence of the item it takes. Drawn
    /// after the item is locked, so a later tenure always gets a larger one.
    pub fn revision_and_fence() -> String {
        "EXECUTE coord_revision_and_fence".to_owned()
    }

    /// The finished items a cleanup may move, locked (`cutoff`: finished at
    /// or before it; every one when `None`).
    pub fn finished(cutoff: Option<i64>) -> String {
        let cutoff = cutoff.map_or_else(|| "NULL".to_owned(), |c| c.to_string());
        format!("EXECUTE coord_finished({cutoff})")
    }

    /// The unfinished items that depend on others. Read after the finished
    /// items are locked, so its snapshot sees any item that came to depend
    /// on one of them while the lock was awaited.
    pub fn dependents() -> String {
        "EXECUTE coord_dependents".to_owned()
    }

    /// The pending items that depend on any of `ids`, locked.
    pub fn dependents_of(ids: &[String]) -> String {
        format!("EXECUTE coord_dependents_of({})", text_array(ids))
    }

    /// The items of `statuses` (of `work_type`, when given), locked.
    pub fn operable(statuses: &[&str], work_type: Option<&str>) -> String {
        format!(
            "EXECUTE coord_operable({}, {})",
            text_array(statuses),
            opt(work_type)
        )
    }

    /// A fence alone, for a change that drew its revision before it locked
    /// the item it takes.
    pub fn fence() -> String {
        "EXECUTE coord_fence_only".to_owned()
    }
}

/// Records `agent` as seen at `now` (see `coord_seen`).
pub(crate) fn seen_sql(agent: &str, now: Timestamp) -> String {
    let record = AgentRecord::seen(None, &AgentRegistration::sighting(agent), now)
        .expect("a new agent is always recorded");
    format!("EXECUTE coord_seen({}, {});", lit(agent), json_lit(&record))
}

/// The advisory lock that orders readers numbering the event log.
/// Gives every committed event not yet numbered its place in the log
/// (`seq`), in `id` order, under `sequencer_lock`.
pub(crate) const SEQUENCE_EVENTS: &str = "WITH base AS (SELECT coalesce(max(seq), 0) AS b FROM coord_events), \
          todo AS (SELECT id, row_number() OVER (ORDER BY id) AS n \
                   FROM coord_events WHERE seq IS NULL) \
     UPDATE coord_events AS e SET seq = base.b + todo.n \
     FROM todo, base WHERE e.id = todo.id";

pub(crate) fn sequencer_lock(schema: &str) -> String {
    format!(
        "SELECT pg_advisory_xact_lock({LOCK_CLASS}, hashtext({}))",
        lit(&format!("{schema}#events"))
    )
}

/// Two claims that may exclude each other lock the same key.
pub(crate) fn type_key(schema: &str, work_type: &str) -> String {
    format!("{schema}/{work_type}")
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
