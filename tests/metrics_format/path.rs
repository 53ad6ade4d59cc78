//! `pingscope_path_hop_rtt_seconds`: the short classic layout in text, native buckets in
//! protobuf (alone by default, beside the classic ones with `classic_in_protobuf`), classic
//! buckets only without native histograms, as `pingscope_rtt_seconds`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime};

use pingscope::config::HistogramConfig;
use pingscope::metrics::path::PATH_BUCKETS;
use pingscope::metrics::{Format, Metrics, MetricsOptions};
use pingscope::probe::path::{HopProbe, HopResult, PathStats, Round};

use super::{TestResult, check_native, decode, family, histogram_of, label, labels, parse, value};

const ROUTER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 10, 1));
const DEST: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 9));

/// Per round: (TTL 1's RTT, TTL 2's RTT) in µs, `None` for a timeout.
const ROUNDS: &[(Option<u64>, Option<u64>)] = &[
    (Some(800), Some(2_500)),
    (Some(1_200), None),
    (Some(30_000), Some(2_700)),
];

fn probe(round: u64, ttl: u8, rtt: Option<u64>) -> HopProbe {
    let (result, responder, icmp_type) = match (rtt, ttl) {
        (None, _) => (HopResult::Timeout, None, None),
        (Some(_), 1) => (HopResult::TimeExceeded, Some(ROUTER), Some(11)),
        (Some(_), _) => (HopResult::Reply, Some(DEST), Some(0)),
    };
    HopProbe {
        round,
        ttl,
        flow: 0,
        identity: 0,
        at: SystemTime::now(),
        result,
        responder,
        rtt: rtt.map(Duration::from_micros),
        icmp_type,
        error: None,
        reason: None,
    }
}

fn rtts(ttl: u8) -> Vec<f64> {
    ROUNDS
        .iter()
        .filter_map(|(a, b)| if ttl == 1 { *a } else { *b })
        .map(|us| us as f64 / 1e6)
        .collect()
}

/// A registry with one path monitor `p` that ran [`ROUNDS`].
fn path_fixture(options: MetricsOptions) -> Result<Metrics, Box<dyn std::error::Error>> {
    let metrics = Metrics::new(options)?;
    let path = metrics.path(&labels("p", DEST, &[("site", "ams")]));
    let mut stats = PathStats::new();
    for (n, (a, b)) in ROUNDS.iter().enumerate() {
        let number = n as u64 + 1;
        let round = Round {
            number,
            probes: vec![probe(number, 1, *a), probe(number, 2, *b)],
            reached_at: b.map(|_| 2),
            rekeyed: Vec::new(),
        };
        stats.add_round(&round);
        path.on_round(&round, &stats);
    }
    Ok(metrics)
}

fn options(native: bool, classic_in_protobuf: bool) -> MetricsOptions {
    super::histogram(HistogramConfig {
        native,
        classic_in_protobuf,
        ..HistogramConfig::default()
    })
}

/// The protobuf histogram of TTL `ttl`.
fn hop_histogram(
    families: &[prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::MetricFamily],
    ttl: &str,
) -> prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::Histogram {
    let f = family(families, "pingscope_path_hop_rtt_seconds");
    match f.metric.iter().find(|m| label(m, "ttl") == Some(ttl)) {
        Some(m) => {
            assert_eq!(label(m, "target"), Some("p"));
            assert_eq!(label(m, "site"), Some("ams"));
            histogram_of(m).clone()
        }
        None => panic!("no hop RTT series for ttl {ttl}"),
    }
}

#[test]
fn text_scrapes_get_the_short_classic_layout_whatever_protobuf_carries() -> TestResult {
    let mut bodies = Vec::new();
    for (native, both) in [(true, false), (true, true), (false, false)] {
        let text = path_fixture(options(native, both))?.encode_text()?;
        let p = parse(&text);
        for ttl in ["1", "2"] {
            let l = [
                ("target", "p"),
                ("ip", "198.18.0.9"),
                ("site", "ams"),
                ("ttl", ttl),
            ];
            let values = rtts(ttl.parse()?);
            // (le, cumulative count) of this TTL's buckets, in order.
            let buckets: Vec<(f64, f64)> = p
                .values
                .iter()
                .filter_map(|(series, v)| {
                    let rest = series.strip_prefix("pingscope_path_hop_rtt_seconds_bucket{")?;
                    if !rest.contains(&format!("ttl=\"{ttl}\"")) {
                        return None;
                    }
                    let le = rest.split("le=\"").nth(1)?.split('"').next()?;
                    let le = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().ok()?
                    };
                    // Positive floats order as their bits do.
                    Some((le.to_bits(), (le, *v)))
                })
                .collect::<std::collections::BTreeMap<u64, (f64, f64)>>()
                .into_values()
                .collect();
            let want: Vec<(f64, f64)> = PATH_BUCKETS
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .map(|b| (b, values.iter().filter(|v| **v <= b).count() as f64))
                .collect();
            assert_eq!(buckets, want, "ttl {ttl}: the short classic layout");
            let count = value(&p, "pingscope_path_hop_rtt_seconds_count", &l);
            assert_eq!(count, values.len() as f64, "ttl {ttl} count");
        }
        bodies.push(text);
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "text is the same whatever protobuf carries"
    );
    Ok(())
}

#[test]
fn protobuf_scrapes_get_native_hop_buckets_like_rtt_seconds() -> TestResult {
    // Default: native buckets only.
    let families = decode(&path_fixture(options(true, false))?.encode(Format::Protobuf)?)?;
    for ttl in [1_u8, 2] {
        let h = hop_histogram(&families, &ttl.to_string());
        assert_eq!(
            h.bucket,
            Vec::new(),
            "ttl {ttl}: classic buckets in protobuf"
        );
        check_native(&h, &rtts(ttl), &format!("ttl {ttl}, native only"));
    }

    // classic_in_protobuf: both, in one message.
    let families = decode(&path_fixture(options(true, true))?.encode(Format::Protobuf)?)?;
    for ttl in [1_u8, 2] {
        let h = hop_histogram(&families, &ttl.to_string());
        assert_eq!(h.bucket.len(), PATH_BUCKETS.len() + 1, "ttl {ttl}: classic");
        check_native(&h, &rtts(ttl), &format!("ttl {ttl}, both"));
    }

    // Without native histograms: classic only.
    let families = decode(&path_fixture(options(false, false))?.encode(Format::Protobuf)?)?;
    let h = hop_histogram(&families, "1");
    assert_eq!(h.bucket.len(), PATH_BUCKETS.len() + 1);
    assert!(
        h.positive_span.is_empty() && h.zero_threshold == 0.0,
        "no native part"
    );
    Ok(())
}

/// A hop probe that failed to send locally is no probe: TTL 2's sent and lost stay as the
/// rounds that did send left them (the scheduler counts it in `pingscope_send_errors_total`).
#[test]
fn a_hop_probe_that_failed_to_send_is_neither_sent_nor_lost() -> TestResult {
    let metrics = path_fixture(MetricsOptions::default())?;
    let path = metrics.path(&labels("p", DEST, &[("site", "ams")]));
    let l = [
        ("target", "p"),
        ("ip", "198.18.0.9"),
        ("site", "ams"),
        ("ttl", "2"),
    ];
    let before = parse(&metrics.encode_text()?);
    let (sent, lost) = (
        value(&before, "pingscope_path_hop_sent_total", &l),
        value(&before, "pingscope_path_hop_lost_total", &l),
    );
    let number = ROUNDS.len() as u64 + 1;
    let mut failed = probe(number, 2, None);
    failed.result = HopResult::SendError;
    failed.error = Some("No buffer space available (os error 105)".to_owned());
    failed.reason = Some("buffer_full");
    let round = Round {
        number,
        probes: vec![probe(number, 1, Some(900)), failed],
        reached_at: None,
        rekeyed: Vec::new(),
    };
    let mut stats = PathStats::new();
    stats.add_round(&round);
    path.on_round(&round, &stats);
    let after = parse(&metrics.encode_text()?);
    assert_eq!(
        value(&after, "pingscope_path_hop_sent_total", &l),
        sent,
        "sent"
    );
    assert_eq!(
        value(&after, "pingscope_path_hop_lost_total", &l),
        lost,
        "lost"
    );
    let one = [
        ("target", "p"),
        ("ip", "198.18.0.9"),
        ("site", "ams"),
        ("ttl", "1"),
    ];
    assert_eq!(
        value(&after, "pingscope_path_hop_sent_total", &one),
        value(&before, "pingscope_path_hop_sent_total", &one) + 1.0,
        "TTL 1 was sent"
    );
    Ok(())
}
