//! Delivery windows and digest files.

use std::collections::{BTreeMap, HashSet};

use sha2::{Digest, Sha256};
use trailwatch_core::integrity::digest::signing_string;
use trailwatch_core::integrity::{sidecar_key, PublicKeys, SignatureCheck};
use trailwatch_core::layout::ObjectKind;
use trailwatch_core::time::parse_utc;

use crate::fixture::{hex, trail};

#[test]
fn files_hold_what_was_delivered_in_their_window() {
    let t = trail();
    let mut sizes = Vec::new();
    for log in &t.logs {
        let times: Vec<i64> = log.records.iter().map(|r| parse_utc(r["eventTime"].as_str().unwrap()).unwrap()).collect();
        for &at in &times {
            assert!(at < log.trail_key.file_time, "{}: an event after its file", log.key);
            assert!(log.trail_key.file_time - at <= 20 * 60_000, "{}: delivered at most ~15 minutes late", log.key);
        }
        sizes.push(log.records.len());
    }
    sizes.sort_unstable();
    assert!(*sizes.last().unwrap() >= 100, "busy windows hold hundreds of records: {:?}", &sizes[sizes.len() - 5..]);
    // Files of an account and region, sorted by file time, are not sorted by event time.
    let mut by_stream: BTreeMap<(&str, &str), Vec<(i64, i64)>> = BTreeMap::new();
    for log in &t.logs {
        let oldest = log.records.iter().map(|r| parse_utc(r["eventTime"].as_str().unwrap()).unwrap()).min().unwrap();
        by_stream.entry((&log.trail_key.account_id, &log.trail_key.region)).or_default().push((log.trail_key.file_time, oldest));
    }
    let inversions: usize = by_stream
        .values_mut()
        .map(|files| {
            files.sort_unstable();
            let mut newest_oldest = i64::MIN;
            files
                .iter()
                .filter(|(_, oldest)| {
                    let inverted = *oldest < newest_oldest;
                    newest_oldest = newest_oldest.max(*oldest);
                    inverted
                })
                .count()
        })
        .sum();
    assert!(inversions > 0, "a later file holds events older than an earlier file's");
}

#[test]
fn digests_list_exactly_the_log_files_of_their_hour() {
    let t = trail();
    let logs: BTreeMap<&str, &crate::fixture::Log> = t.logs.iter().map(|l| (l.key.as_str(), l)).collect();
    let mut listed = HashSet::new();
    let mut chains: BTreeMap<(&str, &str), Vec<&crate::fixture::DigestFile>> = BTreeMap::new();
    let keys_file = std::fs::read_to_string(t.dir.path().join(".public-keys.json")).expect("the generator writes its public key");
    let keys = PublicKeys::from_list_json(&keys_file, ".public-keys.json").unwrap();
    let mut signatures = BTreeMap::new();
    for d in &t.digests {
        assert_eq!(d.trail_key.kind, ObjectKind::Digest);
        let v = &d.value;
        assert_eq!(v["awsAccountId"], d.trail_key.account_id.as_str());
        assert_eq!(v["digestS3Object"], d.key.as_str());
        assert_eq!(v["digestSignatureAlgorithm"], "SHA256withRSA");
        let signature = std::fs::read_to_string(t.dir.path().join(sidecar_key(&d.key))).unwrap_or_else(|e| panic!("{}: its signature sidecar: {e}", d.key));
        let message = signing_string(
            v["digestEndTime"].as_str().unwrap(),
            v["digestS3Bucket"].as_str().unwrap(),
            &d.key,
            &hex(&Sha256::digest(&d.json)),
            v["previousDigestSignature"].as_str(),
        );
        assert_eq!(
            keys.check(v["digestPublicKeyFingerprint"].as_str(), &message, Some(&signature)),
            SignatureCheck::Valid,
            "{} verifies with the trail's public key",
            d.key
        );
        signatures.insert(d.key.as_str(), signature);
        let (start, end) = (parse_utc(v["digestStartTime"].as_str().unwrap()).unwrap(), parse_utc(v["digestEndTime"].as_str().unwrap()).unwrap());
        assert_eq!(end - start, 3_600_000);
        assert_eq!(end, d.trail_key.file_time, "named after its end");
        let files = v["logFiles"].as_array().unwrap();
        if files.is_empty() {
            assert!(v["newestEventTime"].is_null() && v["oldestEventTime"].is_null());
        }
        for f in files {
            let key = f["s3Object"].as_str().unwrap();
            let log = logs.get(key).unwrap_or_else(|| panic!("{key} listed in {} exists", d.key));
            assert!(listed.insert(key), "{key} listed once");
            assert_eq!(log.trail_key.account_id, d.trail_key.account_id);
            assert_eq!(log.trail_key.region, d.trail_key.region);
            assert!(start <= log.trail_key.file_time && log.trail_key.file_time < end, "{key} delivered in the digest's hour");
            assert_eq!(f["hashAlgorithm"], "SHA-256");
            assert_eq!(f["hashValue"], hex(&Sha256::digest(&log.json)), "SHA-256 of {key}'s uncompressed content");
            let times: Vec<i64> = log.records.iter().map(|r| parse_utc(r["eventTime"].as_str().unwrap()).unwrap()).collect();
            assert_eq!(parse_utc(f["newestEventTime"].as_str().unwrap()).unwrap(), *times.iter().max().unwrap());
            assert_eq!(parse_utc(f["oldestEventTime"].as_str().unwrap()).unwrap(), *times.iter().min().unwrap());
            assert_eq!(f["s3Bucket"], v["digestS3Bucket"]);
        }
        chains.entry((&d.trail_key.account_id, &d.trail_key.region)).or_default().push(d);
    }
    assert_eq!(listed.len(), t.logs.len(), "every log file is in a digest");
    let regions: usize = t.expected["organization"]["accounts"].as_array().unwrap().iter().map(|a| a["regions"].as_array().unwrap().len()).sum();
    assert_eq!(chains.len(), regions, "a digest chain per account and region");
    for chain in chains.values_mut() {
        chain.sort_by_key(|d| d.trail_key.file_time);
        assert!(chain[0].value["previousDigestS3Object"].is_null() && chain[0].value["previousDigestHashValue"].is_null());
        assert!(chain[0].value["previousDigestSignature"].is_null(), "the first digest of a chain has no previous signature");
        for pair in chain.windows(2) {
            let (previous, next) = (pair[0], pair[1]);
            assert_eq!(next.trail_key.file_time - previous.trail_key.file_time, 3_600_000, "hourly, empty hours included");
            assert_eq!(next.value["previousDigestS3Object"], previous.key.as_str());
            assert_eq!(next.value["previousDigestHashValue"], hex(&Sha256::digest(&previous.json)));
            assert_eq!(next.value["previousDigestHashAlgorithm"], "SHA-256");
            assert_eq!(next.value["previousDigestSignature"].as_str(), signatures.get(previous.key.as_str()).map(String::as_str), "chained by signature");
        }
    }
}
