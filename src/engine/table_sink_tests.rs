//! Table tests of the sinks its probes' events go to.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A handler that keeps what it is given.
#[derive(Debug, Default)]
struct Kept(parking_lot::Mutex<Vec<ProbeEvent>>);

impl crate::engine::EventHandler for Kept {
    fn on_event(&self, event: ProbeEvent) {
        self.0.lock().push(event);
    }
}

impl Kept {
    /// (tag, kind) of each event, in the order they came.
    fn kinds(&self) -> Vec<(u64, &'static str)> {
        let kind = |k: &EventKind| match k {
            EventKind::Reply(_) => "reply",
            EventKind::Timeout => "timeout",
            EventKind::Late(_) => "late",
            EventKind::Duplicate(_) => "duplicate",
            _ => "other",
        };
        self.0
            .lock()
            .iter()
            .map(|e| (e.tag, kind(&e.kind)))
            .collect()
    }
}

// The table holds a handler once for all its probes, in flight or remembered: each event still
// goes to its own probe's handler, a slot freed by one handler and taken by another never
// sends the first one's events to the second, and the last probe forgotten drops the handler.
#[test]
fn each_event_goes_to_its_probes_handler_held_once_while_any_probe_is_kept() {
    use std::sync::Arc;
    const RING: u64 = 32;
    let (now, wall, mut t, _, _rx) = start(64, RING as usize);
    let (a, b, c) = (
        Arc::new(Kept::default()),
        Arc::new(Kept::default()),
        Arc::new(Kept::default()),
    );
    let (sa, sb, sc) = (
        EventSink::Handler(a.clone()),
        EventSink::Handler(b.clone()),
        EventSink::Handler(c.clone()),
    );
    let hand = |o: ReplyOutcome| match o {
        ReplyOutcome::Deliver((sink, ev)) => sink.deliver(ev).unwrap(),
        other => panic!("expected a delivery, got {other:?}"),
    };
    // Ten probes each, interleaved; some answered (then again), the others time out (then are
    // answered late).
    let answered = |i: u64| i % 4 < 2;
    let mut seqs = Vec::new();
    for i in 0..20u64 {
        let s = if i % 2 == 0 { &sa } else { &sb };
        seqs.push(
            t.insert(IP, ID, i, s, sp(wall), i, now + Duration::from_secs(1))
                .unwrap(),
        );
    }
    assert_eq!(
        Arc::strong_count(&a),
        3,
        "one clone in the table for ten probes"
    );
    for (i, &seq) in (0u64..).zip(&seqs).filter(|(i, _)| answered(*i)) {
        hand(answer(&mut t, seq, i, wall, Some(64)));
    }
    let later = wall + Duration::from_secs(2);
    for (sink, ev) in t.expire(mono_of(later), later) {
        sink.deliver(ev).unwrap();
    }
    for (i, &seq) in (0u64..).zip(&seqs) {
        hand(answer(&mut t, seq, i, later, Some(64)));
    }
    let expected = |parity: u64| {
        let mine: Vec<u64> = (0..20u64).filter(|i| i % 2 == parity).collect();
        let mut all: Vec<(u64, &str)> = Vec::new();
        all.extend(mine.iter().filter(|&&i| answered(i)).map(|&i| (i, "reply")));
        all.extend(
            mine.iter()
                .filter(|&&i| !answered(i))
                .map(|&i| (i, "timeout")),
        );
        all.extend(
            mine.iter()
                .map(|&i| (i, if answered(i) { "duplicate" } else { "late" })),
        );
        all
    };
    assert_eq!(a.kinds(), expected(0));
    assert_eq!(b.kinds(), expected(1));
    assert_eq!(Arc::strong_count(&b), 3);
    // A third handler's probes push all of a's and b's out of the ring, and take the slots
    // their handlers left.
    let deadline = mono_of(later) + Duration::from_secs(1);
    for i in 0..RING {
        let seq = t
            .insert(IP, ID, 100 + i, &sc, sp(later), 100 + i, deadline)
            .unwrap();
        hand(answer(&mut t, seq, 100 + i, later, None));
    }
    assert_eq!(
        Arc::strong_count(&a),
        2,
        "a's last probe is forgotten, and its clone"
    );
    assert_eq!(Arc::strong_count(&b), 2, "b's too");
    assert_eq!(Arc::strong_count(&c), 3, "c's probes share one clone");
    assert_eq!(c.kinds().len(), RING as usize);
    assert!(
        c.kinds()
            .iter()
            .all(|&(tag, kind)| tag >= 100 && kind == "reply")
    );
    assert_eq!(
        a.kinds().len() + b.kinds().len(),
        40,
        "nothing of c's went to a or b"
    );
    // A probe whose send failed gives its hold back.
    let seq = t
        .insert(IP, ID, 200, &sa, sp(later), 200, deadline)
        .unwrap();
    assert_eq!(Arc::strong_count(&a), 3);
    t.remove(&key(seq));
    assert_eq!(Arc::strong_count(&a), 2);
}
