//! The conformance suite every port implementation must pass. Adapters call
//! these from their own tests (feature `testing`); each function panics with
//! a message naming the broken behaviour.

use std::io::Read;

use crate::event::{Event, FileOutcome, FileStatus, RecordError, RejectedRecord};
use crate::layout::ObjectKind;
use crate::identity::{Confidence, Hop, IssueKind, Origin, OriginKind};
use crate::ports::{Checkpoints, HistoryQuery, HistoryStore, LedgerEntry, LogSource, ObjectMeta, OriginUpdate};

/// A realistic event for the suite.
pub fn sample_event(account: &str, id: &str, time: i64) -> Event {
    let raw = format!(
        r#"{{"eventVersion":"1.09","userIdentity":{{"type":"IAMUser","principalId":"AIDAEXAMPLE","arn":"arn:aws:iam::{account}:user/alice","accountId":"{account}","accessKeyId":"AKIAEXAMPLE","userName":"alice"}},"eventTime":"{}","eventSource":"ec2.amazonaws.com","eventName":"DescribeInstances","awsRegion":"eu-west-1","sourceIPAddress":"198.51.100.7","userAgent":"aws-cli/2.15.0","requestParameters":null,"responseElements":null,"requestID":"r-{id}","eventID":"{id}","readOnly":true,"eventType":"AwsApiCall","managementEvent":true,"recipientAccountId":"{account}","eventCategory":"Management"}}"#,
        crate::time::format_utc(time)
    );
    Event::from_record(0, raw.as_bytes(), account).expect("sample event is valid")
}

/// History: idempotent appends, time order, bounded pages without gaps or repeats.
pub async fn history_store(store: &dyn HistoryStore) {
    let base = 1_700_000_000_000;
    let mut events = Vec::new();
    for i in 0..25 {
        let account = if i % 2 == 0 { "111122223333" } else { "444455556666" };
        // Out of time order on purpose; two events share each timestamp.
        events.push(sample_event(account, &format!("ev-{i:02}"), base + ((i * 7) % 25 / 2) * 1000));
    }
    let report = store.append(events.clone().into()).await.expect("append");
    assert_eq!((report.inserted, report.duplicates), (25, 0), "first append inserts every event");
    let again = store.append(events[..10].to_vec().into()).await.expect("append again");
    assert_eq!((again.inserted, again.duplicates), (0, 10), "appending the same events again changes nothing");
    let mut same_id_other_account = sample_event("777788889999", "ev-00", base);
    same_id_other_account.region = "us-east-1".into();
    let other = store.append(vec![same_id_other_account].into()).await.expect("append");
    assert_eq!(other.inserted, 1, "the same eventID in another account is another event");
    assert_eq!(store.count().await.expect("count"), 26);

    let mut seen = Vec::new();
    let mut query = HistoryQuery { limit: 4, ..Default::default() };
    loop {
        let page = store.page(&query).await.expect("page");
        assert!(page.events.len() <= 4, "a page holds at most `limit` events");
        seen.extend(page.events.iter().map(|e| (e.event_time, e.account_id.clone(), e.event_id.clone())));
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 26, "paging visits every event once");
    let mut sorted = seen.clone();
    sorted.sort_by_key(|(t, _, _)| *t);
    assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), sorted.iter().map(|s| s.0).collect::<Vec<_>>(), "pages come in event-time order");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 26, "no event is repeated across pages");

    let bounded = store
        .page(&HistoryQuery { since: Some(base + 2000), until: Some(base + 5000), account: Some("111122223333".into()), limit: 100, ..Default::default() })
        .await
        .expect("bounded page");
    assert!(!bounded.events.is_empty());
    assert!(bounded.events.iter().all(|e| e.account_id == "111122223333" && e.event_time >= base + 2000 && e.event_time < base + 5000), "since is inclusive, until exclusive, account filters");
    assert_eq!(bounded.next, None, "a page that is not full is the last");
    let original = events.iter().find(|e| e.event_id == bounded.events[0].event_id && e.account_id == bounded.events[0].account_id).expect("stored event");
    assert_eq!(&bounded.events[0], original, "a stored event comes back as it was written, raw bytes included");

    // Origins: written with the event, replaced by a late resolution.
    let mut resolved = sample_event("111122223333", "ev-origin", base + 50_000);
    resolved.origin = Some(sample_origin(Confidence::Pending));
    store.append(vec![resolved.clone()].into()).await.expect("append with origin");
    let fetched = store.get("111122223333", "ev-origin").await.expect("get").expect("stored");
    assert_eq!(fetched, resolved, "the origin is stored with the event");
    assert_eq!(store.get("111122223333", "no-such-event").await.expect("get"), None);
    let update = OriginUpdate { account_id: "111122223333".into(), event_id: "ev-origin".into(), event_time: base + 50_000, origin: sample_origin(Confidence::Exact) };
    let missing = OriginUpdate { event_id: "no-such-event".into(), ..update.clone() };
    assert_eq!(store.set_origins(vec![update, missing].into()).await.expect("set origins"), 1, "only stored events are updated");
    let fetched = store.get("111122223333", "ev-origin").await.expect("get").expect("stored");
    assert_eq!(fetched.origin, Some(sample_origin(Confidence::Exact)), "a late resolution replaces the origin");
    assert_eq!(fetched.raw, resolved.raw, "the record itself is untouched");
}

/// A realistic resolved origin: an IAM user two hops away.
pub fn sample_origin(confidence: Confidence) -> Origin {
    let hop = |n: u8, account: &str, role: &str| Hop {
        event_id: format!("0c8d9e2f-5a1b-4c3d-9e8f-00000000000{n}"),
        account_id: account.into(),
        role_arn: Some(format!("arn:aws:iam::{account}:role/{role}")),
        session_name: Some("alice".into()),
        access_key_id: format!("ASIAEXAMPLEKEY00000{n}"),
        kind: IssueKind::AssumeRole,
        time: 1_700_000_000_000 + i64::from(n) * 60_000,
    };
    Origin {
        kind: OriginKind::IamUser,
        principal: Some("arn:aws:iam::111122223333:user/alice".into()),
        account_id: Some("111122223333".into()),
        provider: None,
        source_identity: Some("alice".into()),
        chain: vec![hop(1, "444455556666", "Deployer"), hop(2, "777788889999", "Admin")],
        confidence,
        reason: (confidence != Confidence::Exact).then(|| "waiting for the session of ASIAEXAMPLEKEY000002".into()),
    }
}

fn outcome(key: &str, status: FileStatus, events: u64) -> FileOutcome {
    FileOutcome {
        key: key.into(),
        kind: ObjectKind::Log,
        account_id: "111122223333".into(),
        region: "us-east-1".into(),
        size: 1234,
        modified: 1_700_000_000_000,
        status,
        events,
        bytes: 99_999,
        rejected: vec![],
        error: None,
    }
}

/// The ledger: lookups, replaced outcomes with counted attempts, summaries and problems.
pub async fn checkpoints(ledger: &dyn Checkpoints) {
    let a = "AWSLogs/111122223333/CloudTrail/us-east-1/2024/01/15/a.json.gz".to_owned();
    let b = "AWSLogs/111122223333/CloudTrail/us-east-1/2024/01/15/b.json.gz".to_owned();
    assert!(ledger.lookup(std::slice::from_ref(&a)).await.expect("lookup").is_empty(), "an unknown key has no entry");

    ledger.record(&outcome(&a, FileStatus::Done, 120), 10).await.expect("record");
    let mut failed = outcome(&b, FileStatus::Failed, 3);
    failed.error = Some("the data ends unexpectedly at byte 4096 (truncated file)".into());
    failed.rejected = vec![RejectedRecord { error: RecordError { index: 2, event_id: Some("e-2".into()), reason: "missing field `eventName`".into() }, raw: r#"{"eventID":"e-2"}"#.into() }];
    ledger.record(&failed, 20).await.expect("record");

    let found = ledger.lookup(&[a.clone(), b.clone(), "other".into()]).await.expect("lookup");
    assert_eq!(found.len(), 2);
    let entry = &found[&b];
    assert_eq!((entry.status, entry.events, entry.rejected, entry.attempts), (FileStatus::Failed, 3, 1, 1));
    assert_eq!(entry.error.as_deref(), failed.error.as_deref(), "the reason is kept");
    let meta = ObjectMeta { key: a.clone(), size: 1234, modified: 1_700_000_000_000 };
    assert!(!LedgerEntry::needs_work(found.get(&a), &meta), "a done file is not read again");
    assert!(LedgerEntry::needs_work(found.get(&a), &ObjectMeta { size: 1235, ..meta.clone() }), "a changed file is read again");
    assert!(LedgerEntry::needs_work(found.get(&b), &ObjectMeta { key: b.clone(), ..meta }), "a failed file is read again");

    let rejected = ledger.rejected(&b).await.expect("rejected");
    assert_eq!(rejected, failed.rejected, "rejected records are kept whole");

    let problems = ledger.problems(10).await.expect("problems");
    assert_eq!(problems.iter().map(|p| p.key.as_str()).collect::<Vec<_>>(), vec![b.as_str()]);

    ledger.record(&outcome(&b, FileStatus::Done, 200), 30).await.expect("record again");
    let entry = &ledger.lookup(std::slice::from_ref(&b)).await.expect("lookup")[&b];
    assert_eq!((entry.status, entry.events, entry.attempts, entry.error.as_deref()), (FileStatus::Done, 200, 2, None), "a retry replaces the outcome and counts the attempt");
    assert!(ledger.rejected(&b).await.expect("rejected").is_empty(), "a clean retry clears the old rejects");

    let summary = ledger.summary().await.expect("summary");
    assert_eq!(summary.by_status.get(&FileStatus::Done), Some(&2));
    assert_eq!(summary.by_status.get(&FileStatus::Failed), None);
    assert_eq!(summary.events, 320);
}

/// A source: listing by prefix in key order, sizes, and streaming reads.
/// `put` stores an object in the source under test.
pub async fn log_source(source: &dyn LogSource, put: &dyn Fn(&str, &[u8])) {
    let keys = [
        "AWSLogs/o-a1b2c3d4e5/111122223333/CloudTrail/us-east-1/2024/01/15/b.json.gz",
        "AWSLogs/o-a1b2c3d4e5/111122223333/CloudTrail/us-east-1/2024/01/15/a.json.gz",
        "AWSLogs/o-a1b2c3d4e5/444455556666/CloudTrail/us-east-1/2024/01/15/c.json.gz",
    ];
    for (i, key) in keys.iter().enumerate() {
        put(key, &vec![b'x'; 10 + i]);
    }
    let all = source.list("").await.expect("list");
    assert_eq!(all.len(), 3, "lists every object");
    let listed = source.list("AWSLogs/o-a1b2c3d4e5/111122223333/").await.expect("list");
    assert_eq!(listed.iter().map(|m| m.key.as_str()).collect::<Vec<_>>(), vec![keys[1], keys[0]], "lists one prefix, in key order");
    assert_eq!(listed[1].size, 10);
    let mut body = Vec::new();
    source.open(keys[2]).await.expect("open").read_to_end(&mut body).expect("read");
    assert_eq!(body, vec![b'x'; 12]);
    assert!(source.open("AWSLogs/missing").await.is_err(), "a missing object is an error");
    assert!(source.locate(keys[0]).contains(keys[0]), "locations name the key");
}

