//! The hostile files of `tests/hostile/` (written by its `make.py`), and a
//! decompression bomb built here: each is refused or cut with a reason that
//! names the record (index, eventID) or the object, is counted in the
//! pipeline's counters, and costs the rest of the file or batch nothing.

use std::io::Write;
use std::sync::atomic::Ordering::Relaxed;

use trailwatch_core::event::FileStatus;

use super::{collect, hostile, key_of};

struct Case {
    file: &'static str,
    status: FileStatus,
    /// The eventIDs kept, in order.
    kept: &'static [&'static str],
    /// Each rejected record: its index, eventID and a part of its reason.
    rejected: &'static [(usize, Option<&'static str>, &'static str)],
    /// A part of the file's error.
    says: Option<&'static str>,
}

const CASES: &[Case] = &[
    Case { file: "good.json", status: FileStatus::Done, kept: &["good-0", "good-1", "good-2"], rejected: &[], says: None },
    Case {
        file: "nested-arrays.json",
        status: FileStatus::Partial,
        kept: &["nest-0", "nest-2"],
        rejected: &[(1, Some("nest-1"), "the record nests objects and arrays deeper than 100 levels")],
        says: Some("1 of 3 records rejected"),
    },
    Case {
        file: "huge-strings.json.gz",
        status: FileStatus::Failed,
        kept: &["big-0", "big-1"],
        rejected: &[],
        says: Some("a record larger than 1048576 bytes (the limit per record); the 2 records before it were read, 2 kept as events"),
    },
    Case {
        file: "invalid-utf8.json",
        status: FileStatus::Partial,
        kept: &["utf-0", "utf-3"],
        rejected: &[
            (1, Some("utf-1"), "invalid record JSON: invalid unicode code point"),
            (2, Some("utf-2"), "invalid record JSON: invalid unicode code point"),
        ],
        says: Some("2 of 4 records rejected"),
    },
    Case {
        file: "duplicate-keys.json",
        status: FileStatus::Partial,
        kept: &["dup-0", "dup-3"],
        rejected: &[(1, Some("dup-1"), "duplicate field `eventID`"), (2, Some("dup-2"), "duplicate field `userIdentity`")],
        says: Some("2 of 4 records rejected"),
    },
    Case {
        file: "truncated.json.gz",
        status: FileStatus::Failed,
        kept: &[
            "cut-0", "cut-1", "cut-2", "cut-3", "cut-4", "cut-5", "cut-6", "cut-7", "cut-8", "cut-9", "cut-10", "cut-11", "cut-12", "cut-13", "cut-14",
            "cut-15", "cut-16",
        ],
        rejected: &[],
        says: Some("after 17 records (truncated file); the records before it were kept"),
    },
    Case {
        file: "non-object-members.json",
        status: FileStatus::Failed,
        kept: &["mem-0"],
        rejected: &[],
        says: Some("not a CloudTrail log file: record 1 of Records is not an object"),
    },
    Case { file: "non-object-first.json", status: FileStatus::Failed, kept: &[], rejected: &[], says: Some("record 0 of Records is not an object") },
];

#[tokio::test]
async fn each_hostile_file_fails_or_is_partial_with_a_counted_reason_and_the_rest_is_kept() {
    let batch = collect(CASES.iter().map(|c| hostile(c.file)).collect()).await;
    for (i, case) in CASES.iter().enumerate() {
        let outcome = batch.outcome(i);
        let file = case.file;
        assert_eq!(outcome.status, case.status, "{file}: {:?}", outcome.error);
        let prefix = case.kept.first().or(case.rejected.first().map(|_| &"")).map(|id| id.split('-').next().unwrap_or_default());
        let kept: Vec<&str> = match prefix {
            Some(p) if !p.is_empty() => batch.event_ids().into_iter().filter(|id| id.starts_with(&format!("{p}-"))).collect(),
            _ => Vec::new(),
        };
        assert_eq!(kept, case.kept, "{file}: the events kept");
        assert_eq!(outcome.events, case.kept.len() as u64, "{file}");
        let rejected: Vec<(usize, Option<&str>)> = outcome.rejected.iter().map(|r| (r.error.index, r.error.event_id.as_deref())).collect();
        let want: Vec<(usize, Option<&str>)> = case.rejected.iter().map(|(i, id, _)| (*i, *id)).collect();
        assert_eq!(rejected, want, "{file}: the records rejected, by index and eventID");
        for (r, (_, _, reason)) in outcome.rejected.iter().zip(case.rejected) {
            assert!(r.error.to_string().contains(reason), "{file}: {} should say {reason:?}", r.error);
            assert!(!r.raw.is_empty(), "{file}: the rejected record's text is kept for inspection");
        }
        match case.says {
            Some(says) => assert!(outcome.error.as_deref().unwrap_or_default().contains(says), "{file}: {:?} should say {says:?}", outcome.error),
            None => assert_eq!(outcome.error, None, "{file}"),
        }
    }
    let stats = &batch.stats;
    let count = |status| CASES.iter().filter(|c| c.status == status).count() as u64;
    assert_eq!(stats.files_read.load(Relaxed), CASES.len() as u64);
    assert_eq!(
        (stats.files_done.load(Relaxed), stats.files_partial.load(Relaxed), stats.files_failed.load(Relaxed)),
        (count(FileStatus::Done), count(FileStatus::Partial), count(FileStatus::Failed))
    );
    assert_eq!(stats.events_rejected.load(Relaxed), CASES.iter().map(|c| c.rejected.len() as u64).sum::<u64>());
    assert_eq!(stats.events_parsed.load(Relaxed), CASES.iter().map(|c| c.kept.len() as u64).sum::<u64>());
    assert_eq!(batch.events.len() as u64, stats.events_parsed.load(Relaxed));
}

#[tokio::test]
async fn a_huge_record_is_named_with_its_object() {
    let batch = collect(vec![hostile("good.json"), hostile("huge-strings.json.gz")]).await;
    let error = batch.outcome(1).error.clone().unwrap_or_default();
    assert!(error.starts_with(&format!("{}: stopped at byte ", key_of(1))), "{error}");
    assert!(batch.outcome(1).bytes < 2 << 20, "at most about the record limit is held: {} bytes", batch.outcome(1).bytes);
    assert_eq!(batch.outcome(0).status, FileStatus::Done, "the next object is read as usual");
}

/// About 1.1 GiB of valid records once decompressed, from about a megabyte:
/// one gzip member of a record and 1 MB of blanks, repeated.
fn bomb() -> Vec<u8> {
    let member = |text: &[u8]| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(text).unwrap();
        gz.finish().unwrap()
    };
    let record = |id: &str| {
        format!(
            r#"{{"eventVersion":"1.09","eventTime":"2024-01-15T12:01:00Z","eventSource":"sts.amazonaws.com","eventName":"GetCallerIdentity","awsRegion":"us-east-1","eventID":"{id}","recipientAccountId":"111122223333"}}"#
        )
    };
    let mut out = member(format!(r#"{{"Records":[{}"#, record("bomb-first")).as_bytes());
    let blanks = member(&[&b","[..], &vec![b' '; 1_000_000]].concat());
    let next = member(record("bomb-next").as_bytes());
    for _ in 0..1100 {
        out.extend_from_slice(&blanks);
        out.extend_from_slice(&next);
    }
    out.extend_from_slice(&member(b"]}"));
    out
}

#[tokio::test]
async fn a_decompression_bomb_stops_at_the_object_limit() {
    let body = bomb();
    assert!(body.len() < 2 << 20, "the bomb is small: {} bytes", body.len());
    let started = std::time::Instant::now();
    let batch = collect(vec![body, hostile("good.json")]).await;
    let outcome = batch.outcome(0);
    assert_eq!(outcome.status, FileStatus::Failed);
    let error = outcome.error.as_deref().unwrap_or_default();
    assert!(error.starts_with(&format!("{}: stopped at byte ", key_of(0))), "{error}");
    assert!(error.contains("more than 1073741824 bytes of decompressed data (the limit per object)"), "{error}");
    assert!(outcome.bytes <= 1 << 30, "decompressed {} bytes", outcome.bytes);
    assert!(batch.stats.bytes_uncompressed.load(Relaxed) <= (1 << 30) + 2000, "counted");
    let kept = outcome.events;
    assert!((1000..=1100).contains(&kept), "the records before the limit are kept: {kept}");
    assert_eq!(batch.stats.files_failed.load(Relaxed), 1);
    assert_eq!(batch.outcome(1).status, FileStatus::Done, "the next object is read as usual");
    eprintln!("the bomb took {:?}", started.elapsed());
}
