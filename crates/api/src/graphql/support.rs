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

/// A port error as the client sees it: not found and invalid requests say
/// so (their messages name only what the client asked for); backend
/// failures are logged here with their detail and reach the client as a
/// generic message with code `INTERNAL` (or `UNAVAILABLE` when retrying may help).
pub fn port_error(doing: &str, err: &PortError) -> async_graphql::Error {
    match err {
        PortError::NotFound { what } => async_graphql::Error::new(format!("{what}: not found")).extend_with(|_, e| e.set("code", "NOT_FOUND")),
        PortError::Invalid { what, message } => bad_input(format!("{what}: {message}")),
        PortError::Backend { what, message, retryable } => {
            tracing::error!(doing, what = %what, retryable, "api.store_error: {message}");
            let code = if *retryable { "UNAVAILABLE" } else { "INTERNAL" };
            async_graphql::Error::new(format!("the store failed while {doing}; the error is logged")).extend_with(move |_, e| e.set("code", code))
        }
    }
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
    fn backend_errors_do_not_leak() {
        let err = port_error("listing alerts", &PortError::backend("sqlite /var/lib/tw.db", "SELECT * FROM alerts: disk I/O error", false));
        assert!(!err.message.contains("sqlite") && !err.message.contains("SELECT"), "{}", err.message);
    }
}
