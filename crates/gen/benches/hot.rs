//! The pipeline's hot functions, on a generated organization's trail:
//!
//! - `parse`: one log file of typical size, gunzipped and read into
//!   validated events with their sessions captured (what the collector does
//!   per file), and the same from the decompressed bytes (parsing alone);
//! - `resolve`: a batch of 1,000 events resolved to their origins against a
//!   session store holding the trail's sessions, with a warm and a cold cache;
//! - `rules`: the built-in rule pack evaluated on a batch of 1,000 events.
//!
//! ```text
//! cargo bench -p trailwatch-gen --bench hot
//! ```
//!
//! The trail (100,000 events of one day, 8 accounts, seed 42, with the
//! incidents) is generated once into a temporary directory; the typical file
//! is the one whose size is nearest the mean.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use trailwatch_core::event::Event;
use trailwatch_core::identity::{capture, Actor, Resolver, ResolverConfig, Session, SessionStore};
use trailwatch_core::layout::{classify, ObjectKind};
use trailwatch_core::memory::MemorySessionStore;
use trailwatch_core::reader::{decode, RecordReader};
use trailwatch_core::rules::{Detector, RuleSet, RuleSource};
use trailwatch_core::view::RecordView;
use trailwatch_gen::{generate, GenConfig};

const BATCH: usize = 1000;

struct Trail {
    _dir: tempfile::TempDir,
    /// The log file nearest the mean size: (its key's account, gzipped bytes, decompressed bytes).
    typical: (String, Vec<u8>, Vec<u8>),
    events: Vec<Event>,
    sessions: Vec<Session>,
}

fn log_files(root: &Path) -> Vec<(String, PathBuf)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, PathBuf)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                let key = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
                if let Ok(k) = classify(&key) {
                    if k.kind == ObjectKind::Log {
                        out.push((k.account_id, path));
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Reads a decompressed log file as the collector does: records → events, sessions captured.
fn read(bytes: &[u8], account: &str, events: &mut Vec<Event>, sessions: &mut Vec<Session>) {
    let mut reader = RecordReader::new(bytes);
    while let Some(record) = reader.next_record().unwrap() {
        let view = RecordView::parse(record.bytes).unwrap();
        if let Ok(event) = Event::from_view(record.index, record.bytes, &view, account) {
            events.push(event);
        }
        if let Some(session) = capture(&view, account) {
            sessions.push(session);
        }
    }
}

fn gunzip(gz: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    decode(gz).unwrap().read_to_end(&mut out).unwrap();
    out
}

fn trail() -> &'static Trail {
    static TRAIL: OnceLock<Trail> = OnceLock::new();
    TRAIL.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let config = GenConfig { accounts: 8, events: 100_000, seed: 42, incidents: true, ..GenConfig::default() };
        generate(&config, dir.path(), &|_| {}).unwrap();
        let files = log_files(dir.path());
        let (mut events, mut sessions) = (Vec::new(), Vec::new());
        let mut sized = Vec::new();
        for (account, path) in &files {
            let gz = std::fs::read(path).unwrap();
            let plain = gunzip(&gz);
            read(&plain, account, &mut events, &mut sessions);
            sized.push((plain.len(), account.clone(), gz, plain));
        }
        let mean = sized.iter().map(|s| s.0).sum::<usize>() / sized.len();
        let nearest = (0..sized.len()).min_by_key(|&i| sized[i].0.abs_diff(mean)).unwrap();
        let (_, account, gz, plain) = sized.swap_remove(nearest);
        events.sort_by_key(|e| e.event_time);
        Trail { _dir: dir, typical: (account, gz, plain), events, sessions }
    })
}

fn parse(c: &mut Criterion) {
    let trail = trail();
    let (account, gz, plain) = &trail.typical;
    let mut records = Vec::new();
    read(plain, account, &mut records, &mut Vec::new());
    let mut group = c.benchmark_group("parse a typical log file");
    group.throughput(Throughput::Bytes(plain.len() as u64));
    group.bench_function(format!("gunzip and parse ({} records, {} KB)", records.len(), plain.len() / 1024), |b| {
        b.iter(|| {
            let (mut events, mut sessions) = (Vec::with_capacity(records.len()), Vec::new());
            read(&gunzip(gz), account, &mut events, &mut sessions);
            events
        })
    });
    group.bench_function("parse only", |b| {
        b.iter(|| {
            let (mut events, mut sessions) = (Vec::with_capacity(records.len()), Vec::new());
            read(plain, account, &mut events, &mut sessions);
            events
        })
    });
    group.finish();
}

fn resolve(c: &mut Criterion) {
    let trail = trail();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let store = Arc::new(MemorySessionStore::new());
    runtime.block_on(store.put(trail.sessions.clone().into())).unwrap();
    // A batch from the busy middle of the day.
    let middle = trail.events.len() / 2;
    let batch: Vec<&Event> = trail.events[middle..].iter().filter(|e| e.actor.is_some()).take(BATCH).collect();
    let actors: Vec<Actor<'_>> = batch.iter().filter_map(|e| Actor::of_event(e)).collect();
    let new_resolver = || Resolver::new(store.clone() as Arc<dyn SessionStore>, None, ResolverConfig::default());

    let mut group = c.benchmark_group("resolve a batch");
    group.throughput(Throughput::Elements(actors.len() as u64));
    let warm = new_resolver();
    runtime.block_on(warm.resolve_batch(&actors)).unwrap();
    group.bench_function(format!("{} events, warm cache", actors.len()), |b| b.iter(|| runtime.block_on(warm.resolve_batch(&actors)).unwrap()));
    group.bench_function(format!("{} events, cold cache", actors.len()), |b| {
        b.iter_batched(new_resolver, |resolver| runtime.block_on(resolver.resolve_batch(&actors)).unwrap(), BatchSize::SmallInput)
    });
    group.finish();
}

fn rules(c: &mut Criterion) {
    let trail = trail();
    let pack = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules");
    let set = Arc::new(RuleSet::load(&RuleSource::read_dir(&pack).unwrap()).unwrap());
    let middle = trail.events.len() / 2;
    let batch = &trail.events[middle..(middle + BATCH).min(trail.events.len())];
    let mut group = c.benchmark_group("evaluate the rule pack");
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function(format!("{} rules on {} events", set.rules().len(), batch.len()), |b| {
        let mut detector = Detector::new(Arc::clone(&set));
        let mut out = Vec::new();
        b.iter(|| {
            let mut detections = 0;
            for event in batch {
                detector.check(event, None, &mut out);
                detections += out.len();
                out.clear();
            }
            detections
        })
    });
    group.finish();
}

criterion_group!(benches, parse, resolve, rules);
criterion_main!(benches);
