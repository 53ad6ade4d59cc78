//! Series whose value another module owns (an atomic of its own, a semaphore, a queue) and this
//! registry reads at scrape time: nothing on the owner's path but its own atomic, nothing in
//! the registry until a scrape. A series without a source reads 0, so every one of them is
//! on `/metrics` from the start.

use std::sync::Arc;

use parking_lot::RwLock;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Level gauges whose value another module owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScrapeGauge {
    /// `pingscope_probes_in_flight`: probes awaiting their reply or deadline (the engine).
    ProbesInFlight,
    /// `pingscope_sessions_active`: on-demand sessions running (the session manager).
    SessionsActive,
    /// `pingscope_live_clients`: connected live WebSocket clients (the live hub).
    LiveClients,
}

impl ScrapeGauge {
    const ALL: [Self; 3] = [
        Self::ProbesInFlight,
        Self::SessionsActive,
        Self::LiveClients,
    ];

    fn name_and_help(self) -> (&'static str, &'static str) {
        match self {
            Self::ProbesInFlight => (
                "probes_in_flight",
                "Probes sent and awaiting their reply or deadline.",
            ),
            Self::SessionsActive => ("sessions_active", "On-demand sessions running."),
            Self::LiveClients => ("live_clients", "Connected live WebSocket clients."),
        }
    }
}

/// Counters whose atomic another module owns (the encoder adds `_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScrapeCounter {
    /// `pingscope_engine_events_dropped_total`: probe events the engine could not hand over
    /// because the receiver's queue was full.
    EngineEventsDropped,
    /// `pingscope_engine_unmatched_packets_total`: ICMP packets received that belong to none of
    /// this process' probes (another identifier, a foreign payload, a probe no longer known).
    EngineUnmatchedPackets,
    /// `pingscope_session_samples_dropped_total`: session samples not stored because the
    /// store's write queue was full.
    SessionSamplesDropped,
    /// `pingscope_session_samples_lost_total`: session samples lost in failed writes.
    SessionSamplesLost,
    /// `pingscope_store_write_errors_total`: session store write transactions that failed.
    StoreWriteErrors,
    /// `pingscope_store_file_lost_total`: times the session database file was found removed
    /// or replaced while in use.
    StoreFileLost,
}

impl ScrapeCounter {
    const ALL: [Self; 6] = [
        Self::EngineEventsDropped,
        Self::EngineUnmatchedPackets,
        Self::SessionSamplesDropped,
        Self::SessionSamplesLost,
        Self::StoreWriteErrors,
        Self::StoreFileLost,
    ];

    fn name_and_help(self) -> (&'static str, &'static str) {
        match self {
            Self::EngineEventsDropped => (
                "engine_events_dropped",
                "Probe events the engine dropped because the receiver's queue was full.",
            ),
            Self::EngineUnmatchedPackets => (
                "engine_unmatched_packets",
                "ICMP packets received that answer none of this process' probes.",
            ),
            Self::SessionSamplesDropped => (
                "session_samples_dropped",
                "Session samples not stored because the store's write queue was full.",
            ),
            Self::SessionSamplesLost => (
                "session_samples_lost",
                "Session samples not stored because a write to the session database failed.",
            ),
            Self::StoreWriteErrors => (
                "store_write_errors",
                "Session database write transactions that failed (their samples are counted lost).",
            ),
            Self::StoreFileLost => (
                "store_file_lost",
                "Times the session database file was found removed or replaced while in use.",
            ),
        }
    }
}

type GaugeSource = Arc<dyn Fn() -> i64 + Send + Sync>;
type CounterSource = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Calls the sources at scrape time. The lock is taken to set a source (at start, and when
/// sessions open) and by scrapes to copy the handles out; never while a source runs.
#[derive(Default)]
pub(crate) struct ScrapeSources {
    gauges: RwLock<[Option<GaugeSource>; ScrapeGauge::ALL.len()]>,
    counters: RwLock<[Option<CounterSource>; ScrapeCounter::ALL.len()]>,
}

impl ScrapeSources {
    pub(crate) fn set_gauge(&self, gauge: ScrapeGauge, source: GaugeSource) {
        self.gauges.write()[gauge as usize] = Some(source);
    }

    pub(crate) fn set_counter(&self, counter: ScrapeCounter, source: CounterSource) {
        self.counters.write()[counter as usize] = Some(source);
    }
}

impl std::fmt::Debug for ScrapeSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrapeSources").finish_non_exhaustive()
    }
}

impl Collector for ScrapeSources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Copy the sources out so no lock is held while they run.
        let gauges = self.gauges.read().clone();
        for gauge in ScrapeGauge::ALL {
            let value = gauges[gauge as usize].as_ref().map_or(0, |f| f());
            let (name, help) = gauge.name_and_help();
            encode_single(&mut encoder, name, help, ConstGauge::new(value))?;
        }
        let counters = self.counters.read().clone();
        for counter in ScrapeCounter::ALL {
            let value = counters[counter as usize].as_ref().map_or(0, |f| f());
            let (name, help) = counter.name_and_help();
            encode_single(&mut encoder, name, help, ConstCounter::new(value))?;
        }
        Ok(())
    }
}

/// Writes `metric` as a family of one series without labels.
pub(super) fn encode_single(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric: impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}
