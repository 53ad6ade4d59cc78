//! ICMP echo parsing and reply/error building for IPv4 and IPv6, checksums included.
//!
//! Every parser works on untrusted bytes read from the TUN device: anything that is not a
//! well-formed, checksum-correct echo request yields `None`, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const IPV4_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
const ICMP_HEADER: usize = 8;
const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;
/// RFC 1812 4.3.2.3: an ICMPv4 error carries as much of the original as fits in 576 bytes.
const ICMPV4_ERROR_MAX: usize = 576;
/// RFC 4443 2.4(c): an ICMPv6 error must not exceed the minimum IPv6 MTU.
const ICMPV6_ERROR_MAX: usize = 1280;

/// An echo request taken from the wire, with what is needed to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoRequest {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub id: u16,
    pub seq: u16,
    /// Traffic class / TOS of the request, echoed back.
    pub tos: u8,
    /// The ICMP payload after the 8-byte header.
    pub payload: Vec<u8>,
    /// The whole IP packet, quoted in ICMP errors.
    pub raw: Vec<u8>,
}

/// ICMP error kinds the responder can send instead of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpError {
    /// Destination unreachable with this code.
    Unreachable(u8),
    /// Time exceeded in transit (code 0).
    TimeExceeded,
}

/// Ones' complement sum of 16-bit big-endian words, not yet folded.
fn sum_words(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    fold(sum_words(data, 0))
}

/// ICMPv6 checksum over the pseudo-header (RFC 8200 8.1) and the ICMPv6 message.
pub fn checksum_v6(src: &Ipv6Addr, dst: &Ipv6Addr, icmp: &[u8]) -> u16 {
    let mut acc = sum_words(&src.octets(), 0);
    acc = sum_words(&dst.octets(), acc);
    let len = icmp.len() as u32;
    acc = acc.wrapping_add(len >> 16).wrapping_add(len & 0xffff);
    acc = acc.wrapping_add(u32::from(PROTO_ICMPV6));
    fold(sum_words(icmp, acc))
}

/// Parse an IP packet; returns the echo request it carries, if it is one.
pub fn parse_echo_request(pkt: &[u8]) -> Option<EchoRequest> {
    match pkt.first()? >> 4 {
        4 => parse_v4(pkt),
        6 => parse_v6(pkt),
        _ => None,
    }
}

fn parse_v4(pkt: &[u8]) -> Option<EchoRequest> {
    let ihl = usize::from(pkt.first()? & 0x0f) * 4;
    if ihl < IPV4_HEADER || pkt.len() < ihl {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
    if total < ihl + ICMP_HEADER || total > pkt.len() {
        return None;
    }
    // Fragments are not reassembled: neither "more fragments" nor a non-zero offset.
    let frag = u16::from_be_bytes([pkt[6], pkt[7]]);
    if frag & 0x3fff != 0 || pkt[9] != PROTO_ICMP || checksum(&pkt[..ihl]) != 0 {
        return None;
    }
    let icmp = &pkt[ihl..total];
    if icmp[0] != 8 || icmp[1] != 0 || checksum(icmp) != 0 {
        return None;
    }
    let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
    let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
    Some(EchoRequest {
        src: src.into(),
        dst: dst.into(),
        id: u16::from_be_bytes([icmp[4], icmp[5]]),
        seq: u16::from_be_bytes([icmp[6], icmp[7]]),
        tos: pkt[1],
        payload: icmp[ICMP_HEADER..].to_vec(),
        raw: pkt[..total].to_vec(),
    })
}

fn parse_v6(pkt: &[u8]) -> Option<EchoRequest> {
    if pkt.len() < IPV6_HEADER + ICMP_HEADER {
        return None;
    }
    let payload_len = usize::from(u16::from_be_bytes([pkt[4], pkt[5]]));
    // Extension headers (and jumbograms, payload length 0) are not followed: ping never sends them.
    if pkt[6] != PROTO_ICMPV6 || payload_len < ICMP_HEADER || IPV6_HEADER + payload_len > pkt.len()
    {
        return None;
    }
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&pkt[8..24]).ok()?);
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&pkt[24..40]).ok()?);
    let icmp = &pkt[IPV6_HEADER..IPV6_HEADER + payload_len];
    if icmp[0] != 128 || icmp[1] != 0 || checksum_v6(&src, &dst, icmp) != 0 {
        return None;
    }
    let tclass = (u16::from_be_bytes([pkt[0], pkt[1]]) >> 4) as u8;
    Some(EchoRequest {
        src: src.into(),
        dst: dst.into(),
        id: u16::from_be_bytes([icmp[4], icmp[5]]),
        seq: u16::from_be_bytes([icmp[6], icmp[7]]),
        tos: tclass,
        payload: icmp[ICMP_HEADER..].to_vec(),
        raw: pkt[..IPV6_HEADER + payload_len].to_vec(),
    })
}

/// Wrap an ICMP message in an IPv4 header (no options, DF clear).
fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, tos: u8, ttl: u8, ident: u16, icmp: &[u8]) -> Vec<u8> {
    let total = (IPV4_HEADER + icmp.len()) as u16;
    let mut p = Vec::with_capacity(usize::from(total));
    p.extend_from_slice(&[0x45, tos]);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&[0, 0, ttl, PROTO_ICMP, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let csum = checksum(&p);
    p[10..12].copy_from_slice(&csum.to_be_bytes());
    p.extend_from_slice(icmp);
    p
}

/// Wrap an ICMPv6 message in an IPv6 header; fills in the ICMPv6 checksum.
fn ipv6_packet(src: Ipv6Addr, dst: Ipv6Addr, tclass: u8, hops: u8, mut icmp: Vec<u8>) -> Vec<u8> {
    icmp[2] = 0;
    icmp[3] = 0;
    let csum = checksum_v6(&src, &dst, &icmp);
    icmp[2..4].copy_from_slice(&csum.to_be_bytes());
    let mut p = Vec::with_capacity(IPV6_HEADER + icmp.len());
    let vtf = (6u32 << 28) | (u32::from(tclass) << 20);
    p.extend_from_slice(&vtf.to_be_bytes());
    p.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    p.extend_from_slice(&[PROTO_ICMPV6, hops]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&icmp);
    p
}

fn icmp_message(kind: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(ICMP_HEADER + body.len());
    m.extend_from_slice(&[kind, code, 0, 0]);
    m.extend_from_slice(&rest);
    m.extend_from_slice(body);
    m
}

/// The echo reply to `req`, sent with this TTL / hop limit. `ident` is the IPv4 identification.
pub fn echo_reply(req: &EchoRequest, ttl: u8, ident: u16) -> Option<Vec<u8>> {
    let mut rest = [0u8; 4];
    rest[..2].copy_from_slice(&req.id.to_be_bytes());
    rest[2..].copy_from_slice(&req.seq.to_be_bytes());
    match (req.src, req.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let mut icmp = icmp_message(0, 0, rest, &req.payload);
            let csum = checksum(&icmp);
            icmp[2..4].copy_from_slice(&csum.to_be_bytes());
            Some(ipv4_packet(dst, src, req.tos, ttl, ident, &icmp))
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => Some(ipv6_packet(
            dst,
            src,
            req.tos,
            ttl,
            icmp_message(129, 0, rest, &req.payload),
        )),
        _ => None,
    }
}

/// An ICMP error about `req`, sent from `from` (the router that "reports" it).
/// `None` when `from` is not of the request's family.
pub fn icmp_error(
    req: &EchoRequest,
    err: IcmpError,
    from: IpAddr,
    ttl: u8,
    ident: u16,
) -> Option<Vec<u8>> {
    match (req.src, from) {
        (IpAddr::V4(to), IpAddr::V4(from)) => {
            let (kind, code) = match err {
                IcmpError::Unreachable(c) => (3, c),
                IcmpError::TimeExceeded => (11, 0),
            };
            let room = ICMPV4_ERROR_MAX - IPV4_HEADER - ICMP_HEADER;
            let quoted = &req.raw[..req.raw.len().min(room)];
            let mut icmp = icmp_message(kind, code, [0; 4], quoted);
            let csum = checksum(&icmp);
            icmp[2..4].copy_from_slice(&csum.to_be_bytes());
            Some(ipv4_packet(from, to, 0, ttl, ident, &icmp))
        }
        (IpAddr::V6(to), IpAddr::V6(from)) => {
            let (kind, code) = match err {
                IcmpError::Unreachable(c) => (1, c),
                IcmpError::TimeExceeded => (3, 0),
            };
            let room = ICMPV6_ERROR_MAX - IPV6_HEADER - ICMP_HEADER;
            let quoted = &req.raw[..req.raw.len().min(room)];
            Some(ipv6_packet(
                from,
                to,
                0,
                ttl,
                icmp_message(kind, code, [0; 4], quoted),
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn v4_request(src: [u8; 4], dst: [u8; 4], id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut rest = [0u8; 4];
        rest[..2].copy_from_slice(&id.to_be_bytes());
        rest[2..].copy_from_slice(&seq.to_be_bytes());
        let mut icmp = icmp_message(8, 0, rest, payload);
        let c = checksum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        ipv4_packet(src.into(), dst.into(), 0, 64, 1, &icmp)
    }

    fn v6_request(src: Ipv6Addr, dst: Ipv6Addr, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut rest = [0u8; 4];
        rest[..2].copy_from_slice(&id.to_be_bytes());
        rest[2..].copy_from_slice(&seq.to_be_bytes());
        ipv6_packet(src, dst, 0, 64, icmp_message(128, 0, rest, payload))
    }

    #[test]
    fn rfc1071_example_checksum() {
        // RFC 1071 section 3 worked example: the folded sum is 0xddf2, so the checksum is its complement.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn v4_request_round_trips_to_a_valid_reply() {
        let pkt = v4_request([198, 18, 0, 1], [198, 18, 0, 9], 0x1234, 7, b"hello!");
        let req = parse_echo_request(&pkt).expect("well-formed request");
        assert_eq!(
            (req.id, req.seq, req.payload.as_slice()),
            (0x1234, 7, &b"hello!"[..])
        );
        let reply = echo_reply(&req, 42, 5).expect("same family");
        assert_eq!(checksum(&reply[..20]), 0, "IPv4 header checksum");
        assert_eq!(checksum(&reply[20..]), 0, "ICMP checksum");
        assert_eq!(reply[8], 42);
        assert_eq!(&reply[12..16], &[198, 18, 0, 9]);
        assert_eq!(&reply[16..20], &[198, 18, 0, 1]);
        assert_eq!(reply[20], 0, "echo reply type");
        assert_eq!(&reply[24..28], &[0x12, 0x34, 0, 7]);
    }

    #[test]
    fn v6_request_round_trips_to_a_valid_reply() {
        let (a, b): (Ipv6Addr, Ipv6Addr) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::9".parse().unwrap(),
        );
        let pkt = v6_request(a, b, 9, 65535, &[1, 2, 3]);
        let req = parse_echo_request(&pkt).expect("well-formed request");
        assert_eq!((req.id, req.seq), (9, 65535));
        let reply = echo_reply(&req, 3, 0).expect("same family");
        assert_eq!(reply[7], 3, "hop limit");
        assert_eq!(reply[40], 129);
        assert_eq!(
            checksum_v6(&b, &a, &reply[40..]),
            0,
            "ICMPv6 checksum verifies"
        );
    }

    #[test]
    fn errors_quote_the_request_and_verify() {
        let pkt = v4_request([198, 18, 0, 1], [198, 18, 0, 9], 1, 2, &[0u8; 1000]);
        let req = parse_echo_request(&pkt).unwrap();
        let err = icmp_error(&req, IcmpError::Unreachable(1), req.dst, 64, 0).unwrap();
        assert_eq!(err.len(), ICMPV4_ERROR_MAX);
        assert_eq!((err[20], err[21]), (3, 1));
        assert_eq!(checksum(&err[20..]), 0);
        assert_eq!(&err[28..48], &pkt[..20], "original header quoted");

        let (a, b): (Ipv6Addr, Ipv6Addr) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::9".parse().unwrap(),
        );
        let req6 = parse_echo_request(&v6_request(a, b, 1, 2, &[0u8; 2000])).unwrap();
        let err6 = icmp_error(&req6, IcmpError::TimeExceeded, b.into(), 64, 0).unwrap();
        assert_eq!(err6.len(), ICMPV6_ERROR_MAX);
        assert_eq!((err6[40], err6[41]), (3, 0));
        assert_eq!(checksum_v6(&b, &a, &err6[40..]), 0);
        assert!(
            icmp_error(
                &req6,
                IcmpError::TimeExceeded,
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                64,
                0
            )
            .is_none()
        );
    }

    #[test]
    fn corrupt_or_foreign_packets_are_ignored() {
        let mut pkt = v4_request([198, 18, 0, 1], [198, 18, 0, 9], 1, 2, b"x");
        let last = pkt.len() - 1;
        pkt[last] ^= 0xff;
        assert!(parse_echo_request(&pkt).is_none(), "bad ICMP checksum");
        assert!(parse_echo_request(&[]).is_none());
        assert!(parse_echo_request(&[0x45]).is_none());
        assert!(parse_echo_request(&[0x60; 47]).is_none());
        let reply = echo_reply(
            &parse_echo_request(&v4_request([1; 4], [2; 4], 1, 1, b"")).unwrap(),
            1,
            1,
        );
        assert!(
            parse_echo_request(&reply.unwrap()).is_none(),
            "a reply is not a request"
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse_echo_request(&bytes);
        }

        #[test]
        fn truncations_and_bit_flips_never_panic(cut in 0usize..80, flip in 0usize..80) {
            let mut pkt = v4_request([198, 18, 0, 1], [198, 18, 0, 9], 1, 2, &[7u8; 40]);
            if let Some(b) = pkt.get_mut(flip) { *b ^= 0x5a; }
            pkt.truncate(cut);
            let _ = parse_echo_request(&pkt);
            let a: Ipv6Addr = "2001:db8::1".parse().unwrap();
            let mut pkt6 = v6_request(a, a, 1, 2, &[7u8; 40]);
            if let Some(b) = pkt6.get_mut(flip) { *b ^= 0x5a; }
            pkt6.truncate(cut);
            let _ = parse_echo_request(&pkt6);
        }
    }
}
