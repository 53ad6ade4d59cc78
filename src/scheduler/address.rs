//! The life of one monitored address: its series, status slot (with its recorder) and probe
//! loop are made together by [`prepare_address`], and go away together through
//! [`retire_address`].

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::recorder::{FirstRound, Recorder};
use super::tick::ProbeTask;
use super::wheel::OnWheel;
use super::{AddressSlot, Shared, Slot, StatusSlot};
use crate::config::TargetConfig;
use crate::engine::EventSink;
use crate::metrics::{MetricsError, TargetLabels};
use crate::resolve::Family;
use crate::stats::Window;

/// A running address of a DNS target: its probe task and what retiring it needs.
pub(super) struct AddressEntry {
    cancel: CancellationToken,
    handle: JoinHandle<()>,
    pub(super) labels: TargetLabels,
    pub(super) slot: StatusSlot,
}

impl AddressEntry {
    /// Stops the address's probe task, waits for it (so that it cannot touch the series
    /// afterwards: a changed target's new version may be about to create the same ones), then
    /// retires the address.
    pub(super) async fn stop(self, shared: &Shared, target: &str, ip: IpAddr) {
        self.cancel.cancel();
        let _ = self.handle.await;
        retire_address(shared, target, ip, &self.labels);
    }
}

/// An address literal's probe loop put straight on a wheel, with no task of its own (a task's
/// future is the largest thing a target would otherwise keep), nor a token or a notifier of its
/// own: what stopping it needs.
pub(super) struct Placed {
    on_wheel: OnWheel,
    slot: StatusSlot,
}

impl Placed {
    /// Takes the address off its wheel (it sends nothing once this returns), counts its first
    /// round done if it had not settled a probe yet, and retires it.
    pub(super) fn stop(self, shared: &Shared, target: &str) {
        self.slot.rec.stop();
        drop(self.on_wheel);
        self.slot.rec.first_settled();
        let labels = self.slot.rec.metrics.labels();
        retire_address(shared, target, labels.ip(), labels);
    }
}

/// Puts address `ip` of `cfg` (not a path monitor) on a wheel without a task, until
/// [`Placed::stop`] or `parent` is cancelled; `counts_for_ready` when it counts in the first
/// round.
pub(super) fn place_address(
    shared: &Arc<Shared>,
    cfg: &Arc<TargetConfig>,
    ip: IpAddr,
    parent: &CancellationToken,
    counts_for_ready: bool,
) -> Result<Placed, MetricsError> {
    let first = FirstRound::Wheel { counts_for_ready };
    let (task, _, slot) = prepare_address(shared, cfg, ip, parent.clone(), first)?;
    Ok(Placed {
        on_wheel: task.place(),
        slot,
    })
}

/// Retires one address of a target once its probe loop has ended: deletes its series and its
/// status slot. The one way an address goes away (a literal target's loop ends in its own task;
/// a DNS target's addresses go through [`AddressEntry::stop`]).
pub(super) fn retire_address(shared: &Shared, target: &str, ip: IpAddr, labels: &TargetLabels) {
    shared.deps.metrics.forget(labels);
    shared.deps.metrics.forget_outage(labels);
    shared.deps.metrics.forget_path(labels);
    shared.paths.lock().remove(&(target.to_owned(), ip));
    let slot = shared.statuses.lock().remove((target, Some(ip)));
    if let Some(slot) = slot {
        slot.lock().outage.interrupt(slot.of());
    }
}

/// Starts probing one address of a target in a task of its own, under a child of `parent`.
pub(super) fn start_address(
    shared: &Arc<Shared>,
    cfg: &Arc<TargetConfig>,
    ip: IpAddr,
    parent: &CancellationToken,
    first: &Arc<Notify>,
) -> Result<AddressEntry, MetricsError> {
    let cancel = parent.child_token();
    let (task, labels, slot) = prepare_address(
        shared,
        cfg,
        ip,
        cancel.clone(),
        FirstRound::Task(first.clone()),
    )?;
    let handle = tokio::spawn(task.run());
    Ok(AddressEntry {
        cancel,
        handle,
        labels,
        slot,
    })
}

/// Creates an address's series and status slot (its recorder in it), and the probe loop that
/// stops with `cancel` (not yet running); `first` waits for its first settled probe.
pub(super) fn prepare_address(
    shared: &Arc<Shared>,
    cfg: &Arc<TargetConfig>,
    ip: IpAddr,
    cancel: CancellationToken,
    first: FirstRound,
) -> Result<(ProbeTask, TargetLabels, StatusSlot), MetricsError> {
    let extra: Vec<(String, String)> = cfg
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let labels = TargetLabels::new(cfg.name.clone(), ip, extra)?;
    // target_info tells which address family the target resolved to, not the setting.
    let family = if ip.is_ipv4() {
        Family::Ip4
    } else {
        Family::Ip6
    };
    let probe = crate::metrics::ProbeLabels {
        kind: cfg.options.kind.as_str(),
        port: cfg.options.port.port,
    };
    let tm = shared
        .deps
        .metrics
        .target_probing(&labels, &cfg.host, family, probe);
    let (counts_for_ready, first) = first.into_parts();
    let status = Arc::new(AddressSlot {
        cfg: cfg.clone(),
        ip,
        state: Mutex::new(Slot {
            sent: 0,
            window: Window::new(cfg.options.window),
            last: None,
            outage: super::outage::AddressOutage::new(cfg, shared.deps.metrics.outage(&labels)),
        }),
        rec: Recorder {
            common: shared.common.clone(),
            metrics: tm.clone(),
            cancel: cancel.clone(),
            stopped: AtomicBool::new(false),
            settled_once: AtomicBool::new(false),
            counts_for_ready,
            first,
            window_gauges: cfg.options.metrics.window_gauges,
        },
    });
    shared.statuses.lock().insert(status.clone());
    let task = ProbeTask {
        shared: shared.clone(),
        cfg: cfg.clone(),
        ip,
        metrics: tm,
        status: status.clone(),
        cancel,
        sink: EventSink::from(status.clone()),
    };
    Ok((task, labels, status))
}
