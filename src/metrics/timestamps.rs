//! The engine's timestamp figures, read at scrape time: `pingscope_clock_steps_total`,
//! `pingscope_timestamp_fallbacks_total{side,reason}` and
//! `pingscope_timestamp_info{family,socket,rx,tx}` (see [`crate::engine::clock`]).
//!
//! The engine keeps the counters (atomics); this collector only calls the source the app set
//! with [`super::Metrics::set_timestamp_source`]. Without a source (a fake pinger) it writes
//! nothing.

use std::sync::Arc;

use parking_lot::RwLock;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::scrape::encode_single;
use crate::engine::TimestampStats;

type Source = Arc<dyn Fn() -> Option<TimestampStats> + Send + Sync>;

/// Calls the timestamp source at scrape time.
#[derive(Default)]
pub(crate) struct TimestampCollector {
    pub(crate) source: RwLock<Option<Source>>,
}

impl std::fmt::Debug for TimestampCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimestampCollector").finish_non_exhaustive()
    }
}

impl Collector for TimestampCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Copy the source out so no lock is held while it runs.
        let source = self.source.read().clone();
        let Some(stats) = source.and_then(|f| f()) else {
            return Ok(());
        };
        encode_single(
            &mut encoder,
            "clock_steps",
            "Wall-clock steps seen during probes; those probes' RTT comes from the monotonic clock.",
            ConstCounter::new(stats.clock_steps),
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "timestamp_fallbacks",
                "RTTs whose send (tx) or receive (rx) time did not come from a kernel timestamp, by reason.",
                None,
                MetricType::Counter,
            )?;
            for (side, counts) in [("rx", &stats.rx_fallbacks), ("tx", &stats.tx_fallbacks)] {
                for (reason, n) in counts {
                    let labels = [("side", side), ("reason", reason.as_str())];
                    ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "timestamp_info",
            "Where each open socket kind takes its timestamps: kernel or user space.",
            None,
            MetricType::Gauge,
        )?;
        for p in &stats.paths {
            let labels = [
                ("family", p.family),
                ("socket", p.socket),
                ("rx", p.rx),
                ("tx", p.tx),
            ];
            ConstGauge::new(1i64).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
