//! Durations and sizes as written in configuration: `"30s"`, `"1m30s"`, `"500ms"`, `"1.5h"`, or
//! a bare number in a unit the field chooses (seconds for machinist's own fields, seconds or
//! milliseconds for Go's integer fields, as their Go names say). Sizes: `16777216`, `"16MiB"`.

use std::fmt;
use std::time::Duration;

const NANOS_PER_MS: u128 = 1_000_000;
const NANOS_PER_S: u128 = 1_000_000_000;

/// The unit of a bare number (`30`, `"30"`) in a duration field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// Seconds (Go's `*_timeout`, `results_expire_in`, machinist's own durations).
    Seconds,
    /// Milliseconds (Go's `*_poll_period`).
    Millis,
}

impl Unit {
    fn nanos(self) -> u128 {
        match self {
            Unit::Seconds => NANOS_PER_S,
            Unit::Millis => NANOS_PER_MS,
        }
    }
}

/// A duration that could not be parsed by [`parse_duration`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseDurationError {
    text: String,
}

impl fmt::Display for ParseDurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid duration `{}`: expected e.g. \"30s\", \"500ms\", \"1m30s\" or a number of seconds",
            self.text
        )
    }
}

impl std::error::Error for ParseDurationError {}

/// Parses a human-readable duration: a sequence of `<number><unit>` parts (`"1h30m"`,
/// `"1.5s"`, `"250ms"`, spaces allowed between parts) or a bare number of seconds (`"30"`,
/// `"0.5"`). Units: `ns`, `us`/`µs`, `ms`, `s`/`sec`/`secs`/`second(s)`,
/// `m`/`min`/`mins`/`minute(s)`, `h`/`hr`/`hrs`/`hour(s)`, `d`/`day(s)`. Negative values are
/// rejected.
///
/// ```
/// use std::time::Duration;
/// use machinist_core::config::parse_duration;
///
/// assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
/// assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
/// assert_eq!(parse_duration("15").unwrap(), Duration::from_secs(15));
/// assert!(parse_duration("soon").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, ParseDurationError> {
    parse_with_unit(text, Unit::Seconds).ok_or_else(|| ParseDurationError {
        text: text.to_owned(),
    })
}

/// Formats a duration the way [`parse_duration`] reads it back: `"0s"`, `"30s"`, `"1m30s"`,
/// `"1s500ms"`, `"2h"`.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let nanos = d.subsec_nanos();
    let (ms, us, ns) = (nanos / 1_000_000, nanos / 1_000 % 1_000, nanos % 1_000);
    for (n, unit) in [
        (h, "h"),
        (m, "m"),
        (s, "s"),
        (u64::from(ms), "ms"),
        (u64::from(us), "us"),
        (u64::from(ns), "ns"),
    ] {
        if n != 0 {
            out.push_str(&n.to_string());
            out.push_str(unit);
        }
    }
    out
}

/// Parses `text` as a duration whose bare numbers are in `unit`. `None` when it is not one.
pub(crate) fn parse_with_unit(text: &str, unit: Unit) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    // A bare number: the field's unit.
    if let Some(n) = number_nanos(text, unit.nanos()) {
        return nanos_to_duration(n);
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let (num, after) = rest.split_at(num_len);
        let after = after.trim_start();
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
            .unwrap_or(after.len());
        let (unit_text, after) = after.split_at(unit_len);
        let unit_nanos = unit_nanos(unit_text)?;
        total = total.checked_add(number_nanos(num, unit_nanos)?)?;
        rest = after.trim_start();
    }
    nanos_to_duration(total)
}

/// `text` (digits with an optional fraction) times `unit` nanoseconds.
fn number_nanos(text: &str, unit: u128) -> Option<u128> {
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i, f),
        None => (text, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut nanos = whole.checked_mul(unit)?;
    // Digits past nanosecond precision do not matter.
    let frac = &frac[..frac.len().min(18)];
    if !frac.is_empty() {
        let f: u128 = frac.parse().ok()?;
        let scale = 10u128.pow(u32::try_from(frac.len()).ok()?);
        nanos = nanos.checked_add(f * unit / scale)?;
    }
    Some(nanos)
}

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" | "nsec" | "nsecs" => 1,
        "us" | "µs" | "μs" | "usec" | "usecs" => 1_000,
        "ms" | "msec" | "msecs" | "millis" => NANOS_PER_MS,
        "s" | "sec" | "secs" | "second" | "seconds" => NANOS_PER_S,
        "m" | "min" | "mins" | "minute" | "minutes" => 60 * NANOS_PER_S,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600 * NANOS_PER_S,
        "d" | "day" | "days" => 86_400 * NANOS_PER_S,
        _ => return None,
    })
}

fn nanos_to_duration(n: u128) -> Option<Duration> {
    let secs = u64::try_from(n / NANOS_PER_S).ok()?;
    let sub = u32::try_from(n % NANOS_PER_S).ok()?;
    Some(Duration::new(secs, sub))
}

/// Parses a size in bytes: `16777216`, `"512KiB"`, `"16MiB"`, `"1GiB"`, `"10MB"` (decimal
/// units are powers of 1000, binary ones powers of 1024). `None` when it is not one.
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    if num.is_empty() {
        return None;
    }
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" | "b" => 1,
        "KB" | "kB" => 1000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Formats a size as [`parse_size`] reads it back, in the largest binary unit that divides it.
pub(crate) fn format_size(n: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n != 0 && n.is_multiple_of(1 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        let s = |t| parse_with_unit(t, Unit::Seconds);
        assert_eq!(s("30"), Some(Duration::from_secs(30)));
        assert_eq!(s("30s"), Some(Duration::from_secs(30)));
        assert_eq!(s(" 500ms "), Some(Duration::from_millis(500)));
        assert_eq!(s("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(s("1h 30m"), Some(Duration::from_secs(5400)));
        assert_eq!(s("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(s("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(s("2 minutes"), Some(Duration::from_secs(120)));
        assert_eq!(s("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(s("10us"), Some(Duration::from_micros(10)));
        assert_eq!(s("7ns"), Some(Duration::from_nanos(7)));
        assert_eq!(
            parse_with_unit("1000", Unit::Millis),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            parse_with_unit("2s", Unit::Millis),
            Some(Duration::from_secs(2))
        );
        for bad in [
            "", " ", "abc", "-1", "-1s", "1x", "s", "1..2s", ".", "1s x", "1e3",
        ] {
            assert_eq!(s(bad), None, "{bad:?}");
        }
        assert_eq!(s("99999999999999999999999999999999h"), None);
    }

    #[test]
    fn format_round_trips() {
        for d in [
            Duration::ZERO,
            Duration::from_secs(30),
            Duration::from_secs(90),
            Duration::from_millis(1500),
            Duration::from_millis(50),
            Duration::from_secs(7200),
            Duration::new(3661, 1_001_001),
        ] {
            let text = format_duration(d);
            assert_eq!(parse_duration(&text), Ok(d), "{text}");
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_millis(50)), "50ms");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16777216"), Some(16 << 20));
        assert_eq!(parse_size("16MiB"), Some(16 << 20));
        assert_eq!(parse_size("16 MiB"), Some(16 << 20));
        assert_eq!(parse_size("1KB"), Some(1000));
        assert_eq!(parse_size("1 GiB"), Some(1 << 30));
        assert_eq!(parse_size("MiB"), None);
        assert_eq!(parse_size("1.5MiB"), None);
        assert_eq!(parse_size("12 parsecs"), None);
        assert_eq!(format_size(16 << 20), "16MiB");
        assert_eq!(format_size(1000), "1000");
        assert_eq!(format_size(0), "0");
    }
}
