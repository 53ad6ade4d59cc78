//! Property tests of the engine's in-flight table across sequence wraparound (issue 8 item 3).
//!
//! `src/engine/table_tests.rs` already checks that every probe settles exactly once within the
//! capacity over short runs; these runs go past 65,536 probes to one address, with some probes
//! held in flight across the wrap, and check that:
//! - an allocated sequence number is never one still in flight for that address;
//! - a reply carrying the stamp of an older probe whose sequence number was reused is never
//!   delivered (it is `Stale` or `Unknown`);
//! - the table never holds more than its capacity, the memory of settled probes never more than
//!   its own bound.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use pingscope::engine::clock::{ClockPair, Fallback, Mono, RecvTimes, Stamp, Wall};
use pingscope::engine::packet::PayloadStamp;
use pingscope::engine::table::{Full, InFlightTable, Key, ReplyOutcome};
use pingscope::engine::{EventKind, ProbeEvent};
use proptest::prelude::*;
use tokio::sync::mpsc;

const IDENT: u16 = 0x5151;

/// A small deterministic generator so one proptest case can drive 70,000 steps without a
/// 70,000-element strategy (which would make shrinking useless).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    #[test]
    fn wraparound_never_reuses_live_sequence_nor_delivers_stale(
        seed in any::<u64>(),
        cap in 2usize..12,
        recent_cap in 1usize..2000,
        steps in 65_600u32..70_000,
        hold_per_mille in 0u64..20,
        reply_per_mille in 0u64..1000,
    ) {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));
        let start = Mono::now();
        let wall = Wall::from_nanos(0) + Duration::from_secs(1_700_000_000);
        let mut t = InFlightTable::new(cap, recent_cap);
        let (tx, _rx) = mpsc::channel::<ProbeEvent>(1);
        let tx = pingscope::engine::EventSink::from(tx);
        let mut rng = Lcg(seed);
        // One clock pair for every send and reply: these runs are about sequences, not RTTs.
        let sp = |wall| ClockPair { wall, mono: start, spread: Duration::ZERO };
        let rx = |wall| RecvTimes { user: sp(wall), kernel: Stamp::User(Fallback::Disabled) };
        // seq → stamp of the probe that holds it now (in flight); stamps are unique per probe.
        let mut live: HashMap<u16, u64> = HashMap::new();
        // seq → stamp of every probe ever given that seq, newest last (only the last 2 kept).
        let mut history: HashMap<u16, Vec<u64>> = HashMap::new();
        let mut now = start;
        for stamp in 0..u64::from(steps) {
            // Held probes stay in flight for up to 70,000 steps, across the wrap; one slot is
            // always kept free so the run goes on.
            let hold = t.len() + 1 < cap && rng.next() % 1000 < hold_per_mille;
            let deadline = if hold {
                now + Duration::from_micros(1 + rng.next() % 70_000)
            } else {
                // Past by the next step; a reply before it (RTT > 0) is within the timeout.
                now + Duration::from_nanos(500)
            };
            match t.insert(ip, IDENT, stamp, tx.clone(), sp(wall), stamp, deadline) {
                Ok(seq) => {
                    prop_assert!(!live.contains_key(&seq), "seq {seq} allocated while in flight");
                    live.insert(seq, stamp);
                    let h = history.entry(seq).or_default();
                    h.push(stamp);
                    if h.len() > 2 {
                        h.remove(0);
                    }
                    let key = Key { ip, ident: IDENT, seq };
                    // A reply with the previous holder's stamp must never be delivered.
                    if h.len() == 2 {
                        let old = h[0];
                        let out = t.reply(key, PayloadStamp::Stamp(old), &rx(wall), None, 8, false).0;
                        prop_assert!(
                            matches!(out, ReplyOutcome::Stale | ReplyOutcome::Unknown),
                            "stale stamp {old} for seq {seq} delivered: {out:?}"
                        );
                    }
                    if !hold && rng.next() % 1000 < reply_per_mille {
                        let out = t.reply(key, PayloadStamp::Stamp(stamp), &rx(wall), None, 8, false).0;
                        match out {
                            ReplyOutcome::Deliver((_, ev)) => {
                                prop_assert_eq!(ev.tag, stamp);
                                prop_assert!(matches!(ev.kind, EventKind::Reply(_)));
                                live.remove(&seq);
                            }
                            other => prop_assert!(false, "own reply not delivered: {other:?}"),
                        }
                    }
                }
                Err(Full) => prop_assert_eq!(t.len(), cap),
            }
            // Time moves on: every non-held probe times out.
            now += Duration::from_micros(1);
            for (_, ev) in t.expire(now, wall) {
                prop_assert!(ev.kind.is_terminal());
                live.remove(&ev.seq);
            }
            prop_assert!(t.len() <= cap);
            prop_assert_eq!(t.len(), live.len());
            prop_assert!(t.recent_len() <= recent_cap);
        }
        // The counter went all the way round at least once.
        prop_assert!(history.values().any(|h| h.len() == 2));
    }
}
