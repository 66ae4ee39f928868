use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An instant with microsecond precision, written as RFC 3339 UTC
/// (`2024-12-15T15:17:50.133588Z`); any RFC 3339 form is accepted on input.
/// Finer digits are dropped on the way in, so a timestamp reads back equal
/// to what was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(jiff::Timestamp);

impl Timestamp {
    pub fn now() -> Self {
        Self::truncated(jiff::Timestamp::now())
    }

    fn truncated(t: jiff::Timestamp) -> Self {
        let nanos = t.as_nanosecond();
        Timestamp(
            jiff::Timestamp::from_nanosecond(nanos - nanos.rem_euclid(1000))
                .expect("truncating stays in range"),
        )
    }

    pub fn from_unix_nanos(nanos: i128) -> Option<Self> {
        jiff::Timestamp::from_nanosecond(nanos)
            .ok()
            .map(Self::truncated)
    }

    pub fn as_unix_nanos(self) -> i128 {
        self.0.as_nanosecond()
    }

    /// `self + duration`, saturating at the ends of the supported range.
    pub fn saturating_add(self, duration: std::time::Duration) -> Self {
        let d = jiff::SignedDuration::try_from(duration).unwrap_or(jiff::SignedDuration::MAX);
        Self::truncated(
            self.0
                .saturating_add(d)
                .expect("a SignedDuration is always a valid span"),
        )
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.6}", self.0)
    }
}

impl FromStr for Timestamp {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.parse::<jiff::Timestamp>()
            .map(Self::truncated)
            .map_err(|e| format!("`{s}` is not an RFC 3339 timestamp: {e}"))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_microseconds_in_utc_and_reads_offsets() {
        let t: Timestamp = "2024-12-15T16:17:50.1335889+01:00".parse().unwrap();
        assert_eq!(t.to_string(), "2024-12-15T15:17:50.133588Z");
        let whole: Timestamp = "2024-12-15T15:17:50Z".parse().unwrap();
        assert_eq!(whole.to_string(), "2024-12-15T15:17:50.000000Z");
        assert!("yesterday".parse::<Timestamp>().is_err());
        let now = Timestamp::now();
        assert_eq!(
            now.to_string().parse::<Timestamp>().unwrap(),
            now,
            "reads back equal"
        );
    }
}
