//! The receive side of a socket: one message at a time ([`recv`], `recvmsg`) or a batch of them
//! ([`RecvBatch`], `recvmmsg`: one system call for every message a busy socket has queued), each
//! with its control messages (kernel receive timestamp, reply TTL / hop limit, the extended
//! errors of the error queue) read by the same code; and the errors an ICMP error leaves
//! pending on a datagram socket.
//!
//! Both call libc directly rather than nix's wrappers: nix's `recvmmsg` reuses its headers
//! without setting back the address and control lengths the kernel wrote into them, so a message
//! with fewer control messages than the next would leave that one's truncated.

use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

use socket2::Socket;

use crate::engine::clock::Wall;

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
    pub kernel_time: Option<Wall>,
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
    vec![0u8; CONTROL_LEN]
}

/// Bytes of control messages one message can carry: three timespecs (`SCM_TIMESTAMPING`), one
/// (`SCM_TIMESTAMPNS`), the TTL or hop limit, an extended error with its offender, and room to
/// spare; each with its header.
const CONTROL_LEN: usize = 7 * CMSG_HEADER
    + 4 * std::mem::size_of::<libc::timespec>()
    + 2 * 8
    + std::mem::size_of::<libc::sock_extended_err>()
    + std::mem::size_of::<libc::sockaddr_in6>()
    + 64;

/// `CMSG_ALIGN(sizeof(struct cmsghdr))`: where a control message's data starts.
const CMSG_HEADER: usize = cmsg_align(std::mem::size_of::<libc::cmsghdr>());

/// `CMSG_ALIGN`: control messages are aligned to `size_t`.
const fn cmsg_align(n: usize) -> usize {
    let a = std::mem::size_of::<usize>();
    (n + a - 1) & !(a - 1)
}

/// The flags every read passes: the real length of a datagram larger than the buffer, and the
/// error queue when asked.
fn recv_flags(errqueue: bool) -> libc::c_int {
    libc::MSG_TRUNC | libc::MSG_DONTWAIT | if errqueue { libc::MSG_ERRQUEUE } else { 0 }
}

/// What a read returned for one message, besides its bytes.
#[derive(Clone, Copy, Debug, Default)]
struct Header {
    /// Bytes of data (the datagram's length, with `MSG_TRUNC`).
    bytes: usize,
    /// `msg_flags`.
    flags: libc::c_int,
    /// Bytes of the source address the kernel wrote.
    namelen: libc::socklen_t,
    /// Bytes of control messages the kernel wrote.
    controllen: usize,
}

/// The source address of a message, from the `msg_name` the kernel filled.
fn source(name: &libc::sockaddr_storage, namelen: libc::socklen_t) -> Option<IpAddr> {
    let len = usize::try_from(namelen).unwrap_or(0);
    let family = libc::c_int::from(name.ss_family);
    let name: *const libc::sockaddr_storage = name;
    match family {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let a = unsafe { std::ptr::read(name.cast::<libc::sockaddr_in>()) };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            let a = unsafe { std::ptr::read(name.cast::<libc::sockaddr_in6>()) };
            Some(IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

/// Reads a `T` from the start of `data` if it holds one.
fn read_as<T: Copy>(data: &[u8]) -> Option<T> {
    (data.len() >= std::mem::size_of::<T>())
        // SAFETY: in bounds (checked); `read_unaligned` needs no alignment, and every `T` used
        // here is a plain C struct or integer for which any bytes are a value.
        .then(|| unsafe { std::ptr::read_unaligned(data.as_ptr().cast::<T>()) })
}

/// The message read into `data`, with its header and control messages.
fn received(h: Header, name: &libc::sockaddr_storage, control: &[u8]) -> Received {
    let mut out = Received {
        len: h.bytes,
        from: source(name, h.namelen),
        ..Received::default()
    };
    // A truncated control buffer (MSG_CTRUNC) loses whatever did not fit: reported, so the
    // caller counts it.
    if h.flags & libc::MSG_CTRUNC != 0 {
        out.cmsg_error = true;
        return out;
    }
    let control = control
        .get(..h.controllen.min(control.len()))
        .unwrap_or(&[]);
    let mut at = 0;
    while let Some(c) = control.get(at..).and_then(read_as::<libc::cmsghdr>) {
        let len = c_len(c.cmsg_len);
        let Some(data) = control.get(at + CMSG_HEADER..at + len) else {
            out.cmsg_error = true;
            break;
        };
        control_message(c.cmsg_level, c.cmsg_type, data, &mut out);
        at += cmsg_align(len);
    }
    out
}

/// Takes what one control message carries into `out`.
fn control_message(level: libc::c_int, kind: libc::c_int, data: &[u8], out: &mut Received) {
    // Before the epoch is not a time the kernel stamps a packet with: malformed. (`time_t` and
    // `c_long` are 32 bits on some targets.)
    #[allow(clippy::useless_conversion)]
    let time = |ts: libc::timespec| {
        Wall::from_timespec(i64::from(ts.tv_sec), i64::from(ts.tv_nsec)).filter(|t| t.nanos() >= 0)
    };
    let mut stamp = |ts: Option<libc::timespec>| {
        let t = ts.and_then(time);
        out.cmsg_error |= t.is_none();
        out.kernel_time = t.or(out.kernel_time);
    };
    match (level, kind) {
        // Software timestamps only: the other two of the three are hardware ones.
        (libc::SOL_SOCKET, libc::SCM_TIMESTAMPING | libc::SCM_TIMESTAMPNS) => {
            stamp(read_as::<libc::timespec>(data));
        }
        (libc::IPPROTO_IP, libc::IP_TTL) | (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => {
            out.ttl = read_as::<libc::c_int>(data).and_then(ttl_from);
        }
        (libc::IPPROTO_IP, libc::IP_RECVERR) => {
            if let Some(e) = read_as::<libc::sock_extended_err>(data) {
                // SO_EE_OFFENDER: the address right after the error, when the kernel sent one.
                let offender = data
                    .get(std::mem::size_of::<libc::sock_extended_err>()..)
                    .and_then(read_as::<libc::sockaddr_in>)
                    .map(|a| IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))));
                out.ext_err = Some(ExtendedError::from_kernel(&e, offender));
            }
        }
        (libc::IPPROTO_IPV6, libc::IPV6_RECVERR) => {
            if let Some(e) = read_as::<libc::sock_extended_err>(data) {
                let offender = data
                    .get(std::mem::size_of::<libc::sock_extended_err>()..)
                    .and_then(read_as::<libc::sockaddr_in6>)
                    .map(|a| IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)));
                out.ext_err = Some(ExtendedError::from_kernel(&e, offender));
            }
        }
        _ => {}
    }
}

/// A control length as `usize`: `size_t` in glibc's headers, `socklen_t` in musl's.
fn c_len<T: TryInto<usize>>(n: T) -> usize {
    n.try_into().unwrap_or(0)
}

fn ttl_from(v: i32) -> Option<u8> {
    u8::try_from(v).ok()
}

/// A `msghdr` reading into `buf`, `name` and `control`.
fn msghdr(
    iov: &mut libc::iovec,
    name: &mut libc::sockaddr_storage,
    control: &mut [u8],
) -> libc::msghdr {
    // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_name = std::ptr::from_mut(name).cast();
    m.msg_namelen = socklen(std::mem::size_of::<libc::sockaddr_storage>());
    m.msg_iov = iov;
    m.msg_iovlen = 1;
    m.msg_control = control.as_mut_ptr().cast();
    m.msg_controllen = control.len() as _;
    m
}

fn socklen(n: usize) -> libc::socklen_t {
    libc::socklen_t::try_from(n).unwrap_or(libc::socklen_t::MAX)
}

fn iovec(buf: &mut [u8]) -> libc::iovec {
    libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    }
}

/// Reads one message without blocking. `errqueue` reads the error queue instead.
pub fn recv(
    socket: &Socket,
    buf: &mut [u8],
    cmsg: &mut [u8],
    errqueue: bool,
) -> io::Result<Received> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = iovec(buf);
    let mut m = msghdr(&mut iov, &mut name, cmsg);
    // SAFETY: `m` points to buffers that live and stay borrowed for the call.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &raw mut m, recv_flags(errqueue)) };
    let bytes = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    let h = Header {
        bytes,
        flags: m.msg_flags,
        namelen: m.msg_namelen,
        controllen: c_len(m.msg_controllen),
    };
    Ok(received(h, &name, cmsg))
}

/// Most messages one [`RecvBatch::read`] takes.
pub const MAX_BATCH: usize = 32;

/// Fewest messages a [`RecvBatch::read`] asks for (when the batch holds that many).
const FIRST_ASK: usize = 8;

/// Buffers for reading up to [`MAX_BATCH`] messages with one `recvmmsg`: a data slot, a control
/// buffer and a source address per message, and what the kernel said of each.
///
/// The data slots are allocated but never written by us: only the pages the kernel writes
/// into become resident, so a batch of full-size slots costs a page per slot used.
///
/// A read asks for as many messages as it has reason to expect, not always the whole batch:
/// each message asked for is a header set up before the call, and a daemon's reads mostly find
/// a few messages queued. The ask is twice the last read's count, from [`FIRST_ASK`] to the
/// batch's size, so a read that took all it asked for doubles it.
pub struct RecvBatch {
    data: Box<[MaybeUninit<u8>]>,
    slot: usize,
    control: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    headers: Vec<Header>,
    /// Messages held from the last read.
    held: usize,
    /// Messages the next read asks for.
    ask: usize,
    /// The last read took all it asked for: more may be queued.
    filled: bool,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("messages", &self.headers.len())
            .field("slot", &self.slot)
            .field("held", &self.held)
            .finish()
    }
}

impl RecvBatch {
    /// Buffers for `messages` (1 to [`MAX_BATCH`]) messages of up to `slot` bytes each.
    pub fn new(messages: usize, slot: usize) -> Self {
        let messages = messages.clamp(1, MAX_BATCH);
        let slot = slot.max(1);
        // SAFETY: all-zero is a valid sockaddr_storage.
        let zero: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        Self {
            data: Box::new_uninit_slice(messages * slot),
            slot,
            control: vec![0u8; messages * CONTROL_LEN],
            names: vec![zero; messages],
            headers: vec![Header::default(); messages],
            held: 0,
            ask: messages.min(FIRST_ASK),
            filled: false,
        }
    }

    /// Reads what is queued, up to the read's ask (see [`RecvBatch`]), without blocking: how
    /// many messages were read (at least one), or the error of the first read (`WouldBlock`
    /// when none is queued). [`RecvBatch::filled`] then says whether more may be queued.
    pub fn read(&mut self, socket: &Socket, errqueue: bool) -> io::Result<usize> {
        self.held = 0;
        self.filled = false;
        let ask = self.ask.clamp(1, self.headers.len());
        let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_BATCH];
        let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_BATCH];
        let slots = self.data.chunks_exact_mut(self.slot);
        let controls = self.control.chunks_exact_mut(CONTROL_LEN);
        let mut count = 0;
        for ((((slot, control), name), iov), hdr) in slots
            .zip(controls)
            .zip(self.names.iter_mut())
            .zip(iovs.iter_mut())
            .zip(hdrs.iter_mut())
            .take(ask)
        {
            let iov = iov.write(libc::iovec {
                iov_base: slot.as_mut_ptr().cast(),
                iov_len: slot.len(),
            });
            // Every field the kernel writes back is set again before each read.
            hdr.write(libc::mmsghdr {
                msg_hdr: msghdr(iov, name, control),
                msg_len: 0,
            });
            count += 1;
        }
        let vlen = libc::c_uint::try_from(count).unwrap_or(1);
        // SAFETY: the first `count` headers are initialized and point to buffers owned by
        // `self`, which stay borrowed for the call; the kernel writes at most their lengths.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                hdrs.as_mut_ptr().cast::<libc::mmsghdr>(),
                vlen,
                recv_flags(errqueue),
                std::ptr::null_mut(),
            )
        };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        let n = n.min(count);
        for (h, m) in self.headers.iter_mut().zip(&hdrs[..n]) {
            // SAFETY: every one of the first `count` headers was written above.
            let m = unsafe { m.assume_init_ref() };
            *h = Header {
                bytes: m.msg_len as usize,
                flags: m.msg_hdr.msg_flags,
                namelen: m.msg_hdr.msg_namelen,
                controllen: c_len(m.msg_hdr.msg_controllen),
            };
        }
        self.held = n;
        self.filled = n > 0 && n == count;
        self.ask = (2 * n).clamp(FIRST_ASK, MAX_BATCH);
        Ok(self.held)
    }

    /// Whether the last read took all it asked for, so that more may be queued; false after a
    /// read that failed.
    pub fn filled(&self) -> bool {
        self.filled
    }

    /// Message `i` of the last read: its bytes (at most a slot) and what came with it.
    pub fn message(&self, i: usize) -> Option<(&[u8], Received)> {
        if i >= self.held {
            return None;
        }
        let h = *self.headers.get(i)?;
        let slot = self.data.get(i * self.slot..(i + 1) * self.slot)?;
        let len = h.bytes.min(slot.len());
        // SAFETY: the kernel wrote the first `len` bytes of this slot in the last read.
        let data = unsafe { std::slice::from_raw_parts(slot.as_ptr().cast::<u8>(), len) };
        let control = self
            .control
            .get(i * CONTROL_LEN..(i + 1) * CONTROL_LEN)
            .unwrap_or(&[]);
        Some((data, received(h, self.names.get(i)?, control)))
    }
}

#[cfg(test)]
#[path = "recv_tests.rs"]
mod tests;
