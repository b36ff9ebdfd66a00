//! A fault-injecting HTTP/1.1 proxy for tests: it stands between the
//! services and the emulator and, by a seeded plan, answers some requests
//! the way a struggling AWS does instead of passing them on.
//!
//! Each request is told apart by service (the credential scope of its SigV4
//! `Authorization` header) and operation (`X-Amz-Target`, the query
//! protocol's `Action`, or for S3 the method and path), and the plan's first
//! rule that matches both draws a fault, or none, with its rates:
//!
//! - [`FaultKind::Throttle`]: the service's own throttling answer (S3 503
//!   `SlowDown`, DynamoDB 400 `ProvisionedThroughputExceededException`, SQS
//!   `RequestThrottled`, SNS 429 `Throttled`, Athena `TooManyRequestsException`);
//! - [`FaultKind::ServerError`] and [`FaultKind::Unavailable`]: HTTP 500 and 503;
//! - [`FaultKind::Reset`]: the connection is reset without an answer;
//! - [`FaultKind::Stall`]: nothing happens for [`FaultPlan::stall`] (longer
//!   than the client's timeout), then the connection is closed;
//! - [`FaultKind::Slow`]: the request is passed on after [`FaultPlan::slow`].
//!
//! None of these reach the emulator: a faulted request did not happen, as
//! when AWS refuses one. Draws are reproducible: each service and operation
//! has its own random stream derived from the seed, so the n-th
//! `DynamoDB:TransactWriteItems` meets the same fault in every run with that
//! seed, whatever the interleaving with other calls. What was injected is
//! counted by service and kind ([`FaultProxy::injected`]). The plan can be
//! swapped while running ([`FaultProxy::set_plan`]): an outage, then recovery.
//!
//! The proxy runs on a runtime of its own (one thread), so it serves while
//! the test's runtime is blocked or busy.
//!
//! It also stands in for operations the emulator lacks: a request whose
//! `X-Amz-Target` has a canned answer ([`FaultProxy::answer_target`]) is
//! answered by its handler instead of being passed on (after the plan had
//! its draw: a fault still comes first). With a plan that injects nothing
//! ([`FaultProxy::pass_through`]) it is the emulator plus those answers.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// What the proxy can do to a request instead of passing it on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    Throttle,
    ServerError,
    Unavailable,
    Reset,
    Stall,
    Slow,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [FaultKind::Throttle, FaultKind::ServerError, FaultKind::Unavailable, FaultKind::Reset, FaultKind::Stall, FaultKind::Slow];

    pub fn label(self) -> &'static str {
        match self {
            FaultKind::Throttle => "throttle",
            FaultKind::ServerError => "http_500",
            FaultKind::Unavailable => "http_503",
            FaultKind::Reset => "reset",
            FaultKind::Stall => "stall",
            FaultKind::Slow => "slow",
        }
    }
}

/// The chance of each fault for one request; the rest pass untouched.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    rates: [f64; 6],
}

impl Rates {
    /// No fault.
    pub fn none() -> Rates {
        Rates::default()
    }

    /// `total` spread evenly over every kind.
    pub fn every_kind(total: f64) -> Rates {
        Rates { rates: [total / 6.0; 6] }
    }

    /// One kind with chance `p`.
    pub fn only(kind: FaultKind, p: f64) -> Rates {
        Rates::none().with(kind, p)
    }

    pub fn with(mut self, kind: FaultKind, p: f64) -> Rates {
        self.rates[kind as usize] = p.clamp(0.0, 1.0);
        self
    }

    /// The chance that a request meets some fault.
    pub fn total(&self) -> f64 {
        self.rates.iter().sum()
    }

    /// The fault a uniform draw in [0, 1) falls on, if any.
    fn pick(&self, draw: f64) -> Option<FaultKind> {
        let mut edge = 0.0;
        for kind in FaultKind::ALL {
            edge += self.rates[kind as usize];
            if draw < edge {
                return Some(kind);
            }
        }
        None
    }
}

/// Rates for the requests of one service (`s3`, `dynamodb`, `sqs`, `sns`,
/// `athena`, `sts`, … as in the credential scope; None: any) and operation
/// (`TransactWriteItems`; None: any).
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    pub service: Option<String>,
    pub operation: Option<String>,
    pub rates: Rates,
}

/// What to inject: the first rule matching a request decides; a request no
/// rule matches passes.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultPlan {
    pub seed: u64,
    pub rules: Vec<FaultRule>,
    /// How long a stalled request is held before its connection is closed.
    pub stall: Duration,
    /// How long a slow request waits before it is passed on.
    pub slow: Duration,
}

impl FaultPlan {
    /// A plan that injects nothing yet.
    pub fn new(seed: u64) -> FaultPlan {
        FaultPlan { seed, rules: Vec::new(), stall: Duration::from_secs(10), slow: Duration::from_millis(800) }
    }

    /// Adds a rule (after those already there: earlier rules win).
    pub fn rule(mut self, service: Option<&str>, operation: Option<&str>, rates: Rates) -> FaultPlan {
        self.rules.push(FaultRule { service: service.map(str::to_owned), operation: operation.map(str::to_owned), rates });
        self
    }

    /// Adds a rule for every request.
    pub fn everywhere(self, rates: Rates) -> FaultPlan {
        self.rule(None, None, rates)
    }

    pub fn stall_for(mut self, stall: Duration) -> FaultPlan {
        self.stall = stall;
        self
    }

    pub fn slow_for(mut self, slow: Duration) -> FaultPlan {
        self.slow = slow;
        self
    }

    fn rates(&self, service: &str, operation: &str) -> Rates {
        let matches = |want: &Option<String>, got: &str| want.as_deref().is_none_or(|w| w.eq_ignore_ascii_case(got));
        self.rules.iter().find(|r| matches(&r.service, service) && matches(&r.operation, operation)).map_or(Rates::none(), |r| r.rates)
    }
}

/// What the proxy saw and did, shared with its connections.
#[derive(Default)]
struct State {
    plan: Option<FaultPlan>,
    /// One random stream per `service:operation`, from the plan's seed.
    streams: HashMap<String, ChaCha8Rng>,
    requests: BTreeMap<String, u64>,
    injected: BTreeMap<(String, FaultKind), u64>,
    /// Canned answers by `X-Amz-Target`.
    answers: Vec<(String, Arc<dyn Answer>)>,
}

impl State {
    fn decide(&mut self, service: &str, operation: &str) -> (Option<FaultKind>, Duration, Duration) {
        let name = format!("{service}:{operation}");
        *self.requests.entry(name.clone()).or_insert(0) += 1;
        let Some(plan) = &self.plan else { return (None, Duration::ZERO, Duration::ZERO) };
        let rates = plan.rates(service, operation);
        let seed = plan.seed ^ fnv1a(name.as_bytes());
        let stream = self.streams.entry(name).or_insert_with(|| ChaCha8Rng::seed_from_u64(seed));
        // 53 random bits: a uniform draw in [0, 1).
        let draw = (stream.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let fault = rates.pick(draw);
        if let Some(kind) = fault {
            *self.injected.entry((service.to_owned(), kind)).or_insert(0) += 1;
        }
        (fault, plan.stall, plan.slow)
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// A running proxy; stopped when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy").field("addr", &self.addr).finish()
    }
}

impl FaultProxy {
    /// Starts a proxy on a free port of 127.0.0.1 in front of `upstream`
    /// (`http://127.0.0.1:PORT`), injecting by `plan`.
    pub fn start(upstream: &str, plan: FaultPlan) -> io::Result<FaultProxy> {
        let upstream = upstream.strip_prefix("http://").unwrap_or(upstream).trim_end_matches('/').to_owned();
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State { plan: Some(plan), ..State::default() }));
        let stop = CancellationToken::new();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let thread = std::thread::Builder::new().name("fault-proxy".into()).spawn({
            let (state, stop) = (state.clone(), stop.clone());
            move || {
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(listener) else { return };
                    loop {
                        let accepted = tokio::select! {
                            _ = stop.cancelled() => return,
                            a = listener.accept() => a,
                        };
                        let Ok((client, _)) = accepted else { continue };
                        let (state, upstream, stop) = (state.clone(), upstream.clone(), stop.clone());
                        tokio::spawn(async move {
                            tokio::select! {
                                _ = stop.cancelled() => {}
                                _ = serve(client, &upstream, &state) => {}
                            }
                        });
                    }
                });
            }
        })?;
        Ok(FaultProxy { addr, state, stop, thread: Some(thread) })
    }

    /// The URL to point clients at.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the plan (its random streams start again from its seed).
    pub fn set_plan(&self, plan: FaultPlan) {
        if let Ok(mut state) = self.state.lock() {
            state.plan = Some(plan);
            state.streams.clear();
        }
    }

    /// Passes everything on from now.
    pub fn heal(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.plan = None;
        }
    }

    /// Faults injected so far, by service and kind.
    pub fn injected(&self) -> BTreeMap<(String, FaultKind), u64> {
        self.state.lock().map(|s| s.injected.clone()).unwrap_or_default()
    }

    /// Faults injected so far, by kind.
    pub fn injected_by_kind(&self) -> BTreeMap<FaultKind, u64> {
        let mut by_kind = BTreeMap::new();
        for ((_, kind), n) in self.injected() {
            *by_kind.entry(kind).or_insert(0) += n;
        }
        by_kind
    }

    /// Requests seen so far (faulted or not), by `service:operation`.
    pub fn requests(&self) -> BTreeMap<String, u64> {
        self.state.lock().map(|s| s.requests.clone()).unwrap_or_default()
    }

    /// Starts a proxy that injects nothing: the emulator, plus the canned
    /// answers given to [`FaultProxy::answer_target`].
    pub fn pass_through(upstream: &str) -> io::Result<FaultProxy> {
        FaultProxy::start(upstream, FaultPlan::new(0))
    }

    /// Answers requests with this `X-Amz-Target` with `handler` instead of
    /// passing them on. The target matches with or without the service's
    /// namespace: `CloudTrail_20131101.ListPublicKeys` (what the Rust SDK
    /// sends) and `com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.ListPublicKeys`
    /// (what the API reference shows) are one target. A later handler for a
    /// target replaces the earlier one.
    pub fn answer_target(&self, target: &str, handler: Arc<dyn Answer>) {
        if let Ok(mut state) = self.state.lock() {
            state.answers.retain(|(t, _)| !same_target(t, target));
            state.answers.push((target.to_owned(), handler));
        }
    }
}

/// A request the proxy answers itself ([`FaultProxy::answer_target`]).
#[derive(Debug, Clone, Copy)]
pub struct CannedCall<'a> {
    /// The region of the request's SigV4 credential scope.
    pub region: &'a str,
    /// The request body (JSON for the JSON protocols).
    pub body: &'a [u8],
}

/// A canned answer: an HTTP status and a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct CannedReply {
    pub status: u16,
    pub body: serde_json::Value,
}

impl CannedReply {
    /// HTTP 200 with `body`.
    pub fn ok(body: serde_json::Value) -> CannedReply {
        CannedReply { status: 200, body }
    }

    /// An error in the JSON protocols' shape (`__type` and `message`).
    pub fn error(status: u16, code: &str, message: &str) -> CannedReply {
        CannedReply { status, body: serde_json::json!({ "__type": code, "message": message }) }
    }
}

/// What answers a canned target. Called on the proxy's own thread: keep it quick.
pub trait Answer: Send + Sync {
    fn answer(&self, call: CannedCall<'_>) -> CannedReply;
}

impl<F> Answer for F
where
    F: Fn(CannedCall<'_>) -> CannedReply + Send + Sync,
{
    fn answer(&self, call: CannedCall<'_>) -> CannedReply {
        self(call)
    }
}

/// Whether two `X-Amz-Target` values name one operation, one of them maybe
/// with the service's namespace in front.
fn same_target(a: &str, b: &str) -> bool {
    let within = |long: &str, short: &str| long.len() > short.len() && long.ends_with(short) && long[..long.len() - short.len()].ends_with('.');
    a.eq_ignore_ascii_case(b) || within(a, b) || within(b, a)
}

/// The canned answer of a request, if its target has one.
fn canned(state: &Mutex<State>, request: &Message) -> Option<Vec<u8>> {
    let target = request.header("x-amz-target")?;
    let handler = state.lock().ok()?.answers.iter().find(|(t, _)| same_target(t, target)).map(|(_, h)| h.clone())?;
    let region = scope_part(request, 2).unwrap_or_default();
    let reply = handler.answer(CannedCall { region: &region, body: &request.body });
    Some(canned_response(request, &reply))
}

/// A canned reply framed as an HTTP/1.1 response.
fn canned_response(request: &Message, reply: &CannedReply) -> Vec<u8> {
    let body = reply.body.to_string();
    let reason = match reply.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Answer",
    };
    let content_type = request.header("content-type").unwrap_or("application/x-amz-json-1.1");
    let request_id = format!("canned-{:016x}", fnv1a(&request.body));
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nx-amzn-RequestId: {request_id}\r\n\r\n",
        reply.status,
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One HTTP/1.1 message as read: its start line, headers, and body bytes
/// exactly as framed on the wire.
struct Message {
    start: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn is_chunked(&self) -> bool {
        self.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    fn head_bytes(&self, skip: &[&str]) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.start);
        for (name, value) in self.headers.iter().filter(|(n, _)| !skip.iter().any(|s| n.eq_ignore_ascii_case(s))) {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.into_bytes()
    }
}

/// The longest request or response head read.
const MAX_HEAD: usize = 64 * 1024;

/// Reads a start line and headers; None at a clean end of stream.
async fn read_head<R: AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<Option<(String, Vec<(String, String)>)>> {
    let mut start = String::new();
    if reader.read_line(&mut start).await? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    let mut size = start.len();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).await?;
        size += n;
        if n == 0 || size > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated or oversized HTTP head"));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    Ok(Some((start.trim_end_matches(['\r', '\n']).to_owned(), headers)))
}

/// Reads a chunked body, keeping its framing.
async fn read_chunked<R: AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "chunked body cut short"));
        }
        raw.extend_from_slice(line.as_bytes());
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad chunk size line {line:?}")))?;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let mut trailer = String::new();
                if reader.read_line(&mut trailer).await? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "chunked trailers cut short"));
                }
                raw.extend_from_slice(trailer.as_bytes());
                if trailer.trim().is_empty() {
                    return Ok(raw);
                }
            }
        }
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk).await?;
        raw.extend_from_slice(&chunk);
    }
}

/// Reads a body framed by `Content-Length` or chunked encoding (a request
/// with neither has none; a response with neither runs to the end of stream).
async fn read_body<R: AsyncBufRead + Unpin>(reader: &mut R, message: &Message, to_end: bool) -> io::Result<Vec<u8>> {
    if message.is_chunked() {
        return read_chunked(reader).await;
    }
    if let Some(length) = message.header("content-length") {
        let length: usize = length.parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad Content-Length {length:?}")))?;
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await?;
        return Ok(body);
    }
    let mut body = Vec::new();
    if to_end {
        reader.read_to_end(&mut body).await?;
    }
    Ok(body)
}

/// Serves one client connection, one request after another.
async fn serve(client: TcpStream, upstream: &str, state: &Mutex<State>) {
    let _ = client.set_nodelay(true);
    let (read, mut write) = client.into_split();
    let mut reader = BufReader::new(read);
    let mut backend: Option<BufReader<TcpStream>> = None;
    loop {
        let Ok(Some((start, headers))) = read_head(&mut reader).await else { return };
        let mut request = Message { start, headers, body: Vec::new() };
        if request.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) && write.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err()
        {
            return;
        }
        request.body = match read_body(&mut reader, &request, false).await {
            Ok(body) => body,
            Err(_) => return,
        };
        let (service, operation) = identify(&request);
        let (fault, stall, slow) = match state.lock() {
            Ok(mut s) => s.decide(&service, &operation),
            Err(_) => return,
        };
        let answer = match fault {
            None => None,
            Some(FaultKind::Slow) => {
                tokio::time::sleep(slow).await;
                None
            }
            Some(FaultKind::Reset) => {
                if let Ok(client) = reader.into_inner().reunite(write) {
                    // SO_LINGER 0: closing sends a reset, at once (no blocking).
                    #[allow(deprecated)]
                    let _ = client.set_linger(Some(Duration::ZERO));
                }
                return;
            }
            Some(FaultKind::Stall) => {
                tokio::time::sleep(stall).await;
                return;
            }
            Some(kind) => Some(fault_response(&service, &request, kind)),
        };
        let response = match answer.or_else(|| canned(state, &request)) {
            Some(bytes) => bytes,
            None => match forward(&mut backend, upstream, &request).await {
                Ok(bytes) => bytes,
                Err(_) => {
                    // The emulator failed: the client sees the connection go.
                    return;
                }
            },
        };
        if write.write_all(&response).await.is_err() {
            return;
        }
        if request.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            return;
        }
    }
}

/// Passes a request to the emulator and returns its answer, framed for a
/// connection that stays open.
async fn forward(backend: &mut Option<BufReader<TcpStream>>, upstream: &str, request: &Message) -> io::Result<Vec<u8>> {
    // A kept connection the emulator closed meanwhile fails at once: try a fresh one.
    for fresh in [backend.is_none(), true] {
        if fresh {
            let stream = TcpStream::connect(upstream).await?;
            let _ = stream.set_nodelay(true);
            *backend = Some(BufReader::new(stream));
        }
        let Some(conn) = backend.as_mut() else { continue };
        match exchange(conn, request).await {
            Ok((bytes, reusable)) => {
                if !reusable {
                    *backend = None;
                }
                return Ok(bytes);
            }
            Err(e) if fresh => {
                *backend = None;
                return Err(e);
            }
            Err(_) => *backend = None,
        }
    }
    Err(io::Error::other("no connection to the emulator"))
}

/// One request and its answer on an emulator connection: the answer's bytes
/// and whether the connection can carry another request.
async fn exchange(conn: &mut BufReader<TcpStream>, request: &Message) -> io::Result<(Vec<u8>, bool)> {
    let mut out = request.head_bytes(&["expect"]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&request.body);
    conn.get_mut().write_all(&out).await?;
    let head_only = request.start.starts_with("HEAD ");
    loop {
        let Some((start, headers)) = read_head(conn).await? else {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the emulator closed the connection"));
        };
        let mut response = Message { start, headers, body: Vec::new() };
        let status: u16 = response.start.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        if (100..200).contains(&status) {
            continue;
        }
        let framed = response.is_chunked() || response.header("content-length").is_some();
        let no_body = head_only || status == 204 || status == 304;
        if !no_body {
            response.body = read_body(conn, &response, true).await?;
        }
        let closes = response.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) || (!framed && !no_body);
        // The client's connection stays open: frame a body the emulator ended by closing.
        let mut bytes = response.head_bytes(&["connection"]);
        if !framed && !no_body {
            bytes.extend_from_slice(format!("Content-Length: {}\r\n", response.body.len()).as_bytes());
        }
        bytes.extend_from_slice(b"\r\n");
        bytes.extend_from_slice(&response.body);
        return Ok((bytes, !closes));
    }
}

/// The service (from the SigV4 credential scope) and operation of a request.
fn identify(request: &Message) -> (String, String) {
    let service = scope_part(request, 3).map_or_else(|| "unknown".to_owned(), |s| s.to_ascii_lowercase());
    if let Some(target) = request.header("x-amz-target") {
        return (service, target.rsplit('.').next().unwrap_or(target).to_owned());
    }
    let mut parts = request.start.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let form = std::str::from_utf8(&request.body).unwrap_or("");
    if let Some(action) = form.split('&').chain(query.split('&')).find_map(|pair| pair.strip_prefix("Action=")) {
        return (service, action.to_owned());
    }
    if service == "s3" {
        return (service, s3_operation(method, path, query, request.header("x-amz-copy-source").is_some()).to_owned());
    }
    (service, method.to_owned())
}

/// A part of the SigV4 credential scope of a request
/// (`<key id>/<date>/<region>/<service>/aws4_request`): 2 is the region, 3 the service.
fn scope_part(request: &Message, index: usize) -> Option<String> {
    let auth = request.header("authorization")?;
    let scope = auth.split("Credential=").nth(1)?.split([',', ' ']).next()?;
    scope.split('/').nth(index).map(str::to_owned)
}

/// The S3 operation of a path-style request, as far as cheap to tell.
fn s3_operation(method: &str, path: &str, query: &str, copy: bool) -> &'static str {
    let has_key = path.trim_start_matches('/').split_once('/').is_some_and(|(_, key)| !key.is_empty());
    let has = |name: &str| query.split('&').any(|p| p == name || p.starts_with(&format!("{name}=")));
    match (method, has_key) {
        ("GET", true) => "GetObject",
        ("HEAD", true) => "HeadObject",
        ("PUT", true) if copy => "CopyObject",
        ("PUT", true) => "PutObject",
        ("DELETE", true) => "DeleteObject",
        ("GET", false) if has("list-type") => "ListObjectsV2",
        ("GET", false) => "ListObjects",
        ("HEAD", false) => "HeadBucket",
        ("PUT", false) => "CreateBucket",
        ("POST", false) if has("delete") => "DeleteObjects",
        _ => "Other",
    }
}

/// The answer a service gives for `kind`, in its protocol: S3's XML, the
/// JSON protocols' `__type`, the query protocol's `ErrorResponse`.
fn fault_response(service: &str, request: &Message, kind: FaultKind) -> Vec<u8> {
    let (status, code, message) = match (service, kind) {
        ("s3", FaultKind::Throttle) => (503, "SlowDown", "Please reduce your request rate."),
        ("dynamodb", FaultKind::Throttle) => (
            400,
            "ProvisionedThroughputExceededException",
            "The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API.",
        ),
        ("sqs", FaultKind::Throttle) => (400, "RequestThrottled", "Request is throttled."),
        ("sns", FaultKind::Throttle) => (429, "Throttled", "Rate exceeded"),
        ("athena", FaultKind::Throttle) => (400, "TooManyRequestsException", "Rate exceeded"),
        (_, FaultKind::Throttle) => (400, "Throttling", "Rate exceeded"),
        ("s3", FaultKind::ServerError) => (500, "InternalError", "We encountered an internal error. Please try again."),
        ("dynamodb", FaultKind::ServerError) => (500, "InternalServerError", "Internal server error"),
        (_, FaultKind::ServerError) => (500, "InternalFailure", "The request processing has failed because of an unknown error."),
        (_, _) => (503, "ServiceUnavailable", "Service is unable to handle request."),
    };
    let reason = match status {
        400 => "Bad Request",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    };
    let request_id = format!("fault-{:016x}", fnv1a(format!("{}{code}", request.start).as_bytes()));
    let (content_type, body, extra) = if service == "s3" {
        (
            "application/xml",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>{request_id}</RequestId></Error>"
            ),
            String::new(),
        )
    } else if request.header("x-amz-target").is_some() {
        let namespace = match service {
            "dynamodb" => "com.amazonaws.dynamodb.v20120810#",
            "sqs" => "com.amazonaws.sqs#",
            _ => "",
        };
        // SQS's JSON protocol also names the query protocol's code in a header.
        let extra =
            if service == "sqs" { format!("x-amzn-query-error: {code};{}\r\n", if status < 500 { "Sender" } else { "Receiver" }) } else { String::new() };
        let body = serde_json::json!({ "__type": format!("{namespace}{code}"), "message": message }).to_string();
        (request.header("content-type").unwrap_or("application/x-amz-json-1.0"), body, extra)
    } else {
        let fault = if status < 500 { "Sender" } else { "Receiver" };
        (
            "text/xml",
            format!("<ErrorResponse><Error><Type>{fault}</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"),
            String::new(),
        )
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nx-amzn-RequestId: {request_id}\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    if !request.start.starts_with("HEAD ") {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(start: &str, headers: &[(&str, &str)], body: &str) -> Message {
        Message { start: start.into(), headers: headers.iter().map(|(n, v)| ((*n).into(), (*v).into())).collect(), body: body.as_bytes().to_vec() }
    }

    const AUTH: &str = "AWS4-HMAC-SHA256 Credential=testing/20261201/us-east-1/SERVICE/aws4_request, SignedHeaders=host, Signature=0";

    #[test]
    fn requests_are_told_apart_by_service_and_operation() {
        let auth = |service: &str| AUTH.replace("SERVICE", service);
        let dynamo = request("POST / HTTP/1.1", &[("Authorization", &auth("dynamodb")), ("X-Amz-Target", "DynamoDB_20120810.TransactWriteItems")], "{}");
        assert_eq!(identify(&dynamo), ("dynamodb".into(), "TransactWriteItems".into()));
        let sns = request("POST / HTTP/1.1", &[("Authorization", &auth("sns"))], "Action=Publish&TopicArn=x");
        assert_eq!(identify(&sns), ("sns".into(), "Publish".into()));
        let get = request("GET /org-trail/AWSLogs/a.json.gz HTTP/1.1", &[("Authorization", &auth("s3"))], "");
        assert_eq!(identify(&get), ("s3".into(), "GetObject".into()));
        let list = request("GET /org-trail?list-type=2&prefix=AWSLogs HTTP/1.1", &[("Authorization", &auth("s3"))], "");
        assert_eq!(identify(&list), ("s3".into(), "ListObjectsV2".into()));
        let moto = request("POST /moto-api/reset HTTP/1.1", &[], "");
        assert_eq!(identify(&moto).0, "unknown");
    }

    #[test]
    fn canned_answers_match_their_target_with_or_without_namespace_and_get_the_region() {
        let state = Mutex::new(State::default());
        let handler: Arc<dyn Answer> = Arc::new(|call: CannedCall<'_>| CannedReply::ok(serde_json::json!({ "region": call.region, "size": call.body.len() })));
        state.lock().unwrap().answers.push(("com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.ListPublicKeys".into(), handler));
        let auth = AUTH.replace("SERVICE", "cloudtrail").replace("us-east-1", "eu-west-3");
        let call = |target: &str| {
            let req = request("POST / HTTP/1.1", &[("Authorization", &auth), ("X-Amz-Target", target), ("Content-Type", "application/x-amz-json-1.1")], "{}");
            canned(&state, &req).map(|bytes| String::from_utf8(bytes).unwrap())
        };
        let text = call("CloudTrail_20131101.ListPublicKeys").expect("the SDK's short target is answered");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && text.contains("application/x-amz-json-1.1"), "{text}");
        assert!(text.ends_with(r#"{"region":"eu-west-3","size":2}"#), "{text}");
        assert!(call("com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.ListPublicKeys").is_some());
        assert!(call("CloudTrail_20131101.DescribeTrails").is_none(), "other operations go to the emulator");
        assert!(call("Other_20131101.ListPublicKeys").is_none(), "another service's operation of the same name is not this one");
        assert!(!same_target("ListPublicKeys", "xListPublicKeys"));
    }

    #[test]
    fn draws_are_reproducible_per_operation_whatever_the_interleaving() {
        let plan = FaultPlan::new(7).everywhere(Rates::every_kind(0.3));
        let run = |interleave: bool| {
            let mut state = State { plan: Some(plan.clone()), ..State::default() };
            let mut seen = Vec::new();
            for _ in 0..200 {
                if interleave {
                    state.decide("s3", "GetObject");
                }
                seen.push(state.decide("dynamodb", "Query").0);
            }
            seen
        };
        let (a, b) = (run(false), run(true));
        assert_eq!(a, b);
        let faults = a.iter().filter(|f| f.is_some()).count();
        assert!((30..90).contains(&faults), "about 30% of 200: {faults}");
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let plan = FaultPlan::new(1).rule(Some("dynamodb"), Some("TransactWriteItems"), Rates::only(FaultKind::ServerError, 1.0)).everywhere(Rates::none());
        assert_eq!(plan.rates("dynamodb", "transactwriteitems").pick(0.99), Some(FaultKind::ServerError));
        assert_eq!(plan.rates("dynamodb", "Query").pick(0.0), None);
    }

    #[test]
    fn throttling_answers_are_each_services_own() {
        let dynamo = request("POST / HTTP/1.1", &[("X-Amz-Target", "DynamoDB_20120810.Query"), ("Content-Type", "application/x-amz-json-1.0")], "");
        let text = String::from_utf8(fault_response("dynamodb", &dynamo, FaultKind::Throttle)).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
        assert!(text.contains(r#""__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException""#), "{text}");
        let s3 = request("GET /b/k HTTP/1.1", &[], "");
        let text = String::from_utf8(fault_response("s3", &s3, FaultKind::Throttle)).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 ") && text.contains("<Code>SlowDown</Code>"), "{text}");
    }
}
