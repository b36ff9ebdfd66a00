//! Times a generation: `cargo run --release -p trailwatch-gen --example gen_bench -- [events] [days] [threads] [out-dir]`
//! (defaults: 1,000,000 events, 1 day, all cores, a temporary directory).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use trailwatch_gen::{generate, GenConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let events = args.first().map_or(Ok(1_000_000), |a| a.parse())?;
    let days = args.get(1).map_or(Ok(1), |a| a.parse())?;
    let threads = args.get(2).map_or(Ok(0), |a| a.parse())?;
    let out = match args.get(3) {
        Some(dir) => std::path::PathBuf::from(dir),
        None => std::env::temp_dir().join(format!("trailwatch-gen-bench-{}", std::process::id())),
    };
    let config = GenConfig { events, days, threads, ..GenConfig::default() };
    let written = AtomicU64::new(0);
    let started = Instant::now();
    let report = generate(&config, &out, &|n| {
        written.fetch_add(n, Ordering::Relaxed);
    })?;
    let took = started.elapsed();
    println!(
        "{} events in {} log files (+{} digests), {} sessions, {:.1} MB JSON -> {:.1} MB gzip, in {:.2?} ({:.0} events/s) under {}",
        report.events,
        report.files,
        report.digest_files,
        report.sessions,
        report.bytes_uncompressed as f64 / 1e6,
        report.bytes_compressed as f64 / 1e6,
        took,
        report.events as f64 / took.as_secs_f64(),
        out.display()
    );
    assert_eq!(written.load(Ordering::Relaxed), report.events, "progress deltas add up to the events");
    if args.get(3).is_none() {
        std::fs::remove_dir_all(&out)?;
    }
    Ok(())
}
