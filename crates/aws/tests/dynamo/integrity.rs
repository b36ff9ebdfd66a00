//! The integrity store in DynamoDB against moto: digests and their files
//! recorded and checked again, neighbours read by two single-item Queries,
//! findings opened, refreshed and cleared as the SQLite store does, and the
//! completeness summary kept by deltas.

use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::interceptors::AfterDeserializationInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::operation::query::QueryOutput;
use trailwatch_aws::clients::Clients;
use trailwatch_aws::dynamo::{self, DynamoIntegrityStore, DynamoLedger, TableNames};
use trailwatch_aws::moto;
use trailwatch_core::event::FileStatus;
use trailwatch_core::integrity::{Completeness, DigestRecord, DigestSpan, FileState, Finding, FindingKind, IntegrityStore, ListedFile};
use trailwatch_core::ports::Checkpoints;

use super::{client, file, serial_client};

const ACCOUNT: &str = "111122223333";
const OTHER: &str = "444455556666";
const REGION: &str = "eu-west-1";
const HOUR: i64 = 3_600_000;
/// 2024-01-15T10:00:00Z
const START: i64 = 1_705_312_800_000;
const NOW: i64 = 1_705_400_000_000;

/// A store, and the ledger (its own table) it looks listed files up in.
async fn store_and_ledger(client: aws_sdk_dynamodb::Client) -> (DynamoIntegrityStore, DynamoLedger) {
    let (table, ledger_table) = (moto::unique("integrity"), moto::unique("ledger"));
    dynamo::create_integrity_table(&client, &table).await.unwrap();
    dynamo::create_ledger_table(&client, &ledger_table).await.unwrap();
    (DynamoIntegrityStore::new(client.clone(), table, &ledger_table), DynamoLedger::new(client, ledger_table))
}

/// A store over an empty ledger table.
async fn store() -> DynamoIntegrityStore {
    store_and_ledger(client().await).await.0
}

fn digest_key(account: &str, hour: i64) -> String {
    format!("AWSLogs/o-a1b2c3d4e5/{account}/CloudTrail-Digest/{REGION}/2024/01/15/{account}_CloudTrail-Digest_{REGION}_org-trail_us-east-1_h{hour:04}.json.gz")
}

fn log_key(account: &str, hour: i64, n: usize) -> String {
    format!("AWSLogs/o-a1b2c3d4e5/{account}/CloudTrail/{REGION}/2024/01/15/{account}_CloudTrail_{REGION}_h{hour:04}_{n}.json.gz")
}

/// The digest of hour `hour` (from START) of `account`, verified, listing `files` files.
fn digest(account: &str, hour: i64, files: u64) -> DigestRecord {
    let key = digest_key(account, hour);
    DigestRecord {
        location: format!("s3://org-trail-bucket/{key}"),
        key,
        account_id: account.into(),
        region: REGION.into(),
        start: START + hour * HOUR,
        end: START + (hour + 1) * HOUR,
        fingerprint: Some(format!("fp{hour}")),
        signature: "valid".into(),
        chain_ok: true,
        previous: None,
        files,
        checked_at: NOW + hour,
    }
}

fn listed(d: &DigestRecord, n: usize, state: FileState) -> ListedFile {
    ListedFile {
        key: log_key(&d.account_id, (d.start - START) / HOUR, n),
        digest_key: d.key.clone(),
        account_id: d.account_id.clone(),
        region: d.region.clone(),
        expected_sha256: format!("{n:064x}"),
        state,
        actual_sha256: (state == FileState::Mismatched).then(|| "f".repeat(64)),
    }
}

fn span(d: &DigestRecord) -> DigestSpan {
    DigestSpan::of(d)
}

async fn only(store: &DynamoIntegrityStore) -> Completeness {
    let all = store.completeness().await.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    all.into_iter().next().unwrap()
}

fn counts(c: &Completeness) -> (u64, u64, u64, u64, u64, u64) {
    (c.digests, c.files_listed, c.files_seen, c.files_verified, c.files_missing, c.files_mismatched)
}

#[tokio::test]
async fn a_digest_checked_again_replaces_its_files_and_counts_once() {
    let store = store().await;
    let d = DigestRecord { previous: Some(digest_key(ACCOUNT, -1)), ..digest(ACCOUNT, 0, 3) };
    let files = vec![listed(&d, 0, FileState::Verified), listed(&d, 1, FileState::Missing), listed(&d, 2, FileState::Mismatched)];
    store.record_digest(d.clone(), files.clone()).await.unwrap();
    assert_eq!(store.digest(&d.key).await.unwrap(), Some(d.clone()), "every field of the digest round-trips");
    assert_eq!(store.files(&d.key).await.unwrap(), files, "every field of the files round-trips");
    assert_eq!(store.problem_files(ACCOUNT, REGION).await.unwrap(), files[1..].to_vec());
    assert_eq!(counts(&only(&store).await), (1, 3, 0, 1, 1, 1));

    // Checked again: one file came back, one is no longer listed, one is new.
    let again = DigestRecord { checked_at: NOW + 99, fingerprint: None, previous: None, ..d.clone() };
    let files = vec![listed(&d, 0, FileState::Verified), listed(&d, 1, FileState::Verified), listed(&d, 3, FileState::Missing)];
    store.record_digest(again.clone(), files.clone()).await.unwrap();
    assert_eq!(store.digest(&d.key).await.unwrap(), Some(again));
    assert_eq!(store.files(&d.key).await.unwrap(), files);
    assert_eq!(store.problem_files(ACCOUNT, REGION).await.unwrap(), vec![files[2].clone()], "only the missing file is a problem");
    assert_eq!(counts(&only(&store).await), (1, 3, 0, 2, 1, 0), "counts do not double");
}

#[tokio::test]
async fn a_digest_checked_again_with_another_start_moves() {
    let store = store().await;
    let d = digest(ACCOUNT, 5, 0);
    // First unreadable (recorded at its file time's hour), then read with its real hour.
    let unreadable = DigestRecord { start: d.start - 30 * 60_000, signature: "digest-unreadable".into(), chain_ok: false, ..d.clone() };
    store.record_digest(unreadable, vec![]).await.unwrap();
    assert_eq!(only(&store).await.last_verified_digest, None);
    store.record_digest(d.clone(), vec![]).await.unwrap();
    let c = only(&store).await;
    assert_eq!((c.digests, c.last_verified_digest.as_deref(), c.last_verified_end), (1, Some(d.location.as_str()), Some(d.end)));
    let n = store.digest_neighbours(ACCOUNT, REGION, d.start + 1).await.unwrap();
    assert_eq!((n.before, n.after), (Some(span(&d)), None), "only the digest as read last is left");
}

#[tokio::test]
async fn neighbours_are_the_digests_either_side() {
    let store = store().await;
    let n = store.digest_neighbours(ACCOUNT, REGION, START).await.unwrap();
    assert_eq!((n.before, n.after), (None, None), "no digest yet");
    let (a, b, c) = (digest(ACCOUNT, 0, 0), digest(ACCOUNT, 1, 0), digest(ACCOUNT, 4, 0));
    for d in [&c, &a, &b] {
        store.record_digest(d.clone(), vec![]).await.unwrap();
    }
    // Another account's and region's digests are not neighbours.
    store.record_digest(digest(OTHER, 2, 0), vec![]).await.unwrap();
    store.record_digest(DigestRecord { region: "us-east-1".into(), ..digest(ACCOUNT, 3, 0) }, vec![]).await.unwrap();

    let n = store.digest_neighbours(ACCOUNT, REGION, b.start).await.unwrap();
    assert_eq!((n.before, n.after), (Some(span(&a)), Some(span(&c))));
    let n = store.digest_neighbours(ACCOUNT, REGION, a.start).await.unwrap();
    assert_eq!((n.before, n.after), (None, Some(span(&b))), "nothing before the first");
    let n = store.digest_neighbours(ACCOUNT, REGION, c.start).await.unwrap();
    assert_eq!((n.before, n.after), (Some(span(&b)), None), "nothing after the last");
    let n = store.digest_neighbours(ACCOUNT, REGION, START + 2 * HOUR).await.unwrap();
    assert_eq!((n.before, n.after), (Some(span(&b)), Some(span(&c))), "a start with no digest of its own");
}

#[tokio::test]
async fn problem_files_go_when_they_verify_again() {
    let store = store().await;
    let d = digest(ACCOUNT, 0, 4);
    let files: Vec<ListedFile> = (0..4).map(|i| listed(&d, i, if i < 2 { FileState::Verified } else { FileState::Missing })).collect();
    store.record_digest(d.clone(), files).await.unwrap();
    let mut problems = store.problem_files(ACCOUNT, REGION).await.unwrap();
    assert_eq!(problems.iter().map(|f| f.key.clone()).collect::<Vec<_>>(), vec![log_key(ACCOUNT, 0, 2), log_key(ACCOUNT, 0, 3)]);
    assert!(store.problem_files(OTHER, REGION).await.unwrap().is_empty());

    // One is back, the other is there but different now.
    problems[0].state = FileState::Verified;
    problems[1].state = FileState::Mismatched;
    problems[1].actual_sha256 = Some("a".repeat(64));
    store.update_files(problems.clone()).await.unwrap();
    assert_eq!(store.problem_files(ACCOUNT, REGION).await.unwrap(), vec![problems[1].clone()]);
    assert_eq!(counts(&only(&store).await), (1, 4, 0, 3, 0, 1));

    problems[1].state = FileState::Verified;
    problems[1].actual_sha256 = None;
    store.update_files(vec![problems[1].clone()]).await.unwrap();
    assert!(store.problem_files(ACCOUNT, REGION).await.unwrap().is_empty());
    assert_eq!(counts(&only(&store).await), (1, 4, 0, 4, 0, 0));
    assert_eq!(store.files(&d.key).await.unwrap()[3], problems[1], "the file's own item follows");
}

fn finding(kind: FindingKind, subject: &str, detail: &str, at: i64) -> Finding {
    Finding {
        kind,
        account_id: ACCOUNT.into(),
        region: REGION.into(),
        subject: subject.into(),
        digest: format!("s3://org-trail-bucket/{subject}.digest"),
        detail: detail.into(),
        at,
    }
}

#[tokio::test]
async fn findings_open_refresh_and_clear_as_in_embedded_mode() {
    let store = store().await;
    let missing = finding(FindingKind::LogFileMissing, "log-a", "log-a is gone", 10);
    let chain = finding(FindingKind::ChainBroken, "digest-1", "previous digest missing", 20);
    let checked = |f: &Finding| (f.kind, f.subject.clone());

    // Found: both open, both reported.
    let opened = store.reconcile(ACCOUNT, REGION, vec![checked(&missing), checked(&chain)], vec![missing.clone(), chain.clone()], NOW).await.unwrap();
    assert_eq!(opened, vec![missing.clone(), chain.clone()]);
    assert_eq!(store.open_findings(Some(ACCOUNT), Some(REGION)).await.unwrap(), vec![missing.clone(), chain.clone()], "ordered by time");

    // Found again, with another detail and time: refreshed, not reported, its first time kept.
    let later = Finding { detail: "log-a is still gone".into(), digest: "s3://org-trail-bucket/other".into(), at: 99, ..missing.clone() };
    let opened = store.reconcile(ACCOUNT, REGION, vec![checked(&missing)], vec![later.clone()], NOW + 1).await.unwrap();
    assert!(opened.is_empty(), "an open finding is not opened again: {opened:?}");
    let open = store.open_findings(Some(ACCOUNT), Some(REGION)).await.unwrap();
    assert_eq!(open[0], Finding { at: 10, ..later.clone() }, "digest and detail refreshed, time kept");

    // Checked and not found: cleared. A pair checked that was never open changes nothing.
    let never = (FindingKind::UnknownKey, "digest-9".to_owned());
    let opened = store.reconcile(ACCOUNT, REGION, vec![checked(&chain), never], vec![], NOW + 2).await.unwrap();
    assert!(opened.is_empty());
    assert_eq!(store.open_findings(Some(ACCOUNT), Some(REGION)).await.unwrap(), vec![Finding { at: 10, ..later }]);

    // Found again after it cleared: opened anew and reported.
    let opened = store.reconcile(ACCOUNT, REGION, vec![], vec![chain.clone()], NOW + 3).await.unwrap();
    assert_eq!(opened, vec![chain.clone()]);

    // Nothing checked, nothing found: nothing changes.
    assert!(store.reconcile(ACCOUNT, REGION, vec![], vec![], NOW + 4).await.unwrap().is_empty());
    assert_eq!(store.open_findings(None, None).await.unwrap().len(), 2);
}

#[tokio::test]
async fn open_findings_of_every_account_or_one() {
    let store = store().await;
    let mine = finding(FindingKind::DigestGap, "gap-1", "no digest", 5);
    let theirs = Finding { account_id: OTHER.into(), ..finding(FindingKind::SignatureMissing, "digest-2", "unsigned", 1) };
    let elsewhere = Finding { region: "us-east-1".into(), ..finding(FindingKind::UnknownKey, "digest-3", "key?", 2) };
    for f in [&theirs, &mine, &elsewhere] {
        store.reconcile(&f.account_id, &f.region, vec![], vec![f.clone()], NOW).await.unwrap();
    }
    assert_eq!(store.open_findings(None, None).await.unwrap(), vec![mine.clone(), elsewhere.clone(), theirs.clone()], "by account, region, time");
    assert_eq!(store.open_findings(Some(ACCOUNT), None).await.unwrap(), vec![mine.clone(), elsewhere.clone()]);
    assert_eq!(store.open_findings(None, Some(REGION)).await.unwrap(), vec![mine.clone(), theirs.clone()]);
    assert_eq!(store.open_findings(Some(OTHER), Some(REGION)).await.unwrap(), vec![theirs]);
    assert!(store.open_findings(Some(OTHER), Some("us-east-1")).await.unwrap().is_empty());
}

#[tokio::test]
async fn completeness_counts_what_the_ledger_recorded_and_the_last_verified_digest() {
    let (store, ledger) = store_and_ledger(client().await).await;
    let store = Arc::new(store);
    let (a, b) = (digest(ACCOUNT, 0, 2), digest(ACCOUNT, 1, 2));
    // The ledger recorded both files of the first hour; of the second, only a
    // claim was taken (not recorded), and one file not at all.
    let first: Vec<ListedFile> = (0..2).map(|i| listed(&a, i, FileState::Verified)).collect();
    let second: Vec<ListedFile> = vec![listed(&b, 0, FileState::Verified), listed(&b, 1, FileState::Missing)];
    ledger.record(first.iter().map(|f| file(&f.key, FileStatus::Done, 10)).collect::<Vec<_>>().into(), NOW).await.unwrap();
    ledger.claim(&second[0].key, 10, NOW, "collector-a", 60_000, NOW).await.unwrap();
    store.record_digest(a.clone(), first).await.unwrap();
    store.record_digest(b.clone(), second.clone()).await.unwrap();
    let c = only(&store).await;
    assert_eq!(counts(&c), (2, 4, 2, 3, 1, 0));
    assert_eq!((c.last_verified_digest.as_deref(), c.last_verified_end), (Some(b.location.as_str()), Some(b.end)));
    assert!(c.chain_ok);

    // The claimed file is recorded and the missing one arrives: checked again, both are seen.
    ledger.record(second.iter().map(|f| file(&f.key, FileStatus::Done, 10)).collect::<Vec<_>>().into(), NOW + 1).await.unwrap();
    store.update_files(second.iter().map(|f| ListedFile { state: FileState::Verified, ..f.clone() }).collect()).await.unwrap();
    assert_eq!(counts(&only(&store).await), (2, 4, 4, 4, 0, 0));

    // The newest digest fails its signature when checked again: the one before is the last verified.
    store.record_digest(DigestRecord { signature: "signature-invalid".into(), ..b.clone() }, vec![]).await.unwrap();
    let c = only(&store).await;
    assert_eq!((c.last_verified_digest.as_deref(), c.last_verified_end), (Some(a.location.as_str()), Some(a.end)));
    assert_eq!(counts(&c), (2, 2, 2, 2, 0, 0), "the second digest lists no file now");

    // Open findings count; a gap or a broken chain means the chain does not hold.
    let gap = finding(FindingKind::DigestGap, "gap", "no digest", 1);
    let unsigned = finding(FindingKind::SignatureMissing, &b.key, "unsigned", 1);
    store.reconcile(ACCOUNT, REGION, vec![], vec![gap.clone(), unsigned], NOW).await.unwrap();
    let c = only(&store).await;
    assert_eq!((c.open_findings, c.chain_ok), (2, false));
    store.reconcile(ACCOUNT, REGION, vec![(gap.kind, gap.subject)], vec![], NOW).await.unwrap();
    let c = only(&store).await;
    assert_eq!((c.open_findings, c.chain_ok), (1, true));

    // The ledger answers completeness from the store it is given.
    let linked = ledger.clone().with_integrity(store.clone());
    assert_eq!(Checkpoints::completeness(&linked).await.unwrap(), vec![c]);
    assert!(Checkpoints::completeness(&ledger).await.unwrap().is_empty(), "without a store, none");
}

#[tokio::test]
async fn files_the_ledger_records_late_count_as_seen_at_later_checks() {
    let (store, ledger) = store_and_ledger(client().await).await;
    // The digest is checked before the collector has recorded any of its 150 files.
    let first = digest(ACCOUNT, 0, 150);
    let files: Vec<ListedFile> = (0..150).map(|i| listed(&first, i, FileState::Verified)).collect();
    store.record_digest(first, files.clone()).await.unwrap();
    assert_eq!(counts(&only(&store).await), (1, 150, 0, 150, 0, 0));
    ledger.record(files.iter().map(|f| file(&f.key, FileStatus::Done, 10)).collect::<Vec<_>>().into(), NOW).await.unwrap();
    // Each later check of the account and region looks again at up to 100 of them, going round.
    store.record_digest(digest(ACCOUNT, 1, 0), vec![]).await.unwrap();
    assert_eq!(counts(&only(&store).await), (2, 150, 100, 150, 0, 0));
    store.record_digest(digest(ACCOUNT, 2, 0), vec![]).await.unwrap();
    assert_eq!(counts(&only(&store).await), (3, 150, 150, 150, 0, 0));
    store.record_digest(digest(ACCOUNT, 3, 0), vec![]).await.unwrap();
    assert_eq!(counts(&only(&store).await), (4, 150, 150, 150, 0, 0), "nothing counts twice");
}

#[tokio::test]
async fn concurrent_checks_of_one_account_keep_the_counts() {
    // The serial server: moto's own handling of one item's concurrent writes is not atomic.
    let (store, _) = store_and_ledger(serial_client().await).await;
    let digests: Vec<DigestRecord> = (0..6).map(|h| digest(ACCOUNT, h, 3)).collect();
    let mut writes = tokio::task::JoinSet::new();
    for d in &digests {
        let files: Vec<ListedFile> = (0..3).map(|i| listed(d, i, if i == 0 { FileState::Missing } else { FileState::Verified })).collect();
        let (store, d) = (store.clone(), d.clone());
        writes.spawn(async move { store.record_digest(d, files).await });
    }
    while let Some(result) = writes.join_next().await {
        result.unwrap().unwrap();
    }
    let c = only(&store).await;
    assert_eq!(counts(&c), (6, 18, 0, 12, 6, 0));
    assert_eq!(c.last_verified_digest.as_deref(), Some(digests[5].location.as_str()));
    assert_eq!(store.problem_files(ACCOUNT, REGION).await.unwrap().len(), 6);
}

/// Counts the items each Query a client makes returns.
#[derive(Debug, Default, Clone)]
struct QueryItems(Arc<Mutex<Vec<usize>>>);

impl Intercept for QueryItems {
    fn name(&self) -> &'static str {
        "QueryItems"
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if let Ok(output) = context.output_or_error() {
            if let Some(query) = output.downcast_ref::<QueryOutput>() {
                self.0.lock().unwrap().push(query.items().len());
            }
        }
        Ok(())
    }
}

#[tokio::test]
async fn neighbours_in_three_hundred_digests_read_two_items() {
    let clients = Clients::connect(&moto::shared().settings()).await.unwrap();
    let queries = QueryItems::default();
    let client = aws_sdk_dynamodb::Client::from_conf(aws_sdk_dynamodb::config::Builder::from(&clients.config).interceptor(queries.clone()).build());
    let (store, _) = store_and_ledger(client).await;
    let digests: Vec<DigestRecord> = (0..300).map(|h| digest(ACCOUNT, h, 0)).collect();
    for d in &digests {
        store.record_digest(d.clone(), vec![]).await.unwrap();
    }
    for i in [0usize, 150, 299] {
        queries.0.lock().unwrap().clear();
        let n = store.digest_neighbours(ACCOUNT, REGION, digests[i].start).await.unwrap();
        assert_eq!(n.before, i.checked_sub(1).map(|b| span(&digests[b])));
        assert_eq!(n.after, digests.get(i + 1).map(span));
        let read = queries.0.lock().unwrap().clone();
        assert_eq!(read.len(), 2, "two Queries: {read:?}");
        assert!(read.iter().all(|items| *items <= 1), "each reads at most one digest: {read:?}");
    }
    let c = only(&store).await;
    assert_eq!((c.digests, c.last_verified_digest.as_deref()), (300, Some(digests[299].location.as_str())));
}

#[tokio::test]
async fn a_missing_table_is_named_in_the_error() {
    let table = moto::unique("integrity-absent");
    let store = DynamoIntegrityStore::new(client().await, table.clone(), "ledger-absent");
    let err = store.digest_neighbours(ACCOUNT, REGION, START).await.unwrap_err();
    assert!(err.to_string().contains(&table), "{err}");
    let err = store.record_digest(digest(ACCOUNT, 0, 0), vec![]).await.unwrap_err();
    assert!(err.to_string().contains(&table), "{err}");
    let err = store.completeness().await.unwrap_err();
    assert!(err.to_string().contains(&table), "{err}");
}

#[tokio::test]
async fn the_integrity_table_is_made_once_with_its_index() {
    let client = client().await;
    let names = TableNames::with_prefix(&moto::unique("tw"));
    assert!(names.integrity.ends_with("-integrity") && names.integrity.starts_with("tw-"), "{}", names.integrity);
    for _ in 0..2 {
        dynamo::create_integrity_table(&client, &names.integrity).await.unwrap();
    }
    let table = client.describe_table().table_name(&names.integrity).send().await.unwrap().table.unwrap();
    let indexes: Vec<&str> = table.global_secondary_indexes().iter().filter_map(|i| i.index_name()).collect();
    assert_eq!(indexes, vec![dynamo::integrity::OPEN_FINDINGS]);
    // A table of that name with other keys is refused, not used.
    dynamo::create_aliases_table(&client, &names.aliases).await.unwrap();
    let err = dynamo::create_integrity_table(&client, &names.aliases).await.unwrap_err();
    assert!(err.to_string().contains(&names.aliases) && err.to_string().contains("key schema"), "{err}");
}
