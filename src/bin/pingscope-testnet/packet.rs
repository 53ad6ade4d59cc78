//! IP header and ICMP echo parsing, and building replies, ICMP errors and any IP packet (ICMP,
//! ICMPv6, UDP, TCP) for IPv4 and IPv6, checksums and pseudo-headers included.
//!
//! Every parser works on untrusted bytes read from the TUN device: anything that is not a
//! well-formed, checksum-correct packet of its kind yields `None`, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const IPV4_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
const ICMP_HEADER: usize = 8;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
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
    /// Port unreachable (ICMPv4 type 3 code 3, ICMPv6 type 1 code 4).
    PortUnreachable,
    /// Time exceeded in transit (code 0).
    TimeExceeded,
}

impl IcmpError {
    /// ICMP type and code of this error, in ICMPv6 numbering when `v6`.
    fn type_code(self, v6: bool) -> (u8, u8) {
        match (self, v6) {
            (IcmpError::Unreachable(c), false) => (3, c),
            (IcmpError::PortUnreachable, false) => (3, 3),
            (IcmpError::TimeExceeded, false) => (11, 0),
            (IcmpError::Unreachable(c), true) => (1, c),
            (IcmpError::PortUnreachable, true) => (1, 4),
            (IcmpError::TimeExceeded, true) => (3, 0),
        }
    }
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
    transport_checksum((*src).into(), (*dst).into(), PROTO_ICMPV6, icmp)
}

/// An IP packet's header fields and its transport bytes, borrowed from the read buffer.
#[derive(Debug, Clone, Copy)]
pub struct IpPacket<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TTL / hop limit as received (the kernel does not decrement what it sends itself).
    pub ttl: u8,
    /// TOS / traffic class.
    pub tos: u8,
    /// Protocol / next header.
    pub proto: u8,
    /// The transport header and payload.
    pub l4: &'a [u8],
    /// The whole packet up to its stated length, quoted in ICMP errors.
    pub raw: &'a [u8],
}

/// A header-only packet from `src` to `dst` (TTL 64), for tests to answer.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub fn test_packet(src: &str, dst: &str, proto: u8) -> IpPacket<'static> {
    IpPacket {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        ttl: 64,
        tos: 0,
        proto,
        l4: &[],
        raw: &[],
    }
}

/// Parse the IP header: IPv4 with a correct header checksum and not a fragment, or IPv6
/// without extension headers (ping, traceroute and connect never send them).
pub fn parse_ip(pkt: &[u8]) -> Option<IpPacket<'_>> {
    match pkt.first()? >> 4 {
        4 => parse_v4(pkt),
        6 => parse_v6(pkt),
        _ => None,
    }
}

fn parse_v4(pkt: &[u8]) -> Option<IpPacket<'_>> {
    let ihl = usize::from(pkt.first()? & 0x0f) * 4;
    if ihl < IPV4_HEADER || pkt.len() < ihl {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
    if total < ihl || total > pkt.len() {
        return None;
    }
    // Fragments are not reassembled: neither "more fragments" nor a non-zero offset.
    let frag = u16::from_be_bytes([pkt[6], pkt[7]]);
    if frag & 0x3fff != 0 || checksum(&pkt[..ihl]) != 0 {
        return None;
    }
    Some(IpPacket {
        src: Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]).into(),
        dst: Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]).into(),
        ttl: pkt[8],
        tos: pkt[1],
        proto: pkt[9],
        l4: &pkt[ihl..total],
        raw: &pkt[..total],
    })
}

fn parse_v6(pkt: &[u8]) -> Option<IpPacket<'_>> {
    if pkt.len() < IPV6_HEADER {
        return None;
    }
    // Jumbograms (payload length 0 with a hop-by-hop option) are not followed.
    let end = IPV6_HEADER + usize::from(u16::from_be_bytes([pkt[4], pkt[5]]));
    if end > pkt.len() {
        return None;
    }
    Some(IpPacket {
        src: Ipv6Addr::from(<[u8; 16]>::try_from(&pkt[8..24]).ok()?).into(),
        dst: Ipv6Addr::from(<[u8; 16]>::try_from(&pkt[24..40]).ok()?).into(),
        ttl: pkt[7],
        tos: (u16::from_be_bytes([pkt[0], pkt[1]]) >> 4) as u8,
        proto: pkt[6],
        l4: &pkt[IPV6_HEADER..end],
        raw: &pkt[..end],
    })
}

/// Parse an IP packet; returns the echo request it carries, if it is one.
#[cfg(test)]
pub fn parse_echo_request(pkt: &[u8]) -> Option<EchoRequest> {
    echo_request(&parse_ip(pkt)?)
}

/// The checksum-correct echo request `ip` carries, if it is one.
pub fn echo_request(ip: &IpPacket<'_>) -> Option<EchoRequest> {
    let icmp = ip.l4;
    if icmp.len() < ICMP_HEADER || icmp[1] != 0 {
        return None;
    }
    let ok = match (ip.src, ip.dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => {
            ip.proto == PROTO_ICMP && icmp[0] == 8 && checksum(icmp) == 0
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            ip.proto == PROTO_ICMPV6 && icmp[0] == 128 && checksum_v6(&s, &d, icmp) == 0
        }
        _ => false,
    };
    ok.then(|| EchoRequest {
        src: ip.src,
        dst: ip.dst,
        id: u16::from_be_bytes([icmp[4], icmp[5]]),
        seq: u16::from_be_bytes([icmp[6], icmp[7]]),
        tos: ip.tos,
        payload: icmp[ICMP_HEADER..].to_vec(),
        raw: ip.raw.to_vec(),
    })
}

fn sum_addr(a: IpAddr, acc: u32) -> u32 {
    match a {
        IpAddr::V4(a) => sum_words(&a.octets(), acc),
        IpAddr::V6(a) => sum_words(&a.octets(), acc),
    }
}

/// Transport checksum (RFC 768, RFC 9293, RFC 8200 8.1) over the pseudo-header and `data`;
/// 0 when `data` already carries a correct checksum.
pub fn transport_checksum(src: IpAddr, dst: IpAddr, proto: u8, data: &[u8]) -> u16 {
    let mut acc = sum_addr(dst, sum_addr(src, 0));
    let len = data.len() as u32;
    acc = acc.wrapping_add(len >> 16).wrapping_add(len & 0xffff);
    acc = acc.wrapping_add(u32::from(proto));
    fold(sum_words(data, acc))
}

/// An IP packet from `src` to `dst` carrying `l4` (ICMP, ICMPv6, UDP or TCP), whose checksum is
/// filled in here. `ident` is the IPv4 identification. `None` for mixed families, another
/// protocol, or more than 65535 bytes.
pub fn ip_packet(
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    tos: u8,
    ttl: u8,
    ident: u16,
    mut l4: Vec<u8>,
) -> Option<Vec<u8>> {
    let at = match proto {
        PROTO_ICMP | PROTO_ICMPV6 => 2,
        PROTO_UDP => 6,
        PROTO_TCP => 16,
        _ => return None,
    };
    l4.get_mut(at..at + 2)?.fill(0);
    let mut csum = if proto == PROTO_ICMP {
        checksum(&l4)
    } else {
        transport_checksum(src, dst, proto, &l4)
    };
    // RFC 768: a computed zero goes out as all ones (zero means "no checksum").
    if proto == PROTO_UDP && csum == 0 {
        csum = 0xffff;
    }
    l4[at..at + 2].copy_from_slice(&csum.to_be_bytes());
    let mut p = Vec::with_capacity(IPV6_HEADER + l4.len());
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            // No options, DF clear.
            let total = u16::try_from(IPV4_HEADER + l4.len()).ok()?;
            p.extend_from_slice(&[0x45, tos]);
            p.extend_from_slice(&total.to_be_bytes());
            p.extend_from_slice(&ident.to_be_bytes());
            p.extend_from_slice(&[0, 0, ttl, proto, 0, 0]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            let hc = checksum(&p);
            p[10..12].copy_from_slice(&hc.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let len = u16::try_from(l4.len()).ok()?;
            let vtf = (6u32 << 28) | (u32::from(tos) << 20);
            p.extend_from_slice(&vtf.to_be_bytes());
            p.extend_from_slice(&len.to_be_bytes());
            p.extend_from_slice(&[proto, ttl]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
        }
        _ => return None,
    }
    p.extend_from_slice(&l4);
    Some(p)
}

/// The second word of an echo message: identifier and sequence.
fn id_seq(id: u16, seq: u16) -> [u8; 4] {
    let [i0, i1] = id.to_be_bytes();
    let [s0, s1] = seq.to_be_bytes();
    [i0, i1, s0, s1]
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
    let rest = id_seq(req.id, req.seq);
    let (proto, kind) = if req.src.is_ipv4() {
        (PROTO_ICMP, 0)
    } else {
        (PROTO_ICMPV6, 129)
    };
    let icmp = icmp_message(kind, 0, rest, &req.payload);
    ip_packet(req.dst, req.src, proto, req.tos, ttl, ident, icmp)
}

/// An ICMP error to `to` about the packet `raw` it sent, from `from`, quoting as much of `raw`
/// as fits (IPv4: 576 bytes in all; IPv6: 1280). `None` when the families differ.
pub fn icmp_error_about(
    to: IpAddr,
    raw: &[u8],
    err: IcmpError,
    from: IpAddr,
    ttl: u8,
    ident: u16,
) -> Option<Vec<u8>> {
    let (proto, max, header) = match (to, from) {
        (IpAddr::V4(_), IpAddr::V4(_)) => (PROTO_ICMP, ICMPV4_ERROR_MAX, IPV4_HEADER),
        (IpAddr::V6(_), IpAddr::V6(_)) => (PROTO_ICMPV6, ICMPV6_ERROR_MAX, IPV6_HEADER),
        _ => return None,
    };
    let (kind, code) = err.type_code(to.is_ipv6());
    let quoted = &raw[..raw.len().min(max - header - ICMP_HEADER)];
    let icmp = icmp_message(kind, code, [0; 4], quoted);
    ip_packet(from, to, proto, 0, ttl, ident, icmp)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn v4_request(src: [u8; 4], dst: [u8; 4], id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
        let icmp = icmp_message(8, 0, id_seq(id, seq), payload);
        ip_packet(src.into(), dst.into(), PROTO_ICMP, 0, 64, 1, icmp).unwrap()
    }

    fn v6_request(src: Ipv6Addr, dst: Ipv6Addr, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
        let icmp = icmp_message(128, 0, id_seq(id, seq), payload);
        ip_packet(src.into(), dst.into(), PROTO_ICMPV6, 0, 64, 1, icmp).unwrap()
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
        let err =
            icmp_error_about(req.src, &req.raw, IcmpError::Unreachable(1), req.dst, 64, 0).unwrap();
        assert_eq!(err.len(), ICMPV4_ERROR_MAX);
        assert_eq!((err[20], err[21]), (3, 1));
        assert_eq!(checksum(&err[20..]), 0);
        assert_eq!(&err[28..48], &pkt[..20], "original header quoted");

        let (a, b): (Ipv6Addr, Ipv6Addr) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::9".parse().unwrap(),
        );
        let req6 = parse_echo_request(&v6_request(a, b, 1, 2, &[0u8; 2000])).unwrap();
        let err6 = icmp_error_about(
            req6.src,
            &req6.raw,
            IcmpError::TimeExceeded,
            b.into(),
            64,
            0,
        )
        .unwrap();
        assert_eq!(err6.len(), ICMPV6_ERROR_MAX);
        assert_eq!((err6[40], err6[41]), (3, 0));
        assert_eq!(checksum_v6(&b, &a, &err6[40..]), 0);
        assert!(
            icmp_error_about(
                req6.src,
                &req6.raw,
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
            if let Some(ip) = parse_ip(&bytes) {
                let _ = (crate::udp::parse(&ip), crate::path::flow_hash(&ip));
                if let Some(seg) = crate::tcp::parse(&ip) {
                    let mut conns = crate::tcp::Connections::default();
                    let _ = conns.accept(&ip, &seg, 1, 64, 1);
                    let _ = conns.segment(&ip, &seg, 64, 1);
                }
                let _ = icmp_error_about(ip.src, ip.raw, IcmpError::TimeExceeded, ip.dst, 1, 1);
            }
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
