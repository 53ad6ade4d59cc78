//! The resolver against a tiny DNS server that each test starts on 127.0.0.1 (never the
//! system resolver): families, record TTL to `valid_until`, NXDOMAIN, a silent name, literals.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA};
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use pingscope::resolve::{Family, ResolveError, Resolver, parse_ip_literal};
use tokio::net::UdpSocket;

/// The zone: name -> (A records, AAAA records, TTL of A, TTL of AAAA).
fn zone(name: &str) -> Option<(Vec<Ipv4Addr>, Vec<Ipv6Addr>, u32, u32)> {
    let v4 = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap();
    match name {
        "v4.pingscope.test." => Some((vec![v4("127.0.0.10")], vec![], 300, 0)),
        "v6.pingscope.test." => Some((vec![], vec![v6("2001:db8::10")], 0, 120)),
        "dual.pingscope.test." => Some((
            vec![v4("127.0.0.11"), v4("127.0.0.12"), v4("127.0.0.11")],
            vec![v6("2001:db8::11"), v6("::ffff:127.0.0.12")],
            60,
            30,
        )),
        "empty.pingscope.test." => Some((vec![], vec![], 0, 0)),
        _ => None,
    }
}

/// Answers every query from [`zone`]; unknown names get NXDOMAIN; `silent.pingscope.test.`
/// gets nothing. Counts the queries it saw.
async fn start_dns() -> (SocketAddr, Arc<AtomicUsize>) {
    let sock = UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind DNS server");
    let addr = sock.local_addr().expect("local addr");
    let queries = Arc::new(AtomicUsize::new(0));
    let seen = queries.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        // Ends with the test's runtime.
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let Ok(req) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            seen.fetch_add(1, Ordering::Relaxed);
            let Some(q) = req.queries().first().cloned() else {
                continue;
            };
            let name = q.name().to_ascii().to_lowercase();
            if name == "silent.pingscope.test." {
                continue;
            }
            let mut resp = Message::new();
            resp.set_id(req.id())
                .set_message_type(MessageType::Response)
                .set_op_code(req.op_code())
                .set_recursion_desired(req.recursion_desired())
                .set_recursion_available(true)
                .set_authoritative(true)
                .add_query(q.clone());
            match zone(&name) {
                None => {
                    resp.set_response_code(ResponseCode::NXDomain);
                }
                Some((a, aaaa, ttl4, ttl6)) => {
                    resp.set_response_code(ResponseCode::NoError);
                    match q.query_type() {
                        RecordType::A => {
                            for ip in a {
                                resp.add_answer(Record::from_rdata(
                                    q.name().clone(),
                                    ttl4,
                                    RData::A(A(ip)),
                                ));
                            }
                        }
                        RecordType::AAAA => {
                            for ip in aaaa {
                                resp.add_answer(Record::from_rdata(
                                    q.name().clone(),
                                    ttl6,
                                    RData::AAAA(AAAA(ip)),
                                ));
                            }
                        }
                        _ => {}
                    }
                }
            }
            if let Ok(bytes) = resp.to_vec() {
                let _ = sock.send_to(&bytes, peer).await;
            }
        }
    });
    (addr, queries)
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn assert_valid_for(valid_until: Instant, before: Instant, ttl: u64) {
    let lo = before + Duration::from_secs(ttl) - Duration::from_secs(2);
    let hi = Instant::now() + Duration::from_secs(ttl) + Duration::from_secs(1);
    assert!(
        valid_until >= lo && valid_until <= hi,
        "valid_until not about {ttl}s from now"
    );
}

#[tokio::test]
async fn families_and_ttls() {
    let (server, _) = start_dns().await;
    let r = Resolver::with_servers(&[server]).expect("resolver");

    let before = Instant::now();
    let got = r
        .lookup("v4.pingscope.test", Family::Auto)
        .await
        .expect("v4 auto");
    assert_eq!(got.addrs, ips(&["127.0.0.10"]));
    assert_valid_for(got.valid_until, before, 300);
    assert_eq!(
        r.lookup("v4.pingscope.test", Family::Ip4)
            .await
            .expect("ip4")
            .addrs,
        ips(&["127.0.0.10"])
    );
    assert_eq!(
        r.lookup("v4.pingscope.test", Family::All)
            .await
            .expect("all")
            .addrs,
        ips(&["127.0.0.10"])
    );
    match r.lookup("v4.pingscope.test", Family::Ip6).await {
        Err(
            e @ ResolveError::NoAddressForFamily {
                family: Family::Ip6,
                ..
            },
        ) => {
            assert!(e.to_string().contains("v4.pingscope.test"), "{e}");
        }
        other => panic!("expected NoAddressForFamily, got {other:?}"),
    }

    let before = Instant::now();
    let got = r
        .lookup("v6.pingscope.test", Family::Auto)
        .await
        .expect("v6 auto");
    assert_eq!(got.addrs, ips(&["2001:db8::10"]), "auto falls back to IPv6");
    assert_valid_for(got.valid_until, before, 120);
    assert!(matches!(
        r.lookup("v6.pingscope.test", Family::Ip4).await,
        Err(ResolveError::NoAddressForFamily {
            family: Family::Ip4,
            ..
        })
    ));

    let before = Instant::now();
    let all = r
        .lookup("dual.pingscope.test", Family::All)
        .await
        .expect("dual all");
    // IPv4 first, duplicates (and the IPv4-mapped IPv6 copy of 127.0.0.12) removed.
    assert_eq!(
        all.addrs,
        ips(&["127.0.0.11", "127.0.0.12", "2001:db8::11"])
    );
    assert_valid_for(all.valid_until, before, 30);
    assert_eq!(
        r.lookup("dual.pingscope.test", Family::Auto)
            .await
            .expect("auto")
            .addrs,
        ips(&["127.0.0.11"])
    );
    assert_eq!(
        r.lookup("dual.pingscope.test", Family::Ip6)
            .await
            .expect("ip6")
            .addrs,
        ips(&["2001:db8::11"])
    );
    let before = Instant::now();
    let v4 = r
        .lookup("dual.pingscope.test", Family::Ip4)
        .await
        .expect("ip4");
    assert_eq!(v4.addrs, ips(&["127.0.0.11"]));
    assert_valid_for(v4.valid_until, before, 60);
}

#[tokio::test]
async fn nxdomain_and_nodata_are_not_found() {
    let (server, queries) = start_dns().await;
    let r = Resolver::with_servers(&[server]).expect("resolver");
    for family in [Family::Auto, Family::All, Family::Ip4, Family::Ip6] {
        match r.lookup("nx.pingscope.test", family).await {
            Err(e @ ResolveError::NotFound { .. }) => {
                assert!(e.to_string().contains("nx.pingscope.test"), "{e}")
            }
            other => panic!("{family:?}: expected NotFound, got {other:?}"),
        }
    }
    match r.lookup("empty.pingscope.test", Family::Auto).await {
        Err(ResolveError::NotFound { host }) => assert_eq!(host, "empty.pingscope.test"),
        other => panic!("expected NotFound for a name without addresses, got {other:?}"),
    }
    assert!(
        queries.load(Ordering::Relaxed) > 0,
        "the test server was asked"
    );
}

#[tokio::test]
async fn silent_server_times_out_and_names_the_host() {
    let (server, _) = start_dns().await;
    let r = Resolver::with_servers_and_timeout(&[server], Duration::from_millis(300))
        .expect("resolver");
    let started = Instant::now();
    match r.lookup("silent.pingscope.test", Family::Auto).await {
        Err(e @ ResolveError::Timeout { .. }) => {
            assert!(e.to_string().contains("silent.pingscope.test"), "{e}")
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "timeout honoured: {:?}",
        started.elapsed()
    );
    // The other names still resolve through the same resolver.
    assert_eq!(
        r.lookup("v4.pingscope.test", Family::Auto)
            .await
            .expect("v4")
            .addrs,
        ips(&["127.0.0.10"])
    );
}

#[tokio::test]
async fn literals_never_reach_dns() {
    let (server, queries) = start_dns().await;
    let r = Resolver::with_servers(&[server]).expect("resolver");
    for (host, want) in [
        ("127.1", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
    ] {
        let got = r.lookup(host, Family::Auto).await.expect(host);
        assert_eq!(got.addrs, ips(&[want]), "{host}");
        assert!(
            got.valid_until > Instant::now() + Duration::from_secs(86_400 * 365),
            "literals do not expire"
        );
        assert_eq!(parse_ip_literal(host), Some(want.parse().unwrap()));
    }
    assert!(matches!(
        r.lookup("127.0.0.1", Family::Ip6).await,
        Err(ResolveError::NoAddressForFamily {
            family: Family::Ip6,
            ..
        })
    ));
    assert_eq!(
        r.lookup("::1", Family::All).await.expect("all").addrs,
        ips(&["::1"])
    );
    assert_eq!(
        queries.load(Ordering::Relaxed),
        0,
        "no DNS query for literals"
    );
}

#[tokio::test]
async fn clones_share_and_bad_input_is_an_error() {
    let (server, _) = start_dns().await;
    let r = Resolver::with_servers(&[server]).expect("resolver");
    let c = r.clone();
    assert_eq!(
        c.lookup("v4.pingscope.test", Family::Ip4)
            .await
            .expect("clone")
            .addrs,
        ips(&["127.0.0.10"])
    );
    assert!(matches!(
        r.lookup("", Family::Auto).await,
        Err(ResolveError::NotFound { .. })
    ));
    assert!(matches!(
        r.lookup("bad name", Family::Auto).await,
        Err(ResolveError::NotFound { .. })
    ));
    assert!(
        Resolver::with_servers(&[]).is_err(),
        "no servers is a configuration error"
    );
}

#[tokio::test]
async fn refused_server_is_an_error_naming_the_host() {
    // A loopback port with nobody listening: the kernel answers ICMP port unreachable.
    let port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.local_addr().expect("addr").port()
    };
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    let r = Resolver::with_servers_and_timeout(&[server], Duration::from_millis(300))
        .expect("resolver");
    let started = Instant::now();
    match r.lookup("v4.pingscope.test", Family::Ip4).await {
        Err(e @ (ResolveError::Io { .. } | ResolveError::Timeout { .. })) => {
            assert!(e.to_string().contains("v4.pingscope.test"), "{e}");
        }
        other => panic!("expected Io or Timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn system_resolver_serves_literals_without_dns() {
    // Building it reads /etc/resolv.conf but asks nothing; literals never reach DNS.
    match Resolver::system() {
        Ok(r) => {
            let got = r.lookup("127.0.0.1", Family::Auto).await.expect("literal");
            assert_eq!(got.addrs, ips(&["127.0.0.1"]));
        }
        Err(e @ ResolveError::Config { .. }) => {
            eprintln!("no system resolver configuration here: {e}")
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}
