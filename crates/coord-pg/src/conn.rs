//! A connection to the database.
//!
//! [`Conn`] runs batches of statements in one round trip (the simple query
//! protocol) or one prepared statement with binary arguments (the extended
//! protocol), preparing coord's statements on first use.

use std::collections::{HashMap, HashSet};

use coord_core::Timestamp;
use postgres::types::ToSql;
use postgres::{Client, Row, SimpleQueryMessage, SimpleQueryRow};

use crate::sql::statements;

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
    /// The idempotency key the change in progress remembers its answer
    /// under (see `keys.rs`); set for one keyed call.
    pub keyed: Option<crate::keys::KeyedCall>,
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
            keyed: None,
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
        let client = &mut self.client;
        let run = |client: &mut Client, text: &str| {
            crate::spans::round_trip(
                || trip_name(sql),
                Timestamp::now,
                |results: &Vec<Vec<SimpleQueryRow>>| results.iter().map(|r| r.len() as u64).sum(),
                || simple_batch(client, text),
            )
        };
        if new.is_empty() {
            return run(client, sql);
        }
        match run(client, &format!("{prefix}{sql}")) {
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
        let client = &mut self.client;
        crate::spans::round_trip(
            || name.to_owned(),
            Timestamp::now,
            |rows: &Vec<Row>| rows.len() as u64,
            || client.query(&statement, params),
        )
    }
}

/// A round trip's name in spans: the prepared statements it executes,
/// between `BEGIN` and `COMMIT` when it opens or ends a transaction (else
/// its first word).
fn trip_name(sql: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    if sql.starts_with("BEGIN") {
        parts.push("BEGIN");
    }
    parts.extend(executed(sql));
    if sql.trim_end().ends_with("COMMIT") {
        parts.push("COMMIT");
    }
    if parts.is_empty() {
        parts.extend(sql.split_whitespace().next());
    }
    parts.join(" ")
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
