//! DNS in `pingscope serve`, against a small DNS server the test starts on 127.0.0.1 inside
//! the test network (never the system resolver): lookup failures at start and later are
//! counted and retried without stopping the daemon or the other targets; an address change
//! retires the old series and updates `pingscope_target_info`; `family: all` monitors every
//! address.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

mod support;

use std::time::Duration;

use serde_json::json;
use support::daemon::Daemon;
use support::daemon::SESSIONS;
use support::dns::DnsServer;
use support::expo::Scrape;
use support::{TestNet, wait_until};

fn config(dns_port: u16, targets: &str) -> String {
    format!(
        "defaults: {{interval: 100ms, timeout: 500ms}}\ndns:\n  servers: ['127.0.0.1:{dns_port}']\n  refresh: 2s\ntargets:\n{targets}{SESSIONS}"
    )
}

/// The test network (answers in 2 ms), entered; a DNS server in it serving `zone`; and the
/// daemon on `targets` (YAML list items), asking that server.
fn start(zone: &[(&str, &[&str])], targets: &str) -> Option<(TestNet, DnsServer, Daemon)> {
    let net = TestNet::start_and_enter(&json!({"default": {"delay": "2ms"}}))?;
    let dns = DnsServer::with(zone);
    let d = Daemon::serve(net.dir(), &config(dns.addr().port(), targets));
    Some((net, dns, d))
}

fn wait_scrape(d: &Daemon, what: &str, cond: impl Fn(&Scrape) -> bool) -> Scrape {
    d.scrape_until(Duration::from_secs(15), what, cond)
}

fn value(s: &Scrape, name: &str, target: &str) -> f64 {
    s.get(name, &[("target", target)]).unwrap_or(0.0)
}

#[test]
fn lookup_failures_never_stop_the_daemon() {
    // broken.pingscope.test: NXDOMAIN at start.
    let Some((_net, dns, d)) = start(
        &[("flaky.pingscope.test", &["198.18.0.27"])],
        "  - {name: good, host: 198.18.0.20}\n  - {name: broken, host: broken.pingscope.test}\n  - {name: flaky, host: flaky.pingscope.test}\n",
    ) else {
        return;
    };
    assert!(
        wait_until(Duration::from_secs(10), || d.get("/-/ready").0 == 200),
        "a name that does not resolve kept the daemon from being ready"
    );
    let s = wait_scrape(&d, "resolve errors of broken rising", |s| {
        value(s, "pingscope_resolve_errors_total", "broken") >= 2.0
            && value(s, "pingscope_sent_total", "flaky") >= 5.0
    });
    assert!(
        s.find("pingscope_sent_total", &[("target", "broken")])
            .is_empty()
    );
    // A name that resolves has its counter, at zero, from the start (not only after a failure);
    // a literal address never asks DNS and has none.
    for (t, want) in [("flaky", Some(0.0)), ("good", None)] {
        let got = s.get("pingscope_resolve_errors_total", &[("target", t)]);
        assert_eq!(got, want, "{t}");
    }
    assert_eq!(value(&s, "pingscope_resolve_errors_total", "flaky"), 0.0);
    let unresolved = d.targets()["unresolved"].clone();
    assert_eq!(unresolved[0]["target"], "broken", "{unresolved}");

    // Later: flaky's name loses its address (NODATA). Counted, retried, and its last known
    // address goes on being probed, as do the others.
    dns.set("flaky.pingscope.test", &[]);
    let before = s;
    // Within the wait: flaky's failures are counted, broken's lookups are retried (its
    // error count rises), and good and flaky go on being probed.
    let rose = |s: &Scrape, m: &str, t: &str, by: f64| value(s, m, t) > value(&before, m, t) + by;
    wait_scrape(
        &d,
        "flaky's errors counted, broken retried, good and flaky still probed",
        |s| {
            value(s, "pingscope_resolve_errors_total", "flaky") >= 2.0
                && rose(s, "pingscope_resolve_errors_total", "broken", 0.0)
                && rose(s, "pingscope_sent_total", "good", 5.0)
                && rose(s, "pingscope_sent_total", "flaky", 5.0)
        },
    );

    // The broken name comes to life: monitored from the next lookup on.
    dns.set("broken.pingscope.test", &["198.18.0.28"]);
    wait_scrape(&d, "broken resolved", |s| {
        s.get(
            "pingscope_sent_total",
            &[("target", "broken"), ("ip", "198.18.0.28")],
        )
        .is_some_and(|v| v >= 3.0)
    });
    assert!(matches!(d.try_get("/-/healthy"), Some((200, _, _))));
}

#[test]
fn address_change_and_family_all() {
    let Some((_net, dns, d)) = start(
        &[
            ("moving.pingscope.test", &["198.18.0.41"]),
            (
                "both.pingscope.test",
                &["198.18.0.43", "198.18.0.44", "2001:db8::43"],
            ),
        ],
        "  - {name: moving, host: moving.pingscope.test}\n  - {name: both, host: both.pingscope.test, family: all}\n",
    ) else {
        return;
    };
    let both = ["198.18.0.43", "198.18.0.44", "2001:db8::43"];
    let s = wait_scrape(&d, "every address of both probed", |s| {
        both.iter().all(|ip| {
            s.get("pingscope_sent_total", &[("target", "both"), ("ip", ip)])
                .is_some_and(|v| v >= 3.0)
        }) && value(s, "pingscope_sent_total", "moving") >= 3.0
    });
    assert_eq!(
        s.label_values("pingscope_sent_total", "ip").len(),
        4,
        "{:?}",
        s.label_values("pingscope_sent_total", "ip")
    );
    for ip in both {
        let fam = if ip.contains(':') { "ip6" } else { "ip4" };
        assert_eq!(
            s.value(
                "pingscope_target_info",
                &[
                    ("target", "both"),
                    ("ip", ip),
                    ("family", fam),
                    ("host", "both.pingscope.test")
                ]
            ),
            1.0
        );
        assert!(
            s.value(
                "pingscope_rtt_seconds_count",
                &[("target", "both"), ("ip", ip)]
            ) >= 1.0
        );
    }
    assert_eq!(
        s.value(
            "pingscope_target_info",
            &[("target", "moving"), ("ip", "198.18.0.41")]
        ),
        1.0
    );

    // The record changes: after its 1 s TTL the old address is retired, the new one probed.
    dns.set("moving.pingscope.test", &["198.18.0.42"]);
    dns.set("both.pingscope.test", &["198.18.0.43", "2001:db8::43"]);
    let s = wait_scrape(&d, "moving's new address", |s| {
        s.get(
            "pingscope_sent_total",
            &[("target", "moving"), ("ip", "198.18.0.42")],
        )
        .is_some_and(|v| v >= 2.0)
            && s.find("pingscope_sent_total", &[("ip", "198.18.0.44")])
                .is_empty()
    });
    let old: Vec<_> = s
        .samples
        .iter()
        .filter(|x| {
            x.labels
                .get("ip")
                .is_some_and(|ip| ip == "198.18.0.41" || ip == "198.18.0.44")
        })
        .collect();
    assert!(old.is_empty(), "retired addresses keep series: {old:?}");
    let info = s.find("pingscope_target_info", &[("target", "moving")]);
    assert_eq!(info.len(), 1, "{info:?}");
    assert_eq!(info[0].labels["ip"], "198.18.0.42");
    assert_eq!(
        s.find("pingscope_target_info", &[("target", "both")]).len(),
        2
    );
}
