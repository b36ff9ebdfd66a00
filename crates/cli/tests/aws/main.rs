//! AWS mode end to end, against the moto emulator: an organization with
//! accounts, a trail bucket notifying SNS → SQS, generated trail files
//! uploaded with the organization-trail layout, and the collector, enricher
//! and API as separate processes. What a security team would check: the
//! alerts arrive on the topic with the attributes their routing needs, a
//! filter policy routes only high severity, GraphQL names the accounts as
//! Organizations does and shows resolved origins, and killing the collector
//! mid-run loses nothing and duplicates no alert. The services' `/metrics`
//! export every metric the Grafana dashboard charts, and their figures
//! agree with what was uploaded and what reached the topic.
#![allow(clippy::unwrap_used)]

mod faults;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use trailwatch_aws::clients::Clients;
use trailwatch_aws::dynamo::DynamoLedger;
use trailwatch_aws::moto::Moto;
use trailwatch_core::ports::Checkpoints;

mod crash;
mod integrity;
mod thresholds;

/// The tests of this binary each run the services against an emulator.
/// Side by side on a 2-core machine they starve one another, and files of
/// different accounts then reach the enricher in other batches than they
/// would (RELIABILITY.md, cross-account copies): they take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// This test's turn.
pub(crate) async fn my_turn() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().await
}

pub(crate) fn trailwatch(moto: &Moto) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trailwatch"));
    cmd.env("TRAILWATCH_LOG", "warn")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", trailwatch_aws::moto::REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("TRAILWATCH_AWS_ENDPOINT_URL", moto.endpoint())
        .env("TRAILWATCH_TABLE_PREFIX", "tw")
        .env("TRAILWATCH_TRAIL_BUCKET", "org-trail")
        .env_remove("TRAILWATCH_DATA");
    cmd
}

pub(crate) fn run_ok(mut cmd: Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A service process, killed when dropped.
pub(crate) struct Service {
    pub(crate) name: &'static str,
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
}

impl Service {
    pub(crate) fn start(name: &'static str, mut cmd: Command, dir: &Path, env: &BTreeMap<String, String>) -> Service {
        let log = dir.join(format!("{name}-{}.log", std::process::id()));
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        cmd.envs(env).env("TRAILWATCH_LOG", "info").stdout(Stdio::from(file.try_clone().unwrap())).stderr(Stdio::from(file));
        Service { name, child: cmd.spawn().unwrap(), log }
    }

    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(crate) fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("the {} stopped ({status}):\n{}", self.name, std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The generated trail's log files, merged into one file per account,
/// region and day (CloudTrail's own files hold up to thousands of records;
/// the generator writes one per five minutes, too many for the emulator to
/// take quickly), named after the day's first file. Digests are left out:
/// they list the unmerged files.
pub(crate) fn daily_files(root: &Path, out: &Path) -> Vec<(String, PathBuf)> {
    use std::io::{Read, Write};
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.to_string_lossy().ends_with(".json.gz") && !path.to_string_lossy().contains("CloudTrail-Digest") {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(&root.join("AWSLogs"), &mut found);
    found.sort();
    let mut days: BTreeMap<PathBuf, (String, Vec<Value>)> = BTreeMap::new();
    for path in found {
        let key = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap()).read_to_string(&mut text).unwrap();
        let records: Value = serde_json::from_str(&text).unwrap();
        let entry = days.entry(path.parent().unwrap().to_owned()).or_insert_with(|| (key, Vec::new()));
        entry.1.extend(records["Records"].as_array().unwrap().iter().cloned());
    }
    let mut files = Vec::new();
    for (i, (_, (key, records))) in days.into_iter().enumerate() {
        let file = out.join(format!("{i}.json.gz"));
        let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(&file).unwrap(), flate2::Compression::fast());
        gz.write_all(serde_json::json!({ "Records": records }).to_string().as_bytes()).unwrap();
        gz.finish().unwrap();
        files.push((key, file));
    }
    files
}

/// What the uploaded files hold: records, distinct events (by account and
/// `eventID`), and the newest event time per account and region.
pub(crate) struct TrailFacts {
    pub(crate) records: usize,
    pub(crate) events: usize,
    pub(crate) newest: BTreeMap<(String, String), i64>,
}

pub(crate) fn trail_facts(files: &[(String, PathBuf)]) -> TrailFacts {
    use std::io::Read;
    let mut facts = TrailFacts { records: 0, events: 0, newest: BTreeMap::new() };
    let mut ids = BTreeSet::new();
    for (_, path) in files {
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_string(&mut text).unwrap();
        let records: Value = serde_json::from_str(&text).unwrap();
        for r in records["Records"].as_array().unwrap() {
            let account = r["recipientAccountId"].as_str().unwrap().to_owned();
            let time = trailwatch_core::time::parse_utc(r["eventTime"].as_str().unwrap()).unwrap();
            facts.records += 1;
            ids.insert((account.clone(), r["eventID"].as_str().unwrap().to_owned()));
            let newest = facts.newest.entry((account, r["awsRegion"].as_str().unwrap().to_owned())).or_insert(time);
            *newest = (*newest).max(time);
        }
    }
    facts.events = ids.len();
    facts
}

/// One sample of Prometheus' text format.
#[derive(Debug)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) value: f64,
}

/// The samples of a `/metrics` text, and each family's type (from `# TYPE`).
pub(crate) fn parse_metrics(text: &str) -> (Vec<Sample>, BTreeMap<String, String>) {
    let mut samples = Vec::new();
    let mut types = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("not a value: {line}")),
        };
        let (name, mut rest) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line}"))),
            None => (series, ""),
        };
        let mut labels = BTreeMap::new();
        while !rest.is_empty() {
            let (label, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("bad labels: {line}"));
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => panic!("bad escape: {line}"),
                    },
                    Some((i, '"')) => break i,
                    Some((_, c)) => value.push(c),
                    None => panic!("unclosed label value: {line}"),
                }
            };
            labels.insert(label.to_owned(), value);
            rest = after[end + 1..].trim_start_matches(',');
        }
        samples.push(Sample { name: name.to_owned(), labels, value });
    }
    (samples, types)
}

/// The `trailwatch_…` metric names in every PromQL `expr` of a Grafana dashboard.
fn dashboard_metrics(dashboard: &Value) -> BTreeSet<String> {
    fn walk(v: &Value, names: &mut BTreeSet<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr", Value::String(expr)) => {
                            let mut rest = expr.as_str();
                            while let Some(at) = rest.find("trailwatch_") {
                                let before = rest[..at].chars().last();
                                let word = &rest[at..];
                                let end = word.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(word.len());
                                if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                                    names.insert(word[..end].to_owned());
                                }
                                rest = &word[end..];
                            }
                        }
                        _ => walk(v, names),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, names)),
            _ => {}
        }
    }
    let mut names = BTreeSet::new();
    walk(dashboard, &mut names);
    names
}

pub(crate) async fn receive_all(clients: &Clients, url: &str, quiet: Duration) -> Vec<aws_sdk_sqs::types::Message> {
    let mut all = Vec::new();
    let mut last = Instant::now();
    while last.elapsed() < quiet {
        let out =
            clients.sqs.receive_message().queue_url(url).max_number_of_messages(10).wait_time_seconds(1).message_attribute_names("All").send().await.unwrap();
        let messages = out.messages.unwrap_or_default();
        if !messages.is_empty() {
            last = Instant::now();
        }
        for m in messages {
            clients.sqs.delete_message().queue_url(url).receipt_handle(m.receipt_handle.clone().unwrap()).send().await.unwrap();
            all.push(m);
        }
    }
    all
}

/// The resources `trailwatch aws-setup` creates (with `extra` flags), the
/// environment it prints, and a queue subscribed raw to the alert topic
/// (its URL).
pub(crate) async fn aws_setup(moto: &Moto, clients: &Clients, extra: &[&str]) -> (BTreeMap<String, String>, String) {
    let mut setup = trailwatch(moto);
    setup.args(["aws-setup", "--name-prefix", "tw"]).args(extra);
    let env: BTreeMap<String, String> =
        run_ok(setup).lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    let queue = clients.sqs.create_queue().queue_name("ticketing").send().await.unwrap().queue_url.unwrap();
    let arn = trailwatch_aws::provision::queue_arn(clients, &queue).await.unwrap();
    let subscribe = clients.sns.subscribe().topic_arn(&env["TRAILWATCH_ALERT_TOPIC_ARN"]).protocol("sqs").endpoint(arn);
    subscribe.attributes("RawMessageDelivery", "true").send().await.unwrap();
    (env, queue)
}

pub(crate) fn attribute(message: &aws_sdk_sqs::types::Message, name: &str) -> String {
    message.message_attributes.as_ref().and_then(|a| a.get(name)).and_then(|v| v.string_value.clone()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_services_raise_the_expected_alerts_on_aws() {
    let _turn = crate::my_turn().await;
    let moto = Moto::start().unwrap();
    let clients = Clients::connect(&moto.settings()).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();

    // The organization: the management account, six members, two OUs, a tag.
    use aws_sdk_organizations::types::OrganizationFeatureSet;
    let org = clients.organizations.create_organization().feature_set(OrganizationFeatureSet::All).send().await.unwrap().organization.unwrap();
    let (org_id, management) = (org.id.unwrap(), org.master_account_id.unwrap());
    let root = clients.organizations.list_roots().send().await.unwrap().roots.unwrap().remove(0).id.unwrap();
    let workloads =
        clients.organizations.create_organizational_unit().parent_id(&root).name("Workloads").send().await.unwrap().organizational_unit.unwrap().id.unwrap();
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    names.insert(
        management.clone(),
        clients.organizations.describe_account().account_id(&management).send().await.unwrap().account.unwrap().name.unwrap_or_default(),
    );
    let mut ids = vec![management.clone()];
    for name in ["Acme Identity", "Acme Log Archive", "Acme Security Tooling", "Acme Prod Payments", "Acme Prod Ledger", "Acme Dev Sandbox", "Acme Staging"] {
        let status = clients
            .organizations
            .create_account()
            .account_name(name)
            .email(format!("{}@acme.example", name.to_lowercase().replace(' ', "-")))
            .send()
            .await
            .unwrap()
            .create_account_status
            .unwrap();
        let id = status.account_id.unwrap();
        if name.contains("Prod") {
            clients.organizations.move_account().account_id(&id).source_parent_id(&root).destination_parent_id(&workloads).send().await.unwrap();
        }
        names.insert(id.clone(), name.to_owned());
        ids.push(id);
    }

    // The trail of that organization, with incidents the built-in pack must catch.
    let trail = tmp.path().join("trail");
    let mut gen = Command::new(env!("CARGO_BIN_EXE_trailwatch"));
    gen.args([
        "gen",
        "--out",
        trail.to_str().unwrap(),
        "--accounts",
        "8",
        "--events",
        "4000",
        "--seed",
        "11",
        "--incidents",
        "--org-id",
        &org_id,
        "--account-ids",
        &ids.join(","),
    ]);
    run_ok(gen);
    let key: Value = serde_json::from_slice(&std::fs::read(trail.join("expected.json")).unwrap()).unwrap();
    let expected = key["alerts"].as_array().unwrap().clone();
    assert!(expected.len() >= 6, "the answer key lists the incidents' alerts");

    // The resources, created by the command a developer would use.
    let mut setup = trailwatch(&moto);
    setup.args(["aws-setup", "--name-prefix", "tw", "--max-receive-count", "3"]);
    let printed = run_ok(setup);
    let env: BTreeMap<String, String> =
        printed.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    let topic = env["TRAILWATCH_ALERT_TOPIC_ARN"].clone();

    // Two subscribers of the alert topic: everything (raw), and high severity only.
    let all_url = clients.sqs.create_queue().queue_name("ticketing-all").send().await.unwrap().queue_url.unwrap();
    let high_url = clients.sqs.create_queue().queue_name("pager-high").send().await.unwrap().queue_url.unwrap();
    for (url, filter) in [(&all_url, None), (&high_url, Some(r#"{"severity":["high","critical"]}"#))] {
        let arn = trailwatch_aws::provision::queue_arn(&clients, url).await.unwrap();
        let mut sub = clients.sns.subscribe().topic_arn(&topic).protocol("sqs").endpoint(arn).attributes("RawMessageDelivery", "true");
        if let Some(f) = filter {
            sub = sub.attributes("FilterPolicy", f);
        }
        sub.send().await.unwrap();
    }

    // The three services, each its own process.
    let (api_port, collector_metrics, enricher_metrics) = (free_port(), free_port(), free_port());
    let logs = tmp.path();
    let collector_cmd = || {
        let mut c = trailwatch(&moto);
        c.args(["collector", "--wait-seconds", "1", "--enricher-delay", "2", "--visibility-seconds", "20", "--claim-seconds", "30"]);
        c.args(["--metrics-listen", &format!("127.0.0.1:{collector_metrics}"), "--queue-metrics-seconds", "2"]);
        c
    };
    let mut collector = Service::start("collector", collector_cmd(), logs, &env);
    let mut enricher_cmd = trailwatch(&moto);
    // Files merged per day arrive up to a day apart in trail time: threshold windows, and events
    // waiting for the other account's copy of a cross-account call, must wait as long.
    enricher_cmd.args(["enricher", "--wait-seconds", "1", "--visibility-seconds", "30", "--rule-lateness-minutes", "1440", "--pending-bound-minutes", "1440"]);
    enricher_cmd.args(["--metrics-listen", &format!("127.0.0.1:{enricher_metrics}"), "--queue-metrics-seconds", "2"]);
    let mut enricher = Service::start("enricher", enricher_cmd, logs, &env);
    let mut api_cmd = trailwatch(&moto);
    api_cmd.args(["api", "--aws", "--listen", &format!("127.0.0.1:{api_port}"), "--token", "ops:admin:e2e-secret-token"]);
    let mut api = Service::start("api", api_cmd, logs, &env);

    // Upload the trail as CloudTrail would, killing the collector halfway.
    let merged = tmp.path().join("merged");
    std::fs::create_dir_all(&merged).unwrap();
    let files = daily_files(&trail, &merged);
    assert!(files.len() > 10, "a trail of many files: {}", files.len());
    let half = files.len() / 2;
    for (i, (key, path)) in files.iter().enumerate() {
        clients.s3.put_object().bucket("org-trail").key(key).body(std::fs::read(path).unwrap().into()).send().await.unwrap();
        if i == half {
            tokio::time::sleep(Duration::from_millis(700)).await;
            collector.kill();
            collector = Service::start("collector", collector_cmd(), logs, &env);
        }
    }

    // Wait until the ledger has every file final.
    let ledger = DynamoLedger::new(clients.dynamodb.clone(), "tw-ledger");
    let keys: Vec<String> = files.iter().map(|(k, _)| k.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        collector.assert_running();
        enricher.assert_running();
        api.assert_running();
        let mut done = 0;
        for chunk in keys.chunks(100) {
            done += ledger.lookup(chunk).await.unwrap().values().filter(|e| e.status.is_final()).count();
        }
        if done == keys.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {} files final after 240 s\ncollector:\n{}\nenricher:\n{}",
            keys.len(),
            std::fs::read_to_string(&collector.log).unwrap_or_default(),
            std::fs::read_to_string(&enricher.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The alerts on the topic: each expected alert opened once, with its attributes.
    let all = receive_all(&clients, &all_url, Duration::from_secs(6)).await;
    let mut opened: HashMap<String, Vec<Value>> = HashMap::new();
    let mut problems = Vec::new();
    for m in &all {
        let body: Value = serde_json::from_str(m.body.as_deref().unwrap()).unwrap();
        for attr in ["severity", "rule_id", "account_id", "action", "dedup_key"] {
            if attribute(m, attr).is_empty() {
                problems.push(format!("message without the `{attr}` attribute: {body}"));
            }
        }
        if attribute(m, "action") == "trigger" {
            opened.entry(attribute(m, "dedup_key")).or_default().push(body);
        }
    }
    for (dedup, bodies) in &opened {
        if bodies.len() > 1 {
            problems.push(format!("{dedup} opened {} times", bodies.len()));
        }
    }
    for want in &expected {
        let found = all.iter().any(|m| {
            attribute(m, "action") == "trigger"
                && attribute(m, "rule_id") == want["ruleId"].as_str().unwrap()
                && attribute(m, "account_id") == want["accountId"].as_str().unwrap()
        });
        if !found {
            problems.push(format!("not published: {} in {}", want["ruleId"], want["accountId"]));
        }
    }
    for dedup in opened.keys() {
        let rule = dedup.split(':').next().unwrap_or_default();
        if !expected.iter().any(|w| w["ruleId"].as_str() == Some(rule) || dedup.contains(w["ruleId"].as_str().unwrap())) {
            problems.push(format!("published but not expected: {dedup}"));
        }
    }
    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n"));

    // The filter policy routed only high and critical alerts to the pager queue.
    let high = receive_all(&clients, &high_url, Duration::from_secs(3)).await;
    let want_high = all.iter().filter(|m| ["high", "critical"].contains(&attribute(m, "severity").as_str())).count();
    assert!(want_high > 0, "the incidents include high-severity alerts");
    assert_eq!(high.len(), want_high, "the pager queue got exactly the high and critical messages");
    assert!(high.iter().all(|m| ["high", "critical"].contains(&attribute(m, "severity").as_str())));

    // GraphQL: Organizations' names, and alerts with resolved origins.
    let http = reqwest::Client::new();
    let graphql = |query: &str| {
        let request = http.post(format!("http://127.0.0.1:{api_port}/graphql")).bearer_auth("e2e-secret-token").json(&serde_json::json!({ "query": query }));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let accounts = graphql("{ accounts(first: 50) { nodes { id name ouPath } } }").await;
    let nodes = accounts["data"]["accounts"]["nodes"].as_array().unwrap_or_else(|| panic!("accounts query failed: {accounts}"));
    for (id, name) in &names {
        let node = nodes.iter().find(|n| n["id"] == id.as_str()).unwrap_or_else(|| panic!("account {id} missing from {accounts}"));
        assert_eq!(node["name"], name.as_str(), "the Organizations name of {id}");
    }
    let alerts = graphql("{ alerts(first: 100) { nodes { ruleId accountId origin { kind principal } } } }").await;
    let listed = alerts["data"]["alerts"]["nodes"].as_array().unwrap_or_else(|| panic!("alerts query failed: {alerts}"));
    assert_eq!(listed.len(), opened.len(), "the API lists each published alert once: {alerts}");
    for want in &expected {
        let alert = listed
            .iter()
            .find(|a| a["ruleId"] == want["ruleId"] && a["accountId"] == want["accountId"])
            .unwrap_or_else(|| panic!("{} in {} missing from the API: {alerts}", want["ruleId"], want["accountId"]));
        if want["originPrincipal"].is_string() {
            assert_eq!(alert["origin"]["principal"], want["originPrincipal"], "the resolved origin of {}", want["ruleId"]);
        }
    }

    // Metrics: every metric the dashboard charts is exported by a service, and the figures add up.
    let scrape = |port: u16| {
        let request = http.get(format!("http://127.0.0.1:{port}/metrics"));
        async move {
            let response = request.send().await.unwrap();
            assert!(response.status().is_success(), "/metrics on {port}: {}", response.status());
            parse_metrics(&response.text().await.unwrap())
        }
    };
    let (collected, enriched, served) = (scrape(collector_metrics).await, scrape(enricher_metrics).await, scrape(api_port).await);
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../dashboards/grafana/trailwatch.json")).unwrap()).unwrap();
    let charted = dashboard_metrics(&dashboard);
    assert!(charted.len() >= 20, "the dashboard charts the services' metrics: {charted:?}");
    let mut unexported = Vec::new();
    for name in &charted {
        let exported = [&collected, &enriched, &served].iter().any(|(samples, types)| {
            // A histogram's series are name_bucket, name_sum and name_count of a family typed histogram.
            let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).filter(|f| types.get(*f).is_some_and(|t| t == "histogram"));
            let declared = types.contains_key(name) || family.is_some();
            declared && samples.iter().any(|s| &s.name == name)
        });
        if !exported {
            unexported.push(name.as_str());
        }
    }
    assert!(unexported.is_empty(), "charted by the dashboard but exported by no service with a sample: {unexported:?}");

    let value = |(samples, _): &(Vec<Sample>, BTreeMap<String, String>), name: &str, labels: &[(&str, &str)]| -> f64 {
        samples.iter().filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))).map(|s| s.value).sum()
    };
    let facts = trail_facts(&files);
    let stored = value(&enriched, "trailwatch_events_stored_total", &[]);
    assert_eq!(stored as usize, facts.events, "events stored: each distinct event uploaded ({} records)", facts.records);
    let resolved = value(&enriched, "trailwatch_identity_resolutions_total", &[]);
    let duplicates = value(&enriched, "trailwatch_events_duplicate_total", &[]);
    assert_eq!(resolved, stored + duplicates, "every event stored (or stored again) has one resolution outcome");
    assert!(value(&enriched, "trailwatch_identity_resolutions_total", &[("outcome", "exact")]) > 0.0, "role chains resolve exactly");
    let lookups = value(&enriched, "trailwatch_session_cache_lookups_total", &[]);
    assert!(lookups > 0.0 && value(&enriched, "trailwatch_session_cache_lookups_total", &[("result", "hit")]) > 0.0, "the session cache answers lookups");

    // Alerts by severity and action: exactly the messages on the topic; all delivered.
    let mut on_topic: BTreeMap<(String, String), f64> = BTreeMap::new();
    for m in &all {
        *on_topic.entry((attribute(m, "action"), attribute(m, "severity"))).or_default() += 1.0;
    }
    let mut counted: BTreeMap<(String, String), f64> = BTreeMap::new();
    for s in enriched.0.iter().filter(|s| s.name == "trailwatch_alert_transitions_total" && s.value > 0.0) {
        counted.insert((s.labels["action"].clone(), s.labels["severity"].clone()), s.value);
    }
    assert_eq!(counted, on_topic, "alert transitions by (action, severity): the metric and the topic");
    assert_eq!(value(&enriched, "trailwatch_alert_deliveries_total", &[("sink", "sns")]), all.len() as f64, "deliveries to SNS");
    assert_eq!(value(&enriched, "trailwatch_alert_deliveries_outstanding", &[("sink", "sns")]), 0.0, "nothing left to deliver");

    // Queues: both dead-letter queues watched and empty.
    for (service, metrics) in [("collector", &collected), ("enricher", &enriched)] {
        let dlq: Vec<&Sample> = metrics.0.iter().filter(|s| s.name == "trailwatch_dead_letter_queue_messages").collect();
        assert!(!dlq.is_empty() && dlq.iter().all(|s| s.value == 0.0 && s.labels["queue"].ends_with("-dlq")), "the {service}'s dead-letter queue: {dlq:?}");
        assert_eq!(value(metrics, "trailwatch_queue_reads_failed_total", &[]), 0.0, "the {service} read its queues");
    }

    // Freshness: the newest event per account and region is the newest uploaded; lags are seconds.
    let mut newest: BTreeMap<(String, String), i64> = BTreeMap::new();
    for s in enriched.0.iter().filter(|s| s.name == "trailwatch_newest_event_timestamp_seconds") {
        newest.insert((s.labels["account_id"].clone(), s.labels["region"].clone()), (s.value * 1000.0).round() as i64);
    }
    assert_eq!(newest, facts.newest, "newest event time stored, per account and region");
    let lag_count = value(&enriched, "trailwatch_ingest_lag_seconds_count", &[]);
    assert!(lag_count >= files.len() as f64, "every file's lag is observed: {lag_count} of {}", files.len());
    for s in enriched.0.iter().filter(|s| s.name == "trailwatch_ingest_last_lag_seconds") {
        assert!((0.0..240.0).contains(&s.value), "lag of {:?}: {} s", s.labels, s.value);
    }

    // Athena: the fallback's queries all finished.
    let started = value(&enriched, "trailwatch_athena_queries_started_total", &[("purpose", "session_archive")]);
    assert_eq!(value(&enriched, "trailwatch_athena_queries_total", &[("purpose", "session_archive")]), started, "Athena queries started and finished");
    assert_eq!(value(&enriched, "trailwatch_athena_queries_total", &[("outcome", "failed")]), 0.0);
}
