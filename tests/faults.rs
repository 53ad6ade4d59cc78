//! Fault tests (issue 8 item 4): the real daemon binary, started inside a test network namespace
//! (`lo` and the responder's TUN device only), while the network, DNS, signals and the session
//! store misbehave. Every wait is bounded; every address is in 198.18.0.0/15 or on loopback inside
//! the namespace; DNS is a server the test runs on 127.0.0.1 there.
//!
//! Each test enters its own namespace with `TestNet::enter`, so run them one per process
//! (`cargo nextest run --test faults`; under `cargo test` use `--test-threads=1` is not needed:
//! `enter` moves only the calling thread, and every test spawns its daemon from its own thread).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

mod support;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::daemon::Daemon;
use support::dns::DnsServer;
use support::expo::Scrape;
use support::{TestNet, wait_until};

/// The daemon under test, with debug logs, started after `enter` (so it runs in the namespace).
/// The daemon (debug logs) on [`write_config`]`(targets, extra)` in the test network's folder.
fn start_daemon(net: &TestNet, targets: &str, extra: &str) -> Daemon {
    Daemon::start(
        &write_config(net.dir(), targets, extra),
        &["--log.level", "debug"],
    )
}

fn metric(d: &Daemon, name: &str, labels: &[(&str, &str)]) -> f64 {
    d.scrape().sum(name, labels)
}

/// Waits (at most 10 s) until the sum of `name{labels}` reaches `at_least`.
fn wait_metric(d: &Daemon, name: &str, labels: &[(&str, &str)], at_least: f64) {
    wait_for(d, 10, &format!("{name} {labels:?} >= {at_least}"), || {
        metric(d, name, labels) >= at_least
    });
}

fn session(d: &Daemon, id: &str) -> serde_json::Value {
    let (status, _, text) = d.get(&format!("/api/v1/sessions/{id}"));
    assert_eq!(status, 200, "GET session {id}: {text}");
    serde_json::from_str(&text).expect("session JSON")
}

/// Waits (bounded, 10 s) for `n` replies from `target` more than it has now.
fn wait_more_replies(d: &Daemon, target: &str, n: f64, what: &str) {
    let before = rtt_count(d, target);
    wait_for(d, 10, what, || rtt_count(d, target) >= before + n);
}

/// The daemon still answers `/-/healthy` with 200.
#[track_caller]
fn assert_healthy(d: &Daemon) {
    assert_eq!(d.try_get("/-/healthy").map(|r| r.0), Some(200));
}

/// Waits (bounded) until `cond` holds; panics with `what` and the daemon's log otherwise.
fn wait_for(d: &Daemon, secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    if !wait_until(Duration::from_secs(secs), &mut cond) {
        panic!(
            "timed out after {secs}s waiting for: {what}\ndaemon log tail:\n{}",
            tail(&d.log())
        );
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Writes a config with these targets (YAML list items) and a store in `dir/db/`.
fn write_config(dir: &Path, targets: &str, extra: &str) -> PathBuf {
    let db = dir.join("db");
    std::fs::create_dir_all(&db).expect("db dir");
    let path = dir.join("pingscope.yml");
    let text = format!(
        "defaults: {{interval: 100ms, timeout: 300ms}}\n\
         sessions: {{database: {}, min_interval: 10ms}}\n\
         {extra}\n\
         targets:\n{targets}",
        db.join("pingscope.db").display()
    );
    // Written whole and renamed into place, as a config tool would: a daemon reloading while a
    // plain write is half done would read a truncated file (an empty one is a valid config
    // with no targets).
    let tmp = dir.join("pingscope.yml.tmp");
    std::fs::write(&tmp, text).expect("writing the config");
    std::fs::rename(&tmp, &path).expect("renaming the config into place");
    path
}

fn rtt_count(d: &Daemon, target: &str) -> f64 {
    metric(d, "pingscope_rtt_seconds_count", &[("target", target)])
}

/// [`start_net`], then [`start_daemon`] in it.
fn start(targets: &str, extra: &str) -> Option<(TestNet, Daemon)> {
    let net = start_net()?;
    let d = start_daemon(&net, targets, extra);
    Some((net, d))
}

/// The test network every fault test starts from (each then breaks it its own way), entered.
fn start_net() -> Option<TestNet> {
    TestNet::start_and_enter(&serde_json::json!({"default": {"delay": "1ms"}}))
}

/// The responder's PID, found by its profile file, which is unique to this test network.
fn responder_pid(net: &TestNet) -> Pid {
    let want = net.dir().join("profiles.json");
    let want = want.to_string_lossy();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        let is_responder = args
            .first()
            .is_some_and(|a| a.ends_with(b"pingscope-testnet"));
        if is_responder && args.iter().any(|a| *a == want.as_bytes()) {
            return Pid::from_raw(pid);
        }
    }
    panic!("responder for {want} not found");
}

/// Replaces the responder's profiles and makes it re-read them.
fn set_profiles(net: &TestNet, profiles: &serde_json::Value) {
    std::fs::write(net.dir().join("profiles.json"), profiles.to_string()).expect("profiles");
    kill(responder_pid(net), Signal::SIGHUP).expect("SIGHUP to the responder");
}

fn ip(net: &TestNet, args: &[&str]) -> bool {
    net.command("ip")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn host_stops_answering_and_comes_back() {
    let Some((net, d)) = start(
        "  - {name: flaky, host: 198.18.0.20, metrics: {window_gauges: true}}\n  - {name: steady, host: 198.18.0.21}\n",
        "",
    ) else {
        return;
    };
    wait_for(&d, 10, "first replies", || rtt_count(&d, "flaky") >= 5.0);

    set_profiles(
        &net,
        &serde_json::json!({"default": {"delay": "1ms"}, "hosts": {"198.18.0.20": {"blackhole": true}}}),
    );
    // Probes already answered or in flight settle within the 300 ms timeout.
    std::thread::sleep(Duration::from_millis(500));
    let (r0, l0) = (
        rtt_count(&d, "flaky"),
        metric(&d, "pingscope_lost_total", &[("target", "flaky")]),
    );
    let s0 = rtt_count(&d, "steady");
    // The blackholed host's probes are lost.
    wait_metric(&d, "pingscope_lost_total", &[("target", "flaky")], l0 + 5.0);
    assert_eq!(rtt_count(&d, "flaky"), r0, "a blackholed host got replies");
    assert!(rtt_count(&d, "steady") > s0, "the other target stopped too");
    let window = metric(&d, "pingscope_window_loss_ratio", &[("target", "flaky")]);
    assert!(window > 0.0 && window <= 1.0, "window loss {window}");

    set_profiles(&net, &serde_json::json!({"default": {"delay": "1ms"}}));
    wait_more_replies(&d, "flaky", 5.0, "flaky answers again");
    assert_healthy(&d);
}

#[test]
fn name_stops_resolving_and_address_changes() {
    let Some(net) = start_net() else {
        return;
    };
    let old = Ipv4Addr::new(198, 18, 0, 30);
    let new = Ipv4Addr::new(198, 18, 0, 31);
    let gone = Ipv4Addr::new(198, 18, 0, 32);
    let dns = DnsServer::with(&[
        ("moving.pingscope.test", &[&old.to_string()]),
        ("vanishing.pingscope.test", &[&gone.to_string()]),
    ]);
    let d = start_daemon(
        &net,
        "  - {name: moving, host: moving.pingscope.test, family: ip4}\n  - {name: vanishing, host: vanishing.pingscope.test, family: ip4}\n",
        &format!("dns: {{servers: [\"{}\"], refresh: 1s}}", dns.addr()),
    );
    wait_for(&d, 10, "replies from both names", || {
        rtt_count(&d, "moving") >= 3.0 && rtt_count(&d, "vanishing") >= 3.0
    });
    assert!(
        metric(
            &d,
            "pingscope_sent_total",
            &[("target", "moving"), ("ip", "198.18.0.30")]
        ) > 0.0
    );

    dns.set("moving.pingscope.test.", &[&new.to_string()]);
    dns.remove("vanishing.pingscope.test.");
    // `moving` follows its new address.
    wait_metric(
        &d,
        "pingscope_rtt_seconds_count",
        &[("target", "moving"), ("ip", "198.18.0.31")],
        3.0,
    );
    let info = d.metrics_text();
    assert!(
        Scrape::parse(&info).sum(
            "pingscope_target_info",
            &[("target", "moving"), ("ip", "198.18.0.31")]
        ) == 1.0,
        "target_info does not show the new address"
    );
    assert_eq!(
        Scrape::parse(&info).sum(
            "pingscope_target_info",
            &[("target", "moving"), ("ip", "198.18.0.30")]
        ),
        0.0,
        "target_info still shows the old address"
    );
    // The failed lookups are counted.
    wait_metric(
        &d,
        "pingscope_resolve_errors_total",
        &[("target", "vanishing")],
        1.0,
    );
    assert!(metric(&d, "pingscope_sent_total", &[("target", "moving")]) > 0.0);

    // The name comes back: probing of it goes on (or resumes).
    dns.set("vanishing.pingscope.test.", &[&gone.to_string()]);
    wait_more_replies(&d, "vanishing", 3.0, "vanishing answers again");
    assert_healthy(&d);
}

#[test]
fn interface_down_and_up() {
    let Some((net, d)) = start("  - {name: a, host: 198.18.0.20}\n", "") else {
        return;
    };
    wait_for(&d, 10, "first replies", || rtt_count(&d, "a") >= 3.0);

    assert!(
        ip(&net, &["link", "set", "tn0", "down"]),
        "ip link set tn0 down"
    );
    // Send errors while tn0 is down.
    wait_metric(&d, "pingscope_send_errors_total", &[("target", "a")], 3.0);
    let errors = d.metrics_text();
    let reasons: Vec<&str> = errors
        .lines()
        .filter(|l| l.starts_with("pingscope_send_errors_total{") && l.contains("target=\"a\""))
        .collect();
    assert!(
        !reasons.is_empty() && reasons.iter().all(|l| l.contains("reason=\"")),
        "{reasons:?}"
    );
    assert_healthy(&d);

    assert!(
        ip(&net, &["link", "set", "tn0", "up"]),
        "ip link set tn0 up"
    );
    wait_more_replies(&d, "a", 3.0, "replies after tn0 is up");
    eprintln!("send errors while down: {reasons:?}");
}

#[test]
fn send_fails_without_route_and_daemon_stays_healthy() {
    let Some((net, d)) = start("  - {name: a, host: 198.18.0.20}\n", "") else {
        return;
    };
    wait_for(&d, 10, "first replies", || rtt_count(&d, "a") >= 3.0);

    // Every route into the test range goes (bounded: the responder adds at most two).
    let mut removed = 0;
    while removed < 4 && ip(&net, &["route", "del", "198.18.0.0/15"]) {
        removed += 1;
    }
    assert!(removed >= 1, "no route to remove");
    // Counted as network_unreachable.
    wait_metric(
        &d,
        "pingscope_send_errors_total",
        &[("target", "a"), ("reason", "network_unreachable")],
        3.0,
    );
    assert_healthy(&d);
    let sent = metric(&d, "pingscope_sent_total", &[("target", "a")]);

    assert!(
        ip(&net, &["route", "add", "198.18.0.0/15", "dev", "tn0"]),
        "route add"
    );
    wait_more_replies(&d, "a", 3.0, "replies with the route back");
    assert!(metric(&d, "pingscope_sent_total", &[("target", "a")]) > sent);
}

#[test]
fn sighup_storm() {
    let Some(net) = start_net() else {
        return;
    };
    let with_b = "  - {name: a, host: 198.18.0.20}\n  - {name: b, host: 198.18.0.21}\n";
    let without_b = "  - {name: a, host: 198.18.0.20}\n";
    let mut d = start_daemon(&net, with_b, "");
    wait_for(&d, 10, "first replies", || rtt_count(&d, "a") >= 3.0);

    let mut last_sent = 0.0;
    let mut last_rtt = 0.0;
    for i in 0..100 {
        // Half the reloads change the target list; target a is in every version.
        write_config(net.dir(), if i % 2 == 0 { without_b } else { with_b }, "");
        d.signal(Signal::SIGHUP);
        std::thread::sleep(Duration::from_millis(10));
        if i % 10 == 9 {
            let m = d.metrics_text();
            let sent = Scrape::parse(&m).sum("pingscope_sent_total", &[("target", "a")]);
            let rtt = Scrape::parse(&m).sum("pingscope_rtt_seconds_count", &[("target", "a")]);
            assert!(
                sent >= last_sent,
                "sent_total of a went down: {last_sent} → {sent}"
            );
            assert!(
                rtt >= last_rtt,
                "rtt count of a went down: {last_rtt} → {rtt}"
            );
            (last_sent, last_rtt) = (sent, rtt);
        }
    }
    assert!(d.alive(), "daemon died in the storm:\n{}", tail(&d.log()));
    // The last config (i = 99) has b; every reload of a valid file succeeds.
    wait_for(&d, 10, "b monitored after the storm", || {
        rtt_count(&d, "b") >= 1.0
    });
    let m = d.metrics_text();
    assert_eq!(
        Scrape::parse(&m).sum("pingscope_config_last_reload_successful", &[]),
        1.0
    );
    let sent = Scrape::parse(&m).sum("pingscope_sent_total", &[("target", "a")]);
    assert!(sent >= last_sent);
    wait_for(&d, 5, "a still probed", || {
        metric(&d, "pingscope_sent_total", &[("target", "a")]) > sent
    });
    assert!(!d.log().contains("panicked"), "a panic in the log");
}

/// Makes a folder and its files immutable (`chattr +i`) for as long as it lives.
struct Immutable(PathBuf);

impl Immutable {
    fn set(dir: &Path) -> Option<Immutable> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("db dir")
            .flatten()
            .map(|e| e.path())
            .collect();
        paths.push(dir.to_path_buf());
        let ok = Command::new("chattr")
            .arg("+i")
            .args(&paths)
            .status()
            .is_ok_and(|s| s.success());
        let guard = Immutable(dir.to_path_buf());
        ok.then_some(guard)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let mut paths = vec![self.0.clone()];
        if let Ok(rd) = std::fs::read_dir(&self.0) {
            paths.extend(rd.flatten().map(|e| e.path()));
        }
        let _ = Command::new("chattr").arg("-i").args(&paths).status();
    }
}

fn wait_session_end(d: &Daemon, id: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    wait_for(d, 10, "session to end", || {
        last = session(d, id);
        last["status"] != "running"
    });
    last
}

#[test]
fn store_folder_read_only_fails_sessions_not_monitors() {
    let Some((net, d)) = start("  - {name: a, host: 198.18.0.20}\n", "") else {
        return;
    };
    let body = serde_json::json!({"target": "198.18.0.20", "count": 3, "interval": "50ms", "timeout": "200ms"});
    let (status, rec) = d.post_json("/api/v1/sessions", &body);
    assert_eq!(status, 201, "{rec}");
    let done = wait_session_end(&d, rec["id"].as_str().unwrap());
    assert_eq!(done["status"], "completed", "{done}");

    let Some(guard) = Immutable::set(&net.dir().join("db")) else {
        support::require(false, "chattr +i is not supported on this file system");
        return;
    };
    let (status, body2) = d.post_json("/api/v1/sessions", &body);
    let failed_clearly = if status == 201 {
        // Accepted before the store was touched: the session itself must end failed, saying why.
        let end = wait_session_end(&d, body2["id"].as_str().unwrap());
        eprintln!("session on a read-only store: {end}");
        end["status"] == "failed" && end["error"].as_str().is_some_and(|e| !e.is_empty())
    } else {
        eprintln!("start on a read-only store: {status} {body2}");
        status >= 500
            && body2["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
    };
    assert!(failed_clearly, "no clear failure: {status} {body2}");

    // Monitors go on.
    let sent = metric(&d, "pingscope_sent_total", &[("target", "a")]);
    wait_for(&d, 5, "monitor still probing", || {
        metric(&d, "pingscope_sent_total", &[("target", "a")]) >= sent + 3.0
    });
    assert_healthy(&d);

    // And sessions work again once the folder is writable.
    drop(guard);
    let (status, rec3) = d.post_json("/api/v1/sessions", &body);
    assert_eq!(status, 201, "after the store is writable again: {rec3}");
    let end = wait_session_end(&d, rec3["id"].as_str().unwrap());
    assert_eq!(end["status"], "completed", "{end}");
}

#[test]
fn kill_9_mid_session_keeps_completed_and_marks_interrupted() {
    let Some((_net, mut d)) = start("  - {name: a, host: 198.18.0.20}\n", "") else {
        return;
    };
    let short = serde_json::json!({"target": "198.18.0.20", "count": 5, "interval": "20ms", "timeout": "200ms"});
    let (status, rec) = d.post_json("/api/v1/sessions", &short);
    assert_eq!(status, 201, "{rec}");
    let done_id = rec["id"].as_str().unwrap().to_owned();
    let done = wait_session_end(&d, &done_id);
    assert_eq!(done["status"], "completed");
    assert_eq!(done["samples"].as_array().map(Vec::len), Some(5), "{done}");

    let long = serde_json::json!({"target": "198.18.0.21", "count": 1000, "interval": "20ms", "timeout": "200ms"});
    let (status, rec) = d.post_json("/api/v1/sessions", &long);
    assert_eq!(status, 201, "{rec}");
    let run_id = rec["id"].as_str().unwrap().to_owned();
    wait_for(&d, 10, "the long session under way", || {
        session(&d, &run_id)["samples"]
            .as_array()
            .is_some_and(|s| s.len() >= 10)
    });
    // Give the store's writer a moment to have some samples on disk, then kill it outright.
    std::thread::sleep(Duration::from_millis(300));
    let killed = d.signal_and_wait(Signal::SIGKILL, Duration::from_secs(5));
    assert!(!killed.success(), "{killed}");

    let d = d.restart();
    let after = session(&d, &done_id);
    assert_eq!(after["status"], "completed");
    assert_eq!(
        after["samples"], done["samples"],
        "completed session changed"
    );
    assert_eq!(
        after["summary"], done["summary"],
        "completed session's summary changed"
    );
    let cut = session(&d, &run_id);
    assert_eq!(cut["status"], "interrupted", "{cut}");
    let kept = cut["samples"].as_array().map_or(0, Vec::len);
    eprintln!("interrupted session kept {kept} samples");
    assert!(kept < 1000);
}
