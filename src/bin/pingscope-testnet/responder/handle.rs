//! What the network does with one packet read from the device: along the path first (a hop
//! may answer or drop it), then the destination's profile for echo requests, UDP and TCP.

use super::{Kind, Responder, wall_ns};
use crate::logline::LogLine;
use crate::packet::{self, IcmpError, IpPacket};
use crate::path::{self, HopFate, Route};
use crate::profile::Decision;
use crate::tcp::{self, TcpMode, TcpSpec};
use crate::udp::{self, UdpMode, UdpSpec};

impl Responder {
    /// One packet read from the device: along the path, then to the destination's profile.
    pub(super) fn handle(
        &mut self,
        ip: &IpPacket<'_>,
        arrived: u64,
        read_lag_ns: Option<u64>,
        lines: &mut Vec<LogLine>,
    ) {
        // Only what the network answers: echo requests, UDP and TCP; nothing else.
        let kind = match ip.proto {
            packet::PROTO_ICMP | packet::PROTO_ICMPV6 => packet::echo_request(ip).map(Kind::Echo),
            packet::PROTO_UDP => udp::parse(ip).map(Kind::Udp),
            packet::PROTO_TCP => tcp::parse(ip).map(Kind::Tcp),
            _ => None,
        };
        let (Some(kind), Some(flow)) = (kind, path::flow_hash(ip)) else {
            return;
        };
        let mut line = LogLine {
            time_ns: wall_ns(),
            proto: "icmp",
            src: ip.src,
            dst: ip.dst,
            family: if ip.dst.is_ipv4() { "ip4" } else { "ip6" },
            id: None,
            seq: None,
            sport: None,
            dport: None,
            checksum: None,
            flags: None,
            ttl: ip.ttl,
            flow: format!("{flow:016x}"),
            size: 0,
            action: "replied",
            hop: None,
            hop_addr: None,
            copies: 0,
            scheduled_delay_ns: None,
            actual_delay_ns: None,
            read_lag_ns,
        };
        match &kind {
            Kind::Echo(req) => {
                (line.id, line.seq, line.size) = (Some(req.id), Some(req.seq), req.payload.len());
            }
            Kind::Udp(d) => {
                line.proto = "udp";
                (line.sport, line.dport, line.size) =
                    (Some(d.sport), Some(d.dport), d.payload.len());
                line.checksum = Some(d.checksum);
            }
            Kind::Tcp(t) => {
                line.proto = "tcp";
                (line.sport, line.dport, line.size) =
                    (Some(t.sport), Some(t.dport), t.payload.len());
                line.flags = Some(tcp::flag_names(t.flags));
            }
        }
        let path = self.profiles.lookup(&ip.dst).path.as_ref();
        let path_delay = match self.paths.route(path, ip.dst, flow, ip.ttl, arrived) {
            Route::Destination { delay } => delay,
            Route::Dropped { hop, addr } => {
                (line.action, line.hop, line.hop_addr) = ("dropped", Some(hop), Some(addr));
                lines.push(line);
                return;
            }
            Route::Expired {
                hop,
                addr,
                delay,
                fate,
                quote,
            } => {
                (line.hop, line.hop_addr) = (Some(hop), Some(addr));
                line.action = match fate {
                    HopFate::TimeExceeded => "time_exceeded",
                    HopFate::RateLimited => "rate_limited",
                    HopFate::Silent => "silent",
                };
                if fate != HopFate::TimeExceeded {
                    lines.push(line);
                    return;
                }
                // As if it came back through the hops before this one.
                let ttl = 65u8.saturating_sub(hop).max(1);
                let ident = self.next_ident();
                // The IP header, then as much of the rest as the hop quotes.
                let header = ip.raw.len() - ip.l4.len();
                let quoted = quote.map_or(ip.raw, |q| &ip.raw[..(header + q).min(ip.raw.len())]);
                let packet = packet::icmp_error_about(
                    ip.src,
                    quoted,
                    IcmpError::TimeExceeded,
                    addr,
                    ttl,
                    ident,
                );
                self.schedule(line, packet, arrived, delay, 1, lines);
                return;
            }
        };
        let profile = self.profiles.lookup(&ip.dst);
        let (udp_mode, tcp_mode) = match &kind {
            Kind::Udp(d) => (
                UdpSpec::mode(profile.udp.as_ref(), d.dport),
                TcpMode::Silent,
            ),
            Kind::Tcp(t) => (
                UdpMode::Silent,
                TcpSpec::mode(profile.tcp.as_ref(), t.dport),
            ),
            Kind::Echo(_) => (UdpMode::Silent, TcpMode::Silent),
        };
        if let Kind::Tcp(t) = &kind
            && !t.is_syn()
            && !profile.blackhole
        {
            // The rest of a handshake: no dice, answered after the fixed delays only.
            let (ttl, delay) = (profile.ttl, profile.delay + path_delay);
            let ident = self.next_ident();
            let (fate, answer) = self.connections.segment(ip, t, ttl, ident);
            line.action = fate.action();
            match answer {
                Some(packet) => self.schedule(line, Some(packet), arrived, delay, 1, lines),
                None => lines.push(line),
            }
            return;
        }
        let (delay, copies, ttl, error) = match self.profiles.decide(&ip.dst) {
            Decision::Blackholed => {
                line.action = "blackholed";
                lines.push(line);
                return;
            }
            Decision::Dropped => {
                line.action = "dropped";
                lines.push(line);
                return;
            }
            Decision::Answer {
                delay,
                copies,
                ttl,
                error,
            } => (delay, copies, ttl, error),
        };
        let ident = self.next_ident();
        let packet = match (error, kind) {
            (Some((err, from)), _) => {
                line.action = match err {
                    IcmpError::Unreachable(_) | IcmpError::PortUnreachable => "unreachable",
                    IcmpError::TimeExceeded => "time_exceeded",
                };
                packet::icmp_error_about(ip.src, ip.raw, err, from.unwrap_or(ip.dst), ttl, ident)
            }
            (None, Kind::Echo(req)) => packet::echo_reply(&req, ttl, ident),
            (None, Kind::Tcp(t)) => match tcp_mode {
                TcpMode::Open => {
                    line.action = "syn_ack";
                    self.connections.accept(ip, &t, flow, ttl, ident)
                }
                TcpMode::Refused => {
                    line.action = "refused";
                    tcp::reset(ip, &t, ttl, ident)
                }
                TcpMode::Silent => {
                    line.action = "silent";
                    lines.push(line);
                    return;
                }
            },
            (None, Kind::Udp(d)) => match udp_mode {
                UdpMode::Echo => {
                    line.action = "echoed";
                    udp::echo(ip, &d, ttl, ident)
                }
                UdpMode::Unreachable => {
                    line.action = "port_unreachable";
                    let err = IcmpError::PortUnreachable;
                    packet::icmp_error_about(ip.src, ip.raw, err, ip.dst, ttl, ident)
                }
                UdpMode::Silent => {
                    line.action = "silent";
                    lines.push(line);
                    return;
                }
            },
        };
        self.schedule(line, packet, arrived, delay + path_delay, copies, lines);
    }
}
