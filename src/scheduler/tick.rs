//! The tick loop of one monitored address: drift-free ticks, lag measured, missed ticks skipped.
//! The per-send path is hot (every probe of every target): no allocation beyond the spec's
//! rarely-set interface name, no await, one uncontended lock.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::path::PathTask;
use super::{Shared, StatusSlot};
use crate::config::TargetConfig;
use crate::engine::{EventSink, SocketOptions};
use crate::metrics::{TargetMetrics, events};
use crate::probe::{self, ProbeKind, Ticks};
use crate::sample::Sample;

/// Stable phase of a (target, address) within its interval: FNV-1a of both, modulo the interval.
pub(super) fn phase(name: &str, ip: IpAddr, interval: Duration) -> Duration {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes().chain(ip.to_string().into_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let nanos = interval.as_nanos().max(1);
    Duration::from_nanos((u128::from(h) % nanos) as u64)
}

/// Sends one (target, address)'s probes on schedule. Their events go straight from the engine
/// to the address's [`Recorder`](super::recorder::Recorder).
pub(super) struct ProbeTask {
    pub(super) shared: Arc<Shared>,
    pub(super) cfg: Arc<TargetConfig>,
    pub(super) ip: IpAddr,
    pub(super) metrics: TargetMetrics,
    pub(super) status: StatusSlot,
    pub(super) cancel: CancellationToken,
    pub(super) sink: EventSink,
}

impl ProbeTask {
    pub(super) async fn run(self) {
        if self.cfg.kind == ProbeKind::Path {
            // Boxed: only path monitors pay for the tracer's state in their future.
            return Box::pin(PathTask::from(self).run()).await;
        }
        let interval = self.cfg.interval;
        let mut ticks = Ticks::new(
            Instant::now() + phase(&self.cfg.name, self.ip, interval),
            interval,
        );
        let mut seq: u64 = 0;
        // Send times for outages come from the monotonic clock (tokio's, paused in tests),
        // anchored to the wall clock once.
        let anchor = (std::time::SystemTime::now(), Instant::now());
        loop {
            let due = ticks.due();
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                () = tokio::time::sleep_until(due) => {
                    let now = Instant::now();
                    let lag = now.saturating_duration_since(due);
                    self.shared.deps.metrics.observe_scheduler_lag(lag.as_secs_f64());
                    seq += 1;
                    self.send(seq, anchor.0 + now.saturating_duration_since(anchor.1));
                    // More than an interval behind: the missed ticks are skipped, not burst.
                    ticks.advance(now);
                }
            }
        }
    }

    fn send(&self, seq: u64, at: std::time::SystemTime) {
        // Built per send rather than held: it would sit in every target's future between
        // sends, and building it costs a few copies (the interface name is rarely set).
        let options = SocketOptions {
            ttl: self.cfg.ttl,
            tos: self.cfg.tos,
            source: self.cfg.source,
            interface: self.cfg.interface.clone(),
        };
        let spec = probe::request::spec(
            self.cfg.kind,
            self.ip,
            self.cfg.size,
            self.cfg.timeout,
            options,
            self.cfg.port,
        );
        match self.shared.deps.pinger.send(&spec, seq, &self.sink) {
            Ok(_) => {
                self.metrics.on_sent();
                let mut slot = self.status.lock();
                slot.sent += 1;
                slot.outage.sent(seq, at);
            }
            Err(e) => {
                self.status.lock().outage.skipped(seq);
                events::send_failed(&self.metrics, &self.cfg.name, self.ip, &e);
                self.shared.deps.live.publish(Sample::local_error(
                    &self.cfg.name,
                    &self.cfg.host,
                    Some(self.ip),
                    Some(seq),
                    e.to_string(),
                ));
            }
        }
    }
}
