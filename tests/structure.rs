//! The shape of `src/`, checked: the library's modules form layers that read top-down, each
//! using only those before it (no module imports one that imports it back), and no file grows
//! past 600 lines before its tests. A new dependency that breaks the layering fails here, with
//! the edge that broke it.

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The library's top-level modules, in the order the crate doc tells a reader to take them.
/// Each may use only those before it.
const LAYERS: &[&str] = &[
    "sys",
    "types",
    "units",
    "error",
    "progress",
    "fsutil",
    "index",
    "resolve",
    "lookup",
    "envelope",
    "layout",
    "clone",
    "archive",
    "registry",
    "gc",
    "fsck",
    "du",
    "store",
    "synthetic",
    "fuzzing",
];

/// Every `.rs` file under `dir`, as paths relative to `src/`.
fn sources(src: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(src, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(src).unwrap();
            out.push(rel.to_str().unwrap().to_string());
        }
    }
}

/// The top-level module a file of the library belongs to; `None` for the crate root and the CLI.
fn module_of(file: &str) -> Option<&str> {
    if file == "lib.rs" || file == "main.rs" || file.starts_with("cli/") {
        return None;
    }
    Some(file.split('/').next().unwrap().trim_end_matches(".rs"))
}

/// The modules a file names as `crate::NAME`, outside comments.
fn uses(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap();
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name.starts_with(|c: char| c.is_ascii_lowercase()) {
                found.insert(name);
            }
        }
    }
    found
}

#[test]
fn library_modules_use_only_the_layers_before_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    for file in &files {
        let Some(module) = module_of(file) else {
            continue;
        };
        let text = std::fs::read_to_string(src.join(file)).unwrap();
        for used in uses(&text) {
            if used != module {
                graph
                    .entry(module.to_string())
                    .or_default()
                    .insert((used, file.clone()));
            }
        }
    }
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    let mut wrong = Vec::new();
    for (module, edges) in &graph {
        let Some(mine) = rank(module) else {
            wrong.push(format!("{module} is not in LAYERS: place it"));
            continue;
        };
        for (used, file) in edges {
            match rank(used) {
                Some(theirs) if theirs < mine => {}
                _ => wrong.push(format!(
                    "{file} ({module}) uses crate::{used}, a later layer"
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the layers are broken:\n{}",
        wrong.join("\n")
    );
    // The check has something to check: the store is built on the layers below it.
    assert!(graph["store"].iter().any(|(m, _)| m == "archive"));
    assert!(graph["gc"].iter().any(|(m, _)| m == "layout"));
}

#[test]
fn no_file_is_past_600_lines_before_its_tests() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &src, &mut files);
    assert!(files.len() > 30, "{files:?}");
    let long: Vec<String> = files
        .iter()
        .filter_map(|file| {
            let text = std::fs::read_to_string(src.join(file)).unwrap();
            let lines = text
                .lines()
                .take_while(|l| !l.starts_with("#[cfg(test)]"))
                .count();
            (lines > 600).then(|| format!("{file}: {lines} lines"))
        })
        .collect();
    assert!(
        long.is_empty(),
        "two rooms in one file:\n{}",
        long.join("\n")
    );
}
