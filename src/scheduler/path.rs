//! The round loop of one `kind: path` monitored address: a [`Tracer`] on the shared engine,
//! one round per interval (drift-free ticks, missed ones skipped), each folded into the
//! address's [`PathStats`] and `pingscope_path_*` series. The destination's answer of each round
//! also goes to the address's recorder as one probe (a reply, or a timeout when the round did not
//! reach it), so `pingscope_sent_total`, `_lost_total`, the RTT histogram, the window and
//! `/api/v1/targets` tell the end-to-end figures of a path monitor as of a ping monitor.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::tick::{ProbeTask, phase};
use super::{Shared, StatusSlot};
use crate::config::TargetConfig;
use crate::engine::{EventKind, EventSink, ProbeEvent, ReplyInfo, SocketOptions};
use crate::metrics::path::PathMetrics;
use crate::metrics::{TargetMetrics, events};
use crate::probe::Ticks;
use crate::probe::path::{HopResult, PathStats, Round, Tracer};

/// Everything one path monitor's loop needs.
pub(super) struct PathTask {
    pub(super) shared: Arc<Shared>,
    pub(super) cfg: Arc<TargetConfig>,
    pub(super) ip: IpAddr,
    pub(super) metrics: TargetMetrics,
    pub(super) path: PathMetrics,
    pub(super) status: StatusSlot,
    /// The address's recorder.
    pub(super) sink: EventSink,
    pub(super) cancel: CancellationToken,
}

impl From<ProbeTask> for PathTask {
    fn from(t: ProbeTask) -> Self {
        let path = t.shared.deps.metrics.path(t.metrics.labels());
        Self {
            shared: t.shared,
            cfg: t.cfg,
            ip: t.ip,
            metrics: t.metrics,
            path,
            status: t.status,
            sink: t.sink,
            cancel: t.cancel,
        }
    }
}

impl PathTask {
    pub(super) async fn run(self) {
        let cfg = &self.cfg;
        let options = SocketOptions {
            ttl: None,
            tos: cfg.tos,
            source: cfg.source,
            interface: cfg.interface.clone(),
        };
        let mut tracer = Tracer::new(
            self.shared.deps.pinger.clone(),
            self.ip,
            cfg.size,
            cfg.timeout,
            options,
            cfg.path.clone(),
        )
        .with_pacer(self.shared.hop_pacer.clone());
        let mut stats = PathStats::new();
        let mut ticks = Ticks::new(
            Instant::now() + phase(&cfg.name, self.ip, cfg.interval),
            cfg.interval,
        );
        loop {
            let due = ticks.due();
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                () = tokio::time::sleep_until(due) => {}
            }
            let now = Instant::now();
            self.shared
                .deps
                .metrics
                .observe_scheduler_lag(now.saturating_duration_since(due).as_secs_f64());
            let round = tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                r = tracer.round(|_| {}) => r,
            };
            let changed = stats.add_round(&round);
            if changed {
                tracing::info!(
                    target = %cfg.name,
                    ip = %self.ip,
                    path_id = stats.path_id().unwrap_or(""),
                    length = stats.length(),
                    "path changed"
                );
            }
            for p in round
                .probes
                .iter()
                .filter(|p| p.result == HopResult::SendError)
            {
                events::send_failed_as(
                    &self.metrics,
                    &cfg.name,
                    self.ip,
                    p.reason.unwrap_or("io"),
                    &p.error.as_deref().unwrap_or_default(),
                );
            }
            self.path.on_round(&round, &stats);
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
        self.metrics.on_sent();
        self.status.lock().sent += 1;
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
                    size: usize::from(self.cfg.size) + 8,
                    refused: false,
                }),
                at,
            ),
            None => (EventKind::Timeout, SystemTime::now()),
        };
        // The recorder is a handler sink: called inline, never full.
        let _ = self.sink.deliver(ProbeEvent {
            tag: round.number,
            seq: 0,
            ip: self.ip,
            at,
            kind,
        });
    }
}
