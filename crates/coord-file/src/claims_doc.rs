//! `work_claims.json`: a JSON array with one claim object per line.
//!
//! Records are kept as their raw bytes plus a decoded [`ClaimHead`]: a
//! change decodes and re-encodes only the record it touches, so other
//! records (and the fields other tools added to them) keep every byte, and
//! a claim costs little more than the I/O even in a large file.

use std::collections::HashSet;
use std::path::Path;

use coord_core::{Claim, ClaimHead, CoordError};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

struct Record {
    raw: Box<RawValue>,
    head: ClaimHead,
}

/// The parsed claims file.
pub(crate) struct ClaimsDoc {
    records: Vec<Record>,
}

/// A change to render: the record at an index replaced, or one appended.
pub(crate) enum Edit<'a> {
    Replace(usize, &'a RawValue),
    Append(&'a RawValue),
}

fn invalid(path: &Path, what: impl std::fmt::Display) -> CoordError {
    CoordError::validation(format!(
        "{} is not a valid claims file: {what}",
        path.display()
    ))
}

impl ClaimsDoc {
    /// Parses the file's bytes; a missing or blank file is an empty store.
    pub(crate) fn parse(path: &Path, bytes: Option<&[u8]>) -> Result<ClaimsDoc, CoordError> {
        let bytes = bytes.unwrap_or_default();
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(ClaimsDoc {
                records: Vec::new(),
            });
        }
        let raws: Vec<Box<RawValue>> = serde_json::from_slice(bytes).map_err(|e| {
            invalid(
                path,
                format_args!("expected a JSON array of claim objects ({e})"),
            )
        })?;
        let records = raws
            .into_iter()
            .enumerate()
            .map(|(i, raw)| {
                if !raw.get().starts_with('{') {
                    return Err(invalid(
                        path,
                        format_args!("record {i} is not a JSON object"),
                    ));
                }
                let head: ClaimHead = serde_json::from_str(raw.get())
                    .map_err(|e| invalid(path, format_args!("record {i}: {e}")))?;
                Ok(Record { raw, head })
            })
            .collect::<Result<_, _>>()?;
        Ok(ClaimsDoc { records })
    }

    pub(crate) fn heads(&self) -> impl Iterator<Item = &ClaimHead> {
        self.records.iter().map(|r| &r.head)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    pub(crate) fn position(&self, work_item_id: &str) -> Option<usize> {
        self.records
            .iter()
            .position(|r| r.head.work_item_id == work_item_id)
    }

    /// The set of ids and coordination ids in use, for minting new ones.
    pub(crate) fn ids(&self) -> HashSet<&str> {
        self.records
            .iter()
            .flat_map(|r| {
                [
                    Some(r.head.work_item_id.as_str()),
                    r.head.coordination_id.as_deref(),
                ]
            })
            .flatten()
            .collect()
    }

    /// Decodes the whole record at `index`.
    pub(crate) fn claim(&self, path: &Path, index: usize) -> Result<Claim, CoordError> {
        serde_json::from_str(self.records[index].raw.get())
            .map_err(|e| invalid(path, format_args!("record {index}: {e}")))
    }

    /// Encodes a new claim as a record.
    pub(crate) fn encode(claim: &Claim) -> Box<RawValue> {
        let text = serde_json::to_string(claim).expect("a claim always serialises");
        RawValue::from_string(text).expect("serde_json output is valid JSON")
    }

    /// The record at `index` with only the fields that differ between `old`
    /// and `new` written over it. Unchanged fields keep their exact form
    /// (an `active` status stays `active` through a progress update), and
    /// fields coord does not know are untouched.
    pub(crate) fn merge(&self, index: usize, old: &Claim, new: &Claim) -> Box<RawValue> {
        let as_map = |c: &Claim| match serde_json::to_value(c).expect("a claim always serialises") {
            Value::Object(m) => m,
            _ => unreachable!("a claim serialises to an object"),
        };
        let (before, after) = (as_map(old), as_map(new));
        let mut record: Map<String, Value> = serde_json::from_str(self.records[index].raw.get())
            .expect("parsed as an object before");
        for (key, value) in &after {
            if before.get(key) != Some(value) {
                record.insert(key.clone(), value.clone());
            }
        }
        for key in before.keys().filter(|k| !after.contains_key(*k)) {
            record.shift_remove(key);
        }
        let text = serde_json::to_string(&record).expect("a JSON map always serialises");
        RawValue::from_string(text).expect("serde_json output is valid JSON")
    }

    /// The file's bytes with `edit` applied: `[`, one record per line, `]`.
    pub(crate) fn render(&self, edit: Edit<'_>) -> Vec<u8> {
        let (replace, append) = match edit {
            Edit::Replace(i, raw) => (Some((i, raw)), None),
            Edit::Append(raw) => (None, Some(raw)),
        };
        let size: usize = self
            .records
            .iter()
            .map(|r| r.raw.get().len() + 4)
            .sum::<usize>()
            + append.map_or(0, |r| r.get().len() + 4)
            + replace.map_or(0, |(_, r)| r.get().len())
            + 4;
        let mut out = Vec::with_capacity(size);
        out.push(b'[');
        let records = self.records.iter().enumerate().map(|(i, r)| match replace {
            Some((j, raw)) if i == j => raw,
            _ => &*r.raw,
        });
        for (n, raw) in records.chain(append).enumerate() {
            out.extend_from_slice(if n == 0 { b"\n  " } else { b",\n  " });
            out.extend_from_slice(raw.get().as_bytes());
        }
        out.extend_from_slice(if out.len() == 1 { b"]\n" } else { b"\n]\n" });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coord_core::{ClaimRequest, Status, Timestamp, Update, transition};

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

    #[test]
    fn missing_blank_and_empty_files_are_empty_stores() {
        for bytes in [None, Some(&b""[..]), Some(&b" \n"[..]), Some(&b"[]"[..])] {
            let doc = ClaimsDoc::parse(path(), bytes).unwrap();
            assert_eq!(doc.len(), 0);
            assert_eq!(
                doc.render(Edit::Append(&ClaimsDoc::encode(&sample())))
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
            let err = ClaimsDoc::parse(path(), Some(bytes.as_bytes()))
                .err()
                .expect(bytes);
            assert_eq!(err.kind(), coord_core::ErrorKind::ValidationFailed);
            assert!(err.to_string().contains(expected), "{bytes}: {err}");
        }
    }

    fn sample() -> Claim {
        Claim::new(
            &ClaimRequest::new("agent_2", "test"),
            "work_2".into(),
            "coord_2".into(),
            Timestamp::now(),
        )
    }

    #[test]
    fn appending_keeps_every_byte_of_the_other_records() {
        let doc = ClaimsDoc::parse(path(), Some(LEGACY.as_bytes())).unwrap();
        assert_eq!(doc.heads().next().unwrap().status, Status::InProgress);
        let out =
            String::from_utf8(doc.render(Edit::Append(&ClaimsDoc::encode(&sample())))).unwrap();
        let legacy_record = &LEGACY[LEGACY.find('{').unwrap()..=LEGACY.rfind('}').unwrap()];
        assert!(out.contains(legacy_record), "{out}");
        let reparsed = ClaimsDoc::parse(path(), Some(out.as_bytes())).unwrap();
        assert_eq!(reparsed.len(), 2);
        assert_eq!(
            reparsed.claim(path(), 1).unwrap(),
            sample_with_time(&reparsed)
        );
    }

    fn sample_with_time(doc: &ClaimsDoc) -> Claim {
        let mut s = sample();
        s.claimed_at = doc.claim(path(), 1).unwrap().claimed_at;
        s
    }

    #[test]
    fn merging_an_update_writes_only_what_changed() {
        let doc = ClaimsDoc::parse(path(), Some(LEGACY.as_bytes())).unwrap();
        let old = doc.claim(path(), 0).unwrap();
        let now = Timestamp::now();
        let new = transition::apply(&old, &Update::Progress { percent: 30 }, now).unwrap();
        let merged: Value = serde_json::from_str(doc.merge(0, &old, &new).get()).unwrap();
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

        let done = transition::apply(&new, &Update::Complete { result: None }, now).unwrap();
        let merged: Value = serde_json::from_str(doc.merge(0, &old, &done).get()).unwrap();
        assert_eq!(merged["status"], "completed");
    }
}
