//! Pure, synchronous statistics over probe outcomes: loss, RTT summary, percentiles and jitter.
//!
//! Nothing here knows about sockets, time or tasks; everything is a function of the outcomes
//! fed in, so it is tested with scenario tables. Times are `f64` seconds.
//!
//! Definitions:
//! - loss ratio = lost / (lost + received): only settled probes count, so probes still in
//!   flight never bias it; late replies stay lost (they came after the deadline) and
//!   duplicates never count as received.
//! - jitter (IPDV, RFC 3393/5481): mean |RTTᵢ − RTTᵢ₋₁| over consecutive replies in *sending*
//!   order (by sequence), so reordered arrivals do not create jitter that was not there.
//! - RFC 3550 jitter: J += (|D| − J) / 16 over the same pairs.
//! - percentiles: linear interpolation between closest ranks.

use std::collections::BTreeMap;

mod window;
pub use window::{Window, WindowGauges, WindowStats};

/// Summary of a set of RTTs, in seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RttStats {
    /// Smallest.
    pub min: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Largest.
    pub max: f64,
    /// Population standard deviation.
    pub stddev: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// The `q` quantile (0..=1) of already sorted values, by linear interpolation.
/// `None` for an empty slice.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let q = if q.is_nan() { 0.5 } else { q.clamp(0.0, 1.0) };
    let pos = q * last as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

/// Summarizes RTTs (any order). `None` when there are none.
pub fn summarize(rtts: &[f64]) -> Option<RttStats> {
    if rtts.is_empty() {
        return None;
    }
    let mut sorted: Vec<f64> = rtts.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    let mean = sorted.iter().sum::<f64>() / n;
    let var = sorted.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    Some(RttStats {
        min: sorted[0],
        mean,
        max: sorted[sorted.len() - 1],
        stddev: var.sqrt(),
        p50: quantile_sorted(&sorted, 0.50)?,
        p95: quantile_sorted(&sorted, 0.95)?,
        p99: quantile_sorted(&sorted, 0.99)?,
    })
}

/// Mean |RTTᵢ − RTTᵢ₋₁| over consecutive values. `None` with fewer than two.
pub fn ipdv_mean(rtts_in_order: &[f64]) -> Option<f64> {
    if rtts_in_order.len() < 2 {
        return None;
    }
    let total: f64 = rtts_in_order.windows(2).map(|w| (w[1] - w[0]).abs()).sum();
    Some(total / (rtts_in_order.len() - 1) as f64)
}

/// RFC 3550 smoothed jitter over consecutive values. `None` with fewer than two.
pub fn rfc3550(rtts_in_order: &[f64]) -> Option<f64> {
    if rtts_in_order.len() < 2 {
        return None;
    }
    let mut j = 0.0;
    for w in rtts_in_order.windows(2) {
        j = rfc3550_step(j, (w[1] - w[0]).abs());
    }
    Some(j)
}

/// One step of the RFC 3550 estimator: `J + (|D| − J) / 16`.
pub fn rfc3550_step(j: f64, abs_d: f64) -> f64 {
    j + (abs_d - j) / 16.0
}

/// Counts of outcomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Echo requests sent.
    pub sent: u64,
    /// Replies within the timeout.
    pub received: u64,
    /// Timeouts and ICMP errors.
    pub lost: u64,
    /// Replies after the timeout (already counted in `lost`).
    pub late: u64,
    /// Duplicate replies.
    pub duplicates: u64,
    /// ICMP errors (also counted in `lost`).
    pub errors: u64,
}

impl Tally {
    /// lost / (lost + received); 0 when nothing has settled.
    pub fn loss_ratio(&self) -> f64 {
        let settled = self.lost + self.received;
        if settled == 0 {
            0.0
        } else {
            self.lost as f64 / settled as f64
        }
    }
}

/// What one probe ended as, from the statistics' point of view.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Outcome {
    /// A reply within the timeout, with its RTT in seconds.
    Reply(f64),
    /// No reply within the timeout.
    Timeout,
    /// An ICMP error answered the probe.
    Error,
    /// A reply after the timeout (follows a `Timeout` of the same probe).
    Late,
    /// A further reply (follows a `Reply` of the same probe).
    Duplicate,
}

/// Accumulates every outcome of a run (a CLI host or a session) for its final summary.
///
/// Probes are identified by the caller's sequence number; an outcome for a sequence that
/// already settled only counts as late/duplicate, so a probe is never counted twice.
#[derive(Clone, Debug, Default)]
pub struct Accumulator {
    tally: Tally,
    // seq → RTT of the replies, ordered by seq for IPDV in sending order.
    rtts: BTreeMap<u64, f64>,
    settled: BTreeMap<u64, ()>,
}

impl Accumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts a probe as sent.
    pub fn on_sent(&mut self) {
        self.tally.sent += 1;
    }

    /// Records an outcome of probe `seq`.
    pub fn on_outcome(&mut self, seq: u64, outcome: Outcome) {
        match outcome {
            Outcome::Reply(rtt) => {
                if self.settled.insert(seq, ()).is_none() {
                    self.tally.received += 1;
                    self.rtts.insert(seq, rtt);
                } else {
                    self.tally.duplicates += 1;
                }
            }
            Outcome::Timeout | Outcome::Error => {
                if self.settled.insert(seq, ()).is_none() {
                    self.tally.lost += 1;
                    if outcome == Outcome::Error {
                        self.tally.errors += 1;
                    }
                }
            }
            Outcome::Late => self.tally.late += 1,
            Outcome::Duplicate => self.tally.duplicates += 1,
        }
    }

    /// The counts so far.
    pub fn tally(&self) -> Tally {
        self.tally
    }

    /// RTT summary of the replies so far.
    pub fn rtt(&self) -> Option<RttStats> {
        summarize(&self.rtts.values().copied().collect::<Vec<_>>())
    }

    /// IPDV mean and RFC 3550 jitter over the replies in sequence order.
    pub fn jitter(&self) -> (Option<f64>, Option<f64>) {
        let in_order: Vec<f64> = self.rtts.values().copied().collect();
        (ipdv_mean(&in_order), rfc3550(&in_order))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Equal within a nanosecond (values in seconds); also for the window's tests.
    pub(super) fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn quantiles_interpolate() {
        let v = [1.0, 2.0, 3.0, 4.0];
        let cases = [(0.0, 1.0), (1.0, 4.0), (0.5, 2.5), (0.25, 1.75)];
        for (q, want) in cases {
            let got = quantile_sorted(&v, q);
            assert!(got.is_some_and(|g| close(g, want)), "q={q}: {got:?}");
        }
        assert_eq!(quantile_sorted(&[], 0.5), None);
        assert_eq!(quantile_sorted(&[7.0], 0.99), Some(7.0));
    }

    #[test]
    fn summary_of_known_values() {
        let s = summarize(&[0.010, 0.030, 0.020, 0.040]);
        let Some(s) = s else {
            panic!("summary of four values is None");
        };
        assert!(close(s.min, 0.010) && close(s.max, 0.040));
        assert!(close(s.mean, 0.025));
        // deviations ±15 ms and ±5 ms: variance 125 ms².
        assert!(close(s.stddev, (125e-6f64).sqrt()));
        assert!(close(s.p50, 0.025));
        assert!(s.p50 <= s.p95 && s.p95 <= s.p99 && s.p99 <= s.max);
        assert_eq!(summarize(&[]), None);
        assert_eq!(summarize(&[f64::NAN]), None);
    }

    #[test]
    fn jitter_definitions() {
        // |20-10| + |10-30| + |30-30| = 30 over 3 pairs.
        let rtts = [0.010, 0.020, 0.010, 0.030, 0.030];
        assert!(ipdv_mean(&rtts).is_some_and(|j| close(j, (0.010 + 0.010 + 0.020 + 0.0) / 4.0)));
        assert_eq!(ipdv_mean(&[0.01]), None);
        // RFC 3550 from J=0: one step of |D|=16ms gives 1ms.
        assert!(rfc3550(&[0.0, 0.016]).is_some_and(|j| close(j, 0.001)));
        assert!(ipdv_mean(&[0.02, 0.02, 0.02]).is_some_and(|j| close(j, 0.0)));
    }

    /// Scenario table: outcomes in arrival order → expected tally and jitter.
    #[test]
    fn accumulator_scenarios() {
        use Outcome::*;
        struct Case {
            name: &'static str,
            events: Vec<(u64, Outcome)>,
            want: Tally,
            loss: f64,
            ipdv: Option<f64>,
        }
        let cases = vec![
            Case {
                name: "all replies",
                events: vec![(1, Reply(0.01)), (2, Reply(0.02)), (3, Reply(0.01))],
                want: Tally {
                    sent: 3,
                    received: 3,
                    ..Tally::default()
                },
                loss: 0.0,
                ipdv: Some(0.01),
            },
            Case {
                name: "reordering: jitter is by sending order",
                events: vec![(2, Reply(0.02)), (1, Reply(0.01)), (3, Reply(0.03))],
                want: Tally {
                    sent: 3,
                    received: 3,
                    ..Tally::default()
                },
                loss: 0.0,
                ipdv: Some(0.01),
            },
            Case {
                name: "duplicates never count as received",
                events: vec![
                    (1, Reply(0.01)),
                    (1, Reply(0.011)),
                    (1, Duplicate),
                    (2, Timeout),
                ],
                want: Tally {
                    sent: 2,
                    received: 1,
                    lost: 1,
                    duplicates: 2,
                    ..Tally::default()
                },
                loss: 0.5,
                ipdv: None,
            },
            Case {
                name: "late replies stay lost",
                events: vec![(1, Timeout), (1, Late), (2, Reply(0.01)), (1, Reply(3.0))],
                want: Tally {
                    sent: 2,
                    received: 1,
                    lost: 1,
                    late: 1,
                    duplicates: 1,
                    ..Tally::default()
                },
                loss: 0.5,
                ipdv: None,
            },
            Case {
                name: "icmp errors are losses",
                events: vec![(1, Error), (2, Error), (2, Timeout)],
                want: Tally {
                    sent: 2,
                    lost: 2,
                    errors: 2,
                    ..Tally::default()
                },
                loss: 1.0,
                ipdv: None,
            },
            Case {
                name: "in flight probes do not bias loss",
                events: vec![(1, Reply(0.01)), (2, Timeout)],
                want: Tally {
                    sent: 10,
                    received: 1,
                    lost: 1,
                    ..Tally::default()
                },
                loss: 0.5,
                ipdv: None,
            },
            Case {
                name: "across the 16-bit wire wraparound the caller's sequence keeps order",
                events: vec![
                    (65535, Reply(0.01)),
                    (65536, Reply(0.03)),
                    (65537, Reply(0.01)),
                ],
                want: Tally {
                    sent: 3,
                    received: 3,
                    ..Tally::default()
                },
                loss: 0.0,
                ipdv: Some(0.02),
            },
            Case {
                name: "nothing settled",
                events: vec![],
                want: Tally::default(),
                loss: 0.0,
                ipdv: None,
            },
        ];
        for c in cases {
            let mut acc = Accumulator::new();
            // As many sent as the expected tally says.
            for _ in 0..c.want.sent {
                acc.on_sent();
            }
            for (seq, o) in &c.events {
                acc.on_outcome(*seq, *o);
            }
            assert_eq!(acc.tally(), c.want, "{}", c.name);
            assert!(close(acc.tally().loss_ratio(), c.loss), "{}: loss", c.name);
            let (ipdv, _) = acc.jitter();
            match (ipdv, c.ipdv) {
                (Some(a), Some(b)) => assert!(close(a, b), "{}: ipdv {a} != {b}", c.name),
                (a, b) => assert_eq!(a, b, "{}: ipdv", c.name),
            }
        }
    }
}
