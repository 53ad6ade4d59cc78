//! The live hub: every sample of the configured monitors, broadcast to whoever listens.
//!
//! Producers never wait: the channel has a fixed capacity and a reader that falls behind is
//! told how many samples it missed (tokio's `Lagged`), then continues from the oldest kept.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::sample::Sample;

/// Samples kept for readers that are behind; past this they lag.
pub const CAPACITY: usize = 4096;

/// Cheap-clone handle to the broadcast of monitor samples.
#[derive(Clone, Debug)]
pub struct LiveHub {
    tx: broadcast::Sender<Arc<Sample>>,
}

impl Default for LiveHub {
    fn default() -> Self {
        Self::new(CAPACITY)
    }
}

impl LiveHub {
    /// A hub keeping `capacity` samples for slow readers.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self { tx }
    }

    /// Publishes a sample; free when nobody listens.
    pub fn publish(&self, sample: Sample) {
        if self.tx.receiver_count() > 0 {
            // Err only means every receiver left since the check: nothing to do.
            let _ = self.tx.send(Arc::new(sample));
        }
    }

    /// A new reader, starting at the next sample.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Sample>> {
        self.tx.subscribe()
    }

    /// Readers now listening.
    pub fn readers(&self) -> usize {
        self.tx.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seq: u64) -> Sample {
        Sample::local_error("t", "h", None, Some(seq), "x".into())
    }

    #[tokio::test]
    async fn slow_reader_lags_and_publisher_never_waits() {
        let hub = LiveHub::new(4);
        let mut rx = hub.subscribe();
        for seq in 0..10 {
            hub.publish(sample(seq));
        }
        match rx.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => assert_eq!(n, 6),
            other => panic!("expected lag, got {other:?}"),
        }
        let next = rx.recv().await.map(|s| s.seq);
        assert_eq!(next.ok(), Some(Some(6)));
    }
}
