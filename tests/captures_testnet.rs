//! Captures end to end through the test network (issue 18 part 4): the path sessions the
//! monitors start when an outage begins or when window loss reaches the target's `alert.loss`
//! (`capture:` in the config), their limits (`capture.on_outage`,
//! `sessions.max_captures_per_minute`, reload), the link from an outage to a loss capture, and
//! `pingscope_captures_total` / `pingscope_captures_skipped_total`.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Value, json};
use support::daemon::{Daemon, SESSIONS};
use support::expo::Scrape;
use support::{TestNet, wait_until, write_config};

const LOSSY: &str = "198.18.0.30";
const DARK: &str = "198.18.0.31";
const DARK_TOO: &str = "198.18.0.32";

fn profiles(hosts: Value) -> Value {
    json!({"seed": 7, "default": {"delay": "1ms"}, "hosts": hosts})
}

/// The items of a page of the API (`/api/v1/sessions`, `/api/v1/outages?...`).
fn items(d: &Daemon, path: &str) -> Vec<Value> {
    let (status, _, body) = d.get(path);
    assert_eq!(status, 200, "{path}: {body}");
    let page: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    page["items"].as_array().cloned().unwrap_or_default()
}

fn sessions(d: &Daemon) -> Vec<Value> {
    items(d, "/api/v1/sessions")
}

fn outages(d: &Daemon, target: &str) -> Vec<Value> {
    items(d, &format!("/api/v1/outages?target={target}"))
}

fn captures(s: &Scrape, target: &str, reason: &str) -> Option<f64> {
    s.get(
        "pingscope_captures_total",
        &[("target", target), ("reason", reason)],
    )
}

fn skipped(s: &Scrape, reason: &str) -> f64 {
    s.value("pingscope_captures_skipped_total", &[("reason", reason)])
}

/// Waits for an open outage of `target` that has lost at least `lost` probes.
fn open_outage(d: &Daemon, target: &str, lost: u64) -> Value {
    let mut items = Vec::new();
    let open = wait_until(Duration::from_secs(10), || {
        items = outages(d, target);
        items
            .first()
            .is_some_and(|o| o["status"] == "open" && o["lost"].as_u64() >= Some(lost))
    });
    assert!(open, "no open outage of {target}: {items:?}\n{}", d.log());
    items[0].clone()
}

#[test]
fn a_loss_crossing_starts_one_path_capture_once_the_window_is_full() {
    let Some(net) =
        TestNet::start_and_enter(&profiles(json!({LOSSY: {"delay": "1ms", "loss": 0.3}})))
    else {
        return;
    };
    let d = Daemon::serve(
        net.dir(),
        &format!(
            "defaults: {{interval: 100ms, timeout: 300ms, window: 20}}\n\
             targets:\n  - name: lossy\n    host: {LOSSY}\n    alert: {{loss: 0.1}}\n\
             \x20   capture: {{on_loss: true, on_outage: false, rounds: 3}}\n{SESSIONS}"
        ),
    );
    let s = d.scrape_until(Duration::from_secs(15), "a loss capture", |s| {
        captures(s, "lossy", "loss") == Some(1.0)
    });
    // on_outage is off: the random loss opens outages, none is captured or counted.
    assert_eq!(captures(&s, "lossy", "outage"), None);
    let items = sessions(&d);
    assert_eq!(items.len(), 1, "{items:?}");
    let capture = &items[0];
    assert_eq!(capture["params"]["kind"], "path", "{capture}");
    assert_eq!(capture["params"]["target"], LOSSY, "{capture}");
    assert_eq!(capture["params"]["count"], 3, "{capture}");
    // Not before 20 probes (the window) had gone out: the 20th echo request's arrival at the
    // responder comes before the capture was asked for.
    let ip: IpAddr = LOSSY.parse().unwrap_or_else(|_| unreachable!());
    let echoes: Vec<u64> = net
        .log()
        .iter()
        .filter(|e| e.dst == ip && e.proto == "icmp" && e.ttl == 64)
        .map(|e| e.time_ns)
        .collect();
    assert!(echoes.len() >= 20, "{} echo requests", echoes.len());
    let created = capture["created_at"].as_str().unwrap_or_default();
    let created = humantime::parse_rfc3339(created).unwrap_or_else(|e| panic!("{created}: {e}"));
    let twentieth = std::time::UNIX_EPOCH + Duration::from_nanos(echoes[19]);
    assert!(
        created > twentieth,
        "captured at {created:?}, the 20th probe went out at {twentieth:?}"
    );
    // The capture runs its rounds through the network (probes with TTLs of their own) and
    // ends; the loss stays above the threshold: no second capture.
    let id = capture["id"].as_str().unwrap_or_default().to_owned();
    let mut session = Value::Null;
    let done = wait_until(Duration::from_secs(15), || {
        let (_, _, body) = d.get(&format!("/api/v1/sessions/{id}"));
        session = serde_json::from_str(&body).unwrap_or(Value::Null);
        session["status"] == "completed"
    });
    assert!(done, "capture not completed: {session}");
    let path_probes = net
        .log()
        .iter()
        .filter(|e| e.dst == ip && e.proto == "icmp" && e.ttl != 64)
        .count();
    assert!(path_probes >= 3, "{path_probes} path probes in the log");
    assert_eq!(sessions(&d).len(), 1);
    let s = d.scrape();
    assert_eq!(captures(&s, "lossy", "loss"), Some(1.0));
    assert_eq!(skipped(&s, "global_cap") + skipped(&s, "failed"), 0.0);
}

#[test]
fn on_outage_false_and_a_global_cap_of_0_record_outages_without_captures_until_a_reload() {
    let dark = json!({"blackhole": true});
    let Some(net) = TestNet::start_and_enter(&profiles(json!({DARK: dark, DARK_TOO: dark}))) else {
        return;
    };
    let config = |b_capture: &str, cap: u32| {
        format!(
            "defaults: {{interval: 100ms, timeout: 300ms}}\n\
             targets:\n  - {{name: b, host: {DARK}{b_capture}}}\n  - {{name: c, host: {DARK_TOO}}}\n\
             {SESSIONS}  max_captures_per_minute: {cap}\n"
        )
    };
    let d = Daemon::serve(net.dir(), &config(", capture: {on_outage: false}", 0));
    let (b, c) = (open_outage(&d, "b", 5), open_outage(&d, "c", 5));
    assert!(b.get("capture_session").is_none(), "{b}");
    assert!(c.get("capture_session").is_none(), "{c}");
    assert!(sessions(&d).is_empty());
    let s = d.scrape();
    // b asks for no capture (no series, nothing skipped); c asked once and hit the cap of 0.
    assert!(
        s.find("pingscope_captures_total", &[("target", "b")])
            .is_empty()
    );
    assert_eq!(captures(&s, "c", "outage"), Some(0.0));
    assert_eq!(captures(&s, "c", "loss"), None, "on_loss is off");
    assert_eq!(skipped(&s, "global_cap"), 1.0);
    assert_eq!(skipped(&s, "rate_limit") + skipped(&s, "failed"), 0.0);

    // Reload: b captures on outage again (it restarts: its outage is interrupted and a new one
    // opens), and the cap allows captures. c is unchanged: its outage goes on, already asked.
    write_config(net.dir(), "serve.yml", &config("", 4));
    let (status, body) = d.post("/-/reload");
    assert_eq!(status, 200, "{body}");
    let mut items = Vec::new();
    let captured = wait_until(Duration::from_secs(10), || {
        items = outages(&d, "b");
        items
            .first()
            .is_some_and(|o| o["status"] == "open" && o.get("capture_session").is_some())
    });
    assert!(captured, "b's new outage not captured: {items:?}");
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[1]["status"], "interrupted", "{items:?}");
    let id = items[0]["capture_session"].as_str().unwrap_or_default();
    let (status, _, body) = d.get(&format!("/api/v1/sessions/{id}"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(DARK), "{body}");
    std::thread::sleep(Duration::from_millis(500));
    let c_now = outages(&d, "c");
    assert_eq!(c_now.len(), 1, "{c_now:?}");
    assert_eq!(c_now[0]["id"], c["id"]);
    assert!(c_now[0].get("capture_session").is_none(), "{c_now:?}");
    let s = d.scrape();
    assert_eq!(captures(&s, "b", "outage"), Some(1.0));
    assert_eq!(captures(&s, "c", "outage"), Some(0.0));
    assert_eq!(skipped(&s, "global_cap"), 1.0);
    assert_eq!(sessions(&d).len(), 1);
}

#[test]
fn an_outage_after_a_loss_capture_of_its_address_links_to_that_capture() {
    let lossy = json!({"delay": "1ms", "loss": 0.5});
    let Some(net) = TestNet::start_and_enter(&profiles(json!({LOSSY: lossy}))) else {
        return;
    };
    // An outage needs 20 lost in a row, which 50 % random loss (almost) never gives; the
    // blackhole does.
    let d = Daemon::serve(
        net.dir(),
        &format!(
            "defaults: {{interval: 100ms, timeout: 300ms, window: 10}}\n\
             targets:\n  - name: l\n    host: {LOSSY}\n    outage: {{after: 20, until: 3}}\n\
             \x20   alert: {{loss: 0.2}}\n    capture: {{on_loss: true, rounds: 3}}\n{SESSIONS}"
        ),
    );
    d.scrape_until(Duration::from_secs(15), "a loss capture", |s| {
        captures(s, "l", "loss") == Some(1.0)
    });
    let items = sessions(&d);
    assert_eq!(items.len(), 1, "{items:?}");
    let loss_capture = items[0]["id"].clone();
    assert!(
        outages(&d, "l").is_empty(),
        "an outage before the blackhole"
    );
    net.set_profiles(&profiles(json!({LOSSY: {"blackhole": true}})));
    let o = open_outage(&d, "l", 20);
    assert_eq!(o["capture_session"], loss_capture, "{o}");
    let s = d.scrape();
    assert_eq!(captures(&s, "l", "outage"), Some(0.0));
    assert_eq!(captures(&s, "l", "loss"), Some(1.0));
    assert_eq!(skipped(&s, "global_cap") + skipped(&s, "failed"), 0.0);
    assert_eq!(sessions(&d).len(), 1);
}
