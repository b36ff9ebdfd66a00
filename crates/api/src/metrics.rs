//! Request counters and latency histograms in Prometheus' text format.
//! Operation names come from clients, so they are cleaned and their number
//! bounded: past [`MAX_OPERATIONS`] names, new ones count as `other`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Distinct operation labels kept.
pub const MAX_OPERATIONS: usize = 100;
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Default)]
struct Op {
    ok: u64,
    errors: u64,
    sum: f64,
    buckets: [u64; BUCKETS.len()],
}

#[derive(Default)]
pub struct Metrics {
    ops: Mutex<BTreeMap<String, Op>>,
    unauthorized: Mutex<u64>,
}

fn label(name: Option<&str>) -> String {
    let clean: String = name.unwrap_or("anonymous").chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
    if clean.is_empty() {
        "anonymous".into()
    } else {
        clean
    }
}

impl Metrics {
    pub fn record(&self, operation: Option<&str>, took: Duration, ok: bool) {
        let mut ops = self.ops.lock().unwrap_or_else(PoisonError::into_inner);
        let mut name = label(operation);
        if !ops.contains_key(&name) && ops.len() >= MAX_OPERATIONS {
            name = "other".into();
        }
        let op = ops.entry(name).or_default();
        if ok {
            op.ok += 1;
        } else {
            op.errors += 1;
        }
        let secs = took.as_secs_f64();
        op.sum += secs;
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                op.buckets[i] += 1;
            }
        }
    }

    pub fn unauthorized(&self) {
        *self.unauthorized.lock().unwrap_or_else(PoisonError::into_inner) += 1;
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let ops = self.ops.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = writeln!(out, "# HELP trailwatch_api_requests_total GraphQL requests by operation and outcome.");
        let _ = writeln!(out, "# TYPE trailwatch_api_requests_total counter");
        for (name, op) in ops.iter() {
            let _ = writeln!(out, "trailwatch_api_requests_total{{operation=\"{name}\",outcome=\"ok\"}} {}", op.ok);
            let _ = writeln!(out, "trailwatch_api_requests_total{{operation=\"{name}\",outcome=\"error\"}} {}", op.errors);
        }
        let _ = writeln!(out, "# HELP trailwatch_api_request_duration_seconds GraphQL request latency by operation.");
        let _ = writeln!(out, "# TYPE trailwatch_api_request_duration_seconds histogram");
        for (name, op) in ops.iter() {
            for (le, n) in BUCKETS.iter().zip(op.buckets.iter()) {
                let _ = writeln!(out, "trailwatch_api_request_duration_seconds_bucket{{operation=\"{name}\",le=\"{le}\"}} {n}");
            }
            let total = op.ok + op.errors;
            let _ = writeln!(out, "trailwatch_api_request_duration_seconds_bucket{{operation=\"{name}\",le=\"+Inf\"}} {total}");
            let _ = writeln!(out, "trailwatch_api_request_duration_seconds_sum{{operation=\"{name}\"}} {}", op.sum);
            let _ = writeln!(out, "trailwatch_api_request_duration_seconds_count{{operation=\"{name}\"}} {total}");
        }
        let _ = writeln!(out, "# HELP trailwatch_api_unauthorized_total Requests refused for a missing or wrong token.");
        let _ = writeln!(out, "# TYPE trailwatch_api_unauthorized_total counter");
        let _ = writeln!(out, "trailwatch_api_unauthorized_total {}", self.unauthorized.lock().unwrap_or_else(PoisonError::into_inner));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_labels_are_clean_and_bounded() {
        let m = Metrics::default();
        m.record(Some("Open\"Alerts}"), Duration::from_millis(3), true);
        for i in 0..150 {
            m.record(Some(&format!("op{i}")), Duration::from_millis(1), false);
        }
        let text = m.render();
        assert!(text.contains(r#"trailwatch_api_requests_total{operation="OpenAlerts",outcome="ok"} 1"#), "{text}");
        assert!(text.contains(r#"operation="other""#));
        assert!(!text.contains("op120"));
    }
}
