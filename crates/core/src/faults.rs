//! Fault injection for every port: [`Faulty`] wraps an implementation and,
//! on each call, asks a [`FaultPlan`] whether to fail it (retryably or
//! not), slow it down, or let it hang, so tests can show what the services
//! do when the world misbehaves: retry, back off, stay bounded, lose nothing.
//!
//! A plan is a list of [`FaultRule`]s and a seed. A rule names the ports and
//! operations it covers (none named: all), the probability of each kind of
//! fault per call, and how long it lasts: after how many matching calls it
//! starts, how many faults it injects at most ("fail the next 20 history
//! appends"), and a time window. The first rule that injects a fault on a
//! call wins. Draws come from one seeded generator, so a plan replays the
//! same faults for the same sequence of calls (calls from tasks running at
//! once may interleave differently from run to run).
//!
//! A fault is injected before the inner call (the call never reached the
//! backend) or, with [`FaultRule::after`], once the inner call has succeeded
//! (the backend did the work and the answer was lost): the second kind
//! checks that retried writes are idempotent.
//!
//! A hang waits [`FaultRule::hang_for`] (long: meant to outlast the caller's
//! time limit) and then fails retryably, so a caller without a time limit
//! shows up as a test that takes that long rather than one that never ends.
//! Everything injected is counted by port, operation and kind ([`FaultPlan::counts`]).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use crate::interpose::Port;
use crate::interpose::{Answer, Call, Interpose};
use crate::ports::PortError;
use crate::retry::unit;

/// What a fault does to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// Fails with a retryable error.
    Retryable,
    /// Fails with an error retrying will not help.
    Permanent,
    /// Waits [`FaultRule::slow_for`], then makes the call.
    Slow,
    /// Waits [`FaultRule::hang_for`], then fails retryably.
    Hang,
}

impl FaultKind {
    pub const ALL: [FaultKind; 4] = [FaultKind::Retryable, FaultKind::Permanent, FaultKind::Slow, FaultKind::Hang];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Retryable => "retryable",
            FaultKind::Permanent => "permanent",
            FaultKind::Slow => "slow",
            FaultKind::Hang => "hang",
        }
    }
}

/// Which calls a rule covers, how often it injects what, and for how long.
#[derive(Debug, Clone)]
pub struct FaultRule {
    /// Port names ([`Faulty::new`]'s `port`); empty: every port.
    pub ports: Vec<&'static str>,
    /// Operation names (the trait method's name); empty: every operation.
    pub ops: Vec<&'static str>,
    /// Probability per call of each kind, in [`FaultKind::ALL`] order; they add up to at most 1.
    pub odds: [f64; 4],
    pub slow_for: Duration,
    pub hang_for: Duration,
    /// Matching calls let through before the rule starts.
    pub skip: u64,
    /// Faults injected at most; None: no limit.
    pub limit: Option<u64>,
    /// When the rule applies, from the plan's creation; None: always.
    pub window: Option<Range<Duration>>,
    /// Inject after the inner call succeeded (the answer is lost, the work is done).
    pub after: bool,
}

impl FaultRule {
    /// A rule with these odds for every call of every port, for ever.
    pub fn new(retryable: f64, permanent: f64, slow: f64, hang: f64) -> Self {
        FaultRule {
            ports: Vec::new(),
            ops: Vec::new(),
            odds: [retryable, permanent, slow, hang],
            slow_for: Duration::from_millis(20),
            hang_for: Duration::from_secs(600),
            skip: 0,
            limit: None,
            window: None,
            after: false,
        }
    }

    /// Every matching call gets `kind`, until the rule is dropped.
    pub fn always(kind: FaultKind) -> Self {
        let mut odds = [0.0; 4];
        odds[kind as usize] = 1.0;
        FaultRule { odds, ..FaultRule::new(0.0, 0.0, 0.0, 0.0) }
    }

    /// The next `n` matching calls get `kind`.
    pub fn next(kind: FaultKind, n: u64) -> Self {
        FaultRule { limit: Some(n), ..FaultRule::always(kind) }
    }

    pub fn on(mut self, port: &'static str) -> Self {
        self.ports.push(port);
        self
    }

    pub fn op(mut self, op: &'static str) -> Self {
        self.ops.push(op);
        self
    }

    pub fn skip(mut self, calls: u64) -> Self {
        self.skip = calls;
        self
    }

    pub fn during(mut self, window: Range<Duration>) -> Self {
        self.window = Some(window);
        self
    }

    pub fn after_call(mut self) -> Self {
        self.after = true;
        self
    }

    pub fn slow_for(mut self, d: Duration) -> Self {
        self.slow_for = d;
        self
    }

    pub fn hang_for(mut self, d: Duration) -> Self {
        self.hang_for = d;
        self
    }

    fn covers(&self, port: &str, op: &str) -> bool {
        (self.ports.is_empty() || self.ports.contains(&port)) && (self.ops.is_empty() || self.ops.contains(&op))
    }
}

/// One fault decided for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decision {
    kind: FaultKind,
    wait: Duration,
    after: bool,
}

struct RuleState {
    rule: FaultRule,
    seen: u64,
    injected: u64,
}

struct PlanState {
    rng: u64,
    rules: Vec<RuleState>,
    counts: BTreeMap<(&'static str, &'static str, FaultKind), u64>,
    calls: HashMap<(&'static str, &'static str), u64>,
}

/// The faults to inject, shared by every [`Faulty`] port of a test.
pub struct FaultPlan {
    started: Instant,
    state: Mutex<PlanState>,
}

impl FaultPlan {
    pub fn new(seed: u64, rules: Vec<FaultRule>) -> Arc<Self> {
        let rules = rules.into_iter().map(|rule| RuleState { rule, seen: 0, injected: 0 }).collect();
        Arc::new(FaultPlan { started: Instant::now(), state: Mutex::new(PlanState { rng: seed, rules, counts: BTreeMap::new(), calls: HashMap::new() }) })
    }

    /// A plan that injects nothing (yet): rules can be added while it runs.
    pub fn quiet(seed: u64) -> Arc<Self> {
        FaultPlan::new(seed, Vec::new())
    }

    fn lock(&self) -> MutexGuard<'_, PlanState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a rule; its window counts from the plan's creation.
    pub fn add(&self, rule: FaultRule) {
        self.lock().rules.push(RuleState { rule, seen: 0, injected: 0 });
    }

    /// Drops every rule: from now on calls go straight through.
    pub fn clear(&self) {
        self.lock().rules.clear();
    }

    /// Faults injected, by (port, operation, kind).
    pub fn counts(&self) -> BTreeMap<(&'static str, &'static str, FaultKind), u64> {
        self.lock().counts.clone()
    }

    /// Faults injected of one kind, over every port and operation.
    pub fn injected(&self, kind: FaultKind) -> u64 {
        self.lock().counts.iter().filter(|((_, _, k), _)| *k == kind).map(|(_, n)| n).sum()
    }

    /// Faults injected on one port, of any kind.
    pub fn injected_on(&self, port: &str) -> u64 {
        self.lock().counts.iter().filter(|((p, _, _), _)| *p == port).map(|(_, n)| n).sum()
    }

    /// Calls made through the plan's ports, by (port, operation), faulty or not.
    pub fn calls(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        self.lock().calls.iter().map(|(k, n)| (*k, *n)).collect()
    }

    /// The counts as a table, one `port.operation kind count` a line.
    pub fn report(&self) -> String {
        self.counts().iter().map(|((port, op, kind), n)| format!("{port}.{op} {} {n}\n", kind.as_str())).collect()
    }

    fn decide(&self, port: &'static str, op: &'static str) -> Option<Decision> {
        let elapsed = self.started.elapsed();
        let mut state = self.lock();
        *state.calls.entry((port, op)).or_default() += 1;
        let PlanState { rng, rules, counts, .. } = &mut *state;
        for r in rules.iter_mut().filter(|r| r.rule.covers(port, op)) {
            r.seen += 1;
            let active =
                r.seen > r.rule.skip && r.rule.limit.is_none_or(|limit| r.injected < limit) && r.rule.window.as_ref().is_none_or(|w| w.contains(&elapsed));
            if !active {
                continue;
            }
            let draw = unit(rng);
            let mut bound = 0.0;
            let kind = FaultKind::ALL.into_iter().find(|k| {
                bound += r.rule.odds[*k as usize];
                draw < bound
            });
            if let Some(kind) = kind {
                r.injected += 1;
                *counts.entry((port, op, kind)).or_default() += 1;
                let wait = match kind {
                    FaultKind::Slow => r.rule.slow_for,
                    FaultKind::Hang => r.rule.hang_for,
                    _ => Duration::ZERO,
                };
                return Some(Decision { kind, wait, after: r.rule.after });
            }
        }
        None
    }

    /// Runs one port call under the plan.
    async fn inject<T>(&self, port: &'static str, op: &'static str, call: impl Future<Output = Result<T, PortError>>) -> Result<T, PortError> {
        let Some(decision) = self.decide(port, op) else { return call.await };
        let injected = |kind: FaultKind| {
            let message = format!("injected {} fault", kind.as_str());
            PortError::backend(format!("{port}.{op}"), message, kind != FaultKind::Permanent)
        };
        if decision.after {
            let answer = call.await?;
            if decision.kind == FaultKind::Slow {
                tokio::time::sleep(decision.wait).await;
                return Ok(answer);
            }
            tokio::time::sleep(decision.wait).await;
            return Err(injected(decision.kind));
        }
        tokio::time::sleep(decision.wait).await;
        match decision.kind {
            FaultKind::Slow => call.await,
            kind => Err(injected(kind)),
        }
    }
}

/// A port whose calls go through a [`FaultPlan`] (see [`Port`]).
pub type Faulty<P> = Port<P, FaultPlan>;

impl<P: ?Sized> Port<P, FaultPlan> {
    /// `port` names the port in rules and counts (`history`, `ledger`, `archive`…).
    pub fn new(port: &'static str, inner: Arc<P>, plan: Arc<FaultPlan>) -> Arc<Self> {
        Port::wrap(port, inner, plan)
    }
}

impl Interpose for FaultPlan {
    fn around<'a, T: Send + 'a>(&'a self, port: &'static str, op: &'static str, mut call: Call<'a, T>) -> Answer<'a, T> {
        Box::pin(self.inject(port, op, async move { call().await }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::sample_event;
    use crate::event::Event;
    use crate::memory::MemoryHistory;
    use crate::ports::HistoryStore;

    fn history(plan: &Arc<FaultPlan>) -> Arc<Faulty<MemoryHistory>> {
        Faulty::new("history", Arc::new(MemoryHistory::new()), plan.clone())
    }

    #[tokio::test]
    async fn the_next_n_appends_fail_then_calls_go_through() {
        let plan = FaultPlan::new(1, vec![FaultRule::next(FaultKind::Retryable, 3).on("history").op("append")]);
        let h = history(&plan);
        let batch: Arc<[Event]> = vec![sample_event("111122223333", "e1", 1)].into();
        for _ in 0..3 {
            let err = h.append(batch.clone()).await.unwrap_err();
            assert!(err.is_retryable(), "{err}");
            assert!(err.to_string().contains("history.append"), "the error names the port and operation: {err}");
        }
        assert_eq!(h.count().await.unwrap(), 0, "a fault before the call does no work");
        assert_eq!(h.append(batch).await.unwrap().inserted, 1);
        assert_eq!(plan.counts().get(&("history", "append", FaultKind::Retryable)), Some(&3));
        assert_eq!(plan.calls().get(&("history", "append")), Some(&4));
    }

    #[tokio::test]
    async fn a_lost_answer_leaves_the_work_done() {
        let plan = FaultPlan::new(1, vec![FaultRule::next(FaultKind::Permanent, 1).after_call()]);
        let h = history(&plan);
        let err = h.append(vec![sample_event("111122223333", "e1", 1)].into()).await.unwrap_err();
        assert!(!err.is_retryable());
        assert_eq!(h.count().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn the_same_seed_replays_the_same_faults() {
        let run = |seed| async move {
            let plan = FaultPlan::new(seed, vec![FaultRule::new(0.2, 0.1, 0.0, 0.0).on("history")]);
            let h = history(&plan);
            let mut outcomes = Vec::new();
            for _ in 0..200 {
                outcomes.push(h.count().await.map_err(|e| e.is_retryable()).err());
            }
            (outcomes, plan.injected(FaultKind::Retryable), plan.injected(FaultKind::Permanent))
        };
        let (a, retryable, permanent) = run(7).await;
        assert_eq!(a, run(7).await.0);
        assert_ne!(a, run(8).await.0);
        assert!((20..=60).contains(&retryable) && (5..=35).contains(&permanent), "about 20% and 10% of 200: {retryable}, {permanent}");
    }

    #[tokio::test]
    async fn rules_keep_to_their_ports_operations_and_window() {
        let plan = FaultPlan::new(
            3,
            vec![
                FaultRule::new(1.0, 0.0, 0.0, 0.0).on("ledger"),
                FaultRule::new(1.0, 0.0, 0.0, 0.0).during(Duration::from_secs(3600)..Duration::from_secs(7200)),
            ],
        );
        let h = history(&plan);
        assert!(h.count().await.is_ok(), "not the ledger, and outside the window");
        plan.add(FaultRule::next(FaultKind::Slow, 1).slow_for(Duration::from_millis(30)).skip(1));
        let started = Instant::now();
        h.count().await.unwrap();
        assert!(started.elapsed() < Duration::from_millis(30), "the first call is skipped");
        h.count().await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(30), "the second is slow");
        plan.clear();
        assert_eq!(plan.injected(FaultKind::Slow), 1);
        assert!(plan.report().contains("history.count slow 1"), "{}", plan.report());
    }
}
