//! Label sets of the per-target series.
//!
//! prometheus-client's derive macro wants label *names* known at compile time, but a target's
//! custom labels come from the config. [`TargetLabels`] therefore implements
//! [`EncodeLabelSet`] by hand: `target`, `ip`, then the custom labels in name order. Every family
//! keys its series by a [`SeriesKey`], an `Arc` around one `TargetLabels`, so 10,000 targets keep
//! one copy of their label strings however many families they appear in.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};

use super::MetricsError;
use crate::resolve::Family as AddressFamily;

/// Label names that pingscope itself puts on per-target series; custom labels may not use them.
pub const RESERVED_LABELS: &[&str] = &["target", "ip", "le", "type", "reason", "stat"];

/// The identity of one monitored (target, address) pair: its `target` and `ip` labels plus the
/// target's custom labels, sorted by name.
#[derive(Clone, Debug)]
pub struct TargetLabels {
    /// Shared with the target's config (and its other addresses).
    target: Arc<str>,
    ip: IpAddr,
    /// `ip` rendered once, since every encoded line of the target writes it.
    ip_text: String,
    extra: Vec<(String, String)>,
}

impl TargetLabels {
    /// Builds the label set, checking the custom label names.
    ///
    /// Names must match `[a-zA-Z_][a-zA-Z0-9_]*`, must not start with `__` (reserved by
    /// Prometheus), must not be one of [`RESERVED_LABELS`] and must not repeat.
    pub fn new(
        target: impl Into<Arc<str>>,
        ip: IpAddr,
        extra: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, MetricsError> {
        let target = target.into();
        let mut extra: Vec<(String, String)> = extra.into_iter().collect();
        extra.sort_by(|a, b| a.0.cmp(&b.0));
        for (i, (name, _)) in extra.iter().enumerate() {
            let why = if !valid_label_name(name) {
                Some("must match [a-zA-Z_][a-zA-Z0-9_]*")
            } else if name.starts_with("__") {
                Some("names starting with __ are reserved by Prometheus")
            } else if RESERVED_LABELS.contains(&name.as_str()) {
                Some("pingscope sets this label itself")
            } else if i > 0 && extra[i - 1].0 == *name {
                Some("given twice")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(MetricsError::LabelName {
                    target: target.to_string(),
                    name: name.clone(),
                    why,
                });
            }
        }
        Ok(Self {
            target,
            ip,
            ip_text: ip.to_string(),
            extra,
        })
    }

    /// The `target` label.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The probed address (the `ip` label).
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The custom labels, sorted by name.
    pub fn extra(&self) -> &[(String, String)] {
        &self.extra
    }
}

// Identity is (target, ip, extra); `ip_text` is derived from `ip` and left out.
impl PartialEq for TargetLabels {
    fn eq(&self, other: &Self) -> bool {
        self.target == other.target && self.ip == other.ip && self.extra == other.extra
    }
}

impl Eq for TargetLabels {}

impl Hash for TargetLabels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.target.hash(state);
        self.ip.hash(state);
        self.extra.hash(state);
    }
}

impl EncodeLabelSet for TargetLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("target", &*self.target).encode(encoder.encode_label())?;
        ("ip", self.ip_text.as_str()).encode(encoder.encode_label())?;
        for (name, value) in &self.extra {
            (name.as_str(), value.as_str()).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

fn valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Shared handle on one target's labels: the key of its series in every family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SeriesKey(pub(crate) Arc<TargetLabels>);

// Must hash exactly like `TargetLabels` so that maps keyed by `SeriesKey` can be searched with a
// `&TargetLabels` through `Borrow`.
impl Hash for SeriesKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl Borrow<TargetLabels> for SeriesKey {
    fn borrow(&self) -> &TargetLabels {
        &self.0
    }
}

impl SeriesKey {
    /// The order a scrape writes series in: by target, address, then custom labels. Neighbours
    /// share most of their bytes, which gzip is quick to see, and the body reads (and diffs) the
    /// same from one scrape to the next.
    pub(crate) fn write_order(&self, other: &Self) -> std::cmp::Ordering {
        let (a, b) = (&*self.0, &*other.0);
        (&*a.target, a.ip, &a.extra).cmp(&(&*b.target, b.ip, &b.extra))
    }
}

impl EncodeLabelSet for SeriesKey {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }
}

/// One further label with a fixed name and a static value (`type`, `reason`, `stat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Sub {
    pub(crate) name: &'static str,
    pub(crate) value: &'static str,
}

impl EncodeLabelSet for Sub {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        (self.name, self.value).encode(encoder.encode_label())
    }
}

/// Labels of `pingscope_target_info`: `target`, `host`, `ip`, `family`, `kind`, `port` (only
/// for kinds with a port), and no custom labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct InfoLabels {
    pub(crate) key: SeriesKey,
    pub(crate) host: Arc<str>,
    pub(crate) family: &'static str,
    pub(crate) probe: ProbeLabels,
}

/// What a target probes, as `pingscope_target_info` shows it: `kind` and, for TCP and UDP,
/// `port`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProbeLabels {
    /// `icmp`, `tcp`, `udp`, ...
    pub kind: &'static str,
    /// The destination port, for kinds that have one.
    pub port: Option<u16>,
}

impl EncodeLabelSet for InfoLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("target", &*self.key.0.target).encode(encoder.encode_label())?;
        ("host", &*self.host).encode(encoder.encode_label())?;
        ("ip", self.key.0.ip_text.as_str()).encode(encoder.encode_label())?;
        ("family", self.family).encode(encoder.encode_label())?;
        ("kind", self.probe.kind).encode(encoder.encode_label())?;
        match self.probe.port {
            Some(port) => ("port", port.to_string().as_str()).encode(encoder.encode_label()),
            None => Ok(()),
        }
    }
}

/// `pingscope_target_info`'s labels besides the target's own, as a target keeps them between
/// scrapes: flat and without the key it holds already (40 bytes where [`InfoLabels`] takes 64).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Info {
    pub(crate) host: Arc<str>,
    pub(crate) family: AddressFamily,
    pub(crate) kind: &'static str,
    pub(crate) port: Option<u16>,
}

impl Info {
    pub(crate) fn new(host: Arc<str>, family: AddressFamily, probe: ProbeLabels) -> Self {
        Self {
            host,
            family,
            kind: probe.kind,
            port: probe.port,
        }
    }

    /// The full label set of `key`'s `pingscope_target_info`.
    pub(crate) fn labels(&self, key: &SeriesKey) -> InfoLabels {
        InfoLabels {
            key: key.clone(),
            host: self.host.clone(),
            family: self.family.as_str(),
            probe: ProbeLabels {
                kind: self.kind,
                port: self.port,
            },
        }
    }
}

/// The `target` label alone, for `pingscope_resolve_errors_total`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct NameLabel(pub(crate) Arc<str>);

impl Borrow<str> for NameLabel {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl EncodeLabelSet for NameLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("target", &*self.0).encode(encoder.encode_label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn labels(extra: &[(&str, &str)]) -> Result<TargetLabels, MetricsError> {
        TargetLabels::new(
            "gw",
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            extra.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn custom_labels_are_sorted_by_name() -> Result<(), MetricsError> {
        let l = labels(&[("zone", "a"), ("site", "ams")])?;
        let names: Vec<&str> = l.extra().iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["site", "zone"]);
        Ok(())
    }

    #[test]
    fn bad_label_names_are_rejected_with_the_reason() {
        for (name, why) in [
            ("9lives", "must match"),
            ("a-b", "must match"),
            ("", "must match"),
            ("__meta", "reserved by Prometheus"),
            ("ip", "sets this label itself"),
            ("le", "sets this label itself"),
        ] {
            match labels(&[(name, "x")]) {
                Err(e @ MetricsError::LabelName { .. }) => {
                    assert!(e.to_string().contains(why), "{name}: {e}");
                    assert!(e.to_string().contains("\"gw\""), "{name}: {e}");
                }
                other => panic!("{name:?} accepted: {other:?}"),
            }
        }
        assert!(labels(&[("site", "a"), ("site", "b")]).is_err());
    }

    #[test]
    fn identity_ignores_nothing_but_the_cached_text() -> Result<(), MetricsError> {
        assert_eq!(labels(&[("site", "a")])?, labels(&[("site", "a")])?);
        assert_ne!(labels(&[("site", "a")])?, labels(&[("site", "b")])?);
        assert_ne!(labels(&[])?, labels(&[("site", "a")])?);
        Ok(())
    }
}
