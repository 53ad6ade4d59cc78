//! A native-only histogram of our own, for the protobuf registry of the split layout.
//!
//! prometheus-client's native histogram (`Histogram::new_native`) keeps about 200 bytes of state
//! per series, room for a zero bucket that widens and for resets, and its sparse buckets as
//! `(i32, u64)` pairs in a vector that doubles as it grows: about 530 bytes for the twenty-odd
//! buckets a loopback RTT series fills, and every target has two such series (RTT and jitter),
//! read only by protobuf scrapes. This one keeps what pingscope's fixed configuration needs: a
//! zero bucket of the spec's default width that never widens, no resets, a bucket limit past
//! which the resolution halves, and each populated bucket in one `u64` (side, index, count) in
//! a vector that grows by a quarter. Its exposition is prometheus-client's for the same
//! observations (tested against it).
//!
//! Bucket `i` of schema `s` holds the values in `(2^((i-1)/2^s), 2^(i/2^s)]`; negative values
//! go to the same index of the negative side, values within the zero threshold to the zero
//! bucket, NaN to the sum and count only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use prometheus_client::encoding::{
    MetricEncoder, NativeHistogram as Native, NativeHistogramBuckets, NoLabelSet,
};
use prometheus_client::metrics::exemplar::Exemplar;

/// The zero bucket's width: 2^-128, the native-histogram spec's default.
pub(crate) const ZERO_THRESHOLD: f64 = 2.938_735_877_055_719e-39;

/// The finest schema this histogram knows: growth factor 2^(1/8) ≈ 1.09, the largest at most
/// 1.1 (client_golang's and prometheus-client's default bucket factor).
pub(crate) const SCHEMA: i8 = 3;

/// The coarsest schema (factor 2^16); the bucket limit stops halving the resolution here.
const SCHEMA_MIN: i8 = -4;

/// `2^(k/8 - 1)` for `k` in `0..8`: the lower bounds of schema 3's buckets within one octave of
/// [`frexp`]'s fraction, as Prometheus and its clients write them (`2^-1/2` is one unit in the
/// last place below the correctly rounded value there, so computing them would move a value on
/// that bound to another bucket than Prometheus' own). Schema 2 and 1 use every second and
/// fourth.
const OCTAVE: [f64; 8] = [
    0.5,
    0.545_253_866_332_628_8,
    0.594_603_557_501_360_5,
    0.648_419_777_325_504_8,
    0.707_106_781_186_547_5,
    0.771_105_412_703_970_4,
    0.840_896_415_253_714_4,
    0.917_004_043_204_671_1,
];

/// A packed bucket: the count in the low [`COUNT_BITS`] bits, the index plus [`INDEX_BIAS`] in
/// the next 20, the side in the top bit (set: negative). Sorting packed buckets sorts them by
/// side, positive first, then by index. 20 bits hold every index of every schema up to 8
/// (`|index| < 2^19`); 43 bits of count last 2,700 years at 100 observations a second.
const COUNT_BITS: u32 = 43;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
const INDEX_BIAS: i32 = 1 << 19;
const NEGATIVE: u64 = 1 << 63;

/// One native-only histogram series. Cheap to clone; clones share the counts.
#[derive(Clone, Debug)]
pub(crate) struct NativeHistogram {
    inner: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    sum: f64,
    count: u64,
    zero_count: u64,
    created: SystemTime,
    schema: i8,
    /// Populated buckets (both sides) past which the resolution halves.
    max_buckets: u16,
    /// Packed buckets (see [`COUNT_BITS`]), sorted, with a nonzero count each.
    buckets: Vec<u64>,
}

impl NativeHistogram {
    /// An empty histogram of schema [`SCHEMA`] holding at most `max_buckets` populated buckets
    /// before halving its resolution (0: no limit).
    pub(crate) fn new(max_buckets: u16) -> Self {
        Self::with_schema(SCHEMA, max_buckets)
    }

    fn with_schema(schema: i8, max_buckets: u16) -> Self {
        Self {
            inner: Arc::new(Mutex::new(State {
                sum: 0.0,
                count: 0,
                zero_count: 0,
                created: SystemTime::now(),
                schema: schema.clamp(SCHEMA_MIN, SCHEMA),
                max_buckets,
                buckets: Vec::new(),
            })),
        }
    }

    /// Records one value.
    pub(crate) fn observe(&self, v: f64) {
        let mut s = self.inner.lock();
        s.sum += v;
        s.count += 1;
        if v.is_nan() {
            return;
        }
        if v.abs() <= ZERO_THRESHOLD {
            s.zero_count += 1;
            return;
        }
        let side = if v.is_sign_negative() { NEGATIVE } else { 0 };
        let index = bucket_index(s.schema, v.abs());
        s.increment(side, index);
        if s.max_buckets > 0
            && s.buckets.len() > usize::from(s.max_buckets)
            && s.schema > SCHEMA_MIN
        {
            s.downsample();
        }
    }

    /// Encodes sum, count and the native buckets (no classic ones: only the protobuf encoder
    /// accepts this, as with prometheus-client's native-only histogram).
    pub(crate) fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, zero_count, created, schema, positive, negative) = {
            let s = self.inner.lock();
            let split = s.buckets.partition_point(|b| b & NEGATIVE == 0);
            let (positive, negative) = s.buckets.split_at(split);
            (
                s.sum,
                s.count,
                s.zero_count,
                s.created,
                s.schema,
                SpansAndDeltas::of(positive),
                SpansAndDeltas::of(negative),
            )
        };
        encoder.encode_histogram_with_native::<NoLabelSet>(
            sum,
            count,
            &[],
            None::<&HashMap<usize, Exemplar<NoLabelSet, f64>>>,
            Native {
                schema: i32::from(schema),
                zero_threshold: ZERO_THRESHOLD,
                zero_count,
                negative: negative.buckets(),
                positive: positive.buckets(),
                created: Some(created),
            },
        )
    }
}

impl State {
    /// Adds one to the bucket `index` of `side`, inserting it if need be. A count at
    /// [`COUNT_MAX`] stays there.
    fn increment(&mut self, side: u64, index: i32) {
        let key = side | (u64::from((index + INDEX_BIAS).unsigned_abs()) << COUNT_BITS);
        match self
            .buckets
            .binary_search_by(|b| (b & !COUNT_MAX).cmp(&key))
        {
            Ok(at) => {
                if let Some(b) = self.buckets.get_mut(at)
                    && *b & COUNT_MAX < COUNT_MAX
                {
                    *b += 1;
                }
            }
            Err(at) => {
                // Buckets are added seldom (a new one per new range of values): grow by a
                // quarter rather than double.
                if self.buckets.len() == self.buckets.capacity() {
                    self.buckets.reserve_exact((self.buckets.len() / 4).max(2));
                }
                self.buckets.insert(at, key | 1);
            }
        }
    }

    /// Halves the resolution: schema `s - 1`, each pair of buckets merged into one.
    fn downsample(&mut self) {
        self.schema -= 1;
        let mut kept: usize = 0;
        for at in 0..self.buckets.len() {
            let b = self.buckets[at];
            let side = b & NEGATIVE;
            let index = unpack_index(b);
            // Bucket i of the finer schema lies in bucket ceil(i / 2) of the coarser one.
            let index = if index > 0 {
                (index + 1) / 2
            } else {
                index / 2
            };
            let merged = side | (u64::from((index + INDEX_BIAS).unsigned_abs()) << COUNT_BITS);
            match kept
                .checked_sub(1)
                .and_then(|last| self.buckets.get_mut(last))
            {
                Some(last) if *last & !COUNT_MAX == merged => {
                    *last = merged | ((*last & COUNT_MAX) + (b & COUNT_MAX)).min(COUNT_MAX);
                }
                _ => {
                    self.buckets[kept] = merged | (b & COUNT_MAX);
                    kept += 1;
                }
            }
        }
        self.buckets.truncate(kept);
        self.buckets.shrink_to(kept + kept / 4);
    }
}

/// The index a packed bucket holds.
fn unpack_index(b: u64) -> i32 {
    // 20 bits: always fits.
    (((b & !NEGATIVE) >> COUNT_BITS) as i32) - INDEX_BIAS
}

/// The bucket of a positive value (infinity included) at `schema` (at most [`SCHEMA`]).
fn bucket_index(schema: i8, v: f64) -> i32 {
    let infinite = v.is_infinite();
    let (frac, exp) = frexp(if infinite { f64::MAX } else { v });
    let index = if schema > 0 {
        // The octave `exp` holds buckets (exp-1)·2^s + 1 ..= exp·2^s; the fraction picks one.
        let step = 1 << (SCHEMA - schema);
        let below = OCTAVE.iter().step_by(step).filter(|b| **b < frac).count() as i32;
        below + (exp - 1) * (1 << schema)
    } else {
        // Powers of two are the upper bounds of their bucket: 2^k is in bucket k at schema 0.
        let key = if frac == 0.5 { exp - 1 } else { exp };
        let shift = -i32::from(schema);
        (key + (1 << shift) - 1) >> shift
    };
    // Infinity is past the largest finite value's bucket.
    index + i32::from(infinite)
}

/// `v = frac · 2^exp` with `frac` in `[0.5, 1)`, for positive finite `v`.
fn frexp(v: f64) -> (f64, i32) {
    const EXP_MASK: u64 = 0x7ff << 52;
    // Subnormals are scaled into the normal range first.
    let (v, shift) = if v < f64::MIN_POSITIVE {
        (v * 2f64.powi(64), -64)
    } else {
        (v, 0)
    };
    let bits = v.to_bits();
    let exp = ((bits & EXP_MASK) >> 52) as i32 - 1022;
    let frac = f64::from_bits((bits & !EXP_MASK) | (1022 << 52));
    (frac, exp + shift)
}

/// One side's buckets in the exposition's form: spans of consecutive indices (gaps of up to two
/// empty buckets are bridged with zeros, as client_golang does) and count deltas.
struct SpansAndDeltas {
    spans: Vec<(i32, u32)>,
    deltas: Vec<i64>,
}

impl SpansAndDeltas {
    fn of(packed: &[u64]) -> Self {
        let mut out = Self {
            spans: Vec::new(),
            deltas: Vec::with_capacity(packed.len()),
        };
        let (mut previous, mut next_index) = (0i64, 0i32);
        for (n, b) in packed.iter().enumerate() {
            let (index, count) = (unpack_index(*b), (b & COUNT_MAX) as i64);
            let gap = index - next_index;
            if n == 0 || gap > 2 {
                out.spans.push((gap, 0));
            } else {
                for _ in 0..gap {
                    out.push(0, &mut previous);
                }
            }
            out.push(count, &mut previous);
            next_index = index + 1;
        }
        out
    }

    fn push(&mut self, count: i64, previous: &mut i64) {
        if let Some((_, len)) = self.spans.last_mut() {
            *len += 1;
        }
        self.deltas.push(count - *previous);
        *previous = count;
    }

    fn buckets(&self) -> NativeHistogramBuckets<'_> {
        NativeHistogramBuckets {
            spans: &self.spans,
            deltas: &self.deltas,
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::prometheus_protobuf::{self, prometheus_data_model as pb};
    use prometheus_client::metrics::histogram::{Histogram, NativeHistogramConfig};
    use prometheus_client::registry::Registry;
    use proptest::prelude::*;

    use super::*;
    use crate::metrics::histogram::SeriesHistogram;

    /// The protobuf families of a registry holding `metric` as `h`, start timestamps cleared
    /// (each histogram has its own creation time) and sums as bits (a NaN sum equals nothing).
    fn protobuf(metric: SeriesHistogram) -> (Vec<pb::MetricFamily>, Vec<u64>) {
        let mut registry = Registry::default();
        registry.register("h", "H", metric);
        let mut families = match prometheus_protobuf::encode(&registry) {
            Ok(f) => f,
            Err(e) => panic!("encode: {e}"),
        };
        let mut sums = Vec::new();
        for m in families.iter_mut().flat_map(|f| f.metric.iter_mut()) {
            if let Some(h) = m.histogram.as_mut() {
                h.start_timestamp = None;
                sums.push(h.sample_sum.to_bits());
                h.sample_sum = 0.0;
            }
        }
        (families, sums)
    }

    /// Both histograms after the same observations, ours and prometheus-client's.
    fn both(values: &[f64], max_buckets: u16) -> (SeriesHistogram, SeriesHistogram) {
        let ours = NativeHistogram::new(max_buckets);
        let theirs = Histogram::new_native(
            NativeHistogramConfig::with_schema(SCHEMA).max_buckets(usize::from(max_buckets)),
        );
        for v in values {
            ours.observe(*v);
            theirs.observe(*v);
        }
        (
            SeriesHistogram::Native(ours),
            SeriesHistogram::Client(theirs),
        )
    }

    #[test]
    fn the_octave_bounds_are_powers_of_two() {
        for (k, b) in OCTAVE.iter().enumerate() {
            let exact = (k as f64 / 8.0 - 1.0).exp2();
            assert!(
                [exact, exact.next_up(), exact.next_down()].contains(b),
                "bound {k}: {b} against {exact}"
            );
        }
    }

    #[test]
    fn frexp_splits_normal_and_subnormal_values() {
        for v in [1.0, 0.75, 3.0, 1e-300, 5e-324, 2.2e-308, f64::MAX, 1e-6] {
            let (frac, exp) = frexp(v);
            assert!((0.5..1.0).contains(&frac), "{v}: frac {frac}");
            // In two steps: 2^exp alone over- or underflows at the ends of the range.
            let half = exp / 2;
            assert_eq!(frac * 2f64.powi(half) * 2f64.powi(exp - half), v, "{v}");
        }
    }

    // Values on bucket bounds, both sides of them, in the zero bucket, subnormal, infinite,
    // negative and NaN give prometheus-client's exposition, also when the bucket limit halves
    // the resolution several times.
    #[test]
    fn encodes_like_the_client_native_histogram_at_the_edges() {
        let mut values = vec![
            0.0,
            -0.0,
            ZERO_THRESHOLD,
            ZERO_THRESHOLD * 1.5,
            5e-324,
            1e-310,
        ];
        values.extend([
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            f64::MAX,
            -f64::MAX,
        ]);
        for e in -30..30 {
            for b in OCTAVE {
                let v = b * 2f64.powi(e);
                values.extend([v, -v, v.next_up(), v.next_down()]);
            }
        }
        for max_buckets in [0, 1, 2, 5, 40, 160, 2000] {
            let (ours, theirs) = both(&values, max_buckets);
            assert_eq!(
                protobuf(ours),
                protobuf(theirs),
                "max_buckets {max_buckets}"
            );
        }
    }

    proptest! {
        #[test]
        fn encodes_like_the_client_native_histogram(
            values in prop::collection::vec(
                prop_oneof![
                    4 => 1e-7f64..10.0,
                    1 => -10.0f64..-1e-7,
                    1 => any::<f64>(),
                    1 => Just(f64::NAN),
                    1 => Just(0.0),
                ],
                0..400,
            ),
            max_buckets in prop_oneof![Just(0u16), 1u16..200],
        ) {
            let (ours, theirs) = both(&values, max_buckets);
            prop_assert_eq!(protobuf(ours), protobuf(theirs));
        }
    }

    #[test]
    fn a_histogram_grows_by_a_quarter_and_shrinks_after_halving() {
        let h = NativeHistogram::new(160);
        // 100 distinct buckets at schema 3: 12.5 octaves.
        for i in 0..100 {
            h.observe(1e-6 * 2f64.powf(f64::from(i) / 8.0));
        }
        let s = h.inner.lock();
        assert_eq!(s.buckets.len(), 100);
        assert!(
            s.buckets.capacity() <= 130,
            "capacity {}",
            s.buckets.capacity()
        );
        drop(s);
        let small = NativeHistogram::new(10);
        for i in 0..100 {
            small.observe(1e-6 * 2f64.powf(f64::from(i) / 8.0));
        }
        let s = small.inner.lock();
        assert!(s.buckets.len() <= 10, "{} buckets", s.buckets.len());
        assert!(s.schema < SCHEMA);
        assert!(
            s.buckets.capacity() <= 16,
            "capacity {}",
            s.buckets.capacity()
        );
    }

    #[test]
    fn a_series_is_small() {
        // Arc header and mutex included; prometheus-client's state alone is about 200 bytes.
        assert!(
            std::mem::size_of::<parking_lot::Mutex<State>>() <= 80,
            "{}",
            std::mem::size_of::<parking_lot::Mutex<State>>()
        );
    }
}
