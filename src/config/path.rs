//! The `path:` block of `defaults` and targets (the options of `kind: path` monitors), checked
//! with the path rules every front shares ([`crate::probe::path::validate_path`]).

use serde::Deserialize;

use super::error::Issues;
use super::raw::S;
use super::rules::{key, line};
use crate::probe::path::{PathOptions, RawPath, validate_path};
use crate::probe::rules::spell;

/// `path: {first_ttl, max_ttl, flows, protocol, pace}` as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPathBlock {
    pub first_ttl: Option<S<i64>>,
    pub max_ttl: Option<S<i64>>,
    pub flows: Option<S<i64>>,
    pub protocol: Option<S<String>>,
    pub pace: Option<S<String>>,
}

/// Applies a `path:` block over `base` (the defaults' path options for a target), each key
/// overriding its own; a refused value is an issue at its line, and `base` stays.
pub(crate) fn path_block(
    issues: &mut Issues,
    block: &S<RawPathBlock>,
    prefix: &str,
    base: &PathOptions,
) -> PathOptions {
    let b = &block.value;
    let given =
        |v: &Option<S<i64>>, dflt: i64| Some(v.as_ref().map_or(dflt, |n| n.value).to_string());
    let raw = RawPath {
        first_ttl: given(&b.first_ttl, i64::from(base.first_ttl)),
        max_ttl: given(&b.max_ttl, i64::from(base.max_ttl)),
        flows: given(&b.flows, i64::from(base.flows)),
        protocol: Some(
            b.protocol
                .as_ref()
                .map_or(base.protocol.as_str(), |p| p.value.as_str())
                .to_owned(),
        ),
        pace: Some(
            b.pace
                .as_ref()
                .map_or_else(|| spell(base.pace), |p| p.value.clone()),
        ),
    };
    match validate_path(&raw) {
        Ok(options) => options,
        Err(e) => {
            let at = match e.field {
                "first_ttl" => b.first_ttl.as_ref().map(line),
                "max_ttl" => b.max_ttl.as_ref().map(line),
                "flows" => b.flows.as_ref().map(line),
                "protocol" => b.protocol.as_ref().map(line),
                "pace" => b.pace.as_ref().map(line),
                _ => None,
            };
            let k = key(&key(prefix, "path"), e.field);
            issues.push(at.unwrap_or_else(|| line(block)), &k, e.message);
            base.clone()
        }
    }
}
