//! TCP and UDP probes: one socket and one small task per probe, under the same event contract
//! as ICMP (one terminal event, then late or duplicate ones).
//!
//! A TCP or UDP probe is a flow of its own (its own source port), so the kernel already
//! demultiplexes it: a connected socket per probe sees only its own SYN-ACK, RST, echoed
//! datagram or ICMP error (on the error queue, `IP_RECVERR`/`IPV6_RECVERR`), with no table to
//! match them. What the ICMP engine does with its in-flight table, [`ProbeState`] does for one
//! probe: settle once, then report late and duplicate answers. Nothing runs until the first TCP
//! or UDP probe: an ICMP-only process pays for this engine only its counters.
//!
//! The socket of a probe lives until its deadline plus a window for late answers (TCP: see
//! [`super::tcp`]; UDP: see [`super::udp`]) and is closed then, so the descriptors in use are
//! about the probe rate times that span. The first TCP or UDP probe raises the soft
//! `RLIMIT_NOFILE` to the hard limit for that reason.
//!
//! UDP path probes ([`Transport::UdpFlow`]) are the exception: the probes of one Paris flow
//! share one long-lived socket (its source port is the flow), and a token in each datagram
//! tells them apart ([`super::udp_flow`]).
//!
//! Probes carry no user-space wire sequence: the `seq` of their events is a per-engine counter.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::runtime::Handle;

use super::clock::{self, Clock, ClockPair, Fallback, Measured, RecvTimes, SendTimes, Stamp};
use super::packet;
use super::socket::{self, ExtendedError, SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6};
use super::{
    EngineCounters, EventKind, EventSink, IcmpErrorInfo, Pinger, ProbeEvent, ProbeSpec, ReplyInfo,
    SendError, SocketError, SocketOptions, TimestampStats, Transport,
};

/// Most TCP and UDP probes in flight at once (each holds a socket).
pub const MAX_IN_FLIGHT: usize = 16_384;

#[derive(Debug, Default)]
pub(super) struct Counters {
    events_dropped: AtomicU64,
    sink_closed: AtomicU64,
    pub(super) unmatched_packets: AtomicU64,
    pub(super) malformed_packets: AtomicU64,
    pub(super) receive_errors: AtomicU64,
    pub(super) tcp_refused: AtomicU64,
    rx_fallbacks: [AtomicU64; Fallback::ALL.len()],
    tx_fallbacks: [AtomicU64; Fallback::ALL.len()],
}

pub(super) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What every probe task shares.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) clock: Arc<dyn Clock>,
    pub(super) counters: Counters,
    in_flight: AtomicUsize,
    next_seq: AtomicU64,
    next_id: AtomicU64,
}

impl Shared {
    /// A failed socket read or readiness wait: counted and logged here, so the two never drift.
    pub(super) fn receive_failed(&self, e: &std::io::Error, what: impl std::fmt::Display) {
        bump(&self.counters.receive_errors);
        tracing::debug!(error = %e, "{what}");
    }

    fn deliver(&self, sink: &EventSink, event: ProbeEvent) {
        let c = &self.counters;
        super::deliver_counted(sink, event, &c.events_dropped, &c.sink_closed);
    }

    fn account(&self, m: &Measured) {
        if let Some(why) = m.rx_fallback {
            bump(&self.counters.rx_fallbacks[why.index()]);
        }
        if let Some(why) = m.tx_fallback {
            bump(&self.counters.tx_fallbacks[why.index()]);
        }
    }

    /// A fresh probe id for UDP echo tokens (random start: two processes' tokens differ).
    pub(super) fn probe_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// How a probe was settled so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Settled {
    /// Timed out or got an ICMP error: the next answer is late.
    Lost,
    /// Answered: further answers are duplicates.
    Answered,
}

/// One probe's bookkeeping: its sink, send times, deadline and what it has delivered.
#[derive(Debug)]
pub(super) struct ProbeState {
    shared: Arc<Shared>,
    tag: u64,
    seq: u16,
    ip: IpAddr,
    sink: EventSink,
    pub(super) sent: SendTimes,
    timeout: Duration,
    pub(super) deadline: Instant,
    settled: Option<Settled>,
}

impl Drop for ProbeState {
    fn drop(&mut self) {
        if self.settled.is_none() {
            // A task that ends without settling (runtime shut down) frees its slot.
            self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl ProbeState {
    fn event(&self, at: SystemTime, kind: EventKind) -> ProbeEvent {
        ProbeEvent {
            tag: self.tag,
            seq: self.seq,
            ip: self.ip,
            at,
            kind,
        }
    }

    fn settle(&mut self, how: Settled) {
        if self.settled.is_none() {
            self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        self.settled = Some(how);
    }

    /// Stamps the send now and starts the deadline; `tx` is why the socket gives no kernel TX
    /// timestamp (`None`: one is awaited on the error queue).
    pub(super) fn stamp_send(&mut self, tx: Option<Fallback>) {
        self.sent.user = self.shared.clock.pair();
        self.sent.kernel = match tx {
            None => Stamp::Awaited,
            Some(why) => Stamp::User(why),
        };
        self.deadline = self.sent.user.mono.instant() + self.timeout;
    }

    /// True once the probe has its terminal event.
    pub(super) fn is_settled(&self) -> bool {
        self.settled.is_some()
    }

    /// True once the probe was answered (a further answer is a duplicate).
    pub(super) fn is_answered(&self) -> bool {
        self.settled == Some(Settled::Answered)
    }

    /// The RTT of an answer received now with the kernel's RX timestamp `rx` (if any).
    pub(super) fn measure(&self, rx: Stamp) -> (Duration, SystemTime) {
        let recv = RecvTimes {
            user: self.shared.clock.pair(),
            kernel: rx,
        };
        let m = clock::measure(&self.sent, &recv);
        self.shared.account(&m);
        (m.rtt, recv.wall().time())
    }

    /// An answer: reply, late or duplicate, by what came before. An RTT over the timeout is
    /// late even when the deadline has not been handled yet.
    pub(super) fn answer(&mut self, info: ReplyInfo, at: SystemTime) {
        let kind = match self.settled {
            None if info.rtt > self.timeout => {
                self.timeout_now(at);
                EventKind::Late(info)
            }
            None => EventKind::Reply(info),
            Some(Settled::Lost) => EventKind::Late(info),
            Some(Settled::Answered) => EventKind::Duplicate(info),
        };
        self.settle(Settled::Answered);
        let ev = self.event(at, kind);
        self.shared.deliver(&self.sink, ev);
    }

    /// An ICMP error: terminal when the probe is still open, ignored after.
    pub(super) fn icmp_error(&mut self, info: IcmpErrorInfo, at: SystemTime) {
        if self.settled.is_some() {
            bump(&self.shared.counters.unmatched_packets);
            return;
        }
        self.settle(Settled::Lost);
        let ev = self.event(at, EventKind::IcmpError(info));
        self.shared.deliver(&self.sink, ev);
    }

    /// The deadline passed: a timeout when nothing settled the probe yet.
    pub(super) fn timeout_now(&mut self, at: SystemTime) {
        if self.settled.is_some() {
            return;
        }
        self.settle(Settled::Lost);
        let ev = self.event(at, EventKind::Timeout);
        self.shared.deliver(&self.sink, ev);
    }

    /// Waits until `until`, or returns at once when it has passed.
    pub(super) async fn sleep_until(until: Instant) {
        tokio::time::sleep_until(until.into()).await;
    }

    /// When the probe's task must wake next: its deadline, then the end of its socket's life.
    pub(super) fn wake_at(&self, close_at: Instant) -> Instant {
        if self.is_settled() {
            close_at
        } else {
            self.deadline
        }
    }

    /// The time of [`ProbeState::wake_at`] came: times the probe out at its deadline; true when
    /// the socket's life is over.
    pub(super) fn on_wake(&mut self, close_at: Instant) -> bool {
        if self.is_settled() {
            return true;
        }
        let now = self.now();
        self.timeout_now(now);
        close_at <= self.deadline
    }

    /// Settles a probe whose task ends before its deadline settled it (its socket failed):
    /// the timeout comes at the deadline, as for every probe.
    pub(super) async fn finish(mut self) {
        if !self.is_settled() {
            Self::sleep_until(self.deadline).await;
            let now = self.now();
            self.timeout_now(now);
        }
    }

    /// The wall-clock time now, for timeouts.
    pub(super) fn now(&self) -> SystemTime {
        self.shared.clock.wall().time()
    }
}

/// Runs a probe's task until `close_at`: at each readiness of its socket for `interest`,
/// `on_ready` reads it and says whether the probe is done with the socket; between, the probe
/// times out at its deadline. Then the socket closes (with SO_LINGER 0, a TCP connection is
/// reset at once). `what` names the protocol in the log.
pub(super) async fn drive(
    fd: AsyncFd<Socket>,
    interest: Interest,
    mut state: ProbeState,
    close_at: Instant,
    what: &'static str,
    mut on_ready: impl FnMut(&Socket, &mut ProbeState) -> bool,
) {
    loop {
        let wake = state.wake_at(close_at);
        tokio::select! {
            ready = fd.ready(interest) => {
                match ready {
                    Ok(mut guard) => {
                        if on_ready(fd.get_ref(), &mut state) {
                            break;
                        }
                        guard.clear_ready();
                    }
                    Err(e) => {
                        let why = format_args!("{what} probe socket readiness failed");
                        state.shared.receive_failed(&e, why);
                        break;
                    }
                }
            }
            () = ProbeState::sleep_until(wake) => {
                if state.on_wake(close_at) {
                    break;
                }
            }
        }
    }
    drop(fd);
    state.finish().await;
}

/// An ICMP error from the error queue as the event reports it.
pub(super) fn icmp_error_info(v6: bool, e: &ExtendedError, ip: IpAddr) -> Option<IcmpErrorInfo> {
    if e.origin != SO_EE_ORIGIN_ICMP && e.origin != SO_EE_ORIGIN_ICMP6 {
        return None;
    }
    Some(IcmpErrorInfo {
        kind: packet::classify_error(v6, e.icmp_type, e.icmp_code),
        icmp_type: e.icmp_type,
        icmp_code: e.icmp_code,
        from: e.offender.unwrap_or(ip),
        // The caller settles the probe with its own clock; this engine reports no error RTT.
        rtt: None,
    })
}

/// Opens a non-blocking TCP or UDP socket for one probe, with its options and `IP_RECVERR` set.
pub(super) fn open(
    ip: IpAddr,
    ty: Type,
    proto: Protocol,
    opts: &SocketOptions,
) -> Result<Socket, SocketError> {
    let v6 = ip.is_ipv6();
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    let io = |op: &'static str| move |source| SocketError::Io { op, source };
    let s = Socket::new(domain, ty, Some(proto)).map_err(io("open probe socket"))?;
    s.set_nonblocking(true).map_err(io("set O_NONBLOCK"))?;
    socket::set_ip_options(&s, v6, opts)?;
    socket::set_recverr(&s, v6)?;
    if let Some(src) = opts.source {
        s.bind(&SocketAddr::new(src, 0).into())
            .map_err(io("bind probe socket to source"))?;
    }
    Ok(s)
}

/// Registers a socket with the tokio reactor of `runtime`.
pub(super) fn register(runtime: &Handle, s: Socket) -> Result<AsyncFd<Socket>, SocketError> {
    let _guard = runtime.enter();
    let interest = Interest::READABLE | Interest::WRITABLE | Interest::ERROR;
    // SAFETY: `Socket` owns its descriptor and never replaces or closes it while the `AsyncFd`
    // owns the socket.
    unsafe { AsyncFd::register_with_interest(s, interest) }.map_err(|e| SocketError::Io {
        op: "register probe socket with tokio",
        source: e.into(),
    })
}

/// The TCP and UDP engine. See the module docs.
#[derive(Debug)]
pub struct FlowEngine {
    runtime: Handle,
    shared: Arc<Shared>,
    // A socket that only keeps kernel RX timestamps enabled. The kernel switches them on for
    // the whole machine while any socket asks for them (a static key, flipped through deferred
    // work): without it each UDP probe's short-lived socket would flip it on and off, and
    // answers would come without a timestamp while it is off.
    keeper: std::sync::OnceLock<Option<Socket>>,
    udp_flows: Arc<super::udp_flow::FlowSockets>,
}

impl FlowEngine {
    /// Ready to probe on the current tokio runtime; opens nothing and changes nothing until the
    /// first probe.
    pub fn new(clock: Arc<dyn Clock>) -> Result<Self, SocketError> {
        let runtime = Handle::try_current().map_err(|e| SocketError::Io {
            op: "start TCP/UDP engine (needs a tokio runtime)",
            source: std::io::Error::other(e),
        })?;
        Ok(Self {
            runtime,
            shared: Arc::new(Shared {
                clock,
                counters: Counters::default(),
                in_flight: AtomicUsize::new(0),
                next_seq: AtomicU64::new(0),
                next_id: AtomicU64::new(rand::random::<u64>() >> 1),
            }),
            keeper: std::sync::OnceLock::new(),
            udp_flows: Arc::default(),
        })
    }

    /// TCP probes answered with a RST (`pingscope_tcp_refused_total`).
    pub fn tcp_refused(&self) -> u64 {
        self.shared.counters.tcp_refused.load(Ordering::Relaxed)
    }

    /// Fallbacks of this engine's RTTs, added into the ICMP engine's figures.
    pub fn add_timestamp_stats(&self, stats: &mut TimestampStats) {
        let c = &self.shared.counters;
        for (list, ours) in [
            (&mut stats.rx_fallbacks, &c.rx_fallbacks),
            (&mut stats.tx_fallbacks, &c.tx_fallbacks),
        ] {
            for f in Fallback::ALL {
                let n = ours[f.index()].load(Ordering::Relaxed);
                match list.iter_mut().find(|(g, _)| *g == f) {
                    Some((_, m)) => *m += n,
                    None => list.push((f, n)),
                }
            }
        }
    }

    /// A probe's state, counted in flight, before its socket sends.
    fn state(&self, spec: &ProbeSpec, tag: u64, sink: &EventSink, first: ClockPair) -> ProbeState {
        let seq = self.shared.next_seq.fetch_add(1, Ordering::Relaxed) as u16;
        self.shared.in_flight.fetch_add(1, Ordering::Relaxed);
        ProbeState {
            shared: self.shared.clone(),
            tag,
            seq,
            ip: spec.ip,
            sink: sink.clone(),
            sent: SendTimes {
                user: first,
                kernel: Stamp::User(Fallback::Unsupported),
            },
            timeout: spec.timeout,
            deadline: first.mono.instant() + spec.timeout,
            settled: None,
        }
    }
}

impl Pinger for FlowEngine {
    fn send(&self, spec: &ProbeSpec, tag: u64, sink: &EventSink) -> Result<u16, SendError> {
        let ip = spec.ip;
        if self.shared.in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
            return Err(SendError::InFlightFull {
                limit: MAX_IN_FLIGHT,
                ip,
            });
        }
        static NOFILE: std::sync::Once = std::sync::Once::new();
        NOFILE.call_once(raise_nofile);
        let first = self.shared.clock.pair();
        let state = self.state(spec, tag, sink, first);
        let seq = state.seq;
        match spec.transport {
            Transport::Tcp { port } => {
                super::tcp::start(&self.runtime, spec, port, state, &self.shared)?
            }
            Transport::Udp { port, mode } => {
                self.keeper.get_or_init(timestamp_keeper);
                super::udp::start(&self.runtime, spec, port, mode, state, &self.shared)?
            }
            Transport::UdpFlow { flow, ttl, port } => {
                self.keeper.get_or_init(timestamp_keeper);
                super::udp_flow::start(
                    &self.runtime,
                    spec,
                    (flow, ttl, port),
                    state,
                    &self.shared,
                    &self.udp_flows,
                )?
            }
            Transport::Icmp | Transport::IcmpFlow { .. } => {
                return Err(SendError::Unsupported {
                    transport: spec.transport.as_str(),
                    ip,
                });
            }
        }
        Ok(seq)
    }

    fn hold_flow(&self, spec: &ProbeSpec) {
        if let Some(key) = super::udp_flow::flow_key(spec) {
            self.udp_flows.hold(key);
        }
    }

    fn release_flow(&self, spec: &ProbeSpec) {
        if let Some(key) = super::udp_flow::flow_key(spec) {
            self.udp_flows.release(&key);
        }
    }

    fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    fn counters(&self) -> EngineCounters {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EngineCounters {
            events_dropped: get(&c.events_dropped),
            sink_closed: get(&c.sink_closed),
            stale_replies: 0,
            unmatched_packets: get(&c.unmatched_packets),
            malformed_packets: get(&c.malformed_packets),
            receive_errors: get(&c.receive_errors),
        }
    }
}

fn timestamp_keeper() -> Option<Socket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).ok()?;
    let paths = socket::enable_timestamps(&s, socket::TimestampSource::KernelRx);
    paths.rx.is_none().then_some(s)
}

/// Raises the soft open-files limit to the hard one: every TCP or UDP probe in flight holds a
/// descriptor.
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for the kernel to fill and read.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
