//! AWS mode under a struggling AWS: the collector and the enricher, each its
//! own process, talk to the emulator through a fault-injecting proxy
//! ([`trailwatch_aws::faults`]) that throttles (S3 `SlowDown`, DynamoDB
//! `ProvisionedThroughputExceededException`, …), answers 500 and 503, resets
//! connections, stalls past the clients' timeout and answers slowly. What a
//! user relies on must hold all the same: every uploaded event stored once,
//! every file final in the ledger, every expected alert published, each
//! transition under one idempotency key, the services up, their memory
//! bounded, and the trouble visible in `/metrics`.
//!
//! `TRAILWATCH_FAULT_SEED` (default 1), `TRAILWATCH_FAULT_RATE` (the share of
//! requests faulted, spread over every kind; default 0.15) and
//! `TRAILWATCH_FAULT_EVENTS` (the trail's size; default 1500) make longer or
//! other runs. The test prints what was injected and what was found.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use trailwatch_aws::clients::Clients;
use trailwatch_aws::dynamo::DynamoLedger;
use trailwatch_aws::faults::{FaultKind, FaultPlan, FaultProxy, Rates};
use trailwatch_aws::history::{read_event_object, read_origins_object};
use trailwatch_aws::moto::Moto;
use trailwatch_core::identity::{Confidence, Origin};
use trailwatch_core::ports::Checkpoints;

use super::{attribute, daily_files, free_port, parse_metrics, receive_all, run_ok, trail_facts, trailwatch, Sample, Service};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The emulator, the resources, a generated trail and a subscriber of the alert topic.
struct Stack {
    moto: Moto,
    clients: Clients,
    env: BTreeMap<String, String>,
    trail: std::path::PathBuf,
    files: Vec<(String, std::path::PathBuf)>,
    alerts_url: String,
    tmp: tempfile::TempDir,
}

async fn stack(events: u64, incidents: bool, max_receive_count: u32) -> Stack {
    let moto = Moto::start().unwrap();
    let clients = Clients::connect(&moto.settings()).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let trail = tmp.path().join("trail");
    let mut gen = Command::new(env!("CARGO_BIN_EXE_trailwatch"));
    gen.args(["gen", "--out", trail.to_str().unwrap(), "--accounts", if incidents { "6" } else { "4" }, "--events", &events.to_string(), "--seed", "11"]);
    if incidents {
        gen.arg("--incidents");
    }
    run_ok(gen);
    let mut setup = trailwatch(&moto);
    setup.args(["aws-setup", "--name-prefix", "tw", "--max-receive-count", &max_receive_count.to_string()]);
    let printed = run_ok(setup);
    let env: BTreeMap<String, String> =
        printed.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    let alerts_url = clients.sqs.create_queue().queue_name("ticketing").send().await.unwrap().queue_url.unwrap();
    let arn = trailwatch_aws::provision::queue_arn(&clients, &alerts_url).await.unwrap();
    let topic = env["TRAILWATCH_ALERT_TOPIC_ARN"].clone();
    clients.sns.subscribe().topic_arn(&topic).protocol("sqs").endpoint(arn).attributes("RawMessageDelivery", "true").send().await.unwrap();
    let merged = tmp.path().join("merged");
    std::fs::create_dir_all(&merged).unwrap();
    let files = daily_files(&trail, &merged);
    Stack { moto, clients, env, trail, files, alerts_url, tmp }
}

impl Stack {
    /// A service command talking to AWS through `proxy`, with short timeouts
    /// (a stall of the proxy outlasts them).
    fn service(&self, proxy: &FaultProxy, args: &[&str], metrics_port: u16) -> Command {
        let mut cmd = trailwatch(&self.moto);
        cmd.args(args).args(["--aws-attempt-timeout", "3", "--metrics-listen", &format!("127.0.0.1:{metrics_port}"), "--queue-metrics-seconds", "2"]);
        cmd.env("TRAILWATCH_AWS_ENDPOINT_URL", proxy.endpoint());
        cmd
    }

    fn start(&self, proxy: &FaultProxy, name: &'static str, args: &[&str], metrics_port: u16) -> Service {
        let mut env = self.env.clone();
        env.insert("TRAILWATCH_AWS_ENDPOINT_URL".into(), proxy.endpoint());
        Service::start(name, self.service(proxy, args, metrics_port), self.tmp.path(), &env)
    }

    /// Uploads the trail as CloudTrail would (straight to the emulator).
    async fn upload(&self) {
        for (key, path) in &self.files {
            self.clients.s3.put_object().bucket("org-trail").key(key).body(std::fs::read(path).unwrap().into()).send().await.unwrap();
        }
    }

    /// Files final in the ledger, read straight from the emulator.
    async fn final_files(&self) -> usize {
        let ledger = DynamoLedger::new(self.clients.dynamodb.clone(), "tw-ledger");
        let keys: Vec<String> = self.files.iter().map(|(k, _)| k.clone()).collect();
        let mut done = 0;
        for chunk in keys.chunks(100) {
            done += ledger.lookup(chunk).await.unwrap().values().filter(|e| e.status.is_final()).count();
        }
        done
    }

    /// Waits until every file is final, checking the services stay up.
    async fn wait_final(&self, services: &mut [&mut Service], within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            for s in services.iter_mut() {
                s.assert_running();
            }
            let done = self.final_files().await;
            if done == self.files.len() {
                return started.elapsed();
            }
            if started.elapsed() > within {
                let logs: Vec<String> = services.iter().map(|s| format!("{}:\n{}", s.name, tail(&s.log, 60))).collect();
                panic!("{done} of {} files final after {within:?}\n{}", self.files.len(), logs.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Every event of the enriched history with its final origin (the
    /// newest late origin over the stored one), and how many copies of each
    /// the bucket holds.
    async fn history(&self) -> BTreeMap<(String, String), (usize, Option<Origin>)> {
        let mut events: BTreeMap<(String, String), (usize, Option<Origin>)> = BTreeMap::new();
        for key in self.objects("trailwatch/events/").await {
            let body = self.clients.s3.get_object().bucket("org-trail").key(&key).send().await.unwrap().body.collect().await.unwrap().into_bytes();
            for stored in read_event_object(&body, &key).unwrap() {
                let entry = events.entry((stored.event.account_id.clone(), stored.event.event_id.clone())).or_insert((0, None));
                entry.0 += 1;
                if entry.1.is_none() {
                    entry.1 = stored.event.origin;
                }
            }
        }
        let mut late = Vec::new();
        for key in self.objects("trailwatch/events-origins/").await {
            let body = self.clients.s3.get_object().bucket("org-trail").key(&key).send().await.unwrap().body.collect().await.unwrap().into_bytes();
            late.extend(read_origins_object(&body, &key).unwrap());
        }
        late.sort_by_key(|o| o.written_at);
        for update in late {
            if let Some(entry) = events.get_mut(&(update.account_id, update.event_id)) {
                entry.1 = Some(update.origin);
            }
        }
        events
    }

    async fn objects(&self, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let out = self.clients.s3.list_objects_v2().bucket("org-trail").prefix(prefix).set_continuation_token(token).send().await.unwrap();
            keys.extend(out.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
            match out.next_continuation_token() {
                Some(t) => token = Some(t.to_owned()),
                None => return keys,
            }
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Peak and current resident memory of a process, in MiB (from /proc).
fn memory_mib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()).and_then(|kb| kb.parse::<u64>().ok()).unwrap_or(0) / 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

async fn scrape(port: u16) -> Vec<Sample> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.unwrap().text().await.unwrap();
    parse_metrics(&text).0
}

fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples.iter().filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))).map(|s| s.value).sum()
}

/// Resident memory a service may reach on this small trail (it reads in
/// chunks and holds bounded queues; the SDK and caches are most of it).
const RSS_LIMIT_MIB: u64 = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_lose_nothing_when_aws_throttles_fails_resets_and_stalls() {
    let _turn = crate::my_turn().await;
    let seed: u64 = env_or("TRAILWATCH_FAULT_SEED", 1);
    let rate: f64 = env_or("TRAILWATCH_FAULT_RATE", 0.15);
    let events: u64 = env_or("TRAILWATCH_FAULT_EVENTS", 1500);
    let stack = stack(events, true, 5).await;
    let key: Value = serde_json::from_slice(&std::fs::read(stack.trail.join("expected.json")).unwrap()).unwrap();
    let expected = key["alerts"].as_array().unwrap().clone();
    assert!(!expected.is_empty(), "the answer key lists the incidents' alerts");

    let plan = FaultPlan::new(seed).everywhere(Rates::every_kind(rate)).stall_for(Duration::from_secs(5)).slow_for(Duration::from_millis(600));
    let proxy = FaultProxy::start(&stack.moto.endpoint(), plan).unwrap();
    let (collector_port, enricher_port) = (free_port(), free_port());
    let started = Instant::now();
    let collector_args = ["collector", "--wait-seconds", "1", "--enricher-delay", "1", "--visibility-seconds", "20", "--claim-seconds", "30"];
    let mut collector = stack.start(&proxy, "collector", &collector_args, collector_port);
    let enricher_args = [
        "enricher",
        "--wait-seconds",
        "1",
        "--visibility-seconds",
        "20",
        "--rule-lateness-minutes",
        "1440",
        "--pending-bound-minutes",
        "1440",
        "--no-organizations",
        "--athena-timeout",
        "10",
    ];
    let mut enricher = stack.start(&proxy, "enricher", &enricher_args, enricher_port);
    stack.upload().await;
    let took = stack.wait_final(&mut [&mut collector, &mut enricher], Duration::from_secs(240)).await;

    // Alerts: every transition committed is delivered; each expected alert opened once.
    let deadline = Instant::now() + Duration::from_secs(60);
    while sum(&scrape(enricher_port).await, "trailwatch_alert_deliveries_outstanding", &[("sink", "sns")]) > 0.0 {
        assert!(Instant::now() < deadline, "alert deliveries still outstanding after 60 s:\n{}", tail(&enricher.log, 40));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let messages = receive_all(&stack.clients, &stack.alerts_url, Duration::from_secs(4)).await;
    let mut transitions: BTreeMap<String, (String, String)> = BTreeMap::new();
    for m in &messages {
        let body: Value = serde_json::from_str(m.body.as_deref().unwrap()).unwrap();
        let idempotency = body["idempotency_key"].as_str().unwrap_or_else(|| panic!("no idempotency_key: {body}")).to_owned();
        transitions.insert(idempotency, (attribute(m, "dedup_key"), attribute(m, "action")));
    }
    let mut opened: BTreeMap<&str, usize> = BTreeMap::new();
    for (dedup, action) in transitions.values() {
        if action == "trigger" {
            *opened.entry(dedup.as_str()).or_default() += 1;
        }
    }
    let mut problems: Vec<String> = opened.iter().filter(|(_, n)| **n > 1).map(|(d, n)| format!("{d} opened {n} times")).collect();
    for want in &expected {
        let (rule, account) = (want["ruleId"].as_str().unwrap(), want["accountId"].as_str().unwrap());
        let found = messages.iter().any(|m| attribute(m, "action") == "trigger" && attribute(m, "rule_id") == rule && attribute(m, "account_id") == account);
        if !found {
            problems.push(format!("not published: {rule} in {account}"));
        }
    }
    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n"));

    // History: exactly the uploaded events, each resolved (none left pending).
    let facts = trail_facts(&stack.files);
    let history = stack.history().await;
    assert_eq!(history.len(), facts.events, "distinct events in history: each uploaded event ({} records), nothing else", facts.records);
    let copies: usize = history.values().map(|(n, _)| n).sum();
    let pending: Vec<&(String, String)> =
        history.iter().filter(|(_, (_, o))| o.as_ref().is_some_and(|o| o.confidence == Confidence::Pending)).map(|(k, _)| k).take(5).collect();
    assert!(pending.is_empty(), "events left pending, e.g. {pending:?}");
    let exact = history.values().filter(|(_, o)| o.as_ref().is_some_and(|o| o.confidence == Confidence::Exact)).count();

    // The services are up, kept their memory bounded, and show the trouble.
    collector.assert_running();
    enricher.assert_running();
    let (collected, enriched) = (scrape(collector_port).await, scrape(enricher_port).await);
    let committed = sum(&enriched, "trailwatch_alert_transitions_total", &[]);
    assert_eq!(committed as usize, transitions.len(), "every committed transition reached the topic, once per idempotency key");
    let mut errors: BTreeMap<String, f64> = BTreeMap::new();
    for s in collected.iter().chain(&enriched).filter(|s| s.name == "trailwatch_aws_request_errors_total") {
        *errors.entry(s.labels["kind"].clone()).or_default() += s.value;
    }
    let retries = sum(&collected, "trailwatch_aws_retries_total", &[]) + sum(&enriched, "trailwatch_aws_retries_total", &[]);
    let injected = proxy.injected_by_kind();
    for kind in FaultKind::ALL {
        assert!(injected.get(&kind).copied().unwrap_or(0) > 0, "the proxy injected some {}: {injected:?}", kind.label());
    }
    for kind in ["throttling", "server_error", "connection", "timeout"] {
        assert!(errors.get(kind).copied().unwrap_or(0.0) > 0.0, "the services' /metrics count {kind} errors: {errors:?}");
    }
    assert!(retries > 0.0, "the services' /metrics count retries");
    let memory: Vec<(&str, (u64, u64))> = [&collector, &enricher].iter().map(|s| (s.name, memory_mib(s.child.id()))).collect();
    for (name, (peak, _)) in &memory {
        assert!(*peak > 0 && *peak < RSS_LIMIT_MIB, "the {name}'s peak resident memory: {peak} MiB (limit {RSS_LIMIT_MIB} MiB)");
    }
    let requests: u64 = proxy.requests().values().sum();
    eprintln!(
        "faults: seed {seed}, rate {rate}: {requests} requests through the proxy, injected {:?}; files {} of {} final in {took:?}; \
         events {} of {} stored ({copies} copies, {exact} exact), none pending; alerts expected {}, opened {}, transitions {} committed and {} delivered ({} messages); \
         attempt errors {errors:?}, retries {retries}; peak/current RSS MiB {memory:?}; run {:?}",
        injected.iter().map(|(k, n)| (k.label(), *n)).collect::<Vec<_>>(),
        stack.files.len(),
        stack.files.len(),
        history.len(),
        facts.events,
        expected.len(),
        opened.len(),
        committed,
        transitions.len(),
        messages.len(),
        started.elapsed(),
    );
}

/// When the ledger cannot be written (DynamoDB TransactWriteItems failing),
/// the enricher stops extending the visibility of the files' messages, so
/// they come back to the queue and the files are read again once DynamoDB
/// recovers: every file ends up recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_whose_ledger_write_failed_are_read_again_and_recorded() {
    let _turn = crate::my_turn().await;
    let stack = stack(600, false, 5).await;
    let proxy = FaultProxy::start(&stack.moto.endpoint(), FaultPlan::new(3)).unwrap();
    let (collector_port, enricher_port) = (free_port(), free_port());
    let mut collector =
        stack.start(&proxy, "collector", &["collector", "--wait-seconds", "1", "--enricher-delay", "0", "--visibility-seconds", "20"], collector_port);
    // The ledger's writes fail from the start.
    proxy.set_plan(FaultPlan::new(3).rule(Some("dynamodb"), Some("TransactWriteItems"), Rates::only(FaultKind::ServerError, 1.0)));
    let mut enricher = stack.start(&proxy, "enricher", &["enricher", "--wait-seconds", "1", "--visibility-seconds", "10", "--no-organizations"], enricher_port);
    stack.upload().await;

    // Until every file has been tried (and failed to be recorded) at least once.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        collector.assert_running();
        enricher.assert_running();
        let handed = sum(&scrape(collector_port).await, "trailwatch_files_handed_on_total", &[]);
        let failed = proxy.injected().get(&("dynamodb".to_owned(), FaultKind::ServerError)).copied().unwrap_or(0);
        if handed as usize >= stack.files.len() && failed > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the files did not reach the enricher: {handed} handed on, {failed} ledger writes refused");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Until the enricher has given up recording (its own retries spent): the
    // messages must then go back to the queue rather than stay hidden.
    let deadline = Instant::now() + Duration::from_secs(90);
    while !std::fs::read_to_string(&enricher.log).unwrap_or_default().contains("recording files in the ledger failed") {
        enricher.assert_running();
        assert!(Instant::now() < deadline, "the enricher never gave up recording:\n{}", tail(&enricher.log, 30));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stack.final_files().await, 0, "nothing is recorded while the ledger fails");
    let refused = proxy.injected().values().sum::<u64>();
    let during = scrape(enricher_port).await;
    let errors = sum(&during, "trailwatch_aws_request_errors_total", &[("operation", "DynamoDB:TransactWriteItems"), ("kind", "server_error")]);
    assert!(errors > 0.0, "the enricher's /metrics show the refused ledger writes");

    proxy.heal();
    let healed = Instant::now();
    // The messages come back after their visibility timeout (10 s) and are read again.
    let took = stack.wait_final(&mut [&mut collector, &mut enricher], Duration::from_secs(45)).await;
    let history = stack.history().await;
    let facts = trail_facts(&stack.files);
    assert_eq!(history.len(), facts.events, "every uploaded event is in history");
    let after = scrape(enricher_port).await;
    let dlq: Vec<&Sample> = after.iter().filter(|s| s.name == "trailwatch_dead_letter_queue_messages").collect();
    assert!(dlq.iter().all(|s| s.value == 0.0), "nothing went to the dead-letter queue: {dlq:?}");
    assert!(sum(&after, "trailwatch_aws_requests_total", &[("operation", "DynamoDB:TransactWriteItems")]) > errors, "the ledger was written after the outage");
    eprintln!(
        "ledger outage: {refused} TransactWriteItems refused, {errors} counted by the enricher; all {} files final {took:?} after recovery \
         (healed {:?} ago); {} events in history",
        stack.files.len(),
        healed.elapsed(),
        history.len()
    );
}

/// A record's value at an Athena column expression of the raw trail table
/// (`useridentity.sessioncontext.sessionissuer.arn`): the JSON path, matched
/// without case; objects as JSON text, as the table's string columns hold them.
fn column_value(record: &Value, expression: &str) -> Option<String> {
    if expression == "\"account\"" {
        return record["recipientAccountId"].as_str().map(str::to_owned);
    }
    let mut at = record;
    for part in expression.split('.') {
        at = at.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(part))?.1;
    }
    match at {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn read_records(path: &Path) -> Vec<Value> {
    use std::io::Read;
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_string(&mut text).unwrap();
    let mut value: Value = serde_json::from_str(&text).unwrap();
    std::mem::take(value["Records"].as_array_mut().unwrap())
}

fn write_records(path: &Path, records: Vec<Value>) {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
    gz.write_all(serde_json::json!({ "Records": records }).to_string().as_bytes()).unwrap();
    gz.finish().unwrap();
}

fn issued_key(record: &Value) -> Option<&str> {
    (record["eventName"] == "AssumeRole").then(|| record["responseElements"]["credentials"]["accessKeyId"].as_str()).flatten()
}

/// How Athena is unwell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AthenaOutage {
    /// Every Athena call is answered with HTTP 500.
    Failing,
    /// Athena answers, but its queries never finish (stopped at the timeout).
    NeverFinishing,
}

/// Sessions issued before the pipeline ran: their issuing events are only
/// in the trail Athena reads, not in the files the services are handed.
/// While Athena fails (500s) the events using them are stored waiting
/// (`pending`), never with a final origin, and their files are done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_that_need_athena_wait_while_it_fails() {
    let _turn = crate::my_turn().await;
    athena_outage(AthenaOutage::Failing, false).await;
}

/// The same when Athena's queries never finish: they are stopped at
/// `--athena-timeout` and the events wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_that_need_athena_wait_while_its_queries_never_finish() {
    let _turn = crate::my_turn().await;
    athena_outage(AthenaOutage::NeverFinishing, false).await;
}

/// Once Athena answers again, the next file that arrives (after
/// `--athena-retry`) has the waiting events asked again, and they resolve to
/// their true origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_that_waited_for_athena_resolve_when_it_recovers() {
    let _turn = crate::my_turn().await;
    athena_outage(AthenaOutage::Failing, true).await;
}

async fn athena_outage(outage: AthenaOutage, recover: bool) {
    let mut stack = stack(1500, false, 5).await;
    // Withhold the issuing events of a few keys that other events use.
    let mut uses: BTreeMap<String, usize> = BTreeMap::new();
    let mut all: Vec<Vec<Value>> = stack.files.iter().map(|(_, path)| read_records(path)).collect();
    for record in all.iter().flatten() {
        if let Some(k) = record["userIdentity"]["accessKeyId"].as_str() {
            *uses.entry(k.to_owned()).or_default() += 1;
        }
    }
    let withheld: BTreeSet<String> =
        all.iter().flatten().filter_map(issued_key).filter(|k| uses.get(*k).is_some_and(|n| *n >= 3)).take(4).map(str::to_owned).collect();
    assert_eq!(withheld.len(), 4, "the trail has sessions in use to withhold");
    let mut issuing = Vec::new();
    for (records, (_, path)) in all.iter_mut().zip(&stack.files) {
        let (out, kept): (Vec<Value>, Vec<Value>) = std::mem::take(records).into_iter().partition(|r| issued_key(r).is_some_and(|k| withheld.contains(k)));
        issuing.extend(out);
        write_records(path, kept.clone());
        *records = kept;
    }
    let used: BTreeMap<(String, String), &str> = all
        .iter()
        .flatten()
        .filter_map(|r| {
            let k = r["userIdentity"]["accessKeyId"].as_str().filter(|k| withheld.contains(*k))?;
            Some(((r["recipientAccountId"].as_str()?.to_owned(), r["eventID"].as_str()?.to_owned()), k))
        })
        .collect();
    // What Athena answers for them, for every query the fallback makes.
    let columns: Vec<String> = trailwatch_aws::athena::SESSION_COLUMNS.iter().map(|(_, name)| (*name).to_owned()).collect();
    let rows: Vec<Vec<Option<String>>> =
        issuing.iter().map(|r| trailwatch_aws::athena::SESSION_COLUMNS.iter().map(|(expr, _)| column_value(r, expr)).collect()).collect();
    let account = stack.clients.caller_identity().await.unwrap().account;
    stack.moto.can_athena_results(&account, trailwatch_aws::moto::REGION, vec![(columns, rows); 200]).unwrap();

    let plan = match outage {
        AthenaOutage::Failing => FaultPlan::new(5).rule(Some("athena"), None, Rates::only(FaultKind::ServerError, 1.0)),
        AthenaOutage::NeverFinishing => {
            let hold = serde_json::json!({"model_name": "athena::execution", "transition": {"progression": "manual", "times": 1_000_000}}).to_string();
            assert_eq!(stack.moto.request("POST", "/moto-api/state-manager/set-transition", &hold).unwrap().0, 201);
            FaultPlan::new(5)
        }
    };
    let proxy = FaultProxy::start(&stack.moto.endpoint(), plan).unwrap();
    let (collector_port, enricher_port) = (free_port(), free_port());
    let mut collector =
        stack.start(&proxy, "collector", &["collector", "--wait-seconds", "1", "--enricher-delay", "1", "--visibility-seconds", "20"], collector_port);
    let enricher_args = ["enricher", "--wait-seconds", "1", "--visibility-seconds", "10", "--no-organizations", "--athena-timeout", "3", "--athena-retry", "4"];
    let mut enricher = stack.start(&proxy, "enricher", &enricher_args, enricher_port);
    let started = Instant::now();
    stack.upload().await;
    let took = stack.wait_final(&mut [&mut collector, &mut enricher], Duration::from_secs(120)).await;

    // Every file is done; the events that need Athena are stored waiting, none with a final origin.
    let history = stack.history().await;
    let wrong: Vec<String> = used
        .keys()
        .filter_map(|id| match history.get(id) {
            Some((_, Some(o))) if o.confidence == Confidence::Pending => None,
            other => Some(format!("{id:?}: {other:?}")),
        })
        .collect();
    assert!(wrong.is_empty(), "{outage:?}: events needing Athena must wait: {wrong:?}");
    assert_eq!(history.len(), trail_facts(&stack.files).events, "every uploaded event is in history");
    let metrics = scrape(enricher_port).await;
    let timed_out = sum(&metrics, "trailwatch_athena_queries_total", &[("purpose", "session_archive"), ("outcome", "timed_out")]);
    let refused = proxy.injected().values().sum::<u64>();
    match outage {
        AthenaOutage::Failing => assert!(refused > 0, "Athena was asked and refused"),
        AthenaOutage::NeverFinishing => assert!(timed_out >= 1.0, "a query was stopped at the timeout"),
    }
    eprintln!(
        "athena {outage:?}: {} keys withheld, {} events needing them all stored pending; {refused} Athena calls refused, {timed_out} queries timed out; \
         all {} files final in {took:?} (run {:?})",
        withheld.len(),
        used.len(),
        stack.files.len(),
        started.elapsed()
    );
    if !recover {
        return;
    }

    // Recovery: Athena answers; the next file has the waiting events asked again.
    proxy.heal();
    let release = serde_json::json!({"model_name": "athena::execution"}).to_string();
    stack.moto.request("POST", "/moto-api/state-manager/unset-transition", &release).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let recovered = Instant::now();
    stack.add_trigger(1, &withheld).await;
    let key: Value = serde_json::from_slice(&std::fs::read(stack.trail.join("expected.json")).unwrap()).unwrap();
    let truth: BTreeMap<&str, &Value> = key["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| withheld.contains(s["accessKeyId"].as_str().unwrap()))
        .map(|s| (s["accessKeyId"].as_str().unwrap(), s))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let history = loop {
        stack.wait_final(&mut [&mut collector, &mut enricher], Duration::from_secs(60)).await;
        let history = stack.history().await;
        if used.keys().all(|id| history.get(id).and_then(|(_, o)| o.as_ref()).is_some_and(|o| o.confidence != Confidence::Pending)) {
            break history;
        }
        assert!(Instant::now() < deadline, "events still waiting 60 s after Athena recovered; requests {:?}\n{}", proxy.requests(), tail(&enricher.log, 40));
        tokio::time::sleep(Duration::from_millis(1000)).await;
    };
    for (id, k) in &used {
        let origin = history[id].1.as_ref().unwrap();
        assert_eq!(origin.confidence, Confidence::Exact, "{id:?} uses {k}: {origin:?}");
        assert_eq!(origin.principal.as_deref(), truth[k]["origin"]["principal"].as_str(), "{id:?} uses {k}");
    }
    assert_eq!(history.len(), trail_facts(&stack.files).events, "every uploaded event is in history, once");
    eprintln!("athena recovered: all {} events resolved exact to the answer key in {:?}", used.len(), recovered.elapsed());
}

impl Stack {
    /// Uploads a file of one new event (a copy of an IAM user's call under a
    /// new eventID): a file arriving, which has waiting events looked at again.
    async fn add_trigger(&mut self, n: usize, avoid: &BTreeSet<String>) {
        let (key, mut record) = self
            .files
            .iter()
            .find_map(|(key, path)| {
                let record = read_records(path)
                    .into_iter()
                    .find(|r| r["userIdentity"]["type"] == "IAMUser" && !r["userIdentity"]["accessKeyId"].as_str().is_some_and(|k| avoid.contains(k)))?;
                Some((key.clone(), record))
            })
            .expect("an IAM user's call");
        record["eventID"] = Value::String(format!("00000000-0000-4000-8000-00000000000{n}"));
        let (stem, _) = key.rsplit_once('_').unwrap();
        // The unique part of a log file name is 16 letters or digits.
        let key = format!("{stem}_Trigger{n}abcdefgh.json.gz");
        let file = self.tmp.path().join(format!("trigger-{n}.json.gz"));
        write_records(&file, vec![record]);
        self.clients.s3.put_object().bucket("org-trail").key(&key).body(std::fs::read(&file).unwrap().into()).send().await.unwrap();
        self.files.push((key, file));
    }
}
