#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::Ipv4Addr;

use tokio::sync::mpsc;

use super::*;
use crate::engine::IcmpErrorKind;

const IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const ID: u16 = 0x4242;

fn sink() -> (EventSink, mpsc::Receiver<ProbeEvent>) {
    let (tx, rx) = mpsc::channel(16);
    (tx.into(), rx)
}

const WALL0: Wall = Wall::from_nanos(0);

fn mono0() -> Mono {
    static BASE: std::sync::OnceLock<Mono> = std::sync::OnceLock::new();
    *BASE.get_or_init(Mono::now)
}

/// The test's clocks at their origin: every pair below keeps wall minus monotonic constant,
/// as a clock that is never stepped does.
fn t0() -> (Mono, Wall) {
    (mono0(), WALL0 + Duration::from_secs(1_700_000_000))
}

/// An empty table with `capacity` probes in flight and `recent_capacity` settled ones remembered,
/// at the test's origin ([`t0`]): (monotonic now, wall now, table, sink, the sink's receiver).
fn start(
    capacity: usize,
    recent_capacity: usize,
) -> (
    Mono,
    Wall,
    InFlightTable,
    EventSink,
    mpsc::Receiver<ProbeEvent>,
) {
    let (now, wall) = t0();
    let (tx, rx) = sink();
    (
        now,
        wall,
        InFlightTable::new(capacity, recent_capacity),
        tx,
        rx,
    )
}

fn mono_of(w: Wall) -> Mono {
    let since = w.ns_since(t0().1);
    assert!(since >= 0, "test times are after the origin");
    Mono::from_nanos(mono0().nanos() + since)
}

/// The send pair of a probe sent at wall time `w`.
fn sp(w: Wall) -> ClockPair {
    ClockPair {
        wall: w,
        mono: mono_of(w),
        spread: Duration::ZERO,
    }
}

/// A reply read at wall time `w`, with user-space timestamps.
fn rx(w: Wall) -> RecvTimes {
    RecvTimes {
        user: sp(w),
        kernel: Stamp::User(Fallback::Disabled),
    }
}

fn key(seq: u16) -> Key {
    Key {
        ip: IP,
        ident: ID,
        seq,
    }
}

/// Inserts a probe to [`IP`] with identifier [`ID`], sent at wall time `wall`: its sequence.
fn put(
    t: &mut InFlightTable,
    tx: &EventSink,
    wall: Wall,
    tag: u64,
    stamp: u64,
    deadline: Mono,
) -> Result<u16, Full> {
    t.insert(IP, ID, tag, tx.clone(), sp(wall), stamp, deadline)
}

/// A table (8 in flight, 8 recent) holding one probe: `tag`, payload `stamp`, due `timeout`
/// after the start; with the start's monotonic and wall times.
fn one_probe(tag: u64, stamp: u64, timeout: Duration) -> (InFlightTable, u16, Mono, Wall) {
    let (now, wall, mut t, tx, _rx) = start(8, 8);
    let seq = put(&mut t, &tx, wall, tag, stamp, now + timeout).unwrap();
    (t, seq, now, wall)
}

/// A reply to `seq` with payload stamp `stamp`, received at `at` with `ttl`: a 64-byte message on
/// a socket that does not wait for TX timestamps.
fn answer(t: &mut InFlightTable, seq: u16, stamp: u64, at: Wall, ttl: Option<u8>) -> ReplyOutcome {
    t.reply(
        key(seq),
        PayloadStamp::Stamp(stamp),
        &rx(at),
        ttl,
        64,
        false,
    )
    .0
}

fn deliver(o: ReplyOutcome) -> ProbeEvent {
    match o {
        ReplyOutcome::Deliver((_, ev)) => ev,
        other => panic!("expected a delivery, got {other:?}"),
    }
}

#[test]
fn reply_then_duplicate() {
    let (mut t, seq, _, wall) = one_probe(7, 1, Duration::from_secs(1));
    assert_eq!(t.len(), 1);
    let rx_at = wall + Duration::from_micros(250);
    let ev = deliver(answer(&mut t, seq, 1, rx_at, Some(64)));
    assert_eq!((ev.tag, ev.seq, ev.ip), (7, seq, IP));
    assert_eq!(
        ev.kind,
        EventKind::Reply(ReplyInfo {
            rtt: Duration::from_micros(250),
            ttl: Some(64),
            size: 64,
            refused: false
        })
    );
    assert!(t.is_empty());
    assert_eq!(t.next_deadline(), None, "answered probe leaves no timer");
    let ev = deliver(answer(&mut t, seq, 1, rx_at, Some(64)));
    assert!(matches!(ev.kind, EventKind::Duplicate(_)), "{ev:?}");
    let ev = deliver(answer(&mut t, seq, 1, rx_at, Some(64)));
    assert!(matches!(ev.kind, EventKind::Duplicate(_)), "{ev:?}");
}

#[test]
fn timeout_then_late_then_duplicate() {
    let (mut t, seq, now, wall) = one_probe(3, 9, Duration::from_millis(100));
    assert!(t.expire(now + Duration::from_millis(99), wall).is_empty());
    let out = t.expire(now + Duration::from_millis(100), wall);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].1.tag, &out[0].1.kind), (3, &EventKind::Timeout));
    assert!(t.is_empty());
    let ev = deliver(answer(&mut t, seq, 9, wall + Duration::from_secs(2), None));
    assert!(
        matches!(ev.kind, EventKind::Late(ReplyInfo { rtt, .. }) if rtt == Duration::from_secs(2))
    );
    let ev = deliver(answer(&mut t, seq, 9, wall, None));
    assert!(matches!(ev.kind, EventKind::Duplicate(_)));
}

#[test]
fn a_reply_past_the_timeout_is_late_even_before_the_timer_fires() {
    let (mut t, seq, now, wall) = one_probe(3, 9, Duration::from_millis(100));
    // The runtime has not run the deadline timer yet, but the kernel stamped the reply 300 ms
    // after the send: it is a timeout followed by a late reply, never a reply.
    let rx_at = wall + Duration::from_millis(300);
    match answer(&mut t, seq, 9, rx_at, Some(64)) {
        ReplyOutcome::TimeoutThenLate((_, timeout), (_, late)) => {
            assert_eq!((timeout.tag, timeout.kind), (3, EventKind::Timeout));
            assert!(
                matches!(late.kind, EventKind::Late(ReplyInfo { rtt, .. }) if rtt == Duration::from_millis(300))
            );
        }
        other => panic!("expected timeout then late, got {other:?}"),
    }
    assert!(t.is_empty());
    // The timer firing afterwards finds nothing to expire.
    assert!(t.expire(now + Duration::from_secs(1), wall).is_empty());
    // A further reply is a duplicate of the late one.
    let dup = deliver(answer(&mut t, seq, 9, rx_at, Some(64)));
    assert!(matches!(dup.kind, EventKind::Duplicate(_)));
}

#[test]
fn deadlines_fire_in_order_each_on_its_own() {
    let (now, wall, mut t, tx, _rx) = start(8, 8);
    for (tag, ms) in [(1u64, 300u64), (2, 100), (3, 200)] {
        put(&mut t, &tx, wall, tag, tag, now + Duration::from_millis(ms)).unwrap();
    }
    assert_eq!(t.next_deadline(), Some(now + Duration::from_millis(100)));
    let tags: Vec<u64> = t
        .expire(now + Duration::from_millis(250), wall)
        .iter()
        .map(|d| d.1.tag)
        .collect();
    assert_eq!(tags, vec![2, 3]);
    assert_eq!(t.len(), 1);
}

#[test]
fn icmp_error_settles_and_later_reply_is_late() {
    let (mut t, seq, now, wall) = one_probe(5, 2, Duration::from_secs(1));
    let info = IcmpErrorInfo {
        kind: IcmpErrorKind::Unreachable,
        icmp_type: 3,
        icmp_code: 1,
        from: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)),
        rtt: None,
    };
    let (_, ev) = t
        .error(key(seq), info.clone(), wall.time())
        .expect("matched");
    assert_eq!(ev.kind, EventKind::IcmpError(info.clone()));
    assert!(
        t.error(key(seq), info, wall.time()).is_none(),
        "second error ignored"
    );
    assert!(
        t.expire(now + Duration::from_secs(5), wall).is_empty(),
        "no timeout after error"
    );
    let ev = deliver(answer(&mut t, seq, 2, wall, None));
    assert!(matches!(ev.kind, EventKind::Late(_)));
}

#[test]
fn capacity_is_enforced_and_freed() {
    let (now, wall, mut t, tx, _rx) = start(3, 3);
    for i in 0..3 {
        put(&mut t, &tx, wall, i, i, now + Duration::from_millis(10)).unwrap();
    }
    assert_eq!(put(&mut t, &tx, wall, 9, 9, now), Err(Full));
    assert_eq!(t.expire(now + Duration::from_millis(10), wall).len(), 3);
    assert!(put(&mut t, &tx, wall, 9, 9, now).is_ok());
}

#[test]
fn recent_record_is_bounded() {
    let (now, wall, mut t, tx, _rx) = start(10, 4);
    let mut seqs = Vec::new();
    for i in 0..10 {
        seqs.push(put(&mut t, &tx, wall, i, i, now).unwrap());
    }
    assert_eq!(t.expire(now, wall).len(), 10);
    assert_eq!(t.recent_len(), 4);
    // The oldest are forgotten: their late replies are unknown, the newest are late.
    assert!(matches!(
        answer(&mut t, seqs[0], 0, wall, None),
        ReplyOutcome::Unknown
    ));
    let ev = deliver(answer(&mut t, seqs[9], 9, wall, None));
    assert!(matches!(ev.kind, EventKind::Late(_)));
}

// Under churn a hash table fills with tombstones and, once more than half full, doubles to
// get rid of them. A recent table of half what 1,024 buckets hold (448, as the engine's default
// is half of 65,536 buckets' 57,344) stays in its 1,024 buckets however many probes settle.
fn churn_recent(recent_capacity: usize) -> usize {
    let (now, wall, mut t, tx, _rx) = start(64, recent_capacity);
    let mut settled = 0;
    let mut most = 0;
    for round in 0..400u64 {
        for i in 0..50 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x7f00_0000 + u32::try_from(i).unwrap()));
            t.insert(ip, ID, round * 50 + i, tx.clone(), sp(wall), i, now)
                .unwrap();
        }
        settled += t.expire(now, wall).len();
        assert!(t.recent_len() <= recent_capacity);
        most = most.max(t.recent_allocated());
    }
    assert_eq!(settled, 20_000);
    assert_eq!(t.recent_len(), recent_capacity);
    most
}

#[test]
fn full_recent_table_does_not_grow() {
    let most = churn_recent(448);
    assert!(most <= 896, "grew to {most}");
}

// The ring grows by doubling up to its bound and no further: at the engine's default of 28,672
// settled probes, doubling alone would make room for 32,768 (half a megabyte more).
#[test]
fn the_ring_takes_no_room_past_its_bound() {
    let (now, wall, mut t, tx, _rx) = start(64, 448);
    for round in 0..20u64 {
        for i in 0..50 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x7f00_0000 + u32::try_from(i).unwrap()));
            t.insert(ip, ID, round * 50 + i, tx.clone(), sp(wall), i, now)
                .unwrap();
        }
        t.expire(now, wall);
        assert!(
            t.recent.slots_allocated() <= 448,
            "{}",
            t.recent.slots_allocated()
        );
    }
    assert_eq!(t.recent.slots(), 448);
}

// The index holds ring positions, not keys: 4 bytes and a control byte a bucket (a map from
// key to position took 28 and one, 1.9 MB at the daemon's bound of 28,672 probes).
#[test]
fn the_index_of_a_full_ring_holds_positions_only() {
    let (now, wall, mut t, tx, _rx) = start(64, 448);
    for i in 0..448u32 {
        let ip = IpAddr::V4(Ipv4Addr::from(0x7f00_0000 + i));
        t.insert(ip, ID, u64::from(i), tx.clone(), sp(wall), 0, now)
            .unwrap();
        t.expire(now, wall);
    }
    assert_eq!(t.recent_len(), 448);
    // A hash table holds 7/8 of its buckets; a control byte each, and one group more.
    let buckets = t.recent_allocated() * 8 / 7;
    let bytes = t.recent.index_bytes();
    assert!(
        bytes <= buckets * 5 + 32,
        "{bytes} bytes for {buckets} buckets"
    );
}

// The index keeps positions in 32 bits: remembering, finding and forgetting still work when
// the position count passes 2^32.
#[test]
fn ring_positions_past_32_bits_still_find_and_forget() {
    let (now, wall, mut t, tx, _rx) = start(8, 4);
    t.recent.start = (1 << 32) - 3;
    let later = now + Duration::from_secs(1);
    let mut seqs = Vec::new();
    for i in 0..10u64 {
        let seq = put(&mut t, &tx, wall, i, 100 + i, later).unwrap();
        deliver(answer(&mut t, seq, 100 + i, wall, None));
        seqs.push(seq);
        assert!(t.recent_len() <= 4);
    }
    assert_eq!(t.recent.start, (1 << 32) + 3);
    for (i, seq) in (0u64..).zip(&seqs) {
        let outcome = answer(&mut t, *seq, 100 + i, wall, None);
        if i < 6 {
            assert!(matches!(outcome, ReplyOutcome::Unknown), "{i}: {outcome:?}");
        } else {
            let ev = deliver(outcome);
            assert!(
                matches!(ev.kind, EventKind::Duplicate(_)),
                "{i}: {:?}",
                ev.kind
            );
            assert_eq!(ev.tag, i);
        }
    }
}

#[test]
fn wraparound_never_matches_stale_entry() {
    let (now, wall, mut t, tx, _rx) = start(4, 70_000);
    // Probe 0 gets seq 0 and times out; 65,536 more probes later, seq 0 comes round again.
    let first = put(&mut t, &tx, wall, 0, 1000, now).unwrap();
    assert_eq!(first, 0);
    t.expire(now, wall);
    let mut last = first;
    for i in 1..=65_535u64 {
        last = put(&mut t, &tx, wall, i, 1000 + i, now + Duration::from_secs(1)).unwrap();
        let ev = deliver(answer(&mut t, last, 1000 + i, wall, None));
        assert!(matches!(ev.kind, EventKind::Reply(_)));
    }
    assert_eq!(last, 65_535);
    let wrapped = put(&mut t, &tx, wall, 99_999, 5, now + Duration::from_secs(1)).unwrap();
    assert_eq!(wrapped, 0, "sequence wraps to 0");
    // A very late reply to the first probe (stamp 1000) must not answer the new probe ...
    assert!(matches!(
        answer(&mut t, 0, 1000, wall, None),
        ReplyOutcome::Stale
    ));
    assert_eq!(t.len(), 1);
    // ... while the new probe's own reply does.
    let ev = deliver(answer(&mut t, 0, 5, wall, None));
    assert_eq!(ev.tag, 99_999);
    assert!(matches!(ev.kind, EventKind::Reply(_)));
}

#[test]
fn sequence_in_flight_is_skipped_on_wrap() {
    let (now, wall, mut t, tx, _rx) = start(4, 4);
    let long = now + Duration::from_secs(60);
    assert_eq!(put(&mut t, &tx, wall, 0, 0, long).unwrap(), 0);
    // Drive the counter round without holding anything else.
    for i in 1..=65_535u64 {
        let s = put(&mut t, &tx, wall, i, i, now).unwrap();
        t.remove(&key(s));
    }
    // seq 0 is still in flight: the next probe must skip it.
    assert_eq!(put(&mut t, &tx, wall, 1, 1, long).unwrap(), 1);
    assert_eq!(t.len(), 2);
}

#[test]
fn foreign_or_unknown_replies_are_not_delivered() {
    let (mut t, seq, _, wall) = one_probe(0, 77, Duration::from_secs(1));
    assert!(matches!(
        t.reply(key(seq), PayloadStamp::Foreign, &rx(wall), None, 8, false)
            .0,
        ReplyOutcome::Stale
    ));
    let other = Key {
        ident: ID + 1,
        ..key(seq)
    };
    assert!(matches!(
        t.reply(other, PayloadStamp::Stamp(77), &rx(wall), None, 8, false)
            .0,
        ReplyOutcome::Unknown
    ));
    assert_eq!(t.len(), 1);
    // Unstamped (tiny payload) replies cannot be cross-checked and are accepted.
    assert!(matches!(
        t.reply(key(seq), PayloadStamp::Unstamped, &rx(wall), None, 8, false)
            .0,
        ReplyOutcome::Deliver(_)
    ));
}

#[path = "table_tx_tests.rs"]
mod tx;

// A key used again leaves its first remembered probe in the ring; when that old slot comes
// round and goes, the key's newer probe must stay remembered.
#[test]
fn an_old_slot_of_a_reused_key_going_does_not_forget_the_new_one() {
    let capacity = 65_540;
    let (now, wall, mut t, tx, _rx) = start(4, capacity);
    let later = now + Duration::from_secs(1);
    // Seq 0 times out (remembered first), 65,535 probes are answered, and seq 0 comes round.
    assert_eq!(put(&mut t, &tx, wall, 0, 1000, now).unwrap(), 0);
    t.expire(now, wall);
    for i in 1..=65_535u64 {
        let seq = put(&mut t, &tx, wall, i, 1000 + i, later).unwrap();
        deliver(answer(&mut t, seq, 1000 + i, wall, None));
    }
    assert_eq!(put(&mut t, &tx, wall, 70_000, 7, now).unwrap(), 0);
    t.expire(now, wall);
    // Fill the ring until the first probe's slot is the one that goes.
    let mut settled = 65_537;
    while settled <= capacity {
        let seq = put(&mut t, &tx, wall, 80_000, 8, later).unwrap();
        deliver(answer(&mut t, seq, 8, wall, None));
        settled += 1;
    }
    assert_eq!(t.recent.start, 1, "the first probe's slot went");
    let ev = deliver(answer(&mut t, 0, 7, wall, None));
    assert!(matches!(ev.kind, EventKind::Late(_)), "{:?}", ev.kind);
    assert_eq!(ev.tag, 70_000);
}

// A daemon probing one target at 1 s settled 28,672 probes in 8 hours and kept them all; a
// settled probe is now forgotten RECENT_KEEP after its send, and the ring's memory given back.
#[test]
fn settled_probes_are_forgotten_after_recent_keep() {
    let (now, wall, mut t, tx, _rx) = start(8, 28_672);
    let step = Duration::from_secs(1);
    let mut last_seq = 0;
    for i in 0..2_000u32 {
        let at = now + step * i;
        let w = wall + step * i;
        last_seq = t
            .insert(
                IP,
                ID,
                u64::from(i),
                tx.clone(),
                sp(w),
                u64::from(i),
                at + step,
            )
            .unwrap();
        t.expire(at + step, w + step);
    }
    let kept = usize::try_from(RECENT_KEEP.as_secs()).unwrap();
    assert!(
        (kept - 1..=kept).contains(&t.recent_len()),
        "{} remembered after 2,000 probes at 1 s",
        t.recent_len()
    );
    assert!(t.recent_allocated() <= 4 * kept, "{}", t.recent_allocated());
    // The last probe is still remembered: its reply is late, not unknown.
    let late = wall + step * 2_000 + Duration::from_millis(500);
    assert!(matches!(
        answer(&mut t, last_seq, 1_999, late, None),
        ReplyOutcome::Deliver((
            _,
            ProbeEvent {
                kind: EventKind::Late(_),
                ..
            }
        ))
    ));
    // One sent more than RECENT_KEEP ago is not.
    let old_seq = last_seq.wrapping_sub(u16::try_from(kept).unwrap() + 5);
    assert!(matches!(
        answer(
            &mut t,
            old_seq,
            u64::from(1_999 - kept as u32 - 5),
            late,
            None
        ),
        ReplyOutcome::Unknown
    ));
}

#[test]
fn the_timer_is_woken_only_for_a_deadline_before_the_one_it_sleeps_until() {
    let (now, wall, mut t, tx, _rx) = start(8, 8);
    let second = Duration::from_secs(1);
    // Nothing in flight: the timer waits to be woken, and the first probe wakes it.
    assert_eq!(t.arm(), None);
    let a = put(&mut t, &tx, wall, 1, 1, now + second).unwrap();
    assert!(t.wake_timer(now + second));
    // Woken, it sleeps until that deadline; later ones need no wake-up.
    assert_eq!(t.arm(), Some(now + second));
    let b = put(&mut t, &tx, wall, 2, 2, now + 2 * second).unwrap();
    assert!(!t.wake_timer(now + 2 * second));
    // Both answered: the table is empty, but the timer still sleeps until the first deadline,
    // so a probe due after it needs no wake-up either (the timer finds it when it wakes) ...
    deliver(answer(&mut t, a, 1, wall + Duration::from_millis(1), None));
    deliver(answer(&mut t, b, 2, wall + Duration::from_millis(1), None));
    put(&mut t, &tx, wall, 3, 3, now + 3 * second).unwrap();
    assert!(!t.wake_timer(now + 3 * second));
    assert_eq!(t.arm(), Some(now + 3 * second));
    // ... and one due sooner does, once: the timer is then taken as due at it.
    put(&mut t, &tx, wall, 4, 4, now + second / 2).unwrap();
    assert!(t.wake_timer(now + second / 2));
    put(&mut t, &tx, wall, 5, 5, now + second / 2).unwrap();
    assert!(!t.wake_timer(now + second / 2));
    put(&mut t, &tx, wall, 6, 6, now + second / 4).unwrap();
    assert!(t.wake_timer(now + second / 4));
    assert_eq!(t.arm(), Some(now + second / 4));
    assert_eq!(t.expire(now + second / 4, wall).len(), 1);
    assert_eq!(t.arm(), Some(now + second / 2));
}

// A key remembered again while the ring still holds it (its seq came round without a send
// through this table in between) is found at its newest slot, and stays found when its older
// slot is forgotten as the oldest; the index keeps one entry for it.
#[test]
fn a_key_remembered_twice_is_found_at_its_newest_slot() {
    let (_now, wall, _t, tx, _rx) = start(8, 3);
    let recent = |tag| Recent {
        tag,
        sink: tx.clone(),
        sent: unsent(sp(wall)),
        stamp: 0,
        state: Settled::Lost,
    };
    let mut ring = RecentRing::new(3);
    ring.remember(key(1), recent(10));
    ring.remember(key(1), recent(11));
    assert_eq!(ring.len(), 1);
    assert_eq!(ring.get_mut(&key(1)).map(|r| r.tag), Some(11));
    // Two more: the first slot (tag 10) goes as the oldest, the key stays at its second.
    ring.remember(key(2), recent(20));
    ring.remember(key(3), recent(30));
    assert_eq!(ring.get_mut(&key(1)).map(|r| r.tag), Some(11));
    assert_eq!(ring.len(), 3);
    // One more: the key's own slot goes now.
    ring.remember(key(4), recent(40));
    assert!(ring.get_mut(&key(1)).is_none());
    assert_eq!(ring.len(), 3);
}

// A probe in flight is moved on every send and reply; up to 128 bytes the compiler moves it
// inline, past that with a `memcpy` call each time.
#[test]
fn a_probe_in_flight_fits_in_128_bytes() {
    let size = std::mem::size_of::<Pending>();
    assert!(size <= 128, "{size}");
}
