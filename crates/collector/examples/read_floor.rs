//! The reading floor: how fast the collector's own reading (gunzip, split
//! into records, validate each into an event, capture sessions) goes on its
//! own, with no channel, enricher or store behind it.
//!
//! ```text
//! cargo run --release -p trailwatch-collector --example read_floor -- FILE_LIST [workers]
//! ```
//!
//! `FILE_LIST` names one log file per line; each path must contain its key
//! from `AWSLogs/` on, as in a trail directory. The files are shared among
//! `workers` threads (default 1), each taking the next file when it is done.
//! Prints one line of JSON: files, events, sessions, uncompressed bytes,
//! seconds, and the time per stage summed over the threads.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use trailwatch_collector::read_object;
use trailwatch_core::layout::classify;
use trailwatch_core::ports::ObjectMeta;
use trailwatch_core::stats::{Stage, StageTimes};

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let list = args.next().ok_or("usage: read_floor FILE_LIST [workers]")?;
    let workers: usize = match args.next() {
        Some(n) => n.parse().map_err(|e| format!("workers {n:?}: {e}"))?,
        None => 1,
    };
    let text = std::fs::read_to_string(&list).map_err(|e| format!("{list}: {e}"))?;
    let mut files = Vec::new();
    for (line, path) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let at = path.find("AWSLogs/").ok_or_else(|| format!("{list} line {}: {path} has no AWSLogs/ in its path", line + 1))?;
        let key = classify(&path[at..]).map_err(|reason| format!("{list} line {}: {path}: {}", line + 1, reason.label()))?;
        files.push((path.to_owned(), key));
    }
    let files = Arc::new(files);
    let next = Arc::new(AtomicUsize::new(0));
    let (events, sessions, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let times = Arc::new(StageTimes::default());
    let started = Instant::now();
    let threads: Vec<_> = (0..workers.max(1))
        .map(|_| {
            let (files, next, events, sessions, bytes, times) = (files.clone(), next.clone(), events.clone(), sessions.clone(), bytes.clone(), times.clone());
            std::thread::spawn(move || -> Result<(), String> {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((path, key)) = files.get(i) else { return Ok(()) };
                    let body = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
                    let meta = ObjectMeta { key: path.clone(), size: 0, modified: 0 };
                    let shared: Arc<str> = path.as_str().into();
                    let (outcome, _) = read_object(
                        &shared,
                        key,
                        &meta,
                        body,
                        &mut |chunk| {
                            events.fetch_add(chunk.events.len() as u64, Ordering::Relaxed);
                            sessions.fetch_add(chunk.sessions.len() as u64, Ordering::Relaxed);
                            true
                        },
                        &times,
                    )
                    .map_err(|_| format!("{path}: abandoned"))?;
                    if let Some(error) = outcome.error {
                        return Err(format!("{path}: {error}"));
                    }
                    bytes.fetch_add(outcome.bytes, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().map_err(|_| "a reading thread panicked".to_owned())??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let stages: Vec<String> =
        [Stage::Gunzip, Stage::Parse, Stage::Capture].iter().map(|&s| format!("\"{}\": {:.3}", s.label(), times.get(s).as_secs_f64())).collect();
    println!(
        "{{\"files\": {}, \"workers\": {workers}, \"events\": {}, \"sessions\": {}, \"bytes\": {}, \"seconds\": {seconds:.3}, \"stages\": {{{}}}}}",
        files.len(),
        events.load(Ordering::Relaxed),
        sessions.load(Ordering::Relaxed),
        bytes.load(Ordering::Relaxed),
        stages.join(", ")
    );
    Ok(())
}
