//! The window of a monitor: its last settled probes, behind the `pingscope_window_*` gauges,
//! outage detection and the status API.

use std::collections::VecDeque;

use super::{RttStats, summarize};

/// The last `capacity` settled probes of a monitor, behind the `pingscope_window_*` gauges.
#[derive(Clone, Debug)]
pub struct Window {
    /// At most the config's window limit (100,000): a `u32`, so that with `lost` it takes
    /// the room of one `usize`.
    capacity: u32,
    /// Losses in `slots`, kept as they come and go so that [`Window::loss`] (after every probe,
    /// for outage detection) reads no slot: a pass over a window of thousands would cost
    /// more than the probe.
    lost: u32,
    // RTT of a reply in seconds, NaN for a loss: a quarter of the size of `Option<f64>`, which
    // counts at tens of thousands of targets. `f32` keeps 24 significant bits, a relative error
    // of 6e-8: under half a nanosecond below 8 ms, so rounding to whole nanoseconds on the way
    // out (see [`seconds`]) gives back the measured RTT exactly there. Statistics are computed
    // in `f64`. A non-finite RTT is kept as infinity (a reply, outside the RTT statistics).
    slots: VecDeque<f32>,
}

const LOST: f32 = f32::NAN;

/// A stored RTT in seconds, rounded to the nanosecond (RTTs are measured in nanoseconds).
fn seconds(stored: f32) -> f64 {
    to_nanosecond(f64::from(stored))
}

/// Rounds seconds to the nanosecond. Not per slot on the probe path: without SSE4.1 `round` is a
/// libm call, which tripled the cost of [`Window::gauges`].
fn to_nanosecond(s: f64) -> f64 {
    (s * 1e9).round() / 1e9
}

/// What the window gauges need, from [`Window::gauges`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowGauges {
    /// Settled probes in the window.
    pub probes: usize,
    /// Lost / settled.
    pub loss_ratio: f64,
    /// (min, mean, max, stddev) of the replies, in seconds.
    pub rtt: Option<(f64, f64, f64, f64)>,
}

/// Statistics of a [`Window`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowStats {
    /// Settled probes in the window.
    pub probes: usize,
    /// Lost / settled.
    pub loss_ratio: f64,
    /// RTT summary of the replies in the window.
    pub rtt: Option<RttStats>,
}

impl Window {
    /// A window over the last `capacity` probes (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = u32::try_from(capacity.max(1)).unwrap_or(u32::MAX);
        Self {
            capacity,
            lost: 0,
            slots: VecDeque::with_capacity(capacity as usize),
        }
    }

    /// Pushes a settled probe: `Some(rtt)` for a reply, `None` for a loss.
    pub fn push(&mut self, rtt: Option<f64>) {
        if self.slots.len() >= self.capacity as usize
            && self.slots.pop_front().is_some_and(f32::is_nan)
        {
            self.lost -= 1;
        }
        if rtt.is_none() {
            self.lost += 1;
        }
        self.slots.push_back(match rtt {
            None => LOST,
            Some(v) if v.is_nan() => f32::INFINITY,
            // Rounds to the nearest f32; beyond its range, infinity (outside the statistics).
            #[allow(clippy::cast_possible_truncation)]
            Some(v) => v as f32,
        });
    }

    /// Probes in the window and the share of them lost: what outage detection needs after
    /// every probe (without the RTT figures of [`Window::gauges`]).
    pub fn loss(&self) -> (usize, f64) {
        (self.slots.len(), self.lost_share(self.lost as usize))
    }

    fn lost_share(&self, lost: usize) -> f64 {
        if self.slots.is_empty() {
            0.0
        } else {
            lost as f64 / self.slots.len() as f64
        }
    }

    /// Loss and min/mean/max/stddev, without allocating or sorting: what the
    /// `pingscope_window_*` gauges and outage detection need after every probe, in two passes
    /// (the loss and the sums, then the deviations). Percentiles come from [`Window::stats`].
    pub fn gauges(&self) -> WindowGauges {
        let (mut n, mut sum, mut min, mut max) = (0usize, 0.0f64, f64::INFINITY, f64::NEG_INFINITY);
        let mut lost = 0;
        for &slot in &self.slots {
            if slot.is_nan() {
                lost += 1;
            } else if slot.is_finite() {
                let rtt = f64::from(slot);
                n += 1;
                sum += rtt;
                min = min.min(rtt);
                max = max.max(rtt);
            }
        }
        let (probes, loss_ratio) = (self.slots.len(), self.lost_share(lost));
        let rtt = (n > 0).then(|| {
            let mean = sum / n as f64;
            let var = self.replies().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
            // Min and max are RTTs of the window: exact below 8 ms once rounded (see `slots`).
            (to_nanosecond(min), mean, to_nanosecond(max), var.sqrt())
        });
        WindowGauges {
            probes,
            loss_ratio,
            rtt,
        }
    }

    /// The finite RTTs of the window's replies, in seconds as stored (not rounded).
    fn replies(&self) -> impl Iterator<Item = f64> + '_ {
        self.slots
            .iter()
            .filter(|v| v.is_finite())
            .map(|v| f64::from(*v))
    }

    /// Current statistics.
    pub fn stats(&self) -> WindowStats {
        let rtts: Vec<f64> = self
            .slots
            .iter()
            .filter(|v| !v.is_nan())
            .map(|v| seconds(*v))
            .collect();
        let probes = self.slots.len();
        let lost = probes - rtts.len();
        WindowStats {
            probes,
            loss_ratio: if probes == 0 {
                0.0
            } else {
                lost as f64 / probes as f64
            },
            rtt: summarize(&rtts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::tests::close;

    #[test]
    fn window_gauges_agree_with_the_full_statistics() {
        let mut w = Window::new(5);
        assert_eq!(w.gauges().rtt, None);
        for rtt in [
            Some(0.010),
            None,
            Some(0.030),
            Some(0.020),
            Some(0.050),
            None,
            // A reply without a usable RTT: counted as received, outside the RTT figures.
            Some(f64::NAN),
            Some(0.040),
        ] {
            w.push(rtt);
            let (g, s) = (w.gauges(), w.stats());
            assert_eq!((g.probes, g.loss_ratio), w.loss());
            assert_eq!(g.probes, s.probes);
            assert!(close(g.loss_ratio, s.loss_ratio));
            match (g.rtt, s.rtt) {
                (Some((min, mean, max, sd)), Some(r)) => {
                    assert!(close(min, r.min) && close(mean, r.mean) && close(max, r.max));
                    assert!(close(sd, r.stddev));
                }
                (a, b) => assert_eq!(a.is_none(), b.is_none()),
            }
        }
    }

    proptest::proptest! {
        // The loss kept as probes come and go is the loss of the last `capacity` probes, at
        // every step (windows that fill, overflow and turn over many times).
        #[test]
        fn the_kept_loss_is_that_of_the_last_probes(
            capacity in 1usize..12,
            lost in proptest::collection::vec(proptest::bool::weighted(0.3), 0..80),
        ) {
            let mut w = Window::new(capacity);
            for (i, &l) in lost.iter().enumerate() {
                w.push((!l).then_some(0.001));
                let last = &lost[(i + 1).saturating_sub(capacity)..=i];
                let expected = last.iter().filter(|l| **l).count() as f64 / last.len() as f64;
                proptest::prop_assert_eq!(w.loss(), (last.len(), expected));
            }
        }
    }

    // Below 8 ms the f32 slot plus rounding to the nanosecond gives back every RTT exactly.
    #[test]
    fn short_rtts_come_back_exactly() {
        for ns in [1u64, 999, 13_901, 45_123, 1_000_000, 7_999_999] {
            let rtt = std::time::Duration::from_nanos(ns).as_secs_f64();
            let mut w = Window::new(1);
            w.push(Some(rtt));
            assert_eq!(w.stats().rtt.map(|r| r.min), Some(rtt), "{ns} ns");
            assert_eq!(
                w.gauges().rtt.map(|g| (g.0, g.2)),
                Some((rtt, rtt)),
                "{ns} ns"
            );
        }
    }

    #[test]
    fn window_keeps_the_last_n() {
        let mut w = Window::new(4);
        for rtt in [Some(0.1), None, Some(0.3), Some(0.2), None, None] {
            w.push(rtt);
        }
        // Last four: 0.3, 0.2, lost, lost.
        let s = w.stats();
        assert_eq!(s.probes, 4);
        assert!(close(s.loss_ratio, 0.5));
        // Kept as f32: within 6e-8 of each RTT.
        let rtt = s.rtt.map(|r| (r.min, r.max));
        let near = |a: f64, b: f64| (a - b).abs() <= 6e-8 * b;
        assert!(rtt.is_some_and(|(min, max)| near(min, 0.2) && near(max, 0.3)));
        assert_eq!(Window::new(0).stats().probes, 0);
    }
}
