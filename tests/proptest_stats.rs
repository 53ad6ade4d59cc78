//! Property tests of `pingscope::stats` (issue 8 item 3): whatever outcomes arrive, in whatever
//! order and with whatever duplicates, loss stays in [0, 1], percentiles stay ordered and jitter
//! stays non-negative.

use pingscope::stats::{
    Accumulator, Outcome, Window, ipdv_mean, quantile_sorted, rfc3550, summarize,
};
use proptest::prelude::*;

/// RTTs as a prober sees them: 0 .. 10 s, with a few exact repeats likely.
fn rtt() -> impl Strategy<Value = f64> {
    prop_oneof![0.0f64..10.0, Just(0.0), Just(0.001), Just(10.0)]
}

/// An outcome for one of a small set of sequence numbers, so repeats (duplicates, a timeout
/// after a reply, a reply after a timeout) are frequent.
fn event() -> impl Strategy<Value = (u64, Outcome)> {
    let outcome = prop_oneof![
        rtt().prop_map(Outcome::Reply),
        Just(Outcome::Timeout),
        Just(Outcome::Error),
        Just(Outcome::Late),
        Just(Outcome::Duplicate),
    ];
    (0u64..40, outcome)
}

fn assert_ordered(s: &pingscope::stats::RttStats) -> Result<(), TestCaseError> {
    prop_assert!(s.min <= s.p50, "min {} > p50 {}", s.min, s.p50);
    prop_assert!(s.p50 <= s.p95, "p50 {} > p95 {}", s.p50, s.p95);
    prop_assert!(s.p95 <= s.p99, "p95 {} > p99 {}", s.p95, s.p99);
    prop_assert!(s.p99 <= s.max, "p99 {} > max {}", s.p99, s.max);
    prop_assert!(
        s.min <= s.mean && s.mean <= s.max,
        "mean {} outside [{}, {}]",
        s.mean,
        s.min,
        s.max
    );
    prop_assert!(s.stddev >= 0.0 && s.stddev.is_finite());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Loss ratio is in [0, 1] after every event; a probe settles once, so received + lost is
    /// the number of distinct sequence numbers that got a reply, timeout or error.
    #[test]
    fn loss_in_unit_interval_whatever_arrives(events in prop::collection::vec(event(), 0..300)) {
        let mut acc = Accumulator::new();
        let mut settled = std::collections::HashSet::new();
        for (seq, o) in events {
            acc.on_sent();
            acc.on_outcome(seq, o);
            if matches!(o, Outcome::Reply(_) | Outcome::Timeout | Outcome::Error) {
                settled.insert(seq);
            }
            let t = acc.tally();
            let loss = t.loss_ratio();
            prop_assert!((0.0..=1.0).contains(&loss), "loss {loss} from {t:?}");
            prop_assert_eq!(t.received + t.lost, settled.len() as u64);
            prop_assert!(t.errors <= t.lost);
        }
    }

    /// Duplicates and late replies never change the loss ratio or the received count.
    #[test]
    fn duplicates_never_move_loss(
        base in prop::collection::vec(event(), 1..200),
        extra in prop::collection::vec((0u64..40, prop_oneof![
            Just(Outcome::Duplicate), Just(Outcome::Late)]), 0..200),
    ) {
        let mut acc = Accumulator::new();
        for (seq, o) in &base {
            acc.on_outcome(*seq, *o);
        }
        let before = acc.tally();
        for (seq, o) in &extra {
            acc.on_outcome(*seq, *o);
        }
        // A repeated reply to an already settled probe is a duplicate, not a second reply.
        for (seq, o) in &base {
            if let Outcome::Reply(r) = o {
                acc.on_outcome(*seq, Outcome::Reply(*r));
            }
        }
        let after = acc.tally();
        prop_assert_eq!(after.received, before.received);
        prop_assert_eq!(after.lost, before.lost);
        prop_assert_eq!(after.loss_ratio().to_bits(), before.loss_ratio().to_bits());
        prop_assert!(after.duplicates >= before.duplicates);
        let l = after.loss_ratio();
        prop_assert!((0.0..=1.0).contains(&l));
    }

    /// Percentiles are ordered and lie inside [min, max] for any finite RTT set.
    #[test]
    fn percentiles_ordered(rtts in prop::collection::vec(rtt(), 1..500)) {
        let s = summarize(&rtts);
        prop_assert!(s.is_some());
        if let Some(s) = s {
            assert_ordered(&s)?;
            let min = rtts.iter().copied().fold(f64::INFINITY, f64::min);
            let max = rtts.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            prop_assert_eq!(s.min, min);
            prop_assert_eq!(s.max, max);
        }
    }

    /// Non-finite values are ignored, never poison the summary.
    #[test]
    fn non_finite_values_ignored(
        rtts in prop::collection::vec(rtt(), 0..100),
        junk in prop::collection::vec(prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY)], 0..10),
    ) {
        let mut all = rtts.clone();
        all.extend(junk);
        let clean = summarize(&rtts);
        let mixed = summarize(&all);
        prop_assert_eq!(clean, mixed);
    }

    /// Any quantile lies between its neighbours: q1 <= q2 implies quantile(q1) <= quantile(q2).
    #[test]
    fn quantile_monotone(mut v in prop::collection::vec(rtt(), 1..200), a in 0.0f64..=1.0, b in 0.0f64..=1.0) {
        v.sort_by(f64::total_cmp);
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let (ql, qh) = (quantile_sorted(&v, lo), quantile_sorted(&v, hi));
        prop_assert!(ql.is_some() && qh.is_some());
        if let (Some(ql), Some(qh)) = (ql, qh) {
            prop_assert!(ql <= qh, "q({lo})={ql} > q({hi})={qh}");
            prop_assert!(v[0] <= ql && qh <= v[v.len() - 1]);
        }
    }

    /// Jitter (IPDV mean and RFC 3550) is non-negative and at most the RTT range.
    #[test]
    fn jitter_non_negative(rtts in prop::collection::vec(rtt(), 0..300)) {
        let range = if rtts.is_empty() {
            0.0
        } else {
            rtts.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                - rtts.iter().copied().fold(f64::INFINITY, f64::min)
        };
        match ipdv_mean(&rtts) {
            Some(j) => prop_assert!(j >= 0.0 && j <= range + 1e-9, "ipdv {j} range {range}"),
            None => prop_assert!(rtts.len() < 2),
        }
        match rfc3550(&rtts) {
            Some(j) => prop_assert!(j >= 0.0 && j <= range + 1e-9, "rfc3550 {j} range {range}"),
            None => prop_assert!(rtts.len() < 2),
        }
    }

    /// The accumulator's summary and jitter follow the same rules, whatever the arrival order.
    #[test]
    fn accumulator_summary_ordered(events in prop::collection::vec(event(), 0..300)) {
        let mut acc = Accumulator::new();
        for (seq, o) in events {
            acc.on_outcome(seq, o);
        }
        if let Some(s) = acc.rtt() {
            assert_ordered(&s)?;
        } else {
            prop_assert_eq!(acc.tally().received, 0);
        }
        let (ipdv, r) = acc.jitter();
        prop_assert!(ipdv.is_none_or(|j| j >= 0.0));
        prop_assert!(r.is_none_or(|j| j >= 0.0));
    }

    /// The monitor window never holds more than its capacity, and its loss is in [0, 1] and
    /// equals the losses among the last `capacity` pushes.
    #[test]
    fn window_bounded(cap in 1usize..50, pushes in prop::collection::vec(prop::option::of(rtt()), 0..300)) {
        let mut w = Window::new(cap);
        for (i, p) in pushes.iter().enumerate() {
            w.push(*p);
            let s = w.stats();
            prop_assert!(s.probes <= cap);
            prop_assert_eq!(s.probes, (i + 1).min(cap));
            let tail = &pushes[i + 1 - s.probes..=i];
            let lost = tail.iter().filter(|x| x.is_none()).count();
            prop_assert!((0.0..=1.0).contains(&s.loss_ratio));
            prop_assert!((s.loss_ratio - lost as f64 / s.probes as f64).abs() < 1e-12);
            if let Some(r) = s.rtt {
                assert_ordered(&r)?;
            }
        }
    }
}
