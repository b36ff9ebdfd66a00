//! Retrying port calls: exponential backoff with jitter, a time limit per
//! attempt, and counts of what was retried, for the services' loops.
//!
//! Only retryable errors ([`PortError::is_retryable`]) are tried again. An
//! attempt that does not answer within [`RetryPolicy::timeout`] is dropped
//! and counts as a retryable failure, so a backend that hangs costs time,
//! not the service: use a time limit only on calls that are safe to abandon
//! (reads, and writes that are idempotent).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::warn;

use crate::ports::PortError;

/// How a call is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// The first delay; doubled each attempt, up to `max_delay`, with jitter.
    pub base: Duration,
    pub max_delay: Duration,
    /// The longest one attempt may take; None waits as long as it takes.
    pub timeout: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { attempts: 5, base: Duration::from_millis(100), max_delay: Duration::from_secs(10), timeout: None }
    }
}

impl RetryPolicy {
    /// The delay before attempt `attempt + 1` (attempt counts from 1): half
    /// the exponential step, plus a random part of up to the other half.
    pub fn delay(&self, attempt: u32) -> Duration {
        let step = self.base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1))).min(self.max_delay);
        let mut seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64) ^ u64::from(attempt);
        step / 2 + step.mul_f64(unit(&mut seed) / 2.0)
    }
}

/// What [`retry`] counts.
#[derive(Debug, Default)]
pub struct RetryCounters {
    /// Attempts that failed retryably (or timed out) and were tried again.
    pub retried: AtomicU64,
    /// Attempts that did not answer in time.
    pub timed_out: AtomicU64,
    /// Calls that failed for good: a permanent error, or out of attempts.
    pub gave_up: AtomicU64,
}

/// Calls `op` until it succeeds, fails permanently, or runs out of attempts,
/// sleeping [`RetryPolicy::delay`] between attempts. `what` names the call in
/// errors and logs.
pub async fn retry<T, F, Fut>(policy: &RetryPolicy, counters: &RetryCounters, what: &str, mut op: F) -> Result<T, PortError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PortError>>,
{
    let mut attempt = 1;
    loop {
        let answer = match policy.timeout {
            Some(limit) => match tokio::time::timeout(limit, op()).await {
                Ok(answer) => answer,
                Err(_) => {
                    counters.timed_out.fetch_add(1, Ordering::Relaxed);
                    Err(PortError::backend(what, format!("no answer within {} ms", limit.as_millis()), true))
                }
            },
            None => op().await,
        };
        match answer {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() && attempt < policy.attempts.max(1) => {
                counters.retried.fetch_add(1, Ordering::Relaxed);
                let delay = policy.delay(attempt);
                warn!(%what, attempt, delay_ms = delay.as_millis() as u64, error = %e, "retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(e) => {
                counters.gave_up.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        }
    }
}

/// A [`crate::interpose::Interpose`] hook that retries every call of the
/// port it wraps (but the operations it is told to leave alone), counting
/// into its own [`RetryCounters`].
#[derive(Debug, Default)]
pub struct Retrier {
    pub policy: RetryPolicy,
    pub counters: RetryCounters,
    /// Operations made once, as they are: their caller retries them its own way.
    pub once: &'static [&'static str],
}

impl Retrier {
    pub fn new(policy: RetryPolicy) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Retrier { policy, counters: RetryCounters::default(), once: &[] })
    }

    /// A retrier that leaves the operations `once` to their caller.
    pub fn except(policy: RetryPolicy, once: &'static [&'static str]) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Retrier { policy, counters: RetryCounters::default(), once })
    }
}

impl crate::interpose::Interpose for Retrier {
    fn around<'a, T: Send + 'a>(&'a self, port: &'static str, op: &'static str, call: crate::interpose::Call<'a, T>) -> crate::interpose::Answer<'a, T> {
        let mut call = call;
        if self.once.contains(&op) {
            return call();
        }
        Box::pin(async move {
            let what = format!("{port}.{op}");
            retry(&self.policy, &self.counters, &what, call).await
        })
    }
}

/// splitmix64: advances `state` and returns a uniform draw in [0, 1).
pub(crate) fn unit(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn quick(attempts: u32, timeout: Option<Duration>) -> RetryPolicy {
        RetryPolicy { attempts, base: Duration::from_millis(1), max_delay: Duration::from_millis(4), timeout }
    }

    #[test]
    fn delays_grow_are_capped_and_jittered() {
        let p = RetryPolicy { attempts: 10, base: Duration::from_millis(100), max_delay: Duration::from_secs(1), timeout: None };
        for attempt in 1..10 {
            let step = (100u64 << (attempt - 1)).min(1000);
            let d = p.delay(attempt).as_millis() as u64;
            assert!((step / 2..=step).contains(&d), "attempt {attempt}: {d} ms of a {step} ms step");
        }
    }

    #[tokio::test]
    async fn retryable_errors_are_retried_and_counted_permanent_ones_are_not() {
        let counters = RetryCounters::default();
        let calls = AtomicU32::new(0);
        let answer = retry(&quick(5, None), &counters, "t", || async {
            match calls.fetch_add(1, Ordering::Relaxed) {
                0 | 1 => Err(PortError::backend("t", "busy", true)),
                _ => Ok(7),
            }
        })
        .await;
        assert_eq!(answer.unwrap(), 7);
        assert_eq!(counters.retried.load(Ordering::Relaxed), 2);
        let err = retry(&quick(5, None), &counters, "t", || async { Err::<(), _>(PortError::backend("t", "denied", false)) }).await.unwrap_err();
        assert!(!err.is_retryable());
        assert_eq!((counters.retried.load(Ordering::Relaxed), counters.gave_up.load(Ordering::Relaxed)), (2, 1));
    }

    #[tokio::test]
    async fn an_attempt_that_hangs_is_abandoned_and_tried_again() {
        let counters = RetryCounters::default();
        let calls = AtomicU32::new(0);
        let answer = retry(&quick(3, Some(Duration::from_millis(20))), &counters, "archive", || async {
            if calls.fetch_add(1, Ordering::Relaxed) == 0 {
                std::future::pending::<()>().await;
            }
            Ok(1)
        })
        .await;
        assert_eq!(answer.unwrap(), 1);
        assert_eq!((counters.timed_out.load(Ordering::Relaxed), counters.retried.load(Ordering::Relaxed)), (1, 1));
        let err = retry(&quick(2, Some(Duration::from_millis(5))), &counters, "archive", std::future::pending::<Result<(), PortError>>).await.unwrap_err();
        assert!(err.is_retryable() && err.to_string().contains("no answer within 5 ms"), "{err}");
    }
}
