//! `target_files`: targets in Prometheus' file_sd format, so one list can feed Prometheus and
//! pingscope alike.
//!
//! Each file (YAML or JSON) is a list of groups `{targets: [host, ...], labels: {name: value}}`.
//! Every host becomes a target named after the host (file_sd has no per-target name; give a target
//! another name by listing it in `targets` instead). The group's labels apply to each of its hosts,
//! except labels starting with `__` (Prometheus' `__meta_*`, `__address__`...), which are skipped
//! as Prometheus drops them too, so files written for Prometheus load unchanged. Every other
//! option comes from `defaults`. Globs are relative to the config file's folder; a glob that
//! matches nothing is not an error (the files may come later), as in Prometheus.

use super::ConfigError;
use super::error::Issues;
use super::locate::parse_recovering;
use super::raw::{RawSdGroup, S};
use super::rules::{self, line};
use super::types::{TargetConfig, TargetDefaults};
use super::validate::{Seen, claim_name, make_target};
use std::collections::BTreeMap;
use std::path::Path;

/// Reads every file `pattern` matches, recording issues under each file's own name; a problem with
/// the pattern itself goes under `at` (line and key of the pattern in the config).
pub(crate) fn load_pattern(
    issues: &mut Issues,
    pattern: &str,
    at: (u64, &str),
    base_dir: &Path,
    defaults: &TargetDefaults,
    seen: &mut Seen,
) -> Vec<TargetConfig> {
    let full = if Path::new(pattern).is_absolute() || base_dir.as_os_str().is_empty() {
        pattern.to_owned()
    } else {
        // The folder is taken literally: a `[` in its name is no glob.
        let dir = glob::Pattern::escape(&base_dir.to_string_lossy());
        format!("{}/{pattern}", dir.trim_end_matches('/'))
    };
    let paths = match glob::glob(&full) {
        Ok(paths) => paths,
        Err(e) => {
            issues.push(at.0, at.1, format!("invalid glob {pattern:?}: {e}"));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    // glob yields paths in alphabetical order, so target order is stable across reloads.
    for entry in paths {
        match entry {
            Ok(path) => match load_file(&path, defaults, seen) {
                Ok(targets) => out.extend(targets),
                Err(e) => issues.extend(e),
            },
            Err(e) => issues.push(
                at.0,
                at.1,
                format!("cannot read {}: {}", e.path().display(), e.error()),
            ),
        }
    }
    out
}

/// Reads one file_sd file. Target names already in `seen` are duplicates.
fn load_file(
    path: &Path,
    defaults: &TargetDefaults,
    seen: &mut Seen,
) -> Result<Vec<TargetConfig>, ConfigError> {
    let name = path.display().to_string();
    let mut issues = Issues::new(&name);
    let src = match std::fs::read_to_string(path) {
        Ok(src) => src,
        Err(e) => {
            issues.push_file(format!("cannot read: {e}"));
            return issues.finish(Vec::new());
        }
    };
    let out = parse(&mut issues, &src, defaults, seen);
    issues.finish(out)
}

/// Parses file_sd text, recording issues in `issues`.
pub(crate) fn parse(
    issues: &mut Issues,
    src: &str,
    defaults: &TargetDefaults,
    seen: &mut Seen,
) -> Vec<TargetConfig> {
    if src.trim().is_empty() {
        return Vec::new();
    }
    let mut rules = Issues::new(issues.file());
    let Some(parsed) = parse_recovering::<Vec<S<RawSdGroup>>>(issues, src) else {
        return Vec::new();
    };
    let skipped = parsed.skipped;
    let out = groups(&mut rules, &parsed.value, defaults, seen);
    issues.absorb(rules, |issue| {
        issue.key.as_deref().is_none_or(|k| !skipped.covers(k))
    });
    out
}

fn groups(
    issues: &mut Issues,
    groups: &[S<RawSdGroup>],
    defaults: &TargetDefaults,
    seen: &mut Seen,
) -> Vec<TargetConfig> {
    let mut out = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        let labels: BTreeMap<String, S<String>> = group
            .value
            .labels
            .iter()
            .flatten()
            .filter(|(name, _)| !name.starts_with("__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let labels = rules::labels(issues, &labels, &format!("[{g}].labels"));
        for (t, host) in group.value.targets.iter().flatten().enumerate() {
            let key = format!("[{g}].targets[{t}]");
            if let Err(message) = rules::host_ok(&host.value) {
                issues.push(line(host), key, message);
                continue;
            }
            let here = format!("{}:{}", issues.file(), line(host));
            if claim_name(issues, seen, &host.value, here, line(host), &key) {
                out.push(make_target(
                    host.value.clone(),
                    host.value.clone(),
                    labels.clone(),
                    defaults.clone(),
                ));
            }
        }
    }
    out
}
