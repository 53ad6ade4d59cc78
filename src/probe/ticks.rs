//! The cadence of a run: tick k is due at `start + k·interval`, so processing time never drifts
//! it; a run more than an interval behind skips the ticks it missed instead of bursting. Shared
//! by the runner and the monitors' tick loop.

use std::time::Duration;

use tokio::time::Instant;

/// The schedule of one address's probes: the next tick itself, so that the send path reads it
/// rather than working out `start + k·interval` (a multiplication and a checked addition of
/// `Duration`s, twice a probe); moving it on by whole intervals keeps it on that grid exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticks {
    due: Instant,
    interval: Duration,
}

impl Ticks {
    /// Ticks from `start` every `interval`.
    pub fn new(start: Instant, interval: Duration) -> Self {
        Self {
            due: start,
            interval,
        }
    }

    /// When the next tick is due.
    pub fn due(&self) -> Instant {
        self.due
    }

    /// Moves past the tick just taken at `now`, skipping the ticks that are already over. A
    /// tick past the end of the clock's range stays where it is.
    pub fn advance(&mut self, now: Instant) {
        let mut next = self.due.checked_add(self.interval);
        if let Some(due) = next
            && due <= now
        {
            // The first tick after `now`: ticks due, due + interval, … up to `now` are over.
            let over =
                now.saturating_duration_since(due).as_nanos() / self.interval.as_nanos().max(1) + 1;
            let ns = self.interval.as_nanos().saturating_mul(over);
            next = due.checked_add(Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX)));
        }
        if let Some(due) = next {
            self.due = due;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_its_phase_and_skips_what_it_missed() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut t = Ticks::new(start, ms(100));
        assert_eq!(t.due(), start);
        // Taken 30 ms late: the next tick is still on the grid.
        t.advance(start + ms(30));
        assert_eq!(t.due(), start + ms(100));
        // Taken 350 ms late: ticks 2 and 3 are skipped, not sent in a burst.
        t.advance(start + ms(450));
        assert_eq!(t.due(), start + ms(500));
        // Taken right on a tick: that tick is over too.
        t.advance(start + ms(600));
        assert_eq!(t.due(), start + ms(700));
        // Whatever the lateness, the next tick is the first of the grid after it.
        let mut at = start + ms(700);
        for late_us in [0, 1, 99_999, 100_000, 100_001, 250_000, 3_000_007] {
            let now = at + Duration::from_micros(late_us);
            t.advance(now);
            let after = now.saturating_duration_since(start).as_nanos() / ms(100).as_nanos() + 1;
            let want = start + ms(100) * u32::try_from(after).unwrap_or(u32::MAX);
            assert_eq!(t.due(), want, "{late_us} µs late");
            at = t.due();
        }
    }
}
