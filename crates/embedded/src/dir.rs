//! A local directory laid out like the trail bucket, as a [`LogSource`].
//!
//! A key is the path of a file relative to the root, with `/` separators
//! (`AWSLogs/o-…/111122223333/CloudTrail/…/x.json.gz`). Listing walks only
//! the directories that can hold keys with the requested prefix, so listing
//! one account and day stays cheap however large the tree is.
//!
//! What is never listed:
//! - names starting with `.` (files and directories alike: `.tmp/` staging
//!   areas, editor and sync-tool droppings), and everything below such a directory;
//! - files whose name ends with `.tmp` or `.partial`: the usual convention for
//!   a file still being written, renamed into place when complete;
//! - anything that is not a regular file (a symbolic link to a file is listed
//!   as that file; symbolic links to directories are not followed, so a link
//!   cycle cannot make a walk endless);
//! - names that are not UTF-8 (they cannot be keys; a warning names them).

use std::fs::{self, File};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use trailwatch_core::ports::{LogSource, ObjectBody, ObjectMeta, PortError};
use trailwatch_core::time::EpochMillis;

use crate::blocking;

/// File name endings of files still being written.
const PARTIAL_SUFFIXES: [&str; 2] = [".tmp", ".partial"];

/// A local directory as the trail bucket.
#[derive(Debug, Clone)]
pub struct DirSource {
    root: PathBuf,
}

impl DirSource {
    /// A source over the directory `root`. A relative root is made absolute
    /// against the current directory now, so locations stay valid.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let root = std::path::absolute(&root).unwrap_or(root);
        DirSource { root }
    }

    /// The directory this source reads.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of a key, refusing keys that would leave the root.
    fn file_of(&self, key: &str) -> Result<PathBuf, PortError> {
        let invalid = |message: &str| PortError::Invalid { what: format!("key {key:?}"), message: message.to_owned() };
        if key.is_empty() || key.ends_with('/') {
            return Err(invalid("not an object key"));
        }
        let relative = Path::new(key);
        let plain = |c: &str| !c.is_empty() && c != "." && c != "..";
        if !key.split('/').all(plain) || !relative.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(invalid("a key is a relative path without `.` or `..` components"));
        }
        Ok(self.root.join(relative))
    }
}

#[async_trait]
impl LogSource for DirSource {
    fn locate(&self, key: &str) -> String {
        self.root.join(key).display().to_string()
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, PortError> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        blocking(self.root.display().to_string(), move || list_blocking(&root, &prefix)).await
    }

    async fn open(&self, key: &str) -> Result<ObjectBody, PortError> {
        let path = self.file_of(key)?;
        blocking(path.display().to_string(), move || {
            let file = File::open(&path).map_err(|e| io_error(&path, e))?;
            let meta = file.metadata().map_err(|e| io_error(&path, e))?;
            if !meta.is_file() {
                // A directory opens on some systems; as an object it does not exist.
                return Err(PortError::NotFound { what: path.display().to_string() });
            }
            Ok(Box::new(file) as ObjectBody)
        })
        .await
    }
}

/// Whether a file name marks a file still being written.
fn is_partial(name: &str) -> bool {
    PARTIAL_SUFFIXES.iter().any(|suffix| name.ends_with(suffix))
}

fn list_blocking(root: &Path, prefix: &str) -> Result<Vec<ObjectMeta>, PortError> {
    match fs::metadata(root) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(PortError::Invalid { what: root.display().to_string(), message: "not a directory".into() }),
        Err(e) => return Err(io_error(root, e)),
    }
    // Start at the deepest directory the prefix names whole: listing
    // `AWSLogs/o-x/111122223333/CloudTrail/` never reads `AWSLogs/` itself.
    let start_key = match prefix.rfind('/') {
        Some(end) => &prefix[..=end],
        None => "",
    };
    if start_key.split('/').any(|c| c.starts_with('.')) || start_key.contains("//") || start_key.starts_with('/') {
        return Ok(Vec::new()); // no key goes through a hidden, empty or absolute component
    }
    // Each folder on the way must be a real directory: links to directories
    // are not followed here either, so a prefix lists what `list("")` would.
    let mut start_dir = root.to_owned();
    for folder in start_key.split('/').filter(|c| !c.is_empty()) {
        start_dir.push(folder);
        if !fs::symlink_metadata(&start_dir).is_ok_and(|m| m.is_dir()) {
            return Ok(Vec::new());
        }
    }
    let mut out = Vec::new();
    walk(&start_dir, start_key.to_owned(), prefix, &mut out)?;
    // Directory order is not key order (`a-b` sorts before `a/x`): sort the keys themselves.
    out.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// Adds the objects under `dir` (whose keys start with `dir_key`, empty or
/// ending with `/`) that match `prefix`.
fn walk(dir: &Path, dir_key: String, prefix: &str, out: &mut Vec<ObjectMeta>) -> Result<(), PortError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        // Removed while we walked: nothing to list there any more.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            tracing::warn!(path = %entry.path().display(), "skipping a file name that is not UTF-8: it cannot be an object key");
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let file_type = entry.file_type().map_err(|e| io_error(&entry.path(), e))?;
        let key = format!("{dir_key}{name}");
        if file_type.is_dir() {
            let sub_key = key + "/";
            if sub_key.starts_with(prefix) || prefix.starts_with(&sub_key) {
                walk(&entry.path(), sub_key, prefix, out)?;
            }
            continue;
        }
        if !key.starts_with(prefix) || is_partial(name) {
            continue;
        }
        let path = entry.path();
        let meta = match if file_type.is_symlink() { fs::metadata(&path) } else { entry.metadata() } {
            Ok(meta) => meta,
            // Renamed or deleted since the directory was read, or a dangling link.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error(&path, e)),
        };
        if !meta.is_file() {
            continue;
        }
        let modified = meta.modified().map_err(|e| io_error(&path, e))?;
        out.push(ObjectMeta { key, size: meta.len(), modified: epoch_millis(modified) });
    }
    Ok(())
}

/// Milliseconds since the epoch, negative before it.
fn epoch_millis(t: SystemTime) -> EpochMillis {
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

/// A file system error as a port error naming the path.
fn io_error(path: &Path, e: io::Error) -> PortError {
    let what = path.display().to_string();
    if e.kind() == io::ErrorKind::NotFound {
        return PortError::NotFound { what };
    }
    let retryable = matches!(
        e.kind(),
        io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
            | io::ErrorKind::ResourceBusy
            | io::ErrorKind::StaleNetworkFileHandle
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
    );
    PortError::backend(what, e, retryable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_keys_that_leave_the_root() {
        let source = DirSource::new("/trail");
        for bad in ["", "../etc/passwd", "AWSLogs/../../x", "/etc/passwd", "AWSLogs//x", "AWSLogs/./x", "AWSLogs/"] {
            assert!(matches!(source.file_of(bad), Err(PortError::Invalid { .. })), "{bad:?} should be refused");
        }
        assert_eq!(source.file_of("AWSLogs/a.json.gz").ok(), Some(PathBuf::from("/trail/AWSLogs/a.json.gz")));
    }

    #[test]
    fn recognizes_files_being_written() {
        assert!(is_partial("a.json.gz.tmp"));
        assert!(is_partial("a.json.gz.partial"));
        assert!(!is_partial("a.json.gz"));
    }

    #[test]
    fn times_before_the_epoch_are_negative() {
        assert_eq!(epoch_millis(UNIX_EPOCH + std::time::Duration::from_millis(1500)), 1500);
        assert_eq!(epoch_millis(UNIX_EPOCH - std::time::Duration::from_millis(1500)), -1500);
    }
}
