//! A real Prometheus scrapes `/probe` through the shipped relabel config (issue 4): file_sd lists
//! two test-network addresses with different loss, the three standard relabel rules turn each
//! into `?target=` on the daemon, and the stored `probe_loss_ratio` is per target and agrees with
//! the profiles.
//!
//! Everything runs inside the test network's namespace: the test thread enters it, then starts
//! the daemon and Prometheus, which inherit it.
// Tests block their own thread (no runtime there), so std::thread::sleep is right here.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::print_stderr,
    clippy::disallowed_methods
)]

mod prom;
mod support;

use std::time::{Duration, Instant};

use prom::{Prometheus, sample_value};
use serde_json::{Value, json};
use support::TestNet;
use support::daemon::Daemon;

/// The two targets and their loss.
const TARGETS: [(&str, f64); 2] = [("198.18.0.30", 0.1), ("198.18.0.31", 0.5)];
/// Packets per probe (one probe per scrape).
const COUNT: u32 = 10;
/// How long Prometheus scrapes.
const RUN: Duration = Duration::from_secs(15);

/// The `/probe` job of config/prometheus.yml, pointed at this daemon and this file_sd file,
/// scraping every second. The relabel rules are taken as shipped, except the daemon's address.
fn probe_job(daemon: &str) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/prometheus.yml");
    let text = std::fs::read_to_string(path).expect("reading config/prometheus.yml");
    let shipped: Value = serde_saphyr::from_str(&text).expect("config/prometheus.yml is YAML");
    let mut job = shipped["scrape_configs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["metrics_path"] == "/probe"))
        .cloned()
        .expect("a scrape job with metrics_path /probe in config/prometheus.yml");
    let relabel = job["relabel_configs"]
        .as_array_mut()
        .expect("relabel_configs in the /probe job");
    assert_eq!(relabel.len(), 3, "the three standard rules: {relabel:?}");
    assert_eq!(relabel[0]["source_labels"], json!(["__address__"]));
    assert_eq!(relabel[0]["target_label"], "__param_target");
    assert_eq!(relabel[1]["source_labels"], json!(["__param_target"]));
    assert_eq!(relabel[1]["target_label"], "instance");
    assert_eq!(relabel[2]["target_label"], "__address__");
    relabel[2]["replacement"] = json!(daemon);
    job["scrape_interval"] = json!("1s");
    job["scrape_timeout"] = json!("1s");
    job["file_sd_configs"] = json!([{"files": ["targets.json"], "refresh_interval": "1s"}]);
    // X-Prometheus-Scrape-Timeout-Seconds 1 leaves 0.5 s: 10 packets 20 ms apart with 200 ms
    // timeouts settle within 0.4 s, so every scrape sends all ten.
    job["params"]["count"] = json!([COUNT.to_string()]);
    job["params"]["interval"] = json!(["20ms"]);
    job["params"]["timeout"] = json!(["200ms"]);
    job
}

fn by_instance(results: &[Value]) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = results
        .iter()
        .map(|r| {
            (
                r["metric"]["instance"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                sample_value(r).unwrap_or(f64::NAN),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn prometheus_stores_probe_loss_ratio_per_target() {
    if !support::require_root() {
        return;
    }
    if !support::require(
        Prometheus::available(),
        &format!(
            "no Prometheus binary ({})",
            prom::prometheus_bin().display()
        ),
    ) {
        return;
    }
    let hosts: serde_json::Map<String, Value> = TARGETS
        .iter()
        .map(|(ip, loss)| ((*ip).to_owned(), json!({"loss": loss, "delay": "2ms"})))
        .collect();
    let net = TestNet::start(&json!({"seed": 3, "hosts": hosts}));
    net.enter();
    let config = support::write_config(
        net.dir(),
        "pingscope.yml",
        r#"
dns:
  servers: ["127.0.0.1:1"]
sessions:
  database: "{{DIR}}/sessions.db"
  min_interval: 10ms
access:
  allow: [198.18.0.0/15]
"#,
    );
    let d = Daemon::start(&config, &[]);
    let daemon_addr = format!("127.0.0.1:{}", d.port());
    let config = json!({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [probe_job(&daemon_addr)],
    });
    let targets = json!([{"targets": TARGETS.iter().map(|t| t.0).collect::<Vec<_>>()}]);
    // JSON is YAML: Prometheus reads both files as they are.
    let p = Prometheus::start_with_files(
        &config.to_string(),
        &[("targets.json", &targets.to_string())],
        &[],
    );

    let expected_instances: Vec<String> = TARGETS.iter().map(|t| t.0.to_owned()).collect();
    let started = Instant::now();
    let samples = "count_over_time(probe_loss_ratio[1m])";
    let mut counts = Vec::new();
    // Bounded: RUN plus slack for a slow start.
    while started.elapsed() < RUN + Duration::from_secs(10) {
        counts = by_instance(&p.query_result(samples));
        let enough = counts.len() == 2 && counts.iter().all(|(_, n)| *n >= 12.0);
        if enough && started.elapsed() >= RUN {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let instances: Vec<String> = counts.iter().map(|c| c.0.clone()).collect();
    assert_eq!(
        instances,
        expected_instances,
        "series per target:\n{}",
        p.log()
    );
    assert!(
        counts.iter().all(|(_, n)| *n >= 12.0),
        "samples per target: {counts:?}"
    );

    // Every series is labelled with the target, scraped from the daemon.
    for r in p.query_result("probe_loss_ratio") {
        assert_eq!(r["metric"]["job"], "pingscope_probe", "{r}");
        assert_ne!(r["metric"]["instance"], json!(daemon_addr), "{r}");
    }
    // No failed scrape: every probe answered within the scrape timeout. Scrapes less successes
    // in one query: two queries could fall on either side of a new scrape.
    let up = "up{job=\"pingscope_probe\"}[1m]";
    let failed =
        by_instance(&p.query_result(&format!("count_over_time({up}) - sum_over_time({up})")));
    let slowest = by_instance(&p.query_result("max_over_time(scrape_duration_seconds[1m])"));
    eprintln!("failed scrapes {failed:?}, slowest {slowest:?}");
    assert_eq!(failed.len(), 2, "failed scrapes {failed:?}");
    assert!(failed.iter().all(|f| f.1 == 0.0), "failed scrapes");
    assert!(slowest.iter().all(|s| s.1 < 1.0), "{slowest:?}");
    // Every scrape sent all ten packets (the budget from the scrape timeout header allows it).
    for q in ["min_over_time", "max_over_time"] {
        let sent = by_instance(&p.query_result(&format!("{q}(probe_packets_sent[1m])")));
        assert!(
            sent.iter().all(|s| s.1 == f64::from(COUNT)),
            "{q}: {sent:?}"
        );
    }

    // The averaged loss per target agrees with its profile: over n = 10 x samples packets, the
    // lost count lies in the exact 99.9 % binomial interval.
    let avg = by_instance(&p.query_result("avg_over_time(probe_loss_ratio[1m])"));
    assert_eq!(avg.len(), 2, "{avg:?}");
    for (((instance, mean), (_, n)), (ip, loss)) in avg.iter().zip(&counts).zip(TARGETS) {
        assert_eq!(instance, ip);
        let packets = (f64::from(COUNT) * n).round() as u32;
        let lost = (mean * f64::from(packets)).round() as u32;
        let (lo, hi) = support::binomial_interval(packets, loss);
        eprintln!("{ip}: {n} samples, loss {mean:.3} ({lost}/{packets}), interval {lo}..={hi}");
        assert!(
            (lo..=hi).contains(&lost),
            "{ip}: lost {lost} of {packets}, outside {lo}..={hi} for p = {loss}"
        );
    }
    assert!(
        avg[0].1 < avg[1].1,
        "the lossier target shows more loss: {avg:?}"
    );

    // And the responder dropped what Prometheus saw dropped: stored received packets never
    // exceed what the responder answered for that address.
    let log = net.log();
    let received = by_instance(&p.query_result("sum_over_time(probe_packets_received[1m])"));
    for (instance, got) in received {
        let ip: std::net::IpAddr = instance.parse().expect("instance is the target address");
        let replied = log
            .iter()
            .filter(|e| e.dst == ip && e.action == "replied")
            .count();
        assert!(
            got <= replied as f64,
            "{instance}: stored {got}, responder replied {replied}"
        );
    }
}
