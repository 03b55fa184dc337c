//! Keeps the pure layers pure: `raft`, `kv`, `check`, `multiraft`, `api`, `frame` and
//! `codec` must not name the clock, the filesystem, sockets or glommio. That is what
//! lets one process simulate a whole cluster deterministically; this test fails, naming
//! file and line, as soon as one of those files reaches for I/O.

use std::fs;
use std::path::{Path, PathBuf};

/// What the pure layers may not name.
const BANNED: [&str; 4] = ["std::time", "std::fs", "std::net", "glommio"];

/// Folders and files (relative to the crate root) that must stay pure. A folder that does
/// not exist yet is skipped, so the check covers a layer from the day it lands.
const PURE_FOLDERS: [&str; 5] = [
    "src/raft",
    "src/kv",
    "src/check",
    "src/multiraft",
    "src/api",
];
const PURE_FILES: [&str; 2] = ["src/frame.rs", "src/codec.rs"];

/// Test-only files that may name one banned thing, and why. Each must be compiled only
/// under `#[cfg(test)]`, which `exemptions_are_test_only` checks.
const EXEMPTIONS: [(&str, &str, &str); 1] = [(
    "src/raft/interaction_tests.rs",
    "std::fs",
    "the interaction test driver reads its scripts from testdata/ and rewrites them",
)];

/// The `.rs` files under `folder`, recursively, in a stable order.
fn rust_files(folder: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![folder.to_path_buf()];
    while let Some(directory) = pending.pop() {
        let entries = fs::read_dir(&directory)
            .unwrap_or_else(|error| panic!("{}: {error}", directory.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn pure_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for folder in PURE_FOLDERS {
        let path = root.join(folder);
        if path.is_dir() {
            files.extend(rust_files(&path));
        }
    }
    for file in PURE_FILES {
        let path = root.join(file);
        if path.is_file() {
            files.push(path);
        }
    }
    files
}

/// `file:line: text` for every line of `text` that names a banned word. Whole-line
/// comments (`//`, `///`, `//!`) are skipped: they explain, they do not import. Anything
/// else counts, including a trailing comment after code.
fn violations(relative: &str, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        for banned in BANNED {
            let exempt = EXEMPTIONS
                .iter()
                .any(|&(file, word, _)| file == relative && word == banned);
            if line.contains(banned) && !exempt {
                found.push(format!(
                    "{relative}:{}: names {banned}: {}",
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    found
}

// No file of a pure layer names the clock, the filesystem, sockets or glommio.
#[test]
fn pure_layers_do_no_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = pure_files(root);
    assert!(
        files.iter().any(|path| path.ends_with("src/raft/node.rs")),
        "the scan must cover the Raft core (found {files:?})"
    );
    let mut found = Vec::new();
    for path in &files {
        let relative = path
            .strip_prefix(root)
            .expect("under the crate root")
            .to_string_lossy()
            .replace('\\', "/");
        let text = fs::read_to_string(path).unwrap_or_else(|error| panic!("{relative}: {error}"));
        found.extend(violations(&relative, &text));
    }
    assert!(
        found.is_empty(),
        "pure layers must not do I/O or read the clock:\n{}",
        found.join("\n")
    );
}

// Every exempted file exists and is compiled only for tests, so the exemption cannot leak
// I/O into the library.
#[test]
fn exemptions_are_test_only() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (file, _, why) in EXEMPTIONS {
        assert!(
            root.join(file).is_file(),
            "{file} is exempted ({why}) but missing"
        );
        let path = Path::new(file);
        let module = path
            .file_stem()
            .expect("a file name")
            .to_string_lossy()
            .into_owned();
        let parent = root.join(path.parent().expect("inside a folder"));
        let declaring = parent.join("mod.rs");
        let text = fs::read_to_string(&declaring)
            .unwrap_or_else(|error| panic!("{}: {error}", declaring.display()));
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let declaration = lines
            .iter()
            .position(|line| *line == format!("mod {module};"))
            .unwrap_or_else(|| panic!("{} does not declare `mod {module};`", declaring.display()));
        assert!(
            declaration > 0 && lines[declaration - 1] == "#[cfg(test)]",
            "`mod {module};` in {} must be preceded by #[cfg(test)]",
            declaring.display()
        );
    }
}

// The scanner reports what it must and skips only whole-line comments.
#[test]
fn scanner_finds_banned_names() {
    let text = "//! No std::fs here.\nuse std::time::Instant;\nlet x = 1; // std::net\n";
    let found = violations("src/raft/example.rs", text);
    assert_eq!(
        found,
        vec![
            "src/raft/example.rs:2: names std::time: use std::time::Instant;".to_string(),
            "src/raft/example.rs:3: names std::net: let x = 1; // std::net".to_string(),
        ]
    );
    assert!(violations("src/raft/interaction_tests.rs", "use std::fs;").is_empty());
    assert_eq!(
        violations("src/raft/interaction_tests.rs", "use glommio;").len(),
        1,
        "an exemption covers only its one word"
    );
}
