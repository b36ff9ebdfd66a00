//! Integration tests of trailwatch-core: the conformance suite against the
//! in-memory ports, and the model and reader against fixture files.
// Test helpers outside #[test] functions may unwrap too: a failure is the test failing.
#![allow(clippy::unwrap_used)]

mod alerts;
mod fixtures;
mod identity;
mod memory_ports;
mod rule_pack;
mod rules;
