//! The value rules: one function per kind of value, each recording its own issue and returning the
//! typed value, or `None` so the caller keeps the default and goes on looking for more problems.

use super::error::Issues;
use super::raw::{RawProbeOptions, S};
use super::types::{TargetDefaults, limits};
use crate::duration::{format_duration, parse_duration};
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
    name: &str,
    min: Duration,
) -> Option<Duration> {
    let d = duration(issues, value, key)?;
    if d < min {
        issues.push(
            line(value),
            key,
            format!(
                "{name} {} is below the minimum of {}",
                format_duration(d),
                format_duration(min)
            ),
        );
        return None;
    }
    Some(d)
}

pub(crate) fn duration_positive(
    issues: &mut Issues,
    value: &S<String>,
    key: &str,
    name: &str,
) -> Option<Duration> {
    let d = duration(issues, value, key)?;
    if d.is_zero() {
        issues.push(line(value), key, format!("{name} must be greater than 0s"));
        return None;
    }
    Some(d)
}

pub(crate) fn timeout(issues: &mut Issues, value: &S<String>, key: &str) -> Option<Duration> {
    let d = duration_positive(issues, value, key, "timeout")?;
    if d > limits::MAX_TIMEOUT {
        issues.push(
            line(value),
            key,
            format!(
                "timeout {} is longer than is sane (at most {})",
                format_duration(d),
                format_duration(limits::MAX_TIMEOUT)
            ),
        );
        return None;
    }
    Some(d)
}

/// An integer in `lo..=hi`; the message names the range.
pub(crate) fn int_range(
    issues: &mut Issues,
    value: &S<i64>,
    key: &str,
    name: &str,
    lo: i64,
    hi: i64,
) -> Option<i64> {
    let n = value.value;
    if n < lo || n > hi {
        issues.push(
            line(value),
            key,
            format!("{name} must be between {lo} and {hi}, got {n}"),
        );
        return None;
    }
    Some(n)
}

/// An integer of at least `lo` that fits `usize`.
pub(crate) fn int_at_least(
    issues: &mut Issues,
    value: &S<i64>,
    key: &str,
    name: &str,
    lo: i64,
) -> Option<usize> {
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

pub(crate) fn family(issues: &mut Issues, value: &S<String>, key: &str) -> Option<Family> {
    match value.value.as_str() {
        "auto" => Some(Family::Auto),
        "ip4" => Some(Family::Ip4),
        "ip6" => Some(Family::Ip6),
        "all" => Some(Family::All),
        other => {
            issues.push(
                line(value),
                key,
                format!("unknown family {other:?} (use auto, ip4, ip6 or all)"),
            );
            None
        }
    }
}

/// Payload size, checked against the largest payload of the families it may be sent over.
pub(crate) fn size(issues: &mut Issues, value: &S<i64>, key: &str, fam: Family) -> Option<u16> {
    let n = value.value;
    if n < 0 {
        issues.push(
            line(value),
            key,
            format!("size must not be negative, got {n}"),
        );
        return None;
    }
    let (max, over) = size_limit(fam);
    if n > i64::from(max) {
        issues.push(
            line(value),
            key,
            format!("size {n} is larger than the largest ICMP payload over {over} ({max} bytes)"),
        );
        return None;
    }
    u16::try_from(n).ok()
}

/// Only `ip6` is sure never to send over IPv4, whose limit is lower.
pub(crate) fn size_limit(fam: Family) -> (u16, &'static str) {
    match fam {
        Family::Ip6 => (limits::MAX_SIZE_V6, "IPv6"),
        _ => (limits::MAX_SIZE_V4, "IPv4"),
    }
}

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
    let name = &value.value;
    // Linux interface names: at most IFNAMSIZ - 1 bytes, no '/', no whitespace.
    let valid = !name.is_empty()
        && name.len() <= 15
        && !name.contains('/')
        && !name.chars().any(char::is_whitespace);
    if !valid {
        issues.push(
            line(value),
            key,
            format!("{name:?} is not an interface name (1 to 15 characters, no '/' or spaces)"),
        );
        return None;
    }
    Some(name.clone())
}

/// A host name or IP address. Names are checked loosely (the resolver has the last word), enough to
/// catch an empty value, a URL or a stray space.
pub(crate) fn host_ok(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("host must not be empty".to_owned());
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
    base: &TargetDefaults,
) -> TargetDefaults {
    let mut out = base.clone();
    let k = |name: &str| key(prefix, name);
    if let Some(v) = &raw.interval
        && let Some(d) = duration_min(issues, v, &k("interval"), "interval", limits::MIN_INTERVAL)
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
        && let Some(n) = int_range(issues, v, &k("ttl"), "ttl", 1, 255)
    {
        out.ttl = u8::try_from(n).ok();
    }
    if let Some(v) = &raw.tos
        && let Some(n) = int_range(issues, v, &k("tos"), "tos", 0, 255)
    {
        out.tos = u8::try_from(n).ok();
    }
    if let Some(v) = &raw.source
        && let Some(ip) = self::ip(issues, v, &k("source"))
    {
        let clash = match (ip, out.family) {
            (IpAddr::V4(_), Family::Ip6) => Some("IPv4 but family is ip6"),
            (IpAddr::V6(_), Family::Ip4) => Some("IPv6 but family is ip4"),
            _ => None,
        };
        match clash {
            Some(why) => issues.push(line(v), k("source"), format!("source {ip} is {why}")),
            None => out.source = Some(ip),
        }
    }
    if let Some(v) = &raw.interface
        && let Some(name) = interface(issues, v, &k("interface"))
    {
        out.interface = Some(name);
    }
    if let Some(v) = &raw.window
        && let Some(n) = int_range(
            issues,
            v,
            &k("window"),
            "window",
            1,
            limits::MAX_WINDOW as i64,
        )
    {
        out.window = usize::try_from(n).unwrap_or(base.window);
    }
    out
}
