//! (stub until the engine branch lands)
use std::sync::Arc;

use super::{EventSink, Pinger, ProbeSpec, SendError, SocketError};

/// Engine settings.
#[derive(Clone, Debug, Default)]
pub struct EngineConfig {}

/// The real engine.
#[derive(Debug)]
pub struct IcmpEngine {}

impl IcmpEngine {
    /// Opens the sockets.
    pub fn new(_cfg: EngineConfig) -> Result<Arc<Self>, SocketError> {
        Ok(Arc::new(Self {}))
    }
}

impl Pinger for IcmpEngine {
    fn send(&self, _spec: &ProbeSpec, _tag: u64, _sink: &EventSink) -> Result<u16, SendError> {
        Err(SendError::Closed)
    }
    fn in_flight(&self) -> usize {
        0
    }
}
