//! Reload as a diff: which targets to start, stop, restart or leave alone. Keyed by name, because
//! the name is the `target` label and so the identity of a target's series.

use super::types::TargetConfig;
use std::collections::HashMap;
use std::sync::Arc;

/// A target whose name stayed but whose settings changed: it restarts with fresh state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangedTarget {
    pub old: Arc<TargetConfig>,
    pub new: Arc<TargetConfig>,
}

/// The outcome of [`diff_targets`]. `added`, `changed` and `unchanged` follow the new order,
/// `removed` the old one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetDiff {
    pub added: Vec<Arc<TargetConfig>>,
    pub removed: Vec<Arc<TargetConfig>>,
    pub changed: Vec<ChangedTarget>,
    pub unchanged: Vec<Arc<TargetConfig>>,
}

impl TargetDiff {
    /// True when the reload changes no target.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Compares two target lists by name (names are unique within a validated config).
pub fn diff_targets(old: &[Arc<TargetConfig>], new: &[Arc<TargetConfig>]) -> TargetDiff {
    let old_by_name: HashMap<&str, &Arc<TargetConfig>> =
        old.iter().map(|t| (&*t.name, t)).collect();
    let new_names: HashMap<&str, ()> = new.iter().map(|t| (&*t.name, ())).collect();
    let mut diff = TargetDiff::default();
    for t in new {
        match old_by_name.get(&*t.name) {
            None => diff.added.push(t.clone()),
            Some(o) if *o == t => diff.unchanged.push(t.clone()),
            Some(o) => diff.changed.push(ChangedTarget {
                old: (*o).clone(),
                new: t.clone(),
            }),
        }
    }
    diff.removed = old
        .iter()
        .filter(|t| !new_names.contains_key(&*t.name))
        .cloned()
        .collect();
    diff
}
