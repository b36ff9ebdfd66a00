//! A JSON Lines file of transitions, for a log shipper or `jq`.
//!
//! Each delivery opens the file in append mode (creating it and its
//! directories), writes one line, and fsyncs before it returns: a delivery
//! the worker records as done is on disk, and a rotated file (moved away by
//! logrotate) is followed by a new one. If the file does not end with a
//! newline (a write cut short by a crash), one is written first, so the torn
//! line stays alone and every later line is whole.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use trailwatch_core::alerts::{AlertSink, Delivery};
use trailwatch_core::ports::PortError;

use super::record_json;
use crate::blocking;

/// Appends a [`TransitionRecord`](super::TransitionRecord) per transition to a file.
#[derive(Debug, Clone)]
pub struct JsonlSink {
    name: String,
    path: PathBuf,
}

impl JsonlSink {
    /// A sink named `file` appending to `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        JsonlSink { name: "file".to_owned(), path: path.into() }
    }

    /// Queues deliveries under another name (two files).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl AlertSink for JsonlSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, delivery: &Delivery) -> Result<(), PortError> {
        let what = self.path.display().to_string();
        let mut line = record_json(delivery, &what)?;
        line.push(b'\n');
        let path = self.path.clone();
        let key = delivery.dedup_key();
        blocking(what.clone(), move || {
            append(&path, &line).map_err(|e| {
                let retryable = e.kind() != io::ErrorKind::PermissionDenied;
                PortError::backend(what, format!("appending alert {key}: {e}"), retryable)
            })
        })
        .await
    }
}

fn append(path: &Path, line: &[u8]) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        fs::create_dir_all(dir)?;
    }
    let mut file = OpenOptions::new().read(true).append(true).create(true).open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        // A new file: make its directory entry durable too (once per file).
        if let Some(dir) = dir {
            File::open(dir)?.sync_all()?;
        }
    } else {
        file.seek(SeekFrom::Start(len - 1))?;
        let mut last = [0u8; 1];
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            file.write_all(b"\n")?;
        }
    }
    file.write_all(line)?;
    file.sync_data()
}
