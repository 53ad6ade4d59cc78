//! The recorder of one monitored address: the engine hands each probe event inline to the
//! address's status slot, whose recorder updates metrics, the window and the slot, and
//! publishes live samples. This is the hottest path of the daemon (every event of every
//! target): no channel, no await, no allocation unless a live reader listens.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::outage::Outcome;
use super::{AddressSlot, Readiness};
use crate::engine::{EventHandler, EventKind, ProbeEvent};
use crate::live::LiveHub;
use crate::metrics::{TargetMetrics, WindowRtt};
use crate::sample::Sample;
use crate::session::outages::OutageLog;

/// What records one (target, address)'s probe events as the engine delivers them: metrics,
/// the window and last event of its status slot, and live samples. Kept in the slot itself, so
/// that an event reaches one allocation of the address, not two (the slot is the engine's
/// [`EventHandler`]): a few atomics, one histogram, one uncontended lock; no channel and no task
/// wake-up per event.
pub(super) struct Recorder {
    pub(super) common: Arc<Common>,
    pub(super) metrics: TargetMetrics,
    /// What stops the address: its own token (an address with a task), or the scheduler's
    /// (an address on a wheel, which [`Recorder::stop`] stops alone). Once stopped, no live
    /// samples for probes still in flight.
    pub(super) cancel: CancellationToken,
    /// Set by [`Recorder::stop`]: a token of its own per address on a wheel would cost a node
    /// of the scheduler's token tree (over a hundred bytes) for this one flag.
    pub(super) stopped: AtomicBool,
    /// Set when the first probe settles (reply, timeout or ICMP error), for readiness.
    pub(super) settled_once: AtomicBool,
    /// Whether the address counts itself down in the daemon's first round when that happens
    /// (an address on a wheel that counts in it; see [`FirstRound`]).
    pub(super) counts_for_ready: bool,
    /// The target task that waits for that instead (a DNS name's addresses).
    pub(super) first: Option<Arc<Notify>>,
    /// The config's `metrics.window_gauges`, kept here: the config is a cache line of its own
    /// that an event would otherwise read for this one flag.
    pub(super) window_gauges: bool,
}

/// What every address's recorder reaches: one for the scheduler, shared, where a copy in each
/// address cost 40 bytes of it.
#[derive(Debug)]
pub(super) struct Common {
    pub(super) live: LiveHub,
    pub(super) outages: OutageLog,
    pub(super) readiness: Arc<Readiness>,
}

/// Who waits for an address's first settled probe.
pub(super) enum FirstRound {
    /// The target's task (a DNS name's addresses): woken to look at `settled_once`.
    Task(Arc<Notify>),
    /// Nobody but the daemon's first round, which an address with no task of its own counts
    /// itself down when it counts in it.
    Wheel { counts_for_ready: bool },
}

impl FirstRound {
    /// As the recorder keeps it: whether it counts itself down, and the task it wakes.
    pub(super) fn into_parts(self) -> (bool, Option<Arc<Notify>>) {
        match self {
            Self::Task(notify) => (false, Some(notify)),
            Self::Wheel { counts_for_ready } => (counts_for_ready, None),
        }
    }
}

impl Recorder {
    /// Marks the first probe settled (once): wakes the target's task, or counts the address's
    /// first round done itself. Also called when an address without a task stops first.
    pub(super) fn first_settled(&self) {
        if !self.settled_once.swap(true, Ordering::AcqRel) {
            if let Some(notify) = &self.first {
                notify.notify_one();
            } else if self.counts_for_ready {
                self.common.readiness.pending.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// The address stopped: no live samples from now on.
    pub(super) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    /// Whether the address has stopped (by [`Recorder::stop`] or its token).
    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire) || self.cancel.is_cancelled()
    }
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

impl EventHandler for AddressSlot {
    fn on_event(&self, ev: ProbeEvent) {
        let rec = &self.rec;
        // After the address stops, events of probes still in flight land in detached metrics
        // and a slot nobody reads; only live samples must not go out. (The token check takes
        // a lock, so it stays off the path of every event.)
        rec.metrics.on_event(&ev);
        let settled = match &ev.kind {
            EventKind::Reply(r) => Some(Some(r.rtt.as_secs_f64())),
            EventKind::Timeout | EventKind::IcmpError(_) => Some(None),
            EventKind::Late(_) | EventKind::Duplicate(_) => None,
        };
        // Building a sample allocates: only when someone is listening.
        let sample = (rec.common.live.readers() > 0 && !rec.is_stopped())
            .then(|| Sample::from_event(&self.cfg.name, &self.cfg.host, &ev));
        if let Some(rtt) = settled {
            // The gauges are an exposition choice: the window itself is kept either way, and
            // its RTT figures are only worked out for the gauges.
            let gauges = {
                let mut slot = self.lock();
                slot.window.push(rtt);
                let outcome = match &ev.kind {
                    EventKind::Reply(_) => Outcome::Reply,
                    EventKind::IcmpError(_) => Outcome::Lost { icmp_error: true },
                    _ => Outcome::Lost { icmp_error: false },
                };
                slot.outage.settled(self.of(), ev.tag, outcome);
                slot.last = Some(super::LastEvent::of(ev));
                // Outage detection needs the window's loss after every probe; with the gauges
                // on, it comes from the same pass.
                if rec.window_gauges {
                    let gauges = slot.window.gauges();
                    slot.outage
                        .window(self.of(), gauges.probes, gauges.loss_ratio);
                    Some(gauges)
                } else {
                    let (probes, loss_ratio) = slot.window.loss();
                    slot.outage.window(self.of(), probes, loss_ratio);
                    None
                }
            };
            if let Some(gauges) = gauges {
                rec.metrics.set_window(
                    gauges.loss_ratio,
                    gauges.rtt.map(|(min, mean, max, stddev)| WindowRtt {
                        min,
                        mean,
                        max,
                        stddev,
                    }),
                );
            }
            rec.first_settled();
        }
        if let Some(sample) = sample {
            rec.common.live.publish(sample);
        }
    }
}
