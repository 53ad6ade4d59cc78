//! [`Engine`]: the one [`Pinger`] the fronts hold, sending each [`Transport`] through its own
//! engine.
//!
//! Every engine behind it keeps the same contract (one terminal event per probe, then late or
//! duplicate ones), so the runner, the monitors and the sessions never look at the transport.
//!
//! The ICMP engine needs a permission TCP and UDP probes do not (`ping_group_range` or
//! `CAP_NET_RAW`). [`Engine::new`] opens it at once, so a missing permission is reported before
//! the first probe; [`Engine::lazy`] opens it at the first ICMP probe, so a process that sends
//! only TCP or UDP probes runs as any user (an ICMP probe then fails to send with the
//! permission error, counted as `send_errors_total{reason="socket"}`). The TCP/UDP engine
//! starts nothing until its first probe.

use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use super::flow::FlowEngine;
use super::icmp::{EngineConfig, IcmpEngine};
use super::{
    EngineCounters, EventSink, Pinger, ProbeSpec, SendError, SocketError, TimestampStats, Transport,
};

/// The engines of this process, one per transport.
#[derive(Debug)]
pub struct Engine {
    icmp: OnceLock<Arc<IcmpEngine>>,
    // Held while the ICMP engine starts, so two first probes do not start two.
    icmp_config: Mutex<Option<EngineConfig>>,
    flow: FlowEngine,
}

impl Engine {
    /// Starts the ICMP engine on the current tokio runtime (see [`IcmpEngine::new`]: a missing
    /// permission is reported here, before any probe).
    pub fn new(config: EngineConfig) -> Result<Arc<Self>, SocketError> {
        let engine = Self::build(config)?;
        engine.icmp_engine()?;
        Ok(Arc::new(engine))
    }

    /// Like [`Engine::new`], but the ICMP engine starts at the first ICMP probe.
    pub fn lazy(config: EngineConfig) -> Result<Arc<Self>, SocketError> {
        Ok(Arc::new(Self::build(config)?))
    }

    fn build(config: EngineConfig) -> Result<Self, SocketError> {
        Ok(Self {
            icmp: OnceLock::new(),
            flow: FlowEngine::new(config.clock.clone())?,
            icmp_config: Mutex::new(Some(config)),
        })
    }

    fn icmp_engine(&self) -> Result<&Arc<IcmpEngine>, SocketError> {
        if let Some(e) = self.icmp.get() {
            return Ok(e);
        }
        let mut config = self.icmp_config.lock();
        if let Some(e) = self.icmp.get() {
            return Ok(e);
        }
        let engine = IcmpEngine::new(config.clone().unwrap_or_default())?;
        *config = None;
        Ok(self.icmp.get_or_init(|| engine))
    }

    /// The ICMP engine, for what only it can tell (its sockets), once it runs.
    pub fn icmp(&self) -> Option<&Arc<IcmpEngine>> {
        self.icmp.get()
    }

    /// TCP probes answered with a RST, for `pingscope_tcp_refused_total`.
    pub fn tcp_refused(&self) -> u64 {
        self.flow.tcp_refused()
    }
}

impl Pinger for Engine {
    fn send(&self, spec: &ProbeSpec, tag: u64, sink: &EventSink) -> Result<u16, SendError> {
        match spec.transport {
            Transport::Icmp | Transport::IcmpFlow { .. } => self
                .icmp_engine()
                .map_err(|source| SendError::Socket {
                    ip: spec.ip,
                    source,
                })?
                .send(spec, tag, sink),
            Transport::Tcp { .. } | Transport::Udp { .. } | Transport::UdpFlow { .. } => {
                self.flow.send(spec, tag, sink)
            }
        }
    }

    fn in_flight(&self) -> usize {
        self.icmp.get().map_or(0, |e| e.in_flight()) + self.flow.in_flight()
    }

    fn counters(&self) -> EngineCounters {
        let a = self.icmp.get().map(|e| e.counters()).unwrap_or_default();
        let b = self.flow.counters();
        EngineCounters {
            events_dropped: a.events_dropped + b.events_dropped,
            sink_closed: a.sink_closed + b.sink_closed,
            stale_replies: a.stale_replies + b.stale_replies,
            unmatched_packets: a.unmatched_packets + b.unmatched_packets,
            malformed_packets: a.malformed_packets + b.malformed_packets,
            receive_errors: a.receive_errors + b.receive_errors,
        }
    }

    fn timestamp_stats(&self) -> Option<TimestampStats> {
        let mut stats = self
            .icmp
            .get()
            .map(|e| e.timestamp_stats())
            .unwrap_or_default();
        self.flow.add_timestamp_stats(&mut stats);
        Some(stats)
    }

    fn hold_flow(&self, spec: &ProbeSpec) {
        match spec.transport {
            // Not started: it holds nothing, and its first flow probe starts it.
            Transport::IcmpFlow { .. } => match self.icmp_engine() {
                Ok(e) => e.hold_flow(spec),
                Err(e) => tracing::debug!(error = %e, "no ICMP engine to hold a flow socket"),
            },
            Transport::UdpFlow { .. } => self.flow.hold_flow(spec),
            _ => {}
        }
    }

    fn release_flow(&self, spec: &ProbeSpec) {
        match spec.transport {
            Transport::IcmpFlow { .. } => {
                if let Some(e) = self.icmp.get() {
                    e.release_flow(spec);
                }
            }
            Transport::UdpFlow { .. } => self.flow.release_flow(spec),
            _ => {}
        }
    }
}
