//! Reload of `pingscope serve` through the test network: targets added, changed and removed
//! by SIGHUP and by `POST /-/reload` (a diff: unchanged targets keep their counters, removed
//! ones lose their series), an invalid file rejected while the old targets keep being probed,
//! and `--config.watch`.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use support::daemon::Daemon;
use support::daemon::SESSIONS;
use support::expo::Scrape;
use support::write_config;
use support::{TestNet, wait_until};

/// Every per-target counter (and histogram count/sum) that must never go down.
const COUNTERS: [&str; 7] = [
    "pingscope_sent_total",
    "pingscope_lost_total",
    "pingscope_late_replies_total",
    "pingscope_duplicates_total",
    "pingscope_rtt_seconds_count",
    "pingscope_rtt_seconds_sum",
    "pingscope_jitter_seconds_count",
];

fn profiles() -> serde_json::Value {
    json!({"seed": 5, "default": {"delay": "2ms"}, "hosts": {"198.18.0.32": {"delay": "2ms", "loss": 0.3}}})
}

fn config(targets: &[(&str, &str, &str)]) -> String {
    let mut s = String::from("defaults: {interval: 100ms, timeout: 500ms}\ntargets:\n");
    for (name, host, interval) in targets {
        s.push_str(&format!(
            "  - {{name: {name}, host: {host}, interval: {interval}}}\n"
        ));
    }
    s.push_str(SESSIONS);
    s
}

fn series_of(s: &Scrape, target: &str) -> usize {
    s.samples
        .iter()
        .filter(|x| x.labels.get("target").map(String::as_str) == Some(target))
        .count()
}

/// Whether the scrape has a `pingscope_sent_total` series with these labels: the address is
/// being probed (a reload has started it).
fn counts(s: &Scrape, labels: &[(&str, &str)]) -> bool {
    s.get("pingscope_sent_total", labels).is_some()
}

/// Panics when any counter of `target` is lower in `after` than in `before`.
fn assert_not_lower(before: &Scrape, after: &Scrape, target: &str) {
    for m in COUNTERS {
        let (b, a) = (
            before.value(m, &[("target", target)]),
            after.value(m, &[("target", target)]),
        );
        assert!(
            a >= b,
            "{m} of {target} went down across a reload: {b} -> {a}"
        );
    }
}

/// Scrapes in a loop until stopped, checking that `target`'s counters never go down.
fn watch_monotonic(
    d: &Daemon,
    target: &'static str,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<usize>) {
    let stop = Arc::new(AtomicBool::new(false));
    let url = d.url("/metrics");
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder()
            .no_proxy()
            .build()
            .unwrap();
        let mut last: Option<Scrape> = None;
        let mut n = 0;
        // Bounded: the test stops it within seconds; 2,000 scrapes is a hard ceiling.
        while !flag.load(Ordering::Relaxed) && n < 2_000 {
            let body = client.get(&url).send().unwrap().text().unwrap();
            let s = Scrape::parse(&body);
            if let Some(prev) = &last {
                assert_not_lower(prev, &s, target);
            }
            last = Some(s);
            n += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        n
    });
    (stop, handle)
}

fn wait_sent(d: &Daemon, target: &str, at_least: f64) {
    assert!(
        wait_until(Duration::from_secs(10), || {
            d.scrape()
                .get("pingscope_sent_total", &[("target", target)])
                .is_some_and(|v| v >= at_least)
        }),
        "{target} never reached {at_least} probes; daemon log:\n{}",
        d.log()
    );
}

fn wait_reloads(d: &Daemon, cond: impl Fn(&Scrape) -> bool, what: &str) -> Scrape {
    d.scrape_until(Duration::from_secs(10), what, cond)
}

fn rewrite(path: &Path, text: &str) {
    std::fs::write(path, text).expect("rewriting the config");
}

#[test]
fn add_change_remove_by_sighup_and_post() {
    let Some(net) = TestNet::start_and_enter(&profiles()) else {
        return;
    };
    let path = write_config(
        net.dir(),
        "serve.yml",
        &config(&[
            ("keep", "198.18.0.32", "100ms"),
            ("change", "198.18.0.21", "100ms"),
            ("drop", "198.18.0.22", "100ms"),
        ]),
    );
    let d = Daemon::start(&path, &[]);
    for t in ["keep", "change", "drop"] {
        wait_sent(&d, t, 10.0);
    }
    let (stop, watcher) = watch_monotonic(&d, "keep");

    // SIGHUP: keep unchanged, change moves address, drop removed, add new.
    let before = d.scrape();
    let change_sent = before.value("pingscope_sent_total", &[("target", "change")]);
    rewrite(
        &path,
        &config(&[
            ("keep", "198.18.0.32", "100ms"),
            ("change", "198.18.0.24", "100ms"),
            ("add", "198.18.0.23", "100ms"),
        ]),
    );
    d.signal(nix::sys::signal::Signal::SIGHUP);
    // The reload is done when the removed target is gone and the added and moved ones count
    // (their tasks start in no set order).
    let after = wait_reloads(
        &d,
        |s| {
            series_of(s, "drop") == 0
                && counts(s, &[("target", "add")])
                && counts(s, &[("target", "change"), ("ip", "198.18.0.24")])
        },
        "SIGHUP reload",
    );
    assert_not_lower(&before, &after, "keep");
    assert!(
        after
            .find(
                "pingscope_sent_total",
                &[("target", "change"), ("ip", "198.18.0.21")]
            )
            .is_empty(),
        "the changed target's old series stayed"
    );
    let restarted = after.value(
        "pingscope_sent_total",
        &[("target", "change"), ("ip", "198.18.0.24")],
    );
    assert!(
        restarted < change_sent,
        "changed target did not restart: {restarted} vs {change_sent}"
    );
    assert_eq!(
        after.value("pingscope_target_info", &[("target", "change")]),
        1.0
    );
    assert_eq!(
        after.value("pingscope_config_last_reload_successful", &[]),
        1.0
    );

    // POST /-/reload: add another, remove `change`; other methods are refused.
    wait_sent(&d, "add", 5.0);
    let before = d.scrape();
    rewrite(
        &path,
        &config(&[
            ("keep", "198.18.0.32", "100ms"),
            ("add", "198.18.0.23", "100ms"),
            ("posted", "2001:db8::23", "100ms"),
        ]),
    );
    let (status, body) = d.post("/-/reload");
    assert_eq!(status, 200, "POST /-/reload: {body}");
    let (status, _, _) = d.get("/-/reload");
    assert_eq!(status, 405, "GET /-/reload");
    let other = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap();
    for method in [reqwest::Method::DELETE, reqwest::Method::PUT] {
        let status = other
            .request(method.clone(), d.url("/-/reload"))
            .send()
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 405, "{method} /-/reload");
    }
    let after = wait_reloads(&d, |s| counts(s, &[("target", "posted")]), "POST reload");
    assert_eq!(
        series_of(&after, "change"),
        0,
        "removed target's series stayed"
    );
    assert_not_lower(&before, &after, "keep");
    assert_not_lower(&before, &after, "add");
    wait_sent(&d, "posted", 3.0);
    let api = d.targets();
    let mut names: Vec<&str> = api["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["target"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["add", "keep", "posted"]);

    // A storm of SIGHUPs with an unchanged file: each reload is an empty diff.
    let before = d.scrape();
    for _ in 0..10 {
        d.signal(nix::sys::signal::Signal::SIGHUP);
    }
    assert!(
        wait_until(Duration::from_secs(10), || {
            d.log().matches("config reloaded").count() >= 3
        }),
        "SIGHUP storm not served:\n{}",
        d.log()
    );
    let after = d.scrape();
    for t in ["keep", "add", "posted"] {
        assert_not_lower(&before, &after, t);
    }
    assert_eq!(
        after.value("pingscope_config_last_reload_successful", &[]),
        1.0
    );

    stop.store(true, Ordering::Relaxed);
    let scrapes = watcher.join().expect("monotonicity watcher");
    assert!(scrapes > 10, "only {scrapes} scrapes during the reloads");
}

#[test]
fn invalid_config_is_rejected_and_old_targets_keep_going() {
    let Some(net) = TestNet::start_and_enter(&profiles()) else {
        return;
    };
    let good = config(&[("a", "198.18.0.20", "100ms"), ("b", "198.18.0.21", "100ms")]);
    let path = write_config(net.dir(), "serve.yml", &good);
    let d = Daemon::start(&path, &[]);
    wait_sent(&d, "a", 5.0);

    rewrite(
        &path,
        &format!(
            "defaults: {{interval: 100ms, timeout: 500ms}}\ntargets:\n  - {{name: a, host: 198.18.0.20, bogus: 1}}\n  - {{name: a, host: 198.18.0.25}}\n{SESSIONS}"
        ),
    );
    let (status, body) = d.post("/-/reload");
    assert_eq!(status, 500, "invalid config accepted: {body}");
    let file = path.display().to_string();
    assert!(
        body.contains(&format!("{file}:3: targets[0].bogus: unknown key"))
            && body.contains(&format!(
                "{file}:4: targets[1].name: duplicate target name \"a\""
            )),
        "reload error does not list every error with file and line:\n{body}"
    );
    let s = d.scrape();
    assert_eq!(s.value("pingscope_config_last_reload_successful", &[]), 0.0);
    let sent = s.value("pingscope_sent_total", &[("target", "b")]);
    // The running config stays: both old targets go on, nothing of the new file appears.
    wait_sent(&d, "b", sent + 5.0);
    wait_sent(
        &d,
        "a",
        s.value("pingscope_sent_total", &[("target", "a")]) + 5.0,
    );
    assert!(
        d.scrape()
            .find("pingscope_sent_total", &[("ip", "198.18.0.25")])
            .is_empty()
    );

    // SIGHUP with the same invalid file: still rejected, still running.
    d.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(5), || d
            .log()
            .matches("config reload rejected")
            .count()
            >= 2),
        "SIGHUP reload of an invalid file not logged as rejected:\n{}",
        d.log()
    );
    let s = d.scrape();
    assert_eq!(s.value("pingscope_config_last_reload_successful", &[]), 0.0);
    wait_sent(
        &d,
        "b",
        s.value("pingscope_sent_total", &[("target", "b")]) + 3.0,
    );

    // Fixed: accepted, the gauge goes back to 1 and the timestamp moves.
    let ts_before = s.value(
        "pingscope_config_last_reload_success_timestamp_seconds",
        &[],
    );
    rewrite(&path, &good);
    let (status, body) = d.post("/-/reload");
    assert_eq!(status, 200, "{body}");
    let s = d.scrape();
    assert_eq!(s.value("pingscope_config_last_reload_successful", &[]), 1.0);
    assert!(
        s.value(
            "pingscope_config_last_reload_success_timestamp_seconds",
            &[]
        ) >= ts_before
    );
}

#[test]
fn config_watch_reloads_on_config_and_target_file_change() {
    let Some(net) = TestNet::start_and_enter(&profiles()) else {
        return;
    };
    let with_files = |targets: &[(&str, &str, &str)]| {
        config(targets).replace("targets:\n", "target_files: [sd/*.yml]\ntargets:\n")
    };
    let path = write_config(
        net.dir(),
        "serve.yml",
        &with_files(&[("a", "198.18.0.20", "100ms")]),
    );
    std::fs::create_dir(net.dir().join("sd")).unwrap();
    let d = Daemon::start(&path, &["--config.watch"]);
    wait_sent(&d, "a", 3.0);

    // The config file changes: a target is added, `a` is untouched.
    let before = d.scrape();
    rewrite(
        &path,
        &with_files(&[
            ("a", "198.18.0.20", "100ms"),
            ("watched", "198.18.0.26", "100ms"),
        ]),
    );
    let after = wait_reloads(&d, |s| series_of(s, "watched") > 0, "--config.watch reload");
    assert_not_lower(&before, &after, "a");

    // A new file_sd file appears in the watched folder: its hosts become targets with its labels.
    rewrite(
        &net.dir().join("sd/site.yml"),
        "- targets: [198.18.0.27]\n  labels: {site: ams, __meta_x: dropped}\n",
    );
    let s = wait_reloads(
        &d,
        |s| counts(s, &[("target", "198.18.0.27")]),
        "target file added",
    );
    assert_eq!(
        s.find(
            "pingscope_sent_total",
            &[("target", "198.18.0.27"), ("site", "ams")]
        )
        .len(),
        1,
        "file_sd labels missing"
    );
    assert!(
        s.samples.iter().all(|x| !x.labels.contains_key("__meta_x")),
        "a __meta_ label became a series label"
    );
    // Its labels change: the old label set is gone, the new one is there.
    rewrite(
        &net.dir().join("sd/site.yml"),
        "- targets: [198.18.0.27]\n  labels: {site: fra}\n",
    );
    let s = wait_reloads(
        &d,
        |s| {
            !s.find(
                "pingscope_sent_total",
                &[("target", "198.18.0.27"), ("site", "fra")],
            )
            .is_empty()
        },
        "target file relabelled",
    );
    let stale = s.find("pingscope_sent_total", &[("site", "ams")]);
    assert!(stale.is_empty(), "old label set kept: {stale:?}");

    // Removal through the config file.
    rewrite(&path, &with_files(&[("watched", "198.18.0.26", "100ms")]));
    wait_reloads(&d, |s| series_of(s, "a") == 0, "--config.watch removal");
    assert!(series_of(&d.scrape(), "watched") > 0);
}
