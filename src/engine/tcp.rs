//! TCP probes: one SYN per probe, unprivileged (a non-blocking `connect`).
//!
//! The probe settles on the SYN-ACK (the connect succeeds: a reply), a RST (`ECONNREFUSED`: the
//! host answered, a reply with `refused` set, counted in `pingscope_tcp_refused_total`), an
//! ICMP error (on the error queue, `IP_RECVERR`), or its timeout.
//!
//! # One SYN, nothing left half-open
//!
//! The kernel resends an unanswered SYN after its initial retransmission timeout, 1 s
//! (`TCP_TIMEOUT_INIT`; `TCP_SYNCNT=1` still allows that one resend). A probe's socket therefore
//! lives at most [`MAX_WAIT`] after its `connect`: its deadline is `min(timeout, MAX_WAIT)`,
//! and after a shorter deadline the socket stays open until `MAX_WAIT` to report a late
//! SYN-ACK as late. Then the socket is closed with `SO_LINGER` 0: an established connection
//! ends with a RST (no FIN handshake, no `TIME_WAIT`), one still in `SYN_SENT` is dropped
//! without a packet, and a SYN-ACK that arrives after that finds no socket and is answered
//! with a RST by the kernel. Either way the target's half-open entry is gone within one RTT.
//!
//! Cost to the target: each probe is one connection attempt: on a stateful firewall or NAT
//! one conntrack entry, which the RST moves to `CLOSE` (Linux keeps it 10 s,
//! `nf_conntrack_tcp_timeout_close`); to a silent port one entry in `SYN_SENT` for
//! `nf_conntrack_tcp_timeout_syn_sent` (120 s). At one probe a second that is at most about 10
//! (answered) or 120 (silent) entries per monitored address. A listening server sees one
//! accepted-then-reset connection per open-port probe (its accept queue, its logs).
//!
//! # RTT from the kernel
//!
//! For an open port the RTT is the kernel's own handshake sample: `TCP_INFO`'s `tcpi_rtt` after
//! the first RTT sample is that sample exactly (the smoothed RTT starts at it), in µs, measured
//! from the SYN leaving TCP (`skb_mstamp`) to the SYN-ACK being processed in softirq, neither of
//! which depends on when this process runs. It is capped by the user-space bound (send to
//! wake-up) like every RTT. A RST gives no kernel sample: a refused probe's RTT is the user-space
//! time from `connect` to the wake-up (counted as a fallback, `reason="unsupported"`), as is an
//! open port's when `TCP_INFO` fails.
//!
//! Measured against the test network's truth (the time the responder held each SYN, from its
//! log), 100 probes 10 ms apart to a 20 ms host per family, test (debug) build, on a 2-core
//! machine shared with other builds (`rtt_against_the_truth_refused_silent_and_closed` in
//! `tests/testnet_tcpudp.rs` prints these; 2026-12-03):
//!
//! | TCP RTT, \|RTT − truth\| in µs | p50 | p99 | max |
//! |---|---|---|---|
//! | kernel `TCP_INFO` (this engine), IPv4 | 29.3 | 60.2 | 68.2 |
//! | kernel `TCP_INFO` (this engine), IPv6 | 32.4 | 68.1 | 73.1 |
//! | user space, `connect` to wake-up, IPv4 | 357.2 | 6,876.8 | 9,065.6 |
//! | user space, `connect` to wake-up, IPv6 | 182.8 | 15,307.9 | 50,710.3 |
//!
//! The kernel's sample is whole µs and starts when TCP hands the SYN down (before IP output)
//! and ends when TCP processes the SYN-ACK: a steady few tens of µs above the truth, never the
//! milliseconds of a late wake-up. A raw-socket SYN mode with `SO_TIMESTAMPING` could reach the
//! ICMP engine's few µs, at the price of `CAP_NET_RAW`; not built.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Protocol, SockAddr, Socket, Type};
use tokio::io::Interest;
use tokio::runtime::Handle;

use super::clock::{Fallback, Stamp};
use super::flow::{self, ProbeState, Shared, bump};
use super::socket;
use super::{ProbeSpec, ReplyInfo, SendError};

/// Longest a TCP probe's socket lives: under the kernel's 1 s initial SYN retransmission
/// timeout, with room for a late wake-up of this process.
pub const MAX_WAIT: Duration = Duration::from_millis(900);

/// Opens the probe's socket, sends its SYN and spawns the task that settles it.
pub(super) fn start(
    runtime: &Handle,
    spec: &ProbeSpec,
    port: u16,
    mut state: ProbeState,
    shared: &Arc<Shared>,
) -> Result<(), SendError> {
    let ip = spec.ip;
    let sock = flow::open(ip, Type::STREAM, Protocol::TCP, &spec.options)
        .map_err(|source| SendError::Socket { ip, source })?;
    let io = |source| SendError::Io { ip, source };
    // At most one SYN (no resend within MAX_WAIT in any case); close resets.
    set_syncnt(&sock, 1).map_err(io)?;
    sock.set_linger(Some(Duration::ZERO)).map_err(io)?;
    state.sent.user = shared.clock.pair();
    state.deadline = state.sent.user.mono.instant() + spec.timeout.min(MAX_WAIT);
    let close_at = state.sent.user.mono.instant() + MAX_WAIT;
    match sock.connect(&SockAddr::from(SocketAddr::new(ip, port))) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        // Loopback can refuse at once.
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {}
        Err(e) => return Err(io(e)),
    }
    // Registered only after the connect: epoll reports a TCP socket that has not connected
    // (state CLOSE) as EPOLLHUP, and tokio keeps the closed readiness of a HUP for good, so a
    // worker polling between registration and connect made `ready()` return at once until the
    // handshake ended: a busy loop for the RTT, for the whole `MAX_WAIT` on a silent port.
    let fd = flow::register(runtime, sock).map_err(|source| SendError::Socket { ip, source })?;
    // Waits for the handshake's outcome until `close_at`, then closes the socket.
    let shared = shared.clone();
    let done = move |sock: &Socket, state: &mut ProbeState| outcome(sock, state, &shared);
    let interest = Interest::WRITABLE | Interest::ERROR;
    runtime.spawn(flow::drive(fd, interest, state, close_at, "TCP", done));
    Ok(())
}

/// Reads what the kernel made of the connect; true when the probe is done with its socket.
fn outcome(sock: &Socket, state: &mut ProbeState, shared: &Shared) -> bool {
    let err = match sock.take_error() {
        Ok(e) => e,
        Err(e) => Some(e),
    };
    match err {
        None => {
            // Writable without an error: connected, or still connecting (a spurious wake).
            if sock.peer_addr().is_err() {
                return false;
            }
            let (rtt, at) = match kernel_rtt(sock) {
                Some(k) => {
                    let (bound, at) = state.measure(Stamp::User(Fallback::Unsupported));
                    (k.min(bound), at)
                }
                None => state.measure(Stamp::User(Fallback::Unsupported)),
            };
            state.answer(reply(rtt, false), at);
            true
        }
        Some(e) => {
            if let Some((info, at)) = read_icmp_error(sock, state) {
                state.icmp_error(info, at);
            } else if e.raw_os_error() == Some(libc::ECONNREFUSED) {
                bump(&shared.counters.tcp_refused);
                let (rtt, at) = state.measure(Stamp::User(Fallback::Unsupported));
                state.answer(reply(rtt, true), at);
            } else {
                // A local failure (no route, no neighbour): no answer; the deadline settles it.
                tracing::debug!(error = %e, "TCP probe failed locally");
            }
            true
        }
    }
}

fn reply(rtt: Duration, refused: bool) -> ReplyInfo {
    ReplyInfo {
        rtt,
        ttl: None,
        size: 0,
        refused,
    }
}

/// The ICMP error the kernel queued for this connect, if any.
fn read_icmp_error(
    sock: &Socket,
    state: &ProbeState,
) -> Option<(super::IcmpErrorInfo, std::time::SystemTime)> {
    let mut buf = [0u8; 256];
    let mut cmsg = socket::cmsg_buffer();
    let ip = sock
        .peer_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map(|a| a.ip());
    while let Ok(got) = socket::recv(sock, &mut buf, &mut cmsg, true) {
        let target = got.from.or(ip)?;
        if let Some(e) = got.ext_err
            && let Some(info) = flow::icmp_error_info(target.is_ipv6(), &e, target)
        {
            return Some((
                info,
                got.kernel_time.map_or_else(|| state.now(), |t| t.time()),
            ));
        }
    }
    None
}

fn set_syncnt(sock: &Socket, n: libc::c_int) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `n` is a valid int for the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_SYNCNT,
            (&n as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The kernel's first RTT sample of this connection (`tcpi_rtt`, µs).
fn kernel_rtt(sock: &Socket) -> Option<Duration> {
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero tcp_info is a valid value of this plain C struct.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` describe a writable buffer of the size the kernel is told.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc != 0 || info.tcpi_rtt == 0 {
        let e = io::Error::last_os_error();
        tracing::debug!(error = %e, "TCP_INFO without an RTT sample");
        return None;
    }
    Some(Duration::from_micros(u64::from(info.tcpi_rtt)))
}
