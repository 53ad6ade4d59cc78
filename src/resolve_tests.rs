//! Unit tests of [`super`]: parsing hosts, families, answers.

use super::*;

#[test]
fn zone_ids_only_on_link_local_ipv6_with_an_interface() {
    let ll: Ipv6Addr = "fe80::1".parse().unwrap_or(Ipv6Addr::UNSPECIFIED);
    assert_eq!(split_zone("fe80::1"), Ok(None));
    assert_eq!(
        split_zone("fe80::1%eth0"),
        Ok(Some((ll, "eth0".to_owned())))
    );
    assert_eq!(
        split_zone("[fe80::1%eth0]"),
        Ok(Some((ll, "eth0".to_owned())))
    );
    // Index 1 is the loopback interface in every network namespace.
    assert_eq!(split_zone("fe80::1%1"), Ok(Some((ll, "lo".to_owned()))));
    assert_eq!(parse_ip_literal("fe80::1%eth0"), Some(IpAddr::V6(ll)));
    for (host, says) in [
        ("2001:db8::1%eth0", "only for link-local IPv6 addresses"),
        ("127.0.0.1%eth0", "follows only an IPv6 address"),
        ("example.org%eth0", "follows only an IPv6 address"),
        ("fe80::1%", "the zone id after '%' is empty"),
        (
            "fe80::1%4000000000",
            "no network interface has index 4000000000",
        ),
        ("fe80::1%0", "no network interface has index 0"),
    ] {
        let err = split_zone(host).err().unwrap_or_default();
        assert!(err.contains(says) && err.contains(host), "{host}: {err}");
        assert_eq!(parse_ip_literal(host), None, "{host}");
    }
}

#[tokio::test]
async fn a_bad_zone_never_reaches_dns() {
    // Servers that do not exist: a query would time out instead of failing at once.
    let r = Resolver::with_servers(&[SocketAddr::from(([127, 0, 0, 1], 9))])
        .unwrap_or_else(|e| panic!("{e}"));
    let err = r.lookup("2001:db8::1%eth0", Family::Auto).await;
    assert!(
        matches!(err, Err(ResolveError::Zone(ref m)) if m.contains("link-local")),
        "{err:?}"
    );
}

fn v4(s: &str) -> Option<IpAddr> {
    Some(IpAddr::V4(s.parse().ok()?))
}

#[test]
fn inet_aton_spellings() {
    for (input, want) in [
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("0X7F.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0177.0.0.01", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("00", "0.0.0.0"),
        ("127.2.65535", "127.2.255.255"),
        ("127.16777215", "127.255.255.255"),
        ("2147483647", "127.255.255.255"),
        ("0xc612ffff", "198.18.255.255"),
    ] {
        assert_eq!(parse_ip_literal(input), v4(want), "{input}");
    }
}

#[test]
fn not_literals() {
    for input in [
        "",
        ".",
        "127.",
        ".1",
        "0x",
        "0x.1",
        "0x0x1",
        "127..1",
        "256.0.0.1",
        "127.0.0.256",
        "127.0.65536",
        "127.16777216",
        "4294967296",
        "08",
        "0x1g",
        "127.0.0.1.5",
        "-1",
        "+1",
        "example.test",
        "1e3",
        "127.0.0.1 ",
        " 127.0.0.1",
        "[127.0.0.1]",
        "[::1",
        "::1]",
    ] {
        assert_eq!(parse_ip_literal(input), None, "{input:?}");
    }
}

#[test]
fn ipv6_literals() {
    assert_eq!(
        parse_ip_literal("::1"),
        Some(IpAddr::V6(Ipv6Addr::LOCALHOST))
    );
    assert_eq!(
        parse_ip_literal("[::1]"),
        Some(IpAddr::V6(Ipv6Addr::LOCALHOST))
    );
    assert_eq!(
        parse_ip_literal("2001:db8::1").map(|i| i.is_ipv6()),
        Some(true)
    );
    assert_eq!(parse_ip_literal("::ffff:127.0.0.1"), v4("127.0.0.1"));
    assert_eq!(parse_ip_literal("[::ffff:7f00:2]"), v4("127.0.0.2"));
}

#[test]
fn family_selection() {
    let until = Instant::now();
    let a = |s: &str| s.parse::<IpAddr>().ok().into_iter();
    let ips: Vec<IpAddr> = a("2001:db8::1")
        .chain(a("127.0.0.2"))
        .chain(a("::ffff:127.0.0.3"))
        .chain(a("127.0.0.2"))
        .collect();
    let pick = |f| select("h", f, ips.clone(), until).map(|r| r.addrs);
    assert_eq!(
        pick(Family::Auto).ok(),
        Some(vec![
            v4("127.0.0.2").unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        ])
    );
    assert_eq!(pick(Family::Ip6).ok().map(|v| v.len()), Some(1));
    let all = pick(Family::All).unwrap_or_default();
    assert_eq!(
        all.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["127.0.0.2", "127.0.0.3", "2001:db8::1"]
    );
    let only6: Vec<IpAddr> = a("2001:db8::1").collect();
    assert!(matches!(
        select("h", Family::Ip4, only6.clone(), until),
        Err(ResolveError::NoAddressForFamily { .. })
    ));
    assert_eq!(
        select("h", Family::Auto, only6, until)
            .map(|r| r.addrs.len())
            .ok(),
        Some(1)
    );
    assert!(matches!(
        select("h", Family::Auto, vec![], until),
        Err(ResolveError::NotFound { .. })
    ));
}
