//! The histogram metric of the registry: a lean classic histogram of our own, a lean native-only
//! one of our own ([`super::native`]), or prometheus-client's when one series needs both kinds.
//!
//! prometheus-client's `Histogram` keeps room for native-bucket state and a copy of every upper
//! bound in each series (about 560 bytes for 20 buckets). A series that only ever has classic
//! buckets (the text registry, or `native: false`) needs its counts alone: [`ClassicHistogram`]
//! shares the bounds and keeps sum, count and one `u64` per bucket behind one mutex, so splitting
//! text and protobuf histograms (see [`super::Layout`]) costs no more memory than the single
//! classic-and-native histogram it replaces.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};

use super::native::NativeHistogram;

/// One histogram series.
#[derive(Clone, Debug)]
pub(crate) enum SeriesHistogram {
    /// Classic buckets only.
    Classic(ClassicHistogram),
    /// Native buckets only, for the protobuf registry of the split layout.
    Native(NativeHistogram),
    /// prometheus-client's, with classic and native buckets.
    Client(Histogram),
}

impl SeriesHistogram {
    /// Records one value.
    pub(crate) fn observe(&self, v: f64) {
        match self {
            Self::Classic(h) => h.observe(v),
            Self::Native(h) => h.observe(v),
            Self::Client(h) => h.observe(v),
        }
    }
}

impl TypedMetric for SeriesHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for SeriesHistogram {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        match self {
            Self::Classic(h) => h.encode(encoder),
            Self::Native(h) => h.encode(encoder),
            Self::Client(h) => h.encode(encoder),
        }
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A classic histogram whose upper bounds are shared by every series made with them.
#[derive(Clone, Debug)]
pub(crate) struct ClassicHistogram {
    /// Finite upper bounds, strictly increasing; the +Inf bucket is implicit.
    bounds: Arc<[f64]>,
    inner: Arc<Mutex<Counts>>,
}

#[derive(Debug)]
struct Counts {
    sum: f64,
    count: u64,
    /// Per bucket (not cumulative), one more than `bounds` for +Inf.
    buckets: Box<[u64]>,
}

impl ClassicHistogram {
    /// A histogram at zero over `bounds` (finite, strictly increasing: see `check_buckets`).
    pub(crate) fn new(bounds: Arc<[f64]>) -> Self {
        let buckets = vec![0; bounds.len() + 1].into_boxed_slice();
        Self {
            bounds,
            inner: Arc::new(Mutex::new(Counts {
                sum: 0.0,
                count: 0,
                buckets,
            })),
        }
    }

    /// Records one value in the first bucket whose bound is at least `v`; NaN goes to +Inf,
    /// as prometheus-client does.
    pub(crate) fn observe(&self, v: f64) {
        let index = self.bounds.partition_point(|b| *b < v);
        let index = if v.is_nan() { self.bounds.len() } else { index };
        let mut c = self.inner.lock();
        c.sum += v;
        c.count += 1;
        if let Some(bucket) = c.buckets.get_mut(index) {
            *bucket += 1;
        }
    }

    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = {
            let c = self.inner.lock();
            let bounds = self.bounds.iter().copied().chain([f64::INFINITY]);
            let buckets: Vec<(f64, u64)> = bounds.zip(c.buckets.iter().copied()).collect();
            (c.sum, c.count, buckets)
        };
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None::<&NoExemplars>)
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
    fn clones_share_counts_but_new_series_start_at_zero() {
        let bounds: Arc<[f64]> = [1.0].into();
        let a = ClassicHistogram::new(bounds.clone());
        let b = a.clone();
        b.observe(0.5);
        let fresh = ClassicHistogram::new(bounds);
        assert_eq!(a.inner.lock().count, 1);
        assert_eq!(fresh.inner.lock().count, 0);
        assert_eq!(*a.inner.lock().buckets, [1, 0]);
    }
}
