//! The two time formats the API speaks, and how we print durations.
//!
//! - RFC 3339 timestamps (`createTime`: `2026-11-28T20:31:07.123456789Z`,
//!   up to nine fractional digits, `Z` or an offset);
//! - HTTP dates in `Retry-After` (IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`).
//!
//! Both become seconds since the Unix epoch. Small enough not to need a crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Days from 1970-01-01 to the civil date (proleptic Gregorian), after
/// Howard Hinnant's `days_from_civil`.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn number(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn seconds_of(year: i64, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> Option<i64> {
    let valid = (1..=12).contains(&month) && (1..=31).contains(&day) && hour < 24 && minute < 60 && second <= 60;
    valid.then(|| days_from_civil(year, month, day) * 86_400 + i64::from(hour * 3600 + minute * 60 + second))
}

/// Parses an RFC 3339 timestamp into (possibly fractional) Unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<f64> {
    let text = text.trim();
    let (date, rest) = text.split_once(['T', 't'])?;
    let mut parts = date.split('-');
    let year = i64::from(number(parts.next()?)?);
    let month = number(parts.next()?)?;
    let day = number(parts.next()?)?;
    if parts.next().is_some() || rest.len() < 8 {
        return None;
    }
    let (clock, zone) = if let Some(stripped) = rest.strip_suffix(['Z', 'z']) {
        (stripped, 0i64)
    } else {
        let at = rest.rfind(['+', '-'])?;
        let (clock, offset) = rest.split_at(at);
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let (h, m) = offset[1..].split_once(':')?;
        (clock, sign * i64::from(number(h)? * 3600 + number(m)? * 60))
    };
    let (whole, fraction) = match clock.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (clock, ""),
    };
    let mut hms = whole.split(':');
    let hour = number(hms.next()?)?;
    let minute = number(hms.next()?)?;
    let second = number(hms.next()?)?;
    if hms.next().is_some() {
        return None;
    }
    let fraction = if fraction.is_empty() {
        0.0
    } else {
        number(fraction)?;
        format!("0.{fraction}").parse::<f64>().ok()?
    };
    let seconds = seconds_of(year, month, day, hour, minute, second)? - zone;
    Some(seconds as f64 + fraction)
}

/// Parses an HTTP date (IMF-fixdate, the only form HTTP/1.1 senders may emit).
pub fn parse_http_date(text: &str) -> Option<i64> {
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    let (_, rest) = text.trim().split_once(", ")?;
    let fields: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, clock, "GMT"] = fields.as_slice() else {
        return None;
    };
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.iter().position(|m| m == month)? as u32 + 1;
    let mut hms = clock.split(':');
    let (h, m, s) = (number(hms.next()?)?, number(hms.next()?)?, number(hms.next()?)?);
    seconds_of(i64::from(number(year)?), month, number(day)?, h, m, s)
}

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Formats a UTC RFC 3339 timestamp with second precision (for records and the fake API).
pub fn format_rfc3339(unix_seconds: i64) -> String {
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    // civil_from_days, the inverse of days_from_civil.
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// How long ago a `createTime` was: the uptime `status` shows.
pub fn age_of(create_time: &str) -> Option<Duration> {
    let then = parse_rfc3339(create_time)?;
    Some(Duration::from_secs_f64((now_unix() - then).max(0.0)))
}

/// `2d 3h`, `1h 12m`, `4m 09s`, `42s`: two units at most, for humans.
pub fn human(duration: Duration) -> String {
    let s = duration.as_secs();
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {sec:02}s")
    } else {
        format!("{sec}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_in_all_the_shapes_the_api_sends() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_rfc3339("2014-10-02T15:01:23Z"), Some(1_412_262_083.0));
        let nanos = parse_rfc3339("2014-10-02T15:01:23.045123456Z").unwrap();
        assert!((nanos - 1_412_262_083.045_123).abs() < 1e-5);
        assert_eq!(parse_rfc3339("2014-10-02T17:01:23+02:00"), Some(1_412_262_083.0));
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), Some(1_709_164_800.0));
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339("2014-13-02T15:01:23Z"), None);
    }

    #[test]
    fn format_is_the_inverse_of_parse() {
        for t in [0i64, 951_782_400, 1_412_262_083, 1_709_164_800, 4_102_444_799] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t as f64), "{t}");
        }
    }

    #[test]
    fn http_dates_and_human_durations() {
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(human(Duration::from_secs(42)), "42s");
        assert_eq!(human(Duration::from_secs(249)), "4m 09s");
        assert_eq!(human(Duration::from_secs(4320)), "1h 12m");
        assert_eq!(human(Duration::from_secs(2 * 86_400 + 3 * 3600 + 5)), "2d 3h");
    }
}
