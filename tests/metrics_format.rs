//! The `/metrics` registry end to end: scripted probe events for a few targets, then the text
//! body (names, types, values, `promtool check metrics`, the same whatever protobuf carries),
//! the protobuf body (framing, native and classic buckets, in `metrics_format/protobuf.rs`),
//! series lifecycle (created at zero, forgotten from both formats), negotiation, and a real
//! Prometheus scraping both formats (in `metrics_format/prometheus.rs`).

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use pingscope::config::HistogramConfig;
use pingscope::engine::{EventKind, IcmpErrorInfo, IcmpErrorKind, ProbeEvent, ReplyInfo};
use pingscope::metrics::{
    Format, Metrics, MetricsOptions, PROTOBUF_CONTENT_TYPE, ScrapeGauge, TEXT_CONTENT_TYPE,
    TargetLabels, TargetMetrics, WindowRtt, negotiate,
};
use pingscope::resolve::Family;

#[path = "metrics_format/path.rs"]
mod path;
#[path = "metrics_format/prometheus.rs"]
mod prometheus;
#[path = "metrics_format/protobuf.rs"]
mod protobuf;

use protobuf::{check_native, decode, family, histogram_of, label, of_target, rtts};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const V4_IDLE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// One scripted outcome.
#[derive(Clone, Copy)]
enum Step {
    Reply(u64, u8),
    Timeout,
    Late(u64),
    Duplicate(u64),
    Icmp(IcmpErrorKind),
    SendError(&'static str),
}

fn event(ip: IpAddr, seq: u16, kind: EventKind) -> ProbeEvent {
    ProbeEvent {
        tag: u64::from(seq),
        seq,
        ip,
        at: SystemTime::now(),
        kind,
    }
}

fn reply(micros: u64, ttl: u8) -> ReplyInfo {
    ReplyInfo {
        rtt: Duration::from_micros(micros),
        ttl: Some(ttl),
        size: 64,
        refused: false,
    }
}

/// Plays a script into a target, the way the scheduler would.
fn play(t: &TargetMetrics, script: &[Step]) {
    let ip = t.labels().ip();
    for (seq, step) in script.iter().enumerate() {
        let seq = u16::try_from(seq).unwrap_or(u16::MAX);
        match *step {
            Step::SendError(reason) => {
                t.on_send_error(reason);
                continue;
            }
            Step::Late(_) | Step::Duplicate(_) => {}
            _ => t.on_sent(),
        }
        let kind = match *step {
            Step::Reply(us, ttl) => EventKind::Reply(reply(us, ttl)),
            Step::Timeout => EventKind::Timeout,
            Step::Late(us) => EventKind::Late(reply(us, 60)),
            Step::Duplicate(us) => EventKind::Duplicate(reply(us, 60)),
            Step::Icmp(kind) => EventKind::IcmpError(IcmpErrorInfo {
                kind,
                icmp_type: 3,
                icmp_code: 1,
                from: ip,
                rtt: None,
            }),
            Step::SendError(_) => continue,
        };
        t.on_event(&event(ip, seq, kind));
    }
}

/// What a script should produce, computed from the script itself.
#[derive(Debug, Default)]
struct Expected {
    sent: f64,
    lost: f64,
    late: f64,
    duplicates: f64,
    replies: f64,
    rtt_sum: f64,
    jitter_count: f64,
    jitter_sum: f64,
    rfc3550: f64,
    last_ttl: f64,
    icmp: HashMap<&'static str, f64>,
    send_errors: HashMap<&'static str, f64>,
}

fn expected(script: &[Step]) -> Expected {
    let mut e = Expected::default();
    let mut previous: Option<f64> = None;
    for step in script {
        match *step {
            Step::Reply(us, ttl) => {
                let rtt = us as f64 / 1e6;
                e.sent += 1.0;
                e.replies += 1.0;
                e.rtt_sum += rtt;
                e.last_ttl = f64::from(ttl);
                if let Some(p) = previous {
                    let d = (rtt - p).abs();
                    e.jitter_count += 1.0;
                    e.jitter_sum += d;
                    e.rfc3550 += (d - e.rfc3550) / 16.0;
                }
                previous = Some(rtt);
            }
            Step::Timeout => {
                e.sent += 1.0;
                e.lost += 1.0;
            }
            Step::Late(_) => e.late += 1.0,
            Step::Duplicate(_) => e.duplicates += 1.0,
            Step::Icmp(kind) => {
                e.sent += 1.0;
                e.lost += 1.0;
                *e.icmp.entry(kind.as_str()).or_default() += 1.0;
            }
            Step::SendError(reason) => *e.send_errors.entry(reason).or_default() += 1.0,
        }
    }
    e
}

const GW_SCRIPT: &[Step] = &[
    Step::Reply(10_000, 57),
    Step::Reply(12_500, 57),
    Step::Timeout,
    Step::Late(2_100_000),
    Step::Reply(11_000, 58),
    Step::Duplicate(11_200),
    Step::Icmp(IcmpErrorKind::Unreachable),
    Step::SendError("buffer_full"),
    Step::Reply(30_000, 58),
    Step::SendError("buffer_full"),
    Step::SendError("network_unreachable"),
];

const V6_SCRIPT: &[Step] = &[
    Step::Reply(40, 64),
    Step::Reply(55, 64),
    Step::Icmp(IcmpErrorKind::TimeExceeded),
    Step::Reply(45, 64),
];

struct Fixture {
    metrics: Metrics,
    gw: TargetMetrics,
    v6: TargetMetrics,
    idle: TargetMetrics,
}

fn labels(target: &str, ip: IpAddr, extra: &[(&str, &str)]) -> TargetLabels {
    let extra = extra.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    match TargetLabels::new(target, ip, extra) {
        Ok(l) => l,
        Err(e) => panic!("fixture labels rejected: {e}"),
    }
}

fn gw_labels() -> TargetLabels {
    // A quote and a backslash in a value check the text escaping through promtool.
    labels("gw", V4, &[("site", "ams"), ("rack", "r\"1\\b")])
}

fn fixture(native: bool) -> Result<Fixture, Box<dyn std::error::Error>> {
    fixture_with(histogram(HistogramConfig {
        native,
        ..HistogramConfig::default()
    }))
}

/// Native histograms with the classic buckets kept in protobuf too.
fn fixture_both() -> Result<Fixture, Box<dyn std::error::Error>> {
    fixture_with(histogram(HistogramConfig {
        native: true,
        classic_in_protobuf: true,
        ..HistogramConfig::default()
    }))
}

/// The default options with these histogram layouts.
fn histogram(histogram: HistogramConfig) -> MetricsOptions {
    MetricsOptions {
        histogram,
        ..MetricsOptions::default()
    }
}

fn fixture_with(options: MetricsOptions) -> Result<Fixture, Box<dyn std::error::Error>> {
    let metrics = Metrics::new(options)?;
    let gw = metrics.target(&gw_labels(), "gw.test", Family::Auto);
    let v6 = metrics.target(&labels("v6", V6, &[]), "localhost", Family::Ip6);
    let idle = metrics.target(
        &labels("idle", V4_IDLE, &[("site", "ams")]),
        "127.0.0.2",
        Family::Ip4,
    );
    play(&gw, GW_SCRIPT);
    play(&v6, V6_SCRIPT);
    gw.set_window(
        0.25,
        Some(WindowRtt {
            min: 0.01,
            mean: 0.0159,
            max: 0.03,
            stddev: 0.008,
        }),
    );
    v6.set_window(1.0, None);
    metrics.inc_resolve_error("gw");
    metrics.track_resolve("v6");
    metrics.observe_scheduler_lag(0.000_3);
    metrics.set_reload_status(
        true,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    );
    metrics.set_gauge_source(ScrapeGauge::ProbesInFlight, || 7);
    Ok(Fixture {
        metrics,
        gw,
        v6,
        idle,
    })
}

/// The text body as `series -> value`, plus `name -> type` and the names with HELP.
struct Parsed {
    values: HashMap<String, f64>,
    types: HashMap<String, String>,
    helps: Vec<String>,
}

fn parse(text: &str) -> Parsed {
    let mut p = Parsed {
        values: HashMap::new(),
        types: HashMap::new(),
        helps: Vec::new(),
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, ty)) = rest.split_once(' ') {
                p.types.insert(name.to_owned(), ty.to_owned());
            }
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(help.len() > 5, "HELP of {name} is too short: {help:?}");
            p.helps.push(name.to_owned());
        } else if let Some((series, value)) = line.rsplit_once(' ') {
            let value = match value {
                "NaN" => f64::NAN,
                "+Inf" => f64::INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|e| panic!("bad value in {line:?}: {e}")),
            };
            let previous = p.values.insert(series.to_owned(), value);
            assert!(previous.is_none(), "series twice: {series}");
        }
    }
    p
}

/// `name{k="v",...}` with the label order pingscope writes: target, ip, custom labels by name,
/// then the series' own label.
fn series(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.to_owned();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let v = v.replace('\\', "\\\\").replace('"', "\\\"");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{name}{{{}}}", inner.join(","))
}

fn value(p: &Parsed, name: &str, labels: &[(&str, &str)]) -> f64 {
    let key = series(name, labels);
    match p.values.get(&key) {
        Some(v) => *v,
        None => panic!("missing series {key}"),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 + 1e-9 * b.abs()
}

const GW: &[(&str, &str)] = &[
    ("target", "gw"),
    ("ip", "127.0.0.1"),
    ("rack", "r\"1\\b"),
    ("site", "ams"),
];
const V6_L: &[(&str, &str)] = &[("target", "v6"), ("ip", "::1")];
const IDLE: &[(&str, &str)] = &[("target", "idle"), ("ip", "127.0.0.2"), ("site", "ams")];

fn with(
    base: &[(&'static str, &'static str)],
    extra: (&'static str, &'static str),
) -> Vec<(&'static str, &'static str)> {
    let mut v = base.to_vec();
    v.push(extra);
    v
}

fn check_target(p: &Parsed, l: &[(&str, &str)], e: &Expected) {
    let check = |name: &str, want: f64| {
        let got = value(p, name, l);
        assert!(
            close(got, want),
            "{}: got {got}, want {want}",
            series(name, l)
        );
    };
    check("pingscope_sent_total", e.sent);
    check("pingscope_lost_total", e.lost);
    check("pingscope_late_replies_total", e.late);
    check("pingscope_duplicates_total", e.duplicates);
    check("pingscope_rtt_seconds_count", e.replies);
    check("pingscope_rtt_seconds_sum", e.rtt_sum);
    check("pingscope_jitter_seconds_count", e.jitter_count);
    check("pingscope_jitter_seconds_sum", e.jitter_sum);
    let mut inf = l.to_vec();
    inf.push(("le", "+Inf"));
    assert!(close(
        value(p, "pingscope_rtt_seconds_bucket", &inf),
        e.replies
    ));
    if e.jitter_count > 0.0 {
        check("pingscope_jitter_rfc3550_seconds", e.rfc3550);
    }
    if e.replies > 0.0 {
        check("pingscope_reply_ttl", e.last_ttl);
    }
    for (ty, n) in &e.icmp {
        let mut sl = l.to_vec();
        sl.push(("type", ty));
        assert!(close(value(p, "pingscope_icmp_errors_total", &sl), *n));
    }
    for (reason, n) in &e.send_errors {
        let mut sl = l.to_vec();
        sl.push(("reason", reason));
        assert!(close(value(p, "pingscope_send_errors_total", &sl), *n));
    }
}

#[test]
fn text_body_has_every_family_with_its_type_and_the_scripted_values() -> TestResult {
    let f = fixture(true)?;
    let text = f.metrics.encode_text()?;
    let p = parse(&text);

    let types = [
        ("pingscope_sent_total", "counter"),
        ("pingscope_rtt_seconds", "histogram"),
        ("pingscope_lost_total", "counter"),
        ("pingscope_late_replies_total", "counter"),
        ("pingscope_duplicates_total", "counter"),
        ("pingscope_icmp_errors_total", "counter"),
        ("pingscope_send_errors_total", "counter"),
        ("pingscope_jitter_seconds", "histogram"),
        ("pingscope_jitter_rfc3550_seconds", "gauge"),
        ("pingscope_reply_ttl", "gauge"),
        ("pingscope_window_loss_ratio", "gauge"),
        ("pingscope_window_rtt_seconds", "gauge"),
        ("pingscope_target_info", "gauge"),
        ("pingscope_resolve_errors_total", "counter"),
        ("pingscope_scheduler_lag_seconds", "histogram"),
        ("pingscope_config_last_reload_successful", "gauge"),
        (
            "pingscope_config_last_reload_success_timestamp_seconds",
            "gauge",
        ),
        ("pingscope_build_info", "gauge"),
        ("pingscope_probes_in_flight", "gauge"),
        ("pingscope_sessions_active", "gauge"),
        ("pingscope_live_clients", "gauge"),
        ("pingscope_engine_events_dropped_total", "counter"),
        ("pingscope_engine_unmatched_packets_total", "counter"),
        ("pingscope_session_samples_dropped_total", "counter"),
        ("pingscope_session_samples_lost_total", "counter"),
        ("pingscope_store_write_errors_total", "counter"),
        ("pingscope_store_file_lost_total", "counter"),
        ("pingscope_outage_active", "gauge"),
        ("pingscope_consecutive_lost", "gauge"),
        ("pingscope_outages_total", "counter"),
        ("pingscope_outage_seconds_total", "counter"),
        ("pingscope_target_threshold", "gauge"),
        ("pingscope_captures_total", "counter"),
        ("pingscope_captures_skipped_total", "counter"),
        ("pingscope_path_hop_sent_total", "counter"),
        ("pingscope_path_hop_lost_total", "counter"),
        ("pingscope_path_changes_total", "counter"),
        ("pingscope_path_hop_rtt_seconds", "histogram"),
        ("pingscope_path_hop_info", "gauge"),
        ("pingscope_path_length", "gauge"),
        ("pingscope_path_info", "gauge"),
    ];
    for (name, ty) in types {
        assert_eq!(
            p.types.get(name).map(String::as_str),
            Some(ty),
            "TYPE of {name}"
        );
        assert!(p.helps.iter().any(|h| h == name), "HELP of {name}");
    }
    assert_eq!(
        p.types.len(),
        types.len(),
        "unexpected families: {:?}",
        p.types
    );

    check_target(&p, GW, &expected(GW_SCRIPT));
    check_target(&p, V6_L, &expected(V6_SCRIPT));

    // Base series of a target that saw nothing exist at zero; its lazy ones do not exist.
    check_target(&p, IDLE, &Expected::default());
    assert!(!text.contains("pingscope_reply_ttl{target=\"idle\""));
    assert!(!text.contains("pingscope_jitter_rfc3550_seconds{target=\"idle\""));

    // Window gauges: numbers when the window has replies, NaN when it has none.
    assert!(close(value(&p, "pingscope_window_loss_ratio", GW), 0.25));
    assert!(close(
        value(
            &p,
            "pingscope_window_rtt_seconds",
            &with(GW, ("stat", "max"))
        ),
        0.03
    ));
    assert!(
        value(
            &p,
            "pingscope_window_rtt_seconds",
            &with(V6_L, ("stat", "mean"))
        )
        .is_nan()
    );

    for (target, host, ip, family) in [
        ("gw", "gw.test", "127.0.0.1", "auto"),
        ("v6", "localhost", "::1", "ip6"),
    ] {
        let info = [
            ("target", target),
            ("host", host),
            ("ip", ip),
            ("family", family),
            ("kind", "icmp"),
        ];
        assert_eq!(value(&p, "pingscope_target_info", &info), 1.0, "{target}");
    }

    assert_eq!(
        value(&p, "pingscope_resolve_errors_total", &[("target", "gw")]),
        1.0
    );
    assert_eq!(
        value(&p, "pingscope_resolve_errors_total", &[("target", "v6")]),
        0.0
    );
    assert_eq!(value(&p, "pingscope_scheduler_lag_seconds_count", &[]), 1.0);
    assert_eq!(
        value(&p, "pingscope_config_last_reload_successful", &[]),
        1.0
    );
    assert_eq!(
        value(
            &p,
            "pingscope_config_last_reload_success_timestamp_seconds",
            &[]
        ),
        1_700_000_000.0
    );
    assert_eq!(value(&p, "pingscope_probes_in_flight", &[]), 7.0);
    assert_eq!(value(&p, "pingscope_sessions_active", &[]), 0.0);
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        text.contains(&format!("pingscope_build_info{{version=\"{version}\",")),
        "build_info"
    );
    Ok(())
}

#[test]
fn promtool_check_metrics_reports_nothing() -> TestResult {
    for native in [true, false] {
        let f = fixture(native)?;
        let text = f.metrics.encode_text()?;
        let mut child = Command::new("/usr/bin/promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .ok_or("promtool stdin")?
            .write_all(text.as_bytes())?;
        let out = child.wait_with_output()?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool failed: {said}");
        assert_eq!(said.trim(), "", "promtool complained");
    }
    Ok(())
}

#[test]
fn forget_removes_every_series_of_one_target_and_keeps_the_others() -> TestResult {
    let f = fixture(true)?;
    let before = f.metrics.encode_text()?;
    assert!(before.contains("target=\"gw\""));
    let others = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.contains("target=\"gw\""))
            .map(str::to_owned)
            .collect()
    };

    assert!(f.metrics.forget(&gw_labels()));
    assert!(
        !f.metrics.forget(&gw_labels()),
        "second forget finds nothing"
    );
    // A handle still held by a winding-down task must not bring series back, lazy ones included.
    play(
        &f.gw,
        &[
            Step::Reply(1_000, 9),
            Step::SendError("permission"),
            Step::Icmp(IcmpErrorKind::Other),
        ],
    );
    f.gw.set_window(0.0, None);

    let after = f.metrics.encode_text()?;
    let gw_lines: Vec<&str> = after
        .lines()
        .filter(|l| l.contains("target=\"gw\"") && !l.starts_with("pingscope_resolve_errors_total"))
        .collect();
    assert_eq!(gw_lines, Vec::<&str>::new(), "gw series left");
    assert_eq!(others(&before), others(&after), "other targets changed");
    // The protobuf registry (native-only histograms) forgets them too.
    let gw_in_protobuf = |metrics: &Metrics| -> Result<Vec<String>, Box<dyn std::error::Error>> {
        let families = decode(&metrics.encode_protobuf()?)?;
        Ok(families
            .iter()
            .filter(|f| f.name != "pingscope_resolve_errors_total")
            .filter(|f| f.metric.iter().any(|m| label(m, "target") == Some("gw")))
            .map(|f| f.name.clone())
            .collect())
    };
    assert_eq!(
        gw_in_protobuf(&f.metrics)?,
        Vec::<String>::new(),
        "gw left in protobuf"
    );
    let families = decode(&f.metrics.encode_protobuf()?)?;
    let v6 = histogram_of(of_target(family(&families, "pingscope_rtt_seconds"), "v6"));
    check_native(v6, &rtts(V6_SCRIPT), "v6 rtt after gw's forget");
    // The send-error family only had gw's series, so it is gone with its HELP and TYPE.
    assert!(!after.contains("pingscope_send_errors_total"));

    // Resolve errors are per target name and forgotten separately.
    f.metrics.forget_resolve("gw");
    assert!(!f.metrics.encode_text()?.contains("target=\"gw\""));

    // The others still record.
    play(&f.v6, &[Step::Timeout]);
    play(&f.idle, &[Step::Timeout]);
    let p = parse(&f.metrics.encode_text()?);
    let mut v6 = expected(V6_SCRIPT);
    v6.sent += 1.0;
    v6.lost += 1.0;
    check_target(&p, V6_L, &v6);
    assert_eq!(value(&p, "pingscope_lost_total", IDLE), 1.0);

    // Coming back starts from zero, in both formats.
    let gw = f.metrics.target(&gw_labels(), "gw.test", Family::Auto);
    let p = parse(&f.metrics.encode_text()?);
    check_target(&p, GW, &Expected::default());
    let families = decode(&f.metrics.encode_protobuf()?)?;
    for name in ["pingscope_rtt_seconds", "pingscope_jitter_seconds"] {
        let h = histogram_of(of_target(family(&families, name), "gw"));
        check_native(h, &[], name);
    }
    play(&gw, &[Step::Reply(2_000, 60)]);
    let families = decode(&f.metrics.encode_protobuf()?)?;
    let h = histogram_of(of_target(family(&families, "pingscope_rtt_seconds"), "gw"));
    check_native(h, &[0.002], "gw rtt after coming back");
    play(&gw, &[Step::Timeout]);
    assert_eq!(
        value(
            &parse(&f.metrics.encode_text()?),
            "pingscope_lost_total",
            GW
        ),
        1.0
    );
    Ok(())
}

#[test]
fn asking_again_keeps_counts_and_moves_target_info() -> TestResult {
    let f = fixture(false)?;
    let again = f.metrics.target(&gw_labels(), "gw2.test", Family::All);
    play(&again, &[Step::Timeout]);
    let p = parse(&f.metrics.encode_text()?);
    let mut e = expected(GW_SCRIPT);
    e.sent += 1.0;
    e.lost += 1.0;
    check_target(&p, GW, &e);
    let old = [
        ("target", "gw"),
        ("host", "gw.test"),
        ("ip", "127.0.0.1"),
        ("family", "auto"),
        ("kind", "icmp"),
    ];
    assert!(
        !p.values
            .contains_key(&series("pingscope_target_info", &old))
    );
    let new = [
        ("target", "gw"),
        ("host", "gw2.test"),
        ("ip", "127.0.0.1"),
        ("family", "all"),
        ("kind", "icmp"),
    ];
    assert_eq!(value(&p, "pingscope_target_info", &new), 1.0);
    let mut known = f.metrics.targets();
    known.sort_by(|a, b| a.target().cmp(b.target()));
    let names: Vec<&str> = known.iter().map(TargetLabels::target).collect();
    assert_eq!(names, ["gw", "idle", "v6"]);
    Ok(())
}

#[test]
fn tcp_targets_show_kind_and_port_and_count_refusals() -> TestResult {
    let f = fixture(false)?;
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));
    let tcp = pingscope::metrics::ProbeLabels {
        kind: "tcp",
        port: Some(443),
    };
    let t = f.metrics.target_probing(
        &labels("web", ip, &[]),
        &"web.test".into(),
        Family::Ip4,
        tcp,
    );
    let l = [("target", "web"), ("ip", "127.0.0.9")];
    let p = parse(&f.metrics.encode_text()?);
    // Created at zero for TCP targets; ICMP targets have none.
    assert_eq!(value(&p, "pingscope_tcp_refused_total", &l), 0.0);
    assert!(
        !p.values
            .contains_key(&series("pingscope_tcp_refused_total", GW))
    );
    let refused = ReplyInfo {
        refused: true,
        ..reply(300, 64)
    };
    t.on_event(&event(ip, 1, EventKind::Reply(refused)));
    t.on_event(&event(ip, 2, EventKind::Reply(reply(300, 64))));
    let p = parse(&f.metrics.encode_text()?);
    assert_eq!(value(&p, "pingscope_tcp_refused_total", &l), 1.0);
    // A refusal is a reply: in the RTT histogram like any other.
    assert_eq!(value(&p, "pingscope_rtt_seconds_count", &l), 2.0);
    let info = [
        ("target", "web"),
        ("host", "web.test"),
        ("ip", "127.0.0.9"),
        ("family", "ip4"),
        ("kind", "tcp"),
        ("port", "443"),
    ];
    assert_eq!(value(&p, "pingscope_target_info", &info), 1.0);
    Ok(())
}

#[test]
fn text_body_is_the_same_whatever_protobuf_carries() -> TestResult {
    let split = fixture(true)?.metrics.encode_text()?;
    let both = fixture_both()?.metrics.encode_text()?;
    let classic = fixture(false)?.metrics.encode_text()?;
    // Series order inside a family follows a hash map, so compare the sorted lines.
    let sorted = |text: &str| -> Vec<String> {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    assert_eq!(sorted(&split), sorted(&both));
    assert_eq!(sorted(&split), sorted(&classic));
    // Each of the three targets has every classic bucket, +Inf included.
    let buckets = split
        .lines()
        .filter(|l| l.starts_with("pingscope_rtt_seconds_bucket{"))
        .count();
    assert_eq!(buckets, 3 * (HistogramConfig::default().buckets.len() + 1));
    Ok(())
}

#[test]
fn content_types_follow_the_negotiated_format() {
    let prometheus_native = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.1";
    let prometheus_classic = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    assert_eq!(negotiate(prometheus_native), Format::Protobuf);
    assert_eq!(
        negotiate(prometheus_native).content_type(),
        PROTOBUF_CONTENT_TYPE
    );
    assert_eq!(negotiate(prometheus_classic), Format::Text);
    assert_eq!(negotiate("").content_type(), TEXT_CONTENT_TYPE);
    assert_eq!(
        TEXT_CONTENT_TYPE,
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(
        PROTOBUF_CONTENT_TYPE,
        "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
    );
}

#[test]
fn bad_buckets_are_rejected() {
    for buckets in [
        vec![],
        vec![0.1, 0.1],
        vec![0.2, 0.1],
        vec![f64::NAN],
        vec![-1.0, 1.0],
    ] {
        let options = histogram(HistogramConfig {
            buckets: buckets.clone(),
            ..HistogramConfig::default()
        });
        assert!(Metrics::new(options).is_err(), "{buckets:?} accepted");
    }
}
