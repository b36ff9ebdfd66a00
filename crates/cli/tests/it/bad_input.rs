use crate::harness::*;

const ACCOUNT: &str = "210987654321";

fn good_file() -> Vec<u8> {
    let records: Vec<String> = (0..3)
        .map(|i| {
            format!(
                r#"{{"eventVersion":"1.08","userIdentity":{{"type":"Root","principalId":"{ACCOUNT}","arn":"arn:aws:iam::{ACCOUNT}:root","accountId":"{ACCOUNT}"}},"eventTime":"2026-03-02T09:0{i}:00Z","eventSource":"s3.amazonaws.com","eventName":"ListBuckets","awsRegion":"us-east-1","sourceIPAddress":"203.0.113.9","userAgent":"console.amazonaws.com","requestParameters":null,"responseElements":null,"eventID":"0b6f2a44-1111-4c4c-9d9d-00000000000{i}","readOnly":true,"eventType":"AwsApiCall","recipientAccountId":"{ACCOUNT}"}}"#
            )
        })
        .collect();
    gzip(format!(r#"{{"Records":[{}]}}"#, records.join(",")).as_bytes())
}

/// Every kind of bad input is reported with its key and reason, counted,
/// recorded in the ledger, and does not stop the good files; a second ingest
/// retries the failed ones and nothing accepted is lost.
#[test]
fn bad_files_are_reported_recorded_and_do_not_stop_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let (trail, data) = (tmp.path().join("trail"), tmp.path().join("data"));
    let bad = fixtures().join("bad");
    let cases = [
        ("truncated.json.gz", "aaaaaaaaaaaaaaa1", "failed", "truncated"),
        ("corrupt.json.gz", "aaaaaaaaaaaaaaa2", "failed", "read failed"),
        ("not-cloudtrail.json", "aaaaaaaaaaaaaaa3", "failed", "not a CloudTrail"),
        ("missing-fields.json", "aaaaaaaaaaaaaaa4", "partial", "records rejected; first: record"),
        ("empty-records.json", "aaaaaaaaaaaaaaa5", "empty", "the file holds no records"),
        ("zero-bytes.json.gz", "aaaaaaaaaaaaaaa6", "failed", "the object is empty (0 bytes)"),
    ];
    let mut keys = Vec::new();
    for (file, unique, _, _) in &cases {
        let key = log_key(ACCOUNT, "20260302T0905Z", unique);
        put(&trail, &key, &std::fs::read(bad.join(file)).unwrap_or_else(|e| panic!("fixture {file}: {e}")));
        keys.push(key);
    }
    put(&trail, &log_key(ACCOUNT, "20260302T0905Z", "goodgoodgoodgood"), &good_file());
    put(&trail, "AWSLogs/o-exampleorg1/210987654321/Config/us-east-1/2026/3/2/ConfigSnapshot/x.json.gz", b"{}");

    let out = ok(&["ingest", "--trail", path(&trail), "--data", path(&data)]);
    let (summary, log) = (stdout(&out), stderr(&out));
    assert!(summary.contains("7 read: 1 done, 1 partial, 1 empty, 4 failed"), "{summary}");
    assert!(summary.contains("skipped  1 not a CloudTrail folder"), "{summary}");
    for ((file, _, status, reason), key) in cases.iter().zip(&keys) {
        let line = summary.lines().find(|l| l.contains(key.as_str())).unwrap_or_else(|| panic!("{file} is not listed among the problems:\n{summary}"));
        assert!(line.trim_start().starts_with(status), "{file}: {line}");
        assert!(line.contains(reason), "{file}: expected {reason:?} in {line}");
        if *status == "failed" {
            assert!(log.contains(key.as_str()), "{file}: the warning names the file:\n{log}");
        }
    }
    let stored = exported_ids(&data, &[]);
    let from_partial = stored.len() - 3;
    assert!(from_partial > 0, "the good records of a partly bad file are kept");

    let ledger = stdout(&ok(&["ledger", "--data", path(&data)]));
    assert!(ledger.contains("1 done, 1 partial, 1 empty, 4 failed"), "{ledger}");
    let rejected = stdout(&ok(&["ledger", "--data", path(&data), "--rejected", &keys[3]]));
    assert!(rejected.lines().count() > 0 && rejected.contains("missing field"), "rejected records are kept for inspection: {rejected}");

    let again = stdout(&ok(&["ingest", "--trail", path(&trail), "--data", path(&data)]));
    assert!(again.contains("4 read: 0 done, 0 partial, 0 empty, 4 failed"), "only the failed files are read again: {again}");
    assert!(again.contains("3 already in the ledger"), "{again}");
    let ledger = stdout(&ok(&["ledger", "--data", path(&data)]));
    assert!(ledger.contains("attempts 2"), "{ledger}");
    assert_eq!(exported_ids(&data, &[]).len(), stored.len(), "retries store nothing twice and lose nothing");
}
