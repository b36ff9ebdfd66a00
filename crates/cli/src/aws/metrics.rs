//! `/metrics` (Prometheus text) and `/healthz` of the collector and the
//! enricher; `api --aws` can append the same rendering to its own (`ApiState::with_extra_metrics`).
//!
//! Every metric is rendered here, from the counters the parts keep
//! ([`Exported`] holds a handle to each): the queue services' [`Counters`],
//! the pipeline's [`PipelineStats`] (files, events, identity outcomes, alert
//! transitions by severity, ingest lag per account and region), the
//! resolver's session cache, the Athena runners and the session archive,
//! the alert delivery worker, the queue depths ([`queues`]) and the AWS
//! requests made. Names follow Prometheus' conventions: `trailwatch_`
//! prefix, `_total` counters, base units (`_seconds`, `_bytes`); every
//! sample carries `service` (collector, enricher, api). Label values come
//! from a closed set, or are account ids and region names checked by
//! [`IngestClock`](trailwatch_core::stats::IngestClock), which also bounds
//! their number; `dashboards/README.md` lists the series.

mod queues;

pub use queues::{watch_queue, QueueGauges};

use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use trailwatch_aws::athena::{Athena, AthenaArchive};
use trailwatch_aws::clients::ApiCalls;
use trailwatch_aws::sns::action;
use trailwatch_core::identity::Resolver;
use trailwatch_core::integrity::IntegrityChecker;
use trailwatch_core::stats::{PipelineStats, Stage, StageTimes};
use trailwatch_enricher::delivery::{DeliveryStats, SinkStats};

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
    /// Time spent reading files (gunzip, parse, session capture).
    pub stages: StageTimes,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// What one service exports; the parts it lacks are left out.
#[derive(Clone)]
pub struct Exported {
    service: &'static str,
    calls: ApiCalls,
    counters: Option<Arc<Counters>>,
    pipeline: Option<Arc<PipelineStats>>,
    resolver: Option<Arc<Resolver>>,
    archive: Option<Arc<AthenaArchive>>,
    athena: Vec<(&'static str, Arc<Athena>)>,
    delivery: Option<Arc<DeliveryStats>>,
    queues: Option<Arc<QueueGauges>>,
    integrity: Option<Arc<IntegrityChecker>>,
}

impl Exported {
    /// The AWS requests of `service`; add the rest with the other methods.
    pub fn new(service: &'static str, calls: ApiCalls) -> Self {
        Exported {
            service,
            calls,
            counters: None,
            pipeline: None,
            resolver: None,
            archive: None,
            athena: Vec::new(),
            delivery: None,
            queues: None,
            integrity: None,
        }
    }

    /// The digest checker's findings and key fetches.
    pub fn integrity(mut self, checker: Arc<IntegrityChecker>) -> Self {
        self.integrity = Some(checker);
        self
    }

    pub fn counters(mut self, counters: Arc<Counters>) -> Self {
        self.counters = Some(counters);
        self
    }

    pub fn pipeline(mut self, stats: Arc<PipelineStats>) -> Self {
        self.pipeline = Some(stats);
        self
    }

    /// The resolver's session cache and store lookups.
    pub fn resolver(mut self, resolver: Arc<Resolver>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// The Athena fallback of identity resolution (its negative cache).
    pub fn archive(mut self, archive: Option<Arc<AthenaArchive>>) -> Self {
        self.archive = archive;
        self
    }

    /// An Athena runner, labelled `purpose` (`session_archive`, `history`).
    pub fn athena(mut self, purpose: &'static str, athena: Arc<Athena>) -> Self {
        self.athena.push((purpose, athena));
        self
    }

    pub fn delivery(mut self, stats: Arc<DeliveryStats>) -> Self {
        self.delivery = Some(stats);
        self
    }

    pub fn queues(mut self, gauges: Arc<QueueGauges>) -> Self {
        self.queues = Some(gauges);
        self
    }

    /// Everything, in Prometheus' text format (0.0.4).
    pub fn render(&self) -> String {
        let mut t = Text { out: String::with_capacity(16 * 1024), service: self.service };
        if let Some(c) = &self.counters {
            render_counters(&mut t, c);
        }
        if let Some(p) = &self.pipeline {
            render_pipeline(&mut t, p);
        }
        let stages: Vec<&StageTimes> = self.counters.iter().map(|c| &c.stages).chain(self.pipeline.iter().map(|p| &p.stages)).collect();
        if !stages.is_empty() {
            render_stages(&mut t, &stages);
        }
        if let Some(r) = &self.resolver {
            let s = r.stats();
            t.family(
                "trailwatch_session_cache_lookups_total",
                "counter",
                "Session cache lookups by result: hit (a session), negative_hit (a recent \"not found\"), miss (asked the session table).",
            );
            for (result, n) in [("hit", s.cache.hits), ("negative_hit", s.cache.negative_hits), ("miss", s.cache.misses)] {
                t.sample("trailwatch_session_cache_lookups_total", &[("result", result)], n);
            }
            t.single("trailwatch_session_cache_entries", "gauge", "Access keys held in the session cache.", s.cache.entries);
            t.single("trailwatch_session_cache_evictions_total", "counter", "Session cache entries dropped to stay within capacity.", s.cache.evictions);
            t.single("trailwatch_session_store_lookups_total", "counter", "Session table lookups (what the cache did not answer).", s.store_lookups);
        }
        if let Some(a) = &self.archive {
            let s = a.stats();
            t.family(
                "trailwatch_session_archive_keys_total",
                "counter",
                "Access keys the session table lacked, by how the Athena fallback answered: queried, or negative_cache_hit (recently not found, not asked again).",
            );
            t.sample("trailwatch_session_archive_keys_total", &[("result", "queried")], s.keys_asked);
            t.sample("trailwatch_session_archive_keys_total", &[("result", "negative_cache_hit")], s.negative_hits);
            t.single("trailwatch_session_archive_sessions_found_total", "counter", "Sessions the Athena fallback found in the raw trail.", s.sessions_found);
        }
        if !self.athena.is_empty() {
            render_athena(&mut t, &self.athena);
        }
        if let Some(d) = &self.delivery {
            render_delivery(&mut t, d);
        }
        if let Some(q) = &self.queues {
            q.render(&mut t);
        }
        if let Some(c) = &self.integrity {
            t.single(
                "trailwatch_integrity_findings_opened_total",
                "counter",
                "Trail integrity findings opened by digest checks (each raises or adds to a trail-integrity alert).",
                c.findings_opened(),
            );
            t.single(
                "trailwatch_digest_key_fetches_total",
                "counter",
                "Times the public keys of digest signatures were fetched (ListPublicKeys).",
                c.key_fetches(),
            );
            t.family(
                "trailwatch_integrity_port_calls_total",
                "counter",
                "Calls of the digest checker (objects, signatures, keys, its store) retried, timed out, or given up.",
            );
            let r = c.retries();
            for (result, n) in [("retried", &r.retried), ("timed_out", &r.timed_out), ("gave_up", &r.gave_up)] {
                t.sample("trailwatch_integrity_port_calls_total", &[("result", result)], n.load(Ordering::Relaxed));
            }
        }
        t.family("trailwatch_aws_requests_total", "counter", "Requests sent to AWS, by operation (retries included).");
        for (operation, n) in self.calls.snapshot() {
            t.sample("trailwatch_aws_requests_total", &[("operation", &operation)], n);
        }
        t.family(
            "trailwatch_aws_retries_total",
            "counter",
            "Requests to AWS that were retries of a failed attempt (the SDK's standard retry mode), by operation.",
        );
        for (operation, n) in self.calls.retries() {
            t.sample("trailwatch_aws_retries_total", &[("operation", &operation)], n);
        }
        t.family(
            "trailwatch_aws_request_errors_total",
            "counter",
            "Attempts of AWS requests that failed, by operation and kind: throttling, server_error (5xx), client_error (4xx), timeout, connection (refused or reset), other.",
        );
        for ((operation, kind), n) in self.calls.errors() {
            t.sample("trailwatch_aws_request_errors_total", &[("operation", &operation), ("kind", kind.label())], n);
        }
        t.out
    }
}

/// The text being written: each family's HELP and TYPE, then its samples,
/// each with the service's label first.
pub(crate) struct Text {
    out: String,
    service: &'static str,
}

impl Text {
    pub(crate) fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.out.push_str(&format!("# HELP {name} {}\n# TYPE {name} {kind}\n", help.replace('\\', "\\\\").replace('\n', "\\n")));
    }

    pub(crate) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        self.out.push_str("{service=\"");
        self.out.push_str(self.service);
        self.out.push('"');
        for (label, v) in labels {
            self.out.push(',');
            self.out.push_str(label);
            self.out.push_str("=\"");
            self.out.push_str(&escape(v));
            self.out.push('"');
        }
        self.out.push_str(&format!("}} {value}\n"));
    }

    /// A family of one sample without other labels.
    pub(crate) fn single(&mut self, name: &str, kind: &str, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// A label value as the text format wants it.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

fn render_counters(t: &mut Text, c: &Counters) {
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    t.single(
        "trailwatch_poison_messages_total",
        "counter",
        "Queue messages that could not be understood (left for the dead-letter queue).",
        n(&c.poison_messages),
    );
    t.single("trailwatch_objects_skipped_total", "counter", "Notified objects that are not trail files.", n(&c.objects_skipped));
    t.single("trailwatch_files_already_done_total", "counter", "Notified files the ledger already had.", n(&c.files_already_done));
    t.single("trailwatch_files_handed_on_total", "counter", "Files the collector handed to the enricher queue.", n(&c.files_handed_on));
    t.single("trailwatch_files_failed_total", "counter", "Files whose handling failed; their message is received again.", n(&c.files_failed));
    t.single("trailwatch_collector_files_read_total", "counter", "Files the collector read for the sessions they issued.", n(&c.files_read));
    t.single("trailwatch_collector_events_read_total", "counter", "Events the collector read.", n(&c.events_read));
    t.single("trailwatch_sessions_recorded_total", "counter", "Sessions written to the session table.", n(&c.sessions_recorded));
    t.single("trailwatch_messages_acknowledged_total", "counter", "Queue messages deleted after their file was recorded.", n(&c.messages_acknowledged));
}

/// Seconds per pipeline stage, summed over what the service keeps.
fn render_stages(t: &mut Text, kept: &[&StageTimes]) {
    t.family(
        "trailwatch_stage_seconds_total",
        "counter",
        "Seconds spent per pipeline stage (gunzip, parse, capture, sessions, resolve, rules, alerts, store, ledger), summed over the threads that ran it.",
    );
    for stage in Stage::ALL {
        let spent: f64 = kept.iter().map(|s| s.get(stage).as_secs_f64()).sum();
        t.sample("trailwatch_stage_seconds_total", &[("stage", stage.label())], format!("{spent:.6}"));
    }
}

fn render_pipeline(t: &mut Text, p: &PipelineStats) {
    let n = PipelineStats::get;
    t.single("trailwatch_events_stored_total", "counter", "Events written to history (an event already there is counted as a duplicate).", n(&p.events_stored));
    t.single("trailwatch_events_duplicate_total", "counter", "Events that were already in history (a file read again).", n(&p.events_duplicate));
    t.single("trailwatch_events_rejected_total", "counter", "Records rejected (missing eventID, eventTime, eventSource or eventName).", n(&p.events_rejected));
    t.family(
        "trailwatch_files_read_total",
        "counter",
        "Trail files read, by outcome: done, partial (records rejected), empty, failed (read again later), digest (recorded only).",
    );
    for (status, counter) in
        [("done", &p.files_done), ("partial", &p.files_partial), ("empty", &p.files_empty), ("failed", &p.files_failed), ("digest", &p.digests)]
    {
        t.sample("trailwatch_files_read_total", &[("status", status)], n(counter));
    }
    t.family(
        "trailwatch_identity_resolutions_total",
        "counter",
        "Events resolved on arrival, by outcome: exact, derived, unresolved, pending (waiting for its session; counted in trailwatch_identity_origins_updated_total when it settles), or no_actor (the record names no one).",
    );
    let outcomes = [
        ("exact", &p.resolved_exact),
        ("derived", &p.resolved_derived),
        ("unresolved", &p.resolved_unresolved),
        ("pending", &p.resolved_waiting),
        ("no_actor", &p.resolved_no_actor),
    ];
    for (outcome, counter) in outcomes {
        t.sample("trailwatch_identity_resolutions_total", &[("outcome", outcome)], n(counter));
    }
    t.single(
        "trailwatch_identity_origins_updated_total",
        "counter",
        "Stored events whose origin settled later (a late session, or the two-hour bound).",
        n(&p.origins_updated),
    );
    t.single("trailwatch_rule_matches_total", "counter", "Rule matches (a threshold rule counts the matches of its bursts).", n(&p.detections));
    t.family(
        "trailwatch_port_calls_total",
        "counter",
        "Store and queue calls of the pipeline that failed and were tried again (retried), had no answer in time (timed_out), or were given up on after the last try (gave_up).",
    );
    for (result, counter) in [("retried", &p.port_calls.retried), ("timed_out", &p.port_calls.timed_out), ("gave_up", &p.port_calls.gave_up)] {
        t.sample("trailwatch_port_calls_total", &[("result", result)], n(counter));
    }
    t.single(
        "trailwatch_events_in_flight",
        "gauge",
        "Events read and not yet stored (or given up on): what the pipeline holds in memory.",
        n(&p.events_in_flight),
    );
    t.single("trailwatch_events_in_flight_peak", "gauge", "The most events in flight at once since the service started.", n(&p.events_in_flight_peak));
    t.family(
        "trailwatch_alert_transitions_total",
        "counter",
        "Alert transitions committed for delivery, by action (trigger: opened, update: updated or acknowledged, resolve) and severity.",
    );
    // Acknowledged and updated are both `update`: sum them per severity.
    let mut by_label: Vec<((&str, &str), u64)> = Vec::new();
    for (kind, severity, count) in p.transitions.snapshot() {
        let key = (action(kind), severity.as_str());
        match by_label.iter_mut().find(|(k, _)| *k == key) {
            Some((_, total)) => *total += count,
            None => by_label.push((key, count)),
        }
    }
    for ((action, severity), count) in by_label {
        t.sample("trailwatch_alert_transitions_total", &[("action", action), ("severity", severity)], count);
    }

    let lag = p.ingest.lag_histogram();
    t.family(
        "trailwatch_ingest_lag_seconds",
        "histogram",
        "Seconds from a log file's creation in the bucket (its LastModified) to its events being stored and the file recorded.",
    );
    for (le, count) in &lag.cumulative {
        t.sample("trailwatch_ingest_lag_seconds_bucket", &[("le", &le.to_string())], count);
    }
    t.sample("trailwatch_ingest_lag_seconds_bucket", &[("le", "+Inf")], lag.count);
    t.sample("trailwatch_ingest_lag_seconds_sum", &[], lag.sum_seconds);
    t.sample("trailwatch_ingest_lag_seconds_count", &[], lag.count);
    let places = p.ingest.places();
    t.family("trailwatch_ingest_last_lag_seconds", "gauge", "Ingest lag of the last file recorded, per account and region.");
    for ((account_id, region), clock) in &places {
        if let Some(ms) = clock.last_lag_ms {
            t.sample("trailwatch_ingest_last_lag_seconds", &[("account_id", account_id), ("region", region)], seconds(ms));
        }
    }
    t.family("trailwatch_newest_event_timestamp_seconds", "gauge", "Event time (Unix seconds) of the newest event stored, per account and region.");
    for ((account_id, region), clock) in &places {
        if let Some(ms) = clock.newest_event {
            t.sample("trailwatch_newest_event_timestamp_seconds", &[("account_id", account_id), ("region", region)], seconds(ms));
        }
    }
    t.single(
        "trailwatch_ingest_places_dropped_total",
        "counter",
        "Lag and newest-event observations not kept per account and region (over the bound of pairs, or not an account id and region).",
        p.ingest.dropped(),
    );
}

fn render_athena(t: &mut Text, runners: &[(&'static str, Arc<Athena>)]) {
    let stats: Vec<_> = runners.iter().map(|(purpose, a)| (*purpose, a.stats())).collect();
    t.family(
        "trailwatch_athena_queries_started_total",
        "counter",
        "Athena queries started, by purpose (session_archive: identity fallback; history: events read back).",
    );
    for (purpose, s) in &stats {
        t.sample("trailwatch_athena_queries_started_total", &[("purpose", purpose)], s.queries);
    }
    t.family(
        "trailwatch_athena_queries_total",
        "counter",
        "Athena queries finished, by purpose and outcome: succeeded, over_limit (succeeded but scanned more than allowed), failed, cancelled, timed_out (stopped).",
    );
    for (purpose, s) in &stats {
        for (outcome, n) in
            [("succeeded", s.succeeded), ("over_limit", s.over_limit), ("failed", s.failed), ("cancelled", s.cancelled), ("timed_out", s.timed_out)]
        {
            t.sample("trailwatch_athena_queries_total", &[("purpose", purpose), ("outcome", outcome)], n);
        }
    }
    t.family("trailwatch_athena_scanned_bytes_total", "counter", "Bytes Athena scanned for the queries that succeeded, by purpose.");
    for (purpose, s) in &stats {
        t.sample("trailwatch_athena_scanned_bytes_total", &[("purpose", purpose)], s.bytes_scanned);
    }
}

/// One counter of a sink's stats.
type SinkCounter = fn(&SinkStats) -> &AtomicU64;

fn render_delivery(t: &mut Text, d: &DeliveryStats) {
    let sinks = d.sinks();
    let families: [(&str, &str, &str, SinkCounter); 4] = [
        ("trailwatch_alert_deliveries_total", "counter", "Alert transitions a sink took.", |s| &s.delivered),
        ("trailwatch_alert_delivery_failures_total", "counter", "Failed delivery attempts (each is tried again later).", |s| &s.failed_attempts),
        ("trailwatch_alert_deliveries_rejected_total", "counter", "Failed attempts the sink refused (permanent errors).", |s| &s.rejected),
        (
            "trailwatch_alert_deliveries_outstanding",
            "gauge",
            "Alert transitions queued for a sink and not yet delivered (read from the store every few seconds).",
            |s| &s.outstanding,
        ),
    ];
    for (name, kind, help, field) in families {
        t.family(name, kind, help);
        for (sink, stats) in &sinks {
            t.sample(name, &[("sink", sink)], field(stats).load(Ordering::Relaxed));
        }
    }
}

/// Serves `/metrics` and `/healthz` on `listen` until `shutdown`; nothing when not configured.
pub async fn serve(listen: Option<SocketAddr>, exported: Exported, shutdown: CancellationToken) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(listen) = listen else { return Ok(None) };
    let exported = Arc::new(exported);
    let app = Router::new().route("/healthz", get(|| async { "ok\n" })).route(
        "/metrics",
        get(move || {
            let exported = exported.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], exported.render()) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("--metrics-listen {listen}"))?;
    tracing::info!(%listen, "metrics at /metrics");
    Ok(Some(tokio::spawn(async move {
        let _ = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use trailwatch_core::alerts::{Severity, TransitionKind};
    use trailwatch_core::conformance::sample_event;

    /// Family name → (type, sample names), from the text; panics on a sample
    /// before its family's TYPE or a line that is not a sample.
    pub(crate) fn families(text: &str) -> BTreeMap<String, (String, Vec<String>)> {
        let mut families: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(families.insert(name.to_owned(), (kind.to_owned(), Vec::new())).is_none(), "{name} declared twice");
                current = name.to_owned();
            } else if !line.starts_with("# HELP ") {
                let name = line.split(['{', ' ']).next().unwrap();
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok() || value == "+Inf", "not a sample: {line}");
                assert!(
                    name == current || name.strip_prefix(current.as_str()).is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s)),
                    "{name} outside its family {current}"
                );
                families.get_mut(&current).unwrap().1.push(line.to_owned());
            }
        }
        families
    }

    #[test]
    fn every_family_has_help_and_type_and_names_follow_the_conventions() {
        let stats = Arc::new(PipelineStats::default());
        PipelineStats::add(&stats.events_stored, 7);
        PipelineStats::add(&stats.port_calls.retried, 5);
        stats.transitions.add(TransitionKind::Opened, Severity::High, 2);
        stats.transitions.add(TransitionKind::Acknowledged, Severity::High, 1);
        stats.transitions.add(TransitionKind::Updated, Severity::High, 3);
        stats.ingest.events_stored(&[sample_event("111122223333", "e1", 1_700_000_000_000)]);
        stats.stages.add(Stage::Store, std::time::Duration::from_millis(1500));
        stats.stages.add(Stage::Parse, std::time::Duration::from_millis(250));
        let counters = Arc::new(Counters::default());
        counters.stages.add(Stage::Parse, std::time::Duration::from_millis(500));
        let delivery = Arc::new(DeliveryStats::default());
        delivery.sink("sns").failed_attempts.fetch_add(4, Ordering::Relaxed);
        let exported = Exported::new("enricher", ApiCalls::default()).counters(counters).pipeline(stats).delivery(delivery);
        let text = exported.render();
        let families = families(&text);
        for (name, (kind, _)) in &families {
            assert!(text.contains(&format!("# HELP {name} ")), "{name} has no HELP");
            assert!(name.starts_with("trailwatch_"), "{name}");
            assert_eq!(name.ends_with("_total"), kind == "counter", "{name} is a {kind}");
        }
        assert!(text.contains("trailwatch_events_stored_total{service=\"enricher\"} 7\n"), "{text}");
        // Trouble with the stores shows: calls retried, and none given up.
        assert!(text.contains("trailwatch_port_calls_total{service=\"enricher\",result=\"retried\"} 5\n"), "{text}");
        assert!(text.contains("trailwatch_port_calls_total{service=\"enricher\",result=\"gave_up\"} 0\n"), "{text}");
        // Stage times: the collector's reading and the pipeline's add up, one sample per stage.
        assert!(text.contains("trailwatch_stage_seconds_total{service=\"enricher\",stage=\"parse\"} 0.750000\n"), "{text}");
        assert!(text.contains("trailwatch_stage_seconds_total{service=\"enricher\",stage=\"store\"} 1.500000\n"), "{text}");
        assert_eq!(families["trailwatch_stage_seconds_total"].1.len(), Stage::ALL.len());
        assert!(
            text.contains("trailwatch_alert_transitions_total{service=\"enricher\",action=\"update\",severity=\"high\"} 4\n"),
            "updated and acknowledged are both updates"
        );
        assert!(text.contains("trailwatch_alert_transitions_total{service=\"enricher\",action=\"trigger\",severity=\"high\"} 2\n"));
        assert!(text.contains("trailwatch_alert_delivery_failures_total{service=\"enricher\",sink=\"sns\"} 4\n"));
        assert!(
            text.contains("trailwatch_newest_event_timestamp_seconds{service=\"enricher\",account_id=\"111122223333\",region=\"eu-west-1\"} 1700000000\n"),
            "{text}"
        );
        assert!(text.contains("trailwatch_ingest_lag_seconds_bucket{service=\"enricher\",le=\"+Inf\"} 0\n"));
        let outcomes: BTreeSet<&str> = ["exact", "derived", "unresolved", "pending", "no_actor"].into();
        let resolutions = &families["trailwatch_identity_resolutions_total"].1;
        assert_eq!(resolutions.len(), outcomes.len());
        assert!(resolutions.iter().all(|l| outcomes.iter().any(|o| l.contains(&format!("outcome=\"{o}\"")))));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut t = Text { out: String::new(), service: "api" };
        t.sample("trailwatch_x_total", &[("operation", "a\"b\\c\nd")], 1);
        assert_eq!(t.out, "trailwatch_x_total{service=\"api\",operation=\"a\\\"b\\\\c\\nd\"} 1\n");
    }

    /// Every metric a PromQL expression of the dashboard uses, except the
    /// API's own (rendered by trailwatch-api): each is rendered here.
    #[test]
    fn the_dashboard_uses_only_metrics_rendered_here_or_by_the_api() {
        let dashboard: serde_json::Value = serde_json::from_str(include_str!("../../../../dashboards/grafana/trailwatch.json")).unwrap();
        let mut exprs = Vec::new();
        collect_exprs(&dashboard, &mut exprs);
        assert!(exprs.len() >= 10, "{exprs:?}");
        let stats = Arc::new(PipelineStats::default());
        let text = Exported::new("enricher", ApiCalls::default())
            .counters(Arc::new(Counters::default()))
            .pipeline(stats)
            .delivery(Arc::new(DeliveryStats::default()))
            .queues(Arc::new(QueueGauges::default()))
            .render();
        let families = families(&text);
        let mut missing = BTreeSet::new();
        for expr in &exprs {
            for name in metric_names(expr) {
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|base| families.get(*base).is_some_and(|(k, _)| k == "histogram"));
                let known = families.contains_key(&name) || family.is_some();
                // Rendered only when their parts exist (a resolver, an archive, a runner, a queue reading, a digest checker).
                let conditional = [
                    "trailwatch_session_",
                    "trailwatch_athena_",
                    "trailwatch_queue_",
                    "trailwatch_dead_letter_",
                    "trailwatch_aws_",
                    "trailwatch_integrity_",
                    "trailwatch_digest_",
                ]
                .iter()
                .any(|p| name.starts_with(p));
                if !known && !conditional && !name.starts_with("trailwatch_api_") {
                    missing.insert(name);
                }
            }
        }
        assert!(missing.is_empty(), "the dashboard uses metrics nobody renders: {missing:?}");
    }

    pub(crate) fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                        _ => collect_exprs(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
            _ => {}
        }
    }

    /// The `trailwatch_…` names in a PromQL expression.
    pub(crate) fn metric_names(expr: &str) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        let bytes = expr.as_bytes();
        let mut i = 0;
        while let Some(at) = expr[i..].find("trailwatch_") {
            let start = i + at;
            let boundary = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
            let end = start + expr[start..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(expr.len() - start);
            if boundary {
                names.insert(expr[start..end].to_owned());
            }
            i = end;
        }
        names
    }
}
