//! `/probe` end to end (issue 4): the real daemon binary, inside a test network, probing
//! addresses whose behaviour the responder's profiles decide, checked against the responder's
//! own log.
//!
//! Each test starts a [`TestNet`], moves its own thread into the namespace (`enter`), then starts
//! the daemon (and, where needed, a DNS server on the namespace's loopback) from that thread, so
//! everything lives in the namespace: its only interfaces are `lo` and the test device.
// Tests block their own thread (no runtime there), so std::thread::sleep is right here.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::print_stderr,
    clippy::disallowed_methods
)]

mod support;

use std::net::IpAddr;
use std::time::Duration;

use support::TestNet;
use support::api::{Answer, TEST_RANGES, probe_config as config};
use support::burst;
use support::daemon::Daemon;
use support::dns::DnsServer;

/// Responder log entries for `dst`.
fn log_for(net: &TestNet, dst: &str) -> Vec<support::LogEntry> {
    let dst: IpAddr = dst.parse().expect("a literal");
    net.log().into_iter().filter(|e| e.dst == dst).collect()
}

/// Waits (bounded) until the responder logged `n` requests to `dst`, and returns them.
fn wait_log_for(net: &TestNet, dst: &str, n: usize) -> Vec<support::LogEntry> {
    let mut entries = Vec::new();
    support::wait_until(Duration::from_secs(3), || {
        entries = log_for(net, dst);
        entries.len() >= n
    });
    entries
}

/// The test network of the tests that need nothing but answers, entered.
fn answering_net() -> Option<TestNet> {
    TestNet::start_and_enter(&serde_json::json!({"default": {"delay": "1ms"}}))
}

fn ok(a: &Answer) {
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        a.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        a.content_type
    );
}

#[test]
fn ten_packets_at_twenty_percent_loss_match_the_responder() {
    let Some(net) = TestNet::start_and_enter(&serde_json::json!({
        "seed": 11,
        "hosts": {
            "198.18.0.30": {"loss": 0.2, "delay": "20ms", "ttl": 50},
            "198.18.0.31": {"delay": "20ms", "jitter": "5ms"},
            "2001:db8::30": {"delay": "5ms", "ttl": 40}
        }
    })) else {
        return;
    };
    let d = Daemon::serve(net.dir(), &config(TEST_RANGES, None));

    let a = d.probe(&[
        ("target", "198.18.0.30"),
        ("count", "10"),
        ("interval", "20ms"),
        ("timeout", "500ms"),
    ]);
    ok(&a);
    let log = wait_log_for(&net, "198.18.0.30", 10);
    assert_eq!(log.len(), 10, "requests the responder saw: {log:?}");
    let replied = log.iter().filter(|e| e.action == "replied").count() as f64;
    let dropped = log.iter().filter(|e| e.action == "dropped").count() as f64;
    assert_eq!(replied + dropped, 10.0, "{log:?}");
    // Seed 11 drops some of these ten (the dice are fixed per address), so loss is exercised.
    assert!(dropped >= 1.0, "{log:?}");
    assert_eq!(a.must("probe_packets_sent"), 10.0);
    assert_eq!(a.must("probe_packets_received"), replied, "{}", a.body);
    assert!(
        (a.must("probe_loss_ratio") - dropped / 10.0).abs() < 1e-9,
        "{}",
        a.body
    );
    assert_eq!(a.must("probe_success"), 1.0);
    assert_eq!(a.must("probe_ip_protocol"), 4.0);
    assert_eq!(a.must("probe_icmp_reply_hop_limit"), 50.0);
    let dns = a.must("probe_dns_lookup_time_seconds");
    assert!((0.0..0.1).contains(&dns), "a literal needs no DNS: {dns}");
    let duration = a.must("probe_duration_seconds");
    assert!(
        duration >= 0.18 && duration <= a.elapsed.as_secs_f64(),
        "{duration} vs {:?}",
        a.elapsed
    );

    // RTT statistics: the profile delay, within the responder's measured send error + 1 ms.
    let err = net.timing_error();
    let delay = 0.020;
    let upper = delay + err.max.as_secs_f64() + 0.001;
    let (min, mean, max) = (
        a.must("probe_rtt_seconds{stat=\"min\"}"),
        a.must("probe_rtt_seconds{stat=\"mean\"}"),
        a.must("probe_rtt_seconds{stat=\"max\"}"),
    );
    assert!(
        delay <= min && min <= mean && mean <= max && max <= upper,
        "min {min} mean {mean} max {max}, bound {upper} ({err:?})"
    );
    assert!(a.must("probe_rtt_seconds{stat=\"stddev\"}") <= upper - delay);
    assert!(a.must("probe_jitter_seconds") <= upper - delay);

    // 20 ms ± 5 ms jitter: RTTs inside the band, and a visible jitter figure.
    let j = d.probe(&[
        ("target", "198.18.0.31"),
        ("count", "10"),
        ("interval", "20ms"),
        ("timeout", "500ms"),
    ]);
    ok(&j);
    assert_eq!(j.must("probe_packets_received"), 10.0, "{}", j.body);
    let err = net.timing_error();
    let (jmin, jmax) = (
        j.must("probe_rtt_seconds{stat=\"min\"}"),
        j.must("probe_rtt_seconds{stat=\"max\"}"),
    );
    assert!(
        jmin >= 0.015 - support::ARRIVAL_LEAD.as_secs_f64()
            && jmax <= 0.025 + err.max.as_secs_f64() + 0.001,
        "{jmin}..{jmax}"
    );
    let jitter = j.must("probe_jitter_seconds");
    assert!(
        jitter > 0.0005 && jitter <= 0.010 + err.max.as_secs_f64() + 0.001,
        "jitter {jitter}"
    );
    assert!(j.must("probe_rtt_seconds{stat=\"stddev\"}") > 0.0005);

    // IPv6: protocol 6 and the profile's hop limit.
    let v6 = d.probe(&[
        ("target", "2001:db8::30"),
        ("count", "3"),
        ("interval", "20ms"),
        ("timeout", "500ms"),
    ]);
    ok(&v6);
    assert_eq!(v6.must("probe_ip_protocol"), 6.0);
    assert_eq!(v6.must("probe_icmp_reply_hop_limit"), 40.0);
    assert_eq!(v6.must("probe_packets_received"), 3.0);
    assert_eq!(wait_log_for(&net, "2001:db8::30", 3).len(), 3);
    assert!(v6.must("probe_rtt_seconds{stat=\"min\"}") >= 0.005);
}

#[test]
fn failed_probes_modules_and_debug() {
    let Some(net) = TestNet::start_and_enter(&serde_json::json!({
        "hosts": {
            "198.18.0.60": {"unreachable": 1},
            "198.18.0.70": {"blackhole": true},
            "198.18.0.20": {"delay": "2ms"}
        }
    })) else {
        return;
    };
    let dns = DnsServer::start();
    let d = Daemon::serve(net.dir(), &config(TEST_RANGES, Some(dns.addr())));
    let fast = [("count", "3"), ("interval", "20ms"), ("timeout", "200ms")];

    for target in ["198.18.0.70", "198.18.0.60"] {
        let mut q = vec![("target", target)];
        q.extend(fast);
        let a = d.probe(&q);
        ok(&a);
        assert_eq!(a.must("probe_success"), 0.0, "{target}: {}", a.body);
        assert_eq!(a.must("probe_packets_sent"), 3.0, "{target}");
        assert_eq!(a.must("probe_packets_received"), 0.0, "{target}");
        assert_eq!(a.must("probe_loss_ratio"), 1.0, "{target}");
        assert_eq!(
            a.metric("probe_rtt_seconds{stat=\"min\"}"),
            None,
            "{target}: no RTT without replies"
        );
        let actions: Vec<String> = wait_log_for(&net, target, 3)
            .into_iter()
            .map(|e| e.action)
            .collect();
        let want = if target == "198.18.0.70" {
            "blackholed"
        } else {
            "unreachable"
        };
        assert_eq!(actions, vec![want; 3], "{target}");
    }

    // A name the DNS server does not know: 200, probe_success 0, nothing sent.
    let a = d.probe(&[("target", "nowhere.test")]);
    ok(&a);
    assert_eq!(
        (a.must("probe_success"), a.must("probe_packets_sent")),
        (0.0, 0.0),
        "{}",
        a.body
    );
    assert_eq!(a.must("probe_ip_protocol"), 0.0);
    assert!(dns.queries() >= 1, "the test DNS server was not asked");
    assert!(
        a.elapsed < Duration::from_secs(2),
        "NXDOMAIN took {:?}",
        a.elapsed
    );

    // module= picks the profile (3 packets) unless the query overrides it.
    let before = log_for(&net, "198.18.0.20").len();
    let m = d.probe(&[("target", "198.18.0.20"), ("module", "three")]);
    ok(&m);
    assert_eq!(m.must("probe_packets_sent"), 3.0, "{}", m.body);
    assert_eq!(m.must("probe_packets_received"), 3.0);
    assert_eq!(
        wait_log_for(&net, "198.18.0.20", before + 3).len(),
        before + 3
    );
    let m2 = d.probe(&[
        ("target", "198.18.0.20"),
        ("module", "three"),
        ("count", "4"),
    ]);
    assert_eq!(m2.must("probe_packets_sent"), 4.0);

    // debug=true: the probe's log as plain text, each packet and the metrics it would return.
    let before = log_for(&net, "198.18.0.20").len();
    let dbg = d.probe(&[
        ("target", "198.18.0.20"),
        ("module", "three"),
        ("debug", "true"),
    ]);
    assert_eq!(dbg.status, 200);
    assert!(
        dbg.content_type.starts_with("text/plain; charset=utf-8"),
        "{}",
        dbg.content_type
    );
    assert!(
        dbg.body.contains("resolved 198.18.0.20 to 198.18.0.20"),
        "{}",
        dbg.body
    );
    let replies = dbg
        .body
        .lines()
        .filter(|l| l.contains("\"type\":\"reply\""))
        .count();
    assert_eq!(replies, 3, "{}", dbg.body);
    assert!(
        dbg.body.contains("Metrics that would have been returned:"),
        "{}",
        dbg.body
    );
    let exposition = dbg
        .body
        .split("Metrics that would have been returned:")
        .nth(1)
        .unwrap_or_default();
    assert_eq!(
        support::expo::Scrape::parse(exposition).exact("probe_packets_sent"),
        Some(3.0),
        "{}",
        dbg.body
    );
    assert_eq!(
        wait_log_for(&net, "198.18.0.20", before + 3).len(),
        before + 3,
        "debug probes for real"
    );
}

#[test]
fn scrape_timeout_header_cuts_the_probe_short() {
    let Some(net) = answering_net() else {
        return;
    };
    let d = Daemon::serve(net.dir(), &config(TEST_RANGES, None));
    let q = [
        ("target", "198.18.0.9"),
        ("count", "100"),
        ("interval", "100ms"),
        ("timeout", "500ms"),
    ];
    let a = d.probe_with(&q, &[("X-Prometheus-Scrape-Timeout-Seconds", "2")]);
    ok(&a);
    // Budget 2 s - 0.5 s; a probe is only sent if its 500 ms timeout fits: t = 0, 0.1, .. 1.0 s.
    // The daemon's own clock: done by the 1.5 s budget; the client's adds HTTP, under load.
    let took = a.must("probe_duration_seconds");
    assert!((1.0..=1.55).contains(&took), "probe took {took} s");
    assert!(
        a.elapsed <= Duration::from_millis(1_700),
        "answered after {:?}",
        a.elapsed
    );
    let sent = a.must("probe_packets_sent");
    assert!((5.0..=11.0).contains(&sent), "sent {sent}:\n{}", a.body);
    assert_eq!(a.must("probe_packets_received"), sent);
    assert_eq!(
        a.must("probe_loss_ratio"),
        0.0,
        "probes cut short must not count as lost"
    );
    assert_eq!(
        wait_log_for(&net, "198.18.0.9", sent as usize).len(),
        sent as usize
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        log_for(&net, "198.18.0.9").len(),
        sent as usize,
        "nothing sent after the answer"
    );
}

#[test]
fn a_burst_of_500_meets_the_cap_at_once_and_memory_returns() {
    let Some(net) = answering_net() else {
        return;
    };
    let mut d = Daemon::serve(net.dir(), &config(TEST_RANGES, None));
    let slow = [
        ("target", "198.18.0.9"),
        ("count", "5"),
        ("interval", "200ms"),
        ("timeout", "500ms"),
    ];
    // Warm up the code paths the burst uses, then take the baseline.
    for _ in 0..3 {
        ok(&d.probe(&[
            ("target", "198.18.0.9"),
            ("count", "1"),
            ("timeout", "200ms"),
        ]));
    }
    let base = burst::run(&d, &slow, 8);
    assert_eq!(
        base.ok, 8,
        "8 concurrent probes are under the cap: {base:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let rss_before = d.rss_kib();

    let first = burst::run(&d, &slow, 500);
    eprintln!("burst 1: {first:?}");
    first.check(pingscope::state::MAX_CONCURRENT_PROBES);
    assert!(d.alive(), "daemon died:\n{}", d.log());
    std::thread::sleep(Duration::from_secs(1));
    let rss_after = d.rss_kib();

    // The first burst leaves its high-water mark (500 connections' buffers at once, about
    // 8 MiB here) with the allocator; more bursts reuse it. They must not add another burst's
    // worth each: a leak of 8 KiB per request would add 8 MiB over the next two.
    let mut more = Vec::new();
    for i in 2..=3 {
        let b = burst::run(&d, &slow, 500);
        eprintln!("burst {i}: {b:?}");
        b.check(pingscope::state::MAX_CONCURRENT_PROBES);
        more.push(b.ok);
    }
    std::thread::sleep(Duration::from_secs(1));
    let rss_end = d.rss_kib();
    eprintln!(
        "VmRSS before {rss_before} KiB, after one burst {rss_after} KiB, after three {rss_end} KiB"
    );
    assert!(
        rss_after <= rss_before + 16 * 1024,
        "VmRSS {rss_before} KiB -> {rss_after} KiB"
    );
    assert!(
        rss_end <= rss_after + 6 * 1024,
        "VmRSS grew again: {rss_after} KiB -> {rss_end} KiB"
    );

    // Still serving, and every 200 sent its 5 packets.
    ok(&d.probe(&[
        ("target", "198.18.0.9"),
        ("count", "1"),
        ("timeout", "200ms"),
    ]));
    let packets = log_for(&net, "198.18.0.9").len();
    let want = 3 + 5 * (base.ok + first.ok + more.iter().sum::<usize>()) + 1;
    assert_eq!(packets, want, "requests the responder saw");
}

#[test]
fn allowed_ranges_are_probed_by_literal_and_by_name() {
    let Some(net) = answering_net() else {
        return;
    };
    let dns = DnsServer::with(&[("bench.test", &["198.18.0.44"])]);
    let access = r#"  allow: [198.18.0.0/16, 127.0.0.0/8, "::/0"]
  deny: [127.0.0.0/8, "2001:db8:dead::/48"]"#;
    let d = Daemon::serve(net.dir(), &config(access, Some(dns.addr())));
    // Allowed ranges still work, by literal (any spelling) and by name.
    for target in ["198.18.0.44", "0xc612002c", "bench.test", "2001:db8::44"] {
        let a = d.probe(&[
            ("target", target),
            ("count", "2"),
            ("interval", "20ms"),
            ("timeout", "300ms"),
        ]);
        ok(&a);
        assert_eq!(a.must("probe_success"), 1.0, "{target}: {}", a.body);
        assert_eq!(a.must("probe_packets_received"), 2.0, "{target}");
    }
    assert_eq!(wait_log_for(&net, "198.18.0.44", 6).len(), 6);
    assert_eq!(wait_log_for(&net, "2001:db8::44", 2).len(), 2);
}
