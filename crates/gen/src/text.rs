//! Writing JSON and CloudTrail's time formats straight into byte buffers.
//!
//! Records are written by hand on the hot path (no `serde_json::Value`
//! trees): the structure of each record kind is fixed, so its keys are byte
//! literals and only values need escaping.

use trailwatch_core::time::{civil_from_days, EpochMillis};

/// Appends `value` as a JSON string, escaping what JSON requires.
pub fn push_str(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    let bytes = value.as_bytes();
    if !bytes.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20) {
        out.extend_from_slice(bytes);
    } else {
        for &b in bytes {
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                b if b < 0x20 => {
                    out.extend_from_slice(b"\\u00");
                    out.push(b"0123456789abcdef"[usize::from(b >> 4)]);
                    out.push(b"0123456789abcdef"[usize::from(b & 15)]);
                }
                b => out.push(b),
            }
        }
    }
    out.push(b'"');
}

/// Appends a key literal (with its leading comma and colon) and a string value.
pub fn field(out: &mut Vec<u8>, key: &[u8], value: &str) {
    out.extend_from_slice(key);
    push_str(out, value);
}

/// Appends a key literal and a string value, or `null`.
pub fn field_opt(out: &mut Vec<u8>, key: &[u8], value: Option<&str>) {
    out.extend_from_slice(key);
    match value {
        Some(v) => push_str(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

/// Appends an unsigned integer.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn push2(out: &mut Vec<u8>, n: i64) {
    out.push(b'0' + (n / 10 % 10) as u8);
    out.push(b'0' + (n % 10) as u8);
}

fn parts(ms: EpochMillis) -> (i64, u32, u32, i64, i64, i64) {
    let secs = ms.div_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    (y, mo, d, s / 3600, s % 3600 / 60, s % 60)
}

/// Appends `"2024-01-15T12:05:31Z"` (quoted), as CloudTrail writes `eventTime`.
pub fn push_time(out: &mut Vec<u8>, ms: EpochMillis) {
    let (y, mo, d, h, mi, s) = parts(ms);
    out.push(b'"');
    push2(out, y / 100);
    push2(out, y % 100);
    out.push(b'-');
    push2(out, i64::from(mo));
    out.push(b'-');
    push2(out, i64::from(d));
    out.push(b'T');
    push2(out, h);
    out.push(b':');
    push2(out, mi);
    out.push(b':');
    push2(out, s);
    out.extend_from_slice(b"Z\"");
}

/// `2024-01-15T12:05:31Z`.
pub fn iso(ms: EpochMillis) -> String {
    trailwatch_core::time::format_utc(ms)
}

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// The human form CloudTrail uses for credential expirations and IAM dates
/// in `responseElements`: `Mar 19, 2025, 1:30:20 AM`.
pub fn human_time(ms: EpochMillis) -> String {
    let (y, mo, d, h, mi, s) = parts(ms);
    let (h12, half) = match h {
        0 => (12, "AM"),
        1..=11 => (h, "AM"),
        12 => (12, "PM"),
        _ => (h - 12, "PM"),
    };
    format!("{} {d}, {y}, {h12}:{mi:02}:{s:02} {half}", MONTHS[(mo - 1) as usize])
}

/// The form the AWS CLI prints timestamps in: `2021-03-10T14:04:37.520000+00:00`.
pub fn cli_time(ms: EpochMillis) -> String {
    let (y, mo, d, h, mi, s) = parts(ms);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}000+00:00", ms.rem_euclid(1000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailwatch_core::time::parse_utc;

    #[test]
    fn escapes_what_json_needs() {
        let mut out = Vec::new();
        push_str(&mut out, "plain");
        push_str(&mut out, "q\"b\\n\n\u{1}é");
        assert_eq!(String::from_utf8(out).unwrap(), "\"plain\"\"q\\\"b\\\\n\\n\\u0001é\"");
    }

    #[test]
    fn writes_cloudtrail_times() {
        let t = parse_utc("2025-03-19T01:30:20Z").unwrap();
        let mut out = Vec::new();
        push_time(&mut out, t);
        assert_eq!(out, b"\"2025-03-19T01:30:20Z\"");
        assert_eq!(human_time(t), "Mar 19, 2025, 1:30:20 AM");
        assert_eq!(human_time(parse_utc("2024-01-15T13:05:31Z").unwrap()), "Jan 15, 2024, 1:05:31 PM");
        assert_eq!(human_time(parse_utc("2024-01-15T00:00:09Z").unwrap()), "Jan 15, 2024, 12:00:09 AM");
        assert_eq!(human_time(parse_utc("2024-12-01T12:59:59Z").unwrap()), "Dec 1, 2024, 12:59:59 PM");
        assert_eq!(cli_time(parse_utc("2021-03-10T14:04:37.520Z").unwrap()), "2021-03-10T14:04:37.520000+00:00");
        let mut n = Vec::new();
        push_u64(&mut n, 0);
        push_u64(&mut n, 43_200);
        assert_eq!(n, b"043200");
    }
}
