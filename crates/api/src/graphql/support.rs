//! What every resolver uses: the `DateTime` scalar, opaque cursors, page
//! sizes, and errors that say what went wrong without saying how.

use async_graphql::{ErrorExtensions, InputValueError, InputValueResult, Scalar, ScalarType, Value};
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Serialize;
use trailwatch_core::time::{format_utc, parse_utc, EpochMillis};
use trailwatch_core::PortError;

/// A point in time: RFC 3339 in UTC (`2024-01-15T12:05:31Z`, fractions and
/// `+00:00` accepted), milliseconds shown when there are any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DateTime(pub EpochMillis);

#[Scalar(name = "DateTime")]
impl ScalarType for DateTime {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => {
                parse_utc(s).map(DateTime).map_err(|_| InputValueError::custom(format!("{s:?} is not an RFC 3339 UTC time like 2024-01-15T12:05:31Z")))
            }
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(format_time(self.0))
    }
}

/// `2024-01-15T12:05:31Z`, or `2024-01-15T12:05:31.250Z`.
pub fn format_time(ms: EpochMillis) -> String {
    let whole = format_utc(ms);
    match ms.rem_euclid(1000) {
        0 => whole,
        frac => format!("{}.{frac:03}Z", whole.trim_end_matches('Z')),
    }
}

/// The largest page a connection returns.
pub const MAX_PAGE: usize = 200;
/// The page size when `first` is not given.
pub const DEFAULT_PAGE: usize = 50;

/// `first`, checked against [`MAX_PAGE`].
pub fn page_size(first: Option<i32>) -> async_graphql::Result<usize> {
    match first {
        None => Ok(DEFAULT_PAGE),
        Some(n) if n >= 0 && n as usize <= MAX_PAGE => Ok(n as usize),
        Some(n) => Err(bad_input(format!("first must be between 0 and {MAX_PAGE} (was {n})"))),
    }
}

/// Encodes a position as an opaque cursor.
pub fn encode_cursor<T: Serialize>(position: &T) -> String {
    // Serializing our own plain types cannot fail; an empty cursor would only restart paging.
    let json = serde_json::to_vec(position).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

/// Decodes a cursor made by [`encode_cursor`].
pub fn decode_cursor<T: DeserializeOwned>(cursor: &str) -> async_graphql::Result<T> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor.trim())
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| bad_input("after is not a cursor from this listing"))
}

/// An error in what the client asked (code `BAD_USER_INPUT`).
pub fn bad_input(message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message.into()).extend_with(|_, e| e.set("code", "BAD_USER_INPUT"))
}

/// An id that ties an error the client sees to the server's log line about it.
pub fn correlation_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut bytes = [0u8; 8];
    if getrandom::getrandom(&mut bytes).is_err() {
        // Unique within the process all the same.
        bytes = (NEXT.fetch_add(1, Ordering::Relaxed) ^ crate::now_ms() as u64).to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A port error as the client sees it. Its text comes from the store (SQL,
/// paths, table names, SDK dumps) and never reaches the client: it is logged
/// here with a correlation id, and the client gets what it was doing, a code
/// (`NOT_FOUND`, `BAD_USER_INPUT`, `UNAVAILABLE` when retrying may help,
/// else `INTERNAL`) and the id (`correlationId`) to quote.
pub fn port_error(doing: &str, err: &PortError) -> async_graphql::Error {
    let id = correlation_id();
    let (message, code) = match err {
        PortError::NotFound { .. } => {
            tracing::debug!(doing, error_id = %id, "api.not_found: {err}");
            (format!("{doing}: not found"), "NOT_FOUND")
        }
        PortError::Invalid { .. } => {
            tracing::warn!(doing, error_id = %id, "api.store_refused: {err}");
            (format!("the store refused the request while {doing}; the error is logged with id {id}"), "BAD_USER_INPUT")
        }
        PortError::Backend { retryable, .. } => {
            tracing::error!(doing, error_id = %id, retryable, "api.store_error: {err}");
            let code = if *retryable { "UNAVAILABLE" } else { "INTERNAL" };
            (format!("the store failed while {doing}; the error is logged with id {id}"), code)
        }
    };
    async_graphql::Error::new(message).extend_with(move |_, e| {
        e.set("code", code);
        e.set("correlationId", id.as_str());
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_show_millis_only_when_there_are_some() {
        assert_eq!(format_time(1_705_320_331_000), "2024-01-15T12:05:31Z");
        assert_eq!(format_time(1_705_320_331_250), "2024-01-15T12:05:31.250Z");
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = encode_cursor(&(5i64, "a"));
        assert_eq!(decode_cursor::<(i64, String)>(&c).unwrap(), (5, "a".to_owned()));
        assert!(decode_cursor::<(i64, String)>("not a cursor!").is_err());
    }

    #[test]
    fn store_errors_do_not_leak() {
        let errors = [
            PortError::backend("sqlite /var/lib/tw.db", "SELECT * FROM alerts: disk I/O error", false),
            PortError::Invalid { what: "dynamodb table tw-alerts".into(), message: "ValidationException: SELECT * FROM alerts".into() },
            PortError::NotFound { what: "outstanding delivery 7 in /var/lib/tw.db".into() },
        ];
        for e in &errors {
            let err = port_error("listing alerts", e);
            assert!(!["sqlite", "SELECT", "/var/lib", "dynamodb", "delivery 7"].iter().any(|s| err.message.contains(s)), "{}", err.message);
            assert!(err.message.starts_with("listing alerts") || err.message.contains("while listing alerts"), "{}", err.message);
        }
        assert_ne!(correlation_id(), correlation_id());
        assert_eq!(correlation_id().len(), 16);
    }
}
