//! The real ICMP engine: sockets shared per address family and option set, one receive task
//! per socket, one timer task for every deadline, and the in-flight table in between.
//!
//! # Data flow
//!
//! [`Pinger::send`] opens (once) the socket for the probe's family and [`SocketOptions`],
//! allocates the wire sequence in the [`InFlightTable`], stamps the payload, reads a
//! wall/monotonic [`ClockPair`] and calls `sendto`. Each socket's receive task (tokio `AsyncFd`,
//! `recvmsg` with control messages) reads the error queue first (TX timestamps, ICMP errors),
//! then replies, keyed by (destination, identifier, sequence), and asks the table what they
//! are. One timer task sleeps until the earliest deadline. Events leave through
//! [`EventSink::deliver`]; a full channel loses the event and [`IcmpEngine::counters`] counts it.
//!
//! Datagram ("ping") sockets come first, raw sockets second. On datagram sockets the kernel
//! sets the identifier (the socket's port) and delivers ICMP errors on the error queue
//! (`IP_RECVERR`/`IPV6_RECVERR`); raw sockets get a random identifier per socket, see every
//! ICMP packet of their family (so the identifier and the payload magic filter), and read
//! errors as packets.
//!
//! # Timestamps
//!
//! RTT is the kernel's software RX timestamp minus its software TX timestamp (`SO_TIMESTAMPING`,
//! see [`socket`]), both taken in the kernel as the packet passes the device, so neither the
//! process's scheduling nor the `sendto` path is in it. The TX timestamp comes back on the error
//! queue with the request it stamps and the socket's `OPT_ID` count; it is attached to a probe
//! only when both agree with the table: the quoted request's destination, identifier, sequence
//! and payload stamp name a probe in flight, and `OPT_ID` (mirrored per socket, counted under a
//! lock held across `sendto` so threads cannot reorder the two counts) is the count recorded for
//! it. A disagreement leaves that probe on its user-space send time (`mismatch`) and re-bases the
//! mirror (a failed send the kernel counted). A reply whose TX timestamp has not been read yet
//! reads the error queue first; one still without it falls back (`missing`); a socket that never
//! gives one stops waiting after 64 replies. Every RTT also passes [`super::clock::measure`]: within
//! (0, monotonic bound], and across a wall-clock step mapped through the monotonic clock
//! (`pingscope_clock_steps_total`). Every side that is not a kernel timestamp is counted by reason
//! ([`IcmpEngine::timestamp_stats`], `pingscope_timestamp_fallbacks_total{side,reason}`); which
//! path each socket kind uses is logged at debug when it opens and exported as
//! `pingscope_timestamp_info{family,socket,rx,tx}`.
//!
//! The first reply after the machine's first timestamping socket opens can come without an RX
//! timestamp (the kernel enables them through deferred work); it is counted `missing`.
//!
//! Measured in a release build against the test network's truth (the responder's log: the time
//! it held each request, from the kernel's arrival timestamp at its device to its write), 300
//! probes to a 1 ms host, idle, and loaded with 10,000 background targets through the same
//! engine and SCHED_FIFO hogs on both cores (`measure_timestamp_paths` in `tests/timestamps.rs`;
//! raw figures in `bench/results/timestamps-2026-12-02.jsonl`, the command in README
//! "Timestamps"):
//!
//! | timestamps (error vs truth, µs) | idle p50 | idle p99 | idle max | loaded p50 | loaded p99 | loaded max |
//! |---|---|---|---|---|---|---|
//! | kernel RX + kernel TX | 1.5 | 4.2 | 18.5 | 0.5 | 1.7 | 19.4 |
//! | kernel RX + user TX | 13.2 | 22.1 | 60.3 | 4.8 | 26.3 | 50.0 |
//! | user RX + user TX | 58.9 | 392.2 | 518.1 | 4,002.3 | 4,516.4 | 9,166.7 |
//!
//! Kernel RX + TX takes out the `sendto` path (about 10 µs here) that user TX leaves in, and
//! the load (milliseconds for user-space timestamps) does not reach it. "Idle" is the engine
//! without background or hogs on a machine shared with other builds (load average 5 to 12).
//!
//! # Why our own socket layer, not surge-ping
//!
//! surge-ping gives no kernel timestamps (its RTT is taken when the task wakes: the user-space
//! rows above) and has a sequence collision in unprivileged mode (its issue #73).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use parking_lot::Mutex;
use socket2::Socket;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::clock::{
    Clock, ClockPair, Fallback, Measured, RecvTimes, Stamp, StepCounter, SystemClock,
};
use super::packet::{self, Icmp, PayloadStamp};
use super::socket::{
    self, OpenSocket, Received, SCM_TSTAMP_SND, SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6,
    SO_EE_ORIGIN_TIMESTAMPING, TimestampPaths,
};
pub use super::socket::{SocketKind, SocketPreference, TimestampSource};
use super::table::{Delivery, InFlightTable, Key, ReplyOutcome, TxMatch};
use super::{
    EngineCounters, EventSink, IcmpErrorInfo, Pinger, ProbeSpec, SendError, SocketError,
    SocketOptions, Undelivered,
};

/// How the engine is set up.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Datagram or raw sockets.
    pub socket: SocketPreference,
    /// Most probes in flight at once; more sends fail with [`SendError::InFlightFull`].
    pub max_in_flight: usize,
    /// Settled probes remembered to tell late and duplicate replies from unknown ones.
    pub recent_capacity: usize,
    /// Timestamp source.
    pub timestamps: TimestampSource,
    /// Where the engine reads the time (tests inject a steppable one).
    pub clock: Arc<dyn Clock>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            socket: SocketPreference::Auto,
            max_in_flight: 65_536,
            // Half of the 57,344 entries a hash table of 65,536 buckets holds: under steady
            // churn a table more than half full doubles to shed its tombstones (about 6 MiB
            // more at this size), one at most half full rehashes in place. 28,672 settled
            // probes are 2.9 s of them at 10,000 probes/s and 29 s at 1,000.
            recent_capacity: 28_672,
            timestamps: TimestampSource::Kernel,
            clock: Arc::new(SystemClock),
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    events_dropped: AtomicU64,
    sink_closed: AtomicU64,
    stale_replies: AtomicU64,
    unmatched_packets: AtomicU64,
    malformed_packets: AtomicU64,
    receive_errors: AtomicU64,
    clock_steps: AtomicU64,
    rx_fallbacks: [AtomicU64; Fallback::ALL.len()],
    tx_fallbacks: [AtomicU64; Fallback::ALL.len()],
}

/// Where a socket's timestamps come from, for `pingscope_timestamp_info`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimestampPath {
    /// `ip4` or `ip6`.
    pub family: &'static str,
    /// `dgram` or `raw`.
    pub socket: &'static str,
    /// `kernel` or `user`.
    pub rx: &'static str,
    /// `kernel` or `user`.
    pub tx: &'static str,
}

/// The engine's timestamp counters and paths, read at scrape time
/// ([`IcmpEngine::timestamp_stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimestampStats {
    /// Clock steps seen (`pingscope_clock_steps_total`), each counted once.
    pub clock_steps: u64,
    /// RTTs whose receive side did not come from a kernel timestamp, by reason
    /// (`pingscope_timestamp_fallbacks_total{side="rx"}`), in [`Fallback::ALL`] order.
    pub rx_fallbacks: Vec<(Fallback, u64)>,
    /// The same for the send side (`side="tx"`).
    pub tx_fallbacks: Vec<(Fallback, u64)>,
    /// The path of every open socket kind, without repeats (`pingscope_timestamp_info`).
    pub paths: Vec<TimestampPath>,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

#[derive(Debug)]
struct Shared {
    // One lock for the table: every operation on it is a few map updates, never I/O, so
    // contention between senders, receive tasks and the timer stays short. Events are handed
    // to sinks (never waiting) while it is held, which keeps each probe's events
    // in order: terminal first, then late or duplicate.
    table: Mutex<InFlightTable>,
    timer: Notify,
    counters: Counters,
    clock: Arc<dyn Clock>,
    steps: StepCounter,
}

impl Shared {
    fn deliver(&self, deliveries: impl IntoIterator<Item = Delivery>) {
        for (sink, event) in deliveries {
            match sink.deliver(event) {
                Ok(()) => {}
                Err(Undelivered::Full(ev)) => {
                    bump(&self.counters.events_dropped);
                    tracing::debug!(ip = %ev.ip, tag = ev.tag, "event sink full; event dropped");
                }
                Err(Undelivered::Closed) => bump(&self.counters.sink_closed),
            }
        }
    }

    /// Counts what one RTT measurement fell back on, and a clock step it saw.
    fn account(&self, m: &Measured) {
        if let Some(why) = m.rx_fallback {
            bump(&self.counters.rx_fallbacks[why.index()]);
        }
        if let Some(why) = m.tx_fallback {
            bump(&self.counters.tx_fallbacks[why.index()]);
        }
        if self.steps.observe(m) {
            bump(&self.counters.clock_steps);
            tracing::warn!(
                bound_us = m.bound.as_micros() as u64,
                "wall clock stepped during a probe; its RTT comes from the monotonic clock"
            );
        }
    }
}

/// After this many replies in a row found no TX timestamp on a socket that never gave one, the
/// socket is taken for one that does not give them (and stops waiting for them).
const TX_GIVE_UP: u32 = 64;

#[derive(Debug)]
struct IcmpSocket {
    fd: AsyncFd<Socket>,
    kind: SocketKind,
    v6: bool,
    ident: u16,
    timestamps: TimestampPaths,
    /// Kernel TX timestamps expected; cleared when the kernel turns out not to give them.
    tx_kernel: AtomicBool,
    /// Sends so far, the mirror of the kernel's `OPT_ID` counter. The lock is held across
    /// `sendto` so the two count in the same order when several threads send.
    send_count: Mutex<u32>,
    /// `OPT_ID` minus our count, re-based when a verified timestamp shows drift (a failed send
    /// that the kernel counted).
    tx_drift: AtomicU32,
    /// A TX timestamp was attached at least once.
    tx_seen: AtomicBool,
    /// Replies in a row that found no TX timestamp.
    tx_misses: AtomicU32,
}

impl IcmpSocket {
    fn family(&self) -> &'static str {
        if self.v6 { "ip6" } else { "ip4" }
    }

    fn path(&self) -> TimestampPath {
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
    fn has_errqueue(&self) -> bool {
        self.kind == SocketKind::Dgram || self.timestamps.tx.is_none()
    }
}

type SocketKey = (bool, SocketOptions);

/// The real [`Pinger`]. See the module docs.
#[derive(Debug)]
pub struct IcmpEngine {
    shared: Arc<Shared>,
    runtime: Handle,
    preference: SocketPreference,
    timestamps: TimestampSource,
    // Held only to look up or insert a socket; opening happens under it so two first probes
    // with the same options do not open two sockets.
    sockets: Mutex<HashMap<SocketKey, Arc<IcmpSocket>>>,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Drop for IcmpEngine {
    fn drop(&mut self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }
}

impl IcmpEngine {
    /// Starts the engine on the current tokio runtime and opens the IPv4 socket (default
    /// options) at once, so a missing permission is reported before any probe. IPv6 and other
    /// option sets open on first use.
    pub fn new(config: EngineConfig) -> Result<Arc<Self>, SocketError> {
        let runtime = Handle::try_current().map_err(|e| SocketError::Io {
            op: "start ICMP engine (needs a tokio runtime)",
            source: std::io::Error::other(e),
        })?;
        let shared = Arc::new(Shared {
            table: Mutex::new(InFlightTable::new(
                config.max_in_flight,
                config.recent_capacity,
            )),
            timer: Notify::new(),
            counters: Counters::default(),
            clock: config.clock,
            steps: StepCounter::default(),
        });
        let engine = Arc::new(Self {
            shared: shared.clone(),
            runtime: runtime.clone(),
            preference: config.socket,
            timestamps: config.timestamps,
            sockets: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
        });
        let timer = runtime.spawn(timer_task(shared));
        engine.tasks.lock().push(timer.abort_handle());
        engine.socket_for(false, &SocketOptions::default())?;
        Ok(engine)
    }

    /// The kind of the default-options socket of a family, if it is open.
    pub fn socket_kind(&self, v6: bool) -> Option<SocketKind> {
        self.sockets
            .lock()
            .get(&(v6, SocketOptions::default()))
            .map(|s| s.kind)
    }

    /// Every open socket: (is IPv6, options, kind, ICMP identifier). For logs.
    pub fn sockets(&self) -> Vec<(bool, SocketOptions, SocketKind, u16)> {
        self.sockets
            .lock()
            .iter()
            .map(|((v6, o), s)| (*v6, o.clone(), s.kind, s.ident))
            .collect()
    }

    /// What the engine dropped or ignored so far.
    pub fn counters(&self) -> EngineCounters {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EngineCounters {
            events_dropped: get(&c.events_dropped),
            sink_closed: get(&c.sink_closed),
            stale_replies: get(&c.stale_replies),
            unmatched_packets: get(&c.unmatched_packets),
            malformed_packets: get(&c.malformed_packets),
            receive_errors: get(&c.receive_errors),
        }
    }

    /// Clock steps, timestamp fallbacks and each socket kind's timestamp path: what
    /// `pingscope_clock_steps_total`, `pingscope_timestamp_fallbacks_total` and
    /// `pingscope_timestamp_info` show.
    pub fn timestamp_stats(&self) -> TimestampStats {
        let c = &self.shared.counters;
        let read = |a: &[AtomicU64; Fallback::ALL.len()]| {
            Fallback::ALL
                .iter()
                .map(|f| (*f, a[f.index()].load(Ordering::Relaxed)))
                .collect()
        };
        let mut paths: Vec<TimestampPath> =
            self.sockets.lock().values().map(|s| s.path()).collect();
        paths.sort();
        paths.dedup();
        TimestampStats {
            clock_steps: c.clock_steps.load(Ordering::Relaxed),
            rx_fallbacks: read(&c.rx_fallbacks),
            tx_fallbacks: read(&c.tx_fallbacks),
            paths,
        }
    }

    fn socket_for(&self, v6: bool, opts: &SocketOptions) -> Result<Arc<IcmpSocket>, SocketError> {
        let mut sockets = self.sockets.lock();
        if let Some(s) = sockets.get(&(v6, opts.clone())) {
            return Ok(s.clone());
        }
        let OpenSocket {
            socket,
            kind,
            ident,
            timestamps,
        } = socket::open(v6, self.preference, opts, self.timestamps)?;
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
            "ICMP socket opened"
        );
        let task = self
            .runtime
            .spawn(receive_task(sock.clone(), self.shared.clone()));
        self.tasks.lock().push(task.abort_handle());
        sockets.insert((v6, opts.clone()), sock.clone());
        Ok(sock)
    }
}

impl Pinger for IcmpEngine {
    fn send(&self, spec: &ProbeSpec, tag: u64, sink: &EventSink) -> Result<u16, SendError> {
        let ip = spec.ip;
        let sock = self
            .socket_for(ip.is_ipv6(), &spec.options)
            .map_err(|source| SendError::Socket { ip, source })?;
        let clock = &*self.shared.clock;
        let first = clock.pair();
        let stamp = socket::unix_nanos(first.wall);
        let deadline = first.mono + spec.timeout;
        let seq = {
            let mut table = self.shared.table.lock();
            let earliest = table.next_deadline();
            let seq = table
                .insert(ip, sock.ident, tag, sink.clone(), first, stamp, deadline)
                .map_err(|_| SendError::InFlightFull {
                    limit: table.capacity(),
                    ip,
                })?;
            if earliest.is_none_or(|e| deadline < e) {
                self.shared.timer.notify_one();
            }
            seq
        };
        let pkt =
            packet::build_echo_request(sock.v6, sock.ident, seq, usize::from(spec.size), stamp);
        let key = Key {
            ip,
            ident: sock.ident,
            seq,
        };
        let tx_kernel = sock.tx_kernel.load(Ordering::Relaxed);
        let kernel = if tx_kernel {
            Stamp::Awaited
        } else {
            Stamp::User(sock.timestamps.tx.unwrap_or(Fallback::Unsupported))
        };
        // Only sockets with kernel TX timestamps keep the send count in step with the kernel's.
        let mut count = tx_kernel.then(|| sock.send_count.lock());
        let id = count.as_deref().copied().unwrap_or(0);
        // RTT starts here, after the table and packet work: the reply (and the TX timestamp)
        // cannot arrive before the send below, so this update always lands first.
        let mark = |table: &Mutex<InFlightTable>| {
            table.lock().set_sent(&key, clock.pair(), kernel, id);
        };
        mark(&self.shared.table);
        let mut sent = socket::send_to(sock.fd.get_ref(), ip, &pkt);
        if let Err(e) = &sent
            && sock.kind == SocketKind::Dgram
            && socket::is_pending_icmp_error(e)
        {
            // With IP_RECVERR, an ICMP error for an *earlier* probe also sets the socket's
            // pending error, which the next send reports (and clears) instead of sending. The
            // error itself waits on the error queue; send once more. A real local failure
            // (no route) fails again the same way. (If the kernel counted the failed send for
            // OPT_ID, the TX timestamp check sees the drift and re-bases.)
            mark(&self.shared.table);
            sent = socket::send_to(sock.fd.get_ref(), ip, &pkt);
        }
        if let Err(source) = sent {
            drop(count);
            self.shared.table.lock().remove(&key);
            return Err(SendError::Io { ip, source });
        }
        if let Some(c) = count.as_deref_mut() {
            *c = c.wrapping_add(1);
        }
        Ok(seq)
    }

    fn in_flight(&self) -> usize {
        self.shared.table.lock().len()
    }

    fn counters(&self) -> EngineCounters {
        IcmpEngine::counters(self)
    }

    fn timestamp_stats(&self) -> Option<TimestampStats> {
        Some(IcmpEngine::timestamp_stats(self))
    }
}

/// Times out probes as their deadlines pass: one task and one sleep for every probe.
async fn timer_task(shared: Arc<Shared>) {
    loop {
        let next = shared.table.lock().next_deadline();
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {}
                    () = shared.timer.notified() => {}
                }
            }
            None => shared.timer.notified().await,
        }
        // Delivered under the lock, like every event, so a late reply read meanwhile by a
        // receive task cannot overtake its probe's timeout in the sink.
        let now = shared.clock.pair();
        let mut table = shared.table.lock();
        let expired = table.expire(now.mono, now.wall);
        shared.deliver(expired);
    }
}

/// Packets read per wake-up before yielding to other tasks.
const BATCH: usize = 1024;
/// Largest ICMP message we read in full (IP header + 64 KiB payload fits).
const RECV_BUF: usize = 65_536 + 60;

/// The receive task's buffers: one for the packet being handled and one for the error queue,
/// which a reply may need read while its own bytes are still in use.
struct Buffers {
    data: Vec<u8>,
    cmsg: Vec<u8>,
    err: Vec<u8>,
    err_cmsg: Vec<u8>,
}

/// Reads every packet of one socket and settles the probes they answer.
async fn receive_task(sock: Arc<IcmpSocket>, shared: Arc<Shared>) {
    let mut b = Buffers {
        data: vec![0u8; RECV_BUF],
        cmsg: socket::cmsg_buffer(),
        err: vec![0u8; RECV_BUF],
        err_cmsg: socket::cmsg_buffer(),
    };
    loop {
        let mut guard = match sock.fd.ready(Interest::READABLE | Interest::ERROR).await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "ICMP socket readiness failed; receive task ends");
                return;
            }
        };
        // The error queue first: a TX timestamp is queued before the reply to its request.
        let errq_done = !sock.has_errqueue() || drain_errqueue(&sock, &shared, &mut b);
        let normal_done = drain(&sock, &shared, &mut b);
        if normal_done && errq_done {
            guard.clear_ready();
        } else {
            // Keep the readiness and let other tasks run before the next batch.
            drop(guard);
            tokio::task::yield_now().await;
        }
    }
}

/// Counts a `recvmsg` failure unless it only reports a pending ICMP error; true when the
/// queue should be left for now.
fn recv_failed(sock: &IcmpSocket, shared: &Shared, e: &std::io::Error, errqueue: bool) {
    // Datagram sockets with IP_RECVERR also report a pending ICMP error as the return of a
    // plain recvmsg; the error queue read that follows carries it.
    if !(sock.kind == SocketKind::Dgram && socket::is_pending_icmp_error(e)) {
        bump(&shared.counters.receive_errors);
    }
    tracing::trace!(error = %e, errqueue, "recvmsg failed");
}

/// Reads up to [`BATCH`] messages of the normal queue; true when it is empty.
fn drain(sock: &IcmpSocket, shared: &Shared, b: &mut Buffers) -> bool {
    for _ in 0..BATCH {
        match socket::recv(sock.fd.get_ref(), &mut b.data, &mut b.cmsg, false) {
            Ok(rx) => {
                let at = shared.clock.pair();
                let len = rx.len.min(b.data.len());
                let data = b.data.get(..len).unwrap_or(&[]);
                handle_packet(
                    sock,
                    shared,
                    data,
                    &rx,
                    at,
                    ErrBufs(&mut b.err, &mut b.err_cmsg),
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                recv_failed(sock, shared, &e, false);
                return true;
            }
        }
    }
    false
}

/// The error-queue buffers, lent to a reply that needs its TX timestamp read first.
struct ErrBufs<'a>(&'a mut Vec<u8>, &'a mut Vec<u8>);

/// Reads up to [`BATCH`] messages of the error queue; true when it is empty.
fn drain_errqueue(sock: &IcmpSocket, shared: &Shared, b: &mut Buffers) -> bool {
    drain_err(sock, shared, ErrBufs(&mut b.err, &mut b.err_cmsg))
}

fn drain_err(sock: &IcmpSocket, shared: &Shared, bufs: ErrBufs<'_>) -> bool {
    let ErrBufs(buf, cmsg) = bufs;
    for _ in 0..BATCH {
        match socket::recv(sock.fd.get_ref(), buf, cmsg, true) {
            Ok(rx) => {
                let len = rx.len.min(buf.len());
                let data = buf.get(..len).unwrap_or(&[]);
                handle_errqueue(sock, shared, data, &rx);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => recv_failed(sock, shared, &e, true),
        }
    }
    false
}

/// The receive side of a reply: the pair read after `recvmsg`, and the kernel's timestamp or
/// why there is none.
fn recv_times(sock: &IcmpSocket, rx: &Received, at: ClockPair) -> RecvTimes {
    let kernel = match (sock.timestamps.rx, rx.kernel_time) {
        (None, Some(t)) => Stamp::Kernel(t),
        (None, None) if rx.cmsg_error => Stamp::User(Fallback::ControlMessage),
        (None, None) => Stamp::User(Fallback::Missing),
        (Some(why), _) => Stamp::User(why),
    };
    RecvTimes { user: at, kernel }
}

fn handle_packet(
    sock: &IcmpSocket,
    shared: &Shared,
    data: &[u8],
    rx: &Received,
    at: ClockPair,
    err: ErrBufs<'_>,
) {
    let times = recv_times(sock, rx, at);
    let parsed = match (sock.v6, sock.kind) {
        (false, SocketKind::Raw) => packet::parse_ipv4_packet(data)
            .map(|(ip, m)| (Some(ip.ttl), Some(IpAddr::V4(ip.src)), m)),
        (false, SocketKind::Dgram) => packet::parse_icmpv4(data).map(|m| (rx.ttl, rx.from, m)),
        (true, _) => packet::parse_icmpv6(data).map(|m| (rx.ttl, rx.from, m)),
    };
    let (ttl, from, msg) = match parsed {
        Ok(p) => p,
        Err(e) => {
            bump(&shared.counters.malformed_packets);
            tracing::trace!(error = %e, "malformed ICMP packet ignored");
            return;
        }
    };
    let Some(from) = from else { return };
    match msg {
        Icmp::EchoReply(echo) => {
            let stamp = packet::read_stamp(echo.payload);
            if echo.ident != sock.ident || stamp == PayloadStamp::Foreign {
                bump(&shared.counters.unmatched_packets);
                return;
            }
            let key = Key {
                ip: from,
                ident: echo.ident,
                seq: echo.seq,
            };
            let size = packet::ECHO_HEADER_LEN + echo.payload.len();
            let wait_tx = sock.tx_kernel.load(Ordering::Relaxed);
            let mut outcome = shared
                .table
                .lock()
                .reply(key, stamp, &times, ttl, size, wait_tx);
            if let (ReplyOutcome::AwaitTx, _) = outcome {
                // Its TX timestamp was queued after the error queue was last read: read it now.
                drain_err(sock, shared, err);
                outcome = shared
                    .table
                    .lock()
                    .reply(key, stamp, &times, ttl, size, false);
            }
            let (outcome, measured) = outcome;
            if let Some(m) = &measured {
                shared.account(m);
                if wait_tx {
                    note_tx(sock, m);
                }
            }
            match outcome {
                ReplyOutcome::Deliver(d) => shared.deliver([d]),
                ReplyOutcome::TimeoutThenLate(t, l) => shared.deliver([t, l]),
                ReplyOutcome::Stale => bump(&shared.counters.stale_replies),
                ReplyOutcome::Unknown | ReplyOutcome::AwaitTx => {
                    bump(&shared.counters.unmatched_packets)
                }
            }
        }
        Icmp::Error(q) => {
            if q.ident != sock.ident {
                return;
            }
            let info = IcmpErrorInfo {
                kind: packet::classify_error(sock.v6, q.icmp_type, q.icmp_code),
                icmp_type: q.icmp_type,
                icmp_code: q.icmp_code,
                from,
            };
            let key = Key {
                ip: q.orig_dst,
                ident: q.ident,
                seq: q.seq,
            };
            let mut table = shared.table.lock();
            let d = table.error(key, info, times.wall());
            shared.deliver(d);
        }
        // Our own requests looped back on raw sockets, neighbour discovery, and the like.
        Icmp::EchoRequest(_) | Icmp::Other { .. } => {}
    }
}

/// Tracks whether a socket that should give TX timestamps does: after [`TX_GIVE_UP`] replies
/// in a row without one, on a socket that never gave one, it stops waiting for them.
fn note_tx(sock: &IcmpSocket, m: &Measured) {
    if m.tx_fallback != Some(Fallback::Missing) {
        sock.tx_misses.store(0, Ordering::Relaxed);
        return;
    }
    let misses = sock.tx_misses.fetch_add(1, Ordering::Relaxed) + 1;
    if misses >= TX_GIVE_UP && !sock.tx_seen.load(Ordering::Relaxed) {
        sock.tx_kernel.store(false, Ordering::Relaxed);
        tracing::debug!(
            family = sock.family(),
            kind = sock.kind.as_str(),
            misses,
            "no kernel TX timestamps on this socket; send times from user space from now on"
        );
    }
}

fn handle_errqueue(sock: &IcmpSocket, shared: &Shared, data: &[u8], rx: &Received) {
    let Some(ext) = rx.ext_err else {
        if rx.cmsg_error {
            bump(&shared.counters.malformed_packets);
            tracing::debug!("error-queue entry with unreadable control messages");
        }
        return;
    };
    if ext.origin == SO_EE_ORIGIN_TIMESTAMPING {
        handle_tx_timestamp(sock, shared, data, rx, ext.info, ext.data);
        return;
    }
    if ext.origin != SO_EE_ORIGIN_ICMP && ext.origin != SO_EE_ORIGIN_ICMP6 {
        // Local errors (e.g. EMSGSIZE) were already returned by the send.
        return;
    }
    let Some(dst) = rx.from else { return };
    let (ident, seq) = match packet::parse_quoted_echo(data, sock.v6) {
        Ok(x) => x,
        Err(e) => {
            bump(&shared.counters.malformed_packets);
            tracing::trace!(error = %e, "unparseable error-queue entry");
            return;
        }
    };
    let info = IcmpErrorInfo {
        kind: packet::classify_error(sock.v6, ext.icmp_type, ext.icmp_code),
        icmp_type: ext.icmp_type,
        icmp_code: ext.icmp_code,
        from: ext.offender.unwrap_or(dst),
    };
    // The kernel matched the socket by identifier already; the quoted identifier is ours.
    let key = Key {
        ip: dst,
        ident,
        seq,
    };
    let at = rx.kernel_time.unwrap_or_else(|| shared.clock.wall());
    let mut table = shared.table.lock();
    let d = table.error(key, info, at);
    shared.deliver(d);
}

/// A kernel TX timestamp: attached to the probe whose request it carries, if the request's
/// destination, identifier, sequence and payload stamp name a probe in flight and its `OPT_ID`
/// is the one expected; anything less leaves the probe on its user-space send time.
fn handle_tx_timestamp(
    sock: &IcmpSocket,
    shared: &Shared,
    data: &[u8],
    rx: &Received,
    info: u32,
    opt_id: u32,
) {
    if info != SCM_TSTAMP_SND {
        return;
    }
    let (Some(at), Some((dst, echo))) = (rx.kernel_time, packet::parse_sent_request(data, sock.v6))
    else {
        // The probe it belonged to falls back (`missing`) when its reply comes.
        bump(&shared.counters.malformed_packets);
        tracing::debug!(
            cmsg_error = rx.cmsg_error,
            len = data.len(),
            "TX timestamp without a time or a readable request"
        );
        return;
    };
    if echo.ident != sock.ident {
        bump(&shared.counters.unmatched_packets);
        return;
    }
    let key = Key {
        ip: dst,
        ident: echo.ident,
        seq: echo.seq,
    };
    let stamp = packet::read_stamp(echo.payload);
    let drift = sock.tx_drift.load(Ordering::Relaxed);
    let result = shared
        .table
        .lock()
        .tx_timestamp(&key, stamp, opt_id.wrapping_sub(drift), at);
    match result {
        TxMatch::Attached => sock.tx_seen.store(true, Ordering::Relaxed),
        TxMatch::Mismatch { tx_id } => {
            // Re-base: later timestamps compare against the kernel's count as it now stands.
            sock.tx_drift
                .store(opt_id.wrapping_sub(tx_id), Ordering::Relaxed);
            tracing::debug!(
                opt_id,
                expected = tx_id.wrapping_add(drift),
                "TX timestamp OPT_ID drifted; re-based"
            );
        }
        // Its probe settled already (an ICMP error, a timeout), or it is not ours.
        TxMatch::Unknown => {}
    }
}
