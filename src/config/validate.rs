//! Raw config → typed [`Config`]: applies the named defaults and runs every rule, recording each
//! problem and carrying on, so that one run reports all of them.

use super::error::Issues;
use super::file_sd;
use super::raw::{RawConfig, RawProfile, S};
use super::rules::{self, key, line};
use super::types::{
    AccessConfig, Config, DnsConfig, HistogramConfig, ProbeProfile, SessionsConfig, TargetConfig,
    TargetOptions, defaults, limits,
};
use ipnet::IpNet;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a target name was first defined, for the duplicate message.
pub(crate) type Seen = HashMap<String, String>;

/// Builds the config; the caller turns the recorded issues into the error.
pub(crate) fn build(raw: RawConfig, issues: &mut Issues, base_dir: &Path) -> Config {
    let raw_defaults = raw.defaults.map(|d| d.value).unwrap_or_default();
    let target_defaults = rules::probe_options(
        issues,
        &raw_defaults.options(),
        "defaults",
        &TargetOptions::default(),
    );
    let histogram = histogram(issues, raw_defaults.histogram.map(|h| h.value));

    let mut seen = Seen::new();
    let mut targets = Vec::new();
    for (i, raw_target) in raw.targets.unwrap_or_default().iter().enumerate() {
        if let Some(t) = target(issues, raw_target, i, &target_defaults, &mut seen) {
            targets.push(Arc::new(t));
        }
    }

    let static_count = targets.len();
    let mut target_files = Vec::new();
    for (i, pattern) in raw.target_files.unwrap_or_default().iter().enumerate() {
        let k = format!("target_files[{i}]");
        if pattern.value.is_empty() {
            issues.push(line(pattern), k, "pattern must not be empty");
            continue;
        }
        if let Err(e) = glob::Pattern::new(&pattern.value) {
            issues.push(
                line(pattern),
                k,
                format!("invalid glob {:?}: {e}", pattern.value),
            );
            continue;
        }
        targets.extend(
            file_sd::load_pattern(
                issues,
                &pattern.value,
                (line(pattern), &k),
                base_dir,
                &target_defaults,
                &mut seen,
            )
            .into_iter()
            .map(Arc::new),
        );
        target_files.push(pattern.value.clone());
    }

    let dns = raw
        .dns
        .map(|d| d.value)
        .map_or_else(DnsConfig::default, |d| {
            let mut out = DnsConfig::default();
            for (i, server) in d.servers.unwrap_or_default().iter().enumerate() {
                if let Some(addr) = dns_server(&server.value) {
                    out.servers.push(addr);
                } else {
                    issues.push(
                        line(server),
                        format!("dns.servers[{i}]"),
                        format!(
                            "{:?} is not an IP address or IP:port (e.g. 127.0.0.1:5353)",
                            server.value
                        ),
                    );
                }
            }
            if let Some(v) = &d.refresh
                && let Some(r) =
                    rules::duration_min(issues, v, "dns.refresh", limits::MIN_DNS_REFRESH)
            {
                out.refresh = r;
            }
            out
        });

    let sessions = sessions(issues, raw.sessions.map(|s| s.value), base_dir);
    let access = raw
        .access
        .map(|a| a.value)
        .map_or_else(AccessConfig::default, |a| {
            let mut out = AccessConfig::default();
            if let Some(allow) = &a.allow {
                out.allow = networks(issues, allow, "access.allow");
            }
            if let Some(deny) = &a.deny {
                out.deny = networks(issues, deny, "access.deny");
            }
            out
        });
    let probe_profiles = profiles(
        issues,
        raw.probe_profiles.unwrap_or_default(),
        &target_defaults,
    );

    let probe_limits = probe_limits(issues, raw.probe_limits.map(|s| s.value));
    let path_pacing = path_pacing(issues, raw.path_pacing.map(|s| s.value));
    let mesh = raw
        .mesh
        .as_ref()
        .and_then(|m| super::mesh::build(issues, m, &mut seen));

    share_options(&mut targets);
    Config {
        probe_limits,
        defaults: target_defaults,
        targets_from_files: targets.len() - static_count,
        targets,
        target_files,
        dns,
        sessions,
        access,
        probe_profiles,
        histogram,
        mesh,
        path_pacing,
        source_path: None,
    }
}

fn target(
    issues: &mut Issues,
    raw: &S<super::raw::RawTarget>,
    index: usize,
    base: &TargetOptions,
    seen: &mut Seen,
) -> Option<TargetConfig> {
    let prefix = format!("targets[{index}]");
    let t = &raw.value;
    let opts = rules::probe_options(issues, &t.options(), &prefix, base);
    rules::port_for_kind(issues, &opts, &t.port, line(raw), &prefix);
    let labels = t
        .labels
        .as_ref()
        .map(|l| rules::labels(issues, l, &key(&prefix, "labels")))
        .unwrap_or_default();
    let Some(host) = &t.host else {
        issues.push(line(raw), key(&prefix, "host"), "required key is missing");
        return None;
    };
    let opts = match rules::host_options(&host.value, opts) {
        Ok(o) => o,
        Err(message) => {
            issues.push(line(host), key(&prefix, "host"), message);
            return None;
        }
    };
    let (name, name_line) = match &t.name {
        Some(n) if n.value.is_empty() => {
            issues.push(
                line(n),
                key(&prefix, "name"),
                "name must not be empty (leave it out to use the host)",
            );
            return None;
        }
        Some(n) => (Arc::from(n.value.as_str()), line(n)),
        None => (Arc::from(host.value.as_str()), line(host)),
    };
    let name_key = if t.name.is_some() { "name" } else { "host" };
    let here = format!("{}:{name_line}", issues.file());
    if !claim_name(
        issues,
        seen,
        &name,
        here,
        name_line,
        &key(&prefix, name_key),
    ) {
        return None;
    }
    // A target named by its host keeps one string for both.
    let host = if t.name.is_some() {
        Arc::from(host.value.as_str())
    } else {
        name.clone()
    };
    Some(make_target(name, host, labels, opts))
}

/// Records the first place a target name is used; a second use is an issue.
pub(crate) fn claim_name(
    issues: &mut Issues,
    seen: &mut Seen,
    name: &str,
    here: String,
    line: u64,
    key: &str,
) -> bool {
    if let Some(first) = seen.get(name) {
        issues.push(
            line,
            key,
            format!("duplicate target name {name:?} (first at {first})"),
        );
        return false;
    }
    seen.insert(name.to_owned(), here);
    true
}

pub(crate) fn make_target(
    name: Arc<str>,
    host: Arc<str>,
    labels: BTreeMap<String, String>,
    options: TargetOptions,
) -> TargetConfig {
    TargetConfig {
        name,
        host,
        labels,
        options: Arc::new(options),
    }
}

/// Makes the targets whose options are equal share one copy of them. A target whose config is
/// shared already is left as it is.
fn share_options(targets: &mut [Arc<TargetConfig>]) {
    let mut distinct: HashSet<Arc<TargetOptions>> = HashSet::new();
    for target in targets {
        let Some(t) = Arc::get_mut(target) else {
            continue;
        };
        match distinct.get(&t.options) {
            Some(first) => t.options = first.clone(),
            None => {
                distinct.insert(t.options.clone());
            }
        }
    }
}

fn histogram(issues: &mut Issues, raw: Option<super::raw::RawHistogram>) -> HistogramConfig {
    let mut out = HistogramConfig::default();
    let Some(raw) = raw else { return out };
    if let Some(native) = &raw.native {
        out.native = native.value;
    }
    if let Some(classic) = &raw.classic_in_protobuf {
        out.classic_in_protobuf = classic.value;
    }
    if let Some(list) = &raw.buckets
        && let Some(b) = buckets(issues, list, "defaults.histogram.buckets")
    {
        out.buckets = b;
    }
    if let Some(list) = &raw.jitter_buckets
        && let Some(b) = buckets(issues, list, "defaults.histogram.jitter_buckets")
    {
        out.jitter_buckets = b;
    }
    out
}

/// A list of classic bucket bounds: positive seconds, strictly increasing, at least one.
fn buckets(issues: &mut Issues, list: &S<Vec<S<f64>>>, k: &str) -> Option<Vec<f64>> {
    let buckets = &list.value;
    if buckets.is_empty() {
        issues.push(line(list), k, "at least one bucket is needed");
        return None;
    }
    let mut ok = true;
    for (i, b) in buckets.iter().enumerate() {
        let bk = format!("{k}[{i}]");
        if !b.value.is_finite() || b.value <= 0.0 {
            issues.push(
                line(b),
                bk,
                format!("bucket {} must be a positive number of seconds", b.value),
            );
            ok = false;
        } else if i > 0 && b.value <= buckets[i - 1].value {
            issues.push(
                line(b),
                bk,
                format!(
                    "buckets must be strictly increasing: {} follows {}",
                    b.value,
                    buckets[i - 1].value
                ),
            );
            ok = false;
        }
    }
    ok.then(|| buckets.iter().map(|b| b.value).collect())
}

/// `IP:port`, `[IPv6]:port`, or a bare IP meaning port 53.
fn dns_server(s: &str) -> Option<SocketAddr> {
    s.parse::<SocketAddr>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
}

fn path_pacing(
    issues: &mut Issues,
    raw: Option<super::raw::RawPathPacing>,
) -> super::types::PathPacingConfig {
    let mut out = super::types::PathPacingConfig::default();
    let Some(raw) = raw else { return out };
    let max = super::types::MAX_ROUTER_RATE;
    let mut one = |v: &Option<S<i64>>, name: &str, into: &mut u32| {
        if let Some(v) = v
            && let Some(n) = rules::int_range(issues, v, &format!("path_pacing.{name}"), 1, max)
        {
            *into = n as u32;
        }
    };
    one(&raw.router_rate, "router_rate", &mut out.router_rate);
    one(&raw.router_burst, "router_burst", &mut out.router_burst);
    out
}

fn probe_limits(
    issues: &mut Issues,
    raw: Option<super::raw::RawProbeLimits>,
) -> super::types::ProbeLimitsConfig {
    let mut out = super::types::ProbeLimitsConfig::default();
    let Some(raw) = raw else { return out };
    if let Some(v) = &raw.max_duration
        && let Some(d) = rules::duration_positive(issues, v, "probe_limits.max_duration")
    {
        out.max_duration = d;
    }
    if let Some(v) = &raw.max_interval
        && let Some(d) = rules::duration_positive(issues, v, "probe_limits.max_interval")
    {
        out.max_interval = d;
    }
    if let Some(v) = &raw.max_count
        && let Some(n) = rules::int_at_least(issues, v, "probe_limits.max_count", 1)
    {
        out.max_count = n as u64;
    }
    out
}

fn sessions(
    issues: &mut Issues,
    raw: Option<super::raw::RawSessions>,
    base_dir: &Path,
) -> SessionsConfig {
    let mut out = SessionsConfig::default();
    let Some(raw) = raw else { return out };
    if let Some(db) = &raw.database {
        if db.value.is_empty() {
            issues.push(line(db), "sessions.database", "database must not be empty");
        } else {
            out.database = PathBuf::from(&db.value);
        }
    }
    // Relative paths follow the config file, as Prometheus does; the embedded default and strings
    // parsed with an empty base keep them relative to the working directory.
    if out.database.is_relative() && !base_dir.as_os_str().is_empty() {
        out.database = base_dir.join(&out.database);
    }
    if let Some(v) = &raw.max_active
        && let Some(n) = rules::int_at_least(issues, v, "sessions.max_active", 1)
    {
        out.max_active = n;
    }
    if let Some(v) = &raw.max_duration
        && let Some(d) = rules::duration_positive(issues, v, "sessions.max_duration")
    {
        out.max_duration = d;
    }
    if let Some(v) = &raw.min_interval
        && let Some(d) =
            rules::duration_min(issues, v, "sessions.min_interval", limits::MIN_INTERVAL)
    {
        out.min_interval = d;
    }
    if let Some(v) = &raw.max_captures_per_minute
        && let Some(n) = rules::int_range(
            issues,
            v,
            "sessions.max_captures_per_minute",
            0,
            i64::from(limits::MAX_CAPTURES_PER_MINUTE),
        )
        && let Ok(n) = u32::try_from(n)
    {
        out.max_captures_per_minute = n;
    }
    if let Some(r) = raw.retention.map(|r| r.value) {
        if let Some(v) = &r.max_sessions
            && let Some(n) = rules::int_at_least(issues, v, "sessions.retention.max_sessions", 1)
        {
            out.retention.max_sessions = n;
        }
        if let Some(v) = &r.max_age
            && let Some(d) = rules::duration_positive(issues, v, "sessions.retention.max_age")
        {
            out.retention.max_age = d;
        }
    }
    out
}

/// CIDR networks; a bare address means that one host. Host bits are cleared (`192.0.2.1/24` is
/// `192.0.2.0/24`).
fn networks(issues: &mut Issues, raw: &[S<String>], prefix: &str) -> Vec<IpNet> {
    let mut out = Vec::new();
    for (i, v) in raw.iter().enumerate() {
        let parsed = v
            .value
            .parse::<IpNet>()
            .ok()
            .or_else(|| v.value.parse::<IpAddr>().ok().map(IpNet::from));
        match parsed {
            Some(net) => out.push(net.trunc()),
            None => issues.push(
                line(v),
                format!("{prefix}[{i}]"),
                format!(
                    "{:?} is not a CIDR network or IP address (e.g. 192.0.2.0/24)",
                    v.value
                ),
            ),
        }
    }
    out
}

fn profiles(
    issues: &mut Issues,
    raw: BTreeMap<String, S<RawProfile>>,
    base: &TargetOptions,
) -> BTreeMap<String, ProbeProfile> {
    let mut out = BTreeMap::new();
    let builtin = ProbeProfile {
        kind: base.kind,
        count: defaults::PROFILE_COUNT,
        interval: defaults::PROFILE_INTERVAL,
        timeout: defaults::PROFILE_TIMEOUT,
        size: base.size,
        family: base.family,
        port: base.port,
    };
    out.insert(defaults::PROFILE.to_owned(), builtin.clone());
    for (name, p) in &raw {
        let prefix = format!("probe_profiles.{name}");
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok {
            issues.push(
                line(p),
                &prefix,
                format!("profile name {name:?} must match [A-Za-z0-9_-]+"),
            );
            continue;
        }
        let mut profile = builtin.clone();
        let v = &p.value;
        if let Some(k) = &v.kind
            && let Some(k) = rules::kind(issues, k, &key(&prefix, "kind"))
        {
            profile.kind = k;
        }
        if let Some(p) = &v.port
            && let Some(n) = rules::port(issues, p, &key(&prefix, "port"))
        {
            profile.port.port = Some(n);
        }
        if let Some(u) = &v.udp
            && let Some(m) = rules::udp_mode(issues, u, &key(&prefix, "udp.mode"))
        {
            profile.port.udp_mode = m;
        }
        let check = TargetOptions {
            kind: profile.kind,
            port: profile.port,
            ..TargetOptions::default()
        };
        rules::port_for_kind(issues, &check, &v.port, line(p), &prefix);
        if let Some(c) = &v.count
            && let Some(n) = rules::int_at_least(issues, c, &key(&prefix, "count"), 1)
        {
            match u32::try_from(n) {
                Ok(n) => profile.count = n,
                Err(_) => issues.push(
                    line(c),
                    key(&prefix, "count"),
                    format!("count must be at most {}, got {n}", u32::MAX),
                ),
            }
        }
        if let Some(d) = &v.interval
            && let Some(d) =
                rules::duration_min(issues, d, &key(&prefix, "interval"), limits::MIN_INTERVAL)
        {
            profile.interval = d;
        }
        if let Some(d) = &v.timeout
            && let Some(d) = rules::timeout(issues, d, &key(&prefix, "timeout"))
        {
            profile.timeout = d;
        }
        if let Some(f) = &v.family
            && let Some(f) = rules::family(issues, f, &key(&prefix, "family"))
        {
            profile.family = f;
        }
        if let Some(s) = &v.size
            && let Some(s) = rules::size(issues, s, &key(&prefix, "size"), profile.family)
        {
            profile.size = s;
        }
        out.insert(name.clone(), profile);
    }
    out
}
