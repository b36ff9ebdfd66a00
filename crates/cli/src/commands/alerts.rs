//! `trailwatch alerts`: list, show, acknowledge and resolve alerts.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use trailwatch_core::alerts::lifecycle::{Lifecycle, LifecycleConfig};
use trailwatch_core::alerts::{Alert, AlertQuery, AlertStatus, AlertStore, Severity};
use trailwatch_core::time::{format_utc, parse_bound};

use crate::cli::{AlertsArgs, AlertsCommand, AlertsListArgs, AlertsOpArgs};
use crate::pipeline;

pub async fn alerts(args: AlertsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        AlertsCommand::List(list) => self::list(list).await,
        AlertsCommand::Show { data, id } => show(&data.data, &id).await,
        AlertsCommand::Ack(op) => change(op, true).await,
        AlertsCommand::Resolve(op) => change(op, false).await,
    }
}

fn open(data: &std::path::Path) -> anyhow::Result<Arc<trailwatch_embedded::SqliteStore>> {
    let db = pipeline::database_path(data);
    if !db.exists() {
        anyhow::bail!("no trailwatch database at {}: run `trailwatch ingest --data {}` first", db.display(), data.display());
    }
    pipeline::open_store(data)
}

async fn list(args: AlertsListArgs) -> anyhow::Result<ExitCode> {
    let store = open(&args.data.data)?;
    let now = super::now_ms();
    let status = match args.status.as_str() {
        "all" => None,
        "active" => Some(vec![AlertStatus::Open, AlertStatus::Acknowledged]),
        other => Some(vec![AlertStatus::parse(other).with_context(|| format!("--status {other:?}: expected open, acknowledged, resolved, active or all"))?]),
    };
    let severity = args
        .severity
        .as_deref()
        .map(|s| Severity::parse(s).with_context(|| format!("--severity {s:?}: expected informational, low, medium, high or critical")))
        .transpose()?;
    let mut query = AlertQuery {
        status,
        severity_at_least: severity,
        rule_id: args.rule,
        account_id: args.account,
        origin_principal: args.origin,
        since: args.since.as_deref().map(|s| parse_bound(s, now)).transpose().context("--since")?,
        until: None,
        after: None,
        limit: args.limit.min(500),
    };
    let mut shown = 0;
    let mut out = String::new();
    while shown < args.limit {
        query.limit = (args.limit - shown).min(500);
        let page = store.list(&query).await.context("reading alerts")?;
        for alert in &page.alerts {
            if args.json {
                out.push_str(&serde_json::to_string(alert).context("formatting")?);
                out.push('\n');
            } else {
                out.push_str(&line(alert));
            }
        }
        shown += page.alerts.len();
        match page.next {
            Some(next) if !page.alerts.is_empty() => query.after = Some(next),
            _ => break,
        }
    }
    if shown == 0 && !args.json {
        out.push_str("no alerts match\n");
    }
    super::emit(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// One alert on one line: severity, status, rule, account, count, origin, summary, id.
fn line(alert: &Alert) -> String {
    let account = match &alert.account_alias {
        Some(alias) => format!("{alias:?} ({})", alert.account_id),
        None => alert.account_id.clone(),
    };
    let origin = alert
        .origin
        .as_ref()
        .map_or_else(|| "origin unknown".to_owned(), |o| format!("{} {} ({})", o.kind.as_str(), o.principal.as_deref().unwrap_or("-"), o.confidence.as_str()));
    format!(
        "{:<8} {:<12} {:<40} {:<32} ×{:<5} last {}  {}\n         {}\n         id {}\n",
        alert.severity.as_str().to_uppercase(),
        alert.status.as_str(),
        alert.rule_id,
        account,
        alert.count,
        format_utc(alert.last_seen),
        origin,
        alert.summary,
        alert.id
    )
}

async fn show(data: &std::path::Path, id: &str) -> anyhow::Result<ExitCode> {
    let store = open(data)?;
    let Some(alert) = store.get(id).await.context("reading the alert")? else {
        anyhow::bail!("no alert with id {id:?} (`trailwatch alerts list` shows them)");
    };
    let transitions = store.transitions(id).await.context("reading the alert's transitions")?;
    let out = serde_json::json!({ "alert": alert, "transitions": transitions });
    super::emit(
        &(serde_json::to_string_pretty(&out).context("formatting")?
            + "
"),
    )?;
    Ok(ExitCode::SUCCESS)
}

async fn change(args: AlertsOpArgs, acknowledge: bool) -> anyhow::Result<ExitCode> {
    let store = open(&args.data.data)?;
    // Queued for the sinks the pipeline last ran with, which deliver it.
    let sinks = pipeline::recorded_sinks(&args.data.data);
    let lifecycle = Lifecycle::new(store.clone(), sinks, LifecycleConfig::default());
    let now = super::now_ms();
    let by = args.by.unwrap_or_else(|| std::env::var("USER").unwrap_or_else(|_| "unknown".into()));
    let result = if acknowledge {
        lifecycle.acknowledge(&args.id, &by, args.note.as_deref(), now).await
    } else {
        lifecycle.resolve(&args.id, &by, args.note.as_deref(), now).await
    };
    result.with_context(|| format!("{} alert {}", if acknowledge { "acknowledging" } else { "resolving" }, args.id))?;
    let alert = store.get(&args.id).await.context("reading the alert")?.with_context(|| format!("alert {} vanished", args.id))?;
    super::emit(&line(&alert))?;
    Ok(ExitCode::SUCCESS)
}
