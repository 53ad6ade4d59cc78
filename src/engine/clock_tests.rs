#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant, SystemTime};

use super::*;

const SEC: i64 = 1_000_000_000;

/// A probe's life on `clock` as the engine lives it: the send pair, then the kernel's TX stamp
/// (from the same wall clock, as the kernel's `CLOCK_REALTIME`), `step_at` (0: between the send
/// pair and the TX stamp, 1: between the TX and RX stamps, 2: between the RX stamp and the
/// receive pair) a step of `step_ns`, then the RX stamp and the receive pair.
fn probe(clock: &SteppableClock, step_ns: i64, step_at: u8, rtt: Duration) -> Measured {
    let sent = clock.pair();
    let step = |at| {
        if at == step_at {
            clock.step(step_ns);
        }
    };
    step(0);
    std::thread::sleep(Duration::from_micros(20));
    let tx = clock.wall();
    step(1);
    std::thread::sleep(rtt);
    let rx_k = clock.wall();
    step(2);
    let received = clock.pair();
    measure(
        &SendTimes {
            user: sent,
            kernel: Stamp::Kernel(tx),
        },
        &RecvTimes {
            user: received,
            kernel: Stamp::Kernel(rx_k),
        },
    )
}

/// A forward and a backward step of 1 s during probes: every RTT stays within its monotonic
/// bounds (never 0), and the counter sees two steps, however many probes straddle each.
#[test]
fn steps_of_one_second_are_counted_once_each_and_never_give_a_bad_rtt() {
    let clock = SteppableClock::default();
    let steps = StepCounter::default();
    let mut counted = 0;
    let mut check = |m: Measured| {
        assert!(m.rtt > Duration::ZERO, "{m:?}");
        assert!(m.rtt <= m.bound, "{m:?}");
        if steps.observe(&m) {
            counted += 1;
        }
        m
    };
    let rtt = Duration::from_millis(2);
    let calm = check(probe(&clock, 0, 9, rtt));
    assert_eq!(
        (calm.step, calm.tx_fallback, calm.rx_fallback),
        (None, None, None)
    );
    for at in [0u8, 1, 2] {
        // Forward, then back again: the wall clock ends where it began.
        let fwd = check(probe(&clock, SEC, at, rtt));
        let back = check(probe(&clock, -SEC, at, rtt));
        for m in [fwd, back] {
            assert!(m.step.is_some(), "step at {at} seen: {m:?}");
            // Each kernel stamp fits one epoch only: the RTT is still the kernel's.
            assert_eq!(
                (m.tx_fallback, m.rx_fallback),
                (None, None),
                "step at {at}: {m:?}"
            );
            assert!(m.rtt >= rtt, "step at {at}: {m:?}");
        }
    }
    // Six probes straddled a step, but the clock took two distinct offsets after the first:
    // +1 s and back to 0; each change of offset is one step.
    assert_eq!(counted, 6, "each probe here saw a new offset");
    // Two probes straddling the same step count it once.
    let clock = SteppableClock::default();
    let steps = StepCounter::default();
    let a = clock.pair();
    let b = clock.pair();
    clock.step(SEC);
    let after = |p: ClockPair| {
        measure(
            &SendTimes {
                user: p,
                kernel: Stamp::User(Fallback::Disabled),
            },
            &RecvTimes {
                user: clock.pair(),
                kernel: Stamp::User(Fallback::Disabled),
            },
        )
    };
    let (ma, mb) = (after(a), after(b));
    assert!(steps.observe(&ma));
    assert!(!steps.observe(&mb), "the same step is counted once");
    clock.step(-SEC);
    let mc = after(clock.pair());
    assert!(
        !steps.observe(&mc),
        "a probe that straddles no step sees none"
    );
    for m in [ma, mb, mc] {
        assert!(m.rtt > Duration::ZERO && m.rtt <= m.bound, "{m:?}");
    }
}

/// The scenario of the issue: one forward and one backward step of 1 s during probes, nothing
/// else; `clock_steps_total` ends at 2.
#[test]
fn a_forward_and_a_backward_step_count_two() {
    let clock = SteppableClock::default();
    let steps = StepCounter::default();
    let rtt = Duration::from_millis(1);
    let mut counted = 0;
    for (step, at) in [(0, 9), (SEC, 1), (0, 9), (-SEC, 2), (0, 9)] {
        let m = probe(&clock, step, at, rtt);
        assert!(
            m.rtt > Duration::ZERO && m.rtt <= m.bound && m.rtt >= rtt,
            "{m:?}"
        );
        counted += u32::from(steps.observe(&m));
    }
    assert_eq!(counted, 2);
}

fn pair_at(wall: Wall, mono: Mono) -> ClockPair {
    ClockPair {
        wall,
        mono,
        spread: Duration::ZERO,
    }
}

/// Table of cases: (TX stamp, RX stamp, receive pair) as offsets in µs from the send pair, and
/// what the RTT and its fallbacks must be.
#[test]
fn measure_cases() {
    let w0 = Wall::from_nanos(0) + Duration::from_secs(1_800_000_000);
    let m0 = Mono::now();
    let us = |n: i64| {
        let d = Duration::from_micros(n.unsigned_abs());
        if n >= 0 { w0 + d } else { w0 - d }
    };
    struct Case {
        name: &'static str,
        tx: Stamp,
        rx: Stamp,
        /// Receive pair: wall offset µs, monotonic offset µs.
        read: (i64, u64),
        rtt_us: u64,
        fallbacks: (Option<Fallback>, Option<Fallback>),
    }
    let k = |n| Stamp::Kernel(us(n));
    let cases = [
        Case {
            name: "kernel both ends, no step",
            tx: k(15),
            rx: k(1015),
            read: (3000, 3000),
            rtt_us: 1000,
            fallbacks: (None, None),
        },
        Case {
            name: "user TX, kernel RX",
            tx: Stamp::User(Fallback::Disabled),
            rx: k(1015),
            read: (3000, 3000),
            rtt_us: 1015,
            fallbacks: (Some(Fallback::Disabled), None),
        },
        Case {
            name: "user both ends: the monotonic interval",
            tx: Stamp::User(Fallback::Unsupported),
            rx: Stamp::User(Fallback::Missing),
            read: (3000, 3000),
            rtt_us: 3000,
            fallbacks: (Some(Fallback::Unsupported), Some(Fallback::Missing)),
        },
        Case {
            name: "TX awaited but never read counts as missing",
            tx: Stamp::Awaited,
            rx: k(1015),
            read: (3000, 3000),
            rtt_us: 1015,
            fallbacks: (Some(Fallback::Missing), None),
        },
        Case {
            name: "backward step before the TX stamp: both stamps after it",
            tx: k(15 - 1_000_000),
            rx: k(1015 - 1_000_000),
            read: (3000 - 1_000_000, 3000),
            rtt_us: 1000,
            fallbacks: (None, None),
        },
        Case {
            name: "forward step between the stamps",
            tx: k(15),
            rx: k(1015 + 1_000_000),
            read: (3000 + 1_000_000, 3000),
            rtt_us: 1000,
            fallbacks: (None, None),
        },
        Case {
            name: "kernel RX stamp outside the bounds without a step",
            tx: k(15),
            rx: k(9000),
            read: (3000, 3000),
            rtt_us: 3000,
            fallbacks: (Some(Fallback::Implausible), Some(Fallback::Implausible)),
        },
        Case {
            name: "a step smaller than the RTT leaves the RX stamp ambiguous",
            tx: k(15),
            rx: k(1015 - 2000),
            read: (10_000 - 2000, 10_000),
            rtt_us: 10_000,
            fallbacks: (Some(Fallback::ClockStep), Some(Fallback::ClockStep)),
        },
    ];
    for c in cases {
        let sent = SendTimes {
            user: pair_at(w0, m0),
            kernel: c.tx,
        };
        let read = RecvTimes {
            user: pair_at(us(c.read.0), m0 + Duration::from_micros(c.read.1)),
            kernel: c.rx,
        };
        let m = measure(&sent, &read);
        assert_eq!(m.rtt, Duration::from_micros(c.rtt_us), "{}: {m:?}", c.name);
        assert_eq!(
            (m.tx_fallback, m.rx_fallback),
            c.fallbacks,
            "{}: {m:?}",
            c.name
        );
        assert!(
            m.rtt > Duration::ZERO && m.rtt <= m.bound,
            "{}: {m:?}",
            c.name
        );
    }
}

/// Same instants on both sides (a clock too coarse to tell them apart) still give a positive RTT.
#[test]
fn never_zero() {
    let p = pair_at(Wall::from_nanos(0), Mono::now());
    let m = measure(
        &SendTimes {
            user: p,
            kernel: Stamp::Kernel(p.wall),
        },
        &RecvTimes {
            user: p,
            kernel: Stamp::Kernel(p.wall),
        },
    );
    assert!(m.rtt > Duration::ZERO, "{m:?}");
}

/// A reading turned into an `Instant` for a timer is never earlier than the moment it names,
/// and no more than a few microseconds later; turned back it is the same reading within as much.
#[test]
fn a_monotonic_reading_becomes_an_instant_never_early() {
    for _ in 0..1000 {
        let before = Instant::now();
        let m = Mono::now();
        let after = Instant::now();
        let i = m.instant();
        assert!(i >= before, "{i:?} before {before:?}");
        assert!(
            i.saturating_duration_since(after) < Duration::from_millis(1),
            "{i:?} far after {after:?}"
        );
        let back = Mono::of(i);
        assert!(back.ns_since(m).abs() < 1_000_000, "{back:?} vs {m:?}");
    }
    // Far before the anchor and far after it.
    let m = Mono::now();
    let early = m - Duration::from_secs(3600);
    assert_eq!(
        m.instant().duration_since(early.instant()),
        Duration::from_secs(3600)
    );
    let late = m + Duration::from_secs(86_400);
    assert_eq!(
        late.instant().duration_since(m.instant()),
        Duration::from_secs(86_400)
    );
    assert_eq!(late.since(m), Duration::from_secs(86_400));
    assert_eq!(m.since(late), Duration::ZERO, "never negative");
    assert_eq!(m.ns_since(late), -86_400 * SEC);
    // An `Instant` before the anchor (taken at the first use) and one after it keep their
    // distance exactly.
    let t = Instant::now();
    let before = t
        .checked_sub(Duration::from_secs(1))
        .expect("the machine has been up a second");
    assert_eq!(Mono::of(t).ns_since(Mono::of(before)), SEC);
}

/// The wall clock's readings are the machine's `SystemTime`, to the nanosecond both ways.
#[test]
fn a_wall_reading_is_the_system_time_it_names() {
    let before = SystemTime::now();
    let w = Wall::now();
    let after = SystemTime::now();
    assert!(before <= w.time() && w.time() <= after, "{w:?}");
    for t in [
        SystemTime::UNIX_EPOCH,
        SystemTime::UNIX_EPOCH + Duration::new(1_765_000_000, 123_456_789),
        SystemTime::UNIX_EPOCH - Duration::new(1, 1),
    ] {
        assert_eq!(Wall::of(t).time(), t);
    }
    assert_eq!(
        Wall::of(SystemTime::UNIX_EPOCH - Duration::new(1, 1)).nanos(),
        -SEC - 1
    );
    assert_eq!(Wall::from_nanos(-5).unix_nanos(), 0, "before the epoch");
    assert_eq!(Wall::from_nanos(7).unix_nanos(), 7);
    assert_eq!(
        Wall::from_nanos(i64::MAX) + Duration::from_secs(1),
        Wall::from_nanos(i64::MAX)
    );
    assert_eq!(Wall::from_nanos(10).shifted(-20), Wall::from_nanos(-10));
}

/// A kernel timestamp's fields make a reading only when they are a valid `timespec` in range.
#[test]
fn a_timespec_makes_a_reading_only_when_valid() {
    assert_eq!(
        Wall::from_timespec(2, 5),
        Some(Wall::from_nanos(2 * SEC + 5))
    );
    assert_eq!(
        Wall::from_timespec(0, 999_999_999),
        Some(Wall::from_nanos(999_999_999))
    );
    assert_eq!(
        Wall::from_timespec(1, 1_000_000_000),
        None,
        "nanoseconds past a second"
    );
    assert_eq!(Wall::from_timespec(1, -1), None, "negative nanoseconds");
    assert_eq!(
        Wall::from_timespec(i64::MAX / SEC + 1, 0),
        None,
        "past 2262"
    );
    assert_eq!(Wall::from_timespec(i64::MIN, 0), None);
}
