//! The engine's Paris-flow probes ([`Transport::IcmpFlow`], [`Transport::UdpFlow`]) on the wire,
//! against loopback: a raw socket beside the engine sees every request, so the test reads what
//! the kernel really sent (TTL / hop limit, identifier or ports, checksum) rather than what the
//! engine meant to send.
//!
//! Needs root (raw sockets). Without root the tests skip with a message, unless `CI` is set.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use pingscope::engine::clock::Fallback;
use pingscope::engine::icmp::{EngineConfig, IcmpEngine, SocketPreference};
use pingscope::engine::packet;
use pingscope::engine::{
    Engine, EventKind, EventSink, Pinger, ProbeEvent, ProbeSpec, SocketOptions, Transport,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::mpsc;

/// One echo request seen on the wire: (TTL or hop limit, identifier, checksum, sequence); one
/// UDP datagram: (TTL or hop limit, source port, sum of the payload, destination port).
type Seen = (u8, u16, u16, u16);

fn sniffer(v6: bool, udp: bool) -> Socket {
    let s = match (v6, udp) {
        (true, false) => Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)),
        (false, false) => Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)),
        (true, true) => Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::UDP)),
        (false, true) => Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP)),
    }
    .expect("raw sniffer socket");
    if v6 {
        setsockopt(&s, sockopt::Ipv6RecvHopLimit, &true).expect("IPV6_RECVHOPLIMIT");
    }
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    s
}

/// Reads echo requests (UDP datagrams with `udp`) to `dst` until `n` were seen or two seconds
/// passed.
fn sniff(s: &Socket, v6: bool, udp: bool, dst: IpAddr, n: usize) -> Vec<Seen> {
    let end = Instant::now() + Duration::from_secs(2);
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while out.len() < n && Instant::now() < end {
        let mut cmsg = nix::cmsg_space!(libc::c_int);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let Ok(msg) =
            recvmsg::<SockaddrStorage>(s.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())
        else {
            continue;
        };
        let len = msg.bytes;
        let mut hops = None;
        for c in msg.cmsgs().into_iter().flatten() {
            if let ControlMessageOwned::Ipv6HopLimit(h) = c {
                hops = u8::try_from(h).ok();
            }
        }
        let from = msg.address.and_then(|a| {
            a.as_sockaddr_in6()
                .map(|a| IpAddr::V6(a.ip()))
                .or_else(|| a.as_sockaddr_in().map(|a| IpAddr::V4(a.ip())))
        });
        let data = &buf[..len];
        let (ttl, icmp) = if v6 {
            (hops.unwrap_or(0), data)
        } else {
            let ihl = usize::from(data[0] & 0x0f) * 4;
            let to = IpAddr::V4(Ipv4Addr::new(data[16], data[17], data[18], data[19]));
            if to != dst {
                continue;
            }
            (data[8], &data[ihl..])
        };
        if v6 && from != Some(dst) {
            continue;
        }
        let be = |i: usize| u16::from_be_bytes([icmp[i], icmp[i + 1]]);
        if udp {
            // Loopback leaves the checksum field partial (offloaded); the payload's sum is
            // what the checksum adds to the flow's constant header and pseudo-header.
            if icmp.len() >= 8 {
                out.push((ttl, be(0), packet::ones_sum(&icmp[8..]), be(2)));
            }
            continue;
        }
        let request = if v6 { 128 } else { 8 };
        if icmp.len() < 8 || icmp[0] != request {
            continue;
        }
        out.push((ttl, be(4), be(2), be(6)));
    }
    out
}

async fn flows_on_the_wire(preference: SocketPreference, dst: IpAddr) {
    let v6 = dst.is_ipv6();
    let engine = IcmpEngine::new(EngineConfig {
        socket: preference,
        ..EngineConfig::default()
    })
    .expect("engine");
    let sniff_socket = sniffer(v6, false);
    let (tx, mut rx) = mpsc::channel(256);
    let sink = EventSink::from(tx);
    let sockets_before = engine.sockets().len();
    let sent = send_flows(&*engine, dst, &sink, |flow, ttl| Transport::IcmpFlow {
        flow,
        ttl,
    });
    let seen = tokio::task::spawn_blocking(move || sniff(&sniff_socket, v6, false, dst, 24))
        .await
        .expect("sniffer");
    assert_eq!(seen.len(), 24, "{preference:?} {dst}: saw {seen:?}");
    // Per flow (told apart by identifier): one checksum, every TTL in order per round.
    let mut flows: BTreeMap<u16, (BTreeSet<u16>, Vec<u8>)> = BTreeMap::new();
    for (ttl, ident, sum, _) in &seen {
        let f = flows.entry(*ident).or_default();
        f.0.insert(*sum);
        f.1.push(*ttl);
    }
    assert_eq!(
        flows.len(),
        2,
        "{preference:?} {dst}: two identifiers: {seen:?}"
    );
    let sums: BTreeSet<u16> = flows.values().flat_map(|f| f.0.iter().copied()).collect();
    assert_eq!(
        sums.len(),
        2,
        "{preference:?} {dst}: one checksum per flow: {seen:?}"
    );
    for (_, ttls) in flows.values() {
        assert_eq!(
            ttls,
            &[2, 3, 4, 5, 2, 3, 4, 5, 2, 3, 4, 5],
            "{preference:?} {dst}"
        );
    }
    assert_eq!(
        engine.sockets().len(),
        sockets_before + 2,
        "one socket per flow, not per TTL"
    );
    let what = format!("{preference:?} {dst}");
    await_replies(&mut rx, sent, &what).await;
}

/// Sends 3 rounds of flows 7 and 8 at TTLs 2 to 5 (on sockets whose own TTL is 64); returns
/// how many.
fn send_flows(
    engine: &dyn Pinger,
    dst: IpAddr,
    sink: &EventSink,
    transport: impl Fn(u16, u8) -> Transport,
) -> u64 {
    let mut sent = 0u64;
    for _round in 0..3 {
        for flow in [7u16, 8] {
            for ttl in [2u8, 3, 4, 5] {
                let spec = ProbeSpec {
                    ip: dst,
                    transport: transport(flow, ttl),
                    size: 56,
                    timeout: Duration::from_secs(2),
                    options: SocketOptions {
                        ttl: Some(64),
                        ..SocketOptions::default()
                    },
                };
                engine.send(&spec, sent, sink).expect("send");
                sent += 1;
            }
        }
    }
    sent
}

/// Waits (at most 3 s) for `sent` events, every one a reply.
async fn await_replies(rx: &mut mpsc::Receiver<ProbeEvent>, sent: u64, what: &str) {
    let mut replies = 0;
    let end = tokio::time::Instant::now() + Duration::from_secs(3);
    while replies < sent {
        match tokio::time::timeout_at(end, rx.recv()).await {
            Ok(Some(ev)) => {
                assert!(matches!(ev.kind, EventKind::Reply(_)), "{what}: {ev:?}");
                replies += 1;
            }
            _ => break,
        }
    }
    assert_eq!(replies, sent, "{what}: every flow probe answered");
}

/// Runs the future `f` makes on a current-thread runtime, on a thread of its own in a new
/// network namespace (only `lo`, up, with datagram ICMP sockets allowed), so the sockets it
/// opens and the traffic it sends stay in there.
fn in_namespace<F: std::future::Future<Output = ()>>(f: impl FnOnce() -> F + Send + 'static) {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        let up = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("run ip");
        assert!(up.success(), "ip link set lo up");
        std::fs::write(
            "/proc/thread-self/net/../../sys/net/ipv4/ping_group_range",
            "0 2147483647",
        )
        .or_else(|_| std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 2147483647"))
        .expect("allow datagram ICMP sockets in the namespace");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f())
    })
    .join()
    .expect("namespace thread");
}

#[test]
fn flow_probes_keep_identifier_and_checksum_and_set_ttl_per_packet() {
    if !support::require_root() {
        return;
    }
    in_namespace(|| async {
        for preference in [SocketPreference::Dgram, SocketPreference::Raw] {
            flows_on_the_wire(preference, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 77))).await;
            flows_on_the_wire(preference, IpAddr::V6(Ipv6Addr::LOCALHOST)).await;
        }
    });
}

/// UDP flow probes to a closed port on loopback: per flow one source port, traceroute's
/// destination port and one payload sum (so one checksum), the TTL per packet, every probe answered by the port
/// unreachable, with kernel RX and TX timestamps (no fallback counted).
async fn udp_flows_on_the_wire(dst: IpAddr) {
    let v6 = dst.is_ipv6();
    let engine = Engine::lazy(EngineConfig::default()).expect("engine");
    let sniff_socket = sniffer(v6, true);
    let (tx, mut rx) = mpsc::channel(256);
    let sink = EventSink::from(tx);
    let sent = send_flows(&*engine, dst, &sink, |flow, ttl| Transport::UdpFlow {
        flow,
        ttl,
        port: 33434,
    });
    let seen = tokio::task::spawn_blocking(move || sniff(&sniff_socket, v6, true, dst, 24))
        .await
        .expect("sniffer");
    assert_eq!(seen.len(), 24, "{dst}: saw {seen:?}");
    // Per source port: the (payload sum, destination port) pairs, and the TTLs in order.
    type Flow = (BTreeSet<(u16, u16)>, Vec<u8>);
    let mut flows: BTreeMap<u16, Flow> = BTreeMap::new();
    for (ttl, sport, sum, dport) in &seen {
        let f = flows.entry(*sport).or_default();
        f.0.insert((*sum, *dport));
        f.1.push(*ttl);
    }
    assert_eq!(flows.len(), 2, "{dst}: two source ports: {seen:?}");
    for (sums, ttls) in flows.values() {
        assert_eq!(sums.len(), 1, "{dst}: one payload sum per flow: {seen:?}");
        assert_eq!(sums.first().unwrap().1, 33434, "{dst}");
        assert_eq!(ttls, &[2, 3, 4, 5, 2, 3, 4, 5, 2, 3, 4, 5], "{dst}");
    }
    await_replies(&mut rx, sent, &dst.to_string()).await;
    let stats = engine.timestamp_stats().expect("timestamp stats");
    let fell_back = |list: &[(Fallback, u64)]| list.iter().map(|(_, n)| n).sum::<u64>();
    assert_eq!(
        (
            fell_back(&stats.rx_fallbacks),
            fell_back(&stats.tx_fallbacks)
        ),
        (0, 0),
        "{dst}: kernel timestamps on both sides: {stats:?}"
    );
}

#[test]
fn udp_flow_probes_keep_ports_and_checksum_and_set_ttl_per_packet() {
    if !support::require_root() {
        return;
    }
    in_namespace(|| async {
        udp_flows_on_the_wire(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 77))).await;
        udp_flows_on_the_wire(IpAddr::V6(Ipv6Addr::LOCALHOST)).await;
    });
}

/// Descriptors the process has open.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Waits (at most 3 s: a UDP flow socket's probes keep it for their timeout and late window,
/// 1.3 s here) until the process has `want` descriptors open; returns the count.
async fn fds_become(want: usize) -> usize {
    let end = tokio::time::Instant::now() + Duration::from_secs(3);
    while open_fds() != want && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    open_fds()
}

/// Flow sockets held by path tracers ([`Pinger::hold_flow`]): one held twice stays open until
/// its second release, each closes at its last, and a flow sent to again opens a new socket.
/// `fds` is the descriptors of one flow socket: 2 for a raw ICMP socket with its send twin.
async fn held_flow_sockets_close_at_the_last_release(
    engine: &dyn Pinger,
    dst: IpAddr,
    transport: fn(u16) -> Transport,
    fds: usize,
) {
    let spec = |flow| ProbeSpec {
        ip: dst,
        transport: transport(flow),
        size: 56,
        timeout: Duration::from_millis(300),
        options: SocketOptions::default(),
    };
    let (tx, mut rx) = mpsc::channel(16);
    let sink = EventSink::from(tx);
    for flow in [3, 3, 4] {
        engine.hold_flow(&spec(flow));
    }
    // A first probe of each (the engine's own first sockets open here too), then the count.
    for (n, flow) in [3u16, 4].into_iter().enumerate() {
        engine.send(&spec(flow), n as u64, &sink).expect("send");
    }
    await_replies(&mut rx, 2, &format!("{dst}: held flows")).await;
    let open = open_fds();
    engine.release_flow(&spec(3));
    engine.release_flow(&spec(4));
    assert_eq!(
        fds_become(open - fds).await,
        open - fds,
        "{dst}: flow 4 closed"
    );
    // Flow 3's probe was answered with flow 4's: its socket would have closed by now.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(open_fds(), open - fds, "{dst}: flow 3 still held once");
    engine.release_flow(&spec(3));
    assert_eq!(
        fds_become(open - 2 * fds).await,
        open - 2 * fds,
        "{dst}: flow 3 closed"
    );
    // A release without a hold changes nothing; a send opens the flow's socket again.
    engine.release_flow(&spec(3));
    engine.send(&spec(3), 9, &sink).expect("send again");
    await_replies(&mut rx, 1, &format!("{dst}: flow 3 again")).await;
    assert_eq!(open_fds(), open - fds, "{dst}: flow 3 open again");
}

#[test]
fn held_flow_sockets_close_at_their_last_release() {
    if !support::require_root() {
        return;
    }
    let icmp = |flow| Transport::IcmpFlow { flow, ttl: 64 };
    let udp = |flow| Transport::UdpFlow {
        flow,
        ttl: 64,
        port: 33434,
    };
    for dst in [
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 77)),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ] {
        // A runtime each, so no other engine's sockets are closing meanwhile.
        for preference in [SocketPreference::Dgram, SocketPreference::Raw] {
            in_namespace(move || async move {
                let config = EngineConfig {
                    socket: preference,
                    ..EngineConfig::default()
                };
                let engine = Engine::new(config).expect("engine");
                // A raw socket with kernel TX timestamps sends from a twin (engine::icmp).
                let fds = if preference == SocketPreference::Raw {
                    2
                } else {
                    1
                };
                held_flow_sockets_close_at_the_last_release(&*engine, dst, icmp, fds).await;
            });
        }
        in_namespace(move || async move {
            let engine = Engine::lazy(EngineConfig::default()).expect("engine");
            held_flow_sockets_close_at_the_last_release(&*engine, dst, udp, 1).await;
        });
    }
}
