//! UDP path probes ([`Transport::UdpFlow`](super::Transport::UdpFlow)): traceroute's UDP mode,
//! Paris-style, on unprivileged sockets.
//!
//! One connected UDP socket per (destination, port, flow, socket options), opened at the flow's
//! first probe and closed at the last release of its holds ([`Pinger::hold_flow`]: a path
//! tracer holds the flows it probes), or, when nobody holds it, after [`IDLE`] without a probe.
//! The kernel fixes its source port at the
//! connect, so every probe of a flow carries the same ports, and distinct flows differ in their
//! source port: routers that balance by the 5-tuple send a flow one way, and `flows` flows find
//! up to that many ECMP branches. The payload is the UDP token ([`udp::flow_request`]: probe
//! id, send stamp) and two bytes that keep its ones'-complement sum, and so the UDP checksum,
//! constant for the flow, for routers that hash the checksum too. Its length is the probe's
//! size, so a flow's probes have one length. The TTL / hop limit goes on each packet as a
//! control message; the socket's own stays.
//!
//! ICMP errors come back on the flow socket's error queue (`IP_RECVERR` / `IPV6_RECVERR`, no
//! privilege needed) with the quoted datagram; the token in the quote names the probe:
//!
//! - port unreachable from the destination: the destination answered, the probe's reply (the
//!   end of the path);
//! - time exceeded: the router at that TTL (`SO_EE_OFFENDER`) answered, an ICMP error event
//!   whose `rtt` is measured as replies are;
//! - anything else (other unreachables, a port unreachable from elsewhere): an ICMP error.
//!
//! A router that quotes less of the datagram than the token (RFC 792 asks only for the first 8
//! bytes after the IP header, the UDP header; RFC 1812 routers and Linux quote up to 576 bytes
//! in all, IPv6 ones up to 1280) cannot be matched to a probe: that probe times out, and the
//! error is counted unmatched.
//!
//! RTT is the kernel's RX timestamp of the ICMP error minus the kernel's TX timestamp of the
//! datagram (`SO_TIMESTAMPING`). The TX timestamp comes back on the error queue with the
//! datagram it stamps, and is attached by the token in it, so no `OPT_ID` count is needed;
//! where it is missing, the user-space send time stands in and is counted as a fallback.
//!
//! Against the test network's truth (each request's hold time in the responder's log, from the
//! kernel's arrival stamp at its device to its write), `pingscope trace` of 60 rounds to a
//! 4-hop path (3 ms a hop), 300 probes per family, debug build, \|RTT − truth\| in µs, p50 /
//! p99 / max: UDP 7.5 / 10.5 / 10.7 (IPv4), 7.8 / 26.3 / 53.5 (IPv6); ICMP flows in the same
//! run 7.4 / 12.7 / 27.8 and 8.0 / 33.7 / 136.9.
//!
//! After its deadline a probe stays known for [`udp::LATE_WINDOW`]: an answer then is late, and
//! its socket stays open that long after its last hold is released. A held socket never closes
//! for idleness, so a path monitor keeps its flows' source ports whatever its round interval.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use socket2::{Protocol, SockAddr, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

#[cfg(doc)]
use super::Pinger;
use super::clock::{Fallback, Stamp};
use super::flow::{self, ProbeState, Shared, bump};
use super::socket::{self, SCM_TSTAMP_SND, SO_EE_ORIGIN_TIMESTAMPING, TimestampSource};
use super::{ProbeSpec, SendError, SocketOptions, packet, udp};

/// A flow socket closes after this long without a probe.
pub const IDLE: Duration = Duration::from_secs(300);

/// Sends after the first that a pending ICMP error of an earlier probe may take (as the ICMP
/// engine's datagram sockets).
const PENDING_ERROR_RETRIES: usize = 3;

/// Messages read per wake-up before yielding.
const BATCH: usize = 256;

/// Read buffer: enough for the token after any IP and UDP headers; the rest of a longer
/// message is cut (its length still known), which loses nothing the engine reads.
const RECV_BUF: usize = 2048;

/// Destination, port, flow and the options (without TTL) of a flow socket.
type FlowKey = (IpAddr, u16, u16, SocketOptions);

/// The open flow sockets.
#[derive(Debug, Default)]
pub(super) struct FlowSockets {
    // Held to look up, open or close a socket and to count holds; a socket's own lock nests
    // inside it.
    map: Mutex<Map>,
}

#[derive(Debug, Default)]
struct Map {
    open: HashMap<FlowKey, Arc<FlowSocket>>,
    /// Holds per flow ([`super::Pinger::hold_flow`]): a held socket never closes for idleness,
    /// and the last release closes it.
    holds: HashMap<FlowKey, usize>,
}

#[derive(Debug)]
struct FlowSocket {
    fd: AsyncFd<Socket>,
    ip: IpAddr,
    tx_kernel: Option<Fallback>,
    /// Cancelled when the socket's last hold is released: its receive task ends.
    closed: CancellationToken,
    // Held for a few map operations and the events they deliver, never across I/O or `.await`.
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Probes in flight or in their late window, by token id.
    probes: HashMap<u64, ProbeState>,
    /// The last probe sent (or about to be).
    last_use: Instant,
}

impl FlowSockets {
    /// The flow's socket, opened (and its receive task started) at its first probe.
    fn socket(
        self: &Arc<Self>,
        runtime: &Handle,
        key: FlowKey,
        shared: &Arc<Shared>,
    ) -> Result<Arc<FlowSocket>, SendError> {
        let mut map = self.map.lock();
        if let Some(s) = map.open.get(&key) {
            s.inner.lock().last_use = Instant::now();
            return Ok(s.clone());
        }
        let (ip, port, _, opts) = &key;
        let ip = *ip;
        let sock = flow::open(ip, Type::DGRAM, Protocol::UDP, opts)
            .map_err(|source| SendError::Socket { ip, source })?;
        let paths = socket::enable_timestamps(&sock, TimestampSource::Kernel);
        sock.connect(&SockAddr::from(SocketAddr::new(ip, *port)))
            .map_err(|source| SendError::Io { ip, source })?;
        let fd =
            flow::register(runtime, sock).map_err(|source| SendError::Socket { ip, source })?;
        let s = Arc::new(FlowSocket {
            fd,
            ip,
            tx_kernel: paths.tx,
            closed: CancellationToken::new(),
            inner: Mutex::new(Inner {
                probes: HashMap::new(),
                last_use: Instant::now(),
            }),
        });
        tracing::debug!(%ip, port, flow = key.2, "UDP flow socket opened");
        runtime.spawn(receive(
            s.clone(),
            key.clone(),
            Arc::downgrade(self),
            shared.clone(),
        ));
        map.open.insert(key, s.clone());
        Ok(s)
    }

    /// Closes `sock` when it is not held and has been idle for [`IDLE`] with nothing in
    /// flight; true when closed (its receive task ends).
    fn close_if_idle(&self, key: &FlowKey, sock: &Arc<FlowSocket>) -> bool {
        let mut map = self.map.lock();
        let mut inner = sock.inner.lock();
        if map.holds.contains_key(key) {
            // In use while held: look again an idle time from now.
            inner.last_use = Instant::now();
            return false;
        }
        if !inner.probes.is_empty() || inner.last_use.elapsed() < IDLE {
            return false;
        }
        if map.open.get(key).is_some_and(|s| Arc::ptr_eq(s, sock)) {
            map.open.remove(key);
        }
        true
    }

    fn forget(&self, key: &FlowKey, sock: &Arc<FlowSocket>) {
        let mut map = self.map.lock();
        if map.open.get(key).is_some_and(|s| Arc::ptr_eq(s, sock)) {
            map.open.remove(key);
        }
    }

    /// One more hold on the flow's socket (opened at its first probe).
    pub(super) fn hold(&self, key: FlowKey) {
        *self.map.lock().holds.entry(key).or_default() += 1;
    }

    /// One hold fewer; the last closes the socket. Probes still in their late window keep
    /// the descriptor until it ends (their expiry holds it) and time out if unanswered.
    pub(super) fn release(&self, key: &FlowKey) {
        let mut map = self.map.lock();
        let Some(n) = map.holds.get_mut(key) else {
            return;
        };
        *n -= 1;
        if *n > 0 {
            return;
        }
        map.holds.remove(key);
        if let Some(s) = map.open.remove(key) {
            s.closed.cancel();
            tracing::debug!(ip = %key.0, port = key.1, flow = key.2, "UDP flow socket closed");
        }
    }
}

/// The key of a [`Transport::UdpFlow`](super::Transport::UdpFlow) probe's socket.
pub(super) fn flow_key(spec: &ProbeSpec) -> Option<FlowKey> {
    match spec.transport {
        super::Transport::UdpFlow { flow, port, .. } => Some(key(spec, port, flow)),
        _ => None,
    }
}

fn key(spec: &ProbeSpec, port: u16, flow: u16) -> FlowKey {
    // The TTL goes on each packet, so it is not one of the socket's options.
    let opts = SocketOptions {
        ttl: None,
        ..spec.options.clone()
    };
    (spec.ip, port, flow, opts)
}

/// Sends one path probe on its flow's socket and starts its deadline.
pub(super) fn start(
    runtime: &Handle,
    spec: &ProbeSpec,
    (flow, ttl, port): (u16, u8, u16),
    mut state: ProbeState,
    shared: &Arc<Shared>,
    sockets: &Arc<FlowSockets>,
) -> Result<(), SendError> {
    let ip = spec.ip;
    let v6 = ip.is_ipv6();
    let sock = sockets.socket(runtime, key(spec, port, flow), shared)?;
    let id = shared.probe_id();
    state.stamp_send(sock.tx_kernel);
    let deadline = state.deadline;
    let payload = udp::flow_request(
        id,
        state.sent.user.wall.unix_nanos(),
        usize::from(spec.size),
        flow,
    );
    // In the table before the send: no answer can come before it.
    sock.inner.lock().probes.insert(id, state);
    let send = || socket::send_with_ttl(sock.fd.get_ref(), v6, &payload, ttl);
    let mut sent = send();
    // An ICMP error of an earlier probe leaves a pending error that the next send reports
    // instead of sending (the error itself waits on the error queue): send again.
    for _ in 0..PENDING_ERROR_RETRIES {
        match &sent {
            Err(e) if socket::is_pending_icmp_error(e) => sent = send(),
            _ => break,
        }
    }
    if let Err(source) = sent {
        // Dropped unsettled: its in-flight slot is freed.
        let _ = sock.inner.lock().probes.remove(&id);
        return Err(SendError::Io { ip, source });
    }
    runtime.spawn(expire(sock, id, deadline));
    Ok(())
}

/// Times the probe out at its deadline, and forgets it after its late window.
async fn expire(sock: Arc<FlowSocket>, id: u64, deadline: Instant) {
    ProbeState::sleep_until(deadline).await;
    if let Some(p) = sock.inner.lock().probes.get_mut(&id) {
        let now = p.now();
        p.timeout_now(now);
    }
    ProbeState::sleep_until(deadline + udp::LATE_WINDOW).await;
    let _ = sock.inner.lock().probes.remove(&id);
}

/// Reads a flow socket until it is closed for idleness or fails.
async fn receive(
    sock: Arc<FlowSocket>,
    key: FlowKey,
    sockets: Weak<FlowSockets>,
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; RECV_BUF];
    let mut cmsg = socket::cmsg_buffer();
    loop {
        let idle_at = {
            let at = sock.inner.lock().last_use + IDLE;
            // Probes still in their late window: look again after it.
            at.max(Instant::now() + udp::LATE_WINDOW)
        };
        tokio::select! {
            ready = sock.fd.ready(Interest::READABLE | Interest::ERROR) => match ready {
                Ok(mut guard) => {
                    if drain(&sock, &shared, &mut buf, &mut cmsg) {
                        guard.clear_ready();
                    } else {
                        drop(guard);
                        tokio::task::yield_now().await;
                    }
                }
                Err(e) => {
                    shared.receive_failed(&e, "UDP flow socket readiness failed; closed");
                    if let Some(s) = sockets.upgrade() {
                        s.forget(&key, &sock);
                    }
                    return;
                }
            },
            () = tokio::time::sleep_until(idle_at.into()) => {
                match sockets.upgrade() {
                    Some(s) if !s.close_if_idle(&key, &sock) => {}
                    _ => return,
                }
            }
            () = sock.closed.cancelled() => return,
        }
    }
}

/// Reads the error queue and the normal queue, up to [`BATCH`] rounds; true when both are
/// empty.
fn drain(sock: &FlowSocket, shared: &Shared, buf: &mut [u8], cmsg: &mut [u8]) -> bool {
    let fd = sock.fd.get_ref();
    for _ in 0..BATCH {
        let mut more = false;
        match socket::recv(fd, buf, cmsg, true) {
            Ok(got) => {
                more = true;
                let data = &buf[..got.len.min(buf.len())];
                on_errqueue(sock, shared, data, &got);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => more = true,
            Err(e) => shared.receive_failed(&e, "UDP flow error queue read failed"),
        }
        match socket::recv(fd, buf, cmsg, false) {
            // A closed port sends no datagram back: whatever comes is not an answer.
            Ok(_) => {
                more = true;
                bump(&shared.counters.unmatched_packets);
            }
            // The pending error of an ICMP error: the error queue holds it.
            Err(e) if socket::is_pending_icmp_error(&e) => more = true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => more = true,
            Err(e) => shared.receive_failed(&e, "UDP flow receive failed"),
        }
        if !more {
            return true;
        }
    }
    false
}

/// One error-queue entry: a TX timestamp or an ICMP error, matched to its probe by the token.
fn on_errqueue(sock: &FlowSocket, shared: &Shared, data: &[u8], got: &socket::Received) {
    let v6 = sock.ip.is_ipv6();
    let Some(e) = got.ext_err else {
        if got.cmsg_error {
            bump(&shared.counters.malformed_packets);
        }
        return;
    };
    if e.origin == SO_EE_ORIGIN_TIMESTAMPING {
        if e.info != SCM_TSTAMP_SND {
            return;
        }
        let (Some(t), Some((_, _, payload))) =
            (got.kernel_time, packet::parse_sent_udp(data, got.len, v6))
        else {
            // Its probe falls back (`missing`) when its answer comes.
            bump(&shared.counters.malformed_packets);
            return;
        };
        let Some(id) = udp::request_id(payload) else {
            bump(&shared.counters.unmatched_packets);
            return;
        };
        if let Some(p) = sock.inner.lock().probes.get_mut(&id)
            && p.sent.kernel == Stamp::Awaited
        {
            p.sent.kernel = Stamp::Kernel(t);
        }
        return;
    }
    let Some(mut info) = flow::icmp_error_info(v6, &e, sock.ip) else {
        // Local errors (EMSGSIZE and the like) were returned by the send.
        return;
    };
    let Some(id) = udp::request_id(data) else {
        // Quoted too little to carry the token: its probe times out.
        bump(&shared.counters.unmatched_packets);
        tracing::trace!(from = %info.from, quoted = got.len, "ICMP error without our token");
        return;
    };
    let rx = udp::rx_stamp(got.kernel_time, got.cmsg_error);
    let mut inner = sock.inner.lock();
    let Some(p) = inner.probes.get_mut(&id) else {
        bump(&shared.counters.unmatched_packets);
        return;
    };
    let (rtt, at) = p.measure(rx);
    if info.from == sock.ip && udp::is_port_unreachable(v6, e.icmp_type, e.icmp_code) {
        p.answer(udp::reply(rtt, None, 0), at);
    } else {
        info.rtt = Some(rtt);
        p.icmp_error(info, at);
    }
}
