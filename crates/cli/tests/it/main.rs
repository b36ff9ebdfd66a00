//! End-to-end tests of the `trailwatch` binary on the embedded pipeline.
// Test helpers outside #[test] functions may unwrap too: a failure is the test failing.
#![allow(clippy::unwrap_used)]

mod alerts;
mod api;
mod bad_input;
mod crash;
mod faults;
mod harness;
mod identity;
mod ingest;
mod integrity;
mod onboarding;
mod run;
mod soak;
