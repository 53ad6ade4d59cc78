//! Opening ICMP sockets and sending on them: the choice between datagram ("ping") and raw
//! sockets, the socket options, per-packet TTL. Reading them (`recvmsg` or `recvmmsg`, with
//! their control messages) is [`recv()`] and [`RecvBatch`], in `socket/recv.rs`.
//!
//! Timestamps: `SO_TIMESTAMPING` with `SOF_TIMESTAMPING_RX_SOFTWARE | TX_SOFTWARE | SOFTWARE |
//! OPT_ID` where the kernel takes it (kernel RX and TX); else the same without `TX_SOFTWARE`
//! (kernel RX only); else `SO_TIMESTAMPNS`; else none. [`TimestampPaths`] says what a socket got.
//! `OPT_TSONLY` stays off, so each TX timestamp comes back on the error queue with the request
//! it stamps, which the engine parses to verify the match. A control message that cannot be read
//! is reported ([`Received::cmsg_error`]), never dropped silently.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use nix::sys::socket::{MsgFlags, SockaddrStorage, setsockopt, sockopt};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::clock::Fallback;
use super::{SocketError, SocketOptions};

mod recv;

pub use recv::{
    ExtendedError, MAX_BATCH, Received, RecvBatch, SCM_TSTAMP_SND, SO_EE_ORIGIN_ICMP,
    SO_EE_ORIGIN_ICMP6, SO_EE_ORIGIN_TIMESTAMPING, cmsg_buffer, is_pending_icmp_error, recv,
};

/// Where timestamps come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimestampSource {
    /// The kernel's RX and TX timestamps where the kernel gives them, user space where not.
    #[default]
    Kernel,
    /// The kernel's RX timestamp; the send time is the clock read before `sendto`. Only for
    /// measuring what TX timestamps buy.
    KernelRx,
    /// Clock reads before `sendto` and after `recvmsg`. Only for measuring what kernel
    /// timestamps buy.
    Userspace,
}

/// Which timestamps a socket gives; `None` is the kernel's, `Some` why user space stands in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimestampPaths {
    /// Receive side.
    pub rx: Option<Fallback>,
    /// Send side.
    pub tx: Option<Fallback>,
}

impl TimestampPaths {
    /// `kernel` or `user`, for the info metric and logs.
    pub fn label(side: Option<Fallback>) -> &'static str {
        if side.is_none() { "kernel" } else { "user" }
    }
}

/// Asks for the timestamps `want` names, stepping down to what the kernel takes.
pub fn enable_timestamps(socket: &Socket, want: TimestampSource) -> TimestampPaths {
    use nix::sys::socket::TimestampingFlag as F;
    let rx = F::SOF_TIMESTAMPING_SOFTWARE | F::SOF_TIMESTAMPING_RX_SOFTWARE;
    let tx = F::SOF_TIMESTAMPING_TX_SOFTWARE | F::SOF_TIMESTAMPING_OPT_ID;
    let user = |why| TimestampPaths {
        rx: Some(why),
        tx: Some(why),
    };
    if want == TimestampSource::Userspace {
        return user(Fallback::Disabled);
    }
    let tx_why = if want == TimestampSource::Kernel {
        match setsockopt(socket, sockopt::Timestamping, &(rx | tx)) {
            Ok(()) => return TimestampPaths { rx: None, tx: None },
            Err(e) => {
                tracing::debug!(error = %e, "SO_TIMESTAMPING with TX timestamps refused");
                Fallback::Unsupported
            }
        }
    } else {
        Fallback::Disabled
    };
    let rx_only = setsockopt(socket, sockopt::Timestamping, &rx)
        .or_else(|_| setsockopt(socket, sockopt::ReceiveTimestampns, &true));
    match rx_only {
        Ok(()) => TimestampPaths {
            rx: None,
            tx: Some(tx_why),
        },
        Err(e) => {
            tracing::debug!(error = %e, "no kernel receive timestamps on this socket");
            user(Fallback::Unsupported)
        }
    }
}

/// Which kind of ICMP socket to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SocketPreference {
    /// Datagram ICMP socket when `net.ipv4.ping_group_range` allows it, else raw.
    #[default]
    Auto,
    /// Datagram ICMP socket only.
    Dgram,
    /// Raw socket only (needs `CAP_NET_RAW`).
    Raw,
}

/// The kind of an open ICMP socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SocketKind {
    /// Unprivileged datagram ICMP socket (`SOCK_DGRAM`, `IPPROTO_ICMP[V6]`): the kernel owns the
    /// identifier (the socket's port) and the checksum, and queues ICMP errors on the error queue.
    Dgram,
    /// Raw socket: sees every ICMP packet of its family; we own identifier and checksum.
    Raw,
}

impl SocketKind {
    /// `dgram` or `raw`, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dgram => "dgram",
            Self::Raw => "raw",
        }
    }
}

/// An open, configured, non-blocking ICMP socket.
#[derive(Debug)]
pub struct OpenSocket {
    /// The socket.
    pub socket: Socket,
    /// Its kind.
    pub kind: SocketKind,
    /// The ICMP identifier our requests carry on the wire.
    pub ident: u16,
    /// Which timestamps it gives.
    pub timestamps: TimestampPaths,
}

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> SocketError {
    move |source| SocketError::Io { op, source }
}

/// Why no ICMP socket opened, `failed` being the kind tried last; `dgram` and `raw` are what
/// each kind's open gave (a kind not tried has an error saying so). Denied permission names
/// both, for the hint; any other failure is the last kind's alone.
fn open_error(failed: SocketKind, dgram: io::Error, raw: io::Error) -> SocketError {
    let last = match failed {
        SocketKind::Dgram => &dgram,
        SocketKind::Raw => &raw,
    };
    if is_permission(last) {
        return SocketError::PermissionDenied { dgram, raw };
    }
    match failed {
        SocketKind::Dgram => SocketError::Io {
            op: "open datagram ICMP socket",
            source: dgram,
        },
        SocketKind::Raw => SocketError::Io {
            op: "open raw ICMP socket",
            source: raw,
        },
    }
}

fn is_permission(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

fn new_socket(v6: bool, ty: Type) -> io::Result<Socket> {
    let (domain, proto) = if v6 {
        (Domain::IPV6, Protocol::ICMPV6)
    } else {
        (Domain::IPV4, Protocol::ICMPV4)
    };
    Socket::new(domain, ty, Some(proto))
}

/// Opens the ICMP socket for one address family and option set, honouring `pref`.
pub fn open(
    v6: bool,
    pref: SocketPreference,
    opts: &SocketOptions,
    timestamps: TimestampSource,
) -> Result<OpenSocket, SocketError> {
    let not_tried = || io::Error::other("not tried: socket kind forced");
    let (socket, kind) = match pref {
        SocketPreference::Dgram => {
            let s = new_socket(v6, Type::DGRAM)
                .map_err(|e| open_error(SocketKind::Dgram, e, not_tried()))?;
            (s, SocketKind::Dgram)
        }
        SocketPreference::Raw => {
            let s = new_socket(v6, Type::RAW)
                .map_err(|e| open_error(SocketKind::Raw, not_tried(), e))?;
            (s, SocketKind::Raw)
        }
        SocketPreference::Auto => match new_socket(v6, Type::DGRAM) {
            Ok(s) => (s, SocketKind::Dgram),
            Err(dgram) => {
                let s = new_socket(v6, Type::RAW)
                    .map_err(|raw| open_error(SocketKind::Raw, dgram, raw))?;
                (s, SocketKind::Raw)
            }
        },
    };
    configure(socket, kind, v6, opts, timestamps)
}

fn configure(
    socket: Socket,
    kind: SocketKind,
    v6: bool,
    opts: &SocketOptions,
    want: TimestampSource,
) -> Result<OpenSocket, SocketError> {
    socket
        .set_nonblocking(true)
        .map_err(io_err("set O_NONBLOCK"))?;
    let timestamps = enable_timestamps(&socket, want);
    // Room for a burst of replies (thousands of targets answering at once). SO_RCVBUFFORCE
    // needs CAP_NET_ADMIN; without it the kernel caps SO_RCVBUF at net.core.rmem_max.
    const RCVBUF: usize = 4 << 20;
    if setsockopt(&socket, sockopt::RcvBufForce, &RCVBUF).is_err() {
        let _ = socket.set_recv_buffer_size(RCVBUF);
    }
    if v6 {
        setsockopt(&socket, sockopt::Ipv6RecvHopLimit, &true).map_err(|e| SocketError::Io {
            op: "set IPV6_RECVHOPLIMIT",
            source: e.into(),
        })?;
    } else {
        // Raw v4 reads the TTL from the IP header; datagram sockets need the control message.
        setsockopt(&socket, sockopt::Ipv4RecvTtl, &true).map_err(|e| SocketError::Io {
            op: "set IP_RECVTTL",
            source: e.into(),
        })?;
    }
    if kind == SocketKind::Dgram {
        set_recverr(&socket, v6)?;
    }
    if kind == SocketKind::Raw {
        // Not fatal: without the filter the parser drops the extra packets anyway.
        if let Err(e) = set_raw_filter(&socket, v6) {
            tracing::debug!(error = %e, "ICMP type filter not set on raw socket");
        }
    }
    set_ip_options(&socket, v6, opts)?;
    let ident = match kind {
        SocketKind::Dgram => {
            // Bind now so the kernel picks the identifier (the "port") before the first send.
            let unspecified = if v6 {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            } else {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            };
            let local = SocketAddr::new(opts.source.unwrap_or(unspecified), 0);
            socket
                .bind(&local.into())
                .map_err(io_err("bind datagram ICMP socket"))?;
            let bound = socket
                .local_addr()
                .map_err(io_err("read datagram ICMP socket identifier"))?;
            bound.as_socket().map(|a| a.port()).unwrap_or(0)
        }
        SocketKind::Raw => {
            if let Some(src) = opts.source {
                socket
                    .bind(&SocketAddr::new(src, 0).into())
                    .map_err(io_err("bind raw ICMP socket to source"))?;
            }
            rand::random::<u16>()
        }
    };
    Ok(OpenSocket {
        socket,
        kind,
        ident,
        timestamps,
    })
}

/// Sets the TTL / hop limit, the TOS / traffic class and the interface of `opts` (the source
/// address is bound by the caller, which knows its port).
pub fn set_ip_options(socket: &Socket, v6: bool, opts: &SocketOptions) -> Result<(), SocketError> {
    type SetOption = (fn(&Socket, u32) -> io::Result<()>, &'static str);
    let (ttl_option, tos_option): (SetOption, SetOption) = if v6 {
        (
            (Socket::set_unicast_hops_v6, "set IPV6_UNICAST_HOPS"),
            (Socket::set_tclass_v6, "set IPV6_TCLASS"),
        )
    } else {
        (
            (Socket::set_ttl_v4, "set IP_TTL"),
            (Socket::set_tos_v4, "set IP_TOS"),
        )
    };
    for (value, (set, what)) in [(opts.ttl, ttl_option), (opts.tos, tos_option)] {
        if let Some(value) = value {
            set(socket, u32::from(value)).map_err(io_err(what))?;
        }
    }
    if let Some(dev) = &opts.interface {
        socket
            .bind_device(Some(dev.as_bytes()))
            .map_err(io_err("bind to interface (SO_BINDTODEVICE)"))?;
    }
    Ok(())
}

/// Asks for ICMP errors on the error queue (`IP_RECVERR` / `IPV6_RECVERR`).
pub fn set_recverr(socket: &Socket, v6: bool) -> Result<(), SocketError> {
    let set = if v6 {
        setsockopt(socket, sockopt::Ipv6RecvErr, &true).map_err(|e| ("set IPV6_RECVERR", e))
    } else {
        setsockopt(socket, sockopt::Ipv4RecvErr, &true).map_err(|e| ("set IP_RECVERR", e))
    };
    set.map_err(|(op, e)| SocketError::Io {
        op,
        source: e.into(),
    })
}

/// `ICMP_FILTER` (linux/icmp.h) at `SOL_RAW`, and `ICMP6_FILTER` (netinet/icmp6.h) at
/// `IPPROTO_ICMPV6`: both option numbers are 1.
const ICMP_FILTER: libc::c_int = 1;
const ICMP6_FILTER: libc::c_int = 1;

/// ICMP types a receiving raw socket lets in: echo replies and the errors we parse.
const RAW_PASS_V4: &[u8] = &[0, 3, 4, 5, 11, 12];
const RAW_PASS_V6: &[u8] = &[1, 2, 3, 4, 129];

/// Lets a raw socket wake only for echo replies and the errors we parse, not for every echo
/// request (our own, looped back) or neighbour discovery message of the host.
fn set_raw_filter(socket: &Socket, v6: bool) -> io::Result<()> {
    set_icmp_filter(socket, v6, if v6 { RAW_PASS_V6 } else { RAW_PASS_V4 })
}

/// Lets only the ICMP types `pass` into a raw socket (none: a socket that only sends; IPv4's
/// filter covers types 0 to 31, the ones in use).
fn set_icmp_filter(socket: &Socket, v6: bool, pass: &[u8]) -> io::Result<()> {
    let fd = socket.as_raw_fd();
    let rc = if v6 {
        // icmp6_filter: 256 bits, a set bit blocks that type.
        let mut filter = [u32::MAX; 8];
        for &t in pass {
            filter[usize::from(t >> 5)] &= !(1u32 << (t & 31));
        }
        // SAFETY: `filter` is a valid, initialised icmp6_filter-sized buffer for the call.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_ICMPV6,
                ICMP6_FILTER,
                filter.as_ptr().cast(),
                std::mem::size_of_val(&filter) as libc::socklen_t,
            )
        }
    } else {
        // icmp_filter: one 32-bit mask, a set bit blocks that type (types 0..31).
        let mut mask = u32::MAX;
        for &t in pass.iter().filter(|t| **t < 32) {
            mask &= !(1u32 << t);
        }
        // SAFETY: `mask` is a valid, initialised u32 for the call.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_RAW,
                ICMP_FILTER,
                (&mask as *const u32).cast(),
                std::mem::size_of::<u32>() as libc::socklen_t,
            )
        }
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Opens the send-only twin of a raw ICMP socket: the same options, kernel TX timestamps
/// (with `OPT_ID`) on its error queue, and no packet let in. Nothing waits on it, so queueing
/// a TX timestamp wakes no thread while the probe is on its way (see [`super::icmp`]); the
/// receive side reads its error queue when a reply needs the timestamp, or drains it.
pub fn open_raw_sender(v6: bool, opts: &SocketOptions) -> Result<Socket, SocketError> {
    use nix::sys::socket::TimestampingFlag as F;
    let socket = new_socket(v6, Type::RAW).map_err(io_err("open raw ICMP send socket"))?;
    socket
        .set_nonblocking(true)
        .map_err(io_err("set O_NONBLOCK"))?;
    let flags =
        F::SOF_TIMESTAMPING_SOFTWARE | F::SOF_TIMESTAMPING_TX_SOFTWARE | F::SOF_TIMESTAMPING_OPT_ID;
    setsockopt(&socket, sockopt::Timestamping, &flags).map_err(|e| SocketError::Io {
        op: "set SO_TIMESTAMPING (TX) on the send socket",
        source: e.into(),
    })?;
    // Room for the timestamps of a burst of sends between two reads (as for replies).
    const RCVBUF: usize = 4 << 20;
    if setsockopt(&socket, sockopt::RcvBufForce, &RCVBUF).is_err() {
        let _ = socket.set_recv_buffer_size(RCVBUF);
    }
    set_icmp_filter(&socket, v6, &[]).map_err(io_err("block every ICMP type (ICMP_FILTER)"))?;
    set_ip_options(&socket, v6, opts)?;
    if let Some(src) = opts.source {
        socket
            .bind(&SocketAddr::new(src, 0).into())
            .map_err(io_err("bind raw ICMP send socket to source"))?;
    }
    Ok(socket)
}

/// Sends one ICMP message to `ip`.
pub fn send_to(socket: &Socket, ip: IpAddr, pkt: &[u8]) -> io::Result<()> {
    let addr = SockAddr::from(SocketAddr::new(ip, 0));
    socket.send_to(pkt, &addr).map(|_| ())
}

/// Sends one ICMP message to `ip` with this packet's own TTL (IPv4) or hop limit (IPv6), given
/// as a control message (`IP_TTL` / `IPV6_HOPLIMIT`) so that one socket sends every TTL of a
/// flow: datagram and raw sockets of both families take it, and the socket's own TTL stays.
pub fn send_to_with_ttl(socket: &Socket, ip: IpAddr, pkt: &[u8], ttl: u8) -> io::Result<()> {
    let addr = SockaddrStorage::from(SocketAddr::new(ip, 0));
    send_ttl(socket, Some(&addr), ip.is_ipv6(), pkt, ttl)
}

/// Sends `pkt` on a connected socket with this packet's own TTL / hop limit, as
/// [`send_to_with_ttl`] does (UDP path probes: one connected socket sends every TTL of a flow).
pub fn send_with_ttl(socket: &Socket, v6: bool, pkt: &[u8], ttl: u8) -> io::Result<()> {
    send_ttl(socket, None, v6, pkt, ttl)
}

fn send_ttl(
    socket: &Socket,
    addr: Option<&SockaddrStorage>,
    v6: bool,
    pkt: &[u8],
    ttl: u8,
) -> io::Result<()> {
    use nix::sys::socket::{ControlMessage, sendmsg};
    let hops = libc::c_int::from(ttl);
    let cmsg = if v6 {
        ControlMessage::Ipv6HopLimit(&hops)
    } else {
        ControlMessage::Ipv4Ttl(&hops)
    };
    let iov = [io::IoSlice::new(pkt)];
    sendmsg(socket.as_raw_fd(), &iov, &[cmsg], MsgFlags::empty(), addr)
        .map(|_| ())
        .map_err(io::Error::from)
}
