//! One generated organization, read back whole once and shared by the tests.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use trailwatch_core::layout::{classify, ObjectKind, TrailKey};
use trailwatch_core::reader::{decode, RecordReader};
use trailwatch_gen::{generate, GenConfig, GenReport};

pub struct Log {
    pub key: String,
    pub trail_key: TrailKey,
    /// The uncompressed file.
    pub json: Vec<u8>,
    pub raw_records: Vec<Vec<u8>>,
    pub records: Vec<Value>,
}

pub struct DigestFile {
    pub key: String,
    pub trail_key: TrailKey,
    pub json: Vec<u8>,
    pub value: Value,
}

pub struct Trail {
    pub config: GenConfig,
    pub dir: TempDir,
    pub report: GenReport,
    pub logs: Vec<Log>,
    pub digests: Vec<DigestFile>,
    pub expected: Value,
    /// (account, eventID) → (log index, record index).
    pub by_event: HashMap<(String, String), (usize, usize)>,
}

impl Trail {
    pub fn records(&self) -> impl Iterator<Item = &Value> {
        self.logs.iter().flat_map(|l| &l.records)
    }

    pub fn sessions(&self) -> &Vec<Value> {
        self.expected["sessions"].as_array().unwrap()
    }

    pub fn alerts(&self) -> &Vec<Value> {
        self.expected["alerts"].as_array().unwrap()
    }

    pub fn incidents(&self) -> &Vec<Value> {
        self.expected["incidents"].as_array().unwrap()
    }

    /// The record with this eventID in any account, with the log file holding it.
    pub fn event(&self, event_id: &str) -> Option<(&Log, &Value)> {
        self.expected["organization"]["accounts"].as_array().unwrap().iter().find_map(|a| {
            let (l, r) = self.by_event.get(&(a["id"].as_str().unwrap().to_owned(), event_id.to_owned()))?;
            Some((&self.logs[*l], &self.logs[*l].records[*r]))
        })
    }
}

/// Whether a file is an object of the trail: under `AWSLogs/`, and not a
/// hidden file (the digests' signature sidecars), as a trail listing sees it.
fn is_object(key: &str) -> bool {
    key.starts_with("AWSLogs/") && !key.rsplit('/').next().is_some_and(|name| name.starts_with('.'))
}

pub fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Every file under `dir`, by relative path, with the SHA-256 of its bytes.
pub fn hashes(dir: &Path) -> BTreeMap<String, String> {
    let mut files = Vec::new();
    walk(dir, &mut files);
    files.iter().map(|p| (p.strip_prefix(dir).unwrap().to_string_lossy().into_owned(), hex(&Sha256::digest(std::fs::read(p).unwrap())))).collect()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn generate_into(config: &GenConfig) -> (TempDir, GenReport) {
    let dir = tempfile::tempdir().unwrap();
    let report = generate(config, dir.path(), &|_| {}).unwrap();
    (dir, report)
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    decode(std::fs::File::open(path).unwrap()).unwrap().read_to_end(&mut out).unwrap();
    out
}

/// Records in the log files under `dir`, by account, after checking every key classifies.
pub fn count_records(dir: &Path) -> BTreeMap<String, u64> {
    let mut files = Vec::new();
    walk(dir, &mut files);
    let mut counts = BTreeMap::new();
    for path in files {
        let key = path.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
        if !is_object(&key) {
            continue;
        }
        let trail_key = classify(&key).unwrap_or_else(|e| panic!("{key}: {e}"));
        if trail_key.kind == ObjectKind::Log {
            let json = gunzip(&path);
            let mut reader = RecordReader::new(&json[..]);
            while reader.next_record().unwrap().is_some() {}
            *counts.entry(trail_key.account_id).or_default() += reader.records() as u64;
        }
    }
    counts
}

/// Calls `f` with every record of the log files under `dir`, file by file,
/// without keeping them (for organizations too big to hold).
pub fn for_each_record(dir: &Path, mut f: impl FnMut(&Value)) {
    let mut files = Vec::new();
    walk(dir, &mut files);
    files.sort();
    for path in files {
        let key = path.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
        if !is_object(&key) || classify(&key).unwrap().kind != ObjectKind::Log {
            continue;
        }
        let json = gunzip(&path);
        let mut reader = RecordReader::new(&json[..]);
        while let Some(r) = reader.next_record().unwrap() {
            f(&serde_json::from_slice(r.bytes).unwrap());
        }
    }
}

/// The answer key under `dir`.
pub fn answer_key(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap()
}

fn load(config: GenConfig) -> Trail {
    let (dir, report) = generate_into(&config);
    let mut files = Vec::new();
    walk(dir.path(), &mut files);
    files.sort();
    let (mut logs, mut digests) = (Vec::new(), Vec::new());
    for path in files {
        let key = path.strip_prefix(dir.path()).unwrap().to_string_lossy().into_owned();
        if !is_object(&key) {
            continue;
        }
        let trail_key = classify(&key).unwrap_or_else(|e| panic!("{key}: {e}"));
        let json = gunzip(&path);
        match trail_key.kind {
            ObjectKind::Log => {
                let mut reader = RecordReader::new(&json[..]);
                let mut raw_records = Vec::new();
                while let Some(r) = reader.next_record().unwrap_or_else(|e| panic!("{key}: {e}")) {
                    raw_records.push(r.bytes.to_vec());
                }
                let records = raw_records.iter().map(|r| serde_json::from_slice(r).unwrap()).collect();
                logs.push(Log { key, trail_key, json, raw_records, records });
            }
            ObjectKind::Digest => {
                let value = serde_json::from_slice(&json).unwrap();
                digests.push(DigestFile { key, trail_key, json, value });
            }
            ObjectKind::Insight => panic!("no insight files are generated: {key}"),
        }
    }
    let expected = answer_key(dir.path());
    let mut by_event = HashMap::new();
    for (l, log) in logs.iter().enumerate() {
        for (r, record) in log.records.iter().enumerate() {
            by_event.insert((log.trail_key.account_id.clone(), record["eventID"].as_str().unwrap().to_owned()), (l, r));
        }
    }
    Trail { config, dir, report, logs, digests, expected, by_event }
}

/// The shared organization: a day of 40,000 events over 12 accounts, with the incidents.
pub fn trail() -> &'static Trail {
    static TRAIL: OnceLock<Trail> = OnceLock::new();
    TRAIL.get_or_init(|| load(GenConfig { events: 40_000, seed: 42, incidents: true, ..GenConfig::default() }))
}
