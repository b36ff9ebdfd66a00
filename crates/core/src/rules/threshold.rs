//! Sliding-window counts for threshold rules, in trail time.
//!
//! Each group (the values of the rule's `threshold.by` fields) keeps its
//! matches, sorted by event time, each with its event's identity: an event
//! matched again (its file read again after a crash, or counted by the
//! refill after a restart and then read again) counts once.
//!
//! A burst is a window of the rule's length holding more than `above`
//! matches. Every match of a burst fires, the ones before the threshold was
//! crossed included, each once: a match waits with its detection until it
//! is part of a burst. So the matches that fire do not depend on the order
//! the events are read in (a file read late, files batched differently
//! after a restart): an event that arrives a few minutes late still
//! completes the burst it belongs to, and fires with it.
//!
//! Firing can be held tentative until [`Windows::settle`]: a caller whose matches
//! could not be applied (its batch is read again) takes them back, and the
//! events fire again when read again.
//!
//! Times older than the newest event time seen minus the window and the
//! allowed lateness are dropped, groups with nothing left go, and a rule
//! keeps at most `max_groups_per_rule` groups (the quietest is dropped,
//! with a warning, when a new one would exceed that). A rule holds at most
//! `max_waiting_per_rule` detections of matches not fired yet (each about a
//! kilobyte); past it, new matches count but join no alert (a warning, and
//! [`Windows::unheld`]) until fired or expired matches make room.

use std::collections::{HashMap, VecDeque};

use crate::time::EpochMillis;

use super::Threshold;

/// Matches kept per group beyond what the threshold needs to fire.
const SPARE_TIMES: usize = 64;

/// Whether a match has fired.
#[derive(Debug)]
enum Fired<T> {
    /// Not part of a burst yet: its detection waits (None past the rule's
    /// cap of waiting detections: it counts, but gives nothing when it fires).
    No(Option<T>),
    /// Fired, not settled yet (the detection is kept in case it is taken back).
    Tentatively(T),
    Yes,
}

#[derive(Debug)]
struct Match<T> {
    at: EpochMillis,
    event: u64,
    fired: Fired<T>,
}

impl<T> Match<T> {
    fn position(&self) -> (EpochMillis, u64) {
        (self.at, self.event)
    }

    /// Whether it holds a detection.
    fn holds(&self) -> bool {
        matches!(self.fired, Fired::No(Some(_)) | Fired::Tentatively(_))
    }
}

#[derive(Debug)]
struct Group<T> {
    /// Matches, oldest first (by time, then event identity).
    matches: VecDeque<Match<T>>,
}

impl<T> Group<T> {
    fn held(&self) -> usize {
        self.matches.iter().filter(|m| m.holds()).count()
    }
}

/// The groups of one threshold rule; `T` is what a match gives when it fires.
#[derive(Debug)]
pub(crate) struct Windows<T> {
    groups: HashMap<String, Group<T>>,
    /// Groups dropped because of the cap.
    pub dropped: u64,
    /// Matches that waited without their detection (the cap of waiting
    /// detections was reached): they count, but join no alert.
    pub unheld: u64,
    /// Detections held (waiting, or fired and not settled).
    held: usize,
    /// Trail time of the last warning about dropping groups.
    warned_at: Option<EpochMillis>,
    /// Trail time of the last warning about the cap of waiting detections.
    warned_full_at: Option<EpochMillis>,
    /// Matches fired since the last [`Windows::settle`]: group, time, event.
    unsettled: Vec<(String, EpochMillis, u64)>,
}

impl<T> Default for Windows<T> {
    fn default() -> Self {
        Windows { groups: HashMap::new(), dropped: 0, unheld: 0, held: 0, warned_at: None, warned_full_at: None, unsettled: Vec::new() }
    }
}

/// What [`Windows::record`] needs to know besides the match.
pub(crate) struct Limits<'a> {
    pub rule_id: &'a str,
    pub threshold: &'a Threshold,
    /// The newest event time seen (trail time).
    pub now: EpochMillis,
    pub lateness_ms: i64,
    pub max_groups: usize,
    /// Detections the rule holds at most for matches not fired yet.
    pub max_waiting: usize,
    /// Fired matches stay tentative until [`Windows::settle`].
    pub hold_fired: bool,
}

impl<T: Clone> Windows<T> {
    /// Records a match of group `key` at `at` by the event `event` (an
    /// identity of its account and `eventID`; a match recorded already is
    /// not counted again, and fires at most once), gives `fire` what every
    /// match of the bursts it belongs to that had not fired yet gives
    /// (oldest first), and returns the most matches of the group within one
    /// window that contains `at`.
    pub fn record(&mut self, key: &str, at: EpochMillis, event: u64, found: T, limits: &Limits<'_>, mut fire: impl FnMut(T)) -> u64 {
        let threshold = limits.threshold;
        let horizon = limits.now.saturating_sub(threshold.window_ms).saturating_sub(limits.lateness_ms);
        if !self.groups.contains_key(key) {
            if self.groups.len() >= limits.max_groups.max(1) {
                self.expire(horizon);
                if self.groups.len() >= limits.max_groups.max(1) {
                    self.drop_quietest(limits, threshold.window_ms);
                }
            }
            self.groups.insert(key.to_owned(), Group { matches: VecDeque::new() });
        }
        let room = self.held < limits.max_waiting;
        let Some(group) = self.groups.get_mut(key) else { return 0 };
        let matches = &mut group.matches;
        let index = matches.partition_point(|m| m.position() < (at, event));
        match matches.get_mut(index) {
            // Read again: a match still waiting takes the newer detection (its origin may have settled).
            Some(m) if m.position() == (at, event) => match &mut m.fired {
                Fired::No(Some(waiting)) => *waiting = found,
                Fired::No(waiting @ None) if room => {
                    *waiting = Some(found);
                    self.held += 1;
                }
                _ => {}
            },
            _ => {
                let waiting = if room {
                    self.held += 1;
                    Some(found)
                } else {
                    self.unheld += 1;
                    if self.warned_full_at.is_none_or(|t| limits.now.saturating_sub(t) >= threshold.window_ms) {
                        self.warned_full_at = Some(limits.now);
                        tracing::warn!(
                            rule = limits.rule_id,
                            max_waiting = limits.max_waiting,
                            unheld_total = self.unheld,
                            "threshold rule holds as many waiting matches as its cap: new matches count, but join no alert until room is made"
                        );
                    }
                    None
                };
                matches.insert(index, Match { at, event, fired: Fired::No(waiting) });
            }
        }
        let (count, burst) = bursts(matches, at, threshold);
        if let Some(burst) = burst {
            for m in matches.range_mut(burst) {
                if !matches!(m.fired, Fired::No(_)) {
                    continue;
                }
                let Fired::No(Some(waiting)) = std::mem::replace(&mut m.fired, Fired::Yes) else { continue };
                if limits.hold_fired {
                    fire(waiting.clone());
                    m.fired = Fired::Tentatively(waiting);
                    self.unsettled.push((key.to_owned(), m.at, m.event));
                } else {
                    fire(waiting);
                    self.held -= 1;
                }
            }
        }
        let cap = usize::try_from(threshold.above).unwrap_or(usize::MAX).saturating_add(1).saturating_add(SPARE_TIMES);
        while matches.len() > cap || matches.front().is_some_and(|m| m.at < horizon) {
            if matches.pop_front().is_some_and(|m| m.holds()) {
                self.held -= 1;
            }
        }
        if matches.is_empty() {
            self.groups.remove(key);
        }
        count
    }

    /// Settles the matches fired since the last call: kept (their
    /// detections were applied), or taken back (they were not: each fires
    /// again when its event is read again, or with the next match of its burst).
    pub fn settle(&mut self, keep: bool) {
        for (key, at, event) in self.unsettled.drain(..) {
            let Some(group) = self.groups.get_mut(&key) else { continue };
            let index = group.matches.partition_point(|m| m.position() < (at, event));
            let Some(m) = group.matches.get_mut(index).filter(|m| m.position() == (at, event)) else { continue };
            if let Fired::Tentatively(waiting) = std::mem::replace(&mut m.fired, Fired::Yes) {
                if keep {
                    self.held -= 1;
                } else {
                    m.fired = Fired::No(Some(waiting));
                }
            }
        }
    }
}

impl<T> Windows<T> {
    /// Forgets matches before `horizon`, and groups left with none.
    pub fn expire(&mut self, horizon: EpochMillis) {
        let mut released = 0;
        self.groups.retain(|_, g| {
            while g.matches.front().is_some_and(|m| m.at < horizon) {
                if g.matches.pop_front().is_some_and(|m| m.holds()) {
                    released += 1;
                }
            }
            !g.matches.is_empty()
        });
        self.held -= released;
    }

    fn drop_quietest(&mut self, limits: &Limits<'_>, window_ms: i64) {
        let quietest = self.groups.iter().min_by_key(|(_, g)| g.matches.back().map_or(EpochMillis::MIN, |m| m.at)).map(|(k, _)| k.clone());
        if let Some(group) = quietest.and_then(|key| self.groups.remove(&key)) {
            self.held -= group.held();
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

    /// Detections held: matches waiting, and fired ones not settled.
    pub fn held(&self) -> usize {
        self.held
    }
}

/// The most matches within one window of the threshold's length that
/// contains `at` (`matches` sorted, `at` among them), and the matches of
/// every such window holding more than `above` (they overlap at `at`, so
/// they make one range).
fn bursts<T>(matches: &VecDeque<Match<T>>, at: EpochMillis, threshold: &Threshold) -> (u64, Option<std::ops::Range<usize>>) {
    let first = matches.partition_point(|m| m.at < at.saturating_sub(threshold.window_ms));
    let mut best = 0usize;
    let mut burst: Option<std::ops::Range<usize>> = None;
    for i in first..matches.len() {
        let start = matches[i].at;
        if start > at {
            break;
        }
        let end = matches.partition_point(|m| m.at <= start.saturating_add(threshold.window_ms));
        best = best.max(end - i);
        if u64::try_from(end - i).unwrap_or(u64::MAX) > threshold.above {
            burst = Some(burst.map_or(i..end, |b| b.start.min(i)..b.end.max(end)));
        }
    }
    (u64::try_from(best).unwrap_or(u64::MAX), burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    static FIVE_MINUTES_OVER_3: Threshold = Threshold { above: 3, window_ms: 5 * MIN, by: Vec::new() };

    fn limits(now: EpochMillis) -> Limits<'static> {
        Limits { rule_id: "r", threshold: &FIVE_MINUTES_OVER_3, now, lateness_ms: 10 * MIN, max_groups: 2, max_waiting: 100, hold_fired: false }
    }

    fn holding(now: EpochMillis) -> Limits<'static> {
        Limits { hold_fired: true, ..limits(now) }
    }

    /// A distinct event per match time.
    fn id(at: EpochMillis) -> u64 {
        at as u64
    }

    /// Records the matches in this order (each match gives its time) and
    /// returns the counts and what fired, in order.
    fn run(w: &mut Windows<i64>, order: &[i64], now: impl Fn(i64) -> Limits<'static>) -> (Vec<u64>, Vec<i64>) {
        let mut fired = Vec::new();
        let counts = order.iter().map(|&at| w.record("a", at, id(at), at, &now(at), |f| fired.push(f))).collect();
        (counts, fired)
    }

    #[test]
    fn counts_the_densest_window_around_each_match() {
        let (counts, fired) = run(&mut Windows::default(), &[0, MIN, 2 * MIN, 3 * MIN], limits);
        assert_eq!(counts, [1, 2, 3, 4]);
        assert_eq!(fired, [0, MIN, 2 * MIN, 3 * MIN], "the whole burst fires, oldest first, when the fourth match crosses the threshold");
        let (counts, fired) = run(&mut Windows::default(), &[0, 3 * MIN, 6 * MIN, 9 * MIN], limits);
        assert_eq!(counts, [1, 2, 2, 2]);
        assert!(fired.is_empty());
    }

    #[test]
    fn a_match_after_the_burst_fires_alone() {
        let (_, fired) = run(&mut Windows::default(), &[0, MIN, 2 * MIN, 3 * MIN, 4 * MIN, 20 * MIN], limits);
        assert_eq!(fired, [0, MIN, 2 * MIN, 3 * MIN, 4 * MIN], "the fifth match extends the burst; the one 16 minutes later is alone");
    }

    #[test]
    fn a_late_match_completes_its_burst() {
        let mut w = Windows::default();
        let now = 4 * MIN;
        let (counts, fired) = run(&mut w, &[MIN, 2 * MIN, 4 * MIN], |_| limits(now));
        assert!(counts.iter().all(|&c| c <= 3) && fired.is_empty());
        let (counts, fired) = run(&mut w, &[0], |_| limits(now));
        assert_eq!(counts, [4], "the late match at 0 makes 4 within 0..5m");
        assert_eq!(fired, [0, MIN, 2 * MIN, 4 * MIN]);
    }

    #[test]
    fn what_fires_does_not_depend_on_the_order_of_reading() {
        // Two bursts and a lone match; each order of reading fires the same matches.
        let times = [0, MIN, 2 * MIN, 3 * MIN, 30 * MIN, 31 * MIN, 32 * MIN, 33 * MIN, 34 * MIN, 50 * MIN];
        let expected: Vec<i64> = times[..9].to_vec();
        let mut order = times.to_vec();
        let mut seed = 7u64;
        for round in 0..200 {
            // A shuffle (xorshift), then reading in that order with the newest time as `now`.
            for i in (1..order.len()).rev() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                order.swap(i, (seed % (i as u64 + 1)) as usize);
            }
            let mut w = Windows::default();
            let (_, mut fired) = run(&mut w, &order, |_| Limits { lateness_ms: 60 * MIN, ..limits(50 * MIN) });
            fired.sort_unstable();
            assert_eq!(fired, expected, "order {round}: {order:?}");
            assert_eq!(w.held(), 1, "only the lone match still holds its detection");
            w.expire(EpochMillis::MAX);
            assert_eq!((w.held(), w.groups()), (0, 0));
        }
    }

    #[test]
    fn an_event_matched_again_counts_once_and_fires_once() {
        let mut w = Windows::default();
        let (_, fired) = run(&mut w, &[0, MIN, 2 * MIN], limits);
        assert!(fired.is_empty());
        // The same three events again (their file read again after a crash): still three.
        let (counts, fired) = run(&mut w, &[0, MIN, 2 * MIN], |_| limits(2 * MIN));
        assert_eq!((counts, fired), (vec![3, 3, 3], vec![]));
        // Another event at the same time as one of them is a fourth.
        let mut fired = Vec::new();
        assert_eq!(w.record("a", MIN, id(MIN) + 1, -1, &limits(2 * MIN), |f| fired.push(f)), 4);
        assert_eq!(fired, [0, MIN, -1, 2 * MIN]);
        // Read again, the burst's events fire no more.
        let (_, fired) = run(&mut w, &[0, MIN, 2 * MIN], |_| limits(2 * MIN));
        assert!(fired.is_empty());
    }

    #[test]
    fn matches_taken_back_fire_again_and_kept_ones_do_not() {
        let mut w = Windows::default();
        let (_, fired) = run(&mut w, &[0, MIN, 2 * MIN, 3 * MIN], holding);
        assert_eq!(fired.len(), 4);
        // The batch failed: its detections were not applied.
        w.settle(false);
        let (_, fired) = run(&mut w, &[3 * MIN], holding);
        assert_eq!(fired, [0, MIN, 2 * MIN, 3 * MIN], "read again, the burst fires again");
        w.settle(true);
        let (_, fired) = run(&mut w, &[0, 3 * MIN], holding);
        assert!(fired.is_empty(), "settled matches do not fire again");
        let (_, fired) = run(&mut w, &[4 * MIN], holding);
        assert_eq!(fired, [4 * MIN]);
        w.settle(true);
        assert!(w.unsettled.is_empty());
    }

    #[test]
    fn waiting_detections_are_capped_and_room_is_made_by_firing_and_expiry() {
        let capped = |now| Limits { max_groups: 100, max_waiting: 3, ..limits(now) };
        let mut w = Windows::default();
        let mut fired = Vec::new();
        for (group, at) in [("a", 0), ("a", MIN), ("a", 2 * MIN), ("b", 2 * MIN), ("a", 3 * MIN)] {
            w.record(group, at, id(at) + u64::from(group == "b"), at, &capped(at), |f| fired.push(f));
        }
        assert_eq!(fired, [0, MIN, 2 * MIN], "the fourth match of \"a\" came past the cap: it counts, and gives nothing");
        assert_eq!((w.held(), w.unheld), (0, 2), "b's match and a's fourth waited without detections");
        // Firing made room: a new match holds its detection again.
        w.record("b", 3 * MIN, id(3 * MIN) + 1, -3, &capped(3 * MIN), |f| fired.push(f));
        assert_eq!(w.held(), 1);
        w.expire(EpochMillis::MAX);
        assert_eq!(w.held(), 0, "expiry releases what waited");
    }

    #[test]
    fn old_times_expire_and_groups_are_capped() {
        let mut w: Windows<()> = Windows::default();
        w.record("a", 0, id(0), (), &limits(0), |()| ());
        w.record("b", MIN, id(MIN), (), &limits(MIN), |()| ());
        // Far later: "a" and "b" have expired, so "c" fits without dropping anything.
        w.record("c", 60 * MIN, id(60 * MIN), (), &limits(60 * MIN), |()| ());
        assert_eq!((w.groups(), w.dropped), (1, 0));
        w.record("d", 60 * MIN, id(60 * MIN), (), &limits(60 * MIN), |()| ());
        w.record("e", 61 * MIN, id(61 * MIN), (), &limits(61 * MIN), |()| ());
        assert_eq!((w.groups(), w.dropped), (2, 1), "the cap of 2 groups dropped the quietest");
        w.expire(100 * MIN);
        assert_eq!(w.groups(), 0);
    }
}
