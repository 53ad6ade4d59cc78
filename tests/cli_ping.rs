//! `pingscope ping` end to end: loopback in the root namespace, and the test network for every
//! profile (delay, loss, duplicates, TTL, ICMP errors, blackhole, late replies), both socket
//! kinds, and every rejected argument with its exact message and exit status.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};
use support::{TestNet, binomial_interval};

const BIN: &str = env!("CARGO_BIN_EXE_pingscope");

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

fn of_type<'a>(lines: &'a [Value], t: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["type"] == t).collect()
}

fn summary_of<'a>(lines: &'a [Value], ip: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["type"] == "summary" && l["ip"] == ip)
        .unwrap_or_else(|| panic!("no summary for {ip} in {lines:?}"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn run_in(net: &TestNet, args: &[&str]) -> Output {
    net.command(BIN)
        .arg("ping")
        .args(args)
        .output()
        .expect("running pingscope")
}

#[test]
fn loopback_v4_three_replies_and_a_summary() {
    if !support::require_root() {
        return;
    }
    let out = Command::new(BIN)
        .args(["ping", "-c", "3", "-i", "0.05", "127.0.0.1"])
        .output()
        .expect("running pingscope");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let l = lines(&out);
    let replies = of_type(&l, "reply");
    assert_eq!(replies.len(), 3, "{l:?}");
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r["ip"], "127.0.0.1");
        assert_eq!(r["seq"], i as u64 + 1);
        assert!(
            r["rtt_ms"].as_f64().is_some_and(|v| v > 0.0 && v < 100.0),
            "{r}"
        );
        assert!(r["ts"].as_str().is_some_and(|t| t.ends_with('Z')), "{r}");
    }
    let s = summary_of(&l, "127.0.0.1");
    assert_eq!(
        (s["sent"].as_u64(), s["received"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(s["loss_ratio"], 0.0);
    assert_eq!(l.last().map(|v| v["type"].clone()), Some(json!("summary")));
}

#[test]
fn loopback_v6_when_the_kernel_has_it() {
    if !support::require_root() {
        return;
    }
    if !support::require(
        std::fs::read_to_string("/proc/net/if_inet6")
            .is_ok_and(|s| s.contains("00000000000000000000000000000001")),
        "no ::1 on this kernel",
    ) {
        return;
    }
    let out = Command::new(BIN)
        .args(["ping", "-c", "3", "-i", "0.05", "::1"])
        .output()
        .expect("running pingscope");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let l = lines(&out);
    assert_eq!(of_type(&l, "reply").len(), 3, "{l:?}");
    assert_eq!(summary_of(&l, "::1")["loss_ratio"], 0.0);
}

#[test]
fn delay_profile_mean_within_the_measured_error() {
    let Some(net) = TestNet::start_if_root(&json!({"hosts": {"198.18.0.20": {"delay": "20ms"}}}))
    else {
        return;
    };
    let out = run_in(&net, &["-c", "50", "-i", "20ms", "198.18.0.20"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let l = lines(&out);
    let s = summary_of(&l, "198.18.0.20");
    assert_eq!(s["received"], 50);
    let avg = s["rtt_ms"]["avg"].as_f64().expect("avg");
    let err = net.timing_error();
    let tolerance_ms = err.max.as_secs_f64() * 1e3 + 1.0;
    assert!(
        (avg - 20.0).abs() <= tolerance_ms,
        "mean {avg} ms vs 20 ms ± {tolerance_ms} ms (responder error {err:?})"
    );
}

#[test]
fn loss_profile_inside_the_binomial_interval_and_equal_to_the_log() {
    let Some(net) =
        TestNet::start_if_root(&json!({"seed": 7, "hosts": {"198.18.0.30": {"loss": 0.1}}}))
    else {
        return;
    };
    let n = 400;
    let out = run_in(
        &net,
        &["-c", "400", "-i", "5ms", "-W", "500ms", "198.18.0.30"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let l = lines(&out);
    let s = summary_of(&l, "198.18.0.30");
    let lost = s["lost"].as_u64().expect("lost") as u32;
    let (lo, hi) = binomial_interval(n, 0.1);
    assert!(
        (lo..=hi).contains(&lost),
        "lost {lost} outside [{lo}, {hi}]"
    );
    let dropped = net.log().iter().filter(|e| e.action == "dropped").count() as u32;
    assert_eq!(
        lost, dropped,
        "pingscope's losses equal the responder's drops"
    );
    assert_eq!(s["sent"], 400);
    assert_eq!(of_type(&l, "timeout").len() as u32, lost);
}

#[test]
fn duplicates_counted_exactly_and_ttl_reported_exactly() {
    let Some(net) = TestNet::start_if_root(&json!({"hosts": {
        "198.18.0.40": {"duplicate": 2},
        "198.18.0.50": {"ttl": 17},
        "2001:db8::50": {"ttl": 33}
    }})) else {
        return;
    };
    let out = run_in(
        &net,
        &[
            "-c",
            "10",
            "-i",
            "20ms",
            "--all-addresses",
            "198.18.0.40",
            "198.18.0.50",
            "2001:db8::50",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let l = lines(&out);
    let dups: Vec<_> = of_type(&l, "duplicate")
        .into_iter()
        .filter(|d| d["ip"] == "198.18.0.40")
        .collect();
    assert_eq!(dups.len(), 20, "two extra copies of each of 10 replies");
    assert_eq!(summary_of(&l, "198.18.0.40")["duplicates"], 20);
    assert_eq!(summary_of(&l, "198.18.0.40")["received"], 10);
    for (ip, ttl) in [("198.18.0.50", 17), ("2001:db8::50", 33)] {
        let replies: Vec<_> = of_type(&l, "reply")
            .into_iter()
            .filter(|r| r["ip"] == ip)
            .collect();
        assert_eq!(replies.len(), 10, "{ip}");
        assert!(replies.iter().all(|r| r["ttl"] == ttl), "{ip}: {replies:?}");
    }
}

#[test]
fn unreachable_gives_error_lines_with_the_icmp_type() {
    let Some(net) = TestNet::start_if_root(&json!({"hosts": {
        "198.18.0.60": {"unreachable": 1},
        "2001:db8::60": {"unreachable": 3},
        "198.18.0.61": {"time_exceeded": true, "from": "198.18.200.1"}
    }})) else {
        return;
    };
    let out = run_in(
        &net,
        &[
            "-c",
            "3",
            "-i",
            "50ms",
            "-W",
            "1s",
            "198.18.0.60",
            "2001:db8::60",
            "198.18.0.61",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "no host answered: {}",
        stderr(&out)
    );
    let l = lines(&out);
    let errors = of_type(&l, "error");
    let v4: Vec<_> = errors.iter().filter(|e| e["ip"] == "198.18.0.60").collect();
    assert_eq!(v4.len(), 3, "{errors:?}");
    assert!(
        v4.iter()
            .all(|e| e["icmp_type"] == 3 && e["icmp_code"] == 1 && e["error"] == "unreachable")
    );
    let v6: Vec<_> = errors
        .iter()
        .filter(|e| e["ip"] == "2001:db8::60")
        .collect();
    assert_eq!(v6.len(), 3, "{errors:?}");
    assert!(
        v6.iter()
            .all(|e| e["icmp_type"] == 1 && e["icmp_code"] == 3)
    );
    let te: Vec<_> = errors.iter().filter(|e| e["ip"] == "198.18.0.61").collect();
    assert_eq!(te.len(), 3);
    assert!(te.iter().all(|e| e["icmp_type"] == 11
        && e["from"] == "198.18.200.1"
        && e["error"] == "time_exceeded"));
    assert_eq!(summary_of(&l, "198.18.0.60")["loss_ratio"], 1.0);
    assert_eq!(summary_of(&l, "198.18.0.60")["errors"], 3);
}

#[test]
fn blackhole_times_out_and_exits_1() {
    let Some(net) = TestNet::start_if_root(&json!({"hosts": {"198.18.0.70": {"blackhole": true}}}))
    else {
        return;
    };
    let out = run_in(
        &net,
        &["-c", "3", "-i", "100ms", "-W", "300ms", "198.18.0.70"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let l = lines(&out);
    assert_eq!(of_type(&l, "timeout").len(), 3);
    assert_eq!(of_type(&l, "reply").len(), 0);
    assert_eq!(summary_of(&l, "198.18.0.70")["loss_ratio"], 1.0);
}

#[test]
fn a_reply_after_the_timeout_is_late_not_a_reply() {
    let Some(net) = TestNet::start_if_root(&json!({"hosts": {"198.18.0.80": {"delay": "250ms"}}}))
    else {
        return;
    };
    // Probe k leaves at 100(k-1) ms, times out 200 ms later, and its reply comes 50 ms after
    // that; the first four late replies arrive before the fifth probe times out.
    let out = run_in(
        &net,
        &["-c", "5", "-i", "100ms", "-W", "200ms", "198.18.0.80"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let l = lines(&out);
    assert_eq!(of_type(&l, "reply").len(), 0, "{l:?}");
    assert_eq!(of_type(&l, "timeout").len(), 5);
    let late = of_type(&l, "late");
    assert!(late.len() >= 4, "{l:?}");
    assert!(
        late.iter()
            .all(|x| x["rtt_ms"].as_f64().is_some_and(|r| r >= 240.0)),
        "{late:?}"
    );
    let s = summary_of(&l, "198.18.0.80");
    assert_eq!(
        (s["received"].as_u64(), s["lost"].as_u64()),
        (Some(0), Some(5))
    );
}

#[test]
fn datagram_socket_as_an_unprivileged_user() {
    let Some(net) = TestNet::start_if_root(
        &json!({"hosts": {"198.18.0.20": {"delay": "2ms"}, "2001:db8::20": {"delay": "2ms"}}}),
    ) else {
        return;
    };
    // The binary must be readable by the unprivileged user: copy it next to the test's files.
    let bin = net.dir().join("pingscope");
    std::fs::copy(BIN, &bin).expect("copy binary");
    let _ = Command::new("chmod").args(["755"]).arg(net.dir()).status();
    let out = net
        .command_unprivileged(&bin)
        .args([
            "ping",
            "-c",
            "3",
            "-i",
            "20ms",
            "198.18.0.20",
            "2001:db8::20",
        ])
        .output()
        .expect("running pingscope unprivileged");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let l = lines(&out);
    assert_eq!(summary_of(&l, "198.18.0.20")["received"], 3);
    assert_eq!(summary_of(&l, "2001:db8::20")["received"], 3);
}

#[test]
fn no_socket_permission_exits_77_and_names_the_fix() {
    let Some(net) = TestNet::start_if_root(&json!({})) else {
        return;
    };
    let bin = net.dir().join("pingscope");
    std::fs::copy(BIN, &bin).expect("copy binary");
    let _ = Command::new("chmod").args(["755"]).arg(net.dir()).status();
    // No capabilities and the namespace's default ping_group_range ("1 0": nobody).
    let out = net
        .command("setpriv")
        .args(support::UNPRIVILEGED)
        .arg(&bin)
        .args(["ping", "-c", "1", "198.18.0.20"])
        .output()
        .expect("running pingscope unprivileged");
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("net.ipv4.ping_group_range") && err.contains("CAP_NET_RAW"),
        "{err}"
    );
}

#[test]
fn a_thousand_loopback_addresses_concurrently() {
    if !support::require_root() {
        return;
    }
    let hosts: Vec<String> = (0..1000)
        .map(|i| format!("127.0.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let out = Command::new(BIN)
        .args(["ping", "-c", "2", "-i", "200ms", "-W", "1s"])
        .args(&hosts)
        .output()
        .expect("running pingscope");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let l = lines(&out);
    let summaries = of_type(&l, "summary");
    assert_eq!(summaries.len(), 1000);
    assert!(
        summaries
            .iter()
            .all(|s| s["sent"] == 2 && s["received"] == 2),
        "every reply accounted for"
    );
    assert_eq!(of_type(&l, "reply").len(), 2000);
    assert_eq!(of_type(&l, "timeout").len(), 0);
}

#[test]
fn interrupt_stops_sending_and_still_prints_the_summary() {
    if !support::require_root() {
        return;
    }
    let child = Command::new(BIN)
        .args(["ping", "-i", "100ms", "127.0.0.1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(550));
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0));
    let l = lines(&out);
    let s = summary_of(&l, "127.0.0.1");
    let sent = s["sent"].as_u64().expect("sent");
    assert!((4..=8).contains(&sent), "sent {sent}");
    assert_eq!(s["received"].as_u64(), Some(sent));
}

#[test]
fn an_unresolvable_host_exits_2_and_the_others_still_run() {
    if !support::require_root() {
        return;
    }
    // An empty zone: every name is NXDOMAIN.
    let server = support::dns::DnsServer::start();
    let dns = server.addr();
    let out = Command::new(BIN)
        .args(["ping", "-c", "2", "-i", "50ms", "--dns-server"])
        .arg(dns.to_string())
        .args(["no-such-host.test", "127.0.0.1"])
        .output()
        .expect("running pingscope");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let l = lines(&out);
    let err = of_type(&l, "error");
    assert!(
        err.iter().any(|e| e["host"] == "no-such-host.test"),
        "{l:?}"
    );
    assert_eq!(summary_of(&l, "127.0.0.1")["received"], 2);
}

#[test]
fn rejected_arguments_have_exact_messages_and_exit_64() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["-c", "0", "h"],
            "pingscope: count must be at least 1, got 0",
        ),
        (&["-i", "-1s", "h"], "error: unexpected argument '-1' found"),
        (
            &["-i", "5x", "h"],
            "pingscope: interval: invalid duration \"5x\": unknown unit \"x\" (use ms, s, m, h, d, w, y)",
        ),
        (
            &["-i", "0.0001", "h"],
            "pingscope: interval 100us is below the minimum of 1ms",
        ),
        (
            &["-W", "0", "h"],
            "pingscope: timeout must be greater than 0s",
        ),
        (
            &["-W", "2m", "h"],
            "pingscope: timeout 2m is longer than is sane (at most 1m)",
        ),
        (
            &["-6", "-s", "70000", "h"],
            "pingscope: size 70000 is larger than the largest ICMP payload over IPv6 (65527 bytes)",
        ),
        (
            &["-t", "0", "h"],
            "pingscope: ttl must be between 1 and 255, got 0",
        ),
        (
            &["-t", "256", "h"],
            "pingscope: ttl must be between 1 and 255, got 256",
        ),
        (
            &["-Q", "300", "h"],
            "pingscope: tos must be between 0 and 255, got 300",
        ),
        (
            &["--dns-server", "nope", "h"],
            "error: invalid value 'nope' for '--dns-server <ADDR>': invalid DNS server \"nope\": expected IP or IP:PORT",
        ),
        (
            &["-4", "-6", "h"],
            "error: the argument '-4' cannot be used with '-6'",
        ),
        (
            &[],
            "error: the following required arguments were not provided:",
        ),
    ];
    for (args, want) in cases {
        let out = Command::new(BIN)
            .arg("ping")
            .args(*args)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
        let first = stderr(&out).lines().next().unwrap_or_default().to_owned();
        assert_eq!(first, *want, "{args:?}");
    }
    // Above the IPv4 maximum but within IPv6's: rejected after parsing, unless -6.
    let out = Command::new(BIN)
        .args(["ping", "-s", "65510", "h"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert_eq!(
        stderr(&out).trim(),
        "pingscope: size 65510 is larger than the largest ICMP payload over IPv4 (65507 bytes)"
    );
}
