//! Every program the test suite spawns comes from a Debian package that `scripts/test` installs
//! (or from an Essential package, present on every Debian system).
//!
//! The scan reads tests/ and src/bin/: every literal `Command::new("x")`, `command("x")`,
//! `command_unprivileged("x")`, `tool("x")` and `require_program("x")`, plus the programs of the
//! table below where they stand in command position inside a shell script literal (`sh -c`). A
//! literal program missing from the table fails (add it with its package); a package missing from
//! `scripts/test` fails.
#![allow(clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Program -> Debian package (bookworm). `None`: not from Debian (built or installed by cargo).
const PACKAGES: &[(&str, Option<&str>)] = &[
    ("ip", Some("iproute2")),
    ("nft", Some("nftables")),
    ("chattr", Some("e2fsprogs")),
    ("sysctl", Some("procps")),
    ("ping", Some("iputils-ping")),
    ("fping", Some("fping")),
    ("traceroute", Some("traceroute")),
    ("prometheus", Some("prometheus")),
    ("promtool", Some("prometheus")),
    ("prometheus-alertmanager", Some("prometheus-alertmanager")),
    ("amtool", Some("prometheus-alertmanager")),
    ("chromedriver", Some("chromium-driver")),
    ("chromium", Some("chromium")),
    ("docker-compose", Some("docker-compose")),
    // `python3 -m venv` needs ensurepip, which Debian ships in python3-venv.
    ("python3", Some("python3-venv")),
    ("node", Some("nodejs")),
    // NodeSource's nodejs (this project's machine image) ships npm; on plain Debian scripts/test
    // adds the npm package when no npm is on PATH (the two conflict, so not in the list).
    ("npm", Some("nodejs")),
    ("setpriv", Some("util-linux")),
    ("unshare", Some("util-linux")),
    ("taskset", Some("util-linux")),
    ("mount", Some("mount")),
    ("umount", Some("mount")),
    ("timeout", Some("coreutils")),
    ("chmod", Some("coreutils")),
    ("id", Some("coreutils")),
    ("sh", Some("dash")),
    ("cargo", None),
];

/// Packages with `Essential: yes`: on every Debian system, never listed in scripts/test.
const ESSENTIAL: &[&str] = &["coreutils", "dash", "util-linux"];

const CALLS: &[&str] = &[
    "Command::new(\"",
    "command(\"",
    "command_unprivileged(\"",
    "tool(\"",
    "require_program(\"",
];

/// Program -> the files that spawn it.
fn spawned_programs(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = support::files_under(&root.join("tests"), "rs");
    files.extend(support::files_under(&root.join("src/bin"), "rs"));
    let this = root.join("tests/test_programs.rs");
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files.iter().filter(|f| **f != this) {
        let text = std::fs::read_to_string(file).expect("reading a source file");
        let name = file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string();
        for call in CALLS {
            for (at, _) in text.match_indices(call) {
                let rest = &text[at + call.len()..];
                let literal = rest.split('"').next().unwrap_or_default();
                let program = literal.rsplit('/').next().unwrap_or_default();
                if !program.is_empty() {
                    found
                        .entry(program.to_owned())
                        .or_default()
                        .insert(name.clone());
                }
            }
        }
        // Shell scripts: a table program after a separator, or as an argument-vector item.
        for (program, _) in PACKAGES {
            let in_shell = ["\"", "; ", "&& ", "| ", "$(", "\n    "]
                .iter()
                .any(|sep| text.contains(&format!("{sep}{program} ")));
            if in_shell || text.contains(&format!("\"{program}\", \"")) {
                found
                    .entry((*program).to_owned())
                    .or_default()
                    .insert(name.clone());
            }
        }
    }
    found
}

/// The packages of the `packages=(...)` array in scripts/test.
fn installed_by_script(root: &Path) -> BTreeSet<String> {
    let script = std::fs::read_to_string(root.join("scripts/test")).expect("reading scripts/test");
    let line = script
        .lines()
        .find(|l| l.trim_start().starts_with("packages=("))
        .expect("scripts/test has a packages=(...) line");
    line.trim_start()
        .trim_start_matches("packages=(")
        .trim_end()
        .trim_end_matches(')')
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_spawned_program_is_installed_by_scripts_test() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let spawned = spawned_programs(root);
    let installed = installed_by_script(root);
    let table: BTreeMap<&str, Option<&str>> = PACKAGES.iter().copied().collect();
    // The scan must see the programs the issue named, or it is blind.
    for known in ["nft", "chattr", "sysctl", "ip", "setpriv"] {
        assert!(
            spawned.contains_key(known),
            "the scan no longer finds {known}"
        );
    }
    let mut problems = Vec::new();
    for (program, files) in &spawned {
        match table.get(program.as_str()) {
            None => problems.push(format!(
                "{program} (spawned in {files:?}) is not in the table of tests/test_programs.rs: add its Debian package"
            )),
            Some(None) => {}
            Some(Some(package)) => {
                if !ESSENTIAL.contains(package) && !installed.contains(*package) {
                    problems.push(format!(
                        "{program} (spawned in {files:?}) comes from {package}, which scripts/test does not install"
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
