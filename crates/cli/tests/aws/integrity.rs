//! Digest verification in AWS mode, end to end. A generated trail is
//! uploaded the way CloudTrail delivers it: an hour's log files, then the
//! hour's digest, whose signature travels in the object's `signature`
//! metadata. Some damage is done on the way, as an attacker or a lost
//! delivery would leave it: a listed log file never arrives, one arrives
//! changed, a digest is missing from the chain, and one digest's signature
//! is altered. The collector and the enricher run as processes behind a
//! proxy in front of the emulator, which answers CloudTrail's
//! `ListPublicKeys` (the emulator has none) with the trail's own key.
//!
//! What a user must see: each damage as its open finding in the integrity
//! table, one `trail-integrity` alert per account, region and kind on the
//! topic, `health.completeness` in GraphQL per account and region with the
//! right counts, and no finding where nothing was damaged.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

use trailwatch_aws::clients::Clients;
use trailwatch_aws::cloudtrail::stand_in::PublicKeyService;
use trailwatch_aws::dynamo::{DynamoIntegrityStore, DynamoLedger};
use trailwatch_aws::faults::FaultProxy;
use trailwatch_aws::moto::Moto;
use trailwatch_core::integrity::{dedup_key, DigestFile, FindingKind, IntegrityStore};
use trailwatch_core::layout::{classify, ObjectKind};
use trailwatch_core::ports::Checkpoints;

use super::{attribute, free_port, parse_metrics, receive_all, run_ok, trailwatch, Service};

const BUCKET: &str = "org-trail";

/// One account's objects in one region: its digests in time order, and its log files.
#[derive(Default)]
struct Account {
    digests: Vec<(String, PathBuf)>,
    logs: Vec<(String, PathBuf)>,
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, found);
        } else if path.to_string_lossy().ends_with(".json.gz") {
            found.push(path);
        }
    }
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(path).unwrap()).read_to_end(&mut out).unwrap();
    out
}

/// The log files a digest lists.
fn listed(path: &Path) -> Vec<String> {
    DigestFile::parse(&gunzip(path)).unwrap().log_files.into_iter().map(|f| f.s3_object).collect()
}

/// The digest's signature, as the generator left it beside the digest.
fn signature(root: &Path, key: &str) -> String {
    std::fs::read_to_string(root.join(trailwatch_core::integrity::sidecar_key(key))).unwrap().trim().to_owned()
}

async fn upload(clients: &Clients, key: &str, body: Vec<u8>, signature: Option<&str>) {
    let mut put = clients.s3.put_object().bucket(BUCKET).key(key).body(body.into());
    if let Some(s) = signature {
        put = put.metadata("signature", s).metadata("signature-algorithm", "SHA256withRSA");
    }
    put.send().await.unwrap();
}

/// Waits until the ledger has every key final.
async fn all_final(ledger: &DynamoLedger, keys: &[String], services: &mut [&mut Service], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        for s in services.iter_mut() {
            s.assert_running();
        }
        let mut done = 0;
        for chunk in keys.chunks(100) {
            done += ledger.lookup(chunk).await.unwrap().values().filter(|e| e.status.is_final()).count();
        }
        if done == keys.len() {
            return;
        }
        let logs: Vec<String> = services.iter().map(|s| format!("{}:\n{}", s.name, std::fs::read_to_string(&s.log).unwrap_or_default())).collect();
        assert!(Instant::now() < deadline, "{done} of {} {what} final after 180 s\n{}", keys.len(), logs.join("\n"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_and_loss_in_the_bucket_raise_integrity_alerts_on_aws() {
    let _turn = crate::my_turn().await;
    let moto = Moto::start().unwrap();
    let clients = Clients::connect(&moto.settings()).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let trail = tmp.path().join("trail");
    let mut gen = Command::new(env!("CARGO_BIN_EXE_trailwatch"));
    gen.args(["gen", "--out", trail.to_str().unwrap(), "--accounts", "2", "--events", "300", "--seed", "5"]);
    run_ok(gen);

    // The region's objects per account, as CloudTrail lays them out.
    let mut found = Vec::new();
    walk(&trail.join("AWSLogs"), &mut found);
    let mut accounts: BTreeMap<(String, String), Account> = BTreeMap::new();
    for path in found {
        let key = path.strip_prefix(&trail).unwrap().to_string_lossy().replace('\\', "/");
        let parsed = classify(&key).unwrap();
        let account = accounts.entry((parsed.account_id.clone(), parsed.region.clone())).or_default();
        match parsed.kind {
            ObjectKind::Digest => account.digests.push((key, path)),
            _ => account.logs.push((key, path)),
        }
    }
    assert!(accounts.len() >= 3, "accounts deliver to several regions: {:?}", accounts.keys().collect::<Vec<_>>());
    for a in accounts.values_mut() {
        a.digests.sort();
        assert!(a.digests.len() >= 20, "a day of hourly digests: {}", a.digests.len());
    }
    // Damage where the most files are; the rest stays as delivered.
    let mut ids: Vec<(String, String)> = accounts.keys().cloned().collect();
    ids.sort_by_key(|id| std::cmp::Reverse(accounts[id].logs.len()));
    let (damaged_files, damaged_chain) = (ids[0].clone(), ids[1].clone());
    assert_ne!(damaged_files.1, damaged_chain.1, "two regions, each with a key of its own: {ids:?}");

    // The damage. First account: a listed log file never delivered, another changed.
    let with_files: Vec<usize> = (0..accounts[&damaged_files].digests.len()).filter(|i| !listed(&accounts[&damaged_files].digests[*i].1).is_empty()).collect();
    assert!(with_files.len() >= 4, "digests listing files: {with_files:?}");
    let missing = listed(&accounts[&damaged_files].digests[with_files[1]].1)[0].clone();
    let changed = listed(&accounts[&damaged_files].digests[with_files[3]].1)[0].clone();
    // Second account: a digest gone from the middle of the chain, and one whose signature was altered.
    let chain = &accounts[&damaged_chain].digests;
    let (gone, forged, broken_at) = (chain[9].0.clone(), chain[14].0.clone(), chain[10].0.clone());

    // The resources, the alert topic's subscriber, and the key service behind the proxy.
    let org = aws_sdk_organizations::types::OrganizationFeatureSet::All;
    clients.organizations.create_organization().feature_set(org).send().await.unwrap();
    let (env, alerts_url) = super::aws_setup(&moto, &clients, &[]).await;
    let proxy = FaultProxy::pass_through(&moto.endpoint()).unwrap();
    let keys = PublicKeyService::new();
    let published: Value = serde_json::from_slice(&std::fs::read(trail.join(trailwatch_gen::digest::PUBLIC_KEYS_FILE)).unwrap()).unwrap();
    // Valid over the whole generated day (which ends 2026-11-01) and a day either side.
    const END: i64 = 1_793_491_200_000;
    let (from, until) = (END - 2 * 86_400_000, END + 86_400_000);
    for key in published["PublicKeyList"].as_array().unwrap() {
        let der = base64::engine::general_purpose::STANDARD.decode(key["Value"].as_str().unwrap()).unwrap();
        for region in accounts.keys().map(|(_, r)| r).collect::<BTreeSet<_>>() {
            keys.add(region, key["Fingerprint"].as_str().unwrap(), &der, from, until);
        }
    }
    keys.install(&proxy);

    let (collector_metrics, enricher_metrics, api_port) = (free_port(), free_port(), free_port());
    let through_proxy = |mut cmd: Command, metrics: u16| {
        cmd.env("TRAILWATCH_AWS_ENDPOINT_URL", proxy.endpoint()).args(["--metrics-listen", &format!("127.0.0.1:{metrics}")]);
        cmd
    };
    let mut collector_cmd = trailwatch(&moto);
    collector_cmd.args(["collector", "--wait-seconds", "1", "--enricher-delay", "0", "--visibility-seconds", "20", "--claim-seconds", "30"]);
    let mut collector = Service::start("collector", through_proxy(collector_cmd, collector_metrics), tmp.path(), &env);
    let mut enricher_cmd = trailwatch(&moto);
    enricher_cmd.args(["enricher", "--wait-seconds", "1", "--visibility-seconds", "30"]);
    let mut enricher = Service::start("enricher", through_proxy(enricher_cmd, enricher_metrics), tmp.path(), &env);
    let mut api_cmd = trailwatch(&moto);
    api_cmd.args(["api", "--aws", "--listen", &format!("127.0.0.1:{api_port}"), "--token", "ops:viewer:integrity-check-token"]);
    let mut api = Service::start("api", api_cmd, tmp.path(), &env);

    // The log files first (all but the one lost, one changed), as CloudTrail
    // delivers an hour's files before the hour's digest.
    let ledger = DynamoLedger::new(clients.dynamodb.clone(), "tw-ledger");
    let mut log_keys = Vec::new();
    for a in accounts.values() {
        for (key, path) in &a.logs {
            if *key == missing {
                continue;
            }
            let body = if *key == changed {
                let text = String::from_utf8(gunzip(path)).unwrap();
                let edited = text.replacen("\"sourceIPAddress\":\"", "\"sourceIPAddress\":\"198.51.100.66\",\"x\":\"", 1);
                assert_ne!(edited, text, "the changed file has a source address to change");
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(edited.as_bytes()).unwrap();
                gz.finish().unwrap()
            } else {
                std::fs::read(path).unwrap()
            };
            upload(&clients, key, body, None).await;
            log_keys.push(key.clone());
        }
    }
    all_final(&ledger, &log_keys, &mut [&mut collector, &mut enricher], "log files").await;

    // Then the digests, in time order, each signed in its metadata.
    let mut digest_keys = Vec::new();
    let longest = accounts.values().map(|a| a.digests.len()).max().unwrap();
    for i in 0..longest {
        for a in accounts.values() {
            let Some((key, path)) = a.digests.get(i) else { continue };
            if *key == gone {
                continue;
            }
            let mut signed = signature(&trail, key);
            if *key == forged {
                // One hex digit changed: the signature no longer verifies.
                let last = if signed.ends_with('0') { "1" } else { "0" };
                signed.replace_range(signed.len() - 1.., last);
            }
            upload(&clients, key, std::fs::read(path).unwrap(), Some(&signed)).await;
            digest_keys.push(key.clone());
        }
    }
    all_final(&ledger, &digest_keys, &mut [&mut collector, &mut enricher], "digests").await;
    api.assert_running();

    // The findings, open in the integrity table.
    let store = DynamoIntegrityStore::new(clients.dynamodb.clone(), "tw-integrity", "tw-ledger");
    let open = store.open_findings(None, None).await.unwrap();
    let mut kinds: BTreeMap<((String, String), FindingKind), Vec<String>> = BTreeMap::new();
    for f in &open {
        kinds.entry(((f.account_id.clone(), f.region.clone()), f.kind)).or_default().push(f.subject.clone());
    }
    let expected: BTreeMap<((String, String), FindingKind), Vec<String>> = [
        ((damaged_files.clone(), FindingKind::LogFileMissing), vec![missing.clone()]),
        ((damaged_files.clone(), FindingKind::LogFileMismatch), vec![changed.clone()]),
        ((damaged_chain.clone(), FindingKind::ChainBroken), vec![broken_at.clone()]),
        ((damaged_chain.clone(), FindingKind::SignatureInvalid), vec![forged.clone()]),
    ]
    .into_iter()
    .collect();
    let gaps = kinds.remove(&(damaged_chain.clone(), FindingKind::DigestGap)).unwrap_or_default();
    assert_eq!(gaps.len(), 1, "one hour without a digest in {damaged_chain:?}: {open:#?}");
    assert_eq!(kinds, expected, "each damage is one open finding, and nothing else is: {open:#?}");
    let missing_finding = open.iter().find(|f| f.kind == FindingKind::LogFileMissing).unwrap();
    let lists_it = &accounts[&damaged_files].digests[with_files[1]].0;
    assert!(missing_finding.digest.ends_with(lists_it.as_str()) && missing_finding.detail.contains(&missing), "{missing_finding:?}");

    // The alerts on the topic: one per account, region and kind, with the attributes routing needs.
    let messages = receive_all(&clients, &alerts_url, Duration::from_secs(6)).await;
    let mut triggered: BTreeMap<String, String> = BTreeMap::new();
    for m in messages.iter().filter(|m| attribute(m, "rule_id") == "trail-integrity") {
        assert_ne!(attribute(m, "action"), "resolve", "no integrity alert resolves here: {:?}", m.body);
        if attribute(m, "action") == "trigger" {
            assert!(triggered.insert(attribute(m, "dedup_key"), attribute(m, "severity")).is_none(), "{} opened twice", attribute(m, "dedup_key"));
        }
    }
    let want: BTreeMap<String, String> = [
        (&damaged_files, FindingKind::LogFileMissing, "high"),
        (&damaged_files, FindingKind::LogFileMismatch, "critical"),
        (&damaged_chain, FindingKind::ChainBroken, "critical"),
        (&damaged_chain, FindingKind::DigestGap, "high"),
        (&damaged_chain, FindingKind::SignatureInvalid, "critical"),
    ]
    .into_iter()
    .map(|((account, region), kind, severity)| (dedup_key(account, region, kind), severity.to_owned()))
    .collect();
    assert_eq!(triggered, want, "the integrity alerts published");

    // health.completeness, per account and region.
    let http = reqwest::Client::new();
    let health: Value = http
        .post(format!("http://127.0.0.1:{api_port}/graphql"))
        .bearer_auth("integrity-check-token")
        .json(&serde_json::json!({ "query": "{ health { completeness { accountId region digests filesListed filesSeen filesVerified filesMissing filesMismatched lastVerifiedDigest chainOk openFindings } } }" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows = health["data"]["health"]["completeness"].as_array().unwrap_or_else(|| panic!("health failed: {health}"));
    assert_eq!(rows.len(), accounts.len(), "one row per account and region: {health}");
    for (id, a) in &accounts {
        let row = rows.iter().find(|r| r["accountId"] == id.0.as_str() && r["region"] == id.1.as_str()).unwrap_or_else(|| panic!("{id:?} missing: {health}"));
        let uploaded: Vec<&(String, PathBuf)> = a.digests.iter().filter(|(k, _)| *k != gone).collect();
        let listed_files: usize = uploaded.iter().map(|(_, p)| listed(p).len()).sum();
        assert_eq!(row["digests"], uploaded.len(), "{id:?}: {row}");
        assert_eq!(row["filesListed"], listed_files, "{id:?}: {row}");
        if *id == damaged_files {
            assert_eq!((row["filesMissing"].as_u64(), row["filesMismatched"].as_u64()), (Some(1), Some(1)), "{row}");
            assert_eq!(row["filesVerified"], listed_files - 2, "{row}");
            assert_eq!(row["filesSeen"], listed_files - 1, "every listed file the ledger has: all but the lost one: {row}");
            assert_eq!((row["chainOk"].as_bool(), row["openFindings"].as_u64()), (Some(true), Some(2)), "{row}");
            let last = row["lastVerifiedDigest"].as_str().unwrap_or_default();
            assert!(last.starts_with("s3://") && last.ends_with(&a.digests.last().unwrap().0), "the newest digest verified: {row}");
        } else {
            assert_eq!((row["filesMissing"].as_u64(), row["filesMismatched"].as_u64()), (Some(0), Some(0)), "{row}");
            assert_eq!(row["filesVerified"], listed_files, "{row}");
            assert_eq!(row["filesSeen"], listed_files, "{row}");
            let findings = if *id == damaged_chain { 3 } else { 0 };
            assert_eq!((row["chainOk"].as_bool(), row["openFindings"].as_u64()), (Some(findings == 0), Some(findings)), "{row}");
        }
    }

    // The key service: asked in each digest's own region, and the metric says how often.
    let calls = keys.calls();
    let regions: BTreeSet<&str> = calls.iter().map(|c| c.region.as_str()).collect();
    assert_eq!(regions, ids.iter().map(|(_, r)| r.as_str()).collect::<BTreeSet<_>>(), "{calls:?}");
    let text = http.get(format!("http://127.0.0.1:{enricher_metrics}/metrics")).send().await.unwrap().text().await.unwrap();
    let (samples, _) = parse_metrics(&text);
    let metric = |name: &str| samples.iter().filter(|s| s.name == name).map(|s| s.value).sum::<f64>();
    assert_eq!(metric("trailwatch_digest_key_fetches_total"), calls.len() as f64);
    assert!(metric("trailwatch_integrity_findings_opened_total") >= open.len() as f64, "{text}");
}
