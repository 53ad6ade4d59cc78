//! TCP at the destination: per port, answer a SYN with SYN-ACK (open), RST-ACK (refused, the
//! default, as a host with nothing listening does) or nothing (silent); then follow each accepted
//! handshake until the client tears it down, so tests can prove none is left half-open.
//!
//! Only the handshake and the teardown are spoken: data is logged and not acknowledged.

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Deserialize;

use crate::packet::{IpPacket, PROTO_TCP, ip_packet, transport_checksum};
use crate::profile::{Ports, splitmix};

const TCP_HEADER: usize = 20;
/// Connections followed at most; past that the table starts over (a SYN flood cannot grow memory).
const MAX_CONNECTIONS: usize = 65_536;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

/// The `tcp:` block of a profile.
pub type TcpSpec = Ports<TcpMode>;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcpMode {
    Open,
    #[default]
    Refused,
    Silent,
}

/// A checksum-correct TCP segment.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub payload: &'a [u8],
}

impl Segment<'_> {
    /// A connection request: SYN without ACK (nor RST or FIN).
    pub fn is_syn(&self) -> bool {
        self.flags & (SYN | ACK | RST | FIN) == SYN
    }

    /// The sequence space this segment takes (payload, plus one for SYN and for FIN).
    fn len(&self) -> u32 {
        let n = u32::try_from(self.payload.len()).unwrap_or(u32::MAX);
        n.wrapping_add(u32::from(self.flags & SYN != 0))
            .wrapping_add(u32::from(self.flags & FIN != 0))
    }
}

/// The flags as `SYN|ACK`, for the log.
pub fn flag_names(flags: u8) -> String {
    let names = [
        (FIN, "FIN"),
        (SYN, "SYN"),
        (RST, "RST"),
        (0x08, "PSH"),
        (ACK, "ACK"),
    ];
    let v: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    v.join("|")
}

pub fn parse<'a>(ip: &IpPacket<'a>) -> Option<Segment<'a>> {
    let l4 = ip.l4;
    let offset = usize::from(*l4.get(12)? >> 4) * 4;
    if offset < TCP_HEADER || offset > l4.len() {
        return None;
    }
    if transport_checksum(ip.src, ip.dst, PROTO_TCP, l4) != 0 {
        return None;
    }
    let word = |i: usize| u32::from_be_bytes([l4[i], l4[i + 1], l4[i + 2], l4[i + 3]]);
    Some(Segment {
        sport: u16::from_be_bytes([l4[0], l4[1]]),
        dport: u16::from_be_bytes([l4[2], l4[3]]),
        seq: word(4),
        ack: word(8),
        flags: l4[13],
        payload: &l4[offset..],
    })
}

/// A segment answering `s` (which came in `ip`): ports and addresses swapped, no options.
fn answer(
    ip: &IpPacket<'_>,
    s: &Segment<'_>,
    seq: u32,
    ack: u32,
    flags: u8,
    ttl: u8,
    ident: u16,
) -> Option<Vec<u8>> {
    let mut l4 = Vec::with_capacity(TCP_HEADER);
    l4.extend_from_slice(&s.dport.to_be_bytes());
    l4.extend_from_slice(&s.sport.to_be_bytes());
    l4.extend_from_slice(&seq.to_be_bytes());
    l4.extend_from_slice(&ack.to_be_bytes());
    l4.extend_from_slice(&[(TCP_HEADER as u8 / 4) << 4, flags]);
    l4.extend_from_slice(&u16::MAX.to_be_bytes()); // window
    l4.extend_from_slice(&[0, 0, 0, 0]); // checksum (filled in), urgent pointer
    ip_packet(ip.dst, ip.src, PROTO_TCP, ip.tos, ttl, ident, l4)
}

/// RST-ACK to a SYN (or to any segment of no connection), as a closed port answers.
pub fn reset(ip: &IpPacket<'_>, s: &Segment<'_>, ttl: u8, ident: u16) -> Option<Vec<u8>> {
    let (seq, flags) = if s.flags & ACK != 0 {
        (s.ack, RST)
    } else {
        (0, RST | ACK)
    };
    answer(ip, s, seq, s.seq.wrapping_add(s.len()), flags, ttl, ident)
}

type Key = (IpAddr, u16, IpAddr, u16);

#[derive(Debug, Clone, Copy)]
struct Conn {
    /// Our initial sequence number.
    isn: u32,
    fin_sent: bool,
}

/// What became of a segment of an accepted (or unknown) connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Teardown {
    /// The ACK completing the handshake.
    Established,
    /// The client's FIN, answered with FIN-ACK.
    Fin,
    /// The ACK of our FIN: the connection is closed on both sides.
    Closed,
    /// The client reset it.
    Rst,
    /// Data (logged, not acknowledged) or a duplicate ACK.
    Other,
    /// No such connection: answered with RST (nothing for an RST).
    Unknown,
}

impl Teardown {
    pub fn action(self) -> &'static str {
        match self {
            Teardown::Established => "established",
            Teardown::Fin => "fin",
            Teardown::Closed => "closed",
            Teardown::Rst => "rst",
            Teardown::Other => "segment",
            Teardown::Unknown => "reset",
        }
    }
}

/// The handshakes answered with SYN-ACK and not yet torn down.
#[derive(Debug, Default)]
pub struct Connections {
    map: HashMap<Key, Conn>,
}

fn key(ip: &IpPacket<'_>, s: &Segment<'_>) -> Key {
    (ip.src, s.sport, ip.dst, s.dport)
}

impl Connections {
    /// The SYN-ACK for `s` (a SYN), and the connection remembered. The ISN is a hash of the
    /// 4-tuple and the client's ISN, so a retransmitted SYN gets the same answer.
    pub fn accept(
        &mut self,
        ip: &IpPacket<'_>,
        s: &Segment<'_>,
        flow: u64,
        ttl: u8,
        ident: u16,
    ) -> Option<Vec<u8>> {
        if self.map.len() >= MAX_CONNECTIONS {
            tracing::warn!(
                connections = self.map.len(),
                "TCP connection table full; starting over"
            );
            self.map.clear();
        }
        let isn = splitmix(flow ^ u64::from(s.seq)) as u32;
        self.map.insert(
            key(ip, s),
            Conn {
                isn,
                fin_sent: false,
            },
        );
        answer(ip, s, isn, s.seq.wrapping_add(1), SYN | ACK, ttl, ident)
    }

    /// Follow a non-SYN segment; returns what it was and the answer to send, if any.
    pub fn segment(
        &mut self,
        ip: &IpPacket<'_>,
        s: &Segment<'_>,
        ttl: u8,
        ident: u16,
    ) -> (Teardown, Option<Vec<u8>>) {
        let k = key(ip, s);
        let Some(conn) = self.map.get_mut(&k) else {
            if s.flags & RST != 0 {
                return (Teardown::Unknown, None);
            }
            return (Teardown::Unknown, reset(ip, s, ttl, ident));
        };
        if s.flags & RST != 0 {
            self.map.remove(&k);
            return (Teardown::Rst, None);
        }
        if s.flags & FIN != 0 {
            conn.fin_sent = true;
            let ack = s.seq.wrapping_add(s.len());
            let fin_ack = answer(ip, s, conn.isn.wrapping_add(1), ack, FIN | ACK, ttl, ident);
            return (Teardown::Fin, fin_ack);
        }
        let our_fin_acked =
            conn.fin_sent && s.flags & ACK != 0 && s.ack == conn.isn.wrapping_add(2);
        if our_fin_acked {
            self.map.remove(&k);
            return (Teardown::Closed, None);
        }
        let completes = !conn.fin_sent && s.payload.is_empty() && s.ack == conn.isn.wrapping_add(1);
        (
            if completes {
                Teardown::Established
            } else {
                Teardown::Other
            },
            None,
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::packet::{parse_ip, test_packet};

    /// A segment from `src:sport` to `dst:dport`, built as an answer to its mirror image.
    fn segment(
        src: &str,
        dst: &str,
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
    ) -> Vec<u8> {
        let mirror = test_packet(dst, src, PROTO_TCP);
        let s = Segment {
            sport: dport,
            dport: sport,
            seq: 0,
            ack: 0,
            flags: 0,
            payload: &[],
        };
        answer(&mirror, &s, seq, ack, flags, 64, 1).unwrap()
    }

    #[test]
    fn handshake_and_teardown_for_both_families() {
        for (c, d) in [("198.18.0.1", "198.18.0.9"), ("2001:db8::1", "2001:db8::9")] {
            let mut conns = Connections::default();
            let syn = segment(c, d, 40000, 80, 1000, 0, SYN);
            let ip = parse_ip(&syn).unwrap();
            let s = parse(&ip).expect("checksum verifies");
            assert!(s.is_syn());
            let synack = conns.accept(&ip, &s, 7, 64, 1).unwrap();
            let sip = parse_ip(&synack).unwrap();
            let sa = parse(&sip).expect("SYN-ACK verifies");
            assert_eq!(
                (sa.sport, sa.dport, sa.ack, sa.flags),
                (80, 40000, 1001, SYN | ACK)
            );
            let step = |conns: &mut Connections, seq, ack, flags| {
                let pkt = segment(c, d, 40000, 80, seq, ack, flags);
                let ip = parse_ip(&pkt).unwrap();
                let s = parse(&ip).unwrap();
                let (t, out) = conns.segment(&ip, &s, 64, 1);
                (
                    t,
                    out.map(|o| {
                        let oip = parse_ip(&o).unwrap();
                        let os = parse(&oip).unwrap();
                        (os.seq, os.ack, os.flags)
                    }),
                )
            };
            let isn = sa.seq;
            assert_eq!(
                step(&mut conns, 1001, isn + 1, ACK),
                (Teardown::Established, None)
            );
            assert_eq!(
                step(&mut conns, 1001, isn + 1, FIN | ACK),
                (Teardown::Fin, Some((isn + 1, 1002, FIN | ACK)))
            );
            assert_eq!(
                step(&mut conns, 1002, isn + 2, ACK),
                (Teardown::Closed, None)
            );
            assert_eq!(
                step(&mut conns, 1002, isn + 2, ACK),
                (Teardown::Unknown, Some((isn + 2, 1002, RST))),
                "gone: a stray segment is reset"
            );
        }
    }

    #[test]
    fn refused_is_rst_ack_and_modes_resolve() {
        let syn = segment("198.18.0.1", "198.18.0.9", 5, 81, 77, 0, SYN);
        let ip = parse_ip(&syn).unwrap();
        let s = parse(&ip).unwrap();
        let rst = reset(&ip, &s, 64, 1).unwrap();
        let r = parse(&parse_ip(&rst).unwrap()).unwrap();
        assert_eq!((r.seq, r.ack, r.flags), (0, 78, RST | ACK));
        assert_eq!(flag_names(r.flags), "RST|ACK");
        let spec: TcpSpec =
            serde_json::from_str(r#"{"ports":{"80":"open","82":"silent"}}"#).unwrap();
        assert_eq!(TcpSpec::mode(Some(&spec), 80), TcpMode::Open);
        assert_eq!(TcpSpec::mode(Some(&spec), 81), TcpMode::Refused);
        assert_eq!(TcpSpec::mode(Some(&spec), 82), TcpMode::Silent);
        assert_eq!(TcpSpec::mode(None, 80), TcpMode::Refused);
        let mut bad = syn.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(parse(&parse_ip(&bad).unwrap()).is_none(), "bad checksum");
    }
}
