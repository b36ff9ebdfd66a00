//! End-to-end tests of the `trailwatch` binary on the embedded pipeline.

mod bad_input;
mod harness;
mod ingest;
mod run;
