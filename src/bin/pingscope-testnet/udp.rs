//! UDP at the destination: per port, echo the datagram, answer ICMP port unreachable (the
//! default, as a host with nothing listening does, and what traceroute's UDP mode expects), or
//! stay silent.

use serde::Deserialize;

use crate::packet::{IpPacket, PROTO_UDP, ip_packet, transport_checksum};
use crate::profile::Ports;

const UDP_HEADER: usize = 8;

/// The `udp:` block of a profile.
pub type UdpSpec = Ports<UdpMode>;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UdpMode {
    Echo,
    #[default]
    Unreachable,
    Silent,
}

/// A checksum-correct UDP datagram.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    pub sport: u16,
    pub dport: u16,
    /// The checksum field as sent (0: none, IPv4 only).
    pub checksum: u16,
    pub payload: &'a [u8],
}

pub fn parse<'a>(ip: &IpPacket<'a>) -> Option<Datagram<'a>> {
    let l4 = ip.l4;
    let len = usize::from(u16::from_be_bytes([*l4.get(4)?, *l4.get(5)?]));
    if len < UDP_HEADER || len > l4.len() {
        return None;
    }
    // IPv4 may leave the checksum out (0); IPv6 may not.
    let unchecked = ip.src.is_ipv4() && l4[6] == 0 && l4[7] == 0;
    if !unchecked && transport_checksum(ip.src, ip.dst, PROTO_UDP, &l4[..len]) != 0 {
        return None;
    }
    Some(Datagram {
        sport: u16::from_be_bytes([l4[0], l4[1]]),
        dport: u16::from_be_bytes([l4[2], l4[3]]),
        checksum: u16::from_be_bytes([l4[6], l4[7]]),
        payload: &l4[UDP_HEADER..len],
    })
}

/// The datagram sent back to its sender, ports swapped.
pub fn echo(ip: &IpPacket<'_>, d: &Datagram<'_>, ttl: u8, ident: u16) -> Option<Vec<u8>> {
    let len = u16::try_from(UDP_HEADER + d.payload.len()).ok()?;
    let mut l4 = Vec::with_capacity(usize::from(len));
    l4.extend_from_slice(&d.dport.to_be_bytes());
    l4.extend_from_slice(&d.sport.to_be_bytes());
    l4.extend_from_slice(&len.to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend_from_slice(d.payload);
    ip_packet(ip.dst, ip.src, PROTO_UDP, ip.tos, ttl, ident, l4)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::packet::{parse_ip, test_packet};

    fn datagram(src: &str, dst: &str, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let ip = test_packet(dst, src, PROTO_UDP);
        // An echo of the reverse datagram is the datagram itself.
        let rev = Datagram {
            sport: dport,
            dport: sport,
            checksum: 0,
            payload,
        };
        echo(&ip, &rev, 64, 1).unwrap()
    }

    #[test]
    fn echo_round_trips_for_both_families() {
        for (s, d) in [("198.18.0.1", "198.18.0.9"), ("2001:db8::1", "2001:db8::9")] {
            let pkt = datagram(s, d, 40000, 7, b"token");
            let ip = parse_ip(&pkt).unwrap();
            let dg = parse(&ip).expect("checksum verifies");
            assert_eq!((dg.sport, dg.dport, dg.payload), (40000, 7, &b"token"[..]));
            let back = echo(&ip, &dg, 9, 2).unwrap();
            let bip = parse_ip(&back).unwrap();
            let bdg = parse(&bip).expect("the echo verifies");
            assert_eq!((bip.src, bip.dst, bip.ttl), (ip.dst, ip.src, 9));
            assert_eq!(
                (bdg.sport, bdg.dport, bdg.payload),
                (7, 40000, &b"token"[..])
            );
        }
    }

    #[test]
    fn corrupt_datagrams_are_ignored_and_modes_resolve() {
        let mut pkt = datagram("2001:db8::1", "2001:db8::9", 1, 2, b"abc");
        let last = pkt.len() - 1;
        pkt[last] ^= 1;
        assert!(parse(&parse_ip(&pkt).unwrap()).is_none());
        let spec: UdpSpec =
            serde_json::from_str(r#"{"ports":{"7":"echo"},"default":"silent"}"#).unwrap();
        assert_eq!(UdpSpec::mode(Some(&spec), 7), UdpMode::Echo);
        assert_eq!(UdpSpec::mode(Some(&spec), 8), UdpMode::Silent);
        assert_eq!(UdpSpec::mode(None, 7), UdpMode::Unreachable);
    }
}
