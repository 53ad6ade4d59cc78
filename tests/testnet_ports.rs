//! The test network's TCP and UDP: plain sockets opened by the test thread inside the namespace
//! see open, refused and silent TCP ports, UDP echo, port unreachable and silence, with the
//! profile's delay and duplicates; the responder's log shows every handshake torn down by the
//! client. See docs/testnet.md, "TCP and UDP".
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

mod support;

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{LogEntry, TestNet};

fn ports_profile() -> serde_json::Value {
    let host = json!({
        "delay": "20ms",
        "tcp": {"ports": {"80": "open", "81": "refused"}, "default": "silent"},
        "udp": {"ports": {"7": "echo", "10": "silent"}}
    });
    json!({"hosts": {"198.18.0.20": host, "2001:db8::20": host}})
}

/// (client port, server port) → the actions logged for that connection, in order.
fn tcp_actions(log: &[LogEntry]) -> BTreeMap<(u16, u16), Vec<String>> {
    let mut by_conn: BTreeMap<(u16, u16), Vec<String>> = BTreeMap::new();
    for e in log.iter().filter(|e| e.proto == "tcp") {
        by_conn
            .entry((e.sport.unwrap(), e.dport.unwrap()))
            .or_default()
            .push(e.action.clone());
    }
    by_conn
}

#[test]
fn tcp_ports_are_open_refused_or_silent_and_every_handshake_is_torn_down() {
    let Some(net) = TestNet::start_and_enter(&ports_profile()) else {
        return;
    };
    let per_family = 10;
    for host in ["198.18.0.20", "[2001:db8::20]"] {
        let open: SocketAddr = format!("{host}:80").parse().unwrap();
        for i in 0..per_family {
            let t0 = Instant::now();
            let stream = TcpStream::connect_timeout(&open, Duration::from_secs(2))
                .unwrap_or_else(|e| panic!("connect {open}: {e}"));
            let rtt = t0.elapsed();
            assert!(
                rtt >= Duration::from_millis(20),
                "SYN-ACK before its delay: {rtt:?}"
            );
            assert!(rtt < Duration::from_millis(200), "{rtt:?}");
            if i % 2 == 1 {
                // Half of them reset (linger 0), half closed with FIN.
                socket2::SockRef::from(&stream)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
            }
            drop(stream);
        }
        let refused: SocketAddr = format!("{host}:81").parse().unwrap();
        let err = TcpStream::connect_timeout(&refused, Duration::from_secs(2)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
        let silent: SocketAddr = format!("{host}:82").parse().unwrap();
        let err = TcpStream::connect_timeout(&silent, Duration::from_millis(300)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    }
    // Every accepted handshake ends with the client's RST, or its FIN, our FIN-ACK and its ACK.
    let mut conns = BTreeMap::new();
    support::wait_until(Duration::from_secs(3), || {
        conns = tcp_actions(&net.log());
        conns
            .iter()
            .filter(|((_, dport), _)| *dport == 80)
            .all(|(_, a)| a.last().is_some_and(|l| l == "rst" || l == "closed"))
    });
    let open: Vec<_> = conns.iter().filter(|((_, d), _)| *d == 80).collect();
    assert_eq!(open.len(), 2 * per_family, "{conns:?}");
    let (mut fins, mut rsts) = (0, 0);
    for (_, actions) in &open {
        let a: Vec<&str> = actions.iter().map(String::as_str).collect();
        match a.as_slice() {
            ["syn_ack", "established", "fin", "closed"] => fins += 1,
            ["syn_ack", "established", "rst"] => rsts += 1,
            other => panic!("handshake not torn down cleanly: {other:?}"),
        }
    }
    assert_eq!((fins, rsts), (per_family, per_family));
    let refused: Vec<_> = conns.iter().filter(|((_, d), _)| *d == 81).collect();
    assert_eq!(refused.len(), 2);
    assert!(
        refused.iter().all(|(_, a)| a.as_slice() == ["refused"]),
        "{refused:?}"
    );
    // The kernel retransmits a SYN left unanswered; each is logged silent.
    let silent: Vec<_> = conns.iter().filter(|((_, d), _)| *d == 82).collect();
    assert_eq!(silent.len(), 2);
    assert!(silent.iter().all(|(_, a)| a.iter().all(|x| x == "silent")));
    let log = net.log();
    let syn = log.iter().find(|e| e.action == "syn_ack").unwrap();
    assert_eq!(syn.flags.as_deref(), Some("SYN"));
    assert_eq!(syn.scheduled_delay_ns, Some(20_000_000));
}

#[test]
fn duplicated_syn_acks_do_not_break_the_handshake() {
    let Some(net) =
        TestNet::start_and_enter(&json!({"default": {"duplicate": 2, "tcp": {"default": "open"}}}))
    else {
        return;
    };
    let stream =
        TcpStream::connect_timeout(&"198.18.0.30:443".parse().unwrap(), Duration::from_secs(2))
            .unwrap();
    drop(stream);
    let mut log = Vec::new();
    support::wait_until(Duration::from_secs(3), || {
        log = net.log();
        log.iter().any(|e| e.action == "closed")
    });
    let syn = log.iter().find(|e| e.action == "syn_ack").unwrap();
    assert_eq!(syn.copies, 3, "{log:?}");
    assert!(log.iter().any(|e| e.action == "closed"), "{log:?}");
}

#[test]
fn udp_echo_unreachable_and_silence() {
    let Some(net) = TestNet::start_and_enter(&ports_profile()) else {
        return;
    };
    for (bind, host) in [
        ("198.18.0.1:0", "198.18.0.20"),
        ("[2001:db8::1]:0", "[2001:db8::20]"),
    ] {
        let sock = UdpSocket::bind(bind).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        sock.connect(format!("{host}:7")).unwrap();
        let t0 = Instant::now();
        sock.send(b"token-1").unwrap();
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf).unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(20));
        assert_eq!(&buf[..n], b"token-1");
        // Port 9: no `ports` entry, so the default, unreachable; seen as ECONNREFUSED.
        sock.connect(format!("{host}:9")).unwrap();
        sock.send(b"x").unwrap();
        let err = sock.recv(&mut buf).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
        sock.connect(format!("{host}:10")).unwrap();
        sock.send(b"x").unwrap();
        let err = sock.recv(&mut buf).unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{err}"
        );
    }
    let log = net.log();
    let actions: Vec<(&str, u16)> = log
        .iter()
        .map(|e| (e.action.as_str(), e.dport.unwrap()))
        .collect();
    let one = [("echoed", 7), ("port_unreachable", 9), ("silent", 10)];
    assert_eq!(actions, [one, one].concat());
    assert!(log.iter().all(|e| e.proto == "udp"));
}

#[test]
fn traceroute_tcp_and_udp_to_a_fixed_port_cross_the_path() {
    if !support::require_root() || !support::require_program("traceroute") {
        return;
    }
    let net = TestNet::start(&json!({"hosts": {"198.18.0.40": {
        "tcp": {"ports": {"443": "open"}},
        "path": {"hops": [{"addr": "198.18.10.1"}, {"addr": "198.18.10.2"}]}
    }}}));
    for args in [["-T", "-p", "443"], ["-T", "-p", "80"], ["-U", "-p", "53"]] {
        let out = net
            .command("traceroute")
            .args(["-n", "-q", "1", "-w", "1", "-m", "6"])
            .args(args)
            .arg("198.18.0.40")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!("{text}");
        let hops: Vec<&str> = text
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(1))
            .collect();
        assert_eq!(
            hops,
            ["198.18.10.1", "198.18.10.2", "198.18.0.40"],
            "{args:?}: {text}"
        );
    }
    let log = net.log();
    for action in ["syn_ack", "refused", "port_unreachable"] {
        assert!(log.iter().any(|e| e.action == action), "{action}");
    }
    assert!(
        log.iter()
            .filter(|e| e.proto == "tcp" && e.ttl <= 2)
            .all(|e| e.action == "time_exceeded" && e.hop == Some(e.ttl))
    );
}
