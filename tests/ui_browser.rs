//! The built-in live page in a real browser: headless Chromium, driven through chromedriver,
//! loads `/` from a daemon that watches the test network, and everything runs inside the test
//! namespace (daemon, chromedriver, Chromium and this test's HTTP client).
//!
//! One test, one browser: monitors live, a session against a lossy profile watched live until
//! its summary (checked against the API's), history and the result view with its downloads,
//! a field-level validation message, a denied target, the session limit, the stop button, and
//! the daemon going away. Screenshots go to `$TEST_ARTIFACTS` (default `target/test-artifacts`).
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::print_stderr,
    clippy::disallowed_methods
)]

mod support;
#[path = "ui/webdriver.rs"]
mod webdriver;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::TestNet;
use webdriver::Browser;

const BIN: &str = env!("CARGO_BIN_EXE_pingscope");
const ENTER: &str = "\u{E007}";
const LOSSY: &str = "198.18.0.31";
const DENIED: &str = "198.18.0.99";
const BLACKHOLE: &str = "198.18.0.70";
const SLOW: Duration = Duration::from_secs(20);

/// The daemon under test; killed (by its PID) on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn get_json(c: &reqwest::blocking::Client, url: &str) -> Value {
    let r = c
        .get(url)
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    r.json().unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(1.0)
}

#[test]
fn live_page_in_headless_chromium() {
    if !support::require_root() {
        return;
    }
    let started = Instant::now();
    let net = TestNet::start(&json!({
        "seed": 7,
        "default": {"delay": "2ms"},
        "hosts": {
            "198.18.0.20": {"delay": "20ms", "jitter": "2ms"},
            "198.18.0.30": {"delay": "5ms", "loss": 0.2},
            LOSSY: {"delay": "15ms", "jitter": "5ms", "loss": 0.25},
            BLACKHOLE: {"blackhole": true},
        }
    }));
    net.enter();

    let config = net.dir().join("pingscope.yml");
    std::fs::write(
        &config,
        format!(
            "defaults: {{interval: 200ms, timeout: 1s, window: 50}}\n\
             targets:\n  - {{name: edge-20ms, host: 198.18.0.20, labels: {{site: lab}}}}\n  - {{name: lossy-link, host: 198.18.0.30}}\n\
             sessions: {{database: {db}, max_active: 1, min_interval: 50ms}}\n\
             access: {{allow: [198.18.0.0/15], deny: [{DENIED}/32]}}\n",
            db = net.dir().join("sessions.db").display()
        ),
    )
    .unwrap();
    let port = support::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut daemon = Daemon(
        Command::new(BIN)
            .args(["serve", "--config.file"])
            .arg(&config)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(["--log.level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let api = http();
    assert!(
        support::wait_until(Duration::from_secs(15), || api
            .get(format!("{base}/-/healthy"))
            .send()
            .is_ok_and(|r| r.status().is_success())),
        "daemon not healthy within 15 s"
    );

    let art = webdriver::artifacts_dir();
    let b = Browser::start(support::free_port(), 1280, 900);

    // --- Monitors: both targets with live RTT, loss over the window and a sparkline.
    b.goto(&format!("{base}/"));
    b.wait_for(
        "monitor cards",
        SLOW,
        "document.querySelectorAll('#monitor-list > li').length === 2",
    );
    b.wait_for(
        "live samples on every card",
        SLOW,
        "[...document.querySelectorAll('#monitor-list > li')].every(li => Number(li.dataset.samples) >= 4 && Number(li.querySelector('svg.spark').dataset.points) >= 1)",
    );
    b.wait_for(
        "connection shown live",
        SLOW,
        "document.getElementById('conn').dataset.state === 'live'",
    );
    let edge_rtt: f64 = b
        .js("return document.querySelector('li[data-target=\"edge-20ms\"] [data-role=rtt]').textContent", &[])
        .as_str()
        .unwrap()
        .parse()
        .expect("edge-20ms shows a number as its RTT");
    assert!(
        (18.0..250.0).contains(&edge_rtt),
        "edge-20ms RTT {edge_rtt} ms for a 20 ms ± 2 ms profile"
    );
    // Window loss comes from /api/v1/targets, refreshed every 10 s; it is shown as a percentage.
    b.wait_for(
        "window loss of the lossy monitor",
        SLOW,
        "document.querySelector('li[data-target=\"lossy-link\"] [data-role=loss]').textContent.endsWith('%')",
    );
    b.screenshot(&art.join("ui-monitors.png"));

    // --- A field-level validation message from the API (interval below the daemon's minimum).
    b.goto(&format!("{base}/#/session"));
    b.type_into(&b.find("#f-target"), LOSSY);
    b.type_into(&b.find("#f-interval"), "10ms");
    b.click(&b.find("#start"));
    let msg = b.wait_for(
        "interval error",
        SLOW,
        "document.getElementById('e-interval').textContent",
    );
    assert!(
        msg.as_str().unwrap().contains("minimum"),
        "interval message: {msg}"
    );
    assert_eq!(
        b.js(
            "return document.getElementById('f-interval').getAttribute('aria-invalid')",
            &[]
        ),
        json!("true")
    );
    assert_eq!(
        b.js("return location.hash", &[]),
        json!("#/session"),
        "no session may start"
    );

    // --- A session against the lossy profile, submitted from the keyboard (Enter in a field).
    b.type_into(&b.find("#f-count"), "60");
    b.type_into(&b.find("#f-timeout"), "500ms");
    b.type_into(&b.find("#f-interval"), &format!("100ms{ENTER}"));
    let hash = b.wait_for(
        "the session view",
        SLOW,
        "location.hash.startsWith('#/session/') && location.hash",
    );
    let id = hash
        .as_str()
        .unwrap()
        .trim_start_matches("#/session/")
        .to_owned();
    // Samples arrive while it runs: the timeline, the figures and the chart grow.
    b.wait_for(
        "live samples while running",
        SLOW,
        "document.getElementById('result-status').dataset.status === 'running' && document.querySelectorAll('#timeline tr').length >= 5",
    );
    let sent_early = b
        .js(
            "return Number(document.getElementById('fig-sent').dataset.value)",
            &[],
        )
        .as_f64()
        .unwrap();
    let points_early = b
        .js(
            "return Number(document.getElementById('rtt-chart').dataset.points || 0)",
            &[],
        )
        .as_f64()
        .unwrap();
    let running = b.wait_for(
        "figures and chart to update",
        SLOW,
        &format!(
            "Number(document.getElementById('fig-sent').dataset.value) > {sent_early} && Number(document.getElementById('rtt-chart').dataset.points) > {points_early} && document.getElementById('result-status').dataset.status"
        ),
    );
    assert_eq!(
        running,
        json!("running"),
        "the updates must be seen live, before the end"
    );
    b.wait_for(
        "the final summary",
        SLOW,
        "document.querySelector('.figures').dataset.final === 'true'",
    );
    b.wait_for(
        "the completed status",
        SLOW,
        "document.getElementById('result-status').dataset.status === 'completed'",
    );

    // The page's final figures are the API's summary.
    let detail = get_json(&api, &format!("{base}/api/v1/sessions/{id}"));
    let sum = &detail["summary"];
    assert_eq!(detail["status"], "completed");
    let fig = |name: &str| -> String {
        b.js(
            &format!("return document.getElementById('fig-{name}').dataset.value"),
            &[],
        )
        .as_str()
        .unwrap()
        .to_owned()
    };
    assert_eq!(fig("sent"), sum["sent"].to_string());
    assert_eq!(fig("received"), sum["received"].to_string());
    assert!(
        sum["lost"].as_u64().unwrap() > 0,
        "the profile loses 25 %: {sum}"
    );
    assert!(
        close(
            fig("loss").parse().unwrap(),
            sum["loss_ratio"].as_f64().unwrap()
        ),
        "loss {} vs {sum}",
        fig("loss")
    );
    let rtt: Vec<f64> = fig("rtt").split('/').map(|v| v.parse().unwrap()).collect();
    let api_rtt = [
        &sum["rtt_ms"]["min"],
        &sum["rtt_ms"]["avg"],
        &sum["rtt_ms"]["max"],
    ]
    .map(|v| v.as_f64().unwrap());
    for (page, api) in rtt.iter().zip(api_rtt) {
        assert!(close(*page, api), "rtt {rtt:?} vs {api_rtt:?}");
    }
    assert!(close(
        fig("jitter").parse().unwrap(),
        sum["jitter_ms"].as_f64().unwrap()
    ));
    let shown_sent = b.js(
        "return document.getElementById('fig-sent').textContent",
        &[],
    );
    assert_eq!(shown_sent, json!(sum["sent"].to_string()));
    // Chart: one point per reply, one mark per lost probe; timeline: one row per sample.
    let chart = b.js("const s = document.getElementById('rtt-chart'); return [Number(s.dataset.points), Number(s.dataset.lost), s.querySelectorAll('.lost rect').length]", &[]);
    assert_eq!(chart, json!([sum["received"], sum["lost"], sum["lost"]]));
    let rows = b.js(
        "return document.querySelectorAll('#timeline tr').length",
        &[],
    );
    assert_eq!(rows, json!(detail["samples"].as_array().unwrap().len()));
    b.screenshot(&art.join("ui-session.png"));
    // A narrow screen: nothing wider than the viewport.
    b.resize(400, 900);
    b.wait_for("the narrow layout", SLOW, "window.innerWidth <= 400");
    let overflow = b.js(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
        &[],
    );
    assert_eq!(overflow, json!(0), "the page scrolls sideways at 400 px");
    b.screenshot(&art.join("ui-session-narrow.png"));
    b.resize(1280, 900);
    // The dark scheme: the page follows prefers-color-scheme.
    let background = "getComputedStyle(document.body).backgroundColor";
    let light = b.js(&format!("return {background}"), &[]);
    b.cdp(
        "Emulation.setEmulatedMedia",
        json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]}),
    );
    let dark = b.wait_for(
        "the dark scheme",
        SLOW,
        &format!("{background} !== {light} && {background}"),
    );
    let channels: Vec<u32> = dark
        .as_str()
        .unwrap()
        .trim_start_matches("rgb(")
        .trim_end_matches(')')
        .split(',')
        .map(|c| c.trim().parse().unwrap())
        .collect();
    assert!(channels.iter().all(|&c| c < 64), "dark background {dark}");
    b.screenshot(&art.join("ui-session-dark.png"));
    b.cdp(
        "Emulation.setEmulatedMedia",
        json!({"features": [{"name": "prefers-color-scheme", "value": "light"}]}),
    );

    // --- History: the session is listed (newest first) and opens its result view.
    b.click(&b.find("nav a[data-view=history]"));
    b.wait_for(
        "the history row",
        SLOW,
        &format!("document.querySelector('#history-list tr[data-id=\"{id}\"]')"),
    );
    let first = b.js(
        "return document.querySelector('#history-list tr').dataset.id",
        &[],
    );
    assert_eq!(first, json!(id), "newest first");
    b.screenshot(&art.join("ui-history.png"));
    b.click(&b.find(&format!("#history-list tr[data-id=\"{id}\"] a")));
    b.wait_for("the stored result", SLOW, "document.querySelector('.figures').dataset.final === 'true' && !document.getElementById('downloads').hidden");
    assert_eq!(fig("sent"), sum["sent"].to_string());
    let json_href = b.js(
        "return document.getElementById('dl-json').getAttribute('href')",
        &[],
    );
    assert_eq!(json_href, json!(format!("/api/v1/sessions/{id}")));
    let csv = b.js(
        "return fetch(document.getElementById('dl-csv').href).then(r => r.text())",
        &[],
    );
    let csv = csv.as_str().unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].starts_with("type,seq,ts,"),
        "CSV header: {}",
        lines[0]
    );
    assert_eq!(lines.len(), detail["samples"].as_array().unwrap().len() + 1);
    let timeouts = detail["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["type"] == "timeout")
        .count();
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("timeout,")).count(),
        timeouts
    );

    // Nothing runs now (the lossy session ended): the steps below rely on the one slot.
    let page = get_json(&api, &format!("{base}/api/v1/sessions"));
    let running: Vec<&Value> = page["items"]
        .as_array()
        .expect("a page of sessions")
        .iter()
        .filter(|s| s["status"] == "running")
        .collect();
    assert!(running.is_empty(), "sessions still running: {running:?}");

    // --- A denied target: 403, shown on the page.
    b.goto(&format!("{base}/#/session"));
    b.type_into(&b.find("#f-target"), &format!("{DENIED}{ENTER}"));
    let kind = b.wait_for("the denied alert", SLOW, "!document.getElementById('form-alert').hidden && document.getElementById('form-alert').dataset.kind");
    assert_eq!(kind, json!("forbidden"));
    let text = b.js(
        "return document.getElementById('form-alert').textContent",
        &[],
    );
    assert!(text.as_str().unwrap().contains("denied"), "{text}");
    b.screenshot(&art.join("ui-form-denied.png"));

    // --- The limit: one long session runs (max_active 1), the page's start is refused with 429.
    // It probes a black hole with an 8 s timeout, so its first sample comes 8 s after the start,
    // and a stop ends it once the probes in flight settle (at most 8 s later).
    let long: Value = api
        .post(format!("{base}/api/v1/sessions"))
        .json(&json!({"target": BLACKHOLE, "count": 600, "interval": "1s", "timeout": "8s"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let long_id = long["id"]
        .as_str()
        .unwrap_or_else(|| panic!("the long session did not start: {long}"))
        .to_owned();
    b.type_into(&b.find("#f-target"), &format!("198.18.0.20{ENTER}"));
    let kind = b.wait_for("the limit alert", SLOW, "document.getElementById('form-alert').dataset.kind === 'too_many_sessions' && !document.getElementById('form-alert').hidden && document.getElementById('form-alert').textContent");
    assert!(kind.as_str().unwrap().contains("Limit reached"), "{kind}");
    // Its page says there is no data yet; the stop button ends it.
    b.goto(&format!("{base}/#/session/{long_id}"));
    b.wait_for(
        "the stop button",
        SLOW,
        "!document.getElementById('stop').hidden",
    );
    // The view renders its empty state just after the stop button appears: wait for it.
    let empty = b.wait_for(
        "the no-data state",
        SLOW,
        "!document.getElementById('chart-empty').hidden && document.getElementById('chart-empty').textContent",
    );
    assert_eq!(empty, json!("No data yet: waiting for the first probe."));
    let figures = b.js(
        "return [document.querySelectorAll('#timeline tr').length, document.getElementById('fig-sent').textContent]",
        &[],
    );
    assert_eq!(figures, json!([0, "0"]));
    b.click(&b.find("#stop"));
    b.wait_for("the stopped status", SLOW, "document.getElementById('result-status').dataset.status === 'stopped' && document.querySelector('.figures').dataset.final === 'true'");
    assert_eq!(
        get_json(&api, &format!("{base}/api/v1/sessions/{long_id}"))["status"],
        "stopped"
    );

    // --- The daemon goes away: the page says so.
    b.goto(&format!("{base}/#/monitors"));
    b.wait_for(
        "live again",
        SLOW,
        "document.getElementById('conn').dataset.state === 'live'",
    );
    let _ = daemon.0.kill();
    let _ = daemon.0.wait();
    b.wait_for(
        "the disconnected state",
        SLOW,
        "document.getElementById('conn').dataset.state === 'down'",
    );
    b.click(&b.find("nav a[data-view=history]"));
    b.wait_for("the unreachable daemon alert", SLOW, "!document.getElementById('daemon-alert').hidden && document.getElementById('history-state').classList.contains('error')");

    eprintln!("browser test took {:?}", started.elapsed());
    drop(b);
    drop(daemon);
}
