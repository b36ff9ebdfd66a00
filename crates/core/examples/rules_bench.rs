//! How fast the detector checks events against a rules directory.
//!
//! ```text
//! cargo run -p trailwatch-core --release --example rules_bench -- RULES_DIR|none [--events N] [LOG_FILE...]
//! ```
//!
//! Loads every rule under `RULES_DIR` (`none`: no rules, to measure the
//! baseline), reads the records of the log files given (CloudTrail log
//! files, newline-delimited records, gzipped or not; by default the
//! repository's `fixtures/records` and the real trail in `shared/data`),
//! repeats them up to N events (default 200000) and checks them all,
//! printing events per second.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use trailwatch_core::event::Event;
use trailwatch_core::reader::{decode, RecordReader};
use trailwatch_core::rules::{Detector, RuleSet, RuleSource};

fn usage() -> ExitCode {
    eprintln!("usage: rules_bench RULES_DIR|none [--events N] [LOG_FILE...]");
    ExitCode::from(2)
}

fn default_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("fixtures/records")).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    files.sort();
    let real = root.join("../shared/data/real/otrf-ec2-proxy-s3-exfiltration.ndjson.gz");
    if real.is_file() {
        files.push(real);
    }
    files
}

fn read_events(path: &Path) -> Result<Vec<Event>, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    decode(file).and_then(|mut r| r.read_to_end(&mut bytes)).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut reader = RecordReader::new(bytes.as_slice());
    let mut events = Vec::new();
    loop {
        match reader.next_record() {
            Ok(Some(record)) => {
                if let Ok(event) = Event::from_record(record.index, record.bytes, "000000000000") {
                    events.push(event);
                }
            }
            Ok(None) => return Ok(events),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else { return usage() };
    let mut target = 200_000usize;
    let mut files = Vec::new();
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        if arg == "--events" {
            match rest.next().and_then(|n| n.parse().ok()) {
                Some(n) => target = n,
                None => return usage(),
            }
        } else {
            files.push(PathBuf::from(arg));
        }
    }
    if files.is_empty() {
        files = default_files();
    }

    let sources = if dir == "none" {
        Vec::new()
    } else {
        match RuleSource::read_dir(Path::new(dir)) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    let set = match RuleSet::load(&sources) {
        Ok(set) => Arc::new(set),
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            eprintln!("{} error(s)", errors.len());
            return ExitCode::FAILURE;
        }
    };
    let indexed = set.rules().iter().filter(|r| r.indexed).count();

    let mut sample = Vec::new();
    for file in &files {
        match read_events(file) {
            Ok(events) => sample.extend(events),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if sample.is_empty() {
        eprintln!("error: no events in the files given");
        return ExitCode::FAILURE;
    }
    let events: Vec<&Event> = sample.iter().cycle().take(target).collect();

    let mut detector = Detector::new(Arc::clone(&set));
    let mut out = Vec::new();
    let mut detections = 0usize;
    let started = Instant::now();
    for event in &events {
        detector.check(event, None, &mut out);
        detections += out.len();
        out.clear();
    }
    let elapsed = started.elapsed();
    let stats = detector.stats();
    let rate = events.len() as f64 / elapsed.as_secs_f64().max(1e-9);
    println!("rules: {} ({indexed} indexed, {} for every event)", set.rules().len(), set.rules().len() - indexed);
    println!("events: {} ({} distinct records from {} files)", events.len(), sample.len(), files.len());
    println!(
        "parsed: {} events ({:.1}%), rule evaluations: {}, detections: {detections}",
        stats.events_parsed,
        100.0 * stats.events_parsed as f64 / events.len() as f64,
        stats.evaluations
    );
    println!("time: {:.3} s, {rate:.0} events/s", elapsed.as_secs_f64());
    ExitCode::SUCCESS
}
