//! Outage and alert-threshold series (DESIGN.md, "Probe kinds, outages, mesh"), written at scrape
//! time:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `pingscope_outage_active` | gauge 0/1 | target, ip, (custom) |
//! | `pingscope_outages_total` | counter | target, ip, (custom) |
//! | `pingscope_outage_seconds_total` | counter | target, ip, (custom) |
//! | `pingscope_consecutive_lost` | gauge | target, ip, (custom) |
//! | `pingscope_target_threshold` | gauge | target, metric (`loss` ratio, `rtt` seconds, `for` seconds) |
//!
//! The address series exist from the address's start (at zero) until it is retired; a target's
//! thresholds exist while it is configured with an `alert:` threshold. An address's figures and
//! the key of its labels (the one its other series share, see [`super::Metrics::outage`]) are one
//! allocation, and a scrape writes the labels from that key as they are, in label order.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::TargetLabels;
use super::labels::SeriesKey;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Figures {
    active: bool,
    outages: u64,
    /// Seconds of closed outages.
    closed_seconds: f64,
    /// The open outage's length up to its last lost probe (it only grows, and its close adds at
    /// least as much), so the sum never goes back.
    open_seconds: f64,
    consecutive_lost: u64,
}

/// One monitored address's outage series. Cheap to clone.
#[derive(Clone, Debug)]
pub struct OutageMetrics {
    entry: Arc<Entry>,
}

/// One address's labels and figures.
#[derive(Debug)]
pub(crate) struct Entry {
    key: SeriesKey,
    figures: Mutex<Figures>,
}

impl OutageMetrics {
    /// The key of the labels the series are written with.
    #[cfg(test)]
    pub(crate) fn key(&self) -> &SeriesKey {
        &self.entry.key
    }

    /// Sets the gauges after probes were taken in order.
    pub fn set(&self, active: bool, consecutive_lost: u64) {
        let mut f = self.entry.figures.lock();
        f.active = active;
        f.consecutive_lost = consecutive_lost;
    }

    /// An outage opened (`opened`) or grew: it is `seconds` long up to its last lost probe.
    pub fn open_for(&self, opened: bool, seconds: f64) {
        let mut f = self.entry.figures.lock();
        f.outages += u64::from(opened);
        f.open_seconds = f.open_seconds.max(seconds);
    }

    /// The open outage closed, `seconds` long from its first lost probe to its first reply.
    pub fn closed(&self, seconds: f64) {
        let mut f = self.entry.figures.lock();
        f.closed_seconds += seconds.max(f.open_seconds);
        f.open_seconds = 0.0;
    }
}

/// A target's thresholds as exported.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Thresholds {
    /// Loss ratio.
    pub loss: Option<f64>,
    /// RTT, seconds.
    pub rtt: Option<f64>,
    /// How long, seconds.
    pub for_seconds: f64,
}

/// Every address's outage series and every target's thresholds.
#[derive(Debug, Default)]
pub(crate) struct OutageCollector {
    // Taken to add or remove an entry and by scrapes to copy the handles out.
    addresses: Mutex<HashMap<SeriesKey, Arc<Entry>>>,
    thresholds: Mutex<BTreeMap<String, Thresholds>>,
}

impl OutageCollector {
    /// The series of the address with these labels; `key` is made only for a new one (the
    /// caller passes the key its other series already share).
    pub(crate) fn address(
        &self,
        labels: &TargetLabels,
        key: impl FnOnce() -> SeriesKey,
    ) -> OutageMetrics {
        let mut addresses = self.addresses.lock();
        let entry = match addresses.get(labels) {
            Some(entry) => entry.clone(),
            None => {
                let key = key();
                let entry = Arc::new(Entry {
                    key: key.clone(),
                    figures: Mutex::default(),
                });
                addresses.insert(key, entry.clone());
                entry
            }
        };
        OutageMetrics { entry }
    }

    pub(crate) fn forget_address(&self, labels: &TargetLabels) -> bool {
        self.addresses.lock().remove(labels).is_some()
    }

    pub(crate) fn set_thresholds(&self, target: &str, t: Option<Thresholds>) {
        let mut map = self.thresholds.lock();
        match t {
            Some(t) => {
                map.insert(target.to_owned(), t);
            }
            None => {
                map.remove(target);
            }
        }
    }
}

impl OutageCollector {
    /// The addresses' handles in label order, copied out.
    pub(crate) fn snapshot(&self) -> Arc<[Arc<Entry>]> {
        let mut handles: Vec<Arc<Entry>> = self.addresses.lock().values().cloned().collect();
        handles.sort_unstable_by(|a, b| a.key.write_order(&b.key));
        handles.into()
    }
}

/// How many per-address families there are (bits `0..ADDRESS_FAMILIES` of
/// [`OutageParts::families`], in the order they are written); the next bit is the targets'
/// thresholds.
pub(crate) const ADDRESS_FAMILIES: u32 = 4;

/// The bit of the targets' thresholds in [`OutageParts::families`].
pub(crate) const THRESHOLDS: u32 = 1 << ADDRESS_FAMILIES;

impl Collector for OutageCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        write_outages(self, &self.snapshot(), (THRESHOLDS << 1) - 1, encoder)
    }
}

/// Some outage families of some addresses of an [`OutageCollector::snapshot`], for a protobuf
/// scrape that writes them a family and a chunk of addresses at a time (see
/// `Metrics::encode_protobuf_chunked`).
#[derive(Debug)]
pub(crate) struct OutageParts {
    pub(crate) collector: Arc<OutageCollector>,
    pub(crate) handles: Arc<[Arc<Entry>]>,
    /// Which of `handles` (an empty range where it is out of bounds).
    pub(crate) range: std::ops::Range<usize>,
    /// Bit `i` set: the `i`-th per-address family; [`THRESHOLDS`]: the thresholds.
    pub(crate) families: u32,
}

impl Collector for OutageParts {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let handles = self.handles.get(self.range.clone()).unwrap_or_default();
        write_outages(&self.collector, handles, self.families, encoder)
    }
}

/// Writes the families of `handles` (and of `collector`'s thresholds) whose bits are set in
/// `families`. A family is written even with no series.
fn write_outages(
    collector: &OutageCollector,
    handles: &[Arc<Entry>],
    families: u32,
    mut encoder: DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let on = |i: u32| families & (1 << i) != 0;
    let rows: Vec<(&SeriesKey, Figures)> = handles
        .iter()
        .map(|h| (&h.key, *h.figures.lock()))
        .collect();
    type Gauge = (&'static str, &'static str, fn(&Figures) -> i64);
    let gauges: [Gauge; 2] = [
        (
            "outage_active",
            "1 while the address is in an outage (outage.after lost probes in a row, until outage.until replies in a row).",
            |f| i64::from(f.active),
        ),
        (
            "consecutive_lost",
            "Probes lost in a row, by sending order.",
            |f| i64::try_from(f.consecutive_lost).unwrap_or(i64::MAX),
        ),
    ];
    for (i, (name, help, value)) in (0..).zip(gauges) {
        if !on(i) {
            continue;
        }
        let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (l, f) in &rows {
            ConstGauge::new(value(f)).encode(m.encode_family(*l)?)?;
        }
    }
    if on(2) {
        let mut m =
            encoder.encode_descriptor("outages", "Outages opened.", None, MetricType::Counter)?;
        for (l, f) in &rows {
            ConstCounter::new(f.outages).encode(m.encode_family(*l)?)?;
        }
    }
    if on(3) {
        let mut m = encoder.encode_descriptor(
            "outage",
            "Time spent in outages, from the first lost probe to the first reply of the run that ended it.",
            Some(&prometheus_client::registry::Unit::Seconds),
            MetricType::Counter,
        )?;
        for (l, f) in &rows {
            ConstCounter::new(f.closed_seconds + f.open_seconds).encode(m.encode_family(*l)?)?;
        }
    }
    if families & THRESHOLDS == 0 {
        return Ok(());
    }
    let thresholds = collector.thresholds.lock().clone();
    let mut m = encoder.encode_descriptor(
            "target_threshold",
            "A target's own alert thresholds (alert: in the config): loss ratio, rtt and for in seconds.",
            None,
            MetricType::Gauge,
        )?;
    for (target, t) in &thresholds {
        let rows = [
            ("loss", t.loss),
            ("rtt", t.rtt),
            ("for", Some(t.for_seconds)),
        ];
        for (metric, v) in rows {
            if let Some(v) = v {
                let l = [("target", target.as_str()), ("metric", metric)];
                ConstGauge::new(v).encode(m.encode_family(&l)?)?;
            }
        }
    }
    Ok(())
}
