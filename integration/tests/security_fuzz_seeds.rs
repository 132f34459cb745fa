//! Every checked-in fuzz seed, fed to the function its fuzz target calls.
//!
//! The functions live in `fuzz/src/lib.rs`, shared with the libFuzzer
//! targets, so a seed that fails here fails there too. Fuzzing itself is a
//! separate, bounded run (see SECURITY.md); these tests keep the seeds, and
//! every crash a fuzzing run saved as a seed, passing in every `cargo test`.
#![cfg(feature = "health")]

use std::path::PathBuf;

#[allow(unreachable_pub, dead_code)]
#[path = "../../fuzz/src/lib.rs"]
mod targets;

/// The seed files of one target, sorted, never none.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target);
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            let bytes = std::fs::read(&path).expect("a readable seed");
            (path.display().to_string(), bytes)
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

/// Runs `check` on every seed of `target`, naming the seed that fails.
fn run(target: &str, check: fn(&[u8])) {
    for (name, bytes) in seeds(target) {
        let outcome = std::panic::catch_unwind(|| check(&bytes));
        assert!(outcome.is_ok(), "seed {name} failed");
    }
}

#[test]
fn cookie_value_seeds() {
    run("cookie_value", targets::cookie_value);
}

#[test]
fn cookie_header_seeds() {
    run("cookie_header", targets::cookie_header);
}

#[test]
fn health_put_seeds() {
    run("health_put", targets::health_put);
}
