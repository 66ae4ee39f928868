//! `idempotency_keys.json`: the answers of recent keyed changes (see
//! `coord_core::IdempotencyKey`), so a retried call is answered, not made
//! again.
//!
//! One JSON object, `{"keys": [...]}`, each entry an agent's key, when it was
//! used, the call's fingerprint and answer, and the store `revision` the
//! answer belongs to. A keyed change writes the file ahead of its claims
//! file, after its events: an entry whose revision has not committed is a
//! dead writer's and counts for nothing; the next writer that finds the
//! event log ahead of the claims (what such a crash leaves) drops it. A
//! refusal changes no item and is written at the revision already
//! committed. Entries older than `KEY_TTL` go, and at most [`MAX_KEYS`] are
//! kept (the oldest go first): each keyed change rewrites the file, so it
//! must stay small. (`coord run` and `coord work` key nothing on a
//! directory: there an answer is lost only with the process that asked.)

use std::path::{Path, PathBuf};

use coord_core::{CoordError, IdempotencyKey, KEY_TTL, KeyedChange, Remembered, Timestamp};
use reactor_file::{AtomicWriter, Contents, read_optional};
use serde::{Deserialize, Serialize};

use crate::errors::file_error;

pub const KEYS_FILE: &str = "idempotency_keys.json";

/// The most keys the file keeps.
pub const MAX_KEYS: usize = 1_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    agent_id: String,
    key: String,
    at: Timestamp,
    revision: u64,
    #[serde(flatten)]
    remembered: Remembered,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Doc {
    keys: Vec<Entry>,
}

/// The keys file as read: its entries, and its bytes to put back if the
/// change that rewrites it is undone.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    path: PathBuf,
    doc: Doc,
    bytes: Option<Contents>,
}

impl Keys {
    pub(crate) fn read(dir: &Path) -> Result<Keys, CoordError> {
        let path = dir.join(KEYS_FILE);
        let bytes = read_optional(&path).map_err(file_error)?;
        let doc = match &bytes {
            None => Doc::default(),
            Some(b) => serde_json::from_slice(b).map_err(|e| {
                CoordError::damaged(format!(
                    "{} is not a valid idempotency keys file: {e}",
                    path.display()
                ))
            })?,
        };
        Ok(Keys {
            path,
            doc,
            bytes: bytes.map(Contents::new),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn previous(&self) -> Option<Contents> {
        self.bytes.clone()
    }

    /// What `agent`'s `key` answered, if it was used within `KEY_TTL` of
    /// `now` in a change that committed.
    pub(crate) fn lookup(
        &self,
        agent: &str,
        key: &IdempotencyKey,
        now: Timestamp,
        committed: u64,
    ) -> Option<Remembered> {
        let since = now.saturating_sub(KEY_TTL);
        self.doc
            .keys
            .iter()
            .rev()
            .find(|e| {
                e.agent_id == agent
                    && e.key == key.as_str()
                    && e.at > since
                    && e.revision <= committed
            })
            .map(|e| e.remembered.clone())
    }

    /// The file with `remembered` added for `change`'s agent and `key` at
    /// `revision`; expired entries, entries of revisions past `committed`
    /// (a dead writer's) and the oldest beyond [`MAX_KEYS`] left out.
    pub(crate) fn with(
        &self,
        key: &IdempotencyKey,
        change: &KeyedChange<'_>,
        remembered: Remembered,
        now: Timestamp,
        committed: u64,
        revision: u64,
    ) -> Vec<u8> {
        let since = now.saturating_sub(KEY_TTL);
        let agent = change.agent_id();
        let mut keys: Vec<Entry> = self
            .doc
            .keys
            .iter()
            .filter(|e| e.at > since && e.revision <= committed)
            .filter(|e| !(e.agent_id == agent && e.key == key.as_str()))
            .cloned()
            .collect();
        keys.push(Entry {
            agent_id: agent.to_owned(),
            key: key.as_str().to_owned(),
            at: now,
            revision,
            remembered,
        });
        let excess = keys.len().saturating_sub(MAX_KEYS);
        keys.drain(..excess);
        render(&Doc { keys })
    }
}

fn render(doc: &Doc) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(doc).expect("keys always serialise");
    bytes.push(b'\n');
    bytes
}

/// Drops the entries of revisions past `committed`: a change that wrote
/// its key and died before its claims file. Run when the event log shows
/// such a change; no file, nothing to do.
pub(crate) fn settle(dir: &Path, committed: u64, writer: &AtomicWriter) -> Result<(), CoordError> {
    if !dir.join(KEYS_FILE).exists() {
        return Ok(());
    }
    let keys = Keys::read(dir)?;
    let kept: Vec<Entry> = keys
        .doc
        .keys
        .iter()
        .filter(|e| e.revision <= committed)
        .cloned()
        .collect();
    if kept.len() == keys.doc.keys.len() {
        return Ok(());
    }
    tracing::warn!(
        dropped = keys.doc.keys.len() - kept.len(),
        committed,
        "dropped idempotency keys of a change that never committed"
    );
    writer
        .write(&keys.path, &render(&Doc { keys: kept }))
        .map_err(|f| CoordError::AtomicWriteFailed {
            path: keys.path.clone(),
            source: Box::new(f.source),
        })
}

/// Writes `bytes` as the keys file outside a change's saga (a refusal's
/// key, which changes nothing else).
pub(crate) fn write(keys: &Keys, bytes: &[u8], writer: &AtomicWriter) -> Result<(), CoordError> {
    writer
        .write(&keys.path, bytes)
        .map_err(|f| CoordError::AtomicWriteFailed {
            path: keys.path.clone(),
            source: Box::new(f.source),
        })
}
