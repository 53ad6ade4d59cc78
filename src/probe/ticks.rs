//! The cadence of a run: tick k is due at `start + k·interval`, so processing time never drifts
//! it; a run more than an interval behind skips the ticks it missed instead of bursting. Shared
//! by the runner and the monitors' tick loop.

use std::time::Duration;

use tokio::time::Instant;

/// The schedule of one address's probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticks {
    start: Instant,
    interval: Duration,
    k: u32,
}

impl Ticks {
    /// Ticks from `start` every `interval`.
    pub fn new(start: Instant, interval: Duration) -> Self {
        Self {
            start,
            interval,
            k: 0,
        }
    }

    /// When the next tick is due.
    pub fn due(&self) -> Instant {
        self.start + self.interval.saturating_mul(self.k)
    }

    /// Moves past the tick just taken at `now`, skipping the ticks that are already over.
    pub fn advance(&mut self, now: Instant) {
        self.k = self.k.saturating_add(1);
        if self.due() <= now {
            let behind = now.saturating_duration_since(self.start).as_nanos()
                / self.interval.as_nanos().max(1);
            self.k = u32::try_from(behind + 1).unwrap_or(u32::MAX);
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
    }
}
