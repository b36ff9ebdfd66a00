//! What the pipeline carries from the collector to the stores: validated
//! events with their indexed fields and their original bytes, and the outcome
//! of each file.

use std::fmt;

use crate::identity::{Caller, Origin};
use crate::layout::ObjectKind;
use crate::time::{parse_utc, EpochMillis};
use crate::view::RecordView;

/// A record accepted for history: the fields the stores index, and the
/// record's original JSON, byte for byte.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `recipientAccountId`, or the account of the object key when a record lacks it.
    pub account_id: String,
    pub event_id: String,
    pub event_time: EpochMillis,
    pub event_source: String,
    pub event_name: String,
    pub region: String,
    /// Who made the call (`userIdentity`), when the record names anyone.
    pub actor: Option<Caller>,
    /// `sharedEventID`: the same call logged in another account too.
    pub shared_event_id: Option<String>,
    pub source_ip: Option<String>,
    pub error_code: Option<String>,
    pub read_only: Option<bool>,
    pub raw: String,
    /// Who is really behind the event, once resolved.
    pub origin: Option<Origin>,
}

impl Event {
    pub fn identity_type(&self) -> Option<&str> {
        self.actor.as_ref().map(|a| a.identity_type.as_str())
    }

    pub fn actor_arn(&self) -> Option<&str> {
        self.actor.as_ref().and_then(|a| a.arn.as_deref())
    }

    pub fn access_key_id(&self) -> Option<&str> {
        self.actor.as_ref().and_then(|a| a.access_key_id.as_deref())
    }
}

/// Why a record was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    /// Position of the record in its file, from 0.
    pub index: usize,
    /// The record's `eventID`, when it could be read.
    pub event_id: Option<String>,
    pub reason: String,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.event_id {
            Some(id) => write!(f, "record {} (eventID {id}): {}", self.index, self.reason),
            None => write!(f, "record {}: {}", self.index, self.reason),
        }
    }
}

fn required<'v>(field: Option<&'v str>, name: &str) -> Result<&'v str, String> {
    match field {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(format!("missing field `{name}`")),
    }
}

impl Event {
    /// Validates one record's bytes. `key_account` is the account of the
    /// object the record came from, used when `recipientAccountId` is absent
    /// (records of old event versions).
    pub fn from_record(index: usize, bytes: &[u8], key_account: &str) -> Result<Event, RecordError> {
        let view = RecordView::parse(bytes).map_err(|e| RecordError { index, event_id: None, reason: format!("invalid record JSON: {e}") })?;
        Self::from_view(index, bytes, &view, key_account)
    }

    /// Builds the event from a view already parsed from `bytes`.
    pub fn from_view(index: usize, bytes: &[u8], view: &RecordView<'_>, key_account: &str) -> Result<Event, RecordError> {
        let event_id = view.event_id.as_deref().filter(|s| !s.is_empty());
        let fail = |reason: String| RecordError { index, event_id: event_id.map(str::to_owned), reason };
        let event_id = event_id.ok_or_else(|| fail("missing field `eventID`".into()))?;
        let time_text = required(view.event_time.as_deref().or(view.export_timestamp.as_deref()), "eventTime").map_err(fail)?;
        let event_time = parse_utc(time_text).map_err(|e| fail(format!("field `eventTime`: {e}")))?;
        // Insights events name the API they are about only inside `insightDetails`.
        let insight = view.insight_details.as_ref();
        let event_source = required(view.event_source.as_deref().or(insight.and_then(|i| i.event_source.as_deref())), "eventSource").map_err(fail)?;
        let event_name = required(view.event_name.as_deref().or(insight.and_then(|i| i.event_name.as_deref())), "eventName").map_err(fail)?;
        let account_id = view.recipient_account_id.as_deref().filter(|s| !s.is_empty()).unwrap_or(key_account);
        let raw = std::str::from_utf8(bytes).map_err(|e| fail(format!("record is not UTF-8: {e}")))?;
        let identity = view.user_identity.as_ref();
        Ok(Event {
            account_id: account_id.to_owned(),
            event_id: event_id.to_owned(),
            event_time,
            event_source: event_source.to_owned(),
            event_name: event_name.to_owned(),
            region: view.aws_region.as_deref().unwrap_or_default().to_owned(),
            actor: identity.map(Caller::from_view),
            shared_event_id: view.shared_event_id.as_deref().map(str::to_owned),
            source_ip: view.source_ip_address.as_deref().map(str::to_owned),
            error_code: view.error_code.as_deref().map(str::to_owned),
            read_only: view.read_only,
            raw: raw.to_owned(),
            origin: None,
        })
    }
}

/// How a file ended up, as the ledger records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileStatus {
    /// Every record accepted.
    Done,
    /// Read to the end, but some records were rejected (kept for inspection).
    Partial,
    /// A valid file with no records.
    Empty,
    /// The file could not be read to its end: retried on the next ingest.
    Failed,
    /// A digest file: recorded, not parsed as events.
    Digest,
}

impl FileStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FileStatus::Done => "done",
            FileStatus::Partial => "partial",
            FileStatus::Empty => "empty",
            FileStatus::Failed => "failed",
            FileStatus::Digest => "digest",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "done" => FileStatus::Done,
            "partial" => FileStatus::Partial,
            "empty" => FileStatus::Empty,
            "failed" => FileStatus::Failed,
            "digest" => FileStatus::Digest,
            _ => return None,
        })
    }

    /// Whether the file needs no more work.
    pub fn is_final(self) -> bool {
        !matches!(self, FileStatus::Failed)
    }
}

impl fmt::Display for FileStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One file's result, written to the ledger after its events are stored.
#[derive(Debug, Clone, PartialEq)]
pub struct FileOutcome {
    pub key: String,
    pub kind: ObjectKind,
    pub account_id: String,
    pub region: String,
    /// Size and modification time of the object as listed, so a changed object is read again.
    pub size: u64,
    pub modified: EpochMillis,
    pub status: FileStatus,
    /// Records accepted.
    pub events: u64,
    /// Decompressed bytes read.
    pub bytes: u64,
    pub rejected: Vec<RejectedRecord>,
    /// Why the file failed or is empty.
    pub error: Option<String>,
}

/// A record that was not accepted, kept with its bytes so nothing is lost.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedRecord {
    pub error: RecordError,
    /// The record's bytes (lossily decoded when not UTF-8), cut at [`REJECT_KEEP_BYTES`].
    pub raw: String,
}

/// How much of a rejected record is kept.
pub const REJECT_KEEP_BYTES: usize = 256 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_complete_record() {
        let raw = br#"{"eventVersion":"1.08","userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::111122223333:user/alice","accessKeyId":"AKIAEXAMPLE"},"eventTime":"2024-01-15T12:00:00Z","eventSource":"s3.amazonaws.com","eventName":"ListBuckets","awsRegion":"us-east-1","sourceIPAddress":"198.51.100.7","eventID":"e1","readOnly":true,"recipientAccountId":"111122223333"}"#;
        let e = Event::from_record(0, raw, "999999999999").unwrap();
        assert_eq!(e.account_id, "111122223333");
        assert_eq!(e.actor_arn(), Some("arn:aws:iam::111122223333:user/alice"));
        assert_eq!(e.read_only, Some(true));
        assert_eq!(e.raw.as_bytes(), raw);
    }

    #[test]
    fn names_the_missing_field_and_event() {
        let err =
            Event::from_record(3, br#"{"eventID":"e9","eventTime":"2024-01-15T12:00:00Z","eventSource":"s3.amazonaws.com"}"#, "111122223333").unwrap_err();
        assert_eq!(err.to_string(), "record 3 (eventID e9): missing field `eventName`");
        let err = Event::from_record(0, br#"{"eventTime":"2024-01-15T12:00:00Z"}"#, "111122223333").unwrap_err();
        assert_eq!(err.to_string(), "record 0: missing field `eventID`");
        let err = Event::from_record(1, br#"{"eventID":"e1","eventTime":"yesterday","eventSource":"a","eventName":"b"}"#, "111122223333").unwrap_err();
        assert!(err.reason.starts_with("field `eventTime`: not a UTC timestamp"), "{err}");
    }

    #[test]
    fn reads_insights_events_and_exported_records() {
        let insight = br#"{"eventVersion":"1.08","eventTime":"2024-03-13T07:05:00Z","awsRegion":"eu-west-1","eventID":"i1","eventType":"AwsCloudTrailInsight","insightDetails":{"state":"Start","eventSource":"ec2.amazonaws.com","eventName":"RunInstances"}}"#;
        let e = Event::from_record(0, insight, "963852741036").unwrap();
        assert_eq!((e.event_source.as_str(), e.event_name.as_str(), e.identity_type()), ("ec2.amazonaws.com", "RunInstances", None));
        let exported = br#"{"@timestamp":"2020-09-14T00:44:23.000Z","eventID":"x1","eventSource":"s3.amazonaws.com","eventName":"ListBuckets"}"#;
        assert_eq!(Event::from_record(0, exported, "111122223333").unwrap().event_time, parse_utc("2020-09-14T00:44:23Z").unwrap());
    }

    #[test]
    fn falls_back_to_the_key_account() {
        let e = Event::from_record(
            0,
            br#"{"eventID":"e1","eventTime":"2014-01-15T12:00:00Z","eventSource":"ec2.amazonaws.com","eventName":"DescribeInstances"}"#,
            "111122223333",
        )
        .unwrap();
        assert_eq!(e.account_id, "111122223333");
    }
}

/// What the collector hands the enricher in process: a file's events in
/// chunks, in order, then the file's outcome. Chunks keep memory flat
/// however large a file is; the outcome comes last so the ledger records a
/// file only after all of its events are stored.
#[derive(Debug)]
pub enum FileBatch {
    /// Events of a file, and the sessions its credential-issuing records issued.
    Events {
        key: std::sync::Arc<str>,
        events: Vec<Event>,
        sessions: Vec<crate::identity::Session>,
    },
    Finished(FileOutcome),
}
