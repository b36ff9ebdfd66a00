//! Delivery: how an account's records become log files.
//!
//! CloudTrail delivers a file per account and region about every five
//! minutes, holding the records *delivered* in that window, not those that
//! happened in it: each record reaches the bucket one to fifteen minutes
//! after its `eventTime`. So a file holds records up to ~15 minutes older
//! than its file time, and files are out of order with respect to event
//! time (a session's first use, delivered quickly, often lands in an earlier
//! file than the slowly delivered AssumeRole that issued it).
//!
//! Records are written into the open buffer of their delivery window as
//! they are generated (in event-time order); a busy window is split into
//! several files; a window is written out (gzipped) once generation has
//! passed its end, since nothing generated later can be delivered in it.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use trailwatch_core::layout::{ObjectKind, TrailKey};
use trailwatch_core::time::EpochMillis;

use crate::prng::Rng;
use crate::{sha256, GenError};

const WINDOW: i64 = 5 * 60_000;
/// Gzip level: fast; the files stay small because records repeat a lot.
const LEVEL: u32 = 1;

/// A delivery delay: mostly one to five minutes, sometimes up to fifteen
/// (`late`: nine to fourteen and a half).
pub fn delay(rng: &mut Rng, late: bool) -> i64 {
    let secs = if late {
        rng.between(540, 870)
    } else {
        let u = rng.unit();
        if u < 0.85 {
            rng.between(60, 300)
        } else if u < 0.97 {
            rng.between(300, 600)
        } else {
            rng.between(600, 900)
        }
    };
    secs * 1000
}

/// What the digest needs to know of a written log file.
#[derive(Debug, Clone)]
pub struct FileMeta {
    pub region: usize,
    pub time: EpochMillis,
    pub key: String,
    /// SHA-256 of the uncompressed content.
    pub hash: String,
    pub oldest: EpochMillis,
    pub newest: EpochMillis,
}

struct FileBuf {
    data: Vec<u8>,
    count: u32,
    cap: u32,
    oldest: EpochMillis,
    newest: EpochMillis,
}

/// Writes a file under `out`, creating its folders once.
pub struct Writer<'a> {
    pub out: &'a Path,
    dirs: HashSet<PathBuf>,
    gz: Vec<u8>,
}

impl<'a> Writer<'a> {
    pub fn new(out: &'a Path) -> Self {
        Writer { out, dirs: HashSet::new(), gz: Vec::new() }
    }

    /// Gzips `data` and writes it at `key`; returns the compressed size.
    pub fn write_gz(&mut self, key: &str, data: &[u8]) -> Result<u64, GenError> {
        let path = self.out.join(key);
        let io = |source| GenError::Io { path: path.clone(), source };
        let mut gz = GzEncoder::new(std::mem::take(&mut self.gz), Compression::new(LEVEL));
        gz.write_all(data).map_err(io)?;
        self.gz = gz.finish().map_err(io)?;
        if let Some(dir) = path.parent() {
            if !self.dirs.contains(dir) {
                std::fs::create_dir_all(dir).map_err(|source| GenError::Io { path: dir.to_owned(), source })?;
                self.dirs.insert(dir.to_owned());
            }
        }
        std::fs::write(&path, &self.gz).map_err(io)?;
        let size = self.gz.len() as u64;
        self.gz.clear();
        Ok(size)
    }
}

/// One account's open delivery windows and written files.
pub struct Delivery<'a> {
    writer: Writer<'a>,
    org_id: &'a str,
    account_id: &'a str,
    regions: &'a [&'static str],
    /// Per region, where its five-minute windows start within the minute grid.
    offsets: Vec<i64>,
    open: BTreeMap<(EpochMillis, usize), FileBuf>,
    current: (EpochMillis, usize),
    spare: Vec<Vec<u8>>,
    progress: &'a (dyn Fn(u64) + Sync),
    pub files: Vec<FileMeta>,
    pub records: u64,
    pub bytes_raw: u64,
    pub bytes_gz: u64,
}

impl<'a> Delivery<'a> {
    pub fn new(out: &'a Path, org_id: &'a str, account_id: &'a str, regions: &'a [&'static str], rng: &mut Rng, progress: &'a (dyn Fn(u64) + Sync)) -> Self {
        let offsets = regions.iter().map(|_| rng.between(0, 4) * 60_000).collect();
        Delivery {
            writer: Writer::new(out),
            org_id,
            account_id,
            regions,
            offsets,
            open: BTreeMap::new(),
            current: (0, 0),
            spare: Vec::new(),
            progress,
            files: Vec::new(),
            records: 0,
            bytes_raw: 0,
            bytes_gz: 0,
        }
    }

    /// Opens a record of `region` that happened at `time` and is delivered
    /// `delay` later; returns the buffer to write the record into, then call
    /// [`Delivery::commit`].
    pub fn begin(&mut self, rng: &mut Rng, region: usize, time: EpochMillis, delay: i64) -> &mut Vec<u8> {
        let offset = self.offsets[region];
        let file_time = (time + delay - offset).div_euclid(WINDOW) * WINDOW + WINDOW + offset;
        self.current = (file_time, region);
        let spare = &mut self.spare;
        let buf = self.open.entry(self.current).or_insert_with(|| FileBuf {
            data: spare.pop().unwrap_or_else(|| Vec::with_capacity(1 << 20)),
            count: 0,
            cap: rng.between(250, 700) as u32,
            oldest: time,
            newest: time,
        });
        if buf.count == 0 {
            buf.data.clear();
            buf.data.extend_from_slice(b"{\"Records\":[");
        } else {
            buf.data.push(b',');
        }
        buf.oldest = buf.oldest.min(time);
        buf.newest = buf.newest.max(time);
        &mut buf.data
    }

    /// Finishes the record opened by [`Delivery::begin`]; writes the file
    /// out when it is full.
    pub fn commit(&mut self, rng: &mut Rng) -> Result<(), GenError> {
        self.records += 1;
        let key = self.current;
        let full = self.open.get_mut(&key).is_some_and(|b| {
            b.count += 1;
            b.count >= b.cap
        });
        if full {
            if let Some(buf) = self.open.remove(&key) {
                self.write(rng, key, buf)?;
            }
        }
        Ok(())
    }

    /// Writes out every window that ends at or before `now`: nothing that
    /// happens from `now` on can be delivered in it.
    pub fn close_until(&mut self, rng: &mut Rng, now: EpochMillis) -> Result<(), GenError> {
        while let Some(entry) = self.open.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = *entry.key();
            let buf = entry.remove();
            self.write(rng, key, buf)?;
        }
        Ok(())
    }

    fn write(&mut self, rng: &mut Rng, (file_time, region): (EpochMillis, usize), mut buf: FileBuf) -> Result<(), GenError> {
        buf.data.extend_from_slice(b"]}");
        let key = TrailKey::log("", Some(self.org_id), self.account_id, ObjectKind::Log, self.regions[region], file_time, &rng.alnum(16)).to_key();
        let hash = sha256::hex_digest(&buf.data);
        self.bytes_gz += self.writer.write_gz(&key, &buf.data)?;
        self.bytes_raw += buf.data.len() as u64;
        (self.progress)(u64::from(buf.count));
        self.files.push(FileMeta { region, time: file_time, key, hash, oldest: buf.oldest, newest: buf.newest });
        self.spare.push(buf.data);
        Ok(())
    }

    /// The file writer, for the digests written after the logs.
    pub fn into_parts(self) -> (Writer<'a>, Vec<FileMeta>, u64, u64, u64) {
        (self.writer, self.files, self.records, self.bytes_raw, self.bytes_gz)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_within_fifteen_minutes() {
        let mut rng = Rng::new(1, 1);
        for _ in 0..10_000 {
            let d = delay(&mut rng, false);
            assert!((60_000..=900_000).contains(&d));
            assert!((540_000..=870_000).contains(&delay(&mut rng, true)));
        }
    }

    #[test]
    fn files_hold_records_delivered_in_their_window() {
        let dir = std::env::temp_dir().join(format!("trailwatch-gen-delivery-{}", std::process::id()));
        let noop = |_: u64| {};
        let mut rng = Rng::new(2, 2);
        let mut d = Delivery::new(&dir, "o-abcdefghij", "210987654321", &["us-east-1"], &mut rng, &noop);
        let t0 = 1_793_491_200_000;
        for (time, delay) in [(t0, 60_000), (t0 + 10_000, 600_000), (t0 + 20_000, 61_000)] {
            let buf = d.begin(&mut rng, 0, time, delay);
            buf.extend_from_slice(format!("{{\"t\":{time}}}").as_bytes());
            d.commit(&mut rng).unwrap();
        }
        d.close_until(&mut rng, t0 + 3_600_000).unwrap();
        let (_, files, records, _, _) = d.into_parts();
        assert_eq!(records, 3);
        assert_eq!(files.len(), 2, "two windows: the quick records and the slow one");
        for f in &files {
            assert!(f.newest < f.time && f.time - f.oldest <= 900_000 + 300_000);
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
