//! Integration tests of trailwatch-embedded: the shared conformance suite
//! against the directory source and the SQLite store, and what a user of
//! those would notice (restarts, re-ingests, upgrades, partial files).
// Test helpers outside #[test] functions may unwrap too: a failure is the test failing.
#![allow(clippy::unwrap_used)]

mod alert_store;
mod conformance;
mod dir_source;
mod identity_stores;
mod integrity;
mod search;
mod sinks;
mod sqlite_store;
