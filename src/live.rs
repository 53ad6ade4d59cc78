//! The live hub: every sample of the configured monitors, broadcast to whoever listens.
//!
//! Producers never wait: the channel has a fixed capacity and a reader that falls behind is
//! told how many samples it missed (tokio's `Lagged`), then continues from the oldest kept.

use std::sync::{Arc, OnceLock};

use tokio::sync::broadcast;

use crate::sample::Sample;

/// Samples kept for readers that are behind; past this they lag.
pub const CAPACITY: usize = 4096;

/// Cheap-clone handle to the broadcast of monitor samples.
///
/// The channel (its ring of `capacity` slots, 384 KiB at the default) is made by the first
/// subscriber: a daemon nobody watches live does not carry it.
#[derive(Clone, Debug)]
pub struct LiveHub {
    capacity: usize,
    tx: Arc<OnceLock<broadcast::Sender<Arc<Sample>>>>,
}

impl Default for LiveHub {
    fn default() -> Self {
        Self::new(CAPACITY)
    }
}

impl LiveHub {
    /// A hub keeping `capacity` samples for slow readers.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            tx: Arc::new(OnceLock::new()),
        }
    }

    /// Publishes a sample; free when nobody listens.
    pub fn publish(&self, sample: Sample) {
        if let Some(tx) = self.tx.get()
            && tx.receiver_count() > 0
        {
            // Err only means every receiver left since the check: nothing to do.
            let _ = tx.send(Arc::new(sample));
        }
    }

    /// A new reader, starting at the next sample.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Sample>> {
        self.tx
            .get_or_init(|| broadcast::channel(self.capacity).0)
            .subscribe()
    }

    /// Readers now listening.
    pub fn readers(&self) -> usize {
        self.tx.get().map_or(0, broadcast::Sender::receiver_count)
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

    #[tokio::test]
    async fn no_channel_until_the_first_reader_and_clones_share_it() {
        let hub = LiveHub::new(8);
        hub.publish(sample(0));
        assert!(hub.tx.get().is_none(), "channel made without a reader");
        assert_eq!(hub.readers(), 0);
        let other = hub.clone();
        let mut rx = other.subscribe();
        assert_eq!(hub.readers(), 1);
        hub.publish(sample(1));
        let got = rx.recv().await.map(|s| s.seq);
        assert_eq!(got.ok(), Some(Some(1)));
    }
}
