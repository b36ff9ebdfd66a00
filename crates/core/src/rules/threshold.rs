//! Sliding-window counts for threshold rules, in trail time.
//!
//! Each group (the values of the rule's `threshold.by` fields) keeps the
//! event times of its matches, sorted, each with its event's identity: an
//! event matched again (its file read again after a crash, or counted by the
//! refill after a restart and then read again) counts once. A match at `t` counts the densest
//! window of the rule's length that contains `t`, so an event that arrives
//! a few minutes late still completes the burst it belongs to. Times older
//! than the newest event time seen minus the window and the allowed
//! lateness are dropped, groups with nothing left go, and a rule keeps at
//! most `max_groups_per_rule` groups (the quietest is dropped, with a
//! warning, when a new one would exceed that).

use std::collections::{HashMap, VecDeque};

use crate::time::EpochMillis;

use super::Threshold;

/// Times kept per group beyond what the threshold needs to fire.
const SPARE_TIMES: usize = 64;

#[derive(Debug, Default)]
struct Group {
    /// Match times and their events' identities, oldest first.
    times: VecDeque<(EpochMillis, u64)>,
}

/// The groups of one threshold rule.
#[derive(Debug, Default)]
pub(crate) struct Windows {
    groups: HashMap<String, Group>,
    /// Groups dropped because of the cap.
    pub dropped: u64,
    /// Trail time of the last warning about dropping groups.
    warned_at: Option<EpochMillis>,
}

/// What [`Windows::record`] needs to know besides the match.
pub(crate) struct Limits<'a> {
    pub rule_id: &'a str,
    /// The newest event time seen (trail time).
    pub now: EpochMillis,
    pub lateness_ms: i64,
    pub max_groups: usize,
}

impl Windows {
    /// Records a match of group `key` at `at` by the event `event` (an
    /// identity of its account and `eventID`; a match recorded already is
    /// not counted again); returns the most matches of the group within one
    /// window that contains `at`.
    pub fn record(&mut self, key: &str, at: EpochMillis, event: u64, threshold: &Threshold, limits: &Limits<'_>) -> u64 {
        let horizon = limits.now.saturating_sub(threshold.window_ms).saturating_sub(limits.lateness_ms);
        if !self.groups.contains_key(key) {
            if self.groups.len() >= limits.max_groups.max(1) {
                self.expire(horizon);
                if self.groups.len() >= limits.max_groups.max(1) {
                    self.drop_quietest(limits, threshold.window_ms);
                }
            }
            self.groups.insert(key.to_owned(), Group::default());
        }
        let Some(group) = self.groups.get_mut(key) else { return 0 };
        let times = &mut group.times;
        let at_index = times.partition_point(|&t| t <= (at, event));
        if at_index == 0 || times[at_index - 1] != (at, event) {
            times.insert(at_index, (at, event));
        }
        let count = densest(times, at, threshold.window_ms);
        let cap = usize::try_from(threshold.above).unwrap_or(usize::MAX).saturating_add(1).saturating_add(SPARE_TIMES);
        while times.len() > cap {
            times.pop_front();
        }
        while times.front().is_some_and(|&(t, _)| t < horizon) {
            times.pop_front();
        }
        if times.is_empty() {
            self.groups.remove(key);
        }
        count
    }

    /// Forgets times before `horizon`, and groups left with none.
    pub fn expire(&mut self, horizon: EpochMillis) {
        self.groups.retain(|_, g| {
            while g.times.front().is_some_and(|&(t, _)| t < horizon) {
                g.times.pop_front();
            }
            !g.times.is_empty()
        });
    }

    fn drop_quietest(&mut self, limits: &Limits<'_>, window_ms: i64) {
        let quietest = self.groups.iter().min_by_key(|(_, g)| g.times.back().map_or(EpochMillis::MIN, |&(t, _)| t)).map(|(k, _)| k.clone());
        if let Some(key) = quietest {
            self.groups.remove(&key);
            self.dropped += 1;
            let due = self.warned_at.is_none_or(|at| limits.now.saturating_sub(at) >= window_ms);
            if due {
                self.warned_at = Some(limits.now);
                tracing::warn!(
                    rule = limits.rule_id,
                    max_groups = limits.max_groups,
                    dropped_total = self.dropped,
                    "threshold rule has more groups than its cap: dropping the quietest group's counts"
                );
            }
        }
    }

    pub fn groups(&self) -> usize {
        self.groups.len()
    }
}

/// The most times within one window of `window_ms` that contains `at`
/// (`times` sorted, `at` among them).
fn densest(times: &VecDeque<(EpochMillis, u64)>, at: EpochMillis, window_ms: i64) -> u64 {
    let first = times.partition_point(|&(t, _)| t < at.saturating_sub(window_ms));
    let mut best = 0usize;
    for i in first..times.len() {
        let start = times[i].0;
        if start > at {
            break;
        }
        let end = times.partition_point(|&(t, _)| t <= start.saturating_add(window_ms));
        best = best.max(end - i);
    }
    u64::try_from(best).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn limits(now: EpochMillis) -> Limits<'static> {
        Limits { rule_id: "r", now, lateness_ms: 10 * MIN, max_groups: 2 }
    }

    /// A distinct event per match time.
    fn id(at: EpochMillis) -> u64 {
        at as u64
    }

    fn five_minutes(above: u64) -> Threshold {
        Threshold { above, window_ms: 5 * MIN, by: Vec::new() }
    }

    #[test]
    fn counts_the_densest_window_around_each_match() {
        let t = five_minutes(3);
        let mut w = Windows::default();
        let counts: Vec<u64> = [0, MIN, 2 * MIN, 3 * MIN].iter().map(|&at| w.record("a", at, id(at), &t, &limits(at))).collect();
        assert_eq!(counts, [1, 2, 3, 4]);
        let mut spread = Windows::default();
        let counts: Vec<u64> = [0, 3 * MIN, 6 * MIN, 9 * MIN].iter().map(|&at| spread.record("a", at, id(at), &t, &limits(at))).collect();
        assert_eq!(counts, [1, 2, 2, 2]);
    }

    #[test]
    fn a_late_match_completes_its_burst() {
        let t = five_minutes(3);
        let mut w = Windows::default();
        let now = 4 * MIN;
        for at in [MIN, 2 * MIN, 4 * MIN] {
            assert!(w.record("a", at, id(at), &t, &limits(now)) <= 3);
        }
        assert_eq!(w.record("a", 0, id(0), &t, &limits(now)), 4, "the late match at 0 makes 4 within 0..5m");
    }

    #[test]
    fn an_event_matched_again_counts_once() {
        let t = five_minutes(3);
        let mut w = Windows::default();
        for at in [0, MIN, 2 * MIN] {
            w.record("a", at, id(at), &t, &limits(at));
        }
        // The same three events again (their file read again after a crash): still three.
        for at in [0, MIN, 2 * MIN] {
            assert_eq!(w.record("a", at, id(at), &t, &limits(2 * MIN)), 3);
        }
        // Another event at the same time as one of them is a fourth.
        assert_eq!(w.record("a", MIN, id(MIN) + 1, &t, &limits(2 * MIN)), 4);
    }

    #[test]
    fn old_times_expire_and_groups_are_capped() {
        let t = five_minutes(3);
        let mut w = Windows::default();
        w.record("a", 0, id(0), &t, &limits(0));
        w.record("b", MIN, id(MIN), &t, &limits(MIN));
        // Far later: "a" and "b" have expired, so "c" fits without dropping anything.
        w.record("c", 60 * MIN, id(60 * MIN), &t, &limits(60 * MIN));
        assert_eq!((w.groups(), w.dropped), (1, 0));
        w.record("d", 60 * MIN, id(60 * MIN), &t, &limits(60 * MIN));
        w.record("e", 61 * MIN, id(61 * MIN), &t, &limits(61 * MIN));
        assert_eq!((w.groups(), w.dropped), (2, 1), "the cap of 2 groups dropped the quietest");
        w.expire(100 * MIN);
        assert_eq!(w.groups(), 0);
    }
}
