//! Black-box tests of the config layer: every rejection rule with its fixture and exact message,
//! the shipped sample and embedded default, file_sd, access rules, sharding and the reload diff.

mod support;

use pingscope::config::{
    self, AccessConfig, Config, Denied, Shard, TargetConfig, check_config_report, diff_targets,
    load_file, parse_str,
};
use pingscope::resolve::Family;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const FIXTURES: &str = "tests/fixtures/config";

/// A rejection table's lines for one fixture, each prefixed with the fixtures' folder.
fn located(dir: &str, lines: &[&str]) -> Vec<String> {
    lines.iter().map(|l| format!("{dir}/{l}")).collect()
}

/// The names of the `invalid-*` fixtures in `dir`.
fn invalid_fixtures(dir: &str) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("invalid-"))
        .collect()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

/// Every `invalid-*.yml` fixture with the exact lines `load_file` must report (after the
/// `FIXTURES/` prefix that every file name carries).
const REJECTIONS: &[(&str, &[&str])] = &[
    (
        "invalid-port-range.yml",
        &[
            "invalid-port-range.yml:4: targets[0].port: port must be between 1 and 65535, got 0",
            "invalid-port-range.yml:7: targets[1].port: port must be between 1 and 65535, got 70000",
        ],
    ),
    (
        "invalid-port-kind.yml",
        &[
            "invalid-port-kind.yml:3: targets[0].port: port 443 is set but kind is icmp: only tcp and udp probes have a port",
            "invalid-port-kind.yml:4: targets[1].port: kind tcp needs a port (the TCP port to probe)",
            "invalid-port-kind.yml:10: targets[2].udp.mode: unknown udp mode \"loud\" (use closed or echo)",
        ],
    ),
    (
        "invalid-outage.yml",
        &[
            "invalid-outage.yml:2: defaults.outage.after: after must be between 1 and 1000, got 0",
            "invalid-outage.yml:2: defaults.outage.until: until must be between 1 and 1000, got 1001",
            "invalid-outage.yml:7: targets[0].outage.until: until must be between 1 and 1000, got 0",
            "invalid-outage.yml:9: targets[1].outage.afterwards: unknown key (known keys here: after, until)",
        ],
    ),
    (
        "invalid-alert.yml",
        &[
            "invalid-alert.yml:2: defaults.alert.loss: loss must be a ratio between 0 and 1, got 1.5",
            "invalid-alert.yml:6: targets[0].alert.loss: loss must be a ratio between 0 and 1, got -0.1",
            "invalid-alert.yml:7: targets[0].alert.rtt: rtt must be greater than 0s",
            "invalid-alert.yml:8: targets[0].alert.for: invalid duration \"soon\": expected a number before \"soon\"",
            "invalid-alert.yml:10: targets[1].alert.latency: unknown key (known keys here: loss, rtt, for)",
        ],
    ),
    (
        "invalid-capture.yml",
        &[
            "invalid-capture.yml:2: defaults.capture.on_loss: on_loss needs alert.loss, the loss threshold it captures at",
            "invalid-capture.yml:2: defaults.capture.rounds: rounds must be between 1 and 60, got 0",
            "invalid-capture.yml:6: targets[0].capture.rounds: rounds must be between 1 and 60, got 61",
            "invalid-capture.yml:7: targets[0].capture.every: every 30s is below the minimum of 1m",
            "invalid-capture.yml:10: targets[1].capture.on_loss: on_loss needs alert.loss, the loss threshold it captures at",
            "invalid-capture.yml:10: targets[1].capture.every: every 2d is above the maximum of 1d",
            "invalid-capture.yml:12: targets[2].capture.on_los: unknown key (known keys here: on_outage, on_loss, rounds, every)",
        ],
    ),
    (
        "invalid-kind.yml",
        &["invalid-kind.yml:3: targets[0].kind: unknown kind \"ssh\" (use icmp, path, tcp, udp)"],
    ),
    (
        "invalid-path.yml",
        &[
            "invalid-path.yml:5: targets[0].path.first_ttl: first_ttl 9 is above max_ttl 5",
            "invalid-path.yml:9: targets[1].path.flows: flows must be between 1 and 16, got 17",
            "invalid-path.yml:11: targets[2].path.protocol: unknown protocol \"tcp\" (use icmp or udp)",
            "invalid-path.yml:14: targets[3].path.pace: pace 2s is above the maximum of 1s",
        ],
    ),
    (
        "invalid-path-pacing.yml",
        &[
            "invalid-path-pacing.yml:2: path_pacing.router_rate: router_rate must be between 1 and 10000, got 0",
            "invalid-path-pacing.yml:3: path_pacing.router_burst: router_burst must be between 1 and 10000, got 10001",
        ],
    ),
    (
        "invalid-unknown-key.yml",
        &[
            "invalid-unknown-key.yml:3: targets[0].intervall: unknown key (known keys here: name, host, labels, kind, interval, timeout, size, family, ttl, tos, source, interface, window, metrics, outage, alert, capture, path, port, udp)",
        ],
    ),
    (
        "invalid-unknown-top-key.yml",
        &[
            "invalid-unknown-top-key.yml:3: scrape_interval: unknown key (known keys here: defaults, dns, targets, target_files, sessions, access, probe_profiles, probe_limits, mesh, path_pacing)",
        ],
    ),
    (
        "invalid-wrong-type.yml",
        &["invalid-wrong-type.yml:2: defaults.size: expected an integer"],
    ),
    (
        "invalid-wrong-type-list.yml",
        &["invalid-wrong-type-list.yml:2: targets: expected a list"],
    ),
    (
        "invalid-syntax.yml",
        &["invalid-syntax.yml:3: targets[0].labels: unclosed bracket '{'"],
    ),
    (
        "invalid-syntax-after-unknown-key.yml",
        &[
            "invalid-syntax-after-unknown-key.yml:2: defaults.intervall: unknown key (known keys here: kind, interval, timeout, size, family, ttl, tos, source, interface, window, metrics, outage, alert, capture, path, port, udp, histogram)",
            "invalid-syntax-after-unknown-key.yml:5: targets[0].labels: unclosed bracket '{'",
        ],
    ),
    (
        "invalid-duplicate-key.yml",
        &["invalid-duplicate-key.yml:3: defaults.interval: duplicate key"],
    ),
    (
        "invalid-bad-duration.yml",
        &[
            "invalid-bad-duration.yml:2: defaults.interval: invalid duration \"5x\": unknown unit \"x\" (use ms, s, m, h, d, w, y)",
        ],
    ),
    (
        "invalid-bare-number-duration.yml",
        &[
            "invalid-bare-number-duration.yml:3: targets[0].timeout: invalid duration \"5\": missing unit (use ms, s, m, h, d, w, y)",
        ],
    ),
    (
        "invalid-interval-too-short.yml",
        &[
            "invalid-interval-too-short.yml:3: targets[0].interval: interval 5ms is below the minimum of 10ms",
        ],
    ),
    (
        "invalid-timeout-zero.yml",
        &["invalid-timeout-zero.yml:2: defaults.timeout: timeout must be greater than 0s"],
    ),
    (
        "invalid-timeout-too-long.yml",
        &[
            "invalid-timeout-too-long.yml:3: targets[0].timeout: timeout 5m is longer than is sane (at most 1m)",
        ],
    ),
    (
        "invalid-size-v4.yml",
        &[
            "invalid-size-v4.yml:3: targets[0].size: size 65508 is larger than the largest ICMP payload over IPv4 (65507 bytes)",
        ],
    ),
    (
        "invalid-size-v6.yml",
        &[
            "invalid-size-v6.yml:4: targets[0].size: size 65528 is larger than the largest ICMP payload over IPv6 (65527 bytes)",
        ],
    ),
    (
        "invalid-size-negative.yml",
        &["invalid-size-negative.yml:2: defaults.size: size must not be negative, got -1"],
    ),
    (
        "invalid-ttl-zero.yml",
        &["invalid-ttl-zero.yml:2: defaults.ttl: ttl must be between 1 and 255, got 0"],
    ),
    (
        "invalid-ttl-too-big.yml",
        &["invalid-ttl-too-big.yml:3: targets[0].ttl: ttl must be between 1 and 255, got 256"],
    ),
    (
        "invalid-tos.yml",
        &["invalid-tos.yml:2: defaults.tos: tos must be between 0 and 255, got 300"],
    ),
    (
        "invalid-empty-host.yml",
        &["invalid-empty-host.yml:3: targets[0].host: host must not be empty"],
    ),
    (
        "invalid-missing-host.yml",
        &["invalid-missing-host.yml:2: targets[0].host: required key is missing"],
    ),
    (
        "invalid-bad-host.yml",
        &[
            "invalid-bad-host.yml:2: targets[0].host: \"http://example.org/\" is not a host name or IP address",
        ],
    ),
    (
        "invalid-duplicate-name.yml",
        &[
            "invalid-duplicate-name.yml:4: targets[1].name: duplicate target name \"gw\" (first at tests/fixtures/config/invalid-duplicate-name.yml:2)",
        ],
    ),
    (
        "invalid-label-name.yml",
        &[
            "invalid-label-name.yml:4: targets[0].labels.1site: invalid label name \"1site\" (must match [a-zA-Z_][a-zA-Z0-9_]*)",
        ],
    ),
    (
        "invalid-label-reserved.yml",
        &[
            "invalid-label-reserved.yml:4: targets[0].labels.ip: label name \"ip\" is reserved (pingscope sets target, ip, host, family, le, stat, type, reason)",
            "invalid-label-reserved.yml:5: targets[0].labels.__meta_x: label name \"__meta_x\" is reserved (names starting with __ are Prometheus' own)",
        ],
    ),
    (
        "invalid-window-zero.yml",
        &["invalid-window-zero.yml:2: defaults.window: window must be between 1 and 100000, got 0"],
    ),
    (
        "invalid-window-too-big.yml",
        &[
            "invalid-window-too-big.yml:3: targets[0].window: window must be between 1 and 100000, got 100001",
        ],
    ),
    (
        "invalid-buckets-order.yml",
        &[
            "invalid-buckets-order.yml:3: defaults.histogram.buckets[2]: buckets must be strictly increasing: 0.005 follows 0.01",
        ],
    ),
    (
        "invalid-buckets-positive.yml",
        &[
            "invalid-buckets-positive.yml:3: defaults.histogram.buckets[0]: bucket 0 must be a positive number of seconds",
        ],
    ),
    (
        "invalid-buckets-empty.yml",
        &["invalid-buckets-empty.yml:3: defaults.histogram.buckets: at least one bucket is needed"],
    ),
    (
        "invalid-jitter-buckets.yml",
        &[
            "invalid-jitter-buckets.yml:3: defaults.histogram.jitter_buckets[1]: buckets must be strictly increasing: 0.001 follows 0.01",
            "invalid-jitter-buckets.yml:3: defaults.histogram.jitter_buckets[2]: bucket -1 must be a positive number of seconds",
        ],
    ),
    (
        "invalid-metrics.yml",
        &[
            "invalid-metrics.yml:2: defaults.metrics.window_gauges: expected boolean",
            "invalid-metrics.yml:6: targets[0].metrics.window: unknown key (known keys here: window_gauges)",
        ],
    ),
    (
        "invalid-cidr.yml",
        &[
            "invalid-cidr.yml:3: access.deny[0]: \"198.51.100.0/33\" is not a CIDR network or IP address (e.g. 192.0.2.0/24)",
        ],
    ),
    (
        "invalid-dns-server.yml",
        &[
            "invalid-dns-server.yml:2: dns.servers[1]: \"dns.example.org\" is not an IP address or IP:port (e.g. 127.0.0.1:5353)",
        ],
    ),
    (
        "invalid-dns-refresh.yml",
        &["invalid-dns-refresh.yml:2: dns.refresh: refresh 100ms is below the minimum of 1s"],
    ),
    (
        "invalid-sessions.yml",
        &[
            "invalid-sessions.yml:2: sessions.max_active: max_active must be at least 1, got 0",
            "invalid-sessions.yml:3: sessions.max_duration: max_duration must be greater than 0s",
            "invalid-sessions.yml:4: sessions.min_interval: min_interval 1ms is below the minimum of 10ms",
            "invalid-sessions.yml:6: sessions.retention.max_sessions: max_sessions must be at least 1, got 0",
            "invalid-sessions.yml:7: sessions.retention.max_age: max_age must be greater than 0s",
            "invalid-sessions.yml:8: sessions.max_captures_per_minute: max_captures_per_minute must be between 0 and 60, got 61",
        ],
    ),
    (
        "invalid-profile-count.yml",
        &[
            "invalid-profile-count.yml:3: probe_profiles.fast.count: count must be at least 1, got 0",
        ],
    ),
    (
        "invalid-family.yml",
        &[
            "invalid-family.yml:2: defaults.family: unknown family \"ipv4\" (use auto, ip4, ip6 or all)",
        ],
    ),
    (
        "invalid-source-family.yml",
        &[
            "invalid-source-family.yml:4: targets[0].source: source 192.0.2.10 is IPv4 but family is ip6",
        ],
    ),
    (
        "invalid-interface.yml",
        &[
            "invalid-interface.yml:2: defaults.interface: \"a-very-long-interface-name\" is not an interface name (1 to 15 characters, no '/' or spaces)",
        ],
    ),
    (
        "invalid-three-errors.yml",
        &[
            "invalid-three-errors.yml:6: targets[0].timeout: timeout 2m is longer than is sane (at most 1m)",
            "invalid-three-errors.yml:8: targets[1].host: host must not be empty",
            "invalid-three-errors.yml:11: targets[2].ttl: ttl must be between 1 and 255, got 0",
        ],
    ),
    (
        "invalid-mixed-errors.yml",
        &[
            "invalid-mixed-errors.yml:2: defaults.intervall: unknown key (known keys here: kind, interval, timeout, size, family, ttl, tos, source, interface, window, metrics, outage, alert, capture, path, port, udp, histogram)",
            "invalid-mixed-errors.yml:3: defaults.size: expected an integer",
            "invalid-mixed-errors.yml:4: defaults.timeout: timeout 5m is longer than is sane (at most 1m)",
            "invalid-mixed-errors.yml:8: targets[1].host: expected a string",
            "invalid-mixed-errors.yml:11: targets[2].ttl: ttl must be between 1 and 255, got 0",
            "invalid-mixed-errors.yml:12: targets[2].colour: unknown key (known keys here: name, host, labels, kind, interval, timeout, size, family, ttl, tos, source, interface, window, metrics, outage, alert, capture, path, port, udp)",
            "invalid-mixed-errors.yml:13: targets[3].colour: unknown key (known keys here: name, host, labels, kind, interval, timeout, size, family, ttl, tos, source, interface, window, metrics, outage, alert, capture, path, port, udp)",
            "invalid-mixed-errors.yml:13: targets[3].host: required key is missing",
            "invalid-mixed-errors.yml:14: targets[4].size: expected an integer",
            "invalid-mixed-errors.yml:15: dns.refersh: unknown key (known keys here: servers, refresh)",
        ],
    ),
    (
        "invalid-target-files.yml",
        &[
            "sd/bad.yml:1: [0].targets[0]: host must not be empty",
            "sd/bad.yml:3: [0].labels.family: label name \"family\" is reserved (pingscope sets target, ip, host, family, le, stat, type, reason)",
            "sd/good.yml:1: [0].targets[0]: duplicate target name \"192.0.2.50\" (first at tests/fixtures/config/invalid-target-files.yml:3)",
        ],
    ),
];

#[test]
fn every_rejection_rule_has_its_fixture_and_exact_message() {
    assert_rejections(FIXTURES, REJECTIONS);
}

/// Loads each fixture of a rejection `table` from `dir` and fails, listing them all, where one
/// is accepted or refused with other lines than the table's. The structured form must agree with
/// the text: one issue per line, each located.
fn assert_rejections(dir: &str, table: &[(&str, &[&str])]) {
    let mut failures = Vec::new();
    for (name, expected) in table {
        let expected = located(dir, expected).join("\n");
        let e = match load_file(&Path::new(dir).join(name)) {
            Ok(_) => {
                failures.push(format!("{name}: accepted, expected:\n{expected}"));
                continue;
            }
            Err(e) => e,
        };
        let got = e.to_string();
        if got != expected {
            failures.push(format!("{name}:\n got: {got}\nwant: {expected}"));
        }
        assert_eq!(e.issues.len(), expected.lines().count(), "{name}");
        for issue in &e.issues {
            assert!(
                issue.line.is_some() && issue.key.is_some(),
                "{name}: {issue:?}"
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_invalid_fixture_is_in_the_table() {
    let listed: BTreeSet<String> = REJECTIONS
        .iter()
        .map(|(name, _)| name.to_string())
        .collect();
    let on_disk = invalid_fixtures(FIXTURES);
    assert!(on_disk.len() >= 30, "fixtures not found: {on_disk:?}");
    assert_eq!(on_disk, listed);
}

#[test]
fn several_errors_are_reported_together() {
    let err = load_file(&fixture("invalid-three-errors.yml")).err();
    let issues = err.map(|e| e.issues).unwrap_or_default();
    let keys: Vec<_> = issues.iter().filter_map(|i| i.key.as_deref()).collect();
    assert_eq!(
        keys,
        ["targets[0].timeout", "targets[1].host", "targets[2].ttl"]
    );
}

#[test]
fn sample_config_parses_and_names_only_documentation_addresses() {
    let config = load_file(Path::new("config/pingscope.yml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.targets.len() >= 3);
    let doc_nets: [ipnet::IpNet; 2] = [
        "192.0.2.0/24".parse().unwrap_or_else(|_| unreachable!()),
        "2001:db8::/32".parse().unwrap_or_else(|_| unreachable!()),
    ];
    for t in &config.targets {
        match t.host.parse::<IpAddr>() {
            Ok(ip) => assert!(doc_nets.iter().any(|n| n.contains(&ip)), "{}", t.host),
            Err(_) => assert!(
                &*t.host == "example.org" || t.host.ends_with(".example.org"),
                "{}",
                t.host
            ),
        }
    }
    // The sample documents every key the parser knows.
    let text = std::fs::read_to_string("config/pingscope.yml").unwrap_or_default();
    let keys = [
        "defaults",
        "interval",
        "timeout",
        "size",
        "family",
        "ttl",
        "tos",
        "source",
        "interface",
        "window",
        "histogram",
        "buckets",
        "jitter_buckets",
        "metrics",
        "window_gauges",
        "native",
        "classic_in_protobuf",
        "dns",
        "servers",
        "refresh",
        "targets",
        "name",
        "host",
        "labels",
        "target_files",
        "sessions",
        "database",
        "max_active",
        "max_duration",
        "min_interval",
        "retention",
        "max_sessions",
        "max_age",
        "access",
        "allow",
        "deny",
        "probe_profiles",
        "count",
        "kind",
        "path",
        "first_ttl",
        "max_ttl",
        "flows",
        "protocol",
    ];
    for key in keys {
        assert!(text.contains(&format!("{key}:")), "sample lacks {key}");
    }
    // Its values really are read, not defaults that happen to match.
    assert_eq!(&*config.targets[0].name, "gateway");
    assert_eq!(
        config.targets[0].options.interval,
        Duration::from_millis(500)
    );
    assert_eq!(
        config.targets[0].labels.get("site").map(String::as_str),
        Some("ams")
    );
    assert_eq!(config.targets[1].options.family, Family::Ip6);
    assert_eq!(config.targets[1].options.tos, Some(184));
    assert_eq!(&*config.targets[2].name, "example.org");
    assert_eq!(
        config.targets[3].options.kind,
        pingscope::probe::ProbeKind::Path
    );
    assert_eq!(
        (
            config.targets[3].options.path.max_ttl,
            config.targets[3].options.path.flows
        ),
        (16, 4)
    );
    assert_eq!(config.access.deny.len(), 2);
    assert_eq!(config.probe_profiles.len(), 3);
    assert_eq!(config.probe_profiles["v6-mtu"].size, 1452);
    // The sample shows the default layouts and optional series as they are.
    assert_eq!(config.histogram, config::HistogramConfig::default());
    assert_eq!(config.defaults.metrics, config::MetricsConfig::default());
    assert_eq!(
        config.sessions.database,
        Path::new("config/data/pingscope.db")
    );
    assert_eq!(
        config.source_path.as_deref(),
        Some(Path::new("config/pingscope.yml"))
    );
}

#[test]
fn embedded_default_monitors_loopback_v4_and_v6() {
    let config = Config::embedded_default();
    let got: Vec<(&str, &str)> = config
        .targets
        .iter()
        .map(|t| (&*t.name, &*t.host))
        .collect();
    assert_eq!(
        got,
        [("localhost-v4", "127.0.0.1"), ("localhost-v6", "::1")]
    );
    assert_eq!(config.source_path, None);
    assert!(config.probe_profiles.contains_key("default"));
    // The file on disk is the one built in.
    let on_disk = load_file(Path::new("config/default.yml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(on_disk.targets, config.targets);
}

/// `yaml` as a config file with no directory of its own; a rejection fails the test.
fn parse_ok(yaml: &str) -> Config {
    parse_str(yaml, "test.yml", Path::new("")).unwrap_or_else(|e| panic!("{e}"))
}

fn one_target(yaml: &str) -> TargetConfig {
    let config = parse_ok(yaml);
    assert_eq!(config.targets.len(), 1);
    (*config.targets[0]).clone()
}

// Targets with equal options share one copy of them, and a target's own option is its own.
#[test]
fn targets_with_equal_options_share_them() {
    let config = parse_ok(
        "defaults: {interval: 2s}\ntargets:\n  - host: 192.0.2.1\n  - host: 192.0.2.2\n  - {host: 192.0.2.3, interval: 5s}\n  - {host: 192.0.2.4, interval: 5s}\n  - {host: 192.0.2.5, labels: {site: a}}\n",
    );
    let t = &config.targets;
    assert_eq!(t.len(), 5);
    let same = |a: usize, b: usize| std::sync::Arc::ptr_eq(&t[a].options, &t[b].options);
    assert!(same(0, 1) && same(0, 4) && same(2, 3));
    assert!(!same(0, 2));
    assert_eq!(t[1].options.interval, Duration::from_secs(2));
    assert_eq!(t[3].options.interval, Duration::from_secs(5));
    assert_eq!(t[4].labels["site"], "a");
}

#[test]
fn every_default_is_applied() {
    let t = one_target("targets:\n  - host: 192.0.2.1\n");
    let want = TargetConfig {
        name: "192.0.2.1".into(),
        host: "192.0.2.1".into(),
        labels: BTreeMap::new(),
        options: std::sync::Arc::new(config::TargetOptions {
            kind: pingscope::probe::ProbeKind::Icmp,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            size: 56,
            family: Family::Auto,
            ttl: None,
            tos: None,
            source: None,
            interface: None,
            window: 60,
            metrics: config::MetricsConfig {
                window_gauges: false,
            },
            outage: Default::default(),
            alert: Default::default(),
            capture: Default::default(),
            path: Default::default(),
            port: Default::default(),
        }),
    };
    assert_eq!(t, want);
    let config = parse_ok("");
    assert!(config.targets.is_empty());
    let p = &config.probe_profiles["default"];
    assert_eq!(
        (p.count, p.interval, p.timeout),
        (5, Duration::from_millis(200), Duration::from_secs(1))
    );
    assert_eq!(config.dns.refresh, Duration::from_secs(300));
    assert_eq!(config.sessions.max_active, 16);
    assert_eq!(config.sessions.max_captures_per_minute, 4);
    let c = t.options.capture;
    assert_eq!(
        (c.on_outage, c.on_loss, c.rounds, c.every),
        (true, false, 10, Duration::from_secs(600))
    );
    assert_eq!(
        config.histogram.buckets,
        [
            0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0
        ]
    );
    assert_eq!(config.histogram.jitter_buckets, [0.001, 0.01, 0.1]);
    assert!(config.histogram.native);
    assert!(!config.histogram.classic_in_protobuf);
    assert!(
        config
            .access
            .check("192.0.2.1".parse().unwrap_or_else(|_| unreachable!()))
            .is_ok()
    );
}

#[test]
fn target_options_override_defaults_which_override_builtins() {
    let yaml = "defaults:\n  interval: 10s\n  ttl: 30\n  labels_are_not_here: 1\n";
    assert!(parse_str(yaml, "t.yml", Path::new("")).is_err());
    let yaml = "defaults:\n  interval: 10s\n  ttl: 30\n  family: ip4\n  source: 192.0.2.9\n\
                targets:\n  - host: h.example.org\n    name: 123\n    ttl: 7\n    labels: {rack: 1, site: ams}\n    interface: eth0\n";
    let t = one_target(yaml);
    assert_eq!(t.options.interval, Duration::from_secs(10));
    assert_eq!(t.options.ttl, Some(7));
    assert_eq!(t.options.family, Family::Ip4);
    assert_eq!(
        t.options.source,
        Some("192.0.2.9".parse().unwrap_or_else(|_| unreachable!()))
    );
    assert_eq!(t.options.interface.as_deref(), Some("eth0"));
    assert_eq!(&*t.name, "123");
    assert_eq!(t.labels.get("rack").map(String::as_str), Some("1"));
    // A DNS server without a port gets 53; IPv6 with a port in brackets.
    let config = parse_ok("dns:\n  servers: [127.0.0.1, \"[::1]:5353\"]\n  refresh: 30s\n");
    let servers: Vec<String> = config.dns.servers.iter().map(ToString::to_string).collect();
    assert_eq!(servers, ["127.0.0.1:53", "[::1]:5353"]);
    assert_eq!(config.dns.refresh, Duration::from_secs(30));
}

#[test]
fn target_files_add_targets_with_labels_and_defaults() {
    let config = load_file(&fixture("valid-target-files.yml")).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = config.targets.iter().map(|t| &*t.name).collect();
    assert_eq!(
        names,
        [
            "192.0.2.1",
            "192.0.2.10",
            "www.example.org",
            "2001:db8::10",
            "192.0.2.11"
        ]
    );
    assert_eq!(config.targets_from_files, 4);
    let by_name = |n: &str| config.targets.iter().find(|t| &*t.name == n).cloned();
    let a = by_name("192.0.2.10").unwrap_or_else(|| unreachable!());
    // `__`-prefixed labels are Prometheus-internal and skipped; the rest apply.
    assert_eq!(
        a.labels,
        BTreeMap::from([("site".to_owned(), "fra".to_owned())])
    );
    assert_eq!(a.options.interval, Duration::from_secs(5));
    let b = by_name("2001:db8::10").unwrap_or_else(|| unreachable!());
    assert_eq!(b.labels.get("rack").map(String::as_str), Some("r1"));
    assert!(by_name("192.0.2.11").is_some_and(|t| t.labels.is_empty()));
    let watch = config.watch_paths();
    assert_eq!(
        watch,
        [fixture("valid-target-files.yml"), fixture("sd-valid")]
    );
}

#[test]
fn unreadable_file_is_named() {
    let err = load_file(&fixture("no-such-file.yml"))
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some(
            "tests/fixtures/config/no-such-file.yml: cannot read: No such file or directory (os error 2)"
        )
    );
}

#[test]
fn check_config_report_says_ok_or_lists_every_error() {
    let (ok, text) = check_config_report(&fixture("valid-target-files.yml"));
    assert!(ok);
    assert_eq!(
        text,
        "tests/fixtures/config/valid-target-files.yml: OK: 5 targets (4 from target_files), 1 probe profile"
    );
    let (ok, text) = check_config_report(&fixture("invalid-three-errors.yml"));
    assert!(!ok);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(
        lines[3],
        "tests/fixtures/config/invalid-three-errors.yml: 3 errors"
    );
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|_| panic!("bad test address {s}"))
}

#[test]
fn access_deny_wins_and_mapped_addresses_count_as_ipv4() {
    let config = parse_ok(
        "access:\n  allow: [127.0.0.0/8, 2001:db8::/32, 192.0.2.7]\n  deny: [127.0.0.2/32, 2001:db8:1::/48]\n",
    );
    let access: &AccessConfig = &config.access;
    assert_eq!(access.check(ip("127.0.0.1")), Ok(()));
    assert_eq!(access.check(ip("192.0.2.7")), Ok(()));
    assert_eq!(access.check(ip("2001:db8::1")), Ok(()));
    let denied = access.check(ip("127.0.0.2")).err();
    assert_eq!(
        denied.as_ref().map(ToString::to_string).as_deref(),
        Some("denied by access.deny 127.0.0.2/32")
    );
    assert_eq!(access.check(ip("::ffff:127.0.0.2")).err(), denied);
    assert_eq!(access.check(ip("::ffff:127.0.0.1")), Ok(()));
    assert!(matches!(
        access.check(ip("2001:db8:1::5")),
        Err(Denied::Deny(_))
    ));
    let not_allowed = access.check(ip("192.0.2.8")).err();
    assert_eq!(
        not_allowed.as_ref().map(ToString::to_string).as_deref(),
        Some("not in access.allow")
    );
    assert_eq!(access.check(ip("::1")), Err(Denied::NotAllowed));
}

#[test]
fn shard_parsing_rejects_with_clear_messages() {
    let err = |s: &str| {
        s.parse::<Shard>()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert_eq!(
        err("3/3"),
        "invalid shard \"3/3\": index 3 is out of range for 3 shards (shards are counted from 0: 0/3 to 2/3)"
    );
    assert_eq!(
        err("0/0"),
        "invalid shard \"0/0\": the shard count must be at least 1"
    );
    assert_eq!(
        err("1"),
        "invalid shard \"1\": expected I/N with shards counted from 0, e.g. 0/3, 1/3 or 2/3"
    );
    assert_eq!(
        err("-1/3"),
        "invalid shard \"-1/3\": expected I/N with shards counted from 0, e.g. 0/3, 1/3 or 2/3"
    );
    assert_eq!("2/3".parse::<Shard>(), Ok(Shard { index: 2, count: 3 }));
    assert_eq!(Shard { index: 2, count: 3 }.to_string(), "2/3");
}

#[test]
fn three_shards_split_a_thousand_targets_without_overlap_or_gap() {
    let shards: Vec<Shard> = (0..3).map(|i| Shard { index: i, count: 3 }).collect();
    let sizes = support::shard_split(
        &shards,
        (0..1000).map(|n| format!("target-{n}.example.org")),
    );
    assert_eq!(sizes.iter().sum::<usize>(), 1000);
    for size in &sizes {
        assert!((250..=420).contains(size), "uneven split {sizes:?}");
    }
    assert!(Shard { index: 0, count: 1 }.keeps("anything"));
}

#[test]
fn shard_selection_applies_to_config_targets() {
    let yaml: String = (0..30).fold("targets:\n".to_owned(), |acc, n| {
        acc + &format!("  - host: h{n}.example.org\n")
    });
    let config = parse_ok(&yaml);
    let total: usize = (0..2)
        .map(|i| config.targets_for(Some(Shard { index: i, count: 2 })).len())
        .sum();
    assert_eq!(total, 30);
    assert_eq!(config.targets_for(None).len(), 30);
}

// A target named by its host keeps one string for both (its series, status and capture entries
// share it in turn); one with a name of its own keeps two.
#[test]
fn a_target_named_by_its_host_keeps_one_string_for_both() {
    let config = parse_ok("targets:\n  - host: 192.0.2.1\n  - name: b\n    host: 192.0.2.2\n");
    let (a, b) = (&config.targets[0], &config.targets[1]);
    assert!(std::sync::Arc::ptr_eq(&a.name, &a.host));
    assert_eq!(
        (&*a.name, &*b.name, &*b.host),
        ("192.0.2.1", "b", "192.0.2.2")
    );
}

#[test]
fn diff_sorts_targets_into_added_removed_changed_unchanged() {
    let old = parse_ok(
        "targets:\n  - host: 192.0.2.1\n  - host: 192.0.2.2\n  - name: c\n    host: 192.0.2.3\n",
    );
    let new = parse_ok(
        "targets:\n  - name: c\n    host: 192.0.2.3\n    interval: 2s\n  - host: 192.0.2.1\n  - host: 192.0.2.4\n",
    );
    let diff = diff_targets(&old.targets, &new.targets);
    let names = |ts: &[std::sync::Arc<TargetConfig>]| {
        ts.iter().map(|t| t.name.to_string()).collect::<Vec<_>>()
    };
    assert_eq!(names(&diff.added), ["192.0.2.4"]);
    assert_eq!(names(&diff.removed), ["192.0.2.2"]);
    assert_eq!(names(&diff.unchanged), ["192.0.2.1"]);
    assert_eq!(diff.changed.len(), 1);
    assert_eq!(diff.changed[0].old.options.interval, Duration::from_secs(1));
    assert_eq!(diff.changed[0].new.options.interval, Duration::from_secs(2));
    assert!(!diff.is_empty());
    assert!(diff_targets(&new.targets, &new.targets).is_empty());
    // A capture setting is part of the target: a reload restarts it with the new one.
    let every = parse_ok(
        "targets:\n  - name: c\n    host: 192.0.2.3\n    interval: 2s\n    capture: {every: 1m}\n",
    );
    let diff = diff_targets(&new.targets, &every.targets);
    assert_eq!(diff.changed.len(), 1);
    assert_eq!(
        diff.changed[0].new.options.capture.every,
        Duration::from_secs(60)
    );
}

#[test]
fn durations_are_shared_with_the_cli_and_api() {
    assert_eq!(
        config::parse_duration("1h30m"),
        Ok(Duration::from_secs(5400))
    );
    assert_eq!(config::format_duration(Duration::from_millis(200)), "200ms");
    let err = config::parse_duration("5x").err().map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("invalid duration \"5x\": unknown unit \"x\" (use ms, s, m, h, d, w, y)")
    );
}

#[test]
fn yaml_shape_errors_name_the_key() {
    let cases = [
        (
            "targets:\n  - 192.0.2.1\n",
            "e.yml:2: targets[0]: expected a mapping (key: value)",
        ),
        (
            "targets:\n  - host: a.example.org\n    labels: {site: null}\n",
            "e.yml:3: targets[0].labels.site: expected a string, found null",
        ),
        (
            "- a\n- b\n",
            "e.yml:1: (document): expected a mapping (key: value)",
        ),
        (
            "defaults: 5\n",
            "e.yml:1: defaults: expected a mapping (key: value)",
        ),
        (
            "defaults:\n  histogram:\n    buckets: [fast]\n",
            "e.yml:3: defaults.histogram.buckets[0]: expected a number",
        ),
        (
            "targets:\n  - host: [1, 2]\n",
            "e.yml:2: targets[0].host: expected a string",
        ),
        (
            "target_files: [\"[\"]\n",
            "e.yml:1: target_files[0]: invalid glob \"[\": Pattern syntax error near position 0: invalid range pattern",
        ),
        (
            "targets:\n- host: x.example.org\n  family: ip6\n  size: 65520\n- host: y.example.org\n  size: 65520\n",
            "e.yml:6: targets[1].size: size 65520 is larger than the largest ICMP payload over IPv4 (65507 bytes)",
        ),
        (
            "defaults:\n  size: 65520\n  family: ip6\ntargets:\n- host: y.example.org\n  family: ip4\n",
            "e.yml:6: targets[0].size: size 65520 (from defaults) is larger than the largest ICMP payload over IPv4 (65507 bytes)",
        ),
    ];
    for (src, want) in cases {
        let got = parse_str(src, "e.yml", Path::new(""))
            .err()
            .map(|e| e.to_string());
        assert_eq!(got.as_deref(), Some(want), "{src}");
    }
}

#[test]
fn histogram_options_are_read_and_checked() {
    let parse = |yaml: &str| parse_str(yaml, "h.yml", Path::new("")).map_err(|e| e.to_string());
    let config = parse("defaults:\n  histogram:\n    classic_in_protobuf: true\n")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(config.histogram.native, "native keeps its default");
    assert!(config.histogram.classic_in_protobuf);
    let config =
        parse("defaults:\n  histogram:\n    native: false\n    classic_in_protobuf: false\n")
            .unwrap_or_else(|e| panic!("{e}"));
    assert!(!config.histogram.native);
    assert!(!config.histogram.classic_in_protobuf);
    assert_eq!(
        parse("defaults:\n  histogram:\n    classic_in_protobuf: 3\n").err(),
        Some("h.yml:3: defaults.histogram.classic_in_protobuf: expected boolean".to_owned())
    );
    assert_eq!(
        parse("defaults:\n  histogram:\n    classic_in_proto: true\n").err(),
        Some("h.yml:3: defaults.histogram.classic_in_proto: unknown key (known keys here: buckets, jitter_buckets, native, classic_in_protobuf)".to_owned())
    );
    // Each layout is its own: setting one leaves the other at its default.
    let config = parse("defaults:\n  histogram:\n    jitter_buckets: [0.0005, 0.002]\n")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.histogram.jitter_buckets, [0.0005, 0.002]);
    assert_eq!(
        config.histogram.buckets,
        config::HistogramConfig::default().buckets
    );
}

#[test]
fn metrics_block_overrides_the_defaults_per_target() {
    let config = parse_ok(
        "defaults:\n  metrics: {window_gauges: true}\ntargets:\n  - host: 192.0.2.1\n  - host: 192.0.2.2\n    metrics: {window_gauges: false}\n  - host: 192.0.2.3\n    metrics: {}\n",
    );
    let on: Vec<bool> = config
        .targets
        .iter()
        .map(|t| t.options.metrics.window_gauges)
        .collect();
    assert_eq!(on, [true, false, true]);
    assert!(config.defaults.metrics.window_gauges);
    let t = one_target("targets:\n  - host: 192.0.2.1\n    metrics: {window_gauges: true}\n");
    assert!(t.options.metrics.window_gauges);
    // Turning the gauges on or off changes the target, so a reload restarts it with them.
    let off = parse_ok("targets:\n  - host: 192.0.2.1\n");
    let on = parse_ok("targets:\n  - host: 192.0.2.1\n    metrics: {window_gauges: true}\n");
    let diff = diff_targets(&off.targets, &on.targets);
    assert_eq!(diff.changed.len(), 1, "{diff:?}");
}

#[test]
fn yaml_anchors_and_merge_keys_work() {
    let src = "targets:\n  - &base\n    host: a.example.org\n    interval: 2s\n  - <<: *base\n    host: b.example.org\n";
    let config = parse_ok(src);
    let got: Vec<(&str, Duration)> = config
        .targets
        .iter()
        .map(|t| (&*t.name, t.options.interval))
        .collect();
    assert_eq!(
        got,
        [
            ("a.example.org", Duration::from_secs(2)),
            ("b.example.org", Duration::from_secs(2))
        ]
    );
}

proptest::proptest! {
    #[test]
    fn arbitrary_text_never_panics(src in "[a-z:\\-\\[\\]{} \n\t0-9.\"'#&*,éß]{0,160}") {
        let _ = parse_str(&src, "p.yml", Path::new(""));
    }
}

const LINE_POOL: &[&str] = &[
    "defaults:",
    "  interval: 1s",
    "  size: big",
    "  bogus: 1",
    "  timeout: 5m",
    "targets:",
    "  - host: 192.0.2.1",
    "    ttl: x",
    "    colour: 1",
    "    name: gw",
    "  - {host: a.example.org, size: [1]}",
    "    labels: {a: 1, __b: 2}",
    "  - colour: red",
    "dns: {servers: [\"1.2.3\"], refersh: 1}",
    "sessions: {max_active: -1}",
    "access:",
    "  deny: [bad, 192.0.2.0/24]",
];

proptest::proptest! {
    #[test]
    fn broken_configs_always_yield_issues_or_a_config(picks in proptest::collection::vec(0..LINE_POOL.len(), 0..14)) {
        let src: String = picks.iter().map(|&i| format!("{}\n", LINE_POOL[i])).collect();
        match parse_str(&src, "p.yml", Path::new("")) {
            Ok(config) => proptest::prop_assert!(config.probe_profiles.contains_key("default")),
            Err(e) => proptest::prop_assert!(!e.issues.is_empty()),
        }
    }
}

#[test]
fn target_file_globs_follow_the_config_folder_taken_literally() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let dir = tmp.path().join("site[1]");
    std::fs::create_dir_all(dir.join("targets")).unwrap_or_else(|e| panic!("mkdir: {e}"));
    let write = |p: PathBuf, s: &str| {
        std::fs::write(&p, s).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    write(
        dir.join("pingscope.yml"),
        "target_files: [targets/*.yml]\nsessions: {database: db/x.db}\n",
    );
    write(dir.join("targets/a.yml"), "- targets: [192.0.2.30]\n");
    let config = load_file(&dir.join("pingscope.yml")).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = config.targets.iter().map(|t| &*t.name).collect();
    assert_eq!(names, ["192.0.2.30"]);
    assert_eq!(config.sessions.database, dir.join("db/x.db"));
    // Editing a target file and loading again is how a reload picks it up.
    write(
        dir.join("targets/a.yml"),
        "- targets: [192.0.2.30, 192.0.2.31]\n",
    );
    let again = load_file(&dir.join("pingscope.yml")).unwrap_or_else(|e| panic!("{e}"));
    let diff = diff_targets(&config.targets, &again.targets);
    assert_eq!(diff.added.len(), 1);
    assert_eq!(diff.unchanged.len(), 1);
}

#[test]
fn targets_serialize_with_config_style_durations() {
    let t =
        one_target("targets:\n  - host: 192.0.2.1\n    interval: 1m30s\n    labels: {site: ams}\n");
    let json = serde_json::to_value(&t).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(json["interval"], "1m30s");
    assert_eq!(json["timeout"], "2s");
    assert_eq!(json["family"], "auto");
    assert_eq!(json["labels"]["site"], "ams");
}

#[test]
fn access_never_allows_the_unspecified_address() {
    // The default allows everything; 0.0.0.0 and :: still reach this host, so they stay denied.
    let config = parse_ok("access:\n  allow: [0.0.0.0/0, ::/0]\n");
    for addr in ["0.0.0.0", "::", "::ffff:0.0.0.0"] {
        assert_eq!(
            config.access.check(ip(addr)),
            Err(Denied::Unspecified),
            "{addr}"
        );
    }
    assert_eq!(config.access.check(ip("192.0.2.1")), Ok(()));
}

#[test]
fn outage_and_alert_keys_override_the_defaults_one_by_one() {
    use pingscope::config::{AlertThresholds, OutageRule};
    let yaml = "defaults:\n  outage: {after: 5}\n  alert: {loss: 0.1, for: 30s}\n\
                targets:\n  - host: 127.0.0.1\n    outage: {until: 2}\n    alert: {rtt: 100ms}\n\
                \x20 - host: 127.0.0.2\n    alert: {loss: 0.01, for: 0s}\n";
    let config = parse_ok(yaml);
    let (a, b) = (&config.targets[0], &config.targets[1]);
    assert_eq!(a.options.outage, OutageRule { after: 5, until: 2 });
    assert_eq!(b.options.outage, OutageRule { after: 5, until: 3 });
    assert_eq!(
        a.options.alert,
        AlertThresholds {
            loss: Some(0.1),
            rtt: Some(Duration::from_millis(100)),
            for_: Some(Duration::from_secs(30)),
        }
    );
    assert_eq!(b.options.alert.loss, Some(0.01));
    assert_eq!(b.options.alert.for_or_default(), Duration::ZERO);
    // Without any `alert:` a target has no thresholds, and an outage after 3 lost, until 3 replies.
    let t = one_target("targets:\n  - host: 127.0.0.1\n");
    assert!(!t.options.alert.any());
    assert_eq!(t.options.outage, OutageRule { after: 3, until: 3 });
}

// --- mesh: (issue 19) ---

const MESH_FIXTURES: &str = "tests/fixtures/config/mesh";

/// Every `mesh/invalid-*.yml` fixture with its exact lines (after the `MESH_FIXTURES/` prefix).
const MESH_REJECTIONS: &[(&str, &[&str])] = &[
    (
        "invalid-mesh-values.yml",
        &[
            "invalid-mesh-values.yml:4: mesh.peers: give exactly one of dns (a name whose addresses are the peers) or static (a list of peers)",
            "invalid-mesh-values.yml:5: mesh.max_peers: max_peers must be at least 1, got 0",
            "invalid-mesh-values.yml:6: mesh.name: name must not be empty (leave it out to use the hostname)",
            "invalid-mesh-values.yml:7: mesh.web_port: port must be between 1 and 65535, got 0",
            "invalid-mesh-values.yml:8: mesh.web_timeout: web_timeout 1m is longer than the page may wait (at most 30s)",
        ],
    ),
    (
        "invalid-mesh-static.yml",
        &[
            "invalid-mesh-static.yml:8: mesh.peers.static[1]: \"bad host!\" is not a host name or IP address",
            "invalid-mesh-static.yml:9: mesh.peers.static[2]: duplicate target name \"gw\" (first at tests/fixtures/config/mesh/invalid-mesh-static.yml:2)",
            "invalid-mesh-static.yml:10: mesh.peers.static[3]: duplicate target name \"192.0.2.2\" (first at tests/fixtures/config/mesh/invalid-mesh-static.yml:7)",
        ],
    ),
    (
        "invalid-mesh-static-empty.yml",
        &["invalid-mesh-static-empty.yml:3: mesh.peers.static: at least one peer is needed"],
    ),
    (
        "invalid-mesh-no-peers.yml",
        &[
            "invalid-mesh-no-peers.yml:2: mesh.peers: required key is missing",
            "invalid-mesh-no-peers.yml:3: mesh.web_timeout: invalid duration \"soon\": expected a number before \"soon\"",
        ],
    ),
    (
        "invalid-mesh-dns-address.yml",
        &[
            "invalid-mesh-dns-address.yml:2: mesh.peers.dns: \"192.0.2.9\" is an address; dns takes a name (list addresses under static)",
        ],
    ),
    (
        "invalid-mesh-dns-name.yml",
        &[
            "invalid-mesh-dns-name.yml:3: mesh.peers.dns: \"http://pingscope.example/\" is not a DNS name",
            "invalid-mesh-dns-name.yml:4: mesh.max_peers: expected an integer",
        ],
    ),
    (
        "invalid-mesh-unknown-key.yml",
        &[
            "invalid-mesh-unknown-key.yml:4: mesh.peers.srv: unknown key (known keys here: dns, static)",
            "invalid-mesh-unknown-key.yml:5: mesh.maxpeers: unknown key (known keys here: peers, max_peers, name, web_port, web_timeout)",
        ],
    ),
];

#[test]
fn every_mesh_rejection_has_its_fixture_and_exact_message() {
    assert_rejections(MESH_FIXTURES, MESH_REJECTIONS);
    let listed: BTreeSet<String> = MESH_REJECTIONS
        .iter()
        .map(|(name, _)| name.to_string())
        .collect();
    assert_eq!(invalid_fixtures(MESH_FIXTURES), listed);
}

#[test]
fn a_mesh_block_takes_its_defaults_and_leaves_the_targets_alone() {
    use pingscope::config::{MeshConfig, MeshPeers};
    let c = load_file(&Path::new(MESH_FIXTURES).join("valid-mesh-dns.yml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(c.targets.is_empty());
    assert_eq!(c.defaults.interval, Duration::from_millis(500));
    assert_eq!(
        c.mesh,
        Some(MeshConfig {
            peers: MeshPeers::Dns("pingscope-mesh.monitoring.svc.cluster.local".into()),
            max_peers: Some(3),
            name: None,
            web_port: pingscope::DEFAULT_PORT,
            web_timeout: Duration::from_secs(2),
        })
    );
    let c = parse_ok(
        "mesh:\n  name: a\n  web_port: 9999\n  web_timeout: 500ms\n  peers:\n    static: [192.0.2.1, b.example]\n",
    );
    let m = c.mesh.unwrap_or_else(|| panic!("a mesh block"));
    assert_eq!(
        m.peers,
        MeshPeers::Static(vec!["192.0.2.1".into(), "b.example".into()])
    );
    assert_eq!(
        (m.name.as_deref(), m.max_peers, m.web_port, m.web_timeout),
        (Some("a"), None, 9999, Duration::from_millis(500))
    );
    assert_eq!(parse_ok("targets: []\n").mesh, None);
}

#[test]
fn capture_keys_override_the_defaults_one_by_one() {
    let yaml = "defaults:\n  alert: {loss: 0.1}\n  capture: {on_loss: true, rounds: 5}\n\
                targets:\n  - host: 127.0.0.1\n    capture: {every: 1h, on_outage: false}\n\
                \x20 - host: 127.0.0.2\n    capture: {on_loss: false, rounds: 60}\n\
                sessions: {max_captures_per_minute: 0}\n";
    let config = parse_ok(yaml);
    let (a, b) = (
        &config.targets[0].options.capture,
        &config.targets[1].options.capture,
    );
    assert_eq!(
        (a.on_outage, a.on_loss, a.rounds, a.every),
        (false, true, 5, Duration::from_secs(3600))
    );
    assert_eq!(
        (b.on_outage, b.on_loss, b.rounds, b.every),
        (true, false, 60, Duration::from_secs(600))
    );
    assert_eq!(config.sessions.max_captures_per_minute, 0);
    // on_loss with the target's own loss threshold; and the bounds themselves are accepted.
    let t = one_target(
        "targets:\n  - host: 127.0.0.1\n    alert: {loss: 0}\n    capture: {on_loss: true, rounds: 1, every: 24h}\n",
    );
    assert!(t.options.capture.on_loss);
    assert_eq!(
        (t.options.capture.rounds, t.options.capture.every),
        (1, Duration::from_secs(86_400))
    );
}
