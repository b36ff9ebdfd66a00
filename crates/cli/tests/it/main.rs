//! End-to-end tests of the `trailwatch` binary on the embedded pipeline.

mod bad_input;
mod harness;
mod identity;
mod ingest;
mod run;
