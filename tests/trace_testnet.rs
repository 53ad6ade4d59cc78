//! `pingscope trace` through the test network's paths (docs/testnet.md, "Paths"), inside the
//! namespace each test creates: exactly the configured hops in order (ICMP and UDP, IPv4 and
//! IPv6, as root and as an unprivileged user on datagram sockets), per-hop RTT against the
//! configured cumulative delay, loss that persists told from a rate-limited hop's, ECMP branches
//! found by several flows and one branch per flow, proven by the responder's flow hashes (and,
//! for UDP, its record of the ports and checksum); UDP's one limit, a router that quotes only
//! the UDP header.
//!
//! Needs root (namespaces, TUN device). Without root the tests skip with a message, unless `CI`
//! is set, where they fail.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde_json::{Value, json};
use support::{TestNet, binomial_interval, hops};

const BIN: &str = env!("CARGO_BIN_EXE_pingscope");

fn addrs(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

/// The output of one `pingscope trace` run inside the namespace.
struct Traced {
    code: Option<i32>,
    lines: Vec<Value>,
    text: String,
}

impl Traced {
    fn of_type(&self, t: &str) -> Vec<&Value> {
        self.lines.iter().filter(|l| l["type"] == t).collect()
    }

    /// The distinct `key` values of the hop lines at `ttl`.
    fn at_ttl(&self, ttl: u64, key: &str) -> BTreeSet<&str> {
        self.of_type("hop")
            .into_iter()
            .filter(|h| h["ttl"] == ttl)
            .map(|h| h[key].as_str().unwrap_or_else(|| panic!("no {key} in {h}")))
            .collect()
    }

    fn path(&self) -> &Value {
        let p = self.of_type("path");
        assert_eq!(p.len(), 1, "one path line: {}", self.text);
        p[0]
    }

    /// The path line's responders per TTL.
    fn hops(&self) -> Vec<Vec<IpAddr>> {
        serde_json::from_value(self.path()["hops"].clone()).expect("hops")
    }
}

fn trace(net: &TestNet, unprivileged: bool, args: &[&str]) -> Traced {
    let mut cmd = if unprivileged {
        net.command_unprivileged(BIN)
    } else {
        net.command(BIN)
    };
    let out = cmd
        .arg("trace")
        .args(args)
        .output()
        .expect("running pingscope trace");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = stdout.clone() + &String::from_utf8_lossy(&out.stderr);
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l}: {e}\n{text}")))
        .collect();
    Traced {
        code: out.status.code(),
        lines,
        text,
    }
}

/// The arguments of 6 rounds 100 ms apart with `protocol`, then `more`.
fn six_rounds<'a>(protocol: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--protocol", protocol, "-c", "6", "-i", "0.1"];
    args.extend_from_slice(more);
    args
}

#[test]
fn trace_reports_the_configured_hops_in_order_with_their_delays() {
    if !support::require_root() {
        return;
    }
    let net = hops_in_order("icmp");
    // One flow: every request of every run kept one flow hash per identifier (the responder hashes
    // what ECMP routers hash; the checksum word in the payload keeps it constant).
    let mut flows_of_ident: BTreeMap<(IpAddr, u16), BTreeSet<String>> = BTreeMap::new();
    for e in net.log().iter().filter(|e| e.proto == "icmp") {
        flows_of_ident
            .entry((e.dst, e.id))
            .or_default()
            .insert(e.flow.clone());
    }
    assert_eq!(
        flows_of_ident.len(),
        4,
        "a flow socket per run: {flows_of_ident:?}"
    );
    assert!(
        flows_of_ident.values().all(|f| f.len() == 1),
        "one flow hash per flow: {flows_of_ident:?}"
    );
}

#[test]
fn udp_trace_reports_the_configured_hops_in_order_with_their_delays() {
    if !support::require_root() {
        return;
    }
    let net = hops_in_order("udp");
    // One flow per run: one source port, traceroute's destination port, one flow hash and one
    // UDP checksum (the compensation word in the payload) across every TTL and round.
    // (destination port, flow hash, checksum) per (destination, source port).
    type Wire = BTreeSet<(Option<u16>, String, Option<u16>)>;
    let mut of_flow: BTreeMap<(IpAddr, u16), Wire> = BTreeMap::new();
    let log = net.log();
    for e in log.iter().filter(|e| e.proto == "udp") {
        of_flow
            .entry((e.dst, e.sport.unwrap()))
            .or_default()
            .insert((e.dport, e.flow.clone(), e.checksum));
    }
    assert_eq!(of_flow.len(), 4, "a flow socket per run: {of_flow:?}");
    for (flow, seen) in &of_flow {
        assert_eq!(seen.len(), 1, "{flow:?}: {seen:?}");
        let (dport, _, checksum) = seen.first().unwrap();
        assert_eq!(*dport, Some(33434), "{flow:?}");
        assert!(checksum.is_some_and(|c| c != 0), "{flow:?}: {seen:?}");
    }
    // Every TTL of every round went through those flows: 6 rounds of 5 TTLs (and the first
    // round's climb past the destination) per run.
    let sent = log.iter().filter(|e| e.proto == "udp").count();
    assert!(sent >= 4 * 6 * 5, "{sent} datagrams");
}

#[test]
fn udp_trace_needs_no_icmp_permission() {
    let Some(net) = TestNet::start_if_root(&json!({"hosts": {
        "198.18.0.9": {"path": {"hops": hops("198.18.10.", 2, 1)}}
    }})) else {
        return;
    };
    // No group may open datagram ICMP sockets, and the user has no capability for raw ones.
    let forbid = net
        .command("sysctl")
        .args(["-qw", "net.ipv4.ping_group_range=1 0"])
        .status()
        .expect("sysctl");
    assert!(forbid.success());
    let run = |protocol: &str| {
        let out = net
            .command("setpriv")
            .args(support::UNPRIVILEGED)
            .args([BIN, "trace", "--protocol", protocol, "-c", "2", "-i", "0.1"])
            .args(["-W", "1s", "--max-ttl", "6", "198.18.0.9"])
            .output()
            .expect("running pingscope trace");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let (code, text) = run("icmp");
    assert_eq!(code, Some(77), "ICMP is forbidden here: {text}");
    let (code, text) = run("udp");
    assert_eq!(code, Some(0), "{text}");
    let path: Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["type"] == "path")
        .expect("a path line");
    let got: Vec<Vec<IpAddr>> = serde_json::from_value(path["hops"].clone()).unwrap();
    let want: Vec<Vec<IpAddr>> = ["198.18.10.1", "198.18.10.2", "198.18.0.9"]
        .iter()
        .map(|a| vec![a.parse().unwrap()])
        .collect();
    assert_eq!(got, want, "{text}");
}

#[test]
fn a_router_quoting_only_the_udp_header_leaves_udp_probes_unmatched() {
    if !support::require_root() {
        return;
    }
    // Hop 2 quotes 8 bytes after the IP header (RFC 792's minimum): the echo header of an ICMP
    // probe, the UDP header of a UDP one, which holds no token to match.
    let path = |p: &str| {
        json!({"hops": [
            {"addr": format!("{p}1")}, {"addr": format!("{p}2"), "quote": 8}, {"addr": format!("{p}3")}
        ]})
    };
    let net = TestNet::start(&json!({"hosts": {
        "198.18.0.9": {"path": path("198.18.10.")},
        "2001:db8::9": {"path": path("2001:db8:10::")}
    }}));
    for dst in ["198.18.0.9", "2001:db8::9"] {
        for protocol in ["icmp", "udp"] {
            let t = trace(
                &net,
                true,
                &[
                    "--protocol",
                    protocol,
                    "-c",
                    "3",
                    "-i",
                    "0.1",
                    "-W",
                    "500ms",
                    "--max-ttl",
                    "6",
                    dst,
                ],
            );
            let who = format!("{protocol} {dst}");
            assert_eq!(t.code, Some(0), "{who}: {}", t.text);
            let results = t.at_ttl(2, "result");
            let want = if protocol == "udp" {
                "timeout"
            } else {
                "time_exceeded"
            };
            assert_eq!(results, BTreeSet::from([want]), "{who}: {}", t.text);
            // The hops around it and the destination answer either way.
            let hops = t.hops();
            assert_eq!(hops.len(), 4, "{who}: {}", t.text);
            for ttl in [0, 2, 3] {
                assert_eq!(hops[ttl].len(), 1, "{who}: TTL {}: {}", ttl + 1, t.text);
            }
        }
    }
}

/// Traces a 4-hop path (3 ms a hop, 2 ms more at the destination) with `protocol`, IPv4 and
/// IPv6, as root and unprivileged: exactly the hops in order, every probe's answer, and each
/// hop's mean RTT within the responder's measured error + 1 ms of its cumulative delay. Returns
/// the network, for the caller's checks of the responder's log.
fn hops_in_order(protocol: &str) -> TestNet {
    let net = TestNet::start(&json!({"hosts": {
        "198.18.0.9": {"delay": "2ms", "path": {"hops": hops("198.18.10.", 4, 3)}},
        "2001:db8::9": {"delay": "2ms", "path": {"hops": hops("2001:db8:10::", 4, 3)}}
    }}));
    // The hops in order, then the destination.
    let path = |prefix: &str, dst: &str| -> Vec<IpAddr> {
        let mut v: Vec<String> = (1..=4).map(|i| format!("{prefix}{i}")).collect();
        v.push(dst.to_owned());
        v.iter().map(|a| a.parse().unwrap()).collect()
    };
    let (want4, want6) = (
        path("198.18.10.", "198.18.0.9"),
        path("2001:db8:10::", "2001:db8::9"),
    );
    // The destination's answer: the echo reply, or UDP's port unreachable.
    let (reply4, reply6) = if protocol == "udp" { (3, 1) } else { (0, 129) };
    for unprivileged in [false, true] {
        for (dst, want, te_type, reply_type) in [
            ("198.18.0.9", &want4, 11, reply4),
            ("2001:db8::9", &want6, 3, reply6),
        ] {
            let t = trace(
                &net,
                unprivileged,
                &six_rounds(protocol, &["-W", "1s", "--max-ttl", "10", dst]),
            );
            let who = format!("{protocol} {dst} unprivileged={unprivileged}");
            assert_eq!(t.code, Some(0), "{who}: {}", t.text);
            let got: Vec<IpAddr> = t.hops().into_iter().flatten().collect();
            assert_eq!(&got, want, "{who}: {}", t.text);
            assert_eq!(t.hops().len(), want.len(), "one responder per TTL: {who}");
            assert_eq!(t.path()["length"], 5, "{who}");
            assert_eq!(t.path()["changes"], 0, "{who}");
            // Every hop probe: time exceeded from hop TTL, the destination's answer at TTL 5
            // (and above: the first round climbs on until the destination's answer is in),
            // none lost.
            for h in t.of_type("hop") {
                let ttl = h["ttl"].as_u64().unwrap();
                let (result, icmp) = if ttl < 5 {
                    ("time_exceeded", te_type)
                } else {
                    ("reply", reply_type)
                };
                assert_eq!(
                    (h["result"].as_str(), h["icmp_type"].as_u64()),
                    (Some(result), Some(icmp)),
                    "{who}: {h}"
                );
                let responder: IpAddr = h["responder"].as_str().unwrap().parse().unwrap();
                assert_eq!(responder, want[ttl.min(5) as usize - 1], "{who}: {h}");
                assert!(
                    h["round"] == 1 || ttl <= 5,
                    "later rounds stop at the destination: {h}"
                );
            }
            // Per-hop mean RTT: hop k is 3k ms away, the destination 4 × 3 + 2 ms; within the
            // responder's measured error + 1 ms, and never below (but for the arrival lead).
            let err = net.timing_error().max.as_secs_f64() * 1e3;
            let lead = support::ARRIVAL_LEAD.as_secs_f64() * 1e3;
            let summaries = t.of_type("hop_summary");
            assert_eq!(summaries.len(), 5, "{who}: {}", t.text);
            for s in summaries {
                let ttl = s["ttl"].as_u64().unwrap();
                let want_ms = if ttl < 5 { 3.0 * ttl as f64 } else { 14.0 };
                let avg = s["rtt_ms"]["avg"].as_f64().unwrap();
                eprintln!("{who}: TTL {ttl} mean {avg:.3} ms, configured {want_ms} ms");
                assert!(
                    avg >= want_ms - lead && avg <= want_ms + err + 1.0,
                    "{who}: TTL {ttl} mean {avg:.3} ms, want {want_ms} ms + {err:.3} + 1: {s}"
                );
                assert_eq!(
                    (s["sent"].as_u64(), s["lost"].as_u64()),
                    (Some(6), Some(0)),
                    "{who}: {s}"
                );
            }
        }
    }
    net
}

#[test]
fn loss_that_persists_is_told_from_a_rate_limited_hop() {
    // Hop 2 loses 30 % of what it forwards; hop 3 answers once a second.
    let mut path = hops("198.18.10.", 4, 0);
    path[1]["loss"] = json!(0.3);
    path[2]["icmp_rate_limit"] = json!(1);
    let profiles = json!({"seed": 7, "hosts": {"198.18.0.9": {"path": {"hops": path}}}});
    let Some(net) = TestNet::start_if_root(&profiles) else {
        return;
    };
    let rounds = 100u32;
    let t = trace(
        &net,
        false,
        &[
            "-c",
            &rounds.to_string(),
            "-i",
            "0.05",
            "-W",
            "200ms",
            "--max-ttl",
            "8",
            "198.18.0.9",
        ],
    );
    assert_eq!(t.code, Some(0), "{}", t.text);
    let rows: Vec<&Value> = t.of_type("hop_summary");
    let at = |ttl: u64| -> Vec<&Value> {
        rows.iter()
            .copied()
            .filter(|r| r["ttl"].as_u64() == Some(ttl))
            .collect()
    };
    // TTL 1: clean.
    for r in at(1) {
        assert_eq!(r["lost"], 0, "{r}");
    }
    // TTL 2, 4 and the destination: the forwarding loss of hop 2, and it persists.
    for ttl in [2, 4, 5] {
        let (sent, lost) = at(ttl).iter().fold((0, 0), |(s, l), r| {
            (
                s + r["sent"].as_u64().unwrap(),
                l + r["lost"].as_u64().unwrap(),
            )
        });
        assert_eq!(sent, u64::from(rounds), "TTL {ttl}");
        let (lo, hi) = binomial_interval(rounds, 0.3);
        assert!(
            (u64::from(lo)..=u64::from(hi)).contains(&lost),
            "TTL {ttl}: {lost} of {sent} lost, outside [{lo}, {hi}]"
        );
        for r in at(ttl).iter().filter(|r| r["lost"].as_u64() > Some(0)) {
            assert_eq!(r["loss_persists"], true, "TTL {ttl}: {r}");
        }
    }
    // TTL 3: rate limited, far more loss than hop 2 explains, and marked as not persisting.
    let three = at(3);
    let lost3: u64 = three.iter().map(|r| r["lost"].as_u64().unwrap()).sum();
    assert!(lost3 > u64::from(rounds) / 2, "rate limited: {three:?}");
    for r in &three {
        assert_eq!(r["loss_persists"], false, "{r}");
    }
    // The responder agrees: TTL 3's probes were rate limited there, not lost on the way.
    let limited = net
        .log()
        .iter()
        .filter(|e| e.action == "rate_limited" && e.hop == Some(3))
        .count();
    assert!(limited > 0, "the responder rate-limited hop 3");
}

#[test]
fn flows_find_both_ecmp_branches_and_each_flow_keeps_one() {
    if !support::require_root() {
        return;
    }
    ecmp_branches("icmp");
}

#[test]
fn udp_flows_find_both_ecmp_branches_and_each_flow_keeps_one() {
    if !support::require_root() {
        return;
    }
    let (net, before) = ecmp_branches("udp");
    // The one-flow runs: per destination one source port, one destination port, one checksum.
    // (source port, destination port, checksum) per destination.
    type Wire = BTreeSet<(Option<u16>, Option<u16>, Option<u16>)>;
    let mut wire: BTreeMap<IpAddr, Wire> = BTreeMap::new();
    for e in &net.log()[before..] {
        wire.entry(e.dst)
            .or_default()
            .insert((e.sport, e.dport, e.checksum));
    }
    assert_eq!(wire.len(), 2, "{wire:?}");
    assert!(wire.values().all(|w| w.len() == 1), "{wire:?}");
}

/// ECMP hosts: hop 2 has two branches, for IPv4 and IPv6.
const ECMP_HOSTS: [(&str, [&str; 2]); 2] = [
    ("198.18.0.9", ["198.18.11.2", "198.18.12.2"]),
    ("2001:db8::9", ["2001:db8:11::2", "2001:db8:12::2"]),
];

/// Fresh `--flows 4` traces per (socket kind, family) in [`ecmp_branches`]: a tracer that kept
/// its first four identities would miss a branch in one trace of 8, so in at least one of
/// these 12 with p = 1 − (7/8)^12 ≈ 0.80 per protocol.
const ECMP_RUNS: usize = 3;

/// Two ECMP branches at hop 2, IPv4 and IPv6, as root (raw ICMP sockets: the namespace allows
/// no datagram ones yet) then unprivileged (datagram sockets): every `--flows 4` trace finds
/// both, each flow identity keeps one branch in every round, and the responder saw at most one
/// flow hash per identity, each on one branch; one flow takes one branch every round with one flow
/// hash. Returns the network and where the one-flow runs start in its log.
fn ecmp_branches(protocol: &str) -> (TestNet, usize) {
    let path = |prefix: &str, [a, b]: [&str; 2]| {
        json!({"hops": [
            {"addr": format!("{prefix}1")},
            {"branches": [{"addr": a, "delay": "1ms"}, {"addr": b, "delay": "5ms"}]},
            {"addr": format!("{prefix}3")}
        ]})
    };
    let net = TestNet::start(&json!({"hosts": {
        ECMP_HOSTS[0].0: {"path": path("198.18.10.", ECMP_HOSTS[0].1)},
        ECMP_HOSTS[1].0: {"path": path("2001:db8:10::", ECMP_HOSTS[1].1)}
    }}));
    for unprivileged in [false, true] {
        for (dst, branch_addrs) in ECMP_HOSTS {
            let branches: BTreeSet<IpAddr> = addrs(&branch_addrs).into_iter().collect();
            let dst_ip: IpAddr = dst.parse().unwrap();
            for run in 0..ECMP_RUNS {
                let who = format!("{protocol} {dst} unprivileged={unprivileged} run {run}");
                let before = net.log().len();
                let t = trace(
                    &net,
                    unprivileged,
                    &six_rounds(protocol, &["--flows", "4", dst]),
                );
                assert_eq!(t.code, Some(0), "{who}: {}", t.text);
                let hops = t.hops();
                assert_eq!(hops.len(), 4, "{who}: {}", t.text);
                assert_eq!(
                    hops[1].iter().copied().collect::<BTreeSet<_>>(),
                    branches,
                    "{who}: {}",
                    t.text
                );
                assert_eq!(t.path()["changes"], 0, "{who}: discovery is no change");
                // Per flow identity, one branch in every round.
                let mut branch_of_identity: BTreeMap<(u64, u64), BTreeSet<String>> =
                    BTreeMap::new();
                for h in t.of_type("hop").iter().filter(|h| h["ttl"] == 2) {
                    branch_of_identity
                        .entry((h["flow"].as_u64().unwrap(), h["identity"].as_u64().unwrap()))
                        .or_default()
                        .insert(h["responder"].as_str().unwrap().to_owned());
                }
                assert!(
                    branch_of_identity.values().all(|b| b.len() == 1),
                    "{who}: {branch_of_identity:?}"
                );
                // The responder saw one flow hash per identity, each on one branch.
                let log: Vec<_> = net.log()[before..]
                    .iter()
                    .filter(|e| e.dst == dst_ip)
                    .cloned()
                    .collect();
                let hashes: BTreeSet<&str> = log.iter().map(|e| e.flow.as_str()).collect();
                let identities: BTreeSet<(u64, u64)> = t
                    .of_type("hop")
                    .iter()
                    .map(|h| (h["flow"].as_u64().unwrap(), h["identity"].as_u64().unwrap()))
                    .collect();
                // Never more hashes than identities (an identity whose hash moved would add
                // one); fewer when the kernel gave a new identity the port of one closed a
                // round before.
                assert!(
                    (2..=identities.len()).contains(&hashes.len()),
                    "{who}: {} hashes, identities {identities:?}",
                    hashes.len()
                );
                let mut branch_of_hash: BTreeMap<&str, BTreeSet<IpAddr>> = BTreeMap::new();
                for e in log.iter().filter(|e| e.hop == Some(2)) {
                    branch_of_hash
                        .entry(e.flow.as_str())
                        .or_default()
                        .insert(e.hop_addr.unwrap());
                }
                assert!(
                    branch_of_hash.values().all(|b| b.len() == 1),
                    "{who}: {branch_of_hash:?}"
                );
                eprintln!(
                    "{who}: both branches, {} identities for 4 flows",
                    identities.len()
                );
            }
        }
    }
    // One flow: one branch, the same in every round, and one flow hash.
    let before = net.log().len();
    for (dst, _) in ECMP_HOSTS {
        let start = net.log().len();
        let one = trace(
            &net,
            false,
            &["--protocol", protocol, "-c", "5", "-i", "0.1", dst],
        );
        assert_eq!(one.code, Some(0), "{}", one.text);
        let seen = one.at_ttl(2, "responder");
        assert_eq!(seen.len(), 1, "{}", one.text);
        assert!(one.of_type("hop").iter().all(|h| h["identity"] == 0));
        let hashes: BTreeSet<String> = net.log()[start..].iter().map(|e| e.flow.clone()).collect();
        assert_eq!(hashes.len(), 1, "{dst}: {hashes:?}");
        assert_eq!(one.path()["changes"], 0);
    }
    (net, before)
}
