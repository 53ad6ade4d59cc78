//! The page's outage timeline per monitor and each outage's capture, in headless Chromium (issue
//! 18 part 4): a target behind two hops goes dark at its last hop (the hops still answer), the
//! monitor's card shows the outage (strip mark and list entry, the API's lost count), and its
//! capture link opens the path session whose hop table names the hops that still answered.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::disallowed_methods)]

mod support;
// Shared with tests/ui_browser.rs, which uses all of it.
#[allow(dead_code)]
#[path = "ui/webdriver.rs"]
mod webdriver;

use std::time::Duration;

use serde_json::{Value, json};
use support::TestNet;
use support::daemon::{Daemon, SESSIONS};
use webdriver::Browser;

const SLOW: Duration = Duration::from_secs(30);
const TARGET: &str = "198.18.0.9";

fn profiles(blackhole: bool) -> Value {
    json!({"seed": 5, "hosts": {TARGET: {"delay": "1ms", "blackhole": blackhole, "path": {
        "hops": [{"addr": "198.18.10.1", "delay": "1ms"}, {"addr": "198.18.10.2", "delay": "1ms"}]
    }}}})
}

#[test]
fn outage_timeline_and_capture_in_headless_chromium() {
    let Some(net) = TestNet::start_and_enter(&profiles(false)) else {
        return;
    };
    let d = Daemon::serve(
        net.dir(),
        &format!(
            "defaults: {{interval: 100ms, timeout: 300ms, outage: {{after: 3, until: 3}}}}\n\
             targets:\n  - {{name: edge, host: {TARGET}}}\n{SESSIONS}"
        ),
    );
    std::thread::sleep(Duration::from_millis(500));
    net.set_profiles(&profiles(true));
    std::thread::sleep(Duration::from_millis(1500));
    net.set_profiles(&profiles(false));
    let c = support::api::client();
    let mut stored = Value::Null;
    let ended = support::wait_until(Duration::from_secs(10), || {
        stored = support::api::get_json(&c, &d.url("/api/v1/outages?target=edge")).1;
        stored["items"][0]["status"] == "ended"
    });
    assert!(ended, "{stored}");
    let outage = stored["items"][0].clone();
    let capture = outage["capture_session"]
        .as_str()
        .expect("a capture")
        .to_owned();

    let b = Browser::start(support::free_port(), 1280, 900);
    b.goto(&d.url("/#/monitors"));
    let li = b.wait_for(
        "the outage in the monitor's card",
        SLOW,
        "(() => { const li = document.querySelector('.monitor[data-target=\"edge\"] .outage-list li'); \
         return li && !li.closest('details').hidden ? {status: li.dataset.status, id: li.dataset.id, text: li.textContent, \
           capture: li.querySelector('a.capture')?.getAttribute('href'), \
           marks: document.querySelectorAll('.monitor[data-target=\"edge\"] .outage-mark').length} : null; })()",
    );
    assert_eq!(li["status"], "ended", "{li}");
    assert_eq!(li["id"], outage["id"].to_string(), "{li}");
    assert_eq!(li["marks"], 1, "{li}");
    let lost = outage["lost"].as_u64().expect("lost");
    assert!(
        li["text"]
            .as_str()
            .is_some_and(|t| t.contains(&format!("{lost} lost"))),
        "{li} vs {outage}"
    );
    assert_eq!(li["capture"], format!("#/session/{capture}"), "{li}");

    // The capture's hop table: the two hops answered while the destination was dark.
    b.goto(&d.url(&format!("/#/session/{capture}")));
    b.wait_for(
        "the capture's hop table",
        SLOW,
        "document.querySelectorAll('#hops tr').length >= 2 && !document.getElementById('hops-box').hidden",
    );
    let hosts = b.js(
        "return [...document.querySelectorAll('#hops tr')].map(tr => tr.dataset.host)",
        &[],
    );
    let hosts = support::api::strs(&hosts);
    assert!(
        hosts.starts_with(&["198.18.10.1", "198.18.10.2"]),
        "{hosts:?}"
    );
    b.screenshot(&webdriver::artifacts_dir().join("ui-outage-capture.png"));
}
