//! The page's path views in headless Chromium (as tests/ui_browser.rs drives the rest of the
//! page). A path session's hop table: every configured hop in order, named by its PTR record
//! where it has one, the rate-limited hop marked, and the figures equal to the API's summary
//! rows once the session ended. A path monitor's view, opened from its card: ECMP branches as
//! rows under their TTL, names, the scheduled path change in its history, the old rows no longer
//! current; another monitor's rate-limited hop marked; an unknown monitor's message.
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
use support::dns::DnsServer;
use webdriver::Browser;

const SLOW: Duration = Duration::from_secs(20);

#[test]
fn path_session_hop_table_in_headless_chromium() {
    let Some(net) = TestNet::start_and_enter(
        &json!({"seed": 5, "hosts": {"198.18.0.9": {"delay": "1ms", "path": {
            "hops": [
                {"addr": "198.18.10.1", "delay": "1ms"},
                {"addr": "198.18.10.2", "delay": "2ms", "icmp_rate_limit": 1},
                {"addr": "198.18.10.3", "delay": "1ms"}
            ]
        }}}}),
    ) else {
        return;
    };
    // 198.18.10.2 has no PTR record: the page shows its address alone.
    let dns = DnsServer::start();
    dns.set_ptr("198.18.10.1", "r1.test");
    dns.set_ptr("198.18.10.3", "r3.test");
    dns.set_ptr("198.18.0.9", "dst.test");
    let config = support::write_config(
        net.dir(),
        "serve.yml",
        &format!(
            "dns: {{servers: ['{}']}}\nsessions:\n  database: {{{{DIR}}}}/s.db\n  min_interval: 10ms\n",
            dns.addr()
        ),
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
    b.wait_for(
        "the responders' names",
        SLOW,
        "[...document.querySelectorAll('#hops tr')].filter(tr => tr.dataset.name).length === 3",
    );
    let rows = b.js(
        "return [...document.querySelectorAll('#hops tr')].map(tr => ({ttl: Number(tr.dataset.ttl), host: tr.dataset.host, name: tr.dataset.name, text: tr.children[1].textContent, limited: tr.dataset.rateLimited, sent: Number(tr.children[3].textContent), loss: tr.children[2].textContent, bar: tr.querySelector('.hop-bar').style.width}))",
        &[],
    );
    let rows = rows.as_array().expect("rows").clone();
    assert_eq!(
        support::api::ttl_and(&rows, "host"),
        [
            (1, "198.18.10.1"),
            (2, "198.18.10.2"),
            (3, "198.18.10.3"),
            (4, "198.18.0.9")
        ],
        "{rows:?}"
    );
    let limited: Vec<&str> = rows
        .iter()
        .map(|r| r["limited"].as_str().unwrap())
        .collect();
    assert_eq!(limited, ["false", "true", "false", "false"], "{rows:?}");
    let texts: Vec<&str> = rows.iter().map(|r| r["text"].as_str().unwrap()).collect();
    assert_eq!(
        texts,
        [
            "r1.test (198.18.10.1)",
            "198.18.10.2 (rate limited?)",
            "r3.test (198.18.10.3)",
            "dst.test (198.18.0.9)"
        ],
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .all(|r| r["bar"].as_str().is_some_and(|w| w.ends_with('%'))),
        "{rows:?}"
    );
    // The path it took, named; no change (a responder first seen is none).
    let paths = b.js(
        "return [...document.querySelectorAll('#session-paths > li')].map(li => [li.dataset.changed, [...li.querySelectorAll('.path-hops li')].map(x => x.textContent)])",
        &[],
    );
    let paths = paths.as_array().unwrap();
    assert!(paths.iter().all(|p| p[0] == "false"), "{paths:?}");
    assert_eq!(
        paths[0][1],
        json!([
            "1 r1.test (198.18.10.1)",
            "2 198.18.10.2",
            "3 r3.test (198.18.10.3)",
            "4 dst.test (198.18.0.9)"
        ])
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

/// The rows of the path view's first address table: (ttl, host, name, current, rate limited,
/// the TTL cell's text).
const PATH_ROWS: &str = "return [...document.querySelectorAll('#path-body .path-address:first-child table.hops tbody tr')].map(tr => [Number(tr.dataset.ttl), tr.dataset.host, tr.dataset.name, tr.dataset.current, tr.dataset.rateLimited, tr.children[0].textContent])";

/// Waits (at most [`SLOW`]) until `cond` holds of `r`, the path view's hop rows, then asserts
/// [`PATH_ROWS`] reads `want`.
fn assert_path_rows(b: &Browser, what: &str, cond: &str, want: Value) {
    b.wait_for(
        what,
        SLOW,
        &format!("(() => {{ const r = [...document.querySelectorAll('#path-body table.hops tbody tr')]; return {cond}; }})()"),
    );
    assert_eq!(b.js(PATH_ROWS, &[]), want, "{what}");
}

#[test]
fn path_monitor_view_in_headless_chromium() {
    let Some(net) = TestNet::start_and_enter(&json!({"seed": 3, "hosts": {
        "198.18.0.9": {"delay": "1ms", "path": support::changing_path(json!([
            {"addr": "198.18.10.1", "delay": "1ms"},
            {"branches": [{"addr": "198.18.11.2", "delay": "1ms"}, {"addr": "198.18.12.2", "delay": "2ms"}]},
            {"addr": "198.18.10.3", "delay": "1ms"}
        ]), "8s")},
        "198.18.0.10": {"delay": "1ms", "path": {"hops": [
            {"addr": "198.18.10.21", "delay": "1ms"},
            {"addr": "198.18.10.22", "delay": "1ms", "icmp_rate_limit": 1}
        ]}}
    }})) else {
        return;
    };
    let dns = DnsServer::start();
    for (ip, name) in [
        ("198.18.10.1", "r1.old.test"),
        ("198.18.11.2", "r2a.old.test"),
        ("198.18.12.2", "r2b.old.test"),
        ("198.18.10.3", "r3.old.test"),
        ("198.18.0.9", "dst.test"),
        ("198.18.20.1", "r1.new.test"),
        ("198.18.20.3", "r3.new.test"),
        ("198.18.10.21", "q1.test"),
    ] {
        dns.set_ptr(ip, name);
    }
    let config = support::write_config(
        net.dir(),
        "serve.yml",
        &format!(
            "dns: {{servers: ['{}']}}\n\
             sessions: {{database: '{{{{DIR}}}}/s.db'}}\n\
             targets:\n\
             \x20 - {{name: p, host: 198.18.0.9, kind: path, interval: 1s, timeout: 1s, path: {{max_ttl: 8, flows: 16}}}}\n\
             \x20 - {{name: q, host: 198.18.0.10, kind: path, interval: 300ms, timeout: 1s, path: {{max_ttl: 8}}}}\n",
            dns.addr()
        ),
    );
    let d = Daemon::start(&config, &[]);
    // A path session across the scheduled change (about 10 s from now; the change is at 8 s).
    let (status, created) = support::api::post_json(
        &support::api::client(),
        &d.url("/api/v1/sessions"),
        &json!({"target": "198.18.0.9", "kind": "path", "count": 100, "interval": "100ms", "timeout": "500ms", "max_ttl": 8}),
    );
    assert_eq!(status, 201, "{created}");
    let session = created["id"].as_str().unwrap().to_owned();
    let b = Browser::start(support::free_port(), 1280, 900);
    b.goto(&d.url("/"));
    b.wait_for(
        "the path monitor's card links to its view",
        SLOW,
        "!!document.querySelector('li[data-target=\"p\"] a.path-link')",
    );
    let link = b.find("li[data-target=\"p\"] a.path-link");
    b.click(&link);
    b.wait_for(
        "the path view",
        SLOW,
        "document.body.dataset.view === 'path' && document.getElementById('h-path').textContent === 'p'",
    );
    // Both ECMP branches under TTL 2 (16 flows), every responder named.
    assert_path_rows(
        &b,
        "the old path's rows, named",
        "r.length === 5 && r.every(tr => tr.dataset.name)",
        json!([
            [1, "198.18.10.1", "r1.old.test", "true", "false", "1"],
            [2, "198.18.11.2", "r2a.old.test", "true", "false", "2"],
            [2, "198.18.12.2", "r2b.old.test", "true", "false", ""],
            [3, "198.18.10.3", "r3.old.test", "true", "false", "3"],
            [4, "198.18.0.9", "dst.test", "true", "false", "4"]
        ]),
    );
    let text = b.js(
        "return document.querySelector('#path-body table.hops tbody tr').children[1].textContent",
        &[],
    );
    assert_eq!(text, "r1.old.test (198.18.10.1)");
    b.wait_for(
        "the first path in the history",
        SLOW,
        "document.querySelectorAll('#path-body .path-history > li').length >= 1",
    );
    b.screenshot(&webdriver::artifacts_dir().join("ui-path-monitor.png"));

    // The change: newest first in the history, marked, with the new responders named (or not).
    // With 16 flows a round may straddle the change and show both paths' responders at a TTL
    // for one round: wait for the whole new path.
    b.wait_for(
        "the path change in the history",
        Duration::from_secs(30),
        "(() => { const li = document.querySelector('#path-body .path-history > li'); return li && li.dataset.changed === 'true' && li.querySelector('.path-hops li').textContent === '1 r1.new.test (198.18.20.1)'; })()",
    );
    let newest = b.js(
        "const li = document.querySelector('#path-body .path-history > li'); return [li.dataset.pathId, [...li.querySelectorAll('.path-hops li')].map(x => x.textContent), document.querySelector('#path-body .path-address').dataset.pathId]",
        &[],
    );
    assert_eq!(
        newest[1],
        json!([
            "1 r1.new.test (198.18.20.1)",
            "2 198.18.20.2",
            "3 r3.new.test (198.18.20.3)",
            "4 dst.test (198.18.0.9)"
        ]),
        "{newest}"
    );
    assert_eq!(newest[0], newest[2], "the newest entry is the current path");
    let (_, api) =
        support::api::get_json(&support::api::client(), &d.url("/api/v1/targets/p/path"));
    let history: Vec<&str> = api["addresses"][0]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path_id"].as_str().unwrap())
        .collect();
    let page: Vec<String> = b
        .js(
            "return [...document.querySelectorAll('#path-body .path-history > li')].map(li => li.dataset.pathId)",
            &[],
        )
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert!(page.len() >= 2, "{page:?}");
    assert_eq!(
        page,
        history[..page.len()],
        "the page's history is the API's"
    );
    // The old responders' rows stay, no longer on the path.
    b.wait_for(
        "the old rows dimmed",
        SLOW,
        "[...document.querySelectorAll('#path-body table.hops tbody tr')].some(tr => tr.dataset.host === '198.18.20.1' && tr.dataset.current === 'true') && [...document.querySelectorAll('#path-body table.hops tbody tr')].filter(tr => tr.dataset.host === '198.18.10.1').every(tr => tr.dataset.current === 'false')",
    );
    b.screenshot(&webdriver::artifacts_dir().join("ui-path-monitor-changed.png"));

    // The session's view tells the same change, from its own rounds.
    b.goto(&d.url(&format!("/#/session/{session}")));
    b.wait_for(
        "the session across the change ended",
        Duration::from_secs(30),
        "document.getElementById('result-status').dataset.status === 'completed'",
    );
    b.wait_for(
        "the session's paths, the newest named",
        SLOW,
        "(() => { const li = document.querySelector('#session-paths > li'); return li && li.dataset.changed === 'true' && [...li.querySelectorAll('.path-hops li')].map(x => x.textContent).join(',') === '1 r1.new.test (198.18.20.1),2 198.18.20.2,3 r3.new.test (198.18.20.3),4 dst.test (198.18.0.9)'; })()",
    );
    let oldest = b.js(
        "const li = [...document.querySelectorAll('#session-paths > li')].pop(); return [li.dataset.changed, li.dataset.round, li.querySelector('.path-hops li').textContent]",
        &[],
    );
    assert_eq!(oldest, json!(["false", "1", "1 r1.old.test (198.18.10.1)"]));
    b.screenshot(&webdriver::artifacts_dir().join("ui-path-session-changed.png"));

    // Another monitor: its rate-limited hop is marked.
    b.goto(&d.url("/#/path/q"));
    assert_path_rows(
        &b,
        "the rate-limited hop marked",
        "r.length === 3 && r[1].dataset.rateLimited === 'true' && r[1].querySelector('.mark.rate-limited')",
        json!([
            [1, "198.18.10.21", "q1.test", "true", "false", "1"],
            [2, "198.18.10.22", "", "true", "true", "2"],
            [3, "198.18.0.10", "", "true", "false", "3"]
        ]),
    );

    // A name that is no monitor.
    b.goto(&d.url("/#/path/nope"));
    b.wait_for(
        "the unknown monitor's message",
        SLOW,
        "document.getElementById('path-state').textContent === 'no monitor named \"nope\"'",
    );
}
