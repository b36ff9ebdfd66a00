//! A local AWS emulator (moto server) for tests: started on a free port,
//! stopped when the process that started it exits, reset on request.
//!
//! The emulator is found at `$TRAILWATCH_MOTO_SERVER`, else at
//! `.venv/bin/moto_server` in the workspace (where `scripts/test` installs
//! it). Tests fail, not skip, when it is missing: the message says how to
//! install it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::clients::{AwsSettings, StaticCredentials};

/// The region tests use.
pub const REGION: &str = "us-east-1";

/// A running moto server.
#[derive(Debug)]
pub struct Moto {
    pub port: u16,
    child: Child,
}

fn workspace_root() -> PathBuf {
    // crates/aws → the workspace.
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where the moto server executable is.
pub fn server_path() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("TRAILWATCH_MOTO_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let path = workspace_root().join(".venv/bin/moto_server");
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "the AWS emulator is not installed ({} is missing): run scripts/test, or \
             `python3 -m venv .venv && .venv/bin/pip install 'moto[server]'`",
            path.display()
        ))
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Moto {
    /// Starts a server and waits until it answers.
    pub fn start() -> Result<Moto, String> {
        let server = server_path()?;
        Moto::launch(server.as_os_str(), &[])
    }

    /// Starts a server that answers one request at a time, for tests of
    /// concurrent writers. moto serves requests on threads and evaluates a
    /// condition and writes the item without a lock, so two conditional
    /// writes of one item can both succeed there; DynamoDB applies them one
    /// after the other. Answering one request at a time gives that guarantee
    /// back, while the clients still send at once.
    pub fn start_serial() -> Result<Moto, String> {
        // moto's own server with werkzeug's threads turned off, run by the
        // interpreter its `moto_server` script names.
        const SERIAL: &str = "import sys
import moto.server as server
from werkzeug.serving import run_simple
server.run_simple = lambda *args, **kwargs: run_simple(*args, **dict(kwargs, threaded=False))
server.main(['-H', '127.0.0.1', '-p', sys.argv[1]])";
        let server = server_path()?;
        let script = std::fs::read_to_string(&server).map_err(|e| format!("reading {}: {e}", server.display()))?;
        let python = script
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("#!"))
            .map(|p| p.trim().to_owned())
            .ok_or_else(|| format!("{} does not start with #!", server.display()))?;
        Moto::launch(std::ffi::OsStr::new(&python), &["-c", SERIAL])
    }

    /// Runs `program args… PORT` under a watchdog and waits until it answers.
    fn launch(program: &std::ffi::OsStr, args: &[&str]) -> Result<Moto, String> {
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        // A watchdog shell stops the server when this process goes away,
        // however it ends (a test binary never runs destructors of statics).
        // moto_server takes `-H HOST -p PORT`; the serial script takes the port alone.
        let port_args = if args.is_empty() { format!("-H 127.0.0.1 -p {port}") } else { format!("{port}") };
        let script = format!(
            "\"$0\" \"$@\" {port_args} >/dev/null 2>&1 & server=$!; \
             while kill -0 {parent} 2>/dev/null && kill -0 $server 2>/dev/null; do sleep 0.5; done; kill $server 2>/dev/null",
            parent = std::process::id()
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", program.to_string_lossy()))?;
        let moto = Moto { port, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if moto.reset().is_ok() {
                return Ok(moto);
            }
            if Instant::now() > deadline {
                return Err(format!("moto server on port {port} did not answer within 30 s"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Settings that point every client at this server.
    pub fn settings(&self) -> AwsSettings {
        AwsSettings {
            region: Some(REGION.to_owned()),
            endpoint_url: Some(self.endpoint()),
            credentials: Some(StaticCredentials::test()),
            organizations_role: None,
            limits: Default::default(),
        }
    }

    /// Clears every service's state.
    pub fn reset(&self) -> Result<(), String> {
        self.post("/moto-api/reset", "")
    }

    /// Posts `body` to one of moto's own endpoints; Ok on HTTP 200.
    pub fn post(&self, path: &str, body: &str) -> Result<(), String> {
        let (status, text) = self.request("POST", path, body)?;
        if status == 200 {
            Ok(())
        } else {
            Err(format!("POST {path}: HTTP {status}: {text}"))
        }
    }

    /// A plain HTTP/1.1 request to the server: status and body.
    pub fn request(&self, method: &str, path: &str, body: &str) -> Result<(u16, String), String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        );
        stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
        let mut response = String::new();
        stream.read_to_string(&mut response).map_err(|e| e.to_string())?;
        let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("no HTTP status in {response:?}"))?;
        let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
        Ok((status, body))
    }
}

/// One canned Athena result: column names and rows (None is SQL NULL).
pub type CannedResult = (Vec<String>, Vec<Vec<Option<String>>>);

impl Moto {
    /// Queues results for the next Athena query executions of `account` in
    /// `region` (moto runs no SQL: each new execution takes the next result on
    /// its first GetQueryResults).
    pub fn can_athena_results(&self, account: &str, region: &str, results: Vec<CannedResult>) -> Result<(), String> {
        use serde_json::{json, Value};
        let results: Vec<Value> = results
            .into_iter()
            .map(|(columns, rows)| {
                let rows: Vec<Value> = rows
                    .into_iter()
                    .map(|row| json!({"Data": row.into_iter().map(|v| v.map_or(json!({}), |v| json!({"VarCharValue": v}))).collect::<Vec<_>>()}))
                    .collect();
                let info: Vec<Value> = columns.iter().map(|c| json!({"Name": c, "Label": c, "Type": "varchar", "Nullable": "UNKNOWN"})).collect();
                json!({"rows": rows, "column_info": info})
            })
            .collect();
        let body = json!({"account_id": account, "region": region, "results": results}).to_string();
        match self.request("POST", "/moto-api/static/athena/query-results", &body)? {
            (201, _) => Ok(()),
            (status, text) => Err(format!("canning Athena results: HTTP {status}: {text}")),
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // Killing the watchdog's shell leaves the server to notice on its own;
        // stop the server first through its parent-less path: reset then kill.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

static SHARED: std::sync::OnceLock<Result<Moto, String>> = std::sync::OnceLock::new();

/// One server for the whole test binary. Tests sharing it use their own
/// resource names ([`unique`]) instead of resetting, so they can run in parallel.
pub fn shared() -> &'static Moto {
    match SHARED.get_or_init(Moto::start) {
        Ok(moto) => moto,
        Err(e) => panic!("{e}"),
    }
}

static SERIAL: std::sync::OnceLock<Result<Moto, String>> = std::sync::OnceLock::new();

/// One server answering one request at a time ([`Moto::start_serial`]) for
/// the whole test binary, for the tests of concurrent conditional writes.
pub fn serial() -> &'static Moto {
    match SERIAL.get_or_init(Moto::start_serial) {
        Ok(moto) => moto,
        Err(e) => panic!("{e}"),
    }
}

/// A resource name no other test of this run uses: `prefix-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}
