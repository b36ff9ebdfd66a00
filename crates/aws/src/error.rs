//! SDK errors as port errors: retryable or permanent.
//!
//! Retryable: throttling (`SlowDown`, `ThrottlingException`,
//! `ProvisionedThroughputExceededException`, `RequestLimitExceeded`, …),
//! server errors (HTTP 5xx), timeouts, dispatch failures (connection refused
//! or reset) and responses that could not be read. Permanent: everything
//! else the service answered (access denied, validation, missing resources),
//! and requests that could not be built.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use trailwatch_core::ports::PortError;

pub type AwsResult<T> = Result<T, PortError>;

/// Error codes that mean "slow down and try again".
const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "TransactionConflictException",
    "Throttled",
    "KMSThrottling",
    "KMSThrottlingException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "InternalServerException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// Whether an error code names a condition that passes.
pub fn is_retryable_code(code: &str) -> bool {
    THROTTLING.contains(&code)
}

/// Maps an SDK error of `operation` (e.g. `s3:GetObject`) into a [`PortError`].
pub fn classify<E>(operation: &str, error: SdkError<E, HttpResponse>) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &error {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let err = service.err();
            let code = err.code().unwrap_or("Unknown");
            let message = err.message().unwrap_or("");
            let retryable = is_retryable_code(code) || status >= 500 || status == 429;
            let text = if message.is_empty() { code.to_owned() } else { format!("{code}: {message}") };
            match code {
                "NoSuchKey" | "NoSuchBucket" | "ResourceNotFoundException" | "QueueDoesNotExist" | "AWS.SimpleQueueService.NonExistentQueue" | "NotFound" => {
                    PortError::NotFound { what: format!("{operation}: {text}") }
                }
                _ => PortError::backend(operation, text, retryable),
            }
        }
        SdkError::TimeoutError(_) => PortError::backend(operation, "timed out", true),
        SdkError::DispatchFailure(failure) => {
            // Connection refused/reset, DNS, TLS: the request never got an answer.
            let detail = if failure.is_io() {
                "connection failed"
            } else if failure.is_timeout() {
                "timed out connecting"
            } else {
                "request could not be sent"
            };
            PortError::backend(operation, format!("{detail}: {}", source_chain(&error)), !failure.is_user())
        }
        SdkError::ResponseError(_) => PortError::backend(operation, format!("unreadable response: {}", source_chain(&error)), true),
        SdkError::ConstructionFailure(_) => PortError::Invalid { what: operation.to_owned(), message: source_chain(&error) },
        _ => PortError::backend(operation, source_chain(&error), false),
    }
}

/// A request that could not be made or an answer that makes no sense: not retryable.
pub fn invalid(operation: &str, message: impl ToString) -> PortError {
    PortError::Invalid { what: operation.to_owned(), message: message.to_string() }
}

/// The error and its sources, joined: SDK errors say little at the top.
pub fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_server_codes_are_retryable() {
        for code in ["SlowDown", "ProvisionedThroughputExceededException", "ThrottlingException", "InternalServerError"] {
            assert!(is_retryable_code(code), "{code}");
        }
        for code in ["AccessDenied", "ValidationException", "ConditionalCheckFailedException", "InvalidRequestException"] {
            assert!(!is_retryable_code(code), "{code}");
        }
    }
}
