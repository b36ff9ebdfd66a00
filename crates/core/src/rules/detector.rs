//! Checking events against the rules: the index lookup, the evaluation of
//! the candidate rules on the parsed record, thresholds, and the
//! [`Detection`]s that come out.

use std::sync::Arc;

use crate::alerts::{Detection, EventRef};
use crate::event::Event;
use crate::time::EpochMillis;

use super::field::{render, Ctx, FieldPath};
use super::json::Json;
use super::parse::DEFAULT_DEDUP_BY;
use super::threshold::{Limits, Windows};
use super::{Rule, RuleSet};

/// How often (in trail time) threshold windows are swept for expired groups.
const SWEEP_EVERY_MS: i64 = 60_000;

/// Limits of the threshold state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectorConfig {
    /// Groups a threshold rule keeps at most; past it the quietest is dropped.
    pub max_groups_per_rule: usize,
    /// How late (behind the newest event time seen) a match may arrive and
    /// still be counted with the matches around it.
    pub lateness_ms: i64,
    /// Detections a threshold rule holds at most for matches waiting to be
    /// part of a burst (about a kilobyte each); past it, new matches count
    /// but join no alert until room is made.
    pub max_waiting_per_rule: usize,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig { max_groups_per_rule: 10_000, lateness_ms: 15 * 60_000, max_waiting_per_rule: 20_000 }
    }
}

/// What a detector has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DetectorStats {
    pub events: u64,
    /// Events checked again because their origin settled ([`Detector::check_settled`]).
    pub settled: u64,
    /// Events whose record was parsed (at least one rule was a candidate).
    pub events_parsed: u64,
    /// Rule evaluations (one rule on one event).
    pub evaluations: u64,
    /// Evaluations whose detection matched (before thresholds).
    pub matches: u64,
    pub detections: u64,
    /// Records that could not be parsed as JSON (none should be: events are validated).
    pub unreadable: u64,
    /// Threshold groups held now, over all rules.
    pub threshold_groups: u64,
    /// Threshold groups dropped because of the cap.
    pub groups_dropped: u64,
    /// Detections threshold rules hold now for matches waiting to be part of a burst.
    pub threshold_waiting: u64,
    /// Threshold matches that waited without their detection (past the cap): counted, in no alert.
    pub threshold_unheld: u64,
}

/// Checks events against a rule set, keeping the threshold counts. One per
/// pipeline; not shared between threads.
#[derive(Debug)]
pub struct Detector {
    rules: Arc<RuleSet>,
    config: DetectorConfig,
    /// Per rule, in the set's order: threshold state (threshold rules only).
    windows: Vec<Option<Windows<Box<Detection>>>>,
    /// Threshold matches fired stay tentative until [`Detector::settle`].
    hold_fired: bool,
    evaluations: Vec<u64>,
    stats: DetectorStats,
    /// Reused for every event.
    candidates: Vec<usize>,
    newest: EpochMillis,
    next_sweep: EpochMillis,
}

impl Detector {
    pub fn new(rules: Arc<RuleSet>) -> Self {
        Detector::with_config(rules, DetectorConfig::default())
    }

    pub fn with_config(rules: Arc<RuleSet>, config: DetectorConfig) -> Self {
        let windows = rules.rules().iter().map(|r| r.threshold.as_ref().map(|_| Windows::default())).collect();
        let evaluations = vec![0; rules.rules().len()];
        Detector {
            rules,
            config,
            windows,
            evaluations,
            stats: DetectorStats::default(),
            candidates: Vec::new(),
            newest: EpochMillis::MIN,
            next_sweep: EpochMillis::MIN,
            hold_fired: false,
        }
    }

    /// Holds the threshold matches that fire as tentative until
    /// [`Detector::settle`], for a caller that may fail to apply them and
    /// read their events again.
    pub fn holding_until_settled(mut self) -> Self {
        self.hold_fired = true;
        self
    }

    /// Settles the threshold matches fired since the last call (with
    /// [`Detector::holding_until_settled`]): `keep` when their detections
    /// were applied; otherwise they are taken back, and fire again when
    /// their events are read again (or with the next match of their burst).
    pub fn settle(&mut self, keep: bool) {
        for windows in self.windows.iter_mut().flatten() {
            windows.settle(keep);
        }
    }

    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    pub fn stats(&self) -> DetectorStats {
        let mut stats = self.stats.clone();
        stats.groups_dropped = self.windows.iter().flatten().map(|w| w.dropped).sum();
        stats.threshold_groups = self.windows.iter().flatten().map(|w| w.groups() as u64).sum();
        stats.threshold_waiting = self.windows.iter().flatten().map(|w| w.held() as u64).sum();
        stats.threshold_unheld = self.windows.iter().flatten().map(|w| w.unheld).sum();
        stats
    }

    /// How many times the rule with this id was evaluated.
    pub fn evaluations_of(&self, rule_id: &str) -> u64 {
        self.rules.rules().iter().position(|r| r.id == rule_id).map_or(0, |i| self.evaluations[i])
    }

    /// Checks one event; pushes a detection per matching rule. A threshold
    /// rule's match waits until it is part of a burst (more than `above`
    /// matches of its group within one window); then every match of the
    /// burst not fired yet gives its detection, oldest first.
    pub fn check(&mut self, event: &Event, account_alias: Option<&str>, out: &mut Vec<Detection>) {
        self.stats.events += 1;
        self.advance(event.event_time);
        let mut candidates = std::mem::take(&mut self.candidates);
        self.rules.index().candidates(&event.event_name, &event.event_source, &mut candidates);
        if !candidates.is_empty() {
            self.evaluate(&candidates, event, account_alias, out);
        }
        self.candidates = candidates;
    }

    /// Checks again an event whose origin has just settled (`event.origin`
    /// is the new one), against the rules whose condition tests an origin
    /// field, through the index like [`Detector::check`]. Other rules are
    /// not evaluated: their result cannot have changed, and their threshold
    /// counts already hold the event.
    ///
    /// A rule matches here whenever it matches the settled origin, whether
    /// or not it matched the origin the event had when first checked (that
    /// origin is not at hand). A rule that matches both (one on
    /// `origin.kind: iam_user`, when the derived origin was shown while the
    /// session was missing; one on `origin.confidence|exists: true`) gives
    /// the event a second detection: the lifecycle drops it when the event
    /// is among its alert's samples, and counts it as one more match when
    /// the event fell out of them. A threshold rule counts the event once in
    /// its group: a match that has not fired yet takes the settled origin,
    /// and one that has fired does not fire again.
    pub fn check_settled(&mut self, event: &Event, account_alias: Option<&str>, out: &mut Vec<Detection>) {
        if !self.rules.has_origin_rules() {
            return;
        }
        self.stats.settled += 1;
        self.advance(event.event_time);
        let mut candidates = std::mem::take(&mut self.candidates);
        self.rules.index().candidates(&event.event_name, &event.event_source, &mut candidates);
        let rules = self.rules.rules();
        candidates.retain(|&c| rules[c].uses_origin);
        if !candidates.is_empty() {
            self.evaluate(&candidates, event, account_alias, out);
        }
        self.candidates = candidates;
    }

    /// Checks one event against one rule (through the index, like `check`).
    pub(crate) fn check_rule(&mut self, rule: usize, event: &Event, account_alias: Option<&str>, out: &mut Vec<Detection>) {
        self.stats.events += 1;
        self.advance(event.event_time);
        let mut candidates = Vec::new();
        self.rules.index().candidates(&event.event_name, &event.event_source, &mut candidates);
        candidates.retain(|&c| c == rule);
        if !candidates.is_empty() {
            self.evaluate(&candidates, event, account_alias, out);
        }
    }

    fn advance(&mut self, at: EpochMillis) {
        self.newest = self.newest.max(at);
        if self.newest < self.next_sweep {
            return;
        }
        self.next_sweep = self.newest.saturating_add(SWEEP_EVERY_MS);
        for (rule, windows) in self.rules.rules().iter().zip(&mut self.windows) {
            if let (Some(t), Some(w)) = (&rule.threshold, windows) {
                w.expire(self.newest.saturating_sub(t.window_ms).saturating_sub(self.config.lateness_ms));
            }
        }
    }

    fn evaluate(&mut self, candidates: &[usize], event: &Event, alias: Option<&str>, out: &mut Vec<Detection>) {
        let record = match Json::parse(&event.raw) {
            Ok(v) => v,
            Err(e) => {
                self.stats.unreadable += 1;
                if self.stats.unreadable == 1 || self.stats.unreadable.is_multiple_of(1000) {
                    tracing::warn!(event_id = %event.event_id, account_id = %event.account_id, error = %e, unreadable = self.stats.unreadable, "rules skipped an event whose record is not JSON");
                }
                return;
            }
        };
        self.stats.events_parsed += 1;
        let ctx = Ctx { record: &record, event, alias };
        let rules = self.rules.rules();
        for &i in candidates {
            let rule = &rules[i];
            self.stats.evaluations += 1;
            self.evaluations[i] += 1;
            if !rule.matches(&ctx) {
                continue;
            }
            self.stats.matches += 1;
            if let (Some(threshold), Some(windows)) = (&rule.threshold, &mut self.windows[i]) {
                let key = group_key(&ctx, &threshold.by, &rule.compiled.threshold_by);
                let limits = Limits {
                    rule_id: &rule.id,
                    threshold,
                    now: self.newest,
                    lateness_ms: self.config.lateness_ms,
                    max_groups: self.config.max_groups_per_rule,
                    max_waiting: self.config.max_waiting_per_rule,
                    hold_fired: self.hold_fired,
                };
                let found = Box::new(detection(rule, &ctx));
                let detections = &mut self.stats.detections;
                windows.record(&key, event.event_time, event_identity(event), found, &limits, |fired| {
                    *detections += 1;
                    out.push(*fired);
                });
                continue;
            }
            self.stats.detections += 1;
            out.push(detection(rule, &ctx));
        }
    }
}

/// An event's identity in threshold windows: its account and `eventID`.
fn event_identity(event: &Event) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (&event.account_id, &event.event_id).hash(&mut hasher);
    hasher.finish()
}

/// A group-by field's value: its text, the event's account for a record
/// without `recipientAccountId`, else `-`.
fn group_value(ctx: &Ctx<'_>, name: &str, path: &FieldPath) -> String {
    render(ctx, path).unwrap_or_else(|| if name == DEFAULT_DEDUP_BY { ctx.event.account_id.clone() } else { "-".to_owned() })
}

fn group_key(ctx: &Ctx<'_>, names: &[String], paths: &[FieldPath]) -> String {
    let mut key = String::new();
    for (n, (name, path)) in names.iter().zip(paths).enumerate() {
        if n > 0 {
            key.push('|');
        }
        key.push_str(&group_value(ctx, name, path));
    }
    key
}

fn detection(rule: &Rule, ctx: &Ctx<'_>) -> Detection {
    let mut dedup_key = rule.id.clone();
    let mut group = Vec::with_capacity(rule.dedup.by.len());
    for (name, path) in rule.dedup.by.iter().zip(&rule.compiled.dedup_by) {
        let value = group_value(ctx, name, path);
        dedup_key.push('|');
        dedup_key.push_str(&value);
        group.push((name.clone(), value));
    }
    let event = ctx.event;
    Detection {
        rule_id: Arc::clone(&rule.compiled.id),
        title: Arc::clone(&rule.compiled.title),
        severity: rule.level,
        dedup_key,
        group,
        event: EventRef { account_id: event.account_id.clone(), event_id: event.event_id.clone(), event_time: event.event_time },
        account_alias: ctx.alias.map(str::to_owned),
        summary: rule.compiled.summary.render(ctx),
        origin: event.origin.clone(),
        resolve_after_ms: rule.resolve_after_ms,
        notify_every_ms: rule.dedup.window_ms,
    }
}
