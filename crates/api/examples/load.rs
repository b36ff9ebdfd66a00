//! A closed-loop load generator for the GraphQL API: `--concurrency` clients
//! each send a request, wait for its answer, and send the next, for
//! `--warmup` seconds (not counted) and then `--duration` seconds (measured).
//!
//! ```text
//! cargo run --release -p trailwatch-api --example load -- \
//!     --url http://127.0.0.1:8080/graphql --token TOKEN \
//!     (--body '{"query": "{ rules { id } }"}' | --body-file F) [--concurrency 8] [--duration 10] [--warmup 2] [--threads 1]
//! ```
//!
//! The token may come from `TRAILWATCH_TOKEN` instead of `--token`. A body
//! file holds one request body, or several as JSON Lines, sent in turn (each
//! client starts at a different one). It prints one JSON object:
//! `{requests, errors, rps, p50_ms, p90_ms, p99_ms, max_ms, …}`. A request
//! counts as an error when it fails to complete, when the answer is not
//! HTTP 200, or when the GraphQL answer carries `errors` or no `data`;
//! latencies are of the successful requests only, and `rps` counts those
//! completed per second of the measured window. The first error is printed
//! to stderr. It exits non-zero when no request succeeded.
//!
//! The client runs on `--threads` runtime threads (default 1) so that, on a
//! small machine, it leaves the other cores to the server.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::IgnoredAny;
use serde::Deserialize;

const USAGE: &str = "usage: load --url URL [--token TOKEN] (--body JSON | --body-file FILE) \
                     [--concurrency N] [--duration SECONDS] [--warmup SECONDS] [--threads N] [--timeout SECONDS]";

/// What to send, how hard, and for how long.
struct Plan {
    url: String,
    token: String,
    /// Request bodies, sent in turn.
    bodies: Vec<Vec<u8>>,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
    threads: usize,
    timeout: Duration,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Plan, String> {
    let (mut url, mut token, mut body, mut body_file) = (None, std::env::var("TRAILWATCH_TOKEN").ok(), None, None);
    let (mut concurrency, mut duration, mut warmup, mut threads, mut timeout) = (1usize, 10.0f64, 2.0f64, 1usize, 30.0f64);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.to_owned());
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number =
            |what: &str| value.parse::<f64>().ok().filter(|n| n.is_finite() && *n >= 0.0).ok_or_else(|| format!("{what} must be a number, not {value:?}"));
        let count = |what: &str| value.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| format!("{what} must be a positive integer, not {value:?}"));
        match flag.as_str() {
            "--url" => url = Some(value),
            "--token" => token = Some(value),
            "--body" => body = Some(value),
            "--body-file" => body_file = Some(value),
            "--concurrency" => concurrency = count("--concurrency")?,
            "--threads" => threads = count("--threads")?,
            "--duration" => duration = number("--duration")?,
            "--warmup" => warmup = number("--warmup")?,
            "--timeout" => timeout = number("--timeout")?,
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    let url = url.ok_or_else(|| format!("--url is required\n{USAGE}"))?;
    let token = token.ok_or_else(|| format!("--token (or TRAILWATCH_TOKEN) is required\n{USAGE}"))?;
    let text = match (body, body_file) {
        (Some(body), None) => body,
        (None, Some(file)) => std::fs::read_to_string(&file).map_err(|e| format!("reading {file}: {e}"))?,
        _ => return Err(format!("give one of --body and --body-file\n{USAGE}")),
    };
    if duration <= 0.0 {
        return Err("--duration must be more than 0".to_owned());
    }
    Ok(Plan {
        url,
        token,
        bodies: bodies(&text)?,
        concurrency,
        warmup: Duration::from_secs_f64(warmup),
        duration: Duration::from_secs_f64(duration),
        threads,
        timeout: Duration::from_secs_f64(timeout),
    })
}

/// One JSON request body, or several as JSON Lines; each must be an object with a `query`.
fn bodies(text: &str) -> Result<Vec<Vec<u8>>, String> {
    let whole = serde_json::from_str::<serde_json::Value>(text);
    let values: Vec<serde_json::Value> = match whole {
        Ok(value) => vec![value],
        Err(_) => text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| serde_json::from_str(line).map_err(|e| format!("body line {}: {e}", i + 1)))
            .collect::<Result<_, _>>()?,
    };
    if values.is_empty() {
        return Err("the body file holds no request".to_owned());
    }
    values
        .into_iter()
        .map(|v| match v.get("query") {
            Some(serde_json::Value::String(_)) => serde_json::to_vec(&v).map_err(|e| e.to_string()),
            _ => Err(format!("a request body is a JSON object with a \"query\" string, not {v}")),
        })
        .collect()
}

/// A GraphQL answer, as far as telling success from failure needs.
#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    data: Option<IgnoredAny>,
    #[serde(default)]
    errors: Option<Vec<GraphqlError>>,
}

#[derive(Deserialize)]
struct GraphqlError {
    #[serde(default)]
    message: String,
}

/// Sends one request; the size of a successful answer, or why it failed.
async fn send(client: &reqwest::Client, plan: &Plan, body: &[u8]) -> Result<usize, String> {
    let response = client
        .post(&plan.url)
        .bearer_auth(&plan.token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| format!("reading the answer failed: {e}"))?;
    let snippet = || String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
    if status != reqwest::StatusCode::OK {
        return Err(format!("HTTP {status}: {}", snippet()));
    }
    let answer: Answer = serde_json::from_slice(&bytes).map_err(|e| format!("the answer is not GraphQL JSON ({e}): {}", snippet()))?;
    match (answer.errors, answer.data) {
        (Some(errors), _) if !errors.is_empty() => {
            let messages: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
            Err(format!("GraphQL errors: {}", messages.join("; ")))
        }
        (_, None) => Err(format!("the answer has no data: {}", snippet())),
        _ => Ok(bytes.len()),
    }
}

/// What one client saw in the measured window.
#[derive(Default)]
struct Tally {
    /// Latencies of successful requests, in microseconds.
    micros: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
    response_bytes: u64,
    /// When its last measured request finished.
    last_done: Option<Instant>,
}

/// One client: requests back to back until `end`; those started at or after `measure_from` are counted.
async fn client_loop(client: reqwest::Client, plan: Arc<Plan>, first_body: usize, measure_from: Instant, end: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut next = first_body;
    loop {
        let started = Instant::now();
        if started >= end {
            break;
        }
        let body = &plan.bodies[next % plan.bodies.len()];
        next += 1;
        let outcome = send(&client, &plan, body).await;
        let done = Instant::now();
        if started < measure_from {
            continue;
        }
        tally.last_done = Some(done);
        match outcome {
            Ok(bytes) => {
                tally.micros.push(done.duration_since(started).as_micros() as u64);
                tally.response_bytes += bytes as u64;
            }
            Err(e) => {
                tally.errors += 1;
                tally.first_error.get_or_insert(e);
            }
        }
    }
    tally
}

/// The nearest-rank percentile of sorted values, in milliseconds.
fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

async fn run(plan: Plan) -> Result<serde_json::Value, String> {
    let client = reqwest::Client::builder()
        .timeout(plan.timeout)
        .pool_max_idle_per_host(plan.concurrency)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))?;
    let plan = Arc::new(plan);
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.duration;
    let clients: Vec<_> = (0..plan.concurrency)
        .map(|i| tokio::spawn(client_loop(client.clone(), plan.clone(), i * plan.bodies.len() / plan.concurrency, measure_from, end)))
        .collect();
    let mut micros = Vec::new();
    let (mut errors, mut first_error, mut response_bytes, mut last_done) = (0u64, None, 0u64, None::<Instant>);
    for handle in clients {
        let tally = handle.await.map_err(|e| format!("a client task failed: {e}"))?;
        micros.extend(tally.micros);
        errors += tally.errors;
        response_bytes += tally.response_bytes;
        first_error = first_error.or(tally.first_error);
        last_done = last_done.max(tally.last_done);
    }
    micros.sort_unstable();
    // The window runs until the last counted answer arrived (past `end` for requests in flight then).
    let window = last_done.map_or(plan.duration, |t| t.duration_since(measure_from).max(plan.duration));
    let ok = micros.len() as u64;
    if let Some(e) = &first_error {
        eprintln!("load: {errors} error(s); the first: {e}");
    }
    if ok == 0 {
        return Err("no request succeeded".to_owned());
    }
    Ok(serde_json::json!({
        "requests": ok + errors,
        "errors": errors,
        "rps": round3(ok as f64 / window.as_secs_f64()),
        "p50_ms": round3(percentile_ms(&micros, 50.0)),
        "p90_ms": round3(percentile_ms(&micros, 90.0)),
        "p99_ms": round3(percentile_ms(&micros, 99.0)),
        "max_ms": round3(percentile_ms(&micros, 100.0)),
        "mean_response_bytes": response_bytes / ok,
        "concurrency": plan.concurrency,
        "seconds": round3(window.as_secs_f64()),
    }))
}

fn main() -> ExitCode {
    let plan = match parse_args(std::env::args().skip(1)) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("load: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(plan.threads).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("load: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(plan)) {
        Ok(result) => {
            println!("{result}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("load: {e}");
            ExitCode::FAILURE
        }
    }
}
