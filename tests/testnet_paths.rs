//! The test network's paths: `traceroute` (ICMP and UDP, IPv4 and IPv6) and `ping -t` inside the
//! namespace see exactly the configured hops, their delays, losses, rate limits and silent hops,
//! ECMP branches chosen per flow, and a scheduled path change. See docs/testnet.md, "Paths".
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{LogEntry, TestNet, binomial_interval, hops};

/// One traceroute hop line: each probe's responder and RTT in ms (`None` and NaN for `*`).
type HopRow = Vec<(Option<IpAddr>, f64)>;

/// `traceroute -n ARGS`: the hop lines, and the whole output.
fn traceroute(net: &TestNet, args: &[&str]) -> (Vec<HopRow>, String) {
    let (out, text) = support::run_output(net.command("traceroute").arg("-n").args(args));
    assert!(out.status.success(), "{text}");
    let mut rows = Vec::new();
    for line in text.lines().filter(|l| {
        l.split_whitespace()
            .next()
            .is_some_and(|w| w.parse::<u8>().is_ok())
    }) {
        // " 2  198.18.10.2  3.1 ms  3.0 ms *", and a new address where the responder changed.
        let mut row = Vec::new();
        let mut addr = None;
        let words: Vec<&str> = line.split_whitespace().skip(1).collect();
        for (i, w) in words.iter().enumerate() {
            if let Ok(a) = w.parse::<IpAddr>() {
                addr = Some(a);
            } else if *w == "*" {
                row.push((None, f64::NAN));
            } else if words.get(i + 1) == Some(&"ms") {
                row.push((addr, w.parse().expect("an RTT")));
            }
        }
        rows.push(row);
    }
    (rows, text)
}

/// The one address each hop line shows (panics on `*` or on several).
fn hop_addresses(rows: &[HopRow], text: &str) -> Vec<IpAddr> {
    rows.iter()
        .map(|row| {
            let addrs: BTreeSet<_> = row.iter().map(|(a, _)| *a).collect();
            assert_eq!(addrs.len(), 1, "one responder per hop: {text}");
            addrs
                .into_iter()
                .next()
                .flatten()
                .unwrap_or_else(|| panic!("a hop did not answer: {text}"))
        })
        .collect()
}

fn addrs(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

#[test]
fn traceroute_reports_the_configured_hops_in_order() {
    if !support::require_root() || !support::require_program("traceroute") {
        return;
    }
    let net = TestNet::start(&json!({"hosts": {
        "198.18.0.9": {"delay": "2ms", "path": {"hops": hops("198.18.10.", 4, 3)}},
        "2001:db8::9": {"delay": "2ms", "path": {"hops": hops("2001:db8:10::", 4, 3)}}
    }}));
    let want4 = addrs(&[
        "198.18.10.1",
        "198.18.10.2",
        "198.18.10.3",
        "198.18.10.4",
        "198.18.0.9",
    ]);
    let want6 = addrs(&[
        "2001:db8:10::1",
        "2001:db8:10::2",
        "2001:db8:10::3",
        "2001:db8:10::4",
        "2001:db8::9",
    ]);
    for (mode, dst, want) in [
        ("-I", "198.18.0.9", &want4),
        ("-M", "198.18.0.9", &want4),
        ("-I", "2001:db8::9", &want6),
        ("-M", "2001:db8::9", &want6),
    ] {
        // `-M default`: classic UDP to 33434 and up, answered by port unreachable at the end.
        let mut args = vec![mode];
        if mode == "-M" {
            args.push("default");
        }
        args.extend(["-q", "2", "-w", "2", "-m", "10", dst]);
        let (rows, text) = traceroute(&net, &args);
        eprintln!("{text}");
        assert_eq!(&hop_addresses(&rows, &text), want, "{mode} {dst}: {text}");
        // Cumulative: hop k is k × 3 ms away, the destination 4 × 3 + 2 ms.
        for (k, row) in rows.iter().enumerate() {
            let floor = if k < 4 { 3.0 * (k + 1) as f64 } else { 14.0 };
            for (_, rtt) in row {
                assert!(
                    *rtt >= floor,
                    "hop {}: {rtt} ms < {floor} ms: {text}",
                    k + 1
                );
            }
        }
    }
    let log = net.log();
    let expired: Vec<&LogEntry> = log.iter().filter(|e| e.action == "time_exceeded").collect();
    assert!(expired.len() >= 4 * 4 * 2, "{}", expired.len());
    for e in &expired {
        assert_eq!(
            e.hop,
            Some(e.ttl),
            "expired at the hop its TTL names: {e:?}"
        );
    }
    for proto in ["icmp", "udp"] {
        assert!(log.iter().any(|e| e.proto == proto && e.hop.is_none()));
    }
    assert!(
        log.iter()
            .any(|e| e.proto == "udp" && e.action == "port_unreachable")
    );
}

#[test]
fn silent_and_rate_limited_hops_do_not_hide_the_hops_behind_them() {
    if !support::require_root() || !support::require_program("traceroute") {
        return;
    }
    let net = TestNet::start(&json!({"hosts": {"198.18.0.9": {"path": {"hops": [
        {"addr": "198.18.10.1"},
        {"addr": "198.18.10.2", "silent": true},
        {"addr": "198.18.10.3", "icmp_rate_limit": 0.5},
        {"addr": "198.18.10.4"}
    ]}}}}));
    // Three probes per hop, sent together: the one-token bucket of hop 3 answers one.
    let (rows, text) = traceroute(
        &net,
        &["-I", "-q", "3", "-w", "1", "-m", "10", "198.18.0.9"],
    );
    eprintln!("{text}");
    let answered = |k: usize| rows[k].iter().filter(|(a, _)| a.is_some()).count();
    assert_eq!(rows.len(), 5, "{text}");
    assert_eq!(answered(0), 3, "{text}");
    assert_eq!(answered(1), 0, "silent hop: {text}");
    assert_eq!(answered(2), 1, "rate-limited hop: {text}");
    assert_eq!(answered(3), 3, "the limit does not persist: {text}");
    assert_eq!(rows[4][0].0, Some("198.18.0.9".parse().unwrap()), "{text}");
    let log = net.log();
    let count = |action: &str, hop: u8| {
        log.iter()
            .filter(|e| e.action == action && e.hop == Some(hop))
            .count()
    };
    assert_eq!(count("silent", 2), 3);
    assert_eq!(
        (count("time_exceeded", 3), count("rate_limited", 3)),
        (1, 2)
    );
}

/// `ping -t TTL` output and the responder's log for those requests.
fn ping_ttl(net: &TestNet, ttl: u8, count: u32, dst: &str) -> String {
    let mut ping = net.command("ping");
    ping.args(["-q", "-t", &ttl.to_string(), "-c", &count.to_string()])
        .args(["-i", "0.005", "-W", "1", dst]);
    support::run_output(&mut ping).1
}

#[test]
fn forwarding_loss_persists_to_later_hops_and_the_destination() {
    let mut path = hops("198.18.10.", 3, 0);
    path[1]["loss"] = json!(0.3);
    let profiles = json!({"seed": 11, "hosts": {"198.18.0.9": {"path": {"hops": path}}}});
    let Some(net) = TestNet::start_if_root(&profiles) else {
        return;
    };
    let n = 300;
    let (lo, hi) = binomial_interval(n, 0.3);
    for ttl in [1u8, 3, 64] {
        let before = net.log().len();
        let text = ping_ttl(&net, ttl, n, "198.18.0.9");
        let log = net.wait_log(before + n as usize, Duration::from_secs(5));
        let mine = &log[before..];
        assert_eq!(mine.len(), n as usize, "{text}");
        let lost = mine.iter().filter(|e| e.action == "dropped").count() as u32;
        let answered = mine
            .iter()
            .filter(|e| e.action == "time_exceeded" || e.action == "replied")
            .count() as u32;
        assert_eq!(lost + answered, n, "{text}");
        if ttl == 1 {
            assert_eq!(lost, 0, "loss at hop 2 is not seen at hop 1");
            assert!(
                mine.iter()
                    .all(|e| e.hop_addr == Some("198.18.10.1".parse().unwrap()))
            );
        } else {
            assert!(
                (lo..=hi).contains(&lost),
                "ttl {ttl}: lost {lost} outside [{lo}, {hi}]"
            );
            assert!(
                mine.iter()
                    .filter(|e| e.action == "dropped")
                    .all(|e| e.hop == Some(2))
            );
        }
        if ttl == 64 {
            // ping's own count agrees with the responder's drops.
            let received = text
                .split(',')
                .find(|p| p.contains("received"))
                .and_then(|p| p.split_whitespace().next())
                .and_then(|x| x.parse::<u32>().ok())
                .unwrap_or_else(|| panic!("{text}"));
            assert_eq!(received, n - lost, "{text}");
        }
    }
}

#[test]
fn ecmp_branches_are_chosen_per_flow_and_a_flow_keeps_its_branch() {
    let Some(net) = TestNet::start_and_enter(&json!({"hosts": {"198.18.0.9": {"path": {"hops": [
        {"addr": "198.18.10.1"},
        {"branches": [{"addr": "198.18.11.2", "delay": "1ms"}, {"addr": "198.18.12.2", "delay": "5ms"}]},
        {"addr": "198.18.10.3"}
    ]}}}})) else {
        return;
    };
    // 16 UDP flows (source ports), 4 datagrams each at TTL 2, sequence-like payloads that differ.
    let mut sockets = Vec::new();
    for _ in 0..16 {
        let s = std::net::UdpSocket::bind("198.18.0.1:0").unwrap();
        s.set_ttl(2).unwrap();
        sockets.push(s);
    }
    for round in 0..4u8 {
        for s in &sockets {
            s.send_to(&[round; 20], "198.18.0.9:33434").unwrap();
        }
    }
    let log = net.wait_log(64, Duration::from_secs(3));
    assert_eq!(log.len(), 64);
    let mut branch_of_flow: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
    let mut flows_of_port: BTreeMap<u16, BTreeSet<String>> = BTreeMap::new();
    for e in &log {
        assert_eq!(
            (e.action.as_str(), e.hop),
            ("time_exceeded", Some(2)),
            "{e:?}"
        );
        branch_of_flow
            .entry(e.flow.clone())
            .or_default()
            .insert(e.hop_addr.unwrap());
        flows_of_port
            .entry(e.sport.unwrap())
            .or_default()
            .insert(e.flow.clone());
    }
    assert_eq!(flows_of_port.len(), 16);
    assert!(
        flows_of_port.values().all(|f| f.len() == 1),
        "payload does not change the flow: {flows_of_port:?}"
    );
    assert!(
        branch_of_flow.values().all(|b| b.len() == 1),
        "one flow, one branch: {branch_of_flow:?}"
    );
    let used: BTreeSet<IpAddr> = branch_of_flow.values().flatten().copied().collect();
    assert_eq!(
        used,
        addrs(&["198.18.11.2", "198.18.12.2"]).into_iter().collect(),
        "16 flows over 2 branches use both (each misses one with p = 2^-15)"
    );
    // Each branch's delay is its own.
    for e in &log {
        let want = if e.hop_addr == Some("198.18.11.2".parse().unwrap()) {
            1_000_000
        } else {
            5_000_000
        };
        assert_eq!(e.scheduled_delay_ns, Some(want), "{e:?}");
    }
}

#[test]
fn a_scheduled_path_change_takes_effect_on_time() {
    if !support::require_root() || !support::require_program("traceroute") {
        return;
    }
    let started = Instant::now();
    let net = TestNet::start(&json!({"hosts": {"2001:db8::9": {"path": {
        "hops": hops("2001:db8:10::", 2, 0),
        "change_after": "3s",
        "then": hops("2001:db8:20::", 3, 0)
    }}}}));
    let args = ["-I", "-q", "1", "-w", "1", "-m", "8", "2001:db8::9"];
    let (rows, text) = traceroute(&net, &args);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "too slow to see the old path"
    );
    assert_eq!(
        hop_addresses(&rows, &text),
        addrs(&["2001:db8:10::1", "2001:db8:10::2", "2001:db8::9"]),
        "{text}"
    );
    std::thread::sleep(
        Duration::from_secs(3).saturating_sub(started.elapsed()) + Duration::from_millis(200),
    );
    let (rows, text) = traceroute(&net, &args);
    assert_eq!(
        hop_addresses(&rows, &text),
        addrs(&[
            "2001:db8:20::1",
            "2001:db8:20::2",
            "2001:db8:20::3",
            "2001:db8::9"
        ]),
        "{text}"
    );
}
