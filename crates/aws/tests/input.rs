//! The input side of AWS mode against the moto emulator: the trail bucket as
//! a log source, S3 notifications through SQS (directly and through SNS),
//! the queue operations, and account names from Organizations.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration, TopicConfiguration};
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use tokio_util::sync::CancellationToken;
use trailwatch_aws::clients::Clients;
use trailwatch_aws::moto::{self, unique};
use trailwatch_aws::organizations::{load_directory, OrganizationsDirectory};
use trailwatch_aws::s3::S3Source;
use trailwatch_aws::sqs::{self, parse_notification, Notification, NotificationError, Queue, Received, VisibilityKeeper};
use trailwatch_core::accounts::{AccountDirectory, AccountTag};
use trailwatch_core::ports::{LogSource, PortError};

#[path = "input/signatures.rs"]
mod signatures;

const TRAIL_KEY: &str = "AWSLogs/o-abc/111122223333/CloudTrail/us-east-1/2026/11/30/111122223333_CloudTrail_us-east-1_20261130T0000Z_x.json.gz";
const SPACED_KEY: &str = "AWSLogs/o-abc/111122223333/CloudTrail/us-east-1/2026/11/30/copy of 111122223333_CloudTrail_us-east-1_20261130T0005Z_y.json.gz";

async fn clients() -> Clients {
    Clients::connect(&moto::shared().settings()).await.unwrap()
}

/// A new bucket, as a source.
async fn new_bucket(clients: &Clients) -> S3Source {
    let bucket = unique("trail");
    clients.s3.create_bucket().bucket(&bucket).send().await.unwrap();
    S3Source::new(clients.s3.clone(), bucket)
}

/// A new queue without a dead-letter queue.
async fn new_queue(clients: &Clients, name: &str) -> Queue {
    let out = clients.sqs.create_queue().queue_name(unique(name)).send().await.unwrap();
    Queue::new(clients.sqs.clone(), out.queue_url().unwrap())
}

/// Receives until `want` messages came or 20 s passed.
async fn receive_at_least(queue: &Queue, want: usize) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        got.extend(queue.receive(10, Duration::from_secs(1), Duration::from_secs(60)).await.unwrap());
    }
    got
}

/// Bytes that do not compress, the same for the same seed.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_source_passes_the_log_source_conformance_suite() {
    let clients = clients().await;
    let source = new_bucket(&clients).await;
    let handle = tokio::runtime::Handle::current();
    let writer = source.clone();
    let put = move |key: &str, body: &[u8]| {
        tokio::task::block_in_place(|| handle.block_on(writer.put(key, body.to_vec()))).unwrap();
    };
    trailwatch_core::conformance::log_source(&source, &put).await;
    assert_eq!(source.locate("AWSLogs/a.json.gz"), format!("s3://{}/AWSLogs/a.json.gz", source.bucket()));
    match source.open("AWSLogs/missing.json.gz").await {
        Err(PortError::NotFound { what }) => assert!(what.contains(&format!("s3://{}/AWSLogs/missing.json.gz", source.bucket())), "{what}"),
        Err(other) => panic!("a missing object should be NotFound, got {other}"),
        Ok(_) => panic!("a missing object opened"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_through_more_than_a_thousand_objects() {
    let clients = clients().await;
    let source = new_bucket(&clients).await;
    let count = 1005;
    let mut puts = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let source = source.clone();
        puts.spawn(async move {
            for i in (worker..count).step_by(8) {
                source.put(&format!("many/{i:04}/x.json.gz"), vec![b'x'; i % 7]).await.unwrap();
            }
        });
    }
    while let Some(done) = puts.join_next().await {
        done.unwrap();
    }

    let listed = source.list("many/").await.unwrap();
    let expected: Vec<String> = (0..count).map(|i| format!("many/{i:04}/x.json.gz")).collect();
    assert_eq!(listed.iter().map(|m| m.key.clone()).collect::<Vec<_>>(), expected, "every object, once, in key order");
    assert!(listed.iter().enumerate().all(|(i, m)| m.size == (i % 7) as u64), "sizes are the objects'");
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!(listed.iter().all(|m| (now_ms - m.modified).abs() < 600_000), "modified times are epoch millis of the upload");
    assert_eq!(source.list("many/00").await.unwrap().len(), 100, "a prefix inside a key component");

    let prefixes = source.list_delimited("many/", "/").await.unwrap();
    assert_eq!(prefixes, (0..count).map(|i| format!("many/{i:04}/")).collect::<Vec<_>>(), "common prefixes page too");
    assert_eq!(source.list_delimited("", "/").await.unwrap(), vec!["many/"]);
}

#[tokio::test]
async fn the_backfill_walks_the_trail_layout_by_prefix() {
    let clients = clients().await;
    let source = new_bucket(&clients).await;
    for key in [
        "AWSLogs/o-abc/111122223333/CloudTrail/us-east-1/2026/11/30/a.json.gz",
        "AWSLogs/o-abc/111122223333/CloudTrail/eu-west-1/2026/11/30/b.json.gz",
        "AWSLogs/o-abc/111122223333/CloudTrail-Digest/us-east-1/2026/11/30/c.json.gz",
        "AWSLogs/o-abc/444455556666/CloudTrail/us-east-1/2026/12/01/d.json.gz",
    ] {
        source.put(key, b"{}".to_vec()).await.unwrap();
    }
    assert_eq!(source.list_delimited("AWSLogs/o-abc/", "/").await.unwrap(), vec!["AWSLogs/o-abc/111122223333/", "AWSLogs/o-abc/444455556666/"]);
    assert_eq!(
        source.list_delimited("AWSLogs/o-abc/111122223333/CloudTrail/", "/").await.unwrap(),
        vec!["AWSLogs/o-abc/111122223333/CloudTrail/eu-west-1/", "AWSLogs/o-abc/111122223333/CloudTrail/us-east-1/"]
    );
    assert_eq!(source.list_delimited("AWSLogs/o-xyz/", "/").await.unwrap(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_object_streams_back_byte_for_byte_in_bounded_memory() {
    let clients = clients().await;
    let source = new_bucket(&clients).await;
    let original = noise(30 << 20, 0x9E37_79B9_7F4A_7C15);
    let stored = gzip(&original);
    assert!(stored.len() > 30 << 20, "the object is as large as meant: {} bytes", stored.len());
    source.put(TRAIL_KEY, stored.clone()).await.unwrap();

    let mut body = source.open_body(TRAIL_KEY).await.unwrap();
    // Read as the collector does: on a blocking thread.
    let (ahead, streamed) = tokio::task::spawn_blocking(move || {
        let mut first = vec![0; 64 * 1024];
        body.read_exact(&mut first).unwrap();
        std::thread::sleep(Duration::from_millis(1500)); // a slow reader: the download must wait for it
        let ahead = body.received();
        let mut rest = Vec::new();
        body.read_to_end(&mut rest).unwrap();
        first.extend(rest);
        (ahead, first)
    })
    .await
    .unwrap();
    assert!(ahead < 8 << 20, "the download ran {ahead} bytes ahead of a reader that took 64 KiB");
    assert_eq!(streamed.len(), stored.len());
    assert!(streamed == stored, "the streamed bytes differ from the stored ones");

    // The same through the port, decompressed on the fly.
    let reader = source.open(TRAIL_KEY).await.unwrap();
    let decompressed = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        GzDecoder::new(reader).read_to_end(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(decompressed == original, "the log file decompresses to what was written");
}

/// A bucket notifying a queue directly, and a topic with a plain and a raw subscriber.
struct Pipeline {
    source: S3Source,
    direct: Queue,
    via_sns: Queue,
    via_sns_raw: Queue,
}

async fn pipeline(clients: &Clients) -> Pipeline {
    let source = new_bucket(clients).await;
    let direct = new_queue(clients, "direct").await;
    let via_sns = new_queue(clients, "via-sns").await;
    let via_sns_raw = new_queue(clients, "via-sns-raw").await;
    let topic = clients.sns.create_topic().name(unique("trail-logs")).send().await.unwrap().topic_arn().unwrap().to_owned();
    clients.sns.subscribe().topic_arn(&topic).protocol("sqs").endpoint(via_sns.arn().await.unwrap()).send().await.unwrap();
    clients
        .sns
        .subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(via_sns_raw.arn().await.unwrap())
        .attributes("RawMessageDelivery", "true")
        .send()
        .await
        .unwrap();
    let created = Event::from("s3:ObjectCreated:*");
    let configuration = NotificationConfiguration::builder()
        .queue_configurations(QueueConfiguration::builder().queue_arn(direct.arn().await.unwrap()).events(created.clone()).build().unwrap())
        .topic_configurations(TopicConfiguration::builder().topic_arn(&topic).events(created).build().unwrap())
        .build();
    clients.s3.put_bucket_notification_configuration().bucket(source.bucket()).notification_configuration(configuration).send().await.unwrap();
    Pipeline { source, direct, via_sns, via_sns_raw }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_log_files_are_announced_through_sqs_and_sns() {
    let clients = clients().await;
    let p = pipeline(&clients).await;
    p.source.put(TRAIL_KEY, gzip(b"{\"Records\":[]}")).await.unwrap();
    p.source.put(SPACED_KEY, gzip(b"{\"Records\":[{}]}")).await.unwrap();

    for (name, queue) in [("direct", &p.direct), ("SNS", &p.via_sns), ("SNS raw", &p.via_sns_raw)] {
        let messages = receive_at_least(queue, 3).await;
        assert_eq!(messages.len(), 3, "{name}: the test event and two objects");
        assert_eq!(parse_notification(&messages[0].body), Ok(Notification::Test), "{name}: the test event comes first: {}", messages[0].body);
        let mut announced = Vec::new();
        for message in &messages[1..] {
            assert_eq!(message.receive_count, 1);
            match parse_notification(&message.body) {
                Ok(Notification::Objects(objects)) => announced.extend(objects),
                other => panic!("{name}: {other:?} from {}", message.body),
            }
        }
        let keys: Vec<&str> = announced.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, vec![TRAIL_KEY, SPACED_KEY], "{name}: the keys as they were uploaded");
        for object in &announced {
            assert_eq!(object.bucket, p.source.bucket());
            assert_eq!(object.event_name, "ObjectCreated:Put");
            // The announced key opens: what the collector does next.
            let mut body = p.source.open_body(&object.key).await.unwrap();
            let bytes = tokio::task::spawn_blocking(move || {
                let mut bytes = Vec::new();
                body.read_to_end(&mut bytes).map(|_| bytes)
            })
            .await
            .unwrap()
            .unwrap();
            assert_eq!(Some(bytes.len() as u64), object.size, "{name}: {}", object.key);
        }
        let handles: Vec<String> = messages.iter().map(|m| m.receipt_handle.clone()).collect();
        assert_eq!(queue.delete_batch(&handles).await.unwrap(), vec![], "{name}: every message deleted");
        assert_eq!(queue.approximate_depth().await.unwrap().total(), 0, "{name}: nothing left");
    }
}

#[tokio::test]
async fn a_poison_message_moves_to_the_dead_letter_queue() {
    let clients = clients().await;
    let (url, dlq_url) = sqs::create_queue_with_dlq(&clients.sqs, &unique("poison"), 3, Duration::from_secs(30)).await.unwrap();
    let queue = Queue::new(clients.sqs.clone(), &url);
    let dlq = Queue::new(clients.sqs.clone(), &dlq_url);
    queue.send("<html>502 Bad Gateway</html>", Duration::ZERO).await.unwrap();

    for attempt in 1..=3 {
        // Not deleted and visible again at once: as if processing failed.
        let got = queue.receive(10, Duration::from_secs(2), Duration::ZERO).await.unwrap();
        assert_eq!(got.len(), 1, "receive {attempt}");
        assert_eq!(got[0].receive_count, attempt);
        assert!(matches!(parse_notification(&got[0].body), Err(NotificationError::NotJson(_))));
    }
    assert_eq!(queue.receive(10, Duration::from_secs(1), Duration::ZERO).await.unwrap(), vec![], "gone from the queue");
    let dead = dlq.receive(10, Duration::from_secs(2), Duration::from_secs(30)).await.unwrap();
    assert_eq!(dead.len(), 1, "in the dead-letter queue");
    assert_eq!(dead[0].body, "<html>502 Bad Gateway</html>");
}

#[tokio::test]
async fn visibility_extension_keeps_a_message_hidden_past_its_timeout() {
    let clients = clients().await;
    let queue = new_queue(&clients, "long-file").await;
    queue.send("a long file", Duration::ZERO).await.unwrap();
    let visibility = Duration::from_secs(2);
    let got = queue.receive(1, Duration::from_secs(2), visibility).await.unwrap();
    assert_eq!(got.len(), 1);
    let keeper = VisibilityKeeper::start(queue.clone(), got[0].receipt_handle.clone(), visibility);

    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(queue.receive(1, Duration::ZERO, visibility).await.unwrap(), vec![], "still hidden well past 2 s");
    let depth = queue.approximate_depth().await.unwrap();
    assert_eq!((depth.visible, depth.in_flight), (0, 1));
    assert!(keeper.extensions() >= 3, "extended {} times", keeper.extensions());
    assert!(!keeper.is_lost());
    keeper.stop().await;

    // Without the keeper the message comes back, received a second time.
    let again = queue.receive(1, Duration::from_secs(5), visibility).await.unwrap();
    assert_eq!(again.len(), 1, "visible again once no longer extended");
    assert_eq!(again[0].receive_count, 2);
    queue.delete(&again[0].receipt_handle).await.unwrap();
}

#[tokio::test]
async fn batches_send_and_delete_many_messages() {
    let clients = clients().await;
    let queue = new_queue(&clients, "batches").await;
    let name = queue.url().rsplit('/').next().unwrap().to_owned();
    assert_eq!(sqs::url_of(&clients.sqs, &name).await.unwrap(), queue.url());

    let bodies: Vec<String> = (0..25).map(|i| format!("message {i}")).collect();
    assert_eq!(queue.send_batch(&bodies, Duration::ZERO).await.unwrap(), vec![]);
    assert_eq!(queue.approximate_depth().await.unwrap().visible, 25);
    let received = receive_at_least(&queue, 25).await;
    let mut got: Vec<String> = received.iter().map(|m| m.body.clone()).collect();
    got.sort_unstable();
    let mut want = bodies.clone();
    want.sort_unstable();
    assert_eq!(got, want);
    let mut handles: Vec<String> = received.iter().map(|m| m.receipt_handle.clone()).collect();
    handles.insert(12, "not-a-receipt-handle".to_owned());
    let failures = queue.delete_batch(&handles).await.unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].index, 12, "the failure points at the bad handle");
    assert_eq!(queue.approximate_depth().await.unwrap().total(), 0);

    // A delay beyond SQS's limit is cut to 15 minutes, not refused.
    queue.send("later", Duration::from_secs(3600)).await.unwrap();
    assert_eq!(queue.receive(10, Duration::from_secs(1), Duration::from_secs(30)).await.unwrap(), vec![], "delayed");
}

#[tokio::test]
async fn a_missing_queue_is_not_found_and_named() {
    let clients = clients().await;
    match sqs::url_of(&clients.sqs, "no-such-queue-anywhere").await {
        Err(PortError::NotFound { what }) => assert!(what.contains("no-such-queue-anywhere"), "{what}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn organizations_gives_names_emails_ou_paths_and_tags() {
    let clients = clients().await;
    let org = &clients.organizations;
    org.create_organization().feature_set(aws_sdk_organizations::types::OrganizationFeatureSet::All).send().await.unwrap();
    let root = org.list_roots().send().await.unwrap().roots()[0].id().unwrap().to_owned();
    let ou = |parent: String, name: &'static str| async move {
        let out = org.create_organizational_unit().parent_id(parent).name(name).send().await.unwrap();
        out.organizational_unit().unwrap().id().unwrap().to_owned()
    };
    let security = ou(root.clone(), "Security").await;
    let prod = ou(security.clone(), "Prod").await;
    let account = |name: &'static str, tags: &'static [(&'static str, &'static str)]| async move {
        let mut request = org.create_account().account_name(name).email(format!("{}@example.com", name.to_lowercase().replace(' ', "-")));
        for (k, v) in tags {
            request = request.tags(aws_sdk_organizations::types::Tag::builder().key(*k).value(*v).build().unwrap());
        }
        request.send().await.unwrap().create_account_status().unwrap().account_id().unwrap().to_owned()
    };
    let log_archive = account("Log Archive", &[("owner", "security-team"), ("env", "prod")]).await;
    let audit = account("Audit", &[]).await;
    let sandbox = account("Sandbox", &[("owner", "alice")]).await;
    org.move_account().account_id(&log_archive).source_parent_id(&root).destination_parent_id(&prod).send().await.unwrap();
    org.move_account().account_id(&audit).source_parent_id(&root).destination_parent_id(&security).send().await.unwrap();

    let directory = load_directory(org).await.unwrap();
    let get = |id: &str| directory.get(id).unwrap_or_else(|| panic!("{id} is missing"));
    assert_eq!(directory.alias(&log_archive), Some("Log Archive"));
    assert_eq!(get(&log_archive).email.as_deref(), Some("log-archive@example.com"));
    assert_eq!(get(&log_archive).ou_path.as_deref(), Some("Root/Security/Prod"));
    assert_eq!(
        get(&log_archive).tags,
        vec![AccountTag { key: "owner".into(), value: "security-team".into() }, AccountTag { key: "env".into(), value: "prod".into() }]
    );
    assert_eq!(get(&log_archive).status.as_deref(), Some("ACTIVE"));
    assert!(get(&log_archive).joined_timestamp.is_some());
    assert_eq!(get(&audit).ou_path.as_deref(), Some("Root/Security"));
    assert!(get(&audit).tags.is_empty());
    assert_eq!(get(&sandbox).ou_path.as_deref(), Some("Root"));
    assert_eq!(directory.len(), 4, "the management account and the three created");

    // The kept directory applies configured aliases over account names.
    let overrides = HashMap::from([(sandbox.clone(), "alice-sandbox".to_owned())]);
    let kept = OrganizationsDirectory::load(org.clone(), overrides).await.unwrap();
    assert_eq!(kept.current().alias(&sandbox), Some("alice-sandbox"));
    assert_eq!(kept.current().alias(&audit), Some("Audit"));
    assert!(kept.age().is_some());
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_last_good_directory() {
    let clients = clients().await;
    // Nothing listens on port 1: every call fails at once.
    let unreachable = aws_sdk_organizations::Client::from_conf(
        aws_sdk_organizations::config::Builder::from(&clients.config)
            .endpoint_url("http://127.0.0.1:1")
            .retry_config(aws_sdk_organizations::config::retry::RetryConfig::disabled())
            .build(),
    );
    let initial = AccountDirectory::from_list_accounts(r#"{"Accounts":[{"Id":"111122223333","Name":"payments-prod"}]}"#, "accounts.json").unwrap();
    let directory = Arc::new(OrganizationsDirectory::new(unreachable, HashMap::new(), initial));
    let err = directory.refresh().await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(directory.current().alias("111122223333"), Some("payments-prod"));

    let shutdown = CancellationToken::new();
    let task = directory.spawn_refresh(Duration::from_millis(100), shutdown.clone());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(directory.current().alias("111122223333"), Some("payments-prod"), "kept through failed refreshes");
    assert_eq!(directory.age(), None, "never read from Organizations");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("the refresh task stops on shutdown").unwrap();
}
