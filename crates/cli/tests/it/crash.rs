//! Crash safety of the embedded pipeline: `trailwatch run` is killed with
//! SIGKILL at random points while a trail's files land, restarted each time,
//! and what it stored at the end is compared with a clean run of the same
//! trail. After every kill the database left behind is checked as found:
//! intact, no duplicate events, and no log file marked done whose events are
//! not all stored.
//!
//! `TRAILWATCH_CRASH_ROUNDS` (kills, default 12), `TRAILWATCH_CRASH_EVENTS`
//! (trail size, default 5,000) and `TRAILWATCH_CRASH_SEED` (default: from the
//! clock; printed, so a failing run can be repeated) make longer runs.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

#[path = "../common/seeded.rs"]
mod seeded;
use seeded::{env_number, Points};

/// Keys of the trail's objects (log files, digests and their signatures)
/// relative to `root`, in the order the bucket receives them: by the time
/// in the name, a log file before a digest of the same time, and a digest's
/// signature just before the digest.
fn delivery_order(root: &Path) -> Vec<String> {
    let (mut files, mut dirs) = (Vec::new(), vec![root.join("AWSLogs")]);
    while let Some(dir) = dirs.pop() {
        for path in std::fs::read_dir(&dir).unwrap().map(|entry| entry.unwrap().path()) {
            if path.is_dir() {
                dirs.push(path)
            } else {
                files.push(path)
            }
        }
    }
    let mut keyed: Vec<((String, u8), String)> = files
        .iter()
        .map(|p| {
            let key = p.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
            let name = p.file_name().unwrap().to_str().unwrap();
            let stamp = name
                .split('_')
                .find(|part| part.len() >= 13 && part.as_bytes()[8] == b'T' && part[..8].bytes().all(|b| b.is_ascii_digit()))
                .unwrap_or_else(|| panic!("no time in the object name {name}"));
            let mut digits: String = stamp.chars().take_while(|c| c.is_ascii_alphanumeric() && *c != 'Z').filter(char::is_ascii_digit).collect();
            while digits.len() < 14 {
                digits.push('0');
            }
            let rank = if name.ends_with(".signature") {
                1
            } else if key.contains("/CloudTrail-Digest/") {
                2
            } else {
                0
            };
            ((digits, rank), key)
        })
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, key)| key).collect()
}

/// (recipientAccountId, eventID) of every record of a gzipped log file.
fn file_events(file: &Path) -> Vec<(String, String)> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(File::open(file).unwrap()).read_to_string(&mut text).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    json["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["recipientAccountId"].as_str().unwrap().to_owned(), r["eventID"].as_str().unwrap().to_owned()))
        .collect()
}

/// Rows of a query, one line each (columns joined by `|`, NULL as nothing).
fn sql(db: &Path, query: &str) -> Vec<String> {
    use rusqlite::types::ValueRef;
    let conn = rusqlite::Connection::open(db).unwrap_or_else(|e| panic!("opening {}: {e}", db.display()));
    let mut stmt = conn.prepare(query).unwrap_or_else(|e| panic!("{} {query:?}: {e}", db.display()));
    let columns = stmt.column_count();
    let rows = stmt.query_map([], |row| {
        let mut line = Vec::with_capacity(columns);
        for i in 0..columns {
            line.push(match row.get_ref(i)? {
                ValueRef::Null => String::new(),
                ValueRef::Integer(n) => n.to_string(),
                ValueRef::Real(x) => x.to_string(),
                ValueRef::Text(t) | ValueRef::Blob(t) => String::from_utf8_lossy(t).into_owned(),
            });
        }
        Ok(line.join("|"))
    });
    rows.and_then(|rows| rows.collect()).unwrap_or_else(|e| panic!("{} {query:?}: {e}", db.display()))
}

/// A copy of the database files exactly as a kill left them (the next start
/// recovers from the same files): checking them does not touch the original.
fn snapshot(data: &Path, into: &Path) -> PathBuf {
    let _ = std::fs::remove_dir_all(into);
    std::fs::create_dir_all(into).unwrap();
    for name in ["trailwatch.db", "trailwatch.db-wal"] {
        let from = data.join(name);
        if from.exists() {
            std::fs::copy(&from, into.join(name)).unwrap();
        }
    }
    into.join("trailwatch.db")
}

/// What a kill left behind, checked: the file is intact, no event is stored
/// twice, and every log file marked done has all its events stored.
/// Returns (log files done, events stored).
fn check_after_kill(db: &Path, events_of: &HashMap<String, Vec<(String, String)>>, kill: usize) -> (usize, usize) {
    if !db.exists() {
        return (0, 0);
    }
    assert_eq!(sql(db, "PRAGMA integrity_check"), ["ok"], "kill {kill}: the database is damaged");
    let stored = sql(db, "SELECT account_id || ' ' || event_id FROM events");
    let unique_stored: HashSet<&str> = stored.iter().map(String::as_str).collect();
    assert_eq!(unique_stored.len(), stored.len(), "kill {kill}: an event is stored twice");
    let done = sql(db, "SELECT key FROM objects WHERE kind = 'log' AND status = 'done'");
    for key in &done {
        let events = events_of.get(key).unwrap_or_else(|| panic!("kill {kill}: the ledger holds {key}, which was never delivered"));
        let missing: Vec<String> = events.iter().map(|(a, e)| format!("{a} {e}")).filter(|k| !unique_stored.contains(k.as_str())).collect();
        assert!(missing.is_empty(), "kill {kill}: {key} is marked done but {} of its {} events are not stored: {missing:?}", missing.len(), events.len());
    }
    (done.len(), stored.len())
}

/// What a user sees of a finished store, as sorted lines to compare.
struct Outcome {
    events: Vec<String>,
    sessions: Vec<String>,
    pending: Vec<String>,
    ledger: Vec<String>,
    alerts: Vec<String>,
    notifying: Vec<String>,
    outbox_left: Vec<String>,
}

fn outcome(data: &Path) -> Outcome {
    let db = data.join("trailwatch.db");
    let alerts = stdout(&ok(&["alerts", "list", "--data", path(data), "--status", "all", "--json", "--limit", "10000"]));
    let mut alerts: Vec<String> = alerts
        .lines()
        .map(|line| {
            let a: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("alerts list line is not JSON ({e}): {line}"));
            // Not the revision: how many updates an alert went through depends on how
            // the files were batched, which arrival changes (a clean run that
            // watches files land has more of them too).
            format!(
                "{} {} · {} · {} · count {} · seen {}..{} · origin {} {}",
                a["ruleId"].as_str().unwrap(),
                a["accountId"].as_str().unwrap(),
                a["dedupKey"],
                a["status"],
                a["count"],
                a["firstSeen"],
                a["lastSeen"],
                a["origin"]["kind"],
                a["origin"]["principal"]
            )
        })
        .collect();
    alerts.sort();
    Outcome {
        events: sql(&db, "SELECT account_id, event_id, origin_kind, origin_principal, confidence FROM events ORDER BY account_id, event_id"),
        sessions: sql(&db, "SELECT access_key_id, issued_at, expires_at FROM sessions ORDER BY 1, 2"),
        pending: sql(&db, "SELECT account_id, event_id, missing_key FROM pending ORDER BY 1, 2"),
        ledger: sql(&db, "SELECT key, kind, status, events, rejected FROM objects ORDER BY key"),
        alerts,
        notifying: sql(
            &db,
            "SELECT a.dedup_key, t.kind, t.at, t.revision FROM alert_transitions t JOIN alerts a ON a.id = t.alert_id \
             WHERE t.notify = 1 ORDER BY 1, 4",
        ),
        outbox_left: sql(&db, "SELECT sink, alert_id, revision FROM alert_outbox WHERE done_at IS NULL"),
    }
}

/// Deliveries of the alerts file as `alert dedup key|kind|at|revision`
/// (the shape of `Outcome::notifying`), with how many lines repeat one
/// already delivered and how many were torn by a kill.
fn delivered(file: &Path) -> (BTreeSet<String>, usize, usize) {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let (mut seen, mut by_key, mut repeats, mut torn) = (BTreeSet::new(), HashMap::<String, String>::new(), 0, 0);
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            torn += 1;
            continue;
        };
        let t = &v["transition"];
        let key = v["dedupKey"].as_str().expect("every delivery has a dedup key").to_owned();
        assert_eq!(key, format!("{}:{}", t["alertId"].as_str().unwrap(), t["revision"]), "the dedup key names the transition: {line}");
        let what = format!("{}|{}|{}|{}", v["alert"]["dedupKey"].as_str().unwrap(), t["kind"].as_str().unwrap(), t["at"], t["revision"]);
        match by_key.get(&key) {
            Some(before) => {
                assert_eq!(before, &what, "one dedup key, two different transitions");
                repeats += 1;
            }
            None => {
                by_key.insert(key, what.clone());
            }
        }
        seen.insert(what);
    }
    (seen, repeats, torn)
}

fn kill(mut child: Child) {
    child.kill().expect("SIGKILL trailwatch");
    child.wait().expect("reap trailwatch");
}

/// SIGKILLed at random points while files land, then restarted, `run`
/// ends with what a clean run stores: every event once, every session, the
/// same alerts, every alert transition delivered, a complete ledger.
#[test]
fn sigkill_at_random_points_loses_and_duplicates_nothing() {
    let started = Instant::now();
    let rounds = env_number("TRAILWATCH_CRASH_ROUNDS", 12).max(1) as usize;
    let size = env_number("TRAILWATCH_CRASH_EVENTS", 5000).max(1000);
    let seed = env_number("TRAILWATCH_CRASH_SEED", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs());
    println!("crash test: seed {seed} (TRAILWATCH_CRASH_SEED), {rounds} kills, {size} events");
    let mut points = Points(seed);

    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full");
    ok(&["gen", "--out", path(&full), "--accounts", "8", "--events", &size.to_string(), "--seed", &(seed % 1000).to_string(), "--incidents"]);
    let key: Value = serde_json::from_slice(&std::fs::read(full.join("expected.json")).unwrap()).unwrap();
    let keys = full.join(".public-keys.json");
    assert!(keys.is_file(), "the generator writes its digest keys");
    let order = delivery_order(&full);
    let events_of: HashMap<String, Vec<(String, String)>> =
        order.iter().filter(|k| k.ends_with(".json.gz") && !k.contains("/CloudTrail-Digest/")).map(|k| (k.clone(), file_events(&full.join(k)))).collect();
    let all_events: usize = events_of.values().map(Vec::len).sum();
    assert_eq!(all_events as u64, key["totals"]["events"].as_u64().unwrap(), "the files hold the answer key's events");

    // The clean run: the whole trail, one ingest.
    let (clean_data, clean_alerts) = (tmp.path().join("clean"), tmp.path().join("clean-alerts.jsonl"));
    let clean_started = Instant::now();
    ok(&["ingest", "--trail", path(&full), "--data", path(&clean_data), "--alerts-file", path(&clean_alerts), "--public-keys", path(&keys)]);
    let clean_time = clean_started.elapsed();
    let clean = outcome(&clean_data);

    // The crashing run: files land a few at a time while `run` watches.
    let (live, data, alerts_file) = (tmp.path().join("live"), tmp.path().join("data"), tmp.path().join("alerts.jsonl"));
    let staging = tmp.path().join("staging");
    std::fs::create_dir_all(&live).unwrap();
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::copy(full.join("accounts.json"), live.join("accounts.json")).unwrap();
    let log = File::create(tmp.path().join("run.log")).unwrap();
    let deliver = |key: &str| {
        // As an object appears in a bucket: whole, at once.
        let staged = staging.join("object");
        std::fs::copy(full.join(key), &staged).unwrap();
        let to = live.join(key);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::rename(&staged, &to).unwrap();
    };
    // Files land in small bursts every 20 ms while `run` watches, so kills
    // fall while files are being read, stored and recorded; the pace spreads
    // what is left over the kills to come (the rest lands before the last restart).
    let (tick, mean_life) = (Duration::from_millis(20), 650u64);
    let ticks_per_life = (mean_life / tick.as_millis() as u64) as usize;
    let (mut delivered_count, mut unrecorded, mut stored_unrecorded) = (0usize, 0usize, 0usize);
    println!("kill  alive ms  files delivered  log files done  events stored  events of done files");
    for round in 0..rounds {
        let life = Duration::from_millis(100 + points.below(2 * mean_life - 200));
        let child = trailwatch()
            .args(["run", "--trail", path(&live), "--data", path(&data), "--no-api", "--interval", "1"])
            .args(["--alerts-file", path(&alerts_file), "--public-keys", path(&keys)])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log.try_clone().unwrap()))
            .spawn()
            .expect("spawn trailwatch run");
        let burst = (order.len() - delivered_count).div_ceil((rounds - round) * ticks_per_life);
        let born = Instant::now();
        while born.elapsed() < life {
            for key in order.iter().skip(delivered_count).take(burst) {
                deliver(key);
            }
            delivered_count = (delivered_count + burst).min(order.len());
            std::thread::sleep(tick.min(life.saturating_sub(born.elapsed())));
        }
        kill(child);
        let db = snapshot(&data, &tmp.path().join("snapshot"));
        let (done, stored) = check_after_kill(&db, &events_of, round + 1);
        let logs_delivered = order.iter().take(delivered_count).filter(|k| events_of.contains_key(*k)).count();
        let done_events: usize =
            if db.exists() { sql(&db, "SELECT key FROM objects WHERE kind = 'log' AND status = 'done'").iter().map(|k| events_of[k].len()).sum() } else { 0 };
        println!("{:>4}  {:>8}  {delivered_count:>15}  {done:>14}  {stored:>13}  {done_events:>20}", round + 1, life.as_millis());
        unrecorded += usize::from(done < logs_delivered);
        stored_unrecorded += usize::from(stored > done_events);
    }
    let left_for_last = order.len() - delivered_count;
    for key in order.iter().skip(delivered_count) {
        deliver(key);
    }
    // The last restart runs to the end and delivers what is queued.
    ok(&["ingest", "--trail", path(&live), "--data", path(&data), "--alerts-file", path(&alerts_file), "--public-keys", path(&keys)]);
    let crashed = outcome(&data);
    assert_eq!(sql(&data.join("trailwatch.db"), "PRAGMA integrity_check"), ["ok"]);

    // Every event once, resolved as the clean run resolved it.
    let ids: Vec<&str> = crashed.events.iter().map(|l| l.rsplitn(4, '|').last().unwrap()).collect();
    let duplicates = ids.len() - unique(&ids);
    let clean_ids: HashSet<&str> = clean.events.iter().map(|l| l.rsplitn(4, '|').last().unwrap()).collect();
    let stored_ids: HashSet<&str> = ids.iter().copied().collect();
    let lost = clean_ids.difference(&stored_ids).count();
    let (deliveries, repeats, torn) = delivered(&alerts_file);
    let (clean_deliveries, _, _) = delivered(&clean_alerts);
    println!(
        "crash test: {rounds} kills ({unrecorded} with delivered log files not yet recorded, {stored_unrecorded} with events stored \
         but their file not yet recorded), {left_for_last} files left for the last restart, {} files ({} log files), {} events stored, {duplicates} duplicates, {lost} lost, \
         {} alerts, {} transitions delivered ({repeats} repeated, {torn} torn lines), clean ingest {:.1} s, {:.1} s in all",
        order.len(),
        events_of.len(),
        ids.len(),
        crashed.alerts.len(),
        deliveries.len(),
        clean_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!((duplicates, lost), (0, 0), "events duplicated, lost");
    assert_eq!(ids.len(), all_events, "every event of the trail is stored");
    assert_eq!(crashed.events, clean.events, "events and their origins differ from a clean run");

    // Every session, and no event left waiting that a clean run resolves.
    assert_eq!(crashed.sessions, clean.sessions, "sessions differ from a clean run");
    let sessions: HashSet<&str> = crashed.sessions.iter().map(|l| l.split('|').next().unwrap()).collect();
    for s in key["sessions"].as_array().unwrap() {
        assert!(sessions.contains(s["accessKeyId"].as_str().unwrap()), "session not recorded: {s}");
    }
    assert_eq!(crashed.pending, clean.pending, "events waiting for a session differ from a clean run");

    // A complete ledger: every file read once, done, nothing partial or failed.
    assert_eq!(crashed.ledger, clean.ledger, "the ledger differs from a clean run");
    let statuses: BTreeMap<&str, usize> = crashed.ledger.iter().fold(BTreeMap::new(), |mut m, l| {
        *m.entry(l.split('|').nth(2).unwrap()).or_default() += 1;
        m
    });
    assert_eq!(statuses.get("done").copied().unwrap_or(0), events_of.len(), "every log file done: {statuses:?}");
    assert_eq!(statuses.len(), 2, "only done log files and digests: {statuses:?}");

    // The same alerts, each once; every transition delivered at least once.
    assert_eq!(crashed.alerts, clean.alerts, "alerts differ from a clean run");
    for want in key["alerts"].as_array().unwrap() {
        let prefix = format!("{} {} · ", want["ruleId"].as_str().unwrap(), want["accountId"].as_str().unwrap());
        assert!(crashed.alerts.iter().any(|a| a.starts_with(&prefix)), "the answer key's alert is not raised: {want}");
    }
    // Openings and resolutions as a clean run has them; which revision they
    // are, which updates notify, and which event opened an alert (`at`: the
    // first of its events to arrive) follow the order files arrive in.
    let milestones = |rows: &mut dyn Iterator<Item = &String>| -> BTreeSet<String> {
        rows.filter(|l| !l.contains("|updated|")).map(|l| l.rsplitn(3, '|').last().unwrap().to_owned()).collect()
    };
    assert_eq!(milestones(&mut crashed.notifying.iter()), milestones(&mut clean.notifying.iter()), "alert openings and resolutions differ from a clean run");
    let stored_transitions: BTreeSet<String> = crashed.notifying.iter().cloned().collect();
    assert_eq!(deliveries, stored_transitions, "every notifying transition delivered, and nothing else");
    assert_eq!(
        milestones(&mut deliveries.iter()),
        milestones(&mut clean_deliveries.iter()),
        "the openings and resolutions delivered differ from a clean run's"
    );
    assert!(crashed.outbox_left.is_empty(), "deliveries left undone: {:?}", crashed.outbox_left);
}
