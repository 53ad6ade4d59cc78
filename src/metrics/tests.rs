//! Unit tests of the registry handle; the exposition itself is tested in `tests/metrics_format`.

use super::*;
use crate::config::HistogramConfig;

/// The default options with these histogram layouts.
fn histogram(histogram: HistogramConfig) -> MetricsOptions {
    MetricsOptions {
        histogram,
        ..MetricsOptions::default()
    }
}

// The HTTP layer encodes on a blocking thread and the scheduler records from many tasks.
#[test]
fn handles_can_cross_threads() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<Metrics>();
    send_sync::<TargetMetrics>();
}

#[test]
fn layout_follows_the_options() {
    let layout = |native, classic_in_protobuf| {
        Layout::of(&histogram(HistogramConfig {
            native,
            classic_in_protobuf,
            ..HistogramConfig::default()
        }))
    };
    assert_eq!(Layout::of(&MetricsOptions::default()), Layout::Split);
    assert_eq!(layout(true, false), Layout::Split);
    assert_eq!(layout(true, true), Layout::Both);
    assert_eq!(layout(false, false), Layout::Classic);
    assert_eq!(layout(false, true), Layout::Classic);
}

// Only the split layout pays for a second registry, and has split histograms.
#[test]
fn only_the_split_layout_has_a_protobuf_registry_and_split_histograms() -> Result<(), MetricsError>
{
    for (native, classic_in_protobuf, split) in [
        (true, false, true),
        (true, true, false),
        (false, false, false),
    ] {
        let metrics = Metrics::new(histogram(HistogramConfig {
            native,
            classic_in_protobuf,
            ..HistogramConfig::default()
        }))?;
        let labels = TargetLabels::new("t", std::net::Ipv4Addr::LOCALHOST.into(), [])?;
        let t = metrics.target(&labels, "t", AddressFamily::Ip4);
        let s = &metrics.shared;
        let found = [
            s.protobuf.is_some(),
            matches!(s.scheduler_lag, SeriesHistogram::Split(_)),
            matches!(t.inner.rtt, SeriesHistogram::Split(_)),
            matches!(t.inner.jitter, SeriesHistogram::Split(_)),
        ];
        assert_eq!(
            found, [split; 4],
            "native {native}, classic {classic_in_protobuf}"
        );
    }
    Ok(())
}

#[test]
fn bucket_rules() {
    let options = HistogramConfig::default();
    assert!(check_buckets("RTT", &options.buckets).is_ok());
    assert!(check_buckets("jitter", &options.jitter_buckets).is_ok());
    assert!(check_buckets("lag", LAG_BUCKETS).is_ok());
    for (bad, why) in [
        (&[][..], "at least one"),
        (&[0.0, 1.0][..], "above 0"),
        (&[1.0, f64::INFINITY][..], "finite"),
        (&[0.5, 0.5][..], "strictly increasing"),
    ] {
        match check_buckets("RTT", bad) {
            Err(e) => assert!(e.to_string().contains(why), "{bad:?}: {e}"),
            Ok(()) => panic!("{bad:?} accepted"),
        }
    }
}

// The RTT and jitter histograms each have their own classic layout, in every layout that has
// classic buckets in text; bad jitter bounds are refused by name.
#[test]
fn rtt_and_jitter_have_their_own_classic_bounds() -> Result<(), MetricsError> {
    let (rtt, jitter) = (vec![0.001, 0.002, 0.003, 0.004], vec![0.01, 0.02]);
    for (native, classic_in_protobuf) in [(true, false), (true, true), (false, false)] {
        let metrics = Metrics::new(histogram(HistogramConfig {
            buckets: rtt.clone(),
            jitter_buckets: jitter.clone(),
            native,
            classic_in_protobuf,
        }))?;
        let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        let labels = TargetLabels::new("t", ip, Vec::new())?;
        let _t = metrics.target(&labels, "t", AddressFamily::Ip4);
        let text = metrics.encode_text()?;
        let les = |name: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.starts_with(name))
                .filter_map(|l| Some(l.split("le=\"").nth(1)?.split('"').next()?.to_owned()))
                .collect()
        };
        let layout = (native, classic_in_protobuf);
        assert_eq!(
            les("pingscope_rtt_seconds_bucket{"),
            ["0.001", "0.002", "0.003", "0.004", "+Inf"],
            "{layout:?}"
        );
        assert_eq!(
            les("pingscope_jitter_seconds_bucket{"),
            ["0.01", "0.02", "+Inf"],
            "{layout:?}"
        );
    }
    let refused = Metrics::new(histogram(HistogramConfig {
        jitter_buckets: vec![0.1, 0.01],
        ..HistogramConfig::default()
    }));
    match refused {
        Err(e) => assert!(e.to_string().starts_with("jitter histogram buckets"), "{e}"),
        Ok(_) => panic!("decreasing jitter buckets accepted"),
    }
    Ok(())
}

// The counters other modules own are on /metrics from the start (0 without a source) and follow
// their source at each scrape.
#[test]
fn scrape_counters_read_their_source() -> Result<(), MetricsError> {
    use std::sync::atomic::AtomicU64;
    let metrics = Metrics::new(MetricsOptions::default())?;
    let value = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok())
    };
    let names = [
        (
            ScrapeCounter::EngineEventsDropped,
            "pingscope_engine_events_dropped_total",
        ),
        (
            ScrapeCounter::EngineUnmatchedPackets,
            "pingscope_engine_unmatched_packets_total",
        ),
        (
            ScrapeCounter::SessionSamplesDropped,
            "pingscope_session_samples_dropped_total",
        ),
    ];
    let text = metrics.encode_text()?;
    for (_, name) in names {
        assert_eq!(value(&text, name), Some(0), "{name} missing:\n{text}");
        assert!(text.contains(&format!("# TYPE {name} counter")), "{name}");
    }
    for (i, (counter, _)) in names.into_iter().enumerate() {
        let atomic = Arc::new(AtomicU64::new(10 + i as u64));
        let source = atomic.clone();
        metrics.set_counter_source(counter, move || source.load(Ordering::Relaxed));
        atomic.fetch_add(5, Ordering::Relaxed);
    }
    let text = metrics.encode_text()?;
    for (i, (_, name)) in names.into_iter().enumerate() {
        assert_eq!(value(&text, name), Some(15 + i as u64), "{name}:\n{text}");
    }
    Ok(())
}

// Every target carries one: series that most targets never have (window gauges, ICMP errors)
// are boxed on first use (408 bytes with them inline).
#[test]
fn a_target_handle_is_small() {
    let size = std::mem::size_of::<TargetInner>();
    assert!(size <= 320, "{size}");
}
