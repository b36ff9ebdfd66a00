//! Running the binary and reading what it wrote.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn trailwatch() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trailwatch"));
    cmd.env_remove("TRAILWATCH_DATA").env_remove("TRAILWATCH_TRAIL").env("TRAILWATCH_LOG", "warn");
    cmd
}

/// Runs the binary to the end; panics with its output when it fails.
pub fn ok(args: &[&str]) -> Output {
    let out = trailwatch().args(args).output().expect("run trailwatch");
    assert!(out.status.success(), "trailwatch {args:?} failed: {}\nstdout:\n{}\nstderr:\n{}", out.status, stdout(&out), stderr(&out));
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// The repository's fixture directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// The shared real CloudTrail data beside the repository.
pub fn shared_data() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/real");
    assert!(dir.is_dir(), "the shared data directory {} is missing: it must sit beside the repository", dir.display());
    dir
}

/// Exported records as (recipientAccountId, eventID) pairs, checking each line is a JSON object.
pub fn exported_ids(data: &Path, extra: &[&str]) -> Vec<(String, String)> {
    let mut args = vec!["export", "--data", path(data)];
    args.extend_from_slice(extra);
    let out = ok(&args);
    stdout(&out)
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("export line is not JSON ({e}): {line}"));
            (v["recipientAccountId"].as_str().unwrap_or_default().to_owned(), v["eventID"].as_str().expect("eventID").to_owned())
        })
        .collect()
}

pub fn unique<T: std::hash::Hash + Eq + Clone>(items: &[T]) -> usize {
    items.iter().cloned().collect::<HashSet<_>>().len()
}

/// Writes `bytes` at `key` under a trail root, creating folders.
pub fn put(root: &Path, key: &str, bytes: &[u8]) {
    let file = root.join(key);
    std::fs::create_dir_all(file.parent().expect("key has folders")).expect("mkdir");
    std::fs::write(&file, bytes).expect("write object");
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).expect("gzip");
    gz.finish().expect("gzip")
}

/// A realistic log file key for an account at a file time (`YYYYMMDDTHHMMZ`).
pub fn log_key(account: &str, ts: &str, unique: &str) -> String {
    let (y, m, d) = (&ts[0..4], &ts[4..6], &ts[6..8]);
    format!("AWSLogs/o-exampleorg1/{account}/CloudTrail/us-east-1/{y}/{m}/{d}/{account}_CloudTrail_us-east-1_{ts}_{unique}.json.gz")
}
