//! The YAML parser's limits, sized for real configs, and their breaches in words.

/// Most YAML nodes (mappings, lists and scalars) in one file: 200,000 targets with a name, a host
/// and two labels take about 2.2 million; the file's byte bound comes first for anything larger.
pub const MAX_YAML_NODES: usize = 10_000_000;
/// Most YAML events (a node's start and end each count) in one file.
pub const MAX_YAML_EVENTS: usize = 2 * MAX_YAML_NODES;

/// The parser's options: the budget sized for real configs (the library's default refuses more
/// than 250,000 nodes, about 25,000 targets with labels). Aliases, anchors and nesting keep the
/// library's bounds, which stop YAML bombs. `first_wins` tolerates duplicate keys (the tree pass).
pub(super) fn options(first_wins: bool) -> serde_saphyr::Options {
    let mut options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_nodes: MAX_YAML_NODES,
            max_events: MAX_YAML_EVENTS,
        },
    };
    if first_wins {
        options.duplicate_keys = serde_saphyr::options::DuplicateKeyPolicy::FirstWins;
    }
    options
}

/// A YAML budget breach in words.
pub(super) fn budget_words(breach: &serde_saphyr::budget::BudgetBreach) -> String {
    use serde_saphyr::budget::BudgetBreach as B;
    match breach {
        B::Nodes { .. } => format!(
            "the file has more than {MAX_YAML_NODES} YAML nodes; split the targets over target_files"
        ),
        B::Events { .. } => format!(
            "the file has more than {MAX_YAML_EVENTS} YAML events; split the targets over target_files"
        ),
        B::Aliases { .. }
        | B::AliasAnchorRatio { .. }
        | B::RecordedAnchorEvents { .. }
        | B::RecordedAnchorBytes { .. } => {
            "too many aliases (`*name`) or alias expansion too large: refused as a YAML bomb"
                .to_owned()
        }
        B::Anchors { .. } => "too many anchors (`&name`)".to_owned(),
        B::Depth { depth } => format!("nested more than {} levels deep", depth.saturating_sub(1)),
        B::Documents { .. } => "too many YAML documents (`---`) in one file".to_owned(),
        B::ScalarBytes { .. } => {
            "the file's text values are larger than the parser's limit".to_owned()
        }
        B::MergeKeys { .. } => "too many merge keys (`<<`)".to_owned(),
        other => format!("the YAML exceeds a parser limit ({other:?})"),
    }
}
