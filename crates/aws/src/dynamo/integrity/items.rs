//! The items of the integrity table: keys, and the records they hold.

use aws_sdk_dynamodb::types::AttributeValue;
use trailwatch_core::integrity::{DigestRecord, DigestSpan, FileState, Finding, FindingKind, ListedFile};
use trailwatch_core::time::EpochMillis;

use super::{DynamoIntegrityStore, PK, SK};
use crate::dynamo::{n, s, Item};
use crate::error::AwsResult;

/// The sort key of a time: fixed width, ordered as the times are (negative ones too).
pub fn time_key(t: EpochMillis) -> String {
    format!("{:020}", i128::from(t) - i128::from(i64::MIN))
}

pub(super) fn place_key(prefix: &str, account_id: &str, region: &str) -> String {
    format!("{prefix}#{account_id}#{region}")
}

pub(super) fn digest_sk(d: &DigestRecord) -> String {
    format!("{}#{}", time_key(d.start), d.key)
}

pub(super) fn finding_sk(kind: FindingKind, subject: &str) -> String {
    format!("{}#{subject}", kind.as_str())
}

pub(super) fn key(pk: String, sk: impl Into<String>) -> Item {
    Item::from([(PK.to_owned(), s(pk)), (SK.to_owned(), s(sk))])
}

pub(super) fn flag(v: bool) -> AttributeValue {
    n(u8::from(v))
}

/// Whether a digest counts as verified.
pub(super) fn verified(d: &DigestRecord) -> bool {
    d.chain_ok && matches!(d.signature.as_str(), "valid" | "not-checked")
}

/// How a write changes an account and region's summary.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Delta {
    pub(super) digests: i64,
    pub(super) listed: i64,
    pub(super) seen: i64,
    pub(super) verified: i64,
    pub(super) missing: i64,
    pub(super) mismatched: i64,
}

impl Delta {
    pub(super) fn file(&mut self, state: FileState, seen: bool, sign: i64) {
        self.listed += sign;
        self.seen += sign * i64::from(seen);
        match state {
            FileState::Verified => self.verified += sign,
            FileState::Missing => self.missing += sign,
            FileState::Mismatched => self.mismatched += sign,
        }
    }

    pub(super) fn add(&mut self, other: Delta) {
        self.digests += other.digests;
        self.listed += other.listed;
        self.seen += other.seen;
        self.verified += other.verified;
        self.missing += other.missing;
        self.mismatched += other.mismatched;
    }

    pub(super) fn attributes(&self) -> [(&'static str, i64); 6] {
        [
            ("digests", self.digests),
            ("files_listed", self.listed),
            ("files_seen", self.seen),
            ("files_verified", self.verified),
            ("files_missing", self.missing),
            ("files_mismatched", self.mismatched),
        ]
    }
}

impl DynamoIntegrityStore {
    pub(super) fn file_item(&self, pk: String, f: &ListedFile, seen: bool) -> Item {
        let mut item = key(pk, &f.key);
        item.extend([
            ("key".to_owned(), s(&f.key)),
            ("digest_key".to_owned(), s(&f.digest_key)),
            ("account_id".to_owned(), s(&f.account_id)),
            ("region".to_owned(), s(&f.region)),
            ("expected_sha256".to_owned(), s(&f.expected_sha256)),
            ("state".to_owned(), s(f.state.as_str())),
            ("seen".to_owned(), flag(seen)),
        ]);
        if let Some(actual) = &f.actual_sha256 {
            item.insert("actual_sha256".to_owned(), s(actual));
        }
        item
    }

    /// A listed file's item, and whether the ledger had seen it.
    pub(super) fn listed_file(&self, item: &Item) -> AwsResult<(ListedFile, bool)> {
        let read = self.reader(item)?;
        let state = read.s("state")?;
        let file = ListedFile {
            key: read.s("key")?.to_owned(),
            digest_key: read.s("digest_key")?.to_owned(),
            account_id: read.s("account_id")?.to_owned(),
            region: read.s("region")?.to_owned(),
            expected_sha256: read.s("expected_sha256")?.to_owned(),
            state: FileState::parse(state).ok_or_else(|| read.bad("state", format!("unknown file state {state:?}")))?,
            actual_sha256: read.opt_s("actual_sha256")?.map(str::to_owned),
        };
        Ok((file, read.opt_n::<u8>("seen")?.unwrap_or(0) == 1))
    }

    pub(super) fn digest_item(&self, d: &DigestRecord, pk: String) -> Item {
        let mut item = key(pk, digest_sk(d));
        item.extend([
            ("key".to_owned(), s(&d.key)),
            ("location".to_owned(), s(&d.location)),
            ("account_id".to_owned(), s(&d.account_id)),
            ("region".to_owned(), s(&d.region)),
            ("start".to_owned(), n(d.start)),
            ("end".to_owned(), n(d.end)),
            ("signature".to_owned(), s(&d.signature)),
            ("chain_ok".to_owned(), flag(d.chain_ok)),
            ("files".to_owned(), n(d.files)),
            ("checked_at".to_owned(), n(d.checked_at)),
        ]);
        if let Some(fingerprint) = &d.fingerprint {
            item.insert("fingerprint".to_owned(), s(fingerprint));
        }
        if let Some(previous) = &d.previous {
            item.insert("previous".to_owned(), s(previous));
        }
        item
    }

    pub(super) fn digest_record(&self, item: &Item) -> AwsResult<DigestRecord> {
        let read = self.reader(item)?;
        Ok(DigestRecord {
            key: read.s("key")?.to_owned(),
            location: read.s("location")?.to_owned(),
            account_id: read.s("account_id")?.to_owned(),
            region: read.s("region")?.to_owned(),
            start: read.n("start")?,
            end: read.n("end")?,
            fingerprint: read.opt_s("fingerprint")?.map(str::to_owned),
            signature: read.s("signature")?.to_owned(),
            chain_ok: read.n::<u8>("chain_ok")? == 1,
            previous: read.opt_s("previous")?.map(str::to_owned),
            files: read.n("files")?,
            checked_at: read.n("checked_at")?,
        })
    }

    pub(super) fn span(&self, item: &Item) -> AwsResult<DigestSpan> {
        let read = self.reader(item)?;
        Ok(DigestSpan {
            key: read.s("key")?.to_owned(),
            location: read.s("location")?.to_owned(),
            start: read.n("start")?,
            end: read.n("end")?,
            previous: read.opt_s("previous")?.map(str::to_owned),
            chain_ok: read.n::<u8>("chain_ok")? == 1,
        })
    }

    pub(super) fn finding(&self, item: &Item) -> AwsResult<Finding> {
        let read = self.reader(item)?;
        let kind = read.s("kind")?;
        Ok(Finding {
            kind: FindingKind::parse(kind).ok_or_else(|| read.bad("kind", format!("unknown finding kind {kind:?}")))?,
            account_id: read.s("account_id")?.to_owned(),
            region: read.s("region")?.to_owned(),
            subject: read.s("subject")?.to_owned(),
            digest: read.s("digest")?.to_owned(),
            detail: read.s("detail")?.to_owned(),
            at: read.n("at")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_keys_sort_as_the_times() {
        let times = [i64::MIN, -3_600_000, -1, 0, 1, 1_705_312_800_000, 1_705_316_400_000, i64::MAX];
        let keys: Vec<String> = times.iter().map(|t| time_key(*t)).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        assert!(keys.iter().all(|k| k.len() == 20), "{keys:?}");
        // A digest's sort key lies between its start's key and the next millisecond's.
        let sk = format!("{}#AWSLogs/x", time_key(5));
        assert!(time_key(5) < sk && sk < time_key(6));
    }

    #[test]
    fn deltas_count_a_file_in_its_state() {
        let mut d = Delta::default();
        d.file(FileState::Missing, false, 1);
        d.file(FileState::Verified, true, 1);
        d.file(FileState::Missing, false, -1);
        assert_eq!((d.listed, d.seen, d.verified, d.missing, d.mismatched), (1, 1, 1, 0, 0));
    }
}
