use crate::harness::*;

/// The foundation's promise: a generated organization is ingested with every
/// event exactly once; a second ingest adds nothing; export gives each event once.
#[test]
fn a_generated_organization_is_ingested_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (trail, data) = (tmp.path().join("trail"), tmp.path().join("data"));
    ok(&["gen", "--out", path(&trail), "--accounts", "50", "--events", "200000", "--seed", "7"]);
    let expected: serde_json::Value = serde_json::from_slice(&std::fs::read(trail.join("expected.json")).unwrap()).unwrap();
    let total = expected["totals"]["events"].as_u64().expect("totals.events");
    assert_eq!(total, 200_000);

    let first = stdout(&ok(&["ingest", "--trail", path(&trail), "--data", path(&data)]));
    assert!(first.contains("200,000 stored · 0 already stored · 0 rejected"), "{first}");
    assert!(first.contains(" 0 failed"), "{first}");
    assert!(first.contains("skipped  2 not under AWSLogs/"), "the answer key and accounts file are skipped with a reason: {first}");

    let second = stdout(&ok(&["ingest", "--trail", path(&trail), "--data", path(&data)]));
    assert!(second.contains("events   0 stored"), "a second ingest adds nothing: {second}");
    assert!(second.contains("0 read"), "no file is read twice: {second}");

    let ids = exported_ids(&data, &[]);
    assert_eq!(ids.len() as u64, total, "export yields every event");
    assert_eq!(unique(&ids) as u64, total, "export yields each event once");
}

#[test]
fn export_filters_by_account_and_time() {
    let tmp = tempfile::tempdir().unwrap();
    let (trail, data) = (tmp.path().join("trail"), tmp.path().join("data"));
    ok(&["gen", "--out", path(&trail), "--accounts", "4", "--events", "5000", "--seed", "3", "--end", "2026-01-02T00:00:00Z"]);
    ok(&["ingest", "--trail", path(&trail), "--data", path(&data)]);
    let expected: serde_json::Value = serde_json::from_slice(&std::fs::read(trail.join("expected.json")).unwrap()).unwrap();
    let (account, count) = expected["totals"]["eventsByAccount"]
        .as_object()
        .unwrap()
        .iter()
        .max_by_key(|(_, n)| n.as_u64())
        .map(|(a, n)| (a.clone(), n.as_u64().unwrap()))
        .unwrap();
    let ids = exported_ids(&data, &["--account", &account]);
    assert_eq!(ids.len() as u64, count);
    assert!(ids.iter().all(|(a, _)| *a == account));

    let out = stdout(&ok(&["export", "--data", path(&data), "--since", "2026-01-01T12:00:00Z", "--until", "2026-01-01T13:00:00Z"]));
    let times: Vec<String> = out.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["eventTime"].as_str().unwrap().to_owned()).collect();
    assert!(!times.is_empty());
    assert!(times.iter().all(|t| t.as_str() >= "2026-01-01T12:00:00Z" && t.as_str() < "2026-01-01T13:00:00Z"), "{times:?}");
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "export is in event-time order");

    let bad = trailwatch().args(["export", "--data", path(&data), "--account", "12345"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("not a 12-digit AWS account id"), "{}", stderr(&bad));
}

/// The real dataset (newline-delimited records exported by another tool) is
/// read through the same path, record for record.
#[test]
fn newline_delimited_real_records_are_ingested() {
    let tmp = tempfile::tempdir().unwrap();
    let (trail, data) = (tmp.path().join("trail"), tmp.path().join("data"));
    let bytes = std::fs::read(shared_data().join("otrf-ec2-proxy-s3-exfiltration.ndjson.gz")).unwrap();
    let first_line: serde_json::Value = {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut text).unwrap();
        serde_json::from_str(text.lines().next().unwrap()).unwrap()
    };
    let account = first_line["recipientAccountId"].as_str().unwrap().to_owned();
    put(&trail, &log_key(&account, "20200909T0000Z", "OtrfExfiltration"), &bytes);
    let out = stdout(&ok(&["ingest", "--trail", path(&trail), "--data", path(&data)]));
    assert!(out.contains("103 stored"), "{out}");
    let ids = exported_ids(&data, &[]);
    assert_eq!((ids.len(), unique(&ids)), (103, 103));
}

/// `--no-history` runs the whole pipeline but keeps no events: the files are
/// recorded, sessions resolve identities and the rules raise the same alerts,
/// and the summary accounts for the time of every stage.
#[test]
fn without_history_the_pipeline_runs_and_keeps_no_events() {
    let tmp = tempfile::tempdir().unwrap();
    let (trail, data) = (tmp.path().join("trail"), tmp.path().join("data"));
    ok(&["gen", "--out", path(&trail), "--accounts", "6", "--events", "20000", "--seed", "5", "--incidents"]);
    let expected: serde_json::Value = serde_json::from_slice(&std::fs::read(trail.join("expected.json")).unwrap()).unwrap();
    let alerts = expected["alerts"].as_array().expect("the answer key lists the incidents' alerts").len();
    assert!(alerts > 0);

    let summary = stdout(&ok(&["ingest", "--trail", path(&trail), "--data", path(&data), "--no-history"]));
    assert!(summary.contains("events   20,000 stored"), "{summary}");
    assert!(summary.contains("history  off (--no-history)"), "{summary}");
    assert!(summary.contains(&format!("· {alerts} opened")), "the incidents raise their alerts without history: {summary}");
    let exact: u64 = summary.split("identity on arrival ").nth(1).and_then(|s| s.split(' ').next()).unwrap().replace(',', "").parse().unwrap();
    assert!(exact > 15_000, "sessions are still recorded and used: {summary}");
    let stages = summary.lines().find(|l| l.trim_start().starts_with("stages")).unwrap_or_else(|| panic!("a stages line: {summary}"));
    for stage in ["gunzip", "parse", "capture", "sessions", "resolve", "rules", "alerts", "store", "ledger"] {
        assert!(stages.contains(&format!("{stage} ")), "{stage} in {stages}");
    }

    assert!(exported_ids(&data, &[]).is_empty(), "no event was kept");
    let second = stdout(&ok(&["ingest", "--trail", path(&trail), "--data", path(&data), "--no-history"]));
    assert!(second.contains("0 read"), "the files were recorded in the ledger: {second}");
}
