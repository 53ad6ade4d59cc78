//! Test harness around a real Prometheus (the Debian package's `/usr/bin/prometheus`), and
//! the reader of the Grafana dashboard's queries.
//!
//! - [`Prometheus`]: one server per test on a free 127.0.0.1 port with a temporary data
//!   dir; instant and range queries, scrape target health; killed by PID on drop.
//! - [`dashboard_queries`]: every panel query of a dashboard JSON (rows included) with
//!   Grafana's variables substituted, ready to send to [`Prometheus::query`].
//!
//! Test crates use `mod prom;`; each uses a part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod dashboard;
pub mod exporter;

// Re-exported for every test crate; each uses a part.
#[allow(unused_imports)]
pub use dashboard::{
    GRAFANA_BUILTINS, PanelQuery, all_panels, dashboard_queries, shipped_dashboard,
    shipped_queries, substitute, variable_refs,
};

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The flag that makes Prometheus 2.x ingest native histograms (scraped over protobuf).
pub const NATIVE_HISTOGRAMS: &str = "--enable-feature=native-histograms";

/// Replaced in a config by the port Prometheus listens on (to scrape itself).
pub const PORT_PLACEHOLDER: &str = "{{PROMETHEUS_PORT}}";

/// How long [`Prometheus::start`] waits for `/-/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The Prometheus binary: `$PROMETHEUS_BIN`, else the Debian package's.
pub fn prometheus_bin() -> PathBuf {
    std::env::var_os("PROMETHEUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus"))
}

/// A running Prometheus, killed (by its PID) and its data dir removed on drop.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    client: reqwest::blocking::Client,
}

impl Prometheus {
    /// Whether a Prometheus binary is there to run.
    pub fn available() -> bool {
        prometheus_bin().is_file()
    }

    /// Start Prometheus with `config_yaml` as its config file on a free loopback port and
    /// wait (at most 30 s) until it is ready. Panics with Prometheus' own log on failure.
    /// Pass [`NATIVE_HISTOGRAMS`] in `extra_flags` to ingest native histograms.
    /// [`PORT_PLACEHOLDER`] in the config becomes Prometheus' own port.
    pub fn start(config_yaml: &str, extra_flags: &[&str]) -> Prometheus {
        Self::start_with_files(config_yaml, &[], extra_flags)
    }

    /// As [`Prometheus::start`], with more files (rules, file_sd targets) written beside
    /// the config file first, so that the config can name them by relative path.
    pub fn start_with_files(
        config_yaml: &str,
        files: &[(&str, &str)],
        extra_flags: &[&str],
    ) -> Prometheus {
        let dir = match tempfile::Builder::new().prefix("pingscope-prom-").tempdir() {
            Ok(dir) => dir,
            Err(e) => panic!("create a temporary dir for Prometheus: {e}"),
        };
        let port = free_port();
        write_file(
            &dir.path().join("prometheus.yml"),
            &config_yaml.replace(PORT_PLACEHOLDER, &port.to_string()),
        );
        for (name, content) in files {
            write_file(&dir.path().join(name), content);
        }
        let log_path = dir.path().join("prometheus.log");
        let log = match std::fs::File::create(&log_path) {
            Ok(f) => f,
            Err(e) => panic!("create {}: {e}", log_path.display()),
        };
        let mut cmd = Command::new(prometheus_bin());
        cmd.arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg("--web.enable-lifecycle")
        .args(extra_flags)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
        match log.try_clone() {
            Ok(err_log) => cmd.stderr(err_log),
            Err(_) => cmd.stderr(Stdio::null()),
        };
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => panic!("start {}: {e}", prometheus_bin().display()),
        };
        let client = match reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .build()
        {
            Ok(c) => c,
            Err(e) => panic!("build an HTTP client: {e}"),
        };
        let mut prom = Prometheus {
            child,
            port,
            dir,
            client,
        };
        prom.wait_ready();
        prom
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let url = format!("{}/-/ready", self.url());
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "Prometheus exited before it was ready ({status}):\n{}",
                    self.log()
                );
            }
            if let Ok(resp) = self.client.get(&url).send()
                && resp.status().is_success()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "Prometheus not ready at {url} within {READY_TIMEOUT:?}:\n{}",
            self.log()
        );
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The temporary dir holding the config, extra files and data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What Prometheus logged so far (its stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Instant query at the current time; returns the API's `data` object
    /// (`{"resultType": ..., "result": [...]}`). Panics on an API error.
    pub fn query(&self, expr: &str) -> Value {
        match self.try_query(expr) {
            Ok(data) => data,
            Err(e) => panic!("{e}"),
        }
    }

    /// Instant query, with the API or transport error as a value.
    pub fn try_query(&self, expr: &str) -> Result<Value, String> {
        self.api(
            reqwest::Method::POST,
            "query",
            &[("query", expr.to_string())],
        )
    }

    /// Range query over `[start, end]` (Unix seconds) every `step` seconds; returns `data`.
    pub fn query_range(&self, expr: &str, start: f64, end: f64, step: f64) -> Value {
        let params = [
            ("query", expr.to_string()),
            ("start", format!("{start:.3}")),
            ("end", format!("{end:.3}")),
            ("step", format!("{step}")),
        ];
        match self.api(reqwest::Method::POST, "query_range", &params) {
            Ok(data) => data,
            Err(e) => panic!("{e}"),
        }
    }

    /// The `result` array of an instant query (empty when there is none).
    pub fn query_result(&self, expr: &str) -> Vec<Value> {
        result_of(&self.query(expr))
    }

    /// The panel queries that return nothing, one line each naming the panel.
    pub fn queries_without_data(&self, queries: &[dashboard::PanelQuery]) -> Vec<String> {
        queries
            .iter()
            .filter(|q| self.query_result(&q.expr).is_empty())
            .map(|q| {
                format!(
                    "panel {} {:?} {}: {}",
                    q.panel_id, q.title, q.ref_id, q.expr
                )
            })
            .collect()
    }

    /// Poll an instant query until it returns a non-empty result, at most `timeout`.
    pub fn wait_for(&self, expr: &str, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let result = self.query_result(expr);
            if !result.is_empty() {
                return result;
            }
            if Instant::now() >= deadline {
                panic!(
                    "no result for {expr} within {timeout:?}\nPrometheus log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Active scrape targets whose last scrape succeeded, as `(job, scrape URL)`.
    pub fn targets_up(&self) -> Vec<(String, String)> {
        let data = match self.api(
            reqwest::Method::GET,
            "targets",
            &[("state", "active".to_string())],
        ) {
            Ok(data) => data,
            Err(e) => panic!("{e}"),
        };
        data["activeTargets"]
            .as_array()
            .map(|targets| {
                targets
                    .iter()
                    .filter(|t| t["health"] == "up")
                    .map(|t| {
                        (
                            t["labels"]["job"].as_str().unwrap_or_default().to_string(),
                            t["scrapeUrl"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `GET /api/v1/rules`: the `data.groups` array.
    pub fn rule_groups(&self) -> Vec<Value> {
        match self.api(reqwest::Method::GET, "rules", &[]) {
            Ok(data) => data["groups"].as_array().cloned().unwrap_or_default(),
            Err(e) => panic!("{e}"),
        }
    }

    /// `/api/v1/<endpoint>`: a POST carries `params` as a form, a GET in the query string.
    fn api(
        &self,
        method: reqwest::Method,
        endpoint: &str,
        params: &[(&str, String)],
    ) -> Result<Value, String> {
        let url = format!("{}/api/v1/{endpoint}", self.url());
        let req = self.client.request(method.clone(), &url);
        let req = if method == reqwest::Method::POST {
            req.form(params)
        } else {
            req.query(params)
        };
        let resp = req
            .send()
            .map_err(|e| format!("{method} {url} {params:?}: {e}"))?;
        decode(&url, params, resp)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Only our own child, by its PID; the temp dir goes with `self.dir`.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn decode(
    url: &str,
    params: &[(&str, String)],
    resp: reqwest::blocking::Response,
) -> Result<Value, String> {
    let status = resp.status();
    let body: Value = resp
        .json()
        .map_err(|e| format!("{url} {params:?}: HTTP {status}, body is not JSON: {e}"))?;
    if body["status"] != "success" {
        return Err(format!(
            "{url} {params:?}: HTTP {status}: {} {}",
            body["errorType"], body["error"]
        ));
    }
    Ok(body["data"].clone())
}

/// The `result` array of an API `data` object.
pub fn result_of(data: &Value) -> Vec<Value> {
    data["result"].as_array().cloned().unwrap_or_default()
}

/// The float value of one instant-vector sample (`{"metric":..,"value":[ts,"1.5"]}`).
/// Native histogram samples (`"histogram"`) have none.
pub fn sample_value(sample: &Value) -> Option<f64> {
    sample["value"][1].as_str().and_then(|s| s.parse().ok())
}

fn write_file(path: &Path, content: &str) {
    if let Some(parent) = path.parent()
        && let Err(e) = std::fs::create_dir_all(parent)
    {
        panic!("create {}: {e}", parent.display());
    }
    if let Err(e) = std::fs::write(path, content) {
        panic!("write {}: {e}", path.display());
    }
}

/// A free TCP port on 127.0.0.1 (bound, read and released: Prometheus binds it next).
pub fn free_port() -> u16 {
    match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(addr) => addr.port(),
        Err(e) => panic!("find a free port on 127.0.0.1: {e}"),
    }
}
