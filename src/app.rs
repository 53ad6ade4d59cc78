//! Wiring for `serve` (in progress).
use std::path::Path;

use crate::cli::ServeArgs;

/// Runs the daemon.
pub fn main(_args: ServeArgs) -> u8 {
    0
}

/// Validates a config file.
pub fn check_config(_file: &Path) -> u8 {
    0
}
