//! The trail bucket's key layout.
//!
//! CloudTrail writes objects under
//! `[prefix/]AWSLogs/[o-id/]<account>/<kind>/<region>/YYYY/MM/DD/<file>`:
//!
//! | kind                 | file name                                                                 |
//! |----------------------|---------------------------------------------------------------------------|
//! | `CloudTrail`         | `<account>_CloudTrail_<region>_<YYYYMMDDTHHMMZ>_<16 chars>.json.gz`        |
//! | `CloudTrail-Insight` | `<account>_CloudTrail-Insight_<region>_<YYYYMMDDTHHMMZ>_<16 chars>.json.gz`|
//! | `CloudTrail-Digest`  | `<account>_CloudTrail-Digest_<region>_<trail>_<home region>_<YYYYMMDDTHHMMSSZ>[_backfill].json.gz` |
//!
//! [`classify`] turns a key into a [`TrailKey`] or says why it is not one;
//! [`TrailKey::to_key`] builds the key back, so both directions are tested
//! against each other.

use std::fmt;

use crate::time::{days_from_civil, EpochMillis};

/// What a trail object holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// Management/data events: `CloudTrail/`.
    Log,
    /// CloudTrail Insights events: `CloudTrail-Insight/`.
    Insight,
    /// Hourly digest for log file validation: `CloudTrail-Digest/`. Never parsed as events.
    Digest,
}

impl ObjectKind {
    /// The folder name CloudTrail uses for this kind.
    pub fn folder(self) -> &'static str {
        match self {
            ObjectKind::Log => "CloudTrail",
            ObjectKind::Insight => "CloudTrail-Insight",
            ObjectKind::Digest => "CloudTrail-Digest",
        }
    }

    /// Short lowercase name, as stored in the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Log => "log",
            ObjectKind::Insight => "insight",
            ObjectKind::Digest => "digest",
        }
    }

    /// The inverse of [`ObjectKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "log" => Some(ObjectKind::Log),
            "insight" => Some(ObjectKind::Insight),
            "digest" => Some(ObjectKind::Digest),
            _ => None,
        }
    }

    /// Whether the object holds event records.
    pub fn has_events(self) -> bool {
        !matches!(self, ObjectKind::Digest)
    }
}

/// A parsed trail object key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrailKey {
    /// Bucket prefix before `AWSLogs/`, without its trailing slash (empty when none).
    pub prefix: String,
    /// Organization id (`o-...`) for organization trails.
    pub org_id: Option<String>,
    /// The 12-digit account the object belongs to.
    pub account_id: String,
    pub kind: ObjectKind,
    pub region: String,
    /// Year, month, day of the folder.
    pub date: (u16, u8, u8),
    /// File timestamp from the name, in milliseconds since the epoch.
    pub file_time: EpochMillis,
    /// The rest of the file name: the 16-character unique part for logs and
    /// insights, `<trail-name>_<home region>` (and `_backfill`) for digests.
    pub unique: String,
}

/// Why a key is not a trail object trailwatch reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// Nothing of `AWSLogs/` in the key: not written by CloudTrail.
    NotUnderAwsLogs,
    /// Under `AWSLogs/` but in a service folder that is not CloudTrail's (Config, ELB, ...).
    OtherService(String),
    /// A "folder" marker object (key ending with `/`).
    FolderMarker,
    /// Under CloudTrail's folders but the path or name does not follow the layout.
    Malformed(String),
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::NotUnderAwsLogs => f.write_str("not under AWSLogs/"),
            SkipReason::OtherService(s) => write!(f, "not a CloudTrail folder ({s})"),
            SkipReason::FolderMarker => f.write_str("folder marker"),
            SkipReason::Malformed(why) => write!(f, "malformed CloudTrail key: {why}"),
        }
    }
}

impl SkipReason {
    /// A short stable label for counting skips by reason.
    pub fn label(&self) -> &'static str {
        match self {
            SkipReason::NotUnderAwsLogs => "not under AWSLogs/",
            SkipReason::OtherService(_) => "not a CloudTrail folder",
            SkipReason::FolderMarker => "folder marker",
            SkipReason::Malformed(_) => "malformed CloudTrail key",
        }
    }
}

fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_org_id(s: &str) -> bool {
    s.len() >= 12 && s.starts_with("o-") && s[2..].bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// A region name's shape: lowercase words joined by `-`, ending in a number
/// (`us-east-1`, `us-gov-west-1`), so a word of a file name such as
/// `backfill` is not taken for one.
fn is_region(s: &str) -> bool {
    s.len() <= 32
        && s.contains('-')
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.ends_with(|c: char| c.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn num(s: &str, len: usize) -> Option<u32> {
    if s.len() != len || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn malformed(why: impl Into<String>) -> SkipReason {
    SkipReason::Malformed(why.into())
}

/// Classifies an object key of the trail bucket.
pub fn classify(key: &str) -> Result<TrailKey, SkipReason> {
    if key.ends_with('/') {
        return Err(SkipReason::FolderMarker);
    }
    let (prefix, rest) = if let Some(rest) = key.strip_prefix("AWSLogs/") {
        ("", rest)
    } else if let Some(at) = key.find("/AWSLogs/") {
        (&key[..at], &key[at + "/AWSLogs/".len()..])
    } else {
        return Err(SkipReason::NotUnderAwsLogs);
    };
    let mut parts: Vec<&str> = rest.split('/').collect();
    let org_id = match parts.first() {
        Some(p) if is_org_id(p) => Some(parts.remove(0).to_owned()),
        _ => None,
    };
    let Some(&account) = parts.first() else {
        return Err(malformed("no account folder"));
    };
    if !is_account(account) {
        return Err(malformed(format!("account folder {account:?} is not a 12-digit account id")));
    }
    let kind = match parts.get(1).copied() {
        Some("CloudTrail") => ObjectKind::Log,
        Some("CloudTrail-Insight") => ObjectKind::Insight,
        Some("CloudTrail-Digest") => ObjectKind::Digest,
        Some(other) => return Err(SkipReason::OtherService(other.to_owned())),
        None => return Err(malformed("no service folder after the account")),
    };
    if parts.len() != 7 {
        return Err(malformed(format!(
            "expected {}/<region>/YYYY/MM/DD/<file> after the account, found {} path segments",
            kind.folder(),
            parts.len().saturating_sub(2)
        )));
    }
    let region = parts[2];
    if !is_region(region) {
        return Err(malformed(format!("region folder {region:?}")));
    }
    let (Some(year), Some(month), Some(day)) = (num(parts[3], 4), num(parts[4], 2), num(parts[5], 2)) else {
        return Err(malformed(format!("date folders {}/{}/{}", parts[3], parts[4], parts[5])));
    };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(malformed(format!("date folders {}/{}/{}", parts[3], parts[4], parts[5])));
    }
    let file = parts[6];
    let Some(stem) = file.strip_suffix(".json.gz") else {
        return Err(malformed(format!("file {file:?} does not end with .json.gz")));
    };
    let head = format!("{account}_{}_{region}_", kind.folder());
    let Some(tail) = stem.strip_prefix(&head) else {
        return Err(malformed(format!("file {file:?} does not start with {head:?}")));
    };
    let (file_time, unique) = match kind {
        ObjectKind::Log | ObjectKind::Insight => {
            let (ts, unique) = tail.split_once('_').ok_or_else(|| malformed(format!("file {file:?} has no unique suffix")))?;
            if unique.len() != 16 || !unique.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(malformed(format!("file {file:?}: unique part {unique:?} is not 16 letters or digits")));
            }
            (parse_file_time(ts, false).ok_or_else(|| malformed(format!("file {file:?}: timestamp {ts:?}")))?, unique.to_owned())
        }
        ObjectKind::Digest => {
            let body = tail.strip_suffix("_backfill").unwrap_or(tail);
            let (names, ts) = body.rsplit_once('_').ok_or_else(|| malformed(format!("digest {file:?} has no timestamp")))?;
            let time = parse_file_time(ts, true).ok_or_else(|| malformed(format!("digest {file:?}: timestamp {ts:?}")))?;
            // `<trail>_<home region>`: a multi-region trail's digests name its
            // home region, which differs from the folder's outside that region.
            match names.rsplit_once('_') {
                Some((trail, home)) if !trail.is_empty() && is_region(home) => {}
                _ => return Err(malformed(format!("digest {file:?} does not name the trail's home region after the trail"))),
            }
            let unique = &tail[..tail.len() - ts.len() - 1 - (tail.len() - body.len())];
            let backfill = if body.len() != tail.len() { "_backfill" } else { "" };
            (time, format!("{unique}{backfill}"))
        }
    };
    Ok(TrailKey {
        prefix: prefix.to_owned(),
        org_id,
        account_id: account.to_owned(),
        kind,
        region: region.to_owned(),
        date: (year as u16, month as u8, day as u8),
        file_time,
        unique,
    })
}

/// `YYYYMMDDTHHMMZ` (logs) or `YYYYMMDDTHHMMSSZ` (digests).
fn parse_file_time(ts: &str, with_seconds: bool) -> Option<EpochMillis> {
    let expected = if with_seconds { 16 } else { 14 };
    let b = ts.as_bytes();
    // ASCII first: the fields below are sliced by byte.
    if !ts.is_ascii() || b.len() != expected || b[8] != b'T' || b[expected - 1] != b'Z' {
        return None;
    }
    let year = num(&ts[0..4], 4)?;
    let month = num(&ts[4..6], 2)?;
    let day = num(&ts[6..8], 2)?;
    let hour = num(&ts[9..11], 2)?;
    let minute = num(&ts[11..13], 2)?;
    let second = if with_seconds { num(&ts[13..15], 2)? } else { 0 };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    Some((days * 86_400 + i64::from(hour * 3600 + minute * 60 + second)) * 1000)
}

fn format_file_time(ms: EpochMillis, with_seconds: bool) -> String {
    let secs = ms.div_euclid(1000);
    let (y, mo, d) = crate::time::civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    if with_seconds {
        format!("{y:04}{mo:02}{d:02}T{:02}{:02}{:02}Z", s / 3600, s % 3600 / 60, s % 60)
    } else {
        format!("{y:04}{mo:02}{d:02}T{:02}{:02}Z", s / 3600, s % 3600 / 60)
    }
}

impl TrailKey {
    /// A log (or insight) file key for an account, region and file time, in
    /// the folder of the file time's day.
    pub fn log(prefix: &str, org_id: Option<&str>, account_id: &str, kind: ObjectKind, region: &str, file_time: EpochMillis, unique: &str) -> Self {
        let (y, m, d) = crate::time::civil_from_days(file_time.div_euclid(86_400_000));
        TrailKey {
            prefix: prefix.trim_end_matches('/').to_owned(),
            org_id: org_id.map(str::to_owned),
            account_id: account_id.to_owned(),
            kind,
            region: region.to_owned(),
            date: (y as u16, m as u8, d as u8),
            file_time,
            unique: unique.to_owned(),
        }
    }

    /// The prefix that lists one account, region and day:
    /// `[prefix/]AWSLogs/[o-id/]<account>/<kind>/<region>/YYYY/MM/DD/`.
    pub fn day_prefix(&self) -> String {
        let mut out = String::with_capacity(96);
        if !self.prefix.is_empty() {
            out.push_str(&self.prefix);
            out.push('/');
        }
        out.push_str("AWSLogs/");
        if let Some(org) = &self.org_id {
            out.push_str(org);
            out.push('/');
        }
        let (y, m, d) = self.date;
        out.push_str(&format!("{}/{}/{}/{y:04}/{m:02}/{d:02}/", self.account_id, self.kind.folder(), self.region));
        out
    }

    /// The full object key.
    pub fn to_key(&self) -> String {
        let mut key = self.day_prefix();
        let digest = self.kind == ObjectKind::Digest;
        let ts = format_file_time(self.file_time, digest);
        if digest {
            let (names, backfill) = match self.unique.strip_suffix("_backfill") {
                Some(n) => (n, "_backfill"),
                None => (self.unique.as_str(), ""),
            };
            key.push_str(&format!("{}_{}_{}_{names}_{ts}{backfill}.json.gz", self.account_id, self.kind.folder(), self.region));
        } else {
            key.push_str(&format!("{}_{}_{}_{ts}_{}.json.gz", self.account_id, self.kind.folder(), self.region, self.unique));
        }
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_utc;

    const ORG_LOG: &str =
        "AWSLogs/o-a1b2c3d4e5/111122223333/CloudTrail/us-east-1/2024/01/15/111122223333_CloudTrail_us-east-1_20240115T1205Z_AbCdEf0123456789.json.gz";

    #[test]
    fn a_word_of_a_file_name_is_not_a_region() {
        // Found by fuzzing: `backfill` was taken for the digest's home region,
        // and the key rebuilt from what was parsed was another key.
        let key =
            "AWSLogs/111122223333/CloudTrail-Digest/us-east-2/2015/08/17/111122223333_CloudTrail-Digest_us-east-2_mai_s!!_backfill_20150817T150131Z.json.gz";
        if let Ok(parsed) = classify(key) {
            assert_eq!(parsed.to_key(), key, "a key accepted is rebuilt as itself");
        }
        for region in ["us-east-1", "us-gov-west-1", "cn-north-1", "ap-southeast-2"] {
            assert!(is_region(region), "{region}");
        }
        for word in ["backfill", "us-east", "1-us-east", "US-EAST-1", ""] {
            assert!(!is_region(word), "{word}");
        }
    }

    #[test]
    fn a_timestamp_with_a_multibyte_character_is_malformed_not_a_panic() {
        // Found by fuzzing: the time's fields were sliced by byte inside `ϊ`.
        let key = "AWSLogs/o-a1b2c3d4e5/111122223333/CloudTrail-Digest/us-east-2/2015/08/17/111122223333_CloudTrail-Digest_us-east-2_g_tr2011-2_20150817T150ϊ1Z.json.gz";
        assert!(matches!(classify(key), Err(SkipReason::Malformed(_))));
        let log = "AWSLogs/111122223333/CloudTrail/us-east-1/2024/01/15/111122223333_CloudTrail_us-east-1_20240115T12ϊZ_AbCdEf0123456789.json.gz";
        assert!(matches!(classify(log), Err(SkipReason::Malformed(_))));
    }

    #[test]
    fn classifies_trail_keys() {
        struct Case {
            key: &'static str,
            prefix: &'static str,
            org: Option<&'static str>,
            account: &'static str,
            kind: ObjectKind,
            region: &'static str,
            time: &'static str,
            unique: &'static str,
        }
        let cases = [
            Case { key: ORG_LOG, prefix: "", org: Some("o-a1b2c3d4e5"), account: "111122223333", kind: ObjectKind::Log, region: "us-east-1", time: "2024-01-15T12:05:00Z", unique: "AbCdEf0123456789" },
            Case {
                key: "AWSLogs/444455556666/CloudTrail/eu-west-1/2023/12/31/444455556666_CloudTrail_eu-west-1_20231231T2355Z_0000aaaa1111bbbb.json.gz",
                prefix: "",
                org: None,
                account: "444455556666",
                kind: ObjectKind::Log,
                region: "eu-west-1",
                time: "2023-12-31T23:55:00Z",
                unique: "0000aaaa1111bbbb",
            },
            Case {
                key: "security/trails/AWSLogs/o-zzzzzzzzzz/111122223333/CloudTrail/ap-southeast-2/2024/02/29/111122223333_CloudTrail_ap-southeast-2_20240229T0000Z_ZZZZZZZZZZZZZZZZ.json.gz",
                prefix: "security/trails",
                org: Some("o-zzzzzzzzzz"),
                account: "111122223333",
                kind: ObjectKind::Log,
                region: "ap-southeast-2",
                time: "2024-02-29T00:00:00Z",
                unique: "ZZZZZZZZZZZZZZZZ",
            },
            Case {
                key: "AWSLogs/o-a1b2c3d4e5/111122223333/CloudTrail-Digest/us-east-2/2015/08/17/111122223333_CloudTrail-Digest_us-east-2_org_trail_us-east-2_20150817T150131Z.json.gz",
                prefix: "",
                org: Some("o-a1b2c3d4e5"),
                account: "111122223333",
                kind: ObjectKind::Digest,
                region: "us-east-2",
                time: "2015-08-17T15:01:31Z",
                unique: "org_trail_us-east-2",
            },
            Case {
                key: "AWSLogs/o-a1b2c3d4e5/111122223333/CloudTrail-Digest/eu-west-1/2015/08/17/111122223333_CloudTrail-Digest_eu-west-1_org_trail_us-east-2_20150817T150131Z.json.gz",
                prefix: "",
                org: Some("o-a1b2c3d4e5"),
                account: "111122223333",
                kind: ObjectKind::Digest,
                region: "eu-west-1",
                time: "2015-08-17T15:01:31Z",
                unique: "org_trail_us-east-2",
            },
            Case {
                key: "AWSLogs/111122223333/CloudTrail-Digest/us-east-2/2015/08/17/111122223333_CloudTrail-Digest_us-east-2_main_us-east-2_20150817T150131Z_backfill.json.gz",
                prefix: "",
                org: None,
                account: "111122223333",
                kind: ObjectKind::Digest,
                region: "us-east-2",
                time: "2015-08-17T15:01:31Z",
                unique: "main_us-east-2_backfill",
            },
            Case {
                key: "AWSLogs/111122223333/CloudTrail-Insight/us-west-2/2024/03/01/111122223333_CloudTrail-Insight_us-west-2_20240301T0815Z_q1w2e3r4t5y6u7i8.json.gz",
                prefix: "",
                org: None,
                account: "111122223333",
                kind: ObjectKind::Insight,
                region: "us-west-2",
                time: "2024-03-01T08:15:00Z",
                unique: "q1w2e3r4t5y6u7i8",
            },
        ];
        for case in cases {
            let parsed = classify(case.key).unwrap_or_else(|e| panic!("{}: {e}", case.key));
            assert_eq!(parsed.prefix, case.prefix, "{}", case.key);
            assert_eq!(parsed.org_id.as_deref(), case.org, "{}", case.key);
            assert_eq!(parsed.account_id, case.account, "{}", case.key);
            assert_eq!(parsed.kind, case.kind, "{}", case.key);
            assert_eq!(parsed.region, case.region, "{}", case.key);
            assert_eq!(parsed.file_time, parse_utc(case.time).unwrap(), "{}", case.key);
            assert_eq!(parsed.unique, case.unique, "{}", case.key);
            assert_eq!(parsed.to_key(), case.key, "building the key back");
        }
    }

    #[test]
    fn skips_other_objects_with_a_reason() {
        let cases: [(&str, &str); 12] = [
            ("expected.json", "not under AWSLogs/"),
            ("AWSLogs/", "folder marker"),
            ("AWSLogs/o-a1b2c3d4e5/111122223333/CloudTrail/us-east-1/2024/01/15/", "folder marker"),
            ("AWSLogs/111122223333/Config/us-east-1/2024/1/15/ConfigHistory/x.json.gz", "not a CloudTrail folder"),
            ("AWSLogs/111122223333/elasticloadbalancing/us-east-1/2024/01/15/x.log.gz", "not a CloudTrail folder"),
            ("AWSLogs/1111222233/CloudTrail/us-east-1/2024/01/15/x.json.gz", "malformed CloudTrail key"),
            (
                "AWSLogs/111122223333/CloudTrail/us-east-1/2024/01/111122223333_CloudTrail_us-east-1_20240115T1205Z_AbCdEf0123456789.json.gz",
                "malformed CloudTrail key",
            ),
            (
                "AWSLogs/111122223333/CloudTrail/us-east-1/2024/13/15/111122223333_CloudTrail_us-east-1_20240115T1205Z_AbCdEf0123456789.json.gz",
                "malformed CloudTrail key",
            ),
            (
                "AWSLogs/111122223333/CloudTrail/us-east-1/2024/01/15/111122223333_CloudTrail_us-east-1_20240115T1205Z_AbCdEf0123456789.json",
                "malformed CloudTrail key",
            ),
            (
                "AWSLogs/111122223333/CloudTrail/us-east-1/2024/01/15/999999999999_CloudTrail_us-east-1_20240115T1205Z_AbCdEf0123456789.json.gz",
                "malformed CloudTrail key",
            ),
            (
                "AWSLogs/111122223333/CloudTrail/us-east-1/2024/01/15/111122223333_CloudTrail_us-east-1_20240115T1265Z_AbCdEf0123456789.json.gz",
                "malformed CloudTrail key",
            ),
            ("AWSLogs/111122223333/CloudTrail/us-east-1/2024/01/15/111122223333_CloudTrail_us-east-1_20240115T1205Z_short.json.gz", "malformed CloudTrail key"),
        ];
        for (key, label) in cases {
            match classify(key) {
                Ok(k) => panic!("{key} should be skipped, parsed as {k:?}"),
                Err(reason) => assert_eq!(reason.label(), label, "{key}: {reason}"),
            }
        }
    }

    #[test]
    fn builds_keys_and_day_prefixes() {
        let t = parse_utc("2024-01-15T12:05:00Z").unwrap();
        let key = TrailKey::log("", Some("o-a1b2c3d4e5"), "111122223333", ObjectKind::Log, "us-east-1", t, "AbCdEf0123456789");
        assert_eq!(key.to_key(), ORG_LOG);
        assert_eq!(key.day_prefix(), "AWSLogs/o-a1b2c3d4e5/111122223333/CloudTrail/us-east-1/2024/01/15/");
        let prefixed = TrailKey::log("logs/", None, "111122223333", ObjectKind::Log, "us-east-1", t, "AbCdEf0123456789");
        assert_eq!(classify(&prefixed.to_key()), Ok(prefixed));
    }
}
