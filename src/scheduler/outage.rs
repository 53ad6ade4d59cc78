//! Outage detection of one monitored address (issue 18): probes are taken in sending order
//! (sequence), whatever order they settle in, and an outage opens at `after` consecutive lost
//! probes and closes at `until` consecutive replies. A reply inside an outage that is not followed
//! by `until - 1` more does not close it, so flapping never opens a second one.
//!
//! Pure and synchronous: the address's recorder and tick loop feed it under the status slot's
//! lock, and it returns what changed.

use std::collections::VecDeque;
use std::time::SystemTime;

use std::net::IpAddr;
use std::sync::Arc;

use super::capture::LossWatch;
use crate::config::{OutageRule, TargetConfig};
use crate::metrics::outage::OutageMetrics;
use crate::session::outages::{OutageLog, OutageNote, OutageRecord, OutageStatus};

/// Probes in flight the tracker keeps at most; past it the oldest is taken as lost (the engine's
/// own table is smaller, so this only bounds memory against a bug).
const MAX_PENDING: usize = 4096;

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
    /// Sequences `next`, `next + 1`, … not taken yet (one or two in flight, as a rule: a ring,
    /// not a tree node per address).
    pending: VecDeque<Pending>,
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
            pending: VecDeque::new(),
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
    pub(crate) fn sent(&mut self, seq: u64, at: SystemTime, out: &mut Vec<Change>) {
        self.update(seq, out, |p| p.sent = Some(at));
    }

    /// Probe `seq` was never sent (a local send error): it is not a probe.
    pub(crate) fn skipped(&mut self, seq: u64, out: &mut Vec<Change>) {
        self.update(seq, out, |p| p.skipped = true);
    }

    /// Probe `seq` settled (its reply, timeout or ICMP error; each probe settles once).
    pub(crate) fn settled(&mut self, seq: u64, outcome: Outcome, out: &mut Vec<Change>) {
        self.update(seq, out, |p| p.outcome = Some(outcome));
    }

    /// Applies `f` to the entry of `seq`, then takes what is complete. A sequence already
    /// taken (below `next`) is ignored.
    fn update(&mut self, seq: u64, out: &mut Vec<Change>, f: impl FnOnce(&mut Pending)) {
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
    fn slot(&mut self, seq: u64, out: &mut Vec<Change>) -> Option<&mut Pending> {
        while seq.saturating_sub(self.next) >= MAX_PENDING as u64 {
            if !self.take_front(out) {
                // Nothing pending: jump ahead.
                self.next = seq;
            }
        }
        let index = usize::try_from(seq.checked_sub(self.next)?).ok()?;
        if index >= self.pending.len() {
            self.pending.resize_with(index + 1, Pending::default);
        }
        self.pending.get_mut(index)
    }

    /// Takes the oldest pending sequence whatever it holds (an unknown one is passed over, a
    /// probe without an outcome is lost). Returns false when nothing is pending.
    fn take_front(&mut self, out: &mut Vec<Change>) -> bool {
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
    fn drain(&mut self, out: &mut Vec<Change>) {
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
mod tests {
    use super::*;
    use std::time::Duration;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1000 + s)
    }

    // Every address keeps one, tens of thousands at once: a budget, so that growth is a choice
    // (the run and the open outage are boxed: 160 bytes inline before).
    #[test]
    fn an_outage_tracker_stays_small() {
        let size = std::mem::size_of::<OutageTracker>();
        assert!(size <= 80, "{size}");
    }

    /// Feeds `pattern` ('.' reply, 'x' timeout, 'e' ICMP error) in order, one probe a second,
    /// and returns the changes with the second they happened at.
    fn run(rule: (u32, u32), pattern: &str) -> Vec<(usize, Change)> {
        let mut tr = OutageTracker::new(OutageRule {
            after: rule.0,
            until: rule.1,
        });
        let mut all = Vec::new();
        for (i, c) in pattern.chars().enumerate() {
            let mut out = Vec::new();
            let seq = i as u64 + 1;
            tr.sent(seq, t(seq), &mut out);
            let outcome = match c {
                '.' => Outcome::Reply,
                'e' => Outcome::Lost { icmp_error: true },
                _ => Outcome::Lost { icmp_error: false },
            };
            tr.settled(seq, outcome, &mut out);
            all.extend(out.into_iter().map(|c| (i, c)));
        }
        all
    }

    fn summary(changes: &[(usize, Change)]) -> Vec<String> {
        changes
            .iter()
            .filter_map(|(i, c)| match c {
                Change::Opened(s) => Some(format!("open@{i} lost={}", s.lost)),
                Change::Closed(s) => Some(format!(
                    "close@{i} start={} end={} lost={} icmp={}",
                    s.start.duration_since(t(0)).map_or(0, |d| d.as_secs()),
                    s.end
                        .and_then(|e| e.duration_since(t(0)).ok())
                        .map_or(0, |d| d.as_secs()),
                    s.lost,
                    s.icmp_errors
                )),
                Change::Grew(_) => None,
            })
            .collect()
    }

    #[test]
    fn scenarios() {
        let cases: &[((u32, u32), &str, &[&str])] = &[
            // Two lost in a row is not an outage with after 3.
            ((3, 3), "..xx..xx..", &[]),
            // Three are; it ends at the first of three replies; start is the first lost probe.
            (
                (3, 3),
                "..xxx...",
                &["open@4 lost=3", "close@7 start=3 end=6 lost=3 icmp=0"],
            ),
            // Flapping inside the outage does not open a second one, and its losses count.
            (
                (3, 3),
                "xxx.x..xx...",
                &["open@2 lost=3", "close@11 start=1 end=10 lost=6 icmp=0"],
            ),
            // ICMP errors are losses, counted apart.
            (
                (2, 1),
                ".ex.",
                &["open@2 lost=2", "close@3 start=2 end=4 lost=2 icmp=1"],
            ),
            // after 1, until 1: every lost run is an outage.
            (
                (1, 1),
                "x.x.",
                &[
                    "open@0 lost=1",
                    "close@1 start=1 end=2 lost=1 icmp=0",
                    "open@2 lost=1",
                    "close@3 start=3 end=4 lost=1 icmp=0",
                ],
            ),
            // Still open at the end.
            ((2, 5), "xx....", &["open@1 lost=2"]),
        ];
        for (rule, pattern, want) in cases {
            let got = summary(&run(*rule, pattern));
            assert_eq!(&got, want, "rule {rule:?} pattern {pattern}");
        }
    }

    #[test]
    fn probes_count_in_sending_order_not_settling_order() {
        // Timeouts settle after later probes' replies: 1..=3 lost, 4 answered, but 4's reply
        // comes before 1's timeout. In settling order there would be no three in a row.
        let mut tr = OutageTracker::new(OutageRule { after: 3, until: 1 });
        let mut out = Vec::new();
        for seq in 1..=4 {
            tr.sent(seq, t(seq), &mut out);
        }
        tr.settled(4, Outcome::Reply, &mut out);
        assert!(out.is_empty());
        tr.settled(1, Outcome::Lost { icmp_error: false }, &mut out);
        tr.settled(3, Outcome::Lost { icmp_error: false }, &mut out);
        assert!(out.is_empty(), "2 has not settled yet: {out:?}");
        tr.settled(2, Outcome::Lost { icmp_error: false }, &mut out);
        let kinds: Vec<&str> = out
            .iter()
            .map(|c| match c {
                Change::Opened(_) => "opened",
                Change::Grew(_) => "grew",
                Change::Closed(_) => "closed",
            })
            .collect();
        assert_eq!(kinds, ["opened", "closed"]);
    }

    #[test]
    fn nothing_is_noted_after_the_address_went_away() -> Result<(), Box<dyn std::error::Error>> {
        use crate::session::outages::OutageNote;
        let config = crate::config::parse_str(
            "targets:\n  - {host: 192.0.2.1, outage: {after: 2, until: 1}}\n",
            "t.yml",
            std::path::Path::new(""),
        )?;
        let cfg = &config.targets[0];
        let ip = IpAddr::from([192, 0, 2, 1]);
        let labels = crate::metrics::TargetLabels::new(cfg.name.clone(), ip, Vec::new())?;
        let metrics = crate::metrics::Metrics::new(Default::default())?;
        let (log, mut rx) = OutageLog::new(16);
        let mut a = AddressOutage::new(cfg, ip, metrics.outage(&labels), log);
        let lost = Outcome::Lost { icmp_error: false };
        for seq in 1..=4 {
            a.sent(seq, t(seq));
        }
        a.settled(1, lost);
        a.settled(2, lost);
        a.interrupt();
        // 3 and 4 were in flight: their timeouts come after the address went away.
        a.settled(3, lost);
        a.settled(4, lost);
        let statuses: Vec<OutageStatus> = std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|n| match n {
                OutageNote::Outage { rec, .. } => Some(rec.status),
                OutageNote::LossCrossed { .. } => None,
            })
            .collect();
        assert_eq!(statuses, [OutageStatus::Open, OutageStatus::Interrupted]);
        Ok(())
    }

    #[test]
    fn a_reply_before_its_send_is_recorded_waits_and_a_skipped_send_is_no_probe() {
        let mut tr = OutageTracker::new(OutageRule { after: 2, until: 1 });
        let mut out = Vec::new();
        // The engine may deliver a loopback reply before the tick loop notes the send.
        tr.settled(1, Outcome::Lost { icmp_error: false }, &mut out);
        tr.sent(1, t(1), &mut out);
        tr.skipped(2, &mut out);
        tr.sent(3, t(3), &mut out);
        tr.settled(3, Outcome::Lost { icmp_error: false }, &mut out);
        assert!(matches!(&out[..], [Change::Opened(s)] if s.lost == 2 && s.start == t(1)));
        assert_eq!(tr.consecutive_lost(), 2);
        assert!(tr.pending.is_empty());
    }

    #[test]
    fn probes_that_never_settle_are_taken_as_lost_past_the_bound() {
        let mut tr = OutageTracker::new(OutageRule { after: 3, until: 1 });
        let mut out = Vec::new();
        let n = MAX_PENDING as u64 + 2;
        for seq in 1..=n {
            tr.sent(seq, t(seq), &mut out);
        }
        // The two oldest went as lost to make room; the rest still wait.
        assert_eq!(tr.pending.len(), MAX_PENDING);
        assert_eq!(tr.consecutive_lost(), 2);
        assert!(out.is_empty());
        // A sequence far ahead (a bug elsewhere) takes everything before it, with no gap left.
        tr.sent(n + 10 * MAX_PENDING as u64, t(1), &mut out);
        assert!(tr.pending.len() <= MAX_PENDING);
        assert!(matches!(&out[0], Change::Opened(s) if s.start == t(1) && s.lost == 3));
        assert_eq!(tr.consecutive_lost(), n);
    }
}

/// An address's tracker with the series and the history it drives, and the watch of its window
/// loss for captures; lives in the address's status slot, so the tick loop and the recorder
/// reach it under the lock they already take.
#[derive(Debug)]
pub(crate) struct AddressOutage {
    tracker: OutageTracker,
    /// The target's name and capture rule (shared, not copied per address).
    cfg: Arc<TargetConfig>,
    ip: IpAddr,
    metrics: OutageMetrics,
    log: OutageLog,
    changes: Vec<Change>,
    loss: Option<LossWatch>,
    /// The address went away: probes still in flight settle here after it, and must not
    /// open an outage that nothing would ever close.
    retired: bool,
    /// What the gauges were last set to (active, consecutive lost); none before the first set.
    /// Every sent and settled probe publishes, and most change nothing: the gauges' lock is
    /// another cache line per probe, taken only when they change.
    published: Option<(bool, u64)>,
}

impl AddressOutage {
    pub(crate) fn new(
        cfg: &Arc<TargetConfig>,
        ip: IpAddr,
        metrics: OutageMetrics,
        log: OutageLog,
    ) -> Self {
        Self {
            tracker: OutageTracker::new(cfg.options.outage),
            cfg: cfg.clone(),
            ip,
            metrics,
            log,
            changes: Vec::new(),
            loss: LossWatch::of(cfg),
            retired: false,
            published: None,
        }
    }

    /// The window after a settled probe: its loss reaching the threshold asks for a capture.
    pub(crate) fn window(&mut self, probes: usize, loss_ratio: f64) {
        if !self.retired
            && self
                .loss
                .as_mut()
                .is_some_and(|w| w.crossed(probes, loss_ratio))
        {
            self.log.note(OutageNote::LossCrossed {
                target: self.cfg.name.clone(),
                ip: self.ip,
                capture: self.cfg.options.capture,
            });
        }
    }

    pub(crate) fn sent(&mut self, seq: u64, at: SystemTime) {
        self.take(|t, out| t.sent(seq, at, out));
    }

    pub(crate) fn skipped(&mut self, seq: u64) {
        self.take(|t, out| t.skipped(seq, out));
    }

    pub(crate) fn settled(&mut self, seq: u64, outcome: Outcome) {
        self.take(|t, out| t.settled(seq, outcome, out));
    }

    fn take(&mut self, f: impl FnOnce(&mut OutageTracker, &mut Vec<Change>)) {
        if self.retired {
            return;
        }
        let mut out = std::mem::take(&mut self.changes);
        f(&mut self.tracker, &mut out);
        self.publish(out);
    }

    /// The address goes away (reload, removal, a DNS change): an open outage is recorded as
    /// `interrupted` at its last lost probe, and nothing after it.
    pub(crate) fn interrupt(&mut self) {
        self.retired = true;
        if let Some(s) = self.tracker.open.take() {
            let mut rec = self.record(&s, OutageStatus::Interrupted);
            rec.end = Some(s.last_lost);
            self.note(rec);
        }
    }

    fn record(&self, s: &OutageState, status: OutageStatus) -> OutageRecord {
        OutageRecord {
            id: 0,
            target: self.cfg.name.clone(),
            ip: self.ip,
            start: s.start,
            end: s.end,
            last_lost: s.last_lost,
            lost: s.lost,
            icmp_errors: s.icmp_errors,
            status,
            capture_session: None,
        }
    }

    fn note(&self, rec: OutageRecord) {
        self.log.note(OutageNote::Outage {
            rec,
            capture: self.cfg.options.capture,
        });
    }

    fn publish(&mut self, mut out: Vec<Change>) {
        for change in out.drain(..) {
            let rec = match &change {
                Change::Opened(s) => {
                    self.metrics.open_for(true, secs(s.start, s.last_lost));
                    self.record(s, OutageStatus::Open)
                }
                Change::Grew(s) => {
                    self.metrics.open_for(false, secs(s.start, s.last_lost));
                    self.record(s, OutageStatus::Open)
                }
                Change::Closed(s) => {
                    self.metrics
                        .closed(secs(s.start, s.end.unwrap_or(s.last_lost)));
                    self.record(s, OutageStatus::Ended)
                }
            };
            self.note(rec);
        }
        let now = (
            self.tracker.open().is_some(),
            self.tracker.consecutive_lost(),
        );
        if self.published != Some(now) {
            self.metrics.set(now.0, now.1);
            self.published = Some(now);
        }
        self.changes = out;
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
