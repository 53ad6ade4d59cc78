//! The limits of a probe and the one rule per value that enforces them.
//!
//! Every front (the CLI, `/probe`, sessions, the config's monitors) checks its values with these
//! functions, so one bad value gets one message wherever it is given. Each message is a sentence
//! that names the value (`ttl must be between 1 and 255, got 0`); the config puts its file, line
//! and key before it, the other fronts send it as it is.

use std::net::IpAddr;
use std::time::Duration;

use super::ProbeKind;
use super::path::PathProtocol;
use crate::duration::{DurationError, format_duration, parse_duration};
use crate::engine::UdpMode;
use crate::resolve::Family;

/// Largest ICMP echo payload over IPv4: 65535 − 20 (IP header) − 8 (ICMP header).
pub const MAX_SIZE_V4: u16 = 65_507;
/// Largest ICMPv6 echo payload without jumbograms: 65535 (payload length) − 8 (ICMPv6 header).
pub const MAX_SIZE_V6: u16 = 65_527;
/// Longest probe timeout: a reply later than this is no latency measurement.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// Shortest interval anyone may ask for (the CLI's floor; the daemon's floors are higher).
pub const MIN_INTERVAL: Duration = Duration::from_millis(1);
/// Shortest interval of a configured monitor or probe profile: below it a target floods.
pub const MIN_MONITOR_INTERVAL: Duration = Duration::from_millis(10);
/// Most packets one `/probe` request may send (default of `probe_limits.max_count`).
pub const MAX_PROBE_COUNT: u64 = 1000;
/// Longest interval a `/probe` caller may ask for (default of `probe_limits.max_interval`).
pub const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(10);
/// Longest one `/probe` may run, DNS included, whatever the scrape-timeout header says
/// (default of `probe_limits.max_duration`): no request holds a probe slot longer.
pub const MAX_PROBE_DURATION: Duration = Duration::from_secs(60);
/// Longest target name (a DNS name's limit).
pub const MAX_TARGET_LEN: usize = 253;

/// Spells a duration for a message: Prometheus style, or in µs/ns below a millisecond.
pub fn spell(d: Duration) -> String {
    if d.subsec_nanos().is_multiple_of(1_000_000) {
        format_duration(d)
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// A duration given as text, Prometheus style (`200ms`, `1m30s`); with `plain_seconds` also a
/// bare number of seconds as iputils ping takes it (`0.2`). The message names the value.
pub fn parse_duration_of(name: &str, text: &str, plain_seconds: bool) -> Result<Duration, String> {
    let t = text.trim();
    if plain_seconds && !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return match t.parse::<f64>() {
            Ok(secs) if secs.is_finite() => Duration::try_from_secs_f64(secs)
                .map_err(|_| format!("{name} {t:?} is out of range")),
            _ => Err(format!("{name} {t:?} is not a number of seconds")),
        };
    }
    parse_duration(t).map_err(|e: DurationError| format!("{name}: {e}"))
}

/// A whole number given as text.
pub fn parse_number_of(name: &str, text: &str) -> Result<i64, String> {
    text.trim()
        .parse::<i64>()
        .map_err(|_| format!("{name} {text:?} is not a whole number"))
}

/// An interval of at least `min`.
pub fn interval(d: Duration, min: Duration) -> Result<Duration, String> {
    at_least("interval", d, min)
}

/// An interval of at most `max`, when there is a bound.
pub fn interval_at_most(d: Duration, max: Option<Duration>) -> Result<Duration, String> {
    match max {
        Some(max) => at_most("interval", d, max),
        None => Ok(d),
    }
}

/// A duration of at most `max`.
pub fn at_most(name: &str, d: Duration, max: Duration) -> Result<Duration, String> {
    if d > max {
        return Err(format!(
            "{name} {} is above the maximum of {}",
            spell(d),
            spell(max)
        ));
    }
    Ok(d)
}

/// A duration of at least `min` (so, for a positive `min`, not zero).
pub fn at_least(name: &str, d: Duration, min: Duration) -> Result<Duration, String> {
    if d < min {
        return Err(format!(
            "{name} {} is below the minimum of {}",
            spell(d),
            spell(min)
        ));
    }
    Ok(d)
}

/// A duration above zero.
pub fn positive(name: &str, d: Duration) -> Result<Duration, String> {
    if d.is_zero() {
        return Err(format!("{name} must be greater than 0s"));
    }
    Ok(d)
}

/// A probe timeout: above zero, at most [`MAX_TIMEOUT`].
pub fn timeout(d: Duration) -> Result<Duration, String> {
    let d = positive("timeout", d)?;
    if d > MAX_TIMEOUT {
        return Err(format!(
            "timeout {} is longer than is sane (at most {})",
            spell(d),
            spell(MAX_TIMEOUT)
        ));
    }
    Ok(d)
}

/// An integer in `lo..=hi`.
pub fn in_range(name: &str, n: i64, lo: i64, hi: i64) -> Result<i64, String> {
    if n < lo || n > hi {
        return Err(format!("{name} must be between {lo} and {hi}, got {n}"));
    }
    Ok(n)
}

/// IPv4 TTL / IPv6 hop limit.
pub fn ttl(n: i64) -> Result<u8, String> {
    in_range("ttl", n, 1, 255).map(|n| n as u8)
}

/// Highest TTL of a path probe.
pub fn max_ttl(n: i64) -> Result<u8, String> {
    in_range("max_ttl", n, 1, 255).map(|n| n as u8)
}

/// First TTL of a path probe: at most its `max_ttl`.
pub fn first_ttl(n: i64, max_ttl: u8) -> Result<u8, String> {
    let n = in_range("first_ttl", n, 1, 255)?;
    if n > i64::from(max_ttl) {
        return Err(format!("first_ttl {n} is above max_ttl {max_ttl}"));
    }
    Ok(n as u8)
}

/// Paris flows of a path probe: at least 1, at most `max` (each is a socket, and each
/// multiplies what every router on the path answers).
pub fn flows(n: i64, max: u16) -> Result<u16, String> {
    in_range("flows", n, 1, i64::from(max)).map(|n| n as u16)
}

/// The gap between two probes of a path round to one target: 1 ms to 1 s.
pub fn path_pace(d: Duration) -> Result<Duration, String> {
    at_most("pace", at_least("pace", d, MIN_PATH_PACE)?, MAX_PATH_PACE)
}

/// Shortest gap between two probes of a path round (a 30-hop round then takes 30 ms per flow).
pub const MIN_PATH_PACE: Duration = Duration::from_millis(1);
/// Longest gap between two probes of a path round.
pub const MAX_PATH_PACE: Duration = Duration::from_secs(1);

/// What a path probe sends at each hop: `icmp` or `udp`.
pub fn path_protocol(text: &str) -> Result<PathProtocol, String> {
    match text.trim() {
        "icmp" => Ok(PathProtocol::Icmp),
        "udp" => Ok(PathProtocol::Udp),
        other => Err(format!("unknown protocol {other:?} (use icmp or udp)")),
    }
}

/// IPv4 TOS byte / IPv6 traffic class.
pub fn tos(n: i64) -> Result<u8, String> {
    in_range("tos", n, 0, 255).map(|n| n as u8)
}

/// A TCP or UDP port.
pub fn port(n: i64) -> Result<u16, String> {
    in_range("port", n, 1, 65_535).map(|n| n as u16)
}

/// A port where the kind has one, and only there.
pub fn port_for_kind(kind: ProbeKind, port: Option<u16>) -> Result<Option<u16>, String> {
    match (kind.has_port(), port) {
        (true, Some(p)) => Ok(Some(p)),
        (true, None) => Err(format!(
            "kind {} needs a port (the {} port to probe)",
            kind.as_str(),
            kind.as_str().to_uppercase()
        )),
        (false, None) => Ok(None),
        (false, Some(p)) => Err(format!(
            "port {p} is set but kind is {}: only tcp and udp probes have a port",
            kind.as_str()
        )),
    }
}

/// What a UDP probe expects at its port, by name.
pub fn udp_mode(text: &str) -> Result<UdpMode, String> {
    match text.trim() {
        "closed" => Ok(UdpMode::Closed),
        "echo" => Ok(UdpMode::Echo),
        other => Err(format!("unknown udp mode {other:?} (use closed or echo)")),
    }
}

/// A number of probes: at least 1, at most `max` when there is one.
pub fn count(n: i64, max: Option<u64>) -> Result<u64, String> {
    if n < 1 {
        return Err(format!("count must be at least 1, got {n}"));
    }
    let n = n as u64;
    if let Some(max) = max
        && n > max
    {
        return Err(format!("count must be at most {max}, got {n}"));
    }
    Ok(n)
}

/// The largest payload over the families `family` may send over, and that family's name. Only
/// `ip6` is sure never to send over IPv4, whose limit is lower.
pub fn size_limit(family: Family) -> (u16, &'static str) {
    match family {
        Family::Ip6 => (MAX_SIZE_V6, "IPv6"),
        _ => (MAX_SIZE_V4, "IPv4"),
    }
}

/// Payload size, checked against the largest payload of the families it may be sent over.
pub fn size(n: i64, family: Family) -> Result<u16, String> {
    if n < 0 {
        return Err(format!("size must not be negative, got {n}"));
    }
    let (max, over) = size_limit(family);
    if n > i64::from(max) {
        return Err(format!(
            "size {n} is larger than the largest ICMP payload over {over} ({max} bytes)"
        ));
    }
    Ok(n as u16)
}

/// An address family by name; `one_address` refuses `all` (a run that probes one address).
pub fn family(text: &str, one_address: bool) -> Result<Family, String> {
    match text.trim() {
        "auto" => Ok(Family::Auto),
        "ip4" => Ok(Family::Ip4),
        "ip6" => Ok(Family::Ip6),
        "all" if !one_address => Ok(Family::All),
        "all" => Err(
            "family \"all\" is not possible here: this probes one address (use auto, ip4 or ip6)"
                .to_owned(),
        ),
        other if one_address => Err(format!("unknown family {other:?} (use auto, ip4 or ip6)")),
        other => Err(format!(
            "unknown family {other:?} (use auto, ip4, ip6 or all)"
        )),
    }
}

/// A source address that fits the family.
pub fn source(ip: IpAddr, family: Family) -> Result<IpAddr, String> {
    match (ip, family) {
        (IpAddr::V4(_), Family::Ip6) => Err(format!("source {ip} is IPv4 but family is ip6")),
        (IpAddr::V6(_), Family::Ip4) => Err(format!("source {ip} is IPv6 but family is ip4")),
        _ => Ok(ip),
    }
}

/// A Linux interface name: 1 to 15 bytes, no '/', no whitespace.
pub fn interface(name: &str) -> Result<String, String> {
    let valid = !name.is_empty()
        && name.len() <= 15
        && !name.contains('/')
        && !name.chars().any(char::is_whitespace);
    if !valid {
        return Err(format!(
            "{name:?} is not an interface name (1 to 15 characters, no '/' or spaces)"
        ));
    }
    Ok(name.to_owned())
}

/// The interface named by the zone id of a link-local IPv6 target (`fe80::1%eth0`,
/// `fe80::1%2`), `None` for a target without one. Probes of it are sent through that interface.
pub fn zone(target: &str) -> Result<Option<String>, String> {
    match crate::resolve::split_zone(target)? {
        Some((_, name)) => interface(&name)
            .map(Some)
            .map_err(|e| format!("{target:?}: the zone id: {e}")),
        None => Ok(None),
    }
}

/// The interface to send through, given a target's zone and an `interface` setting: one of
/// them, or both when they agree.
pub fn zone_interface(zone: Option<String>, set: Option<String>) -> Result<Option<String>, String> {
    match (zone, set) {
        (Some(z), Some(i)) if z != i => Err(format!(
            "interface {i:?} differs from the target's zone id {z:?}; give one of them"
        )),
        (z, i) => Ok(z.or(i)),
    }
}

/// The host to probe, as given: not empty, not longer than a DNS name.
pub fn target(text: &str) -> Result<String, String> {
    // Counted as the API schema's maxLength counts: characters, before trimming.
    if text.chars().count() > MAX_TARGET_LEN {
        return Err(format!(
            "target must not be longer than {MAX_TARGET_LEN} characters"
        ));
    }
    let t = text.trim();
    if t.is_empty() {
        return Err("target must not be empty: name the host to probe".to_owned());
    }
    Ok(t.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_names_its_value() {
        let cases: [(Result<(), String>, &str); 12] = [
            (
                interval(Duration::from_millis(5), MIN_MONITOR_INTERVAL).map(drop),
                "interval 5ms is below the minimum of 10ms",
            ),
            (
                interval(Duration::from_micros(100), MIN_INTERVAL).map(drop),
                "interval 100us is below the minimum of 1ms",
            ),
            (
                timeout(Duration::ZERO).map(drop),
                "timeout must be greater than 0s",
            ),
            (
                timeout(Duration::from_secs(120)).map(drop),
                "timeout 2m is longer than is sane (at most 1m)",
            ),
            (ttl(0).map(drop), "ttl must be between 1 and 255, got 0"),
            (tos(256).map(drop), "tos must be between 0 and 255, got 256"),
            (count(0, None).map(drop), "count must be at least 1, got 0"),
            (
                count(1001, Some(MAX_PROBE_COUNT)).map(drop),
                "count must be at most 1000, got 1001",
            ),
            (
                size(65_508, Family::Auto).map(drop),
                "size 65508 is larger than the largest ICMP payload over IPv4 (65507 bytes)",
            ),
            (
                size(-1, Family::Ip6).map(drop),
                "size must not be negative, got -1",
            ),
            (
                family("ipx", true).map(drop),
                "unknown family \"ipx\" (use auto, ip4 or ip6)",
            ),
            (
                parse_number_of("count", "x").map(drop),
                "count \"x\" is not a whole number",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, Err(want.to_owned()));
        }
    }

    #[test]
    fn limits_hold_at_their_edges() {
        assert_eq!(size(i64::from(MAX_SIZE_V6), Family::Ip6), Ok(MAX_SIZE_V6));
        assert!(size(i64::from(MAX_SIZE_V6), Family::Ip4).is_err());
        assert_eq!(timeout(MAX_TIMEOUT), Ok(MAX_TIMEOUT));
        assert_eq!(ttl(255), Ok(255));
        assert_eq!(tos(0), Ok(0));
        assert_eq!(count(1000, Some(MAX_PROBE_COUNT)), Ok(1000));
        assert_eq!(family("all", false), Ok(Family::All));
        assert!(family("all", true).is_err());
        assert_eq!(target("  h  "), Ok("h".to_owned()));
        assert!(target(&"a".repeat(254)).is_err());
    }
}
