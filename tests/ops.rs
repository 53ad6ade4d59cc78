//! The operations files, checked with the real tools: the Prometheus config and rules
//! (promtool), the compose stack (`docker-compose config`), the Grafana dashboard's
//! structure and PromQL (against a real Prometheus), and the Prometheus test harness.
//!
//! A test whose tool is missing says so and passes, unless `CI` is set: then it fails.

mod prom;
mod support;

#[path = "ops/docs.rs"]
mod docs;
#[path = "ops/live.rs"]
mod live;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use prom::dashboard::{all_strings, assert_no_overlap, datasource_refs};
use prom::{
    Prometheus, dashboard_queries, sample_value, shipped_dashboard, substitute, variable_refs,
};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The tool's path, or `None` after saying it is missing (a failure when `CI` is set).
#[allow(clippy::print_stderr)] // the skip notice is for the person running the tests
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    support::require(found.is_some(), &format!("{name} is not installed"));
    found
}

#[allow(clippy::print_stderr)]
fn prometheus_available() -> bool {
    support::require(
        Prometheus::available(),
        &format!("{} is not installed", prom::prometheus_bin().display()),
    )
}

/// Run a command in the repository; panic with its output unless it succeeds.
fn run_ok(program: &Path, args: &[&str]) -> Output {
    let output = match Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!("run {} {args:?}: {e}", program.display()),
    };
    assert!(
        output.status.success(),
        "{} {args:?} failed ({}):\n{}\n{}",
        program.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn read(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) => panic!("read {}: {e}", path.display()),
    }
}

fn yaml(path: &Path) -> Value {
    match serde_saphyr::from_str(&read(path)) {
        Ok(v) => v,
        Err(e) => panic!("parse {}: {e}", path.display()),
    }
}

/// The `*.yml` files directly in `dir`, sorted.
fn yml_files(dir: &Path) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => panic!("list {}: {e}", dir.display()),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yml"))
        .collect();
    files.sort();
    files
}

fn rule_files() -> Vec<PathBuf> {
    yml_files(&repo().join("config/rules"))
}

fn rule_test_files() -> Vec<PathBuf> {
    yml_files(&repo().join("config/rules/tests"))
}

fn as_args(paths: &[PathBuf]) -> Vec<String> {
    paths.iter().map(|p| p.display().to_string()).collect()
}

#[test]
fn promtool_checks_the_prometheus_config() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    // Relative to the repository; rule_files and file_sd resolve against the config's dir.
    let out = run_ok(&promtool, &["check", "config", "config/prometheus.yml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let expected = format!("SUCCESS: {} rule files found", rule_files().len());
    assert!(
        stdout.contains(&expected),
        "expected {expected:?} in:\n{stdout}"
    );
}

#[test]
fn promtool_checks_the_rules() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let files = as_args(&rule_files());
    assert!(files.len() >= 3, "rule files: {files:?}");
    let mut args = vec!["check", "rules"];
    args.extend(files.iter().map(String::as_str));
    run_ok(&promtool, &args);
}

#[test]
fn promtool_rule_unit_tests_pass() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let files = rule_test_files();
    assert!(!files.is_empty(), "no rule tests in config/rules/tests");
    for file in as_args(&files) {
        run_ok(&promtool, &["test", "rules", &file]);
    }
}

/// Every alert has severity, summary and description, and a unit test that sees it fire
/// and one that sees it stay silent.
#[test]
fn every_alert_is_annotated_and_tested_firing_and_silent() {
    let mut alerts = BTreeSet::new();
    for file in rule_files() {
        let doc = yaml(&file);
        for group in doc["groups"].as_array().into_iter().flatten() {
            for rule in group["rules"].as_array().into_iter().flatten() {
                let Some(name) = rule["alert"].as_str() else {
                    continue;
                };
                for key in ["summary", "description"] {
                    let text = rule["annotations"][key].as_str().unwrap_or_default();
                    assert!(!text.trim().is_empty(), "{name}: no {key} annotation");
                }
                assert!(
                    rule["labels"]["severity"].is_string(),
                    "{name}: no severity label"
                );
                alerts.insert(name.to_string());
            }
        }
    }
    assert!(alerts.len() >= 7, "alerts found: {alerts:?}");

    let mut firing = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for file in rule_test_files() {
        let doc = yaml(&file);
        for test in doc["tests"].as_array().into_iter().flatten() {
            for case in test["alert_rule_test"].as_array().into_iter().flatten() {
                let name = case["alertname"].as_str().unwrap_or_default().to_string();
                assert!(
                    alerts.contains(&name),
                    "{}: test for unknown alert {name:?}",
                    file.display()
                );
                let expected = case["exp_alerts"].as_array().map_or(0, Vec::len);
                if expected == 0 {
                    silent.insert(name);
                } else {
                    firing.insert(name);
                }
            }
        }
    }
    let not_firing: Vec<_> = alerts.difference(&firing).collect();
    let not_silent: Vec<_> = alerts.difference(&silent).collect();
    assert!(not_firing.is_empty(), "never tested firing: {not_firing:?}");
    assert!(not_silent.is_empty(), "never tested silent: {not_silent:?}");
}

/// `docker-compose config` of the stack, with or without the development override.
fn compose_config(with_override: bool) -> Option<Value> {
    let compose = tool("docker-compose")?;
    let mut args = vec!["-f", "docker-compose.yml"];
    if with_override {
        args.extend(["-f", "docker-compose.override.yml"]);
    }
    let mut quiet = args.clone();
    quiet.extend(["config", "-q"]);
    run_ok(&compose, &quiet);
    args.push("config");
    let out = run_ok(&compose, &args);
    match serde_saphyr::from_str(&String::from_utf8_lossy(&out.stdout)) {
        Ok(v) => Some(v),
        Err(e) => panic!("parse docker-compose config output: {e}"),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn check_compose(config: &Value) {
    let services = &config["services"];
    for name in ["pingscope", "prometheus", "alertmanager", "grafana"] {
        assert!(services[name].is_object(), "service {name} missing");
    }

    let pingscope = &services["pingscope"];
    assert_eq!(
        pingscope["sysctls"]["net.ipv4.ping_group_range"].as_str(),
        Some("0 2147483647"),
        "unprivileged ICMP sysctl"
    );
    assert!(
        !strings(&pingscope["cap_add"])
            .iter()
            .any(|c| c.contains("NET_RAW")),
        "NET_RAW should not be needed"
    );
    assert!(pingscope["build"]["dockerfile"].is_string());
    // docker-compose 1.x prints volumes as `source:target:mode`.
    assert!(
        strings(&pingscope["volumes"])
            .iter()
            .any(|v| v.split(':').nth(1) == Some("/data")),
        "pingscope needs its /data volume: {}",
        pingscope["volumes"]
    );

    let prometheus_cmd = strings(&services["prometheus"]["command"]);
    for flag in [
        "--enable-feature=native-histograms",
        "--config.file=/etc/prometheus/prometheus.yml",
    ] {
        assert!(
            prometheus_cmd.iter().any(|a| a == flag),
            "{flag} in {prometheus_cmd:?}"
        );
    }
    assert!(
        prometheus_cmd
            .iter()
            .any(|a| a.starts_with("--storage.tsdb.retention.time=") && a.len() > 31),
        "retention from .env in {prometheus_cmd:?}"
    );

    // Alertmanager: its config mounted where its flag says, and Prometheus sends to it by the
    // service's name on its port.
    let am = &services["alertmanager"];
    assert!(
        strings(&am["command"])
            .iter()
            .any(|a| a == "--config.file=/etc/alertmanager/alertmanager.yml"),
        "alertmanager config flag: {}",
        am["command"]
    );
    assert!(
        strings(&am["volumes"])
            .iter()
            .any(|v| v.ends_with("config/alertmanager.yml:/etc/alertmanager/alertmanager.yml:ro")),
        "alertmanager config mounted: {}",
        am["volumes"]
    );
    let prom = yaml(&repo().join("config/prometheus.yml"));
    let am_targets = strings(&prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]);
    assert_eq!(
        am_targets,
        ["alertmanager:9093"],
        "Prometheus' Alertmanager"
    );

    // Grafana's home dashboard must be a file of the mounted dashboards dir.
    let grafana = &services["grafana"];
    let home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mounts = strings(&grafana["volumes"]);
    let host_file = mounts.iter().find_map(|m| {
        let mut parts = m.split(':');
        let (host, container) = (parts.next()?, parts.next()?);
        let rel = home.strip_prefix(container)?.strip_prefix('/')?;
        Some(Path::new(host).join(rel))
    });
    match host_file {
        Some(f) => assert!(f.is_file(), "home dashboard {} missing", f.display()),
        None => panic!("home dashboard {home:?} is not in a mounted dir: {mounts:?}"),
    }
    assert!(
        mounts
            .iter()
            .any(|m| m.contains(":/etc/grafana/provisioning")),
        "provisioning mounted: {mounts:?}"
    );
}

/// The shipped Alertmanager config is valid, and its placeholder receiver can reach nothing
/// (a `.invalid` name never resolves).
#[test]
fn amtool_checks_the_alertmanager_config() {
    let Some(amtool) = tool("amtool") else {
        return;
    };
    let out = run_ok(&amtool, &["check-config", "config/alertmanager.yml"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("SUCCESS"), "{said}");
    let config = yaml(&repo().join("config/alertmanager.yml"));
    for receiver in config["receivers"].as_array().into_iter().flatten() {
        for hook in receiver["webhook_configs"].as_array().into_iter().flatten() {
            let url = hook["url"].as_str().unwrap_or_default();
            let host = url.split('/').nth(2).unwrap_or_default();
            let name = host.split(':').next().unwrap_or_default();
            assert!(name.ends_with(".invalid"), "placeholder receiver {url}");
        }
    }
}

#[test]
fn compose_file_is_valid() {
    if let Some(config) = compose_config(false) {
        check_compose(&config);
    }
}

#[test]
fn compose_file_with_development_override_is_valid() {
    if let Some(config) = compose_config(true) {
        check_compose(&config);
        let cmd = strings(&config["services"]["pingscope"]["command"]);
        assert!(
            cmd.iter().any(|a| a.starts_with("--config.file=")),
            "{cmd:?}"
        );
    }
}

fn provisioned_uids() -> BTreeSet<String> {
    let mut uids = BTreeSet::new();
    for file in yml_files(&repo().join("grafana/provisioning/datasources")) {
        for ds in yaml(&file)["datasources"].as_array().into_iter().flatten() {
            if let Some(uid) = ds["uid"].as_str() {
                uids.insert(uid.to_string());
            }
        }
    }
    uids
}

#[test]
fn dashboard_structure_is_sound() {
    let dash = shipped_dashboard();
    assert!(dash["schemaVersion"].as_i64().unwrap_or(0) >= 39);
    assert!(dash["uid"].is_string(), "a fixed dashboard uid");

    // Variables: datasource, and multi-select job / instance / target with "All".
    let vars = dash["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let var_names: BTreeSet<String> = vars
        .iter()
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect();
    let var = |name: &str| vars.iter().find(|v| v["name"] == name).cloned();
    let uids = provisioned_uids();
    assert!(!uids.is_empty(), "no provisioned datasource uid");
    match var("datasource") {
        Some(ds) => {
            assert_eq!(ds["type"], "datasource");
            assert_eq!(ds["query"], "prometheus");
            let current = ds["current"]["value"].as_str().unwrap_or_default();
            assert!(uids.contains(current), "datasource default {current:?}");
        }
        None => panic!("no datasource variable"),
    }
    for name in ["job", "instance", "kind", "target"] {
        match var(name) {
            Some(v) => {
                assert_eq!(v["type"], "query", "{name}");
                assert_eq!(v["multi"], true, "{name} is multi-select");
                assert_eq!(v["includeAll"], true, "{name} has All");
            }
            None => panic!("no {name} variable"),
        }
    }

    // Unique ids over every panel, rows' nested panels included.
    let panels = prom::all_panels(&dash);
    let mut ids = BTreeSet::new();
    for p in &panels {
        let id = p["id"].as_i64();
        assert!(id.is_some(), "panel {:?} without id", p["title"]);
        assert!(ids.insert(id), "duplicate panel id {id:?}");
    }

    // No overlap on the top-level grid (rows included), nor inside each collapsed row.
    let top: Vec<&Value> = dash["panels"].as_array().into_iter().flatten().collect();
    assert_no_overlap("dashboard", &top);
    for row in top.iter().filter(|p| p["type"] == "row") {
        let nested: Vec<&Value> = row["panels"].as_array().into_iter().flatten().collect();
        assert_no_overlap(row["title"].as_str().unwrap_or("row"), &nested);
        if let Some(rep) = row["repeat"].as_str() {
            assert!(var_names.contains(rep), "row repeats on unknown ${rep}");
        }
    }

    // Every datasource reference is the provisioned uid or the ${datasource} variable.
    let mut refs = Vec::new();
    datasource_refs(&dash, "dashboard".into(), &mut refs);
    assert!(
        refs.len() > panels.len(),
        "datasources on panels and targets"
    );
    for (at, ds) in refs {
        let uid = match ds {
            Value::String(s) => s.as_str(),
            Value::Object(o) => {
                assert_eq!(
                    o.get("type").and_then(Value::as_str),
                    Some("prometheus"),
                    "{at}"
                );
                o.get("uid").and_then(Value::as_str).unwrap_or_default()
            }
            other => panic!("{at}: datasource {other}"),
        };
        assert!(
            uid == "${datasource}" || uid == "$datasource" || uids.contains(uid),
            "{at}: datasource {uid:?} resolves to nothing"
        );
    }

    // Every $variable anywhere (queries, titles, descriptions) is defined.
    let mut texts = Vec::new();
    all_strings(&dash, &mut texts);
    for text in texts {
        for name in variable_refs(text) {
            assert!(
                var_names.contains(&name) || prom::GRAFANA_BUILTINS.contains(&name.as_str()),
                "undefined variable ${name} in {text:?}"
            );
        }
    }

    // Every panel but rows queries something.
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let exprs = p["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()))
            .count();
        assert!(exprs > 0, "panel {:?} has no query", p["title"]);
    }
}

/// The dashboard covers the contract: every metric of DESIGN.md's table that a panel
/// should show, and the exporter row's health metrics; loss is computed the exact way.
#[test]
fn dashboard_covers_the_metrics_contract() {
    let queries = dashboard_queries(&shipped_dashboard(), &[]);
    let all: String = queries
        .iter()
        .map(|q| q.expr.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    for metric in [
        "pingscope_sent_total",
        "pingscope_rtt_seconds_bucket",
        "pingscope_lost_total",
        "pingscope_late_replies_total",
        "pingscope_duplicates_total",
        "pingscope_icmp_errors_total",
        "pingscope_send_errors_total",
        "pingscope_jitter_seconds",
        "pingscope_jitter_rfc3550_seconds",
        "pingscope_reply_ttl",
        "pingscope_window_rtt_seconds",
        "pingscope_target_info",
        "pingscope_resolve_errors_total",
        "pingscope_scheduler_lag_seconds_bucket",
        "pingscope_probes_in_flight",
        "pingscope_config_last_reload_successful",
        "pingscope_config_last_reload_success_timestamp_seconds",
        "pingscope_sessions_active",
        "pingscope_live_clients",
        "pingscope_build_info",
        "up{",
    ] {
        assert!(all.contains(metric), "no panel shows {metric}");
    }
    for q in queries
        .iter()
        .filter(|q| q.expr.contains("pingscope_lost_total"))
    {
        assert!(
            q.expr.contains("increase(pingscope_lost_total")
                && q.expr.contains("increase(pingscope_rtt_seconds_count"),
            "panel {} {:?}: loss must be increase(lost) / (increase(lost) + increase(rtt_count))",
            q.panel_id,
            q.title
        );
    }
}

#[test]
fn grafana_variable_substitution() {
    let vars = [
        ("job", "pingscope"),
        ("target", "gw.example"),
        ("__rate_interval", "4s"),
    ];
    assert_eq!(
        substitute(
            r#"rate(x{job=~"$job",target=~"${target:regex}",t2="${target}",t3="[[target]]"}[$__rate_interval])"#,
            &vars
        ),
        r#"rate(x{job=~"pingscope",target=~"gw\.example",t2="gw.example",t3="gw.example"}[4s])"#
    );
    // Defaults for the interval variables; a longer name is not mistaken for a shorter one.
    assert_eq!(
        substitute("[$__range] $__range_s $__interval", &[]),
        "[5m] 300 15s"
    );
    // Unknown variables and a regex's end anchor stay as they are.
    assert_eq!(
        substitute(r#"x{a=~"b$", c="$nope"}"#, &vars),
        r#"x{a=~"b$", c="$nope"}"#
    );
    assert_eq!(
        variable_refs("${a} $b [[c]] ${d:regex} $ $$"),
        ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect()
    );
}

fn self_scrape_config(rule_files: &[PathBuf]) -> String {
    let mut config = String::from("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n");
    if !rule_files.is_empty() {
        config.push_str("rule_files:\n");
        for f in rule_files {
            config.push_str(&format!("  - {:?}\n", f.display().to_string()));
        }
    }
    config.push_str(
        "scrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: [\"127.0.0.1:{{PROMETHEUS_PORT}}\"]\n",
    );
    config
}

/// The harness: Prometheus scraping itself answers `up` with 1, range queries work, and
/// dropping the handle stops the process.
#[test]
fn harness_runs_prometheus_that_scrapes_itself() {
    if !prometheus_available() {
        return;
    }
    let prom = Prometheus::start(&self_scrape_config(&[]), &[]);
    let pid = prom.pid();
    let url = prom.url();

    let up = prom.wait_for("up{job=\"self\"} == 1", Duration::from_secs(20));
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(sample_value(&up[0]), Some(1.0));
    assert!(
        prom.targets_up().iter().any(|(job, _)| job == "self"),
        "{:?}",
        prom.targets_up()
    );
    let now = match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => panic!("clock before 1970: {e}"),
    };
    let range = prom.query_range("up", now - 30.0, now, 1.0);
    assert_eq!(range["resultType"], "matrix");
    assert!(prom.try_query("sum(").is_err(), "a parse error is an error");

    drop(prom);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "Prometheus (pid {pid}) still runs after drop"
    );
    assert!(reqwest::blocking::get(format!("{url}/-/ready")).is_err());
}

/// The Dockerfile builds in a Rust stage and runs as a non-root user from a small image,
/// and every file naming pingscope's port names the one default.
#[test]
fn dockerfile_and_configs_agree_on_the_port_and_user() {
    let dockerfile = read(&repo().join("Dockerfile"));
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(stages.len(), 2, "builder and runtime stages: {stages:?}");
    assert!(stages[0].contains("RUST_IMAGE") && stages[0].contains(" AS builder"));
    assert!(dockerfile.contains("ARG RUST_IMAGE=rust:"));
    assert!(dockerfile.contains("ARG RUNTIME_IMAGE=debian:") || dockerfile.contains("distroless"));
    let user = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .unwrap_or_default();
    assert!(
        !user.is_empty() && !user.starts_with("root") && !user.starts_with('0'),
        "runs as {user:?}"
    );
    assert!(dockerfile.contains("--bin pingscope"));

    let port = pingscope::DEFAULT_PORT.to_string();
    assert!(dockerfile.contains(&format!("EXPOSE {port}")));
    let prometheus = read(&repo().join("config/prometheus.yml"));
    assert_eq!(
        prometheus.matches(&format!("pingscope:{port}")).count(),
        2,
        "the pingscope job and the /probe relabeling"
    );
    let env = read(&repo().join(".env"));
    assert!(env.contains(&format!("PINGSCOPE_PORT={port}")));
    let compose = read(&repo().join("docker-compose.yml"));
    assert!(compose.contains(&format!("--web.listen-address=0.0.0.0:{port}")));
}
