//! `pingscope serve` end to end through the test network: a daemon monitoring addresses with
//! known profiles (delay, jitter, loss, duplicates, TTL, unreachable, blackhole, late) is
//! scraped and its figures are checked against the profiles and the responder's log; a real
//! Prometheus scrapes it (classic and native histograms); readiness, label sets at zero,
//! and shutdown under a scrape.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

mod prom;
mod support;

use std::io::Write;
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::daemon::Daemon;
use support::daemon::SESSIONS;
use support::expo::Scrape;
use support::{LogEntry, TestNet, binomial_interval, wait_until};

/// Log figures for one destination address.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    requests: u64,
    replied: u64,
    dropped: u64,
    unreachable: u64,
    blackholed: u64,
    extra_copies: u64,
}

fn counts(log: &[LogEntry], dst: &str) -> Counts {
    let dst: IpAddr = dst.parse().unwrap();
    let mut c = Counts::default();
    // TTL 64 (the kernel's default, which the monitors keep): an outage's path capture sends
    // its own probes to the address with TTLs of at most 30, and they are not the monitor's.
    for e in log.iter().filter(|e| e.dst == dst && e.ttl == 64) {
        c.requests += 1;
        match e.action.as_str() {
            "replied" => {
                c.replied += 1;
                c.extra_copies += u64::from(e.copies.saturating_sub(1));
            }
            "dropped" => c.dropped += 1,
            "unreachable" => c.unreachable += 1,
            "blackholed" => c.blackholed += 1,
            _ => {}
        }
    }
    c
}

/// `lo <= v <= hi`, with a message naming what was compared.
fn within(what: &str, v: f64, lo: u64, hi: u64) {
    assert!(
        (lo as f64) <= v && v <= hi as f64,
        "{what}: {v} outside the log's bounds [{lo}, {hi}]"
    );
}

fn profiles() -> serde_json::Value {
    json!({
        "seed": 7,
        "default": {"delay": "1ms"},
        "hosts": {
            "198.18.0.20": {"delay": "20ms"},
            "198.18.0.21": {"delay": "20ms", "jitter": "5ms"},
            "198.18.0.30": {"delay": "1ms", "loss": 0.2},
            "198.18.0.40": {"delay": "1ms", "duplicate": 2},
            "198.18.0.50": {"delay": "1ms", "ttl": 17},
            "198.18.0.60": {"unreachable": 1},
            "198.18.0.70": {"blackhole": true},
            "198.18.0.80": {"delay": "300ms"},
            "2001:db8::50": {"delay": "5ms", "ttl": 33}
        }
    })
}

const FIGURES_CONFIG: &str = r#"
defaults:
  interval: 50ms
  timeout: 500ms
  metrics: {window_gauges: true}
targets:
  - {name: delay, host: 198.18.0.20}
  - {name: jitter, host: 198.18.0.21}
  - {name: loss, host: 198.18.0.30}
  - {name: dup, host: 198.18.0.40}
  - {name: ttl, host: 198.18.0.50}
  - {name: unreach, host: 198.18.0.60}
  - {name: blackhole, host: 198.18.0.70}
  - {name: late, host: 198.18.0.80, timeout: 100ms}
  - {name: v6, host: "2001:db8::50"}
"#;

/// How long the profiled targets are probed.
const RUN: Duration = Duration::from_secs(12);

fn mean(s: &Scrape, metric: &str, target: &str) -> f64 {
    let sum = s.value(&format!("{metric}_sum"), &[("target", target)]);
    let count = s.value(&format!("{metric}_count"), &[("target", target)]);
    assert!(count > 0.0, "{metric} of {target} has no observations");
    sum / count
}

/// Mean actual hold time and mean |Δ hold| of consecutive answers to `dst`, from the log (s).
fn log_delay_and_ipdv(log: &[LogEntry], dst: &str) -> (f64, f64) {
    let dst: IpAddr = dst.parse().unwrap();
    let d: Vec<f64> = log
        .iter()
        .filter(|e| e.dst == dst && e.action == "replied")
        .filter_map(|e| e.actual_delay_ns)
        .map(|ns| ns as f64 / 1e9)
        .collect();
    let m = d.iter().sum::<f64>() / d.len() as f64;
    let ipdv = d.windows(2).map(|w| (w[1] - w[0]).abs()).sum::<f64>() / (d.len() - 1) as f64;
    (m, ipdv)
}

#[test]
fn figures_agree_with_profiles() {
    let Some(net) = TestNet::start_and_enter(&profiles()) else {
        return;
    };
    let d = Daemon::serve(net.dir(), &format!("{FIGURES_CONFIG}{SESSIONS}"));

    // Content-Type of both encodings.
    let (status, ct, _) = d.get("/metrics");
    assert_eq!(status, 200);
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    let resp = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(d.url("/metrics"))
        .header(
            "Accept",
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3",
        )
        .send()
        .unwrap();
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        ct.starts_with("application/vnd.google.protobuf")
            && ct.contains("proto=io.prometheus.client.MetricFamily")
            && ct.contains("encoding=delimited"),
        "protobuf Content-Type: {ct}"
    );
    assert!(!resp.bytes().unwrap().is_empty());

    let t_a = Instant::now();
    let first = d.scrape();
    let t_b = Instant::now();
    std::thread::sleep(RUN);
    // Log before, settle (longest timeout + slack), scrape, let every answer held at the
    // scrape leave, log after: each daemon figure must lie between the two log figures.
    let l1 = net.log();
    std::thread::sleep(Duration::from_millis(900));
    let t_c = Instant::now();
    let body = d.metrics_text();
    let t_d = Instant::now();
    std::thread::sleep(Duration::from_millis(600));
    let l2 = net.log();
    let s = Scrape::parse(&body);
    let err = net.timing_error();
    eprintln!("responder timing error: {err:?}");
    let slack = err.max.as_secs_f64() + 0.001;

    let targets = [
        ("delay", "198.18.0.20"),
        ("jitter", "198.18.0.21"),
        ("loss", "198.18.0.30"),
        ("dup", "198.18.0.40"),
        ("ttl", "198.18.0.50"),
        ("unreach", "198.18.0.60"),
        ("blackhole", "198.18.0.70"),
        ("late", "198.18.0.80"),
        ("v6", "2001:db8::50"),
    ];
    for (t, ip) in targets {
        let (c1, c2) = (counts(&l1, ip), counts(&l2, ip));
        let sel = [("target", t), ("ip", ip)];
        within(
            &format!("{t} sent"),
            s.value("pingscope_sent_total", &sel),
            c1.requests,
            c2.requests,
        );
        assert!(
            c1.requests > 150,
            "{t}: only {} requests in {RUN:?}",
            c1.requests
        );
        assert_eq!(
            s.value(
                "pingscope_target_info",
                &[("target", t), ("ip", ip), ("host", ip)]
            ),
            1.0
        );
        let lost = s.value("pingscope_lost_total", &sel);
        let count = s.value("pingscope_rtt_seconds_count", &sel);
        let late = s.value("pingscope_late_replies_total", &sel);
        let dups = s.value("pingscope_duplicates_total", &sel);
        match t {
            "loss" => {
                within("loss lost", lost, c1.dropped, c2.dropped);
                let n = (lost + count) as u32;
                let (lo, hi) = binomial_interval(n, 0.2);
                assert!(
                    (f64::from(lo)..=f64::from(hi)).contains(&lost),
                    "loss: {lost} lost of {n}, outside the 99.9 % interval [{lo}, {hi}]"
                );
            }
            "dup" => {
                within("dup duplicates", dups, c1.extra_copies, c2.extra_copies);
                assert_eq!(lost, 0.0);
            }
            "unreach" => {
                let errs = s.value(
                    "pingscope_icmp_errors_total",
                    &[("target", t), ("type", "unreachable")],
                );
                within("unreachable errors", errs, c1.unreachable, c2.unreachable);
                within("unreachable lost", lost, c1.unreachable, c2.unreachable);
                assert_eq!(count, 0.0);
            }
            "blackhole" => {
                within("blackhole lost", lost, c1.blackholed, c2.blackholed);
                assert_eq!((count, late, dups), (0.0, 0.0, 0.0));
                assert!(
                    s.find("pingscope_icmp_errors_total", &sel)
                        .iter()
                        .all(|x| x.value == 0.0),
                    "blackhole: ICMP errors counted"
                );
            }
            "late" => {
                // Every answer comes 300 ms after a 100 ms timeout: lost, then late, never a
                // reply, even when the deadline timer runs after the reply is read.
                assert_eq!(
                    count, 0.0,
                    "replies after the timeout counted as in-time replies"
                );
                let misfiled = 0;
                within(
                    "late replies",
                    late,
                    c1.replied.saturating_sub(misfiled),
                    c2.replied,
                );
                within(
                    "late lost",
                    lost,
                    c1.replied.saturating_sub(misfiled),
                    c2.requests,
                );
            }
            _ => {
                assert_eq!(lost, 0.0, "{t} lost");
                assert_eq!(dups, 0.0, "{t} duplicates");
            }
        }
        if !matches!(t, "dup") {
            assert_eq!(dups, 0.0, "{t} duplicates");
        }
        if !matches!(t, "late") {
            assert_eq!(late, 0.0, "{t} late replies");
        }
    }

    // Intervals held without drift: probes sent between the two scrapes match the time
    // between them (bounded by when each scrape was asked and answered). A task more than an
    // interval behind skips ticks by design; any such send shows in the lag histogram above
    // 50 ms, and only then is a larger shortfall allowed.
    let lag_over = |x: &Scrape| {
        x.value("pingscope_scheduler_lag_seconds_count", &[])
            - x.value("pingscope_scheduler_lag_seconds_bucket", &[("le", "0.05")])
    };
    let late_sends = lag_over(&s) - lag_over(&first);
    let (lo, hi) = (
        (t_c - t_b).as_secs_f64() / 0.05 - 2.0 - 10.0 * late_sends,
        (t_d - t_a).as_secs_f64() / 0.05 + 2.0,
    );
    for t in ["delay", "blackhole", "late"] {
        let sent = s.value("pingscope_sent_total", &[("target", t)])
            - first.value("pingscope_sent_total", &[("target", t)]);
        assert!(
            (lo..=hi).contains(&sent),
            "{t}: {sent} probes at 50 ms between scrapes, expected [{lo:.1}, {hi:.1}] ({late_sends} sends over 50 ms late)"
        );
    }
    let lag = s.value("pingscope_scheduler_lag_seconds_sum", &[])
        / s.value("pingscope_scheduler_lag_seconds_count", &[]);
    assert!(lag < 0.01, "mean scheduler lag {lag} s");

    // Reply TTL, exact.
    assert_eq!(s.value("pingscope_reply_ttl", &[("target", "ttl")]), 17.0);
    assert_eq!(s.value("pingscope_reply_ttl", &[("target", "v6")]), 33.0);
    assert_eq!(s.value("pingscope_reply_ttl", &[("target", "delay")]), 64.0);

    // Mean RTT from _sum/_count: at least the hold time, at most the hold plus the
    // responder's worst send error plus 1 ms; and close to the log's mean hold.
    for (t, ip, delay) in [
        ("delay", "198.18.0.20", 0.020),
        ("v6", "2001:db8::50", 0.005),
    ] {
        let m = mean(&s, "pingscope_rtt_seconds", t);
        assert!(
            m >= delay - 0.000_1 && m <= delay + slack,
            "{t}: mean RTT {m} s, profile {delay} s, slack {slack} s"
        );
        let (log_mean, _) = log_delay_and_ipdv(&l2, ip);
        assert!(
            (m - log_mean).abs() < 0.001,
            "{t}: mean RTT {m} vs log's mean hold {log_mean}"
        );
    }
    let m = mean(&s, "pingscope_rtt_seconds", "jitter");
    assert!(
        (m - 0.020).abs() <= 0.001 + slack,
        "jitter target mean RTT {m}"
    );

    // Jitter (IPDV): for uniform ±J, E|X - Y| = 2J/3.
    let ipdv = mean(&s, "pingscope_jitter_seconds", "jitter");
    let expected = 2.0 * 0.005 / 3.0;
    let (_, log_ipdv) = log_delay_and_ipdv(&l2, "198.18.0.21");
    eprintln!("IPDV: daemon {ipdv}, log {log_ipdv}, profile {expected}");
    assert!(
        (ipdv - expected).abs() <= 0.000_6 + err.p99.as_secs_f64(),
        "mean IPDV {ipdv} s, expected {expected} s for uniform ±5 ms"
    );
    assert!(
        (ipdv - log_ipdv).abs() < 0.000_5,
        "mean IPDV {ipdv} vs the log's {log_ipdv}"
    );
    let flat = mean(&s, "pingscope_jitter_seconds", "delay");
    assert!(
        flat < 0.000_5 + err.p99.as_secs_f64(),
        "fixed delay IPDV {flat}"
    );

    // Window gauges (last 60 probes) and the RFC 3550 jitter gauge.
    let window_loss = s.value("pingscope_window_loss_ratio", &[("target", "loss")]);
    let (lo, hi) = binomial_interval(60, 0.2);
    assert!(
        (f64::from(lo) / 60.0..=f64::from(hi) / 60.0).contains(&window_loss),
        "window loss {window_loss}"
    );
    assert_eq!(
        s.value("pingscope_window_loss_ratio", &[("target", "blackhole")]),
        1.0
    );
    assert_eq!(
        s.value("pingscope_window_loss_ratio", &[("target", "delay")]),
        0.0
    );
    let wmean = s.value(
        "pingscope_window_rtt_seconds",
        &[("target", "delay"), ("stat", "mean")],
    );
    assert!(
        wmean >= 0.0199 && wmean <= 0.020 + slack,
        "window mean RTT {wmean}"
    );
    let wmin = s.value(
        "pingscope_window_rtt_seconds",
        &[("target", "jitter"), ("stat", "min")],
    );
    let wmax = s.value(
        "pingscope_window_rtt_seconds",
        &[("target", "jitter"), ("stat", "max")],
    );
    assert!(
        wmin >= 0.015 - 0.000_1 && wmax <= 0.025 + slack && wmax - wmin > 0.005,
        "jitter target window min/max {wmin}/{wmax} for 20 ms ± 5 ms"
    );
    let j3550 = s.value("pingscope_jitter_rfc3550_seconds", &[("target", "jitter")]);
    assert!(
        (0.001..=0.007).contains(&j3550),
        "RFC 3550 jitter {j3550} for ±5 ms"
    );
    let j3550_flat = s.value("pingscope_jitter_rfc3550_seconds", &[("target", "delay")]);
    assert!(
        j3550_flat < 0.000_5 + err.p99.as_secs_f64(),
        "RFC 3550 jitter {j3550_flat} for a fixed delay"
    );

    // promtool finds nothing to say about the exposition.
    let (out, text) = support::run_with_input(
        Command::new("promtool").args(["check", "metrics"]),
        body.as_bytes(),
    );
    assert!(
        out.status.success() && text.is_empty(),
        "promtool check metrics: {text}"
    );
}

#[test]
fn ready_after_first_round_label_sets_at_zero_and_clean_shutdown() {
    let Some(net) = TestNet::start_and_enter(&json!({"hosts": {
        "198.18.0.20": {"delay": "20ms"},
        "198.18.0.70": {"blackhole": true}
    }})) else {
        return;
    };
    let started = Instant::now();
    let mut d = Daemon::serve(
        net.dir(),
        &format!(
            "defaults: {{interval: 1s, timeout: 3s}}\ntargets:\n  - {{name: fast, host: 198.18.0.20}}\n  - {{name: slow, host: 198.18.0.70}}\n{SESSIONS}"
        ),
    );
    // The blackholed target cannot settle its first probe before its 3 s timeout.
    let (status, _, _) = d.get("/-/ready");
    let s = d.scrape();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the daemon took too long to start"
    );
    assert_eq!(status, 503, "ready before the first round settled");
    for t in ["fast", "slow"] {
        for m in [
            "pingscope_sent_total",
            "pingscope_lost_total",
            "pingscope_late_replies_total",
            "pingscope_duplicates_total",
            "pingscope_rtt_seconds_count",
            "pingscope_jitter_seconds_count",
            "pingscope_target_info",
        ] {
            assert!(
                s.get(m, &[("target", t)]).is_some(),
                "{m} of {t} missing at start"
            );
        }
    }
    for m in [
        "pingscope_lost_total",
        "pingscope_rtt_seconds_count",
        "pingscope_late_replies_total",
    ] {
        assert_eq!(
            s.value(m, &[("target", "slow")]),
            0.0,
            "{m} of slow at start"
        );
    }
    assert_eq!(d.get("/-/healthy").0, 200);
    assert!(
        wait_until(Duration::from_secs(10), || d.get("/-/ready").0 == 200),
        "never ready"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "ready before slow's timeout"
    );
    assert!(
        d.scrape()
            .value("pingscope_lost_total", &[("target", "slow")])
            >= 1.0
    );

    // SIGTERM while scrapes are running: exit 0 within 5 s; every finished scrape is whole.
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let url = d.url("/metrics");
    let stop = Arc::new(AtomicBool::new(false));
    let whole = Arc::new(AtomicU32::new(0));
    let scraper = {
        let (stop, whole) = (stop.clone(), whole.clone());
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder()
                .no_proxy()
                .build()
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                match client.get(&url).send() {
                    Ok(r) if r.status() == 200 => {
                        if let Ok(body) = r.text() {
                            assert!(body.contains("pingscope_build_info"), "truncated scrape");
                            whole.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(r) => panic!("scrape during shutdown answered {}", r.status()),
                    Err(_) => break,
                }
            }
        })
    };
    assert!(wait_until(Duration::from_secs(5), || whole
        .load(Ordering::Relaxed)
        >= 3));
    // Two connections that never finish a request: one idle after a whole request
    // (keep-alive), one stopped halfway through its headers. Neither may hold the exit.
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", d.port())).unwrap();
    idle.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: pingscope\r\n\r\n")
        .unwrap();
    let mut half = std::net::TcpStream::connect(("127.0.0.1", d.port())).unwrap();
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost: pin")
        .unwrap();
    let t0 = Instant::now();
    d.signal(nix::sys::signal::Signal::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    scraper.join().expect("scraper thread");
    let whole = whole.load(Ordering::Relaxed);
    let status = status.unwrap_or_else(|| panic!("no exit within 5 s of SIGTERM:\n{}", d.log()));
    assert!(status.success(), "exit status {status}:\n{}", d.log());
    eprintln!("exit after {:?}, {whole} whole scrapes", t0.elapsed());
    drop((idle, half));
    assert!(whole > 0, "no scrape completed");
}

#[test]
fn prometheus_loss_expression_and_native_quantile() {
    if !support::require_root() || !prom::Prometheus::available() {
        return;
    }
    let net = TestNet::start(&json!({"seed": 3, "hosts": {
        "198.18.0.20": {"delay": "20ms"},
        "198.18.0.30": {"delay": "1ms", "loss": 0.2}
    }}));
    net.enter();
    let d = Daemon::serve(
        net.dir(),
        &format!(
            "defaults: {{interval: 50ms, timeout: 500ms}}\ntargets:\n  - {{name: delay, host: 198.18.0.20}}\n  - {{name: loss, host: 198.18.0.30}}\n{SESSIONS}"
        ),
    );
    let scrape_config = format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: pingscope\n    static_configs: [{{targets: ['127.0.0.1:{}']}}]\n",
        d.port()
    );
    // Two servers on the same daemon: one stores classic histograms, one native.
    let classic = prom::Prometheus::start(&scrape_config, &[]);
    let native = prom::Prometheus::start(&scrape_config, &[prom::NATIVE_HISTOGRAMS]);
    let started = Instant::now();
    classic.wait_for(
        "pingscope_rtt_seconds_count{target=\"loss\"}",
        Duration::from_secs(15),
    );
    native.wait_for(
        "pingscope_rtt_seconds{target=\"delay\"}",
        Duration::from_secs(15),
    );
    // Enough probes seen by both servers (a loaded machine starts Prometheus slowly): at least
    // 200 settled probes of the lossy target, polled, at most 40 s.
    let seen = |p: &prom::Prometheus, count: &str| {
        let expr = format!("increase(pingscope_lost_total{{target=\"loss\"}}[1h]) + {count}");
        p.query_result(&expr)
            .first()
            .and_then(prom::sample_value)
            .unwrap_or(0.0)
    };
    let enough = wait_until(Duration::from_secs(40), || {
        std::thread::sleep(Duration::from_millis(500));
        seen(
            &classic,
            "increase(pingscope_rtt_seconds_count{target=\"loss\"}[1h])",
        ) >= 200.0
            && seen(
                &native,
                "histogram_count(increase(pingscope_rtt_seconds{target=\"loss\"}[1h]))",
            ) >= 200.0
    });
    assert!(
        enough,
        "Prometheus saw too few probes in {:?}",
        started.elapsed()
    );

    let one = |p: &prom::Prometheus, expr: &str| -> f64 {
        let r = p.query_result(expr);
        assert_eq!(r.len(), 1, "{expr}: {r:?}");
        prom::sample_value(&r[0]).unwrap_or_else(|| panic!("{expr}: no value in {r:?}"))
    };
    let w = "[1h]";
    let sel = "{target=\"loss\"}";
    let lost = one(&classic, &format!("increase(pingscope_lost_total{sel}{w})"));
    let replies = one(
        &classic,
        &format!("increase(pingscope_rtt_seconds_count{sel}{w})"),
    );
    let ratio = one(
        &classic,
        &format!(
            "increase(pingscope_lost_total{sel}{w}) / (increase(pingscope_lost_total{sel}{w}) + increase(pingscope_rtt_seconds_count{sel}{w}))"
        ),
    );
    let n = (lost + replies).round() as u32;
    let (lo, hi) = binomial_interval(n, 0.2);
    eprintln!("Prometheus loss ratio {ratio} over {n} probes, interval [{lo}, {hi}]");
    assert!(n > 150, "only {n} probes seen by Prometheus");
    assert!(
        ratio >= f64::from(lo) / f64::from(n) - 0.01
            && ratio <= f64::from(hi) / f64::from(n) + 0.01,
        "loss ratio {ratio} outside the binomial interval [{lo}, {hi}] of {n}"
    );
    // Prometheus' figure agrees with the daemon's own counters.
    let s = d.scrape();
    let direct = s.value("pingscope_lost_total", &[("target", "loss")])
        / (s.value("pingscope_lost_total", &[("target", "loss")])
            + s.value("pingscope_rtt_seconds_count", &[("target", "loss")]));
    assert!(
        (ratio - direct).abs() < 0.05,
        "Prometheus {ratio} vs daemon {direct}"
    );

    // Native: the operations notes' loss form and the median from the native buckets.
    let native_ratio = one(
        &native,
        &format!(
            "increase(pingscope_lost_total{sel}{w}) / (increase(pingscope_lost_total{sel}{w}) + histogram_count(increase(pingscope_rtt_seconds{sel}{w})))"
        ),
    );
    assert!(
        (native_ratio - ratio).abs() < 0.05,
        "native loss {native_ratio} vs classic {ratio}"
    );
    assert!(
        native
            .query_result("pingscope_rtt_seconds_count")
            .is_empty(),
        "the native server stored classic series: was protobuf negotiated?"
    );
    let median = one(
        &native,
        "histogram_quantile(0.5, rate(pingscope_rtt_seconds{target=\"delay\"}[30s]))",
    );
    let slack = net.timing_error().max.as_secs_f64();
    // Native buckets at this schema are about 9 % wide around 20 ms.
    assert!(
        (0.018..=0.0225 + slack).contains(&median),
        "native median {median} s for a 20 ms profile"
    );
}
