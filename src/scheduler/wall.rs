//! The wall-clock time of a send, for outage records: the monotonic clock (tokio's, paused in
//! tests) anchored to the wall clock, and the anchor moved when the wall clock is stepped.
//!
//! An anchor taken once at start and never moved would put every outage of a long-running
//! daemon off by each step since: a machine without a real-time clock that NTP sets hours
//! forward after boot, a VM resumed with its wall clock set forward while its monotonic clock
//! stood still. So each wake-up of a wheel compares the wall clock with where the anchor says it
//! should be on the machine's own monotonic clock (`std`'s, never paused), and moves the anchor
//! by the difference when that is over [`STEP`]. Both are read as one [`ClockPair`] through the
//! engine's [`Clock`], which tests step. NTP's slewing moves both clocks at the same rate and
//! never trips it.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::engine::clock::{Clock, ClockPair, Mono};

/// A difference between the wall clock and the anchor's reckoning that is a step, beyond the
/// spread of the pair of readings it was seen in.
pub(super) const STEP: Duration = Duration::from_millis(20);

/// The wall-clock time of any instant of the monotonic clock, following steps.
#[derive(Debug, Clone, Copy)]
pub(super) struct WallClock {
    /// The wall clock's reading at `at`, moved by every step since.
    wall: SystemTime,
    /// The same moment on tokio's clock (the clock of due times and sends).
    at: Instant,
    /// The same moment on the machine's monotonic clock (the clock that steps are seen against).
    real: Mono,
}

impl WallClock {
    /// Anchored now, on a pair of `clock`'s readings.
    pub(super) fn new(clock: &dyn Clock) -> Self {
        let pair = clock.pair();
        Self {
            wall: pair.wall.time(),
            at: Instant::now(),
            real: pair.mono,
        }
    }

    /// Moves the anchor by any step of `clock`'s wall clock since it was taken: the step in
    /// seconds (negative: set back), or `None`.
    pub(super) fn follow(&mut self, clock: &dyn Clock) -> Option<f64> {
        self.follow_to(clock.pair())
    }

    /// [`follow`](Self::follow) with the clocks read as `pair`.
    fn follow_to(&mut self, pair: ClockPair) -> Option<f64> {
        let reckoned = self.wall + pair.mono.since(self.real);
        let bound = STEP + pair.spread;
        match pair.wall.time().duration_since(reckoned) {
            Ok(ahead) if ahead > bound => {
                self.wall += ahead;
                Some(ahead.as_secs_f64())
            }
            Err(behind) if behind.duration() > bound => {
                let behind = behind.duration();
                self.wall = self.wall.checked_sub(behind).unwrap_or(self.wall);
                Some(-behind.as_secs_f64())
            }
            _ => None,
        }
    }

    /// The wall-clock time of `now` (tokio's clock).
    pub(super) fn at(&self, now: Instant) -> SystemTime {
        self.wall + now.saturating_duration_since(self.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    /// Readings `spread` apart.
    fn read(mono: Mono, wall: SystemTime, spread: Duration) -> ClockPair {
        let wall = crate::engine::clock::Wall::of(wall);
        ClockPair { wall, mono, spread }
    }

    #[test]
    fn steps_of_the_wall_clock_move_the_anchor_and_slews_do_not() {
        let mut c = WallClock::new(&crate::engine::clock::SystemClock);
        let (wall0, real0, at0) = (c.wall, c.real, c.at);
        let z = Duration::ZERO;
        // A second later on both clocks, 5 ms apart (slewed): no step.
        assert_eq!(None, c.follow_to(read(real0 + S, wall0 + S + 5 * MS, z)));
        assert_eq!(c.at(at0 + S), wall0 + S);
        // The wall clock set 6 s forward (a VM resumed): later sends are 6 s later on it.
        assert_eq!(
            Some(6.0),
            c.follow_to(read(real0 + 2 * S, wall0 + 8 * S, z))
        );
        assert_eq!(c.at(at0 + 3 * S), wall0 + 9 * S);
        // Once followed, the same offset is no new step.
        assert_eq!(None, c.follow_to(read(real0 + 4 * S, wall0 + 10 * S, z)));
        assert_eq!(c.at(at0 + 4 * S), wall0 + 10 * S);
        // Set back by an hour (an operator, NTP after a wrong start).
        let back = wall0 + 11 * S - 3600 * S;
        assert_eq!(Some(-3600.0), c.follow_to(read(real0 + 5 * S, back, z)));
        assert_eq!(c.at(at0 + 6 * S), wall0 + 12 * S - 3600 * S);
    }

    #[test]
    fn a_difference_within_the_bound_is_not_a_step() {
        let mut c = WallClock::new(&crate::engine::clock::SystemClock);
        let (wall0, real0, at0) = (c.wall, c.real, c.at);
        let z = Duration::ZERO;
        assert_eq!(None, c.follow_to(read(real0 + S, wall0 + S + STEP, z)));
        assert_eq!(None, c.follow_to(read(real0 + S, wall0 + S - STEP, z)));
        // Readings 10 ms apart (a preemption between them) widen the bound by as much.
        let off = wall0 + S + STEP + 5 * MS;
        assert_eq!(None, c.follow_to(read(real0 + S, off, 10 * MS)));
        assert_eq!(c.at(at0 + S), wall0 + S);
        assert!(c.follow_to(read(real0 + S, off, z)).is_some());
        assert_eq!(c.at(at0 + S), off);
    }
}
