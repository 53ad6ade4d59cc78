//! [`Engine`]: the one [`Pinger`] the fronts hold, sending each [`Transport`] through its own
//! engine.
//!
//! Every engine behind it keeps the same contract (one terminal event per probe, then late or
//! duplicate ones), so the runner, the monitors and the sessions never look at the transport.

use std::sync::Arc;

use super::icmp::{EngineConfig, IcmpEngine};
use super::{
    EngineCounters, EventSink, Pinger, ProbeSpec, SendError, SocketError, TimestampStats, Transport,
};

/// The engines of this process, one per transport.
#[derive(Debug)]
pub struct Engine {
    icmp: Arc<IcmpEngine>,
}

impl Engine {
    /// Starts the ICMP engine on the current tokio runtime (see [`IcmpEngine::new`]: a missing
    /// permission is reported here, before any probe).
    pub fn new(config: EngineConfig) -> Result<Arc<Self>, SocketError> {
        Ok(Arc::new(Self {
            icmp: IcmpEngine::new(config)?,
        }))
    }

    /// The ICMP engine, for what only it can tell (its sockets).
    pub fn icmp(&self) -> &Arc<IcmpEngine> {
        &self.icmp
    }
}

impl Pinger for Engine {
    fn send(&self, spec: &ProbeSpec, tag: u64, sink: &EventSink) -> Result<u16, SendError> {
        match spec.transport {
            Transport::Icmp | Transport::IcmpFlow { .. } => self.icmp.send(spec, tag, sink),
        }
    }

    fn in_flight(&self) -> usize {
        self.icmp.in_flight()
    }

    fn counters(&self) -> EngineCounters {
        self.icmp.counters()
    }

    fn timestamp_stats(&self) -> Option<TimestampStats> {
        Some(self.icmp.timestamp_stats())
    }
}
