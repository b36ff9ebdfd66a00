//! Digest signatures and public keys in AWS mode: the signature from the
//! digest object's metadata (`S3Signatures`), the keys from CloudTrail's
//! `ListPublicKeys` in the digest's region (`CloudTrailKeys`). The emulator
//! has no `ListPublicKeys`, so the proxy answers it from a
//! `PublicKeyService`; everything else goes through to the emulator.
//! Digests, signatures and keys come from the generator, which signs as
//! CloudTrail does.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use trailwatch_aws::clients::{ClientLimits, Clients};
use trailwatch_aws::cloudtrail::stand_in::{KeyCall, PublicKeyService};
use trailwatch_aws::cloudtrail::CloudTrailKeys;
use trailwatch_aws::faults::{FaultKind, FaultPlan, FaultProxy, Rates};
use trailwatch_aws::moto::{self, unique};
use trailwatch_aws::s3::{S3Signatures, S3Source};
use trailwatch_core::integrity::keys::hex_encode;
use trailwatch_core::integrity::{sidecar_key, DigestFile, KeyFetcher, SignatureCheck, SignatureSource};
use trailwatch_core::layout::{classify, ObjectKind};
use trailwatch_core::ports::PortError;
use trailwatch_core::time::EpochMillis;

const HOUR: EpochMillis = 3_600_000;

/// One generated trail: its signing key and its digests.
struct Trail {
    _dir: tempfile::TempDir,
    fingerprint: String,
    /// The public key, PKCS#1 DER.
    der: Vec<u8>,
    digests: Vec<SignedDigest>,
}

struct SignedDigest {
    key: String,
    region: String,
    /// The gzipped object, as the bucket holds it.
    object: Vec<u8>,
    /// The hex signature from its sidecar.
    signature: String,
}

impl SignedDigest {
    fn parsed(&self) -> (DigestFile, String) {
        let mut content = Vec::new();
        flate2::read::GzDecoder::new(&self.object[..]).read_to_end(&mut content).unwrap();
        let digest = DigestFile::parse(&content).unwrap();
        (digest, hex_encode(&Sha256::digest(&content)))
    }
}

fn files_under(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, found);
        } else {
            found.push(path);
        }
    }
}

fn generate(seed: u64) -> Trail {
    let dir = tempfile::tempdir().unwrap();
    let config = trailwatch_gen::GenConfig { accounts: 2, events: 300, seed, threads: 1, ..Default::default() };
    trailwatch_gen::generate(&config, dir.path(), &|_| {}).unwrap();
    let keys: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join(trailwatch_gen::digest::PUBLIC_KEYS_FILE)).unwrap()).unwrap();
    let entry = &keys["PublicKeyList"][0];
    let der = base64::engine::general_purpose::STANDARD.decode(entry["Value"].as_str().unwrap()).unwrap();
    let mut paths = Vec::new();
    files_under(&dir.path().join("AWSLogs"), &mut paths);
    let mut digests = Vec::new();
    for path in paths {
        let key = path.strip_prefix(dir.path()).unwrap().to_string_lossy().replace('\\', "/");
        let Ok(trail_key) = classify(&key) else { continue };
        if trail_key.kind != ObjectKind::Digest {
            continue;
        }
        let signature = std::fs::read_to_string(dir.path().join(sidecar_key(&key))).unwrap();
        digests.push(SignedDigest { key, region: trail_key.region, object: std::fs::read(&path).unwrap(), signature });
    }
    digests.sort_by(|a, b| a.key.cmp(&b.key));
    assert!(!digests.is_empty(), "the generator writes digests");
    Trail { _dir: dir, fingerprint: entry["Fingerprint"].as_str().unwrap().to_owned(), der, digests }
}

/// Two trails signed with different keys (generated once per run: a key takes a moment).
fn trails() -> &'static [Trail; 2] {
    static TRAILS: OnceLock<[Trail; 2]> = OnceLock::new();
    TRAILS.get_or_init(|| [generate(11), generate(12)])
}

/// A pass-through proxy in front of the emulator answering `ListPublicKeys`
/// from `service`, and clients that talk through it (one attempt per call:
/// the tests see each answer as it is).
async fn through_proxy(service: &Arc<PublicKeyService>) -> (FaultProxy, Clients) {
    let proxy = FaultProxy::pass_through(&moto::shared().endpoint()).unwrap();
    service.install(&proxy);
    let mut settings = moto::shared().settings();
    settings.endpoint_url = Some(proxy.endpoint());
    settings.limits = ClientLimits { max_attempts: 1, ..ClientLimits::default() };
    let clients = Clients::connect(&settings).await.unwrap();
    (proxy, clients)
}

fn fingerprints(keys: &trailwatch_core::integrity::PublicKeys, candidates: &[&str]) -> Vec<String> {
    candidates.iter().filter(|f| keys.contains(f)).map(|f| (*f).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_fetched_for_the_region_and_time_range_asked() {
    let [a, b] = trails();
    let service = PublicKeyService::new();
    let (t0, t1, t2) = (1_700_000_000_000, 1_700_000_000_000 + 30 * 24 * HOUR, 1_700_000_000_000 + 60 * 24 * HOUR);
    // eu-west-1 rotated from key A to key B at t1; ap-south-1 has its own key (A's DER under another fingerprint).
    service.add("eu-west-1", &a.fingerprint, &a.der, t0, t1);
    service.add("eu-west-1", &b.fingerprint, &b.der, t1, t2);
    service.add("ap-south-1", "0123456789abcdef0123456789abcdef", &a.der, t0, t2);
    let (proxy, clients) = through_proxy(&service).await;
    let keys = CloudTrailKeys::new(clients.cloudtrail.clone());
    let all = [a.fingerprint.as_str(), b.fingerprint.as_str(), "0123456789abcdef0123456789abcdef"];

    let before = keys.fetch("eu-west-1", t0 + HOUR, t0 + 2 * HOUR).await.unwrap();
    assert_eq!(fingerprints(&before, &all), vec![a.fingerprint.clone()], "only the key valid then, only eu-west-1's");
    let across = keys.fetch("eu-west-1", t1 - HOUR, t1 + HOUR).await.unwrap();
    assert_eq!(fingerprints(&across, &all), vec![a.fingerprint.clone(), b.fingerprint.clone()], "a range spanning the rotation gets both keys");
    let other = keys.fetch("ap-south-1", t1 - HOUR, t1 + HOUR).await.unwrap();
    assert_eq!(fingerprints(&other, &all), vec!["0123456789abcdef0123456789abcdef".to_owned()], "ap-south-1 has its own key only");
    let none = keys.fetch("us-west-2", t0, t2).await.unwrap();
    assert!(none.is_empty(), "a region with no key gets none");

    // Each call went to the region asked (its SigV4 scope), with the range asked, through the proxy.
    let calls: Vec<(String, EpochMillis, EpochMillis)> = service.calls().into_iter().map(|c| (c.region, c.start, c.end)).collect();
    assert_eq!(
        calls,
        vec![
            ("eu-west-1".to_owned(), t0 + HOUR, t0 + 2 * HOUR),
            ("eu-west-1".to_owned(), t1 - HOUR, t1 + HOUR),
            ("ap-south-1".to_owned(), t1 - HOUR, t1 + HOUR),
            ("us-west-2".to_owned(), t0, t2),
        ]
    );
    assert_eq!(proxy.requests().get("cloudtrail:ListPublicKeys"), Some(&4));
    assert_eq!(clients.calls.snapshot().get("CloudTrail:ListPublicKeys"), Some(&4), "counted with the other API calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_of_keys_is_read() {
    let [a, b] = trails();
    let service = PublicKeyService::paged(1);
    for (i, t) in [a, b, a].into_iter().enumerate() {
        service.add("eu-central-1", &format!("{}{i}", &t.fingerprint[..31]), &t.der, 0, 10 * HOUR);
    }
    let (_proxy, clients) = through_proxy(&service).await;
    let keys = CloudTrailKeys::new(clients.cloudtrail.clone()).fetch("eu-central-1", HOUR, 2 * HOUR).await.unwrap();
    assert_eq!(keys.len(), 3, "three pages of one key each");
    let tokens: Vec<Option<String>> = service.calls().into_iter().map(|c: KeyCall| c.next_token).collect();
    assert_eq!(tokens, vec![None, Some("1".to_owned()), Some("2".to_owned())], "NextToken followed to the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetched_keys_verify_a_digest_read_back_from_s3() {
    let [a, b] = trails();
    // A digest of a region other than the clients' own (us-east-1) when there is one.
    let digest = a.digests.iter().find(|d| d.region != moto::REGION).unwrap_or(&a.digests[0]);
    let (parsed, content_sha256) = digest.parsed();
    let (start, end) = (parsed.start().unwrap(), parsed.end().unwrap());
    assert_eq!(parsed.fingerprint(), Some(a.fingerprint.as_str()));

    let service = PublicKeyService::new();
    service.add(&digest.region, &a.fingerprint, &a.der, start - 24 * HOUR, end + 24 * HOUR);
    let elsewhere = if digest.region == "sa-east-1" { "ca-central-1" } else { "sa-east-1" };
    service.add(elsewhere, &b.fingerprint, &b.der, start - 24 * HOUR, end + 24 * HOUR);
    let (_proxy, clients) = through_proxy(&service).await;

    let bucket = unique("digests");
    clients.s3.create_bucket().bucket(&bucket).send().await.unwrap();
    clients
        .s3
        .put_object()
        .bucket(&bucket)
        .key(&digest.key)
        .body(digest.object.clone().into())
        .metadata("signature", &digest.signature)
        .metadata("signature-algorithm", "SHA256withRSA")
        .send()
        .await
        .unwrap();
    let source = S3Source::new(clients.s3.clone(), &bucket);
    let signature = S3Signatures::of(&source).signature(&digest.key).await.unwrap();
    assert_eq!(signature.as_deref(), Some(digest.signature.as_str()), "the signature comes back from the object's metadata");

    let fetcher: Arc<dyn KeyFetcher> = Arc::new(CloudTrailKeys::new(clients.cloudtrail.clone()));
    let keys = fetcher.fetch(&digest.region, start - HOUR, end + HOUR).await.unwrap();
    let message = parsed.signing_string(&content_sha256);
    assert_eq!(keys.check(parsed.fingerprint(), &message, signature.as_deref()), SignatureCheck::Valid, "{} verifies with its region's key", digest.key);
    // Another digest's signature does not verify it.
    let other = a.digests.iter().find(|d| d.signature != digest.signature).unwrap();
    assert!(matches!(keys.check(parsed.fingerprint(), &message, Some(&other.signature)), SignatureCheck::Invalid(_)));
    // Another region's keys do not have its key.
    let foreign = fetcher.fetch(elsewhere, start - HOUR, end + HOUR).await.unwrap();
    assert!(foreign.contains(&b.fingerprint));
    assert_eq!(foreign.check(parsed.fingerprint(), &message, signature.as_deref()), SignatureCheck::UnknownKey(Some(a.fingerprint.clone())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_without_metadata_missing_or_signed_otherwise_is_told_apart() {
    let clients = Clients::connect(&moto::shared().settings()).await.unwrap();
    let bucket = unique("digests");
    clients.s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let digest = &trails()[0].digests[0];
    let put = |key: &str, algorithm: Option<&str>| {
        let mut put = clients.s3.put_object().bucket(&bucket).key(key).body(digest.object.clone().into());
        if let Some(algorithm) = algorithm {
            put = put.metadata("signature", &digest.signature).metadata("signature-algorithm", algorithm);
        }
        put.send()
    };
    let plain = format!("plain/{}", digest.key);
    let ecdsa = format!("ecdsa/{}", digest.key);
    put(&plain, None).await.unwrap();
    put(&ecdsa, Some("SHA256withECDSA")).await.unwrap();
    let signatures = S3Signatures::new(clients.s3.clone(), &bucket);

    assert_eq!(signatures.signature(&plain).await.unwrap(), None, "no signature metadata: none");
    match signatures.signature(&format!("missing/{}", digest.key)).await {
        Err(PortError::NotFound { what }) => assert!(what.contains(&format!("s3://{bucket}/missing/")), "{what}"),
        other => panic!("a missing digest is NotFound: {other:?}"),
    }
    let err = signatures.signature(&ecdsa).await.unwrap_err();
    assert!(matches!(err, PortError::Invalid { .. }) && !err.is_retryable(), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&format!("s3://{bucket}/{ecdsa}")) && text.contains("SHA256withECDSA"), "names the object and the algorithm: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_does_not_parse_or_a_throttled_call_is_a_clear_error() {
    let service = PublicKeyService::new();
    service.add("eu-north-1", "feedfacefeedfacefeedfacefeedface", b"not a key", 0, 10 * HOUR);
    let (proxy, clients) = through_proxy(&service).await;
    let keys = CloudTrailKeys::new(clients.cloudtrail.clone());
    let err = keys.fetch("eu-north-1", HOUR, 2 * HOUR).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("feedfacefeedfacefeedfacefeedface") && text.contains("eu-north-1") && !err.is_retryable(), "{text}");

    proxy.set_plan(FaultPlan::new(3).rule(Some("cloudtrail"), Some("ListPublicKeys"), Rates::only(FaultKind::Throttle, 1.0)));
    let err = keys.fetch("eu-north-1", HOUR, 2 * HOUR).await.unwrap_err();
    assert!(err.is_retryable(), "throttling passes: {err:?}");
    assert!(err.to_string().contains("cloudtrail:ListPublicKeys eu-north-1"), "{err}");
    assert_eq!(service.call_count(), 1, "a throttled call never reached the service");
}
