//! UDP probes, to a closed port or to a UDP echo service, and the token both ends agree on.
//!
//! Every probe is one datagram from a connected socket of its own (`IP_RECVERR` /
//! `IPV6_RECVERR`, `SO_TIMESTAMPING` with software RX and TX timestamps). Its payload starts
//! with a [token](echo_request): magic, direction, probe id and send stamp.
//!
//! - [`UdpMode::Closed`]: the ICMP port unreachable that the host sends back (as traceroute
//!   uses it) is the reply; its RTT is the kernel's RX timestamp of the error minus the kernel's
//!   TX timestamp of the datagram. Other ICMP errors (time exceeded with a TTL set, host
//!   unreachable) settle the probe as errors.
//! - [`UdpMode::Echo`]: the echoed datagram with our token (marked a reply by pingscope's
//!   responder, or unchanged from a plain RFC 862 echo service) is the reply; a port
//!   unreachable is an error (no echo service there).
//!
//! After its deadline a probe's socket stays open for [`LATE_WINDOW`]: an answer then is late, a
//! second echo is a duplicate, as for ICMP (whose memory of settled probes is longer). A
//! closed-port probe closes as soon as it is answered.
//!
//! Against the test network's truth (same run as in [`super::tcp`]), \|RTT − truth\| in µs,
//! p50 / p99 / max: echo 6.1 / 36.4 / 39.5 (IPv4), 6.9 / 30.2 / 41.9 (IPv6); closed port 6.7 /
//! 14.1 / 38.2 (IPv4), 6.2 / 22.1 / 45.6 (IPv6).
//!
//! Hosts rate-limit port unreachables (Linux: `net.ipv4.icmp_ratelimit`, 1 per second per
//! source with a burst, `icmp_msgs_per_sec` overall; loopback is exempt), so a closed-port
//! target probed faster than that shows loss that is the host's limiter, not the network.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Protocol, SockAddr, Socket, Type};
use tokio::io::Interest;
use tokio::runtime::Handle;

use super::clock::{Fallback, Stamp, Wall};
use super::flow::{self, ProbeState, Shared, bump};
use super::socket::{self, SCM_TSTAMP_SND, SO_EE_ORIGIN_TIMESTAMPING, TimestampSource};
use super::{ProbeSpec, ReplyInfo, SendError, UdpMode};

/// Longest a probe's socket stays open after its deadline for late answers.
pub const LATE_WINDOW: Duration = Duration::from_secs(1);

/// The first bytes of every pingscope UDP probe and echo.
pub const MAGIC: [u8; 4] = *b"PSCU";
/// Bytes of the token: magic, direction, three reserved, probe id, send stamp.
pub const TOKEN_LEN: usize = 24;
/// Largest datagram the echo responder answers (a jumbo frame's payload); larger ones are
/// dropped unanswered.
pub const MAX_ECHO: usize = 8_972;
const REQUEST: u8 = 1;
const REPLY: u8 = 2;

/// A probe datagram of `size` bytes (at least [`TOKEN_LEN`]): the token, then zeros.
pub fn echo_request(id: u64, stamp: u64, size: usize) -> Vec<u8> {
    let mut p = vec![0u8; size.max(TOKEN_LEN)];
    p[..4].copy_from_slice(&MAGIC);
    p[4] = REQUEST;
    p[8..16].copy_from_slice(&id.to_be_bytes());
    p[16..24].copy_from_slice(&stamp.to_be_bytes());
    p
}

/// Bytes of a path probe's payload at least: the token and the checksum compensation word.
pub const FLOW_TOKEN_LEN: usize = TOKEN_LEN + 2;

/// A UDP path probe of flow `flow`: the token, then two bytes that keep the ones'-complement
/// sum of the payload (and so the UDP checksum, its header and pseudo-header being the flow's)
/// the same for every probe of the flow, then zeros; at least [`FLOW_TOKEN_LEN`] bytes.
pub fn flow_request(id: u64, stamp: u64, size: usize, flow: u16) -> Vec<u8> {
    let mut p = echo_request(id, stamp, size.max(FLOW_TOKEN_LEN));
    // Even offset from the UDP header, so the word adds as it is.
    super::packet::compensate(&mut p, TOKEN_LEN, !super::packet::flow_sum(flow));
    p
}

/// The probe id of a request's token at the start of `buf` (a datagram we sent, as an ICMP
/// error quotes it or a TX timestamp carries it).
pub fn request_id(buf: &[u8]) -> Option<u64> {
    token(buf, REQUEST)
}

/// The probe id of an echo, if `buf` is one: pingscope's responder marks it a reply, a plain
/// echo service (RFC 862) sends the request back as it came.
pub fn echo_reply_id(buf: &[u8]) -> Option<u64> {
    token(buf, REPLY).or_else(|| token(buf, REQUEST))
}

fn token(buf: &[u8], dir: u8) -> Option<u64> {
    let t = buf.get(..TOKEN_LEN)?;
    if t[..4] != MAGIC || t[4] != dir || t[5..8] != [0, 0, 0] {
        return None;
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&t[8..16]);
    Some(u64::from_be_bytes(id))
}

/// Turns a well-formed probe datagram into its echo, in place (same length: a reply is never
/// larger than its request). False for anything else (not a request, too short, larger than
/// [`MAX_ECHO`]), which the responder must not answer.
pub fn answer_echo(buf: &mut [u8]) -> bool {
    if buf.len() > MAX_ECHO || token(buf, REQUEST).is_none() {
        return false;
    }
    buf[4] = REPLY;
    true
}

pub(super) fn is_port_unreachable(v6: bool, icmp_type: u8, icmp_code: u8) -> bool {
    matches!((v6, icmp_type, icmp_code), (false, 3, 3) | (true, 1, 4))
}

/// Opens the probe's socket, sends its datagram and spawns the task that settles it.
pub(super) fn start(
    runtime: &Handle,
    spec: &ProbeSpec,
    port: u16,
    mode: UdpMode,
    mut state: ProbeState,
    shared: &Arc<Shared>,
) -> Result<(), SendError> {
    let ip = spec.ip;
    let v6 = ip.is_ipv6();
    let sock = flow::open(ip, Type::DGRAM, Protocol::UDP, &spec.options)
        .map_err(|source| SendError::Socket { ip, source })?;
    let paths = socket::enable_timestamps(&sock, TimestampSource::Kernel);
    let io = |source| SendError::Io { ip, source };
    sock.connect(&SockAddr::from(SocketAddr::new(ip, port)))
        .map_err(io)?;
    let id = shared.probe_id();
    state.stamp_send(paths.tx);
    let close_at = state.deadline + LATE_WINDOW;
    let payload = echo_request(
        id,
        state.sent.user.wall.unix_nanos(),
        usize::from(spec.size),
    );
    sock.send(&payload).map_err(io)?;
    let fd = flow::register(runtime, sock).map_err(|source| SendError::Socket { ip, source })?;
    let shared = shared.clone();
    let mut buf = vec![0u8; MAX_ECHO + 1];
    let mut cmsg = socket::cmsg_buffer();
    let done = move |sock: &Socket, state: &mut ProbeState| {
        read_all(sock, state, mode, id, v6, &shared, &mut buf, &mut cmsg);
        mode == UdpMode::Closed && state.is_answered()
    };
    let interest = Interest::READABLE | Interest::ERROR;
    runtime.spawn(flow::drive(fd, interest, state, close_at, "UDP", done));
    Ok(())
}

/// Reads the error queue (TX timestamp, ICMP errors), then the datagrams, until both are empty.
#[allow(clippy::too_many_arguments)]
fn read_all(
    sock: &Socket,
    state: &mut ProbeState,
    mode: UdpMode,
    id: u64,
    v6: bool,
    shared: &Shared,
    buf: &mut [u8],
    cmsg: &mut [u8],
) {
    // Bounded: a flood to this probe's port cannot hold the task.
    for _ in 0..64 {
        let mut more = false;
        match socket::recv(sock, buf, cmsg, true) {
            Ok(got) => {
                more = true;
                match got.ext_err {
                    Some(e)
                        if e.origin == SO_EE_ORIGIN_TIMESTAMPING && e.info == SCM_TSTAMP_SND =>
                    {
                        if state.sent.kernel == Stamp::Awaited
                            && let Some(t) = got.kernel_time
                        {
                            state.sent.kernel = Stamp::Kernel(t);
                        }
                    }
                    Some(e) => {
                        let target = got.from.unwrap_or_else(|| state_ip(sock));
                        if let Some(info) = flow::icmp_error_info(v6, &e, target) {
                            let rx = rx_stamp(got.kernel_time, got.cmsg_error);
                            if mode == UdpMode::Closed
                                && is_port_unreachable(v6, e.icmp_type, e.icmp_code)
                            {
                                let (rtt, at) = state.measure(rx);
                                state.answer(reply(rtt, None, 0), at);
                            } else {
                                let (_, at) = state.measure(rx);
                                state.icmp_error(info, at);
                            }
                        }
                    }
                    None => bump(&shared.counters.malformed_packets),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => shared.receive_failed(&e, "UDP probe error queue read failed"),
        }
        match socket::recv(sock, buf, cmsg, false) {
            Ok(got) => {
                more = true;
                let data = &buf[..got.len.min(buf.len())];
                match echo_reply_id(data) {
                    Some(got_id) if mode == UdpMode::Echo && got_id == id => {
                        let (rtt, at) = state.measure(rx_stamp(got.kernel_time, got.cmsg_error));
                        state.answer(reply(rtt, got.ttl, got.len), at);
                    }
                    _ => bump(&shared.counters.unmatched_packets),
                }
            }
            // The pending error of an ICMP error: the error queue holds it.
            Err(e) if socket::is_pending_icmp_error(&e) => more = true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => shared.receive_failed(&e, "UDP probe receive failed"),
        }
        if !more {
            return;
        }
    }
}

fn state_ip(sock: &Socket) -> std::net::IpAddr {
    sock.peer_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map(|a| a.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

pub(super) fn rx_stamp(kernel: Option<Wall>, cmsg_error: bool) -> Stamp {
    match kernel {
        Some(t) => Stamp::Kernel(t),
        None if cmsg_error => Stamp::User(Fallback::ControlMessage),
        None => Stamp::User(Fallback::Missing),
    }
}

pub(super) fn reply(rtt: Duration, ttl: Option<u8>, size: usize) -> ReplyInfo {
    ReplyInfo {
        rtt,
        ttl,
        size,
        refused: false,
    }
}
