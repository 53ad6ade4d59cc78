//! The dashboard and rules against a real Prometheus: every query and rule evaluates, and
//! with the fake exporter every panel returns data that matches its workload, once with
//! classic and once with native histograms.

use std::collections::BTreeMap;
use std::time::Duration;

use super::prom::exporter::{FakeExporter, Profile};
use super::prom::{
    self, Prometheus, dashboard_queries, sample_value, shipped_dashboard, shipped_queries,
    substitute,
};
use super::{prometheus_available, rule_files, self_scrape_config, yaml};

/// Every panel query parses and evaluates in a real Prometheus, and the shipped rules
/// load and evaluate there without error.
#[test]
fn dashboard_queries_and_rules_evaluate_in_prometheus() {
    if !prometheus_available() {
        return;
    }
    let prom = Prometheus::start(&self_scrape_config(&rule_files()), &[]);

    let vars = [
        ("job", ".+"),
        ("instance", ".+"),
        ("kind", ".*"),
        ("target", ".+"),
    ];
    let queries = shipped_queries(&vars);
    let mut failures = Vec::new();
    for q in &queries {
        assert!(!q.expr.contains('$'), "unsubstituted: {}", q.expr);
        if let Err(e) = prom.try_query(&q.expr) {
            failures.push(format!(
                "panel {} {:?} {}: {e}",
                q.panel_id, q.title, q.ref_id
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Rules: every group loaded, every rule evaluated without error (bounded wait).
    let expected: usize = rule_files()
        .iter()
        .map(|f| yaml(f)["groups"].as_array().map_or(0, Vec::len))
        .sum();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let groups = prom.rule_groups();
        let health: BTreeMap<String, String> = groups
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .map(|r| {
                (
                    r["name"].as_str().unwrap_or_default().to_string(),
                    format!("{} {}", r["health"], r["lastError"]),
                )
            })
            .collect();
        let errors: Vec<_> = health
            .iter()
            .filter(|(_, h)| h.starts_with("\"err"))
            .collect();
        assert!(errors.is_empty(), "rules with errors: {errors:?}");
        let all_ok = health.values().all(|h| h.starts_with("\"ok"));
        if groups.len() == expected && all_ok {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rules not all evaluated: {} of {expected} groups, {health:?}",
            groups.len()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(!prom.wait_for("up", Duration::from_secs(20)).is_empty());
}

/// The workload of the fake exporter: `gw` loses every 5th probe (20%) and answers in
/// 11-19 ms; `lo6` loses nothing and answers in about 2.3 ms.
fn profiles() -> Vec<Profile> {
    vec![
        Profile {
            target: "gw",
            ip: "127.0.0.1",
            loss_every: 5,
            rtts: &[0.011, 0.013, 0.015, 0.017, 0.019],
            ttl: 64,
            source: None,
        },
        Profile {
            target: "lo6",
            ip: "::1",
            loss_every: 0,
            rtts: &[0.0021, 0.0023, 0.0025],
            ttl: 64,
            // A mesh peer's monitor, for the mesh matrices.
            source: Some("fake-a"),
        },
    ]
}

fn single_value(prom: &Prometheus, expr: &str) -> f64 {
    let result = prom.wait_for(expr, Duration::from_secs(20));
    assert_eq!(result.len(), 1, "{expr}: {result:?}");
    match sample_value(&result[0]) {
        Some(v) => v,
        None => panic!("{expr}: no float value in {result:?}"),
    }
}

/// Every dashboard query returns data from a real Prometheus scraping the fake exporter,
/// and the loss and RTT figures match its workload; the recording rules agree.
/// `native`: Prometheus ingests native histograms (and then stores no classic buckets).
fn prove_dashboard_and_rules(native: bool) {
    if !prometheus_available() {
        return;
    }
    let exporter = FakeExporter::start(profiles());
    let mut config = self_scrape_config(&rule_files());
    config.push_str(&format!(
        "  - job_name: pingscope\n    static_configs:\n      - targets: [\"{}\"]\n",
        exporter.address()
    ));
    let flags: &[&str] = if native {
        &[prom::NATIVE_HISTOGRAMS]
    } else {
        &[]
    };
    let prom = Prometheus::start(&config, flags);
    prom.wait_for(
        "count_over_time(up{job=\"pingscope\"}[1m]) >= 8",
        Duration::from_secs(30),
    );

    // The mode really is the one under test: only one histogram form is stored.
    let classic = prom.query_result("pingscope_rtt_seconds_bucket");
    let native_series = prom.query_result("pingscope_rtt_seconds");
    if native {
        assert!(classic.is_empty(), "classic buckets stored: {classic:?}");
        assert!(
            native_series.iter().all(|s| s["histogram"].is_array()) && !native_series.is_empty(),
            "{native_series:?}"
        );
    } else {
        assert!(!classic.is_empty(), "no classic buckets");
        assert!(native_series.is_empty(), "{native_series:?}");
    }

    // The variables' `label_values(selector, label)` queries find the targets.
    let all = [("job", ".+"), ("instance", ".+"), ("kind", ".*")];
    let mut checked = 0;
    for var in shipped_dashboard()["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let Some(query) = var["query"].as_str() else {
            continue;
        };
        let Some((selector, label)) = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.rsplit_once(", "))
        else {
            continue;
        };
        let values: Vec<String> = prom
            .query_result(&format!(
                "count by ({label}) ({})",
                substitute(selector, &all)
            ))
            .iter()
            .filter_map(|s| s["metric"][label].as_str().map(str::to_string))
            .collect();
        assert!(
            !values.is_empty(),
            "variable {}: {query} finds nothing",
            var["name"]
        );
        if label == "target" {
            assert_eq!(values.len(), 2, "{values:?}");
        }
        checked += 1;
    }
    assert_eq!(checked, 4, "job, instance, kind and target variables");

    let vars = [
        ("job", "pingscope"),
        ("instance", ".+"),
        ("kind", ".*"),
        ("target", "gw"),
        ("__rate_interval", "5s"),
    ];
    let queries = dashboard_queries(&shipped_dashboard(), &vars);
    let empty = prom.queries_without_data(&queries);
    assert!(
        empty.is_empty(),
        "queries without data:\n{}",
        empty.join("\n")
    );

    // The overview table's loss and median RTT queries, and the latency band's median.
    let find = |title: &str, ref_id: &str| match queries
        .iter()
        .find(|q| q.title == title && q.ref_id == ref_id)
    {
        Some(q) => q.expr.clone(),
        None => panic!("no query {title:?} {ref_id}"),
    };
    let loss = single_value(&prom, &find("Targets overview", "A"));
    assert!((0.12..0.28).contains(&loss), "gw loss {loss}, expected 0.2");
    let median = single_value(&prom, &find("Targets overview", "B"));
    assert!((0.011..0.019).contains(&median), "gw median RTT {median}");
    let band_median = single_value(&prom, &find("Latency: median, p5–p95, min–max", "A"));
    assert!(
        (0.011..0.019).contains(&band_median),
        "band median {band_median}"
    );
    let lo6 = dashboard_queries(
        &shipped_dashboard(),
        &[
            ("job", "pingscope"),
            ("instance", ".+"),
            ("kind", ".*"),
            ("target", "lo6"),
        ],
    );
    let lo6_loss = match lo6
        .iter()
        .find(|q| q.title == "Targets overview" && q.ref_id == "A")
    {
        Some(q) => single_value(&prom, &q.expr),
        None => panic!("no overview loss query"),
    };
    assert_eq!(lo6_loss, 0.0);

    // Recording rules, read the same way.
    let rule_loss = single_value(&prom, "target:pingscope_loss_ratio:1m{target=\"gw\"}");
    assert!((0.12..0.28).contains(&rule_loss), "rule loss {rule_loss}");
    let p50 = single_value(&prom, "target:pingscope_rtt_seconds:p50_1m{target=\"gw\"}");
    assert!((0.011..0.019).contains(&p50), "rule p50 {p50}");
    let p99 = single_value(&prom, "target:pingscope_rtt_seconds:p99_5m{target=\"lo6\"}");
    // Native buckets (factor 1.1) resolve 2.1-2.5 ms; the classic bucket is (1 ms, 5 ms].
    let p99_range = if native { 0.002..0.0028 } else { 0.001..0.005 };
    assert!(
        p99_range.contains(&p99),
        "lo6 p99 {p99}, expected in {p99_range:?}"
    );
    let lag = single_value(&prom, "instance:pingscope_scheduler_lag_seconds:p99_5m");
    assert!(lag < 0.01, "scheduler lag p99 {lag}");
}

#[test]
fn dashboard_and_rules_work_with_classic_histograms() {
    prove_dashboard_and_rules(false);
}

#[test]
fn dashboard_and_rules_work_with_native_histograms() {
    prove_dashboard_and_rules(true);
}
