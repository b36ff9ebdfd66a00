//! Crash safety in AWS mode: the collector and the enricher, each its own
//! process against the emulator, are killed with SIGKILL at seeded random
//! points while the trail's files land and while they are worked through,
//! and started again each time. At the end, what a security team relies on
//! holds: every file final in the ledger, every uploaded event in the
//! enriched history (and nothing else), every session of the answer key in
//! the session table, each expected alert stored once with the answer key's
//! count, and every alert published under one dedup key per alert.
//!
//! `TRAILWATCH_AWS_CRASH_ROUNDS` (kills, default 6) and
//! `TRAILWATCH_AWS_CRASH_SEED` (default: from the clock; printed) make
//! other runs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;

use trailwatch_aws::alerts::DynamoAlertStore;
use trailwatch_aws::clients::Clients;
use trailwatch_aws::dynamo::sessions::DynamoSessionStore;
use trailwatch_aws::dynamo::DynamoLedger;
use trailwatch_aws::history::read_event_object;
use trailwatch_aws::moto::Moto;
use trailwatch_core::alerts::{AlertQuery, AlertStore};
use trailwatch_core::identity::SessionStore;
use trailwatch_core::ports::Checkpoints;
use trailwatch_core::time::parse_utc;

use super::{attribute, daily_files, free_port, receive_all, run_ok, trailwatch, Service};

#[path = "../common/seeded.rs"]
mod seeded;
use seeded::{env_number, Points};

/// Which service a kill hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Collector,
    Enricher,
}

/// One kill: after `after_file` files are uploaded (or, past the last, while
/// the rest is worked through), wait `delay`, then SIGKILL `target`.
#[derive(Debug)]
struct Kill {
    after_file: usize,
    delay: Duration,
    target: Target,
}

/// The organization the trail is of: the management account and `members` more.
async fn organization(clients: &Clients, members: usize) -> (String, Vec<String>) {
    use aws_sdk_organizations::types::OrganizationFeatureSet;
    let org = clients.organizations.create_organization().feature_set(OrganizationFeatureSet::All).send().await.unwrap().organization.unwrap();
    let mut ids = vec![org.master_account_id.unwrap()];
    for i in 0..members {
        let status = clients
            .organizations
            .create_account()
            .account_name(format!("Member {i}"))
            .email(format!("member-{i}@acme.example"))
            .send()
            .await
            .unwrap()
            .create_account_status
            .unwrap();
        ids.push(status.account_id.unwrap());
    }
    (org.id.unwrap(), ids)
}

/// Every event of the enriched history, by (account, eventID): how many
/// stored lines hold it.
async fn history_copies(clients: &Clients, bucket: &str, prefix: &str) -> BTreeMap<(String, String), usize> {
    let mut copies = BTreeMap::new();
    let mut token = None;
    loop {
        let out = clients.s3.list_objects_v2().bucket(bucket).prefix(prefix).set_continuation_token(token).send().await.unwrap();
        for object in out.contents() {
            let key = object.key().unwrap();
            let body = clients.s3.get_object().bucket(bucket).key(key).send().await.unwrap().body.collect().await.unwrap().into_bytes();
            for stored in read_event_object(&body, key).unwrap() {
                *copies.entry((stored.event.account_id, stored.event.event_id)).or_insert(0) += 1;
            }
        }
        match out.next_continuation_token {
            Some(next) if out.is_truncated == Some(true) => token = Some(next),
            _ => return copies,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_collector_and_the_enricher_loses_nothing_on_aws() {
    let _turn = crate::my_turn().await;
    let started = Instant::now();
    let rounds = env_number("TRAILWATCH_AWS_CRASH_ROUNDS", 6).max(1) as usize;
    let seed = env_number("TRAILWATCH_AWS_CRASH_SEED", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs());
    println!("AWS crash test: seed {seed} (TRAILWATCH_AWS_CRASH_SEED), {rounds} kills");
    let mut points = Points(seed);

    let moto = Moto::start().unwrap();
    let clients = Clients::connect(&moto.settings()).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (org_id, ids) = organization(&clients, 5).await;

    let trail = tmp.path().join("trail");
    let mut gen = std::process::Command::new(env!("CARGO_BIN_EXE_trailwatch"));
    gen.args(["gen", "--out", trail.to_str().unwrap(), "--accounts", "6", "--events", "3000", "--seed", &(seed % 1000).to_string(), "--incidents"]);
    gen.args(["--org-id", &org_id, "--account-ids", &ids.join(",")]);
    run_ok(gen);
    let key: Value = serde_json::from_slice(&std::fs::read(trail.join("expected.json")).unwrap()).unwrap();

    let (env, topic_queue) = super::aws_setup(&moto, &clients, &["--max-receive-count", "50"]).await;

    // Short leases, so work a killed service held comes back within seconds.
    let logs = tmp.path();
    let command = |target: Target| {
        let mut c = trailwatch(&moto);
        match target {
            Target::Collector => c.args(["collector", "--enricher-delay", "1", "--claim-seconds", "30"]),
            Target::Enricher => c.args(["enricher", "--rule-lateness-minutes", "1440", "--pending-bound-minutes", "1440"]),
        };
        c.args(["--wait-seconds", "1", "--visibility-seconds", "10", "--metrics-listen", &format!("127.0.0.1:{}", free_port())]);
        c
    };
    let start = |target: Target| match target {
        Target::Collector => Service::start("collector", command(target), logs, &env),
        Target::Enricher => Service::start("enricher", command(target), logs, &env),
    };
    let mut services = BTreeMap::from([(Target::Collector, start(Target::Collector)), (Target::Enricher, start(Target::Enricher))]);

    let merged = tmp.path().join("merged");
    std::fs::create_dir_all(&merged).unwrap();
    let files = daily_files(&trail, &merged);
    // Kill points over the upload and the work after it (a third of them).
    let mut kills: Vec<Kill> = (0..rounds)
        .map(|_| Kill {
            after_file: points.below(files.len() as u64 * 3 / 2) as usize,
            delay: Duration::from_millis(points.below(1500)),
            target: if points.below(2) == 0 { Target::Collector } else { Target::Enricher },
        })
        .collect();
    kills.sort_by_key(|k| k.after_file);
    println!("{} files; kills: {kills:?}", files.len());
    let kill = |k: &Kill, services: &mut BTreeMap<Target, Service>| {
        std::thread::sleep(k.delay);
        let service = services.get_mut(&k.target).unwrap();
        service.assert_running();
        service.kill();
        *service = start(k.target);
    };
    let mut pending = kills.iter().peekable();
    for (i, (object, path)) in files.iter().enumerate() {
        clients.s3.put_object().bucket("org-trail").key(object).body(std::fs::read(path).unwrap().into()).send().await.unwrap();
        while let Some(k) = pending.next_if(|k| k.after_file == i) {
            kill(k, &mut services);
        }
    }
    // The kills that fall while the uploaded files are worked through, a file's worth of time apart.
    for k in pending {
        kill(k, &mut services);
        std::thread::sleep(Duration::from_millis(300));
    }

    // Every file final in the ledger.
    let ledger = DynamoLedger::new(clients.dynamodb.clone(), "tw-ledger");
    let keys: Vec<String> = files.iter().map(|(k, _)| k.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        for service in services.values_mut() {
            service.assert_running();
        }
        let mut done = 0;
        for chunk in keys.chunks(100) {
            done += ledger.lookup(chunk).await.unwrap().values().filter(|e| e.status.is_final()).count();
        }
        if done == keys.len() {
            break;
        }
        let logs: Vec<String> = services.values().map(|s| std::fs::read_to_string(&s.log).unwrap_or_default()).collect();
        assert!(Instant::now() < deadline, "{done} of {} files final after 300 s (seed {seed})\n{}", keys.len(), logs.join("\n"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let published = receive_all(&clients, &topic_queue, Duration::from_secs(6)).await;
    let mut problems = Vec::new();

    // The history holds exactly the uploaded events. A file read again after
    // a kill may write its events again (S3 cannot tell what is stored):
    // reads keep one copy, so copies are counted, not refused.
    let copies = history_copies(&clients, "org-trail", "trailwatch/events/").await;
    let mut uploaded = BTreeSet::new();
    for (_, path) in &files {
        use std::io::Read;
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_string(&mut text).unwrap();
        let records: Value = serde_json::from_str(&text).unwrap();
        for r in records["Records"].as_array().unwrap() {
            uploaded.insert((r["recipientAccountId"].as_str().unwrap().to_owned(), r["eventID"].as_str().unwrap().to_owned()));
        }
    }
    let stored: BTreeSet<(String, String)> = copies.keys().cloned().collect();
    let lost: Vec<_> = uploaded.difference(&stored).take(5).collect();
    let foreign: Vec<_> = stored.difference(&uploaded).take(5).collect();
    if !lost.is_empty() || !foreign.is_empty() {
        problems.push(format!(
            "history: {} of {} uploaded events missing (e.g. {lost:?}), {} not uploaded (e.g. {foreign:?})",
            uploaded.difference(&stored).count(),
            uploaded.len(),
            stored.difference(&uploaded).count()
        ));
    }
    let extra_copies: usize = copies.values().map(|n| n - 1).sum();

    // Every session of the answer key, in the session table.
    let sessions = DynamoSessionStore::new(clients.dynamodb.clone(), "tw-sessions", 0);
    let expected_sessions = key["sessions"].as_array().unwrap();
    let mut missing_sessions = Vec::new();
    for s in expected_sessions {
        let at = parse_utc(s["issuedAt"].as_str().unwrap()).unwrap() + 1;
        let access_key = s["accessKeyId"].as_str().unwrap();
        if sessions.get(access_key, at, at).await.unwrap().is_none() {
            missing_sessions.push(access_key.to_owned());
        }
    }
    if !missing_sessions.is_empty() {
        problems.push(format!(
            "{} of {} sessions not recorded: {:?}",
            missing_sessions.len(),
            expected_sessions.len(),
            &missing_sessions[..missing_sessions.len().min(5)]
        ));
    }

    // Each expected alert stored once, with the answer key's count; each
    // stored alert published, every message of it under its dedup key.
    let store = DynamoAlertStore::new(clients.dynamodb.clone(), "tw-alerts");
    let alerts = store.list(&AlertQuery { limit: 500, ..Default::default() }).await.unwrap().alerts;
    for want in key["alerts"].as_array().unwrap() {
        let (rule, account) = (want["ruleId"].as_str().unwrap(), want["accountId"].as_str().unwrap());
        let found: Vec<_> = alerts.iter().filter(|a| a.rule_id == rule && a.account_id == account).collect();
        match found.as_slice() {
            [alert] if Some(alert.count) == want["count"].as_u64() || want["count"].is_null() => {}
            [alert] => problems.push(format!("{rule} in {account}: count {} where the answer key says {}", alert.count, want["count"])),
            other => problems.push(format!("{rule} in {account}: stored {} times", other.len())),
        }
    }
    if alerts.len() != key["alerts"].as_array().unwrap().len() {
        problems.push(format!("{} alerts stored, {} expected", alerts.len(), key["alerts"].as_array().unwrap().len()));
    }
    let mut triggers: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for m in published.iter().filter(|m| attribute(m, "action") == "trigger") {
        triggers.entry((attribute(m, "rule_id"), attribute(m, "account_id"))).or_default().insert(attribute(m, "dedup_key"));
    }
    for alert in &alerts {
        match triggers.get(&(alert.rule_id.clone(), alert.account_id.clone())) {
            Some(keys) if keys.len() == 1 && keys.contains(&alert.dedup_key) => {}
            Some(keys) => problems.push(format!("{} in {}: published under {keys:?}, stored as {}", alert.rule_id, alert.account_id, alert.dedup_key)),
            None => problems.push(format!("{} in {}: stored, never published", alert.rule_id, alert.account_id)),
        }
    }
    let repeats = published.iter().filter(|m| attribute(m, "action") == "trigger").count() - triggers.len();

    println!(
        "AWS crash test: {rounds} kills, {} files, {} events ({} stored again after a kill), {} sessions, {} alerts ({repeats} trigger messages repeated), {:.0} s",
        files.len(),
        uploaded.len(),
        extra_copies,
        expected_sessions.len(),
        alerts.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(problems.is_empty(), "seed {seed}: {} problem(s):\n{}", problems.len(), problems.join("\n"));
}
