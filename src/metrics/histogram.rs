//! The histogram metric of the registry: lean histograms of our own, or prometheus-client's
//! when one series must give classic and native buckets to the same protobuf scrape.
//!
//! prometheus-client's `Histogram` keeps room for native-bucket state and a copy of every upper
//! bound in each series (about 560 bytes for 20 buckets). [`ClassicHistogram`] (`native: false`)
//! shares the bounds and keeps sum, count and one `u64` per bucket behind one mutex.
//! [`SplitHistogram`] (the default split layout, see [`super::Layout`]) keeps the same plus
//! native buckets ([`super::native`]) under that one mutex: text scrapes get its classic buckets,
//! protobuf scrapes its native ones. prometheus-client cannot tell a metric which format it is
//! being encoded in, so the protobuf registry registers each histogram family inside a
//! [`HistogramView`] that sets a flag for the thread while it encodes ([`native_scope`]); an
//! observation is one lock and one update of both kinds.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};

use super::native::NativeBuckets;

/// One histogram series.
#[derive(Debug)]
pub(crate) enum SeriesHistogram {
    /// Classic buckets only.
    Classic(ClassicHistogram),
    /// Classic and native buckets, one kind per exposition.
    Split(SplitHistogram),
    /// prometheus-client's, with classic and native buckets in the same protobuf exposition.
    Client(Histogram),
}

impl SeriesHistogram {
    /// Records one value.
    pub(crate) fn observe(&self, v: f64) {
        match self {
            Self::Classic(h) => h.observe(v),
            Self::Split(h) => h.observe(v),
            Self::Client(h) => h.observe(v),
        }
    }
}

/// A histogram series kept behind a shared handle, for the few that are encoded from a copy of
/// the handle: the scheduler's lag (registered in each registry, observed by the wheels) and a
/// path hop's (copied out to encode without the path's lock). A target's histograms are kept
/// by value in its series instead (two allocations fewer per target).
#[derive(Clone, Debug)]
pub(crate) struct SharedHistogram(pub(super) Arc<SeriesHistogram>);

impl SharedHistogram {
    /// `metric` behind a handle that clones share.
    pub(crate) fn new(metric: SeriesHistogram) -> Self {
        Self(Arc::new(metric))
    }

    /// Records one value.
    pub(crate) fn observe(&self, v: f64) {
        self.0.observe(v);
    }
}

impl EncodeMetric for SharedHistogram {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

impl TypedMetric for SeriesHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for SeriesHistogram {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        match self {
            Self::Classic(h) => h.encode(encoder),
            Self::Split(h) => h.encode(encoder),
            Self::Client(h) => h.encode(encoder),
        }
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

thread_local! {
    /// Set while a [`HistogramView`] of the protobuf registry encodes (see [`native_scope`]).
    static NATIVE: Cell<bool> = const { Cell::new(false) };
}

/// While the returned guard lives, [`SplitHistogram`]s encoded on this thread give their native
/// buckets. Encoding is synchronous, so the flag covers exactly the metrics encoded inside.
pub(crate) fn native_scope() -> NativeScope {
    NativeScope(NATIVE.with(|n| n.replace(true)))
}

/// Restores the flag [`native_scope`] set (its value before) when dropped.
#[derive(Debug)]
pub(crate) struct NativeScope(bool);

impl Drop for NativeScope {
    fn drop(&mut self) {
        NATIVE.with(|n| n.set(self.0));
    }
}

/// A histogram metric (a family or one series) as one registry encodes it: with `native`, its
/// split histograms give their native buckets (the protobuf registry of the split layout).
#[derive(Clone, Debug)]
pub(crate) struct HistogramView<M> {
    pub(crate) metric: M,
    pub(crate) native: bool,
}

impl<M: EncodeMetric> EncodeMetric for HistogramView<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let _scope = self.native.then(native_scope);
        self.metric.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.metric.metric_type()
    }
}

/// Sum, count and classic bucket counts of one series.
#[derive(Debug)]
struct Counts {
    sum: f64,
    count: u64,
    /// Per bucket (not cumulative), one more than the bounds for +Inf.
    buckets: Box<[u64]>,
}

impl Counts {
    fn new(bounds: &[f64]) -> Self {
        Self {
            sum: 0.0,
            count: 0,
            buckets: vec![0; bounds.len() + 1].into_boxed_slice(),
        }
    }

    /// Adds `v` to the first bucket whose bound is at least `v`; NaN goes to +Inf, as
    /// prometheus-client does.
    fn observe(&mut self, bounds: &[f64], v: f64) {
        let index = if v.is_nan() {
            bounds.len()
        } else {
            bounds.partition_point(|b| *b < v)
        };
        self.sum += v;
        self.count += 1;
        if let Some(bucket) = self.buckets.get_mut(index) {
            *bucket += 1;
        }
    }

    /// The classic buckets as the encoder takes them: (upper bound, count), +Inf last.
    fn classic(&self, bounds: &[f64]) -> Vec<(f64, u64)> {
        let bounds = bounds.iter().copied().chain([f64::INFINITY]);
        bounds.zip(self.buckets.iter().copied()).collect()
    }
}

/// A classic histogram whose upper bounds are shared by every series made with them.
#[derive(Debug)]
pub(crate) struct ClassicHistogram {
    /// Finite upper bounds, strictly increasing; the +Inf bucket is implicit.
    bounds: Arc<[f64]>,
    inner: Mutex<Counts>,
}

impl ClassicHistogram {
    /// A histogram at zero over `bounds` (finite, strictly increasing: see `check_buckets`).
    pub(crate) fn new(bounds: Arc<[f64]>) -> Self {
        Self {
            inner: Mutex::new(Counts::new(&bounds)),
            bounds,
        }
    }

    /// Records one value.
    pub(crate) fn observe(&self, v: f64) {
        self.inner.lock().observe(&self.bounds, v);
    }

    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = {
            let c = self.inner.lock();
            (c.sum, c.count, c.classic(&self.bounds))
        };
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None::<&NoExemplars>)
    }
}

/// Classic buckets over shared bounds and native buckets, under one lock: text scrapes encode
/// the classic ones, protobuf scrapes of the split layout (inside [`native_scope`]) the native
/// ones, each with the same sum and count.
#[derive(Debug)]
pub(crate) struct SplitHistogram {
    bounds: Arc<[f64]>,
    inner: Mutex<(Counts, NativeBuckets)>,
}

impl SplitHistogram {
    /// A histogram at zero over `bounds`, with at most `max_buckets` native buckets before their
    /// resolution halves.
    pub(crate) fn new(bounds: Arc<[f64]>, max_buckets: u16) -> Self {
        let counts = Counts::new(&bounds);
        Self {
            bounds,
            inner: Mutex::new((counts, NativeBuckets::new(max_buckets))),
        }
    }

    /// Records one value in both kinds of buckets.
    pub(crate) fn observe(&self, v: f64) {
        let mut inner = self.inner.lock();
        let (counts, native) = &mut *inner;
        counts.observe(&self.bounds, v);
        native.observe(v);
    }

    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        if NATIVE.with(Cell::get) {
            let (sum, count, native) = {
                let inner = self.inner.lock();
                (inner.0.sum, inner.0.count, inner.1.snapshot())
            };
            native.encode(sum, count, encoder)
        } else {
            let (sum, count, buckets) = {
                let inner = self.inner.lock();
                (inner.0.sum, inner.0.count, inner.0.classic(&self.bounds))
            };
            encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None::<&NoExemplars>)
        }
    }
}

type NoExemplars = HashMap<usize, Exemplar<NoLabelSet, f64>>;

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::prometheus_text;
    use prometheus_client::registry::Registry;

    use super::*;

    /// The text exposition of one histogram named `h`.
    fn text(metric: SeriesHistogram) -> String {
        let mut registry = Registry::default();
        registry.register("h", "H", metric);
        let mut out = String::new();
        if let Err(e) = prometheus_text::encode(&mut out, &registry) {
            panic!("encode: {e}");
        }
        out
    }

    // The same observations, bounds on the edge and past the last one included, give the same
    // exposition as prometheus-client's classic histogram.
    #[test]
    fn encodes_like_the_client_histogram() {
        let bounds: Arc<[f64]> = [0.001, 0.01, 0.1].into();
        let ours = ClassicHistogram::new(bounds.clone());
        let theirs = Histogram::new(bounds.iter().copied());
        for v in [
            0.0,
            0.0005,
            0.001,
            0.002,
            0.01,
            0.05,
            0.1,
            0.5,
            7.0,
            f64::NAN,
        ] {
            ours.observe(v);
            theirs.observe(v);
        }
        let ours = text(SeriesHistogram::Classic(ours));
        assert_eq!(ours, text(SeriesHistogram::Client(theirs)));
        assert!(ours.contains("h_bucket{le=\"0.001\"} 3\n"), "{ours}");
        assert!(ours.contains("h_bucket{le=\"+Inf\"} 10\n"), "{ours}");
    }

    #[test]
    fn shared_handles_share_counts_but_new_series_start_at_zero() {
        let bounds: Arc<[f64]> = [1.0].into();
        let a = SharedHistogram::new(SeriesHistogram::Classic(ClassicHistogram::new(
            bounds.clone(),
        )));
        let b = a.clone();
        b.observe(0.5);
        let fresh = ClassicHistogram::new(bounds);
        let SeriesHistogram::Classic(a) = &*a.0 else {
            panic!("not classic: {a:?}");
        };
        assert_eq!(a.inner.lock().count, 1);
        assert_eq!(fresh.inner.lock().count, 0);
        assert_eq!(*a.inner.lock().buckets, [1, 0]);
    }

    #[test]
    fn a_split_series_is_small() {
        // Sum, count, classic and native state under one mutex: prometheus-client's native
        // state alone is about 200 bytes, and the split layout used to keep two histograms.
        let size = std::mem::size_of::<Mutex<(Counts, NativeBuckets)>>();
        assert!(size <= 96, "{size}");
    }
}
