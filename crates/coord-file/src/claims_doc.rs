//! `work_claims.json`: a JSON array with one work item object per line.
//!
//! Records are kept as their raw bytes plus a decoded [`ClaimHead`]. A
//! change goes through a [`Draft`]: only the records it touches are decoded
//! and re-encoded, so other records (and the fields other tools added to
//! them) keep every byte, and a claim costs little more than the I/O even in
//! a large file.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use coord_core::{Claim, ClaimHead, CoordError, Status, Timestamp};
use reactor_file::Contents;
use serde_json::Value;
use serde_json::value::RawValue;

/// The claims file inside the coordination directory.
pub const CLAIMS_FILE: &str = "work_claims.json";

/// A record changed or added by a draft: its new bytes and head.
#[derive(Clone)]
struct Record {
    raw: Box<RawValue>,
    head: Arc<ClaimHead>,
}

/// The parsed claims file, as read: the bytes once, and for each record its
/// span in them and its decoded head. Cheap to clone: a store keeps the last
/// one it read, so that reading the file again decodes only the records
/// whose bytes changed (see [`ClaimsDoc::parse`]).
#[derive(Clone)]
pub(crate) struct ClaimsDoc {
    bytes: Contents,
    records: Arc<Vec<(Range<usize>, Arc<ClaimHead>)>>,
    summary: Summary,
}

/// What changes ask of the whole file, worked out once per document (while
/// it is parsed or rendered), so a change in a big file does not scan every
/// record again for each of them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Summary {
    pub max_fence: u64,
    /// The largest revision a record carries (0 for the older tools').
    pub max_revision: u64,
    /// The earliest lease deadline of an in-progress record.
    pub earliest_deadline: Option<Timestamp>,
    /// How many records are in a final status.
    pub finished: usize,
    /// The largest `N` of the ids shaped `<word>_<N>` (work item and
    /// coordination ids): an id minted with a larger number is free.
    pub max_id_number: u128,
}

/// The number ending an id shaped `<word>_<digits>`, as coord mints them.
fn id_number(id: &str) -> Option<u128> {
    let (_, digits) = id.rsplit_once('_')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn head_id_number(head: &ClaimHead) -> u128 {
    let coordination = head.coordination_id.as_deref().and_then(id_number);
    id_number(&head.work_item_id).max(coordination).unwrap_or(0)
}

impl Summary {
    fn add(&mut self, head: &ClaimHead) {
        self.max_fence = self.max_fence.max(head.fence.unwrap_or(0));
        self.max_revision = self.max_revision.max(head.revision.unwrap_or(0));
        if head.status == Status::InProgress
            && let Some(deadline) = head.lease_deadline()
        {
            self.earliest_deadline =
                Some(self.earliest_deadline.map_or(deadline, |d| d.min(deadline)));
        }
        if head.status.is_final() {
            self.finished += 1;
        }
        self.max_id_number = self.max_id_number.max(head_id_number(head));
    }

    /// This summary without `old`, a record that goes, or that `new`
    /// replaces (then add `new` after). `None` when only a pass over every
    /// record could tell: `old` held a maximum or the earliest deadline that
    /// `new` does not keep up.
    fn without(mut self, old: &ClaimHead, new: Option<&ClaimHead>) -> Option<Summary> {
        let held = |max: u64, before: Option<u64>, after: Option<u64>| {
            let before = before.unwrap_or(0);
            before > 0 && before == max && after.is_none_or(|a| a < before)
        };
        if held(self.max_fence, old.fence, new.map(|n| n.fence.unwrap_or(0)))
            || held(
                self.max_revision,
                old.revision,
                new.map(|n| n.revision.unwrap_or(0)),
            )
        {
            return None;
        }
        if old.status == Status::InProgress
            && old
                .lease_deadline()
                .is_some_and(|d| Some(d) == self.earliest_deadline)
        {
            return None;
        }
        let id = head_id_number(old);
        if id > 0 && id == self.max_id_number && new.is_none_or(|n| head_id_number(n) < id) {
            return None;
        }
        if old.status.is_final() {
            self.finished -= 1;
        }
        Some(self)
    }

    fn of(records: &[(Range<usize>, Arc<ClaimHead>)]) -> Summary {
        let mut summary = Summary::default();
        for (_, head) in records {
            summary.add(head);
        }
        summary
    }
}

impl AsRef<[u8]> for ClaimsDoc {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl std::fmt::Debug for ClaimsDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimsDoc")
            .field("bytes", &self.bytes.len())
            .field("records", &self.records.len())
            .finish()
    }
}

fn invalid(path: &Path, what: impl std::fmt::Display) -> CoordError {
    CoordError::damaged(format!(
        "{} is not a valid claims file: {what}",
        path.display()
    ))
}

/// Decodes the head of record `index`, refusing exactly the records that a
/// full decode (what `list` and `show` do) refuses. The head skips fields
/// it does not read without a depth limit, the full decode has one (JSON
/// nested past 128 levels): a record with that many brackets is decoded
/// whole as well, so every command reads or refuses it alike.
fn decode_head(path: &Path, index: usize, text: &str) -> Result<ClaimHead, CoordError> {
    let head = serde_json::from_str(text)
        .map_err(|e| invalid(path, format_args!("record {index}: {e}")))?;
    let brackets = memchr::memchr2_iter(b'{', b'[', text.as_bytes()).count();
    if brackets > MAY_BE_TOO_DEEP {
        decode(path, index, text.as_bytes())?;
    }
    Ok(head)
}

/// Refuses a file in which two records share a `work_item_id`: which one
/// a change acts on would be a guess. coord mints ids with numbers above
/// every id in the file and appends, so in its own files the numbers grow
/// record by record, which proves the ids distinct without a set; only a
/// file where they do not (another tool's, or hand-edited) is hashed.
fn check_unique_ids(
    path: &Path,
    records: &[(Range<usize>, Arc<ClaimHead>)],
) -> Result<(), CoordError> {
    let mut last = None;
    let increasing = records.iter().all(|(_, head)| {
        let n = id_number(&head.work_item_id);
        let grows = n.is_some() && n > last;
        last = n;
        grows
    });
    if increasing {
        return Ok(());
    }
    let mut seen = std::collections::HashSet::with_capacity(records.len());
    match records
        .iter()
        .position(|(_, head)| !seen.insert(head.work_item_id.as_str()))
    {
        None => Ok(()),
        Some(i) => Err(invalid(
            path,
            format_args!(
                "record {i} has the work_item_id {:?} of an earlier record; ids must be unique",
                records[i].1.work_item_id
            ),
        )),
    }
}

/// Fewer brackets than this cannot nest past serde_json's depth limit.
const MAY_BE_TOO_DEEP: usize = 100;

fn decode(path: &Path, index: usize, raw: &[u8]) -> Result<Claim, CoordError> {
    serde_json::from_slice(raw).map_err(|e| invalid(path, format_args!("record {index}: {e}")))
}

fn encode(value: &impl serde::Serialize) -> Box<RawValue> {
    let text = serde_json::to_string(value).expect("claims and JSON maps always serialise");
    RawValue::from_string(text).expect("serde_json output is valid JSON")
}

impl ClaimsDoc {
    /// Parses the file's bytes; a missing or blank file is an empty store.
    /// The document keeps the shared bytes and points into them.
    ///
    /// `prior` is a document parsed earlier from this file, if any: a record
    /// whose bytes lie in the stretch both files begin with (or end with) is
    /// the same record, and keeps its decoded head. So a long-lived store
    /// re-reading a big file decodes only what changed since its last read.
    pub(crate) fn parse(
        path: &Path,
        bytes: Option<&Contents>,
        prior: Option<&ClaimsDoc>,
    ) -> Result<ClaimsDoc, CoordError> {
        let Some(bytes) = bytes.filter(|b| !b.iter().all(u8::is_ascii_whitespace)) else {
            return Ok(ClaimsDoc {
                bytes: Contents::default(),
                records: Arc::default(),
                summary: Summary::default(),
            });
        };
        // coord's own layout first, on the bytes: a record reused from
        // `prior` was checked (UTF-8 included) when it was first read.
        if let Some(records) = Self::parse_own_layout(path, bytes, prior)? {
            check_unique_ids(path, &records)?;
            return Ok(ClaimsDoc {
                bytes: bytes.clone(),
                summary: Summary::of(&records),
                records: Arc::new(records),
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|e| {
            invalid(
                path,
                format_args!("expected a JSON array of claim objects (not UTF-8: {e})"),
            )
        })?;
        // Borrowed raw values point into the bytes: their spans are where the
        // records are, so nothing is copied per record.
        let raws: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| {
            invalid(
                path,
                format_args!("expected a JSON array of claim objects ({e})"),
            )
        })?;
        let base = text.as_ptr() as usize;
        let records: Vec<(Range<usize>, Arc<ClaimHead>)> = raws
            .iter()
            .enumerate()
            .map(|(i, raw)| {
                let raw = raw.get();
                if !raw.starts_with('{') {
                    return Err(invalid(
                        path,
                        format_args!("record {i} is not a JSON object"),
                    ));
                }
                let head = decode_head(path, i, raw)?;
                let start = raw.as_ptr() as usize - base;
                Ok((start..start + raw.len(), Arc::new(head)))
            })
            .collect::<Result<_, _>>()?;
        check_unique_ids(path, &records)?;
        Ok(ClaimsDoc {
            bytes: bytes.clone(),
            summary: Summary::of(&records),
            records: Arc::new(records),
        })
    }

    /// The layout coord writes, `[`, then one `  {record}` per line with a
    /// comma after all but the last, then `]`, read in one pass: each line is
    /// decoded once, as the record it must be. `None` for any other layout
    /// (another tool's formatting), which the general parser reads.
    #[allow(clippy::type_complexity)]
    fn parse_own_layout(
        path: &Path,
        bytes: &[u8],
        prior: Option<&ClaimsDoc>,
    ) -> Result<Option<Vec<(Range<usize>, Arc<ClaimHead>)>>, CoordError> {
        let Some(body) = bytes
            .strip_prefix(b"[\n")
            .and_then(|b| b.strip_suffix(b"\n]\n"))
        else {
            return Ok(None);
        };
        let mut records = Vec::with_capacity(body.len() / 300 + 1);
        let mut known = prior.map(|p| Known::new(p, bytes));
        let mut line_start = 0;
        let ends = memchr::memchr_iter(b'\n', body).chain([body.len()]);
        let mut ends = ends.peekable();
        while let Some(end) = ends.next() {
            let last = ends.peek().is_none();
            let line = &body[line_start..end];
            let record = match (line.strip_prefix(b"  "), last) {
                (Some(r), true) if r.starts_with(b"{") && r.ends_with(b"}") => r,
                (Some(r), false) if r.starts_with(b"{") && r.ends_with(b"},") => &r[..r.len() - 1],
                _ => return Ok(None),
            };
            // `[` and a newline come before the body, two spaces before a record.
            let start = 2 + line_start + 2;
            let span = start..start + record.len();
            let head = match known.as_mut().and_then(|k| k.head(&span)) {
                Some(head) => head,
                None => {
                    let n = records.len();
                    let text = std::str::from_utf8(record)
                        .map_err(|e| invalid(path, format_args!("record {n} is not UTF-8: {e}")))?;
                    Arc::new(decode_head(path, n, text)?)
                }
            };
            records.push((span, head));
            line_start = end + 1;
        }
        Ok(Some(records))
    }

    /// The file's bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The file's bytes, shared.
    pub(crate) fn contents(&self) -> Contents {
        self.bytes.clone()
    }

    fn raw(&self, index: usize) -> &[u8] {
        &self.bytes[self.records[index].0.clone()]
    }

    pub(crate) fn heads(&self) -> impl Iterator<Item = &ClaimHead> {
        self.records.iter().map(|(_, h)| h.as_ref())
    }

    pub(crate) fn position(&self, work_item_id: &str) -> Option<usize> {
        self.records
            .iter()
            .position(|(_, h)| h.work_item_id == work_item_id)
    }

    /// Decodes the whole record at `index`.
    pub(crate) fn claim(&self, path: &Path, index: usize) -> Result<Claim, CoordError> {
        decode(path, index, self.raw(index))
    }

    pub(crate) fn summary(&self) -> Summary {
        self.summary
    }

    /// Starts a change that will commit as store revision `revision`, with
    /// no fence at or below `fence_floor` to be handed out.
    pub(crate) fn draft<'a>(
        &'a self,
        path: &'a Path,
        revision: u64,
        fence_floor: u64,
    ) -> Draft<'a> {
        Draft {
            doc: self,
            path,
            revision,
            fence_floor,
            changed: BTreeMap::new(),
            added: Vec::new(),
            removed: BTreeSet::new(),
        }
    }
}

/// The records of an earlier parse of the file that are certainly the same
/// in the new bytes: those inside the prefix both files share, and those
/// inside the suffix they share (moved by the difference in length).
struct Known<'p> {
    records: &'p [(Range<usize>, Arc<ClaimHead>)],
    /// Length of the common prefix.
    prefix: usize,
    /// Where the common suffix starts in the new bytes, and how far records
    /// there moved from the old bytes.
    suffix_start: usize,
    shift: isize,
    /// The next old record to look at (records come in file order).
    next: usize,
}

impl<'p> Known<'p> {
    fn new(prior: &'p ClaimsDoc, new: &[u8]) -> Self {
        let old: &[u8] = &prior.bytes;
        let prefix = common_prefix(old, new);
        // The suffix may not reach into the prefix of either file.
        let limit = old.len().min(new.len()) - prefix;
        let suffix = common_suffix(old, new).min(limit);
        Known {
            records: &prior.records,
            prefix,
            suffix_start: new.len() - suffix,
            shift: new.len() as isize - old.len() as isize,
            next: 0,
        }
    }

    /// The head of the record at `span` of the new bytes, if an old record
    /// had exactly these bytes.
    fn head(&mut self, span: &Range<usize>) -> Option<Arc<ClaimHead>> {
        let old_start = if span.end <= self.prefix {
            span.start
        } else if span.start >= self.suffix_start {
            usize::try_from(span.start as isize - self.shift).ok()?
        } else {
            return None;
        };
        while self
            .records
            .get(self.next)
            .is_some_and(|(r, _)| r.start < old_start)
        {
            self.next += 1;
        }
        let (r, head) = self.records.get(self.next)?;
        (r.start == old_start && r.len() == span.len()).then(|| Arc::clone(head))
    }
}

/// How many bytes `a` and `b` begin with in common (compared a block at a
/// time, which the standard library turns into `memcmp`).
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    const BLOCK: usize = 4096;
    let n = a.len().min(b.len());
    let mut at = 0;
    while at + BLOCK <= n && a[at..at + BLOCK] == b[at..at + BLOCK] {
        at += BLOCK;
    }
    at + a[at..n]
        .iter()
        .zip(&b[at..n])
        .take_while(|(x, y)| x == y)
        .count()
}

/// How many bytes `a` and `b` end with in common.
fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    const BLOCK: usize = 4096;
    let n = a.len().min(b.len());
    let (ea, eb) = (a.len(), b.len());
    let mut at = 0;
    while at + BLOCK <= n && a[ea - at - BLOCK..ea - at] == b[eb - at - BLOCK..eb - at] {
        at += BLOCK;
    }
    at + a[..ea - at]
        .iter()
        .rev()
        .zip(b[..eb - at].iter().rev())
        .take_while(|(x, y)| x == y)
        .count()
}

/// A change in the making over a [`ClaimsDoc`]: records replaced, added and
/// removed, seen as one list. Positions below the document's length are its
/// records; positions from there on are the added ones.
pub(crate) struct Draft<'a> {
    doc: &'a ClaimsDoc,
    path: &'a Path,
    revision: u64,
    fence_floor: u64,
    changed: BTreeMap<usize, Record>,
    added: Vec<Record>,
    removed: BTreeSet<usize>,
}

/// A draft let go of its borrow: the document it changes (a cheap clone)
/// and its changes. What one change of a group commit leaves to the next:
/// the next continues it, and only the batch's last change renders the
/// file (rendering copies every record).
#[derive(Clone)]
pub(crate) struct Detached {
    doc: ClaimsDoc,
    path: std::path::PathBuf,
    revision: u64,
    fence_floor: u64,
    changed: BTreeMap<usize, Record>,
    added: Vec<Record>,
    removed: BTreeSet<usize>,
}

impl Detached {
    /// The revision the draft's change commits as.
    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    /// A draft with these changes made, to commit as `revision`.
    pub(crate) fn continued(&self, revision: u64) -> Draft<'_> {
        Draft {
            doc: &self.doc,
            path: &self.path,
            revision,
            fence_floor: self.fence_floor,
            changed: self.changed.clone(),
            added: self.added.clone(),
            removed: self.removed.clone(),
        }
    }

    /// The new file, as [`Draft::render`] gives it.
    pub(crate) fn render(&self) -> ClaimsDoc {
        self.continued(self.revision).render()
    }
}

impl Draft<'_> {
    /// The revision this change will commit as; stamp it on what it writes.
    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    /// This draft, owning what it borrowed.
    pub(crate) fn detach(self) -> Detached {
        Detached {
            doc: self.doc.clone(),
            path: self.path.to_owned(),
            revision: self.revision,
            fence_floor: self.fence_floor,
            changed: self.changed,
            added: self.added,
            removed: self.removed,
        }
    }

    fn record(&self, pos: usize) -> (&[u8], &Arc<ClaimHead>) {
        let old = self.doc.records.len();
        let record = if pos >= old {
            Some(&self.added[pos - old])
        } else if self.changed.is_empty() {
            None
        } else {
            self.changed.get(&pos)
        };
        match record {
            Some(r) => (r.raw.get().as_bytes(), &r.head),
            None => (self.doc.raw(pos), &self.doc.records[pos].1),
        }
    }

    /// The head of the record at `pos`.
    pub(crate) fn head(&self, pos: usize) -> &ClaimHead {
        self.record(pos).1
    }

    /// Every record in file order, with its position.
    pub(crate) fn heads(&self) -> impl Iterator<Item = (usize, &ClaimHead)> {
        let old = self.doc.records.len();
        (0..old + self.added.len())
            .filter(|p| self.removed.is_empty() || !self.removed.contains(p))
            .map(|p| (p, self.record(p).1.as_ref()))
    }

    pub(crate) fn position(&self, work_item_id: &str) -> Option<usize> {
        self.heads()
            .find(|(_, h)| h.work_item_id == work_item_id)
            .map(|(p, _)| p)
    }

    pub(crate) fn claim(&self, pos: usize) -> Result<Claim, CoordError> {
        decode(self.path, pos, self.record(pos).0)
    }

    /// Whether a work item id or coordination id is in use. A scan, not a
    /// set: minting an id asks once or twice, so hashing every id would cost
    /// more than it saves.
    pub(crate) fn id_in_use(&self, id: &str) -> bool {
        // Minted ids share a long prefix: compare their ends first.
        let same = |other: &str| {
            other.len() == id.len()
                && other.as_bytes().last() == id.as_bytes().last()
                && other == id
        };
        let uses =
            |h: &ClaimHead| same(&h.work_item_id) || h.coordination_id.as_deref().is_some_and(same);
        // A number above every record's read: only this draft's own records
        // could use it.
        if id_number(id).is_some_and(|n| n > self.doc.summary.max_id_number) {
            return self.changes().any(uses);
        }
        self.heads().any(|(_, h)| uses(h))
    }

    /// The largest fence any record carries (or carried before this draft
    /// removed it: cleanup keeps that one in the state file anyway).
    pub(crate) fn max_fence(&self) -> u64 {
        self.changes()
            .filter_map(|h| h.fence)
            .fold(self.doc.summary.max_fence, u64::max)
    }

    /// The heads this draft changed or added.
    fn changes(&self) -> impl Iterator<Item = &ClaimHead> {
        self.changed
            .values()
            .chain(&self.added)
            .map(|r| r.head.as_ref())
    }

    /// The positions of in-progress records whose lease has passed. Only the
    /// records this draft touched are looked at unless the document's
    /// earliest deadline says one of the others may have lapsed.
    pub(crate) fn lapsed(&self, now: Timestamp) -> Vec<usize> {
        let may_have_lapsed = self.doc.summary.earliest_deadline.is_some_and(|d| d <= now);
        if may_have_lapsed {
            return self
                .heads()
                .filter(|(_, h)| h.is_lapsed(now))
                .map(|(p, _)| p)
                .collect();
        }
        let old = self.doc.records.len();
        self.changed
            .keys()
            .copied()
            .chain(old..old + self.added.len())
            .filter(|p| !self.removed.contains(p) && self.record(*p).1.is_lapsed(now))
            .collect()
    }

    /// The fence for the next acquisition: above every fence in the file and
    /// the high-water mark of those cleanup removed.
    pub(crate) fn next_fence(&self) -> Result<u64, CoordError> {
        CoordError::next_of("fence", self.max_fence().max(self.fence_floor))
    }

    /// Writes over the record at `pos` only the fields that differ between
    /// `old` (its decoded form) and `new`: unchanged fields keep their exact
    /// form (an `active` status stays `active` through a progress update),
    /// fields coord does not know are untouched, fields `new` drops go.
    pub(crate) fn replace(&mut self, pos: usize, old: &Claim, new: &Claim) {
        let text = crate::fields::write_over(self.record(pos).0, old, new);
        let record = Record {
            raw: RawValue::from_string(text).expect("serde_json output is valid JSON"),
            head: Arc::new(new.head()),
        };
        let old_len = self.doc.records.len();
        if pos >= old_len {
            self.added[pos - old_len] = record;
        } else {
            self.changed.insert(pos, record);
        }
    }

    pub(crate) fn append(&mut self, claim: &Claim) -> usize {
        self.added.push(Record {
            raw: encode(claim),
            head: Arc::new(claim.head()),
        });
        self.doc.records.len() + self.added.len() - 1
    }

    /// Drops the record at `pos`, returning it as one line of JSON (the
    /// object as it stood, whitespace removed).
    pub(crate) fn remove(&mut self, pos: usize) -> String {
        let raw = self.record(pos).0;
        let line = if raw.contains(&b'\n') {
            let value: Value = serde_json::from_slice(raw).expect("parsed before");
            serde_json::to_string(&value).expect("a JSON value always serialises")
        } else {
            String::from_utf8(raw.to_vec()).expect("validated as UTF-8 when parsed")
        };
        self.removed.insert(pos);
        line
    }

    /// The new file: `[`, one record per line, `]`, as the document that
    /// parsing those bytes would give (the decoded heads come along), so
    /// the store that writes it need not read it back.
    pub(crate) fn render(&self) -> ClaimsDoc {
        let kept: Vec<usize> = self.heads().map(|(p, _)| p).collect();
        let size: usize = kept
            .iter()
            .map(|p| self.record(*p).0.len() + 4)
            .sum::<usize>()
            + 4;
        let mut out = Vec::with_capacity(size);
        let mut records = Vec::with_capacity(kept.len());
        let known = self.summary_after();
        let mut summary = Summary::default();
        out.push(b'[');
        for (n, pos) in kept.iter().enumerate() {
            let (raw, head) = self.record(*pos);
            out.extend_from_slice(if n == 0 { b"\n  " } else { b",\n  " });
            let start = out.len();
            out.extend_from_slice(raw);
            if known.is_none() {
                summary.add(head);
            }
            records.push((start..out.len(), Arc::clone(head)));
        }
        out.extend_from_slice(if kept.is_empty() { b"]\n" } else { b"\n]\n" });
        ClaimsDoc {
            bytes: Contents::new(out),
            records: Arc::new(records),
            summary: known.unwrap_or(summary),
        }
    }

    /// The new document's summary worked out from the old one and this
    /// draft's changes alone (every record would otherwise be visited, which
    /// in a big file costs a cache miss or more each); `None` when a change
    /// took away a maximum or the earliest deadline.
    fn summary_after(&self) -> Option<Summary> {
        let old = self.doc.records.len();
        let mut summary = self.doc.summary;
        let touched = self
            .changed
            .keys()
            .chain(&self.removed)
            .filter(|p| **p < old);
        for pos in touched.collect::<BTreeSet<_>>() {
            let new = if self.removed.contains(pos) {
                None
            } else {
                self.changed.get(pos).map(|r| r.head.as_ref())
            };
            summary = summary.without(&self.doc.records[*pos].1, new)?;
            if let Some(new) = new {
                summary.add(new);
            }
        }
        for (i, record) in self.added.iter().enumerate() {
            if !self.removed.contains(&(old + i)) {
                summary.add(&record.head);
            }
        }
        Some(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coord_core::transition::{self, Action, Actor};
    use coord_core::{ClaimRequest, NewIds, Status, Timestamp};

    const LEGACY: &str = r#"[
  {
    "work_item_id": "work_1",
    "agent_id": "agent_1",
    "reactor_id": "r-9",
    "work_type": "build",
    "description": "old tool",
    "priority": "high",
    "team": "blue",
    "claimed_at": "2024-12-15T15:17:50Z",
    "estimated_duration": "30m",
    "status": "active",
    "telemetry": {"trace_id": "abc", "spans": [1, 2.50]}
  }
]"#;

    fn path() -> &'static Path {
        Path::new("work_claims.json")
    }

    fn contents(bytes: impl AsRef<[u8]>) -> Contents {
        Contents::new(bytes.as_ref().to_vec())
    }

    fn sample() -> Claim {
        let ids = NewIds {
            work_item_id: "work_2".into(),
            coordination_id: "coord_2".into(),
        };
        transition::claim(
            &ClaimRequest::new("agent_2", "test"),
            ids,
            1,
            Timestamp::now(),
        )
        .claim
    }

    #[test]
    fn missing_blank_and_empty_files_are_empty_stores() {
        for bytes in [None, Some(&b""[..]), Some(&b" \n"[..]), Some(&b"[]"[..])] {
            let doc = ClaimsDoc::parse(path(), bytes.map(contents).as_ref(), None).unwrap();
            assert_eq!(doc.heads().count(), 0);
            assert_eq!(doc.draft(path(), 1, 0).render().as_bytes(), b"[]\n");
            let mut draft = doc.draft(path(), 1, 0);
            draft.append(&sample());
            assert_eq!(
                draft
                    .render()
                    .as_bytes()
                    .iter()
                    .filter(|b| **b == b'\n')
                    .count(),
                3
            );
        }
    }

    #[test]
    fn bad_files_are_validation_errors_that_say_what_is_wrong() {
        let cases: [(&str, &str); 5] = [
            ("{not json", "expected a JSON array"),
            (r#"{"work_item_id": "w"}"#, "expected a JSON array"),
            ("[1, 2]", "record 0 is not a JSON object"),
            (r#"[{"work_item_id": "w"}]"#, "record 0: missing field"),
            (
                &LEGACY.replace("\"high\"", "\"urgent\""),
                "record 0: unknown variant `urgent`",
            ),
        ];
        for (bytes, expected) in cases {
            let err =
                ClaimsDoc::parse(path(), Some(&contents(bytes.as_bytes())), None).expect_err(bytes);
            assert_eq!(err.kind(), coord_core::ErrorKind::ValidationFailed);
            assert!(err.to_string().contains(expected), "{bytes}: {err}");
        }
    }

    #[test]
    fn appending_keeps_every_byte_of_the_other_records() {
        let doc = ClaimsDoc::parse(path(), Some(&contents(LEGACY.as_bytes())), None).unwrap();
        assert_eq!(doc.heads().next().unwrap().status, Status::InProgress);
        let mut draft = doc.draft(path(), 1, 0);
        let pos = draft.append(&sample());
        assert_eq!(draft.claim(pos).unwrap(), sample_at(&draft, pos));
        let out = String::from_utf8_lossy(draft.render().as_bytes()).into_owned();
        let legacy_record = &LEGACY[LEGACY.find('{').unwrap()..=LEGACY.rfind('}').unwrap()];
        assert!(out.contains(legacy_record), "{out}");
        let reparsed = ClaimsDoc::parse(path(), Some(&contents(out.as_bytes())), None).unwrap();
        assert_eq!(reparsed.heads().count(), 2);
    }

    fn sample_at(draft: &Draft<'_>, pos: usize) -> Claim {
        let mut s = sample();
        s.claimed_at = draft.claim(pos).unwrap().claimed_at;
        s.lease_expires_at = draft.claim(pos).unwrap().lease_expires_at;
        s
    }

    #[test]
    fn replacing_writes_only_what_changed() {
        let doc = ClaimsDoc::parse(path(), Some(&contents(LEGACY.as_bytes())), None).unwrap();
        let mut draft = doc.draft(path(), 1, 0);
        let old = draft.claim(0).unwrap();
        let now: Timestamp = "2024-12-15T15:20:00Z".parse().unwrap();
        let actor = Actor::new("agent_1");
        let new = transition::apply(&old, &Action::Progress { percent: 30 }, &actor, now)
            .unwrap()
            .claim;
        draft.replace(0, &old, &new);
        let merged: Value = serde_json::from_slice(draft.render().as_bytes()).unwrap();
        let merged = &merged[0];
        assert_eq!(
            merged["status"], "active",
            "an unchanged legacy status keeps its spelling"
        );
        assert_eq!(
            merged["claimed_at"], "2024-12-15T15:17:50Z",
            "unchanged timestamps keep their form"
        );
        assert_eq!(merged["progress"], 30);
        assert_eq!(merged["telemetry"]["spans"][1], 2.5);
        assert_eq!(merged["team"], "blue");
        let keys: Vec<&String> = merged.as_object().unwrap().keys().collect();
        assert_eq!(
            keys[..3],
            ["work_item_id", "agent_id", "reactor_id"],
            "field order is kept"
        );

        // A second change to the same record builds on the first.
        let done = transition::apply(&new, &Action::Complete { result: None }, &actor, now)
            .unwrap()
            .claim;
        draft.replace(0, &new, &done);
        assert_eq!(draft.claim(0).unwrap().status, Status::Completed);
        assert_eq!(draft.claim(0).unwrap().extra["team"], "blue");
    }

    #[test]
    fn coords_own_layout_reads_the_same_as_any_other() {
        // Another tool's pretty-printed record is not coord's layout...
        assert!(
            ClaimsDoc::parse_own_layout(path(), LEGACY.as_bytes(), None)
                .unwrap()
                .is_none()
        );
        // ...but the same record compacted, beside one coord wrote, is.
        let legacy: Value = serde_json::from_str(LEGACY).unwrap();
        let compact = format!(
            "[\n  {},\n  {}\n]\n",
            legacy[0],
            serde_json::to_string(&sample()).unwrap()
        );
        let own = compact.into_bytes();
        let fast = ClaimsDoc::parse(path(), Some(&contents(&own)), None).unwrap();
        assert!(
            ClaimsDoc::parse_own_layout(path(), &own, None)
                .unwrap()
                .is_some()
        );
        // The same records, reformatted, take the general path.
        let value: Value = serde_json::from_slice(&own).unwrap();
        let pretty = serde_json::to_vec_pretty(&value).unwrap();
        assert!(
            ClaimsDoc::parse_own_layout(path(), &pretty, None)
                .unwrap()
                .is_none()
        );
        let general = ClaimsDoc::parse(path(), Some(&contents(&pretty)), None).unwrap();
        let heads = |d: &ClaimsDoc| d.heads().cloned().collect::<Vec<_>>();
        assert_eq!(heads(&fast), heads(&general));
        for i in 0..2 {
            assert_eq!(
                fast.claim(path(), i).unwrap(),
                general.claim(path(), i).unwrap()
            );
        }
        // A damaged record in coord's layout is still an error, not a fallback.
        let damaged =
            String::from_utf8(own)
                .unwrap()
                .replacen("\"work_type\"", "\"work_type\":1,\"x\"", 1);
        assert!(ClaimsDoc::parse(path(), Some(&contents(damaged.as_bytes())), None).is_err());
    }

    #[test]
    fn removed_records_leave_the_file_and_come_back_as_one_line() {
        let doc = ClaimsDoc::parse(path(), Some(&contents(LEGACY.as_bytes())), None).unwrap();
        let mut draft = doc.draft(path(), 1, 0);
        draft.append(&sample());
        let line = draft.remove(0);
        assert!(!line.contains('\n'));
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["team"], "blue");
        assert_eq!(draft.heads().count(), 1);
        assert_eq!(draft.position("work_2"), Some(1));
        assert_eq!(draft.position("work_1"), None);
    }

    /// Removes the records at `remove` that are there, then appends `add`
    /// samples.
    fn remove_and_add(draft: &mut Draft<'_>, remove: &[usize], add: usize) {
        for &pos in remove {
            if draft.heads().any(|(p, _)| p == pos) {
                draft.remove(pos);
            }
        }
        for k in 0..add {
            // Ids must be unique in a file: above any the tests' files use.
            let mut claim = sample();
            claim.work_item_id = format!("work_{}", 900 + k);
            draft.append(&claim);
        }
    }

    /// `ids` without repeats (a file's ids are unique), in their order.
    fn distinct(ids: Vec<u32>) -> Vec<u32> {
        let mut seen = BTreeSet::new();
        ids.into_iter().filter(|i| seen.insert(*i)).collect()
    }

    /// The file of `claims`, in coord's layout.
    fn rendered(claims: impl IntoIterator<Item = Claim>) -> Vec<u8> {
        let doc = ClaimsDoc::parse(path(), None, None).unwrap();
        let mut draft = doc.draft(path(), 1, 0);
        for claim in claims {
            draft.append(&claim);
        }
        draft.render().as_bytes().to_vec()
    }

    /// A file of `n` records in coord's layout; record `i` has `i` in its
    /// work type, and `tweak` grows some of them.
    fn file_of(ids: &[u32], tweak: &[u32]) -> Vec<u8> {
        let at: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        rendered(ids.iter().map(|&i| {
            let mut c = sample();
            (c.claimed_at, c.lease_expires_at) = (Some(at), Some(at));
            c.work_item_id = format!("work_{i}");
            c.work_type = format!("type_{i}");
            if tweak.contains(&i) {
                c.description = "x".repeat(i as usize % 7 + 1);
            }
            c
        }))
    }

    proptest::proptest! {
        /// Heads reused from an earlier parse are exactly what a fresh parse
        /// decodes, whatever changed between the two files: records added,
        /// removed, grown, at either end or in the middle.
        #[test]
        fn reading_again_reuses_only_heads_of_identical_records(
            before in proptest::collection::vec(0u32..40, 0..25),
            after in proptest::collection::vec(0u32..40, 0..25),
            tweak in proptest::collection::vec(0u32..40, 0..5),
        ) {
            let old = contents(file_of(&distinct(before), &[]));
            let new = contents(file_of(&distinct(after), &tweak));
            let prior = ClaimsDoc::parse(path(), Some(&old), None).unwrap();
            let reused = ClaimsDoc::parse(path(), Some(&new), Some(&prior)).unwrap();
            let fresh = ClaimsDoc::parse(path(), Some(&new), None).unwrap();
            let heads = |d: &ClaimsDoc| d.heads().cloned().collect::<Vec<_>>();
            proptest::prop_assert_eq!(heads(&reused), heads(&fresh));
            proptest::prop_assert_eq!(
                reused.records.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>(),
                fresh.records.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>()
            );
        }
    }

    proptest::proptest! {
        /// The document a draft renders is the one parsing its bytes gives
        /// (a store trusts it in place of reading back what it wrote),
        /// whatever the draft did: records replaced, removed and added.
        #[test]
        fn a_rendered_document_is_what_parsing_its_bytes_gives(
            before in proptest::collection::vec(0u32..40, 0..25),
            start in proptest::bool::ANY,
            remove in proptest::collection::vec(0usize..25, 0..4),
            add in 0usize..3,
            legacy in proptest::bool::ANY,
        ) {
            let bytes = if legacy { LEGACY.as_bytes().to_vec() } else { file_of(&distinct(before), &[]) };
            let doc = ClaimsDoc::parse(path(), Some(&contents(bytes)), None).unwrap();
            let mut draft = doc.draft(path(), 2, 0);
            let count = draft.heads().count();
            if start && count > 0 {
                let old = draft.claim(0).unwrap();
                let change = transition::apply(
                    &old,
                    &Action::Progress { percent: 40 },
                    &Actor { force: true, ..Actor::new("anyone") },
                    Timestamp::now(),
                );
                if let Ok(change) = change {
                    draft.replace(0, &old, &change.claim);
                }
            }
            remove_and_add(&mut draft, &remove, add);
            let rendered = draft.render();
            let parsed = ClaimsDoc::parse(path(), Some(&rendered.contents()), None).unwrap();
            proptest::prop_assert_eq!(rendered.summary(), parsed.summary());
            let heads = |d: &ClaimsDoc| d.heads().cloned().collect::<Vec<_>>();
            proptest::prop_assert_eq!(heads(&rendered), heads(&parsed));
            proptest::prop_assert_eq!(
                rendered.records.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>(),
                parsed.records.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>()
            );
        }
    }

    proptest::proptest! {
        /// Changes made one after another on detached drafts, each
        /// continuing the one before (a group commit's batch), render the
        /// same file, with the same summary, as one draft making them all.
        #[test]
        fn a_chain_of_continued_drafts_renders_what_one_draft_would(
            before in proptest::collection::vec(0u32..40, 0..25),
            steps in proptest::collection::vec(
                (proptest::collection::vec(0usize..30, 0..3), 0usize..3, proptest::bool::ANY),
                1..5,
            ),
        ) {
            let doc = ClaimsDoc::parse(path(), Some(&contents(file_of(&distinct(before), &[]))), None).unwrap();
            let step = |draft: &mut Draft<'_>, n: usize, (remove, add, progress): &(Vec<usize>, usize, bool)| {
                let first = draft.heads().next().map(|(pos, _)| pos);
                if *progress && let Some(pos) = first {
                    let old = draft.claim(pos).unwrap();
                    let actor = Actor { force: true, ..Actor::new("anyone") };
                    let at: Timestamp = "2026-02-01T00:00:00Z".parse().unwrap();
                    let new = transition::apply(&old, &Action::Progress { percent: 40 }, &actor, at);
                    if let Ok(new) = new {
                        draft.replace(pos, &old, &new.claim);
                    }
                }
                for &pos in remove {
                    if draft.heads().any(|(p, _)| p == pos) {
                        draft.remove(pos);
                    }
                }
                for k in 0..*add {
                    let mut claim = sample();
                    let at: Timestamp = "2026-02-01T00:00:00Z".parse().unwrap();
                    (claim.claimed_at, claim.lease_expires_at) = (Some(at), Some(at));
                    claim.work_item_id = format!("work_{}", 900 + 10 * n + k);
                    draft.append(&claim);
                }
            };
            let mut whole = doc.draft(path(), 2, 0);
            for (n, s) in steps.iter().enumerate() {
                step(&mut whole, n, s);
            }
            let mut chain = doc.draft(path(), 2, 0);
            step(&mut chain, 0, &steps[0]);
            let mut detached = chain.detach();
            for (n, s) in steps.iter().enumerate().skip(1) {
                let mut next = detached.continued(2 + n as u64);
                step(&mut next, n, s);
                detached = next.detach();
            }
            let (one, chained) = (whole.render(), detached.render());
            proptest::prop_assert_eq!(one.as_bytes(), chained.as_bytes());
            proptest::prop_assert_eq!(one.summary(), chained.summary());
        }
    }

    /// Records that differ in what the summary keeps: fences, revisions,
    /// lease deadlines, statuses, ids minted by coord and ids that are not.
    fn varied_file(ids: &BTreeSet<u32>) -> Vec<u8> {
        let at: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        rendered(ids.iter().map(|&i| {
            let request = ClaimRequest::new("agent", format!("type_{}", i % 3))
                .lease(std::time::Duration::from_secs(60 * u64::from(i % 4 + 1)));
            let ids = NewIds {
                work_item_id: if i % 5 == 0 {
                    format!("job-{i}")
                } else {
                    format!("work_{i}")
                },
                coordination_id: format!("coord_{}", i * 3),
            };
            let claim = transition::claim(&request, ids, u64::from(i % 7) + 1, at)
                .at_revision(u64::from(i % 5) + 1)
                .claim;
            if i % 4 == 0 {
                let actor = Actor::new("agent");
                transition::apply(&claim, &Action::Complete { result: None }, &actor, at)
                    .unwrap()
                    .claim
            } else {
                claim
            }
        }))
    }

    proptest::proptest! {
        /// A summary worked out from the old one and the draft's changes is
        /// the one a pass over the rendered file gives, whatever the changes
        /// took away or raised: maxima, the earliest deadline, the count of
        /// finished records, the largest id number.
        #[test]
        fn a_summary_worked_out_from_the_changes_is_the_one_a_full_pass_gives(
            before in proptest::collection::btree_set(0u32..60, 0..30),
            edits in proptest::collection::vec((0usize..30, 0u8..4, 0u64..8), 0..4),
            remove in proptest::collection::vec(0usize..30, 0..4),
            add in 0usize..3,
        ) {
            let doc = ClaimsDoc::parse(path(), Some(&contents(varied_file(&before))), None).unwrap();
            let mut draft = doc.draft(path(), 9, 0);
            let count = draft.heads().count();
            let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
            for (pos, kind, revision) in edits.into_iter().filter(|(p, ..)| *p < count) {
                let action = match kind {
                    0 => Action::Progress { percent: 40 },
                    1 => Action::Complete { result: None },
                    2 => Action::Heartbeat { lease: Some(std::time::Duration::from_secs(600)) },
                    _ => Action::Release,
                };
                let old = draft.claim(pos).unwrap();
                let actor = Actor { force: true, ..Actor::new("anyone") };
                if let Ok(change) = transition::apply(&old, &action, &actor, now) {
                    draft.replace(pos, &old, &change.at_revision(revision).claim);
                }
            }
            remove_and_add(&mut draft, &remove, add);
            let rendered = draft.render();
            let parsed = ClaimsDoc::parse(path(), Some(&rendered.contents()), None).unwrap();
            proptest::prop_assert_eq!(rendered.summary(), parsed.summary());
        }
    }

    #[test]
    fn an_id_numbered_above_every_record_is_free_without_a_scan() {
        let ids: BTreeSet<u32> = (1..20).collect();
        let doc = ClaimsDoc::parse(path(), Some(&contents(varied_file(&ids))), None).unwrap();
        assert_eq!(doc.summary().max_id_number, 57, "coord_57, from item 19");
        let mut draft = doc.draft(path(), 2, 0);
        assert!(draft.id_in_use("coord_57") && draft.id_in_use("work_19"));
        assert!(!draft.id_in_use("work_58") && !draft.id_in_use("work_20"));
        // The draft's own records count too.
        let mut claim = sample();
        claim.work_item_id = "work_99".into();
        draft.append(&claim);
        assert!(draft.id_in_use("work_99"));
        assert!(!draft.id_in_use("work_100"));
    }

    #[test]
    fn an_unchanged_file_decodes_nothing_again_and_an_append_one_record() {
        let ids: Vec<u32> = (0..50).collect();
        let old = contents(file_of(&ids, &[]));
        let prior = ClaimsDoc::parse(path(), Some(&old), None).unwrap();
        let shared = |d: &ClaimsDoc| {
            d.records
                .iter()
                .filter(|(_, h)| prior.records.iter().any(|(_, p)| Arc::ptr_eq(h, p)))
                .count()
        };
        let same = ClaimsDoc::parse(path(), Some(&old), Some(&prior)).unwrap();
        assert_eq!(shared(&same), 50);
        let more: Vec<u32> = (0..51).collect();
        let appended =
            ClaimsDoc::parse(path(), Some(&contents(file_of(&more, &[]))), Some(&prior)).unwrap();
        assert_eq!(shared(&appended), 50, "only the new record is decoded");
        // A record grown in the middle: the ones before and after keep theirs.
        let grown =
            ClaimsDoc::parse(path(), Some(&contents(file_of(&ids, &[25]))), Some(&prior)).unwrap();
        assert_eq!(shared(&grown), 49);
    }

    #[test]
    fn a_record_that_is_not_utf8_is_an_error_in_either_layout() {
        let mut own = b"[\n  {\"work_item_id\":\"w\",\"work_type\":\"t\",\"priority\":\"low\",\"status\":\"pending\",\"note\":\"".to_vec();
        own.extend_from_slice(&[0xff, 0xfe]);
        own.extend_from_slice(b"\"}\n]\n");
        let err = ClaimsDoc::parse(path(), Some(&contents(&own)), None).unwrap_err();
        assert!(err.to_string().contains("UTF-8"), "{err}");
        let pretty: Vec<u8> = own
            .iter()
            .flat_map(|&b| if b == b',' { vec![b',', b' '] } else { vec![b] })
            .collect();
        let err = ClaimsDoc::parse(path(), Some(&contents(&pretty)), None).unwrap_err();
        assert!(err.to_string().contains("UTF-8"), "{err}");
    }
}
