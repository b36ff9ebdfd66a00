//! `trailwatch api --aws`: the same GraphQL schema over the AWS stores:
//! accounts from Organizations (overrides in DynamoDB), alerts and the
//! ledger in DynamoDB, identities through the session table (and Athena),
//! history through Athena over the enriched events.
//!
//! The `alertTransitions` subscription is fed in the embedded mode only: on
//! AWS, subscribe a queue or endpoint to the alert topic instead.

use std::process::ExitCode;
use std::sync::Arc;

use async_trait::async_trait;

use trailwatch_api::{Accounts, AliasStore, ApiDeps, ApiState, Limits};
use trailwatch_aws::alerts::DynamoAlertStore;
use trailwatch_aws::dynamo::{DynamoAliases, DynamoIntegrityStore, DynamoLedger};
use trailwatch_core::alerts::lifecycle::{Lifecycle, LifecycleConfig};
use trailwatch_core::alerts::AlertStore;
use trailwatch_core::ports::PortError;

use super::enricher::{history_with, identity_parts, load_accounts};
use super::Settings;
use crate::api as server;
use crate::cli::ApiArgs;
use crate::commands::shutdown_on_signal;

/// The sink the enricher publishes to; person transitions are queued for it too.
const SNS_SINK: &str = "sns";

/// Aliases set through the API, kept in the overrides table.
struct TableAliases(DynamoAliases);

#[async_trait]
impl AliasStore for TableAliases {
    async fn save(&self, account_id: &str, alias: &str) -> Result<(), PortError> {
        self.0.set(account_id, Some(alias)).await
    }
}

pub async fn run(args: ApiArgs) -> anyhow::Result<ExitCode> {
    let settings = Arc::new(Settings::from_options(&args.aws_options)?);
    let clients = settings.connect("api").await?;
    let shutdown = shutdown_on_signal();
    let directory = load_accounts(&clients, &settings, !args.no_organizations).await?;
    let alerts: Arc<dyn AlertStore> = Arc::new(DynamoAlertStore::new(clients.dynamodb.clone(), settings.tables.alerts.clone()));
    let accounts = Arc::new(Accounts::new(directory, Box::new(TableAliases(DynamoAliases::new(clients.dynamodb.clone(), settings.tables.aliases.clone())))));
    // History queries and the identity fallback each run Athena: both show on /metrics.
    let history_athena = settings.athena(&clients);
    let (identity, archive) = identity_parts(&clients, &settings, true)?;
    let mut exported = super::metrics::Exported::new("api", clients.calls.clone())
        .resolver(identity.resolver().clone())
        .archive(archive.clone())
        .athena("history", history_athena.clone());
    if let Some(archive) = &archive {
        exported = exported.athena("session_archive", archive.athena().clone());
    }
    let deps =
        Arc::new(ApiDeps {
            history: history_with(&clients, &settings, history_athena)?,
            // health.completeness: the digest checks the enricher recorded.
            checkpoints: Arc::new(DynamoLedger::new(clients.dynamodb.clone(), settings.tables.ledger.clone()).with_integrity(Arc::new(
                DynamoIntegrityStore::new(clients.dynamodb.clone(), settings.tables.integrity.clone(), settings.tables.ledger.clone()),
            ))),
            alerts: alerts.clone(),
            lifecycle: Arc::new(Lifecycle::new(alerts, vec![SNS_SINK.to_owned()], LifecycleConfig::default())),
            rules: crate::commands::api::api_rules(args.rules.as_deref())?,
            accounts: accounts.clone(),
            identity,
            alert_feed: server::feed(),
            limits: Limits::default(),
        });
    {
        // The account list, refreshed hourly; the last good one stays when a refresh fails.
        let (clients, settings, accounts, stop, organizations) =
            (clients.clone(), settings.clone(), accounts.clone(), shutdown.clone(), !args.no_organizations);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
                }
                match load_accounts(&clients, &settings, organizations).await {
                    Ok(directory) => accounts.replace(directory),
                    Err(e) => tracing::warn!(error = format!("{e:#}"), "refreshing the account list failed; keeping the last one"),
                }
            }
        });
    }
    let (tokens, generated) = server::tokens(&args.api)?;
    let state = ApiState::new(deps, tokens).with_extra_metrics(Arc::new(move || exported.render()));
    let served = server::serve(args.api.listen, state, generated, shutdown.clone()).await?;
    shutdown.cancelled().await;
    let _ = served.await;
    Ok(ExitCode::SUCCESS)
}
