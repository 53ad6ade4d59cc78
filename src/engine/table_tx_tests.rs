//! Table tests of clock steps, TX timestamps and random operation sequences.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The wall clock steps back 1 s between a probe's send and its reply (the old table recorded
/// that as an RTT of 0): the RTT comes from the monotonic clock instead, within its bounds.
#[test]
fn clock_stepping_back_keeps_the_rtt_within_the_monotonic_bounds() {
    let (mut t, seq, now, wall) = one_probe(0, 1, Duration::from_secs(5));
    // Read 800 µs after the send on the monotonic clock; the kernel stamped the reply 700 µs
    // after the send, but on a wall clock stepped back by 1 s in between.
    let stepped = wall + Duration::from_micros(800) - Duration::from_secs(1);
    let times = RecvTimes {
        user: ClockPair {
            wall: stepped,
            mono: now + Duration::from_micros(800),
            spread: Duration::ZERO,
        },
        kernel: Stamp::Kernel(wall + Duration::from_micros(700) - Duration::from_secs(1)),
    };
    let (out, m) = t.reply(key(seq), PayloadStamp::Stamp(1), &times, None, 8, false);
    let ev = deliver(out);
    let m = m.expect("a reply is measured");
    assert!(m.step.is_some(), "the step is seen: {m:?}");
    match ev.kind {
        EventKind::Reply(ReplyInfo { rtt, .. }) => {
            assert!(
                rtt > Duration::ZERO && rtt <= Duration::from_micros(800),
                "{rtt:?}"
            );
            // The kernel's RX timestamp fits only the epoch after the step; the send pair
            // stands in for TX (user-space here), so the RTT is 700 µs.
            assert_eq!(rtt, Duration::from_micros(700));
        }
        other => panic!("expected a reply, got {other:?}"),
    }
}

/// A probe waiting for its kernel TX timestamp is left alone once (`AwaitTx`), takes the
/// timestamp when it matches, and falls back (`mismatch`) when its OPT_ID does not.
#[test]
fn tx_timestamps_attach_only_when_verified() {
    let (now, wall, mut t, tx, _rx) = start(4, 4);
    let deadline = now + Duration::from_secs(5);
    let a = put(&mut t, &tx, wall, 0, 11, deadline).unwrap();
    let b = put(&mut t, &tx, wall, 1, 22, deadline).unwrap();
    t.set_sent(&key(a), sp(wall), Stamp::Awaited, 7);
    t.set_sent(&key(b), sp(wall), Stamp::Awaited, 8);
    let reply_at = rx(wall + Duration::from_micros(500));
    // Not yet stamped: the caller is asked to read the error queue first.
    assert!(matches!(
        t.reply(key(a), PayloadStamp::Stamp(11), &reply_at, None, 64, true)
            .0,
        ReplyOutcome::AwaitTx
    ));
    // A wrong payload stamp, or a probe not in flight, attaches nothing.
    let tx_at = wall + Duration::from_micros(100);
    assert_eq!(
        t.tx_timestamp(&key(a), PayloadStamp::Stamp(22), 7, tx_at),
        TxMatch::Unknown
    );
    assert_eq!(
        t.tx_timestamp(&key(9), PayloadStamp::Stamp(11), 7, tx_at),
        TxMatch::Unknown
    );
    assert_eq!(
        t.tx_timestamp(&key(a), PayloadStamp::Stamp(11), 7, tx_at),
        TxMatch::Attached
    );
    // The OPT_ID of b's timestamp is not the count recorded for it: b keeps its user time.
    assert_eq!(
        t.tx_timestamp(&key(b), PayloadStamp::Stamp(22), 9, tx_at),
        TxMatch::Mismatch { tx_id: 8 }
    );
    let (out, m) = t.reply(key(a), PayloadStamp::Stamp(11), &reply_at, None, 64, true);
    let m = m.unwrap();
    assert_eq!((m.tx_fallback, m.rtt), (None, Duration::from_micros(400)));
    assert!(matches!(deliver(out).kind, EventKind::Reply(_)));
    let (_, m) = t.reply(key(b), PayloadStamp::Stamp(22), &reply_at, None, 64, true);
    let m = m.unwrap();
    assert_eq!(
        (m.tx_fallback, m.rtt),
        (Some(Fallback::Mismatch), Duration::from_micros(500))
    );
}

#[derive(Clone, Debug)]
enum Op {
    Send { dest: u8, timeout_ms: u64 },
    Reply { pick: usize },
    Error { pick: usize },
    Advance { ms: u64 },
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        (0u8..3, 1u64..50).prop_map(|(dest, timeout_ms)| Op::Send { dest, timeout_ms }),
        any::<usize>().prop_map(|pick| Op::Reply { pick }),
        any::<usize>().prop_map(|pick| Op::Error { pick }),
        (0u64..30).prop_map(|ms| Op::Advance { ms }),
    ]
}

proptest::proptest! {
    /// Whatever happens, every probe gets exactly one terminal event, late and duplicate events
    /// only follow it, and the table never holds more than its capacity.
    #[test]
    fn every_probe_settles_exactly_once(ops in proptest::collection::vec(op(), 1..200)) {
        let (start, wall) = t0();
        let cap = 8;
        let mut t = InFlightTable::new(cap, 64);
        let (tx, _rx) = mpsc::channel::<ProbeEvent>(1);
        let tx = EventSink::from(tx);
        let mut now = start;
        let mut sent: Vec<(Key, u64)> = Vec::new(); // (key, stamp); tag = index
        let mut terminal: HashMap<u64, usize> = HashMap::new();
        let check = |ev: &ProbeEvent, terminal: &mut HashMap<u64, usize>| {
            if ev.kind.is_terminal() {
                *terminal.entry(ev.tag).or_default() += 1;
            } else {
                assert_eq!(terminal.get(&ev.tag), Some(&1), "late/duplicate before terminal: {ev:?}");
            }
        };
        for op in ops {
            match op {
                Op::Send { dest, timeout_ms } => {
                    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, dest + 1));
                    let tag = sent.len() as u64;
                    match t.insert(ip, ID, tag, tx.clone(), sp(wall), tag, now + Duration::from_millis(timeout_ms)) {
                        Ok(seq) => sent.push((Key { ip, ident: ID, seq }, tag)),
                        Err(Full) => assert_eq!(t.len(), cap),
                    }
                }
                Op::Reply { pick } if !sent.is_empty() => {
                    let (key, stamp) = sent[pick % sent.len()];
                    if let ReplyOutcome::Deliver((_, ev)) = t.reply(key, PayloadStamp::Stamp(stamp), &rx(wall), None, 8, false).0 {
                        assert_eq!(ev.tag, stamp);
                        check(&ev, &mut terminal);
                    }
                }
                Op::Error { pick } if !sent.is_empty() => {
                    let (key, stamp) = sent[pick % sent.len()];
                    let info = IcmpErrorInfo {
                        kind: IcmpErrorKind::TimeExceeded,
                        icmp_type: 11,
                        icmp_code: 0,
                        from: IP,
                        rtt: None,
                    };
                    if let Some((_, ev)) = t.error(key, info, wall.time()) {
                        assert_eq!(ev.tag, stamp);
                        check(&ev, &mut terminal);
                    }
                }
                Op::Reply { .. } | Op::Error { .. } => {}
                Op::Advance { ms } => {
                    now += Duration::from_millis(ms);
                    for (_, ev) in t.expire(now, wall) {
                        check(&ev, &mut terminal);
                    }
                }
            }
            assert!(t.len() <= cap);
        }
        for (_, ev) in t.expire(now + Duration::from_secs(1), wall) {
            check(&ev, &mut terminal);
        }
        assert!(t.is_empty());
        for (_, tag) in &sent {
            assert_eq!(terminal.get(tag), Some(&1), "tag {tag} settled once");
        }
    }
}
