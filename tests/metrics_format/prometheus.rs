//! A real Prometheus (Debian's 2.42, started on a free loopback port) scrapes the registry served
//! the way the HTTP layer will serve it: protobuf with native histograms when its feature is on,
//! text otherwise.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use pingscope::config::HistogramConfig;
use pingscope::metrics::{Format, Metrics, negotiate};

use super::{GW_SCRIPT, Step, TestResult, expected, fixture};

/// Kills and reaps the process when the test ends, however it ends.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Serves `/metrics` from `metrics` on a loopback port the way the HTTP layer will (negotiated
/// format and Content-Type), recording each scrape's chosen format, until `stop` is set.
fn serve_metrics(
    metrics: Metrics,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    seen: std::sync::Arc<parking_lot::Mutex<Vec<Format>>>,
) -> Result<(u16, std::thread::JoinHandle<()>), Box<dyn std::error::Error>> {
    use std::io::Read;
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let handle = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
            let Ok((mut conn, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            let _ = conn.set_nonblocking(false);
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = Vec::new();
            let mut buf = [0_u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 65536 {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let request = String::from_utf8_lossy(&request);
            let accept = request
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("accept")
                        .then(|| value.trim().to_owned())
                })
                .unwrap_or_default();
            let format = negotiate(&accept);
            seen.lock().push(format);
            let Ok(body) = metrics.encode(format) else {
                continue;
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                format.content_type(),
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body);
        }
    });
    Ok((port, handle))
}

fn free_port() -> Result<u16, std::io::Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Prometheus' answers to the queries, and the formats its scrapes were served.
type Scraped = (Vec<Option<f64>>, Vec<Format>);

/// Runs Debian's Prometheus 2.42 against a served registry until `ready` answers from its query
/// API (or 30 s pass); returns every answer to `queries` and the formats the scrapes got.
fn scrape_with_prometheus(
    metrics: &Metrics,
    native_feature: bool,
    ready: &str,
    queries: &[&str],
) -> Result<Scraped, Box<dyn std::error::Error>> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let (port, server) = serve_metrics(metrics.clone(), stop.clone(), seen.clone())?;

    let dir = tempfile::tempdir()?;
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, scrape_timeout: 1s}}\n\
             scrape_configs:\n  - job_name: pingscope\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
        ),
    )?;
    let web = free_port()?;
    let mut command = Command::new("/usr/bin/prometheus");
    command
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if native_feature {
        command.arg("--enable-feature=native-histograms");
    }
    let reap = Reap(command.spawn()?);

    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let query = |q: &str| -> Option<f64> {
        let url = format!("http://127.0.0.1:{web}/api/v1/query");
        let response = client.get(url).query(&[("query", q)]).send().ok()?;
        let json: serde_json::Value = response.json().ok()?;
        json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while query(ready).is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    let answers = queries.iter().map(|q| query(q)).collect();
    drop(reap);
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    let seen = seen.lock().clone();
    Ok((answers, seen))
}

fn gw_rtt_range() -> (f64, f64) {
    GW_SCRIPT
        .iter()
        .filter_map(|s| match s {
            Step::Reply(us, _) => Some(*us as f64 / 1e6),
            _ => None,
        })
        .fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(r), hi.max(r)))
}

/// With native histograms on, Prometheus 2.42 scrapes us over protobuf, ingests the native RTT
/// histogram, and answers `histogram_quantile` with a value inside the scripted RTTs.
#[test]
fn prometheus_scrapes_native_histograms_over_protobuf() -> TestResult {
    let f = fixture(true)?;
    let gw = "pingscope_rtt_seconds{target=\"gw\"}";
    let count = format!("histogram_count({gw})");
    let median = format!("histogram_quantile(0.5, {gw})");
    let (answers, seen) = scrape_with_prometheus(
        &f.metrics,
        true,
        &count,
        &[&count, &median, "pingscope_lost_total{target=\"gw\"}"],
    )?;
    let e = expected(GW_SCRIPT);
    assert_eq!(answers[0], Some(e.replies), "native histogram count");
    let (lo, hi) = gw_rtt_range();
    let median = answers[1].ok_or("no histogram_quantile result")?;
    assert!(
        median >= lo * 0.9 && median <= hi * 1.1,
        "median {median} outside [{lo}, {hi}]"
    );
    assert_eq!(answers[2], Some(e.lost));
    assert!(
        !seen.is_empty() && seen.iter().all(|f| *f == Format::Protobuf),
        "{seen:?}"
    );
    Ok(())
}

/// Without the feature, Prometheus 2.42 gets text and reads the classic buckets.
#[test]
fn prometheus_scrapes_classic_histograms_over_text() -> TestResult {
    let f = fixture(true)?;
    let count = "pingscope_rtt_seconds_count{target=\"gw\"}";
    let median = "histogram_quantile(0.5, pingscope_rtt_seconds_bucket{target=\"gw\"})";
    let (answers, seen) = scrape_with_prometheus(&f.metrics, false, count, &[count, median])?;
    assert_eq!(answers[0], Some(expected(GW_SCRIPT).replies));
    let (lo, hi) = gw_rtt_range();
    let median = answers[1].ok_or("no histogram_quantile result")?;
    // Classic buckets only bound the median to the bucket holding it.
    let buckets = HistogramConfig::default().buckets;
    let below = buckets
        .iter()
        .rev()
        .find(|b| **b < lo)
        .copied()
        .unwrap_or(0.0);
    let above = buckets
        .iter()
        .find(|b| **b >= hi)
        .copied()
        .unwrap_or(f64::MAX);
    assert!(
        median > below && median <= above,
        "median {median} outside ({below}, {above}]"
    );
    assert!(
        !seen.is_empty() && seen.iter().all(|f| *f == Format::Text),
        "{seen:?}"
    );
    Ok(())
}
