//! Integration tests of trailwatch-embedded: the shared conformance suite
//! against the directory source and the SQLite store, and what a user of
//! those would notice (restarts, re-ingests, upgrades, partial files).

mod conformance;
mod dir_source;
mod sqlite_store;
