//! `trailwatch api` (the GraphQL server alone) and `trailwatch query` (one
//! query against the data directory, no server).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use trailwatch_api::{ApiState, BroadcastSink, Principal, Role};
use trailwatch_core::alerts::AlertSink;
use trailwatch_enricher::delivery::{self, DeliveryConfig, DeliveryHandle, DeliveryStats};

use crate::api as server;
use crate::cli::{ApiArgs, QueryArgs};
use crate::pipeline;

fn open(data: &std::path::Path) -> anyhow::Result<Arc<trailwatch_embedded::SqliteStore>> {
    let db = pipeline::database_path(data);
    if !db.exists() {
        anyhow::bail!("no trailwatch database at {}: run `trailwatch ingest --data {}` first", db.display(), data.display());
    }
    pipeline::open_store(data)
}

pub fn api_rules(dir: Option<&std::path::Path>) -> anyhow::Result<Arc<trailwatch_core::rules::RuleSet>> {
    match pipeline::load_rules(dir, true)? {
        Ok(rules) => Ok(rules),
        Err(errors) => {
            let list: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
            anyhow::bail!("{} rule file error(s):\n{}", errors.len(), list.join("\n"))
        }
    }
}

pub async fn api(args: ApiArgs) -> anyhow::Result<ExitCode> {
    let shutdown = super::shutdown_on_signal();
    let data = &args.data.data;
    let store = open(data)?;
    let sinks = pipeline::recorded_sinks(data);
    let deps = server::deps(&store, api_rules(args.rules.as_deref())?, data, None, sinks, server::feed())?;
    let (tokens, generated) = server::tokens(&args.api)?;
    // Subscriptions are fed from the outbox's `api` entries, as inside `run`.
    let feed: Arc<dyn AlertSink> = Arc::new(BroadcastSink::new(deps.alert_feed.clone()));
    let delivery = tokio::spawn(delivery::run(
        store.clone(),
        vec![feed],
        DeliveryConfig::default(),
        Arc::new(DeliveryStats::default()),
        DeliveryHandle::new(),
        shutdown.clone(),
    ));
    let server = server::serve(args.api.listen, ApiState::new(deps, tokens), generated, shutdown).await?;
    server.await.context("the API server stopped unexpectedly")?;
    delivery.await.context("the alert feed stopped unexpectedly")?;
    Ok(ExitCode::SUCCESS)
}

pub async fn query(args: QueryArgs) -> anyhow::Result<ExitCode> {
    let data = &args.data.data;
    let store = open(data)?;
    let deps = server::deps(&store, api_rules(args.rules.as_deref())?, data, None, pipeline::recorded_sinks(data), server::feed())?;
    let schema = trailwatch_api::schema(deps);
    let mut request = async_graphql::Request::new(args.query);
    if let Some(variables) = &args.variables {
        let value: serde_json::Value = serde_json::from_str(variables).context("--variables must be a JSON object")?;
        if !value.is_object() {
            anyhow::bail!("--variables must be a JSON object, not {value}");
        }
        request = request.variables(async_graphql::Variables::from_json(value));
    }
    let by = std::env::var("USER").unwrap_or_else(|_| "cli".into());
    let response = schema.execute(request.data(Principal { name: by, role: Role::Admin })).await;
    let failed = !response.errors.is_empty();
    super::emit(&(serde_json::to_string_pretty(&response).context("formatting the response")? + "\n"))?;
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
