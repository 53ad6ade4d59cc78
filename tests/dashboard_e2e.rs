//! The Grafana dashboard against the real daemon (issue 6, end to end): a real Prometheus
//! scrapes `pingscope serve` monitoring test-network addresses with known profiles, then
//! every panel query of grafana/dashboards/pingscope.json returns data, and the loss and RTT
//! panels agree with the profiles (the loss of ICMP, TCP and UDP echo monitors alike). Run
//! once with classic and once with native histograms (two Prometheus servers on the same
//! daemon, at the same time).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

mod prom;
mod support;

use std::time::{Duration, Instant};

use prom::{
    PanelQuery, Prometheus, dashboard_queries, sample_value, shipped_dashboard, shipped_queries,
};
use serde_json::json;
use support::daemon::Daemon;
use support::daemon::SESSIONS;
use support::{TestNet, binomial_interval};

/// How long Prometheus scrapes before the panels are read.
const RUN: Duration = Duration::from_secs(20);

const CONFIG: &str = r#"
defaults:
  interval: 100ms
  timeout: 500ms
targets:
  # The one target with window gauges: the min–max band reads them for it, bucket bounds for
  # the others.
  - {name: lossy, host: 198.18.0.30, metrics: {window_gauges: true}}
  - {name: steady, host: "2001:db8::20"}
  - {name: refused, host: 198.18.0.60}
  - {name: late, host: 198.18.0.80, timeout: 100ms}
  # TCP and UDP monitors: an open and a refused port (the refusals panel), a closed UDP port.
  - {name: web, host: 198.18.0.40, kind: tcp, port: 443}
  - {name: web-closed, host: 198.18.0.40, kind: tcp, port: 81}
  - {name: dns-udp, host: 198.18.0.40, kind: udp, port: 53}
  # TCP and UDP echo through a 20 % loss profile: the loss expression counts their losses.
  - {name: web-lossy, host: 198.18.0.41, kind: tcp, port: 443}
  - {name: echo-lossy, host: "2001:db8::41", kind: udp, port: 7, udp: {mode: echo}}
  # 198.18.0.99 is not an address of this namespace: every send fails locally (no packet
  # leaves), which is what the send-error series of the errors panel is for.
  - {name: nosource, host: 198.18.0.90, source: 198.18.0.99}
  # The test's DNS server answers NXDOMAIN: every lookup fails, which is what the DNS
  # failures panel is for.
  - {name: unknown, host: nowhere.pingscope.test}
  # A path monitor through two hops, for the path row.
  - {name: route, host: 198.18.0.9, kind: path, interval: 500ms, path: {max_ttl: 6}}
# Mesh mode with one static peer (the steady host), for the mesh matrices (source × target).
mesh: {name: e2e, peers: {static: ["2001:db8::20"]}}
"#;

fn find<'a>(queries: &'a [PanelQuery], title: &str, ref_id: &str) -> &'a PanelQuery {
    queries
        .iter()
        .find(|q| q.title == title && q.ref_id == ref_id)
        .unwrap_or_else(|| panic!("no query {title:?} {ref_id}"))
}

/// The value of the series of `target` in the result of `expr`.
fn of_target(p: &Prometheus, expr: &str, target: &str) -> f64 {
    let rows = p.query_result(expr);
    let row = rows
        .iter()
        .find(|r| r["metric"]["target"] == target)
        .unwrap_or_else(|| panic!("no series of {target} in {expr}: {rows:?}"));
    sample_value(row).unwrap_or_else(|| panic!("no value: {row}"))
}

fn single(p: &Prometheus, expr: &str) -> f64 {
    let rows = p.query_result(expr);
    assert_eq!(rows.len(), 1, "{expr}: {rows:?}");
    sample_value(&rows[0]).unwrap_or_else(|| panic!("no value: {rows:?}"))
}

#[test]
fn every_panel_has_data_and_agrees_with_the_profiles() {
    if !support::require_root()
        || !support::require(
            Prometheus::available(),
            &format!(
                "no Prometheus binary ({})",
                prom::prometheus_bin().display()
            ),
        )
    {
        return;
    }
    let net = TestNet::start(&json!({"seed": 11, "hosts": {
        "198.18.0.30": {"delay": "8ms", "loss": 0.2},
        "2001:db8::20": {"delay": "20ms"},
        "198.18.0.60": {"unreachable": 1},
        "198.18.0.80": {"delay": "300ms"},
        "198.18.0.9": {"delay": "1ms", "path": {"hops": [
            {"addr": "198.18.10.1", "delay": "1ms"},
            {"addr": "198.18.10.2", "delay": "1ms"}
        ]}},
        "198.18.0.40": {"delay": "5ms", "tcp": {"ports": {"443": "open"}}},
        "198.18.0.41": {"delay": "5ms", "loss": 0.2, "tcp": {"ports": {"443": "open"}}},
        "2001:db8::41": {"delay": "5ms", "loss": 0.2, "udp": {"ports": {"7": "echo"}}}
    }}));
    net.enter();
    let server = support::dns::DnsServer::start();
    let dns = format!(
        "dns: {{servers: ['127.0.0.1:{}'], refresh: 2s}}\n",
        server.addr().port()
    );
    let d = Daemon::serve(net.dir(), &format!("{CONFIG}{dns}{SESSIONS}"));
    let scrape = format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: pingscope\n    static_configs: [{{targets: ['127.0.0.1:{}']}}]\n",
        d.port()
    );
    let classic = Prometheus::start(&scrape, &[]);
    let native = Prometheus::start(&scrape, &[prom::NATIVE_HISTOGRAMS]);
    let started = Instant::now();
    classic.wait_for("pingscope_sent_total", Duration::from_secs(15));
    native.wait_for("pingscope_sent_total", Duration::from_secs(15));
    std::thread::sleep(RUN.saturating_sub(started.elapsed()));
    let slack = net.timing_error().max.as_secs_f64();

    let vars = [
        ("datasource", "prometheus"),
        ("job", "pingscope"),
        ("instance", ".+"),
        ("kind", ".*"),
        ("target", ".+"),
        ("__rate_interval", "10s"),
    ];
    let queries = shipped_queries(&vars);
    for (mode, p) in [("classic", &classic), ("native", &native)] {
        let empty = p.queries_without_data(&queries);
        assert!(
            empty.is_empty(),
            "{mode}: panels without data:\n{}",
            empty.join("\n")
        );

        // Loss over the 5 m overview window: the whole run, for ICMP, TCP and UDP echo alike.
        for target in ["lossy", "web-lossy", "echo-lossy"] {
            let sent = single(
                p,
                &format!("sum(increase(pingscope_sent_total{{target=\"{target}\"}}[5m]))"),
            );
            let n = sent.round() as u32;
            let (lo, hi) = binomial_interval(n, 0.2);
            let (lo, hi) = (f64::from(lo) / sent - 0.02, f64::from(hi) / sent + 0.02);
            let loss = of_target(p, &find(&queries, "Targets overview", "A").expr, target);
            assert!(
                (lo..=hi).contains(&loss),
                "{mode}: {target}'s overview loss {loss}, expected 0.2 in [{lo}, {hi}] of {n}"
            );
        }
        let loss = of_target(p, &find(&queries, "Targets overview", "A").expr, "lossy");
        let panel_loss = of_target(p, &find(&queries, "Packet loss", "A").expr, "lossy");
        assert!(
            (0.0..=0.6).contains(&panel_loss),
            "{mode}: loss panel {panel_loss}"
        );
        assert_eq!(
            of_target(p, &find(&queries, "Targets overview", "A").expr, "steady"),
            0.0
        );
        // `refused` answers every probe with an ICMP error: all lost.
        assert_eq!(
            of_target(p, &find(&queries, "Targets overview", "A").expr, "refused"),
            1.0
        );
        let worst = single(p, &find(&queries, "Worst loss (5m)", "A").expr);
        assert!(
            worst >= loss,
            "{mode}: worst loss {worst} below lossy's {loss}"
        );

        // Median RTT per target: classic buckets put 8 ms and 20 ms inside (5, 10] and
        // (10, 25] ms, native buckets within about 10 %.
        let median_steady = of_target(p, &find(&queries, "Targets overview", "B").expr, "steady");
        let median_lossy = of_target(p, &find(&queries, "Targets overview", "B").expr, "lossy");
        let (steady_range, lossy_range) = if mode == "native" {
            (0.018..=0.0225 + slack, 0.0072..=0.0092 + slack)
        } else {
            (0.010..=0.025, 0.005..=0.010 + slack)
        };
        assert!(
            steady_range.contains(&median_steady),
            "{mode}: steady median {median_steady}"
        );
        assert!(
            lossy_range.contains(&median_lossy),
            "{mode}: lossy median {median_lossy}"
        );
        // The min–max band of the latency panel: the window gauges' exact extremes for lossy
        // (8 ms), the bounds of the buckets holding the extremes for steady (20 ms, no gauges).
        let band = |target: &str| {
            let vars: Vec<(&str, &str)> = vars
                .iter()
                .map(|&(k, v)| if k == "target" { (k, target) } else { (k, v) })
                .collect();
            let queries = dashboard_queries(&shipped_dashboard(), &vars);
            let title = "Latency: median, p5–p95, min–max";
            let [min, median, max] =
                ["D", "A", "E"].map(|r| single(p, &find(&queries, title, r).expr));
            (min, median, max)
        };
        // The gauges give the exact minimum (the bucket bounds below 8 ms would read 5 ms in
        // classic mode, about 7.3 ms in native); a maximum may take a late outlier.
        let (min, _, max) = band("lossy");
        assert!(
            0.008 <= min && min <= 0.008 + slack && min <= max && max < 0.5,
            "{mode}: lossy's min–max band {min}..{max} from the window gauges, 8 ms replies"
        );
        // Without gauges: the lower bound of the bucket holding 20 ms, and an upper bound on
        // the largest RTT (at least the bucket's upper bound in classic mode).
        let (min, median, max) = band("steady");
        let (lowest, highest_min, lowest_max) = if mode == "native" {
            (0.018, 0.020, 0.020)
        } else {
            (0.010, 0.0101, 0.025)
        };
        assert!(
            (lowest..=highest_min).contains(&min)
                && min <= median
                && median <= max
                && (lowest_max..0.5).contains(&max),
            "{mode}: steady's band {min}..{max} (median {median}), 20 ms replies, no gauges"
        );
        let dns_failures = of_target(
            p,
            &find(&queries, "Probe rate and DNS failures", "B").expr,
            "unknown",
        );
        assert!(
            dns_failures > 0.0,
            "{mode}: DNS failure rate {dns_failures}"
        );
        // The overview names each target's kind and port; TCP and UDP replies count.
        let overview = p.query_result(&find(&queries, "Targets overview", "A").expr);
        let web = overview
            .iter()
            .find(|r| r["metric"]["target"] == "web")
            .unwrap_or_else(|| panic!("{mode}: no web in the overview: {overview:?}"));
        assert_eq!(
            (&web["metric"]["kind"], &web["metric"]["port"]),
            (&json!("tcp"), &json!("443")),
            "{mode}: {web}"
        );
        for t in ["web", "web-closed", "dns-udp"] {
            let loss = of_target(p, &find(&queries, "Targets overview", "A").expr, t);
            assert_eq!(loss, 0.0, "{mode}: {t} loss");
        }
        let ttl = of_target(p, &find(&queries, "Targets overview", "E").expr, "steady");
        assert_eq!(ttl, 64.0, "{mode}: reply TTL");
        // The path row: every hop of `route` with its responder, three hops long.
        let hops: std::collections::BTreeSet<(String, String)> = p
            .query_result(&find(&queries, "Path hops", "C").expr)
            .iter()
            .map(|r| {
                let l = &r["metric"];
                (
                    l["ttl"].as_str().unwrap_or_default().to_owned(),
                    l["hop_ip"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let want: std::collections::BTreeSet<(String, String)> = [
            ("1", "198.18.10.1"),
            ("2", "198.18.10.2"),
            ("3", "198.18.0.9"),
        ]
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
        assert_eq!(hops, want, "{mode}: path hops");
        assert_eq!(
            of_target(
                p,
                &find(&queries, "Path length and changes", "A").expr,
                "route"
            ),
            3.0
        );
        // The mesh matrices: one cell, this instance (`source`) to its one peer, no loss and
        // the steady host's RTT.
        for (title, range) in [
            ("Mesh loss (source × target, 5m)", 0.0..=0.0),
            ("Mesh RTT (source × target, 5m)", 0.018..=0.0225 + slack),
        ] {
            let rows = p.query_result(&find(&queries, title, "A").expr);
            assert_eq!(rows.len(), 1, "{mode}: {title}: {rows:?}");
            let m = &rows[0]["metric"];
            assert_eq!(
                (&m["source"], &m["target"]),
                (&json!("e2e"), &json!("2001:db8::20")),
                "{mode}: {title}"
            );
            let v = sample_value(&rows[0]).unwrap_or(f64::NAN);
            assert!(range.contains(&v), "{mode}: {title}: {v}");
        }
    }
}
