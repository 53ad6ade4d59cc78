//! The engine's Paris-flow probes ([`Transport::IcmpFlow`]) on the wire, against loopback:
//! a raw socket beside the engine sees every request, so the test reads what the kernel really
//! sent (TTL / hop limit, identifier, checksum) rather than what the engine meant to send.
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
use pingscope::engine::icmp::{EngineConfig, IcmpEngine, SocketPreference};
use pingscope::engine::{EventKind, EventSink, Pinger, ProbeSpec, SocketOptions, Transport};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::mpsc;

/// One echo request seen on the wire: (TTL or hop limit, identifier, checksum, sequence).
type Seen = (u8, u16, u16, u16);

fn sniffer(v6: bool) -> Socket {
    let s = if v6 {
        Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
    } else {
        Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
    }
    .expect("raw sniffer socket");
    if v6 {
        setsockopt(&s, sockopt::Ipv6RecvHopLimit, &true).expect("IPV6_RECVHOPLIMIT");
    }
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    s
}

/// Reads echo requests to `dst` until `n` were seen or two seconds passed.
fn sniff(s: &Socket, v6: bool, dst: IpAddr, n: usize) -> Vec<Seen> {
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
        let request = if v6 { 128 } else { 8 };
        if icmp.len() < 8 || icmp[0] != request {
            continue;
        }
        let be = |i: usize| u16::from_be_bytes([icmp[i], icmp[i + 1]]);
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
    let sniff_socket = sniffer(v6);
    let (tx, mut rx) = mpsc::channel(256);
    let sink = EventSink::from(tx);
    let sockets_before = engine.sockets().len();
    let mut sent = 0u64;
    for _round in 0..3 {
        for flow in [7u16, 8] {
            for ttl in [2u8, 3, 4, 5] {
                let spec = ProbeSpec {
                    ip: dst,
                    transport: Transport::IcmpFlow { flow, ttl },
                    size: 56,
                    timeout: Duration::from_secs(2),
                    options: SocketOptions {
                        ttl: Some(64),
                        ..SocketOptions::default()
                    },
                };
                engine.send(&spec, u64::from(flow), &sink).expect("send");
                sent += 1;
            }
        }
    }
    let seen = tokio::task::spawn_blocking(move || sniff(&sniff_socket, v6, dst, 24))
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
    let mut replies = 0;
    let end = tokio::time::Instant::now() + Duration::from_secs(3);
    while replies < sent {
        match tokio::time::timeout_at(end, rx.recv()).await {
            Ok(Some(ev)) => {
                assert!(matches!(ev.kind, EventKind::Reply(_)), "{ev:?}");
                replies += 1;
            }
            _ => break,
        }
    }
    assert_eq!(
        replies, sent,
        "{preference:?} {dst}: every flow probe answered"
    );
}

/// Runs `f` on a thread of its own in a new network namespace (only `lo`, up, with datagram
/// ICMP sockets allowed), so the sockets it opens and the traffic it sends stay in there.
fn in_namespace(f: impl FnOnce() + Send + 'static) {
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
        f()
    })
    .join()
    .expect("namespace thread");
}

#[test]
fn flow_probes_keep_identifier_and_checksum_and_set_ttl_per_packet() {
    if !support::require_root() {
        return;
    }
    in_namespace(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            for preference in [SocketPreference::Dgram, SocketPreference::Raw] {
                flows_on_the_wire(preference, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 77))).await;
                flows_on_the_wire(preference, IpAddr::V6(Ipv6Addr::LOCALHOST)).await;
            }
        });
    });
}
