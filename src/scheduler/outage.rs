//! Outage detection of one monitored address (issue 18): probes are taken in sending order
//! (sequence), whatever order they settle in, and an outage opens at `after` consecutive lost
//! probes and closes at `until` consecutive replies. A reply inside an outage that is not followed
//! by `until - 1` more does not close it, so flapping never opens a second one.
//!
//! Pure and synchronous: the address's recorder and tick loop feed it under the status slot's
//! lock, and it returns what changed.

use std::time::SystemTime;

use std::net::IpAddr;

use super::capture::LossWatch;
use crate::config::{OutageRule, TargetConfig};
use crate::metrics::outage::OutageMetrics;
use crate::session::outages::{OutageLog, OutageNote, OutageRecord, OutageStatus};

/// Probes in flight the tracker keeps at most; past it the oldest is taken as lost (the engine's
/// own table is smaller, so this only bounds memory against a bug).
const MAX_PENDING: usize = 4096;

#[path = "outage_queue.rs"]
mod queue;
use queue::InlineFront;

/// How a probe settled, for outage purposes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Reply,
    /// Timeout (a late reply still counts lost) or, with `icmp_error`, an ICMP error.
    Lost {
        icmp_error: bool,
    },
}

/// One outage, as it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OutageState {
    /// Send time of the first lost probe of the run that opened it.
    pub start: SystemTime,
    /// Send time of the first reply of the run that closed it.
    pub end: Option<SystemTime>,
    /// Send time of the last lost probe so far.
    pub last_lost: SystemTime,
    /// Probes lost from `start` to `end`.
    pub lost: u64,
    /// Of those, how many got an ICMP error.
    pub icmp_errors: u64,
}

/// What taking probes in order changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    Opened(OutageState),
    /// A lost probe inside an open outage.
    Grew(OutageState),
    Closed(OutageState),
}

/// Where a tracker puts what taking probes in order changed, as it happens: a list in tests,
/// the address's series and history in the daemon (at once, so that no address keeps a buffer
/// for them).
pub(crate) trait Changes {
    fn push(&mut self, change: Change);
}

impl Changes for Vec<Change> {
    fn push(&mut self, change: Change) {
        Vec::push(self, change);
    }
}

#[derive(Debug, Default)]
struct Pending {
    sent: Option<SystemTime>,
    outcome: Option<Outcome>,
    skipped: bool,
}

impl Pending {
    /// Nothing is known of this sequence yet.
    fn is_empty(&self) -> bool {
        self.sent.is_none() && self.outcome.is_none() && !self.skipped
    }
}

/// The outage state of one address.
#[derive(Debug)]
pub(crate) struct OutageTracker {
    rule: OutageRule,
    /// Next sequence to take in order; sequences start at 1.
    next: u64,
    /// Sequences `next`, `next + 1`, … not taken yet (one in flight, as a rule: kept inline).
    pending: InlineFront<Pending>,
    consecutive_lost: u64,
    consecutive_ok: u64,
    /// The run of lost probes before an outage opens: (start, lost, icmp errors). Boxed, as
    /// is `open`: most addresses have neither most of the time, and at tens of thousands of
    /// addresses the hundred bytes they would take inline add up.
    run: Option<Box<(SystemTime, u64, u64)>>,
    open: Option<Box<OutageState>>,
}

impl OutageTracker {
    pub(crate) fn new(rule: OutageRule) -> Self {
        Self {
            rule,
            next: 1,
            pending: InlineFront::new(),
            consecutive_lost: 0,
            consecutive_ok: 0,
            run: None,
            open: None,
        }
    }

    /// Lost probes in a row, by sending order.
    pub(crate) fn consecutive_lost(&self) -> u64 {
        self.consecutive_lost
    }

    /// The open outage, if any.
    pub(crate) fn open(&self) -> Option<&OutageState> {
        self.open.as_deref()
    }

    /// Probe `seq` went out at `at`.
    pub(crate) fn sent(&mut self, seq: u64, at: SystemTime, out: &mut impl Changes) {
        self.update(seq, out, |p| p.sent = Some(at));
    }

    /// Probe `seq` was never sent (a local send error): it is not a probe.
    pub(crate) fn skipped(&mut self, seq: u64, out: &mut impl Changes) {
        self.update(seq, out, |p| p.skipped = true);
    }

    /// Probe `seq` settled (its reply, timeout or ICMP error; each probe settles once).
    pub(crate) fn settled(&mut self, seq: u64, outcome: Outcome, out: &mut impl Changes) {
        self.update(seq, out, |p| p.outcome = Some(outcome));
    }

    /// Applies `f` to the entry of `seq`, then takes what is complete. A sequence already
    /// taken (below `next`) is ignored.
    fn update(&mut self, seq: u64, out: &mut impl Changes, f: impl FnOnce(&mut Pending)) {
        if seq < self.next {
            return;
        }
        if let Some(p) = self.slot(seq, out) {
            f(p);
        }
        self.drain(out);
    }

    /// The entry of `seq` (at least `next`). A sequence more than [`MAX_PENDING`] ahead first
    /// takes the oldest entries as they are (a bug elsewhere; memory stays bounded).
    fn slot(&mut self, seq: u64, out: &mut impl Changes) -> Option<&mut Pending> {
        while seq.saturating_sub(self.next) >= MAX_PENDING as u64 {
            if !self.take_front(out) {
                // Nothing pending: jump ahead.
                self.next = seq;
            }
        }
        let index = usize::try_from(seq.checked_sub(self.next)?).ok()?;
        self.pending.extend_to(index + 1);
        self.pending.get_mut(index)
    }

    /// Takes the oldest pending sequence whatever it holds (an unknown one is passed over, a
    /// probe without an outcome is lost). Returns false when nothing is pending.
    fn take_front(&mut self, out: &mut impl Changes) -> bool {
        let Some(p) = self.pending.pop_front() else {
            return false;
        };
        self.next += 1;
        if p.skipped || p.is_empty() {
            return true;
        }
        let at = p.sent.unwrap_or_else(SystemTime::now);
        let outcome = p.outcome.unwrap_or(Outcome::Lost { icmp_error: false });
        if let Some(change) = self.take(at, outcome) {
            out.push(change);
        }
        true
    }

    /// Takes the sequences that are complete, in order.
    fn drain(&mut self, out: &mut impl Changes) {
        while let Some(p) = self.pending.front() {
            let ready = p.skipped || (p.sent.is_some() && p.outcome.is_some());
            if !ready {
                break;
            }
            self.take_front(out);
        }
    }

    fn take(&mut self, at: SystemTime, outcome: Outcome) -> Option<Change> {
        match outcome {
            Outcome::Lost { icmp_error } => {
                self.consecutive_lost += 1;
                self.consecutive_ok = 0;
                let icmp = u64::from(icmp_error);
                if let Some(o) = &mut self.open {
                    o.end = None;
                    o.lost += 1;
                    o.icmp_errors += icmp;
                    o.last_lost = at;
                    return Some(Change::Grew(OutageState::clone(o)));
                }
                let (start, lost, errors) =
                    &mut **self.run.get_or_insert_with(|| Box::new((at, 0, 0)));
                *lost += 1;
                *errors += icmp;
                if self.consecutive_lost >= u64::from(self.rule.after) {
                    let state = OutageState {
                        start: *start,
                        end: None,
                        last_lost: at,
                        lost: *lost,
                        icmp_errors: *errors,
                    };
                    self.run = None;
                    self.open = Some(Box::new(state.clone()));
                    return Some(Change::Opened(state));
                }
                None
            }
            Outcome::Reply => {
                self.consecutive_lost = 0;
                self.run = None;
                let o = self.open.as_mut()?;
                self.consecutive_ok += 1;
                if self.consecutive_ok == 1 {
                    o.end = Some(at);
                }
                if self.consecutive_ok >= u64::from(self.rule.until) {
                    self.consecutive_ok = 0;
                    return self.open.take().map(|o| Change::Closed(*o));
                }
                None
            }
        }
    }
}

#[cfg(test)]
#[path = "outage_tests.rs"]
mod tests;

/// Which address an outage is of: its target's config (name, capture rule) and the address,
/// and where its history goes. Passed in by the status slot that holds them, rather than kept a
/// second time per address.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Of<'a> {
    pub(crate) cfg: &'a TargetConfig,
    pub(crate) ip: IpAddr,
    pub(crate) log: &'a OutageLog,
}

/// An address's tracker with the series and the history it drives, and the watch of its window
/// loss for captures; lives in the address's status slot, so the tick loop and the recorder
/// reach it under the lock they already take.
///
/// Kept small, as every address has one: the loss watch's rule is read from the config at each
/// probe of an address that has one (only whether it exists and is armed is kept), changes go
/// out as the tracker makes them, and the gauges last published are one word.
#[derive(Debug)]
pub(crate) struct AddressOutage {
    tracker: OutageTracker,
    metrics: OutageMetrics,
    /// What the gauges were last set to: the consecutive lost count, with [`ACTIVE`] set while
    /// an outage is open; [`UNPUBLISHED`] before the first set. Every sent and settled probe
    /// publishes, and most change nothing: the gauges' lock is another cache line per probe,
    /// taken only when they change.
    published: u64,
    /// Whether the loss watch (`capture.on_loss`) may fire (see [`LossWatch`]).
    loss_armed: bool,
    /// Whether the address's config has a loss watch at all: most have none, and then a
    /// settled probe does not read the config (a cache line of its own, cold at every probe).
    watches_loss: bool,
    /// The address went away: probes still in flight settle here after it, and must not
    /// open an outage that nothing would ever close.
    retired: bool,
}

/// The bit of [`AddressOutage::published`] that says an outage is open; a count of lost
/// probes never reaches it.
const ACTIVE: u64 = 1 << 63;
/// [`AddressOutage::published`] before the gauges were first set.
const UNPUBLISHED: u64 = u64::MAX;

impl AddressOutage {
    pub(crate) fn new(cfg: &TargetConfig, metrics: OutageMetrics) -> Self {
        Self {
            tracker: OutageTracker::new(cfg.options.outage),
            metrics,
            published: UNPUBLISHED,
            loss_armed: true,
            watches_loss: LossWatch::of(cfg).is_some(),
            retired: false,
        }
    }

    /// The window after a settled probe: its loss reaching the threshold asks for a capture.
    pub(crate) fn window(&mut self, of: Of<'_>, probes: usize, loss_ratio: f64) {
        if self.retired || !self.watches_loss {
            return;
        }
        let Some(watch) = LossWatch::of(of.cfg) else {
            return;
        };
        if watch.crossed(&mut self.loss_armed, probes, loss_ratio) {
            of.log.note(OutageNote::LossCrossed {
                target: of.cfg.name.to_string(),
                ip: of.ip,
                capture: of.cfg.options.capture,
            });
        }
    }

    pub(crate) fn sent(&mut self, of: Of<'_>, seq: u64, at: SystemTime) {
        self.take(of, |t, out| t.sent(seq, at, out));
    }

    pub(crate) fn skipped(&mut self, of: Of<'_>, seq: u64) {
        self.take(of, |t, out| t.skipped(seq, out));
    }

    pub(crate) fn settled(&mut self, of: Of<'_>, seq: u64, outcome: Outcome) {
        self.take(of, |t, out| t.settled(seq, outcome, out));
    }

    fn take(&mut self, of: Of<'_>, f: impl FnOnce(&mut OutageTracker, &mut Publish<'_>)) {
        if self.retired {
            return;
        }
        let mut out = Publish {
            metrics: &self.metrics,
            of,
        };
        f(&mut self.tracker, &mut out);
        let lost = self.tracker.consecutive_lost();
        let active = self.tracker.open().is_some();
        let now = lost | if active { ACTIVE } else { 0 };
        if self.published != now {
            self.metrics.set(active, lost);
            self.published = now;
        }
    }

    /// The address goes away (reload, removal, a DNS change): an open outage is recorded as
    /// `interrupted` at its last lost probe, and nothing after it.
    pub(crate) fn interrupt(&mut self, of: Of<'_>) {
        self.retired = true;
        if let Some(s) = self.tracker.open.take() {
            let mut rec = record(of, &s, OutageStatus::Interrupted);
            rec.end = Some(s.last_lost);
            note(of, rec);
        }
    }
}

/// An address's outage series and history, as the tracker's [`Changes`].
struct Publish<'a> {
    metrics: &'a OutageMetrics,
    of: Of<'a>,
}

impl Changes for Publish<'_> {
    fn push(&mut self, change: Change) {
        let rec = match &change {
            Change::Opened(s) => {
                self.metrics.open_for(true, secs(s.start, s.last_lost));
                record(self.of, s, OutageStatus::Open)
            }
            Change::Grew(s) => {
                self.metrics.open_for(false, secs(s.start, s.last_lost));
                record(self.of, s, OutageStatus::Open)
            }
            Change::Closed(s) => {
                self.metrics
                    .closed(secs(s.start, s.end.unwrap_or(s.last_lost)));
                record(self.of, s, OutageStatus::Ended)
            }
        };
        note(self.of, rec);
    }
}

fn note(of: Of<'_>, rec: OutageRecord) {
    of.log.note(OutageNote::Outage {
        rec,
        capture: of.cfg.options.capture,
    });
}

fn record(of: Of<'_>, s: &OutageState, status: OutageStatus) -> OutageRecord {
    OutageRecord {
        id: 0,
        target: of.cfg.name.to_string(),
        ip: of.ip,
        start: s.start,
        end: s.end,
        last_lost: s.last_lost,
        lost: s.lost,
        icmp_errors: s.icmp_errors,
        status,
        capture_session: None,
    }
}

/// `pingscope_target_threshold` of a target's `alert:`; none without a threshold.
pub(super) fn thresholds(
    alert: &crate::config::AlertThresholds,
) -> Option<crate::metrics::outage::Thresholds> {
    alert.any().then(|| crate::metrics::outage::Thresholds {
        loss: alert.loss,
        rtt: alert.rtt.map(|d| d.as_secs_f64()),
        for_seconds: alert.for_or_default().as_secs_f64(),
    })
}

/// The reasons a target captures for (`pingscope_captures_total{target,reason}`).
pub(super) fn capture_reasons(cfg: &TargetConfig) -> Vec<crate::metrics::capture::CaptureReason> {
    use crate::metrics::capture::CaptureReason;
    let on = [
        (cfg.options.capture.on_outage, CaptureReason::Outage),
        (LossWatch::of(cfg).is_some(), CaptureReason::Loss),
    ];
    on.into_iter()
        .filter_map(|(on, r)| on.then_some(r))
        .collect()
}

fn secs(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from).map_or(0.0, |d| d.as_secs_f64())
}
