//! Fuzz target `target_files`: see `fuzz/checks.rs` for what it feeds and checks.
#![no_main]

// Each target uses one of the shared checks.
#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::target_files(data));
