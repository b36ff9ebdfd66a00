//! The built-in detection pack, embedded from `rules/` at build time.

use trailwatch_core::rules::RuleSource;

include!(concat!(env!("OUT_DIR"), "/builtin_rules.rs"));

/// The pack's rule files and the test event files they name.
pub fn sources() -> Vec<RuleSource> {
    BUILTIN.iter().map(|(path, text)| RuleSource { path: (*path).to_owned(), text: (*text).to_owned() }).collect()
}
