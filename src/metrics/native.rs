//! Native histogram buckets of our own, kept with the classic ones of the same series.
//!
//! prometheus-client's native histogram (`Histogram::new_native`) keeps about 200 bytes of state
//! per series, room for a zero bucket that widens and for resets, and its sparse buckets as
//! `(i32, u64)` pairs in a vector that doubles as it grows: about 530 bytes for the twenty-odd
//! buckets a loopback RTT series fills, and every target has two histogram series (RTT and
//! jitter). [`NativeBuckets`] keeps what pingscope's fixed configuration needs: a zero bucket of
//! the spec's default width that never widens, no resets, a bucket limit past which the
//! resolution halves, and each populated bucket in one `u64` (side, index, count) in a vector
//! that grows by a quarter. Its exposition is prometheus-client's for the same observations
//! (tested against it).
//!
//! Bucket `i` of schema `s` holds the values in `(2^((i-1)/2^s), 2^(i/2^s)]`; negative values
//! go to the same index of the negative side, values within the zero threshold to the zero
//! bucket, NaN to the sum and count only.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// The native buckets of one histogram series, kept beside its sum, count and classic buckets
/// (see [`super::histogram::SplitHistogram`]), under the same lock.
#[derive(Debug)]
pub(crate) struct NativeBuckets {
    zero_count: u64,
    /// When the series was made, in nanoseconds since the Unix epoch (half a `SystemTime`).
    created: u64,
    schema: i8,
    /// Populated buckets (both sides) past which the resolution halves (0: no limit).
    max_buckets: u16,
    /// Packed buckets (see [`COUNT_BITS`]), sorted, with a nonzero count each.
    buckets: Vec<u64>,
}

/// What [`NativeBuckets::snapshot`] copies out to encode without the lock.
#[derive(Debug)]
pub(crate) struct NativeSnapshot {
    zero_count: u64,
    created: SystemTime,
    schema: i8,
    positive: SpansAndDeltas,
    negative: SpansAndDeltas,
}

impl NativeBuckets {
    /// Empty buckets of schema [`SCHEMA`], at most `max_buckets` populated ones before the
    /// resolution halves (0: no limit).
    pub(crate) fn new(max_buckets: u16) -> Self {
        Self {
            zero_count: 0,
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            schema: SCHEMA,
            max_buckets,
            buckets: Vec::new(),
        }
    }

    /// Records one value (the caller adds it to the sum and count; NaN goes nowhere else).
    pub(crate) fn observe(&mut self, v: f64) {
        if v.is_nan() {
            return;
        }
        if v.abs() <= ZERO_THRESHOLD {
            self.zero_count += 1;
        } else {
            let side = if v.is_sign_negative() { NEGATIVE } else { 0 };
            self.increment(side, bucket_index(self.schema, v.abs()));
        }
        // Every observation but NaN checks the limit, one in the zero bucket too (a histogram
        // still over it after halving once halves again at the next, as prometheus-client's).
        if self.max_buckets > 0
            && self.buckets.len() > usize::from(self.max_buckets)
            && self.schema > SCHEMA_MIN
        {
            self.downsample();
        }
    }

    /// The buckets in the exposition's form.
    pub(crate) fn snapshot(&self) -> NativeSnapshot {
        let split = self.buckets.partition_point(|b| b & NEGATIVE == 0);
        let (positive, negative) = self.buckets.split_at(split);
        NativeSnapshot {
            zero_count: self.zero_count,
            created: UNIX_EPOCH + Duration::from_nanos(self.created),
            schema: self.schema,
            positive: SpansAndDeltas::of(positive),
            negative: SpansAndDeltas::of(negative),
        }
    }
}

impl NativeSnapshot {
    /// Encodes sum, count and these native buckets, no classic ones: only the protobuf encoder
    /// accepts that, as with prometheus-client's native-only histogram.
    pub(crate) fn encode(
        &self,
        sum: f64,
        count: u64,
        mut encoder: MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram_with_native::<NoLabelSet>(
            sum,
            count,
            &[],
            None::<&HashMap<usize, Exemplar<NoLabelSet, f64>>>,
            Native {
                schema: i32::from(self.schema),
                zero_threshold: ZERO_THRESHOLD,
                zero_count: self.zero_count,
                negative: self.negative.buckets(),
                positive: self.positive.buckets(),
                created: Some(self.created),
            },
        )
    }
}

impl NativeBuckets {
    /// Adds one to the bucket `index` of `side`, inserting it if need be. A count at
    /// [`COUNT_MAX`] stays there.
    fn increment(&mut self, side: u64, index: i32) {
        let key = side | (u64::from((index + INDEX_BIAS).unsigned_abs()) << COUNT_BITS);
        // A bucket of a lower key packs to less than `key` (keys differ above the count's
        // bits), this key's own to more (its count is at least one): one search on the packed
        // values, no mask per step.
        let at = self.buckets.partition_point(|b| *b < key);
        match self.buckets.get_mut(at) {
            Some(b) if *b & !COUNT_MAX == key => {
                if *b & COUNT_MAX < COUNT_MAX {
                    *b += 1;
                }
            }
            _ => {
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
        // Schema 3's bounds below the fraction, then every second (schema 2) or fourth
        // (schema 1) of them: bounds 0, 2, 4, 6 among the first `c` are ceil(c / 2).
        let shift = SCHEMA - schema;
        let below = (octave_bounds_below(frac) + (1 << shift) - 1) >> shift;
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

/// For each sixteenth of [`frexp`]'s range of fractions (its top four mantissa bits), how many
/// of [`OCTAVE`]'s bounds lie below it, four bits a sixteenth: a constant, no table to load. The
/// next bound, `OCTAVE[count]`, is the only one that can lie inside the sixteenth: neighbouring
/// bounds are at least 0.045 apart, a sixteenth of `[0.5, 1)` is 0.031.
const BELOW: u64 = {
    let mut packed = 0;
    let mut t = 0;
    while t < 16 {
        let low = 0.5 + t as f64 / 32.0;
        let mut below = 0;
        while below < OCTAVE.len() && OCTAVE[below] < low {
            below += 1;
        }
        // The bound after the next lies past the sixteenth: one comparison is enough.
        assert!(below + 1 >= OCTAVE.len() || OCTAVE[below + 1] >= low + 1.0 / 32.0);
        packed |= (below as u64) << (4 * t);
        t += 1;
    }
    packed
};

/// How many of [`OCTAVE`]'s bounds lie below `frac` (in `[0.5, 1)`): the count below its
/// sixteenth and one comparison with the next bound, where counting them took eight.
fn octave_bounds_below(frac: f64) -> i32 {
    let sixteenth = (frac.to_bits() >> 48) & 0xf;
    // At most 8: fits.
    let below = ((BELOW >> (4 * sixteenth)) & 0xf) as usize;
    (below + usize::from(OCTAVE.get(below).is_some_and(|b| *b < frac))) as i32
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
#[derive(Debug)]
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
    use prometheus_client::encoding::prometheus_text;
    use prometheus_client::metrics::histogram::{Histogram, NativeHistogramConfig};
    use prometheus_client::registry::Registry;
    use proptest::prelude::*;

    use super::*;
    use crate::metrics::histogram::{
        HistogramView, SeriesHistogram, SharedHistogram, SplitHistogram,
    };

    /// Classic bounds of the split histograms under test.
    const BOUNDS: [f64; 4] = [1e-4, 1e-3, 1e-2, 0.1];

    /// A registry holding `metric` as `h`, native view or not.
    fn registry(metric: SharedHistogram, native: bool) -> Registry {
        let mut registry = Registry::default();
        registry.register("h", "H", HistogramView { metric, native });
        registry
    }

    /// The protobuf families of `registry`, start timestamps cleared (each histogram has its
    /// own creation time) and sums as bits (a NaN sum equals nothing).
    fn protobuf(registry: &Registry) -> (Vec<pb::MetricFamily>, Vec<u64>) {
        let mut families = match prometheus_protobuf::encode(registry) {
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

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_text::encode(&mut out, registry) {
            panic!("encode: {e}");
        }
        out
    }

    fn client(h: Histogram) -> SharedHistogram {
        SharedHistogram::new(SeriesHistogram::Client(h))
    }

    /// Ours after `values`, and prometheus-client's native-only and classic histograms after
    /// the same values.
    fn after(values: &[f64], max_buckets: u16) -> (SplitHistogram, Histogram, Histogram) {
        let ours = SplitHistogram::new(BOUNDS.into(), max_buckets);
        let native = Histogram::new_native(
            NativeHistogramConfig::with_schema(SCHEMA).max_buckets(usize::from(max_buckets)),
        );
        let classic = Histogram::new(BOUNDS);
        for v in values {
            ours.observe(*v);
            native.observe(*v);
            classic.observe(*v);
        }
        (ours, native, classic)
    }

    /// Ours gives prometheus-client's native-only exposition in the native view, and its
    /// classic one otherwise, in protobuf and text alike.
    fn assert_encodes_like_the_client(values: &[f64], max_buckets: u16) {
        let (ours, native, classic) = after(values, max_buckets);
        let ours = SharedHistogram::new(SeriesHistogram::Split(ours));
        assert_eq!(
            protobuf(&registry(ours.clone(), true)),
            protobuf(&registry(client(native), true)),
            "native, max_buckets {max_buckets}"
        );
        let classic = client(classic);
        assert_eq!(
            protobuf(&registry(ours.clone(), false)),
            protobuf(&registry(classic.clone(), false)),
            "classic, max_buckets {max_buckets}"
        );
        assert_eq!(
            text(&registry(ours, false)),
            text(&registry(classic, false))
        );
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

    // The packed counts and one comparison give the count of bounds below, on every bound, one
    // step either side of it, and across each sixteenth of the range.
    #[test]
    fn the_count_of_octave_bounds_below_a_fraction_is_exact() {
        let mut fracs: Vec<f64> = OCTAVE
            .iter()
            .flat_map(|b| [*b, b.next_up(), b.next_down()])
            .filter(|f| (0.5..1.0).contains(f))
            .collect();
        fracs.extend(
            (0..=4096)
                .map(|i| 0.5 + f64::from(i) / 8192.0)
                .filter(|f| *f < 1.0),
        );
        fracs.push(1.0f64.next_down());
        for frac in fracs {
            let counted = OCTAVE.iter().filter(|b| **b < frac).count() as i32;
            assert_eq!(octave_bounds_below(frac), counted, "{frac}");
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
    fn encodes_like_the_client_histograms_at_the_edges() {
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
            assert_encodes_like_the_client(&values, max_buckets);
        }
        assert_encodes_like_the_client(&[], 160);
    }

    // A histogram still over its limit after halving once (buckets far apart merge slowly)
    // halves again at the next observation, also when that one goes to the zero bucket.
    #[test]
    fn a_value_in_the_zero_bucket_also_enforces_the_bucket_limit() {
        let values = [1e-7, 7.66, 8.54, 1.10, 9.76, 0.70, 4.70, 0.29, 0.0];
        assert_encodes_like_the_client(&values, 5);
    }

    proptest! {
        #[test]
        fn encodes_like_the_client_histograms(
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
            assert_encodes_like_the_client(&values, max_buckets);
        }
    }

    // The view's flag covers what it encodes and nothing after: a text encode after a
    // protobuf one on the same thread gets classic buckets.
    #[test]
    fn the_native_flag_ends_with_its_view() {
        let (ours, _, classic) = after(&[0.001, 0.002, 0.5], 160);
        let ours = SharedHistogram::new(SeriesHistogram::Split(ours));
        let _ = protobuf(&registry(ours.clone(), true));
        assert_eq!(
            text(&registry(ours, false)),
            text(&registry(client(classic), false))
        );
    }

    #[test]
    fn buckets_grow_by_a_quarter_and_shrink_after_halving() {
        let values = (0..100).map(|i| 1e-6 * 2f64.powf(f64::from(i) / 8.0));
        // 100 distinct buckets at schema 3: 12.5 octaves.
        let mut wide = NativeBuckets::new(160);
        values.clone().for_each(|v| wide.observe(v));
        assert_eq!(wide.buckets.len(), 100);
        assert!(
            wide.buckets.capacity() <= 130,
            "{}",
            wide.buckets.capacity()
        );
        let mut small = NativeBuckets::new(10);
        values.for_each(|v| small.observe(v));
        assert!(small.buckets.len() <= 10, "{} buckets", small.buckets.len());
        assert!(small.schema < SCHEMA);
        assert!(
            small.buckets.capacity() <= 16,
            "{}",
            small.buckets.capacity()
        );
    }
}
