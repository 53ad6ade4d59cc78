//! The protobuf body: framing, the same families as text, and each histogram's buckets as
//! the layout asks (native only by default, both with `classic_in_protobuf`, classic only
//! without native histograms), checked bucket by bucket against the scripted values.

use std::collections::BTreeMap;

use pingscope::config::HistogramConfig;
use pingscope::metrics::Format;
use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model as pb;
use prost::Message;

use super::{
    GW_SCRIPT, Step, TestResult, V6_SCRIPT, close, expected, fixture, fixture_both, parse,
};

/// Splits a delimited protobuf body into its messages, checking the framing covers it exactly.
pub(super) fn decode(body: &[u8]) -> Result<Vec<pb::MetricFamily>, prost::DecodeError> {
    let mut rest = body;
    let mut out = Vec::new();
    while !rest.is_empty() {
        out.push(pb::MetricFamily::decode_length_delimited(&mut rest)?);
    }
    Ok(out)
}

pub(super) fn family<'a>(families: &'a [pb::MetricFamily], name: &str) -> &'a pb::MetricFamily {
    match families.iter().find(|f| f.name == name) {
        Some(f) => f,
        None => panic!("no family {name}"),
    }
}

pub(super) fn label<'a>(m: &'a pb::Metric, name: &str) -> Option<&'a str> {
    m.label
        .iter()
        .find(|l| l.name == name)
        .map(|l| l.value.as_str())
}

/// The RTTs of a script's replies, in seconds.
pub(super) fn rtts(script: &[Step]) -> Vec<f64> {
    script
        .iter()
        .filter_map(|s| match s {
            Step::Reply(us, _) => Some(*us as f64 / 1e6),
            _ => None,
        })
        .collect()
}

/// The IPDV jitter values a script's replies give.
fn jitters(script: &[Step]) -> Vec<f64> {
    rtts(script)
        .windows(2)
        .map(|w| (w[1] - w[0]).abs())
        .collect()
}

/// The metric of `family` labelled `target`.
pub(super) fn of_target<'a>(family: &'a pb::MetricFamily, target: &str) -> &'a pb::Metric {
    match family
        .metric
        .iter()
        .find(|m| label(m, "target") == Some(target))
    {
        Some(m) => m,
        None => panic!("{}: no series of {target}", family.name),
    }
}

pub(super) fn histogram_of(m: &pb::Metric) -> &pb::Histogram {
    match m.histogram.as_ref() {
        Some(h) => h,
        None => panic!("not a histogram: {m:?}"),
    }
}

/// The positive native buckets as index -> count, walking spans and deltas the way
/// Prometheus does (a span's offset counts from the end of the previous span).
fn native_buckets(h: &pb::Histogram) -> BTreeMap<i32, u64> {
    let spanned: u32 = h.positive_span.iter().map(|s| s.length).sum();
    assert_eq!(
        spanned as usize,
        h.positive_delta.len(),
        "spans cover the deltas"
    );
    let mut out = BTreeMap::new();
    let mut deltas = h.positive_delta.iter();
    let (mut index, mut count) = (0_i32, 0_i64);
    for span in &h.positive_span {
        index += span.offset;
        for _ in 0..span.length {
            count += deltas.next().copied().unwrap_or_default();
            assert!(count >= 0, "negative bucket count at {index}");
            if count > 0 {
                out.insert(index, count as u64);
            }
            index += 1;
        }
    }
    out
}

/// Index of the native bucket holding `v` at `schema`: bucket `i` is (b^(i-1), b^i] with
/// b = 2^(2^-schema).
fn native_index(v: f64, schema: i32) -> i32 {
    (v.log2() * 2_f64.powi(schema)).ceil() as i32
}

/// `h` holds exactly `values` in its native buckets, with matching count and sum.
pub(super) fn check_native(h: &pb::Histogram, values: &[f64], what: &str) {
    assert_eq!(h.sample_count, values.len() as u64, "{what}: count");
    assert!(close(h.sample_sum, values.iter().sum()), "{what}: sum");
    assert!((-4..=8).contains(&h.schema), "{what}: schema {}", h.schema);
    // A positive zero threshold marks the message as native even with no observation.
    assert!(h.zero_threshold > 0.0, "{what}: zero threshold");
    assert_eq!(h.zero_count, 0, "{what}: zero bucket");
    assert!(h.negative_span.is_empty() && h.negative_delta.is_empty());
    let mut want = BTreeMap::new();
    for v in values {
        *want.entry(native_index(*v, h.schema)).or_insert(0_u64) += 1;
    }
    assert_eq!(native_buckets(h), want, "{what}: native buckets");
}

#[test]
fn protobuf_body_carries_native_buckets_only_by_default() -> TestResult {
    let f = fixture(true)?;
    let families = decode(&f.metrics.encode(Format::Protobuf)?)?;
    let text_families = parse(&f.metrics.encode_text()?).types.len();
    assert_eq!(families.len(), text_families, "same families as text");

    let sent = family(&families, "pingscope_sent_total");
    assert_eq!(sent.r#type, pb::MetricType::Counter as i32);
    assert!(!sent.help.is_empty());
    assert_eq!(sent.metric.len(), 3);
    let e = expected(GW_SCRIPT);
    let gw_sent = of_target(sent, "gw")
        .counter
        .as_ref()
        .ok_or("not a counter")?;
    assert_eq!(gw_sent.value, e.sent);

    let rtt = family(&families, "pingscope_rtt_seconds");
    assert_eq!(rtt.r#type, pb::MetricType::Histogram as i32);
    let gw = of_target(rtt, "gw");
    assert_eq!(label(gw, "site"), Some("ams"));
    assert_eq!(label(gw, "rack"), Some("r\"1\\b"));

    let jitter = family(&families, "pingscope_jitter_seconds");
    let lag = family(&families, "pingscope_scheduler_lag_seconds");
    let lag = lag.metric.first().ok_or("no scheduler lag series")?;
    let cases = [
        (histogram_of(gw), rtts(GW_SCRIPT), "gw rtt"),
        (
            histogram_of(of_target(rtt, "v6")),
            rtts(V6_SCRIPT),
            "v6 rtt",
        ),
        (histogram_of(of_target(rtt, "idle")), vec![], "idle rtt"),
        (
            histogram_of(of_target(jitter, "gw")),
            jitters(GW_SCRIPT),
            "gw jitter",
        ),
        (
            histogram_of(of_target(jitter, "v6")),
            jitters(V6_SCRIPT),
            "v6 jitter",
        ),
        (histogram_of(lag), vec![0.000_3], "scheduler lag"),
    ];
    for (h, values, what) in &cases {
        assert_eq!(h.bucket, Vec::new(), "{what}: classic buckets in protobuf");
        check_native(h, values, what);
    }
    Ok(())
}

#[test]
fn protobuf_body_keeps_classic_buckets_when_asked_or_without_native() -> TestResult {
    let classic_len = HistogramConfig::default().buckets.len() + 1;

    // classic_in_protobuf: both kinds of buckets in one message.
    let f = fixture_both()?;
    let families = decode(&f.metrics.encode_protobuf()?)?;
    let rtt = family(&families, "pingscope_rtt_seconds");
    let h = histogram_of(of_target(rtt, "gw"));
    assert_eq!(h.bucket.len(), classic_len);
    let inf = h.bucket.last().ok_or("no +Inf bucket")?;
    assert_eq!(inf.cumulative_count, expected(GW_SCRIPT).replies as u64);
    check_native(h, &rtts(GW_SCRIPT), "gw rtt, both");
    let lag = family(&families, "pingscope_scheduler_lag_seconds");
    let h = histogram_of(lag.metric.first().ok_or("no scheduler lag series")?);
    assert!(!h.bucket.is_empty());
    check_native(h, &[0.000_3], "scheduler lag, both");

    // The same families either way; only the histograms' buckets differ.
    let split = decode(&fixture(true)?.metrics.encode_protobuf()?)?;
    let names = |fs: &[pb::MetricFamily]| -> Vec<(String, i32, usize)> {
        fs.iter()
            .map(|f| (f.name.clone(), f.r#type, f.metric.len()))
            .collect()
    };
    assert_eq!(names(&split), names(&families));

    // Without native buckets the histogram is classic only.
    let f = fixture(false)?;
    let families = decode(&f.metrics.encode_protobuf()?)?;
    let rtt = family(&families, "pingscope_rtt_seconds");
    for m in &rtt.metric {
        let h = histogram_of(m);
        assert!(h.positive_span.is_empty() && h.positive_delta.is_empty());
        assert_eq!(h.zero_threshold, 0.0);
        assert_eq!(h.bucket.len(), classic_len);
    }
    Ok(())
}
