//! The page's mesh view in headless Chromium (issue 19): three daemons on the mesh test network
//! (support::mesh), one of them stopped (SIGSTOP: its port still accepts, nothing answers). The
//! first instance's page shows its own row and its live peer's row with loss and RTT to the
//! others, and the stopped peer's row as slow, within `mesh.web_timeout` (the page never hangs
//! on it); the API says the same.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::disallowed_methods)]

mod support;
#[allow(dead_code)]
#[path = "ui/webdriver.rs"]
mod webdriver;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::daemon::SESSIONS;
use support::mesh::Fleet;
use webdriver::Browser;

const NAME: &str = "pingscope-mesh.test";
const SLOW: Duration = Duration::from_secs(30);

#[test]
fn mesh_view_with_one_peer_stopped_in_headless_chromium() {
    let Some(fleet) = Fleet::start(3, NAME, 5, |i, dns| {
        format!(
            "defaults: {{interval: 200ms, timeout: 1s}}\n\
             dns: {{servers: [\"{dns}\"]}}\n\
             mesh:\n  name: node{i}\n  peers: {{dns: {NAME}}}\n  web_timeout: 1s\n{SESSIONS}"
        )
    }) else {
        return;
    };
    if !support::require_program("chromedriver") {
        return;
    }
    let addrs = fleet.net.addrs();
    let d0 = &fleet.daemons[0];
    // Every instance pings its two peers and has answers before node2 stops.
    for d in &fleet.daemons {
        d.scrape_until(Duration::from_secs(15), "two peers answered", |s| {
            s.find("pingscope_rtt_seconds_count", &[])
                .iter()
                .filter(|x| x.labels.contains_key("source") && x.value > 0.0)
                .count()
                == 2
        });
    }
    fleet.daemons[2].freeze();

    // The API: node2's row is a timeout, answered within the timeout plus a margin.
    let asked = Instant::now();
    let (status, _, body) = d0.get("/api/v1/mesh");
    let took = asked.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    let m: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(m["source"], "node0", "{m}");
    let rows = m["rows"].as_array().unwrap();
    let state = |peer: &str| {
        rows.iter()
            .find(|r| r["peer"] == peer)
            .map(|r| r["state"].clone())
    };
    assert_eq!(rows[0]["state"], "local", "{m}");
    assert_eq!(rows[0]["cells"].as_array().unwrap().len(), 2, "{m}");
    assert_eq!(state(&addrs[1]), Some("ok".into()), "{m}");
    assert_eq!(state(&addrs[2]), Some("timeout".into()), "{m}");

    // The page, in a browser inside node0's namespace.
    fleet.net.enter(0);
    let b = Browser::start(support::free_port(), 1280, 900);
    b.goto(&d0.url("/#/mesh"));
    let seen = b.wait_for(
        "the mesh matrix with node2 slow",
        SLOW,
        "(() => { const rows = [...document.querySelectorAll('#mesh-body tr')]; \
           if (rows.length < 3 || document.getElementById('mesh-box').hidden) return null; \
           return rows.map(r => ({source: r.dataset.source, state: r.dataset.state, \
             cells: [...r.querySelectorAll('td[data-target]')].map(td => ({target: td.dataset.target, loss: td.dataset.loss, rtt: td.dataset.rtt})), \
             text: r.textContent})); })()",
    );
    let rows = seen.as_array().unwrap();
    let row = |src: &str| {
        rows.iter()
            .find(|r| r["source"] == src)
            .unwrap_or_else(|| panic!("no row {src}: {seen}"))
    };
    for (src, others) in [
        ("node0", [&addrs[1], &addrs[2]]),
        ("node1", [&addrs[0], &addrs[2]]),
    ] {
        let r = row(src);
        let targets: Vec<&str> = r["cells"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["target"].as_str().unwrap())
            .collect();
        assert_eq!(targets, others.map(String::as_str), "{seen}");
        for c in r["cells"].as_array().unwrap() {
            let rtt: f64 = c["rtt"].as_str().unwrap().parse().unwrap();
            assert!(rtt > 0.0, "{seen}");
        }
    }
    assert_eq!(row("node0")["state"], "local", "{seen}");
    assert_eq!(row("node1")["state"], "ok", "{seen}");
    let stopped = row(&addrs[2]);
    assert_eq!(stopped["state"], "timeout", "{seen}");
    assert!(
        stopped["text"]
            .as_str()
            .unwrap()
            .contains("slow: no answer within 1s"),
        "{seen}"
    );
    b.screenshot(&webdriver::artifacts_dir().join("ui-mesh.png"));
    fleet.daemons[2].signal(Signal::SIGCONT);
}
