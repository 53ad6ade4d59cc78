//! Outages of monitors, end to end through the test network (issue 18): the daemon probes
//! addresses whose fate the responder decides and logs, and its outages (metrics and
//! `GET /api/v1/outages`) are compared with that log: a blackhole window of known start and
//! length, 30 % random loss with `after: 3`, and a `kill -9` during an outage.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use support::daemon::{Daemon, SESSIONS};
use support::{LogEntry, TestNet, wait_until};

const TARGET: &str = "198.18.0.20";
const INTERVAL: Duration = Duration::from_millis(100);
const TIMEOUT: Duration = Duration::from_millis(300);

fn profiles(target: Value) -> Value {
    json!({"seed": 7, "default": {"delay": "1ms"}, "hosts": {TARGET: target}})
}

fn config(outage: &str) -> String {
    format!(
        "defaults: {{interval: 100ms, timeout: 300ms, outage: {outage}}}\n\
         targets:\n  - {{name: t, host: {TARGET}}}\n{SESSIONS}"
    )
}

fn outages(d: &Daemon) -> Vec<Value> {
    let (status, _, body) = d.get("/api/v1/outages?target=t");
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    page["items"].as_array().cloned().unwrap_or_default()
}

/// The responder's log of the monitor's echo requests to the target, in arrival (= sending)
/// order: those with the identifier of the first one (a capture's path probes carry their own
/// flows' identifiers, and TTLs of at most 30).
fn echo_log(net: &TestNet) -> Vec<LogEntry> {
    let ip: IpAddr = TARGET.parse().unwrap_or_else(|_| unreachable!());
    let all: Vec<LogEntry> = net
        .log()
        .into_iter()
        .filter(|e| e.dst == ip && e.proto == "icmp")
        .collect();
    let Some(id) = all.first().map(|e| e.id) else {
        return all;
    };
    all.into_iter()
        .filter(|e| e.id == id && e.ttl == 64)
        .collect()
}

/// RFC 3339 from the API → ns since the epoch.
fn ns(v: &Value) -> i128 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    ns_of(humantime::parse_rfc3339(s).unwrap_or_else(|e| panic!("{s}: {e}")))
}

fn ns_of(t: std::time::SystemTime) -> i128 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

#[test]
fn a_blackhole_window_is_one_outage_with_the_responders_drops() {
    let Some(net) = TestNet::start_and_enter(&profiles(json!({"delay": "1ms"}))) else {
        return;
    };
    let d = Daemon::serve(net.dir(), &config("{after: 3, until: 3}"));
    d.scrape_until(Duration::from_secs(10), "ten probes answered", |s| {
        s.get("pingscope_rtt_seconds_count", &[("target", "t")])
            .unwrap_or(0.0)
            >= 10.0
    });
    net.set_profiles(&profiles(json!({"blackhole": true})));
    std::thread::sleep(Duration::from_millis(2000));
    // While it lasts: active, counted, stored as open.
    let s = d.scrape_until(Duration::from_secs(5), "outage active", |s| {
        s.get("pingscope_outage_active", &[("target", "t")]) == Some(1.0)
    });
    assert_eq!(s.value("pingscope_outages_total", &[("target", "t")]), 1.0);
    assert!(s.value("pingscope_consecutive_lost", &[("target", "t")]) >= 3.0);
    net.set_profiles(&profiles(json!({"delay": "1ms"})));
    let mut items = Vec::new();
    let ended = wait_until(Duration::from_secs(10), || {
        items = outages(&d);
        items.first().is_some_and(|o| o["status"] == "ended")
    });
    assert!(ended, "no ended outage: {items:?}");
    // Let a few more replies come: no second outage.
    std::thread::sleep(Duration::from_millis(500));
    let items = outages(&d);
    assert_eq!(items.len(), 1, "{items:?}");
    let o = &items[0];

    let log = echo_log(&net);
    let first_drop = log
        .iter()
        .position(|e| e.action == "blackholed")
        .unwrap_or_else(|| panic!("no blackholed request in the log"));
    let after_drops = log[first_drop..]
        .iter()
        .position(|e| e.action != "blackholed")
        .map(|i| first_drop + i)
        .unwrap_or_else(|| panic!("the blackhole never ended in the log"));
    let drops = log.iter().filter(|e| e.action == "blackholed").count();
    assert_eq!(
        log[first_drop..after_drops].len(),
        drops,
        "one window of drops"
    );
    assert_eq!(o["lost"].as_u64(), Some(drops as u64), "{o}");
    assert_eq!(o["icmp_errors"].as_u64(), Some(0), "{o}");
    assert_eq!(o["ip"], TARGET);
    let tolerance = (INTERVAL + TIMEOUT).as_nanos() as i128;
    let truth_start = i128::from(log[first_drop].time_ns);
    let truth_end = i128::from(log[after_drops].time_ns);
    let (start, end) = (ns(&o["start"]), ns(&o["end"]));
    assert!(
        (start - truth_start).abs() <= tolerance,
        "start {start} vs first drop {truth_start}"
    );
    assert!(
        (end - truth_end).abs() <= tolerance,
        "end {end} vs first reply after the window {truth_end}"
    );
    // The capture: a path session to the address, started when the outage began, stored and
    // linked from the outage.
    let capture = o["capture_session"]
        .as_str()
        .unwrap_or_else(|| panic!("no capture: {o}"));
    let (status, _, body) = d.get(&format!("/api/v1/sessions/{capture}"));
    assert_eq!(status, 200, "{body}");
    let session: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(session["params"]["kind"], "path", "{session}");
    assert_eq!(session["params"]["target"], TARGET, "{session}");
    let s = d.scrape();
    assert_eq!(s.value("pingscope_outage_active", &[("target", "t")]), 0.0);
    assert_eq!(s.value("pingscope_outages_total", &[("target", "t")]), 1.0);
    let secs = s.value("pingscope_outage_seconds_total", &[("target", "t")]);
    let truth = (truth_end - truth_start) as f64 / 1e9;
    assert!(
        (secs - truth).abs() <= 0.4,
        "{secs} s in outage vs {truth} s"
    );
}

/// Outages by the rule, from the responder's outcomes in sending order: (index of the first lost
/// probe, lost count) per outage, only those closed by `until` replies.
fn expected_outages(lost: &[bool], after: usize, until: usize) -> Vec<(usize, u64)> {
    let mut out = Vec::new();
    let (mut run, mut run_start, mut ok) = (0, 0, 0);
    let mut open: Option<(usize, u64)> = None;
    for (i, &l) in lost.iter().enumerate() {
        if l {
            ok = 0;
            if let Some((_, n)) = &mut open {
                *n += 1;
                continue;
            }
            if run == 0 {
                run_start = i;
            }
            run += 1;
            if run >= after {
                open = Some((run_start, run as u64));
                run = 0;
            }
        } else {
            run = 0;
            if open.is_some() {
                ok += 1;
                if ok >= until {
                    out.extend(open.take());
                    ok = 0;
                }
            }
        }
    }
    out
}

#[test]
fn random_loss_opens_outages_only_at_three_losses_in_a_row() {
    let Some(net) = TestNet::start_and_enter(&profiles(json!({"delay": "1ms", "loss": 0.3})))
    else {
        return;
    };
    let d = Daemon::serve(net.dir(), &config("{after: 3, until: 2}"));
    // About 200 probes, then no loss so that the last outage (if any) closes.
    let enough = wait_until(Duration::from_secs(60), || echo_log(&net).len() >= 200);
    assert!(enough, "200 probes within 60 s");
    net.set_profiles(&profiles(json!({"delay": "1ms"})));
    std::thread::sleep(Duration::from_millis(1000));
    let log = echo_log(&net);
    let lost: Vec<bool> = log.iter().map(|e| e.action != "replied").collect();
    let want = expected_outages(&lost, 3, 2);
    // The seed gives both: outages, and pairs of losses that must not open one.
    let pairs = lost
        .windows(4)
        .filter(|w| !w[0] && w[1] && w[2] && !w[3])
        .count();
    assert!(
        !want.is_empty() && pairs > 0,
        "seed 7: {want:?}, {pairs} pairs"
    );
    let mut items = outages(&d);
    items.reverse(); // oldest first
    let got: Vec<(i128, u64)> = items
        .iter()
        .filter(|o| o["status"] == "ended")
        .map(|o| (ns(&o["start"]), o["lost"].as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(got.len(), want.len(), "got {items:?}, want {want:?}");
    for ((start, lost), (i, n)) in got.iter().zip(&want) {
        assert_eq!(*lost, *n, "outage from probe {i}");
        let truth = i128::from(log[*i].time_ns);
        assert!(
            (start - truth).abs() <= (INTERVAL / 2).as_nanos() as i128,
            "outage from probe {i}: start {start} vs {truth}"
        );
    }
    let s = d.scrape();
    assert_eq!(
        s.value("pingscope_outages_total", &[("target", "t")]),
        want.len() as f64
    );
}

#[test]
fn kill_9_during_an_outage_leaves_it_interrupted_with_its_lost_probes() {
    let Some(net) = TestNet::start_and_enter(&profiles(json!({"blackhole": true}))) else {
        return;
    };
    let mut d = Daemon::serve(net.dir(), &config("{after: 3, until: 3}"));
    // The outage is open and stored; every probe it lost before the kill is stored.
    let mut items = Vec::new();
    let open = wait_until(Duration::from_secs(10), || {
        items = outages(&d);
        items
            .first()
            .is_some_and(|o| o["status"] == "open" && o["lost"].as_u64() >= Some(10))
    });
    assert!(open, "no open outage: {items:?}");
    let counted = d
        .scrape()
        .value("pingscope_consecutive_lost", &[("target", "t")]);
    // Outage records do not wait for the store's batch interval (100 ms): one commit's time
    // before the kill is enough, on a loaded machine too.
    std::thread::sleep(Duration::from_millis(30));
    d.signal(Signal::SIGKILL);
    let killed = std::time::SystemTime::now();
    assert!(d.wait_exit(Duration::from_secs(5)).is_some(), "not killed");
    let drops: Vec<u64> = echo_log(&net)
        .iter()
        .filter(|e| e.action == "blackholed")
        .map(|e| e.time_ns)
        .collect();
    // A probe sent this long before the kill had timed out, been counted and been committed:
    // its timeout, plus what the tracker and one commit take.
    let settled = ns_of(killed) - (TIMEOUT + Duration::from_millis(30)).as_nanos() as i128;
    let must = drops.iter().filter(|t| i128::from(**t) < settled).count() as u64;
    let first_id = items[0]["id"].as_i64();

    let d = d.restart();
    let items = outages(&d);
    let old = items
        .iter()
        .find(|o| o["id"].as_i64() == first_id)
        .unwrap_or_else(|| panic!("outage lost: {items:?}"));
    assert_eq!(old["status"], "interrupted", "{old}");
    let lost = old["lost"].as_u64().unwrap_or(0);
    assert!(
        lost as f64 >= counted && lost >= must && lost <= drops.len() as u64,
        "stored {lost}: counted {counted} before the kill, {must} timed out 30 ms before it, \
         {} dropped by then",
        drops.len()
    );
    assert_eq!(old["end"], old["last_lost"], "ends at its last lost probe");
}

#[test]
fn bad_outage_queries_get_their_message() {
    let Some(net) = TestNet::start_and_enter(&profiles(json!({"delay": "1ms"}))) else {
        return;
    };
    let d = Daemon::serve(net.dir(), &config("{after: 3, until: 3}"));
    for (query, message) in [
        (
            "since=yesterday",
            "invalid parameter \\\"since\\\": \\\"yesterday\\\" is not an RFC 3339 time (e.g. 2026-01-02T15:04:05Z)",
        ),
        (
            "before=0",
            "invalid parameter \\\"before\\\": \\\"0\\\" is not an outage id",
        ),
        (
            "limit=0",
            "invalid parameter \\\"limit\\\": \\\"0\\\" is not in 1..=1000",
        ),
        (
            "colour=red",
            "unknown parameter \\\"colour\\\" (use target, since, until, limit, before)",
        ),
    ] {
        let (status, _, body) = d.get(&format!("/api/v1/outages?{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(message), "{query}: {body}");
    }
}
