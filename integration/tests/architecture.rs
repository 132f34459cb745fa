//! The rules of the source tree.
//!
//! The store contract is the ground floor. `src/store/` is what a
//! third-party store implements against, so it must read on its own: no code
//! under it (tests included) names the session handle, the layer, the health
//! endpoints, the profiles, the configuration or the session error. Doc
//! comments may point upwards; code may not.
//!
//! No file is a big room. A source file under `src/` that passes
//! [`MAX_LINES`] holds more than one job and is split; the store suite, one
//! long list of behavioural tests, is the exception.

use std::path::{Path, PathBuf};

/// What code under `src/store/` must not name.
const ABOVE: [&str; 10] = [
    "crate::session",
    "crate::health",
    "crate::layer",
    "crate::profile",
    "crate::config",
    "crate::error",
    "crate::Session",
    "crate::SessionId",
    "crate::SessionLayer",
    "crate::SessionError",
];

/// The most lines a source file under `src/` may have.
const MAX_LINES: usize = 550;

/// The files allowed to pass [`MAX_LINES`], relative to the crate's root.
const LONG_FILES: [&str; 1] = ["src/store/testing.rs"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read a source folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Whether `line` names something in [`ABOVE`], as a whole path: the
/// check for `crate::Session` does not fire on `crate::SessionStore`.
fn names_above(line: &str) -> bool {
    ABOVE.iter().any(|name| {
        line.match_indices(name).any(|(at, _)| {
            !line[at + name.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
        })
    })
}

/// The lines of `source` that are code, not comments.
fn code_lines(source: &str) -> impl Iterator<Item = (usize, &str)> {
    source
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .map(|(n, line)| (n + 1, line))
}

/// The library's repository: this package is one level below it.
fn repository() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration/ is inside the repository")
        .to_path_buf()
}

#[test]
fn the_store_imports_nothing_above_it() {
    let root = repository().join("src/store");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(files.len() > 10, "found only {files:?}");
    let mut offences = Vec::new();
    for file in &files {
        let source = std::fs::read_to_string(file).expect("read");
        for (n, line) in code_lines(&source) {
            if names_above(line) {
                offences.push(format!("{}:{n}: {}", file.display(), line.trim()));
            }
        }
    }
    assert!(
        offences.is_empty(),
        "code under src/store names what is above it:\n{}",
        offences.join("\n")
    );
}

#[test]
fn the_check_sees_an_upward_import() {
    let source = "use crate::session::SessionId;\n// use crate::health;\nuse crate::store::SessionStore;\nuse crate::SessionStore;";
    let found: Vec<usize> = code_lines(source)
        .filter(|(_, line)| names_above(line))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(found, [1]);
}

/// Whether `file` (relative to the crate's root) of `lines` lines breaks
/// the size rule.
fn too_long(file: &Path, lines: usize) -> bool {
    lines > MAX_LINES && !LONG_FILES.iter().any(|long| file == Path::new(long))
}

#[test]
fn no_source_file_passes_the_line_limit() {
    let root = repository();
    let root = root.as_path();
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    assert!(files.len() > 30, "found only {files:?}");
    let mut offences = Vec::new();
    for file in &files {
        let lines = std::fs::read_to_string(file).expect("read").lines().count();
        let relative = file.strip_prefix(root).expect("under the root");
        if too_long(relative, lines) {
            offences.push(format!("{}: {lines} lines", relative.display()));
        }
    }
    assert!(
        offences.is_empty(),
        "source files over {MAX_LINES} lines; split them by job:\n{}",
        offences.join("\n")
    );
}

#[test]
fn the_size_check_spares_only_the_store_suite() {
    assert!(!too_long(Path::new("src/layer/mod.rs"), MAX_LINES));
    assert!(too_long(Path::new("src/layer/mod.rs"), MAX_LINES + 1));
    assert!(!too_long(Path::new("src/store/testing.rs"), 5 * MAX_LINES));
    assert!(too_long(
        Path::new("tests/src/store/testing.rs"),
        MAX_LINES + 1
    ));
}
