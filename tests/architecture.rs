//! The layering of `src/` is a test: every `use crate::…` (grouped ones too) and every
//! `crate::x::` path in the code of a module file is an arrow from that file's top-level module
//! to `x`; an arrow the rules below forbid fails, with its file and line. The rules mirror the
//! map that opens `src/lib.rs` (which this test also checks lists every module).
//!
//! Not read: `src/main.rs` and `src/bin/` (binaries, not modules of the library), comments.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Modules that import nothing of the crate.
const LEAVES: &[&str] = &["engine", "stats", "resolve", "duration", "exit"];

/// `(module, who may import it)`: any other module importing it is a forbidden arrow.
const ONLY_IMPORTED_BY: &[(&str, &[&str])] = &[
    // cli only defines; main.rs dispatches. No module of the library imports it.
    ("cli", &[]),
    // The wiring of `serve` is the top: only the CLI dispatch reaches it.
    ("app", &["cli"]),
    // The HTTP layer is wired by `app` alone; in particular `http` never imports `app` (the
    // state it needs is `state::App`), and nothing below it imports `http`.
    ("http", &["app"]),
    // The daemon's state sits above every domain module: only the HTTP layer and the wiring
    // hold it.
    ("state", &["http", "app"]),
];

/// One arrow found in the source.
#[derive(Debug)]
struct Arrow {
    file: PathBuf,
    line: usize,
    from: String,
    to: String,
}

fn why_forbidden(from: &str, to: &str) -> Option<String> {
    if from == to {
        return None;
    }
    if LEAVES.contains(&from) {
        return Some(format!("{from} imports nothing of the crate"));
    }
    for (module, importers) in ONLY_IMPORTED_BY {
        if *module == to && !importers.contains(&from) {
            return Some(if importers.is_empty() {
                format!("no module imports {module}")
            } else {
                format!("only {} may import {module}", importers.join(", "))
            });
        }
    }
    None
}

/// `src/x.rs` and `src/x/…` belong to `x`; `src/lib.rs` to the crate root.
fn top_module(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap_or(file);
    let first = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    first.trim_end_matches(".rs").to_owned()
}

/// The code of a line: without `//` comments (doc comments included). Good enough for this
/// code base, which has no `//` inside string literals on a line naming `crate::`.
fn code(line: &str) -> &str {
    match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    }
}

fn ident_at(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The top-level modules a grouped `use crate::{a, b::c, d::{e, f}}` names.
fn grouped(inner: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = true;
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => start = true,
            c if start && depth == 0 && !c.is_whitespace() => {
                start = false;
                let name = ident_at(&inner[i..]);
                if !name.is_empty() && name != "self" {
                    out.push(name);
                }
            }
            _ => {}
        }
    }
    out
}

fn arrows_of(src: &Path, file: &Path) -> Vec<Arrow> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let from = top_module(src, file);
    let lines: Vec<&str> = text.lines().map(code).collect();
    let mut out = Vec::new();
    let mut push = |line: usize, to: String| {
        out.push(Arrow {
            file: file.to_owned(),
            line: line + 1,
            from: from.clone(),
            to,
        })
    };
    for (n, line) in lines.iter().enumerate() {
        let mut rest = *line;
        while let Some(i) = rest.find("crate::") {
            // `pingscope_crate::` or `$crate::` are not this crate's paths.
            let before = rest[..i].chars().next_back();
            let after = &rest[i + "crate::".len()..];
            rest = after;
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            if let Some(group) = after.strip_prefix('{') {
                // A grouped use may span lines: read up to its closing brace.
                let mut body = String::from(group);
                let mut m = n;
                while body.matches('{').count() >= body.matches('}').count() && m + 1 < lines.len()
                {
                    m += 1;
                    body.push_str(lines[m]);
                }
                for to in grouped(&body) {
                    push(n, to);
                }
            } else {
                let to = ident_at(after);
                if !to.is_empty() {
                    push(n, to);
                }
            }
        }
    }
    out
}

fn module_files(src: &Path) -> Vec<PathBuf> {
    let mut files = support::files_under(src, "rs");
    files.retain(|f| {
        let rel = f.strip_prefix(src).unwrap_or(f);
        rel != Path::new("main.rs") && !rel.starts_with("bin")
    });
    files
}

#[test]
fn no_module_imports_against_the_map() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut forbidden = Vec::new();
    let mut seen = 0;
    for file in module_files(&src) {
        for arrow in arrows_of(&src, &file) {
            seen += 1;
            if let Some(why) = why_forbidden(&arrow.from, &arrow.to) {
                forbidden.push(format!(
                    "{}:{}: {} -> {} ({why})",
                    arrow
                        .file
                        .strip_prefix(&src)
                        .unwrap_or(&arrow.file)
                        .display(),
                    arrow.line,
                    arrow.from,
                    arrow.to
                ));
            }
        }
    }
    // A parser that finds nothing would pass anything.
    assert!(
        seen > 100,
        "only {seen} arrows found: is the parser broken?"
    );
    assert!(
        forbidden.is_empty(),
        "{} forbidden arrow(s), see the map in src/lib.rs:\n{}",
        forbidden.len(),
        forbidden.join("\n")
    );
}

/// Longest a source file under `src/` may be, in lines (binaries included): a longer one holds
/// more than one concern and is split by them.
const MAX_FILE_LINES: usize = 600;

#[test]
fn no_source_file_is_over_600_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = support::files_under(&src, "rs");
    assert!(files.len() > 50, "only {} files under src/", files.len());
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).ok()?.lines().count();
            (lines > MAX_FILE_LINES).then(|| {
                let rel = f.strip_prefix(&src).unwrap_or(f);
                format!("src/{}: {lines} lines", rel.display())
            })
        })
        .collect();
    assert!(
        long.is_empty(),
        "over {MAX_FILE_LINES} lines (split by concern):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_map_in_lib_rs_lists_every_module() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap_or_else(|e| panic!("{e}"));
    let map: String = lib
        .lines()
        .filter(|l| l.starts_with("//!"))
        .collect::<Vec<_>>()
        .join("\n");
    let modules: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l
                .strip_prefix("pub ")
                .or_else(|| l.strip_prefix("pub(crate) "))
                .unwrap_or(l);
            l.strip_prefix("mod ")?.strip_suffix(';').map(str::to_owned)
        })
        .collect();
    assert!(!modules.is_empty());
    let missing: Vec<&String> = modules
        .iter()
        .filter(|m| !map.contains(&format!("`{m}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "modules missing from the map of src/lib.rs: {missing:?}"
    );
    for m in LEAVES.iter().chain(ONLY_IMPORTED_BY.iter().map(|(m, _)| m)) {
        assert!(
            modules.contains(*m),
            "the rules name {m}, which src/lib.rs does not declare"
        );
    }
}

// The parser itself, on the shapes the source uses.
#[test]
fn reads_plain_grouped_and_inline_paths() {
    assert_eq!(grouped("a, b::c, d::{e, f}, self"), ["a", "b", "d"]);
    assert_eq!(grouped("\n    a::{x,\n y},\n    b,\n}"), ["a", "b"]);
    assert_eq!(code("let x = 1; // crate::http"), "let x = 1; ");
    assert_eq!(ident_at("http::serve"), "http");
    assert_eq!(
        why_forbidden("stats", "http").as_deref(),
        Some("stats imports nothing of the crate")
    );
    assert_eq!(
        why_forbidden("state", "http").as_deref(),
        Some("only app may import http")
    );
    assert_eq!(why_forbidden("app", "http"), None);
    assert_eq!(why_forbidden("http", "state"), None);
}
