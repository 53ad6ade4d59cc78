//! The Prometheus registry of the daemon: every series of `/metrics`, their lifecycle, and their
//! encoding.
//!
//! [`Metrics`] is the cheap-clone handle the app builds once. The scheduler asks it for one
//! [`TargetMetrics`] per (target, address) with [`Metrics::target`], which creates that target's
//! base series at zero at once, and removes them all with [`Metrics::forget`]. The HTTP layer
//! calls [`negotiate`] on the scrape's `Accept` header and [`Metrics::encode`].
//!
//! Names, types, labels and units follow the metrics table of DESIGN.md, plus level gauges and
//! counters owned by other modules and read at scrape time ([`ScrapeGauge`], [`ScrapeCounter`]).
//! A failure that is both logged and counted goes through one function of [`events`].
//!
//! Built on prometheus-client 0.26. Where it needed help:
//! - Custom label *names* per target: [`TargetLabels`] implements `EncodeLabelSet` by hand (the
//!   derive needs names known at compile time); see [`labels`].
//! - Per-target series: a family per metric would keep a hash map per family and an allocation
//!   per counter for every target. Each target keeps its counters, gauges and histograms in one
//!   allocation ([`TargetMetrics`]), and a collector writes every per-target family from the
//!   live targets at scrape time ([`target`]).
//! - Native histograms: Prometheus ingests only the native buckets of a histogram that has
//!   them, so by default the protobuf body carries native buckets only (plus sum and count) and
//!   the text body classic buckets only. Each series keeps both kinds under one lock
//!   ([`histogram::SplitHistogram`], native buckets in [`native`]); prometheus-client cannot
//!   tell a metric which format is being encoded, so that takes two registries sharing every
//!   family, the protobuf one asking the histograms for their native buckets (see [`Layout`]
//!   and [`registry`]). With
//!   [`HistogramConfig::classic_in_protobuf`](crate::config::HistogramConfig::classic_in_protobuf) one `Histogram::new_classic_and_native` per series
//!   serves both formats (protobuf gets both kinds of buckets, text the classic ones); with
//!   [`HistogramConfig::native`](crate::config::HistogramConfig::native) off, histograms are classic only.
//! - Classic-only and split histograms: lean ones of our own ([`histogram`]) sharing their
//!   bounds, since prometheus-client's keeps a copy of the bounds and room for native state
//!   that can widen and reset in every series.
//! - Level gauges and counters owned by other modules: a small collector calls their closures
//!   at scrape time ([`scrape`]).
//! - Window gauges: each target keeps its last window figures in place, written with its other
//!   series at scrape time. Only targets whose figures were set have them
//!   (`metrics: {window_gauges: true}`; off by default).
//! - RTT and jitter have a classic layout each ([`HistogramConfig::buckets`](crate::config::HistogramConfig::buckets),
//!   [`HistogramConfig::jitter_buckets`](crate::config::HistogramConfig::jitter_buckets)): jitter needs far fewer bounds.

pub mod capture;
pub mod events;
mod format;
mod histogram;
mod labels;
mod native;
mod options;
pub mod outage;
pub mod path;
mod protobuf;
mod registry;
mod scrape;
mod target;
mod timestamps;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, NativeHistogramConfig};
use prometheus_client::registry::Registry;

use crate::resolve::Family as AddressFamily;

pub use format::{Format, PROTOBUF_CONTENT_TYPE, TEXT_CONTENT_TYPE, negotiate};
pub use labels::{RESERVED_LABELS, TargetLabels};
pub use options::{BuildInfo, MetricsError, MetricsOptions};
pub use scrape::{ScrapeCounter, ScrapeGauge};
pub use target::{TargetMetrics, WindowRtt};

use histogram::{ClassicHistogram, SeriesHistogram, SharedHistogram, SplitHistogram};
pub use labels::ProbeLabels;
use labels::{Info, NameLabel, SeriesKey};
use scrape::ScrapeSources;
use target::{Makers, TargetInner, TargetMap, TargetSeries};

/// Classic buckets of `pingscope_scheduler_lag_seconds`.
const LAG_BUCKETS: &[f64] = &[
    0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
];

/// Upper bound on native buckets per histogram; past it the resolution halves. 160 holds
/// 20 octaves (10 µs to 10 s) at the default factor-1.1 schema.
const NATIVE_MAX_BUCKETS: u16 = 160;

/// A `Gauge<f64>`.
pub(crate) type FloatGauge = Gauge<f64, AtomicU64>;

/// Which buckets the histograms of each exposition carry, from [`MetricsOptions`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// `native` off: one classic histogram per series, one registry for both formats.
    Classic,
    /// `native` and `classic_in_protobuf`: one classic-and-native histogram per series, one
    /// registry; text encodes its classic buckets, protobuf both kinds.
    Both,
    /// `native` alone (the default): one histogram with both kinds of buckets per series;
    /// text scrapes get the classic ones, protobuf scrapes (their own registry) the native ones.
    Split,
}

impl Layout {
    fn of(options: &MetricsOptions) -> Self {
        match (
            options.histogram.native,
            options.histogram.classic_in_protobuf,
        ) {
            (false, _) => Self::Classic,
            (true, true) => Self::Both,
            (true, false) => Self::Split,
        }
    }
}

/// Makes histograms with one kind of buckets, or both.
#[derive(Clone, Debug)]
pub(crate) enum HistogramMaker {
    /// Classic buckets with these upper bounds (+Inf implicit), in our lean histogram.
    Classic(Arc<[f64]>),
    /// Classic buckets with these upper bounds and native ones (at most this many before their
    /// resolution halves), in our split histogram: one kind per exposition.
    Split(Arc<[f64]>, u16),
    /// Both, in prometheus-client's histogram: protobuf scrapes get both kinds.
    Both(Arc<[f64]>, NativeHistogramConfig),
}

impl MetricConstructor<SeriesHistogram> for HistogramMaker {
    fn new_metric(&self) -> SeriesHistogram {
        match self {
            Self::Classic(bounds) => {
                SeriesHistogram::Classic(ClassicHistogram::new(bounds.clone()))
            }
            Self::Split(bounds, max_buckets) => {
                SeriesHistogram::Split(SplitHistogram::new(bounds.clone(), *max_buckets))
            }
            Self::Both(bounds, native) => SeriesHistogram::Client(
                Histogram::new_classic_and_native(bounds.iter().copied(), *native),
            ),
        }
    }
}

#[derive(Debug)]
struct Shared {
    /// Every series, for text scrapes.
    registry: Registry,
    /// The same families for protobuf scrapes, in parts; in [`Layout::Split`] the histograms
    /// encode their native buckets.
    protobuf: registry::Protobuf,
    /// How a new target's histograms are made.
    makers: Makers,
    /// Live targets by label set. A mutex, not a lock-free map: only `target` and `forget`
    /// (config load, reload, DNS changes) take it, and a scrape to copy the handles out
    /// ([`TargetSeries`]); never the probe path.
    targets: Arc<Mutex<TargetMap>>,
    resolve_errors: Family<NameLabel, Counter>,
    scheduler_lag: SharedHistogram,
    reload_successful: Gauge,
    reload_success_timestamp: FloatGauge,
    scrape_sources: Arc<ScrapeSources>,
    timestamps: Arc<timestamps::TimestampCollector>,
    /// Outage series and target thresholds.
    outages: Arc<outage::OutageCollector>,
    /// The series of path monitors.
    paths: Arc<path::PathCollector>,
    /// Captures started and skipped.
    captures: Arc<capture::CaptureCollector>,
    /// Size of the last text body, to allocate the next one at once.
    last_text_len: AtomicUsize,
}

/// The registry handle. Cheap to clone; clones share everything.
#[derive(Clone, Debug)]
pub struct Metrics {
    shared: Arc<Shared>,
}

impl Metrics {
    /// Builds the registry with every family registered (series appear as targets are added).
    pub fn new(options: MetricsOptions) -> Result<Self, MetricsError> {
        check_buckets("RTT", &options.histogram.buckets)?;
        check_buckets("jitter", &options.histogram.jitter_buckets)?;
        let layout = Layout::of(&options);
        let native = NativeHistogramConfig::with_schema(native::SCHEMA)
            .max_buckets(usize::from(NATIVE_MAX_BUCKETS));
        // One maker per classic layout.
        let maker = |bounds: &[f64]| match layout {
            Layout::Classic => HistogramMaker::Classic(bounds.into()),
            Layout::Split => HistogramMaker::Split(bounds.into(), NATIVE_MAX_BUCKETS),
            Layout::Both => HistogramMaker::Both(bounds.into(), native),
        };
        let (rtt_maker, jitter_maker, lag_maker) = (
            maker(&options.histogram.buckets),
            maker(&options.histogram.jitter_buckets),
            maker(LAG_BUCKETS),
        );
        let makers = Makers {
            rtt: rtt_maker,
            jitter: jitter_maker,
        };
        let resolve_errors = Family::<NameLabel, Counter>::default();
        let scheduler_lag = SharedHistogram::new(lag_maker.new_metric());
        let reload_successful = Gauge::default();
        let reload_success_timestamp = FloatGauge::default();
        let scrape_sources = Arc::new(ScrapeSources::default());
        let timestamps = Arc::new(timestamps::TimestampCollector::default());
        let outages = Arc::new(outage::OutageCollector::default());
        let captures = Arc::new(capture::CaptureCollector::default());
        let paths = Arc::new(path::PathCollector::new(maker(path::PATH_BUCKETS)));
        let targets = Arc::new(Mutex::new(HashMap::new()));

        let shared = registry::Shared {
            resolve_errors: &resolve_errors,
            reload_successful: &reload_successful,
            reload_success_timestamp: &reload_success_timestamp,
            scrape_sources: &scrape_sources,
            timestamps: &timestamps,
            outages: &outages,
            captures: &captures,
            paths: &paths,
            targets: &targets,
            scheduler_lag: &scheduler_lag,
            build: &options.build,
        };
        let registry = registry::build(&shared, false);
        let protobuf = registry::protobuf(&shared, layout == Layout::Split);

        Ok(Self {
            shared: Arc::new(Shared {
                registry,
                protobuf,
                makers,
                targets,
                resolve_errors,
                scheduler_lag,
                reload_successful,
                reload_success_timestamp,
                scrape_sources,
                timestamps,
                outages,
                paths,
                captures,
                last_text_len: AtomicUsize::new(0),
            }),
        })
    }

    /// The recording handle of a (target, address): creates its base series at zero (sent,
    /// lost, late, duplicates, RTT and jitter histograms) and sets
    /// `pingscope_target_info{target,host,ip,family}` to 1. `family` is the target's configured
    /// address family.
    ///
    /// Asking again for the same labels returns the same handle with its counts kept (an
    /// unchanged target across a reload); a changed host or family replaces the info series.
    /// To restart a target from zero, [`forget`](Self::forget) it first.
    pub fn target(
        &self,
        labels: &TargetLabels,
        host: &str,
        family: AddressFamily,
    ) -> TargetMetrics {
        self.target_probing(labels, &Arc::from(host), family, ProbeLabels::default())
    }

    /// [`Metrics::target`](Self::target) for a target of a given probe kind (and port), which
    /// `pingscope_target_info` shows. `host` is kept as it is (the config's own string).
    pub fn target_probing(
        &self,
        labels: &TargetLabels,
        host: &Arc<str>,
        family: AddressFamily,
        probe: ProbeLabels,
    ) -> TargetMetrics {
        let probe = ProbeLabels {
            kind: if probe.kind.is_empty() {
                "icmp"
            } else {
                probe.kind
            },
            ..probe
        };
        let mut targets = self.shared.targets.lock();
        if let Some(inner) = targets.get(labels) {
            let mut info = inner.info.lock();
            if info.host != *host
                || info.family != family
                || (info.kind, info.port) != (probe.kind, probe.port)
            {
                *info = Info::new(host.clone(), family, probe);
            }
            drop(info);
            return TargetMetrics {
                inner: inner.clone(),
            };
        }
        let key = SeriesKey(Arc::new(labels.clone()));
        let info = Info::new(host.clone(), family, probe);
        let inner = Arc::new(TargetInner::new(key.clone(), info, &self.shared.makers));
        targets.insert(key, inner.clone());
        TargetMetrics { inner }
    }

    /// Deletes every series of a (target, address), `pingscope_target_info` included. Handles
    /// still held keep counting into nothing. Returns whether the target was known.
    pub fn forget(&self, labels: &TargetLabels) -> bool {
        self.shared.targets.lock().remove(labels).is_some()
    }

    /// The outage series of a monitored address (at zero; kept when asked again).
    pub fn outage(&self, labels: &TargetLabels) -> outage::OutageMetrics {
        // The labels are kept once: the key of the target's other series when it has them.
        self.shared.outages.address(labels, || {
            let known = self
                .shared
                .targets
                .lock()
                .get(labels)
                .map(|t| t.key.clone());
            known.unwrap_or_else(|| SeriesKey(Arc::new(labels.clone())))
        })
    }

    /// Deletes the outage series of a monitored address.
    pub fn forget_outage(&self, labels: &TargetLabels) -> bool {
        self.shared.outages.forget_address(labels)
    }

    /// Sets (or with `None` deletes) `pingscope_target_threshold{target,metric}` of a target.
    pub fn set_thresholds(&self, target: &str, thresholds: Option<outage::Thresholds>) {
        self.shared.outages.set_thresholds(target, thresholds);
    }

    /// The reasons `target` captures for (`pingscope_captures_total{target,reason}` at zero);
    /// none deletes its series.
    pub fn set_capture_reasons(&self, target: &Arc<str>, on: &[capture::CaptureReason]) {
        self.shared.captures.set_reasons(target, on);
    }

    /// The series of a path monitor's address (`pingscope_path_*`), created empty; asking again
    /// returns the same handle with its counts kept.
    pub fn path(&self, labels: &TargetLabels) -> path::PathMetrics {
        self.shared.paths.target(labels)
    }

    /// Deletes every `pingscope_path_*` series of a path monitor's address.
    pub fn forget_path(&self, labels: &TargetLabels) -> bool {
        self.shared.paths.forget(labels)
    }

    /// The label sets of every target currently known, for diffing on reload.
    pub fn targets(&self) -> Vec<TargetLabels> {
        let targets = self.shared.targets.lock();
        targets.keys().map(|k| (*k.0).clone()).collect()
    }

    /// Creates `pingscope_resolve_errors_total{target}` at zero for a target resolved by DNS.
    pub fn track_resolve(&self, target: &str) {
        self.resolve_counter(target);
    }

    /// Counts a failed DNS lookup of `target`.
    pub fn inc_resolve_error(&self, target: &str) {
        self.resolve_counter(target).inc();
    }

    /// Deletes `pingscope_resolve_errors_total{target}` (the target left the config).
    pub fn forget_resolve(&self, target: &str) {
        self.shared.resolve_errors.remove(&NameLabel(target.into()));
    }

    fn resolve_counter(&self, target: &str) -> Counter {
        let family = &self.shared.resolve_errors;
        let label = NameLabel(target.into());
        family.get_or_create_owned(&label)
    }

    /// Records how late a probe was sent against its schedule. A send ahead of schedule
    /// counts as on time (0), so the histogram never grows negative buckets.
    pub fn observe_scheduler_lag(&self, seconds: f64) {
        let seconds = seconds.max(0.0);
        self.shared.scheduler_lag.observe(seconds);
    }

    /// Records the outcome of a config load or reload attempt made at `at`.
    pub fn set_reload_status(&self, ok: bool, at: SystemTime) {
        self.shared.reload_successful.set(i64::from(ok));
        if ok {
            let seconds = at
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.shared.reload_success_timestamp.set(seconds);
        }
    }

    /// Sets the closure that reads a level gauge at scrape time. It must be quick and must not
    /// call back into this registry.
    pub fn set_gauge_source(
        &self,
        gauge: ScrapeGauge,
        source: impl Fn() -> i64 + Send + Sync + 'static,
    ) {
        self.shared
            .scrape_sources
            .set_gauge(gauge, Arc::new(source));
    }

    /// Sets the closure that reads a counter at scrape time (its atomic lives with its owner,
    /// so counting costs the owner nothing more). It must be quick, monotonic and must not
    /// call back into this registry.
    pub fn set_counter_source(
        &self,
        counter: ScrapeCounter,
        source: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        self.shared
            .scrape_sources
            .set_counter(counter, Arc::new(source));
    }

    /// Sets the closure that reads the engine's timestamp figures at scrape time
    /// (`pingscope_clock_steps_total`, `pingscope_timestamp_fallbacks_total`,
    /// `pingscope_timestamp_info`); `None` from it writes none of them.
    pub fn set_timestamp_source(
        &self,
        source: impl Fn() -> Option<crate::engine::TimestampStats> + Send + Sync + 'static,
    ) {
        *self.shared.timestamps.source.write() = Some(Arc::new(source));
    }

    /// Encodes every series in `format`.
    pub fn encode(&self, format: Format) -> Result<Vec<u8>, MetricsError> {
        match format {
            Format::Text => self.encode_text().map(String::into_bytes),
            Format::Protobuf => self.encode_protobuf(),
        }
    }

    /// Encodes every series as Prometheus text 0.0.4 ([`TEXT_CONTENT_TYPE`]).
    pub fn encode_text(&self) -> Result<String, MetricsError> {
        let hint = &self.shared.last_text_len;
        let mut body = String::with_capacity(size_hint(hint));
        prometheus_text::encode(&mut body, &self.shared.registry)
            .map_err(|source| MetricsError::EncodeText { source })?;
        hint.store(body.len(), Ordering::Relaxed);
        Ok(body)
    }

    /// Encodes like [`Self::encode`] into `out`; text goes out as it is encoded, so a
    /// compressing writer never holds the whole body.
    pub fn encode_into(
        &self,
        format: Format,
        out: &mut dyn std::io::Write,
    ) -> Result<(), MetricsError> {
        match format {
            Format::Text => {
                let mut w = format::IoText { out, failed: None };
                let encoded = prometheus_text::encode(&mut w, &self.shared.registry);
                match (w.failed, encoded) {
                    (Some(source), _) => Err(MetricsError::Write { source }),
                    (None, Err(source)) => Err(MetricsError::EncodeText { source }),
                    (None, Ok(())) => Ok(()),
                }
            }
            Format::Protobuf => self.encode_protobuf_into(out),
        }
    }
}

/// Capacity for the next body: the last one's size plus slack.
fn size_hint(last: &AtomicUsize) -> usize {
    let last = last.load(Ordering::Relaxed);
    last + last / 16 + 4096
}

fn check_buckets(histogram: &'static str, buckets: &[f64]) -> Result<(), MetricsError> {
    let why = if buckets.is_empty() {
        Some("at least one bucket is needed")
    } else if buckets.iter().any(|b| !b.is_finite() || *b <= 0.0) {
        Some("every bound must be a finite number of seconds above 0 (+Inf is implicit)")
    } else if buckets.windows(2).any(|w| w[0] >= w[1]) {
        Some("bounds must be strictly increasing")
    } else {
        None
    };
    match why {
        Some(why) => Err(MetricsError::Buckets {
            histogram,
            buckets: buckets.to_vec(),
            why,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
