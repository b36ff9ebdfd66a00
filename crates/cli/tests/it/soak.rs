//! Soak: `trailwatch run` (embedded store, API on, tokens from a file)
//! ingests a generated organization's log files as they land, at a steady
//! rate, while several GraphQL clients ask the main questions of a security
//! team the whole time: the open-alerts page, one person's events over the
//! day, the accounts with their aliases, and health. What a user would
//! notice is checked: no query fails, every event fed is stored exactly once,
//! and the server's memory and the queries' latency stay flat from the first
//! third of the run to the last.
//!
//! `TRAILWATCH_SOAK_SECONDS` (how long files are fed and queries asked,
//! default 30; `scripts/test --soak-seconds N`) and `TRAILWATCH_SOAK_RATE`
//! (events fed per second, default 500) make longer or heavier runs. The
//! figures are printed: feed and store rates, memory and latency per third.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;

/// The generated trail covers the day before this instant.
const DAY_START: &str = "2026-10-31T00:00:00Z";
const DAY_END: &str = "2026-11-01T00:00:00Z";
/// A client's pause between one answer and its next question.
const THINK: Duration = Duration::from_millis(10);

/// How much later answers may be: the last third's p99 may be this many
/// times the first third's, plus `LATENCY_SLACK` (scheduling noise of a
/// shared machine). A search that scans what grows, or a lock held longer
/// and longer, moves past it; a busy neighbour for a few seconds does not.
const LATENCY_FACTOR: f64 = 3.0;
const LATENCY_SLACK: Duration = Duration::from_millis(150);
/// How much more memory the last third may use than the first: this share
/// of the first third's peak, plus what the store's writer may add to its
/// page cache while the database grows (at most the cache's 64 MiB), plus
/// a fixed allowance for allocator noise.
const MEMORY_SHARE: f64 = 0.10;
const WRITER_CACHE_BYTES: u64 = 64 << 20;
const MEMORY_SLACK_BYTES: u64 = 16 << 20;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |text| text.trim().parse().unwrap_or_else(|e| panic!("{name}={text:?}: not a whole number ({e})")))
}

/// One log file of the generated trail, in the order the bucket receives them.
struct LogFile {
    key: String,
    bytes: Vec<u8>,
    /// `account event-id` of each record.
    events: Vec<String>,
}

/// The trail's log files (not its digests) ordered by the time in their
/// names, and the IAM user ARN that appears in the most records.
fn log_files(root: &Path) -> (Vec<LogFile>, String) {
    let (mut found, mut dirs) = (Vec::new(), vec![root.join("AWSLogs")]);
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "CloudTrail-Digest") {
                    dirs.push(p);
                }
            } else if p.to_string_lossy().ends_with(".json.gz") {
                found.push(p);
            }
        }
    }
    let stamp = |p: &PathBuf| p.file_name().unwrap().to_str().unwrap().split('_').nth(3).unwrap_or_default().to_owned();
    found.sort_by_key(|p| (stamp(p), p.clone()));
    let mut users: HashMap<String, usize> = HashMap::new();
    let files = found
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).unwrap();
            let mut text = String::new();
            flate2::read::GzDecoder::new(bytes.as_slice()).read_to_string(&mut text).unwrap();
            let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", p.display()));
            let records = doc["Records"].as_array().unwrap_or_else(|| panic!("{}: no Records", p.display()));
            let mut events = Vec::with_capacity(records.len());
            for r in records {
                events.push(format!("{} {}", r["recipientAccountId"].as_str().unwrap(), r["eventID"].as_str().unwrap()));
                if let (Some("IAMUser"), Some(arn)) = (r["userIdentity"]["type"].as_str(), r["userIdentity"]["arn"].as_str()) {
                    *users.entry(arn.to_owned()).or_default() += 1;
                }
            }
            LogFile { key: p.strip_prefix(root).unwrap().to_str().unwrap().to_owned(), bytes, events }
        })
        .collect();
    let busiest = users.into_iter().max_by_key(|(arn, n)| (*n, arn.clone())).map(|(arn, _)| arn).expect("the trail has IAM user records");
    (files, busiest)
}

/// The questions the clients ask, by name.
fn queries(person: &str) -> Vec<(&'static str, Value)> {
    vec![
        (
            "open alerts",
            json!({"query": "query($first: Int!) { alerts(filter: {status: [OPEN, ACKNOWLEDGED]}, first: $first) {
                edges { node { id ruleId title severity status accountId accountAlias origin { kind principal } firstSeen lastSeen count } }
                pageInfo { hasNextPage endCursor } } }", "variables": {"first": 50}}),
        ),
        (
            "origin events",
            json!({"query": "query($p: String!, $since: DateTime!, $until: DateTime!) {
                events(filter: {originPrincipal: $p, since: $since, until: $until}, first: 50) {
                edges { node { eventId eventTime eventName accountId accountAlias actor { type arn } origin { kind principal confidence } } }
                pageInfo { hasNextPage endCursor } } }", "variables": {"p": person, "since": DAY_START, "until": DAY_END}}),
        ),
        ("accounts", json!({"query": "{ accounts(first: 100) { nodes { id name alias lastEventTime } } }"})),
        ("health", json!({"query": "{ health { events rejectedRecords pendingResolutions files { status count } } }"})),
    ]
}

/// One answer: when it was asked (since the start), how long it took, and
/// the failure if it was one. `items` is what the answer held (edges, nodes,
/// or the events the ledger counts).
struct Answer {
    query: &'static str,
    at: Duration,
    took: Duration,
    items: u64,
    error: Option<String>,
}

/// Posts `body`; an error unless HTTP 200 with data and no GraphQL errors.
async fn ask(client: &reqwest::Client, url: &str, token: &str, name: &str, body: &Value) -> Result<u64, String> {
    let response = client.post(url).bearer_auth(token).json(body).send().await.map_err(|e| format!("sending: {e}"))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| format!("reading the answer ({status}): {e}"))?;
    if status != reqwest::StatusCode::OK {
        return Err(format!("HTTP {status}: {}", text.chars().take(300).collect::<String>()));
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("not JSON ({e}): {}", text.chars().take(300).collect::<String>()))?;
    if v.get("errors").is_some_and(|e| !e.is_null()) {
        return Err(format!("GraphQL errors: {}", v["errors"]));
    }
    let data = &v["data"];
    let count = |list: &Value| list.as_array().map(|a| a.len() as u64);
    let items = match name {
        "open alerts" => count(&data["alerts"]["edges"]),
        "origin events" => count(&data["events"]["edges"]),
        "accounts" => count(&data["accounts"]["nodes"]),
        _ => data["health"]["events"].as_u64(),
    };
    items.ok_or_else(|| format!("the answer has no {name}: {}", text.chars().take(300).collect::<String>()))
}

/// One client per query, each asking it in a closed loop until `stop`.
fn ask_until(url: &str, token: &str, queries: Vec<(&'static str, Value)>, start: Instant, stop: Arc<AtomicBool>) -> Vec<Answer> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let mut tasks = Vec::new();
        for (name, body) in queries {
            let (client, url, token, stop) = (client.clone(), url.to_owned(), token.to_owned(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut answers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let asked = Instant::now();
                    let (items, error) = match ask(&client, &url, &token, name, &body).await {
                        Ok(n) => (n, None),
                        Err(e) => (0, Some(e)),
                    };
                    answers.push(Answer { query: name, at: asked - start, took: asked.elapsed(), items, error });
                    tokio::time::sleep(THINK).await;
                }
                answers
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        all
    })
}

/// The server's resident memory (VmRSS), in bytes.
fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
}

fn db_bytes(data: &Path) -> u64 {
    ["trailwatch.db", "trailwatch.db-wal"].iter().filter_map(|n| std::fs::metadata(data.join(n)).ok()).map(|m| m.len()).sum()
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Stops the server if the test fails before it does.
struct Server(Option<Child>);

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn ingest_under_query_load_keeps_memory_and_latency_flat() {
    let seconds = setting("TRAILWATCH_SOAK_SECONDS", 30).max(10);
    let rate = setting("TRAILWATCH_SOAK_RATE", 500).max(50);
    let run_for = Duration::from_secs(seconds);
    let warm_up = Duration::from_secs((seconds / 6).clamp(5, 30));

    // A trail with a fifth more events than the run feeds (the pace is kept
    // to the second, so it does not run dry); its first files are there
    // when `run` starts, the rest lands while it runs.
    let tmp = tempfile::tempdir().unwrap();
    let (full, live, data) = (tmp.path().join("full"), tmp.path().join("live"), tmp.path().join("data"));
    let size = (rate * seconds * 6 / 5).max(2000);
    ok(&["gen", "--out", path(&full), "--accounts", "8", "--events", &size.to_string(), "--seed", "7", "--end", DAY_END, "--incidents"]);
    let (files, person) = log_files(&full);
    std::fs::create_dir_all(&live).unwrap();
    std::fs::copy(full.join("accounts.json"), live.join("accounts.json")).unwrap();
    let deliver = |file: &LogFile| {
        let staged = live.join(".landing");
        std::fs::write(&staged, &file.bytes).unwrap();
        let to = live.join(&file.key);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::rename(&staged, &to).unwrap();
    };
    let mut fed_files = 0;
    while fed_files < files.len() && files[..fed_files].iter().map(|f| f.events.len()).sum::<usize>() < 200 {
        deliver(&files[fed_files]);
        fed_files += 1;
    }

    let token = format!("soak-{:016x}", u64::from(std::process::id()).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seconds);
    let tokens = tmp.path().join("tokens");
    std::fs::write(&tokens, format!("soak:viewer:{token}\n")).unwrap();
    let log = tmp.path().join("run.log");
    let mut child = trailwatch()
        .args(["run", "--trail", path(&live), "--data", path(&data), "--interval", "1", "--listen", "127.0.0.1:0", "--token-file", path(&tokens)])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn trailwatch run");
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let mut server = Server(Some(child));
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut url = None;
    let started = Instant::now();
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60).saturating_sub(started.elapsed()))
            .unwrap_or_else(|_| panic!("trailwatch run did not start watching within 60 s; its log:\n{}", std::fs::read_to_string(&log).unwrap_or_default()));
        if let Some(rest) = line.strip_prefix("GraphQL API on ") {
            url = rest.split_whitespace().next().map(str::to_owned);
        }
        if line.starts_with("watching ") {
            break;
        }
    }
    let url = url.expect("the API address is printed");
    // Keep reading stdout (alert lines) so the server never blocks on a full pipe.
    std::thread::spawn(move || while lines.recv().is_ok() {});

    // Memory and database size, sampled every 200 ms until stopped.
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::<(Duration, u64, u64)>::new()));
    let sampler = {
        let (stop, samples, data) = (stop.clone(), samples.clone(), data.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(bytes) = rss(pid) {
                    samples.lock().unwrap().push((start.elapsed(), bytes, db_bytes(&data)));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let clients = {
        let (url, token, stop, asked) = (url.clone(), token.clone(), stop.clone(), queries(&person));
        std::thread::spawn(move || ask_until(&url, &token, asked, start, stop))
    };

    // The feeder: files land at `rate` events per second until the time is up.
    let mut fed_events: usize = files[..fed_files].iter().map(|f| f.events.len()).sum();
    let preloaded = fed_events;
    while start.elapsed() < run_for {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as usize + preloaded;
        while fed_events < due && fed_files < files.len() {
            deliver(&files[fed_files]);
            fed_events += files[fed_files].events.len();
            fed_files += 1;
        }
        assert!(fed_files < files.len(), "the generated trail ran out after {:.1} s: the feeder outran its sizing", start.elapsed().as_secs_f64());
        std::thread::sleep(Duration::from_millis(20));
    }
    let fed_for = start.elapsed();

    // Everything fed is stored (the ledger's count, as health reports it).
    let drained = Instant::now();
    let health = queries(&person).pop().unwrap();
    let poller = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = reqwest::Client::new();
    let stored_by_health = loop {
        let answer = poller.block_on(ask(&client, &url, &token, health.0, &health.1)).ok();
        if answer == Some(fed_events as u64) || drained.elapsed() > Duration::from_secs(120) {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let drain = drained.elapsed();
    stop.store(true, Ordering::Relaxed);
    let answers = clients.join().expect("the query clients");
    sampler.join().unwrap();
    let samples = samples.lock().unwrap().clone();

    // Ctrl-C: it stops cleanly.
    let mut child = server.0.take().unwrap();
    assert!(std::process::Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap().success());
    let stopping = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(stopping.elapsed() < Duration::from_secs(30), "trailwatch did not stop within 30 s of SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    let run_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "trailwatch run exited with {status}; its log:\n{run_log}");

    // The figures, per third of the run after the warm-up.
    let third = (fed_for.saturating_sub(warm_up)) / 3;
    let third_of = |at: Duration| -> Option<usize> { (at >= warm_up).then(|| (((at - warm_up).as_secs_f64() / third.as_secs_f64()) as usize).min(2)) };
    let mut peak_rss = [0u64; 3];
    let mut db_end = [0u64; 3];
    for &(at, bytes, db) in &samples {
        if let Some(t) = third_of(at).filter(|_| at <= fed_for) {
            peak_rss[t] = peak_rss[t].max(bytes);
            db_end[t] = db_end[t].max(db);
        }
    }
    let errors: Vec<&Answer> = answers.iter().filter(|a| a.error.is_some()).collect();
    let mut latencies: BTreeMap<&str, [Vec<Duration>; 3]> = BTreeMap::new();
    let mut items: BTreeMap<&str, u64> = BTreeMap::new();
    for a in answers.iter().filter(|a| a.error.is_none() && a.at <= fed_for) {
        *items.entry(a.query).or_default() += a.items;
        if let Some(t) = third_of(a.at) {
            latencies.entry(a.query).or_default()[t].push(a.took);
        }
    }
    for thirds in latencies.values_mut() {
        thirds.iter_mut().for_each(|v| v.sort());
    }
    let stored_rate = |from: Duration, to: Duration| -> f64 {
        let at =
            |when: Duration| answers.iter().filter(|a| a.query == "health" && a.error.is_none() && a.at <= when).max_by_key(|a| a.at).map_or(0, |a| a.items);
        (at(to) as f64 - at(from) as f64) / (to - from).as_secs_f64()
    };
    println!(
        "soak: {seconds} s at {rate} events/s ({} s warm-up, thirds of {:.1} s), {} files, {fed_events} events fed ({:.0}/s), \
         stored {:.0}/s while fed, all stored {:.1} s after the feed stopped",
        warm_up.as_secs(),
        third.as_secs_f64(),
        fed_files,
        (fed_events - preloaded) as f64 / fed_for.as_secs_f64(),
        stored_rate(Duration::ZERO, fed_for),
        drain.as_secs_f64()
    );
    println!(
        "soak: server RSS peak per third {:.1} / {:.1} / {:.1} MiB; database {:.1} / {:.1} / {:.1} MiB",
        mib(peak_rss[0]),
        mib(peak_rss[1]),
        mib(peak_rss[2]),
        mib(db_end[0]),
        mib(db_end[1]),
        mib(db_end[2])
    );
    println!("soak: {:<14} {:>9} {:>22} {:>22} {:>22}", "query", "answers", "first third p50/p99", "second third p50/p99", "last third p50/p99");
    for (name, thirds) in &latencies {
        let cell = |v: &Vec<Duration>| format!("{:.1} / {:.1} ms", ms(percentile(v, 0.5)), ms(percentile(v, 0.99)));
        println!(
            "soak: {name:<14} {:>9} {:>22} {:>22} {:>22}",
            thirds.iter().map(Vec::len).sum::<usize>(),
            cell(&thirds[0]),
            cell(&thirds[1]),
            cell(&thirds[2])
        );
    }
    println!("soak: {} errors of {} answers", errors.len(), answers.len());

    // No query failed, and each was answered all along.
    assert!(
        errors.is_empty(),
        "{} of {} queries failed; the first: {:?}",
        errors.len(),
        answers.len(),
        errors.iter().take(5).map(|a| format!("{} at {:.1} s: {}", a.query, a.at.as_secs_f64(), a.error.as_deref().unwrap_or_default())).collect::<Vec<_>>()
    );
    for (name, _) in queries(&person) {
        let thirds = latencies.get(name).unwrap_or_else(|| panic!("{name} was never answered"));
        assert!(
            thirds.iter().all(|v| v.len() >= 3),
            "{name} was not answered all along: {:?} answers per third",
            thirds.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }
    assert!(items.get("origin events").copied().unwrap_or(0) > 0, "the search for {person}'s events never found any");
    assert!(items.get("accounts").copied().unwrap_or(0) > 0, "the accounts query never listed an account");

    // Every event fed stored exactly once.
    assert_eq!(stored_by_health, Some(fed_events as u64), "health counts these events stored, {fed_events} were fed (waited {:.0} s)", drain.as_secs_f64());
    let fed: HashSet<&str> = files[..fed_files].iter().flat_map(|f| f.events.iter().map(String::as_str)).collect();
    assert_eq!(fed.len(), fed_events, "the generator's event ids are unique");
    let conn = rusqlite::Connection::open(data.join("trailwatch.db")).unwrap();
    let stored: Vec<String> =
        conn.prepare("SELECT account_id || ' ' || event_id FROM events").unwrap().query_map([], |row| row.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(stored.len(), fed_events, "events stored (with repeats) against events fed");
    let stored: HashSet<&str> = stored.iter().map(String::as_str).collect();
    assert_eq!(stored.len(), fed_events, "an event is stored twice");
    let lost: Vec<&&str> = fed.difference(&stored).take(5).collect();
    assert!(lost.is_empty(), "fed events not stored, e.g. {lost:?}");

    // Memory flat: the last third's peak within the first's plus what the
    // writer's page cache may add while the database grows.
    let cache_growth = db_end[2].saturating_sub(db_end[0]).min(WRITER_CACHE_BYTES);
    let allowed = peak_rss[0] + (peak_rss[0] as f64 * MEMORY_SHARE) as u64 + cache_growth + MEMORY_SLACK_BYTES;
    assert!(
        peak_rss[2] <= allowed,
        "memory grows: RSS peak {:.1} MiB in the last third against {:.1} MiB in the first (allowed {:.1} MiB: {:.0}% more, {:.1} MiB of page cache for the database's growth, {:.0} MiB slack)",
        mib(peak_rss[2]),
        mib(peak_rss[0]),
        mib(allowed),
        MEMORY_SHARE * 100.0,
        mib(cache_growth),
        mib(MEMORY_SLACK_BYTES)
    );
    // Latency flat, query by query.
    for (name, thirds) in &latencies {
        let (first, last) = (percentile(&thirds[0], 0.99), percentile(&thirds[2], 0.99));
        let allowed = first.mul_f64(LATENCY_FACTOR) + LATENCY_SLACK;
        assert!(
            last <= allowed,
            "{name} slows down: p99 {:.1} ms in the last third against {:.1} ms in the first (allowed {:.1} ms)",
            ms(last),
            ms(first),
            ms(allowed)
        );
    }
}
