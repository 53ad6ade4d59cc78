//! A `kind: path` monitor in the daemon, through the test network: the `pingscope_path_*` series
//! name the configured hops, the scheduled path change is counted exactly once and changes the
//! path id, and the old hops' series are deleted after the grace period; a `protocol: udp`
//! monitor, a `/probe?kind=path&protocol=udp` and a UDP path session find their hops with UDP
//! datagrams only.
//!
//! Needs root (namespaces, TUN device). Without root the test skips with a message, unless `CI`
//! is set, where it fails.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use support::daemon::Daemon;
use support::expo::Scrape;
use support::{TestNet, changing_path, wait_until, write_config};

const CONFIG: &str = "sessions:
  database: {{DIR}}/s.db
targets:
  - name: p
    host: 198.18.0.9
    kind: path
    interval: 300ms
    timeout: 1s
    path: {max_ttl: 8}
";

/// `pingscope_path_hop_info`'s (ttl, hop_ip) pairs of target `p`.
fn hops(s: &Scrape) -> BTreeSet<(String, String)> {
    s.find("pingscope_path_hop_info", &[("target", "p")])
        .iter()
        .map(|x| (x.labels["ttl"].clone(), x.labels["hop_ip"].clone()))
        .collect()
}

/// Scrapes until `ok` holds of target `p`'s hops (for at most `secs` seconds) and returns that
/// scrape; otherwise fails, naming `what` and the hops last seen.
fn scrape_hops(
    d: &Daemon,
    secs: u64,
    what: &str,
    ok: impl Fn(&BTreeSet<(String, String)>) -> bool,
) -> Scrape {
    let mut s = d.scrape();
    let seen = wait_until(Duration::from_secs(secs), || {
        s = d.scrape();
        ok(&hops(&s))
    });
    assert!(seen, "{what}: {:?}\n{}", hops(&s), d.log());
    s
}

/// `GET /probe?kind=path&QUERY`, which must answer 200 with `probe_success` 1: the answer
/// parsed, and as text.
fn path_probe(d: &Daemon, query: &str) -> (Scrape, String) {
    let (status, _, body) = d.get(&format!("/probe?kind=path&{query}"));
    assert_eq!(status, 200, "{body}");
    let s = Scrape::parse(&body);
    assert_eq!(s.value("probe_success", &[]), 1.0, "{body}");
    (s, body)
}

fn pairs(list: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

fn path_ids(s: &Scrape) -> Vec<String> {
    s.label_values("pingscope_path_info", "path_id")
}

#[test]
fn a_path_monitor_exports_its_hops_and_counts_one_change() {
    let path = changing_path(support::hops("198.18.10.", 3, 1), "5s");
    let Some(net) =
        TestNet::start_and_enter(&json!({"hosts": {"198.18.0.9": {"delay": "1ms", "path": path}}}))
    else {
        return;
    };
    let config = write_config(net.dir(), "serve.yml", CONFIG);
    let d = Daemon::start(&config, &[]);
    let old = pairs(&[
        ("1", "198.18.10.1"),
        ("2", "198.18.10.2"),
        ("3", "198.18.10.3"),
        ("4", "198.18.0.9"),
    ]);
    let new = pairs(&[
        ("1", "198.18.20.1"),
        ("2", "198.18.20.2"),
        ("3", "198.18.20.3"),
        ("4", "198.18.0.9"),
    ]);
    let mut s = scrape_hops(&d, 4, "the old path", |h| *h == old);
    assert_eq!(s.value("pingscope_path_length", &[("target", "p")]), 4.0);
    assert_eq!(
        s.value("pingscope_path_changes_total", &[("target", "p")]),
        0.0
    );
    let first_id = path_ids(&s);
    assert_eq!(first_id.len(), 1, "one path id");
    for ttl in ["1", "2", "3", "4"] {
        assert!(
            s.value(
                "pingscope_path_hop_sent_total",
                &[("target", "p"), ("ttl", ttl)]
            ) > 0.0
        );
        assert_eq!(
            s.value(
                "pingscope_path_hop_lost_total",
                &[("target", "p"), ("ttl", ttl)]
            ),
            0.0
        );
        assert!(
            s.value(
                "pingscope_path_hop_rtt_seconds_count",
                &[("target", "p"), ("ttl", ttl)]
            ) > 0.0
        );
    }
    // The destination's answers are the monitor's ping series. A scrape writes those before
    // the path series, so a round that lands in between shows in the hops only: asked again.
    let sent = wait_until(Duration::from_secs(4), || {
        d.scrape().value("pingscope_sent_total", &[("target", "p")]) > 0.0
    });
    assert!(sent, "no probe in the ping series\n{}", d.log());
    // The change: the new hops appear, counted once, with a new id.
    s = scrape_hops(&d, 10, "the new path", |h| new.is_subset(h));
    assert_eq!(
        s.value("pingscope_path_changes_total", &[("target", "p")]),
        1.0
    );
    assert_ne!(path_ids(&s), first_id);
    // The old responders go after the grace period (10 rounds of 300 ms), and nothing else changes.
    s = scrape_hops(&d, 8, "old hops deleted", |h| *h == new);
    assert_eq!(
        s.value("pingscope_path_changes_total", &[("target", "p")]),
        1.0
    );
    assert_eq!(path_ids(&s).len(), 1);
}

#[test]
fn probe_with_kind_path_answers_per_hop_families_within_the_budget() {
    let Some(net) =
        TestNet::start_and_enter(&json!({"hosts": {"198.18.0.9": {"delay": "1ms", "path": {
            "hops": [
                {"addr": "198.18.10.1", "delay": "1ms"},
                {"addr": "198.18.10.2", "delay": "1ms"}
            ]
        }}}}))
    else {
        return;
    };
    let config = write_config(
        net.dir(),
        "serve.yml",
        "sessions:\n  database: {{DIR}}/s.db\n",
    );
    let d = Daemon::start(&config, &[]);
    let (s, body) = path_probe(&d, "target=198.18.0.9&count=3&interval=100ms&max_ttl=6");
    assert_eq!(s.value("probe_path_rounds", &[]), 3.0, "{body}");
    assert_eq!(s.value("probe_path_length", &[]), 3.0, "{body}");
    let info: BTreeSet<(String, String)> = s
        .find("probe_path_hop_info", &[])
        .iter()
        .map(|x| (x.labels["ttl"].clone(), x.labels["hop_ip"].clone()))
        .collect();
    assert_eq!(
        info,
        pairs(&[
            ("1", "198.18.10.1"),
            ("2", "198.18.10.2"),
            ("3", "198.18.0.9")
        ]),
        "{body}"
    );
    for ttl in ["1", "2", "3"] {
        assert_eq!(
            s.value("probe_path_hop_sent", &[("ttl", ttl)]),
            3.0,
            "{body}"
        );
        assert_eq!(
            s.value("probe_path_hop_lost", &[("ttl", ttl)]),
            0.0,
            "{body}"
        );
        let mean = s.value(
            "probe_path_hop_rtt_seconds",
            &[("ttl", ttl), ("stat", "mean")],
        );
        assert!(mean > 0.0 && mean < 0.1, "TTL {ttl}: {mean}");
    }
    assert_eq!(s.find("probe_path_info", &[]).len(), 1, "{body}");
    // Many rounds asked, a 2 s scrape timeout: the answer comes within it, with fewer rounds.
    let started = std::time::Instant::now();
    let resp = d
        .http()
        .get(d.url("/probe?target=198.18.0.9&kind=path&count=50&interval=1s"))
        .header("X-Prometheus-Scrape-Timeout-Seconds", "2")
        .send()
        .expect("probe");
    let elapsed = started.elapsed();
    let body = resp.text().expect("body");
    let s = Scrape::parse(&body);
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    let rounds = s.value("probe_path_rounds", &[]);
    assert!((1.0..50.0).contains(&rounds), "{rounds}: {body}");
    assert_eq!(s.value("probe_success", &[]), 1.0);
}

#[test]
fn udp_path_monitor_and_probe_find_the_hops_with_udp() {
    let Some(net) = TestNet::start_and_enter(&json!({"hosts": {
        "198.18.0.9": {"path": {"hops": [{"addr": "198.18.10.1"}, {"addr": "198.18.10.2"}]}},
        "2001:db8::9": {"path": {"hops": [{"addr": "2001:db8:10::1"}]}}
    }})) else {
        return;
    };
    let config = write_config(
        net.dir(),
        "serve.yml",
        &CONFIG.replace("path: {max_ttl: 8}", "path: {max_ttl: 8, protocol: udp}"),
    );
    let d = Daemon::start(&config, &[]);
    let want = pairs(&[
        ("1", "198.18.10.1"),
        ("2", "198.18.10.2"),
        ("3", "198.18.0.9"),
    ]);
    let s = scrape_hops(&d, 4, "the monitor's path", |h| *h == want);
    assert_eq!(s.value("pingscope_path_length", &[("target", "p")]), 3.0);
    let (s, body) = path_probe(
        &d,
        "target=2001:db8::9&protocol=udp&count=2&interval=100ms&max_ttl=6",
    );
    assert_eq!(s.value("probe_path_length", &[]), 2.0, "{body}");
    // A path session over UDP keeps its protocol and pace in its stored parameters and runs
    // with them.
    let (status, rec) = d.post_json(
        "/api/v1/sessions",
        &json!({"target": "198.18.0.9", "kind": "path", "protocol": "udp", "pace": "20ms",
                "count": 2, "interval": "200ms", "max_ttl": 6}),
    );
    assert_eq!(status, 201, "{rec}");
    let detail = session(&d, rec["id"].as_str().unwrap(), Duration::from_secs(10));
    assert_eq!(detail["status"], "completed", "{detail}");
    let path = &detail["params"]["path"];
    assert_eq!(
        (&path["protocol"], &path["pace"]),
        (&json!("udp"), &json!("20ms")),
        "{detail}"
    );
    assert_eq!(detail["summary"]["received"], 2, "{detail}");
    // All went out as UDP to traceroute's port, never as echo requests.
    let log = net.log();
    assert!(!log.is_empty());
    let kinds: BTreeSet<(String, Option<u16>)> =
        log.iter().map(|e| (e.proto.clone(), e.dport)).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([("udp".to_owned(), Some(33434))]),
        "{kinds:?}"
    );
}

/// `GET /api/v1/sessions/{id}` until it is no longer running (bounded).
fn session(d: &Daemon, id: &str, within: Duration) -> serde_json::Value {
    let c = support::api::client();
    let mut body = serde_json::Value::Null;
    wait_until(within, || {
        let (_, b) = support::api::get_json(&c, &d.url(&format!("/api/v1/sessions/{id}")));
        body = b;
        body["status"] != "running"
    });
    body
}

#[test]
fn a_path_session_is_streamed_stored_and_survives_a_restart() {
    let Some(net) =
        TestNet::start_and_enter(&json!({"hosts": {"198.18.0.9": {"delay": "1ms", "path": {
            "hops": [{"addr": "198.18.10.1"}, {"addr": "198.18.10.2"}]
        }}}}))
    else {
        return;
    };
    let config = write_config(
        net.dir(),
        "serve.yml",
        "sessions:\n  database: {{DIR}}/s.db\n  min_interval: 10ms\n",
    );
    let port = support::free_port();
    let d = Daemon::start_on(&config, port, &[]);
    let c = support::api::client();
    let body = json!({"target": "198.18.0.9", "kind": "path", "count": 4, "interval": "200ms", "max_ttl": 6});
    let (status, created) = support::api::post_json(&c, &d.url("/api/v1/sessions"), &body);
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["params"]["path"]["max_ttl"], 6, "{created}");
    // Streamed: every hop probe, then the summary.
    let (streamed, end) = support::api::follow(
        &d.ws_url(&format!("/api/v1/sessions/{id}/live")),
        Duration::from_secs(20),
    );
    assert!(matches!(end, support::api::WsEnd::Close(1000)), "{end:?}");
    let (summary, hops) = streamed.split_last().expect("messages");
    assert_eq!(summary["type"], "summary", "{summary}");
    assert!(hops.iter().all(|h| h["type"] == "hop"), "{hops:?}");
    // Stored = streamed, and the summary's rows name the hops.
    let stored = session(&d, &id, Duration::from_secs(10));
    assert_eq!(stored["status"], "completed", "{stored}");
    assert_eq!(stored["samples"].as_array().expect("samples"), hops);
    let rows = stored["summary"]["hops"].as_array().expect("hop rows");
    assert_eq!(
        support::api::ttl_and(rows, "responder"),
        [(1, "198.18.10.1"), (2, "198.18.10.2"), (3, "198.18.0.9")]
    );
    assert!(
        rows.iter().all(|r| r["sent"] == 4 && r["lost"] == 0),
        "{rows:?}"
    );
    assert_eq!(
        (
            stored["summary"]["sent"].as_u64(),
            stored["summary"]["received"].as_u64()
        ),
        (Some(4), Some(4))
    );
    // Every round's hop probes: TTL 1 to 3 (the first round may climb one or two further).
    for round in 1..=4u64 {
        let ttls: BTreeSet<u64> = hops
            .iter()
            .filter(|h| h["round"] == round)
            .map(|h| h["ttl"].as_u64().unwrap())
            .collect();
        assert!(
            ttls.is_superset(&[1, 2, 3].into_iter().collect()),
            "round {round}: {ttls:?}"
        );
    }
    // A long one, cut by a restart: it comes back interrupted with its samples.
    let long = json!({"target": "198.18.0.9", "kind": "path", "count": 1000, "interval": "100ms"});
    let (status, created) = support::api::post_json(&c, &d.url("/api/v1/sessions"), &long);
    assert_eq!(status, 201, "{created}");
    let long_id = created["id"].as_str().expect("id").to_owned();
    std::thread::sleep(Duration::from_millis(800));
    let mut d = d;
    let exit = d.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10));
    assert!(exit.success(), "{exit}");
    let d = d.restart();
    let after = session(&d, &long_id, Duration::from_secs(5));
    assert_eq!(after["status"], "interrupted", "{after}");
    let kept = after["samples"].as_array().expect("samples");
    assert!(
        kept.len() >= 3 && kept.iter().all(|s| s["type"] == "hop"),
        "{kept:?}"
    );
    // The finished one is intact.
    let again = session(&d, &id, Duration::from_secs(5));
    assert_eq!(again["samples"].as_array().map(Vec::len), Some(hops.len()));
}

/// A path monitor whose probes cannot leave (its source is no address of this namespace):
/// every hop probe fails to send, which `pingscope_send_errors_total` counts, and no hop and
/// no destination probe is counted sent or lost, as for pings.
#[test]
fn hop_probes_that_fail_to_send_are_send_errors_not_loss() {
    let Some(net) =
        TestNet::start_and_enter(&json!({"hosts": {"198.18.0.9": {"delay": "1ms", "path": {
            "hops": [{"addr": "198.18.10.1", "delay": "1ms"}]
        }}}}))
    else {
        return;
    };
    let config = write_config(
        net.dir(),
        "serve.yml",
        "targets:
  - {name: bad, host: 198.18.0.9, kind: path, interval: 200ms, timeout: 500ms, source: 198.18.0.99, path: {max_ttl: 4}}
  - {name: good, host: 198.18.0.9, kind: path, interval: 200ms, timeout: 500ms, path: {max_ttl: 4}}
",
    );
    let d = Daemon::start(&config, &[]);
    let bad = [("target", "bad")];
    let errors = |s: &Scrape| s.sum("pingscope_send_errors_total", &bad);
    let mut s = d.scrape();
    assert!(
        wait_until(Duration::from_secs(10), || {
            s = d.scrape();
            errors(&s) >= 5.0
                && s.get(
                    "pingscope_path_hop_sent_total",
                    &[("target", "good"), ("ttl", "2")],
                )
                .unwrap_or(0.0)
                    >= 5.0
        }),
        "{}",
        d.metrics_text()
    );
    assert_eq!(
        s.get("pingscope_sent_total", &bad).unwrap_or(0.0),
        0.0,
        "{}",
        d.metrics_text()
    );
    assert_eq!(s.get("pingscope_lost_total", &bad).unwrap_or(0.0), 0.0);
    let hop_sent = s.sum("pingscope_path_hop_sent_total", &bad);
    assert_eq!(hop_sent, 0.0, "{}", d.metrics_text());
}

/// `path_pacing` bounds what all path monitors together ask of one router: two monitors through
/// one first-hop router at 10 rounds a second, with a budget of one answer a second, probe that
/// router about once a second (beyond their first rounds) while their destinations get every
/// round; a reload back to the default budget lets every round probe it again.
#[test]
fn path_pacing_bounds_the_probes_to_one_router_over_all_monitors() {
    if !support::require_root() {
        return;
    }
    let hop = json!({"delay": "1ms", "path": {"hops": [{"addr": "198.18.10.1"}]}});
    let net = TestNet::start(&json!({"hosts": {"198.18.0.9": hop, "198.18.0.10": hop}}));
    net.enter();
    let targets = "targets:
  - {name: a, host: 198.18.0.9, kind: path, interval: 100ms, timeout: 500ms, path: {max_ttl: 4}}
  - {name: b, host: 198.18.0.10, kind: path, interval: 100ms, timeout: 500ms, path: {max_ttl: 4}}
";
    let path = write_config(
        net.dir(),
        "serve.yml",
        &format!("path_pacing: {{router_rate: 1, router_burst: 1}}\n{targets}"),
    );
    let d = Daemon::start(&path, &[]);
    let ttl = |s: &Scrape, t: &str| s.sum("pingscope_path_hop_sent_total", &[("ttl", t)]);
    let started = std::time::Instant::now();
    let mut s = d.scrape();
    assert!(
        wait_until(Duration::from_secs(10), || {
            s = d.scrape();
            ttl(&s, "2") >= 40.0
        }),
        "{}",
        d.metrics_text()
    );
    let secs = started.elapsed().as_secs_f64();
    // At most each monitor's first round (the router is not known yet), the burst, one a
    // second. (Fewer may show: a monitor whose router probes all wait for 10 rounds loses that
    // hop's series, as any hop not seen.)
    let router = ttl(&s, "1");
    assert!(
        (1.0..=2.0 + 1.0 + secs.ceil() + 1.0).contains(&router),
        "{router} probes to the router in {secs:.1} s at 1 a second: {}",
        d.metrics_text()
    );

    std::fs::write(&path, targets).unwrap();
    let (status, body) = d.post("/-/reload");
    assert_eq!(status, 200, "{body}");
    let before = ttl(&d.scrape(), "1");
    assert!(
        wait_until(Duration::from_secs(5), || ttl(&d.scrape(), "1")
            >= before + 20.0),
        "the default budget (50 a second) lets every round through: {}",
        d.metrics_text()
    );
}
