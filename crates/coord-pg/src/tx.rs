//! One change in one transaction, in as few round trips as possible.
//!
//! A change's reads and locks go to the server as one batch of statements
//! (`BEGIN; ...`), its writes and `COMMIT` as another: two round trips for
//! a claim, `next` or transition in the common case, where pgbench's
//! one-row insert takes one. The batches use PostgreSQL's simple query
//! protocol, which runs several statements per message, so values travel
//! as escaped literals (see `sql::lit`); every statement in a batch still
//! gets its own snapshot, so a row read after a lock is taken sees the
//! commits the lock waited for. A change that is one statement alone (a
//! claim that excludes nobody, `next` of plain work) goes instead over the
//! extended protocol with binary arguments (`Conn::query`), which the
//! server neither parses nor analyses per call.
//!
//! Between the two batches `coord_core::decide` decides; [`Tx::commit`]
//! writes its [`Decision`], after the cascade every change ends with has
//! read (and locked) the items that depend on what it ended, if any.

use coord_core::decide;
use coord_core::{Answer, Claim, CoordError, Decision, Timestamp};
use postgres::SimpleQueryRow;

use crate::conn::Conn;
use crate::fail::Fail;
use crate::rows::{claim_from, number, optional_number, row_of};
use crate::sql::{json_lit, read};

/// One change in progress: the open transaction, and the numbers it drew.
pub(crate) struct Tx<'c> {
    conn: &'c mut Conn,
    /// Whether `BEGIN` went out and neither `COMMIT` nor `ROLLBACK` did.
    open: bool,
    pub now: Timestamp,
    revision: Option<u64>,
    fence: Option<u64>,
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            // Nothing was committed; a broken connection rolls back anyway.
            let _ = self.conn.client.simple_query("ROLLBACK");
        }
    }
}

impl<'c> Tx<'c> {
    /// Opens the transaction and runs `statements` in the same round trip.
    pub fn begin(
        conn: &'c mut Conn,
        now: Timestamp,
        statements: &[String],
    ) -> Result<(Self, Vec<Vec<SimpleQueryRow>>), Fail> {
        let tx = Tx {
            conn,
            open: true,
            now,
            revision: None,
            fence: None,
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

    /// Takes the numbers of a `read::numbers` or `read::fence` statement.
    /// A change has one revision: once drawn, it is kept.
    pub fn numbers(&mut self, rows: &[SimpleQueryRow]) -> Result<(), Fail> {
        let row = rows
            .first()
            .ok_or_else(|| CoordError::internal("nextval returned no row"))?;
        if let Some(revision) = optional_number(row, 0)? {
            assert!(self.revision.is_none(), "a change draws its revision once");
            self.revision = Some(revision);
        }
        if row.columns().len() > 1 {
            self.fence = Some(number(row, 1)?);
        }
        Ok(())
    }

    pub fn revision(&self) -> u64 {
        self.revision
            .expect("the revision is drawn with the first reads")
    }

    pub fn fence(&self) -> u64 {
        self.fence.expect("the fence is drawn with the item's lock")
    }

    /// Writes `decision` (items, events, archive moves), records `seen`
    /// as active, and commits: one round trip. For a change that answers
    /// with an item, see [`Tx::commit_answering`].
    pub fn commit(self, decision: Decision, seen: Option<&str>) -> Result<(), Fail> {
        self.commit_with(decision, seen, None)
    }

    /// [`Tx::commit`] for a change that answers with `answer`: a keyed
    /// call's key and answer go in the same commit.
    pub fn commit_answering(
        self,
        decision: Decision,
        seen: Option<&str>,
        answer: &Claim,
    ) -> Result<(), Fail> {
        self.commit_with(decision, seen, Some(answer))
    }

    fn commit_with(
        mut self,
        mut decision: Decision,
        seen: Option<&str>,
        answer: Option<&Claim>,
    ) -> Result<(), Fail> {
        let now = self.now;
        // Every change ends so: what depended on an item it ended without
        // completing is read (one more round trip, only then) and failed.
        decide::cascade(&mut decision, |ended: &[String]| {
            let rows = self.run(&[read::dependents_of(ended)])?;
            rows[0].iter().map(claim_from).collect()
        })?;
        let (written, events, archived) = decision.into_parts();
        crate::spans::note_expired(&events);
        let mut sql = String::new();
        let (mut new, mut old) = (Vec::new(), Vec::new());
        for w in &written {
            if w.is_new() { &mut new } else { &mut old }.push(row_of(&w.claim));
        }
        if !new.is_empty() {
            sql.push_str(&format!("EXECUTE coord_insert({});", json_lit(&new)));
        }
        match (old.is_empty(), events.is_empty()) {
            (false, false) => sql.push_str(&format!(
                "EXECUTE coord_update_and_log({}, {});",
                json_lit(&old),
                json_lit(&events)
            )),
            (false, true) => sql.push_str(&format!("EXECUTE coord_update({});", json_lit(&old))),
            (true, false) => {
                sql.push_str(&format!("EXECUTE coord_log({});", json_lit(&events)));
            }
            (true, true) => {}
        }
        if !archived.is_empty() {
            sql.push_str(&format!(
                "EXECUTE coord_archive({}, {});",
                crate::sql::text_array(&archived),
                now.as_unix_micros()
            ));
        }
        if let Some(agent) = seen {
            sql.push_str(&crate::sql::seen_sql(agent, now));
        }
        if let Some(call) = &self.conn.keyed {
            let answer = answer.ok_or_else(|| {
                CoordError::internal("a keyed change committed without its answer")
            })?;
            sql.push_str(&call.remember_sql(&Answer::Item(Box::new(answer.clone())), now));
        }
        sql.push_str("COMMIT");
        // A statement that fails skips the rest of the batch, COMMIT too,
        // and leaves the transaction aborted: Drop then rolls it back.
        self.conn.batch(&sql)?;
        self.open = false;
        Ok(())
    }
}
