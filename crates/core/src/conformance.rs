//! The conformance suite every port implementation must pass. Adapters call
//! these from their own tests (feature `testing`); each function panics with
//! a message naming the broken behaviour.

use std::io::Read;

use crate::event::{Event, FileOutcome, FileStatus, RecordError, RejectedRecord};
use crate::identity::{Caller, Confidence, Hop, IssueKind, Origin, OriginKind, PendingItem, PendingStore, Session, SessionStore};
use crate::layout::ObjectKind;
use crate::ports::{
    AccountActivity, Checkpoints, EventFilter, FileActivity, HistoryQuery, HistoryStore, LedgerEntry, LogSource, ObjectMeta, OriginUpdate, PortError,
    RegionActivity, MAX_SEARCH_LIMIT, MAX_SEARCH_RANGE_MS,
};

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
    assert!(
        bounded.events.iter().all(|e| e.account_id == "111122223333" && e.event_time >= base + 2000 && e.event_time < base + 5000),
        "since is inclusive, until exclusive, account filters"
    );
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
    let update =
        OriginUpdate { account_id: "111122223333".into(), event_id: "ev-origin".into(), event_time: base + 50_000, origin: sample_origin(Confidence::Exact) };
    let missing = OriginUpdate { event_id: "no-such-event".into(), ..update.clone() };
    assert_eq!(store.set_origins(vec![update, missing].into()).await.expect("set origins"), 1, "only stored events are updated");
    let fetched = store.get("111122223333", "ev-origin").await.expect("get").expect("stored");
    assert_eq!(fetched.origin, Some(sample_origin(Confidence::Exact)), "a late resolution replaces the origin");
    assert_eq!(fetched.raw, resolved.raw, "the record itself is untouched");

    history_get_many(store, &events).await;
    history_search(store).await;
}

/// Many events at once: each stored key once, whatever the order and
/// repeats of the keys; keys not stored are left out; the same eventID in
/// another account is another event. Runs after `history_store` stored
/// `events`, `ev-00` of 777788889999 and `ev-origin`.
async fn history_get_many(store: &dyn HistoryStore, events: &[Event]) {
    let key = |account: &str, id: &str| (account.to_owned(), id.to_owned());
    assert!(store.get_many(&[]).await.expect("get many").is_empty(), "no keys, no events");
    let keys = vec![
        key("111122223333", "ev-origin"),
        key("111122223333", "no-such-event"),
        key("777788889999", "ev-00"),
        key("111122223333", "ev-00"),
        key("444455556666", "ev-00"),
        key("111122223333", "ev-origin"),
    ];
    let mut found = store.get_many(&keys).await.expect("get many");
    found.sort_by(|a, b| (&a.account_id, &a.event_id).cmp(&(&b.account_id, &b.event_id)));
    let mut expected = Vec::new();
    for (account, id) in [("111122223333", "ev-00"), ("111122223333", "ev-origin"), ("777788889999", "ev-00")] {
        expected.push(store.get(account, id).await.expect("get").expect("stored"));
    }
    assert_eq!(found, expected, "each stored key once, as `get` reads it (origin included); missing keys left out");

    let all: Vec<(String, String)> = events.iter().rev().map(|e| key(&e.account_id, &e.event_id)).collect();
    let mut found = store.get_many(&all).await.expect("get many");
    found.sort_by(|a, b| (&a.account_id, &a.event_id).cmp(&(&b.account_id, &b.event_id)));
    let mut written = events.to_vec();
    written.sort_by(|a, b| (&a.account_id, &a.event_id).cmp(&(&b.account_id, &b.event_id)));
    assert_eq!(found, written, "a batch comes back as it was written, raw bytes included");
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

    ledger.record(vec![outcome(&a, FileStatus::Done, 120)].into(), 10).await.expect("record");
    let mut failed = outcome(&b, FileStatus::Failed, 3);
    failed.error = Some("the data ends unexpectedly at byte 4096 (truncated file)".into());
    failed.rejected = vec![RejectedRecord {
        error: RecordError { index: 2, event_id: Some("e-2".into()), reason: "missing field `eventName`".into() },
        raw: r#"{"eventID":"e-2"}"#.into(),
    }];
    ledger.record(vec![failed.clone()].into(), 20).await.expect("record");

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

    ledger.record(vec![outcome(&b, FileStatus::Done, 200)].into(), 30).await.expect("record again");
    let entry = &ledger.lookup(std::slice::from_ref(&b)).await.expect("lookup")[&b];
    assert_eq!(
        (entry.status, entry.events, entry.attempts, entry.error.as_deref()),
        (FileStatus::Done, 200, 2, None),
        "a retry replaces the outcome and counts the attempt"
    );
    assert!(ledger.rejected(&b).await.expect("rejected").is_empty(), "a clean retry clears the old rejects");

    let summary = ledger.summary().await.expect("summary");
    assert_eq!(summary.by_status.get(&FileStatus::Done), Some(&2));
    assert_eq!(summary.by_status.get(&FileStatus::Failed), None);
    assert_eq!(summary.events, 320);

    file_activity(ledger).await;
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

const HOUR: i64 = 3_600_000;
const MINUTE: i64 = 60_000;

/// A realistic session for the suites: an IAM user's role session.
pub fn sample_session(key: &str, issued_at: i64, lasts: i64, event_id: &str) -> Session {
    Session {
        access_key_id: key.into(),
        issued_at,
        expires_at: issued_at + lasts,
        kind: IssueKind::AssumeRole,
        account_id: "741258963012".into(),
        role_arn: Some("arn:aws:iam::741258963012:role/PaymentsDeployer".into()),
        session_name: Some(format!("deploy-{event_id}")),
        assumed_arn: Some(format!("arn:aws:sts::741258963012:assumed-role/PaymentsDeployer/deploy-{event_id}")),
        source_identity: Some("devon.clarke".into()),
        event_id: event_id.into(),
        event_account: "508917263341".into(),
        shared_event_id: Some(format!("shared-{event_id}")),
        caller: Caller {
            identity_type: "IAMUser".into(),
            arn: Some("arn:aws:iam::508917263341:user/devon.clarke".into()),
            principal_id: Some("AIDAFEO5EZBWEA7PQYPJZ".into()),
            account_id: Some("508917263341".into()),
            access_key_id: Some("AKIAEPABNI2D6CI7OKXG".into()),
            user_name: Some("devon.clarke".into()),
            ..Caller::default()
        },
    }
}

/// The role owner's copy of `session`: same key and issue time, the caller
/// known only as its account, another `eventID` and recipient account.
pub fn owner_copy(session: &Session) -> Session {
    Session {
        event_id: format!("{}-owner", session.event_id),
        event_account: session.account_id.clone(),
        caller: Caller {
            identity_type: "AWSAccount".into(),
            principal_id: session.caller.principal_id.clone(),
            account_id: session.caller.account_id.clone(),
            ..Caller::default()
        },
        ..session.clone()
    }
}

/// Sessions: lookups by access key and validity window, the latest of several
/// valid, a key reused hours apart, retention judged at `now`, and the two
/// copies of a cross-account call merged whichever arrives first.
///
/// The store under test must keep sessions at least 5 minutes and less than
/// a year past their expiration.
pub async fn session_store(store: &dyn SessionStore) {
    let t0 = 1_710_000_000_000;
    let get = |key: &'static str, at: i64| async move { store.get(key, at, at).await.expect("get") };
    assert_eq!(get("ASIAUNKNOWN000000000", t0).await, None, "an unknown key has no session");

    let first = sample_session("ASIACONFORMKEY000001", t0, HOUR, "first");
    store.put(vec![first.clone()].into()).await.expect("put");
    assert_eq!(get("ASIACONFORMKEY000001", t0 + 30 * MINUTE).await, Some(first.clone()), "a stored session comes back whole at a time inside its window");
    assert!(get("ASIACONFORMKEY000001", t0 - 30_000).await.is_some(), "a use logged up to a minute before issue still belongs to the session (clock slack)");
    assert!(
        get("ASIACONFORMKEY000001", t0 + HOUR + 30_000).await.is_some(),
        "a use logged up to a minute after expiry still belongs to the session (clock slack)"
    );
    assert_eq!(get("ASIACONFORMKEY000001", t0 - 10 * MINUTE).await, None, "no session before the key was issued");
    assert_eq!(get("ASIACONFORMKEY000001", t0 + HOUR + 10 * MINUTE).await, None, "no session after the credentials expired");

    // AWS hands the same key id out again hours later: each use finds its own session.
    let again = Session {
        caller: Caller { identity_type: "AWSService".into(), invoked_by: Some("glue.amazonaws.com".into()), ..Caller::default() },
        ..sample_session("ASIACONFORMKEY000001", t0 + 5 * HOUR, HOUR, "again")
    };
    store.put(vec![again.clone()].into()).await.expect("put");
    assert_eq!(
        get("ASIACONFORMKEY000001", t0 + 30 * MINUTE).await.map(|s| s.event_id),
        Some("first".to_owned()),
        "a reused key: the early use finds the early session"
    );
    assert_eq!(get("ASIACONFORMKEY000001", t0 + 5 * HOUR + 30 * MINUTE).await, Some(again), "a reused key: the later use finds the later session");
    assert_eq!(get("ASIACONFORMKEY000001", t0 + 3 * HOUR).await, None, "a reused key: between the two windows there is no session");

    // Several valid at once: the latest issued.
    let long = sample_session("ASIACONFORMKEY000002", t0, 12 * HOUR, "long");
    let short = sample_session("ASIACONFORMKEY000002", t0 + HOUR, HOUR, "short");
    store.put(vec![short, long].into()).await.expect("put");
    assert_eq!(
        get("ASIACONFORMKEY000002", t0 + 90 * MINUTE).await.map(|s| s.event_id),
        Some("short".to_owned()),
        "when several are valid, the latest issued wins"
    );
    assert_eq!(
        get("ASIACONFORMKEY000002", t0 + 3 * HOUR).await.map(|s| s.event_id),
        Some("long".to_owned()),
        "outside the later window, the earlier one still answers"
    );

    // Retention: judged at `now`, not at the time of use.
    let retained = sample_session("ASIACONFORMKEY000003", t0, HOUR, "retained");
    store.put(vec![retained].into()).await.expect("put");
    let found = store.get("ASIACONFORMKEY000003", t0 + 30 * MINUTE, t0 + HOUR + 5 * MINUTE).await.expect("get");
    assert!(found.is_some(), "a session is still returned a few minutes past expiry (the store's retention margin)");
    let found = store.get("ASIACONFORMKEY000003", t0 + 30 * MINUTE, t0 + 400 * 24 * HOUR).await.expect("get");
    assert_eq!(found, None, "a session whose retention has passed at `now` is never returned, even if the backend still holds it");

    // The two copies of a cross-account call, in either order.
    for (name, owner_first) in [("ASIACONFORMKEY000004", true), ("ASIACONFORMKEY000005", false)] {
        let caller_copy = sample_session(name, t0 + 2 * HOUR, HOUR, &format!("cross-{owner_first}"));
        let owner = owner_copy(&caller_copy);
        let order = if owner_first { [owner.clone(), caller_copy.clone()] } else { [caller_copy.clone(), owner.clone()] };
        for copy in order {
            store.put(vec![copy].into()).await.expect("put");
        }
        let merged = get(name, t0 + 2 * HOUR + MINUTE).await.expect("a cross-account session is found");
        let first = if owner_first { "the role owner's" } else { "the caller's" };
        assert_eq!(merged.caller, caller_copy.caller, "copies merge when {first} copy arrives first: the caller's full identity wins");
        assert_eq!(
            (merged.event_id.as_str(), merged.event_account.as_str()),
            (caller_copy.event_id.as_str(), caller_copy.event_account.as_str()),
            "copies merge when {first} copy arrives first: the caller's eventID is kept"
        );
        assert_eq!(merged, caller_copy, "copies merge when {first} copy arrives first: one session, nothing lost");
    }
    let lone_owner = owner_copy(&sample_session("ASIACONFORMKEY000006", t0, HOUR, "lone"));
    store.put(vec![lone_owner.clone(), lone_owner.clone()].into()).await.expect("put");
    assert_eq!(
        get("ASIACONFORMKEY000006", t0 + MINUTE).await,
        Some(lone_owner),
        "the role owner's copy alone is a session, and putting it twice changes nothing"
    );

    // One put, many sessions.
    let many: Vec<Session> = (0..50).map(|i| sample_session(&format!("ASIACONFORMBATCH{i:04}"), t0 + i * MINUTE, HOUR, &format!("batch-{i}"))).collect();
    store.put(many.clone().into()).await.expect("put many");
    for s in &many {
        assert_eq!(
            store.get(&s.access_key_id, s.issued_at + MINUTE, s.issued_at).await.expect("get").as_ref(),
            Some(s),
            "every session of a batch put is stored"
        );
    }
}

fn pending(account: &str, event_id: &str, event_time: i64, key: &str) -> PendingItem {
    PendingItem {
        account_id: account.into(),
        event_id: event_id.into(),
        event_time,
        actor: Caller {
            identity_type: "AssumedRole".into(),
            arn: Some("arn:aws:sts::629384751068:assumed-role/ExperimentRunner/li.wei-notebook".into()),
            account_id: Some(account.into()),
            access_key_id: Some(key.into()),
            session_issuer_arn: Some("arn:aws:iam::629384751068:role/ExperimentRunner".into()),
            ..Caller::default()
        },
        shared_event_id: (event_id.ends_with('s')).then(|| format!("shared-{event_id}")),
        missing_key: key.into(),
        missing_at: event_time - MINUTE,
    }
}

fn sorted(mut items: Vec<PendingItem>) -> Vec<PendingItem> {
    items.sort_by(|a, b| (&a.account_id, &a.event_id).cmp(&(&b.account_id, &b.event_id)));
    items
}

/// The pending set: items taken by the key they wait on or by age, replaced
/// by (account, eventID), and returned whole.
pub async fn pending_store(store: &dyn PendingStore) {
    let t0 = 1_710_000_000_000;
    assert_eq!(store.count().await.expect("count"), 0, "a new pending store is empty");
    assert!(store.take_waiting_on(&["ASIANOTHING".into()]).await.expect("take").is_empty(), "nothing waits on an unknown key");
    assert!(store.take_expired(t0).await.expect("take expired").is_empty(), "nothing expires in an empty store");

    let a1 = pending("629384751068", "e1", t0, "ASIAPENDING1");
    let a2 = pending("629384751068", "e2s", t0 + MINUTE, "ASIAPENDING1");
    let a3 = pending("629384751068", "e3", t0 + 2 * MINUTE, "ASIAPENDING2");
    let b1 = pending("741258963012", "e1", t0 + 3 * MINUTE, "ASIAPENDING3");
    store.add(vec![a1.clone(), a2.clone(), a3.clone(), b1.clone()].into()).await.expect("add");
    assert_eq!(store.count().await.expect("count"), 4, "the same eventID in another account is another waiting event");

    let taken = store.take_waiting_on(&["ASIAPENDING1".into()]).await.expect("take");
    assert_eq!(sorted(taken), vec![a1.clone(), a2], "take_waiting_on returns every event waiting on the key, whole");
    assert!(store.take_waiting_on(&["ASIAPENDING1".into()]).await.expect("take").is_empty(), "taken events are removed");
    assert_eq!(store.count().await.expect("count"), 2);

    let moved = PendingItem { missing_key: "ASIAPENDING4".into(), missing_at: t0 - HOUR, ..a3.clone() };
    store.add(vec![moved.clone()].into()).await.expect("add again");
    assert_eq!(store.count().await.expect("count"), 2, "adding an event again replaces it (by account and eventID)");
    assert!(store.take_waiting_on(&["ASIAPENDING2".into()]).await.expect("take").is_empty(), "a replaced event no longer waits on its old key");
    let taken = store.take_waiting_on(&["ASIAPENDING4".into(), "ASIAPENDING3".into(), "ASIAPENDING4".into()]).await.expect("take");
    assert_eq!(sorted(taken), vec![moved, b1], "take_waiting_on takes events waiting on any of the keys, each once");
    assert_eq!(store.count().await.expect("count"), 0);

    let old = pending("629384751068", "old", t0, "ASIAPENDING5");
    let edge = pending("629384751068", "edge", t0 + HOUR, "ASIAPENDING5");
    let new = pending("629384751068", "new", t0 + 2 * HOUR, "ASIAPENDING6");
    store.add(vec![new.clone(), old.clone(), edge.clone()].into()).await.expect("add");
    assert_eq!(store.take_expired(t0 + HOUR).await.expect("take expired"), vec![old], "take_expired takes events strictly before the bound, and only those");
    assert_eq!(store.count().await.expect("count"), 2);
    let rest = store.take_expired(t0 + 3 * HOUR).await.expect("take expired");
    assert_eq!(sorted(rest), vec![edge, new], "expired events come back whole");
    assert!(
        store.take_waiting_on(&["ASIAPENDING5".into(), "ASIAPENDING6".into()]).await.expect("take").is_empty(),
        "expired events no longer wait on their keys"
    );
    assert_eq!(store.count().await.expect("count"), 0);
}

/// Events for the search suite: `n` events ten minutes apart from `base`,
/// two at each time, with every searched field varying on its own cycle.
fn search_events(base: i64, from: usize, n: usize) -> Vec<Event> {
    const ACCOUNTS: [&str; 3] = ["210000000001", "210000000002", "210000000003"];
    const CALLS: [(&str, &str); 4] =
        [("ec2.amazonaws.com", "DescribeInstances"), ("iam.amazonaws.com", "CreateUser"), ("s3.amazonaws.com", "GetObject"), ("kms.amazonaws.com", "Decrypt")];
    (from..from + n)
        .map(|i| {
            let mut e = sample_event(ACCOUNTS[i % 3], &format!("search-{i:04}"), base + (i as i64 / 2) * 10 * MINUTE);
            e.region = ["eu-west-1", "us-east-1"][i % 2].into();
            (e.event_source, e.event_name) = (CALLS[i % 4].0.into(), CALLS[i % 4].1.into());
            if let Some(actor) = e.actor.as_mut() {
                actor.arn = Some(format!("arn:aws:iam::{}:user/{}", ACCOUNTS[i % 3], ["alice", "bob", "ci", "dana", "erin"][i % 5]));
            }
            e.source_ip = Some(if i % 7 == 0 { "203.0.113.9" } else { "198.51.100.7" }.into());
            e.error_code = (i % 6 == 0).then(|| "AccessDenied".into());
            e.read_only = [Some(true), Some(false), None, Some(true)][i % 4];
            e.origin = match i % 3 {
                0 => Some(search_origin(OriginKind::IamUser, "arn:aws:iam::210000000009:user/alice")),
                1 => Some(search_origin(OriginKind::IdentityCenterUser, "d-9067642ac7/bob")),
                _ => None,
            };
            e
        })
        .collect()
}

fn search_origin(kind: OriginKind, principal: &str) -> Origin {
    Origin { kind, principal: Some(principal.into()), ..sample_origin(Confidence::Exact) }
}

/// Every page of a search, following `next`, as (time, account, eventID);
/// `between` runs after each page (to store more events meanwhile).
async fn search_all(store: &dyn HistoryStore, filter: &EventFilter, between: &mut dyn FnMut(usize) -> Vec<Event>) -> Vec<(i64, String, String)> {
    let mut filter = filter.clone();
    let mut seen = Vec::new();
    for page_number in 0.. {
        let page = store.search(&filter).await.expect("search");
        assert!(page.hits.len() <= filter.limit, "a search page holds at most `limit` events");
        for hit in &page.hits {
            assert_eq!(hit.cursor.event_time, hit.event.event_time, "a hit's cursor is at its event's time");
        }
        assert_eq!(page.next.is_some(), page.hits.len() == filter.limit, "a full page has a next, a short one none");
        if let Some(next) = page.next {
            assert_eq!(page.hits.last().map(|h| h.cursor), Some(next), "a page's next is its last hit's cursor");
        }
        seen.extend(page.hits.iter().map(|h| (h.event.event_time, h.event.account_id.clone(), h.event.event_id.clone())));
        let more = between(page_number);
        if !more.is_empty() {
            store.append(more.into()).await.expect("append between pages");
        }
        match page.next {
            Some(next) => filter.after = Some(next),
            None => break,
        }
        assert!(page_number < 10_000, "search paging ends");
    }
    seen
}

fn ids(events: &[Event]) -> Vec<(i64, String, String)> {
    events.iter().map(|e| (e.event_time, e.account_id.clone(), e.event_id.clone())).collect()
}

/// What a search must return from `stored` (in arrival order): the events in
/// the range that match, in (event time, arrival) order.
fn expected(stored: &[Event], filter: &EventFilter) -> Vec<(i64, String, String)> {
    let mut found: Vec<&Event> = stored.iter().filter(|e| e.event_time >= filter.since && e.event_time < filter.until && filter.matches(e)).collect();
    found.sort_by_key(|e| e.event_time); // stable: arrival order breaks ties
    found.into_iter().map(|e| (e.event_time, e.account_id.clone(), e.event_id.clone())).collect()
}

/// Search: every filter alone and together, the time bounds (`since`
/// inclusive, `until` exclusive), refused ranges and limits, paging while
/// events are stored between pages, origins replaced by `set_origins`, and
/// the newest event per account and region. Uses its own accounts
/// (2100000000xx) and times, so it can run on a store other suites used.
pub async fn history_search(store: &dyn HistoryStore) {
    let base = 1_720_000_123_000; // not on an hour: ranges cross hour boundaries
    let mut stored = search_events(base, 0, 60);
    for chunk in stored.chunks(25) {
        store.append(chunk.to_vec().into()).await.expect("append");
    }
    let (since, until) = (base, base + 30 * 10 * MINUTE);
    let all = EventFilter::new(since, until, 1000);
    let search = |f: EventFilter| async move { search_all(store, &f, &mut |_| Vec::new()).await };

    // The oracle agrees with hand counts, so the suite does not test the filter with itself alone.
    let count = |f: EventFilter| expected(&stored, &f).len();
    assert_eq!(count(all.clone()), 60);
    assert_eq!(count(EventFilter { account: Some("210000000002".into()), ..all.clone() }), 20);
    assert_eq!(count(EventFilter { read_only: Some(false), ..all.clone() }), 15);
    assert_eq!(count(EventFilter { origin_principal: Some("d-9067642ac7/bob".into()), ..all.clone() }), 20);

    assert_eq!(search(all.clone()).await, ids(&stored), "a search without filters returns the range in (event time, arrival) order");
    let filters: Vec<(&str, EventFilter)> = vec![
        ("account", EventFilter { account: Some("210000000003".into()), ..all.clone() }),
        ("region", EventFilter { region: Some("us-east-1".into()), ..all.clone() }),
        ("event source", EventFilter { event_source: Some("iam.amazonaws.com".into()), ..all.clone() }),
        ("event name", EventFilter { event_name: Some("Decrypt".into()), ..all.clone() }),
        ("actor ARN", EventFilter { actor_arn: Some("arn:aws:iam::210000000001:user/dana".into()), ..all.clone() }),
        ("origin principal", EventFilter { origin_principal: Some("arn:aws:iam::210000000009:user/alice".into()), ..all.clone() }),
        ("origin kind", EventFilter { origin_kind: Some(OriginKind::IdentityCenterUser), ..all.clone() }),
        ("source IP", EventFilter { source_ip: Some("203.0.113.9".into()), ..all.clone() }),
        ("error code", EventFilter { error_code: Some("AccessDenied".into()), ..all.clone() }),
        ("read-only", EventFilter { read_only: Some(true), ..all.clone() }),
        ("not read-only", EventFilter { read_only: Some(false), ..all.clone() }),
        ("no such value", EventFilter { event_name: Some("describeinstances".into()), ..all.clone() }),
        (
            "account, region and read-only",
            EventFilter { account: Some("210000000001".into()), region: Some("eu-west-1".into()), read_only: Some(true), ..all.clone() },
        ),
        (
            "origin principal and kind with event source",
            EventFilter {
                origin_principal: Some("d-9067642ac7/bob".into()),
                origin_kind: Some(OriginKind::IdentityCenterUser),
                event_source: Some("iam.amazonaws.com".into()),
                ..all.clone()
            },
        ),
        (
            "origin principal of another kind",
            EventFilter { origin_principal: Some("d-9067642ac7/bob".into()), origin_kind: Some(OriginKind::IamUser), ..all.clone() },
        ),
        (
            "every filter",
            EventFilter {
                account: Some("210000000001".into()),
                region: Some("eu-west-1".into()),
                event_source: Some("ec2.amazonaws.com".into()),
                event_name: Some("DescribeInstances".into()),
                actor_arn: Some("arn:aws:iam::210000000001:user/alice".into()),
                origin_principal: Some("arn:aws:iam::210000000009:user/alice".into()),
                origin_kind: Some(OriginKind::IamUser),
                source_ip: Some("203.0.113.9".into()),
                error_code: Some("AccessDenied".into()),
                read_only: Some(true),
                ..all.clone()
            },
        ),
    ];
    for (name, filter) in filters {
        let want = expected(&stored, &filter);
        assert_eq!(search(filter.clone()).await, want, "search by {name}");
        let paged = search(EventFilter { limit: 3, ..filter }).await;
        assert_eq!(paged, want, "search by {name}, in pages of 3");
    }
    let every = expected(
        &stored,
        &EventFilter {
            account: Some("210000000001".into()),
            actor_arn: Some("arn:aws:iam::210000000001:user/alice".into()),
            origin_principal: Some("arn:aws:iam::210000000009:user/alice".into()),
            error_code: Some("AccessDenied".into()),
            ..all.clone()
        },
    );
    assert!(!every.is_empty(), "the combined filters of the suite match something");

    // Time bounds: since inclusive, until exclusive, at the events' own times.
    let (t4, t9) = (stored[8].event_time, stored[18].event_time);
    let bounded = search(EventFilter::new(t4, t9, 1000)).await;
    assert_eq!(bounded, ids(&stored[8..18]), "since is inclusive and until exclusive");
    assert_eq!(search(EventFilter::new(t4, t4, 10)).await, vec![], "an empty range finds nothing");
    let principal = EventFilter { origin_principal: Some("d-9067642ac7/bob".into()), ..EventFilter::new(t4, t9, 1000) };
    assert_eq!(search(principal.clone()).await, expected(&stored, &principal), "since inclusive and until exclusive with an origin principal");
    let far = EventFilter::new(base - 20 * 24 * HOUR, base - 19 * 24 * HOUR, 10);
    assert_eq!(search(far).await, vec![], "a range before every event finds nothing");

    // Refused: ranges over the limit, backwards ranges, and page sizes out of bounds.
    let refused = |f: EventFilter, why: &'static str| async move {
        match store.search(&f).await {
            Err(e @ PortError::Invalid { .. }) => assert!(!e.is_retryable(), "{why}: not retryable"),
            other => panic!("{why}: expected PortError::Invalid, got {other:?}"),
        }
    };
    let widest = EventFilter::new(base, base + MAX_SEARCH_RANGE_MS, 10);
    assert!(store.search(&widest).await.is_ok(), "a range of exactly MAX_SEARCH_RANGE_MS is allowed");
    refused(EventFilter::new(base, base + MAX_SEARCH_RANGE_MS + 1, 10), "a range over MAX_SEARCH_RANGE_MS is refused").await;
    refused(EventFilter { origin_principal: Some("x".into()), ..EventFilter::new(i64::MIN, i64::MAX, 10) }, "an unbounded range is refused").await;
    refused(EventFilter::new(base + 1, base, 10), "a range that ends before it starts is refused").await;
    refused(EventFilter::new(base, base + 1, 0), "a page of 0 events is refused").await;
    refused(EventFilter::new(base, base + 1, MAX_SEARCH_LIMIT + 1), "a page over MAX_SEARCH_LIMIT is refused").await;

    // Paging while events are stored between pages: later events (and one at
    // the very time of the cursor) show up once; nothing repeats or is skipped.
    for filter in [
        EventFilter { limit: 4, ..all.clone() },
        EventFilter { origin_principal: Some("arn:aws:iam::210000000009:user/alice".into()), limit: 2, ..all.clone() },
        EventFilter { account: Some("210000000002".into()), read_only: Some(true), limit: 1, ..all.clone() },
    ] {
        let mut next_index = 1000 + stored.len();
        let mut added: Vec<Event> = Vec::new();
        let before = stored.clone();
        let seen = search_all(store, &filter, &mut |page| {
            if page > 8 {
                return Vec::new();
            }
            // Two events at the end of the range: times late enough to come after any cursor.
            let mut more = search_events(base, next_index, 2);
            for e in &mut more {
                e.event_time = until - 1 - (8 - page as i64) * 1000;
            }
            next_index += 2;
            added.extend(more.iter().cloned());
            more
        })
        .await;
        stored.extend(added);
        let want = expected(&stored, &filter);
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), seen.len(), "no event is repeated across search pages while events are stored");
        assert_eq!(seen, want, "pages of a search skip nothing stored after the cursor while events are stored between pages");
        assert!(want.len() > expected(&before, &filter).len(), "the suite did store matching events between pages");
    }
    // An event stored at the cursor's own time, after the cursor's event, is on the next page.
    let page = store.search(&EventFilter { limit: 1, ..EventFilter::new(stored[0].event_time, until, 1) }).await.expect("search");
    let cursor = page.next.expect("a full page has a next");
    let mut tie = search_events(base, 5000, 1);
    tie[0].event_time = cursor.event_time;
    store.append(tie.clone().into()).await.expect("append a tie");
    stored.extend(tie.clone());
    let rest = search_all(store, &EventFilter { after: Some(cursor), ..EventFilter::new(stored[0].event_time, until, 5) }, &mut |_| Vec::new()).await;
    assert!(rest.contains(&ids(&tie)[0]), "an event stored later at the cursor's time comes after the cursor");
    let first = &page.hits[0].event;
    assert!(!rest.contains(&(first.event_time, first.account_id.clone(), first.event_id.clone())), "the cursor's own event is not repeated");
    // Resuming after any hit of a page continues right after it.
    let five = store.search(&EventFilter::new(since, until, 5)).await.expect("search");
    let after_second = store.search(&EventFilter { after: Some(five.hits[1].cursor), ..EventFilter::new(since, until, 3) }).await.expect("search");
    assert_eq!(
        after_second.hits.iter().map(|h| &h.event.event_id).collect::<Vec<_>>(),
        five.hits[2..5].iter().map(|h| &h.event.event_id).collect::<Vec<_>>(),
        "a search resumed after a hit's cursor continues right after that hit"
    );

    // Origin filters follow set_origins.
    let moved = stored.iter().find(|e| e.origin.as_ref().and_then(|o| o.principal.as_deref()) == Some("d-9067642ac7/bob")).expect("an event of bob").clone();
    let carol = search_origin(OriginKind::SamlUser, "carol@example.com");
    let update = OriginUpdate { account_id: moved.account_id.clone(), event_id: moved.event_id.clone(), event_time: moved.event_time, origin: carol.clone() };
    assert_eq!(store.set_origins(vec![update].into()).await.expect("set origins"), 1);
    if let Some(e) = stored.iter_mut().find(|e| e.account_id == moved.account_id && e.event_id == moved.event_id) {
        e.origin = Some(carol);
    }
    let by_carol = EventFilter { origin_principal: Some("carol@example.com".into()), ..all.clone() };
    assert_eq!(search(by_carol).await, ids(std::slice::from_ref(&moved)), "a search by origin finds the event under its new origin");
    let by_bob = EventFilter { origin_principal: Some("d-9067642ac7/bob".into()), ..all.clone() };
    let bob = search(by_bob.clone()).await;
    assert!(!bob.iter().any(|(_, a, id)| *a == moved.account_id && *id == moved.event_id), "a search by the old origin no longer finds it");
    assert_eq!(bob, expected(&stored, &by_bob));
    let saml = search(EventFilter { origin_kind: Some(OriginKind::SamlUser), ..all.clone() }).await;
    assert_eq!(saml, ids(std::slice::from_ref(&moved)), "a search by origin kind follows the new origin");

    // The newest event per account and region.
    let last = store.last_events().await.expect("last events");
    for account in ["210000000001", "210000000002", "210000000003"] {
        for region in ["eu-west-1", "us-east-1"] {
            let newest = stored.iter().filter(|e| e.account_id == account && e.region == region).map(|e| e.event_time).max();
            let found = last.iter().find(|l| l.account_id == account && l.region == region).map(|l| l.event_time);
            assert_eq!(found, newest, "last_events: the newest event of {account} in {region}");
        }
    }
    let mut order = last.iter().map(|l| (l.account_id.clone(), l.region.clone())).collect::<Vec<_>>();
    let unsorted = order.clone();
    order.sort();
    assert_eq!(order, unsorted, "last_events come by account, then region");
}

fn file_at(account: &str, region: &str, kind: ObjectKind, file_time: i64, status: FileStatus, events: u64) -> FileOutcome {
    let key = crate::layout::TrailKey::log("", Some("o-a1b2c3d4e5"), account, kind, region, file_time, &format!("{file_time:016X}")).to_key();
    FileOutcome { key, kind, account_id: account.into(), region: region.into(), modified: file_time + 3 * MINUTE, ..outcome("", status, events) }
}

/// Ingest health per account and region: files of events (digests aside),
/// failures, the newest file by the time in its key, and when files were last
/// recorded. Uses its own accounts (3100000000xx).
pub async fn file_activity(ledger: &dyn Checkpoints) {
    let t0 = 1_720_000_020_000 - 1_720_000_020_000 % MINUTE;
    let (a, b) = ("310000000001", "310000000002");
    ledger
        .record(
            vec![
                file_at(a, "us-east-1", ObjectKind::Log, t0, FileStatus::Done, 10),
                file_at(a, "us-east-1", ObjectKind::Log, t0 + 5 * MINUTE, FileStatus::Failed, 2),
                file_at(a, "us-east-1", ObjectKind::Digest, t0 + HOUR, FileStatus::Digest, 0),
                file_at(a, "eu-west-1", ObjectKind::Insight, t0 + 10 * MINUTE, FileStatus::Done, 3),
            ]
            .into(),
            100,
        )
        .await
        .expect("record");
    ledger.record(vec![file_at(b, "us-east-1", ObjectKind::Log, t0 - HOUR, FileStatus::Empty, 0)].into(), 200).await.expect("record");
    // Recorded later though older: the last file time is the newest key, the
    // last processing the newest record.
    ledger.record(vec![file_at(a, "us-east-1", ObjectKind::Log, t0 - 2 * HOUR, FileStatus::Done, 5)].into(), 300).await.expect("record");

    let ours: Vec<FileActivity> = ledger.activity().await.expect("activity").into_iter().filter(|f| f.account_id.starts_with("3100000000")).collect();
    let fa = |account: &str, region: &str, last_file_time, last_processed_at, files, failed, events| FileActivity {
        account_id: account.into(),
        region: region.into(),
        last_file_time,
        last_processed_at,
        files,
        failed,
        events,
    };
    assert_eq!(
        ours,
        vec![
            fa(a, "eu-west-1", t0 + 10 * MINUTE, 100, 1, 0, 3),
            fa(a, "us-east-1", t0 + 5 * MINUTE, 300, 3, 1, 17),
            fa(b, "us-east-1", t0 - HOUR, 200, 1, 0, 0),
        ],
        "activity per account and region, by account then region, digests aside, the file time from the key"
    );
    // A retry that succeeds is no longer a failure.
    ledger.record(vec![file_at(a, "us-east-1", ObjectKind::Log, t0 + 5 * MINUTE, FileStatus::Done, 4)].into(), 400).await.expect("record");
    let again = ledger.activity().await.expect("activity");
    let region = again.iter().find(|f| f.account_id == a && f.region == "us-east-1").expect("account a in us-east-1");
    assert_eq!((region.files, region.failed, region.events, region.last_processed_at), (3, 0, 19, 400), "a retried file counts once, as its last outcome");
}

/// Accounts seen ([`crate::ports::account_activity`]) from a ledger and a
/// history: accounts with files or events, the newest event per account and
/// region, and the files' health. Uses accounts 4100000000xx.
pub async fn account_activity(ledger: &dyn Checkpoints, history: &dyn HistoryStore) {
    let t0 = 1_720_000_020_000 - 1_720_000_020_000 % MINUTE;
    let (a, b) = ("410000000001", "410000000002");
    ledger.record(vec![file_at(a, "us-east-1", ObjectKind::Log, t0, FileStatus::Done, 2)].into(), 100).await.expect("record");
    let mut events = vec![sample_event(a, "aa-1", t0 - MINUTE), sample_event(a, "aa-2", t0 - 2 * MINUTE), sample_event(b, "bb-1", t0 - HOUR)];
    events[0].region = "us-east-1".into();
    events[1].region = "us-east-1".into();
    history.append(events.into()).await.expect("append");
    let ours: Vec<AccountActivity> = crate::ports::account_activity(ledger, history)
        .await
        .expect("account activity")
        .into_iter()
        .filter(|a| a.account_id.starts_with("4100000000"))
        .collect();
    let files = FileActivity { account_id: a.into(), region: "us-east-1".into(), last_file_time: t0, last_processed_at: 100, files: 1, failed: 0, events: 2 };
    assert_eq!(
        ours,
        vec![
            AccountActivity {
                account_id: a.into(),
                last_event_time: Some(t0 - MINUTE),
                regions: vec![RegionActivity { region: "us-east-1".into(), last_event_time: Some(t0 - MINUTE), files: Some(files) }],
            },
            AccountActivity {
                account_id: b.into(),
                last_event_time: Some(t0 - HOUR),
                regions: vec![RegionActivity { region: "eu-west-1".into(), last_event_time: Some(t0 - HOUR), files: None }],
            },
        ],
        "accounts seen: the ledger's files and history's newest events, per account and region"
    );
}
