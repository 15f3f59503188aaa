//! Go's time format on the wire: RFC 3339 with 0–9 fraction digits (trailing zeros dropped), any
//! offset on input, and `0001-01-01T00:00:00Z` (Go's zero `time.Time`) meaning "unset".

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};

/// Go's zero time, as `encoding/json` writes it.
pub const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Formats an instant as Go's `time.Time.MarshalJSON` does for a UTC time
/// (`2024-05-01T10:00:28.29704155Z`).
pub fn format(t: &DateTime<Utc>) -> String {
    let nanos = t.nanosecond() % 1_000_000_000;
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Like [`format()`], but `None` for a year outside 0–9999, which Go's `time.Time.MarshalJSON`
/// refuses to encode (so a Go peer could not decode it either).
pub fn try_format(t: &DateTime<Utc>) -> Option<String> {
    (0..=9999).contains(&t.year()).then(|| format(t))
}

/// Formats an optional instant; `None` becomes Go's zero time.
pub fn format_or_zero(t: Option<&DateTime<Utc>>) -> String {
    t.map_or_else(|| GO_ZERO_TIME.to_owned(), format)
}

/// Parses an RFC 3339 time with any offset and 0–9 fraction digits. Go's zero time (and any
/// instant in year 1) gives `None`.
pub fn parse(s: &str) -> Result<Option<DateTime<Utc>>, chrono::ParseError> {
    let t = DateTime::parse_from_rfc3339(s)?;
    let t = t.with_timezone(&Utc);
    if t.year() <= 1 {
        return Ok(None);
    }
    Ok(Some(t))
}

/// RFC 3339 with milliseconds, for logs.
pub fn display(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn trims_fraction_like_go() {
        let t = parse("2024-05-01T10:00:28.297041550Z").unwrap().unwrap();
        assert_eq!(format(&t), "2024-05-01T10:00:28.29704155Z");
        let t = parse("2024-05-01T10:00:28Z").unwrap().unwrap();
        assert_eq!(format(&t), "2024-05-01T10:00:28Z");
    }

    #[test]
    fn refuses_years_go_cannot_encode() {
        let t = parse("9999-12-31T23:59:59.999999999Z").unwrap().unwrap();
        assert_eq!(
            try_format(&t).as_deref(),
            Some("9999-12-31T23:59:59.999999999Z")
        );
        let t = t + chrono::Duration::nanoseconds(1);
        assert_eq!(try_format(&t), None);
    }

    #[test]
    fn fraction_digits_zero_to_nine() {
        let base = parse("2024-05-01T10:00:28Z").unwrap().unwrap();
        for (text, nanos) in [
            ("2024-05-01T12:00:28+02:00", 0),
            ("2024-05-01T12:00:28.1+02:00", 100_000_000),
            ("2024-05-01T12:00:28.12+02:00", 120_000_000),
            ("2024-05-01T12:00:28.123456789+02:00", 123_456_789),
            ("2024-05-01T09:30:28.000000001-00:30", 1),
        ] {
            let t = parse(text).unwrap().unwrap();
            assert_eq!(t, base + chrono::Duration::nanoseconds(nanos), "{text}");
        }
    }

    #[test]
    fn accepts_offsets_and_zero() {
        let t = parse("2024-05-01T12:00:00.5+02:00").unwrap().unwrap();
        assert_eq!(format(&t), "2024-05-01T10:00:00.5Z");
        assert_eq!(parse(GO_ZERO_TIME).unwrap(), None);
        assert!(parse("yesterday").is_err());
    }
}
