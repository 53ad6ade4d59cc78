//! Replays the fuzz corpus and every crash the fuzzers found through the same checks the fuzz
//! targets run (`fuzz/checks.rs`), so `cargo test` guards what `scripts/fuzz.sh` once found.
//!
//! Inputs live in `fuzz/corpus/<target>/` (seeds and the minimized corpus) and
//! `fuzz/regressions/<target>/` (crashes, one file each, named after what they broke).

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::Path;

/// Feeds every file under `fuzz/{corpus,regressions}/<target>/` to `check`; returns how many.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for kind in ["corpus", "regressions"] {
        let dir = root.join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let data = std::fs::read(&path).unwrap();
            let caught = std::panic::catch_unwind(|| check(&data));
            assert!(caught.is_ok(), "{target}: {} fails", path.display());
            n += 1;
        }
    }
    n
}

#[test]
fn target_files_corpus() {
    assert!(
        replay("target_files", checks::target_files) > 0,
        "no target_files corpus"
    );
}

#[test]
fn config_corpus() {
    assert!(replay("config", checks::config) > 0, "no config corpus");
}

#[test]
fn duration_corpus() {
    assert!(
        replay("duration", checks::duration) > 0,
        "no duration corpus"
    );
}

#[test]
fn icmp_corpus() {
    assert!(replay("icmp", checks::icmp) > 0, "no icmp corpus");
}

#[test]
fn api_json_corpus() {
    assert!(
        replay("api_json", checks::api_json) > 0,
        "no api_json corpus"
    );
}
