//! Digest verification through `trailwatch ingest`: a generated trail (its
//! digests signed by the generator, its public key beside it) verifies
//! clean; the same trail with a log file changed and another deleted raises
//! the integrity alerts and shows in `health`.

use std::path::Path;

use crate::harness::*;

const HEALTH: &str = "{ health { completeness { accountId region digests filesListed filesSeen filesVerified filesMissing filesMismatched lastVerifiedDigest chainOk openFindings } } }";

fn generate(trail: &Path) {
    ok(&["gen", "--out", path(trail), "--accounts", "4", "--events", "4000", "--seed", "11", "--end", "2026-01-02T00:00:00Z"]);
}

fn ingest(trail: &Path, data: &Path) {
    let keys = trail.join(".public-keys.json");
    ok(&["ingest", "--trail", path(trail), "--data", path(data), "--public-keys", path(&keys)]);
}

fn completeness(data: &Path) -> Vec<serde_json::Value> {
    let out: serde_json::Value = serde_json::from_str(&stdout(&ok(&["query", "--data", path(data), HEALTH]))).expect("query prints JSON");
    out["data"]["health"]["completeness"].as_array().expect("completeness rows").clone()
}

fn integrity_alerts(data: &Path) -> Vec<serde_json::Value> {
    let out = ok(&["alerts", "list", "--data", path(data), "--rule", "trail-integrity", "--status", "all", "--json"]);
    stdout(&out).lines().map(|l| serde_json::from_str(l).expect("alert JSON")).collect()
}

fn sum(rows: &[serde_json::Value], field: &str) -> u64 {
    rows.iter().map(|r| r[field].as_u64().unwrap_or_else(|| panic!("{field} in {r}"))).sum()
}

/// Every log file a digest lists, as (digest key, log key), from the trail on disk.
fn listed_files(trail: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![trail.join("AWSLogs")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().contains("CloudTrail-Digest") && p.to_string_lossy().ends_with(".json.gz") {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(std::fs::File::open(&p).unwrap()), &mut text).unwrap();
                let digest: serde_json::Value = serde_json::from_str(&text).unwrap();
                for f in digest["logFiles"].as_array().unwrap() {
                    out.push(f["s3Object"].as_str().unwrap().to_owned());
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_generated_trail_verifies_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let (trail, data) = (tmp.path().join("trail"), tmp.path().join("data"));
    generate(&trail);
    ingest(&trail, &data);
    let rows = completeness(&data);
    let expected: serde_json::Value = serde_json::from_slice(&std::fs::read(trail.join("expected.json")).unwrap()).unwrap();
    assert_eq!(sum(&rows, "filesListed"), expected["totals"]["files"].as_u64().unwrap(), "the digests list every log file: {rows:?}");
    assert_eq!(sum(&rows, "filesVerified"), sum(&rows, "filesListed"));
    assert_eq!(sum(&rows, "filesSeen"), sum(&rows, "filesListed"), "the ledger has read every listed file");
    assert_eq!(sum(&rows, "digests"), expected["totals"]["digestFiles"].as_u64().unwrap_or(sum(&rows, "digests")));
    for row in &rows {
        assert_eq!((row["filesMissing"].as_u64(), row["filesMismatched"].as_u64(), row["openFindings"].as_u64()), (Some(0), Some(0), Some(0)), "{row}");
        assert_eq!(row["chainOk"], true, "{row}");
        assert!(row["lastVerifiedDigest"].as_str().is_some_and(|d| d.starts_with("s3://") && d.contains("CloudTrail-Digest")), "{row}");
    }
    assert!(integrity_alerts(&data).is_empty(), "no integrity alert on a clean trail");
}

#[test]
fn a_changed_and_a_deleted_log_file_raise_integrity_alerts() {
    let tmp = tempfile::tempdir().unwrap();
    let (trail, data) = (tmp.path().join("trail"), tmp.path().join("data"));
    generate(&trail);
    let listed = listed_files(&trail);
    let (changed, deleted) = (&listed[0], &listed[listed.len() - 1]);
    put(&trail, changed, &gzip(br#"{"Records":[]}"#));
    std::fs::remove_file(trail.join(deleted)).unwrap();
    ingest(&trail, &data);

    let rows = completeness(&data);
    assert_eq!(sum(&rows, "filesMismatched"), 1, "{rows:?}");
    assert_eq!(sum(&rows, "filesMissing"), 1, "{rows:?}");
    assert_eq!(sum(&rows, "filesSeen"), sum(&rows, "filesListed") - 1, "the deleted file was never read");
    let alerts = integrity_alerts(&data);
    let summaries: Vec<&str> = alerts.iter().map(|a| a["summary"].as_str().unwrap()).collect();
    let mismatch = alerts.iter().find(|a| a["summary"].as_str().unwrap().contains(changed.as_str())).unwrap_or_else(|| panic!("{summaries:?}"));
    assert_eq!(mismatch["severity"], "critical");
    assert_eq!(mismatch["status"], "open");
    let missing = alerts.iter().find(|a| a["summary"].as_str().unwrap().contains(deleted.as_str())).unwrap_or_else(|| panic!("{summaries:?}"));
    assert_eq!(missing["severity"], "high");
    assert!(missing["dedupKey"].as_str().unwrap().ends_with(":log-file-missing"), "{missing}");
}
