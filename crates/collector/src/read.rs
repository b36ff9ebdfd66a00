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

/// Events per chunk sent to the enricher.
pub const CHUNK_EVENTS: usize = 1000;

/// The receiving side went away (shutdown); the file was not finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abandoned;

/// Validates one record into an event, and captures the session it issued,
/// if any (the time that takes is added to `capturing`).
fn accept(index: usize, bytes: &[u8], key_account: &str, sessions: &mut Vec<Session>, capturing: &Cell<Duration>) -> Result<Event, RecordError> {
    let view = RecordView::parse(bytes).map_err(|e| RecordError { index, event_id: None, reason: format!("invalid record JSON: {e}") })?;
    let event = Event::from_view(index, bytes, &view, key_account)?;
    let started = Instant::now();
    if let Some(session) = capture(&view, key_account) {
        sessions.push(session);
    }
    capturing.set(capturing.get() + started.elapsed());
    Ok(event)
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
    let result = read_timed(key, trail_key, meta, body, send, &spent);
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
    let mut reader = RecordReader::new(Timed { inner: decoded, spent: &spent.gunzip });
    let mut chunk = Chunk { events: Vec::with_capacity(CHUNK_EVENTS), sessions: Vec::new() };
    let error = loop {
        match reader.next_record() {
            Ok(Some(record)) => match accept(record.index, record.bytes, &trail_key.account_id, &mut chunk.sessions, &spent.capturing) {
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
                    let keep = record.bytes.len().min(REJECT_KEEP_BYTES);
                    outcome.rejected.push(RejectedRecord { error, raw: String::from_utf8_lossy(&record.bytes[..keep]).into_owned() });
                }
            },
            Ok(None) => break None,
            Err(e) => break Some(e),
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
    outcome.error = match error {
        Some(ReadError::Truncated { offset }) if records > 0 => {
            Some(format!("the data ends unexpectedly at byte {offset} after {records} records (truncated file); the records before it were kept"))
        }
        Some(e) => Some(e.to_string()),
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
        let key: Arc<str> = KEY.into();
        let meta = ObjectMeta { key: KEY.into(), size: bytes.len() as u64, modified: 0 };
        let mut events = Vec::new();
        let mut chunks = 0;
        let (outcome, _) = read_object(
            &key,
            &classify(KEY).unwrap(),
            &meta,
            bytes,
            &mut |chunk| {
                chunks += 1;
                events.extend(chunk.events);
                true
            },
            &StageTimes::default(),
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
}
