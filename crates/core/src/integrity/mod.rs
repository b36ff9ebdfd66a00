//! Completeness and integrity of the trail: CloudTrail digest files checked
//! the way AWS documents it.
//!
//! Each hourly digest (per account and region) is signed (RSA over SHA-256;
//! the signature travels in the digest object's metadata, or in embedded
//! mode in a sidecar file, see [`SidecarSignatures`]), names the previous
//! digest by key and hash, and lists every log file delivered in its hour
//! with the SHA-256 of its uncompressed content. [`IntegrityChecker`]
//! checks one digest when it lands: its signature, its link to the previous
//! digest, and every listed file against the bucket; then it looks again at
//! the account and region's files still missing or different, and at the
//! hours between its first and last digest that have no digest.
//!
//! Each problem is a [`Finding`] with the digest's `s3://bucket/key` and
//! what was wrong; findings are kept open in an [`IntegrityStore`] until a
//! later check clears them. Open findings raise the built-in alert
//! `trail-integrity` (one per account, region and kind of finding), through
//! the same lifecycle and outbox as rule alerts; when the last finding of a
//! kind clears, its alert is resolved.

mod check;
pub mod digest;
pub mod keys;

pub use check::{dedup_key, CheckReport, IntegrityAlerts, IntegrityChecker, IntegrityPorts, CHECKER_NAME, RULE_ID};
pub use digest::{DigestFile, ListedLogFile};
pub use keys::{KeyFetcher, PublicKeys, SignatureCheck};

use std::io::Read;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::alerts::Severity;
use crate::ports::{LogSource, PortError};
use crate::time::EpochMillis;

/// What kind of problem a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// The digest's signature does not verify: the digest was changed.
    SignatureInvalid,
    /// The digest carries no signature.
    SignatureMissing,
    /// The digest names a key no configured key has.
    UnknownKey,
    /// The digest cannot be read or is not a digest.
    DigestUnreadable,
    /// The previous digest it names is gone or is not the file it hashed.
    ChainBroken,
    /// An hour without a digest between the first and last digest.
    DigestGap,
    /// A listed log file is not in the bucket.
    LogFileMissing,
    /// A listed log file's content is not what the digest hashed.
    LogFileMismatch,
}

impl FindingKind {
    pub const ALL: [FindingKind; 8] = [
        FindingKind::SignatureInvalid,
        FindingKind::SignatureMissing,
        FindingKind::UnknownKey,
        FindingKind::DigestUnreadable,
        FindingKind::ChainBroken,
        FindingKind::DigestGap,
        FindingKind::LogFileMissing,
        FindingKind::LogFileMismatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::SignatureInvalid => "signature-invalid",
            FindingKind::SignatureMissing => "signature-missing",
            FindingKind::UnknownKey => "unknown-key",
            FindingKind::DigestUnreadable => "digest-unreadable",
            FindingKind::ChainBroken => "chain-broken",
            FindingKind::DigestGap => "digest-gap",
            FindingKind::LogFileMissing => "log-file-missing",
            FindingKind::LogFileMismatch => "log-file-mismatch",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        FindingKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Tampering is critical; loss (or what cannot be told from it) is high.
    pub fn severity(self) -> Severity {
        match self {
            FindingKind::SignatureInvalid | FindingKind::LogFileMismatch | FindingKind::ChainBroken => Severity::Critical,
            _ => Severity::High,
        }
    }

    /// The kinds a check of one digest settles for the digest itself.
    pub const OF_DIGEST: [FindingKind; 5] =
        [FindingKind::SignatureInvalid, FindingKind::SignatureMissing, FindingKind::UnknownKey, FindingKind::DigestUnreadable, FindingKind::ChainBroken];
    /// The kinds a check of one listed log file settles.
    pub const OF_FILE: [FindingKind; 2] = [FindingKind::LogFileMissing, FindingKind::LogFileMismatch];
}

/// One problem with the trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub kind: FindingKind,
    pub account_id: String,
    pub region: String,
    /// What it is about, unique within its kind: the digest key, the log
    /// file key, or the start of the gap.
    pub subject: String,
    /// The digest it was found through: `s3://bucket/key`.
    pub digest: String,
    /// What was wrong, in words.
    pub detail: String,
    /// Trail time: the end of the digest's hour.
    pub at: EpochMillis,
}

impl Finding {
    /// One line for alerts and logs.
    pub fn describe(&self) -> String {
        format!("{}: {} (digest {})", self.kind.as_str(), self.detail, self.digest)
    }
}

/// How a listed log file compared with its digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileState {
    Verified,
    Missing,
    Mismatched,
}

impl FileState {
    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Verified => "verified",
            FileState::Missing => "missing",
            FileState::Mismatched => "mismatched",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [FileState::Verified, FileState::Missing, FileState::Mismatched].into_iter().find(|v| v.as_str() == s)
    }
}

/// A log file a digest lists, and how it compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFile {
    pub key: String,
    /// The digest that lists it (its key).
    pub digest_key: String,
    pub account_id: String,
    pub region: String,
    pub expected_sha256: String,
    pub state: FileState,
    /// The hash of the file found, when it differs.
    pub actual_sha256: Option<String>,
}

/// A verified digest, as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestRecord {
    pub key: String,
    /// `s3://bucket/key`, as the digest names itself (its key when it cannot be read).
    pub location: String,
    pub account_id: String,
    pub region: String,
    pub start: EpochMillis,
    pub end: EpochMillis,
    pub fingerprint: Option<String>,
    /// `valid`, `not-checked`, or the finding kind.
    pub signature: String,
    /// Whether it links to the previous digest as it says (true for the first of a chain).
    pub chain_ok: bool,
    /// The key of the previous digest it names; None for the first of a chain.
    pub previous: Option<String>,
    pub files: u64,
    pub checked_at: EpochMillis,
}

/// Where a digest lies in its chain: its key and `s3://bucket/key`, the
/// hour it covers, the previous digest it names and whether that one was
/// there as named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestSpan {
    pub key: String,
    pub location: String,
    pub start: EpochMillis,
    pub end: EpochMillis,
    pub previous: Option<String>,
    pub chain_ok: bool,
}

impl DigestSpan {
    /// The span of a recorded digest.
    pub fn of(d: &DigestRecord) -> DigestSpan {
        DigestSpan { key: d.key.clone(), location: d.location.clone(), start: d.start, end: d.end, previous: d.previous.clone(), chain_ok: d.chain_ok }
    }
}

/// The digests either side of one ([`IntegrityStore::digest_neighbours`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Neighbours {
    pub before: Option<DigestSpan>,
    pub after: Option<DigestSpan>,
}

/// Where one account and region stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Completeness {
    pub account_id: String,
    pub region: String,
    pub digests: u64,
    /// Log files the digests list.
    pub files_listed: u64,
    /// Of those, the ones the ledger has recorded.
    pub files_seen: u64,
    pub files_verified: u64,
    pub files_missing: u64,
    pub files_mismatched: u64,
    /// The newest digest whose signature verified (or was not checked) and whose chain held.
    pub last_verified_digest: Option<String>,
    pub last_verified_end: Option<EpochMillis>,
    /// No open chain or gap finding.
    pub chain_ok: bool,
    pub open_findings: u64,
}

/// Where verification state is kept.
#[async_trait]
pub trait IntegrityStore: Send + Sync {
    /// Records a checked digest and the files it lists (replacing an earlier check of it).
    async fn record_digest(&self, digest: DigestRecord, files: Vec<ListedFile>) -> Result<(), PortError>;

    /// Updates listed files checked again.
    async fn update_files(&self, files: Vec<ListedFile>) -> Result<(), PortError>;

    /// Listed files of an account and region that were missing or different when last checked.
    async fn problem_files(&self, account_id: &str, region: &str) -> Result<Vec<ListedFile>, PortError>;

    /// The digests of an account and region either side of `start`: the one
    /// starting last before it, and the one starting first after it. Gaps
    /// are found from neighbours only, so a check costs the same in the
    /// first hour of a trail and after years of it.
    async fn digest_neighbours(&self, account_id: &str, region: &str, start: EpochMillis) -> Result<Neighbours, PortError>;

    /// Settles findings of one account and region: of the `(kind, subject)`
    /// pairs in `checked`, those not in `found` are cleared; every finding in
    /// `found` is kept open. Returns the findings of `found` that were not
    /// open before.
    async fn reconcile(
        &self,
        account_id: &str,
        region: &str,
        checked: Vec<(FindingKind, String)>,
        found: Vec<Finding>,
        now: EpochMillis,
    ) -> Result<Vec<Finding>, PortError>;

    /// Open findings of an account and region (every one when both are None).
    async fn open_findings(&self, account_id: Option<&str>, region: Option<&str>) -> Result<Vec<Finding>, PortError>;

    /// Completeness of every account and region with a digest.
    async fn completeness(&self) -> Result<Vec<Completeness>, PortError>;
}

/// Where a digest's signature comes from (S3 metadata, or a sidecar file).
#[async_trait]
pub trait SignatureSource: Send + Sync {
    /// The hex signature of the digest at `digest_key`; None when it has none.
    async fn signature(&self, digest_key: &str) -> Result<Option<String>, PortError>;
}

/// The key of the sidecar holding a digest's signature in embedded mode:
/// `.<file name>.signature` in the digest's folder, mirroring the
/// `x-amz-meta-signature` metadata of the S3 object. Its name starts with
/// `.`, so listing never takes it for an object of the trail, as S3 listing
/// never shows metadata.
pub fn sidecar_key(digest_key: &str) -> String {
    match digest_key.rsplit_once('/') {
        Some((folder, name)) => format!("{folder}/.{name}.signature"),
        None => format!(".{digest_key}.signature"),
    }
}

/// Signatures from sidecar files ([`sidecar_key`]) read through a [`LogSource`].
pub struct SidecarSignatures {
    source: Arc<dyn LogSource>,
}

impl SidecarSignatures {
    pub fn new(source: Arc<dyn LogSource>) -> Self {
        SidecarSignatures { source }
    }
}

/// The longest sidecar read: a 4096-bit signature is 1024 hex digits.
const MAX_SIDECAR: u64 = 64 * 1024;

#[async_trait]
impl SignatureSource for SidecarSignatures {
    async fn signature(&self, digest_key: &str) -> Result<Option<String>, PortError> {
        let key = sidecar_key(digest_key);
        let body = match self.source.open(&key).await {
            Ok(body) => body,
            Err(PortError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let what = self.source.locate(&key);
        read_limited(body, MAX_SIDECAR).map(|bytes| Some(String::from_utf8_lossy(&bytes).trim().to_owned())).map_err(|e| PortError::backend(what, e, true))
    }
}

/// Reads at most `limit` bytes of a body.
fn read_limited(body: crate::ports::ObjectBody, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    body.take(limit).read_to_end(&mut out)?;
    Ok(out)
}
