//! TCP and UDP probes through the test network (issue 16), IPv4 and IPv6: RTT against the
//! responder's truth, loss equal to the responder's drops and inside the 99.9 % binomial
//! interval, refused and silent ports, late answers, and 1,000 TCP probes that leave no
//! half-open connection on either side. The engine runs on the test thread inside the
//! namespace (`TestNet::enter`), so every socket it opens lives there.
//!
//! Needs root (namespaces); fails in CI without it.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use pingscope::engine::{
    Engine, EventKind, EventSink, Pinger, ProbeEvent, ProbeSpec, SocketOptions, Transport, UdpMode,
};
use serde_json::json;
use support::{LogEntry, TestNet};
use tokio::sync::mpsc;

const HOSTS: [&str; 2] = ["198.18.0.20", "2001:db8::20"];
const LOSSY: [&str; 2] = ["198.18.0.30", "2001:db8::30"];
const SLOW: [&str; 2] = ["198.18.0.40", "2001:db8::40"];

fn profile() -> serde_json::Value {
    let ports = |extra: serde_json::Value| {
        let mut h = json!({
            "tcp": {"ports": {"80": "open", "81": "refused"}, "default": "silent"},
            "udp": {"ports": {"7": "echo", "10": "silent"}, "default": "unreachable"}
        });
        for (k, v) in extra.as_object().unwrap() {
            h[k] = v.clone();
        }
        h
    };
    let mut hosts = serde_json::Map::new();
    for h in HOSTS {
        hosts.insert(h.into(), ports(json!({"delay": "20ms"})));
    }
    for h in LOSSY {
        hosts.insert(h.into(), ports(json!({"delay": "2ms", "loss": 0.1})));
    }
    for h in SLOW {
        hosts.insert(h.into(), ports(json!({"delay": "300ms"})));
    }
    json!({"seed": 16, "hosts": hosts})
}

/// The test network, entered, with a runtime and an engine on this thread; `None` where the test
/// may not run (see `support::require_root`).
fn start() -> Option<(TestNet, tokio::runtime::Runtime, std::sync::Arc<Engine>)> {
    let net = TestNet::start_and_enter(&profile())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let engine = rt.block_on(async { Engine::lazy(Default::default()).unwrap() });
    Some((net, rt, engine))
}

fn spec(ip: &str, transport: Transport, timeout_ms: u64) -> ProbeSpec {
    ProbeSpec {
        ip: ip.parse().unwrap(),
        transport,
        size: 56,
        timeout: Duration::from_millis(timeout_ms),
        options: SocketOptions::default(),
    }
}

const TCP_OPEN: Transport = Transport::Tcp { port: 80 };
const TCP_REFUSED: Transport = Transport::Tcp { port: 81 };
const TCP_SILENT: Transport = Transport::Tcp { port: 82 };
const UDP_ECHO: Transport = Transport::Udp {
    port: 7,
    mode: UdpMode::Echo,
};
const UDP_SILENT: Transport = Transport::Udp {
    port: 10,
    mode: UdpMode::Echo,
};
const UDP_CLOSED: Transport = Transport::Udp {
    port: 33434,
    mode: UdpMode::Closed,
};

/// Sends `n` probes `gap_ms` apart and collects every event until 1.2 s after the last
/// deadline (past every late window). Tags are 0..n in send order.
async fn probe(engine: &Engine, spec: &ProbeSpec, n: u64, gap_ms: u64) -> Vec<ProbeEvent> {
    let (tx, mut rx) = mpsc::channel(4 * n as usize + 16);
    let sink = EventSink::from(tx);
    let mut tick = tokio::time::interval(Duration::from_millis(gap_ms));
    for tag in 0..n {
        tick.tick().await;
        engine.send(spec, tag, &sink).expect("send");
    }
    drop(sink);
    let end = tokio::time::Instant::now() + spec.timeout + Duration::from_millis(1200);
    let mut out = Vec::new();
    while let Ok(Some(ev)) = tokio::time::timeout_at(end, rx.recv()).await {
        out.push(ev);
    }
    out
}

/// The terminal event of each tag, in tag order; each tag has exactly one.
fn terminals(events: &[ProbeEvent], n: u64) -> Vec<&EventKind> {
    (0..n)
        .map(|tag| {
            let t: Vec<&EventKind> = events
                .iter()
                .filter(|e| e.tag == tag && e.kind.is_terminal())
                .map(|e| &e.kind)
                .collect();
            assert_eq!(t.len(), 1, "tag {tag}: {events:?}");
            t[0]
        })
        .collect()
}

/// Log entries of one protocol and destination port towards `ip`, with this action.
fn entries<'a>(
    log: &'a [LogEntry],
    ip: &str,
    proto: &str,
    dport: u16,
    action: &str,
) -> Vec<&'a LogEntry> {
    let ip: IpAddr = ip.parse().unwrap();
    log.iter()
        .filter(|e| e.dst == ip && e.proto == proto && e.dport == Some(dport) && e.action == action)
        .collect()
}

/// The responder's hold time of each answer matching [`entries`] logged after the first `from`
/// entries, once there are `n` of them (bounded, 5 s): the responder logs an answer just after
/// sending it, so the last line can trail the answer the prober already has.
fn truth_after(
    net: &TestNet,
    from: usize,
    ip: &str,
    (proto, dport, action): (&str, u16, &str),
    n: usize,
) -> Vec<f64> {
    let mut delays = Vec::new();
    support::wait_until(Duration::from_secs(5), || {
        let log = net.log();
        delays = entries(
            log.get(from..).unwrap_or_default(),
            ip,
            proto,
            dport,
            action,
        )
        .iter()
        .map(|e| e.actual_delay_ns.unwrap() as f64 / 1e9)
        .collect();
        delays.len() >= n
    });
    delays
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// |RTT − truth| of each probe, in µs, as one line: p50, p99 and max (nearest rank).
fn against_truth(label: &str, rtts: &[f64], truth: &[f64]) -> String {
    let mut errs: Vec<f64> = rtts
        .iter()
        .zip(truth)
        .map(|(r, t)| (r - t).abs() * 1e6)
        .collect();
    errs.sort_by(f64::total_cmp);
    format!(
        "{label}: |RTT - truth| µs p50 {:.1} p99 {:.1} max {:.1}",
        percentile(&errs, 0.5),
        percentile(&errs, 0.99),
        errs[errs.len() - 1]
    )
}

/// How many of a run's RTTs may lie below `delay` by more than the arrival lead, in hundredths.
const STOLEN_PERCENT: usize = 2;
/// No RTT may lie further below `delay` than this: a stamp taken for the wrong probe (they go
/// out 10 ms apart) or in user space after a preemption would.
const FLOOR_GROSS: f64 = 0.005;

/// The floor of a run's RTTs against the delay the responder held each answer: all but
/// [`STOLEN_PERCENT`] % of them (at least one) at least `delay` less the arrival lead, and
/// every one at least `delay` less [`FLOOR_GROSS`]. A systematic error (a transmit stamp taken
/// late on every probe) shows on most probes; one vCPU stolen between the test network's
/// arrival stamp and the prober's transmit stamp shows on one (seen once in CI on 2026-12-04:
/// 1.36 ms over 600 probes, where the capture of 2026-12-03 had seen 272 µs at worst).
fn check_floor(label: &str, rtts: &[f64], delay: f64) {
    let lead = support::ARRIVAL_LEAD.as_secs_f64();
    let below: Vec<f64> = rtts.iter().copied().filter(|r| *r < delay - lead).collect();
    let allowed = (rtts.len() * STOLEN_PERCENT).div_ceil(100);
    assert!(
        below.len() <= allowed,
        "{label}: {} RTTs below the {delay} s delay less the arrival lead (at most {allowed}): {below:?}",
        below.len()
    );
    let min = rtts.iter().copied().fold(f64::MAX, f64::min);
    assert!(
        min >= delay - FLOOR_GROSS,
        "{label}: an RTT {min} more than {FLOOR_GROSS} s below the {delay} s delay"
    );
}

#[test]
fn the_floor_check_takes_one_stolen_vcpu_but_not_a_late_stamp_on_every_probe() {
    let fails =
        |rtts: Vec<f64>| std::panic::catch_unwind(|| check_floor("t", &rtts, 0.020)).is_err();
    let mut rtts = vec![0.0201; 100];
    assert!(!fails(rtts.clone()));
    rtts[7] = 0.0186;
    assert!(
        !fails(rtts.clone()),
        "one probe 1.4 ms short: a stolen vCPU"
    );
    rtts[8] = 0.0187;
    assert!(!fails(rtts.clone()), "two of 100");
    rtts[9] = 0.0188;
    assert!(fails(rtts.clone()), "three of 100");
    assert!(fails(vec![0.0194; 100]), "every probe 0.6 ms short");
    let mut one = vec![0.0201; 100];
    one[3] = 0.0101;
    assert!(fails(one), "one probe 10 ms short: the wrong probe's stamp");
}

#[test]
fn rtt_against_the_truth_refused_silent_and_closed() {
    let Some((net, rt, engine)) = start() else {
        return;
    };
    let mut report = Vec::new();
    for host in HOSTS {
        for (name, transport, action, proto) in [
            ("tcp open", TCP_OPEN, "syn_ack", "tcp"),
            ("udp echo", UDP_ECHO, "echoed", "udp"),
            ("udp closed", UDP_CLOSED, "port_unreachable", "udp"),
        ] {
            let n = 100;
            let events = rt.block_on(probe(&engine, &spec(host, transport, 500), n, 10));
            let rtts: Vec<f64> = terminals(&events, n)
                .into_iter()
                .map(|k| match k {
                    EventKind::Reply(r) => {
                        assert!(!r.refused, "{host} {name}: {r:?}");
                        r.rtt.as_secs_f64()
                    }
                    other => panic!("{host} {name}: expected a reply, got {other:?}"),
                })
                .collect();
            let port = transport.port().unwrap();
            let truth = truth_after(&net, 0, host, (proto, port, action), rtts.len());
            assert_eq!(
                truth.len(),
                rtts.len(),
                "{host} {name}: one answer per probe"
            );
            let err = net.timing_error();
            let mean = rtts.iter().sum::<f64>() / rtts.len() as f64;
            check_floor(&format!("{host} {name}"), &rtts, 0.020);
            assert!(
                mean - 0.020 <= err.max.as_secs_f64() + 0.001,
                "{host} {name}: mean {mean} beyond the responder's error {err:?} + 1 ms"
            );
            // Each probe's error against the time the responder held it (the log is in
            // arrival order, the probes 10 ms apart: the same order).
            report.push(against_truth(&format!("{host} {name}"), &rtts, &truth));
        }
        // User-space connect timing of the same port, for comparison (what a probe that
        // timed its own wake-up would report).
        let addr = std::net::SocketAddr::new(host.parse().unwrap(), 80);
        let before = net.log().len();
        let mut user = Vec::new();
        for _ in 0..100 {
            let t0 = std::time::Instant::now();
            let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).unwrap();
            user.push(t0.elapsed().as_secs_f64());
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(s);
            std::thread::sleep(Duration::from_millis(10));
        }
        let truth = truth_after(&net, before, host, ("tcp", 80, "syn_ack"), user.len());
        let label = format!("{host} tcp user-space connect");
        report.push(against_truth(&label, &user, &truth));

        for (name, transport, want) in [
            ("tcp refused", TCP_REFUSED, "refused"),
            ("tcp silent", TCP_SILENT, "timeout"),
            ("udp silent", UDP_SILENT, "timeout"),
        ] {
            let events = rt.block_on(probe(&engine, &spec(host, transport, 300), 10, 10));
            for k in terminals(&events, 10) {
                let got = match k {
                    EventKind::Reply(r) if r.refused => "refused",
                    EventKind::Timeout => "timeout",
                    other => panic!("{host} {name}: {other:?}"),
                };
                assert_eq!(got, want, "{host} {name}");
            }
        }
        // A silent TCP port sees one SYN per probe: none resent.
        let syns = entries(&net.log(), host, "tcp", 82, "silent").len();
        assert_eq!(syns, 10, "{host}: SYNs to the silent port");
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn loss_is_the_responders_drops_and_late_answers_are_late() {
    let Some((net, rt, engine)) = start() else {
        return;
    };
    let n = 400u64;
    let (lo, hi) = support::binomial_interval(n as u32, 0.1);
    for host in LOSSY {
        for (name, transport, proto) in [("tcp", TCP_OPEN, "tcp"), ("udp echo", UDP_ECHO, "udp")] {
            let events = rt.block_on(probe(&engine, &spec(host, transport, 500), n, 5));
            // Lost: timed out. A timeout answered later (late, under a load spike) was not
            // dropped by the responder, so the drops are the timeouts never answered.
            let late = events
                .iter()
                .filter(|e| matches!(e.kind, EventKind::Late(_)))
                .count() as u32;
            let lost = terminals(&events, n)
                .into_iter()
                .filter(|k| matches!(k, EventKind::Timeout))
                .count() as u32
                - late;
            let log = net.log();
            let dropped = entries(&log, host, proto, transport.port().unwrap(), "dropped").len();
            assert_eq!(
                lost as usize, dropped,
                "{host} {name}: lost vs the responder's drops"
            );
            assert!(
                (lo..=hi).contains(&lost),
                "{host} {name}: {lost} outside [{lo}, {hi}]"
            );
            eprintln!(
                "{host} {name}: {lost} of {n} lost, responder dropped {dropped}, interval [{lo}, {hi}], {late} late"
            );
        }
    }
    for host in SLOW {
        for (name, transport) in [("tcp", TCP_OPEN), ("udp echo", UDP_ECHO)] {
            let events = rt.block_on(probe(&engine, &spec(host, transport, 100), 5, 10));
            for tag in 0..5 {
                let kinds: Vec<&str> = events
                    .iter()
                    .filter(|e| e.tag == tag)
                    .map(|e| match &e.kind {
                        EventKind::Timeout => "timeout",
                        EventKind::Late(r) => {
                            assert!(r.rtt >= Duration::from_millis(300), "{r:?}");
                            "late"
                        }
                        other => panic!("{host} {name}: {other:?}"),
                    })
                    .collect();
                assert_eq!(kinds, ["timeout", "late"], "{host} {name} tag {tag}");
            }
        }
    }
}

/// Sockets of this thread's namespace to `port`, from /proc/thread-self/net/tcp{,6}.
fn tcp_sockets_to(port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for f in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/thread-self/net/{f}")).unwrap();
        for line in text.lines().skip(1) {
            let rem = line.split_whitespace().nth(2).unwrap_or("");
            if rem.rsplit(':').next() == Some(&format!("{port:04X}")) {
                out.push(line.to_owned());
            }
        }
    }
    out
}

#[test]
fn a_thousand_tcp_probes_leave_nothing_half_open() {
    let Some((net, rt, engine)) = start() else {
        return;
    };
    let host = HOSTS[0];
    let n = 1000;
    let events = rt.block_on(probe(&engine, &spec(host, TCP_OPEN, 500), n, 2));
    assert!(
        terminals(&events, n)
            .iter()
            .all(|k| matches!(k, EventKind::Reply(_))),
        "every probe answered"
    );
    assert_eq!(
        tcp_sockets_to(80),
        Vec::<String>::new(),
        "leftover local sockets"
    );
    // Every handshake the responder accepted ends with our RST. A connection is a SYN-ACK and
    // what follows it from the same source port (the kernel may hand a port out again once
    // its connection was reset): exactly one per probe, so a resent SYN would show.
    let mut conns: Vec<Vec<String>> = Vec::new();
    let mut ports = 0;
    // Bounded: the responder logs as it goes, but a loaded machine may keep it behind a while.
    let done = support::wait_until(Duration::from_secs(10), || {
        conns.clear();
        let mut current: BTreeMap<u16, usize> = BTreeMap::new();
        for e in net
            .log()
            .iter()
            .filter(|e| e.proto == "tcp" && e.dport == Some(80))
        {
            let port = e.sport.unwrap();
            if e.action == "syn_ack" || !current.contains_key(&port) {
                current.insert(port, conns.len());
                conns.push(Vec::new());
            }
            conns[current[&port]].push(e.action.clone());
        }
        ports = current.len();
        conns.len() == n as usize && conns.iter().all(|a| a.last().is_some_and(|l| l == "rst"))
    });
    let open: Vec<_> = conns
        .iter()
        .filter(|a| a.last().is_none_or(|l| l != "rst"))
        .take(5)
        .collect();
    eprintln!("{} connections from {ports} source ports", conns.len());
    assert!(
        done,
        "{} connections from {ports} source ports, not torn down: {open:?}",
        conns.len()
    );
    assert!(
        conns.iter().all(|a| a[0] == "syn_ack"),
        "every connection opens with our one SYN's SYN-ACK"
    );
}

#[test]
fn tcp_probes_run_as_an_unprivileged_user() {
    let Some(net) = TestNet::start_if_root(&profile()) else {
        return;
    };
    let bin = net.dir().join("pingscope");
    std::fs::copy(env!("CARGO_BIN_EXE_pingscope"), &bin).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(net.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // No capabilities, and the namespace's default ping_group_range ("1 0": nobody may open
    // ICMP sockets): TCP and UDP need neither.
    let out = net
        .command("setpriv")
        .args(support::UNPRIVILEGED)
        .arg(&bin)
        .args([
            "ping", "--tcp", "80", "-c", "3", "-i", "0.05", HOSTS[0], HOSTS[1],
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("\"type\":\"reply\"").count(), 6, "{stdout}");
    assert!(!stdout.contains("refused"), "{stdout}");
    // A closed port answers with a RST: a reply, marked refused.
    let out = net
        .command("setpriv")
        .args(support::UNPRIVILEGED)
        .arg(&bin)
        .args(["ping", "--tcp", "81", "-c", "2", "-i", "0.05", HOSTS[0]])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert_eq!(stdout.matches("\"type\":\"reply\"").count(), 2, "{stdout}");
    assert_eq!(stdout.matches("\"refused\":true").count(), 2, "{stdout}");
}
