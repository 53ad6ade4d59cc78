//! (stub until the config branch lands)
/// Stub.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}
mod types;
pub use types::*;
// ---- stubs mirroring the config branch ----
/// Stub.
#[derive(Debug, thiserror::Error)]
#[error("config error")]
pub struct ConfigError;
/// Stub.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard;
impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(_s: &str) -> Result<Self, String> { Ok(Shard) }
}
impl Shard {
    /// Stub.
    pub fn keeps(&self, _n: &str) -> bool { true }
}
/// Stub.
pub fn load_file(_p: &std::path::Path) -> Result<Config, ConfigError> { Err(ConfigError) }
/// Stub.
pub fn check_config_report(_p: &std::path::Path) -> (bool, String) { (true, String::new()) }
impl Config {
    /// Stub.
    pub fn embedded_default() -> Config { unimplemented!() }
    /// Stub.
    pub fn targets_for(&self, shard: Option<Shard>) -> Vec<&TargetConfig> { self.targets.iter().filter(|t| shard.is_none_or(|s| s.keeps(&t.name))).collect() }
    /// Stub.
    pub fn watch_paths(&self) -> Vec<std::path::PathBuf> { Vec::new() }
}
/// Stub.
pub fn format_duration(d: std::time::Duration) -> String { format!("{d:?}") }
