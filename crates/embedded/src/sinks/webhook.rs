//! An HTTP POST per transition.
//!
//! The body is the JSON record (generic) or a PagerDuty Events API v2 event;
//! every request carries `Idempotency-Key: <alert id>:<revision>`. A 2xx
//! answer is delivered; 408, 429, 5xx, a timeout or a connection that fails
//! are retryable; any other answer (4xx, or a redirect, which is not
//! followed) is permanent, with the status and the first 200 bytes of the
//! answer's body in the error. The worker retries both, later.
//!
//! Webhook URLs often carry their credential (chat webhooks put it in the
//! path), so the URL, the routing key and extra header values are secrets:
//! messages name the sink by its name and the URL's scheme, host and port.

use std::error::Error as _;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::{Client, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use trailwatch_core::alerts::{AlertSink, Delivery};
use trailwatch_core::ports::PortError;

use super::{one_line, pagerduty, record_json, to_json};

/// Where PagerDuty takes Events API v2 events.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// Bytes of an error answer's body kept in the error message.
const BODY_SNIPPET_BYTES: usize = 200;

/// What the request body is.
#[derive(Debug, Clone)]
pub enum WebhookFormat {
    /// The [`TransitionRecord`](super::TransitionRecord): `{ dedupKey, transition, alert }`.
    Generic,
    /// A PagerDuty Events API v2 event for the integration with this routing key.
    PagerDuty { routing_key: SecretString },
}

/// A webhook's settings.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The name deliveries are queued under.
    pub name: String,
    /// `http` or `https`.
    pub url: SecretString,
    pub format: WebhookFormat,
    /// Sent with every request (`Authorization`, …); values are secrets.
    pub headers: Vec<(String, SecretString)>,
    /// For the whole request: connecting, sending, and reading the answer.
    pub timeout: Duration,
}

impl WebhookConfig {
    /// A generic webhook with no extra headers and a 10 s timeout.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        WebhookConfig {
            name: name.into(),
            url: SecretString::from(url.into()),
            format: WebhookFormat::Generic,
            headers: Vec::new(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Posts each transition to a URL.
pub struct WebhookSink {
    name: String,
    /// For messages: `webhook <name> (https://host:port)`.
    what: String,
    url: Url,
    format: WebhookFormat,
    headers: HeaderMap,
    client: Client,
}

impl WebhookSink {
    /// Checks the URL and headers and builds the HTTP client (TLS with the
    /// platform's trusted roots).
    pub fn new(config: WebhookConfig) -> Result<Self, PortError> {
        let invalid = |message: String| PortError::Invalid { what: format!("webhook {}", config.name), message };
        let url = Url::parse(config.url.expose_secret()).map_err(|e| invalid(format!("the URL is not valid: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(invalid(format!("the URL must be http or https with a host, not {}", url.scheme())));
        }
        let what = format!("webhook {} ({})", config.name, url.origin().ascii_serialization());
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid(format!("{name:?} is not a header name")))?;
            let mut value = HeaderValue::from_str(value.expose_secret()).map_err(|_| invalid(format!("the value of header {name} is not valid")))?;
            value.set_sensitive(true);
            headers.append(header, value);
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let client = Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("trailwatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| invalid(format!("the HTTP client cannot be built: {}", chain(&e))))?;
        Ok(WebhookSink { name: config.name, what, url, format: config.format, headers, client })
    }

    /// The request body for a delivery.
    pub fn body(&self, delivery: &Delivery) -> Result<Vec<u8>, PortError> {
        match &self.format {
            WebhookFormat::Generic => record_json(delivery, &self.what),
            WebhookFormat::PagerDuty { routing_key } => to_json(&pagerduty::event(delivery, routing_key.expose_secret()), delivery, &self.what),
        }
    }
}

impl std::fmt::Debug for WebhookSink {
    // The URL may hold a credential: only `what` (scheme, host, port) is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSink").field("name", &self.name).field("what", &self.what).field("format", &self.format).finish_non_exhaustive()
    }
}

/// What an HTTP status means for a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    Delivered,
    Retryable,
    Permanent,
}

pub(crate) fn classify(status: StatusCode) -> Answer {
    match status.as_u16() {
        200..=299 => Answer::Delivered,
        408 | 429 | 500..=599 => Answer::Retryable,
        _ => Answer::Permanent,
    }
}

/// An error with its causes (`error sending request: connection refused`).
fn chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

/// The first bytes of an answer's body, on one line.
async fn snippet(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < BODY_SNIPPET_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(BODY_SNIPPET_BYTES);
    one_line(&String::from_utf8_lossy(&body)).trim().to_owned()
}

#[async_trait]
impl AlertSink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, delivery: &Delivery) -> Result<(), PortError> {
        let key = delivery.dedup_key();
        let body = self.body(delivery)?;
        let mut headers = self.headers.clone();
        match HeaderValue::from_str(&key) {
            Ok(value) => {
                headers.insert("idempotency-key", value);
            }
            Err(_) => return Err(PortError::Invalid { what: self.what.clone(), message: format!("alert {key}: its id cannot be sent in a header") }),
        }
        let sent = self.client.post(self.url.clone()).headers(headers).body(body).send().await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                let e = e.without_url();
                // A request that cannot even be built will not build next time.
                let retryable = !e.is_builder();
                return Err(PortError::backend(self.what.clone(), format!("alert {key}: {}", chain(&e)), retryable));
            }
        };
        let status = response.status();
        match classify(status) {
            Answer::Delivered => Ok(()),
            answer => {
                let body = snippet(response).await;
                let retryable = answer == Answer::Retryable;
                let verdict = if retryable { "failed" } else { "was rejected" };
                Err(PortError::backend(self.what.clone(), format!("alert {key} {verdict} with HTTP {status}: {body}"), retryable))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_delivered_retryable_or_permanent() {
        let of = |code: u16| classify(StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT));
        for code in [200, 201, 202, 204] {
            assert_eq!(of(code), Answer::Delivered, "{code}");
        }
        for code in [408, 429, 500, 502, 503, 504] {
            assert_eq!(of(code), Answer::Retryable, "{code}");
        }
        for code in [301, 302, 400, 401, 403, 404, 410, 413, 422] {
            assert_eq!(of(code), Answer::Permanent, "{code}");
        }
    }

    #[test]
    fn the_url_and_header_values_are_kept_out_of_messages() {
        let mut config = WebhookConfig::new("chat", "https://hooks.example.com/services/T0/B0/secret-token?x=1");
        config.headers.push(("Authorization".into(), SecretString::from("Bearer hunter2".to_owned())));
        let printed = format!("{config:?}");
        assert!(!printed.contains("secret-token") && !printed.contains("hunter2"), "{printed}");
        let sink = WebhookSink::new(config).expect("valid");
        assert_eq!(sink.what, "webhook chat (https://hooks.example.com)");
        let printed = format!("{sink:?}");
        assert!(!printed.contains("secret-token") && !printed.contains("hunter2"), "{printed}");
    }

    #[test]
    fn bad_settings_are_refused_at_start() {
        assert!(WebhookSink::new(WebhookConfig::new("w", "not a url")).is_err());
        assert!(WebhookSink::new(WebhookConfig::new("w", "ftp://example.com/x")).is_err());
        let mut config = WebhookConfig::new("w", "http://127.0.0.1:9/x");
        config.headers.push(("bad header".into(), SecretString::from("v".to_owned())));
        assert!(WebhookSink::new(config).is_err());
    }
}
