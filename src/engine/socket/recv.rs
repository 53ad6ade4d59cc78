//! The receive side of a socket: `recvmsg` with its control messages (kernel receive
//! timestamp, reply TTL / hop limit, the extended errors of the error queue), and the errors an
//! ICMP error leaves pending on a datagram socket.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg};
use socket2::Socket;

/// True for the errors an ICMP error leaves pending on a datagram socket (`sk_err`), which the
/// next send or receive reports once.
pub fn is_pending_icmp_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::ECONNREFUSED
                | libc::EHOSTDOWN
                | libc::ENETDOWN
                | libc::EPROTO
                | libc::EACCES
                | libc::EMSGSIZE
                | libc::ETIMEDOUT
                | libc::ENOPROTOOPT
        )
    )
}

/// An extended error from the error queue (`sock_extended_err`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtendedError {
    /// Where the error came from (`SO_EE_ORIGIN_*`).
    pub origin: u8,
    /// ICMP type, when `origin` is ICMP.
    pub icmp_type: u8,
    /// ICMP code, when `origin` is ICMP.
    pub icmp_code: u8,
    /// The host that sent the error (`SO_EE_OFFENDER`).
    pub offender: Option<IpAddr>,
    /// `ee_info`: for timestamps, which one (`SCM_TSTAMP_SND` is 0).
    pub info: u32,
    /// `ee_data`: for timestamps, the `OPT_ID` counter of the send.
    pub data: u32,
}

impl ExtendedError {
    /// The kernel's `sock_extended_err`, with the offender address it came with.
    fn from_kernel(e: &libc::sock_extended_err, offender: Option<IpAddr>) -> Self {
        Self {
            origin: e.ee_origin,
            icmp_type: e.ee_type,
            icmp_code: e.ee_code,
            offender,
            info: e.ee_info,
            data: e.ee_data,
        }
    }
}

/// `SO_EE_ORIGIN_ICMP`: the error queue entry is an ICMPv4 error.
pub const SO_EE_ORIGIN_ICMP: u8 = 2;
/// `SO_EE_ORIGIN_ICMP6`: the error queue entry is an ICMPv6 error.
pub const SO_EE_ORIGIN_ICMP6: u8 = 3;
/// `SO_EE_ORIGIN_TIMESTAMPING`: the error queue entry is a TX timestamp.
pub const SO_EE_ORIGIN_TIMESTAMPING: u8 = 4;
/// `SCM_TSTAMP_SND`: the software timestamp of the packet leaving for the device.
pub const SCM_TSTAMP_SND: u32 = 0;

/// One message read from a socket.
#[derive(Clone, Debug, Default)]
pub struct Received {
    /// Bytes of data (may exceed the buffer when truncated).
    pub len: usize,
    /// Source address (normal queue) or original destination (error queue).
    pub from: Option<IpAddr>,
    /// Kernel timestamp: of the receive (normal queue) or of the send (error queue).
    pub kernel_time: Option<SystemTime>,
    /// The control messages could not be read in full (truncated, or a timestamp out of
    /// range); whatever they carried is lost for this packet.
    pub cmsg_error: bool,
    /// TTL / hop limit control message.
    pub ttl: Option<u8>,
    /// Extended error (error queue only).
    pub ext_err: Option<ExtendedError>,
}

/// Control-message buffer sized for everything we ask the kernel for.
pub fn cmsg_buffer() -> Vec<u8> {
    nix::cmsg_space!(
        [nix::sys::time::TimeSpec; 3],
        nix::sys::time::TimeSpec,
        libc::c_int,
        libc::c_int,
        libc::sock_extended_err,
        libc::sockaddr_in6,
        [u8; 64]
    )
}

fn storage_ip(addr: &SockaddrStorage) -> Option<IpAddr> {
    if let Some(a) = addr.as_sockaddr_in() {
        return Some(IpAddr::V4(a.ip()));
    }
    addr.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip()))
}

fn ttl_from(v: i32) -> Option<u8> {
    u8::try_from(v).ok()
}

/// Reads one message without blocking. `errqueue` reads the error queue instead.
pub fn recv(
    socket: &Socket,
    buf: &mut [u8],
    cmsg: &mut [u8],
    errqueue: bool,
) -> io::Result<Received> {
    let mut iov = [io::IoSliceMut::new(buf)];
    let flags = if errqueue {
        MsgFlags::MSG_ERRQUEUE
    } else {
        MsgFlags::empty()
    } | MsgFlags::MSG_TRUNC;
    let msg = recvmsg::<SockaddrStorage>(socket.as_raw_fd(), &mut iov, Some(cmsg), flags)
        .map_err(io::Error::from)?;
    let mut out = Received {
        len: msg.bytes,
        from: msg.address.as_ref().and_then(storage_ip),
        ..Received::default()
    };
    let time = |ts: nix::sys::time::TimeSpec| {
        let (s, ns) = (ts.tv_sec(), ts.tv_nsec());
        match (u64::try_from(s), u32::try_from(ns)) {
            (Ok(s), Ok(ns)) if ns < 1_000_000_000 => {
                SystemTime::UNIX_EPOCH.checked_add(Duration::new(s, ns))
            }
            _ => None,
        }
    };
    // A truncated control buffer (MSG_CTRUNC) loses whatever did not fit: reported, so the
    // caller counts it.
    match msg.cmsgs() {
        Err(_) => out.cmsg_error = true,
        Ok(cmsgs) => {
            for c in cmsgs {
                match c {
                    ControlMessageOwned::ScmTimestampsns(ts) => {
                        // Software timestamps only: the other two slots are hardware ones.
                        let t = time(ts.system);
                        out.cmsg_error |= t.is_none();
                        out.kernel_time = t.or(out.kernel_time);
                    }
                    ControlMessageOwned::ScmTimestampns(ts) => {
                        let t = time(ts);
                        out.cmsg_error |= t.is_none();
                        out.kernel_time = t.or(out.kernel_time);
                    }
                    ControlMessageOwned::Ipv4Ttl(t) | ControlMessageOwned::Ipv6HopLimit(t) => {
                        out.ttl = ttl_from(t)
                    }
                    ControlMessageOwned::Ipv4RecvErr(e, off) => {
                        let offender = off
                            .map(|a| IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))));
                        out.ext_err = Some(ExtendedError::from_kernel(&e, offender));
                    }
                    ControlMessageOwned::Ipv6RecvErr(e, off) => {
                        let offender = off.map(|a| IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)));
                        out.ext_err = Some(ExtendedError::from_kernel(&e, offender));
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(out)
}

/// Current wall-clock time as nanoseconds since the Unix epoch (0 before 1970).
pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
