//! The resolver against the test DNS server (`support::dns`) each test starts on 127.0.0.1 (never the
//! system resolver): families, record TTL to `valid_until`, NXDOMAIN, a silent name, literals.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use pingscope::resolve::{Family, ResolveError, Resolved, Resolver, parse_ip_literal};
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

/// A resolver that asks only the test DNS server.
fn resolver(dns: &DnsServer) -> Resolver {
    Resolver::with_servers(&[dns.addr()]).expect("resolver")
}

/// `host` looked up in `family`; a lookup error fails the test, naming both.
async fn resolve(r: &Resolver, host: &str, family: Family) -> Resolved {
    r.lookup(host, family)
        .await
        .unwrap_or_else(|e| panic!("{host} {family:?}: {e}"))
}

#[tokio::test]
async fn families_and_ttls() {
    let dns = start_dns();
    let r = resolver(&dns);
    // In the order asked: host, family, the addresses in order, and the record TTL that
    // `valid_until` follows (where checked).
    let cases: [(&str, Family, &[&str], Option<u64>); 8] = [
        (
            "v4.pingscope.test",
            Family::Auto,
            &["127.0.0.10"],
            Some(300),
        ),
        ("v4.pingscope.test", Family::Ip4, &["127.0.0.10"], None),
        ("v4.pingscope.test", Family::All, &["127.0.0.10"], None),
        // Auto falls back to IPv6.
        (
            "v6.pingscope.test",
            Family::Auto,
            &["2001:db8::10"],
            Some(120),
        ),
        // IPv4 first, duplicates (and the IPv4-mapped IPv6 copy of 127.0.0.12) removed.
        (
            "dual.pingscope.test",
            Family::All,
            &["127.0.0.11", "127.0.0.12", "2001:db8::11"],
            Some(30),
        ),
        ("dual.pingscope.test", Family::Auto, &["127.0.0.11"], None),
        ("dual.pingscope.test", Family::Ip6, &["2001:db8::11"], None),
        (
            "dual.pingscope.test",
            Family::Ip4,
            &["127.0.0.11"],
            Some(60),
        ),
    ];
    for (host, family, want, ttl) in cases {
        let before = Instant::now();
        let got = resolve(&r, host, family).await;
        assert_eq!(got.addrs, ips(want), "{host} {family:?}");
        if let Some(ttl) = ttl {
            assert_valid_for(got.valid_until, before, ttl);
        }
    }
    // A name with records of the other family only.
    for (host, family) in [
        ("v4.pingscope.test", Family::Ip6),
        ("v6.pingscope.test", Family::Ip4),
    ] {
        match r.lookup(host, family).await {
            Err(e @ ResolveError::NoAddressForFamily { family: f, .. }) if f == family => {
                assert!(e.to_string().contains(host), "{e}");
            }
            other => panic!("{host} {family:?}: expected NoAddressForFamily, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn nxdomain_and_nodata_are_not_found() {
    let dns = start_dns();
    let r = resolver(&dns);
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
    let r = Resolver::with_servers_and_timeout(&[dns.addr()], Duration::from_millis(300))
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
        resolve(&r, "v4.pingscope.test", Family::Auto).await.addrs,
        ips(&["127.0.0.10"])
    );
}

#[tokio::test]
async fn literals_never_reach_dns() {
    let dns = start_dns();
    let r = resolver(&dns);
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
    assert_eq!(resolve(&r, "::1", Family::All).await.addrs, ips(&["::1"]));
    assert_eq!(dns.queries(), 0, "no DNS query for literals");
}

#[tokio::test]
async fn clones_share_and_bad_input_is_an_error() {
    let dns = start_dns();
    let r = resolver(&dns);
    let c = r.clone();
    assert_eq!(
        resolve(&c, "v4.pingscope.test", Family::Ip4).await.addrs,
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
