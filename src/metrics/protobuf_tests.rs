//! The protobuf body written in parts against one registry's.

use super::*;
use crate::config::HistogramConfig;
use crate::metrics::{AddressFamily, MetricsOptions, ProbeLabels, TargetLabels, WindowRtt, outage};

// A protobuf body is written a part at a time (the registered metrics, each per-target and
// outage family on its own in chunks of targets, the other collectors): byte for byte what prometheus-client
// writes for one registry holding every family, in every layout, with a series in each
// per-target family, at every chunk size (the TCP target's family has none in the first chunks).
#[test]
fn protobuf_parts_make_the_whole_registrys_body() -> Result<(), MetricsError> {
    use crate::engine::{EventKind, IcmpErrorInfo, IcmpErrorKind, ProbeEvent, ReplyInfo};
    use prost::Message as _;
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    for (native, classic_in_protobuf) in [(true, false), (true, true), (false, false)] {
        let metrics = Metrics::new(MetricsOptions {
            histogram: HistogramConfig {
                native,
                classic_in_protobuf,
                ..HistogramConfig::default()
            },
            ..MetricsOptions::default()
        })?;
        let whole = |metrics: &Metrics| {
            prometheus_client::encoding::prometheus_protobuf::encode_to_vec(
                &metrics.whole_protobuf_registry(),
            )
            .map_err(|source| MetricsError::EncodeProtobuf { source })
        };
        // No target yet: the outage families are written without series, as a registry would.
        assert!(metrics.encode_protobuf_in_chunks(2)? == whole(&metrics)?);
        let ip = |n| IpAddr::V4(Ipv4Addr::new(198, 18, 0, n));
        let event = |kind| ProbeEvent {
            tag: 1,
            seq: 1,
            ip: ip(1),
            at: std::time::SystemTime::UNIX_EPOCH,
            kind,
        };
        let reply = |us, refused| {
            EventKind::Reply(ReplyInfo {
                rtt: Duration::from_micros(us),
                ttl: Some(60),
                size: 64,
                refused,
            })
        };
        let mut handles = Vec::new();
        for n in 1..=3 {
            let labels = TargetLabels::new(format!("t{n}"), ip(n), [])?;
            let probe = ProbeLabels {
                kind: if n == 3 { "tcp" } else { "icmp" },
                port: (n == 3).then_some(443),
            };
            let t = metrics.target_probing(&labels, &"h".into(), AddressFamily::Ip4, probe);
            t.on_sent();
            t.on_event(&event(reply(300 * u64::from(n), n == 3)));
            t.on_event(&event(reply(900, false)));
            t.on_event(&event(EventKind::Timeout));
            t.on_event(&event(EventKind::Late(ReplyInfo {
                rtt: Duration::from_secs(2),
                ttl: None,
                size: 64,
                refused: false,
            })));
            t.on_event(&event(EventKind::Duplicate(ReplyInfo {
                rtt: Duration::from_micros(500),
                ttl: None,
                size: 64,
                refused: false,
            })));
            t.on_event(&event(EventKind::IcmpError(IcmpErrorInfo {
                kind: IcmpErrorKind::Unreachable,
                icmp_type: 3,
                icmp_code: 1,
                from: ip(9),
                rtt: None,
            })));
            t.on_send_error("no_route");
            let o = metrics.outage(&labels);
            o.set(n == 2, u64::from(n));
            o.open_for(n == 2, 1.5);
            t.set_window(
                0.25,
                Some(WindowRtt {
                    min: 0.0003,
                    mean: 0.0006,
                    max: 0.0009,
                    stddev: 0.0003,
                }),
            );
            handles.push(t);
        }
        metrics.inc_resolve_error("t1");
        metrics.set_thresholds(
            "t2",
            Some(outage::Thresholds {
                loss: Some(0.1),
                rtt: None,
                for_seconds: 60.0,
            }),
        );
        let whole = whole(&metrics)?;
        for chunk in [1, 2, 3, 256] {
            let parts = metrics.encode_protobuf_in_chunks(chunk)?;
            assert!(
                parts == whole,
                "native {native}, classic {classic_in_protobuf}, chunk {chunk}: the parts differ"
            );
        }
        let parts = metrics.encode_protobuf()?;
        assert!(parts == whole, "the default chunk differs");
        // Every per-target family had a series to write.
        let mut names = Vec::new();
        let mut body = parts.as_slice();
        while !body.is_empty() {
            let family = prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::MetricFamily::decode_length_delimited(&mut body)
                .unwrap_or_else(|e| panic!("{e}"));
            names.push(family.name);
        }
        for name in [
            "sent_total",
            "rtt_seconds",
            "lost_total",
            "late_replies_total",
            "duplicates_total",
            "icmp_errors_total",
            "send_errors_total",
            "jitter_seconds",
            "jitter_rfc3550_seconds",
            "reply_ttl",
            "target_info",
            "tcp_refused_total",
            "window_loss_ratio",
            "window_rtt_seconds",
            "outage_active",
            "consecutive_lost",
            "outages_total",
            "outage_seconds_total",
            "target_threshold",
        ] {
            let name = format!("pingscope_{name}");
            assert!(names.contains(&name), "{name} not in {names:?}");
        }
    }
    Ok(())
}
