//! The GraphQL fuzz target's committed corpus (`fuzz/corpus/graphql`),
//! replayed on stable through the same harness: each request body runs
//! through the schema over in-memory stores without a panic, and the
//! response serializes.

#![allow(clippy::unwrap_used)]

#[path = "../../../fuzz/src/graphql.rs"]
mod graphql;

use std::path::Path;

#[test]
fn the_graphql_corpus_executes_without_a_broken_invariant() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/graphql");
    let target = graphql::Target::new();
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let body = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target.run(&body))).is_err() {
            panic!("the seed {} breaks the graphql harness", path.display());
        }
        n += 1;
    }
    assert!(n >= 5, "{n} seeds");
}
