//! Checking one digest, and settling what it changes (see the module's doc).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flate2::read::MultiGzDecoder;
use sha2::{Digest as _, Sha256};

use super::keys::{hex_encode, KeyFetcher, PublicKeys, SignatureCheck};
use super::{DigestFile, DigestRecord, DigestSpan, FileState, Finding, FindingKind, IntegrityStore, ListedFile, SignatureSource};
use crate::alerts::{AlertStatus, AlertStore, Detection, EventRef, Lifecycle};
use crate::ports::{LogSource, PortError};
use crate::retry::{retry, RetryCounters, RetryPolicy};
use crate::time::{format_utc, EpochMillis};

/// The built-in alert's rule id.
pub const RULE_ID: &str = "trail-integrity";
/// Who resolves an integrity alert when its findings clear.
pub const CHECKER_NAME: &str = "integrity check";
const TITLE: &str = "CloudTrail log tampering or loss";
const HOUR: EpochMillis = 3_600_000;
/// A digest starting later than this after the previous one ended leaves a gap.
const GAP_TOLERANCE: EpochMillis = 5 * 60_000;
/// The largest digest file read (uncompressed).
const MAX_DIGEST_BYTES: u64 = 64 * 1024 * 1024;

/// The alert side: the lifecycle that raises, and the store it keeps alerts in.
#[derive(Clone)]
pub struct IntegrityAlerts {
    pub lifecycle: Arc<Lifecycle>,
    pub store: Arc<dyn AlertStore>,
}

/// What the checker reads and writes.
#[derive(Clone)]
pub struct IntegrityPorts {
    pub source: Arc<dyn LogSource>,
    pub signatures: Arc<dyn SignatureSource>,
    pub keys: Arc<PublicKeys>,
    pub store: Arc<dyn IntegrityStore>,
    /// None: findings are kept, no alert is raised.
    pub alerts: Option<IntegrityAlerts>,
}

/// What checking one digest found and changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// The findings of the digest itself and its files.
    pub findings: Vec<Finding>,
    /// Findings opened by this check (the digest's, files found again, gaps).
    pub opened: Vec<Finding>,
    /// Log files hashed.
    pub files_checked: u64,
    /// Alerts resolved because their findings cleared.
    pub alerts_resolved: u64,
}

/// Checks digests as they land (see the module's doc). One per process:
/// settling findings and alerts is serialized, so a check that clears a
/// kind never resolves an alert another check is just raising.
pub struct IntegrityChecker {
    ports: IntegrityPorts,
    settle: tokio::sync::Mutex<()>,
    retry: RetryPolicy,
    retries: RetryCounters,
    /// Per account and region, the file times of digests being checked, or
    /// whose check failed in this process (and has not succeeded since): the
    /// hours they cover are not a gap, only not checked yet.
    unchecked: std::sync::Mutex<HashMap<(String, String), BTreeSet<EpochMillis>>>,
    /// Where keys not configured come from, the keys fetched so far, and
    /// when each region and fingerprint was last asked for.
    fetcher: Option<Arc<dyn KeyFetcher>>,
    /// Fetched keys by region: each region's digests are checked with that region's keys.
    fetched: std::sync::RwLock<HashMap<String, PublicKeys>>,
    asked: std::sync::Mutex<HashMap<(String, String), EpochMillis>>,
    key_fetches: AtomicU64,
    findings_opened: AtomicU64,
}

/// How far either side of a digest's hour keys are asked for.
const KEY_MARGIN: EpochMillis = 24 * HOUR;
/// How long a fingerprint no fetch found is not asked for again (a digest
/// naming a made-up key must not call the key API for every digest).
const KEY_REASK: EpochMillis = 10 * 60_000;

/// Fingerprints remembered as asked for, at most (beyond it, those asked
/// more than [`KEY_REASK`] ago are forgotten).
const MAX_ASKED: usize = 10_000;

/// Digests remembered as unchecked at most per account and region.
const MAX_UNCHECKED: usize = 10_000;

/// A fetched object: the hex SHA-256 of its uncompressed content, and the content if asked for.
struct Fetched {
    sha256: String,
    content: Option<Vec<u8>>,
}

impl IntegrityChecker {
    pub fn new(ports: IntegrityPorts) -> Self {
        // A digest check makes dozens of port calls (every listed file is
        // read), so one transient error must not fail it: each call is retried.
        let retry = RetryPolicy { timeout: Some(std::time::Duration::from_secs(120)), ..RetryPolicy::default() };
        IntegrityChecker {
            ports,
            settle: tokio::sync::Mutex::new(()),
            retry,
            retries: RetryCounters::default(),
            unchecked: Default::default(),
            fetcher: None,
            fetched: Default::default(),
            asked: Default::default(),
            key_fetches: AtomicU64::new(0),
            findings_opened: AtomicU64::new(0),
        }
    }

    /// Fetches the keys a digest names when they are not among the
    /// configured ones (AWS mode: CloudTrail's `ListPublicKeys`). With a
    /// fetcher, every signature is checked: none is reported not checked.
    pub fn with_key_fetcher(mut self, fetcher: Arc<dyn KeyFetcher>) -> Self {
        self.fetcher = Some(fetcher);
        self
    }

    /// Findings opened by the checks of this process.
    pub fn findings_opened(&self) -> u64 {
        self.findings_opened.load(Ordering::Relaxed)
    }

    /// How many times keys were fetched.
    pub fn key_fetches(&self) -> u64 {
        self.key_fetches.load(Ordering::Relaxed)
    }

    /// Checks a signature against the configured keys, or the fetched ones,
    /// fetching the keys of the digest's region and time when its
    /// fingerprint is new.
    async fn check_signature(
        &self,
        region: &str,
        fingerprint: Option<&str>,
        signing_string: &str,
        signature: Option<&str>,
        (start, end, now): (EpochMillis, EpochMillis, EpochMillis),
    ) -> Result<SignatureCheck, PortError> {
        let Some(fetcher) = &self.fetcher else {
            return Ok(self.ports.keys.check(fingerprint, signing_string, signature));
        };
        if let Some(f) = fingerprint.filter(|f| self.ports.keys.contains(f)) {
            return Ok(self.ports.keys.check_required(Some(f), signing_string, signature));
        }
        if let Some(f) = fingerprint {
            let known = self.fetched.read().unwrap_or_else(|p| p.into_inner()).get(region).is_some_and(|keys| keys.contains(f));
            let place = (region.to_owned(), f.to_ascii_lowercase());
            let asked_lately = self.asked.lock().unwrap_or_else(|p| p.into_inner()).get(&place).is_some_and(|at| now.saturating_sub(*at) < KEY_REASK);
            if !known && signature.is_some() && !asked_lately {
                let keys = self.read("integrity: fetching public keys", || fetcher.fetch(region, start - KEY_MARGIN, end + KEY_MARGIN)).await?;
                self.key_fetches.fetch_add(1, Ordering::Relaxed);
                self.fetched.write().unwrap_or_else(|p| p.into_inner()).entry(region.to_owned()).or_default().extend(keys);
                let mut asked = self.asked.lock().unwrap_or_else(|p| p.into_inner());
                if asked.len() >= MAX_ASKED {
                    // Digests naming ever new fingerprints: forget the ones asked long enough ago.
                    asked.retain(|_, at| now.saturating_sub(*at) < KEY_REASK);
                }
                asked.insert(place, now);
            }
        }
        let fetched = self.fetched.read().unwrap_or_else(|p| p.into_inner());
        Ok(fetched.get(region).unwrap_or(&PublicKeys::none()).check_required(fingerprint, signing_string, signature))
    }

    /// Retries each port call with `policy`. Its time limit applies to reads
    /// (objects, signatures, the store's reads) only: writes are not
    /// abandoned half-way (a reconcile whose answer was lost would not
    /// report the findings it opened).
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Tells the checker a digest of `account_id` and `region` with this
    /// file time exists and will be checked (a scan found it new, or failed
    /// before): until its check succeeds, the hours it covers are no gap.
    pub fn expect(&self, account_id: &str, region: &str, file_time: EpochMillis) {
        let mut unchecked = self.unchecked.lock().unwrap_or_else(|p| p.into_inner());
        let times = unchecked.entry((account_id.to_owned(), region.to_owned())).or_default();
        if times.len() < MAX_UNCHECKED {
            times.insert(file_time);
        }
    }

    /// Port calls retried and given up on, for metrics.
    pub fn retries(&self) -> &RetryCounters {
        &self.retries
    }

    async fn read<T, F, Fut>(&self, what: &str, op: F) -> Result<T, PortError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, PortError>>,
    {
        retry(&self.retry, &self.retries, what, op).await
    }

    async fn write<T, F, Fut>(&self, what: &str, op: F) -> Result<T, PortError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, PortError>>,
    {
        retry(&RetryPolicy { timeout: None, ..self.retry }, &self.retries, what, op).await
    }

    pub fn ports(&self) -> &IntegrityPorts {
        &self.ports
    }

    /// Reads an object and hashes its uncompressed content; None when it does not exist.
    async fn fetch(&self, key: &str, keep: bool) -> Result<Option<Fetched>, PortError> {
        let body = match self.read("integrity: opening an object", || self.ports.source.open(key)).await {
            Ok(body) => body,
            Err(PortError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let what = self.ports.source.locate(key);
        let hashed = tokio::task::spawn_blocking(move || hash_body(body, keep)).await;
        match hashed {
            Ok(Ok(fetched)) => Ok(Some(fetched)),
            Ok(Err(e)) => Err(PortError::backend(what, format!("reading: {e}"), true)),
            Err(e) => Err(PortError::backend(what, format!("hashing stopped: {e}"), false)),
        }
    }

    /// How the log file at `key` compares with the hash a digest recorded
    /// (and its own hash when it differs).
    async fn compare(&self, key: &str, expected: &str) -> Result<(FileState, Option<String>), PortError> {
        Ok(match self.fetch(key, false).await? {
            None => (FileState::Missing, None),
            Some(f) if f.sha256.eq_ignore_ascii_case(expected) => (FileState::Verified, None),
            Some(f) => (FileState::Mismatched, Some(f.sha256)),
        })
    }

    /// Checks the digest at `key` (of `account_id` and `region`, its file
    /// time `file_time`), records what it found, and settles findings and
    /// alerts. A digest that is gone by now is left alone.
    pub async fn check_digest(&self, key: &str, account_id: &str, region: &str, file_time: EpochMillis, now: EpochMillis) -> Result<CheckReport, PortError> {
        let place = (account_id.to_owned(), region.to_owned());
        // Unchecked from now until its check succeeds: a check of a later
        // digest running meanwhile does not take these hours for a gap.
        self.expect(account_id, region, file_time);
        let checked = self.check_one(key, account_id, region, file_time, now).await;
        if checked.is_ok() {
            let mut unchecked = self.unchecked.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(times) = unchecked.get_mut(&place) {
                times.remove(&file_time);
            }
        }
        checked
    }

    async fn check_one(&self, key: &str, account_id: &str, region: &str, file_time: EpochMillis, now: EpochMillis) -> Result<CheckReport, PortError> {
        let Some(fetched) = self.fetch(key, true).await? else {
            return Ok(CheckReport::default());
        };
        let content = fetched.content.unwrap_or_default();
        let mut report = CheckReport::default();
        let mut checked: Vec<(FindingKind, String)> = FindingKind::OF_DIGEST.iter().map(|k| (*k, key.to_owned())).collect();
        let finding = |kind, location: &str, detail: String, at| Finding {
            kind,
            account_id: account_id.to_owned(),
            region: region.to_owned(),
            subject: key.to_owned(),
            digest: location.to_owned(),
            detail,
            at,
        };
        let parsed = DigestFile::parse(&content).and_then(|d| Ok((d.start()?, d.end()?, d)));
        let (start, end, digest) = match parsed {
            Ok(parsed) => parsed,
            Err(e) => {
                let location = self.ports.source.locate(key);
                report.findings.push(finding(FindingKind::DigestUnreadable, &location, e.to_string(), file_time));
                let record = DigestRecord {
                    key: key.to_owned(),
                    location: location.clone(),
                    account_id: account_id.to_owned(),
                    region: region.to_owned(),
                    start: file_time - HOUR,
                    end: file_time,
                    fingerprint: None,
                    signature: FindingKind::DigestUnreadable.as_str().to_owned(),
                    chain_ok: false,
                    previous: None,
                    files: 0,
                    checked_at: now,
                };
                self.write("integrity: recording a digest", || self.ports.store.record_digest(record.clone(), vec![])).await?;
                return self.settle(account_id, region, checked, report, &DigestSpan::of(&record), (file_time, now)).await;
            }
        };
        let location = digest.location();
        let wrong_place = digest.digest_s3_object != key || digest.aws_account_id != account_id;

        // The signature.
        let check = match self.read("integrity: reading a signature", || self.ports.signatures.signature(key)).await {
            Ok(signature) => {
                self.check_signature(region, digest.fingerprint(), &digest.signing_string(&fetched.sha256), signature.as_deref(), (start, end, now)).await?
            }
            // A signature that is there but cannot be checked (made with
            // another algorithm): a finding, not a check failing for ever.
            Err(PortError::Invalid { message, .. }) => SignatureCheck::Invalid(message),
            Err(e) => return Err(e),
        };
        let signature_state = match &check {
            SignatureCheck::Valid => "valid".to_owned(),
            SignatureCheck::NotChecked => "not-checked".to_owned(),
            SignatureCheck::Missing => {
                report.findings.push(finding(FindingKind::SignatureMissing, &location, "the digest carries no signature".into(), end));
                FindingKind::SignatureMissing.as_str().to_owned()
            }
            SignatureCheck::UnknownKey(fingerprint) => {
                let detail = match fingerprint {
                    Some(f) => format!("signed with key {f}, which is not among the public keys"),
                    None => "the digest names no public key".to_owned(),
                };
                report.findings.push(finding(FindingKind::UnknownKey, &location, detail, end));
                FindingKind::UnknownKey.as_str().to_owned()
            }
            SignatureCheck::Invalid(why) => {
                report.findings.push(finding(FindingKind::SignatureInvalid, &location, why.clone(), end));
                FindingKind::SignatureInvalid.as_str().to_owned()
            }
        };
        if wrong_place {
            let detail = format!(
                "the digest says it is s3://{}/{} of account {}, but it was found at {key}",
                digest.digest_s3_bucket, digest.digest_s3_object, digest.aws_account_id
            );
            report.findings.push(finding(FindingKind::SignatureInvalid, &location, detail, end));
        }

        // The link to the previous digest.
        let mut chain_ok = true;
        if let Some(previous) = digest.previous_digest_s3_object.as_deref().filter(|p| !p.is_empty()) {
            let bucket = digest.previous_digest_s3_bucket.as_deref().unwrap_or(&digest.digest_s3_bucket);
            let expected = digest.previous_digest_hash_value.as_deref().unwrap_or_default();
            let problem = match self.fetch(previous, false).await? {
                None => Some(format!("the previous digest s3://{bucket}/{previous} is missing")),
                Some(p) if !p.sha256.eq_ignore_ascii_case(expected) => {
                    Some(format!("the previous digest s3://{bucket}/{previous} has SHA-256 {}, this digest recorded {expected}", p.sha256))
                }
                Some(_) => None,
            };
            if let Some(detail) = problem {
                chain_ok = false;
                report.findings.push(finding(FindingKind::ChainBroken, &location, detail, end));
            }
        }

        // The log files it lists.
        let mut files = Vec::with_capacity(digest.log_files.len());
        for listed in &digest.log_files {
            let (state, actual) = self.compare(&listed.s3_object, &listed.hash_value).await?;
            report.files_checked += 1;
            checked.extend(FindingKind::OF_FILE.iter().map(|k| (*k, listed.s3_object.clone())));
            let file = ListedFile {
                key: listed.s3_object.clone(),
                digest_key: key.to_owned(),
                account_id: account_id.to_owned(),
                region: region.to_owned(),
                expected_sha256: listed.hash_value.to_ascii_lowercase(),
                state,
                actual_sha256: actual,
            };
            if let Some(f) = file_finding(&file, &location, end) {
                report.findings.push(f);
            }
            files.push(file);
        }
        let record = DigestRecord {
            key: key.to_owned(),
            location: location.clone(),
            account_id: account_id.to_owned(),
            region: region.to_owned(),
            start,
            end,
            fingerprint: digest.fingerprint().map(str::to_owned),
            signature: signature_state,
            chain_ok,
            previous: digest.previous_digest_s3_object.clone().filter(|p| !p.is_empty()),
            files: files.len() as u64,
            checked_at: now,
        };
        self.write("integrity: recording a digest", || self.ports.store.record_digest(record.clone(), files.clone())).await?;
        self.settle(account_id, region, checked, report, &DigestSpan::of(&record), (file_time, now)).await
    }

    /// Settles the digest's findings, looks again at the account and
    /// region's problem files and at the gaps either side of the digest
    /// (`own`), and raises or resolves alerts.
    async fn settle(
        &self,
        account_id: &str,
        region: &str,
        checked: Vec<(FindingKind, String)>,
        mut report: CheckReport,
        own: &DigestSpan,
        (own_time, now): (EpochMillis, EpochMillis),
    ) -> Result<CheckReport, PortError> {
        let _serial = self.settle.lock().await;
        let store = &self.ports.store;
        report.opened =
            self.write("integrity: reconciling findings", || store.reconcile(account_id, region, checked.clone(), report.findings.clone(), now)).await?;

        // Files missing or different before: here now, or back to what was hashed?
        let problems = self.read("integrity: reading problem files", || store.problem_files(account_id, region)).await?;
        let mine: HashSet<&str> = report.findings.iter().map(|f| f.subject.as_str()).collect();
        let mut again = Vec::new();
        let mut found = Vec::new();
        let mut rechecked = Vec::new();
        for mut file in problems.into_iter().filter(|f| !mine.contains(f.key.as_str())) {
            let (state, actual) = self.compare(&file.key, &file.expected_sha256).await?;
            report.files_checked += 1;
            rechecked.extend(FindingKind::OF_FILE.iter().map(|k| (*k, file.key.clone())));
            file.state = state;
            file.actual_sha256 = actual;
            if let Some(f) = file_finding(&file, &file.digest_key, now) {
                found.push(f);
            }
            again.push(file);
        }
        if !again.is_empty() {
            // Keep the digest location and time the finding was first raised with.
            let open = self.read("integrity: reading open findings", || store.open_findings(Some(account_id), Some(region))).await?;
            for f in &mut found {
                if let Some(before) = open.iter().find(|o| o.subject == f.subject) {
                    f.digest.clone_from(&before.digest);
                    f.at = before.at;
                }
            }
            self.write("integrity: updating files", || store.update_files(again.clone())).await?;
            report
                .opened
                .extend(self.write("integrity: reconciling findings", || store.reconcile(account_id, region, rechecked.clone(), found.clone(), now)).await?);
        }

        // Hours without a digest either side of this one. A gap is named by
        // the end of the digest before it, so a digest landing inside a gap
        // settles that finding (still open, shorter, or cleared).
        let neighbours = self.read("integrity: reading neighbouring digests", || store.digest_neighbours(account_id, region, own.start)).await?;
        let unchecked: Vec<EpochMillis> = self
            .unchecked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(account_id.to_owned(), region.to_owned()))
            .map(|t| t.iter().copied().filter(|t| *t != own_time).collect())
            .unwrap_or_default();
        let gap_subject = |end: EpochMillis| format!("{account_id}/{region}/{}", format_utc(end));
        let mut gap_checked = vec![(FindingKind::DigestGap, gap_subject(own.end))];
        let mut gaps = Vec::new();
        let pairs = [neighbours.before.as_ref().map(|before| (before, own)), neighbours.after.as_ref().map(|after| (own, after))];
        if let Some(before) = &neighbours.before {
            gap_checked.push((FindingKind::DigestGap, gap_subject(before.end)));
        }
        for (prev, next) in pairs.into_iter().flatten() {
            // A digest of these hours exists but its check failed: not a gap (yet).
            let pending_check = unchecked.iter().any(|t| prev.end < *t && *t <= next.start + HOUR);
            // The later digest names, as its previous, a digest that is in the
            // bucket and is not the earlier one: that digest lies between
            // them and has not been checked yet (digests are checked in any
            // order). Its own check settles the hours either side of it.
            let between = next.chain_ok && next.previous.as_deref().is_some_and(|p| p != prev.key);
            if next.start > prev.end + GAP_TOLERANCE && !pending_check && !between {
                let hours = (next.start - prev.end + HOUR / 2) / HOUR;
                gaps.push(Finding {
                    kind: FindingKind::DigestGap,
                    account_id: account_id.to_owned(),
                    region: region.to_owned(),
                    subject: gap_subject(prev.end),
                    digest: next.location.clone(),
                    detail: format!("no digest from {} to {} (about {hours} h)", format_utc(prev.end), format_utc(next.start)),
                    at: next.start,
                });
            }
        }
        report
            .opened
            .extend(self.write("integrity: reconciling findings", || store.reconcile(account_id, region, gap_checked.clone(), gaps.clone(), now)).await?);

        self.findings_opened.fetch_add(report.opened.len() as u64, Ordering::Relaxed);
        if let Some(alerts) = &self.ports.alerts {
            report.alerts_resolved = self.raise(alerts, account_id, region, &report.opened, now).await?;
        }
        Ok(report)
    }

    /// Raises the opened findings; resolves the alerts of kinds with no open finding left.
    async fn raise(&self, alerts: &IntegrityAlerts, account_id: &str, region: &str, opened: &[Finding], now: EpochMillis) -> Result<u64, PortError> {
        let detections: Vec<Detection> = opened.iter().map(|f| detection(f, now)).collect();
        self.write("integrity: raising alerts", || alerts.lifecycle.apply(&detections, now)).await?;
        let still_open: BTreeSet<FindingKind> = self
            .read("integrity: reading open findings", || self.ports.store.open_findings(Some(account_id), Some(region)))
            .await?
            .into_iter()
            .map(|f| f.kind)
            .collect();
        let cleared: Vec<String> = FindingKind::ALL.iter().filter(|k| !still_open.contains(k)).map(|k| dedup_key(account_id, region, *k)).collect();
        let mut resolved = 0;
        for alert in
            self.read("integrity: reading alerts", || alerts.store.current(&cleared)).await?.into_values().filter(|a| a.status != AlertStatus::Resolved)
        {
            let note = format!("every finding of this kind in {account_id} {region} cleared at the last check");
            match self.write("integrity: resolving an alert", || alerts.lifecycle.resolve(&alert.id, CHECKER_NAME, Some(&note), now)).await {
                Ok(_) => resolved += 1,
                // Resolved meanwhile (by a person): nothing left to do.
                Err(PortError::Invalid { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(resolved)
    }
}

/// The finding of a listed file that did not verify.
fn file_finding(file: &ListedFile, digest_location: &str, at: EpochMillis) -> Option<Finding> {
    let (kind, detail) = match file.state {
        FileState::Verified => return None,
        FileState::Missing => (FindingKind::LogFileMissing, format!("log file {} is listed but not in the bucket", file.key)),
        FileState::Mismatched => (
            FindingKind::LogFileMismatch,
            format!("log file {} has SHA-256 {}, the digest recorded {}", file.key, file.actual_sha256.as_deref().unwrap_or("?"), file.expected_sha256),
        ),
    };
    Some(Finding {
        kind,
        account_id: file.account_id.clone(),
        region: file.region.clone(),
        subject: file.key.clone(),
        digest: digest_location.to_owned(),
        detail,
        at,
    })
}

/// The dedup key of the integrity alert of one account, region and kind.
pub fn dedup_key(account_id: &str, region: &str, kind: FindingKind) -> String {
    format!("{RULE_ID}:{account_id}:{region}:{}", kind.as_str())
}

fn detection(f: &Finding, now: EpochMillis) -> Detection {
    Detection {
        rule_id: RULE_ID.into(),
        title: TITLE.into(),
        severity: f.kind.severity(),
        dedup_key: dedup_key(&f.account_id, &f.region, f.kind),
        group: vec![("account".into(), f.account_id.clone()), ("region".into(), f.region.clone()), ("finding".into(), f.kind.as_str().into())],
        // Not a CloudTrail event: the finding, named so it opens one alert
        // each time it is found anew.
        event: EventRef { account_id: f.account_id.clone(), event_id: format!("{}:{}@{now}", f.kind.as_str(), f.subject), event_time: f.at },
        account_alias: None,
        summary: f.describe(),
        origin: None,
        resolve_after_ms: None,
        notify_every_ms: 0,
    }
}

/// Hashes a body's uncompressed content (gzip or plain), keeping it if asked.
fn hash_body(body: crate::ports::ObjectBody, keep: bool) -> std::io::Result<Fetched> {
    let mut reader = BufReader::new(body);
    let gzip = reader.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    let mut inner: Box<dyn Read> = if gzip { Box::new(MultiGzDecoder::new(reader)) } else { Box::new(reader) };
    let mut hasher = Sha256::new();
    let mut content = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = inner.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
        if keep {
            if total > MAX_DIGEST_BYTES {
                return Err(std::io::Error::other(format!("a digest larger than {MAX_DIGEST_BYTES} bytes")));
            }
            content.extend_from_slice(&buf[..n]);
        }
    }
    Ok(Fetched { sha256: hex_encode(&hasher.finalize()), content: keep.then_some(content) })
}
