//! (stub until the config branch lands)
/// Stub.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}
mod types;
pub use types::*;
