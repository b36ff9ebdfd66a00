//! Rules and alerts in the enricher: each stored batch is checked against
//! the rules, the matches drive the alert lifecycle (stored with their
//! outbox entries in one write), origins settled later update the alerts
//! that carry them, and alerts quiet for their rule's period resolve — all
//! in trail time, so a backfill raises what live ingest would have.
//!
//! An event checked while its origin was `pending` is checked again when
//! the origin settles (or the chain moves a hop further back), against the rules whose condition tests an origin
//! field ([`Detector::check_settled`]): the event is read back from history
//! and given its new origin. A rule set without such rules (the built-in
//! pack) reads nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tracing::warn;

use trailwatch_core::accounts::SharedDirectory;
use trailwatch_core::alerts::lifecycle::{Lifecycle, LifecycleReport};
use trailwatch_core::alerts::Detection;
use trailwatch_core::event::Event;
use trailwatch_core::ports::{HistoryStore, OriginUpdate, PortError};
use trailwatch_core::rules::{Detector, RuleSet};
use trailwatch_core::stats::{PipelineStats, Stage};
use trailwatch_core::time::EpochMillis;

use crate::delivery::DeliveryHandle;
use crate::{now_ms, with_retries, EnricherConfig};

/// What the enricher needs to raise alerts.
#[derive(Clone)]
pub struct AlertPorts {
    pub rules: Arc<RuleSet>,
    pub lifecycle: Arc<Lifecycle>,
    /// Account names; replaced while running when refreshed from Organizations.
    pub accounts: Arc<SharedDirectory>,
    /// Told after each commit that queued notifications, so delivery starts at once.
    pub delivery: Option<DeliveryHandle>,
    /// Threshold windows: how late an event may arrive and still count, and how many groups a rule keeps.
    pub detector: trailwatch_core::rules::DetectorConfig,
}

/// The enricher's alerting state: the detector (with its threshold windows)
/// and the newest event time seen.
pub(crate) struct Alerting {
    ports: AlertPorts,
    detector: Detector,
    detections: Vec<Detection>,
    watermark: EpochMillis,
}

impl Alerting {
    pub(crate) fn new(ports: AlertPorts) -> Self {
        let detector = Detector::with_config(ports.rules.clone(), ports.detector.clone());
        Alerting { ports, detector, detections: Vec::new(), watermark: EpochMillis::MIN }
    }

    /// Checks stored events against the rules, and the events whose origin
    /// settled against the rules on origin fields, and applies the matches;
    /// then origin updates, then quiet resolution up to the newest event time.
    pub(crate) async fn process(
        &mut self,
        config: &EnricherConfig,
        history: &dyn HistoryStore,
        events: &[Event],
        updates: &[OriginUpdate],
        stats: &PipelineStats,
    ) -> Result<(), PortError> {
        let started = Instant::now();
        self.detections.clear();
        let accounts = self.ports.accounts.current();
        for event in events {
            self.watermark = self.watermark.max(event.event_time);
            let alias = accounts.alias(&event.account_id);
            self.detector.check(event, alias, &mut self.detections);
        }
        if !updates.is_empty() && self.ports.rules.has_origin_rules() {
            self.check_settled(config, history, updates).await;
        }
        PipelineStats::add(&stats.detections, self.detections.len() as u64);
        stats.stages.since(Stage::Rules, started);
        let started = Instant::now();
        let mut notifications = 0;
        let lifecycle = &self.ports.lifecycle;
        if !self.detections.is_empty() {
            let detections = &self.detections;
            let report = with_retries(config, "alert lifecycle", || lifecycle.apply(detections, now_ms())).await?;
            notifications += count(stats, &report);
        }
        if !updates.is_empty() {
            match with_retries(config, "alert origin update", || lifecycle.origins_settled(updates, now_ms())).await {
                Ok(n) => {
                    PipelineStats::add(&stats.alerts_updated, n);
                    notifications += n;
                }
                // The events keep their new origins; the alerts keep the old one until the next update.
                Err(e) => warn!(error = %e, updates = updates.len(), "updating the origins of alerts failed"),
            }
        }
        if self.watermark > EpochMillis::MIN {
            let watermark = self.watermark;
            let resolved = with_retries(config, "alert quiet sweep", || lifecycle.sweep(watermark, now_ms())).await?;
            PipelineStats::add(&stats.alerts_resolved, resolved);
            notifications += resolved;
        }
        if notifications > 0 {
            if let Some(delivery) = &self.ports.delivery {
                delivery.notify();
            }
        }
        stats.stages.since(Stage::Alerts, started);
        Ok(())
    }

    /// Reads each updated event back from history, gives it its new origin
    /// and checks it against the rules on origin fields. An event that
    /// cannot be read is skipped (one warning per batch): its update is not
    /// repeated, so failing the batch would not bring the check back.
    async fn check_settled(&mut self, config: &EnricherConfig, history: &dyn HistoryStore, updates: &[OriginUpdate]) {
        // One event may be updated twice in a batch (a hop further back, then final): the last counts.
        let mut last: HashMap<(&str, &str), usize> = HashMap::with_capacity(updates.len());
        for (i, u) in updates.iter().enumerate() {
            last.insert((u.account_id.as_str(), u.event_id.as_str()), i);
        }
        let latest: Vec<&OriginUpdate> =
            updates.iter().enumerate().filter(|(i, u)| last.get(&(u.account_id.as_str(), u.event_id.as_str())) == Some(i)).map(|(_, u)| u).collect();
        let accounts = self.ports.accounts.current();
        // One read per chunk (on AWS each read is an Athena query).
        for chunk in latest.chunks(SETTLED_READ) {
            let keys: Vec<(String, String)> = chunk.iter().map(|u| (u.account_id.clone(), u.event_id.clone())).collect();
            let events = match with_retries(config, "history get_many", || history.get_many(&keys)).await {
                Ok(events) => events,
                Err(e) => {
                    warn!(error = %e, events = keys.len(), account_id = %keys[0].0, event_id = %keys[0].1, "reading events whose origin settled failed; the rules on origin fields miss them");
                    continue;
                }
            };
            let origins: HashMap<(&str, &str), &OriginUpdate> = chunk.iter().map(|u| ((u.account_id.as_str(), u.event_id.as_str()), *u)).collect();
            // Events not stored (their batch failed to store) are checked when their file is read again.
            for mut event in events {
                let Some(update) = origins.get(&(event.account_id.as_str(), event.event_id.as_str())) else { continue };
                event.origin = Some(update.origin.clone());
                let alias = accounts.alias(&event.account_id);
                self.detector.check_settled(&event, alias, &mut self.detections);
            }
        }
    }
}

/// Events whose origin settled read back at once.
const SETTLED_READ: usize = 500;

fn count(stats: &PipelineStats, report: &LifecycleReport) -> u64 {
    PipelineStats::add(&stats.alerts_opened, report.opened);
    PipelineStats::add(&stats.alerts_updated, report.updated);
    PipelineStats::add(&stats.alerts_resolved, report.resolved);
    report.notifications
}
