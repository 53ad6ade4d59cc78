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

/// Replays `target`'s inputs through `check`, and fails when there are none (a renamed folder
/// would otherwise pass unnoticed).
fn assert_replays(target: &str, check: fn(&[u8])) {
    assert!(replay(target, check) > 0, "no {target} corpus");
}

/// One test per fuzz target, named `<target>_corpus`, replaying that target's inputs.
macro_rules! corpus_tests {
    ($($target:ident => $test:ident),* $(,)?) => {$(
        #[test]
        fn $test() {
            assert_replays(stringify!($target), checks::$target);
        }
    )*};
}

corpus_tests! {
    target_files => target_files_corpus,
    config => config_corpus,
    duration => duration_corpus,
    icmp => icmp_corpus,
    api_json => api_json_corpus,
}
