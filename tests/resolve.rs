//! The resolver against the test DNS server (`support::dns`) each test starts on 127.0.0.1 (never the
//! system resolver): families, record TTL to `valid_until`, NXDOMAIN, a silent name, literals.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use pingscope::resolve::{Family, ResolveError, Resolver, parse_ip_literal};
use support::dns::DnsServer;

/// The test zone on the one test DNS server: per-family TTLs, a name without records, and
/// `silent.pingscope.test`, which is never answered; other names get NXDOMAIN.
fn start_dns() -> DnsServer {
    let dns = DnsServer::start();
    dns.set_ttl("v4.pingscope.test", &["127.0.0.10"], 300);
    dns.set_ttl("v6.pingscope.test", &["2001:db8::10"], 120);
    dns.set_ttl(
        "dual.pingscope.test",
        &["127.0.0.11", "127.0.0.12", "127.0.0.11"],
        60,
    );
    dns.add(
        "dual.pingscope.test",
        &["2001:db8::11", "::ffff:127.0.0.12"],
        30,
    );
    dns.set("empty.pingscope.test", &[]);
    dns.silence("silent.pingscope.test");
    dns
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
    let dns = start_dns();
    let server = dns.addr();
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
    let dns = start_dns();
    let server = dns.addr();
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
    assert!(dns.queries() > 0, "the test server was asked");
}

#[tokio::test]
async fn silent_server_times_out_and_names_the_host() {
    let dns = start_dns();
    let server = dns.addr();
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
    let dns = start_dns();
    let server = dns.addr();
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
    assert_eq!(dns.queries(), 0, "no DNS query for literals");
}

#[tokio::test]
async fn clones_share_and_bad_input_is_an_error() {
    let dns = start_dns();
    let server = dns.addr();
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
