//! UTC timestamps as CloudTrail writes them (`2024-01-15T12:05:31Z`), as
//! milliseconds since the Unix epoch. Hand-written because it sits on the hot
//! path of every record and the format is fixed.

use std::fmt;

/// Milliseconds since 1970-01-01T00:00:00Z.
pub type EpochMillis = i64;

/// A timestamp that could not be read, with the text that was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a UTC timestamp (expected YYYY-MM-DDTHH:MM:SS[.fff]Z): {0:?}")]
pub struct TimeError(pub String);

/// Days since the epoch of a proleptic Gregorian civil date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month, day) of a day count since the epoch.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn digits(bytes: &[u8]) -> Option<u32> {
    let mut value = 0u32;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u32::from(b - b'0');
    }
    Some(value)
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ`, with optional fractional seconds, or a
/// `+00:00` offset in place of `Z`.
pub fn parse_utc(text: &str) -> Result<EpochMillis, TimeError> {
    parse_inner(text.as_bytes()).ok_or_else(|| TimeError(text.to_owned()))
}

fn parse_inner(b: &[u8]) -> Option<EpochMillis> {
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(i64::from(year), month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &b[19..];
    let mut millis = 0u32;
    if rest.first() == Some(&b'.') {
        let frac_len = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if frac_len == 0 {
            return None;
        }
        let frac = &rest[1..1 + frac_len];
        for i in 0..3 {
            millis = millis * 10 + frac.get(i).map_or(0, |d| u32::from(d - b'0'));
        }
        rest = &rest[1 + frac_len..];
    }
    if rest != b"Z" && rest != b"+00:00" {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second);
    Some(secs * 1000 + i64::from(millis))
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Display adapter: `2024-01-15T12:05:31Z` (whole seconds, as CloudTrail writes).
pub struct Utc(pub EpochMillis);

impl fmt::Display for Utc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.div_euclid(1000);
        let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
        let s = secs.rem_euclid(86_400);
        write!(f, "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z", s / 3600, s % 3600 / 60, s % 60)
    }
}

/// Formats as `2024-01-15T12:05:31Z`.
pub fn format_utc(ms: EpochMillis) -> String {
    Utc(ms).to_string()
}

/// Parses a user-given bound: a full timestamp, a date (`2024-01-15`, midnight
/// UTC), or a duration back from `now` (`90m`, `36h`, `7d`).
pub fn parse_bound(text: &str, now: EpochMillis) -> Result<EpochMillis, TimeError> {
    let t = text.trim();
    if let Some(ms) = parse_relative(t) {
        return Ok(now - ms);
    }
    if t.len() == 10 {
        return parse_utc(&format!("{t}T00:00:00Z"));
    }
    parse_utc(t)
}

fn parse_relative(t: &str) -> Option<EpochMillis> {
    let (num, unit) = t.split_at(t.len().checked_sub(1)?);
    let n: i64 = num.parse().ok()?;
    let unit_ms = match unit {
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(n * unit_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cloudtrail_times() {
        assert_eq!(parse_utc("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_utc("2024-02-29T23:59:59Z"), Ok(1_709_251_199_000));
        assert_eq!(parse_utc("2021-08-11T20:05:31.123Z"), Ok(1_628_712_331_123));
        assert_eq!(parse_utc("2021-08-11T20:05:31+00:00"), Ok(1_628_712_331_000));
    }

    #[test]
    fn rejects_malformed_times() {
        for bad in
            ["", "2024-13-01T00:00:00Z", "2023-02-29T00:00:00Z", "2024-01-01 00:00:00Z", "2024-01-01T00:00:00", "2024-01-01T25:00:00Z", "2024-01-01T00:00:00.Z"]
        {
            assert!(parse_utc(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn formats_round_trip() {
        for ms in [0, 1_628_712_331_000, 4_102_444_800_000, 951_782_400_000] {
            assert_eq!(parse_utc(&format_utc(ms)), Ok(ms));
        }
        assert_eq!(format_utc(1_709_251_199_000), "2024-02-29T23:59:59Z");
    }

    #[test]
    fn bounds_accept_dates_and_durations() {
        let now = 1_700_000_000_000;
        assert_eq!(parse_bound("2h", now), Ok(now - 7_200_000));
        assert_eq!(parse_bound("2024-01-15", now), parse_utc("2024-01-15T00:00:00Z"));
        assert!(parse_bound("yesterday", now).is_err());
    }
}
