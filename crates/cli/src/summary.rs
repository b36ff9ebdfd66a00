//! The text a person reads after an ingest.

use std::fmt::Write;
use std::time::Duration;

use trailwatch_core::identity::ResolverStats;
use trailwatch_core::ports::LedgerEntry;
use trailwatch_core::stats::PipelineStats;

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes as `12.3 MB`.
pub fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// What identity resolution did during an ingest.
pub struct IdentityFigures {
    /// Events waiting for a session now (all of the store's, not only this run's).
    pub waiting: u64,
    pub resolver: ResolverStats,
}

/// The summary of one ingest: files by outcome, events, identity, speed, skips and problems.
pub fn ingest_summary(stats: &PipelineStats, elapsed: Duration, problems: &[LedgerEntry], identity: Option<&IdentityFigures>, rules: Option<usize>) -> String {
    let g = PipelineStats::get;
    let secs = elapsed.as_secs_f64().max(0.001);
    let stored = g(&stats.events_stored);
    let mut out = String::new();
    let _ = writeln!(out, "ingest finished in {secs:.1} s");
    let _ = writeln!(
        out,
        "  files    {} read: {} done, {} partial, {} empty, {} failed · {} digest · {} already in the ledger",
        thousands(g(&stats.files_read)),
        thousands(g(&stats.files_done)),
        thousands(g(&stats.files_partial)),
        thousands(g(&stats.files_empty)),
        thousands(g(&stats.files_failed)),
        thousands(g(&stats.digests)),
        thousands(g(&stats.files_unchanged)),
    );
    let _ = writeln!(
        out,
        "  events   {} stored · {} already stored · {} rejected · {} store writes",
        thousands(stored),
        thousands(g(&stats.events_duplicate)),
        thousands(g(&stats.events_rejected)),
        thousands(g(&stats.history_writes)),
    );
    if let Some(identity) = identity {
        let r = &identity.resolver;
        let lookups = r.cache.hits + r.cache.negative_hits + r.cache.misses;
        let _ = writeln!(
            out,
            "  identity on arrival {} exact · {} derived · {} unresolved · {} waiting for a session; then {} origin updates; still waiting {}",
            thousands(g(&stats.resolved_exact)),
            thousands(g(&stats.resolved_derived)),
            thousands(g(&stats.resolved_unresolved)),
            thousands(g(&stats.resolved_waiting)),
            thousands(g(&stats.origins_updated)),
            thousands(identity.waiting),
        );
        let _ = writeln!(
            out,
            "           {} sessions captured · {:.1} store lookups per 1,000 events · cache hit rate {:.1}% · {} history searches",
            thousands(g(&stats.sessions_captured)),
            r.store_lookups_per_thousand(),
            if lookups == 0 { 0.0 } else { (r.cache.hits + r.cache.negative_hits) as f64 * 100.0 / lookups as f64 },
            thousands(r.archive_lookups),
        );
    }
    if let Some(rules) = rules {
        let _ = writeln!(
            out,
            "  alerts   {} rule matches · {} opened · {} updated · {} resolved ({rules} rules)",
            thousands(g(&stats.detections)),
            thousands(g(&stats.alerts_opened)),
            thousands(g(&stats.alerts_updated)),
            thousands(g(&stats.alerts_resolved)),
        );
    }
    let uncompressed = g(&stats.bytes_uncompressed);
    let _ = writeln!(
        out,
        "  speed    {} events/s · {:.1} MB/s of JSON ({} read, {} compressed)",
        thousands((g(&stats.events_parsed) as f64 / secs) as u64),
        uncompressed as f64 / 1e6 / secs,
        megabytes(uncompressed),
        megabytes(g(&stats.bytes_compressed)),
    );
    let stages: Vec<String> = stats.stages.all().into_iter().map(|(stage, spent)| format!("{} {:.2} s", stage.label(), spent.as_secs_f64())).collect();
    let _ = writeln!(out, "  stages   {} (summed over threads)", stages.join(" · "));
    let (retried, timed_out, gave_up) = (g(&stats.port_calls.retried), g(&stats.port_calls.timed_out), g(&stats.port_calls.gave_up));
    if retried + timed_out + gave_up > 0 {
        let _ = writeln!(
            out,
            "  trouble  {} store calls retried · {} without an answer in time · {} given up ({} files to read again)",
            thousands(retried),
            thousands(timed_out),
            thousands(gave_up),
            thousands(g(&stats.files_store_failed)),
        );
    }
    for (reason, count, example) in stats.skipped() {
        let _ = writeln!(out, "  skipped  {} {reason} (e.g. {example})", thousands(count));
    }
    if !problems.is_empty() {
        let _ = writeln!(out, "  problems (see `trailwatch ledger`):");
        for p in problems {
            let _ = writeln!(out, "    {:<7}  {}: {}", p.status.as_str(), p.key, p.error.as_deref().unwrap_or("-"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn trouble_with_the_stores_is_shown_only_when_there_was_some() {
        let stats = PipelineStats::default();
        let quiet = ingest_summary(&stats, Duration::from_secs(1), &[], None, None);
        assert!(!quiet.contains("trouble"), "{quiet}");
        PipelineStats::add(&stats.port_calls.retried, 1_200);
        PipelineStats::add(&stats.port_calls.gave_up, 2);
        PipelineStats::add(&stats.files_store_failed, 2);
        let troubled = ingest_summary(&stats, Duration::from_secs(1), &[], None, None);
        assert!(troubled.contains("trouble  1,200 store calls retried · 0 without an answer in time · 2 given up (2 files to read again)"), "{troubled}");
    }
}
