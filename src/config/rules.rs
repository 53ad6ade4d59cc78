//! The value rules: one function per kind of value, each recording its own issue and returning the
//! typed value, or `None` so the caller keeps the default and goes on looking for more problems.

use super::error::Issues;
use super::raw::{RawProbeOptions, S};
use super::types::{TargetOptions, limits};
use crate::duration::parse_duration;
use crate::probe::ProbeKind;
use crate::probe::rules as probe_rules;
use crate::resolve::Family;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// Labels pingscope sets itself on some series; a custom label of that name would collide.
pub(crate) const RESERVED_LABELS: [&str; 8] = [
    "target", "ip", "host", "family", "le", "stat", "type", "reason",
];

pub(crate) fn line<T>(s: &S<T>) -> u64 {
    s.referenced.line()
}

pub(crate) fn key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// The last part of a dotted key (`max_age` of `sessions.retention.max_age`): what a
/// message calls the value.
fn leaf(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

pub(crate) fn duration(issues: &mut Issues, value: &S<String>, key: &str) -> Option<Duration> {
    match parse_duration(&value.value) {
        Ok(d) => Some(d),
        Err(e) => {
            issues.push(line(value), key, e.to_string());
            None
        }
    }
}

/// A duration that must be at least `min` (and so, for a positive `min`, not zero).
pub(crate) fn duration_min(
    issues: &mut Issues,
    value: &S<String>,
    key: &str,
    min: Duration,
) -> Option<Duration> {
    let d = duration(issues, value, key)?;
    checked(issues, value, key, probe_rules::at_least(leaf(key), d, min))
}

/// A duration in `min..=max`.
pub(crate) fn duration_between(
    issues: &mut Issues,
    value: &S<String>,
    key: &str,
    (min, max): (Duration, Duration),
) -> Option<Duration> {
    let name = leaf(key);
    let d = duration(issues, value, key)?;
    let r = probe_rules::at_least(name, d, min).and_then(|d| probe_rules::at_most(name, d, max));
    checked(issues, value, key, r)
}

pub(crate) fn duration_positive(
    issues: &mut Issues,
    value: &S<String>,
    key: &str,
) -> Option<Duration> {
    let d = duration(issues, value, key)?;
    checked(issues, value, key, probe_rules::positive(leaf(key), d))
}

pub(crate) fn timeout(issues: &mut Issues, value: &S<String>, key: &str) -> Option<Duration> {
    let d = duration(issues, value, key)?;
    checked(issues, value, key, probe_rules::timeout(d))
}

/// Records a rule's refusal at the value's line; the value when it passed.
fn checked<T, V>(issues: &mut Issues, value: &S<V>, key: &str, r: Result<T, String>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(message) => {
            issues.push(line(value), key, message);
            None
        }
    }
}

/// An integer in `lo..=hi`; the message names the range.
pub(crate) fn int_range(
    issues: &mut Issues,
    value: &S<i64>,
    key: &str,
    lo: i64,
    hi: i64,
) -> Option<i64> {
    let r = probe_rules::in_range(leaf(key), value.value, lo, hi);
    checked(issues, value, key, r)
}

/// An integer of at least `lo` that fits `usize`.
pub(crate) fn int_at_least(
    issues: &mut Issues,
    value: &S<i64>,
    key: &str,
    lo: i64,
) -> Option<usize> {
    let name = leaf(key);
    let n = value.value;
    if n < lo {
        issues.push(
            line(value),
            key,
            format!("{name} must be at least {lo}, got {n}"),
        );
        return None;
    }
    usize::try_from(n).ok()
}

pub(crate) fn kind(issues: &mut Issues, value: &S<String>, key: &str) -> Option<ProbeKind> {
    checked(issues, value, key, ProbeKind::parse(&value.value))
}

pub(crate) fn port(issues: &mut Issues, value: &S<i64>, key: &str) -> Option<u16> {
    checked(issues, value, key, probe_rules::port(value.value))
}

/// `udp: {mode: ...}`; `None` when the mode is left out or wrong (reported).
pub(crate) fn udp_mode(
    issues: &mut Issues,
    value: &S<super::raw::RawUdp>,
    key: &str,
) -> Option<crate::engine::UdpMode> {
    let mode = value.value.mode.as_ref()?;
    checked(issues, mode, key, probe_rules::udp_mode(&mode.value))
}

/// A port where the kind has one, and only there (`prefix.port`): reported at the `port` this
/// level set, else at `at`. A port set here that is out of range was reported already.
pub(crate) fn port_for_kind(
    issues: &mut Issues,
    o: &TargetOptions,
    given: &Option<S<i64>>,
    at: u64,
    prefix: &str,
) {
    if given
        .as_ref()
        .is_some_and(|p| probe_rules::port(p.value).is_err())
    {
        return;
    }
    if let Err(message) = probe_rules::port_for_kind(o.kind, o.port.port) {
        issues.push(
            given.as_ref().map_or(at, line),
            key(prefix, "port"),
            message,
        );
    }
}

pub(crate) fn family(issues: &mut Issues, value: &S<String>, key: &str) -> Option<Family> {
    checked(issues, value, key, probe_rules::family(&value.value, false))
}

/// Payload size, checked against the largest payload of the families it may be sent over.
pub(crate) fn size(issues: &mut Issues, value: &S<i64>, key: &str, fam: Family) -> Option<u16> {
    checked(issues, value, key, probe_rules::size(value.value, fam))
}

pub(crate) use probe_rules::size_limit;

pub(crate) fn ip(issues: &mut Issues, value: &S<String>, key: &str) -> Option<IpAddr> {
    match value.value.parse::<IpAddr>() {
        Ok(ip) => Some(ip),
        Err(_) => {
            issues.push(
                line(value),
                key,
                format!("{:?} is not an IP address", value.value),
            );
            None
        }
    }
}

pub(crate) fn interface(issues: &mut Issues, value: &S<String>, key: &str) -> Option<String> {
    checked(issues, value, key, probe_rules::interface(&value.value))
}

/// A host name or IP address. Names are checked loosely (the resolver has the last word), enough to
/// catch an empty value, a URL or a stray space.
fn host_ok(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("host must not be empty".to_owned());
    }
    if host.contains('%') {
        return probe_rules::zone(host).map(drop);
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let name_ok = host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && !host.starts_with('.')
        && !host.contains("..");
    if name_ok {
        Ok(())
    } else {
        Err(format!("{host:?} is not a host name or IP address"))
    }
}

/// Checks `host` and sends a link-local target with a zone id (`fe80::1%eth0`) through the
/// zone's interface, which must agree with an `interface` setting.
pub(crate) fn host_options(host: &str, mut o: TargetOptions) -> Result<TargetOptions, String> {
    host_ok(host)?;
    let zone = probe_rules::zone(host)?;
    o.interface = probe_rules::zone_interface(zone, o.interface)?;
    Ok(o)
}

/// Prometheus label name rules plus the names pingscope sets itself.
pub(crate) fn label_name_ok(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "invalid label name {name:?} (must match [a-zA-Z_][a-zA-Z0-9_]*)"
        ));
    }
    if name.starts_with("__") {
        return Err(format!(
            "label name {name:?} is reserved (names starting with __ are Prometheus' own)"
        ));
    }
    if RESERVED_LABELS.contains(&name) {
        return Err(format!(
            "label name {name:?} is reserved (pingscope sets {})",
            RESERVED_LABELS.join(", ")
        ));
    }
    Ok(())
}

/// Checks every label; returns the valid ones.
pub(crate) fn labels(
    issues: &mut Issues,
    raw: &BTreeMap<String, S<String>>,
    prefix: &str,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, value) in raw {
        match label_name_ok(name) {
            Ok(()) => {
                out.insert(name.clone(), value.value.clone());
            }
            Err(message) => issues.push(line(value), key(prefix, name), message),
        }
    }
    out
}

/// Applies the probe options set at one level (`defaults` or a target) over `base`, checking each.
/// `prefix` is the key path of that level.
pub(crate) fn probe_options(
    issues: &mut Issues,
    raw: &RawProbeOptions,
    prefix: &str,
    base: &TargetOptions,
) -> TargetOptions {
    let mut out = base.clone();
    let k = |name: &str| key(prefix, name);
    if let Some(v) = &raw.kind
        && let Some(kind) = kind(issues, v, &k("kind"))
    {
        out.kind = kind;
    }
    if let Some(v) = &raw.interval
        && let Some(d) = duration_min(issues, v, &k("interval"), limits::MIN_INTERVAL)
    {
        out.interval = d;
    }
    if let Some(v) = &raw.timeout
        && let Some(d) = timeout(issues, v, &k("timeout"))
    {
        out.timeout = d;
    }
    if let Some(v) = &raw.family
        && let Some(f) = family(issues, v, &k("family"))
    {
        out.family = f;
    }
    if let Some(v) = &raw.size {
        if let Some(n) = size(issues, v, &k("size"), out.family) {
            out.size = n;
        }
    } else if let Some(fam) = &raw.family {
        // The size came from the level above, checked there against that level's family.
        let (max, over) = size_limit(out.family);
        if out.size > max {
            issues.push(
                line(fam),
                k("size"),
                format!(
                    "size {} (from defaults) is larger than the largest ICMP payload over {over} ({max} bytes)",
                    out.size
                ),
            );
        }
    }
    if let Some(v) = &raw.ttl
        && let Some(n) = checked(issues, v, &k("ttl"), probe_rules::ttl(v.value))
    {
        out.ttl = Some(n);
    }
    if let Some(v) = &raw.tos
        && let Some(n) = checked(issues, v, &k("tos"), probe_rules::tos(v.value))
    {
        out.tos = Some(n);
    }
    if let Some(v) = &raw.source
        && let Some(ip) = self::ip(issues, v, &k("source"))
        && let Some(ip) = checked(issues, v, &k("source"), probe_rules::source(ip, out.family))
    {
        out.source = Some(ip);
    }
    if let Some(v) = &raw.interface
        && let Some(name) = interface(issues, v, &k("interface"))
    {
        out.interface = Some(name);
    }
    if let Some(v) = &raw.port
        && let Some(n) = port(issues, v, &k("port"))
    {
        out.port.port = Some(n);
    }
    if let Some(u) = &raw.udp
        && let Some(m) = udp_mode(issues, u, &k("udp.mode"))
    {
        out.port.udp_mode = m;
    }
    if let Some(v) = &raw.window
        && let Some(n) = int_range(issues, v, &k("window"), 1, limits::MAX_WINDOW as i64)
    {
        out.window = usize::try_from(n).unwrap_or(base.window);
    }
    if let Some(block) = &raw.metrics
        && let Some(v) = &block.value.window_gauges
    {
        out.metrics.window_gauges = v.value;
    }
    if let Some(block) = &raw.outage {
        out.outage = super::outage::outage_block(issues, block, prefix, out.outage);
    }
    if let Some(block) = &raw.alert {
        out.alert = super::outage::alert_block(issues, block, prefix, out.alert);
    }
    // After `alert:`, whose loss threshold `capture.on_loss` needs.
    if let Some(block) = &raw.capture {
        out.capture =
            super::outage::capture_block(issues, block, prefix, out.capture, out.alert.loss);
    }
    if let Some(block) = &raw.path {
        out.path = super::path::path_block(issues, block, prefix, &base.path);
    }
    out
}
