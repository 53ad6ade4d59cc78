//! The page's hop table of a path session in headless Chromium (as tests/ui_browser.rs drives
//! the rest of the page): every configured hop in order, the rate-limited hop marked, and the
//! figures equal to the API's summary rows once the session ended.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;
// Shared with tests/ui_browser.rs, which uses all of it.
#[allow(dead_code)]
#[path = "ui/webdriver.rs"]
mod webdriver;

use std::time::Duration;

use serde_json::{Value, json};
use support::TestNet;
use support::daemon::Daemon;
use webdriver::Browser;

const SLOW: Duration = Duration::from_secs(20);

#[test]
fn path_session_hop_table_in_headless_chromium() {
    if !support::require_root() {
        return;
    }
    let net = TestNet::start(
        &json!({"seed": 5, "hosts": {"198.18.0.9": {"delay": "1ms", "path": {
            "hops": [
                {"addr": "198.18.10.1", "delay": "1ms"},
                {"addr": "198.18.10.2", "delay": "2ms", "icmp_rate_limit": 1},
                {"addr": "198.18.10.3", "delay": "1ms"}
            ]
        }}}}),
    );
    net.enter();
    let config = support::write_config(
        net.dir(),
        "serve.yml",
        "sessions:\n  database: {{DIR}}/s.db\n  min_interval: 10ms\n",
    );
    let d = Daemon::start(&config, &[]);
    let c = support::api::client();
    let body = json!({"target": "198.18.0.9", "kind": "path", "count": 12, "interval": "100ms", "timeout": "300ms", "max_ttl": 8});
    let (status, created) = support::api::post_json(&c, &d.url("/api/v1/sessions"), &body);
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();

    let b = Browser::start(support::free_port(), 1280, 900);
    b.goto(&d.url(&format!("/#/session/{id}")));
    b.wait_for(
        "the hop table while the session runs or once it ended",
        SLOW,
        "document.querySelectorAll('#hops tr').length >= 4 && !document.getElementById('hops-box').hidden",
    );
    b.wait_for(
        "the session ended",
        SLOW,
        "document.getElementById('result-status').dataset.status === 'completed'",
    );
    let rows = b.js(
        "return [...document.querySelectorAll('#hops tr')].map(tr => ({ttl: Number(tr.dataset.ttl), host: tr.dataset.host, limited: tr.dataset.rateLimited, sent: Number(tr.children[3].textContent), loss: tr.children[2].textContent, bar: tr.querySelector('.hop-bar').style.width}))",
        &[],
    );
    let rows = rows.as_array().expect("rows").clone();
    let hosts: Vec<(u64, String)> = rows
        .iter()
        .map(|r| {
            (
                r["ttl"].as_u64().unwrap(),
                r["host"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        hosts,
        vec![
            (1, "198.18.10.1".to_owned()),
            (2, "198.18.10.2".to_owned()),
            (3, "198.18.10.3".to_owned()),
            (4, "198.18.0.9".to_owned())
        ],
        "{rows:?}"
    );
    let limited: Vec<&str> = rows
        .iter()
        .map(|r| r["limited"].as_str().unwrap())
        .collect();
    assert_eq!(limited, ["false", "true", "false", "false"], "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| r["bar"].as_str().is_some_and(|w| w.ends_with('%'))),
        "{rows:?}"
    );
    // The page's counts are the API's summary rows.
    let (_, stored) = support::api::get_json(&c, &d.url(&format!("/api/v1/sessions/{id}")));
    let api: Vec<(u64, u64)> = stored["summary"]["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r: &Value| (r["ttl"].as_u64().unwrap(), r["sent"].as_u64().unwrap()))
        .collect();
    let page: Vec<(u64, u64)> = rows
        .iter()
        .map(|r| (r["ttl"].as_u64().unwrap(), r["sent"].as_u64().unwrap()))
        .collect();
    assert_eq!(page, api);
    b.screenshot(&webdriver::artifacts_dir().join("ui-path-session.png"));
}
