//! Unit tests of the registry handle; the exposition itself is tested in `tests/metrics_format`.

use super::*;
use crate::config::HistogramConfig;
use labels::InfoLabels;

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

// Only the split layout's protobuf parts ask for native buckets, and it has split histograms.
#[test]
fn only_the_split_layout_has_native_protobuf_parts_and_split_histograms() -> Result<(), MetricsError>
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
            s.protobuf.native,
            matches!(*s.scheduler_lag.0, SeriesHistogram::Split(_)),
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

// Every target carries one, with its counters, gauges and its two histograms in place (each a
// heap block of its own took 128 bytes with the allocator's header, and 32 more here for the
// handle: 576 in all, 480 then, 384 now): the series that most targets never have (window
// gauges, ICMP and send errors, TCP resets) are boxed together on first use, the info labels
// keep no second key, and the native buckets' creation time is one word.
#[test]
fn a_target_handle_is_small() {
    let size = std::mem::size_of::<TargetInner>();
    assert!(size <= 352, "{size}");
}

/// The lines of the per-target families (`pingscope_` + one of `names`) in a text body, sorted:
/// series order inside a family follows a hash map.
fn per_target_lines(text: &str, names: &[&str]) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| {
            let name = l
                .trim_start_matches("# HELP ")
                .trim_start_matches("# TYPE ");
            names.iter().any(|n| {
                name.strip_prefix("pingscope_")
                    .and_then(|rest| rest.strip_prefix(n))
                    .is_some_and(|rest| rest.starts_with(['{', ' ', '_']))
            })
        })
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

// The per-target series are written as prometheus-client families of one metric per series
// would write them (names, help, types, units, labels, values), lazily made series included,
// and a forgotten target's are all gone.
#[test]
fn per_target_series_encode_as_client_families_would() -> Result<(), MetricsError> {
    use crate::engine::{EventKind, IcmpErrorInfo, IcmpErrorKind, ProbeEvent, ReplyInfo};
    use prometheus_client::metrics::gauge::Gauge as ClientGauge;
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    let bounds = vec![0.001, 0.01];
    let metrics = Metrics::new(histogram(HistogramConfig {
        buckets: bounds.clone(),
        jitter_buckets: bounds.clone(),
        native: false,
        classic_in_protobuf: false,
    }))?;
    let ip = |n| IpAddr::V4(Ipv4Addr::new(198, 18, 0, n));
    let a = TargetLabels::new("a", ip(1), [("zone".to_owned(), "x".to_owned())])?;
    let b = TargetLabels::new("b", ip(2), [])?;
    let c = TargetLabels::new("c", ip(3), [])?;
    let ta = metrics.target(&a, "a.example", AddressFamily::Ip4);
    let tcp = ProbeLabels {
        kind: "tcp",
        port: Some(443),
    };
    let tb = metrics.target_probing(&b, &"b.example".into(), AddressFamily::Ip4, tcp);
    let tc = metrics.target(&c, "c.example", AddressFamily::Ip4);
    let event = |kind| ProbeEvent {
        tag: 1,
        seq: 1,
        ip: ip(1),
        at: std::time::SystemTime::UNIX_EPOCH,
        kind,
    };
    let reply = |ms, ttl, refused| ReplyInfo {
        rtt: Duration::from_micros(ms),
        ttl,
        size: 64,
        refused,
    };
    let icmp = |kind| IcmpErrorInfo {
        kind,
        icmp_type: 3,
        icmp_code: 1,
        from: ip(9),
        rtt: None,
    };
    for _ in 0..3 {
        ta.on_sent();
    }
    ta.on_event(&event(EventKind::Reply(reply(500, Some(61), false))));
    ta.on_event(&event(EventKind::Reply(reply(4_000, Some(60), false))));
    ta.on_event(&event(EventKind::Timeout));
    ta.on_event(&event(EventKind::Late(reply(9_000, None, false))));
    ta.on_event(&event(EventKind::Duplicate(reply(600, None, false))));
    ta.on_event(&event(EventKind::IcmpError(icmp(
        IcmpErrorKind::Unreachable,
    ))));
    ta.on_event(&event(EventKind::IcmpError(icmp(
        IcmpErrorKind::Unreachable,
    ))));
    ta.on_event(&event(EventKind::IcmpError(icmp(
        IcmpErrorKind::TimeExceeded,
    ))));
    ta.on_send_error("no_route");
    ta.on_send_error("no_route");
    ta.on_send_error("in_flight_full");
    ta.set_window(0.25, None);
    tb.on_sent();
    tb.on_event(&event(EventKind::Reply(reply(20, None, true))));
    tc.on_sent();
    drop(tc);
    metrics.forget(&c);

    // The same figures in families of prometheus-client metrics.
    let jitter = (0.004f64 - 0.0005).abs();
    let mut reference = Registry::with_prefix("pingscope");
    let key = |l: &TargetLabels| SeriesKey(Arc::new(l.clone()));
    let (ka, kb) = (key(&a), key(&b));
    let counters = |values: &[(&SeriesKey, u64)]| {
        let family = Family::<SeriesKey, Counter>::default();
        for (k, v) in values {
            family.get_or_create(k).inc_by(*v);
        }
        family
    };
    let histograms = |values: &[(&SeriesKey, &[f64])]| {
        let family: Family<SeriesKey, Histogram, _> =
            Family::new_with_constructor(|| Histogram::new([0.001, 0.01]));
        for (k, vs) in values {
            let series = family.get_or_create(k);
            for v in *vs {
                series.observe(*v);
            }
        }
        family
    };
    let sub = |k: &SeriesKey, name, value| (k.clone(), labels::Sub { name, value });
    let r = &mut reference;
    r.register(
        "sent",
        "Echo requests sent",
        counters(&[(&ka, 3), (&kb, 1)]),
    );
    r.register_with_unit(
        "rtt",
        "Round-trip time of replies received within the timeout",
        prometheus_client::registry::Unit::Seconds,
        histograms(&[(&ka, &[0.0005, 0.004]), (&kb, &[0.00002])]),
    );
    r.register(
        "lost",
        "Probes that got no reply within the timeout, or got an ICMP error",
        counters(&[(&ka, 4), (&kb, 0)]),
    );
    r.register(
        "late_replies",
        "Replies that came after the timeout (already counted lost)",
        counters(&[(&ka, 1), (&kb, 0)]),
    );
    r.register(
        "duplicates",
        "Duplicate replies",
        counters(&[(&ka, 1), (&kb, 0)]),
    );
    let icmp_family = Family::<(SeriesKey, labels::Sub), Counter>::default();
    icmp_family
        .get_or_create(&sub(&ka, "type", "unreachable"))
        .inc_by(2);
    icmp_family
        .get_or_create(&sub(&ka, "type", "time_exceeded"))
        .inc();
    r.register(
        "icmp_errors",
        "ICMP errors received for our probes, by type",
        icmp_family,
    );
    let send_family = Family::<(SeriesKey, labels::Sub), Counter>::default();
    send_family
        .get_or_create(&sub(&ka, "reason", "no_route"))
        .inc_by(2);
    send_family
        .get_or_create(&sub(&ka, "reason", "in_flight_full"))
        .inc();
    r.register(
        "send_errors",
        "Echo requests that failed to send locally, by reason",
        send_family,
    );
    r.register_with_unit(
        "jitter",
        "Absolute RTT difference of consecutive replies (IPDV, RFC 3393/5481)",
        prometheus_client::registry::Unit::Seconds,
        histograms(&[(&ka, &[jitter]), (&kb, &[])]),
    );
    let rfc3550 = Family::<SeriesKey, FloatGauge>::default();
    rfc3550.get_or_create(&ka).set(jitter / 16.0);
    r.register_with_unit(
        "jitter_rfc3550",
        "RFC 3550 smoothed jitter of the replies",
        prometheus_client::registry::Unit::Seconds,
        rfc3550,
    );
    let ttl = Family::<SeriesKey, ClientGauge>::default();
    ttl.get_or_create(&ka).set(60);
    r.register("reply_ttl", "TTL or hop limit of the last reply", ttl);
    let info = Family::<InfoLabels, ClientGauge>::default();
    for (k, host, probe) in [
        (
            &ka,
            "a.example",
            ProbeLabels {
                kind: "icmp",
                port: None,
            },
        ),
        (&kb, "b.example", tcp),
    ] {
        let labels = InfoLabels {
            key: k.clone(),
            host: host.into(),
            family: AddressFamily::Ip4.as_str(),
            probe,
        };
        info.get_or_create(&labels).set(1);
    }
    r.register("target_info", "The address a target resolves to now", info);
    r.register(
        "tcp_refused",
        "TCP probes answered with a RST (a reply: the host is up, the port closed)",
        counters(&[(&kb, 1)]),
    );
    let loss = Family::<SeriesKey, FloatGauge>::default();
    loss.get_or_create(&ka).set(0.25);
    r.register(
        "window_loss_ratio",
        "Loss ratio over the target's last window of probes",
        loss,
    );
    let window_rtt = Family::<(SeriesKey, labels::Sub), FloatGauge>::default();
    for stat in target::WINDOW_STATS {
        window_rtt
            .get_or_create(&sub(&ka, "stat", stat))
            .set(f64::NAN);
    }
    r.register_with_unit(
        "window_rtt",
        "RTT statistics over the target's last window of probes",
        prometheus_client::registry::Unit::Seconds,
        window_rtt,
    );
    let mut expected = String::new();
    if let Err(e) = prometheus_text::encode(&mut expected, &reference) {
        panic!("encode: {e}");
    }

    let names = [
        "sent",
        "rtt",
        "lost",
        "late_replies",
        "duplicates",
        "icmp_errors",
        "send_errors",
        "jitter",
        "jitter_rfc3550",
        "reply_ttl",
        "target_info",
        "tcp_refused",
        "window_loss_ratio",
        "window_rtt",
    ];
    let ours = per_target_lines(&metrics.encode_text()?, &names);
    assert_eq!(ours, per_target_lines(&expected, &names));
    assert!(
        !ours.iter().any(|l| l.contains("target=\"c\"")),
        "{ours:#?}"
    );
    assert!(
        ours.iter()
            .any(|l| l.starts_with("pingscope_icmp_errors_total{"))
    );

    // Forgotten, a target leaves nothing; with no target, no per-target family is written.
    metrics.forget(&a);
    metrics.forget(&b);
    let left = per_target_lines(&metrics.encode_text()?, &names);
    assert!(left.is_empty(), "{left:#?}");
    Ok(())
}

// An address's outage series keep its labels in the key its other series share, are written
// with every label, and are keyed by the whole label set: a reload that changes a custom label
// makes the new series before the old ones go, and forgetting the old leaves the new.
#[test]
fn outage_series_share_the_targets_labels_and_are_keyed_by_all_of_them() -> Result<(), MetricsError>
{
    let metrics = Metrics::new(MetricsOptions::default())?;
    let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 1));
    let zone = |z: &str| [("zone".to_owned(), z.to_owned())];
    let old = TargetLabels::new("t", ip, zone("a"))?;
    let new = TargetLabels::new("t", ip, zone("b"))?;
    let t = metrics.target(&old, "t", AddressFamily::Ip4);
    let o = metrics.outage(&old);
    assert!(Arc::ptr_eq(&o.key().0, &t.inner.key.0));
    o.set(true, 3);
    let n = metrics.outage(&new);
    assert!(!Arc::ptr_eq(&n.key().0, &o.key().0));
    n.set(false, 1);
    assert!(metrics.forget_outage(&old));
    let text = metrics.encode_text()?;
    let lost: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("pingscope_consecutive_lost{"))
        .collect();
    assert_eq!(
        lost,
        ["pingscope_consecutive_lost{target=\"t\",ip=\"198.18.0.1\",zone=\"b\"} 1"]
    );
    assert!(metrics.forget_outage(&new));
    assert!(!metrics.forget_outage(&new));
    let text = metrics.encode_text()?;
    assert!(!text.contains("pingscope_outage_active{"), "{text}");
    assert!(
        text.contains("# TYPE pingscope_outage_active gauge"),
        "{text}"
    );
    Ok(())
}

// A scrape writes every per-target family, the outage series included, in label order (target,
// address, custom labels), whatever order the maps keep.
#[test]
fn per_target_series_are_written_in_label_order() -> Result<(), MetricsError> {
    let metrics = Metrics::new(MetricsOptions::default())?;
    let mut keys = Vec::new();
    for name in ["m", "b", "z", "a", "k"] {
        for host in [9u8, 1, 30, 4] {
            let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, host));
            let labels = TargetLabels::new(name, ip, [])?;
            metrics.target(&labels, name, AddressFamily::Ip4);
            metrics.outage(&labels);
            keys.push((name.to_owned(), ip));
        }
    }
    keys.sort();
    let text = metrics.encode_text()?;
    for family in ["pingscope_sent_total{", "pingscope_outage_active{"] {
        let written: Vec<(String, std::net::IpAddr)> = text
            .lines()
            .filter_map(|l| l.strip_prefix(family))
            .filter_map(|l| {
                let target = l.split("target=\"").nth(1)?.split('"').next()?;
                let ip = l.split("ip=\"").nth(1)?.split('"').next()?.parse().ok()?;
                Some((target.to_owned(), ip))
            })
            .collect();
        assert_eq!(written, keys, "{family}");
    }
    Ok(())
}

// A target's series keep the config's own strings (at 100,000 targets each copy of a name took
// megabytes): the label set's `target`, the key the registry keeps, and target_info's `host`.
#[test]
fn a_target_keeps_the_name_and_host_it_is_given() -> Result<(), MetricsError> {
    let metrics = Metrics::new(MetricsOptions::default())?;
    let (name, host): (Arc<str>, Arc<str>) = ("web".into(), "web.example".into());
    let labels = TargetLabels::new(name.clone(), std::net::Ipv4Addr::LOCALHOST.into(), [])?;
    assert!(std::ptr::eq(labels.target(), &*name));
    let t = metrics.target_probing(&labels, &host, AddressFamily::Ip4, ProbeLabels::default());
    assert!(std::ptr::eq(t.inner.key.0.target(), &*name));
    assert!(Arc::ptr_eq(&t.inner.info.lock().host, &host));
    // Asked again with an equal host from elsewhere, the one kept stays.
    let again: Arc<str> = "web.example".into();
    let t = metrics.target_probing(&labels, &again, AddressFamily::Ip4, ProbeLabels::default());
    assert!(Arc::ptr_eq(&t.inner.info.lock().host, &host));
    Ok(())
}
