//! What each fuzz target does with its input, as plain functions: the
//! targets in `fuzz_targets/` call them, and the main workspace's tests
//! include the same files to replay the committed corpus on stable. Each
//! function panics only when an invariant the code promises is broken.

pub mod graphql;
pub mod key;
pub mod log_file;
pub mod rules;
