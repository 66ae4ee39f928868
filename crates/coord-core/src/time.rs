//! Time: [`Timestamp`] (microseconds, RFC 3339 UTC, read back equal to
//! what was written) and the [`Clock`] a store reads it from.

use std::fmt;
use std::str::FromStr;

use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where a store reads the time of a change; tests replace it.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The system's clock, as a [`Clock`].
pub fn system_clock() -> Clock {
    Arc::new(Timestamp::now)
}

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

    /// Microseconds since the Unix epoch: the unit coord keeps times in,
    /// so this is exact (a database column can hold it as a `bigint`).
    pub fn as_unix_micros(self) -> i64 {
        i64::try_from(self.as_unix_nanos() / 1000).expect("jiff's range fits i64 microseconds")
    }

    pub fn from_unix_micros(micros: i64) -> Option<Self> {
        Self::from_unix_nanos(i128::from(micros) * 1000)
    }

    /// How long after `earlier` this is; zero if it is not after it.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> std::time::Duration {
        let nanos = self.as_unix_nanos() - earlier.as_unix_nanos();
        std::time::Duration::from_nanos(u64::try_from(nanos.max(0)).unwrap_or(u64::MAX))
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

impl Timestamp {
    /// `self - duration`, saturating at the start of the supported range.
    pub fn saturating_sub(self, duration: std::time::Duration) -> Self {
        let d = jiff::SignedDuration::try_from(duration).unwrap_or(jiff::SignedDuration::MAX);
        Self::truncated(
            self.0
                .saturating_sub(d)
                .expect("a SignedDuration is always a valid span"),
        )
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.6}", self.0)
    }
}

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian).
/// Howard Hinnant's `days_from_civil`.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The exact form coord writes, `YYYY-MM-DDTHH:MM:SS.ffffffZ`, parsed
/// without a general RFC 3339 parser: claims files hold many of them. Any
/// other form (or an impossible date) is left to jiff.
fn parse_own_form(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() != 27
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[26] != b'Z'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        b[range].iter().try_fold(0i64, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second, micros) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..26)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month)
        || day < 1
        || day > month_days[(month - 1) as usize]
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    // Already whole microseconds: no truncation, no 128-bit arithmetic.
    let nanos = i32::try_from(micros * 1000).ok()?;
    jiff::Timestamp::new(seconds, nanos).ok().map(Timestamp)
}

impl FromStr for Timestamp {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(t) = parse_own_form(s) {
            return Ok(t);
        }
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
        // A visitor, not `Cow<str>`: serde deserializes a `Cow` as an owned
        // `String`, one allocation per timestamp, and claims files hold many.
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Timestamp;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp")
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Timestamp, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_path_agrees_with_jiff() {
        let mut rng = 0x2545_F491_4F6C_DD1D_u64;
        for _ in 0..20_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            // Any instant from 1970 to 2200, to the microsecond.
            let micros = (rng % 7_258_118_400_000_000) as i128;
            let t = Timestamp::from_unix_nanos(micros * 1000).unwrap();
            let text = t.to_string();
            assert_eq!(parse_own_form(&text), Some(t), "{text}");
            assert_eq!(
                text.parse::<jiff::Timestamp>().unwrap().as_nanosecond(),
                micros * 1000
            );
        }
        for impossible in [
            "2025-02-29T00:00:00.000000Z",
            "2025-13-01T00:00:00.000000Z",
            "2025-01-01T24:00:00.000000Z",
        ] {
            assert_eq!(parse_own_form(impossible), None, "{impossible}");
            assert!(impossible.parse::<Timestamp>().is_err(), "{impossible}");
        }
        assert_eq!(
            parse_own_form("2024-02-29T12:00:00.000001Z")
                .unwrap()
                .to_string(),
            "2024-02-29T12:00:00.000001Z"
        );
    }

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
