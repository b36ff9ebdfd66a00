//! Digest verification over a trail directory and the SQLite store: a small
//! trail of signed hourly digests is written by the test (signed with its
//! own key), then damaged the ways an attacker or a lost delivery would, and
//! each damage must show as its finding, its `trail-integrity` alert and in
//! the completeness `health` reports.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use flate2::write::GzEncoder;
use flate2::Compression;
use rand_chacha::rand_core::SeedableRng;
use rsa::{Pkcs1v15Sign, RsaPrivateKey};
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;
use trailwatch_core::alerts::{Alert, AlertQuery, AlertStatus, AlertStore, Lifecycle, LifecycleConfig, Severity};
use trailwatch_core::integrity::digest::signing_string;
use trailwatch_core::integrity::keys::{fingerprint_of, hex_encode, list_json};
use trailwatch_core::integrity::{
    dedup_key, sidecar_key, Completeness, FindingKind, IntegrityAlerts, IntegrityChecker, IntegrityPorts, IntegrityStore, KeyFetcher, PublicKeys,
    SidecarSignatures,
};
use trailwatch_core::ports::Checkpoints;
use trailwatch_core::time::format_utc;
use trailwatch_embedded::{DirSource, SqliteStore};

const ACCOUNT: &str = "111122223333";
const REGION: &str = "eu-west-1";
const BUCKET: &str = "org-trail-bucket";
const HOUR: i64 = 3_600_000;
/// 2024-01-15T10:00:00Z
const START: i64 = 1_705_312_800_000;
const NOW: i64 = 1_705_400_000_000;

fn key(seed: u64) -> &'static RsaPrivateKey {
    static KEYS: OnceLock<Vec<RsaPrivateKey>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| (0..2).map(|s| RsaPrivateKey::new(&mut rand_chacha::ChaCha20Rng::seed_from_u64(s), 2048).unwrap()).collect());
    &keys[seed as usize]
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn sha(data: &[u8]) -> String {
    hex_encode(&Sha256::digest(data))
}

fn write(root: &Path, key: &str, data: &[u8]) {
    let path = root.join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

fn compact(ms: i64, seconds: bool) -> String {
    let t = format_utc(ms).replace(['-', ':'], "");
    let t = t.trim_end_matches('Z').split('.').next().unwrap().to_owned();
    if seconds {
        format!("{t}Z")
    } else {
        format!("{}Z", &t[..t.len() - 2])
    }
}

fn day_folder(ms: i64) -> String {
    format_utc(ms)[..10].replace('-', "/")
}

/// A written trail: digest keys in order, and the log files each lists.
struct Trail {
    dir: TempDir,
    digests: Vec<String>,
    logs: Vec<Vec<String>>,
}

/// Writes `hours` hourly digests, each listing two log files, chained and
/// signed with key 0 (`unknown_key_at`: that digest is signed with key 1,
/// which is not configured).
fn trail(hours: usize, unknown_key_at: Option<usize>) -> Trail {
    let dir = TempDir::new().unwrap();
    let mut digests = Vec::new();
    let mut logs = Vec::new();
    let mut previous: Option<(String, String, String)> = None;
    for h in 0..hours {
        let from = START + h as i64 * HOUR;
        let to = from + HOUR;
        let mut listed = Vec::new();
        let mut entries = Vec::new();
        for f in 0..2 {
            let t = from + (10 + 20 * f) * 60_000;
            let key = format!(
                "AWSLogs/o-a1b2c3d4e5/{ACCOUNT}/CloudTrail/{REGION}/{}/{ACCOUNT}_CloudTrail_{REGION}_{}_Abcdef012345678{f}.json.gz",
                day_folder(t),
                compact(t, false)
            );
            let content = format!(
                r#"{{"Records":[{{"eventVersion":"1.08","eventID":"e-{h}-{f}","eventTime":"{}","eventSource":"s3.amazonaws.com","eventName":"ListBuckets","awsRegion":"{REGION}","recipientAccountId":"{ACCOUNT}"}}]}}"#,
                format_utc(t)
            );
            write(dir.path(), &key, &gz(content.as_bytes()));
            entries.push(format!(r#"{{"s3Bucket":"{BUCKET}","s3Object":"{key}","hashValue":"{}","hashAlgorithm":"SHA-256"}}"#, sha(content.as_bytes())));
            listed.push(key);
        }
        let digest_key = format!(
            "AWSLogs/o-a1b2c3d4e5/{ACCOUNT}/CloudTrail-Digest/{REGION}/{}/{ACCOUNT}_CloudTrail-Digest_{REGION}_org-trail_us-east-1_{}.json.gz",
            day_folder(to),
            compact(to, true)
        );
        let signer = key(if unknown_key_at == Some(h) { 1 } else { 0 });
        let fingerprint = fingerprint_of(&signer.to_public_key()).unwrap();
        let quoted = |v: Option<&str>| v.map_or("null".to_owned(), |v| format!("\"{v}\""));
        let prev = previous.as_ref();
        let body = format!(
            r#"{{"awsAccountId":"{ACCOUNT}","digestStartTime":"{}","digestEndTime":"{}","digestS3Bucket":"{BUCKET}","digestS3Object":"{digest_key}","digestPublicKeyFingerprint":"{fingerprint}","digestSignatureAlgorithm":"SHA256withRSA","previousDigestS3Bucket":{},"previousDigestS3Object":{},"previousDigestHashValue":{},"previousDigestHashAlgorithm":{},"previousDigestSignature":{},"logFiles":[{}]}}"#,
            format_utc(from).replace(".000", ""),
            format_utc(to).replace(".000", ""),
            quoted(prev.map(|_| BUCKET)),
            quoted(prev.map(|p| p.0.as_str())),
            quoted(prev.map(|p| p.1.as_str())),
            quoted(prev.map(|_| "SHA-256")),
            quoted(prev.map(|p| p.2.as_str())),
            entries.join(",")
        );
        let end_text = format_utc(to).replace(".000", "");
        let hash = sha(body.as_bytes());
        let message = signing_string(&end_text, BUCKET, &digest_key, &hash, prev.map(|p| p.2.as_str()));
        let signature = hex_encode(&signer.sign(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(message.as_bytes())).unwrap());
        write(dir.path(), &digest_key, &gz(body.as_bytes()));
        write(dir.path(), &sidecar_key(&digest_key), signature.as_bytes());
        previous = Some((digest_key.clone(), hash, signature));
        digests.push(digest_key);
        logs.push(listed);
    }
    Trail { dir, digests, logs }
}

struct Setup {
    store: Arc<SqliteStore>,
    checker: IntegrityChecker,
    _db: TempDir,
}

/// The checker over `trail`, with key 0 configured (through the keys file format).
fn setup(trail: &Trail) -> Setup {
    let db = TempDir::new().unwrap();
    let store = Arc::new(SqliteStore::open(db.path().join("t.db")).unwrap());
    let keys_json = list_json(&[(fingerprint_of(&key(0).to_public_key()).unwrap(), key(0).to_public_key())]).unwrap();
    let keys = PublicKeys::from_list_json(&keys_json, "test keys").unwrap();
    let source = Arc::new(DirSource::new(trail.dir.path()));
    let alert_store: Arc<dyn AlertStore> = store.clone();
    let lifecycle = Arc::new(Lifecycle::new(alert_store.clone(), vec!["test".into()], LifecycleConfig::default()));
    let checker = IntegrityChecker::new(IntegrityPorts {
        source: source.clone(),
        signatures: Arc::new(SidecarSignatures::new(source)),
        keys: Arc::new(keys),
        store: store.clone(),
        alerts: Some(IntegrityAlerts { lifecycle, store: alert_store }),
    });
    Setup { store, checker, _db: db }
}

async fn check(s: &Setup, trail: &Trail, index: usize) {
    let end = START + (index as i64 + 1) * HOUR;
    s.checker.check_digest(&trail.digests[index], ACCOUNT, REGION, end, NOW + index as i64).await.unwrap();
}

async fn check_all(s: &Setup, trail: &Trail) {
    for i in 0..trail.digests.len() {
        if trail.dir.path().join(&trail.digests[i]).exists() {
            check(s, trail, i).await;
        }
    }
}

async fn open_kinds(s: &Setup) -> Vec<FindingKind> {
    let mut kinds: Vec<FindingKind> = s.store.open_findings(None, None).await.unwrap().into_iter().map(|f| f.kind).collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

async fn alert(s: &Setup, kind: FindingKind) -> Option<Alert> {
    s.store.current(&[dedup_key(ACCOUNT, REGION, kind)]).await.unwrap().into_values().next()
}

async fn completeness(s: &Setup) -> Completeness {
    let all = Checkpoints::completeness(s.store.as_ref()).await.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    all.into_iter().next().unwrap()
}

async fn integrity_alerts(s: &Setup) -> Vec<Alert> {
    let query = AlertQuery { rule_id: Some("trail-integrity".into()), limit: 100, ..AlertQuery::default() };
    s.store.list(&query).await.unwrap().alerts
}

#[tokio::test]
async fn a_clean_signed_day_verifies_with_no_finding() {
    let t = trail(4, None);
    let s = setup(&t);
    check_all(&s, &t).await;
    assert_eq!(open_kinds(&s).await, vec![]);
    assert!(integrity_alerts(&s).await.is_empty());
    let c = completeness(&s).await;
    assert_eq!((c.digests, c.files_listed, c.files_verified, c.files_missing, c.files_mismatched), (4, 8, 8, 0, 0));
    assert!(c.chain_ok);
    assert_eq!(c.open_findings, 0);
    assert_eq!(c.last_verified_digest, Some(format!("s3://{BUCKET}/{}", t.digests[3])));
    assert_eq!(c.files_seen, 0, "the ledger has read none of them in this test");
}

#[tokio::test]
async fn a_deleted_log_file_is_missing_and_resolves_when_it_returns() {
    let t = trail(3, None);
    let gone = t.logs[1][0].clone();
    let saved = std::fs::read(t.dir.path().join(&gone)).unwrap();
    std::fs::remove_file(t.dir.path().join(&gone)).unwrap();
    let s = setup(&t);
    check_all(&s, &t).await;
    assert_eq!(open_kinds(&s).await, vec![FindingKind::LogFileMissing]);
    let findings = s.store.open_findings(Some(ACCOUNT), Some(REGION)).await.unwrap();
    assert_eq!(findings[0].subject, gone);
    assert_eq!(findings[0].digest, format!("s3://{BUCKET}/{}", t.digests[1]));
    let raised = alert(&s, FindingKind::LogFileMissing).await.expect("an open alert");
    assert_eq!((raised.severity, raised.status, raised.rule_id.as_str()), (Severity::High, AlertStatus::Open, "trail-integrity"));
    assert!(raised.summary.contains(&gone), "{}", raised.summary);
    let c = completeness(&s).await;
    assert_eq!((c.files_listed, c.files_verified, c.files_missing), (6, 5, 1));
    assert_eq!(c.open_findings, 1);

    // The late file arrives; the next digest's check looks again and clears it.
    std::fs::write(t.dir.path().join(&gone), saved).unwrap();
    check(&s, &t, 2).await;
    assert_eq!(open_kinds(&s).await, vec![]);
    assert!(alert(&s, FindingKind::LogFileMissing).await.is_none(), "no unresolved alert left");
    let resolved = s.store.get(&raised.id).await.unwrap().unwrap();
    assert_eq!(resolved.status, AlertStatus::Resolved);
    assert_eq!(completeness(&s).await.files_missing, 0);
}

#[tokio::test]
async fn a_modified_log_file_does_not_match_its_hash() {
    let t = trail(3, None);
    let changed = t.logs[0][1].clone();
    write(t.dir.path(), &changed, &gz(br#"{"Records":[]}"#));
    let s = setup(&t);
    check_all(&s, &t).await;
    assert_eq!(open_kinds(&s).await, vec![FindingKind::LogFileMismatch]);
    let raised = alert(&s, FindingKind::LogFileMismatch).await.expect("an open alert");
    assert_eq!(raised.severity, Severity::Critical);
    assert!(raised.summary.contains(&changed), "{}", raised.summary);
    let c = completeness(&s).await;
    assert_eq!((c.files_verified, c.files_mismatched), (5, 1));
}

#[tokio::test]
async fn a_modified_digest_fails_its_signature() {
    let t = trail(3, None);
    // Change one character of the middle digest (where the trail's hour starts).
    let path = t.dir.path().join(&t.digests[1]);
    let mut body = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap()), &mut body).unwrap();
    std::fs::write(&path, gz(body.replacen("\"digestSignatureAlgorithm\"", " \"digestSignatureAlgorithm\"", 1).as_bytes())).unwrap();
    let s = setup(&t);
    check_all(&s, &t).await;
    let kinds = open_kinds(&s).await;
    assert!(kinds.contains(&FindingKind::SignatureInvalid), "{kinds:?}");
    // The next digest hashed the original: its link breaks too.
    assert!(kinds.contains(&FindingKind::ChainBroken), "{kinds:?}");
    let raised = alert(&s, FindingKind::SignatureInvalid).await.expect("an open alert");
    assert_eq!(raised.severity, Severity::Critical);
    assert!(raised.summary.contains(&t.digests[1]), "{}", raised.summary);
    let c = completeness(&s).await;
    assert!(!c.chain_ok);
    assert_eq!(c.last_verified_digest, Some(format!("s3://{BUCKET}/{}", t.digests[0])));
}

#[tokio::test]
async fn a_removed_digest_breaks_the_chain_and_leaves_a_gap() {
    let t = trail(4, None);
    std::fs::remove_file(t.dir.path().join(&t.digests[1])).unwrap();
    let s = setup(&t);
    check_all(&s, &t).await;
    assert_eq!(open_kinds(&s).await, vec![FindingKind::ChainBroken, FindingKind::DigestGap]);
    let findings = s.store.open_findings(Some(ACCOUNT), Some(REGION)).await.unwrap();
    let chain = findings.iter().find(|f| f.kind == FindingKind::ChainBroken).unwrap();
    assert!(chain.detail.contains(&t.digests[1]) && chain.detail.contains("missing"), "{}", chain.detail);
    let gap = findings.iter().find(|f| f.kind == FindingKind::DigestGap).unwrap();
    assert!(gap.detail.contains("about 1 h"), "{}", gap.detail);
    assert!(alert(&s, FindingKind::ChainBroken).await.is_some());
    assert_eq!(alert(&s, FindingKind::DigestGap).await.map(|a| a.severity), Some(Severity::High));
    let c = completeness(&s).await;
    assert_eq!(c.digests, 3);
    assert!(!c.chain_ok);
}

#[tokio::test]
async fn a_digest_signed_with_an_unknown_key_is_reported() {
    let t = trail(3, Some(2));
    let s = setup(&t);
    check_all(&s, &t).await;
    assert_eq!(open_kinds(&s).await, vec![FindingKind::UnknownKey]);
    let raised = alert(&s, FindingKind::UnknownKey).await.expect("an open alert");
    assert!(raised.summary.contains(&fingerprint_of(&key(1).to_public_key()).unwrap()), "{}", raised.summary);
    assert_eq!(completeness(&s).await.last_verified_digest, Some(format!("s3://{BUCKET}/{}", t.digests[1])));
}

#[tokio::test]
async fn a_digest_without_its_signature_is_reported_and_each_alert_is_one_per_kind() {
    let t = trail(3, None);
    for d in &t.digests {
        std::fs::remove_file(t.dir.path().join(sidecar_key(d))).unwrap();
    }
    let s = setup(&t);
    check_all(&s, &t).await;
    assert_eq!(open_kinds(&s).await, vec![FindingKind::SignatureMissing]);
    assert_eq!(s.store.open_findings(None, None).await.unwrap().len(), 3);
    let alerts = integrity_alerts(&s).await;
    assert_eq!(alerts.len(), 1, "one alert per account, region and kind: {alerts:?}");
    assert_eq!(alerts[0].count, 3);
}

#[tokio::test]
async fn a_digest_delivered_late_into_a_gap_clears_it_whatever_order_the_checks_run_in() {
    let t = trail(6, None);
    let hidden = t.dir.path().join(&t.digests[2]);
    let kept = std::fs::read(&hidden).unwrap();
    std::fs::remove_file(&hidden).unwrap();
    let s = setup(&t);
    // Newest first: each check sees only its neighbours, yet the hole is found.
    for i in (0..6).rev().filter(|i| *i != 2) {
        check(&s, &t, i).await;
    }
    let gaps: Vec<_> = s.store.open_findings(None, None).await.unwrap().into_iter().filter(|f| f.kind == FindingKind::DigestGap).collect();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert!(gaps[0].detail.contains(&format_utc(START + 2 * HOUR)) && gaps[0].detail.contains("about 1 h"), "{}", gaps[0].detail);
    let raised = alert(&s, FindingKind::DigestGap).await.expect("an open gap alert");

    // The missing digest arrives after all: the gap clears and its alert resolves.
    std::fs::write(&hidden, kept).unwrap();
    check(&s, &t, 2).await;
    let c = completeness(&s).await;
    assert_eq!(c.digests, 6);
    assert!(!open_kinds(&s).await.contains(&FindingKind::DigestGap), "{:?}", open_kinds(&s).await);
    assert!(alert(&s, FindingKind::DigestGap).await.is_none(), "no unresolved gap alert left");
    assert_eq!(s.store.get(&raised.id).await.unwrap().unwrap().status, AlertStatus::Resolved);
}

/// Keys from a key service, as CloudTrail's `ListPublicKeys` gives them: per
/// region, counting the calls.
struct KeyService {
    region: &'static str,
    calls: std::sync::Mutex<Vec<(String, i64, i64)>>,
}

#[async_trait::async_trait]
impl KeyFetcher for KeyService {
    async fn fetch(&self, region: &str, start: i64, end: i64) -> Result<PublicKeys, trailwatch_core::ports::PortError> {
        self.calls.lock().unwrap().push((region.to_owned(), start, end));
        let mut keys = PublicKeys::none();
        if region == self.region {
            use rsa::pkcs1::EncodeRsaPublicKey;
            let public = key(0).to_public_key();
            keys.insert_der(&fingerprint_of(&public).unwrap(), public.to_pkcs1_der().unwrap().as_bytes()).unwrap();
        }
        Ok(keys)
    }
}

#[tokio::test]
async fn keys_not_configured_are_fetched_once_for_the_digests_region_and_time() {
    let t = trail(4, Some(3));
    let service = Arc::new(KeyService { region: REGION, calls: Default::default() });
    let s = setup(&t);
    let ports = s.checker.ports().clone();
    let checker = IntegrityChecker::new(IntegrityPorts { keys: Arc::new(PublicKeys::none()), ..ports }).with_key_fetcher(service.clone());
    let s = Setup { checker, ..s };
    check_all(&s, &t).await;
    // Three digests verified with the fetched key; the fourth names key 1, which the service does not have.
    assert_eq!(open_kinds(&s).await, vec![FindingKind::UnknownKey]);
    assert_eq!(completeness(&s).await.last_verified_digest, Some(format!("s3://{BUCKET}/{}", t.digests[2])));
    let calls = service.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "one fetch per new fingerprint: {calls:?}");
    let (region, from, to) = &calls[0];
    assert_eq!(region, REGION);
    assert!(*from <= START && *to >= START + HOUR, "the range covers the first digest's hour: {calls:?}");
    // Checked again soon after: the unknown fingerprint is not asked for again.
    check(&s, &t, 3).await;
    assert_eq!(service.calls.lock().unwrap().len(), 2);
    assert_eq!(s.checker.key_fetches(), 2);
}

#[tokio::test]
async fn with_a_key_service_no_digest_goes_unchecked() {
    let t = trail(1, None);
    let service = Arc::new(KeyService { region: "ap-south-2", calls: Default::default() });
    let s = setup(&t);
    let ports = s.checker.ports().clone();
    let checker = IntegrityChecker::new(IntegrityPorts { keys: Arc::new(PublicKeys::none()), ..ports }).with_key_fetcher(service);
    let s = Setup { checker, ..s };
    check_all(&s, &t).await;
    // The key service has no key of this region: the signature is not taken as checked.
    assert_eq!(open_kinds(&s).await, vec![FindingKind::UnknownKey]);
    assert_eq!(completeness(&s).await.last_verified_digest, None);
}

/// Signatures from sidecars, but one digest's made with an algorithm the checker does not know.
struct OtherAlgorithm {
    inner: SidecarSignatures,
    digest: String,
}

#[async_trait::async_trait]
impl trailwatch_core::integrity::SignatureSource for OtherAlgorithm {
    async fn signature(&self, digest_key: &str) -> Result<Option<String>, trailwatch_core::ports::PortError> {
        if digest_key == self.digest {
            return Err(trailwatch_core::ports::PortError::Invalid {
                what: format!("s3://{BUCKET}/{digest_key}"),
                message: "the digest is signed with \"SHA256withECDSA\", not SHA256withRSA".into(),
            });
        }
        self.inner.signature(digest_key).await
    }
}

#[tokio::test]
async fn a_signature_made_another_way_is_a_finding_not_a_check_failing_for_ever() {
    use trailwatch_core::integrity::SignatureSource as _;
    let t = trail(2, None);
    let s = setup(&t);
    let ports = s.checker.ports().clone();
    let signatures = OtherAlgorithm { inner: SidecarSignatures::new(Arc::new(DirSource::new(t.dir.path()))), digest: t.digests[1].clone() };
    assert!(signatures.signature(&t.digests[0]).await.unwrap().is_some());
    let checker = IntegrityChecker::new(IntegrityPorts { signatures: Arc::new(signatures), ..ports });
    let s = Setup { checker, ..s };
    check_all(&s, &t).await;
    let findings = s.store.open_findings(None, None).await.unwrap();
    assert_eq!(findings.iter().map(|f| f.kind).collect::<Vec<_>>(), vec![FindingKind::SignatureInvalid], "{findings:?}");
    assert!(findings[0].detail.contains("SHA256withECDSA") && findings[0].subject == t.digests[1], "{findings:?}");
}

#[tokio::test]
async fn digests_checked_out_of_order_raise_no_gap_for_an_hour_not_checked_yet() {
    let t = trail(5, None);
    let s = setup(&t);
    // A backfill (or parallel workers) checks the hours in any order: when
    // the fourth is checked, the third is in the bucket but not checked yet.
    for i in [0, 1, 3, 4, 2] {
        check(&s, &t, i).await;
    }
    assert_eq!(open_kinds(&s).await, vec![]);
    assert!(integrity_alerts(&s).await.is_empty(), "no gap alert raised, not even for a moment: {:?}", integrity_alerts(&s).await);
    let c = completeness(&s).await;
    assert_eq!((c.digests, c.chain_ok), (5, true));
}
