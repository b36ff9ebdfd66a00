//! AWS mode: the collector, enricher and API as separate services over S3,
//! SQS, DynamoDB, Athena, SNS and Organizations, plus `backfill` and
//! `aws-setup`. The adapters live in `trailwatch-aws`; this module wires
//! them to the services, as `pipeline.rs` does for the embedded mode.

pub mod api;
pub mod args;
pub mod backfill;
pub mod collector;
pub mod enricher;
pub mod metrics;
pub mod onboarding;
pub mod setup;

use std::sync::Arc;

use anyhow::Context;
use tracing::info;

use trailwatch_aws::athena::{Athena, AthenaSettings};
use trailwatch_aws::clients::{AssumeRole, AwsSettings, ClientLimits, Clients};
use trailwatch_aws::dynamo::TableNames;
use trailwatch_aws::sqs::url_of;

use args::AwsOptions;

/// The shared options, checked.
pub struct Settings {
    pub aws: AwsSettings,
    pub tables: TableNames,
    pub options: AwsOptions,
}

impl Settings {
    pub fn from_options(options: &AwsOptions) -> anyhow::Result<Settings> {
        let organizations_role = options.organizations_role_arn.as_ref().map(|arn| AssumeRole {
            role_arn: arn.clone(),
            external_id: options.organizations_external_id.as_ref().map(|s| s.expose().to_owned()),
            session_name: "trailwatch-organizations".to_owned(),
        });
        if options.organizations_external_id.is_some() && organizations_role.is_none() {
            anyhow::bail!("--organizations-external-id needs --organizations-role-arn (TRAILWATCH_ORGANIZATIONS_ROLE_ARN)");
        }
        if !options.table_prefix.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) || options.table_prefix.is_empty() {
            anyhow::bail!("--table-prefix {:?}: use letters, digits, '-', '_' and '.' only", options.table_prefix);
        }
        for (flag, value) in [
            ("--athena-database", &options.athena_database),
            ("--athena-trail-table", &options.athena_trail_table),
            ("--athena-events-table", &options.athena_events_table),
        ] {
            if value.is_empty() || !value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
                anyhow::bail!("{flag} {value:?}: Athena names here are lower-case letters, digits and '_'");
            }
        }
        if let Some(url) = &options.endpoint_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                anyhow::bail!("--endpoint-url {url:?}: must start with http:// or https://");
            }
        }
        Ok(Settings {
            aws: AwsSettings {
                region: options.region.clone(),
                endpoint_url: options.endpoint_url.clone(),
                credentials: None,
                organizations_role,
                limits: limits(options),
            },
            tables: TableNames::with_prefix(&options.table_prefix),
            options: options.clone(),
        })
    }

    /// Builds the clients and logs who they run as (STS GetCallerIdentity).
    pub async fn connect(&self, service: &str) -> anyhow::Result<Clients> {
        let clients = Clients::connect(&self.aws).await.context("configuring the AWS clients")?;
        let me = clients.caller_identity().await.context("asking STS who these credentials are (GetCallerIdentity)")?;
        info!(service, account = %me.account, arn = %me.arn, region = clients.region().unwrap_or("-"), endpoint = self.aws.endpoint_url.as_deref().unwrap_or("AWS"), "running as");
        Ok(clients)
    }

    pub fn trail_bucket(&self) -> anyhow::Result<&str> {
        self.options.trail_bucket.as_deref().context("the trail bucket is not set: --trail-bucket (TRAILWATCH_TRAIL_BUCKET)")
    }

    pub fn history_bucket(&self) -> anyhow::Result<&str> {
        match &self.options.history_bucket {
            Some(b) => Ok(b),
            None => self.trail_bucket().context("the history bucket is not set: --history-bucket (TRAILWATCH_HISTORY_BUCKET) or --trail-bucket"),
        }
    }

    /// The Athena runner over the configured database and workgroup.
    pub fn athena(&self, clients: &Clients) -> Arc<Athena> {
        // Names were checked in `from_options`; `validate` covers the rest at first use.
        Arc::new(Athena::new(
            clients.athena.clone(),
            AthenaSettings {
                database: self.options.athena_database.clone(),
                workgroup: self.options.athena_workgroup.clone(),
                output_location: self.options.athena_output.clone(),
                max_bytes_scanned: self.options.athena_max_bytes,
                poll_initial: std::time::Duration::from_millis(200),
                poll_max: std::time::Duration::from_secs(5),
                timeout: std::time::Duration::from_secs(self.options.athena_timeout.max(1)),
            },
        ))
    }
}

/// The AWS clients' timeouts and retries from the options (zero: the default).
fn limits(options: &AwsOptions) -> ClientLimits {
    let default = ClientLimits::default();
    let attempt = if options.aws_attempt_timeout == 0 { default.attempt } else { std::time::Duration::from_secs(options.aws_attempt_timeout) };
    let max_attempts = if options.aws_max_attempts == 0 { default.max_attempts } else { options.aws_max_attempts };
    // Every attempt may use its whole time, with backoffs between them.
    let operation = attempt * max_attempts + std::time::Duration::from_secs(60);
    ClientLimits { attempt, operation, max_attempts, ..default }
}

/// A queue's URL from a URL or a name.
pub async fn queue_url(clients: &Clients, value: Option<&str>, flag: &str, env: &str) -> anyhow::Result<String> {
    let value = value.with_context(|| format!("{flag} ({env}) is not set"))?;
    if value.starts_with("https://") || value.starts_with("http://") {
        return Ok(value.to_owned());
    }
    url_of(&clients.sqs, value).await.with_context(|| format!("{flag} {value}: finding the queue"))
}

/// How long past its credentials' expiration a session is kept (TTL margin):
/// late log files still resolve through it.
pub const SESSION_MARGIN_MS: i64 = 24 * 3600 * 1000;

/// What the collector (and `backfill`) hands the enricher: one file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileMessage {
    pub bucket: String,
    pub key: String,
    pub size: u64,
    /// Last-modified time, epoch milliseconds (with the size, what the ledger compares).
    pub modified: i64,
}

/// One long-polling receive for a service loop: None on shutdown; on an error,
/// waits (doubling per failure in a row, up to 12.8 s) and gives no messages.
pub async fn receive(
    queue: &trailwatch_aws::sqs::Queue,
    max: i32,
    wait: std::time::Duration,
    visibility: std::time::Duration,
    failures: &mut u32,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Option<Vec<trailwatch_aws::sqs::Received>> {
    let received = tokio::select! {
        _ = shutdown.cancelled() => return None,
        r = queue.receive(max, wait, visibility) => r,
    };
    match received {
        Ok(messages) => {
            *failures = 0;
            Some(messages)
        }
        Err(e) => {
            *failures += 1;
            let pause = std::time::Duration::from_millis(200 * 2u64.pow((*failures).min(6)));
            tracing::warn!(queue = %queue.url(), error = %e, retry_in_ms = pause.as_millis() as u64, "receiving messages failed");
            tokio::time::sleep(pause).await;
            Some(Vec::new())
        }
    }
}
