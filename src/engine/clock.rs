//! A probe's times, and the one function that turns them into an RTT a clock step cannot
//! corrupt.
//!
//! Kernel timestamps (`SO_TIMESTAMPING`) are `CLOCK_REALTIME`, which NTP or an operator can step
//! (common on VMs after a migration or resume). So each probe also carries a monotonic reading
//! taken right before `sendto`, paired with a wall-clock reading ([`ClockPair`]), and the reply
//! gets another pair when the receive task reads it. Between the two pairs:
//!
//! - the monotonic interval is an upper bound of the RTT (the request left after the first
//!   reading, the reply arrived before the second), and 0 is its lower bound;
//! - the wall and monotonic clocks advance at the same rate (NTP frequency corrections slew
//!   both), so the two intervals differ only by the pairing error, or by a step.
//!
//! [`measure`] takes the kernel's RTT when both intervals agree. When they disagree by more than
//! the pairing error, a step happened: each kernel timestamp is mapped onto the monotonic
//! clock through the pair of the epoch it can only belong to (before or after the step); when
//! that is ambiguous, the RTT is the monotonic bound itself. The RTT is never 0 and never
//! outside the bounds. [`StepCounter`] counts steps once, however many probes straddle them.
//!
//! The engine reads time through [`Clock`], so tests inject one ([`SteppableClock`]) that steps
//! its wall clock without touching the machine's (which is shared; time namespaces do not cover
//! `CLOCK_REALTIME`). Readings are whole nanoseconds ([`Mono`], [`Wall`]): every probe's
//! deadline, bounds and RTT are a few subtractions and comparisons of integers, where `Instant`
//! and `SystemTime` pay a checked (seconds, nanoseconds) subtraction each, about 31 instructions
//! (`bench/instructions.sh`); they are made only where a timer or an event needs one.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use nix::time::{ClockId, clock_gettime};

/// A reading of the monotonic clock (`CLOCK_MONOTONIC`, the clock of `Instant` on Linux): whole
/// nanoseconds from its origin (about 292 years of range).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mono(i64);

/// A reading of the wall clock (`CLOCK_REALTIME`, the clock of kernel timestamps): whole
/// nanoseconds from the Unix epoch (negative before it; the range ends in 2262).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Wall(i64);

/// Nanoseconds of a `timespec`, if they fit.
fn timespec_ns(secs: i64, nanos: i64) -> Option<i64> {
    if !(0..1_000_000_000).contains(&nanos) {
        return None;
    }
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// `d` in nanoseconds, saturating.
fn duration_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// A duration of `ns` nanoseconds; none below 0.
fn ns_duration(ns: i64) -> Duration {
    Duration::from_nanos(u64::try_from(ns).unwrap_or(0))
}

/// Reads `id` through the vDSO. It fails only for a clock the kernel lacks, which these two are
/// not; the callers read the same clock through `std` then.
fn read(id: ClockId) -> Option<i64> {
    let ts = clock_gettime(id).ok()?;
    timespec_ns(ts.tv_sec(), ts.tv_nsec())
}

/// One moment on both monotonic clocks: a [`Mono`] read first, then an `Instant`, so that a
/// [`Mono`] turned into an `Instant` through it is never earlier than the true one (a deadline
/// never fires early); the error is the few nanoseconds between the two readings. (Its own
/// fallback is 0, not [`Mono::of`], which needs the anchor.)
fn anchor() -> (Mono, Instant) {
    static ANCHOR: OnceLock<(Mono, Instant)> = OnceLock::new();
    *ANCHOR.get_or_init(|| {
        let ns = read(ClockId::CLOCK_MONOTONIC).unwrap_or(0);
        (Mono(ns), Instant::now())
    })
}

impl Mono {
    /// The monotonic clock now.
    pub fn now() -> Self {
        read(ClockId::CLOCK_MONOTONIC).map_or_else(|| Self::of(Instant::now()), Self)
    }

    /// The reading at `ns` nanoseconds from the clock's origin.
    pub const fn from_nanos(ns: i64) -> Self {
        Self(ns)
    }

    /// Nanoseconds from the clock's origin.
    pub const fn nanos(self) -> i64 {
        self.0
    }

    /// Nanoseconds from `earlier` to `self`; negative when `earlier` is later.
    pub const fn ns_since(self, earlier: Self) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    /// The time from `earlier` to `self`; zero when `earlier` is later.
    pub fn since(self, earlier: Self) -> Duration {
        ns_duration(self.ns_since(earlier))
    }

    /// The same moment as an `Instant`, for a timer (never earlier; see [`anchor`]).
    pub fn instant(self) -> Instant {
        let (mono, instant) = anchor();
        let ns = self.ns_since(mono);
        if ns >= 0 {
            instant + ns_duration(ns)
        } else {
            let back = Duration::from_nanos(ns.unsigned_abs());
            instant.checked_sub(back).unwrap_or(instant)
        }
    }

    /// The reading of the same moment as `t`.
    pub fn of(t: Instant) -> Self {
        let (mono, instant) = anchor();
        match t.checked_duration_since(instant) {
            Some(d) => mono + d,
            None => Self(
                mono.0
                    .saturating_sub(duration_ns(instant.duration_since(t))),
            ),
        }
    }
}

impl Wall {
    /// The wall clock now.
    pub fn now() -> Self {
        read(ClockId::CLOCK_REALTIME).map_or_else(|| Self::of(SystemTime::now()), Self)
    }

    /// A kernel timestamp (`timespec` fields), if valid and in range.
    pub fn from_timespec(secs: i64, nanos: i64) -> Option<Self> {
        timespec_ns(secs, nanos).map(Self)
    }

    /// The reading at `ns` nanoseconds from the Unix epoch.
    pub const fn from_nanos(ns: i64) -> Self {
        Self(ns)
    }

    /// Nanoseconds from the Unix epoch.
    pub const fn nanos(self) -> i64 {
        self.0
    }

    /// Nanoseconds from the Unix epoch, 0 before it (a probe's payload stamp).
    pub fn unix_nanos(self) -> u64 {
        u64::try_from(self.0).unwrap_or(0)
    }

    /// Nanoseconds from `earlier` to `self`; negative when `earlier` is later.
    pub const fn ns_since(self, earlier: Self) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    /// `self` moved by `ns` nanoseconds (negative: back), saturating.
    pub const fn shifted(self, ns: i64) -> Self {
        Self(self.0.saturating_add(ns))
    }

    /// The same moment as a `SystemTime`, for an event.
    pub fn time(self) -> SystemTime {
        let ns = self.0;
        if ns >= 0 {
            SystemTime::UNIX_EPOCH + ns_duration(ns)
        } else {
            SystemTime::UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
        }
    }

    /// The reading of `t` (saturating at the ends of the range).
    pub fn of(t: SystemTime) -> Self {
        match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => Self(duration_ns(d)),
            Err(e) => Self(duration_ns(e.duration()).saturating_neg()),
        }
    }
}

// A reading moved by a duration, saturating at the ends of the range.
macro_rules! shift_by_duration {
    ($t:ty) => {
        impl std::ops::Add<Duration> for $t {
            type Output = Self;
            fn add(self, d: Duration) -> Self {
                Self(self.0.saturating_add(duration_ns(d)))
            }
        }
        impl std::ops::AddAssign<Duration> for $t {
            fn add_assign(&mut self, d: Duration) {
                *self = *self + d;
            }
        }
        impl std::ops::Sub<Duration> for $t {
            type Output = Self;
            fn sub(self, d: Duration) -> Self {
                Self(self.0.saturating_sub(duration_ns(d)))
            }
        }
    };
}
shift_by_duration!(Mono);
shift_by_duration!(Wall);

/// Where the engine reads the time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The wall clock (`CLOCK_REALTIME`, the clock of kernel timestamps).
    fn wall(&self) -> Wall;
    /// The monotonic clock (`CLOCK_MONOTONIC`).
    fn mono(&self) -> Mono;

    /// A wall reading between two monotonic ones; see [`ClockPair`].
    fn pair(&self) -> ClockPair {
        let mut best: Option<ClockPair> = None;
        // Bounded: a preemption between the readings widens the spread; three tries find a
        // tight pair unless the machine is very busy, and the spread says how tight it is.
        for _ in 0..3 {
            let m1 = self.mono();
            let wall = self.wall();
            let m2 = self.mono();
            let ns = m2.ns_since(m1).max(0);
            let spread = ns_duration(ns);
            let p = ClockPair {
                wall,
                mono: Mono(m1.0 + ns / 2),
                spread,
            };
            if spread <= TIGHT_PAIR {
                return p;
            }
            if best.is_none_or(|b| spread < b.spread) {
                best = Some(p);
            }
        }
        best.unwrap_or(ClockPair {
            wall: self.wall(),
            mono: self.mono(),
            spread: Duration::ZERO,
        })
    }
}

/// A pair no wider than this is taken at once.
const TIGHT_PAIR: Duration = Duration::from_micros(10);
/// Disagreement between the wall and monotonic intervals tolerated beyond the pairs' spreads.
pub const STEP_TOLERANCE: Duration = Duration::from_micros(100);

/// The machine's clocks.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn wall(&self) -> Wall {
        Wall::now()
    }
    fn mono(&self) -> Mono {
        Mono::now()
    }
}

/// The machine's clocks, with a wall clock that tests can step (forward or backward) without
/// touching the real one.
#[derive(Debug, Default)]
pub struct SteppableClock {
    offset_ns: AtomicI64,
}

impl SteppableClock {
    /// Steps the wall clock by `ns` nanoseconds (negative: backward).
    pub fn step(&self, ns: i64) {
        self.offset_ns.fetch_add(ns, Ordering::SeqCst);
    }
}

impl Clock for SteppableClock {
    fn wall(&self) -> Wall {
        Wall::now().shifted(self.offset_ns.load(Ordering::SeqCst))
    }
    fn mono(&self) -> Mono {
        Mono::now()
    }
}

/// A wall-clock reading and a monotonic reading taken together: `mono` is the midpoint of two
/// monotonic readings around the wall one, `spread` their distance (the pairing's uncertainty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockPair {
    /// Wall clock.
    pub wall: Wall,
    /// Monotonic clock.
    pub mono: Mono,
    /// Distance of the two monotonic readings.
    pub spread: Duration,
}

/// Why one side of a probe's RTT did not come from a kernel timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fallback {
    /// User-space timestamps were chosen in the engine config.
    Disabled,
    /// The kernel or the socket kind does not give this timestamp.
    Unsupported,
    /// No timestamp came with this packet (RX), or none was read before the reply (TX).
    Missing,
    /// The control messages of the packet could not be read (truncated or malformed).
    ControlMessage,
    /// The TX timestamp's `OPT_ID` and the quoted request disagreed with our record.
    Mismatch,
    /// A clock step made the kernel timestamp unusable; the RTT is the monotonic bound.
    ClockStep,
    /// The kernel timestamp was outside the monotonic bounds without a step.
    Implausible,
}

impl Fallback {
    /// Every reason, in the order of [`Fallback::index`].
    pub const ALL: [Self; 7] = [
        Self::Disabled,
        Self::Unsupported,
        Self::Missing,
        Self::ControlMessage,
        Self::Mismatch,
        Self::ClockStep,
        Self::Implausible,
    ];

    /// Position in [`Fallback::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Unsupported => "unsupported",
            Self::Missing => "missing",
            Self::ControlMessage => "control_message",
            Self::Mismatch => "mismatch",
            Self::ClockStep => "clock_step",
            Self::Implausible => "implausible",
        }
    }
}

/// One side's timestamp: the kernel's, or the reason there is none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stamp {
    /// A kernel timestamp (wall clock).
    Kernel(Wall),
    /// The TX timestamp has not been read yet (becomes [`Fallback::Missing`] at the reply).
    Awaited,
    /// The user-space pair stands in, for this reason.
    User(Fallback),
}

/// A probe's send side: the pair read right before `sendto`, and the kernel's TX timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendTimes {
    /// Read right before `sendto`.
    pub user: ClockPair,
    /// The kernel's software TX timestamp, or why there is none.
    pub kernel: Stamp,
}

/// A reply's receive side: the pair read when the receive task got the packet, and the kernel's
/// RX timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvTimes {
    /// Read right after `recvmsg`.
    pub user: ClockPair,
    /// The kernel's software RX timestamp, or why there is none.
    pub kernel: Stamp,
}

impl RecvTimes {
    /// The wall-clock time of the reply: the kernel's timestamp where there is one.
    pub fn wall(&self) -> Wall {
        match self.kernel {
            Stamp::Kernel(t) => t,
            _ => self.user.wall,
        }
    }
}

/// An RTT and how it was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Measured {
    /// The RTT: within (0, `bound`].
    pub rtt: Duration,
    /// The monotonic upper bound (send pair to receive pair).
    pub bound: Duration,
    /// Why the RX side is not a kernel timestamp, if it is not.
    pub rx_fallback: Option<Fallback>,
    /// Why the TX side is not a kernel timestamp, if it is not.
    pub tx_fallback: Option<Fallback>,
    /// The wall clock stepped between the two pairs: the offset (wall minus monotonic, ns) seen
    /// at the receive pair, for [`StepCounter`].
    pub step: Option<i128>,
}

fn signed_ns(d: Duration) -> i128 {
    d.as_nanos() as i128
}

/// `to - from` in nanoseconds, negative when `to` is earlier (exact: no saturation).
pub fn wall_diff(from: Wall, to: Wall) -> i128 {
    i128::from(to.0) - i128::from(from.0)
}

fn positive(ns: i128) -> Duration {
    Duration::from_nanos(u64::try_from(ns.max(1)).unwrap_or(u64::MAX))
}

/// The RTT of one reply. See the module docs.
pub fn measure(tx: &SendTimes, rx: &RecvTimes) -> Measured {
    let bound = (i128::from(rx.user.mono.0) - i128::from(tx.user.mono.0)).max(1);
    let tol = signed_ns(STEP_TOLERANCE) + signed_ns(tx.user.spread) + signed_ns(rx.user.spread);
    let step = wall_diff(tx.user.wall, rx.user.wall) - bound;
    let side = |s: Stamp| match s {
        Stamp::Kernel(t) => (Some(t), None),
        Stamp::Awaited => (None, Some(Fallback::Missing)),
        Stamp::User(r) => (None, Some(r)),
    };
    let (tx_k, mut tx_fallback) = side(tx.kernel);
    let (rx_k, mut rx_fallback) = side(rx.kernel);
    // Both kernel fallbacks turn to `why` when the kernel stamps cannot be used.
    let mut give_up = |why| {
        if tx_k.is_some() {
            tx_fallback = Some(why);
        }
        if rx_k.is_some() {
            rx_fallback = Some(why);
        }
        bound
    };
    let in_bounds = |ns: i128| ns > 0 && ns <= bound + tol;
    let rtt = if step.abs() <= tol {
        let ns = wall_diff(tx_k.unwrap_or(tx.user.wall), rx_k.unwrap_or(rx.user.wall));
        if in_bounds(ns) {
            ns.min(bound)
        } else {
            give_up(Fallback::Implausible)
        }
    } else {
        // Monotonic time (ns after the send pair) of a kernel stamp, through the pair of the one
        // epoch it fits: before the step (the send pair) or after it (the receive pair).
        let resolve = |k: Wall| {
            let before = wall_diff(tx.user.wall, k);
            let after = bound + wall_diff(rx.user.wall, k);
            let fits = |ns: i128| ns >= -tol && ns <= bound + tol;
            match (fits(before), fits(after)) {
                (true, false) => Some(before),
                (false, true) => Some(after),
                _ => None,
            }
        };
        let t = tx_k.map_or(Some(0), resolve);
        let r = rx_k.map_or(Some(bound), resolve);
        match (t, r) {
            (Some(t), Some(r)) if in_bounds(r - t) => (r - t).min(bound),
            _ => give_up(Fallback::ClockStep),
        }
    };
    Measured {
        rtt: positive(rtt),
        bound: positive(bound),
        rx_fallback,
        tx_fallback,
        step: (step.abs() > tol).then(|| offset_ns(&rx.user)),
    }
}

/// Wall minus monotonic of a pair, in ns: constant while the wall clock is not stepped.
fn offset_ns(p: &ClockPair) -> i128 {
    i128::from(p.wall.0) - i128::from(p.mono.0)
}

/// Counts clock steps once each, however many probes straddle the same step.
#[derive(Debug, Default)]
pub struct StepCounter {
    /// The offset after the last step counted; 0 until then.
    last: parking_lot::Mutex<Option<i128>>,
}

impl StepCounter {
    /// True when `m` saw a step not counted yet (its new offset differs from the last counted
    /// one by more than the tolerance).
    pub fn observe(&self, m: &Measured) -> bool {
        let Some(offset) = m.step else { return false };
        let tol = signed_ns(STEP_TOLERANCE) * 10;
        let mut last = self.last.lock();
        if last.is_some_and(|l| (l - offset).abs() <= tol) {
            return false;
        }
        *last = Some(offset);
        true
    }
}

#[cfg(test)]
#[path = "clock_tests.rs"]
mod tests;
