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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use tracing::warn;

use async_trait::async_trait;
use trailwatch_core::accounts::SharedDirectory;
use trailwatch_core::alerts::lifecycle::{Lifecycle, LifecycleReport};
use trailwatch_core::alerts::Detection;
use trailwatch_core::event::Event;
use trailwatch_core::identity::Origin;

use trailwatch_core::ports::{HistoryPage, HistoryQuery, HistoryStore, OriginUpdate, PortError};
use trailwatch_core::rules::{Detector, RuleSet};
use trailwatch_core::stats::{PipelineStats, Stage};
use trailwatch_core::time::EpochMillis;

use crate::delivery::DeliveryHandle;
use crate::{now_ms, with_deadline, with_retries, EnricherConfig};

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
    /// Where a new process refills its threshold windows from, before its
    /// first batch (see [`Alerting::refill_thresholds`]); `None` starts them
    /// empty.
    pub refill: Option<Arc<dyn RecentEvents>>,
}

/// The stored events a new process refills its threshold windows from:
/// the embedded store's history ([`StoredEvents`]), or, where finding the
/// newest stored event is costly, a history read around the first batch
/// ([`WindowBeforeBatch`]: on AWS one Athena query).
#[async_trait]
pub trait RecentEvents: Send + Sync {
    /// The newest stored event's time, if any event is stored; None also
    /// where it is not looked up (the first batch's newest event is used).
    async fn newest_event_time(&self) -> Result<Option<EpochMillis>, PortError>;
    /// One page of the stored events `query` selects.
    async fn recent_page(&self, query: &HistoryQuery) -> Result<HistoryPage, PortError>;
}

/// [`RecentEvents`] from a history store.
pub struct StoredEvents(pub Arc<dyn HistoryStore>);

#[async_trait]
impl RecentEvents for StoredEvents {
    async fn newest_event_time(&self) -> Result<Option<EpochMillis>, PortError> {
        Ok(self.0.last_events().await?.iter().map(|l| l.event_time).max())
    }

    async fn recent_page(&self, query: &HistoryQuery) -> Result<HistoryPage, PortError> {
        self.0.page(query).await
    }
}

/// [`RecentEvents`] from a history store whose newest event is not looked
/// up (in AWS mode that is a listing of every account's and region's
/// partitions): the windows are refilled up to the first batch's newest
/// event, which after a restart is where the stream goes on.
pub struct WindowBeforeBatch(pub Arc<dyn HistoryStore>);

#[async_trait]
impl RecentEvents for WindowBeforeBatch {
    async fn newest_event_time(&self) -> Result<Option<EpochMillis>, PortError> {
        Ok(None)
    }

    async fn recent_page(&self, query: &HistoryQuery) -> Result<HistoryPage, PortError> {
        self.0.page(query).await
    }
}

/// The enricher's alerting state: the detector (with its threshold windows)
/// and the newest event time seen.
pub(crate) struct Alerting {
    ports: AlertPorts,
    detector: Detector,
    detections: Vec<Detection>,
    watermark: EpochMillis,
    /// The threshold windows were refilled from history (or need not be, or
    /// the refill failed [`MAX_REFILL_TRIES`] times).
    warmed: bool,
    refill_tries: u32,
    /// Detections whose alerts could not be written, tried again with the
    /// next batch: their events are stored, and a file read again would not
    /// bring a threshold's matches back (the restart's refill counts them
    /// without applying them).
    carried: Vec<Detection>,
    /// Batches in a row that carried detections.
    carried_tries: u32,
    /// Origin updates the alerts could not take, tried again with the next
    /// batch (bounded like detections; past the bound they are logged and dropped).
    carried_updates: Vec<OriginUpdate>,
}

/// Batches that try to refill the threshold windows while history cannot be read.
const MAX_REFILL_TRIES: u32 = 10;

/// Detections carried at most, and batches in a row that may carry them;
/// past either the batch fails (its files are read again).
const MAX_CARRIED: usize = 50_000;
const MAX_CARRIED_TRIES: u32 = 20;

impl Alerting {
    pub(crate) fn new(ports: AlertPorts) -> Self {
        let detector = Detector::with_config(ports.rules.clone(), ports.detector.clone()).holding_until_settled();
        Alerting {
            ports,
            detector,
            detections: Vec::new(),
            watermark: EpochMillis::MIN,
            warmed: false,
            refill_tries: 0,
            carried: Vec::new(),
            carried_tries: 0,
            carried_updates: Vec::new(),
        }
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
        if !self.warmed {
            match self.ports.refill.clone() {
                None => self.warmed = true,
                Some(recent) => match self.refill_thresholds(config, stats, recent.as_ref(), events).await {
                    Ok(()) => self.warmed = true,
                    // History unreadable (on AWS: Athena failing): the batch
                    // goes on, and the refill is tried again with the next
                    // batches (an event counted both ways counts once).
                    Err(e) => {
                        self.refill_tries += 1;
                        self.warmed = self.refill_tries >= MAX_REFILL_TRIES;
                        if self.warmed {
                            warn!(error = %e, tries = self.refill_tries, "refilling the threshold windows failed; they start from this batch");
                        } else {
                            warn!(error = %e, tries = self.refill_tries, "refilling the threshold windows failed; trying again with the next batch");
                        }
                    }
                },
            }
            // What the refill fired was applied before the restart.
            self.detector.settle(true);
        }
        self.detections.clear();
        let accounts = self.ports.accounts.current();
        for event in events {
            self.watermark = self.watermark.max(event.event_time);
            let alias = accounts.alias(&event.account_id);
            self.detector.check(event, alias, &mut self.detections);
        }
        if !updates.is_empty() && self.ports.rules.has_origin_rules() {
            self.check_settled(config, stats, history, updates).await;
        }
        PipelineStats::add(&stats.detections, self.detections.len() as u64);
        stats.stages.since(Stage::Rules, started);
        let started = Instant::now();
        let mut notifications = 0;
        let lifecycle = &self.ports.lifecycle;
        if !self.carried.is_empty() {
            // Older matches first, as they were found.
            let mut carried = std::mem::take(&mut self.carried);
            carried.append(&mut self.detections);
            self.detections = carried;
        }
        let carried_updates;
        let updates = if self.carried_updates.is_empty() {
            updates
        } else {
            carried_updates = std::mem::take(&mut self.carried_updates).into_iter().chain(updates.iter().cloned()).collect::<Vec<_>>();
            &carried_updates[..]
        };
        if !updates.is_empty() && !self.detections.is_empty() {
            // A match carried from an earlier batch, whose event's origin
            // settled since, takes the settled origin: its alert did not
            // exist yet when the update came, so the update found nothing.
            let settled: HashMap<(&str, &str), &Origin> = updates.iter().map(|u| ((u.account_id.as_str(), u.event_id.as_str()), &u.origin)).collect();
            for d in &mut self.detections {
                if let Some(origin) = settled.get(&(d.event.account_id.as_str(), d.event.event_id.as_str())) {
                    d.origin = Some((*origin).clone());
                }
            }
        }
        if !self.detections.is_empty() {
            let detections = &self.detections;
            match with_retries(config, stats, "alert lifecycle", || lifecycle.apply(detections, now_ms())).await {
                Ok(report) => {
                    self.carried_tries = 0;
                    notifications += count(stats, &report);
                }
                Err(e) if self.detections.len() <= MAX_CARRIED && self.carried_tries < MAX_CARRIED_TRIES => {
                    self.carried_tries += 1;
                    warn!(error = %e, detections = self.detections.len(), tries = self.carried_tries, "writing alerts failed; trying again with the next batch");
                    self.carried = std::mem::take(&mut self.detections);
                }
                Err(e) => {
                    self.carried_tries = 0;
                    // The batch's files are read again: the threshold matches it fired fire again then.
                    self.detector.settle(false);
                    return Err(e);
                }
            }
        }
        // Applied, or carried to the next batch.
        self.detector.settle(true);
        if !updates.is_empty() {
            match with_retries(config, stats, "alert origin update", || lifecycle.origins_settled(updates, now_ms())).await {
                Ok(n) => {
                    PipelineStats::add(&stats.alerts_updated, n);
                    notifications += n;
                }
                // The events keep their new origins; the alerts take them with the next batch.
                Err(e) if updates.len() <= MAX_CARRIED => {
                    warn!(error = %e, updates = updates.len(), "updating the origins of alerts failed; trying again with the next batch");
                    self.carried_updates = updates.to_vec();
                }
                Err(e) => {
                    warn!(error = %e, updates = updates.len(), "updating the origins of alerts failed; too many to carry, the alerts keep their old origins")
                }
            }
        }
        if self.watermark > EpochMillis::MIN {
            let watermark = self.watermark;
            let resolved = with_retries(config, stats, "alert quiet sweep", || lifecycle.sweep(watermark, now_ms())).await?;
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

    /// Writes the detections still carried (at the end of a run); false when
    /// they could not be written (logged).
    pub(crate) async fn flush(&mut self, config: &EnricherConfig, stats: &PipelineStats) -> bool {
        let lifecycle = &self.ports.lifecycle;
        let updates = std::mem::take(&mut self.carried_updates);
        if !updates.is_empty() {
            if let Err(e) = with_retries(config, stats, "alert origin update", || lifecycle.origins_settled(&updates, now_ms())).await {
                tracing::error!(error = %e, updates = updates.len(), "updating the origins of alerts failed at the end of the run; they keep their old origins");
            }
        }
        if self.carried.is_empty() {
            return true;
        }
        let carried = std::mem::take(&mut self.carried);
        match with_retries(config, stats, "alert lifecycle", || lifecycle.apply(&carried, now_ms())).await {
            Ok(report) => {
                count(stats, &report);
                if let Some(delivery) = &self.ports.delivery {
                    delivery.notify();
                }
                true
            }
            Err(e) => {
                tracing::error!(error = %e, detections = carried.len(), "writing alerts failed at the end of the run; these matches raise no alert");
                false
            }
        }
    }

    /// Threshold rules count matches in memory, so a new process would
    /// start their windows empty: a burst whose first events were handled
    /// before a restart would be counted from the restart on (fewer
    /// matches, or no alert at all). This checks the events stored within
    /// the longest threshold window (and the lateness allowed) of the
    /// newest stored event again, oldest first, to fill the windows, and
    /// drops their detections (the lifecycle applied them before). One more
    /// window before that is read too: a match near the start of the refill
    /// fired before the restart if it made a burst with matches before it,
    /// and reading those marks it fired, so a burst it joins after the
    /// restart does not apply it twice. The first batch's
    /// own events are left out: a file read again after a crash stored its
    /// events already, and they count once, now.
    async fn refill_thresholds(&mut self, config: &EnricherConfig, stats: &PipelineStats, recent: &dyn RecentEvents, batch: &[Event]) -> Result<(), PortError> {
        let Some(window) = self.ports.rules.rules().iter().filter_map(|r| r.threshold.as_ref()).map(|t| t.window_ms).max() else { return Ok(()) };
        let stored = with_deadline(config, stats, "history newest event", || recent.newest_event_time()).await?;
        let Some(newest) = stored.into_iter().chain(batch.iter().map(|e| e.event_time)).max() else { return Ok(()) };
        let since = newest.saturating_sub(window.saturating_mul(2)).saturating_sub(self.ports.detector.lateness_ms);
        let skip: HashSet<(&str, &str)> = batch.iter().map(|e| (e.account_id.as_str(), e.event_id.as_str())).collect();
        let accounts = self.ports.accounts.current();
        // Bounded both ways: on AWS the query reads only the days of the window.
        let mut query = HistoryQuery { since: Some(since), until: Some(newest.saturating_add(1)), limit: SETTLED_READ, ..Default::default() };
        let mut dropped = Vec::new();
        loop {
            let page = with_deadline(config, stats, "history page", || recent.recent_page(&query)).await?;
            for event in page.events.iter().filter(|e| !skip.contains(&(e.account_id.as_str(), e.event_id.as_str()))) {
                self.detector.check(event, accounts.alias(&event.account_id), &mut dropped);
                dropped.clear();
            }
            match page.next {
                Some(next) => query.after = Some(next),
                None => return Ok(()),
            }
        }
    }

    /// Reads each updated event back from history, gives it its new origin
    /// and checks it against the rules on origin fields. An event that
    /// cannot be read is skipped (one warning per batch): its update is not
    /// repeated, so failing the batch would not bring the check back.
    async fn check_settled(&mut self, config: &EnricherConfig, stats: &PipelineStats, history: &dyn HistoryStore, updates: &[OriginUpdate]) {
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
            let events = match with_deadline(config, stats, "history get_many", || history.get_many(&keys)).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use trailwatch_core::accounts::AccountDirectory;
    use trailwatch_core::alerts::lifecycle::LifecycleConfig;
    use trailwatch_core::alerts::{AlertQuery, AlertStore, MemoryAlertStore};
    use trailwatch_core::conformance::sample_event;
    use trailwatch_core::memory::MemoryHistory;
    use trailwatch_core::rules::RuleSource;

    const BURST: &str = r#"title: Many instance listings
id: listing-burst
level: high
logsource:
  product: aws
  service: cloudtrail
detection:
  selection:
    eventName: DescribeInstances
  condition: selection
threshold:
  above: 3
  window: 5m
  by: [recipientAccountId]
summary: 'listing burst in {account}'
"#;

    /// Ports with the burst rule, and the alert store and history behind them.
    fn burst_ports() -> (AlertPorts, Arc<MemoryAlertStore>, Arc<MemoryHistory>) {
        let rules = Arc::new(RuleSet::load(&[RuleSource { path: "user/listing-burst.yml".into(), text: BURST.into() }]).unwrap());
        let alerts = Arc::new(MemoryAlertStore::new());
        let lifecycle = Arc::new(Lifecycle::new(alerts.clone(), vec![], LifecycleConfig::default()));
        let ports =
            AlertPorts { rules, lifecycle, accounts: Arc::new(AccountDirectory::new().into()), delivery: None, detector: Default::default(), refill: None };
        (ports, alerts, Arc::new(MemoryHistory::new()))
    }

    /// A process that stores and checks `events` (one batch), as the enricher does.
    async fn one_process(ports: &AlertPorts, history: &Arc<MemoryHistory>, warm: bool, events: Vec<Event>) {
        let mut ports = ports.clone();
        if warm {
            ports.refill = Some(Arc::new(StoredEvents(history.clone())));
        }
        history.append(events.clone().into()).await.unwrap();
        Alerting::new(ports).process(&EnricherConfig::default(), history.as_ref(), &events, &[], &PipelineStats::default()).await.unwrap();
    }

    /// One process reading the files of a burst in two batches, in either
    /// order (a late file, batches made differently after a restart): the
    /// alert holds the same matches, from the burst's first.
    #[tokio::test]
    async fn a_burst_read_in_any_order_raises_the_same_alert() {
        let mut seen = Vec::new();
        for late_first in [false, true] {
            let (ports, alerts, history) = burst_ports();
            let base = 1_790_000_000_000;
            let event = |i: i64| sample_event("111122223333", &format!("ev-{i}"), base + i * 30_000);
            let (early, late): (Vec<Event>, Vec<Event>) = ((0..3).map(event).collect(), (3..8).map(event).collect());
            let batches = if late_first { [late, early] } else { [early, late] };
            let mut alerting = Alerting::new(ports);
            for batch in batches {
                history.append(batch.clone().into()).await.unwrap();
                alerting.process(&EnricherConfig::default(), history.as_ref(), &batch, &[], &PipelineStats::default()).await.unwrap();
            }
            let page = alerts.list(&AlertQuery { limit: 10, ..Default::default() }).await.unwrap();
            seen.push(page.alerts.iter().map(|a| (a.count, a.first_seen - base, a.last_seen - base)).collect::<Vec<_>>());
        }
        assert_eq!(seen[0], [(8, 0, 7 * 30_000)], "all eight listings, from the first");
        assert_eq!(seen[1], seen[0], "the later file read first");
    }

    /// Four matches within the window, two before a restart and two after:
    /// with the windows refilled from history the burst raises its alert, as
    /// one process would; without, the count starts again and nothing is raised.
    #[tokio::test]
    async fn a_threshold_burst_split_by_a_restart_is_counted_whole() {
        for warm in [true, false] {
            let (ports, alerts, history) = burst_ports();
            let base = 1_790_000_000_000;
            let event = |i: i64| sample_event("111122223333", &format!("ev-{i}"), base + i * 60_000);
            one_process(&ports, &history, warm, vec![event(0), event(1)]).await;
            // A file read again after a crash: its stored events count once.
            one_process(&ports, &history, warm, vec![event(1), event(2), event(3)]).await;
            let page = alerts.list(&AlertQuery { limit: 10, ..Default::default() }).await.unwrap();
            let counts: Vec<u64> = page.alerts.iter().map(|a| a.count).collect();
            if warm {
                assert_eq!(counts, [4], "the fourth listing within five minutes raises the alert, holding the burst's four, each once");
            } else {
                assert!(counts.is_empty(), "without refilling, the restart loses the burst: {counts:?}");
            }
        }
    }
}
