//! Threshold windows across a restart of the AWS enricher. A password
//! guesser fails four console sign-ins within three minutes; CloudTrail
//! delivers the first two in one file and the last two in the next, and the
//! enricher is killed in between. The restarted enricher refills its windows
//! from the stored history (the events of the window before its first
//! batch's newest event, from one Athena query), so the burst is counted
//! whole and `console-signin-brute-force` is raised, holding all four. The
//! emulator runs no SQL: the query's answer is canned from the objects the
//! first enricher wrote, and the query Athena recorded is checked.

use std::time::Duration;

use serde_json::{json, Value};

use trailwatch_aws::alerts::DynamoAlertStore;
use trailwatch_aws::clients::Clients;
use trailwatch_aws::dynamo::DynamoLedger;
use trailwatch_aws::history::{read_event_object, result_column_names, result_row};
use trailwatch_aws::moto::Moto;
use trailwatch_core::alerts::{AlertQuery, AlertStore};
use trailwatch_core::ports::Checkpoints;
use trailwatch_core::time::format_utc;

use super::{attribute, receive_all, trailwatch, Service};

const ACCOUNT: &str = "741258963012";
const BUCKET: &str = "org-trail";
const HISTORY: &str = "trailwatch/events/";

/// A failed console sign-in of `ops-legacy` at `time` (seconds after 15:09:00).
fn failure(n: u32, second: u32) -> Value {
    json!({
        "eventVersion": "1.09",
        "userIdentity": {"type": "IAMUser", "principalId": "AIDAE5FKD452NBNCZCP6A", "accountId": ACCOUNT, "accessKeyId": "", "userName": "ops-legacy"},
        "eventTime": format!("2024-03-12T15:{:02}:{:02}Z", 9 + second / 60, second % 60),
        "eventSource": "signin.amazonaws.com",
        "eventName": "ConsoleLogin",
        "awsRegion": "us-east-1",
        "sourceIPAddress": "203.0.113.201",
        "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36",
        "errorMessage": "Failed authentication",
        "requestParameters": null,
        "responseElements": {"ConsoleLogin": "Failure"},
        "additionalEventData": {"LoginTo": "https://console.aws.amazon.com/console/home", "MobileVersion": "No", "MFAUsed": "No"},
        "eventID": format!("6f1c2d3e-4a5b-4c6d-8e7f-90a1b2c3d4e{n}"),
        "readOnly": false,
        "eventType": "AwsConsoleSignIn",
        "managementEvent": true,
        "recipientAccountId": ACCOUNT,
        "eventCategory": "Management",
        "tlsDetails": {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256", "clientProvidedHostHeader": "signin.aws.amazon.com"}
    })
}

/// The log file of five minutes of `ACCOUNT` in us-east-1 holding `records`.
fn log_file(minute: u32, unique: &str, records: Vec<Value>) -> (String, Vec<u8>) {
    use std::io::Write;
    let key = format!("AWSLogs/o-q8r7s6t5u4/{ACCOUNT}/CloudTrail/us-east-1/2024/03/12/{ACCOUNT}_CloudTrail_us-east-1_20240312T15{minute:02}Z_{unique}.json.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(json!({ "Records": records }).to_string().as_bytes()).unwrap();
    (key, gz.finish().unwrap())
}

async fn upload_and_wait(clients: &Clients, (key, body): (String, Vec<u8>), services: &mut [&mut Service]) {
    clients.s3.put_object().bucket(BUCKET).key(&key).body(body.into()).send().await.unwrap();
    let ledger = DynamoLedger::new(clients.dynamodb.clone(), "tw-ledger");
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        for s in services.iter_mut() {
            s.assert_running();
        }
        if ledger.lookup(std::slice::from_ref(&key)).await.unwrap().values().any(|e| e.status.is_final()) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{key} not final after 90 s");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_split_by_a_restart_is_counted_whole_on_aws() {
    let _turn = crate::my_turn().await;
    let moto = Moto::start().unwrap();
    let clients = Clients::connect(&moto.settings()).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (env, alerts_url) = super::aws_setup(&moto, &clients, &[]).await;
    let mut collector_cmd = trailwatch(&moto);
    collector_cmd.args(["collector", "--wait-seconds", "1", "--enricher-delay", "0"]);
    let mut collector = Service::start("collector", collector_cmd, tmp.path(), &env);
    let enricher_cmd = || {
        let mut c = trailwatch(&moto);
        c.args(["enricher", "--wait-seconds", "1", "--no-organizations", "--no-athena", "--no-digest-check"]);
        c
    };

    // Two failures, then the enricher dies.
    let mut enricher = Service::start("enricher", enricher_cmd(), tmp.path(), &env);
    upload_and_wait(&clients, log_file(10, "Fa1lUr3sF1rstTw0", vec![failure(1, 5), failure(2, 46)]), &mut [&mut collector, &mut enricher]).await;
    enricher.kill();
    let early = receive_all(&clients, &alerts_url, Duration::from_secs(2)).await;
    assert!(early.iter().all(|m| attribute(m, "rule_id") != "console-signin-brute-force"), "two failures are no burst yet");

    // What the first enricher stored is what Athena would answer the refill with.
    let listed = clients.s3.list_objects_v2().bucket(BUCKET).prefix(HISTORY).send().await.unwrap();
    let columns = result_column_names();
    let mut rows = vec![columns.iter().map(|c| Some(c.clone())).collect::<Vec<_>>()];
    for object in listed.contents() {
        let key = object.key().unwrap();
        let body = clients.s3.get_object().bucket(BUCKET).key(key).send().await.unwrap().body.collect().await.unwrap().into_bytes();
        for stored in read_event_object(&body, key).unwrap() {
            rows.push(result_row(&stored.event, stored.event.origin.as_ref(), stored.seq));
        }
    }
    assert_eq!(rows.len(), 3, "the first enricher stored both failures");
    let account = clients.caller_identity().await.unwrap().account;
    let region = clients.region().unwrap().to_owned();
    moto.can_athena_results(&account, &region, vec![(columns, rows)]).unwrap();

    // Restarted, it reads the next file: two more failures within the window.
    let mut enricher = Service::start("enricher", enricher_cmd(), tmp.path(), &env);
    upload_and_wait(&clients, log_file(10, "Fa1lUr3sTh3nM0r3", vec![failure(3, 102), failure(4, 169)]), &mut [&mut collector, &mut enricher]).await;
    let messages = receive_all(&clients, &alerts_url, Duration::from_secs(4)).await;
    let burst: Vec<Value> = messages
        .iter()
        .filter(|m| attribute(m, "rule_id") == "console-signin-brute-force" && attribute(m, "action") == "trigger")
        .map(|m| serde_json::from_str(m.body.as_deref().unwrap()).unwrap())
        .collect();
    assert_eq!(burst.len(), 1, "the burst raised one alert across the restart: {messages:?}");
    assert_eq!(burst[0]["alert"]["account_id"], ACCOUNT, "{}", burst[0]);
    let summary = burst[0]["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("ops-legacy"), "{summary}");
    // Raised by the fourth failure, the second after the restart: it opens with the burst's first.
    assert_eq!(burst[0]["alert"]["first_seen"], "2024-03-12T15:09:05Z", "the burst's first failure, before the restart: {}", burst[0]);
    let stored = DynamoAlertStore::new(clients.dynamodb.clone(), "tw-alerts").list(&AlertQuery { limit: 10, ..Default::default() }).await.unwrap().alerts;
    let stored: Vec<_> =
        stored.iter().filter(|a| a.rule_id == "console-signin-brute-force").map(|a| (a.count, format_utc(a.first_seen), format_utc(a.last_seen))).collect();
    assert_eq!(
        stored,
        [(4, "2024-03-12T15:09:05Z".to_owned(), "2024-03-12T15:11:49Z".to_owned())],
        "the stored alert holds the whole burst, each failure once"
    );

    // Each start asked Athena once, for the events of the window before its first batch's newest event.
    let ids = clients.athena.list_query_executions().send().await.unwrap().query_execution_ids.unwrap_or_default();
    let mut queries = Vec::new();
    for id in ids {
        let q = clients.athena.get_query_execution().query_execution_id(id).send().await.unwrap().query_execution.unwrap();
        queries.push(q.query.unwrap_or_default());
    }
    let reads: Vec<&String> = queries.iter().filter(|q| !q.starts_with("CREATE ")).collect();
    assert_eq!(reads.len(), 2, "one refill query per start of the enricher: {queries:#?}");
    assert!(reads.iter().all(|q| q.contains(r#"FROM "trailwatch"."events""#)), "queries of the history table: {reads:#?}");
    // The tables aws-setup made: the origins settled later are read where the enricher writes them.
    let origins = queries.iter().find(|q| q.contains("`trailwatch`.`events_origins`")).expect("aws-setup created the origins table");
    assert!(origins.contains(&format!("LOCATION 's3://{BUCKET}/trailwatch/events-origins/'")), "{origins}");
}
