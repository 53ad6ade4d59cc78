//! The config of `pingscope serve`: YAML in, an immutable [`Config`] out, or every problem at once.
//!
//! Layers, each in its own file:
//!
//! | file | owns |
//! |---|---|
//! | `raw.rs` | serde structs as written; unknown keys refused; every value keeps its location |
//! | `types.rs` | the typed [`Config`], the named defaults and limits, [`AccessConfig::check`] |
//! | `rules.rs` + `validate.rs` | defaults applied, every rule run, every problem recorded |
//! | `file_sd.rs` | `target_files` in Prometheus' file_sd format |
//! | [`outage`] | `outage:`, `alert:` and `capture:` of defaults and targets, their limits |
//! | `yaml_limits.rs` | the YAML parser's budget, sized for real configs; its breaches in words |
//! | `locate.rs` | names the key of a YAML syntax or type error, and parses on past type errors |
//! | `error.rs` | [`ConfigError`]: `FILE:LINE: KEY: message`, one per line |
//! | [`shard`] | `--shard I/N` |
//! | [`shard_auto`] | `--shard auto`: the index from a StatefulSet hostname |
//! | [`mesh`] | `mesh:`: the peers of a mesh instance (DNS or static), `max_peers`, its name |
//! | [`mesh_peers`] | which peers a mesh instance pings (the ring choice) |
//! | [`diff`] | which targets a reload adds, removes, changes or keeps |
//!
//! Every problem is reported at once: unknown keys and wrong types (the parse blanks the entry at
//! fault and goes on, see `locate.rs`) together with every rule the values break. Only a YAML
//! syntax error (an unclosed bracket, a bad indent) stops the reading of its file, and is then
//! reported with the problems found before it. Keys are paths such as `targets[2].interval`, list
//! indexes counting from 0.

pub mod diff;
mod error;
mod file_sd;
mod locate;
pub mod mesh;
pub mod mesh_peers;
pub mod outage;
mod path;
mod raw;
pub mod read;
mod rules;
pub mod shard;
pub mod shard_auto;
mod types;
mod validate;
mod yaml_limits;

pub use crate::duration::{self, DurationError, format_duration, parse_duration};
pub use diff::{ChangedTarget, TargetDiff, diff_targets};
pub use error::{ConfigError, ConfigIssue};
pub use mesh::{MeshConfig, MeshPeers};
pub use shard::{Shard, ShardError};
pub use types::{
    AccessConfig, AlertThresholds, CaptureRule, Config, Denied, DnsConfig, HistogramConfig,
    MetricsConfig, OutageRule, PathPacingConfig, ProbeLimitsConfig, ProbeProfile, RetentionConfig,
    SessionsConfig, TargetConfig, TargetOptions, defaults, limits,
};

use error::Issues;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The config `serve` runs without `--config.file`: monitors 127.0.0.1 and ::1.
const EMBEDDED_DEFAULT: &str = include_str!("../../config/default.yml");

/// The file name errors in the embedded default would carry.
const EMBEDDED_NAME: &str = "<embedded default>";

/// Reads and validates a config file (and the target files it names).
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let name = path.display().to_string();
    let src = read::read_text(path, read::MAX_CONFIG_BYTES).map_err(|e| {
        let mut issues = Issues::new(&name);
        issues.push_file(e.to_string());
        match issues.finish(()) {
            Err(err) => err,
            Ok(()) => ConfigError { issues: Vec::new() },
        }
    })?;
    let base_dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut config = parse_str(&src, &name, base_dir)?;
    config.source_path = Some(path.to_path_buf());
    Ok(config)
}

/// Validates config text. `file_name` is what errors call the text; relative `target_files` globs
/// and `sessions.database` are taken from `base_dir` (an empty path leaves them relative to the
/// working directory).
pub fn parse_str(src: &str, file_name: &str, base_dir: &Path) -> Result<Config, ConfigError> {
    let mut issues = Issues::new(file_name);
    let Some(parsed) = locate::parse_recovering::<Option<raw::RawConfig>>(&mut issues, src) else {
        return issues.finish(Config::empty());
    };
    let mut rules = Issues::new(file_name);
    let locate::Recovered { value, skipped } = parsed;
    let config = validate::build(value.unwrap_or_default(), &mut rules, base_dir);
    // Issues under a blanked entry describe the blank, not the file.
    issues.absorb(rules, |issue| {
        issue.file != file_name || issue.key.as_deref().is_none_or(|k| !skipped.covers(k))
    });
    issues.finish(config)
}

impl Config {
    /// The config `serve` runs without `--config.file` (`config/default.yml`, built in).
    #[allow(
        clippy::expect_used,
        reason = "the embedded file is part of the binary, and a test proves it is valid"
    )]
    pub fn embedded_default() -> Config {
        parse_str(EMBEDDED_DEFAULT, EMBEDDED_NAME, Path::new(""))
            .expect("config/default.yml is valid (tested)")
    }

    /// A config with no targets and every default.
    fn empty() -> Config {
        Config {
            defaults: TargetOptions::default(),
            targets: Vec::new(),
            targets_from_files: 0,
            target_files: Vec::new(),
            dns: DnsConfig::default(),
            sessions: SessionsConfig::default(),
            access: AccessConfig::default(),
            probe_profiles: [(
                defaults::PROFILE.to_owned(),
                ProbeProfile {
                    kind: crate::probe::ProbeKind::Icmp,
                    count: defaults::PROFILE_COUNT,
                    interval: defaults::PROFILE_INTERVAL,
                    timeout: defaults::PROFILE_TIMEOUT,
                    size: defaults::SIZE,
                    family: crate::resolve::Family::Auto,
                    port: Default::default(),
                },
            )]
            .into(),
            probe_limits: ProbeLimitsConfig::default(),
            histogram: HistogramConfig::default(),
            mesh: None,
            path_pacing: PathPacingConfig::default(),
            source_path: None,
        }
    }

    /// What a file watcher should watch to reload on change: the config file and the folder of
    /// each `target_files` glob (the part before the first wildcard). Empty for the embedded default.
    pub fn watch_paths(&self) -> Vec<PathBuf> {
        let Some(path) = &self.source_path else {
            return Vec::new();
        };
        let base = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut out = vec![path.clone()];
        for pattern in &self.target_files {
            let mut dir = base.clone();
            let literal = Path::new(pattern)
                .parent()
                .into_iter()
                .flat_map(Path::components)
                .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']));
            for part in literal {
                dir.push(part);
            }
            if !out.contains(&dir) {
                out.push(dir);
            }
        }
        out
    }

    /// The targets `shard` keeps, in config order.
    pub fn targets_for(&self, shard: Option<Shard>) -> Vec<Arc<TargetConfig>> {
        self.targets
            .iter()
            .filter(|t| shard.is_none_or(|s| s.keeps(&t.name)))
            .cloned()
            .collect()
    }
}

/// What `pingscope check-config FILE` prints, and whether the file is valid.
///
/// Valid: one line, `FILE: OK: 3 targets (1 from target_files), 2 probe profiles`. Invalid: every
/// issue, one per line, then `FILE: N errors`.
pub fn check_config_report(path: &Path) -> (bool, String) {
    match load_file(path) {
        Ok(config) => {
            let plural =
                |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
            (
                true,
                format!(
                    "{}: OK: {} ({} from target_files), {}",
                    path.display(),
                    plural(config.targets.len(), "target"),
                    config.targets_from_files,
                    plural(config.probe_profiles.len(), "probe profile"),
                ),
            )
        }
        Err(e) => {
            let n = e.issues.len();
            (
                false,
                format!(
                    "{e}\n{}: {n} error{}",
                    path.display(),
                    if n == 1 { "" } else { "s" }
                ),
            )
        }
    }
}
