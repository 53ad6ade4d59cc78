//! Series per monitored address on a text scrape of `/metrics` (README, "Series per target"):
//! the default config stays within the budget of issue 17 (32) and exposes exactly the count the
//! README's table gives, and each option of that table adds exactly what the table says. The
//! app runs in-process with the fake pinger (no root); every address answers, so the series that
//! appear with the first replies (reply TTL, RFC 3550 jitter, window gauges) are counted too.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pingscope::config::HistogramConfig;
use pingscope::engine::fake::Step;
use support::inproc::InProcess;

/// Most series one address of a default `kind: icmp` monitor may put on a text scrape.
const BUDGET: i64 = 32;

const HOST: &str = "127.0.0.1";

/// The rows of README's "Series per target" table: first column (without backticks) to its
/// figure (`32`, `+5`, `-1`, or `+1 a bound`, read as +1).
fn readme_table() -> BTreeMap<String, i64> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let text = std::fs::read_to_string(path).expect("reading README.md");
    let section = text
        .split("\n### Series per target\n")
        .nth(1)
        .expect("README has a \"Series per target\" section");
    let mut rows = BTreeMap::new();
    for line in section.lines().take_while(|l| !l.starts_with('#')) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // `| config | series | what |`: cells[0] and the last are empty.
        let [_, config, figure, ..] = cells[..] else {
            continue;
        };
        let figure = figure.trim_end_matches(" a bound").replace('−', "-");
        if let Ok(n) = figure.trim_start_matches('+').parse::<i64>() {
            rows.insert(config.trim_matches('`').to_owned(), n);
        }
    }
    rows
}

fn row(table: &BTreeMap<String, i64>, config: &str) -> i64 {
    *table
        .get(config)
        .unwrap_or_else(|| panic!("README's table has no row `{config}`: {table:?}"))
}

/// Counts the series of target `t` (those whose labels carry `target="t"`), by family, once
/// its second reply is in (the RFC 3550 jitter gauge is the last series to appear).
fn series_of_target(yaml_defaults: &str, yaml_target: &str) -> BTreeMap<String, i64> {
    count(&start(yaml_defaults, yaml_target))
}

/// The app monitoring target `t` (127.0.0.1, answering every probe in 3 ms) with these lines
/// added to `defaults:` and to the target.
fn start(yaml_defaults: &str, yaml_target: &str) -> InProcess {
    let config = format!(
        "{}defaults:\n  interval: 50ms\n  timeout: 1s\n{yaml_defaults}targets:\n  - name: t\n    host: {HOST}\n{yaml_target}",
        support::api::base_config(1)
    );
    let d = InProcess::start(&config);
    d.fake.script(
        HOST.parse().unwrap(),
        vec![Step::Reply {
            rtt: Duration::from_millis(3),
            ttl: 60,
        }],
    );
    d
}

fn count(d: &InProcess) -> BTreeMap<String, i64> {
    let c = support::api::client();
    let started = Instant::now();
    loop {
        let body = c
            .get(d.url("/metrics"))
            .send()
            .and_then(|r| r.text())
            .expect("scraping /metrics");
        if body.contains("pingscope_jitter_rfc3550_seconds{target=\"t\"") {
            let mut by_family = BTreeMap::new();
            for line in body.lines().filter(|l| !l.starts_with('#')) {
                let Some((name, rest)) = line.split_once('{') else {
                    continue;
                };
                let labels = rest.split('}').next().unwrap_or_default();
                if labels.split(',').any(|l| l == "target=\"t\"") {
                    let family = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| name.strip_suffix(s))
                        .unwrap_or(name);
                    *by_family.entry(family.to_owned()).or_insert(0) += 1;
                }
            }
            return by_family;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no second reply in 10 s:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn total(by_family: &BTreeMap<String, i64>) -> i64 {
    by_family.values().sum()
}

/// `defaults.histogram` with these classic layouts.
fn histogram(rtt: &[f64], jitter: &[f64]) -> String {
    let list = |b: &[f64]| {
        b.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "  histogram:\n    buckets: [{}]\n    jitter_buckets: [{}]\n",
        list(rtt),
        list(jitter)
    )
}

/// The layouts before issue 17: 16 RTT bounds, the same 16 for jitter.
const OLD_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

#[test]
fn the_default_config_is_within_budget_and_as_documented() {
    let table = readme_table();
    let d = start("", "");
    let by_family = count(&d);
    let n = total(&by_family);
    assert!(n <= BUDGET, "{n} series per address: {by_family:#?}");
    assert_eq!(n, row(&table, "default"), "{by_family:#?}");
    // Every per-address family of the metrics table, each with its layout.
    let h = HistogramConfig::default();
    let want: BTreeMap<String, i64> = [
        ("pingscope_sent_total", 1),
        ("pingscope_lost_total", 1),
        ("pingscope_late_replies_total", 1),
        ("pingscope_duplicates_total", 1),
        ("pingscope_rtt_seconds", h.buckets.len() as i64 + 3),
        (
            "pingscope_jitter_seconds",
            h.jitter_buckets.len() as i64 + 3,
        ),
        ("pingscope_jitter_rfc3550_seconds", 1),
        ("pingscope_reply_ttl", 1),
        ("pingscope_target_info", 1),
        ("pingscope_outage_active", 1),
        ("pingscope_consecutive_lost", 1),
        ("pingscope_outages_total", 1),
        ("pingscope_outage_seconds_total", 1),
        ("pingscope_captures_total", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(by_family, want);
    // The gauges are an exposition choice: the window's figures are in the API all the same.
    let (status, body) = support::api::get_json(&support::api::client(), &d.url("/api/v1/targets"));
    assert_eq!(status, 200, "{body}");
    let t = &body["targets"][0];
    assert_eq!(t["target"], "t", "{body}");
    assert!(t["window_probes"].as_u64() >= Some(2), "{body}");
    let min = t["rtt_ms"]["min"].as_f64().unwrap_or_default();
    assert!(
        (2.9..=3.1).contains(&min),
        "window min RTT {min} ms for 3 ms replies: {body}"
    );
}

#[test]
fn each_option_adds_what_the_readme_says() {
    let table = readme_table();
    let base = total(&series_of_target("", ""));

    let gauges = series_of_target("  metrics: {window_gauges: true}\n", "");
    assert_eq!(
        total(&gauges) - base,
        row(&table, "metrics: {window_gauges: true}"),
        "{gauges:#?}"
    );
    assert_eq!(gauges.get("pingscope_window_loss_ratio"), Some(&1));
    assert_eq!(gauges.get("pingscope_window_rtt_seconds"), Some(&4));
    // Per target too: the target's own block wins over the defaults'.
    let own = series_of_target(
        "  metrics: {window_gauges: true}\n",
        "    metrics: {window_gauges: false}\n",
    );
    assert_eq!(total(&own), base, "{own:#?}");

    // Each bound of a classic layout is one series; the two layouts are separate.
    let h = HistogramConfig::default();
    let per_bound_rtt = row(&table, "histogram: {buckets: [...]}");
    let per_bound_jitter = row(&table, "histogram: {jitter_buckets: [...]}");
    for (rtt, jitter) in [
        (&OLD_BUCKETS[..], &h.jitter_buckets[..]),
        (&h.buckets[..], &OLD_BUCKETS[..]),
        (&[0.01][..], &[0.01][..]),
    ] {
        let got = total(&series_of_target(&histogram(rtt, jitter), ""));
        let added_rtt = rtt.len() as i64 - h.buckets.len() as i64;
        let added_jitter = jitter.len() as i64 - h.jitter_buckets.len() as i64;
        assert_eq!(
            got - base,
            added_rtt * per_bound_rtt + added_jitter * per_bound_jitter,
            "{} RTT and {} jitter bounds",
            rtt.len(),
            jitter.len()
        );
    }

    // The layout before issue 17, one config block away.
    let old = series_of_target(
        &format!(
            "  metrics: {{window_gauges: true}}\n{}",
            histogram(&OLD_BUCKETS, &OLD_BUCKETS)
        ),
        "",
    );
    assert_eq!(
        total(&old),
        row(
            &table,
            "window gauges on, 16 RTT and 16 jitter bounds (the earlier default)"
        ),
        "{old:#?}"
    );

    // What other settings add or take away.
    for (config, defaults, target) in [
        (
            "capture: {on_outage: false}",
            "",
            "    capture: {on_outage: false}\n",
        ),
        ("kind: tcp", "", "    kind: tcp\n    port: 443\n"),
        (
            "alert: {loss: 0.05, rtt: 100ms}",
            "",
            "    alert: {loss: 0.05, rtt: 100ms}\n",
        ),
    ] {
        let got = series_of_target(defaults, target);
        assert_eq!(
            total(&got) - base,
            row(&table, config),
            "{config}: {got:#?}"
        );
    }
}
