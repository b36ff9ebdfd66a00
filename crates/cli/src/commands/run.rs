//! `trailwatch run`: ingest a trail directory, then keep watching it. With
//! no --trail, a demo organization is generated first.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use trailwatch_collector::Mode;
use trailwatch_core::ports::{HistoryQuery, HistoryStore};
use trailwatch_core::stats::PipelineStats;
use trailwatch_gen::GenConfig;

use super::ingest::ingest_once;
use trailwatch_api::{ApiState, BroadcastSink};
use trailwatch_core::alerts::AlertSink;

use crate::api;
use crate::cli::RunArgs;
use crate::pipeline::{self, Alerting, PipelineSetup};
use crate::summary::thousands;

pub async fn run(mut args: RunArgs) -> anyhow::Result<ExitCode> {
    let shutdown = super::shutdown_on_signal();
    let data = args.data.data;
    let (trail, demo) = match args.pipeline.trail.clone() {
        Some(trail) => (trail, false),
        None => {
            let trail = data.join("demo-trail");
            if !trail.join("expected.json").exists() {
                // Traffic up to the current minute, so the demo looks like today.
                let end = super::now_ms() / 60_000 * 60_000;
                let config = GenConfig { accounts: 12, days: 1, events: args.demo_events, seed: 1, end, threads: 0, incidents: true, ..GenConfig::default() };
                println!("generating a demo organization ({} events, 12 accounts) into {}", thousands(config.events), trail.display());
                super::gen::generate(config, trail.clone()).await?;
            }
            (trail, true)
        }
    };
    // The demo trail's own digest key (a demo generated before digests were signed has none).
    let demo_keys = trail.join(trailwatch_gen::digest::PUBLIC_KEYS_FILE);
    if demo && args.pipeline.public_keys.is_none() && demo_keys.is_file() {
        args.pipeline.public_keys = Some(demo_keys);
    }
    let store = pipeline::open_store(&data)?;
    println!("reading {} into {}", trail.display(), pipeline::database_path(&data).display());
    let stats = Arc::new(PipelineStats::default());
    let identity = (!args.pipeline.no_identity).then(|| pipeline::identity(&store));
    let feed = api::feed();
    let extra: Vec<Arc<dyn AlertSink>> = if args.no_api { Vec::new() } else { vec![Arc::new(BroadcastSink::new(feed.clone()))] };
    let alerting = Alerting::setup(&args.alerts, true, extra, &store, Some(&trail), &data)?;
    if let Some(alerting) = &alerting {
        println!("{} detection rules loaded; alerts: {}", alerting.rule_count(), alerting.sinks.iter().map(|s| s.name()).collect::<Vec<_>>().join(", "));
    }
    let delivery = alerting.as_ref().map(|a| a.start_delivery(shutdown.clone()));
    let server = if args.no_api {
        None
    } else {
        let (rules, sinks) = match &alerting {
            Some(a) => (a.ports.rules.clone(), a.sinks.iter().map(|s| s.name().to_owned()).collect()),
            None => (super::api::api_rules(args.alerts.rules.as_deref())?, Vec::new()),
        };
        let deps = api::deps(&store, rules, &data, Some(&trail), sinks, feed)?;
        let (tokens, generated) = api::tokens(&args.api)?;
        Some(api::serve(args.api.listen, ApiState::new(deps, tokens), generated, shutdown.clone()).await?)
    };
    let summary = ingest_once(&trail, &args.pipeline, identity.clone(), alerting.as_ref(), &store, &stats, shutdown.clone()).await?;
    print!("{summary}");
    if demo {
        print!("{}", overview(store.as_ref(), &trail).await?);
    }
    if shutdown.is_cancelled() {
        return finish(delivery, server).await;
    }
    let wake = Arc::new(tokio::sync::Notify::new());
    // Kept until the pipeline stops: dropping it ends the watch.
    let _watcher = match crate::watch::watch(&trail, wake.clone()) {
        Ok(watcher) => {
            println!("watching {} for new files as they land, and scanning every {} s (Ctrl-C to stop)", trail.display(), args.interval);
            Some(watcher)
        }
        Err(e) => {
            println!("watching {} for new files every {} s (Ctrl-C to stop; notifications unavailable: {e})", trail.display(), args.interval);
            None
        }
    };
    let setup = PipelineSetup {
        trail,
        prefix: args.pipeline.prefix,
        workers: args.pipeline.workers.map_or_else(pipeline::default_workers, usize::from),
        mode: Mode::Watch { interval: Duration::from_secs(args.interval) },
        resolve: identity.is_some(),
        history: !args.pipeline.no_history,
        wake: Some(wake),
        alerts: alerting.as_ref().map(|a| a.ports.clone()),
        public_keys: args.pipeline.public_keys.clone(),
    };
    let stats = Arc::new(PipelineStats::default());
    pipeline::run(setup, store, identity, stats.clone(), shutdown).await?;
    println!(
        "stopped; {} events stored and {} alerts opened while watching",
        thousands(PipelineStats::get(&stats.events_stored)),
        thousands(PipelineStats::get(&stats.alerts_opened))
    );
    finish(delivery, server).await
}

/// Waits for the alert delivery (it finishes the delivery in flight) and the API to stop.
async fn finish(delivery: Option<tokio::task::JoinHandle<()>>, server: Option<tokio::task::JoinHandle<()>>) -> anyhow::Result<ExitCode> {
    if let Some(delivery) = delivery {
        delivery.await.context("the alert delivery stopped unexpectedly")?;
    }
    if let Some(server) = server {
        server.await.context("the API server stopped unexpectedly")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What the store now holds, read back from it: events per account (named
/// from the trail's `accounts.json` when there is one), identity types,
/// the busiest API calls and the errors.
async fn overview(store: &dyn HistoryStore, trail: &Path) -> anyhow::Result<String> {
    let names = account_names(trail);
    let mut accounts: HashMap<String, u64> = HashMap::new();
    let mut identities: BTreeMap<String, u64> = BTreeMap::new();
    let mut calls: HashMap<String, u64> = HashMap::new();
    let mut errors: HashMap<String, u64> = HashMap::new();
    let mut origins: HashMap<(String, String), (u64, BTreeSet<String>, u64)> = HashMap::new();
    let mut query = HistoryQuery { limit: 5000, ..Default::default() };
    loop {
        let page = store.page(&query).await.context("reading history")?;
        for e in &page.events {
            *accounts.entry(e.account_id.clone()).or_default() += 1;
            *identities.entry(e.identity_type().unwrap_or("-").to_owned()).or_default() += 1;
            *calls.entry(format!("{}:{}", e.event_source.trim_end_matches(".amazonaws.com"), e.event_name)).or_default() += 1;
            if let Some(code) = &e.error_code {
                *errors.entry(code.clone()).or_default() += 1;
            }
            if let Some(origin) = &e.origin {
                let principal = origin.principal.clone().unwrap_or_else(|| "-".into());
                let entry = origins.entry((origin.kind.as_str().to_owned(), principal)).or_default();
                entry.0 += 1;
                entry.1.insert(e.account_id.clone());
                entry.2 = entry.2.max(origin.chain.len() as u64);
            }
        }
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    let top = |map: HashMap<String, u64>, n: usize| {
        let mut v: Vec<(String, u64)> = map.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        v
    };
    let mut out = String::from("what the store holds:\n  accounts\n");
    for (id, n) in top(accounts, 12) {
        out.push_str(&format!("    {id}  {:<24} {:>8} events\n", names.get(&id).map_or("", String::as_str), thousands(n)));
    }
    out.push_str("  identity types\n");
    for (t, n) in identities {
        out.push_str(&format!("    {t:<20} {:>8}\n", thousands(n)));
    }
    out.push_str("  who is behind the most events (origin · accounts reached · longest chain)\n");
    let mut who: Vec<_> = origins.into_iter().collect();
    who.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then_with(|| a.0.cmp(&b.0)));
    for ((kind, principal), (n, reached, hops)) in who.into_iter().take(8) {
        out.push_str(&format!("    {kind:<21} {principal:<58} {:>8} events · {:>2} accounts · {hops} hops\n", thousands(n), reached.len()));
    }
    out.push_str("  busiest calls\n");
    for (c, n) in top(calls, 6) {
        out.push_str(&format!("    {c:<44} {:>8}\n", thousands(n)));
    }
    out.push_str("  errors\n");
    for (c, n) in top(errors, 6) {
        out.push_str(&format!("    {c:<44} {:>8}\n", thousands(n)));
    }
    Ok(out)
}

/// Account names from an `aws organizations list-accounts` file beside the trail, if any.
fn account_names(trail: &Path) -> HashMap<String, String> {
    let Ok(text) = std::fs::read_to_string(trail.join("accounts.json")) else { return HashMap::new() };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else { return HashMap::new() };
    json["Accounts"]
        .as_array()
        .map(|list| list.iter().filter_map(|a| Some((a["Id"].as_str()?.to_owned(), a["Name"].as_str()?.to_owned()))).collect())
        .unwrap_or_default()
}
