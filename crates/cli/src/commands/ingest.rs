//! `trailwatch ingest`: read every new file of a trail directory once.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use trailwatch_collector::Mode;
use trailwatch_core::ports::Checkpoints;
use trailwatch_core::stats::PipelineStats;

use trailwatch_core::identity::PendingSet;

use crate::cli::{IngestArgs, PipelineArgs};
use crate::pipeline::{self, Alerting, PipelineSetup, Progress};
use crate::summary::{ingest_summary, IdentityFigures};

/// Problem files listed in the summary at most.
const PROBLEMS_SHOWN: u64 = 10;

pub async fn ingest(args: IngestArgs) -> anyhow::Result<ExitCode> {
    let trail = args.pipeline.trail.clone().context("--trail DIR is required: the directory to read, laid out like the trail bucket")?;
    let store = pipeline::open_store(&args.data.data)?;
    let stats = Arc::new(PipelineStats::default());
    let identity = (!args.pipeline.no_identity).then(|| pipeline::identity(&store));
    let alerting = Alerting::setup(&args.alerts, args.alerts.print_alerts, Vec::new(), &store, Some(&trail), &args.data.data)?;
    let stop_delivery = CancellationToken::new();
    let delivery = alerting.as_ref().map(|a| a.start_delivery(stop_delivery.clone()));
    let text = ingest_once(&trail, &args.pipeline, identity, alerting.as_ref(), &store, &stats, super::shutdown_on_signal()).await;
    if let Some(alerting) = &alerting {
        let left = alerting.drain(DRAIN_LIMIT).await?;
        if left > 0 {
            eprintln!("{left} alert notification(s) not delivered yet: they stay queued and go out on the next run or ingest");
        }
    }
    stop_delivery.cancel();
    if let Some(delivery) = delivery {
        delivery.await.context("the alert delivery stopped unexpectedly")?;
    }
    print!("{}", text?);
    Ok(ExitCode::SUCCESS)
}

/// How long `ingest` waits for the sinks to take the alerts it raised.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// Runs one scan of the trail to the end and returns the summary text.
pub async fn ingest_once(
    trail: &std::path::Path,
    options: &PipelineArgs,
    identity: Option<Arc<PendingSet>>,
    alerting: Option<&Alerting>,
    store: &Arc<trailwatch_embedded::SqliteStore>,
    stats: &Arc<PipelineStats>,
    shutdown: CancellationToken,
) -> anyhow::Result<String> {
    let ticker = CancellationToken::new();
    let progress = Progress::start(stats.clone(), ticker.clone());
    let setup = PipelineSetup {
        trail: trail.to_owned(),
        prefix: options.prefix.clone(),
        workers: options.workers.map_or_else(pipeline::default_workers, usize::from),
        mode: Mode::Once,
        resolve: identity.is_some(),
        history: !options.no_history,
        wake: None,
        alerts: alerting.map(|a| a.ports.clone()),
        public_keys: options.public_keys.clone(),
    };
    let result = pipeline::run(setup, store.clone(), identity.clone(), stats.clone(), shutdown).await;
    ticker.cancel();
    let elapsed = progress.elapsed();
    progress.finish();
    result?;
    let g = PipelineStats::get;
    let problem_count = g(&stats.files_failed) + g(&stats.files_partial) + g(&stats.files_empty);
    let problems = if problem_count > 0 { store.problems(problem_count.min(PROBLEMS_SHOWN) as usize).await.context("reading the ledger")? } else { Vec::new() };
    let identity_figures = match &identity {
        Some(identity) => Some(IdentityFigures { waiting: identity.count().await.context("counting pending events")?, resolver: identity.resolver().stats() }),
        None => None,
    };
    let mut text = ingest_summary(stats, elapsed, &problems, identity_figures.as_ref(), alerting.map(Alerting::rule_count));
    if options.no_history {
        text.push_str("  history  off (--no-history): the events above were dropped after the rules, not kept\n");
    }
    Ok(text)
}
