//! trailwatch-gen: a synthetic AWS Organization and its centralized
//! CloudTrail bucket, for demos, tests and benchmarks.
//!
//! [`generate`] writes, under one directory laid out like the trail bucket:
//! gzipped log files exactly as an organization trail names and fills them
//! (delivered late and out of order), hourly digest files, `accounts.json`
//! (as `aws organizations list-accounts` prints it) and `expected.json`, the
//! answer key of every session and the chain of hops behind it, and of the
//! alerts the built-in rule pack must raise. Benign traffic raises none;
//! [`GenConfig::incidents`] adds known security incidents, each with its
//! alerts. The output depends only on the [`GenConfig`], never on the
//! number of threads. See the crate's README for the answer key's format.
//!
//! How it works: the organization is built from the seed (`org`); every
//! session and incident is planned up front (`plan`), since sessions are
//! what crosses accounts; then each account's traffic is generated
//! independently, in its own thread and random stream (`traffic`), and
//! delivered into files (`delivery`) and hourly digests (`digest`); `answer`
//! writes the key.

mod answer;
mod catalog;
mod delivery;
pub mod digest;
mod identity;
mod org;
mod plan;
mod prng;
mod records;
mod sha256;
mod text;
mod traffic;

use std::fmt;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use trailwatch_core::time::{days_from_civil, EpochMillis};

/// The `userIdentity.type` values the generated trail contains (`Root` only
/// with incidents: benign traffic has no root activity).
pub const IDENTITY_TYPES: [&str; 8] = ["Root", "IAMUser", "AssumedRole", "AWSAccount", "AWSService", "SAMLUser", "WebIdentityUser", "FederatedUser"];

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenConfig {
    /// Accounts in the organization (at least 2: management and identity).
    pub accounts: usize,
    /// Days of traffic, ending at `end`.
    pub days: u32,
    /// The exact number of event records written, over all accounts (both
    /// copies of a cross-account AssumeRole count).
    pub events: u64,
    pub seed: u64,
    /// The last moment of generated traffic.
    pub end: EpochMillis,
    /// Worker threads; 0 for the available cores. Does not change the output.
    pub threads: usize,
    /// Inject the known security incidents (and list their alerts in the
    /// answer key). Needs at least [`MIN_INCIDENT_ACCOUNTS`] accounts and
    /// [`MIN_INCIDENT_EVENTS`] events.
    pub incidents: bool,
    /// Account ids to use instead of generated ones, in order (management
    /// first); accounts past the list get generated ids. Lets a test build the
    /// trail of an organization created elsewhere (an emulator's).
    pub account_ids: Vec<String>,
    /// The organization id to use instead of a generated one.
    pub org_id: Option<String>,
}

/// The fewest accounts incidents need (two production accounts among them).
pub const MIN_INCIDENT_ACCOUNTS: usize = 6;
/// The fewest events incidents need.
pub const MIN_INCIDENT_EVENTS: u64 = 1_000;

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            accounts: 12,
            days: 1,
            events: 100_000,
            seed: 1,
            end: days_from_civil(2026, 11, 1) * 86_400_000,
            threads: 0,
            incidents: false,
            account_ids: Vec::new(),
            org_id: None,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenReport {
    pub events: u64,
    /// Log files.
    pub files: u64,
    pub digest_files: u64,
    pub sessions: u64,
    /// Bytes of JSON in the log files.
    pub bytes_uncompressed: u64,
    /// Bytes of the gzipped log files on disk.
    pub bytes_compressed: u64,
    pub org_id: String,
    /// Account ids, management account first.
    pub accounts: Vec<String>,
    /// Incidents injected.
    pub incidents: u64,
    /// Alerts the built-in rule pack must raise (all from the incidents).
    pub alerts: u64,
}

/// Why generation stopped.
#[derive(Debug)]
pub enum GenError {
    /// The configuration asks for something impossible.
    Config(String),
    /// A file or folder could not be written.
    Io { path: PathBuf, source: std::io::Error },
    /// The generator broke one of its own promises (a bug).
    Internal(String),
}

impl fmt::Display for GenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GenError::Config(why) => write!(f, "invalid generator configuration: {why}"),
            GenError::Io { path, source } => write!(f, "cannot write {}: {source}", path.display()),
            GenError::Internal(why) => write!(f, "generator bug: {why}"),
        }
    }
}

impl std::error::Error for GenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GenError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> GenError + '_ {
    move |source| GenError::Io { path: path.to_owned(), source }
}

/// Generates a synthetic organization trail under `out` (created if needed;
/// existing files of the same names are overwritten).
///
/// `progress` is called from the worker threads each time a log file is
/// written, with the number of records in that file (a delta: the calls sum
/// to `config.events`).
pub fn generate(config: &GenConfig, out: &Path, progress: &(dyn Fn(u64) + Sync)) -> Result<GenReport, GenError> {
    if config.accounts < 2 {
        return Err(GenError::Config(format!("an organization needs at least 2 accounts (management and identity), got {}", config.accounts)));
    }
    if config.days == 0 {
        return Err(GenError::Config("days must be at least 1".into()));
    }
    if config.incidents && (config.accounts < MIN_INCIDENT_ACCOUNTS || config.events < MIN_INCIDENT_EVENTS) {
        return Err(GenError::Config(format!(
            "incidents need at least {MIN_INCIDENT_ACCOUNTS} accounts and {MIN_INCIDENT_EVENTS} events, got {} accounts and {} events",
            config.accounts, config.events
        )));
    }
    let start = config.end - i64::from(config.days) * 86_400_000;
    for id in &config.account_ids {
        if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(GenError::Config(format!("account id {id:?} is not 12 digits")));
        }
    }
    if let Some(org) = &config.org_id {
        if !org.starts_with("o-") || org.len() < 12 || !org[2..].bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
            return Err(GenError::Config(format!("organization id {org:?} is not `o-` and 10 or more lower-case letters or digits")));
        }
    }
    let mut org = org::Org::build_with(config.seed, config.accounts, config.end, &config.account_ids);
    if let Some(id) = &config.org_id {
        org.id.clone_from(id);
    }
    let plan = plan::Plan::build(&org, config.seed, config.events, start, config.end, config.incidents).map_err(GenError::Config)?;
    std::fs::create_dir_all(out).map_err(io_error(out))?;

    let accounts_path = out.join("accounts.json");
    let file = File::create(&accounts_path).map_err(io_error(&accounts_path))?;
    org.write_accounts_json(BufWriter::new(file)).map_err(io_error(&accounts_path))?;
    digest::write_public_keys(out, &org)?;

    let threads = match config.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .clamp(1, org.accounts.len());
    // Biggest accounts first, so the threads finish together.
    let mut order: Vec<usize> = (0..org.accounts.len()).collect();
    order.sort_by_key(|&a| (std::cmp::Reverse(plan.accounts[a].total()), a));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<Result<traffic::AccountOutput, GenError>>>> = Mutex::new((0..org.accounts.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= order.len() || failed.load(Ordering::Relaxed) {
                    break;
                }
                let a = order[k];
                let result = traffic::run(&org, &plan, a, config.seed, out, progress);
                failed.fetch_or(result.is_err(), Ordering::Relaxed);
                results.lock().unwrap_or_else(|e| e.into_inner())[a] = Some(result);
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut outputs = Vec::with_capacity(results.len());
    for result in results {
        match result {
            Some(Ok(output)) => outputs.push(output),
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    if outputs.len() != org.accounts.len() {
        return Err(GenError::Internal("an account was not generated".into()));
    }

    let totals = answer::Totals {
        events: outputs.iter().map(|o| o.records).sum(),
        files: outputs.iter().map(|o| o.files).sum(),
        digest_files: outputs.iter().map(|o| o.digests).sum(),
        sessions: plan.sessions.len() as u64,
        events_by_account: org.accounts.iter().zip(&outputs).map(|(a, o)| (a.id.clone(), o.records)).collect(),
    };
    let expected_path = out.join("expected.json");
    let file = File::create(&expected_path).map_err(io_error(&expected_path))?;
    answer::write(BufWriter::new(file), config, &org, &plan, &totals).map_err(io_error(&expected_path))?;

    Ok(GenReport {
        events: totals.events,
        files: totals.files,
        digest_files: totals.digest_files,
        sessions: totals.sessions,
        bytes_uncompressed: outputs.iter().map(|o| o.bytes_raw).sum(),
        bytes_compressed: outputs.iter().map(|o| o.bytes_gz).sum(),
        org_id: org.id.clone(),
        accounts: org.accounts.iter().map(|a| a.id.clone()).collect(),
        incidents: plan.incidents.len() as u64,
        alerts: plan.incidents.iter().map(|i| i.alerts.len() as u64).sum(),
    })
}
