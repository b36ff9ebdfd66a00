//! Reading one log file: decompress, stream its records, validate each, and
//! hand the accepted events on in chunks. Pure apart from the reader it is
//! given, so every bad-input case is tested without a store.

use std::cell::Cell;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use trailwatch_core::event::{Event, FileOutcome, FileStatus, RecordError, RejectedRecord, REJECT_KEEP_BYTES};
use trailwatch_core::identity::{capture, Session};
use trailwatch_core::layout::TrailKey;
use trailwatch_core::ports::ObjectMeta;
use trailwatch_core::reader::{decode, ReadError, RecordReader};
use trailwatch_core::stats::{Stage, StageTimes};
use trailwatch_core::view::RecordView;

/// What reading one object may cost. Past a limit the file fails with the
/// reason (it names the object and the limit); the records before are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Decompressed bytes per object: a decompression bomb stops here.
    pub object_bytes: u64,
    /// Bytes of one record (CloudTrail caps an event at 256 KB): the reader
    /// holds a record whole, so this bounds its memory.
    pub record_bytes: u64,
    /// Rejected records per file; past it the rest is not read.
    pub rejected_records: usize,
    /// Bytes of rejected records' text kept per file (each is also cut at
    /// [`REJECT_KEEP_BYTES`]); past it only the errors are kept.
    pub rejected_bytes: usize,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits { object_bytes: 1 << 30, record_bytes: 1 << 20, rejected_records: 10_000, rejected_bytes: 16 << 20 }
    }
}

/// A limit of [`ReadLimits`] the data went past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exceeded {
    Object { limit: u64 },
    Record { limit: u64 },
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exceeded::Object { limit } => write!(f, "more than {limit} bytes of decompressed data (the limit per object)"),
            Exceeded::Record { limit } => write!(f, "a record larger than {limit} bytes (the limit per record)"),
        }
    }
}

impl std::error::Error for Exceeded {}

/// Stops the decompressed stream at the object limit, and when more than
/// the record limit has been read since the end of the last record handed
/// out (`record_end`, set by the caller), so neither a bomb nor one endless
/// record can take more memory or time than the limits allow.
struct Bounded<'a, R> {
    inner: R,
    limits: &'a ReadLimits,
    total: u64,
    record_end: &'a Cell<u64>,
}

impl<R: Read> Read for Bounded<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.total.saturating_sub(self.record_end.get()) > self.limits.record_bytes {
            return Err(std::io::Error::other(Exceeded::Record { limit: self.limits.record_bytes }));
        }
        // One byte past the limit tells a stream that ends exactly there from one that goes on.
        let room = self.limits.object_bytes.saturating_sub(self.total).saturating_add(1);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.total += n as u64;
        if self.total > self.limits.object_bytes {
            return Err(std::io::Error::other(Exceeded::Object { limit: self.limits.object_bytes }));
        }
        Ok(n)
    }
}

/// The limit a read error reports, if it is one.
fn exceeded(error: &ReadError) -> Option<Exceeded> {
    match error {
        ReadError::Io { source, .. } => source.get_ref().and_then(|e| e.downcast_ref::<Exceeded>()).copied(),
        _ => None,
    }
}

/// Why reading a file stopped before its end.
enum Stop {
    Read(ReadError),
    /// More records were rejected than [`ReadLimits::rejected_records`].
    Rejected,
}

/// Events per chunk sent to the enricher.
pub const CHUNK_EVENTS: usize = 1000;

/// The receiving side went away (shutdown); the file was not finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abandoned;

/// Validates one record into an event, and captures the session it issued,
/// if any (the time that takes is added to `capturing`).
fn accept(index: usize, bytes: &[u8], key_account: &str, sessions: &mut Vec<Session>, capturing: &Cell<Duration>) -> Result<Event, RecordError> {
    if nests_deeper(bytes, MAX_DEPTH) {
        return Err(RecordError { index, event_id: event_id_of(bytes), reason: format!("the record nests objects and arrays deeper than {MAX_DEPTH} levels") });
    }
    let view = RecordView::parse(bytes).map_err(|e| RecordError { index, event_id: event_id_of(bytes), reason: format!("invalid record JSON: {e}") })?;
    let event = Event::from_view(index, bytes, &view, key_account)?;
    let started = Instant::now();
    if let Some(session) = capture(&view, key_account) {
        sessions.push(session);
    }
    capturing.set(capturing.get() + started.elapsed());
    Ok(event)
}

/// How deep a record may nest objects and arrays. serde_json reads 128
/// levels: a deeper record would be stored, but the rules could not parse
/// it, so it would pass them unchecked. Refused instead, and kept among the
/// file's rejected records.
pub const MAX_DEPTH: usize = 100;

/// Whether `bytes` (one JSON value) nests deeper than `max`. Counting the
/// brackets first (fast) spares the walk for nearly every record.
fn nests_deeper(bytes: &[u8], max: usize) -> bool {
    if memchr::memchr2_iter(b'{', b'[', bytes).count() <= max {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        match (in_string, b) {
            (true, _) if escaped => escaped = false,
            (true, b'\\') => escaped = true,
            (true, b'"') | (false, b'"') => in_string = !in_string,
            (false, b'{' | b'[') => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            (false, b'}' | b']') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The first `"eventID":"…"` in a record that could not be parsed, so its
/// error can name it (up to 128 bytes, lossily decoded).
fn event_id_of(bytes: &[u8]) -> Option<String> {
    let at = memchr::memmem::find(bytes, b"\"eventID\"")? + b"\"eventID\"".len();
    let rest = bytes[at..].trim_ascii_start().strip_prefix(b":")?.trim_ascii_start().strip_prefix(b"\"")?;
    let end = memchr::memchr2(b'"', b'\\', rest)?;
    (end > 0 && end <= 128).then(|| String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// Adds the time its reads take to `spent`: the decompressor's share of reading.
struct Timed<'a, R> {
    inner: R,
    spent: &'a Cell<Duration>,
}

impl<R: Read> Read for Timed<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let started = Instant::now();
        let n = self.inner.read(buf);
        self.spent.set(self.spent.get() + started.elapsed());
        n
    }
}

/// Counts a reader kept while reading, to report throughput.
struct Counting<R> {
    inner: R,
    bytes: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Accepted events of a file, with the sessions their records issued.
#[derive(Debug, Default)]
pub struct Chunk {
    pub events: Vec<Event>,
    pub sessions: Vec<Session>,
}

/// Reads one log or insight file. Accepted events go to `send` in chunks of
/// [`CHUNK_EVENTS`] (it returns false when the receiver is gone), each with
/// the sessions its credential-issuing records issued; rejected records and
/// read errors end up in the returned outcome. The time spent decompressing,
/// parsing and capturing sessions (not waiting in `send`) goes to `times`.
pub fn read_object(
    key: &Arc<str>,
    trail_key: &TrailKey,
    meta: &ObjectMeta,
    body: impl Read + Send,
    send: &mut dyn FnMut(Chunk) -> bool,
    times: &StageTimes,
) -> Result<(FileOutcome, u64), Abandoned> {
    let started = Instant::now();
    let spent = Spent::default();
    let result = read_timed(&ReadLimits::default(), key, trail_key, meta, body, send, &spent);
    let total = started.elapsed();
    times.add(Stage::Gunzip, spent.gunzip.get());
    times.add(Stage::Capture, spent.capturing.get());
    times.add(Stage::Parse, total.saturating_sub(spent.gunzip.get() + spent.capturing.get() + spent.sending.get()));
    result
}

/// Where reading one file spent its time, apart from parsing.
#[derive(Default)]
struct Spent {
    /// In the decompressor's reads.
    gunzip: Cell<Duration>,
    /// Capturing sessions.
    capturing: Cell<Duration>,
    /// Handing chunks on (waiting while the channel is full).
    sending: Cell<Duration>,
}

fn read_timed(
    limits: &ReadLimits,
    key: &Arc<str>,
    trail_key: &TrailKey,
    meta: &ObjectMeta,
    body: impl Read + Send,
    send: &mut dyn FnMut(Chunk) -> bool,
    spent: &Spent,
) -> Result<(FileOutcome, u64), Abandoned> {
    let mut send = |chunk: Chunk| {
        let started = Instant::now();
        let taken = send(chunk);
        spent.sending.set(spent.sending.get() + started.elapsed());
        taken
    };
    let mut outcome = FileOutcome {
        key: key.to_string(),
        kind: trail_key.kind,
        account_id: trail_key.account_id.clone(),
        region: trail_key.region.clone(),
        size: meta.size,
        modified: meta.modified,
        status: FileStatus::Done,
        events: 0,
        bytes: 0,
        rejected: Vec::new(),
        error: None,
    };
    let mut counted = Counting { inner: body, bytes: 0 };
    let decoded = match decode(&mut counted) {
        Ok(d) => d,
        Err(e) => {
            outcome.status = FileStatus::Failed;
            outcome.error = Some(format!("read failed: {e}"));
            return Ok((outcome, 0));
        }
    };
    let record_end = Cell::new(0);
    let bounded = Bounded { inner: decoded, limits, total: 0, record_end: &record_end };
    let mut reader = RecordReader::new(Timed { inner: bounded, spent: &spent.gunzip });
    let mut chunk = Chunk { events: Vec::with_capacity(CHUNK_EVENTS), sessions: Vec::new() };
    let mut keep_budget = limits.rejected_bytes;
    let error = loop {
        let record = match reader.next_record() {
            Ok(Some(record)) => record,
            Ok(None) => break None,
            Err(e) => break Some(Stop::Read(e)),
        };
        record_end.set(record.offset + record.bytes.len() as u64);
        match accept(record.index, record.bytes, &trail_key.account_id, &mut chunk.sessions, &spent.capturing) {
            Ok(event) => {
                chunk.events.push(event);
                if chunk.events.len() == CHUNK_EVENTS {
                    outcome.events += CHUNK_EVENTS as u64;
                    let full = std::mem::replace(&mut chunk, Chunk { events: Vec::with_capacity(CHUNK_EVENTS), sessions: Vec::new() });
                    if !send(full) {
                        return Err(Abandoned);
                    }
                }
            }
            Err(error) => {
                if outcome.rejected.len() == limits.rejected_records {
                    break Some(Stop::Rejected);
                }
                let keep = record.bytes.len().min(REJECT_KEEP_BYTES).min(keep_budget);
                keep_budget -= keep;
                outcome.rejected.push(RejectedRecord { error, raw: String::from_utf8_lossy(&record.bytes[..keep]).into_owned() });
            }
        }
    };
    outcome.bytes = reader.bytes_read();
    let records = reader.records();
    drop(reader);
    if !chunk.events.is_empty() {
        outcome.events += chunk.events.len() as u64;
        if !send(chunk) {
            return Err(Abandoned);
        }
    }
    let none_accepted = outcome.events == 0 && !outcome.rejected.is_empty();
    outcome.status = match (&error, records, outcome.rejected.is_empty()) {
        (Some(_), _, _) => FileStatus::Failed,
        (None, 0, _) => FileStatus::Empty,
        (None, _, true) => FileStatus::Done,
        // Not one record is an event: this is not a CloudTrail file (or it is badly broken).
        (None, _, false) if none_accepted => FileStatus::Failed,
        (None, _, false) => FileStatus::Partial,
    };
    let kept = outcome.events;
    outcome.error = match error {
        Some(Stop::Rejected) => Some(format!(
            "{key}: more than {} records rejected (the limit per file), the rest is not read; {kept} events before record {} were kept; first: {}",
            limits.rejected_records,
            records.saturating_sub(1),
            outcome.rejected[0].error
        )),
        Some(Stop::Read(e)) => match exceeded(&e) {
            Some(limit) => Some(format!(
                "{key}: stopped at byte {} of the decompressed data: {limit}; the {records} records before it were read, {kept} kept as events",
                outcome.bytes
            )),
            None => Some(match e {
                ReadError::Truncated { offset } if records > 0 => {
                    format!("the data ends unexpectedly at byte {offset} after {records} records (truncated file); the records before it were kept")
                }
                e => e.to_string(),
            }),
        },
        None if records == 0 => Some("the file holds no records".to_owned()),
        None if none_accepted => Some(format!("none of its {records} records is a CloudTrail event; first: {}", outcome.rejected[0].error)),
        None if !outcome.rejected.is_empty() => Some(format!("{} of {records} records rejected; first: {}", outcome.rejected.len(), outcome.rejected[0].error)),
        None => None,
    };
    Ok((outcome, counted.bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use trailwatch_core::layout::classify;

    const KEY: &str =
        "AWSLogs/o-a1b2c3d4e5/111122223333/CloudTrail/us-east-1/2024/01/15/111122223333_CloudTrail_us-east-1_20240115T1205Z_AbCdEf0123456789.json.gz";

    fn record(id: &str) -> String {
        format!(
            r#"{{"eventVersion":"1.09","eventTime":"2024-01-15T12:01:00Z","eventSource":"sts.amazonaws.com","eventName":"GetCallerIdentity","awsRegion":"us-east-1","eventID":"{id}","recipientAccountId":"111122223333"}}"#
        )
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    fn read(bytes: &[u8]) -> (FileOutcome, Vec<Event>, usize) {
        read_with(&ReadLimits::default(), bytes)
    }

    fn read_with(limits: &ReadLimits, bytes: &[u8]) -> (FileOutcome, Vec<Event>, usize) {
        let key: Arc<str> = KEY.into();
        let meta = ObjectMeta { key: KEY.into(), size: bytes.len() as u64, modified: 0 };
        let mut events = Vec::new();
        let mut chunks = 0;
        let (outcome, _) = read_timed(
            limits,
            &key,
            &classify(KEY).unwrap(),
            &meta,
            bytes,
            &mut |chunk| {
                chunks += 1;
                events.extend(chunk.events);
                true
            },
            &Spent::default(),
        )
        .unwrap();
        (outcome, events, chunks)
    }

    #[test]
    fn a_good_file_is_done_and_sent_in_chunks() {
        let records: Vec<String> = (0..2500).map(|i| record(&format!("e{i}"))).collect();
        let (outcome, events, chunks) = read(&gzip(format!(r#"{{"Records":[{}]}}"#, records.join(",")).as_bytes()));
        assert_eq!((outcome.status, outcome.events, outcome.error), (FileStatus::Done, 2500, None));
        assert_eq!((events.len(), chunks), (2500, 3));
        assert_eq!(events[2499].raw, records[2499]);
    }

    #[test]
    fn bad_records_are_rejected_and_kept_while_the_rest_is_stored() {
        let body = format!(r#"{{"Records":[{},{{"eventID":"broken","eventTime":"2024-01-15T12:01:00Z"}},{}]}}"#, record("a"), record("b"));
        let (outcome, events, _) = read(body.as_bytes());
        assert_eq!(outcome.status, FileStatus::Partial);
        assert_eq!(events.len(), 2);
        assert_eq!(outcome.rejected.len(), 1);
        assert_eq!(outcome.rejected[0].error.to_string(), "record 1 (eventID broken): missing field `eventSource`");
        assert!(outcome.rejected[0].raw.contains("broken"));
        assert_eq!(outcome.error.as_deref(), Some("1 of 3 records rejected; first: record 1 (eventID broken): missing field `eventSource`"));
    }

    #[test]
    fn a_truncated_file_fails_but_keeps_what_came_before() {
        let full = gzip(format!(r#"{{"Records":[{},{}]}}"#, record("a"), record("b")).as_bytes());
        let (outcome, _, _) = read(&full[..full.len() - 12]);
        assert_eq!(outcome.status, FileStatus::Failed);
        assert!(outcome.error.as_deref().unwrap_or_default().contains("truncated"), "{:?}", outcome.error);
        let plain = format!(r#"{{"Records":[{},{}"#, record("a"), &record("b")[..40]);
        let (outcome, events, _) = read(plain.as_bytes());
        assert_eq!((outcome.status, events.len()), (FileStatus::Failed, 1));
        assert!(outcome.error.unwrap().contains("after 1 records (truncated file); the records before it were kept"));
    }

    #[test]
    fn unreadable_inputs_fail_with_their_reason() {
        let cases: [(&[u8], &str); 4] = [
            (b"", "the object is empty (0 bytes)"),
            (&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xde, 0xad, 0xbe, 0xef, 0xff, 0xff], "read failed"),
            (br#"{"Records": 7}"#, "Records must be an array"),
            (b"[1,2,3]", "not a CloudTrail log file: expected '{', found '['"),
        ];
        for (body, reason) in cases {
            let (outcome, events, _) = read(body);
            assert_eq!(outcome.status, FileStatus::Failed, "{reason}");
            assert!(events.is_empty());
            assert!(outcome.error.as_deref().unwrap_or_default().contains(reason), "expected {reason:?} in {:?}", outcome.error);
        }
    }

    #[test]
    fn json_that_holds_no_event_fails() {
        let (outcome, events, _) = read(br#"{"sourceBucket":"inventory","fileFormat":"CSV","files":[]}"#);
        assert_eq!((outcome.status, events.len()), (FileStatus::Failed, 0));
        assert_eq!(outcome.error.as_deref(), Some("none of its 1 records is a CloudTrail event; first: record 0: missing field `eventID`"));
        assert_eq!(outcome.rejected.len(), 1, "the object is kept for inspection");
    }

    #[test]
    fn an_empty_records_array_is_recorded_as_empty() {
        let (outcome, _, _) = read(&gzip(br#"{"Records":[]}"#));
        assert_eq!((outcome.status, outcome.error.as_deref()), (FileStatus::Empty, Some("the file holds no records")));
    }

    #[test]
    fn a_gone_receiver_abandons_the_file() {
        let records: Vec<String> = (0..1500).map(|i| record(&format!("e{i}"))).collect();
        let body = format!(r#"{{"Records":[{}]}}"#, records.join(","));
        let key: Arc<str> = KEY.into();
        let meta = ObjectMeta { key: KEY.into(), size: 0, modified: 0 };
        let result = read_object(&key, &classify(KEY).unwrap(), &meta, body.as_bytes(), &mut |_| false, &StageTimes::default());
        assert_eq!(result.err(), Some(Abandoned));
    }
    fn file(records: &[String]) -> Vec<u8> {
        format!(r#"{{"Records":[{}]}}"#, records.join(",")).into_bytes()
    }

    #[test]
    fn decompressed_output_stops_at_the_object_limit() {
        let records: Vec<String> = (0..3000).map(|i| record(&format!("e{i}"))).collect();
        let body = gzip(&file(&records));
        let limits = ReadLimits { object_bytes: 100_000, ..ReadLimits::default() };
        let (outcome, events, _) = read_with(&limits, &body);
        assert_eq!(outcome.status, FileStatus::Failed);
        let error = outcome.error.unwrap();
        assert!(error.starts_with(&format!("{KEY}: stopped at byte ")), "{error}");
        assert!(error.contains("more than 100000 bytes of decompressed data (the limit per object)"), "{error}");
        assert!(outcome.bytes <= 100_000, "read {} bytes", outcome.bytes);
        assert!(events.len() > 300 && events.len() < 3000, "the records before the limit are kept: {}", events.len());
        assert_eq!(events.last().map(|e| e.raw.as_str()), Some(records[events.len() - 1].as_str()));
    }

    #[test]
    fn a_file_of_exactly_the_limit_is_read_whole() {
        let body = file(&[record("a"), record("b")]);
        let limits = ReadLimits { object_bytes: body.len() as u64, ..ReadLimits::default() };
        let (outcome, events, _) = read_with(&limits, &gzip(&body));
        assert_eq!((outcome.status, events.len(), outcome.error), (FileStatus::Done, 2, None));
        let limits = ReadLimits { object_bytes: body.len() as u64 - 1, ..ReadLimits::default() };
        assert_eq!(read_with(&limits, &body).0.status, FileStatus::Failed);
    }

    #[test]
    fn a_record_over_the_record_limit_stops_the_file_and_keeps_what_came_before() {
        let huge = format!(r#"{{"eventID":"huge","pad":"{}"}}"#, "x".repeat(400_000));
        let body = file(&[record("a"), record("b"), huge, record("c")]);
        let limits = ReadLimits { record_bytes: 100_000, ..ReadLimits::default() };
        let (outcome, events, _) = read_with(&limits, &body);
        assert_eq!((outcome.status, events.len()), (FileStatus::Failed, 2));
        let error = outcome.error.unwrap();
        assert!(error.contains("a record larger than 100000 bytes (the limit per record); the 2 records before it were read, 2 kept as events"), "{error}");
        assert!(outcome.bytes < 100_000 + 2 * 65_536 + 1000, "buffered {} bytes", outcome.bytes);
        // Records up to the limit are read whole.
        let limits = ReadLimits { record_bytes: 400_100, ..ReadLimits::default() };
        let (outcome, events, _) = read_with(&limits, &body);
        assert_eq!((outcome.status, events.len(), outcome.rejected.len()), (FileStatus::Partial, 3, 1));
    }

    #[test]
    fn rejected_records_are_bounded_in_number_and_kept_text() {
        let bad = |i: usize| format!(r#"{{"eventID":"bad{i}","eventTime":"2024-01-15T12:01:00Z","pad":"{}"}}"#, "y".repeat(1000));
        let mut records = vec![record("good")];
        records.extend((0..6).map(bad));
        let limits = ReadLimits { rejected_records: 4, rejected_bytes: 2500, ..ReadLimits::default() };
        let (outcome, events, _) = read_with(&limits, &file(&records));
        assert_eq!((outcome.status, events.len(), outcome.rejected.len()), (FileStatus::Failed, 1, 4));
        let kept: Vec<usize> = outcome.rejected.iter().map(|r| r.raw.len()).collect();
        assert_eq!(kept, vec![1062, 1062, 376, 0], "the text kept stops at the budget; the errors are all kept");
        assert_eq!(outcome.rejected[3].error.event_id.as_deref(), Some("bad3"));
        let error = outcome.error.unwrap();
        assert!(
            error.starts_with(&format!("{KEY}: more than 4 records rejected (the limit per file), the rest is not read; 1 events before record 5 were kept")),
            "{error}"
        );
    }

    #[test]
    fn nesting_is_measured_outside_strings() {
        let deep = |n: usize| format!("{{\"a\":{}1{}}}", "[".repeat(n), "]".repeat(n));
        assert!(!nests_deeper(deep(99).as_bytes(), 100));
        assert!(nests_deeper(deep(100).as_bytes(), 100));
        let quoted = format!(r#"{{"s":"{}","t":"\"{}"}}"#, "[".repeat(300), "{".repeat(300));
        assert!(!nests_deeper(quoted.as_bytes(), 100), "brackets inside strings do not nest");
        let wide = format!("{{\"a\":[{}]}}", vec!["{}"; 500].join(","));
        assert!(!nests_deeper(wide.as_bytes(), 100), "many brackets side by side are not deep");
    }

    #[test]
    fn an_unparsable_record_is_named_by_its_event_id_when_it_shows_one() {
        assert_eq!(event_id_of(br#"{"a":1, "eventID" : "e-7","x":"#).as_deref(), Some("e-7"));
        assert_eq!(event_id_of(br#"{"eventID":7}"#), None);
        assert_eq!(event_id_of(br#"{"eventID":""}"#), None);
        let (outcome, events, _) = read(format!("{{\"Records\":[{},{{\"eventID\":\"bad\",\"x\":tru}}]}}", record("a")).as_bytes());
        assert_eq!((outcome.status, events.len()), (FileStatus::Partial, 1));
        assert!(outcome.rejected[0].error.to_string().starts_with("record 1 (eventID bad): invalid record JSON"), "{}", outcome.rejected[0].error);
    }
}
