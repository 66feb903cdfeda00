//! The layering of docs/ARCHITECTURE.md ("Layering"), checked on the source: which of wonk's top-level modules
//! each module names (`crate::X`, `crate::{X, ..}`, `wonk::X`), comments, string literals and unit tests left out.
//! A rule that breaks names the file and line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The modules the rules speak of.
const LAYERS: &[&str] = &[
    "host", "owner", "finding", "term", "metric", "kmsg", "checks", "render", "agent",
];

/// `(module, must not name)`.
const FORBIDDEN: &[(&str, &[&str])] = &[
    (
        "host",
        &["owner", "finding", "checks", "kmsg", "render", "agent"],
    ),
    ("owner", &["finding", "checks", "kmsg", "render", "agent"]),
    ("finding", &["checks", "kmsg", "render", "agent"]),
    ("term", &["finding", "checks", "kmsg", "render", "agent"]),
    ("metric", &["finding", "checks", "kmsg", "render", "agent"]),
    ("kmsg", &["checks", "render", "agent"]),
    (
        "checks",
        &[
            "render",
            "agent",
            "who",
            "top",
            "enospc",
            "fs",
            "investigation",
        ],
    ),
    (
        "render",
        &["agent", "who", "top", "enospc", "fs", "investigation"],
    ),
];

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file of src/ belongs to.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// A line without its `//` comment and without the contents of its string literals.
fn code_of(line: &str) -> String {
    let mut out = String::new();
    let mut in_str = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if in_str {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    in_str = false;
                    out.push('"');
                }
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                out.push('"');
            }
            '/' if chars.peek() == Some(&'/') => break,
            _ => out.push(c),
        }
    }
    out
}

/// Every module in `names` that a line of code names.
fn named(code: &str, names: &BTreeSet<String>) -> Vec<String> {
    let mut found = Vec::new();
    for prefix in ["crate::", "wonk::"] {
        for (i, _) in code.match_indices(prefix) {
            let rest = &code[i + prefix.len()..];
            let word: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if names.contains(&word) {
                found.push(word);
            }
        }
    }
    // `use crate::{a, b}` groups.
    if let Some(i) = code.find("crate::{") {
        for w in code[i + 8..].split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if names.contains(w) {
                found.push(w.to_string());
            }
        }
    }
    found
}

#[test]
fn the_layers_hold() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    files.sort();
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut deps: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for f in &files {
        let m = module_of(&src, f);
        if m == "main" || m == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        // Unit tests may reach anywhere.
        let text = text.split("#[cfg(test)]").next().unwrap_or("");
        for (n, line) in text.lines().enumerate() {
            let code = code_of(line);
            for d in named(&code, &modules) {
                if d != m {
                    deps.entry(m.clone())
                        .or_default()
                        .entry(d)
                        .or_insert_with(|| {
                            format!("{}:{}", f.strip_prefix(&src).unwrap().display(), n + 1)
                        });
                }
            }
        }
    }
    let mut broken = Vec::new();
    for (m, not) in FORBIDDEN {
        for n in *not {
            if let Some(at) = deps.get(*m).and_then(|d| d.get(*n)) {
                broken.push(format!("{m} names {n} (src/{at})"));
            }
        }
    }
    // No cycle among the layers: a depth-first search over their edges.
    fn visit(
        m: &str,
        deps: &BTreeMap<String, BTreeMap<String, String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        cycles: &mut Vec<String>,
    ) {
        if let Some(i) = path.iter().position(|p| p == m) {
            cycles.push(format!("cycle: {} -> {m}", path[i..].join(" -> ")));
            return;
        }
        if !done.insert(m.to_string()) {
            return;
        }
        path.push(m.to_string());
        for d in deps.get(m).into_iter().flat_map(|d| d.keys()) {
            if LAYERS.contains(&d.as_str()) {
                visit(d, deps, path, done, cycles);
            }
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for m in LAYERS {
        visit(m, &deps, &mut Vec::new(), &mut done, &mut broken);
    }
    assert!(
        broken.is_empty(),
        "the layering is broken:\n{}",
        broken.join("\n")
    );
}
