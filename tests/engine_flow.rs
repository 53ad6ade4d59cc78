//! TCP and UDP probes through the real engine against loopback (127.0.0.1 and ::1): an open
//! TCP port answers, a closed one refuses, a closed UDP port answers with port unreachable,
//! pingscope's own UDP echo responder echoes; each probe settles once, and no socket of the
//! probes is left behind. None of this needs root.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pingscope::engine::{
    Engine, EventKind, EventSink, Pinger, ProbeEvent, ProbeSpec, ReplyInfo, SocketOptions,
    Transport, UdpMode,
};
use pingscope::udp_echo::{self, EchoCounters};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

fn spec(ip: IpAddr, transport: Transport, timeout: Duration) -> ProbeSpec {
    ProbeSpec {
        ip,
        transport,
        size: 56,
        timeout,
        options: SocketOptions::default(),
    }
}

fn udp_to(port: u16, mode: UdpMode) -> Transport {
    Transport::Udp { port, mode }
}

/// Each event with its reply; fails on an event that is not a reply.
fn replies(ip: IpAddr, events: &[ProbeEvent]) -> Vec<(&ProbeEvent, &ReplyInfo)> {
    events
        .iter()
        .map(|ev| match &ev.kind {
            EventKind::Reply(r) => (ev, r),
            _ => panic!("{ip}: expected a reply, got {ev:?}"),
        })
        .collect()
}

fn families() -> Vec<IpAddr> {
    if support::require_ipv6_loopback() {
        vec![V4, V6]
    } else {
        vec![V4]
    }
}

/// Sends `n` probes 2 ms apart and collects every event until 1.5 s after the last.
async fn probe(engine: &Engine, spec: &ProbeSpec, n: u64) -> Vec<ProbeEvent> {
    let (tx, mut rx) = mpsc::channel(4 * n as usize + 16);
    let sink = EventSink::from(tx);
    for tag in 0..n {
        engine.send(spec, tag, &sink).expect("send");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(sink);
    let end = tokio::time::Instant::now() + Duration::from_millis(1500) + spec.timeout;
    let mut out = Vec::new();
    while let Ok(Some(ev)) = tokio::time::timeout_at(end, rx.recv()).await {
        out.push(ev);
    }
    out
}

/// Every tag got exactly one terminal event, first.
fn one_terminal_each(events: &[ProbeEvent], n: u64) {
    for tag in 0..n {
        let mine: Vec<&ProbeEvent> = events.iter().filter(|e| e.tag == tag).collect();
        let terminal = mine.iter().filter(|e| e.kind.is_terminal()).count();
        assert_eq!(terminal, 1, "tag {tag}: {mine:?}");
        assert!(mine[0].kind.is_terminal(), "tag {tag}: {mine:?}");
    }
}

/// Sockets of this process whose remote port is `port` (from /proc/net/tcp{,6} or udp{,6},
/// matched to this process's descriptors by inode).
fn sockets_to(proto: &str, port: u16) -> Vec<String> {
    let ours: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for file in [proto.to_owned(), format!("{proto}6")] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/net/{file}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let rem = cols.get(2).copied().unwrap_or("");
            let inode = cols.get(9).copied().unwrap_or("");
            if rem.rsplit(':').next() == Some(&format!("{port:04X}"))
                && ours.iter().any(|i| i == inode)
            {
                out.push(line.to_owned());
            }
        }
    }
    out
}

/// A UDP port on `ip` that nothing listens on (bound once, then released).
fn closed_udp_port(ip: IpAddr) -> u16 {
    UdpSocket::bind(SocketAddr::new(ip, 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("bind")
}

fn engine() -> Arc<Engine> {
    Engine::lazy(Default::default()).expect("engine")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_open_port_replies_with_the_kernels_rtt_and_leaves_nothing() {
    let engine = engine();
    for ip in families() {
        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).expect("listen");
        let port = listener.local_addr().unwrap().port();
        let s = spec(ip, Transport::Tcp { port }, Duration::from_millis(500));
        let events = probe(&engine, &s, 50).await;
        one_terminal_each(&events, 50);
        for (ev, r) in replies(ip, &events) {
            assert!(!r.refused, "{ev:?}");
            assert!(
                r.rtt > Duration::ZERO && r.rtt < Duration::from_millis(100),
                "{ip}: {:?}",
                r.rtt
            );
        }
        assert_eq!(engine.in_flight(), 0);
        // Every handshake was reset at once: no socket of ours to the port, and the listener's
        // backlog holds only connections already reset.
        assert_eq!(
            sockets_to("tcp", port),
            Vec::<String>::new(),
            "{ip}: leftover sockets"
        );
        drop(listener);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_closed_port_is_refused() {
    let engine = engine();
    for ip in families() {
        let port = support::free_port();
        let s = spec(ip, Transport::Tcp { port }, Duration::from_millis(500));
        let events = probe(&engine, &s, 20).await;
        one_terminal_each(&events, 20);
        assert!(
            events
                .iter()
                .all(|e| matches!(&e.kind, EventKind::Reply(r) if r.refused)),
            "{ip}: {events:?}"
        );
    }
    assert_eq!(engine.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_closed_port_answers_with_port_unreachable() {
    let engine = engine();
    for ip in families() {
        let port = closed_udp_port(ip);
        let udp = udp_to(port, UdpMode::Closed);
        let events = probe(&engine, &spec(ip, udp, Duration::from_millis(500)), 20).await;
        one_terminal_each(&events, 20);
        for (_, r) in replies(ip, &events) {
            assert!(r.rtt < Duration::from_millis(100), "{ip}: {:?}", r.rtt);
        }
        // The same port probed in echo mode: port unreachable is an error there.
        let echo = udp_to(port, UdpMode::Echo);
        let events = probe(&engine, &spec(ip, echo, Duration::from_millis(500)), 5).await;
        one_terminal_each(&events, 5);
        assert!(
            events
                .iter()
                .all(|e| matches!(e.kind, EventKind::IcmpError(_))),
            "{ip}: {events:?}"
        );
    }
    assert_eq!(engine.in_flight(), 0);
    let stats = engine.timestamp_stats().expect("stats");
    let fallbacks: u64 = stats.rx_fallbacks.iter().map(|(_, n)| n).sum();
    // The first answer after the machine's first timestamping socket opens can come without
    // an RX timestamp (the kernel enables them through deferred work); none after it.
    assert!(fallbacks <= 1, "every UDP RTT from kernel RX: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_echo_against_our_responder_and_silence() {
    let engine = engine();
    for ip in families() {
        let sock = udp_echo::bind(SocketAddr::new(ip, 0)).await.expect("bind");
        let port = sock.local_addr().unwrap().port();
        let counters = Arc::new(EchoCounters::default());
        let stop = CancellationToken::new();
        tokio::spawn(udp_echo::serve(sock, counters.clone(), stop.clone()));
        let echo = udp_to(port, UdpMode::Echo);
        let events = probe(&engine, &spec(ip, echo, Duration::from_millis(500)), 50).await;
        one_terminal_each(&events, 50);
        for (_, r) in replies(ip, &events) {
            assert_eq!(r.size, 56);
        }
        assert_eq!(counters.answered.load(Ordering::Relaxed), 50);
        assert_eq!(
            sockets_to("udp", port),
            Vec::<String>::new(),
            "{ip}: leftover sockets"
        );
        stop.cancel();
        // A silent port (bound, never read): every probe times out at its deadline.
        let silent = UdpSocket::bind(SocketAddr::new(ip, 0)).expect("bind");
        let port = silent.local_addr().unwrap().port();
        let udp = udp_to(port, UdpMode::Echo);
        let events = probe(&engine, &spec(ip, udp, Duration::from_millis(200)), 5).await;
        one_terminal_each(&events, 5);
        assert!(
            events.iter().all(|e| e.kind == EventKind::Timeout),
            "{events:?}"
        );
    }
    assert_eq!(engine.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_responder_ignores_what_is_not_a_probe() {
    let sock = udp_echo::bind(SocketAddr::new(V4, 0)).await.expect("bind");
    let addr = sock.local_addr().unwrap();
    let counters = Arc::new(EchoCounters::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn(udp_echo::serve(sock, counters.clone(), stop.clone()));
    let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let good = pingscope::engine::udp::echo_request(7, 1, 64);
    let bad = support::udp_echo_junk();
    // Bounded: 10,000 datagrams, none answered. In batches of 50, each read before the next
    // is sent, so that the socket's receive buffer never drops one (every datagram is seen).
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    for i in 0..10_000 {
        client.send_to(&bad[i % bad.len()], addr).unwrap();
        if (i + 1) % 50 == 0 {
            while counters.ignored.load(Ordering::Relaxed) < (i + 1) as u64 {
                assert!(
                    tokio::time::Instant::now() < end,
                    "responder stalled at {i}"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    let mut buf = [0u8; 10_000];
    assert!(client.recv_from(&mut buf).is_err(), "nothing answered");
    assert_eq!(counters.ignored.load(Ordering::Relaxed), 10_000);
    assert_eq!(counters.answered.load(Ordering::Relaxed), 0);
    client.send_to(&good, addr).unwrap();
    let (n, _) = client.recv_from(&mut buf).expect("the probe is echoed");
    assert_eq!(n, good.len());
    assert_eq!(pingscope::engine::udp::echo_reply_id(&buf[..n]), Some(7));
    assert!(!task.is_finished());
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_echo_late_and_duplicate_answers() {
    let engine = engine();
    // A responder that answers each probe twice, 150 ms late for a 100 ms timeout, then once
    // more at once for a 500 ms timeout (a duplicate).
    let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = server.local_addr().unwrap().port();
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let thread = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut held = Vec::new();
        for i in 0..10 {
            let Ok((n, from)) = server.recv_from(&mut buf) else {
                return;
            };
            assert!(pingscope::engine::udp::answer_echo(&mut buf[..n]));
            held.push((buf[..n].to_vec(), from));
            if i == 4 {
                std::thread::sleep(Duration::from_millis(150));
            }
            if i >= 4 {
                for (d, from) in held.drain(..) {
                    server.send_to(&d, from).unwrap();
                    server.send_to(&d, from).unwrap();
                }
            }
        }
    });
    let echo = udp_to(port, UdpMode::Echo);
    for (timeout, first, second) in [(100, "Timeout", "Late"), (500, "Reply", "Duplicate")] {
        let events = probe(&engine, &spec(V4, echo, Duration::from_millis(timeout)), 5).await;
        one_terminal_each(&events, 5);
        for tag in 0..5 {
            let kinds: Vec<String> = events
                .iter()
                .filter(|e| e.tag == tag)
                .map(|e| {
                    format!("{:?}", e.kind)
                        .split('(')
                        .next()
                        .unwrap()
                        .to_owned()
                })
                .collect();
            assert_eq!(kinds[..2], [first, second], "tag {tag}: {kinds:?}");
        }
    }
    thread.join().unwrap();
}
