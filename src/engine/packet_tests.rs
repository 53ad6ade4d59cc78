#![allow(clippy::expect_used, clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;

fn ipv4_header(proto: u8, ttl: u8, src: [u8; 4], dst: [u8; 4], payload_len: usize) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&((20 + payload_len) as u16).to_be_bytes());
    h[8] = ttl;
    h[9] = proto;
    h[12..16].copy_from_slice(&src);
    h[16..20].copy_from_slice(&dst);
    h
}

fn ipv6_header(next: u8, dst: Ipv6Addr) -> Vec<u8> {
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[6] = next;
    h[24..40].copy_from_slice(&dst.octets());
    h
}

/// An ICMP error message of `icmp_type`/`code` (the rest of its header zero) quoting `quote`,
/// given in parts.
fn icmp_error(icmp_type: u8, code: u8, quote: &[&[u8]]) -> Vec<u8> {
    let mut err = vec![icmp_type, code, 0, 0, 0, 0, 0, 0];
    for part in quote {
        err.extend_from_slice(part);
    }
    err
}

/// The quoted echo of what parsed as an ICMP error; anything else fails the test.
fn quoted(parsed: Result<Icmp, ParseError>) -> QuotedError {
    match parsed {
        Ok(Icmp::Error(q)) => q,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn checksum_of_known_vector() {
    // RFC 1071 example words: 0001 f203 f4f5 f6f7 sum to ddf2, complement 220d.
    assert_eq!(
        checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
        0x220d
    );
    // Odd length pads with a zero byte.
    assert_eq!(checksum(&[0x01]), !0x0100);
}

#[test]
fn built_v4_request_checksums_to_zero_and_parses() {
    let pkt = build_echo_request(false, 0x1234, 0xfffe, 56, 42);
    assert_eq!(pkt.len(), 64);
    assert_eq!(checksum(&pkt), 0);
    match parse_icmpv4(&pkt) {
        Ok(Icmp::EchoRequest(e)) => {
            assert_eq!((e.ident, e.seq, e.payload.len()), (0x1234, 0xfffe, 56));
            assert_eq!(read_stamp(e.payload), PayloadStamp::Stamp(42));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn short_payload_is_unstamped() {
    let pkt = build_echo_request(true, 1, 2, 4, 42);
    assert_eq!(pkt[0], 128);
    match parse_icmpv6(&pkt) {
        Ok(Icmp::EchoRequest(e)) => assert_eq!(read_stamp(e.payload), PayloadStamp::Unstamped),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(read_stamp(b"xxxxyyyyzzzz"), PayloadStamp::Foreign);
}

#[test]
fn raw_v4_reply_gives_ttl_and_addresses() {
    let mut icmp = build_echo_request(false, 7, 9, 16, 5);
    icmp[0] = 0;
    icmp[2..4].copy_from_slice(&[0, 0]);
    let sum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut pkt = ipv4_header(1, 61, [127, 0, 0, 2], [127, 0, 0, 1], icmp.len());
    pkt.extend_from_slice(&icmp);
    let (ip, msg) = parse_ipv4_packet(&pkt).expect("parses");
    assert_eq!(ip.ttl, 61);
    assert_eq!(ip.src, Ipv4Addr::new(127, 0, 0, 2));
    assert!(matches!(
        msg,
        Icmp::EchoReply(Echo {
            ident: 7,
            seq: 9,
            ..
        })
    ));
    // Padding after the IP total length is ignored.
    let mut padded = pkt.clone();
    padded.extend_from_slice(&[0xff; 3]);
    assert!(parse_ipv4_packet(&padded).is_ok());
    // A flipped payload bit fails the checksum.
    let last = pkt.len() - 1;
    pkt[last] ^= 1;
    assert_eq!(parse_ipv4_packet(&pkt), Err(ParseError::Checksum));
}

#[test]
fn v4_time_exceeded_is_matched_to_quoted_echo() {
    let orig = build_echo_request(false, 0xabcd, 300, 56, 1);
    let header = ipv4_header(1, 1, [198, 18, 0, 1], [198, 18, 0, 9], orig.len());
    // Routers quote at least 8 bytes.
    let q = quoted(parse_icmpv4(&icmp_error(11, 0, &[&header, &orig[..8]])));
    assert_eq!(
        (q.icmp_type, q.icmp_code, q.ident, q.seq),
        (11, 0, 0xabcd, 300)
    );
    assert_eq!(q.orig_dst, IpAddr::V4(Ipv4Addr::new(198, 18, 0, 9)));
    assert_eq!(classify_error(false, 11, 0), IcmpErrorKind::TimeExceeded);
    assert_eq!(classify_error(false, 3, 4), IcmpErrorKind::PacketTooBig);
    assert_eq!(classify_error(false, 3, 1), IcmpErrorKind::Unreachable);
    assert_eq!(
        classify_error(false, 12, 0),
        IcmpErrorKind::ParameterProblem
    );
}

#[test]
fn v6_unreachable_through_extension_header() {
    let dst: Ipv6Addr = "2001:db8::5".parse().expect("literal");
    let orig = build_echo_request(true, 0x0102, 77, 8, 0);
    // Destination options first, then the echo.
    let options = [58, 0, 0, 0, 0, 0, 0, 0];
    let q = quoted(parse_icmpv6(&icmp_error(
        1,
        3,
        &[&ipv6_header(60, dst), &options, &orig],
    )));
    assert_eq!(
        (q.icmp_type, q.icmp_code, q.ident, q.seq),
        (1, 3, 0x0102, 77)
    );
    assert_eq!(q.orig_dst, IpAddr::V6(dst));
    assert_eq!(classify_error(true, 2, 0), IcmpErrorKind::PacketTooBig);
    assert_eq!(classify_error(true, 3, 0), IcmpErrorKind::TimeExceeded);
    assert_eq!(classify_error(true, 4, 0), IcmpErrorKind::ParameterProblem);
}

#[test]
fn malformed_inputs_are_errors() {
    assert!(matches!(
        parse_icmpv4(&[]),
        Err(ParseError::Truncated { .. })
    ));
    assert!(matches!(
        parse_icmpv6(&[129, 0, 0]),
        Err(ParseError::Truncated { .. })
    ));
    // IPv6 packet given to the v4 parser.
    let v6 = ipv6_header(58, Ipv6Addr::LOCALHOST);
    assert_eq!(parse_ipv4_packet(&v6), Err(ParseError::IpVersion(6, 4)));
    // IHL below 5 words.
    let mut bad = ipv4_header(1, 64, [127, 0, 0, 1], [198, 18, 0, 2], 0);
    bad[0] = 0x44;
    assert_eq!(parse_ipv4_packet(&bad), Err(ParseError::HeaderLength(16)));
    // IHL pointing past the end.
    bad[0] = 0x4f;
    assert!(matches!(
        parse_ipv4_packet(&bad),
        Err(ParseError::Truncated { .. })
    ));
    // UDP, not ICMP.
    let udp = ipv4_header(17, 64, [127, 0, 0, 1], [198, 18, 0, 2], 0);
    assert_eq!(parse_ipv4_packet(&udp), Err(ParseError::NotIcmp(17)));
    // Error quoting a UDP packet.
    let udp_header = ipv4_header(17, 64, [127, 0, 0, 1], [198, 18, 0, 2], 8);
    let err = icmp_error(3, 3, &[&udp_header, &[0; 8]]);
    assert_eq!(parse_icmpv4(&err), Err(ParseError::NotIcmp(17)));
    // Error quoting an echo reply rather than a request.
    let icmp_header = ipv4_header(1, 64, [127, 0, 0, 1], [198, 18, 0, 2], 8);
    let err = icmp_error(11, 0, &[&icmp_header, &[0; 8]]);
    assert_eq!(parse_icmpv4(&err), Err(ParseError::NotEcho(0)));
    // Error with a quote cut inside the echo header.
    let err = icmp_error(1, 0, &[&ipv6_header(58, Ipv6Addr::LOCALHOST), &[128, 0, 0]]);
    assert!(matches!(
        parse_icmpv6(&err),
        Err(ParseError::Truncated { .. })
    ));
    // Extension header whose length runs past the end.
    let err = icmp_error(
        1,
        0,
        &[
            &ipv6_header(0, Ipv6Addr::LOCALHOST),
            &[58, 200, 0, 0, 0, 0, 0, 0],
        ],
    );
    assert!(matches!(
        parse_icmpv6(&err),
        Err(ParseError::Truncated { .. })
    ));
    assert_eq!(
        parse_quoted_echo(&[0, 0, 0, 0, 0, 1, 0, 2], false),
        Err(ParseError::NotEcho(0))
    );
    assert_eq!(
        parse_quoted_echo(&[128, 0, 0, 0, 0, 1, 0, 2], true),
        Ok((1, 2))
    );
    assert!(matches!(
        parse_quoted_echo(&[8, 0], false),
        Err(ParseError::Truncated { .. })
    ));
}

#[test]
fn other_types_are_reported_as_other() {
    // Router advertisement.
    assert_eq!(
        parse_icmpv6(&[134, 0, 0, 0, 0, 0, 0, 0]),
        Ok(Icmp::Other {
            icmp_type: 134,
            icmp_code: 0
        })
    );
}

proptest! {
    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_icmpv4(&bytes);
        let _ = parse_icmpv6(&bytes);
        let _ = parse_ipv4_packet(&bytes);
        let _ = parse_quoted_echo(&bytes, false);
        let _ = parse_quoted_echo(&bytes, true);
        let _ = read_stamp(&bytes);
        let _ = checksum(&bytes);
    }

    #[test]
    fn parsers_never_panic_on_plausible_headers(
        first in prop_oneof![Just(0x45u8), Just(0x46), Just(0x60), any::<u8>()],
        icmp_type in prop_oneof![Just(0u8), Just(3), Just(11), Just(1), Just(4), Just(129)],
        rest in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        let mut bytes = vec![first];
        bytes.extend_from_slice(&rest);
        let _ = parse_ipv4_packet(&bytes);
        let mut icmp = vec![icmp_type];
        icmp.extend_from_slice(&rest);
        let _ = parse_icmpv4(&icmp);
        let _ = parse_icmpv6(&icmp);
    }

    #[test]
    fn built_requests_round_trip(v6: bool, ident: u16, seq: u16, len in 0usize..1500, stamp: u64) {
        let pkt = build_echo_request(v6, ident, seq, len, stamp);
        let parsed = if v6 { parse_icmpv6(&pkt) } else { parse_icmpv4(&pkt) };
        match parsed {
            Ok(Icmp::EchoRequest(e)) => {
                prop_assert_eq!((e.ident, e.seq, e.payload.len()), (ident, seq, len));
                if len >= STAMP_LEN {
                    prop_assert_eq!(read_stamp(e.payload), PayloadStamp::Stamp(stamp));
                }
            }
            other => prop_assert!(false, "unexpected {:?}", other),
        }
        prop_assert_eq!(parse_quoted_echo(&pkt, v6), Ok((ident, seq)));
    }

    /// The send path writes requests into a buffer of its own: whatever that buffer held
    /// before must not show through.
    #[test]
    fn requests_written_over_old_bytes_are_the_built_ones(
        v6: bool, ident: u16, seq: u16, len in 0usize..300, stamp: u64, flow: u16, old: u8,
    ) {
        let mut buf = vec![old; ECHO_HEADER_LEN + len];
        write_echo_request(&mut buf, v6, ident, seq, stamp);
        prop_assert_eq!(&buf, &build_echo_request(v6, ident, seq, len, stamp));
        let mut buf = vec![old; flow_request_len(len)];
        write_flow_request(&mut buf, v6, ident, seq, stamp, flow);
        prop_assert_eq!(&buf, &build_flow_request(v6, ident, seq, len, stamp, flow));
    }
}

/// A TX timestamp's request as the kernel loops it back: behind no link header (TUN), an
/// Ethernet one (loopback) or a VLAN-tagged one; only a whole request of the right family counts.
#[test]
fn sent_request_is_found_behind_a_link_header() {
    let v4_dst = Ipv4Addr::new(198, 18, 0, 10);
    let icmp = build_echo_request(false, 0x1234, 7, 56, 99);
    let mut v4 = ipv4_header(1, 64, [198, 18, 0, 1], v4_dst.octets(), icmp.len());
    v4.extend_from_slice(&icmp);
    let v6_dst: Ipv6Addr = "2001:db8::10".parse().unwrap();
    let icmp6 = build_echo_request(true, 0x4321, 9, 56, 77);
    let mut v6 = ipv6_header(58, v6_dst);
    v6[4..6].copy_from_slice(&(icmp6.len() as u16).to_be_bytes());
    v6.extend_from_slice(&icmp6);
    for (pkt, is_v6, dst, id, seq, stamp) in [
        (&v4, false, IpAddr::V4(v4_dst), 0x1234, 7, 99),
        (&v6, true, IpAddr::V6(v6_dst), 0x4321, 9, 77),
    ] {
        for link in [0usize, 14, 18, 22] {
            let mut buf = vec![0u8; link];
            buf.extend_from_slice(pkt);
            let (got, echo) = parse_sent_request(&buf, is_v6).expect("the request is found");
            assert_eq!((got, echo.ident, echo.seq), (dst, id, seq));
            assert_eq!(read_stamp(echo.payload), PayloadStamp::Stamp(stamp));
            assert!(parse_sent_request(&buf, !is_v6).is_none(), "other family");
            assert!(
                parse_sent_request(&buf[..buf.len() - 1], is_v6).is_none(),
                "a truncated request does not span its length field"
            );
            buf.push(0);
            assert!(parse_sent_request(&buf, is_v6).is_none(), "trailing bytes");
        }
    }
    // A reply is not a request we sent.
    let reply = {
        let mut r = v4.clone();
        r[20] = 0;
        r
    };
    assert!(parse_sent_request(&reply, false).is_none());
}

proptest! {
    /// Whatever the error queue holds, parsing it never panics.
    #[test]
    fn sent_request_parser_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_sent_request(&data, false);
        let _ = parse_sent_request(&data, true);
        for total in [data.len(), data.len() + 100, data.len().saturating_sub(1)] {
            let _ = parse_sent_udp(&data, total, false);
            let _ = parse_sent_udp(&data, total, true);
        }
    }
}

/// The checksum field a flow request carries, as the kernel would compute it for v6 too
/// (the pseudo-header is the same for every probe of a flow, so the message sum decides).
fn message_sum(pkt: &[u8]) -> u16 {
    let mut zeroed = pkt.to_vec();
    zeroed[2..4].copy_from_slice(&[0, 0]);
    checksum(&zeroed)
}

#[test]
fn flow_requests_keep_one_checksum_per_flow() {
    for v6 in [false, true] {
        for size in [0usize, 2, 8, 12, 13, 14, 15, 56, 1000] {
            for flow in [0u16, 1, 2, 3, 0xffff] {
                let sums: std::collections::BTreeSet<u16> = (0..200u16)
                    .map(|seq| {
                        let stamp = 1_700_000_000_000_000_000u64 + u64::from(seq) * 7_919_123;
                        let pkt = build_flow_request(
                            v6,
                            0x1234,
                            seq.wrapping_mul(331),
                            size,
                            stamp,
                            flow,
                        );
                        assert_eq!(pkt.len(), ECHO_HEADER_LEN + size.max(FLOW_STAMP_LEN));
                        assert_eq!(be16(&pkt, 6), seq.wrapping_mul(331));
                        let sum = message_sum(&pkt);
                        if !v6 {
                            assert_eq!(be16(&pkt, 2), sum, "v4 carries its checksum");
                            assert_eq!(checksum(&pkt), 0, "and it verifies");
                        }
                        sum
                    })
                    .collect();
                assert_eq!(sums.len(), 1, "v6={v6} size={size} flow={flow}: {sums:?}");
                assert_eq!(sums.first().copied(), Some(flow_sum(flow)));
            }
        }
    }
    assert_ne!(flow_sum(0), flow_sum(1), "flows differ");
}

#[test]
fn flow_requests_are_always_stamped() {
    let pkt = build_flow_request(false, 1, 2, 14, 42, 0);
    assert_eq!(read_stamp(&pkt[ECHO_HEADER_LEN..]), PayloadStamp::Stamp(42));
    let pkt = build_flow_request(false, 1, 2, 0, 42, 0);
    assert_eq!(read_stamp(&pkt[ECHO_HEADER_LEN..]), PayloadStamp::Stamp(42));
    assert!(matches!(parse_icmpv4(&pkt), Ok(Icmp::EchoRequest(_))));
}

/// A UDP path probe's TX timestamp: the datagram behind the link header, found even when the
/// read buffer holds only its start (the total length is what the IP header must span).
#[test]
fn sent_udp_datagram_is_found_even_cut_short() {
    let payload = crate::engine::udp::flow_request(77, 5, 1000, 3);
    let mut udp = vec![0xa0, 0x00, 0x82, 0x9a, 0, 0, 0, 0];
    udp[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&payload);
    let v4_dst = Ipv4Addr::new(198, 18, 0, 10);
    let mut v4 = ipv4_header(17, 3, [198, 18, 0, 1], v4_dst.octets(), udp.len());
    v4.extend_from_slice(&udp);
    let v6_dst: Ipv6Addr = "2001:db8::10".parse().unwrap();
    let mut v6 = ipv6_header(17, v6_dst);
    v6[4..6].copy_from_slice(&(udp.len() as u16).to_be_bytes());
    v6.extend_from_slice(&udp);
    for (pkt, is_v6, dst) in [
        (&v4, false, IpAddr::V4(v4_dst)),
        (&v6, true, IpAddr::V6(v6_dst)),
    ] {
        for link in [0usize, 14] {
            let mut buf = vec![0u8; link];
            buf.extend_from_slice(pkt);
            let total = buf.len();
            for cut in [total, 200] {
                let (got, port, data) =
                    parse_sent_udp(&buf[..cut], total, is_v6).expect("the datagram is found");
                assert_eq!((got, port), (dst, 33434));
                assert_eq!(crate::engine::udp::request_id(data), Some(77));
            }
            assert!(
                parse_sent_udp(&buf, total, !is_v6).is_none(),
                "other family"
            );
            assert!(parse_sent_udp(&buf, total + 1, is_v6).is_none(), "length");
            assert!(parse_sent_request(&buf, is_v6).is_none(), "not ICMP");
        }
    }
}

#[test]
fn udp_flow_requests_keep_one_payload_sum_per_flow() {
    use crate::engine::udp::{FLOW_TOKEN_LEN, flow_request, request_id};
    for size in [0usize, 25, 26, 27, 56, 1000] {
        for flow in [0u16, 1, 2, 0xffff] {
            let sums: std::collections::BTreeSet<u16> = (0..200u64)
                .map(|id| {
                    let stamp = 1_700_000_000_000_000_000u64 + id * 7_919_123;
                    let p = flow_request(id * 0x9e37_79b9, stamp, size, flow);
                    assert_eq!(p.len(), size.max(FLOW_TOKEN_LEN));
                    assert_eq!(request_id(&p), Some(id * 0x9e37_79b9));
                    // Modulo 0xffff: both representations of zero are one sum.
                    ones_sum(&p) % 0xffff
                })
                .collect();
            assert_eq!(sums.len(), 1, "size={size} flow={flow}: {sums:?}");
        }
    }
}
