//! The fuzz targets' committed corpus (`fuzz/corpus/`), replayed through the
//! same harness code on stable, so every seed stays a passing input even
//! where the fuzzers are not run.

#[path = "../../../../fuzz/src/key.rs"]
mod key;
#[path = "../../../../fuzz/src/log_file.rs"]
mod log_file;
#[path = "../../../../fuzz/src/rules.rs"]
mod rules;

use super::repo;

/// Each file of `fuzz/corpus/<target>`, through `run`; returns how many.
fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = repo("fuzz/corpus").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| run(&bytes)).is_err() {
            panic!("the seed {} breaks the {target} harness", path.display());
        }
        n += 1;
    }
    n
}

#[test]
fn the_log_file_corpus_reads_without_a_broken_invariant() {
    assert!(replay("log_file", log_file::run) >= 5);
}

#[test]
fn the_key_corpus_parses_and_builds_back() {
    assert!(replay("key", key::run) >= 5);
}

#[test]
fn the_rules_corpus_loads_or_says_why() {
    assert!(replay("rules", rules::run) >= 3);
}
