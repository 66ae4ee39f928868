//! Durations as users write them: [`parse_duration`].

use std::time::Duration;

/// Reads `500ms`, `10s`, `1m 30s`, `2h`, ISO 8601 `PT10S`, or a bare number
/// of seconds. Negative durations are refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if let Ok(secs) = trimmed.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let signed = trimmed
        .parse::<jiff::SignedDuration>()
        .map_err(|e| format!("`{text}` is not a duration like 500ms, 10s or 1m: {e}"))?;
    Duration::try_from(signed)
        .map_err(|_| format!("`{text}` is negative; a duration must be positive"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("PT10S").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
