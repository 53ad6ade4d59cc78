//! Self-tests of the test network: iputils `ping`, run inside the namespace, against the
//! `pingscope-testnet` responder. If these fail, no test built on the test network means anything.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

mod support;

use std::process::Output;
use std::time::Duration;

use serde_json::json;
use support::{TestNet, binomial_interval};

fn ping(net: &TestNet, args: &[&str]) -> (Output, String) {
    support::run_output(net.command("ping").args(args))
}

/// `N packets transmitted, M received` from ping's summary.
fn transmitted_received(text: &str) -> (u32, u32) {
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no summary in:\n{text}"));
    let nums: Vec<u32> = line
        .split(',')
        .take(2)
        .map(|part| {
            part.split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unparsable summary {line:?}"))
        })
        .collect();
    (nums[0], nums[1])
}

/// `rtt min/avg/max/mdev = a/b/c/d ms` in milliseconds.
fn rtt_min_avg_max(text: &str) -> (f64, f64, f64) {
    let line = text
        .lines()
        .find(|l| l.starts_with("rtt "))
        .unwrap_or_else(|| panic!("no rtt line in:\n{text}"));
    // "rtt min/avg/max/mdev = a/b/c/d ms", with ", pipe N" after it when replies overlapped.
    let values = line.split('=').nth(1).expect("rtt values").trim();
    let values = values.split(" ms").next().expect("rtt values");
    let v: Vec<f64> = values
        .split('/')
        .map(|x| x.parse().expect("rtt number"))
        .collect();
    (v[0], v[1], v[2])
}

#[test]
fn binomial_interval_matches_the_normal_approximation() {
    // n = 200, p = 0.3: mean 60, sd 6.48; z(0.9995) = 3.29 puts the bounds near 38.7 and 81.3.
    let (lo, hi) = binomial_interval(200, 0.3);
    assert!((38..=41).contains(&lo), "lo {lo}");
    assert!((80..=83).contains(&hi), "hi {hi}");
}

#[test]
fn delay_is_what_ping_measures_within_the_measured_error() {
    let Some(net) = TestNet::start_if_root(&json!({"hosts": {"198.18.0.20": {"delay": "20ms"}}}))
    else {
        return;
    };
    let (out, text) = ping(&net, &["-c", "20", "-i", "0.05", "-W", "2", "198.18.0.20"]);
    assert!(out.status.success(), "{text}");
    assert_eq!(transmitted_received(&text), (20, 20), "{text}");
    let (min, avg, _max) = rtt_min_avg_max(&text);
    let err = net.timing_error();
    assert_eq!(err.samples, 20);
    let bound = 20.0 + err.max.as_secs_f64() * 1e3 + 1.0;
    eprintln!("ping min {min} avg {avg} ms; responder error {err:?}");
    assert!(min >= 20.0, "no reply can beat the delay: min {min} ms");
    assert!(
        avg <= bound,
        "avg {avg} ms above 20 ms + max error + 1 ms = {bound} ms"
    );
    let reported = net.reported_timing();
    assert_eq!(
        reported, err,
        "the responder's own report agrees with its log"
    );
    for e in net.log() {
        assert_eq!((e.action.as_str(), e.copies), ("replied", 1));
        assert_eq!(e.scheduled_delay_ns, Some(20_000_000));
        assert!(e.read_lag_ns.is_some(), "kernel timestamp missing: {e:?}");
    }
}

#[test]
fn jitter_spreads_rtt_within_its_bounds() {
    let Some(net) = TestNet::start_if_root(&json!({"seed": 5, "hosts": {
        "198.18.0.22": {"delay": "20ms", "jitter": "5ms"}
    }})) else {
        return;
    };
    let (out, text) = ping(&net, &["-c", "30", "-i", "0.02", "-W", "2", "198.18.0.22"]);
    assert!(out.status.success(), "{text}");
    let (min, _, max) = rtt_min_avg_max(&text);
    let err_ms = net.timing_error().max.as_secs_f64() * 1e3;
    assert!(min >= 15.0, "min {min} below delay - jitter");
    assert!(
        max <= 25.0 + err_ms + 1.0,
        "max {max} above delay + jitter + error"
    );
    // 30 uniform draws over 10 ms span under 4 ms with probability ~1e-10 (and the seed fixes them).
    assert!(max - min > 4.0, "no visible jitter: {min}..{max}");
    let scheduled: Vec<u64> = net
        .log()
        .iter()
        .filter_map(|e| e.scheduled_delay_ns)
        .collect();
    assert_eq!(scheduled.len(), 30);
    assert!(
        scheduled
            .iter()
            .all(|d| (15_000_000..=25_000_000).contains(d))
    );
}

#[test]
fn answers_due_together_leave_together() {
    if !support::require_root() {
        return;
    }
    // Ten requests in flight at once: a responder that slept per packet would serialise them
    // and the RTTs would climb by 20 ms each.
    let net = TestNet::start(&json!({"default": {"delay": "20ms"}}));
    let (out, text) = ping(&net, &["-c", "50", "-i", "0.002", "-W", "2", "198.18.0.21"]);
    assert!(out.status.success(), "{text}");
    assert_eq!(transmitted_received(&text), (50, 50), "{text}");
    let (min, avg, max) = rtt_min_avg_max(&text);
    let err = net.timing_error();
    eprintln!("min {min} avg {avg} max {max} ms; responder error {err:?}");
    assert!(min >= 20.0, "min {min}");
    assert!(avg <= 20.0 + err.max.as_secs_f64() * 1e3 + 1.0, "avg {avg}");
    assert!(max < 30.0, "replies were serialised: max {max} ms");
}

#[test]
fn loss_matches_the_profile_and_the_log() {
    let Some(net) =
        TestNet::start_if_root(&json!({"seed": 2024, "hosts": {"198.18.0.30": {"loss": 0.3}}}))
    else {
        return;
    };
    let (_, text) = ping(
        &net,
        &["-q", "-c", "200", "-i", "0.01", "-W", "1", "198.18.0.30"],
    );
    let (sent, received) = transmitted_received(&text);
    assert_eq!(sent, 200, "{text}");
    let lost = sent - received;
    let (lo, hi) = binomial_interval(200, 0.3);
    assert!(
        (lo..=hi).contains(&lost),
        "lost {lost} outside [{lo}, {hi}]"
    );
    let log = net.wait_log(200, Duration::from_secs(3));
    assert_eq!(log.len(), 200);
    let dropped = log.iter().filter(|e| e.action == "dropped").count();
    assert_eq!(
        dropped as u32, lost,
        "ping's loss equals the responder's drops"
    );
    assert!(
        log.iter()
            .all(|e| e.action == "dropped" || e.action == "replied")
    );
}

#[test]
fn same_seed_drops_the_same_sequence_numbers() {
    if !support::require_root() {
        return;
    }
    let profiles = json!({"seed": 9, "hosts": {"198.18.0.31": {"loss": 0.5}}});
    let dropped_seqs = || {
        let net = TestNet::start(&profiles);
        ping(
            &net,
            &["-q", "-c", "40", "-i", "0.005", "-W", "1", "198.18.0.31"],
        );
        let log = net.wait_log(40, Duration::from_secs(3));
        // By position, not by ICMP sequence: ping's first sequence number is its own business.
        log.iter()
            .map(|e| e.action == "dropped")
            .collect::<Vec<_>>()
    };
    let (a, b) = (dropped_seqs(), dropped_seqs());
    assert_eq!(a.len(), 40);
    assert!(a.iter().any(|d| *d) && a.iter().any(|d| !*d), "{a:?}");
    assert_eq!(a, b);
}

#[test]
fn duplicates_are_seen_by_ping() {
    let Some(mut net) =
        TestNet::start_if_root(&json!({"hosts": {"198.18.0.40": {"duplicate": 2}}}))
    else {
        return;
    };
    let (out, text) = ping(&net, &["-c", "3", "-i", "0.1", "-W", "1", "198.18.0.40"]);
    assert!(out.status.success(), "{text}");
    // ping exits on the last sequence's first reply, so its copies are not awaited.
    for seq in ["icmp_seq=1 ", "icmp_seq=2 "] {
        let dups = text
            .lines()
            .filter(|l| l.contains(seq) && l.ends_with("(DUP!)"));
        assert_eq!(dups.count(), 2, "{seq}: {text}");
    }
    let log = net.stop();
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|e| e.copies == 3), "{log:?}");
}

#[test]
fn reply_ttl_and_hop_limit_are_the_profiles() {
    let Some(net) = TestNet::start_if_root(&json!({"hosts": {
        "198.18.0.50": {"ttl": 17},
        "2001:db8::50": {"ttl": 33, "delay": "5ms"}
    }})) else {
        return;
    };
    let (out, text) = ping(&net, &["-c", "2", "-i", "0.1", "-W", "1", "198.18.0.50"]);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches("ttl=17 ").count(), 2, "{text}");
    let (out, text) = ping(
        &net,
        &["-6", "-c", "3", "-i", "0.1", "-W", "1", "2001:db8::50"],
    );
    assert!(out.status.success(), "{text}");
    assert_eq!(transmitted_received(&text), (3, 3), "{text}");
    assert_eq!(text.matches("ttl=33 ").count(), 3, "{text}");
    let (min, _, _) = rtt_min_avg_max(&text);
    assert!(min >= 5.0, "IPv6 delay applies: {min}");
    assert!(net.log().iter().any(|e| e.family == "ip6"));
}

#[test]
fn icmp_errors_reach_ping() {
    let Some(mut net) = TestNet::start_if_root(&json!({"hosts": {
        "198.18.0.60": {"unreachable": 1},
        "198.18.0.61": {"time_exceeded": true, "from": "198.18.200.1"},
        "2001:db8::60": {"unreachable": 3}
    }})) else {
        return;
    };
    let (out, text) = ping(&net, &["-c", "2", "-i", "0.1", "-W", "1", "198.18.0.60"]);
    assert!(!out.status.success());
    assert_eq!(
        text.matches("Destination Host Unreachable").count(),
        2,
        "{text}"
    );
    let (_, text) = ping(&net, &["-c", "1", "-W", "1", "198.18.0.61"]);
    assert!(
        text.contains("From 198.18.200.1") && text.contains("Time to live exceeded"),
        "{text}"
    );
    let (_, text) = ping(&net, &["-6", "-c", "1", "-W", "1", "2001:db8::60"]);
    assert!(text.contains("Destination unreachable"), "{text}");
    let log = net.stop();
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["unreachable", "unreachable", "time_exceeded", "unreachable"]
    );
}

#[test]
fn blackhole_never_answers() {
    let Some(net) = TestNet::start_if_root(&json!({"default": {"blackhole": true}})) else {
        return;
    };
    let (out, text) = ping(&net, &["-c", "3", "-i", "0.1", "-W", "1", "198.18.0.70"]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("100% packet loss"), "{text}");
    let log = net.wait_log(3, Duration::from_secs(2));
    assert!(
        log.len() == 3
            && log
                .iter()
                .all(|e| e.action == "blackholed" && e.copies == 0)
    );
}

#[test]
fn unprivileged_datagram_ping_works_in_the_namespace() {
    let Some(net) = TestNet::start_if_root(&json!({})) else {
        return;
    };
    use std::os::unix::fs::PermissionsExt;
    // A copy of ping without its file capability (cp drops xattrs), where nobody can run it:
    // it can then only use an ICMP datagram socket.
    let ping = net.dir().join("ping-nocaps");
    std::fs::copy("/usr/bin/ping", &ping).unwrap();
    std::fs::set_permissions(net.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = |cmd: &mut std::process::Command, args: &[&str]| {
        let out = cmd.args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    // Before ping_group_range allows it, the datagram socket is refused.
    let mut before = net.command("setpriv");
    before.args(support::UNPRIVILEGED).arg(&ping);
    let (ok, text) = run(&mut before, &["-c", "1", "-W", "1", "198.18.0.80"]);
    assert!(!ok && text.contains("Operation not permitted"), "{text}");
    let who = net.command_unprivileged("id").output().unwrap();
    let who = String::from_utf8_lossy(&who.stdout);
    assert!(
        who.starts_with("uid=65534(") && who.contains("gid=65534("),
        "{who}"
    );
    for (flag, addr) in [("-4", "198.18.0.80"), ("-6", "2001:db8::80")] {
        let args = ["-v", flag, "-c", "2", "-i", "0.2", "-W", "1", addr];
        let (ok, text) = run(&mut net.command_unprivileged(&ping), &args);
        assert!(ok, "{text}");
        assert!(text.contains("SOCK_DGRAM"), "datagram socket: {text}");
        assert_eq!(transmitted_received(&text), (2, 2));
    }
}

#[test]
fn responder_refuses_a_namespace_with_other_interfaces() {
    let Some(net) = TestNet::start_if_root(&json!({})) else {
        return;
    };
    // A namespace with one more interface stands in for any namespace that has a way out.
    let ns = format!("{}-x", net.namespace());
    let status = std::process::Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .unwrap();
    assert!(status.success());
    let run = || {
        let added = std::process::Command::new("ip")
            .args([
                "netns", "exec", &ns, "ip", "tuntap", "add", "dev", "d0", "mode", "tun",
            ])
            .status()?;
        assert!(added.success(), "adding d0");
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                env!("CARGO_BIN_EXE_pingscope-testnet"),
            ])
            .arg("--profiles")
            .arg(net.dir().join("none.json"))
            .arg("--log")
            .arg(net.dir().join("x.jsonl"))
            .output()
    };
    let result = run();
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", &ns])
        .status();
    let out = result.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("refusing to run") && err.contains("d0"),
        "{err}"
    );
}

#[test]
fn large_probes_arrive_whole_and_are_answered() {
    let Some(net) = TestNet::start_if_root(&json!({})) else {
        return;
    };
    // The device's MTU is 65535, so nothing is fragmented (the responder ignores fragments).
    for (flag, addr, size) in [
        ("-4", "198.18.0.95", "60000"),
        ("-6", "2001:db8::95", "9000"),
    ] {
        let (out, text) = ping(
            &net,
            &[flag, "-c", "2", "-i", "0.1", "-W", "1", "-s", size, addr],
        );
        assert!(out.status.success(), "{text}");
        assert_eq!(transmitted_received(&text), (2, 2), "{text}");
    }
    let sizes: Vec<usize> = net.log().iter().map(|e| e.size).collect();
    assert_eq!(sizes, [60000, 60000, 9000, 9000]);
}

#[test]
fn log_is_readable_while_running() {
    let Some(net) = TestNet::start_if_root(&json!({"default": {"delay": "1ms"}})) else {
        return;
    };
    ping(&net, &["-c", "1", "-W", "1", "198.18.0.90"]);
    let log = net.wait_log(1, Duration::from_secs(2));
    assert_eq!(log.len(), 1, "flushed without waiting for exit");
    let e = &log[0];
    assert_eq!(e.dst, "198.18.0.90".parse::<std::net::IpAddr>().unwrap());
    assert_eq!(e.src, "198.18.0.1".parse::<std::net::IpAddr>().unwrap());
    assert_eq!((e.family.as_str(), e.seq, e.size), ("ip4", 1, 56));
}
