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
use super::read;
use super::rules::{self, line};
use super::types::{TargetConfig, TargetOptions};
use super::validate::{Seen, claim_name, make_target};
use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// Most files one `target_files` pattern may match.
pub const MAX_GLOB_MATCHES: usize = 10_000;
/// Most directory entries one pattern's walk may look at.
pub const MAX_GLOB_ENTRIES: usize = 1_000_000;
/// Deepest a `**` walks below the pattern's literal folder.
pub const MAX_GLOB_DEPTH: usize = 16;

/// Reads every file `pattern` matches, recording issues under each file's own name; a problem with
/// the pattern itself goes under `at` (line and key of the pattern in the config).
pub(crate) fn load_pattern(
    issues: &mut Issues,
    pattern: &str,
    at: (u64, &str),
    base_dir: &Path,
    defaults: &TargetOptions,
    seen: &mut Seen,
) -> Vec<TargetConfig> {
    let full = if Path::new(pattern).is_absolute() || base_dir.as_os_str().is_empty() {
        pattern.to_owned()
    } else {
        // The folder is taken literally: a `[` in its name is no glob.
        let dir = glob::Pattern::escape(&base_dir.to_string_lossy());
        format!("{}/{pattern}", dir.trim_end_matches('/'))
    };
    let paths = match walk(&full) {
        Ok(Walked { paths, problems }) => {
            for p in problems {
                issues.push(at.0, at.1, format!("target_files {pattern:?}: {p}"));
            }
            paths
        }
        Err(e) => {
            issues.push(at.0, at.1, format!("target_files {pattern:?}: {e}"));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for path in paths {
        match load_file(&path, defaults, seen) {
            Ok(targets) => out.extend(targets),
            Err(e) => issues.extend(e),
        }
    }
    out
}

/// What a glob walk found: the matching files in alphabetical order, and the folders it could
/// not read.
#[derive(Debug, Default)]
pub(crate) struct Walked {
    pub(crate) paths: Vec<PathBuf>,
    pub(crate) problems: Vec<String>,
}

/// Why a glob walk stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WalkError {
    #[error("invalid glob: {0}")]
    Pattern(#[from] glob::PatternError),
    #[error("matches more than {MAX_GLOB_MATCHES} files; narrow the pattern")]
    TooManyMatches,
    #[error("looks at more than {MAX_GLOB_ENTRIES} directory entries; narrow the pattern")]
    TooManyEntries,
    #[error(
        "{0} is more than {MAX_GLOB_DEPTH} folders below the pattern's fixed part; `**` goes no deeper"
    )]
    TooDeep(PathBuf),
}

/// The files a glob pattern matches, found by a bounded walk: each real folder is entered at
/// most once (a symlink loop ends there), no deeper than [`MAX_GLOB_DEPTH`], with at most
/// [`MAX_GLOB_MATCHES`] matches and [`MAX_GLOB_ENTRIES`] entries looked at. Folders are not
/// matches. A pattern without wildcards names its one file, whatever it is (the reader refuses
/// what is not a regular file).
pub(crate) fn walk(full: &str) -> Result<Walked, WalkError> {
    let pattern = glob::Pattern::new(full)?;
    let wild =
        |c: &std::path::Component<'_>| c.as_os_str().to_string_lossy().contains(['*', '?', '[']);
    let components: Vec<_> = Path::new(full).components().collect();
    let fixed = components.iter().take_while(|c| !wild(c)).count();
    let mut walked = Walked::default();
    if fixed == components.len() {
        let path = PathBuf::from(full);
        if std::fs::metadata(&path).is_ok() {
            walked.paths.push(path);
        }
        return Ok(walked);
    }
    let root: PathBuf = components[..fixed].iter().collect();
    let rest = &components[fixed..];
    let deep = rest.iter().any(|c| c.as_os_str() == "**");
    // Levels of folders below the root a match may sit in.
    let levels = if deep { MAX_GLOB_DEPTH } else { rest.len() - 1 };
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let mut state = WalkState {
        pattern,
        options,
        levels,
        deep,
        visited: HashSet::new(),
        entries: 0,
        walked,
    };
    let start = if root.as_os_str().is_empty() {
        Path::new(".")
    } else {
        root.as_path()
    };
    match std::fs::metadata(start) {
        Ok(meta) if meta.is_dir() => {
            state.visited.insert((meta.dev(), meta.ino()));
            state.visit(&root, 0)?;
        }
        _ => return Ok(state.walked),
    }
    state.walked.paths.sort();
    Ok(state.walked)
}

struct WalkState {
    pattern: glob::Pattern,
    options: glob::MatchOptions,
    levels: usize,
    deep: bool,
    visited: HashSet<(u64, u64)>,
    entries: usize,
    walked: Walked,
}

impl WalkState {
    fn visit(&mut self, dir: &Path, depth: usize) -> Result<(), WalkError> {
        let shown = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let read = match std::fs::read_dir(shown) {
            Ok(read) => read,
            Err(e) => {
                self.walked
                    .problems
                    .push(format!("cannot read {}: {e}", shown.display()));
                return Ok(());
            }
        };
        let mut names: Vec<_> = Vec::new();
        for entry in read {
            self.entries += 1;
            if self.entries > MAX_GLOB_ENTRIES {
                return Err(WalkError::TooManyEntries);
            }
            match entry {
                Ok(e) => names.push(e.file_name()),
                Err(e) => self
                    .walked
                    .problems
                    .push(format!("cannot read {}: {e}", shown.display())),
            }
        }
        names.sort();
        for name in names {
            let path = if dir.as_os_str().is_empty() {
                PathBuf::from(&name)
            } else {
                dir.join(&name)
            };
            // Followed: a symlinked folder is walked (once), a symlinked file read.
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                if depth + 1 > self.levels {
                    if self.deep {
                        return Err(WalkError::TooDeep(path));
                    }
                    continue;
                }
                if self.visited.insert((meta.dev(), meta.ino())) {
                    self.visit(&path, depth + 1)?;
                }
            } else if self.pattern.matches_path_with(&path, self.options) {
                if self.walked.paths.len() >= MAX_GLOB_MATCHES {
                    return Err(WalkError::TooManyMatches);
                }
                self.walked.paths.push(path);
            }
        }
        Ok(())
    }
}

/// Reads one file_sd file. Target names already in `seen` are duplicates.
fn load_file(
    path: &Path,
    defaults: &TargetOptions,
    seen: &mut Seen,
) -> Result<Vec<TargetConfig>, ConfigError> {
    let name = path.display().to_string();
    let mut issues = Issues::new(&name);
    let src = match read::read_text(path, read::MAX_TARGET_FILE_BYTES) {
        Ok(src) => src,
        Err(e) => {
            issues.push_file(e.to_string());
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
    defaults: &TargetOptions,
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
    defaults: &TargetOptions,
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
            let opts = match rules::host_options(&host.value, defaults.clone()) {
                Ok(o) => o,
                Err(message) => {
                    issues.push(line(host), key, message);
                    continue;
                }
            };
            rules::port_for_kind(issues, defaults, &None, line(host), &key);
            let here = format!("{}:{}", issues.file(), line(host));
            if claim_name(issues, seen, &host.value, here, line(host), &key) {
                let name: std::sync::Arc<str> = host.value.as_str().into();
                out.push(make_target(name.clone(), name, labels.clone(), opts));
            }
        }
    }
    out
}
