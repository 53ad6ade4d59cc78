//! Kernel timestamps of the requests as they enter the TUN device.
//!
//! A TUN fd carries no timestamps, so the time between the kernel queueing a request and this
//! process reading it (scheduler wake-up latency, worst on a loaded machine) would go unmeasured
//! and be added to every delay a prober sees. An AF_PACKET socket bound to the device sees each
//! outgoing packet (in `dev_queue_xmit`, before the TUN queue) with a kernel `SO_TIMESTAMPNS`
//! stamp; matching it to the packet read from the TUN fd lets answers be scheduled from the
//! kernel's hand-over time instead of the read time.

use std::collections::VecDeque;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::sys::socket::{ControlMessageOwned, LinkAddr, MsgFlags, recvmsg, setsockopt, sockopt};

/// Stamps kept waiting for their TUN read; older ones are dropped first.
const MAX_QUEUED: usize = 4096;
/// Bytes of each packet that identify it (headers, ICMP id/seq and the payload's start,
/// where ping keeps its own send time).
const KEY_BYTES: usize = 128;
/// A stamp further back than this from the read is not trusted.
const MAX_AGE_NS: u64 = 1_000_000_000;

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("looking up the index of {device}: {source}")]
    Index { device: String, source: nix::Error },
    #[error("{op} on the packet socket for {device}: {source}")]
    Socket {
        op: &'static str,
        device: String,
        source: std::io::Error,
    },
}

/// The packet socket and the stamps seen but not yet matched.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    queue: VecDeque<(u64, u64)>,
}

fn key(pkt: &[u8]) -> u64 {
    key_with_len(&pkt[..pkt.len().min(KEY_BYTES)], pkt.len())
}

fn clock_ns(id: nix::time::ClockId) -> i128 {
    nix::time::clock_gettime(id).map_or(0, |ts| {
        i128::from(ts.tv_sec()) * 1_000_000_000 + i128::from(ts.tv_nsec())
    })
}

impl Tap {
    pub fn open(device: &str) -> Result<Self, TapError> {
        let sock_err = |op: &'static str| {
            let device = device.to_string();
            move |source: std::io::Error| TapError::Socket { op, device, source }
        };
        let index = nix::net::if_::if_nametoindex(device).map_err(|source| TapError::Index {
            device: device.to_string(),
            source,
        })?;
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        if raw < 0 {
            return Err(sock_err("socket")(std::io::Error::last_os_error()));
        }
        // SAFETY: raw is a fresh, valid fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = index as i32;
        // SAFETY: addr is a valid sockaddr_ll and the length passed is its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(sock_err("bind")(std::io::Error::last_os_error()));
        }
        setsockopt(&fd, sockopt::ReceiveTimestampns, &true)
            .map_err(|e| sock_err("SO_TIMESTAMPNS")(e.into()))?;
        // Room for bursts between two reads; failure only means the default buffer.
        let _ = setsockopt(&fd, sockopt::RcvBuf, &(1 << 20));
        Ok(Self {
            fd,
            queue: VecDeque::new(),
        })
    }

    /// Read every pending packet, keeping the stamps of the outgoing ones (kernel → device),
    /// converted from CLOCK_REALTIME to CLOCK_MONOTONIC nanoseconds.
    pub fn drain(&mut self) {
        let offset = clock_ns(nix::time::ClockId::CLOCK_MONOTONIC)
            - clock_ns(nix::time::ClockId::CLOCK_REALTIME);
        let mut buf = [0u8; KEY_BYTES];
        let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
        // Bounded: the socket cannot hold more than a few thousand packets anyway.
        for _ in 0..MAX_QUEUED {
            let mut iov = [IoSliceMut::new(&mut buf)];
            // MSG_TRUNC: report the real length, so the key matches the whole packet's length.
            let msg = match recvmsg::<LinkAddr>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC,
            ) {
                Ok(m) => m,
                Err(_) => return,
            };
            if msg.address.map(|a| a.pkttype()) != Some(libc::PACKET_OUTGOING) {
                continue;
            }
            let len = msg.bytes;
            let Ok(cmsgs) = msg.cmsgs() else { continue };
            let stamp = cmsgs.into_iter().find_map(|c| match c {
                ControlMessageOwned::ScmTimestampns(ts) => Some(ts),
                _ => None,
            });
            let Some(ts) = stamp else { continue };
            let real = i128::from(ts.tv_sec()) * 1_000_000_000 + i128::from(ts.tv_nsec());
            let Ok(mono) = u64::try_from(real + offset) else {
                continue;
            };
            let shown = len.min(KEY_BYTES);
            let k = key_with_len(&buf[..shown], len);
            if self.queue.len() >= MAX_QUEUED {
                self.queue.pop_front();
            }
            self.queue.push_back((k, mono));
        }
    }

    /// The kernel time (monotonic ns) at which `pkt`, read at `read_ns`, entered the device.
    pub fn take(&mut self, pkt: &[u8], read_ns: u64) -> Option<u64> {
        let k = key(pkt);
        let i = self.queue.iter().position(|(qk, _)| *qk == k)?;
        let (_, stamp) = self.queue.remove(i)?;
        // Older stamps than a matched one belong to packets already read (or never delivered).
        self.queue.drain(..i);
        (stamp <= read_ns && read_ns - stamp <= MAX_AGE_NS).then_some(stamp)
    }
}

/// FNV-1a over the identifying prefix and the full length.
fn key_with_len(prefix: &[u8], len: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in prefix.iter().chain(&(len as u32).to_be_bytes()) {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_of_a_truncated_view_matches_the_whole_packet() {
        let pkt: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        assert_eq!(key(&pkt), key_with_len(&pkt[..KEY_BYTES], pkt.len()));
        assert_ne!(key(&pkt), key(&pkt[..299]));
    }
}
