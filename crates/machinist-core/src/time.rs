//! Go's time format on the wire: RFC 3339 with 0–9 fraction digits (trailing zeros dropped), any
//! offset on input, and `0001-01-01T00:00:00Z` (Go's zero `time.Time`) meaning "unset".

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};

/// Go's zero time, as `encoding/json` writes it.
pub const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Formats an instant as Go's `time.Time.MarshalJSON` does for a UTC time
/// (`2024-05-01T10:00:28.29704155Z`).
pub fn format(t: &DateTime<Utc>) -> String {
    let mut buf = [0u8; 40];
    let n = format_into(t, &mut buf);
    // Only ASCII digits, `-`, `:`, `.`, `T`, `Z` (and `+` for a year past 9999) are written.
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Writes [`format()`]'s text into `buf` and returns its length: digits written by hand, no
/// `fmt` machinery and no intermediate `String` (this runs for every stored state).
fn format_into(t: &DateTime<Utc>, buf: &mut [u8; 40]) -> usize {
    fn digits(buf: &mut [u8], at: usize, value: u32, width: usize) -> usize {
        let mut v = value;
        for i in (0..width).rev() {
            // `v % 10` is below 10.
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        at + width
    }
    let year = t.year();
    let mut n = 0;
    if !(0..=9999).contains(&year) {
        // Outside Go's range (refused by `try_format`); written as `{:04}` would.
        let text = std::format!("{year:04}");
        buf[..text.len()].copy_from_slice(text.as_bytes());
        n = text.len();
    } else {
        n = digits(buf, n, year.unsigned_abs(), 4);
    }
    buf[n] = b'-';
    n = digits(buf, n + 1, t.month(), 2);
    buf[n] = b'-';
    n = digits(buf, n + 1, t.day(), 2);
    buf[n] = b'T';
    n = digits(buf, n + 1, t.hour(), 2);
    buf[n] = b':';
    n = digits(buf, n + 1, t.minute(), 2);
    buf[n] = b':';
    n = digits(buf, n + 1, t.second(), 2);
    // A leap second shows as nanoseconds ≥ 1e9 in chrono; Go has no leap seconds.
    let nanos = t.nanosecond() % 1_000_000_000;
    if nanos != 0 {
        buf[n] = b'.';
        let end = digits(buf, n + 1, nanos, 9);
        // Trailing zeros dropped, as Go's RFC3339Nano; at least one digit stays (nanos ≠ 0).
        n = end;
        while buf[n - 1] == b'0' {
            n -= 1;
        }
    }
    buf[n] = b'Z';
    n + 1
}

/// Like [`format()`], but `None` for a year outside 0–9999, which Go's `time.Time.MarshalJSON`
/// refuses to encode (so a Go peer could not decode it either).
pub fn try_format(t: &DateTime<Utc>) -> Option<String> {
    (0..=9999).contains(&t.year()).then(|| format(t))
}

/// [`try_format`]'s text on the stack, for the encoder (no allocation per time written).
#[derive(Clone, Copy)]
pub(crate) struct TimeText {
    buf: [u8; 40],
    len: usize,
}

impl TimeText {
    /// Like [`try_format`].
    pub(crate) fn try_new(t: &DateTime<Utc>) -> Option<Self> {
        if !(0..=9999).contains(&t.year()) {
            return None;
        }
        let mut buf = [0u8; 40];
        let len = format_into(t, &mut buf);
        Some(TimeText { buf, len })
    }

    /// The text.
    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII is written (see `format_into`); the fallback is never taken.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or(GO_ZERO_TIME)
    }
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
