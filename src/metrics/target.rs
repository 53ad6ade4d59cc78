//! The per-target recording handle, and the collector that writes every per-target series.
//!
//! [`TargetMetrics`] holds a target's counters, gauges and histograms in place, in one
//! allocation ([`TargetInner`]): the probe path touches the target's own atomics and its
//! histograms' uncontended mutexes, with no family lock, no hashing and no allocation. The
//! registry keeps the live targets in one map; at scrape time [`TargetSeries`] copies their
//! handles out of it and writes each per-target family from them. A family of one
//! prometheus-client metric per series would keep a hash map per family and an allocation per
//! counter, for every target.
//!
//! Series that do not always apply appear on first use, so an idle target does not carry
//! series with misleading values: `reply_ttl` and `jitter_rfc3550_seconds` (first reply, first
//! pair of replies), `window_*` (first [`TargetMetrics::set_window`]), `icmp_errors_total{type}`
//! and `send_errors_total{reason}` (first error of that type or reason). A forgotten target has
//! left the map, so none of its series is written again; a handle still held by a task counts
//! into a target that no scrape sees.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::MetricConstructor;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

use super::HistogramMaker;
use super::histogram::{SeriesHistogram, native_scope};
use super::labels::{Info, InfoLabels, SeriesKey, Sub};
use crate::engine::{EventKind, IcmpErrorKind, ProbeEvent};

/// Every ICMP error class, in the order of [`icmp_index`].
pub(crate) const ICMP_KINDS: [IcmpErrorKind; 5] = [
    IcmpErrorKind::Unreachable,
    IcmpErrorKind::TimeExceeded,
    IcmpErrorKind::PacketTooBig,
    IcmpErrorKind::ParameterProblem,
    IcmpErrorKind::Other,
];

fn icmp_index(kind: IcmpErrorKind) -> usize {
    match kind {
        IcmpErrorKind::Unreachable => 0,
        IcmpErrorKind::TimeExceeded => 1,
        IcmpErrorKind::PacketTooBig => 2,
        IcmpErrorKind::ParameterProblem => 3,
        IcmpErrorKind::Other => 4,
    }
}

/// `stat` label values of `pingscope_window_rtt_seconds`, in [`WindowRtt`] field order.
pub(crate) const WINDOW_STATS: [&str; 4] = ["min", "mean", "max", "stddev"];

/// RTT summary over a target's window, in seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowRtt {
    /// Smallest RTT.
    pub min: f64,
    /// Mean RTT.
    pub mean: f64,
    /// Largest RTT.
    pub max: f64,
    /// Standard deviation of the RTTs.
    pub stddev: f64,
}

/// Records one (target, address)'s probe results. Cheap to clone; clones share everything,
/// jitter state included.
///
/// Made by [`super::Metrics::target`]. Meant to get one event at a time (the engine delivers a
/// monitor's events to its recorder one by one, under the engine's table lock): the jitter
/// state is updated without a lock of its own.
#[derive(Clone, Debug)]
pub struct TargetMetrics {
    pub(crate) inner: Arc<TargetInner>,
}

/// No TTL seen yet: `reply_ttl` has no series.
const NO_TTL: u16 = u16::MAX;

#[derive(Debug)]
pub(crate) struct TargetInner {
    pub(crate) key: SeriesKey,
    /// The rest of the `pingscope_target_info` labels (host, family and kind may change on
    /// reload).
    pub(crate) info: Mutex<Info>,
    sent: AtomicU64,
    lost: AtomicU64,
    late: AtomicU64,
    duplicates: AtomicU64,
    pub(crate) rtt: SeriesHistogram,
    pub(crate) jitter: SeriesHistogram,
    /// RTT of the previous reply as `f64` bits; NaN until the first reply.
    last_rtt: AtomicU64,
    /// RFC 3550 smoothed jitter as `f64` bits; NaN (no series) until the first pair of replies.
    jitter_rfc3550: AtomicU64,
    /// TTL or hop limit of the last reply; [`NO_TTL`] (no series) until one reports it.
    reply_ttl: AtomicU16,
    /// What most targets never have, boxed on first use: 16 bytes inline where it took 80.
    /// A TCP target has it from the start.
    rare: OnceLock<Box<Rare>>,
}

/// A target's series that few targets have.
#[derive(Debug, Default)]
struct Rare {
    /// The last window figures, written at scrape time by [`TargetSeries`]; `None` until the
    /// first [`TargetMetrics::set_window`].
    window: Mutex<Option<WindowFigures>>,
    /// By [`icmp_index`]. A type has a series once counted (its count is then above 0).
    icmp_errors: [AtomicU64; 5],
    /// `pingscope_tcp_refused_total`, at zero from the start for TCP targets only.
    tcp_refused: Option<AtomicU64>,
    /// Few distinct reasons occur, and only on the error path, so a short list behind a mutex.
    send_errors: Mutex<Vec<(&'static str, u64)>>,
}

impl TargetInner {
    /// A target with its base series at zero.
    pub(crate) fn new(key: SeriesKey, info: Info, makers: &Makers) -> Self {
        let rare = if info.kind == "tcp" {
            OnceLock::from(Box::new(Rare {
                tcp_refused: Some(AtomicU64::new(0)),
                ..Rare::default()
            }))
        } else {
            OnceLock::new()
        };
        Self {
            sent: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            late: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            rtt: makers.rtt.new_metric(),
            jitter: makers.jitter.new_metric(),
            last_rtt: AtomicU64::new(f64::NAN.to_bits()),
            jitter_rfc3550: AtomicU64::new(f64::NAN.to_bits()),
            reply_ttl: AtomicU16::new(NO_TTL),
            rare,
            info: Mutex::new(info),
            key,
        }
    }

    fn rare(&self) -> &Rare {
        self.rare.get_or_init(Box::default)
    }
}

/// How the per-target histograms are made.
#[derive(Clone, Debug)]
pub(crate) struct Makers {
    pub(crate) rtt: HistogramMaker,
    pub(crate) jitter: HistogramMaker,
}

impl TargetMetrics {
    /// Counts an echo request sent.
    pub fn on_sent(&self) {
        self.inner.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Records one event of a probe (see [`crate::engine`] for the order events come in).
    ///
    /// Reply: RTT histogram, `reply_ttl`, and jitter from the previous reply (IPDV histogram
    /// and RFC 3550 gauge). Timeout: lost. ICMP error: lost and `icmp_errors_total{type}`.
    /// Late and duplicate replies: their counters only; they never touch RTT or jitter.
    pub fn on_event(&self, event: &ProbeEvent) {
        let t = &*self.inner;
        let one = |c: &AtomicU64| {
            c.fetch_add(1, Ordering::Relaxed);
        };
        match &event.kind {
            EventKind::Reply(reply) => {
                let rtt = reply.rtt.as_secs_f64();
                t.rtt.observe(rtt);
                if let Some(ttl) = reply.ttl {
                    t.reply_ttl.store(u16::from(ttl), Ordering::Relaxed);
                }
                if reply.refused
                    && let Some(c) = t.rare.get().and_then(|r| r.tcp_refused.as_ref())
                {
                    one(c);
                }
                // Jitter pairs consecutive *received* replies (RFC 3550 §6.4.1 works on
                // received packets); a loss in between does not reset the pair.
                let previous = f64::from_bits(t.last_rtt.swap(rtt.to_bits(), Ordering::Relaxed));
                if !previous.is_nan() {
                    let d = (rtt - previous).abs();
                    t.jitter.observe(d);
                    let j = f64::from_bits(t.jitter_rfc3550.load(Ordering::Relaxed));
                    let j = if j.is_nan() { 0.0 } else { j };
                    let smoothed = j + (d - j) / 16.0;
                    t.jitter_rfc3550
                        .store(smoothed.to_bits(), Ordering::Relaxed);
                }
            }
            EventKind::Timeout => one(&t.lost),
            EventKind::Late(_) => one(&t.late),
            EventKind::Duplicate(_) => one(&t.duplicates),
            EventKind::IcmpError(error) => {
                one(&t.lost);
                one(&t.rare().icmp_errors[icmp_index(error.kind)]);
            }
        }
    }

    /// Counts a send that failed locally; `reason` is [`crate::engine::SendError::reason`].
    pub fn on_send_error(&self, reason: &'static str) {
        let mut known = self.inner.rare().send_errors.lock();
        match known.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, count)) => *count += 1,
            None => known.push((reason, 1)),
        }
    }

    /// Sets the `pingscope_window_*` gauges from the scheduler's window statistics. `rtt` is
    /// `None` when the window holds no reply; the RTT gauges then read NaN (no data). A target
    /// never set has no window series: the scheduler sets them only for targets with
    /// `metrics: {window_gauges: true}`.
    pub fn set_window(&self, loss_ratio: f64, rtt: Option<WindowRtt>) {
        let rtt = rtt.map_or([f64::NAN; 4], |r| [r.min, r.mean, r.max, r.stddev]);
        let figures = WindowFigures { loss_ratio, rtt };
        *self.inner.rare().window.lock() = Some(figures);
    }

    /// The labels this handle records under.
    pub fn labels(&self) -> &super::TargetLabels {
        &self.inner.key.0
    }
}

/// The live targets of a registry, by label set.
pub(crate) type TargetMap = HashMap<SeriesKey, Arc<TargetInner>>;

/// One target's window figures, as [`TargetMetrics::set_window`] last set them.
#[derive(Clone, Copy, Debug)]
struct WindowFigures {
    loss_ratio: f64,
    /// In [`WINDOW_STATS`] order; NaN when the window holds no reply.
    rtt: [f64; 4],
}

/// Writes every per-target family at scrape time from the live targets, in label order: the
/// counters, the RTT and jitter histograms (their native buckets with `native`, see [`super::Layout::Split`]), the
/// gauges, `pingscope_target_info`, and `pingscope_window_*` of the targets whose window figures
/// were set. A family no target has a series in is left out, as a registry leaves out an empty
/// family.
#[derive(Clone, Debug)]
pub(crate) struct TargetSeries {
    pub(crate) targets: Arc<Mutex<TargetMap>>,
    pub(crate) native: bool,
}

/// One family's descriptor, written only when it has a series.
struct Descriptor {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    kind: MetricType,
}

impl Descriptor {
    const fn new(name: &'static str, help: &'static str, kind: MetricType) -> Self {
        Self {
            name,
            help,
            unit: None,
            kind,
        }
    }

    const fn seconds(name: &'static str, help: &'static str, kind: MetricType) -> Self {
        Self {
            name,
            help,
            unit: Some(Unit::Seconds),
            kind,
        }
    }

    /// Writes the family of `series` (labels and metric), if it has any.
    fn write<L: EncodeLabelSet, M: EncodeMetric>(
        &self,
        encoder: &mut DescriptorEncoder,
        series: impl IntoIterator<Item = (L, M)>,
    ) -> Result<(), std::fmt::Error> {
        let mut series = series.into_iter().peekable();
        if series.peek().is_none() {
            return Ok(());
        }
        let mut family =
            encoder.encode_descriptor(self.name, self.help, self.unit.as_ref(), self.kind)?;
        for (labels, metric) in series {
            metric.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

// Help texts end with a full stop here: a registry adds it to what it registers, a collector
// writes its own.
const SENT: Descriptor = Descriptor::new("sent", "Echo requests sent.", MetricType::Counter);
const RTT: Descriptor = Descriptor::seconds(
    "rtt",
    "Round-trip time of replies received within the timeout.",
    MetricType::Histogram,
);
const LOST: Descriptor = Descriptor::new(
    "lost",
    "Probes that got no reply within the timeout, or got an ICMP error.",
    MetricType::Counter,
);
const LATE: Descriptor = Descriptor::new(
    "late_replies",
    "Replies that came after the timeout (already counted lost).",
    MetricType::Counter,
);
const DUPLICATES: Descriptor =
    Descriptor::new("duplicates", "Duplicate replies.", MetricType::Counter);
const ICMP_ERRORS: Descriptor = Descriptor::new(
    "icmp_errors",
    "ICMP errors received for our probes, by type.",
    MetricType::Counter,
);
const SEND_ERRORS: Descriptor = Descriptor::new(
    "send_errors",
    "Echo requests that failed to send locally, by reason.",
    MetricType::Counter,
);
const JITTER: Descriptor = Descriptor::seconds(
    "jitter",
    "Absolute RTT difference of consecutive replies (IPDV, RFC 3393/5481).",
    MetricType::Histogram,
);
const JITTER_RFC3550: Descriptor = Descriptor::seconds(
    "jitter_rfc3550",
    "RFC 3550 smoothed jitter of the replies.",
    MetricType::Gauge,
);
const REPLY_TTL: Descriptor = Descriptor::new(
    "reply_ttl",
    "TTL or hop limit of the last reply.",
    MetricType::Gauge,
);
const TARGET_INFO: Descriptor = Descriptor::new(
    "target_info",
    "The address a target resolves to now.",
    MetricType::Gauge,
);
const TCP_REFUSED: Descriptor = Descriptor::new(
    "tcp_refused",
    "TCP probes answered with a RST (a reply: the host is up, the port closed).",
    MetricType::Counter,
);
const WINDOW_LOSS: Descriptor = Descriptor::new(
    "window_loss_ratio",
    "Loss ratio over the target's last window of probes.",
    MetricType::Gauge,
);
const WINDOW_RTT: Descriptor = Descriptor::seconds(
    "window_rtt",
    "RTT statistics over the target's last window of probes.",
    MetricType::Gauge,
);

/// A target's labels, by reference (a scrape writes them for every family).
struct Labels<'a>(&'a SeriesKey);

impl EncodeLabelSet for Labels<'_> {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelSetEncoder,
    ) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }
}

/// A target's histogram, by reference.
struct Histogram<'a>(&'a SeriesHistogram);

impl EncodeMetric for Histogram<'_> {
    fn encode(
        &self,
        encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn counter(c: &AtomicU64) -> ConstCounter<u64> {
    ConstCounter::new(c.load(Ordering::Relaxed))
}

impl TargetSeries {
    /// The live targets' handles in label order: copied out, so loading a config never waits
    /// for a scrape, then sorted (the map's order is a hash's).
    pub(crate) fn snapshot(&self) -> Arc<[Arc<TargetInner>]> {
        let mut targets: Vec<Arc<TargetInner>> = self.targets.lock().values().cloned().collect();
        targets.sort_unstable_by(|a, b| a.key.write_order(&b.key));
        targets.into()
    }
}

impl Collector for TargetSeries {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        write_families(&self.snapshot(), self.native, ALL_FAMILIES, encoder)
    }
}

/// How many per-target families there are: the bits of [`TargetFamilies::families`], in the
/// order [`write_families`] writes them.
pub(crate) const FAMILIES: u32 = 14;

const ALL_FAMILIES: u32 = (1 << FAMILIES) - 1;

/// Some per-target families of some targets of a [`TargetSeries::snapshot`]: a protobuf scrape
/// writes one family at a time, a chunk of targets at a time (see
/// `Metrics::encode_protobuf_chunked`).
#[derive(Debug)]
pub(crate) struct TargetFamilies {
    pub(crate) targets: Arc<[Arc<TargetInner>]>,
    /// Which of `targets` (an empty range where it is out of bounds).
    pub(crate) range: std::ops::Range<usize>,
    pub(crate) native: bool,
    /// Bit `i` set: the `i`-th family (of [`FAMILIES`]).
    pub(crate) families: u32,
}

impl Collector for TargetFamilies {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let targets = self.targets.get(self.range.clone()).unwrap_or_default();
        write_families(targets, self.native, self.families, encoder)
    }
}

/// Writes the families of `targets` whose bits are set in `families`.
fn write_families(
    targets: &[Arc<TargetInner>],
    native: bool,
    families: u32,
    mut encoder: DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let on = |i: u32| families & (1 << i) != 0;
    let e = &mut encoder;
    if on(0) {
        SENT.write(
            e,
            targets.iter().map(|t| (Labels(&t.key), counter(&t.sent))),
        )?;
    }
    if on(1) {
        let _scope = native.then(native_scope);
        RTT.write(
            e,
            targets.iter().map(|t| (Labels(&t.key), Histogram(&t.rtt))),
        )?;
    }
    if on(2) {
        LOST.write(
            e,
            targets.iter().map(|t| (Labels(&t.key), counter(&t.lost))),
        )?;
    }
    if on(3) {
        LATE.write(
            e,
            targets.iter().map(|t| (Labels(&t.key), counter(&t.late))),
        )?;
    }
    if on(4) {
        DUPLICATES.write(
            e,
            targets
                .iter()
                .map(|t| (Labels(&t.key), counter(&t.duplicates))),
        )?;
    }
    if on(5) {
        let icmp = targets.iter().flat_map(|t| {
            let counts = t
                .rare
                .get()
                .map(|r| r.icmp_errors.iter())
                .into_iter()
                .flatten();
            ICMP_KINDS.iter().zip(counts).filter_map(move |(kind, c)| {
                let count = c.load(Ordering::Relaxed);
                let sub = Sub {
                    name: "type",
                    value: kind.as_str(),
                };
                (count > 0).then(|| ((Labels(&t.key), sub), ConstCounter::new(count)))
            })
        });
        ICMP_ERRORS.write(e, icmp)?;
    }
    if on(6) {
        let send_errors: Vec<_> = targets
            .iter()
            .flat_map(|t| {
                let known = t
                    .rare
                    .get()
                    .map(|r| r.send_errors.lock().clone())
                    .unwrap_or_default();
                known.into_iter().map(move |(reason, count)| {
                    let sub = Sub {
                        name: "reason",
                        value: reason,
                    };
                    ((Labels(&t.key), sub), ConstCounter::new(count))
                })
            })
            .collect();
        SEND_ERRORS.write(e, send_errors)?;
    }
    if on(7) {
        let _scope = native.then(native_scope);
        JITTER.write(
            e,
            targets
                .iter()
                .map(|t| (Labels(&t.key), Histogram(&t.jitter))),
        )?;
    }
    if on(8) {
        let rfc3550 = targets.iter().filter_map(|t| {
            let j = f64::from_bits(t.jitter_rfc3550.load(Ordering::Relaxed));
            (!j.is_nan()).then(|| (Labels(&t.key), ConstGauge::new(j)))
        });
        JITTER_RFC3550.write(e, rfc3550)?;
    }
    if on(9) {
        let ttl = targets.iter().filter_map(|t| {
            let ttl = t.reply_ttl.load(Ordering::Relaxed);
            (ttl != NO_TTL).then(|| (Labels(&t.key), ConstGauge::new(i64::from(ttl))))
        });
        REPLY_TTL.write(e, ttl)?;
    }
    if on(10) {
        let info: Vec<InfoLabels> = targets
            .iter()
            .map(|t| t.info.lock().labels(&t.key))
            .collect();
        TARGET_INFO.write(e, info.into_iter().map(|i| (i, ConstGauge::new(1i64))))?;
    }
    if on(11) {
        let refused = targets.iter().filter_map(|t| {
            let refused = t.rare.get()?.tcp_refused.as_ref()?;
            Some((Labels(&t.key), counter(refused)))
        });
        TCP_REFUSED.write(e, refused)?;
    }
    if !on(12) && !on(13) {
        return Ok(());
    }
    let windows: Vec<(&SeriesKey, WindowFigures)> = targets
        .iter()
        .filter_map(|t| Some((&t.key, (*t.rare.get()?.window.lock())?)))
        .collect();
    if on(12) {
        let loss = windows
            .iter()
            .map(|(k, w)| (Labels(k), ConstGauge::new(w.loss_ratio)));
        WINDOW_LOSS.write(e, loss)?;
    }
    if !on(13) {
        return Ok(());
    }
    let rtt = windows.iter().flat_map(|(k, w)| {
        WINDOW_STATS
            .into_iter()
            .zip(w.rtt)
            .map(move |(stat, value)| {
                let sub = Sub {
                    name: "stat",
                    value: stat,
                };
                ((Labels(k), sub), ConstGauge::new(value))
            })
    });
    WINDOW_RTT.write(e, rtt)
}
