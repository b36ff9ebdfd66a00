//! SDK clients, built in one place.
//!
//! [`AwsSettings`] is what every service is configured with: the region, an
//! optional endpoint override (a local emulator; S3 then uses path-style
//! addressing), and an optional role to assume for Organizations reads (the
//! management or delegated-administrator account, with an external id).
//! Credentials come from the default chain (environment, profile, SSO, web
//! identity, ECS task role, instance profile).
//!
//! Every client gets the same [`ClientLimits`], so that a stalled request
//! cannot hang a service: a connect timeout, a timeout per attempt (an SQS
//! long poll gets its wait on top, see [`crate::sqs::Queue::receive`]) and
//! one for the whole call with its retries; and the SDK's standard retry
//! mode: up to `max_attempts` tries of a throttled, failed (5xx), reset or
//! timed-out request, each after an exponential backoff with full jitter,
//! drawn from a retry quota that empties while a service keeps failing (so
//! a long outage costs no retry storm: the calls fail fast, and the
//! services' own retries, the enricher's `with_retries` and SQS redelivery,
//! take over). [`ApiCalls`] counts every attempt, every retry and every
//! failed attempt by kind, for `/metrics`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use aws_sdk_s3::config::ConfigBag;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use std::time::Duration;

use crate::error::{classify, AwsResult};

/// A role to assume for some calls (Organizations reads).
#[derive(Clone, PartialEq, Eq)]
pub struct AssumeRole {
    pub role_arn: String,
    /// Required by roles that guard against the confused deputy.
    pub external_id: Option<String>,
    pub session_name: String,
}

impl fmt::Debug for AssumeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The external id is a shared secret of sorts: never in logs.
        f.debug_struct("AssumeRole")
            .field("role_arn", &self.role_arn)
            .field("external_id", &self.external_id.as_ref().map(|_| "<redacted>"))
            .field("session_name", &self.session_name)
            .finish()
    }
}

/// Where and as whom the services talk to AWS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsSettings {
    /// The region; None takes it from the environment or profile.
    pub region: Option<String>,
    /// An endpoint for every service (a local emulator such as moto).
    pub endpoint_url: Option<String>,
    /// Fixed credentials instead of the default chain (an emulator).
    pub credentials: Option<StaticCredentials>,
    /// The role the Organizations client assumes, if any.
    pub organizations_role: Option<AssumeRole>,
    /// Timeouts and retries of every request.
    pub limits: ClientLimits,
}

/// How long a request may take and how often it is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// To open a connection.
    pub connect: Duration,
    /// One attempt, from sending to the answer's headers (an SQS long poll
    /// adds its wait).
    pub attempt: Duration,
    /// One call, all its attempts and backoffs together.
    pub operation: Duration,
    /// Tries of one call, the first included (standard retry mode).
    pub max_attempts: u32,
    /// The first retry waits up to this long (full jitter), doubling per retry up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            connect: Duration::from_millis(3100),
            attempt: Duration::from_secs(30),
            operation: Duration::from_secs(120),
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(20),
        }
    }
}

impl ClientLimits {
    fn timeouts(&self) -> TimeoutConfig {
        TimeoutConfig::builder().connect_timeout(self.connect).operation_attempt_timeout(self.attempt).operation_timeout(self.operation).build()
    }

    fn retries(&self) -> RetryConfig {
        RetryConfig::standard().with_max_attempts(self.max_attempts.max(1)).with_initial_backoff(self.initial_backoff).with_max_backoff(self.max_backoff)
    }
}

/// An access key pair given directly, for emulators and tests.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl StaticCredentials {
    /// The key pair emulators accept.
    pub fn test() -> StaticCredentials {
        StaticCredentials { access_key_id: "testing".to_owned(), secret_access_key: "testing".to_owned() }
    }
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticCredentials").field("access_key_id", &self.access_key_id).field("secret_access_key", &"<redacted>").finish()
    }
}

/// Who the service runs as (STS GetCallerIdentity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity {
    pub account: String,
    pub arn: String,
    pub user_id: String,
}

/// Requests sent to AWS, by service and operation (`DynamoDB:BatchWriteItem`),
/// each attempt counted (a retry is a request AWS bills); the retries among
/// them; and the attempts that failed, by kind. Shared by every client of
/// one [`Clients`]; `/metrics` and the cost benchmark read it.
#[derive(Debug, Default, Clone)]
pub struct ApiCalls {
    counts: Arc<Mutex<Tallies>>,
}

#[derive(Debug, Default)]
struct Tallies {
    attempts: BTreeMap<String, u64>,
    retries: BTreeMap<String, u64>,
    errors: BTreeMap<(String, AttemptError), u64>,
}

/// Why an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AttemptError {
    /// The service asked to slow down (`SlowDown`, `ProvisionedThroughputExceededException`, HTTP 429, …).
    Throttling,
    /// HTTP 5xx.
    Server,
    /// Another answer with an error (HTTP 4xx: missing resources, failed conditions, validation).
    Client,
    /// No answer in time (the attempt or the connect timeout).
    Timeout,
    /// The connection failed or was reset before an answer.
    Connection,
    /// Anything else (an answer that could not be read).
    Other,
}

impl AttemptError {
    pub fn label(self) -> &'static str {
        match self {
            AttemptError::Throttling => "throttling",
            AttemptError::Server => "server_error",
            AttemptError::Client => "client_error",
            AttemptError::Timeout => "timeout",
            AttemptError::Connection => "connection",
            AttemptError::Other => "other",
        }
    }
}

impl ApiCalls {
    /// Attempts so far, by `Service:Operation`.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts.lock().map(|c| c.attempts.clone()).unwrap_or_default()
    }

    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }

    /// Attempts after the first of a call (retries), by `Service:Operation`.
    pub fn retries(&self) -> BTreeMap<String, u64> {
        self.counts.lock().map(|c| c.retries.clone()).unwrap_or_default()
    }

    /// Attempts that failed, by `Service:Operation` and why.
    pub fn errors(&self) -> BTreeMap<(String, AttemptError), u64> {
        self.counts.lock().map(|c| c.errors.clone()).unwrap_or_default()
    }

    fn count(&self, name: String, retry: bool) {
        if let Ok(mut counts) = self.counts.lock() {
            if retry {
                *counts.retries.entry(name.clone()).or_insert(0) += 1;
            }
            *counts.attempts.entry(name).or_insert(0) += 1;
        }
    }

    fn count_error(&self, name: String, kind: AttemptError) {
        if let Ok(mut counts) = self.counts.lock() {
            *counts.errors.entry((name, kind)).or_insert(0) += 1;
        }
    }
}

/// Error codes that mean "too many requests".
fn is_throttling_code(code: &str) -> bool {
    ["Throttl", "SlowDown", "TooManyRequests", "ProvisionedThroughputExceeded", "RequestLimitExceeded", "BandwidthLimitExceeded"]
        .iter()
        .any(|c| code.contains(c))
}

/// The error code of an answer's body: S3's and the query protocol's
/// `<Code>`, or the JSON protocols' `__type` (after its `#`).
fn error_code(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    if let Some(rest) = text.split("<Code>").nth(1) {
        return rest.split("</Code>").next().map(str::to_owned);
    }
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let code = value.get("__type").or_else(|| value.get("code")).and_then(serde_json::Value::as_str)?;
    Some(code.rsplit('#').next().unwrap_or(code).to_owned())
}

impl Intercept for ApiCalls {
    fn name(&self) -> &'static str {
        "trailwatch.ApiCalls"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(meta) = cfg.load::<Metadata>() {
            let retry = cfg.load::<RequestAttempts>().is_some_and(|a| a.attempts() > 1);
            self.count(format!("{}:{}", meta.service(), meta.name()), retry);
        }
        Ok(())
    }

    fn read_after_attempt(&self, context: &FinalizerInterceptorContextRef<'_>, _components: &RuntimeComponents, cfg: &mut ConfigBag) -> Result<(), BoxError> {
        let Some(Err(error)) = context.output_or_error() else { return Ok(()) };
        let kind = match context.response() {
            Some(response) => {
                let status = response.status().as_u16();
                let code = response.body().bytes().and_then(error_code);
                if status == 429 || code.as_deref().is_some_and(is_throttling_code) {
                    AttemptError::Throttling
                } else if status >= 500 {
                    AttemptError::Server
                } else if status >= 400 {
                    AttemptError::Client
                } else {
                    AttemptError::Other
                }
            }
            None if error.is_timeout_error() || error.as_connector_error().is_some_and(|c| c.is_timeout()) => AttemptError::Timeout,
            None if error.is_connector_error() => AttemptError::Connection,
            None => AttemptError::Other,
        };
        if let Some(meta) = cfg.load::<Metadata>() {
            self.count_error(format!("{}:{}", meta.service(), meta.name()), kind);
        }
        Ok(())
    }
}

/// Every SDK client the services use, sharing one configuration.
#[derive(Clone, Debug)]
pub struct Clients {
    pub config: SdkConfig,
    /// Requests sent by these clients.
    pub calls: ApiCalls,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub athena: aws_sdk_athena::Client,
    pub sns: aws_sdk_sns::Client,
    pub sts: aws_sdk_sts::Client,
    /// CloudTrail's own API (public keys of digest signatures).
    pub cloudtrail: aws_sdk_cloudtrail::Client,
    /// With the configured role's credentials when one is set.
    pub organizations: aws_sdk_organizations::Client,
}

impl Clients {
    /// Loads the shared configuration and builds every client.
    pub async fn connect(settings: &AwsSettings) -> AwsResult<Clients> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(settings.limits.timeouts()).retry_config(settings.limits.retries());
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url.clone());
        }
        if let Some(c) = &settings.credentials {
            loader = loader.credentials_provider(aws_sdk_sts::config::Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.clone(),
                None,
                None,
                "trailwatch-static",
            ));
        }
        let config = loader.load().await;
        let calls = ApiCalls::default();
        let s3_config = aws_sdk_s3::config::Builder::from(&config).force_path_style(settings.endpoint_url.is_some()).interceptor(calls.clone()).build();
        let organizations = match &settings.organizations_role {
            None => aws_sdk_organizations::Client::from_conf(aws_sdk_organizations::config::Builder::from(&config).interceptor(calls.clone()).build()),
            Some(role) => {
                let mut builder = AssumeRoleProvider::builder(role.role_arn.clone()).session_name(role.session_name.clone()).configure(&config);
                if let Some(id) = &role.external_id {
                    builder = builder.external_id(id.clone());
                }
                let provider = builder.build().await;
                let assumed = aws_sdk_organizations::config::Builder::from(&config).credentials_provider(provider).interceptor(calls.clone()).build();
                aws_sdk_organizations::Client::from_conf(assumed)
            }
        };
        Ok(Clients {
            s3: aws_sdk_s3::Client::from_conf(s3_config),
            sqs: aws_sdk_sqs::Client::from_conf(aws_sdk_sqs::config::Builder::from(&config).interceptor(calls.clone()).build()),
            dynamodb: aws_sdk_dynamodb::Client::from_conf(aws_sdk_dynamodb::config::Builder::from(&config).interceptor(calls.clone()).build()),
            athena: aws_sdk_athena::Client::from_conf(aws_sdk_athena::config::Builder::from(&config).interceptor(calls.clone()).build()),
            sns: aws_sdk_sns::Client::from_conf(aws_sdk_sns::config::Builder::from(&config).interceptor(calls.clone()).build()),
            sts: aws_sdk_sts::Client::from_conf(aws_sdk_sts::config::Builder::from(&config).interceptor(calls.clone()).build()),
            cloudtrail: aws_sdk_cloudtrail::Client::from_conf(aws_sdk_cloudtrail::config::Builder::from(&config).interceptor(calls.clone()).build()),
            organizations,
            config,
            calls,
        })
    }

    /// Who these credentials belong to; services log it at start.
    pub async fn caller_identity(&self) -> AwsResult<CallerIdentity> {
        let out = self.sts.get_caller_identity().send().await.map_err(|e| classify("sts:GetCallerIdentity", e))?;
        Ok(CallerIdentity { account: out.account.unwrap_or_default(), arn: out.arn.unwrap_or_default(), user_id: out.user_id.unwrap_or_default() })
    }

    /// The region the clients are configured for.
    pub fn region(&self) -> Option<&str> {
        self.config.region().map(Region::as_ref)
    }
}
