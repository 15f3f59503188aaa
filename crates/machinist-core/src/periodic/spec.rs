//! [`Schedule`]: a periodic spec parsed once (Go Machinery's grammar, robfig/cron v3's
//! `ParseStandard`, plus an optional seconds field) and asked for its next fire time.
//!
//! croner parses each field into a bit set and answers "does this minute / day … match"; the
//! walk from one instant to the next fire time is robfig's `SpecSchedule.Next`, step for step,
//! so that ticks — including the odd ones around DST changes — are the instants a Go scheduler
//! of the same spec picks. Where the two libraries differ, robfig wins:
//!
//! * a day-of-week `N/step` runs to Saturday (croner: to 7, which is Sunday again);
//! * a field holding `*` in any item (`*,5`, `*/1`, `?`) counts as `*` for the DOM/DOW rule;
//! * a fixed time inside a spring-forward gap is skipped that day (croner: runs after the gap),
//!   and a time in a fall-back overlap that the walk meets twice runs twice (croner: once).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{
    DateTime, Datelike, Local, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeDelta, TimeZone,
    Timelike, Utc,
};
use croner::parser::{CronParser, Seconds, Year};
use croner::{CronPattern, Weekday};

/// A periodic spec that cannot be used, with the reason. Its text names the spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid periodic spec {spec:?}: {reason}")]
pub struct SpecError {
    spec: String,
    reason: String,
}

impl SpecError {
    fn new(spec: &str, reason: impl Into<String>) -> Self {
        SpecError {
            spec: spec.to_owned(),
            reason: reason.into(),
        }
    }

    /// The spec as it was given.
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// Why it was rejected (`the hour field "24": 24 is above the maximum 23` …).
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// The time zone a cron spec is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// The process's local zone (`TZ`, else `/etc/localtime`), as Go's `time.Local`.
    Local,
    /// A named IANA zone from a `TZ=` / `CRON_TZ=` prefix.
    Named(chrono_tz::Tz),
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Zone::Local => f.write_str("Local"),
            Zone::Named(tz) => f.write_str(tz.name()),
        }
    }
}

#[derive(Debug, Clone)]
enum Kind {
    /// Six fields (seconds first), matched by croner.
    Cron(Box<CronPattern>),
    /// `@every`: whole seconds, at least one.
    Every(Duration),
}

/// A parsed periodic spec. See the [module docs](super) for the grammar.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use machinist_core::periodic::Schedule;
///
/// let s = Schedule::parse("CRON_TZ=UTC 30 6 * * ?").unwrap();
/// let t = Utc.with_ymd_and_hms(2026, 1, 1, 7, 0, 0).unwrap();
/// assert_eq!(s.next_after(t), Some(Utc.with_ymd_and_hms(2026, 1, 2, 6, 30, 0).unwrap()));
/// ```
#[derive(Debug, Clone)]
pub struct Schedule {
    spec: String,
    zone: Zone,
    kind: Kind,
}

impl FromStr for Schedule {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        Schedule::parse(s)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spec)
    }
}

impl Schedule {
    /// Parses a spec: 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds
    /// first), a descriptor (`@hourly` …, `@every 1h30m`), optionally after `CRON_TZ=Zone ` or
    /// `TZ=Zone `. A spec that can never fire (`0 0 30 2 *`) is rejected too.
    pub fn parse(spec: &str) -> Result<Schedule, SpecError> {
        let err = |reason: String| SpecError::new(spec, reason);
        let mut text = spec.trim();
        if text.is_empty() {
            return Err(err("the spec is empty".into()));
        }
        let mut zone = Zone::Local;
        if let Some(rest) = text
            .strip_prefix("CRON_TZ=")
            .or_else(|| text.strip_prefix("TZ="))
        {
            let Some((name, after)) = rest.split_once(char::is_whitespace) else {
                return Err(err(
                    "a TZ= or CRON_TZ= prefix must be followed by a space and the schedule".into(),
                ));
            };
            zone = parse_zone(name).map_err(err)?;
            text = after.trim();
        }
        let kind = if let Some(descriptor) = text.strip_prefix('@') {
            parse_descriptor(descriptor).map_err(err)?
        } else {
            Kind::Cron(Box::new(parse_fields(text).map_err(err)?))
        };
        let schedule = Schedule {
            spec: spec.to_owned(),
            zone,
            kind,
        };
        if let Kind::Cron(_) = schedule.kind
            && schedule.next_after(Utc::now()).is_none()
        {
            return Err(err(
                "it never fires (no matching time within five years)".into()
            ));
        }
        Ok(schedule)
    }

    /// The spec as it was given.
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// The zone the fields are read in (`@every` ignores it).
    pub fn zone(&self) -> Zone {
        self.zone
    }

    /// For `@every`: the interval (whole seconds, at least one).
    pub fn every(&self) -> Option<Duration> {
        match self.kind {
            Kind::Every(d) => Some(d),
            Kind::Cron(_) => None,
        }
    }

    /// The first fire time strictly after `t`, as robfig/cron v3 computes it: cron specs walk
    /// the fields in the spec's zone (`None` when nothing matches within five years); `@every d`
    /// gives `t` truncated to the second, plus `d`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Every(d) => {
                let d = TimeDelta::from_std(*d).ok()?;
                truncate_secs(t, 1)?.checked_add_signed(d)
            }
            Kind::Cron(pattern) => match self.zone {
                Zone::Local => walk(pattern, t.with_timezone(&Local)).map(|t| t.to_utc()),
                Zone::Named(tz) => walk(pattern, t.with_timezone(&tz)).map(|t| t.to_utc()),
            },
        }
    }

    /// The last fire time at or before `now`, given a fire time `from <= now` (robfig ticks
    /// are whole seconds, and `next_after` never goes back, so a binary search on whole seconds
    /// finds it in a few dozen steps however long ago `from` was). Also returns the fire time
    /// after it (`None` when the schedule has ended).
    pub(crate) fn last_at_or_before(
        &self,
        from: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> (DateTime<Utc>, Option<DateTime<Utc>>) {
        let following = self.next_after(from);
        if from > now || following.is_none_or(|f| f > now) {
            return (from, following);
        }
        if let Kind::Every(d) = self.kind {
            let step = i64::try_from(d.as_secs()).unwrap_or(i64::MAX).max(1);
            let k = (now - from).num_seconds() / step;
            let last = from + TimeDelta::seconds(k.saturating_mul(step));
            return (last, self.next_after(last));
        }
        // `next_after(t) <= now` holds for every t before the answer and fails from it on.
        let before_answer = |t: DateTime<Utc>| self.next_after(t).is_some_and(|n| n <= now);
        let (mut lo, mut hi) = (from.timestamp(), now.timestamp());
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            match DateTime::from_timestamp(mid, 0) {
                Some(t) if before_answer(t) => lo = mid,
                _ => hi = mid,
            }
        }
        let last = DateTime::from_timestamp(hi, 0).unwrap_or(from);
        (last, self.next_after(last))
    }
}

fn parse_zone(name: &str) -> Result<Zone, String> {
    match name {
        "Local" => Ok(Zone::Local),
        // Go's LoadLocation("") is UTC.
        "" | "UTC" => Ok(Zone::Named(chrono_tz::Tz::UTC)),
        _ => name.parse::<chrono_tz::Tz>().map(Zone::Named).map_err(|_| {
            format!("unknown time zone {name:?} (an IANA name such as Europe/Berlin)")
        }),
    }
}

fn parse_descriptor(descriptor: &str) -> Result<Kind, String> {
    let lower = descriptor.to_ascii_lowercase();
    let fields = match lower.as_str() {
        "yearly" | "annually" => "0 0 0 1 1 *",
        "monthly" => "0 0 0 1 * *",
        "weekly" => "0 0 0 * * 0",
        "daily" | "midnight" => "0 0 0 * * *",
        "hourly" => "0 0 * * * *",
        _ => {
            let Some(duration) = lower
                .strip_prefix("every")
                .filter(|r| r.starts_with(char::is_whitespace))
            else {
                return Err(format!(
                    "unknown descriptor @{descriptor} (expected @yearly, @annually, @monthly, \
                     @weekly, @daily, @midnight, @hourly or @every <duration>)"
                ));
            };
            // The original text: Go's units are case-sensitive.
            let duration = descriptor[descriptor.len() - duration.len()..].trim();
            let d = parse_go_duration(duration)
                .map_err(|e| format!("@every needs a Go duration such as 1h30m or 10s: {e}"))?;
            // robfig: under a second becomes a second, and the rest is dropped.
            return Ok(Kind::Every(Duration::from_secs(d.as_secs().max(1))));
        }
    };
    Ok(Kind::Cron(Box::new(
        parse_fields(fields).map_err(|e| format!("internal descriptor error: {e}"))?,
    )))
}

/// One cron field: its name in messages, bounds, and names allowed in place of numbers.
struct FieldDef {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// Where robfig's `N/step` stops (day of week: Saturday, though 7 is accepted as Sunday).
    step_end: u32,
}

const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

const FIELDS: [FieldDef; 6] = [
    FieldDef {
        name: "seconds",
        min: 0,
        max: 59,
        names: &[],
        step_end: 59,
    },
    FieldDef {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
        step_end: 59,
    },
    FieldDef {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
        step_end: 23,
    },
    FieldDef {
        name: "day-of-month",
        min: 1,
        max: 31,
        names: &[],
        step_end: 31,
    },
    FieldDef {
        name: "month",
        min: 1,
        max: 12,
        names: MONTHS,
        step_end: 12,
    },
    FieldDef {
        name: "day-of-week",
        min: 0,
        max: 7,
        names: DAYS,
        step_end: 6,
    },
];

/// Checks the fields with robfig's rules (and messages naming the field), rewrites them into
/// the standard form croner reads, and lets croner build the bit sets.
fn parse_fields(text: &str) -> Result<CronPattern, String> {
    let mut fields: Vec<&str> = text.split_whitespace().collect();
    match fields.len() {
        5 => fields.insert(0, "0"),
        6 => {}
        n => {
            return Err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds \
                 first), found {n}"
            ));
        }
    }
    let mut normal = Vec::with_capacity(6);
    for (field, def) in fields.iter().zip(&FIELDS) {
        normal.push(
            normalize_field(field, def)
                .map_err(|e| format!("the {} field {field:?}: {e}", def.name))?,
        );
    }
    let parser = CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Disallowed)
        .build();
    let cron = parser
        .parse(&normal.join(" "))
        .map_err(|e| format!("{e}"))?;
    Ok(cron.pattern)
}

/// One field in croner's standard form: names replaced by numbers, `?` by `*`, robfig's
/// `N/step` by `N-end/step`, and a day field that holds `*` (step 1) in any item by `*`.
fn normalize_field(field: &str, def: &FieldDef) -> Result<String, String> {
    let lower = field.to_ascii_lowercase();
    let mut items = Vec::new();
    let mut star = false;
    for item in lower.split(',') {
        if item.is_empty() {
            return Err("empty list item".into());
        }
        let mut parts = item.split('/');
        let range = parts.next().unwrap_or_default();
        let step = parts.next();
        if parts.next().is_some() {
            return Err(format!("too many slashes in {item:?}"));
        }
        let step = match step {
            None => None,
            Some(s) => {
                let n: u32 = s
                    .parse()
                    .map_err(|_| format!("the step {s:?} is not a positive whole number"))?;
                if n == 0 {
                    return Err(format!("the step of {item:?} must be positive"));
                }
                Some(n)
            }
        };
        let (start, end) = if range == "*" || range == "?" {
            if step.is_none_or(|s| s == 1) {
                star = true;
            }
            items.push(match step {
                Some(s) => format!("*/{s}"),
                None => "*".to_owned(),
            });
            continue;
        } else {
            let mut ends = range.split('-');
            let start = value(ends.next().unwrap_or_default(), def)?;
            let end = match ends.next() {
                Some(e) => value(e, def)?,
                None if step.is_some() => def.step_end.max(start),
                None => start,
            };
            if ends.next().is_some() {
                return Err(format!("too many hyphens in {item:?}"));
            }
            if start > end {
                return Err(format!("the range {range:?} starts after it ends"));
            }
            (start, end)
        };
        items.push(match step {
            Some(s) => format!("{start}-{end}/{s}"),
            None if start == end => start.to_string(),
            None => format!("{start}-{end}"),
        });
    }
    let day_field = def.name.starts_with("day");
    Ok(if star && day_field {
        "*".to_owned()
    } else {
        items.join(",")
    })
}

fn value(text: &str, def: &FieldDef) -> Result<u32, String> {
    if text.is_empty() {
        return Err("missing number".into());
    }
    let n = if let Some(i) = def.names.iter().position(|n| *n == text) {
        let i = u32::try_from(i).unwrap_or(0);
        if def.min == 1 { i + 1 } else { i }
    } else if text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse::<u32>()
            .map_err(|_| format!("{text} is out of range"))?
    } else if def.names.is_empty() {
        return Err(format!("{text:?} is not a number"));
    } else {
        return Err(format!(
            "{text:?} is neither a number nor a name ({})",
            def.names.join(", ")
        ));
    };
    if n < def.min {
        return Err(format!("{n} is below the minimum {}", def.min));
    }
    if n > def.max {
        return Err(format!("{n} is above the maximum {}", def.max));
    }
    Ok(n)
}

/// Go's `time.ParseDuration`: `[-+]?(number unit)+` with units `ns`, `us`/`µs`/`μs`, `ms`,
/// `s`, `m`, `h`, or `0`. Negative durations are refused (robfig would silently use 1 s).
pub(crate) fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a Go duration");
    let mut s = text;
    if s.starts_with('-') {
        return Err(format!("{text:?} is negative"));
    }
    s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let int_len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (int, rest) = s.split_at(int_len);
        let (frac, rest) = match rest.strip_prefix('.') {
            Some(r) => {
                let n = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
                r.split_at(n)
            }
            None => ("", rest),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(bad());
        }
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let (unit, rest) = rest.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("{text:?} has a number without a unit")),
            _ => return Err(format!("{text:?} has the unknown unit {unit:?}")),
        };
        let whole: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad())?
        };
        let mut part = whole.checked_mul(scale).ok_or_else(bad)?;
        let mut f_scale = scale;
        for digit in frac.bytes().take(30) {
            f_scale /= 10;
            part += u128::from(digit - b'0') * f_scale;
        }
        total = total.checked_add(part).ok_or_else(bad)?;
        s = rest;
    }
    // Go's Duration is an int64 of nanoseconds.
    if total > i64::MAX as u128 {
        return Err(format!("{text:?} is too long"));
    }
    Ok(Duration::from_nanos(
        u64::try_from(total).map_err(|_| bad())?,
    ))
}

/// `t` truncated to a multiple of `secs` seconds since the epoch (Go's `Truncate` for
/// seconds and minutes: absolute, not wall clock).
fn truncate_secs<Tz: TimeZone>(t: DateTime<Tz>, secs: i64) -> Option<DateTime<Tz>> {
    let ts = t.timestamp();
    let cut = ts - ts.rem_euclid(secs);
    Some(DateTime::from_timestamp(cut, 0)?.with_timezone(&t.timezone()))
}

/// Go's `time.Date(…, loc)`: a wall clock time to an instant. In a gap it uses the offset
/// after the change (so it lands before the gap, as Go does); in an overlap the offset found
/// by looking the wall clock up as if it were UTC.
fn go_date<Tz: TimeZone>(tz: &Tz, wall: NaiveDateTime) -> Option<DateTime<Tz>> {
    let guess = tz.offset_from_utc_datetime(&wall).fix();
    let utc = wall.checked_sub_offset(guess)?;
    let actual = tz.offset_from_utc_datetime(&utc).fix();
    let utc = if actual == guess {
        utc
    } else {
        wall.checked_sub_offset(actual)?
    };
    Some(tz.from_utc_datetime(&utc))
}

/// Go's `AddDate(0, months, days)`: wall clock date arithmetic with Go's normalisation
/// (January 31 + 1 month = March 3), then `go_date`.
fn add_date<Tz: TimeZone>(t: &DateTime<Tz>, months: i32, days: i64) -> Option<DateTime<Tz>> {
    let wall = t.naive_local();
    let total = wall.year() * 12 + i32::try_from(wall.month0()).ok()? + months;
    let first = NaiveDate::from_ymd_opt(total.div_euclid(12), total.rem_euclid(12) as u32 + 1, 1)?;
    let date = first.checked_add_signed(TimeDelta::days(i64::from(wall.day()) - 1 + days))?;
    go_date(&t.timezone(), date.and_time(wall.time()))
}

fn weekday<Tz: TimeZone>(t: &DateTime<Tz>) -> Weekday {
    Weekday::from_days_from_sunday(t.weekday().num_days_from_sunday())
}

/// robfig/cron v3's `SpecSchedule.Next`, on chrono: the first matching second strictly after
/// `t`, in `t`'s zone, or `None` past five years.
fn walk<Tz: TimeZone>(p: &CronPattern, t: DateTime<Tz>) -> Option<DateTime<Tz>> {
    let tz = t.timezone();
    let hour = TimeDelta::hours(1);
    let minute = TimeDelta::minutes(1);
    let second = TimeDelta::seconds(1);
    let at = |y: i32, m: u32, d: u32, h: u32| {
        let date = NaiveDate::from_ymd_opt(y, m, d)?;
        go_date(&tz, date.and_time(NaiveTime::from_hms_opt(h, 0, 0)?))
    };
    let month_ok = |t: &DateTime<Tz>| p.month_match(t.month()).unwrap_or(false);
    let day_ok = |t: &DateTime<Tz>| {
        p.day_match(t.year(), t.month(), t.day(), weekday(t))
            .unwrap_or(false)
    };
    let hour_ok = |t: &DateTime<Tz>| p.hour_match(t.hour()).unwrap_or(false);
    let minute_ok = |t: &DateTime<Tz>| p.minute_match(t.minute()).unwrap_or(false);
    let second_ok = |t: &DateTime<Tz>| p.second_match(t.second()).unwrap_or(false);

    // The upcoming second.
    let mut t = truncate_secs(t, 1)?.checked_add_signed(second)?;
    let mut added = false;
    let year_limit = t.year() + 5;
    // A guard on top of robfig's five years, against zones whose changes could make the
    // steps below go round in circles.
    let mut budget: u32 = 5_000_000;
    'wrap: loop {
        budget = budget.checked_sub(1)?;
        if t.year() > year_limit {
            return None;
        }
        while !month_ok(&t) {
            if !added {
                added = true;
                t = at(t.year(), t.month(), 1, 0)?;
            }
            t = add_date(&t, 1, 0)?;
            if t.month() == 1 {
                continue 'wrap;
            }
        }
        while !day_ok(&t) {
            budget = budget.checked_sub(1)?;
            if !added {
                added = true;
                t = at(t.year(), t.month(), t.day(), 0)?;
            }
            t = add_date(&t, 0, 1)?;
            // Midnight may not exist (a change at midnight): go back to the day's start.
            if t.hour() != 0 {
                let h = i64::from(t.hour());
                t = if h > 12 {
                    t.checked_add_signed(TimeDelta::hours(24 - h))?
                } else {
                    t.checked_sub_signed(TimeDelta::hours(h))?
                };
            }
            if t.day() == 1 {
                continue 'wrap;
            }
        }
        while !hour_ok(&t) {
            budget = budget.checked_sub(1)?;
            if !added {
                added = true;
                t = at(t.year(), t.month(), t.day(), t.hour())?;
            }
            t = t.checked_add_signed(hour)?;
            if t.hour() == 0 {
                continue 'wrap;
            }
        }
        while !minute_ok(&t) {
            budget = budget.checked_sub(1)?;
            if !added {
                added = true;
                t = truncate_secs(t, 60)?;
            }
            t = t.checked_add_signed(minute)?;
            if t.minute() == 0 {
                continue 'wrap;
            }
        }
        while !second_ok(&t) {
            budget = budget.checked_sub(1)?;
            if !added {
                added = true;
                t = truncate_secs(t, 1)?;
            }
            t = t.checked_add_signed(second)?;
            if t.second() == 0 {
                continue 'wrap;
            }
        }
        return Some(t);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn next(spec: &str, from: &str) -> Option<DateTime<Utc>> {
        Schedule::parse(spec).unwrap().next_after(utc(from))
    }

    #[test]
    fn go_durations() {
        let ok = |s: &str| parse_go_duration(s).unwrap();
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok(".5h"), Duration::from_secs(1800));
        assert_eq!(ok("1h1m1s1ms1us1ns"), Duration::new(3661, 1_001_001));
        assert_eq!(ok("2µs"), Duration::from_micros(2));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("+5s"), Duration::from_secs(5));
        for bad in [
            "",
            "5",
            "1d",
            "1 h",
            "h",
            ".s",
            "1.2.3s",
            "-5s",
            "9999999999h",
            "5S",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn every_truncates_like_robfig() {
        let s = Schedule::parse("@every 500ms").unwrap();
        assert_eq!(s.every(), Some(Duration::from_secs(1)));
        assert_eq!(
            s.next_after(utc("2026-01-01T00:00:00.700Z")),
            Some(utc("2026-01-01T00:00:01Z"))
        );
        let s = Schedule::parse("@every 1m30.9s").unwrap();
        assert_eq!(s.every(), Some(Duration::from_secs(90)));
    }

    #[test]
    fn last_at_or_before_needs_no_loop() {
        let s = Schedule::parse("TZ=UTC * * * * * *").unwrap();
        let from = utc("2026-01-01T00:00:00Z");
        let now = utc("2027-03-04T05:06:07.5Z");
        assert_eq!(
            s.last_at_or_before(from, now),
            (
                utc("2027-03-04T05:06:07Z"),
                Some(utc("2027-03-04T05:06:08Z"))
            )
        );
        let s = Schedule::parse("TZ=UTC 0 0 * * 1").unwrap();
        assert_eq!(
            s.last_at_or_before(utc("2026-01-05T00:00:00Z"), utc("2026-03-04T12:00:00Z"))
                .0,
            utc("2026-03-02T00:00:00Z")
        );
        let s = Schedule::parse("@every 10s").unwrap();
        assert_eq!(
            s.last_at_or_before(utc("2026-01-01T00:00:03Z"), utc("2026-01-01T01:00:00Z")),
            (
                utc("2026-01-01T00:59:53Z"),
                Some(utc("2026-01-01T01:00:03Z"))
            )
        );
        // Not yet past the next tick: the given one.
        assert_eq!(
            s.last_at_or_before(from, utc("2026-01-01T00:00:09Z")).0,
            from
        );
    }

    #[test]
    fn fields_are_checked_with_reasons() {
        let reason = |spec: &str| Schedule::parse(spec).unwrap_err().reason().to_owned();
        assert!(
            reason("* * 0 * *").contains("day-of-month"),
            "{}",
            reason("* * 0 * *")
        );
        assert!(reason("0 24 * * *").contains("above the maximum 23"));
        assert!(reason("0 0 * foo *").contains("month"));
    }

    #[test]
    fn dom_dow_star_rule_follows_robfig() {
        // `*/1` in the day of month is a star for robfig: only Mondays.
        assert_eq!(
            next("TZ=UTC 0 0 */1 * 1", "2026-01-06T00:00:00Z"),
            Some(utc("2026-01-12T00:00:00Z"))
        );
        // `*/2` is not a star: odd days OR Mondays.
        assert_eq!(
            next("TZ=UTC 0 0 */2 * 1", "2026-01-06T00:00:00Z"),
            Some(utc("2026-01-07T00:00:00Z"))
        );
    }
}
