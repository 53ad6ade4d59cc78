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
//! Sockets stay open for the engine's life, except those of Paris flows
//! ([`Transport::IcmpFlow`], one per flow number, family and options): a flow socket that a path
//! tracer held ([`Pinger::hold_flow`]) closes at the last release, so the identities a tracer
//! gives up do not pile up.
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
//! A raw socket with kernel TX timestamps sends from a twin: a second raw socket with the same
//! options that lets no packet in and that nothing polls. Queueing a TX timestamp on a socket's
//! error queue wakes every thread waiting on that socket, and the receive task's worker waits
//! in `epoll_wait`: that wake-up (a cross-CPU interrupt, a VM exit on a VM) falls between the
//! two timestamps, since the stamp is queued as the request leaves and before the reply comes
//! (on loopback, inside our `sendto`). On the twin nobody waits; the receive task reads its
//! error queue each time it wakes for a packet, and before settling a reply whose timestamp it
//! has not read. A datagram socket cannot have a twin (the reply goes to the socket that owns
//! the identifier), so it keeps the wake-up; if the twin cannot be opened the raw socket sends
//! itself.
//!
//! Measured in a release build against the test network's truth (the responder's log: the time
//! it held each request, from the kernel's arrival timestamp at its device to its write), 300
//! probes to a 1 ms host, idle, and loaded with 10,000 background targets through the same
//! engine and SCHED_FIFO hogs on both cores (`measure_timestamp_paths` in `tests/timestamps.rs`;
//! raw figures in `bench/results/timestamps-2026-12-03.jsonl`, the command in README
//! "Timestamps"):
//!
//! | timestamps (error vs truth, µs) | idle p50 | idle p99 | idle max | loaded p50 | loaded p99 | loaded max |
//! |---|---|---|---|---|---|---|
//! | kernel RX + kernel TX | 1.3 | 4.0 | 4.5 | 0.4 | 1.8 | 2.2 |
//! | kernel RX + user TX | 36.0 | 92.9 | 116.8 | 4.6 | 17.4 | 7,257.4 |
//! | user RX + user TX | 71.5 | 123.0 | 147.0 | 3,870.3 | 4,221.2 | 4,277.5 |
//!
//! Kernel RX + TX takes out the `sendto` path (tens of µs here) that user TX leaves in, and
//! the load (milliseconds for user-space timestamps) does not reach it. "Idle" is the engine
//! without background or hogs, on the 2-core VM with nothing else running.
//!
//! # Why our own socket layer, not surge-ping
//!
//! surge-ping gives no kernel timestamps (its RTT is taken when the task wakes: the user-space
//! rows above) and has a sequence collision in unprivileged mode (its issue #73).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use tokio::io::Interest;
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::clock::{
    Clock, ClockPair, Fallback, Measured, RecvTimes, Stamp, StepCounter, SystemClock,
};
use super::packet::{self, Icmp, PayloadStamp};
use super::socket::{
    self, Received, RecvBatch, SCM_TSTAMP_SND, SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6,
    SO_EE_ORIGIN_TIMESTAMPING,
};
pub use super::socket::{SocketKind, SocketPreference, TimestampSource};
use super::table::{Delivery, InFlightTable, Key, ReplyOutcome, TxMatch};
use super::{
    EngineCounters, EventSink, IcmpErrorInfo, Pinger, ProbeSpec, SendError, SocketError,
    SocketOptions, Transport,
};
use recv::{receive_task, timer_task};

mod recv;
mod sockets;

use sockets::{IcmpSocket, Sockets, flow_key, socket_key};

/// Sends after the first that a pending ICMP error of an earlier probe may take (see
/// [`IcmpEngine`]'s `send`).
const PENDING_ERROR_RETRIES: usize = 3;

/// Bytes of the largest request a send writes on the stack (the default payload is 56 bytes);
/// a larger one is written into a vector.
const INLINE_REQUEST: usize = 256;

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
            super::deliver_counted(
                &sink,
                event,
                &self.counters.events_dropped,
                &self.counters.sink_closed,
            );
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

/// The real [`Pinger`]. See the module docs.
#[derive(Debug)]
pub struct IcmpEngine {
    shared: Arc<Shared>,
    runtime: Handle,
    preference: SocketPreference,
    timestamps: TimestampSource,
    // Held only to look up, insert or close a socket and to count holds; opening happens
    // under it so two first probes with the same options do not open two sockets, and a
    // release cannot close a socket a send is about to open.
    sockets: Mutex<Sockets>,
    /// The sockets of plain echo probes (default options, no flow), IPv4 then IPv6, found at a
    /// send without the lock, a hash of the options or a count on the `Arc`. Such a socket,
    /// once open, stays open for the engine's life (only flow sockets close).
    plain: [OnceLock<Arc<IcmpSocket>>; 2],
    timer: Mutex<Option<AbortHandle>>,
}

impl Drop for IcmpEngine {
    fn drop(&mut self) {
        if let Some(t) = self.timer.lock().take() {
            t.abort();
        }
        for (_, open) in self.sockets.lock().open.drain() {
            open.task.abort();
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
            sockets: Mutex::new(Sockets::default()),
            plain: [OnceLock::new(), OnceLock::new()],
            timer: Mutex::new(None),
        });
        let timer = runtime.spawn(timer_task(shared));
        *engine.timer.lock() = Some(timer.abort_handle());
        engine.socket_for((false, SocketOptions::default(), None))?;
        Ok(engine)
    }

    /// The kind of the default-options socket of a family, if it is open.
    pub fn socket_kind(&self, v6: bool) -> Option<SocketKind> {
        self.sockets
            .lock()
            .open
            .get(&(v6, SocketOptions::default(), None))
            .map(|o| o.sock.kind)
    }

    /// Every open socket: (is IPv6, options, kind, ICMP identifier). For logs.
    pub fn sockets(&self) -> Vec<(bool, SocketOptions, SocketKind, u16)> {
        self.sockets
            .lock()
            .open
            .iter()
            .map(|((v6, o, _), s)| (*v6, o.clone(), s.sock.kind, s.sock.ident))
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
        let mut paths: Vec<TimestampPath> = self
            .sockets
            .lock()
            .open
            .values()
            .map(|o| o.sock.path())
            .collect();
        paths.sort();
        paths.dedup();
        TimestampStats {
            clock_steps: c.clock_steps.load(Ordering::Relaxed),
            rx_fallbacks: read(&c.rx_fallbacks),
            tx_fallbacks: read(&c.tx_fallbacks),
            paths,
        }
    }
}

impl Pinger for IcmpEngine {
    fn send(&self, spec: &ProbeSpec, tag: u64, sink: &EventSink) -> Result<u16, SendError> {
        let ip = spec.ip;
        let flow = match spec.transport {
            Transport::IcmpFlow { flow, ttl } => Some((flow, ttl)),
            _ => None,
        };
        let plain = (spec.transport == Transport::Icmp && spec.options == SocketOptions::default())
            .then(|| self.plain[usize::from(ip.is_ipv6())].get())
            .flatten();
        let opened;
        let sock: &IcmpSocket = match plain {
            Some(sock) => sock,
            None => {
                let Some(key) = socket_key(spec) else {
                    return Err(SendError::Unsupported {
                        transport: spec.transport.as_str(),
                        ip,
                    });
                };
                opened = self
                    .socket_for(key)
                    .map_err(|source| SendError::Socket { ip, source })?;
                &opened
            }
        };
        let clock = &*self.shared.clock;
        // The deadline and the payload's stamp need one reading of each clock; the pair an RTT
        // starts from is read right before the send (`mark` below) and replaces this one.
        let first = ClockPair {
            wall: clock.wall(),
            mono: clock.mono(),
            spread: std::time::Duration::ZERO,
        };
        let stamp = first.wall.unix_nanos();
        let deadline = first.mono + spec.timeout;
        let (seq, wake_timer) = {
            let mut table = self.shared.table.lock();
            let seq = table
                .insert(ip, sock.ident, tag, sink.clone(), first, stamp, deadline)
                .map_err(|_| SendError::InFlightFull {
                    limit: table.capacity(),
                    ip,
                })?;
            (seq, table.wake_timer(deadline))
        };
        let size = usize::from(spec.size);
        let len = match flow {
            Some(_) => packet::flow_request_len(size),
            None => packet::ECHO_HEADER_LEN + size,
        };
        // The usual sizes are written on the stack: no allocation per probe.
        let mut inline = [0u8; INLINE_REQUEST];
        let mut heap = Vec::new();
        let pkt: &mut [u8] = match inline.get_mut(..len) {
            Some(pkt) => pkt,
            None => {
                heap.resize(len, 0);
                &mut heap
            }
        };
        match flow {
            Some((f, _)) => packet::write_flow_request(pkt, sock.v6, sock.ident, seq, stamp, f),
            None => packet::write_echo_request(pkt, sock.v6, sock.ident, seq, stamp),
        }
        let pkt = &*pkt;
        let send = || match flow {
            Some((_, ttl)) => socket::send_to_with_ttl(sock.send_socket(), ip, pkt, ttl),
            None => socket::send_to(sock.send_socket(), ip, pkt),
        };
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
        let mut sent = send();
        // With IP_RECVERR, an ICMP error for an *earlier* probe also sets the socket's pending
        // error, which the next send reports (and clears) instead of sending. The error itself
        // waits on the error queue, so send again. The pending error can be set once more
        // while we do: reading an entry off the error queue (a TX timestamp) re-raises the
        // ICMP error queued behind it. So a few tries; a real local failure (no route) fails
        // every time the same way. (If the kernel counted a failed send for OPT_ID, the TX
        // timestamp check sees the drift and re-bases.)
        for _ in 0..PENDING_ERROR_RETRIES {
            match &sent {
                Err(e) if sock.kind == SocketKind::Dgram && socket::is_pending_icmp_error(e) => {
                    mark(&self.shared.table);
                    sent = send();
                }
                _ => break,
            }
        }
        // The timer task learns of an earlier deadline only now: waking it (another thread,
        // often another CPU) before the send would put that wake-up between the two timestamps
        // of a fast reply. The deadline is a timeout away, so it is not late for it.
        if wake_timer {
            self.shared.timer.notify_one();
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

    fn hold_flow(&self, spec: &ProbeSpec) {
        if let Some(key) = flow_key(spec) {
            *self.sockets.lock().holds.entry(key).or_default() += 1;
        }
    }

    fn release_flow(&self, spec: &ProbeSpec) {
        let Some(key) = flow_key(spec) else {
            return;
        };
        let mut sockets = self.sockets.lock();
        let Some(n) = sockets.holds.get_mut(&key) else {
            return;
        };
        *n -= 1;
        if *n > 0 {
            return;
        }
        sockets.holds.remove(&key);
        // Its probes have settled (a tracer releases between rounds); a late answer to one is
        // lost with the socket, and the table times out anything still in flight.
        if let Some(open) = sockets.open.remove(&key) {
            open.task.abort();
            tracing::debug!(
                family = open.sock.family(),
                ident = open.sock.ident,
                flow = ?key.2,
                "ICMP flow socket closed"
            );
        }
    }
}
