//! The bounded table of probes in flight, and the short memory of settled ones.
//!
//! The table owns sequence allocation (per destination address), every probe's deadline (one
//! ordered map for all probes, driven by a single timer task in the engine), and the decision
//! what a received reply or error *is*: a reply, a late reply, a duplicate, or something stale
//! to ignore. It has no sockets and no clock of its own, so it is tested directly.
//!
//! Each probe carries its [`SendTimes`] (a wall/monotonic pair read right before `sendto`, and
//! the kernel's TX timestamp once the engine has read and verified it, see
//! [`InFlightTable::tx_timestamp`]); a reply's RTT comes from [`clock::measure`], so a clock
//! step never yields an RTT of 0 or outside the monotonic bounds.
//!
//! Memory is bounded: at most `capacity` probes in flight, at most `recent_capacity` settled
//! probes remembered for late/duplicate detection (oldest forgotten first) and none sent more
//! than [`RECENT_KEEP`] ago, so a daemon probing a few targets does not fill the whole ring over
//! hours; the per-address sequence counters are pruned when they outgrow the table.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

// Keys are the probes this process sent (a reply only looks one up), so a fast hash serves.
use foldhash::HashMap;

use super::clock::{self, ClockPair, Fallback, Measured, Mono, RecvTimes, SendTimes, Stamp, Wall};
use super::packet::PayloadStamp;
use super::{EventKind, EventSink, IcmpErrorInfo, ProbeEvent, ReplyInfo};

#[path = "recent.rs"]
mod recent;
use recent::RecentRing;

/// How long a settled probe is remembered at most, from its send: a reply later than this is
/// unknown rather than late. At high probe rates the ring's count bound comes first.
pub const RECENT_KEEP: Duration = Duration::from_secs(300);

/// What identifies a probe on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    /// Destination address.
    pub ip: IpAddr,
    /// ICMP identifier of the socket that sent it.
    pub ident: u16,
    /// Wire sequence number.
    pub seq: u16,
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_ip(
            &self.ip,
            u32::from(self.ident) << 16 | u32::from(self.seq),
            state,
        );
    }
}

/// Hashes an address and 32 more bits as one word (IPv4) or two (IPv6). `IpAddr`'s derived hash
/// writes its variant, then the octets as a slice with its length: about 65 instructions a key
/// with foldhash, where a probe's key is hashed five times or more on its way through the table
/// (`bench/instructions.sh`). Keys equal under `Eq` hash equally; an IPv4 and an IPv6 key that
/// collide are told apart by `Eq`.
fn hash_ip<H: Hasher>(ip: &IpAddr, more: u32, state: &mut H) {
    match ip {
        IpAddr::V4(a) => state.write_u64(u64::from(a.to_bits()) << 32 | u64::from(more)),
        IpAddr::V6(a) => {
            state.write_u128(a.to_bits());
            state.write_u32(more);
        }
    }
}

/// A destination address as the table's sequence counters are keyed: hashed by [`hash_ip`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Dest(IpAddr);

impl Hash for Dest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_ip(&self.0, 0, state);
    }
}

#[derive(Debug)]
struct Pending {
    tag: u64,
    sink: EventSink,
    sent: SendTimes,
    stamp: u64,
    /// The socket's send count at this probe's `sendto`, to check the TX timestamp's `OPT_ID`.
    tx_id: u32,
    /// The deadline (`sent.user.mono` plus the probe's timeout) and its tie-breaker in
    /// `deadlines`. A reply whose RTT exceeds the timeout is late even when the timer has not
    /// fired yet (a busy runtime can run it after the reply is read). The timeout is not kept
    /// apart: it is the deadline less the send time, one subtraction of integers.
    timer: (Mono, u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Settled {
    /// Timed out or got an ICMP error: the next reply is late.
    Lost,
    /// Got its reply (possibly late): further replies are duplicates.
    Answered,
}

#[derive(Debug)]
struct Recent {
    tag: u64,
    sink: EventSink,
    sent: SendTimes,
    stamp: u64,
    state: Settled,
}

/// An event ready to be delivered, with the sink it goes to.
pub type Delivery = (EventSink, ProbeEvent);

/// What a received reply turned out to be.
#[derive(Debug)]
pub enum ReplyOutcome {
    /// Deliver this event (reply, late or duplicate).
    Deliver(Delivery),
    /// The reply came after the probe's timeout, before its timer fired: deliver the timeout,
    /// then the late reply.
    TimeoutThenLate(Delivery, Delivery),
    /// The payload stamp does not match the probe holding this key: an answer to an older probe
    /// whose sequence number has since been reused. Ignored.
    Stale,
    /// No probe, live or recent, has this key.
    Unknown,
    /// The probe is still waiting for its kernel TX timestamp: read the error queue, then ask
    /// again with `wait_tx` false. Nothing changed.
    AwaitTx,
}

/// What a kernel TX timestamp turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxMatch {
    /// Verified (quoted request and `OPT_ID` agree) and attached to the probe.
    Attached,
    /// The quoted request is this probe's, but `OPT_ID` is not the one expected: the probe
    /// falls back to its user-space send time; `tx_id` is the send count recorded for it, so the
    /// caller can re-base its expectation.
    Mismatch {
        /// The probe's recorded send count.
        tx_id: u32,
    },
    /// No probe in flight sent this request (already settled, or not ours).
    Unknown,
}

/// The table was full; nothing was inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

/// Probes in flight and recently settled. See the module docs.
#[derive(Debug)]
pub struct InFlightTable {
    capacity: usize,
    pending: HashMap<Key, Pending>,
    deadlines: BTreeMap<(Mono, u64), Key>,
    next_id: u64,
    /// Settled probes, at most `recent_capacity` of them.
    recent: RecentRing,
    next_seq: HashMap<Dest, u16>,
    /// When the timer task looks at the table next: the deadline it sleeps until, or `None`
    /// while it waits to be woken. See [`InFlightTable::arm`].
    armed: Option<Mono>,
}

/// Send times of a probe before its `sendto` (replaced by [`InFlightTable::set_sent`]).
fn unsent(pair: ClockPair) -> SendTimes {
    SendTimes {
        user: pair,
        kernel: Stamp::User(Fallback::Missing),
    }
}

impl InFlightTable {
    /// A table for at most `capacity` probes in flight and `recent_capacity` settled ones.
    pub fn new(capacity: usize, recent_capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            pending: HashMap::default(),
            deadlines: BTreeMap::new(),
            next_id: 0,
            recent: RecentRing::new(recent_capacity),
            next_seq: HashMap::default(),
            armed: None,
        }
    }

    /// The capacity given at construction.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Probes in flight.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// True when nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Settled probes remembered for late/duplicate detection.
    pub fn recent_len(&self) -> usize {
        self.recent.len()
    }

    /// How many settled probes the recent table holds before it must grow.
    #[cfg(test)]
    pub(crate) fn recent_allocated(&self) -> usize {
        self.recent.allocated()
    }

    /// The earliest deadline of any probe in flight.
    pub fn next_deadline(&self) -> Option<Mono> {
        self.deadlines.keys().next().map(|(at, _)| *at)
    }

    /// For the timer task, before it sleeps: the earliest deadline, to sleep until (`None`:
    /// nothing in flight, wait to be woken). The table remembers it for [`Self::wake_timer`].
    pub fn arm(&mut self) -> Option<Mono> {
        self.armed = self.next_deadline();
        self.armed
    }

    /// For a sender, after inserting a probe due at `deadline`: true when the timer task must be
    /// woken because it sleeps past `deadline` or waits for no time at all; the table then
    /// takes the timer as due at `deadline`. A timer that sleeps until an earlier deadline is
    /// left alone, even when that probe has been answered since: it wakes, finds nothing, and
    /// arms for what is in flight then. So a steady stream of quick replies costs the timer
    /// about one wake-up per timeout, not one per send that finds the table empty.
    pub fn wake_timer(&mut self, deadline: Mono) -> bool {
        let wake = self.armed.is_none_or(|armed| deadline < armed);
        if wake {
            self.armed = Some(deadline);
        }
        wake
    }

    /// Registers a probe to `ip` from the socket with identifier `ident`; allocates and returns
    /// its wire sequence number. Never reuses a sequence number still in flight for the same
    /// destination and identifier, and forgets any settled probe that held it, so a reply to
    /// the old probe can never be taken for a reply to the new one (the payload stamp check in
    /// [`InFlightTable::reply`] rejects it).
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &mut self,
        ip: IpAddr,
        ident: u16,
        tag: u64,
        sink: EventSink,
        sent: ClockPair,
        stamp: u64,
        deadline: Mono,
    ) -> Result<u16, Full> {
        if self.pending.len() >= self.capacity {
            return Err(Full);
        }
        if self.next_seq.len() > self.capacity.saturating_mul(4).max(4096) {
            let live: foldhash::HashSet<Dest> = self.pending.keys().map(|k| Dest(k.ip)).collect();
            self.next_seq.retain(|dest, _| live.contains(dest));
        }
        // One lookup of the address: its next sequence number is read and moved on in place.
        let next = self.next_seq.entry(Dest(ip)).or_insert(0);
        let mut seq = *next;
        // Bounded: at most 65536 candidates, and `capacity` keeps most of them free.
        let mut found = None;
        for _ in 0..=u16::MAX as u32 {
            let key = Key { ip, ident, seq };
            if !self.pending.contains_key(&key) {
                found = Some(key);
                break;
            }
            seq = seq.wrapping_add(1);
        }
        let key = found.ok_or(Full)?;
        *next = key.seq.wrapping_add(1);
        self.recent.forget(&key);
        let timer = (deadline, self.next_id);
        self.next_id += 1;
        self.deadlines.insert(timer, key);
        self.pending.insert(
            key,
            Pending {
                tag,
                sink,
                sent: unsent(sent),
                stamp,
                tx_id: 0,
                timer,
            },
        );
        Ok(key.seq)
    }

    /// Records the clock pair read right before the packet went out (the stamp in its payload
    /// was taken earlier, when the sequence was allocated), what the kernel TX timestamp will be
    /// ([`Stamp::Awaited`] on sockets that give one), and the socket's send count for `OPT_ID`.
    pub fn set_sent(&mut self, key: &Key, pair: ClockPair, kernel: Stamp, tx_id: u32) {
        if let Some(p) = self.pending.get_mut(key) {
            p.sent = SendTimes { user: pair, kernel };
            p.tx_id = tx_id;
        }
    }

    /// Attaches a kernel TX timestamp to the probe that sent the request it quotes, if that
    /// probe is in flight, its payload stamp matches, and `id` (the timestamp's `OPT_ID`, minus
    /// the socket's known drift) is the send count recorded for it. On a mismatch the probe falls
    /// back to its user-space send time: a timestamp is never attached to the wrong probe.
    pub fn tx_timestamp(&mut self, key: &Key, stamp: PayloadStamp, id: u32, at: Wall) -> TxMatch {
        let Some(p) = self.pending.get_mut(key) else {
            return TxMatch::Unknown;
        };
        let ours = match stamp {
            PayloadStamp::Stamp(s) => s == p.stamp,
            PayloadStamp::Unstamped => true,
            PayloadStamp::Foreign => false,
        };
        if !ours || p.sent.kernel != Stamp::Awaited {
            return TxMatch::Unknown;
        }
        if id != p.tx_id {
            p.sent.kernel = Stamp::User(Fallback::Mismatch);
            return TxMatch::Mismatch { tx_id: p.tx_id };
        }
        p.sent.kernel = Stamp::Kernel(at);
        TxMatch::Attached
    }

    /// Forgets a probe that was never sent (the send failed); no event.
    pub fn remove(&mut self, key: &Key) {
        if let Some(p) = self.pending.remove(key) {
            self.deadlines.remove(&p.timer);
        }
    }

    fn settle(&mut self, key: Key, p: Pending, state: Settled) {
        self.deadlines.remove(&p.timer);
        let rec = Recent {
            tag: p.tag,
            sink: p.sink,
            sent: p.sent,
            stamp: p.stamp,
            state,
        };
        self.recent.remember(key, rec);
    }

    /// Classifies an echo reply received at `rx`, and measures its RTT (see [`clock::measure`]).
    ///
    /// With `wait_tx`, a probe still waiting for its kernel TX timestamp is left alone and
    /// [`ReplyOutcome::AwaitTx`] returned, so the caller can read the error queue first.
    pub fn reply(
        &mut self,
        key: Key,
        stamp: PayloadStamp,
        rx: &RecvTimes,
        ttl: Option<u8>,
        size: usize,
        wait_tx: bool,
    ) -> (ReplyOutcome, Option<Measured>) {
        let matches = |ours: u64| match stamp {
            PayloadStamp::Stamp(s) => s == ours,
            PayloadStamp::Unstamped => true,
            PayloadStamp::Foreign => false,
        };
        let received = rx.wall().time();
        let event = |tag, m: &Measured, kind: fn(ReplyInfo) -> EventKind| ProbeEvent {
            tag,
            seq: key.seq,
            ip: key.ip,
            at: received,
            kind: kind(ReplyInfo {
                rtt: m.rtt,
                ttl,
                size,
                refused: false,
            }),
        };
        if let Some(p) = self.pending.get(&key) {
            if !matches(p.stamp) {
                return (ReplyOutcome::Stale, None);
            }
            if wait_tx && p.sent.kernel == Stamp::Awaited {
                return (ReplyOutcome::AwaitTx, None);
            }
            let Some(p) = self.pending.remove(&key) else {
                return (ReplyOutcome::Unknown, None);
            };
            let m = clock::measure(&p.sent, rx);
            if m.rtt > p.timer.0.since(p.sent.user.mono) {
                let timeout = ProbeEvent {
                    tag: p.tag,
                    seq: key.seq,
                    ip: key.ip,
                    at: received,
                    kind: EventKind::Timeout,
                };
                let late = event(p.tag, &m, EventKind::Late);
                let sink = p.sink.clone();
                // The late reply is delivered here, so a further one is a duplicate.
                self.settle(key, p, Settled::Answered);
                return (
                    ReplyOutcome::TimeoutThenLate((sink.clone(), timeout), (sink, late)),
                    Some(m),
                );
            }
            let ev = event(p.tag, &m, EventKind::Reply);
            let sink = p.sink.clone();
            self.settle(key, p, Settled::Answered);
            return (ReplyOutcome::Deliver((sink, ev)), Some(m));
        }
        let Some(r) = self.recent.get_mut(&key) else {
            return (ReplyOutcome::Unknown, None);
        };
        if !matches(r.stamp) {
            return (ReplyOutcome::Stale, None);
        }
        let kind: fn(ReplyInfo) -> EventKind = match r.state {
            Settled::Lost => EventKind::Late,
            Settled::Answered => EventKind::Duplicate,
        };
        r.state = Settled::Answered;
        let m = clock::measure(&r.sent, rx);
        let ev = event(r.tag, &m, kind);
        (ReplyOutcome::Deliver((r.sink.clone(), ev)), Some(m))
    }

    /// Settles the probe an ICMP error quotes. Errors for probes already settled are ignored.
    pub fn error(&mut self, key: Key, info: IcmpErrorInfo, at: SystemTime) -> Option<Delivery> {
        let p = self.pending.remove(&key)?;
        let ev = ProbeEvent {
            tag: p.tag,
            seq: key.seq,
            ip: key.ip,
            at,
            kind: EventKind::IcmpError(info),
        };
        let sink = p.sink.clone();
        self.settle(key, p, Settled::Lost);
        Some((sink, ev))
    }

    /// Settles the probe an ICMP error quotes, as [`Self::error`], with the error's RTT measured
    /// from the probe's send times to `rx` as a reply's would be.
    pub fn error_measured(
        &mut self,
        key: Key,
        mut info: IcmpErrorInfo,
        rx: &RecvTimes,
    ) -> Option<Delivery> {
        let p = self.pending.get(&key)?;
        info.rtt = Some(clock::measure(&p.sent, rx).rtt);
        self.error(key, info, rx.wall().time())
    }

    /// Times out every probe whose deadline is at or before `now`.
    pub fn expire(&mut self, now: Mono, wall: Wall) -> Vec<Delivery> {
        self.recent.forget_old(now);
        let wall = wall.time();
        let mut out = Vec::new();
        while let Some(entry) = self.deadlines.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            if let Some(p) = self.pending.remove(&key) {
                let ev = ProbeEvent {
                    tag: p.tag,
                    seq: key.seq,
                    ip: key.ip,
                    at: wall,
                    kind: EventKind::Timeout,
                };
                out.push((p.sink.clone(), ev));
                self.settle(key, p, Settled::Lost);
            }
        }
        out
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;

#[cfg(test)]
mod key_tests {
    use std::net::Ipv4Addr;

    use super::*;

    // A probe's key is hashed as one or two words: every field must still reach the hash, or keys
    // that differ only in sequence, identifier or address would share buckets.
    #[test]
    fn keys_differing_in_any_field_hash_apart() {
        use std::hash::BuildHasher;
        use std::net::Ipv6Addr;
        let hasher = foldhash::fast::FixedState::with_seed(17);
        let ips = [
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)),
        ];
        let mut seen = std::collections::HashSet::new();
        for ip in ips {
            for ident in [1, 2, 0xffff] {
                for seq in 0..2048 {
                    let key = Key { ip, ident, seq };
                    assert_eq!(hasher.hash_one(key), hasher.hash_one(key));
                    assert!(seen.insert(hasher.hash_one(key)), "{key:?} collides");
                }
            }
        }
    }
}
