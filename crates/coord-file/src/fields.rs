//! Changing a JSON record another tool may have written, keeping what coord
//! does not change: only the fields that differ between the record's old
//! and new decoded forms are written over its bytes. Unchanged fields keep
//! their exact form (an `active` status stays `active`), fields coord does
//! not know are untouched, the field order is kept, and fields the new
//! form drops go.

use serde::Serialize;
use serde_json::{Map, Value};

fn as_map(value: &impl Serialize) -> Map<String, Value> {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => map,
        _ => unreachable!("coord's records serialise as JSON objects"),
    }
}

/// `raw` (a JSON object, decoded before as `before`) with what changed
/// from `before` to `after` written over it, as compact JSON.
pub(crate) fn write_over(raw: &[u8], before: &impl Serialize, after: &impl Serialize) -> String {
    let (before, after) = (as_map(before), as_map(after));
    let mut fields: Map<String, Value> =
        serde_json::from_slice(raw).expect("parsed as an object before");
    for (key, value) in &after {
        if before.get(key) != Some(value) {
            fields.insert(key.clone(), value.clone());
        }
    }
    for key in before.keys().filter(|k| !after.contains_key(*k)) {
        fields.shift_remove(key);
    }
    serde_json::to_string(&fields).expect("a JSON map always serialises")
}
