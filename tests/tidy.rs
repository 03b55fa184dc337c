//! Keeps the pure layers pure and every randomized test replayable from one seed.
//!
//! - The pure layers (`raft`, `kv`, `check`, `multiraft`, `proto`, `frame`, `codec`,
//!   `keyspace`, `api` and, once it exists, `shard`) must not name the clock, the
//!   filesystem, sockets, threads, the environment, processes or glommio, nor the crate's
//!   I/O layers (`wal`, `server`, `transport`, `client`), by full path or through a grouped
//!   import (`use std::{fs, time::Instant}`); and their production code may not use the
//!   test seed (`crate::testing`). That is what lets one process simulate a whole cluster
//!   deterministically.
//! - Randomized tests take their seed from `COREKV_TEST_SEED` (through `corekv::testing`)
//!   and draw from `corekv::raft::rng::SeededRng`: no source, test, tool or document names
//!   another seed variable, and no file but `src/raft/rng.rs` carries its own copy of
//!   xorshift64* or SplitMix64.
//!
//! Each check fails naming file and line, and each rule has a unit test below that proves
//! it catches a sample: a check is trusted only once it has caught something.

use std::fs;
use std::path::{Path, PathBuf};

/// What the pure layers may not name: the clock, the filesystem, sockets, threads, the
/// environment, processes, glommio, and the crate's layers that do I/O (by `crate::` from
/// inside, `corekv::` from a doc test or example; `super::` cannot reach across top-level
/// modules).
const BANNED: [&str; 16] = [
    "std::time",
    "core::time",
    "std::fs",
    "std::net",
    "std::thread",
    "std::env",
    "std::process",
    "glommio",
    "crate::wal",
    "crate::server",
    "crate::transport",
    "crate::client",
    "corekv::wal",
    "corekv::server",
    "corekv::transport",
    "corekv::client",
];

/// The seed of randomized tests: tests may use it, the pure layers' production code may
/// not (it reads the environment and the clock).
const TEST_SUPPORT: [&str; 2] = ["crate::testing", "corekv::testing"];

/// Folders and files (relative to the crate root) that must stay pure. A folder or file
/// that does not exist is skipped, so the check covers a layer from the day it lands:
/// `src/api` is covered as a file today and as a folder once it is split, `src/shard`
/// once it exists.
const PURE_FOLDERS: [&str; 7] = [
    "src/raft",
    "src/kv",
    "src/check",
    "src/multiraft",
    "src/proto",
    "src/api",
    "src/shard",
];
const PURE_FILES: [&str; 4] = [
    "src/frame.rs",
    "src/codec.rs",
    "src/keyspace.rs",
    "src/api.rs",
];

/// Test-only files that may name one banned thing, and why. Each must be compiled only
/// under `#[cfg(test)]`, which `exemptions_are_test_only` checks.
const EXEMPTIONS: [(&str, &str, &str); 2] = [
    (
        "src/raft/interaction_tests.rs",
        "std::fs",
        "the interaction test driver reads its scripts from testdata/ and rewrites them",
    ),
    (
        "src/raft/interaction_tests.rs",
        "std::env",
        "REWRITE=1 makes the interaction test driver regenerate its expected output",
    ),
];

/// Violations in files that are being rewritten elsewhere, each with what must change.
/// Temporary: an entry goes when its file is fixed (`exemptions_are_still_needed` fails
/// on an entry that no longer matches anything), and the list must end up empty.
const TEMPORARY_EXEMPTIONS: [(&str, &str, &str); 0] = [];

/// The one seed variable (`corekv::testing::TEST_SEED_VARIABLE`).
const SEED_VARIABLE: &str = "COREKV_TEST_SEED";
/// Where seed variables are looked for: the crate, its tests, benches, tools and docs.
const SEED_SCAN: [&str; 6] = ["src", "tests", "benches", "tools", "docs", "README.md"];
/// Files the seed and generator rules skip, and why.
const RANDOMNESS_EXEMPTIONS: [(&str, &str); 3] = [
    (
        "tests/tidy.rs",
        "its unit tests name other seed variables and generators to prove the rules catch them",
    ),
    (
        "tools/sim-cost.sh",
        "runs older revisions' simulators too, which read their seed count from SIM_SEEDS",
    ),
    (
        "src/check/model.rs",
        "mix64 is SplitMix64's finalizer used as a hash function, not a generator",
    ),
];
/// The one generator, and the constants that give away a copy of it or of xorshift64*:
/// the xorshift64* multiplier and SplitMix64's first mixing multiplier, in lowercase hex
/// without separators.
const GENERATOR_FILE: &str = "src/raft/rng.rs";
const GENERATOR_CONSTANTS: [(&str, &str); 2] = [
    ("0x2545f4914f6cdd1d", "xorshift64*"),
    ("0xbf58476d1ce4e5b9", "SplitMix64"),
];

/// The files under `folder` whose names end with one of `extensions`, recursively, in a
/// stable order.
fn files_under(folder: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![folder.to_path_buf()];
    while let Some(directory) = pending.pop() {
        let entries = fs::read_dir(&directory)
            .unwrap_or_else(|error| panic!("{}: {error}", directory.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path
                .extension()
                .is_some_and(|extension| extensions.iter().any(|wanted| extension == *wanted))
            {
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
            files.extend(files_under(&path, &["rs"]));
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

/// `path` relative to `root`, with forward slashes.
fn relative_to(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .expect("under the crate root")
        .to_string_lossy()
        .replace('\\', "/")
}

fn is_identifier_char(character: char) -> bool {
    character.is_alphanumeric() || character == '_'
}

/// True if `text` names `path` as a whole path (or a prefix of one): `std::time` in
/// `std::time::Instant` or `::std::time`, not in `std::timer` or `mystd::time`.
fn names_path(text: &str, path: &str) -> bool {
    text.match_indices(path).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + path.len()..].chars().next();
        !before.is_some_and(is_identifier_char) && !after.is_some_and(is_identifier_char)
    })
}

/// True if the import `path` is `banned` or inside it.
fn imports(path: &str, banned: &str) -> bool {
    path == banned
        || path
            .strip_prefix(banned)
            .is_some_and(|rest| rest.starts_with("::"))
}

/// Every path a `use` tree imports, groups expanded: `std::{fs, time::{self, Instant}}`
/// gives `std::fs`, `std::time` and `std::time::Instant`. Aliases are dropped.
fn expand_use_tree(tree: &str) -> Vec<String> {
    let mut compact = String::new();
    let mut alias_next = false;
    for word in tree.split_whitespace() {
        if word == "as" {
            alias_next = true;
            continue;
        }
        if alias_next {
            alias_next = false;
            compact.extend(
                word.chars()
                    .skip_while(|&character| is_identifier_char(character)),
            );
            continue;
        }
        compact.push_str(word);
    }
    let finish = |prefix: &str, last: &str| {
        let path = format!("{prefix}{last}");
        let path = path.strip_prefix("::").unwrap_or(&path);
        path.strip_suffix("::self").unwrap_or(path).to_string()
    };
    let mut paths = Vec::new();
    // The prefix of each open group: no recursion, a stack as deep as the nesting.
    let mut prefixes = vec![String::new()];
    let mut current = String::new();
    for character in compact.chars() {
        match character {
            '{' => {
                let prefix = format!("{}{current}", prefixes.last().expect("a prefix"));
                prefixes.push(prefix);
                current.clear();
            }
            ',' | '}' => {
                if !current.is_empty() {
                    paths.push(finish(prefixes.last().expect("a prefix"), &current));
                    current.clear();
                }
                if character == '}' && prefixes.len() > 1 {
                    prefixes.pop();
                }
            }
            _ => current.push(character),
        }
    }
    if !current.is_empty() {
        paths.push(finish(prefixes.last().expect("a prefix"), &current));
    }
    paths
}

/// The text after `use ` when `line` starts a use declaration (`use`, `pub use`,
/// `pub(crate) use`, ...).
fn use_declaration(line: &str) -> Option<&str> {
    let line = line.trim_start();
    let line = match line.strip_prefix("pub") {
        Some(rest) if rest.starts_with('(') => rest.split_once(')')?.1.trim_start(),
        Some(rest) if rest.starts_with(' ') => rest.trim_start(),
        Some(_) => return None,
        None => line,
    };
    line.strip_prefix("use ")
}

/// `line` without a trailing `//` comment.
fn without_comment(line: &str) -> &str {
    line.split_once("//").map_or(line, |(code, _)| code)
}

/// `file:line: text` for every banned name in `text`. Whole-line comments (`//`, `///`,
/// `//!`) are skipped: they explain, they do not import. Use declarations, which may span
/// lines, are checked path by path after their groups are expanded; any other line is
/// checked as text, so a trailing comment after code counts.
fn violations(relative: &str, text: &str) -> Vec<String> {
    let exempt = |banned: &str| {
        EXEMPTIONS
            .iter()
            .chain(TEMPORARY_EXEMPTIONS.iter())
            .any(|&(file, word, _)| file == relative && word == banned)
    };
    let mut found = Vec::new();
    let mut report = |number: usize, banned: &str, line: &str| {
        if !exempt(banned) {
            found.push(format!(
                "{relative}:{}: names {banned}: {}",
                number + 1,
                line.trim()
            ));
        }
    };
    // The use declaration being read: its first line and its text so far.
    let mut open_use: Option<(usize, String, String)> = None;
    for (number, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        let tree_text = match (&mut open_use, use_declaration(line)) {
            (Some((_, _, tree)), _) => {
                tree.push(' ');
                tree.push_str(without_comment(line));
                None
            }
            (None, Some(tree)) => {
                open_use = Some((number, line.to_string(), without_comment(tree).to_string()));
                None
            }
            (None, None) => Some(line),
        };
        if let Some(line) = tree_text {
            for banned in BANNED {
                if names_path(line, banned) {
                    report(number, banned, line);
                }
            }
            continue;
        }
        let complete = open_use
            .as_ref()
            .is_some_and(|(_, _, tree)| tree.contains(';'));
        if complete {
            let (first, first_line, tree) = open_use.take().expect("an open use");
            let tree = tree.split(';').next().expect("some text");
            let paths = expand_use_tree(tree);
            for banned in BANNED {
                if paths.iter().any(|path| imports(path, banned)) {
                    report(first, banned, &first_line);
                }
            }
        }
    }
    found
}

/// `file:line: text` for every use of the test seed in the production code of a pure
/// layer file: everything before its first `#[cfg(test)]`, or nothing in a file that is
/// compiled only for tests.
fn test_support_outside_tests(relative: &str, text: &str, test_only: bool) -> Vec<String> {
    if test_only {
        return Vec::new();
    }
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim() == "#[cfg(test)]" {
            break;
        }
        if line.trim_start().starts_with("//") {
            continue;
        }
        for name in TEST_SUPPORT {
            if names_path(line, name) {
                found.push(format!(
                    "{relative}:{}: names {name} outside test code: {}",
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    found
}

/// The file that declares the module `relative` (`src/a/b.rs` or `src/a/b/mod.rs` is
/// declared by `src/a/mod.rs` or `src/a.rs`; a top-level one by `src/lib.rs`), and the
/// module's name.
fn declaring_file(root: &Path, relative: &str) -> Option<(PathBuf, String)> {
    let path = Path::new(relative);
    let (module_path, name) = if path.file_name()? == "mod.rs" {
        let folder = path.parent()?;
        (folder, folder.file_name()?.to_string_lossy().into_owned())
    } else {
        (path, path.file_stem()?.to_string_lossy().into_owned())
    };
    let parent = module_path.parent()?;
    if parent == Path::new("src") {
        return Some((root.join("src/lib.rs"), name));
    }
    let candidates = [
        root.join(parent).join("mod.rs"),
        root.join(parent.with_extension("rs")),
    ];
    let declaring = candidates
        .into_iter()
        .find(|candidate| candidate.is_file())?;
    Some((declaring, name))
}

/// True if the module in `relative` is declared right after a `#[cfg(test)]` line, so it
/// is compiled only for tests.
fn is_test_only(root: &Path, relative: &str) -> bool {
    let Some((declaring, module)) = declaring_file(root, relative) else {
        return false;
    };
    let text = fs::read_to_string(&declaring)
        .unwrap_or_else(|error| panic!("{}: {error}", declaring.display()));
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let declaration = format!("mod {module};");
    lines
        .iter()
        .position(|line| *line == declaration)
        .is_some_and(|at| at > 0 && lines[at - 1] == "#[cfg(test)]")
}

/// `file:line: text` for every environment variable `text` names that has `SEED` in its
/// name and is not the one seed variable: a name followed by `=`, in quotes or backticks,
/// or after `$` or `${`.
fn seed_variables(relative: &str, text: &str) -> Vec<String> {
    let is_name_char = |character: char| {
        character.is_ascii_uppercase() || character.is_ascii_digit() || character == '_'
    };
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let mut from = 0;
        while let Some(offset) = line[from..].find("SEED") {
            let at = from + offset;
            let start = line[..at]
                .char_indices()
                .rev()
                .find(|&(_, character)| !is_name_char(character))
                .map_or(0, |(index, character)| index + character.len_utf8());
            let end = line[at..]
                .char_indices()
                .find(|&(_, character)| !is_name_char(character))
                .map_or(line.len(), |(index, _)| at + index);
            from = end;
            let name = &line[start..end];
            let before = line[..start].chars().next_back();
            let after = line[end..].chars().next();
            let quoted = matches!(before, Some('"' | '`')) && before == after;
            let expanded = before == Some('$') || line[..start].ends_with("${");
            if (after == Some('=') || quoted || expanded) && name != SEED_VARIABLE {
                found.push(format!(
                    "{relative}:{}: names the seed variable {name}, not {SEED_VARIABLE}: {}",
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    found
}

/// `file:line: text` for every line of `text` that carries a constant of a generator
/// other than the crate's own.
fn generator_copies(relative: &str, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let normalized = line.to_ascii_lowercase().replace('_', "");
        for (constant, generator) in GENERATOR_CONSTANTS {
            if normalized.contains(constant) {
                found.push(format!(
                    "{relative}:{}: a copy of {generator}; draw from SeededRng \
                     ({GENERATOR_FILE}): {}",
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    found
}

fn randomness_exempt(relative: &str) -> bool {
    RANDOMNESS_EXEMPTIONS
        .iter()
        .any(|&(file, _)| file == relative)
}

/// The files the seed rule reads.
fn seed_scan_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in SEED_SCAN {
        let path = root.join(entry);
        if path.is_dir() {
            files.extend(files_under(&path, &["rs", "sh", "md"]));
        } else if path.is_file() {
            files.push(path);
        }
    }
    files
}

fn read(root: &Path, relative: &str) -> String {
    fs::read_to_string(root.join(relative)).unwrap_or_else(|error| panic!("{relative}: {error}"))
}

// No file of a pure layer names the clock, the filesystem, sockets, threads, the
// environment, processes, glommio or the I/O layers, and none uses the test seed outside
// its tests.
#[test]
fn pure_layers_do_no_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = pure_files(root);
    let covers = |wanted: &str| {
        files
            .iter()
            .any(|path| relative_to(root, path).starts_with(wanted))
    };
    assert!(
        covers("src/raft/node.rs") && covers("src/keyspace.rs") && covers("src/api"),
        "the scan must cover the Raft core, the keyspace and the API (found {files:?})"
    );
    let mut found = Vec::new();
    for path in &files {
        let relative = relative_to(root, path);
        let text = read(root, &relative);
        found.extend(violations(&relative, &text));
        found.extend(test_support_outside_tests(
            &relative,
            &text,
            is_test_only(root, &relative),
        ));
    }
    assert!(
        found.is_empty(),
        "pure layers must not do I/O, read the clock or the environment, or use the I/O \
         layers:\n{}",
        found.join("\n")
    );
}

// Every exempted file exists and is compiled only for tests, so the exemption cannot leak
// I/O into the library.
#[test]
fn exemptions_are_test_only() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (file, _, why) in EXEMPTIONS.iter().chain(TEMPORARY_EXEMPTIONS.iter()) {
        assert!(
            root.join(file).is_file(),
            "{file} is exempted ({why}) but missing"
        );
        assert!(
            is_test_only(root, file),
            "{file} is exempted ({why}), but its `mod` declaration is not preceded by \
             #[cfg(test)]"
        );
    }
}

// Every exemption still covers something, so the lists only shrink: a fixed file must
// leave them.
#[test]
fn exemptions_are_still_needed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (file, word, why) in EXEMPTIONS.iter().chain(TEMPORARY_EXEMPTIONS.iter()) {
        let text = read(root, file);
        let still_named = text
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .any(|line| names_path(line, word));
        assert!(
            still_named,
            "{file} no longer names {word}: remove its exemption ({why})"
        );
    }
    for (file, why) in RANDOMNESS_EXEMPTIONS {
        if file == "tests/tidy.rs" {
            continue;
        }
        let text = read(root, file);
        let still_needed =
            !seed_variables(file, &text).is_empty() || !generator_copies(file, &text).is_empty();
        assert!(
            still_needed,
            "{file} names no other seed variable or generator: remove its exemption ({why})"
        );
    }
}

/// What `rule` finds in `files` (but for the randomness exemptions and `skip`).
fn randomness_findings(
    root: &Path,
    files: Vec<PathBuf>,
    skip: &str,
    rule: fn(&str, &str) -> Vec<String>,
) -> Vec<String> {
    let mut found = Vec::new();
    for path in files {
        let relative = relative_to(root, &path);
        if relative != skip && !randomness_exempt(&relative) {
            found.extend(rule(&relative, &read(root, &relative)));
        }
    }
    found
}

// Every randomized test takes its seed from COREKV_TEST_SEED: no other seed variable is
// named in the crate, its tests, benches, tools or docs.
#[test]
fn randomized_tests_take_one_seed_variable() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let found = randomness_findings(root, seed_scan_files(root), "", seed_variables);
    assert!(
        found.is_empty(),
        "randomized tests take their seed from {SEED_VARIABLE} (corekv::testing):\n{}",
        found.join("\n")
    );
}

// Every randomized test draws from SeededRng: no file of the crate or its tests carries
// its own xorshift64* or SplitMix64.
#[test]
fn randomized_tests_draw_from_one_generator() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = ["src", "tests"]
        .iter()
        .flat_map(|folder| files_under(&root.join(folder), &["rs"]))
        .collect();
    let found = randomness_findings(root, files, GENERATOR_FILE, generator_copies);
    assert!(
        found.is_empty(),
        "randomized tests draw from SeededRng:\n{}",
        found.join("\n")
    );
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
    assert!(
        violations(
            "src/raft/example.rs",
            "let timer = mystd::time::x(); use std::timer;"
        )
        .is_empty(),
        "only whole paths count"
    );
}

// Grouped imports are expanded, on one line or many, nested and aliased.
#[test]
fn grouped_imports_are_caught() {
    let found = violations("src/kv/example.rs", "use std::{fs, time};\n");
    assert_eq!(
        found,
        vec![
            "src/kv/example.rs:1: names std::time: use std::{fs, time};".to_string(),
            "src/kv/example.rs:1: names std::fs: use std::{fs, time};".to_string(),
        ]
    );
    let many_lines = "use std::collections::BTreeMap;\nuse std::{\n    io,\n    net::{\n        \
                      TcpStream as Stream,\n        Shutdown,\n    },\n};\n";
    assert_eq!(
        violations("src/kv/example.rs", many_lines),
        vec!["src/kv/example.rs:2: names std::net: use std::{".to_string()]
    );
    assert_eq!(
        expand_use_tree("::std::{self, time::{self as t, Instant}, io}"),
        vec!["std", "std::time", "std::time::Instant", "std::io"]
    );
    assert_eq!(
        violations(
            "src/kv/example.rs",
            "pub(crate) use core::{fmt, time::Duration};"
        )
        .len(),
        1
    );
    assert!(violations("src/kv/example.rs", "use std::{fmt, io::Write};").is_empty());
}

// The clock of core, threads, the environment and processes are banned.
#[test]
fn core_time_threads_environment_and_processes_are_caught() {
    let text = "use core::time::Duration;\nstd::thread::spawn(f);\nlet seed = \
                std::env::var(\"X\");\nstd::process::exit(1);\n";
    let found = violations("src/multiraft/example.rs", text);
    assert_eq!(found.len(), 4, "{found:?}");
    for (line, banned) in ["core::time", "std::thread", "std::env", "std::process"]
        .into_iter()
        .enumerate()
    {
        assert!(
            found[line].starts_with(&format!(
                "src/multiraft/example.rs:{}: names {banned}:",
                line + 1
            )),
            "{found:?}"
        );
    }
}

// A pure layer may not reach the layers that do I/O, by crate:: or corekv:: path, alone or
// in a group.
#[test]
fn io_layers_are_caught() {
    for line in [
        "use crate::wal::Wal;",
        "use crate::{kv, server::Node};",
        "let t = crate::transport::Transport::new();",
        "use corekv::client::Client;",
    ] {
        assert_eq!(
            violations("src/check/example.rs", line).len(),
            1,
            "{line} must be caught"
        );
    }
    assert!(violations("src/check/example.rs", "use crate::kv::client_id;").is_empty());
}

// The pure layers' production code may not read the test seed; their tests may.
#[test]
fn test_seed_outside_tests_is_caught() {
    let text = "fn seed() -> u64 { crate::testing::test_seed() }\n#[cfg(test)]\nmod tests {\n    \
                use crate::testing::test_seed;\n}\n";
    assert_eq!(
        test_support_outside_tests("src/kv/example.rs", text, false),
        vec![
            "src/kv/example.rs:1: names crate::testing outside test code: fn seed() -> u64 { \
             crate::testing::test_seed() }"
                .to_string()
        ]
    );
    assert!(test_support_outside_tests("src/kv/example.rs", text, true).is_empty());
}

// The scope covers the API as a file or a folder, the keyspace, and the shard folder once
// it exists; test-only modules are told from their declarations.
#[test]
fn scope_covers_the_api_keyspace_and_shard() {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("tidy-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    for file in [
        "src/lib.rs",
        "src/api/mod.rs",
        "src/api/get.rs",
        "src/shard/mod.rs",
        "src/keyspace.rs",
        "src/wal/mod.rs",
    ] {
        let path = root.join(file);
        fs::create_dir_all(path.parent().expect("a folder")).expect("folder");
        fs::write(&path, "").expect("file");
    }
    fs::write(
        root.join("src/shard/mod.rs"),
        "mod core;\n#[cfg(test)]\nmod tests;\n",
    )
    .expect("file");
    let found: Vec<String> = pure_files(&root)
        .iter()
        .map(|path| relative_to(&root, path))
        .collect();
    assert_eq!(
        found,
        [
            "src/api/get.rs",
            "src/api/mod.rs",
            "src/shard/mod.rs",
            "src/keyspace.rs"
        ]
    );
    assert!(is_test_only(&root, "src/shard/tests.rs"));
    assert!(!is_test_only(&root, "src/shard/core.rs"));
    let _ = fs::remove_dir_all(&root);
}

// Seed variables other than COREKV_TEST_SEED are found in code, shell and docs.
#[test]
fn other_seed_variables_are_caught() {
    let text =
        "let seed = std::env::var(\"SIM_SEED\");\n//! replay with `KV_SEED=<n> cargo test`\n\
                export FUZZ_SEED_BASE=\"$2\"\necho ${RUN_SEED}\nconst SEED: u64 = 7;\n\
                let x = SEED_BASE_DEFAULT;\nCOREKV_TEST_SEED=1 cargo test\n";
    let names: Vec<String> = seed_variables("tests/example.rs", text)
        .iter()
        .map(|line| {
            line.split("seed variable ")
                .nth(1)
                .expect("a name")
                .split(',')
                .next()
                .expect("a name")
                .to_string()
        })
        .collect();
    assert_eq!(names, ["SIM_SEED", "KV_SEED", "FUZZ_SEED_BASE", "RUN_SEED"]);
}

// Copies of xorshift64* and SplitMix64 are found whatever their spelling.
#[test]
fn generator_copies_are_caught() {
    let text =
        "state.wrapping_mul(0x2545_F491_4F6C_DD1D)\nz * 0xbf58476d1ce4e5b9\nlet x = 0x1234;\n";
    assert_eq!(generator_copies("tests/example.rs", text).len(), 2);
}
