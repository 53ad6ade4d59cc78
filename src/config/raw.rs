//! The YAML as written: serde structs that refuse unknown keys and keep each value's location.
//!
//! Every field is optional and every scalar that a rule checks is read loosely (durations, families
//! and addresses as strings, numbers as `i64`), so that a bad value becomes a validation issue with
//! its own message and the other issues in the file are still found.

use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;

pub(crate) type S<T> = Spanned<T>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub defaults: Option<S<RawDefaults>>,
    pub dns: Option<S<RawDns>>,
    pub targets: Option<Vec<S<RawTarget>>>,
    pub target_files: Option<Vec<S<String>>>,
    pub sessions: Option<S<RawSessions>>,
    pub access: Option<S<RawAccess>>,
    pub probe_profiles: Option<BTreeMap<String, S<RawProfile>>>,
    pub probe_limits: Option<S<RawProbeLimits>>,
    pub mesh: Option<S<super::mesh::RawMesh>>,
    pub path_pacing: Option<S<RawPathPacing>>,
}

/// `path_pacing:`: what path monitors ask of one router, all together.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPathPacing {
    pub router_rate: Option<S<i64>>,
    pub router_burst: Option<S<i64>>,
}

/// What a `/probe` caller may ask for.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProbeLimits {
    pub max_duration: Option<S<String>>,
    pub max_interval: Option<S<String>>,
    pub max_count: Option<S<i64>>,
}

/// Declares a raw struct with the per-target probe options (named once, here) between its own
/// fields `before` and `after` them (the order is that of the "known keys" in messages), and
/// `options()` that copies the probe part out: serde's `flatten` would lose the locations.
macro_rules! with_probe_options {
    (
        $(#[$meta:meta])*
        $name:ident { $($before:ident: $bty:ty,)* } { $($after:ident: $aty:ty,)* }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct $name {
            $(pub $before: $bty,)*
            pub kind: Option<S<String>>,
            pub interval: Option<S<String>>,
            pub timeout: Option<S<String>>,
            pub size: Option<S<i64>>,
            pub family: Option<S<String>>,
            pub ttl: Option<S<i64>>,
            pub tos: Option<S<i64>>,
            pub source: Option<S<String>>,
            pub interface: Option<S<String>>,
            pub window: Option<S<i64>>,
            pub metrics: Option<Box<S<RawMetrics>>>,
            pub outage: Option<Box<S<super::outage::RawOutage>>>,
            pub alert: Option<Box<S<super::outage::RawAlert>>>,
            pub capture: Option<Box<S<super::outage::RawCapture>>>,
            pub path: Option<Box<S<super::path::RawPathBlock>>>,
            pub port: Option<S<i64>>,
            pub udp: Option<Box<S<RawUdp>>>,
            $(pub $after: $aty,)*
        }

        impl $name {
            /// The probe options part.
            #[allow(dead_code)]
            pub(crate) fn options(&self) -> RawProbeOptions {
                RawProbeOptions {
                    kind: self.kind.clone(),
                    interval: self.interval.clone(),
                    timeout: self.timeout.clone(),
                    size: self.size.clone(),
                    family: self.family.clone(),
                    ttl: self.ttl.clone(),
                    tos: self.tos.clone(),
                    source: self.source.clone(),
                    interface: self.interface.clone(),
                    window: self.window.clone(),
                    metrics: self.metrics.clone(),
                    outage: self.outage.clone(),
                    alert: self.alert.clone(),
                    capture: self.capture.clone(),
                    path: self.path.clone(),
                    port: self.port.clone(),
                    udp: self.udp.clone(),
                }
            }
        }
    };
}

/// `udp:` of a target, the defaults or a profile.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUdp {
    pub mode: Option<S<String>>,
}

/// `metrics:` of a target or the defaults: optional series.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetrics {
    pub window_gauges: Option<S<bool>>,
}

with_probe_options! {
    /// The per-target options, shared by `defaults` and each target.
    RawProbeOptions {} {}
}

with_probe_options! {
    RawDefaults {} { histogram: Option<S<RawHistogram>>, }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHistogram {
    pub buckets: Option<S<Vec<S<f64>>>>,
    pub jitter_buckets: Option<S<Vec<S<f64>>>>,
    pub native: Option<S<bool>>,
    pub classic_in_protobuf: Option<S<bool>>,
}

with_probe_options! {
    RawTarget {
        name: Option<S<String>>,
        host: Option<S<String>>,
        labels: Option<BTreeMap<String, S<String>>>,
    } {}
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDns {
    pub servers: Option<Vec<S<String>>>,
    pub refresh: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSessions {
    pub database: Option<S<String>>,
    pub max_active: Option<S<i64>>,
    pub max_duration: Option<S<String>>,
    pub min_interval: Option<S<String>>,
    pub max_captures_per_minute: Option<S<i64>>,
    pub retention: Option<S<RawRetention>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetention {
    pub max_sessions: Option<S<i64>>,
    pub max_age: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAccess {
    pub allow: Option<Vec<S<String>>>,
    pub deny: Option<Vec<S<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProfile {
    pub kind: Option<S<String>>,
    pub count: Option<S<i64>>,
    pub interval: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub size: Option<S<i64>>,
    pub family: Option<S<String>>,
    pub port: Option<S<i64>>,
    pub udp: Option<S<RawUdp>>,
}

/// One Prometheus file_sd group: `{targets: [host, ...], labels: {name: value}}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSdGroup {
    pub targets: Option<Vec<S<String>>>,
    pub labels: Option<BTreeMap<String, S<String>>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    // Parsing holds every target of the file at once: at 2,592 bytes a target, a file of
    // 100,000 targets filled 259 MB before validation began. The option blocks a target rarely
    // has (outage, alert, capture, path, metrics, udp) are boxed so that an absent one costs a
    // pointer.
    #[test]
    fn a_raw_target_stays_small() {
        let size = std::mem::size_of::<S<RawTarget>>();
        assert!(size <= 1200, "a parsed target takes {size} bytes");
    }
}
