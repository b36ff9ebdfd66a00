//! `/metrics` (Prometheus text) and `/healthz` of the collector and the
//! enricher: their counters, the pipeline's, and the AWS requests made.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use trailwatch_aws::clients::ApiCalls;
use trailwatch_core::stats::PipelineStats;

/// Counters of the queue-driven services.
#[derive(Debug, Default)]
pub struct Counters {
    pub poison_messages: AtomicU64,
    pub objects_skipped: AtomicU64,
    pub files_already_done: AtomicU64,
    pub files_handed_on: AtomicU64,
    pub files_failed: AtomicU64,
    pub files_read: AtomicU64,
    pub events_read: AtomicU64,
    pub sessions_recorded: AtomicU64,
    pub messages_acknowledged: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

fn render(service: &str, counters: &Counters, pipeline: Option<&PipelineStats>, calls: &ApiCalls) -> String {
    let mut out = String::new();
    let mut line = |name: &str, help: &str, value: u64| {
        out.push_str(&format!("# HELP trailwatch_{name} {help}\n# TYPE trailwatch_{name} counter\ntrailwatch_{name}{{service=\"{service}\"}} {value}\n"));
    };
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    line("poison_messages_total", "Queue messages that could not be understood.", c(&counters.poison_messages));
    line("objects_skipped_total", "Notified objects that are not trail files.", c(&counters.objects_skipped));
    line("files_already_done_total", "Notified files the ledger already had.", c(&counters.files_already_done));
    line("files_handed_on_total", "Files handed to the enricher.", c(&counters.files_handed_on));
    line("files_failed_total", "Files whose handling failed (retried).", c(&counters.files_failed));
    line("collector_files_read_total", "Files the collector read for sessions.", c(&counters.files_read));
    line("collector_events_read_total", "Events the collector read.", c(&counters.events_read));
    line("sessions_recorded_total", "Sessions written to the session table.", c(&counters.sessions_recorded));
    line("messages_acknowledged_total", "Queue messages deleted after their file was recorded.", c(&counters.messages_acknowledged));
    if let Some(p) = pipeline {
        line("events_stored_total", "Events written to history.", c(&p.events_stored));
        line("events_rejected_total", "Records rejected.", c(&p.events_rejected));
        line("files_done_total", "Files read completely.", c(&p.files_done));
        line("resolved_exact_total", "Events resolved exactly.", c(&p.resolved_exact));
        line("resolved_derived_total", "Events resolved by derivation.", c(&p.resolved_derived));
        line("resolved_unresolved_total", "Events left unresolved.", c(&p.resolved_unresolved));
        line("resolved_waiting_total", "Events that waited for a session.", c(&p.resolved_waiting));
        line("alerts_opened_total", "Alerts opened.", c(&p.alerts_opened));
        line("alerts_updated_total", "Alert updates.", c(&p.alerts_updated));
        line("alerts_resolved_total", "Alerts resolved.", c(&p.alerts_resolved));
    }
    out.push_str("# HELP trailwatch_aws_requests_total Requests sent to AWS, by operation (retries included).\n# TYPE trailwatch_aws_requests_total counter\n");
    for (operation, n) in calls.snapshot() {
        out.push_str(&format!("trailwatch_aws_requests_total{{service=\"{service}\",operation=\"{operation}\"}} {n}\n"));
    }
    out
}

/// Serves the endpoints on `listen` until `shutdown`; nothing when not configured.
pub async fn serve(
    listen: Option<SocketAddr>,
    service: &'static str,
    counters: Arc<Counters>,
    pipeline: Option<Arc<PipelineStats>>,
    calls: ApiCalls,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(listen) = listen else { return Ok(None) };
    let app = Router::new().route("/healthz", get(|| async { "ok\n" })).route(
        "/metrics",
        get(move || {
            let (counters, pipeline, calls) = (counters.clone(), pipeline.clone(), calls.clone());
            async move { render(service, &counters, pipeline.as_deref(), &calls) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("--metrics-listen {listen}"))?;
    tracing::info!(%listen, "metrics at /metrics");
    Ok(Some(tokio::spawn(async move {
        let _ = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
    })))
}
