//! The probe layer, behind the small [`Pinger`] trait.
//!
//! A caller hands the engine a [`ProbeSpec`] (where, over which [`Transport`], how big, how long
//! to wait) and a [`EventSink`]; the engine sends one probe and delivers every outcome of that
//! probe to the sink as a [`ProbeEvent`]:
//!
//! - exactly one *terminal* event: [`EventKind::Reply`], [`EventKind::Timeout`] or
//!   [`EventKind::IcmpError`];
//! - then possibly [`EventKind::Late`] (a reply after the deadline, already reported as a timeout)
//!   or [`EventKind::Duplicate`] (a further reply to an answered probe).
//!
//! The engine never waits on a sink: a channel sink gets events with `try_send` (a full one
//! loses the event, counted by the engine; callers size their channels for their probe rate),
//! and an [`EventHandler`] sink is called inline.

pub mod clock;
pub mod fake;
pub mod flow;
pub mod icmp;
pub mod mux;
pub mod packet;
pub mod socket;
pub mod table;
pub mod tcp;
pub mod udp;
pub mod udp_flow;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

pub use icmp::{TimestampPath, TimestampStats};
pub use mux::Engine;

/// Where to send a probe and how.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProbeSpec {
    /// Destination address.
    pub ip: IpAddr,
    /// What the probe is on the wire: the engine that sends it and what settles it.
    pub transport: Transport,
    /// Payload bytes (for ICMP, the echo data after the 8-byte ICMP header).
    pub size: u16,
    /// How long to wait for the reply; a reply after it is [`EventKind::Late`].
    pub timeout: Duration,
    /// Socket-level options; probes with equal options share a socket.
    pub options: SocketOptions,
}

/// What a probe is on the wire. [`Engine`] sends each transport through its own engine; a new
/// transport is a variant here and an engine behind [`Engine`], and every front gets it through
/// the probe kinds of `crate::probe`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Transport {
    /// ICMP echo request (v4 type 8, v6 type 128); settles on the echo reply, an ICMP error
    /// quoting it, or the timeout.
    #[default]
    Icmp,
    /// An ICMP echo request of one Paris flow with its own TTL / hop limit, for path tracing.
    /// Every probe of a flow goes out on the flow's socket (one identifier) with one ICMP
    /// checksum (the payload compensates the sequence and stamp), so routers that balance by a
    /// hash of those fields send the whole flow one way; the TTL is set per packet. Settles like
    /// [`Transport::Icmp`]: echo reply, an ICMP error quoting it (time exceeded from the router
    /// at that TTL, with its address), or the timeout.
    IcmpFlow {
        /// Which flow (any number; distinct flows get distinct sockets, so identifiers, and
        /// checksums). A path tracer numbers its flow identities.
        flow: u16,
        /// TTL / hop limit of this probe; it overrides [`SocketOptions::ttl`].
        ttl: u8,
    },
    /// A UDP datagram of one Paris flow with its own TTL / hop limit, to a closed `port`, for
    /// path tracing ([`udp_flow`], traceroute's UDP mode). Every probe of a flow goes out on
    /// the flow's connected socket (one source port) with one UDP checksum (the payload
    /// compensates the token), so routers that balance by the ports send the whole flow one
    /// way. Settles on the destination's port unreachable (a reply), an ICMP error quoting its
    /// token (time exceeded from the router at that TTL, with its address), or the timeout.
    UdpFlow {
        /// Which flow (distinct flows get distinct sockets, so distinct source ports).
        flow: u16,
        /// TTL / hop limit of this probe; it overrides [`SocketOptions::ttl`].
        ttl: u8,
        /// Destination port (closed at the destination).
        port: u16,
    },
    /// One SYN to `port` ([`tcp`]); settles on the SYN-ACK or a RST (both replies), an ICMP
    /// error, or the timeout.
    Tcp {
        /// Destination port.
        port: u16,
    },
    /// One datagram to `port` ([`udp`]); what settles it depends on `mode`. A TTL in the
    /// probe's [`SocketOptions`] applies (time exceeded comes back as an ICMP error).
    Udp {
        /// Destination port.
        port: u16,
        /// Closed port or echo service.
        mode: UdpMode,
    },
}

/// What a UDP probe expects at its port.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum UdpMode {
    /// A closed port: the ICMP port unreachable is the reply.
    #[default]
    Closed,
    /// A UDP echo service (pingscope's `--udp-echo.listen-address`): the echoed datagram is
    /// the reply.
    Echo,
}

impl UdpMode {
    /// The name in config, requests and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Echo => "echo",
        }
    }
}

impl Transport {
    /// Name for messages and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Icmp | Self::IcmpFlow { .. } => "icmp",
            Self::Tcp { .. } => "tcp",
            Self::Udp { .. } | Self::UdpFlow { .. } => "udp",
        }
    }

    /// The destination port, for transports that have one.
    pub fn port(self) -> Option<u16> {
        match self {
            Self::Icmp | Self::IcmpFlow { .. } => None,
            Self::Tcp { port } | Self::Udp { port, .. } | Self::UdpFlow { port, .. } => Some(port),
        }
    }
}

/// Options that are set on the socket (or per packet) rather than in the ICMP message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SocketOptions {
    /// IPv4 TTL / IPv6 hop limit; `None` leaves the kernel default.
    pub ttl: Option<u8>,
    /// IPv4 TOS byte / IPv6 traffic class.
    pub tos: Option<u8>,
    /// Source address to bind.
    pub source: Option<IpAddr>,
    /// Interface to bind (SO_BINDTODEVICE).
    pub interface: Option<String>,
}

/// One outcome of one probe, as delivered to the caller's sink.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeEvent {
    /// The caller's tag for the probe (its own sequence number), passed to [`Pinger::send`].
    pub tag: u64,
    /// The ICMP sequence number on the wire.
    pub seq: u16,
    /// The probed address.
    pub ip: IpAddr,
    /// Wall-clock time of the event (the receive timestamp for replies).
    pub at: SystemTime,
    /// What happened.
    pub kind: EventKind,
}

/// What happened to a probe.
#[derive(Clone, Debug, PartialEq)]
pub enum EventKind {
    /// An echo reply within the timeout.
    Reply(ReplyInfo),
    /// No reply within the timeout.
    Timeout,
    /// A reply after the timeout (the probe was already reported as [`EventKind::Timeout`]).
    Late(ReplyInfo),
    /// A further reply to a probe that was already answered.
    Duplicate(ReplyInfo),
    /// An ICMP error (unreachable, time exceeded, ...) quoting this probe.
    IcmpError(IcmpErrorInfo),
}

impl EventKind {
    /// True for the one event that settles a probe (reply, timeout or ICMP error).
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Reply(_) | Self::Timeout | Self::IcmpError(_))
    }
}

/// What a reply told us.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplyInfo {
    /// Round-trip time, from the send time to the kernel receive timestamp where available.
    pub rtt: Duration,
    /// TTL / hop limit of the reply, when the socket reports it.
    pub ttl: Option<u8>,
    /// Bytes of the ICMP message received (header and payload); of the datagram for UDP echo;
    /// 0 when no payload came back (TCP, UDP port unreachable).
    pub size: usize,
    /// TCP only: the answer was a RST (the port is closed, the host is up).
    pub refused: bool,
}

/// An ICMP error matched to a probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IcmpErrorInfo {
    /// Coarse class, used as the `type` label of `pingscope_icmp_errors_total`.
    pub kind: IcmpErrorKind,
    /// The ICMP type byte (v4 or v6 numbering, per the probe's family).
    pub icmp_type: u8,
    /// The ICMP code byte.
    pub icmp_code: u8,
    /// The router or host that sent the error.
    pub from: IpAddr,
    /// Time from the send to the error's arrival, measured as replies are (kernel timestamps
    /// where there are); what a path tracer reports for the hop that sent it. `None` where the
    /// engine cannot tell.
    pub rtt: Option<Duration>,
}

/// Coarse classes of ICMP errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IcmpErrorKind {
    /// Destination unreachable (v4 type 3, v6 type 1).
    Unreachable,
    /// Time exceeded (v4 type 11, v6 type 3).
    TimeExceeded,
    /// Packet too big (v6 type 2) or fragmentation needed.
    PacketTooBig,
    /// Parameter problem (v4 type 12, v6 type 4).
    ParameterProblem,
    /// Anything else that quoted our probe.
    Other,
}

impl IcmpErrorKind {
    /// Label value for metrics and the `error` field of samples.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::TimeExceeded => "time_exceeded",
            Self::PacketTooBig => "packet_too_big",
            Self::ParameterProblem => "parameter_problem",
            Self::Other => "other",
        }
    }
}

/// Takes a probe's events inline, on the engine's own task, in the order they happen.
///
/// For callers that only record (the scheduler: counters, histograms, the window), a handler
/// saves a channel and a task wake-up per event. It runs while the engine holds its in-flight
/// table, so it must be quick, must not block, and must never call back into the engine.
pub trait EventHandler: Send + Sync + std::fmt::Debug + 'static {
    /// One event of a probe sent with this handler's sink.
    fn on_event(&self, event: ProbeEvent);
}

/// Where the engine delivers a probe's events.
#[derive(Clone, Debug)]
pub enum EventSink {
    /// A bounded channel: a full channel loses the event (the engine counts it), a closed one
    /// means the caller is gone.
    Channel(mpsc::Sender<ProbeEvent>),
    /// Called inline; see [`EventHandler`].
    Handler(Arc<dyn EventHandler>),
}

/// Why [`EventSink::deliver`] could not hand an event over.
#[derive(Debug)]
pub enum Undelivered {
    /// The channel is full; the event is returned.
    Full(ProbeEvent),
    /// The receiver is gone.
    Closed,
}

impl EventSink {
    /// Hands one event over without waiting.
    pub fn deliver(&self, event: ProbeEvent) -> Result<(), Undelivered> {
        match self {
            Self::Channel(tx) => tx.try_send(event).map_err(|e| match e {
                mpsc::error::TrySendError::Full(ev) => Undelivered::Full(ev),
                mpsc::error::TrySendError::Closed(_) => Undelivered::Closed,
            }),
            Self::Handler(handler) => {
                handler.on_event(event);
                Ok(())
            }
        }
    }
}

/// Delivers `event` to `sink`, counting an event lost to a full sink in `dropped` and one to a
/// closed sink in `closed`: the one way every engine hands events over.
fn deliver_counted(
    sink: &EventSink,
    event: ProbeEvent,
    dropped: &std::sync::atomic::AtomicU64,
    closed: &std::sync::atomic::AtomicU64,
) {
    use std::sync::atomic::Ordering::Relaxed;
    match sink.deliver(event) {
        Ok(()) => {}
        Err(Undelivered::Full(ev)) => {
            dropped.fetch_add(1, Relaxed);
            tracing::debug!(ip = %ev.ip, tag = ev.tag, "event sink full; event dropped");
        }
        Err(Undelivered::Closed) => {
            closed.fetch_add(1, Relaxed);
        }
    }
}

impl From<mpsc::Sender<ProbeEvent>> for EventSink {
    fn from(tx: mpsc::Sender<ProbeEvent>) -> Self {
        Self::Channel(tx)
    }
}

impl<H: EventHandler> From<Arc<H>> for EventSink {
    fn from(handler: Arc<H>) -> Self {
        Self::Handler(handler)
    }
}

/// Why a probe could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The table of probes in flight is full; the probe was not sent.
    #[error("too many probes in flight ({limit}); probe to {ip} not sent")]
    InFlightFull {
        /// The table's capacity.
        limit: usize,
        /// The destination.
        ip: IpAddr,
    },
    /// Opening the socket for this family/options failed.
    #[error("cannot open the probe socket for {ip}: {source}")]
    Socket {
        /// The destination.
        ip: IpAddr,
        /// What the OS said.
        #[source]
        source: SocketError,
    },
    /// The kernel refused the send.
    #[error("send to {ip} failed: {source}")]
    Io {
        /// The destination.
        ip: IpAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// No engine for this transport runs in this process.
    #[error("no {transport} engine is running; probe to {ip} not sent")]
    Unsupported {
        /// The transport asked for.
        transport: &'static str,
        /// The destination.
        ip: IpAddr,
    },
    /// The engine has shut down.
    #[error("engine is shut down")]
    Closed,
}

impl SendError {
    /// Short label for `pingscope_send_errors_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InFlightFull { .. } => "in_flight_full",
            Self::Socket { .. } => "socket",
            Self::Io { source, .. } => match source.raw_os_error() {
                Some(libc::ENETUNREACH) => "network_unreachable",
                Some(libc::EHOSTUNREACH) => "host_unreachable",
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) => "buffer_full",
                Some(libc::EPERM) | Some(libc::EACCES) => "permission",
                Some(libc::EADDRNOTAVAIL) => "address_not_available",
                _ => "io",
            },
            Self::Unsupported { .. } => "unsupported",
            Self::Closed => "closed",
        }
    }
}

/// Why an ICMP socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Neither a datagram ICMP socket nor a raw socket is allowed for this user.
    #[error(
        "no permission to open an ICMP socket (datagram: {dgram}; raw: {raw}); allow unprivileged \
         ping with `sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"` or give the binary \
         CAP_NET_RAW (`setcap cap_net_raw+ep pingscope`)"
    )]
    PermissionDenied {
        /// Error of the datagram attempt.
        dgram: std::io::Error,
        /// Error of the raw attempt.
        raw: std::io::Error,
    },
    /// Any other failure while creating or configuring the socket.
    #[error("{op}: {source}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// Sends probes and reports their outcomes.
///
/// Implementations: [`Engine`], which sends each [`Transport`] through its engine (ICMP:
/// [`icmp::IcmpEngine`]), and [`fake::FakePinger`] for unit tests.
pub trait Pinger: Send + Sync + std::fmt::Debug + 'static {
    /// Sends one probe now. Every event of this probe goes to `sink`, tagged with `tag`.
    ///
    /// Returns the wire sequence number used. Never blocks.
    fn send(&self, spec: &ProbeSpec, tag: u64, sink: &EventSink) -> Result<u16, SendError>;

    /// Number of probes currently awaiting their reply or deadline.
    fn in_flight(&self) -> usize;

    /// What the engine dropped or ignored so far (read at scrape time). None by default.
    fn counters(&self) -> EngineCounters {
        EngineCounters::default()
    }

    /// Clock steps, timestamp fallbacks and timestamp paths, for `/metrics`; `None` for a
    /// pinger without kernel timestamps (the fake).
    fn timestamp_stats(&self) -> Option<TimestampStats> {
        None
    }

    /// Holds the socket of the Paris flow `spec` names ([`Transport::IcmpFlow`] or
    /// [`Transport::UdpFlow`]; the TTL does not matter; other transports: nothing): it stays
    /// open until released as many times as it was held, and closes at the last release. A
    /// path tracer holds the flow identities it probes and releases one when it re-keys that
    /// flow or ends, so the sockets of identities no longer probed close. Nothing by default.
    fn hold_flow(&self, _spec: &ProbeSpec) {}

    /// Releases one hold of [`Pinger::hold_flow`].
    fn release_flow(&self, _spec: &ProbeSpec) {}
}

/// Counters of things the engine dropped or ignored; all monotonic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineCounters {
    /// Events lost because the caller's sink was full.
    pub events_dropped: u64,
    /// Events lost because the caller's sink was closed.
    pub sink_closed: u64,
    /// Replies whose payload stamp did not match the probe holding their sequence (answers to
    /// an older probe whose sequence was reused).
    pub stale_replies: u64,
    /// Packets that were not ours (other identifier, foreign payload, unknown probe).
    pub unmatched_packets: u64,
    /// Packets that failed to parse.
    pub malformed_packets: u64,
    /// `recvmsg` failures other than "would block".
    pub receive_errors: u64,
}
