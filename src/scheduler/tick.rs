//! The probe loop of one monitored address: its ticks go on a [`wheel`](super::wheel)
//! (drift-free, lag measured, missed ticks skipped), which calls [`ProbeLoop::send`] for each.
//! The per-send path is hot (every probe of every target): no allocation, no await, one
//! uncontended lock.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::path::PathTask;
use super::wheel::OnWheel;
use super::{Deps, Shared, StatusSlot};
use crate::config::TargetConfig;
use crate::engine::{EventSink, ProbeSpec, SocketOptions};
use crate::metrics::{TargetMetrics, events};
use crate::probe::{self, ProbeKind};
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

/// One (target, address)'s probe loop. Its events go straight from the engine to the address's
/// status slot and its [`Recorder`](super::recorder::Recorder); its ticks live on a
/// [`wheel`](super::wheel), which sends each probe through [`ProbeLoop::send`].
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
    /// Probes until the address's token is cancelled.
    pub(super) async fn run(self) {
        if self.cfg.options.kind == ProbeKind::Path {
            // Boxed: only path monitors pay for the tracer's state in their future.
            return Box::pin(PathTask::from(self).run()).await;
        }
        let cancel = self.cancel.clone();
        // Off the wheel when the token is cancelled, and also if this future is dropped.
        let _on_wheel = self.place();
        cancel.cancelled().await;
    }

    /// Puts the address's ticks on a wheel (not for path monitors, which trace from a task of
    /// their own); it probes until the returned [`OnWheel`] is dropped.
    pub(super) fn place(self) -> OnWheel {
        let Self {
            shared,
            cfg,
            ip,
            // The slot holds the series too.
            metrics: _,
            status,
            cancel: _,
            // Made from the slot at each send instead (see `ProbeLoop`).
            sink: _,
        } = self;
        let interval = cfg.options.interval;
        let first = Instant::now() + phase(&cfg.name, ip, interval);
        let spec = probe::request::spec(
            cfg.options.kind,
            ip,
            cfg.options.size,
            cfg.options.timeout,
            SocketOptions {
                ttl: cfg.options.ttl,
                tos: cfg.options.tos,
                source: cfg.options.source,
                interface: cfg.options.interface.clone(),
            },
            cfg.options.port,
        );
        let probe = ProbeLoop { spec, status };
        shared.wheels.add(first, interval, probe)
    }
}

/// What a wheel keeps of an address to send its probes.
pub(super) struct ProbeLoop {
    /// What every probe of the address is, made once: the wheel's entry is in the cache when it
    /// sends, the target's config often is not.
    spec: ProbeSpec,
    /// The address's slot: its config, series and state (see [`super::AddressSlot`]), and the
    /// handler of its probes' events. Its sink is made from it at each send (the engine keeps a
    /// copy of it per probe in flight anyway): kept here, it took 16 bytes of every wheel entry.
    status: StatusSlot,
}

impl ProbeLoop {
    /// Sends probe `seq`, sent at `at` for the outage record.
    pub(super) fn send(&self, deps: &Deps, seq: u64, at: std::time::SystemTime) {
        let metrics = &self.status.rec.metrics;
        let sink = EventSink::from(self.status.clone());
        match deps.pinger.send(&self.spec, seq, &sink) {
            Ok(_) => {
                metrics.on_sent();
                let mut slot = self.status.lock();
                slot.sent += 1;
                slot.outage.sent(self.status.of(), seq, at);
            }
            Err(e) => {
                self.status.lock().outage.skipped(self.status.of(), seq);
                let cfg = &self.status.cfg;
                events::send_failed(metrics, &cfg.name, self.spec.ip, &e);
                deps.live.publish(Sample::local_error(
                    &cfg.name,
                    &cfg.host,
                    Some(self.spec.ip),
                    Some(seq),
                    e.to_string(),
                ));
            }
        }
    }
}
