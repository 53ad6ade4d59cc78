//! The round loop of one `kind: path` monitored address: a [`Tracer`] on the shared engine,
//! one round per interval (drift-free ticks, missed ones skipped), each folded into the
//! address's [`PathStats`] and `pingscope_path_*` series. The destination's answer of each round
//! also goes to the address's recorder as one probe (a reply, or a timeout when the round did not
//! reach it), so `pingscope_sent_total`, `_lost_total`, the RTT histogram, the window and
//! `/api/v1/targets` tell the end-to-end figures of a path monitor as of a ping monitor.
//!
//! The address's [`PathStats`] and [`PathHistory`] sit in a [`PathSlot`] that readers of
//! `/api/v1/targets/{name}/path` copy from ([`Scheduler::path_views`]); the round loop takes its
//! lock once per round, to fold the round in.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;

use tokio::time::Instant;

use super::Scheduler;
use super::tick::{ProbeTask, phase};
use crate::engine::{EventKind, ProbeEvent, ReplyInfo, SocketOptions};
use crate::metrics::events;
use crate::metrics::path::PathMetrics;
use crate::probe::path::{HopResult, HopSummary, PathEntry, PathHistory, PathStats, Round, Tracer};
use crate::probe::{ProbeKind, Ticks};

/// What a path monitor's loop shares with readers: its figures and recent paths.
#[derive(Debug, Default)]
pub(super) struct PathState {
    stats: PathStats,
    history: PathHistory,
}

/// One address's [`PathState`]; its lock is taken by the round loop once per round and by readers.
pub(super) type PathSlot = Arc<Mutex<PathState>>;

/// A path monitor's address as readers see it.
#[derive(Clone, Debug, PartialEq)]
pub struct PathView {
    /// The address traced.
    pub ip: IpAddr,
    /// Rounds so far.
    pub rounds: u64,
    /// The TTL at which the destination answered last.
    pub length: Option<u8>,
    /// The current path id; `None` before the first round.
    pub path_id: Option<String>,
    /// Path changes counted.
    pub changes: u64,
    /// One row per (TTL, responder) since the monitor started, in TTL order.
    pub hops: Vec<HopSummary>,
    /// The responders of the current path, per TTL.
    pub current: BTreeMap<u8, BTreeSet<IpAddr>>,
    /// The recent paths, oldest first.
    pub history: Vec<PathEntry>,
}

/// Why [`Scheduler::path_views`] has nothing to show.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathViewError {
    /// No running target has that name.
    #[error("no monitor named {0:?}")]
    NoTarget(String),
    /// The target probes another kind.
    #[error("monitor {0:?} is of kind {1}; only a kind: path monitor has a path view")]
    NotPath(String, &'static str),
}

impl Scheduler {
    /// The configured host of a `kind: path` monitor and the view of each of its addresses
    /// (none while its host does not resolve), sorted by address.
    pub async fn path_views(&self, target: &str) -> Result<(String, Vec<PathView>), PathViewError> {
        let host = {
            let tasks = self.shared.tasks.lock().await;
            let Some(t) = tasks.get((target, None)) else {
                return Err(PathViewError::NoTarget(target.to_owned()));
            };
            if t.config.options.kind != ProbeKind::Path {
                return Err(PathViewError::NotPath(
                    target.to_owned(),
                    t.config.options.kind.as_str(),
                ));
            }
            t.config.host.clone()
        };
        let slots: Vec<(IpAddr, PathSlot)> = self
            .shared
            .paths
            .lock()
            .iter()
            .filter(|((name, _), _)| name == target)
            .map(|((_, ip), slot)| (*ip, slot.clone()))
            .collect();
        let mut views: Vec<PathView> = slots
            .into_iter()
            .map(|(ip, slot)| {
                let st = slot.lock();
                PathView {
                    ip,
                    rounds: st.stats.rounds(),
                    length: st.stats.length(),
                    path_id: st.stats.path_id().map(str::to_owned),
                    changes: st.stats.changes(),
                    hops: st.stats.summaries(),
                    current: st.stats.responders(),
                    history: st.history.entries().cloned().collect(),
                }
            })
            .collect();
        views.sort_by_key(|v| v.ip);
        Ok((host.to_string(), views))
    }
}

/// Everything one path monitor's loop needs: its address's probe task, and what only a path
/// monitor has.
pub(super) struct PathTask {
    pub(super) task: ProbeTask,
    pub(super) path: PathMetrics,
    /// Shared with readers; registered in `Shared::paths` until the address retires.
    pub(super) view: PathSlot,
}

impl From<ProbeTask> for PathTask {
    fn from(task: ProbeTask) -> Self {
        let path = task.shared.deps.metrics.path(task.metrics.labels());
        let view = PathSlot::default();
        task.shared
            .paths
            .lock()
            .insert((task.cfg.name.to_string(), task.ip), view.clone());
        Self { task, path, view }
    }
}

impl PathTask {
    pub(super) async fn run(self) {
        let cfg = &self.task.cfg;
        let options = SocketOptions {
            ttl: None,
            tos: cfg.options.tos,
            source: cfg.options.source,
            interface: cfg.options.interface.clone(),
        };
        let mut tracer = Tracer::new(
            self.task.shared.deps.pinger.clone(),
            self.task.ip,
            cfg.options.size,
            cfg.options.timeout,
            options,
            cfg.options.path.clone(),
        )
        .with_pacer(self.task.shared.hop_pacer.clone());
        let mut ticks = Ticks::new(
            Instant::now() + phase(&cfg.name, self.task.ip, cfg.options.interval),
            cfg.options.interval,
        );
        loop {
            let due = ticks.due();
            tokio::select! {
                biased;
                () = self.task.cancel.cancelled() => break,
                () = tokio::time::sleep_until(due) => {}
            }
            let now = Instant::now();
            self.task
                .shared
                .deps
                .metrics
                .observe_scheduler_lag(now.saturating_duration_since(due).as_secs_f64());
            let round = tokio::select! {
                biased;
                () = self.task.cancel.cancelled() => break,
                r = tracer.round(|_| {}) => r,
            };
            for p in round
                .probes
                .iter()
                .filter(|p| p.result == HopResult::SendError)
            {
                events::send_failed_as(
                    &self.task.metrics,
                    &cfg.name,
                    self.task.ip,
                    p.reason.unwrap_or("io"),
                    &p.error.as_deref().unwrap_or_default(),
                );
            }
            let mut view = self.view.lock();
            let PathState { stats, history } = &mut *view;
            let changed = stats.add_round(&round);
            history.note(stats, stats.changing(), SystemTime::now());
            if changed {
                tracing::info!(
                    target = %cfg.name,
                    ip = %self.task.ip,
                    path_id = stats.path_id().unwrap_or(""),
                    length = stats.length(),
                    "path changed"
                );
            }
            self.path.on_round(&round, stats);
            drop(view);
            self.destination(&round);
            ticks.advance(Instant::now());
        }
    }

    /// The round's end-to-end outcome, as one probe of the address's ping series. A round whose
    /// probes at its highest TTL (those meant for the destination) all failed to send locally
    /// and that was not answered lower is no probe, as a ping that fails to send is none.
    fn destination(&self, round: &Round) {
        let top = round.probes.iter().map(|p| p.ttl).max();
        let unsent = round.reached_at.is_none()
            && round
                .probes
                .iter()
                .filter(|p| Some(p.ttl) == top)
                .all(|p| p.result == HopResult::SendError);
        if unsent {
            return;
        }
        self.task.metrics.on_sent();
        self.task.status.lock().sent += 1;
        let reply = round.reached_at.and_then(|ttl| {
            round
                .probes
                .iter()
                .find(|p| p.ttl == ttl && p.result == HopResult::Reply)
        });
        let (kind, at) = match reply.and_then(|p| p.rtt.map(|rtt| (rtt, p.at))) {
            Some((rtt, at)) => (
                EventKind::Reply(ReplyInfo {
                    rtt,
                    ttl: None,
                    size: usize::from(self.task.cfg.options.size) + 8,
                    refused: false,
                }),
                at,
            ),
            None => (EventKind::Timeout, SystemTime::now()),
        };
        // The recorder is a handler sink: called inline, never full.
        let _ = self.task.sink.deliver(ProbeEvent {
            tag: round.number,
            seq: 0,
            ip: self.task.ip,
            at,
            kind,
        });
    }
}
