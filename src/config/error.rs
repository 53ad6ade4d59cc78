//! Config errors: every rejection names the file, the line and the key, and all are reported at once.

use std::fmt;

/// One problem in one file: rendered `FILE:LINE: KEY: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The file as the user named it (or `<embedded default>`).
    pub file: String,
    /// 1-based line; `None` when the problem is the file as a whole (unreadable, say).
    pub line: Option<u64>,
    /// Path of the key, e.g. `targets[2].interval` (list indexes count from 0); `None` as for `line`.
    pub key: Option<String>,
    /// What is wrong, and where it helps, what would be right.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a config and the files it names, one per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// In file order, then line order.
    pub issues: Vec<ConfigIssue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Collects issues for one file while validation goes on.
#[derive(Debug)]
pub(crate) struct Issues {
    file: String,
    list: Vec<ConfigIssue>,
}

impl Issues {
    pub(crate) fn new(file: &str) -> Self {
        Self {
            file: file.to_owned(),
            list: Vec::new(),
        }
    }

    pub(crate) fn file(&self) -> &str {
        &self.file
    }

    /// Records a problem at `line` (0 when unknown) under `key`.
    pub(crate) fn push(&mut self, line: u64, key: impl Into<String>, message: impl Into<String>) {
        self.list.push(ConfigIssue {
            file: self.file.clone(),
            line: (line > 0).then_some(line),
            key: Some(key.into()),
            message: message.into(),
        });
    }

    /// Records a problem with the file as a whole.
    pub(crate) fn push_file(&mut self, message: impl Into<String>) {
        self.list.push(ConfigIssue {
            file: self.file.clone(),
            line: None,
            key: None,
            message: message.into(),
        });
    }

    /// Takes the issues of `other` that `keep` accepts.
    pub(crate) fn absorb(&mut self, other: Issues, keep: impl Fn(&ConfigIssue) -> bool) {
        self.list.extend(other.list.into_iter().filter(keep));
    }

    pub(crate) fn extend(&mut self, other: ConfigError) {
        self.list.extend(other.issues);
    }

    /// `Ok(value)` when nothing was recorded; else every issue, grouped by file in the order the
    /// files were met, then by line (stable, so issues on one line keep the order found).
    pub(crate) fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        if self.list.is_empty() {
            return Ok(value);
        }
        let mut issues = self.list;
        let mut files: Vec<String> = Vec::new();
        for issue in &issues {
            if !files.contains(&issue.file) {
                files.push(issue.file.clone());
            }
        }
        issues.sort_by_key(|i| (files.iter().position(|f| *f == i.file), i.line));
        Err(ConfigError { issues })
    }
}
