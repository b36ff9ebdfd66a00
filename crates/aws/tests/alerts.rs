//! The alerts side of AWS mode against the emulator: the DynamoDB alert
//! store (the shared conformance suite, concurrent commits, commits larger
//! than one transaction) and the SNS sink (through SNS to SQS queues).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;

use trailwatch_aws::alerts::{create_table, DynamoAlertStore};
use trailwatch_aws::clients::Clients;
use trailwatch_aws::moto;
use trailwatch_aws::sns::SnsSink;
use trailwatch_core::alerts::conformance::{alert_store, sample_alert, sample_event_ref};
use trailwatch_core::alerts::{Alert, AlertChange, AlertSink, AlertStatus, AlertStore, Delivery, Severity, Transition, TransitionKind};

async fn clients() -> Clients {
    Clients::connect(&moto::shared().settings()).await.unwrap()
}

async fn new_store(clients: &Clients) -> DynamoAlertStore {
    let table = moto::unique("alerts");
    create_table(&clients.dynamodb, &table).await.unwrap();
    DynamoAlertStore::new(clients.dynamodb.clone(), table)
}

fn opened(alert: &Alert) -> AlertChange {
    let t = Transition {
        alert_id: alert.id.clone(),
        revision: 1,
        kind: TransitionKind::Opened,
        at: alert.first_seen,
        recorded_at: alert.updated_at,
        cause: "opened by a test".into(),
        by: None,
        notify: true,
    };
    AlertChange { alert: alert.clone(), base_revision: None, transitions: vec![t] }
}

fn updated(from: &Alert, notify: bool) -> AlertChange {
    let mut alert = from.clone();
    alert.revision += 1;
    alert.count += 1;
    alert.updated_at += 1;
    let t = Transition {
        alert_id: alert.id.clone(),
        revision: alert.revision,
        kind: TransitionKind::Updated,
        at: alert.last_seen,
        recorded_at: alert.updated_at,
        cause: format!("match {}", alert.count),
        by: None,
        notify,
    };
    AlertChange { alert, base_revision: Some(from.revision), transitions: vec![t] }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_store_passes_the_conformance_suite() {
    let clients = clients().await;
    alert_store(|| {
        let clients = clients.clone();
        async move { Arc::new(new_store(&clients).await) as Arc<dyn AlertStore> }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_the_table_twice_is_harmless() {
    let clients = clients().await;
    let table = moto::unique("alerts-twice");
    create_table(&clients.dynamodb, &table).await.unwrap();
    create_table(&clients.dynamodb, &table).await.expect("a table that exists is fine");
    let out = clients.dynamodb.describe_table().table_name(&table).send().await.unwrap();
    let table = out.table.unwrap();
    let mut indexes: Vec<&str> = table.global_secondary_indexes().iter().filter_map(|g| g.index_name()).collect();
    indexes.sort_unstable();
    assert_eq!(indexes, vec!["by_account", "by_principal", "by_rule", "by_severity", "by_status", "due", "origin_event", "quiet"]);
    assert_eq!(table.billing_mode_summary().and_then(|b| b.billing_mode()).map(|m| m.as_str()), Some("PAY_PER_REQUEST"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_opening_one_dedup_key_let_exactly_one_win() {
    // moto applies concurrent conditional writes without a lock: a server answering one at a time, as DynamoDB would.
    let clients = Clients::connect(&moto::serial().settings()).await.unwrap();
    let store = Arc::new(new_store(&clients).await);
    // Two enrichers, each its own store over the table.
    let other = Arc::new(DynamoAlertStore::new(clients.dynamodb.clone(), store.table()));
    let sinks = vec!["sns".to_owned()];
    for round in 0..6 {
        let key = format!("root-login|111111111111|round-{round}");
        let a = sample_alert(&format!("r{round}-a"), &key, 1_730_000_000_000);
        let b = sample_alert(&format!("r{round}-b"), &key, 1_730_000_000_000);
        let (first, second) = tokio::join!(store.commit(vec![opened(&a)].into(), &sinks), other.commit(vec![opened(&b)].into(), &sinks));
        let (winner, err) = match (first, second) {
            (Ok(()), Err(e)) => (a.id.clone(), e),
            (Err(e), Ok(())) => (b.id.clone(), e),
            (first, second) => panic!("round {round}: exactly one commit must win, got {first:?} and {second:?}"),
        };
        assert!(err.is_retryable(), "the loser gets the conflict the memory store gives (retryable): {err}");
        assert!(err.to_string().contains("already unresolved for dedup key"), "{err}");
        let current = store.current(std::slice::from_ref(&key)).await.unwrap();
        assert_eq!(current.get(&key).map(|a| a.id.clone()), Some(winner.clone()), "round {round}: the winner is the key's alert");
        let loser = if winner == a.id { &b.id } else { &a.id };
        assert_eq!(store.get(loser).await.unwrap(), None, "nothing of the losing commit is stored");
    }
    let queued = store.outstanding().await.unwrap();
    assert_eq!(queued, HashMap::from([("sns".to_owned(), 6)]), "only the winners' deliveries are queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_ids_are_unique_and_increasing_across_processes() {
    let clients = clients().await;
    let one = new_store(&clients).await;
    let two = DynamoAlertStore::new(clients.dynamodb.clone(), one.table());
    let sinks = vec!["webhook".to_owned(), "sns".to_owned()];
    let mut alert = sample_alert("ids-1", "ids-key", 1_730_000_000_000);
    one.commit(vec![opened(&alert)].into(), &sinks).await.unwrap();
    for i in 0..4 {
        let change = updated(&alert, true);
        alert = change.alert.clone();
        let store = if i % 2 == 0 { &two } else { &one };
        store.commit(vec![change].into(), &sinks).await.unwrap();
    }
    let webhook = one.due("webhook", i64::MAX, 100).await.unwrap();
    let sns = two.due("sns", i64::MAX, 100).await.unwrap();
    assert_eq!(webhook.iter().map(|d| d.transition.revision).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5], "in order per alert");
    let mut ids: Vec<i64> = webhook.iter().chain(&sns).map(|d| d.id).collect();
    let count = ids.len();
    assert!(webhook.windows(2).all(|w| w[0].id < w[1].id), "ids increase in the order transitions were stored");
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "no id is handed out twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_larger_than_one_transaction_is_written_whole() {
    let clients = clients().await;
    let store = new_store(&clients).await;
    let sinks = vec!["stdout".to_owned(), "sns".to_owned()];
    // 45 alerts × (alert, pointer, transition, 2 entries) = 225 items: three transactions.
    let mut changes: Vec<AlertChange> =
        (0..45).map(|i| opened(&sample_alert(&format!("big-{i:02}"), &format!("big-key-{i}"), 1_730_000_000_000 + i))).collect();
    // And one alert with a chain of 40 notifying updates (3 items each): split along the chain.
    let mut chained = sample_alert("chain", "chain-key", 1_730_000_000_000);
    changes.push(opened(&chained));
    for _ in 0..40 {
        let change = updated(&chained, true);
        chained = change.alert.clone();
        changes.push(change);
    }
    store.commit(changes.into(), &sinks).await.unwrap();
    assert_eq!(store.get("big-44").await.unwrap().map(|a| a.status), Some(AlertStatus::Open));
    assert_eq!(store.get("chain").await.unwrap(), Some(chained.clone()), "the chain ends at its last change");
    let revisions: Vec<u64> = store.transitions("chain").await.unwrap().iter().map(|t| t.revision).collect();
    assert_eq!(revisions, (1..=41).collect::<Vec<_>>());
    assert_eq!(store.outstanding().await.unwrap(), HashMap::from([("stdout".to_owned(), 86), ("sns".to_owned(), 86)]));
    let due = store.due("sns", i64::MAX, 200).await.unwrap();
    let chain: Vec<u64> = due.iter().filter(|d| d.alert.id == "chain").map(|d| d.transition.revision).collect();
    assert_eq!(chain, (1..=41).collect::<Vec<_>>(), "the chain's deliveries come in order");
    let keys: Vec<String> = (0..45).map(|i| format!("big-key-{i}")).chain(["chain-key".to_owned()]).collect();
    assert_eq!(store.current(&keys).await.unwrap().len(), 46);
}

// --- SNS ---

/// A queue subscribed to `topic`, with subscription attributes; its URL.
async fn subscribed_queue(clients: &Clients, topic: &str, name: &str, attributes: &[(&str, &str)]) -> String {
    let url = clients.sqs.create_queue().queue_name(moto::unique(name)).send().await.unwrap().queue_url.unwrap();
    let out = clients.sqs.get_queue_attributes().queue_url(&url).attribute_names(QueueAttributeName::QueueArn).send().await.unwrap();
    let arn = out.attributes.unwrap()[&QueueAttributeName::QueueArn].clone();
    let mut subscribe = clients.sns.subscribe().topic_arn(topic).protocol("sqs").endpoint(arn);
    for (name, value) in attributes {
        subscribe = subscribe.attributes(*name, *value);
    }
    subscribe.send().await.unwrap();
    url
}

/// Every message the queue holds, waiting up to `patience` for `expected` of them.
async fn drain(clients: &Clients, url: &str, expected: usize, patience: Duration) -> Vec<aws_sdk_sqs::types::Message> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut messages = Vec::new();
    while tokio::time::Instant::now() < deadline {
        let out =
            clients.sqs.receive_message().queue_url(url).max_number_of_messages(10).message_attribute_names("All").wait_time_seconds(1).send().await.unwrap();
        messages.extend(out.messages.unwrap_or_default());
        if messages.len() >= expected {
            // Anything more that would arrive (it must not) gets a moment to.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let out = clients.sqs.receive_message().queue_url(url).max_number_of_messages(10).message_attribute_names("All").send().await.unwrap();
            messages.extend(out.messages.unwrap_or_default());
            break;
        }
    }
    messages
}

fn sqs_attributes(message: &aws_sdk_sqs::types::Message) -> HashMap<String, String> {
    message
        .message_attributes()
        .map(|attributes| attributes.iter().map(|(name, value)| (name.clone(), value.string_value().unwrap_or_default().to_owned())).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sns_messages_carry_the_alert_and_route_by_attributes() {
    let clients = clients().await;
    let topic = clients.sns.create_topic().name(moto::unique("alerts")).send().await.unwrap().topic_arn.unwrap();
    let plain = subscribed_queue(&clients, &topic, "plain", &[("RawMessageDelivery", "true")]).await;
    let severe = subscribed_queue(&clients, &topic, "severe", &[("FilterPolicy", r#"{"severity":["high","critical"]}"#)]).await;

    // Through the outbox, as the delivery worker does: a high alert opened, a low one updated.
    let store = new_store(&clients).await;
    let sink = SnsSink::new(clients.sns.clone(), &topic);
    let sinks = vec![sink.name().to_owned()];
    let mut high = sample_alert("sns-high", "root-login|111111111111", 1_730_000_000_000);
    high.severity = Severity::High;
    high.rule_id = "root-login".into();
    high.title = format!("Root user signed in to the console — «{}»\nfrom a new place", "very long title ".repeat(10));
    high.group.push(("awsRegion".into(), "eu-west-1".into()));
    let mut low = sample_alert("sns-low", "mfa-off|111111111111", 1_730_000_000_000);
    low.severity = Severity::Low;
    low.rule_id = "mfa-off".into();
    store.commit(vec![opened(&high), opened(&low)].into(), &sinks).await.unwrap();
    let low_update = updated(&low, true);
    store.commit(vec![low_update.clone()].into(), &sinks).await.unwrap();
    let due = store.due("sns", i64::MAX, 10).await.unwrap();
    let due: Vec<_> = due.into_iter().filter(|d| d.alert.id == "sns-high" || d.transition.revision == 2).collect();
    assert_eq!(due.len(), 2);
    for delivery in &due {
        sink.deliver(delivery).await.unwrap();
    }
    store.delivered(&due.iter().map(|d| d.id).collect::<Vec<_>>(), 0).await.unwrap();

    let received = drain(&clients, &plain, 2, Duration::from_secs(10)).await;
    assert_eq!(received.len(), 2, "the plain queue gets every transition");
    let by_alert: HashMap<String, (serde_json::Value, HashMap<String, String>)> = received
        .iter()
        .map(|m| {
            let body: serde_json::Value = serde_json::from_str(m.body().unwrap()).expect("a raw delivery's body is the JSON");
            (body["alert"]["id"].as_str().unwrap().to_owned(), (body, sqs_attributes(m)))
        })
        .collect();
    let (body, attributes) = &by_alert["sns-high"];
    assert_eq!(body["schema_version"], 1);
    assert_eq!(body["idempotency_key"], "sns-high:1");
    assert_eq!(body["summary"], high.summary.as_str());
    let alert = &body["alert"];
    assert_eq!(
        (alert["dedup_key"].as_str(), alert["rule_id"].as_str(), alert["severity"].as_str(), alert["status"].as_str()),
        (Some("root-login|111111111111"), Some("root-login"), Some("high"), Some("open"))
    );
    assert_eq!(
        (alert["account_id"].as_str(), alert["account_name"].as_str(), alert["region"].as_str()),
        (Some("111111111111"), Some("prod"), Some("eu-west-1"))
    );
    assert_eq!(alert["origin_principal"].as_str(), high.origin.as_ref().and_then(|o| o.principal.as_deref()));
    assert_eq!((alert["count"].as_u64(), alert["first_seen"].as_str()), (Some(1), Some("2024-10-27T03:33:20Z")));
    assert_eq!(alert["samples"][0]["event_id"], "ev-sns-high");
    let transition = &body["transition"];
    assert_eq!((transition["action"].as_str(), transition["kind"].as_str(), transition["revision"].as_u64()), (Some("trigger"), Some("opened"), Some(1)));
    assert_eq!(transition["cause"], "opened by a test");
    assert_eq!(body["truncated"], false);
    let expected = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<HashMap<_, _>>();
    assert_eq!(
        *attributes,
        expected(&[
            ("severity", "high"),
            ("rule_id", "root-login"),
            ("account_id", "111111111111"),
            ("action", "trigger"),
            ("dedup_key", "root-login|111111111111"),
            ("alert_id", "sns-high"),
            ("revision", "1"),
        ]),
        "raw delivery turns the SNS message attributes into SQS ones"
    );
    let (body, attributes) = &by_alert["sns-low"];
    assert_eq!((body["transition"]["action"].as_str(), body["alert"]["count"].as_u64()), (Some("update"), Some(2)));
    assert_eq!((attributes["action"].as_str(), attributes["severity"].as_str(), attributes["revision"].as_str()), ("update", "low", "2"));

    let filtered = drain(&clients, &severe, 1, Duration::from_secs(10)).await;
    assert_eq!(filtered.len(), 1, "the filter policy lets only high and critical alerts through");
    let envelope: serde_json::Value = serde_json::from_str(filtered[0].body().unwrap()).unwrap();
    let body: serde_json::Value = serde_json::from_str(envelope["Message"].as_str().unwrap()).unwrap();
    assert_eq!(body["alert"]["id"], "sns-high");
    let subject = envelope["Subject"].as_str().unwrap();
    assert!(subject.len() < 100 && subject.ends_with("..."), "{subject}");
    assert!(subject.starts_with("[HIGH] opened: Root user signed in to the console ? ?very long title"), "{subject}");
    assert!(subject.chars().all(|c| (' '..='~').contains(&c)), "{subject}");
    assert_eq!(envelope["MessageAttributes"]["severity"]["Value"], "high");
    assert_eq!(envelope["MessageAttributes"]["alert_id"]["Type"], "String");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_alert_arrives_trimmed_not_dropped() {
    let clients = clients().await;
    let topic = clients.sns.create_topic().name(moto::unique("big-alerts")).send().await.unwrap().topic_arn.unwrap();
    let queue = subscribed_queue(&clients, &topic, "big", &[("RawMessageDelivery", "true")]).await;
    let mut alert = sample_alert("huge", "huge-key", 1_730_000_000_000);
    alert.samples = (0..5000).map(|i| sample_event_ref(&format!("{i:06}-{}", "e".repeat(40)), 1_730_000_000_000 + i)).collect();
    alert.summary = "Ä".repeat(200_000);
    let delivery =
        Delivery { id: 1, sink: "sns".into(), transition: opened(&alert).transitions[0].clone(), alert, attempts: 0, next_attempt_at: 0, last_error: None };
    SnsSink::new(clients.sns.clone(), &topic).deliver(&delivery).await.expect("an oversized alert is published trimmed");
    let received = drain(&clients, &queue, 1, Duration::from_secs(10)).await;
    assert_eq!(received.len(), 1);
    let text = received[0].body().unwrap();
    assert!(text.len() < 256 * 1024, "{} bytes", text.len());
    let body: serde_json::Value = serde_json::from_str(text).expect("still JSON");
    assert_eq!((body["truncated"].as_bool(), body["removed"]["samples"].as_u64()), (Some(true), Some(5000)));
    assert_eq!(body["removed"]["shortened"], serde_json::json!(["summary"]));
    assert!(body["summary"].as_str().unwrap().ends_with('…'));
    assert_eq!((body["idempotency_key"].as_str(), body["alert"]["rule_id"].as_str()), (Some("huge:1"), Some("console-signin-without-mfa")));
    assert_eq!(sqs_attributes(&received[0])["alert_id"], "huge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_to_a_missing_topic_is_a_permanent_error() {
    let clients = clients().await;
    let account = clients.caller_identity().await.unwrap().account;
    let topic = format!("arn:aws:sns:{}:{account}:{}", moto::REGION, moto::unique("missing"));
    let alert = sample_alert("nowhere", "nowhere-key", 1_730_000_000_000);
    let delivery =
        Delivery { id: 1, sink: "sns".into(), transition: opened(&alert).transitions[0].clone(), alert, attempts: 0, next_attempt_at: 0, last_error: None };
    let err = SnsSink::new(clients.sns.clone(), &topic).deliver(&delivery).await.expect_err("no such topic");
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains(&topic) && err.to_string().contains("nowhere:1"), "the error names the topic and the alert: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_topic_gets_each_alert_as_its_own_message_group() {
    let clients = clients().await;
    let name = format!("{}.fifo", moto::unique("alerts"));
    let topic = clients.sns.create_topic().name(name).attributes("FifoTopic", "true").send().await.unwrap().topic_arn.unwrap();
    let queue_name = format!("{}.fifo", moto::unique("ordered"));
    let url = clients.sqs.create_queue().queue_name(queue_name).attributes(QueueAttributeName::FifoQueue, "true").send().await.unwrap().queue_url.unwrap();
    let out = clients.sqs.get_queue_attributes().queue_url(&url).attribute_names(QueueAttributeName::QueueArn).send().await.unwrap();
    let arn = out.attributes.unwrap()[&QueueAttributeName::QueueArn].clone();
    clients.sns.subscribe().topic_arn(&topic).protocol("sqs").endpoint(arn).attributes("RawMessageDelivery", "true").send().await.unwrap();

    let sink = SnsSink::new(clients.sns.clone(), &topic);
    let alert = sample_alert("fifo-1", "fifo-key", 1_730_000_000_000);
    let open = opened(&alert);
    let update = updated(&alert, true);
    for change in [&open, &update] {
        let delivery = Delivery {
            id: 1,
            sink: "sns".into(),
            alert: change.alert.clone(),
            transition: change.transitions[0].clone(),
            attempts: 0,
            next_attempt_at: 0,
            last_error: None,
        };
        sink.deliver(&delivery).await.expect("a FIFO topic takes the message with its group and deduplication id");
    }
    let out = clients
        .sqs
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(10)
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId)
        .wait_time_seconds(2)
        .send()
        .await
        .unwrap();
    let messages = out.messages.unwrap_or_default();
    let keys: Vec<String> = messages
        .iter()
        .map(|m| serde_json::from_str::<serde_json::Value>(m.body().unwrap()).unwrap()["idempotency_key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys, vec!["fifo-1:1", "fifo-1:2"], "in order");
    let groups: Vec<Option<&str>> = messages
        .iter()
        .map(|m| m.attributes().and_then(|a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId)).map(String::as_str))
        .collect();
    assert_eq!(groups, vec![Some("fifo-1"), Some("fifo-1")]);
}
