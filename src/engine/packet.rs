//! ICMP wire format: building echo requests and parsing what the sockets hand back.
//!
//! Everything here is a pure function over byte slices. Parsers never panic, whatever the input
//! (they are property-tested and meant to be fuzzed): every index is checked and a short or
//! malformed packet is a [`ParseError`].
//!
//! Three shapes arrive from the kernel:
//! - raw ICMPv4 sockets deliver the IPv4 header and the ICMP message ([`parse_ipv4_packet`]);
//! - datagram ICMPv4 and every ICMPv6 socket deliver the ICMP message alone ([`parse_icmpv4`],
//!   [`parse_icmpv6`]);
//! - the error queue of a datagram socket delivers the quoted echo request ([`parse_quoted_echo`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::IcmpErrorKind;

/// Length of an ICMP (v4 or v6) echo header.
pub const ECHO_HEADER_LEN: usize = 8;
/// Marks our payloads, so foreign echo traffic on a raw socket is never taken for ours.
pub const PAYLOAD_MAGIC: [u8; 4] = *b"PSc1";
/// Bytes of payload needed to carry the magic and the send timestamp.
pub const STAMP_LEN: usize = 12;

const ICMPV4_ECHO_REPLY: u8 = 0;
const ICMPV4_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;
const IPV6_HEADER_LEN: usize = 40;
const NEXT_HEADER_ICMPV6: u8 = 58;
const PROTO_ICMP: u8 = 1;

/// Why bytes could not be parsed as the ICMP message we expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Fewer bytes than the structure needs.
    #[error("truncated {what}: need {need} bytes, got {got}")]
    Truncated {
        /// Which structure was cut short.
        what: &'static str,
        /// Bytes required.
        need: usize,
        /// Bytes available.
        got: usize,
    },
    /// The IP version nibble is not the expected one.
    #[error("IP version {0} where {1} was expected")]
    IpVersion(u8, u8),
    /// The IPv4 header length field is below 20 bytes.
    #[error("bad IPv4 header length {0}")]
    HeaderLength(usize),
    /// The IP packet does not carry ICMP.
    #[error("IP protocol {0} is not ICMP")]
    NotIcmp(u8),
    /// An ICMP error does not quote an echo request.
    #[error("ICMP error quotes type {0}, not an echo request")]
    NotEcho(u8),
    /// The ICMPv4 checksum does not verify.
    #[error("bad ICMP checksum")]
    Checksum,
}

/// The fields of an echo request or reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Echo<'a> {
    /// Identifier field.
    pub ident: u16,
    /// Sequence field.
    pub seq: u16,
    /// Echo data after the 8-byte header.
    pub payload: &'a [u8],
}

/// An ICMP error that quotes one of our echo requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotedError {
    /// ICMP type of the error.
    pub icmp_type: u8,
    /// ICMP code of the error.
    pub icmp_code: u8,
    /// Destination of the quoted original packet.
    pub orig_dst: IpAddr,
    /// Identifier of the quoted echo request.
    pub ident: u16,
    /// Sequence of the quoted echo request.
    pub seq: u16,
}

/// One parsed ICMP message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Icmp<'a> {
    /// Echo reply (v4 type 0, v6 type 129).
    EchoReply(Echo<'a>),
    /// Echo request (seen on raw sockets: our own requests looped back, or someone's ping).
    EchoRequest(Echo<'a>),
    /// An error quoting an echo request.
    Error(QuotedError),
    /// Any other message (neighbour discovery, router advertisements, ...).
    Other {
        /// ICMP type.
        icmp_type: u8,
        /// ICMP code.
        icmp_code: u8,
    },
}

/// The IPv4 header fields the engine needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Info {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Time to live.
    pub ttl: u8,
}

fn need(what: &'static str, buf: &[u8], n: usize) -> Result<(), ParseError> {
    if buf.len() < n {
        Err(ParseError::Truncated {
            what,
            need: n,
            got: buf.len(),
        })
    } else {
        Ok(())
    }
}

fn be16(buf: &[u8], at: usize) -> u16 {
    // Callers check lengths first; a miss still yields 0 rather than a panic.
    match buf.get(at..at + 2) {
        Some(b) => u16::from_be_bytes([b[0], b[1]]),
        None => 0,
    }
}

fn ipv4_at(buf: &[u8], at: usize) -> Ipv4Addr {
    match buf.get(at..at + 4) {
        Some(b) => Ipv4Addr::new(b[0], b[1], b[2], b[3]),
        None => Ipv4Addr::UNSPECIFIED,
    }
}

fn ipv6_at(buf: &[u8], at: usize) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    if let Some(b) = buf.get(at..at + 16) {
        octets.copy_from_slice(b);
    }
    Ipv6Addr::from(octets)
}

/// Splits an IPv4 header off `buf`: returns its fields, protocol, and the bytes after it.
fn split_ipv4(buf: &[u8]) -> Result<(Ipv4Info, u8, &[u8]), ParseError> {
    need("IPv4 header", buf, 20)?;
    let version = buf[0] >> 4;
    if version != 4 {
        return Err(ParseError::IpVersion(version, 4));
    }
    let ihl = usize::from(buf[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(ParseError::HeaderLength(ihl));
    }
    need("IPv4 header with options", buf, ihl)?;
    let info = Ipv4Info {
        src: ipv4_at(buf, 12),
        dst: ipv4_at(buf, 16),
        ttl: buf[8],
    };
    Ok((info, buf[9], &buf[ihl..]))
}

fn parse_echo(buf: &[u8]) -> Result<Echo<'_>, ParseError> {
    need("ICMP echo header", buf, ECHO_HEADER_LEN)?;
    Ok(Echo {
        ident: be16(buf, 4),
        seq: be16(buf, 6),
        payload: &buf[ECHO_HEADER_LEN..],
    })
}

/// Parses the quoted original of an ICMPv4 error: IPv4 header, then at least the echo header.
fn parse_quoted_v4(icmp_type: u8, icmp_code: u8, quote: &[u8]) -> Result<Icmp<'_>, ParseError> {
    let (inner, proto, rest) = split_ipv4(quote)?;
    quoted_echo(icmp_type, icmp_code, IpAddr::V4(inner.dst), proto, rest)
}

/// The echo request an ICMP error quotes: `proto` and `rest` follow the quoted IP header, whose
/// destination `orig_dst` says which ICMP to expect.
fn quoted_echo(
    icmp_type: u8,
    icmp_code: u8,
    orig_dst: IpAddr,
    proto: u8,
    rest: &[u8],
) -> Result<Icmp<'_>, ParseError> {
    let (icmp, what, request) = match orig_dst {
        IpAddr::V4(_) => (PROTO_ICMP, "quoted ICMP header", ICMPV4_ECHO_REQUEST),
        IpAddr::V6(_) => (
            NEXT_HEADER_ICMPV6,
            "quoted ICMPv6 header",
            ICMPV6_ECHO_REQUEST,
        ),
    };
    if proto != icmp {
        return Err(ParseError::NotIcmp(proto));
    }
    need(what, rest, ECHO_HEADER_LEN)?;
    if rest[0] != request {
        return Err(ParseError::NotEcho(rest[0]));
    }
    Ok(Icmp::Error(QuotedError {
        icmp_type,
        icmp_code,
        orig_dst,
        ident: be16(rest, 4),
        seq: be16(rest, 6),
    }))
}

/// Parses an ICMPv4 message without IP header (datagram sockets).
pub fn parse_icmpv4(buf: &[u8]) -> Result<Icmp<'_>, ParseError> {
    need("ICMP header", buf, ECHO_HEADER_LEN)?;
    let (icmp_type, icmp_code) = (buf[0], buf[1]);
    match icmp_type {
        ICMPV4_ECHO_REPLY => Ok(Icmp::EchoReply(parse_echo(buf)?)),
        ICMPV4_ECHO_REQUEST => Ok(Icmp::EchoRequest(parse_echo(buf)?)),
        // Unreachable, source quench, redirect, time exceeded, parameter problem.
        3 | 4 | 5 | 11 | 12 => parse_quoted_v4(icmp_type, icmp_code, &buf[ECHO_HEADER_LEN..]),
        _ => Ok(Icmp::Other {
            icmp_type,
            icmp_code,
        }),
    }
}

/// Parses an IPv4 packet carrying ICMP (raw sockets): the header fields and the message.
///
/// Raw sockets get packets before the kernel's ICMP layer has checked them, so the ICMP
/// checksum is verified here (datagram sockets only see checked messages).
pub fn parse_ipv4_packet(buf: &[u8]) -> Result<(Ipv4Info, Icmp<'_>), ParseError> {
    let (info, proto, rest) = split_ipv4(buf)?;
    if proto != PROTO_ICMP {
        return Err(ParseError::NotIcmp(proto));
    }
    // Trim link-layer padding when the total length field is sane.
    let total = usize::from(be16(buf, 2));
    let header = buf.len() - rest.len();
    let icmp = match total.checked_sub(header) {
        Some(n) if n <= rest.len() && total >= header => &rest[..n],
        _ => rest,
    };
    need("ICMP header", icmp, ECHO_HEADER_LEN)?;
    if checksum(icmp) != 0 {
        return Err(ParseError::Checksum);
    }
    Ok((info, parse_icmpv4(icmp)?))
}

/// Skips IPv6 extension headers after the fixed header; returns the upper-layer protocol and
/// its bytes.
fn skip_ipv6_extensions(mut next: u8, mut rest: &[u8]) -> Result<(u8, &[u8]), ParseError> {
    // Bounded: each round consumes at least 8 bytes, and there are at most a handful of headers.
    for _ in 0..8 {
        match next {
            // Hop-by-hop, routing, destination options: length in 8-octet units, excluding the
            // first 8.
            0 | 43 | 60 => {
                need("IPv6 extension header", rest, 8)?;
                let len = (usize::from(rest[1]) + 1) * 8;
                need("IPv6 extension header", rest, len)?;
                next = rest[0];
                rest = &rest[len..];
            }
            // Fragment header: fixed 8 bytes.
            44 => {
                need("IPv6 fragment header", rest, 8)?;
                next = rest[0];
                rest = &rest[8..];
            }
            _ => return Ok((next, rest)),
        }
    }
    Ok((next, rest))
}

fn parse_quoted_v6(icmp_type: u8, icmp_code: u8, quote: &[u8]) -> Result<Icmp<'_>, ParseError> {
    need("quoted IPv6 header", quote, IPV6_HEADER_LEN)?;
    let version = quote[0] >> 4;
    if version != 6 {
        return Err(ParseError::IpVersion(version, 6));
    }
    let dst = ipv6_at(quote, 24);
    let (proto, rest) = skip_ipv6_extensions(quote[6], &quote[IPV6_HEADER_LEN..])?;
    quoted_echo(icmp_type, icmp_code, IpAddr::V6(dst), proto, rest)
}

/// Parses an ICMPv6 message (every ICMPv6 socket delivers it without the IPv6 header).
pub fn parse_icmpv6(buf: &[u8]) -> Result<Icmp<'_>, ParseError> {
    need("ICMPv6 header", buf, ECHO_HEADER_LEN)?;
    let (icmp_type, icmp_code) = (buf[0], buf[1]);
    match icmp_type {
        ICMPV6_ECHO_REPLY => Ok(Icmp::EchoReply(parse_echo(buf)?)),
        ICMPV6_ECHO_REQUEST => Ok(Icmp::EchoRequest(parse_echo(buf)?)),
        // Unreachable, packet too big, time exceeded, parameter problem.
        1..=4 => parse_quoted_v6(icmp_type, icmp_code, &buf[ECHO_HEADER_LEN..]),
        _ => Ok(Icmp::Other {
            icmp_type,
            icmp_code,
        }),
    }
}

/// Parses the data of an error-queue message of a datagram ICMP socket: the echo request we
/// sent, as quoted by the error. Returns its identifier and sequence.
pub fn parse_quoted_echo(buf: &[u8], v6: bool) -> Result<(u16, u16), ParseError> {
    need("quoted echo request", buf, ECHO_HEADER_LEN)?;
    let want = if v6 {
        ICMPV6_ECHO_REQUEST
    } else {
        ICMPV4_ECHO_REQUEST
    };
    if buf[0] != want {
        return Err(ParseError::NotEcho(buf[0]));
    }
    Ok((be16(buf, 4), be16(buf, 6)))
}

/// Link-layer header lengths tried before the IP header of a looped-back request: none (TUN,
/// raw IP devices), Ethernet (loopback, Ethernet), Ethernet with one or two VLAN tags.
const LINK_HEADERS: [usize; 4] = [0, 14, 18, 22];

/// The packet a TX timestamp on the error queue carries (sent with
/// `SOF_TIMESTAMPING_OPT_TSONLY` off) is the whole packet as it reached the device, link-layer
/// header included where the device has one. Finds the IP header of our family whose length
/// field spans the rest of the data and whose upper protocol is `proto`; returns the
/// destination and the upper-layer bytes. `total` is the length of the whole message, which
/// `buf` may hold only the start of (a read into a smaller buffer).
fn parse_sent_packet(buf: &[u8], total: usize, v6: bool, proto: u8) -> Option<(IpAddr, &[u8])> {
    LINK_HEADERS.iter().find_map(|&at| {
        let pkt = buf.get(at..)?;
        let len = total.checked_sub(at)?;
        if v6 {
            if pkt.len() < IPV6_HEADER_LEN || pkt[0] >> 4 != 6 {
                return None;
            }
            if usize::from(be16(pkt, 4)) + IPV6_HEADER_LEN != len {
                return None;
            }
            let (next, rest) = skip_ipv6_extensions(pkt[6], &pkt[IPV6_HEADER_LEN..]).ok()?;
            (next == proto).then_some((IpAddr::V6(ipv6_at(pkt, 24)), rest))
        } else {
            let (info, next, rest) = split_ipv4(pkt).ok()?;
            (next == proto && usize::from(be16(pkt, 2)) == len)
                .then_some((IpAddr::V4(info.dst), rest))
        }
    })
}

/// Parses the request a TX timestamp on the error queue carries (with
/// `SOF_TIMESTAMPING_OPT_TSONLY` off: the whole packet, behind the device's link-layer header
/// if it has one). Returns its destination and echo header; `None` when it is not one of our
/// family's echo requests whose IP length field spans the data.
pub fn parse_sent_request(buf: &[u8], v6: bool) -> Option<(IpAddr, Echo<'_>)> {
    let proto = if v6 { NEXT_HEADER_ICMPV6 } else { PROTO_ICMP };
    let (dst, icmp) = parse_sent_packet(buf, buf.len(), v6, proto)?;
    let want = if v6 {
        ICMPV6_ECHO_REQUEST
    } else {
        ICMPV4_ECHO_REQUEST
    };
    if icmp.first() != Some(&want) {
        return None;
    }
    Some((dst, parse_echo(icmp).ok()?))
}

/// IP protocol number of UDP (v4 protocol, v6 next header).
const PROTO_UDP: u8 = 17;
/// Bytes of a UDP header.
pub const UDP_HEADER_LEN: usize = 8;

/// Parses the datagram a TX timestamp of a UDP socket carries (as [`parse_sent_request`] the
/// request): its destination, destination port and payload (as much of it as `buf` holds of
/// the `total` bytes read).
pub fn parse_sent_udp(buf: &[u8], total: usize, v6: bool) -> Option<(IpAddr, u16, &[u8])> {
    let (dst, udp) = parse_sent_packet(buf, total, v6, PROTO_UDP)?;
    let payload = udp.get(UDP_HEADER_LEN..)?;
    Some((dst, be16(udp, 2), payload))
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Builds an echo request with `payload_len` bytes of data.
///
/// The payload starts with [`PAYLOAD_MAGIC`] and the send time `stamp` (nanoseconds since the
/// Unix epoch) when it has room ([`STAMP_LEN`] bytes); the rest is a fixed pattern. The ICMPv4
/// checksum is filled in (datagram sockets overwrite it; raw sockets need it); ICMPv6 leaves it
/// zero because the kernel computes it over the pseudo-header on every ICMPv6 socket.
pub fn build_echo_request(
    v6: bool,
    ident: u16,
    seq: u16,
    payload_len: usize,
    stamp: u64,
) -> Vec<u8> {
    let mut pkt = vec![0u8; ECHO_HEADER_LEN + payload_len];
    write_echo_request(&mut pkt, v6, ident, seq, stamp);
    pkt
}

/// Writes into all of `pkt` the echo request [`build_echo_request`] builds with a payload of
/// `pkt.len() - ECHO_HEADER_LEN` bytes (nothing if `pkt` is shorter than the header): the
/// probe path's form, which writes into a buffer of its own instead of allocating one.
pub fn write_echo_request(pkt: &mut [u8], v6: bool, ident: u16, seq: u16, stamp: u64) {
    let Some((header, payload)) = pkt.split_at_mut_checked(ECHO_HEADER_LEN) else {
        return;
    };
    header[0] = if v6 {
        ICMPV6_ECHO_REQUEST
    } else {
        ICMPV4_ECHO_REQUEST
    };
    header[1..4].fill(0);
    header[4..6].copy_from_slice(&ident.to_be_bytes());
    header[6..8].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in payload.iter_mut().enumerate() {
        *b = (i & 0xff) as u8;
    }
    if payload.len() >= STAMP_LEN {
        payload[..4].copy_from_slice(&PAYLOAD_MAGIC);
        payload[4..STAMP_LEN].copy_from_slice(&stamp.to_be_bytes());
    }
    if !v6 {
        let sum = checksum(pkt);
        pkt[2..4].copy_from_slice(&sum.to_be_bytes());
    }
}

/// Bytes of payload a flow-stable request needs for its stamp and compensation word.
pub const FLOW_STAMP_LEN: usize = STAMP_LEN + 2;

/// The checksum every request of flow `flow` carries: never 0 or 0xffff, so the ones'-complement
/// sum it stands for has one representation and the kernel (which computes the checksum itself
/// on datagram sockets, and over the pseudo-header for ICMPv6) arrives at the same value.
pub fn flow_sum(flow: u16) -> u16 {
    let t = 0x5053 ^ flow.wrapping_mul(0x9e37);
    if t == 0 || t == 0xffff { 0x5053 } else { t }
}

/// Ones'-complement sum of `data` (16-bit words, big-endian, end-around carry).
pub fn ones_sum(data: &[u8]) -> u16 {
    !checksum(data)
}

fn ones_add(a: u16, b: u16) -> u16 {
    let s = u32::from(a) + u32::from(b);
    ((s & 0xffff) + (s >> 16)) as u16
}

/// Writes the 16-bit word at the even offset `at` of `data` so that the ones'-complement sum of
/// `data` is `target` (modulo 0xffff, the sum's only ambiguity): what keeps a checksum constant
/// while other words of the message change (Paris traceroute's compensation).
pub fn compensate(data: &mut [u8], at: usize, target: u16) {
    let Some(word) = data.get_mut(at..at + 2) else {
        return;
    };
    word.copy_from_slice(&[0, 0]);
    let comp = ones_add(target, !ones_sum(data));
    data[at..at + 2].copy_from_slice(&comp.to_be_bytes());
}

/// Builds an echo request whose ICMP checksum is the same for every sequence and send stamp of
/// one flow (Paris traceroute): routers that hash the first words of the ICMP header for ECMP
/// (type, code, checksum, often the identifier) then send every probe of the flow one way.
///
/// Two payload bytes right after the stamp are chosen so that the message sums to
/// `!flow_sum(flow)` whatever the sequence and stamp. The payload is at least
/// [`FLOW_STAMP_LEN`] bytes (a smaller size is raised to it), so every flow request is stamped.
pub fn build_flow_request(
    v6: bool,
    ident: u16,
    seq: u16,
    payload_len: usize,
    stamp: u64,
    flow: u16,
) -> Vec<u8> {
    let mut pkt = vec![0u8; flow_request_len(payload_len)];
    write_flow_request(&mut pkt, v6, ident, seq, stamp, flow);
    pkt
}

/// Bytes of the flow request [`build_flow_request`] builds for a payload of `payload_len`.
pub fn flow_request_len(payload_len: usize) -> usize {
    ECHO_HEADER_LEN + payload_len.max(FLOW_STAMP_LEN)
}

/// Writes into all of `pkt` the flow request [`build_flow_request`] builds with a payload of
/// `pkt.len() - ECHO_HEADER_LEN` bytes (see [`flow_request_len`]; a shorter one has no room for
/// the compensation word, and its checksum is an echo request's).
pub fn write_flow_request(pkt: &mut [u8], v6: bool, ident: u16, seq: u16, stamp: u64, flow: u16) {
    write_echo_request(pkt, v6, ident, seq, stamp);
    if pkt.len() < flow_request_len(0) {
        return;
    }
    pkt[2..4].fill(0);
    // Even offset in the message, so the word adds as it is.
    compensate(pkt, ECHO_HEADER_LEN + STAMP_LEN, !flow_sum(flow));
    if !v6 {
        let sum = checksum(pkt);
        pkt[2..4].copy_from_slice(&sum.to_be_bytes());
    }
}

/// What the payload of a reply says about its origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadStamp {
    /// Too short to carry a stamp: nothing to check.
    Unstamped,
    /// Our magic and this send stamp.
    Stamp(u64),
    /// Long enough but not ours.
    Foreign,
}

/// Reads the magic and the send stamp that [`build_echo_request`] wrote.
pub fn read_stamp(payload: &[u8]) -> PayloadStamp {
    match (payload.get(..4), payload.get(4..STAMP_LEN)) {
        (Some(magic), Some(stamp)) if magic == PAYLOAD_MAGIC => {
            let mut b = [0u8; 8];
            b.copy_from_slice(stamp);
            PayloadStamp::Stamp(u64::from_be_bytes(b))
        }
        (Some(_), Some(_)) => PayloadStamp::Foreign,
        _ => PayloadStamp::Unstamped,
    }
}

/// The coarse class of an ICMP error type/code.
pub fn classify_error(v6: bool, icmp_type: u8, icmp_code: u8) -> IcmpErrorKind {
    match (v6, icmp_type, icmp_code) {
        (false, 3, 4) => IcmpErrorKind::PacketTooBig,
        (false, 3, _) | (true, 1, _) => IcmpErrorKind::Unreachable,
        (false, 11, _) | (true, 3, _) => IcmpErrorKind::TimeExceeded,
        (true, 2, _) => IcmpErrorKind::PacketTooBig,
        (false, 12, _) | (true, 4, _) => IcmpErrorKind::ParameterProblem,
        _ => IcmpErrorKind::Other,
    }
}

#[cfg(test)]
#[path = "packet_tests.rs"]
mod tests;
