//! An open ICMP socket of the engine, the keys it is shared by (family, options, Paris
//! flow), and how the engine opens one.

use foldhash::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use parking_lot::Mutex;
use socket2::Socket;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::task::AbortHandle;

use super::{IcmpEngine, TimestampPath, receive_task};
use crate::engine::clock::Fallback;
use crate::engine::socket::{self, OpenSocket, SocketKind, TimestampPaths};
use crate::engine::{ProbeSpec, SocketError, SocketOptions, Transport};

#[derive(Debug)]
pub(super) struct IcmpSocket {
    pub(super) fd: AsyncFd<Socket>,
    /// A raw socket with kernel TX timestamps sends from this twin, which nothing polls (see
    /// the module docs, "Timestamps"); its error queue holds the TX timestamps.
    pub(super) sender: Option<Socket>,
    pub(super) kind: SocketKind,
    pub(super) v6: bool,
    pub(super) ident: u16,
    pub(super) timestamps: TimestampPaths,
    /// Kernel TX timestamps expected; cleared when the kernel turns out not to give them.
    pub(super) tx_kernel: AtomicBool,
    /// Sends so far, the mirror of the kernel's `OPT_ID` counter. The lock is held across
    /// `sendto` so the two count in the same order when several threads send.
    pub(super) send_count: Mutex<u32>,
    /// `OPT_ID` minus our count, re-based when a verified timestamp shows drift (a failed send
    /// that the kernel counted).
    pub(super) tx_drift: AtomicU32,
    /// A TX timestamp was attached at least once.
    pub(super) tx_seen: AtomicBool,
    /// Replies in a row that found no TX timestamp.
    pub(super) tx_misses: AtomicU32,
}

impl IcmpSocket {
    pub(super) fn family(&self) -> &'static str {
        if self.v6 { "ip6" } else { "ip4" }
    }

    pub(super) fn path(&self) -> TimestampPath {
        let tx = if self.tx_kernel.load(Ordering::Relaxed) {
            None
        } else {
            Some(self.timestamps.tx.unwrap_or(Fallback::Unsupported))
        };
        TimestampPath {
            family: self.family(),
            socket: self.kind.as_str(),
            rx: TimestampPaths::label(self.timestamps.rx),
            tx: TimestampPaths::label(tx),
        }
    }

    /// Reads the error queue: datagram sockets get ICMP errors there, and every socket with
    /// kernel TX timestamps gets those.
    pub(super) fn has_errqueue(&self) -> bool {
        self.kind == SocketKind::Dgram || self.timestamps.tx.is_none()
    }

    /// The socket requests go out on.
    pub(super) fn send_socket(&self) -> &Socket {
        self.sender.as_ref().unwrap_or(self.fd.get_ref())
    }

    /// The socket whose error queue holds the TX timestamps (and a datagram socket's errors).
    pub(super) fn errqueue_socket(&self) -> &Socket {
        self.send_socket()
    }
}

/// Family, options, and the Paris flow for [`Transport::IcmpFlow`] sockets (whose TTL is set
/// per packet, so it is not part of their options).
pub(super) type SocketKey = (bool, SocketOptions, Option<u16>);

/// The key of an ICMP probe's socket; `None` for other transports. A flow's probes share one
/// socket whatever their TTL, which goes on each packet.
pub(super) fn socket_key(spec: &ProbeSpec) -> Option<SocketKey> {
    let v6 = spec.ip.is_ipv6();
    match spec.transport {
        Transport::IcmpFlow { flow, .. } => Some((
            v6,
            SocketOptions {
                ttl: None,
                ..spec.options.clone()
            },
            Some(flow),
        )),
        Transport::Icmp => Some((v6, spec.options.clone(), None)),
        Transport::Tcp { .. } | Transport::Udp { .. } | Transport::UdpFlow { .. } => None,
    }
}

/// The key of a [`Transport::IcmpFlow`] probe's socket.
pub(super) fn flow_key(spec: &ProbeSpec) -> Option<SocketKey> {
    socket_key(spec).filter(|k| k.2.is_some())
}

/// The open sockets, and the holds on flow sockets ([`Pinger::hold_flow`](crate::engine::Pinger::hold_flow)).
#[derive(Debug, Default)]
pub(super) struct Sockets {
    pub(super) open: HashMap<SocketKey, Open>,
    /// Holds per flow socket: the last release closes it. A flow socket never held (sent to
    /// without a tracer) stays open, as every other socket does.
    pub(super) holds: HashMap<SocketKey, usize>,
}

/// An open socket and its receive task.
#[derive(Debug)]
pub(super) struct Open {
    pub(super) sock: Arc<IcmpSocket>,
    pub(super) task: AbortHandle,
}

impl IcmpEngine {
    /// The open socket of `key`, opened (with its receive task) if it is not yet.
    pub(super) fn socket_for(&self, key: SocketKey) -> Result<Arc<IcmpSocket>, SocketError> {
        let (v6, opts, flow) = (key.0, &key.1, key.2);
        let mut sockets = self.sockets.lock();
        if let Some(o) = sockets.open.get(&key) {
            return Ok(o.sock.clone());
        }
        let OpenSocket {
            socket,
            kind,
            ident,
            timestamps,
        } = socket::open(v6, self.preference, opts, self.timestamps)?;
        // A datagram socket cannot have a twin: the reply goes to the socket that owns the
        // identifier. Without one, a raw socket keeps sending from its receiving socket.
        let sender = (kind == SocketKind::Raw && timestamps.tx.is_none())
            .then(|| socket::open_raw_sender(v6, opts))
            .and_then(|r| {
                r.inspect_err(|e| {
                    tracing::debug!(error = %e, "no send-only twin; sending from the receiving socket");
                })
                .ok()
            });
        let fd = {
            let _guard = self.runtime.enter();
            // SAFETY: `Socket` owns its descriptor and never replaces or closes it while the
            // `AsyncFd` owns the socket.
            unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE | Interest::ERROR) }
                .map_err(|e| SocketError::Io {
                    op: "register ICMP socket with tokio",
                    source: e.into(),
                })?
        };
        let sock = Arc::new(IcmpSocket {
            fd,
            sender,
            kind,
            v6,
            ident,
            timestamps,
            tx_kernel: AtomicBool::new(timestamps.tx.is_none()),
            send_count: Mutex::new(0),
            tx_drift: AtomicU32::new(0),
            tx_seen: AtomicBool::new(false),
            tx_misses: AtomicU32::new(0),
        });
        tracing::debug!(
            family = sock.family(),
            kind = kind.as_str(),
            ident,
            rx_timestamps = TimestampPaths::label(timestamps.rx),
            tx_timestamps = TimestampPaths::label(timestamps.tx),
            ?opts,
            ?flow,
            send_twin = sock.sender.is_some(),
            "ICMP socket opened"
        );
        let task = self
            .runtime
            .spawn(receive_task(sock.clone(), self.shared.clone()));
        if key.1 == SocketOptions::default() && key.2.is_none() {
            // Set once: the lock is held, and this key was not open.
            let _ = self.plain[usize::from(v6)].set(sock.clone());
        }
        sockets.open.insert(
            key,
            Open {
                sock: sock.clone(),
                task: task.abort_handle(),
            },
        );
        Ok(sock)
    }
}
