//! Session WebSockets against the real daemon in the test network: a session followed live
//! agrees with its stored copy and with the responder's profile; a client that reads nothing
//! is told it lagged and is closed while the daemon's memory stays bounded.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

#[path = "fixtures/api/daemon.rs"]
mod daemon;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use daemon::{Daemon, WsEnd, base_config, client, follow, get_json, post_json};
use serde_json::{Value, json};
use support::TestNet;

const LOSSY: &str = "198.18.0.30";

#[test]
fn followed_session_matches_store_and_profile() {
    if !support::require_root() {
        return;
    }
    let net = TestNet::start(&json!({
        "seed": 7,
        "hosts": {LOSSY: {"delay": "20ms", "loss": 0.1}}
    }));
    net.enter();
    let port = support::free_tcp_port();
    let d = Daemon::start(net.dir(), &base_config(net.dir(), 16), port);
    let c = client();

    let (status, started) = post_json(
        &c,
        &d.url("/api/v1/sessions"),
        &json!({"target": LOSSY, "count": 50, "interval": "20ms", "timeout": "1s"}),
    );
    assert_eq!(status, 201, "{started}");
    let id = started["id"].as_str().expect("an id").to_owned();
    assert_eq!(started["status"], "running");

    let (msgs, end) = follow(
        &d.ws_url(&format!("/api/v1/sessions/{id}/live")),
        Duration::from_secs(20),
    );
    assert_eq!(end, WsEnd::Close(1000), "the stream must close normally");
    let (last, streamed) = msgs.split_last().expect("messages");
    assert_eq!(last["type"], "summary", "last message: {last}");
    assert_eq!(last["session_id"], id.as_str());
    assert_eq!(last["status"], "completed");
    assert!(streamed.iter().all(|m| m["type"] != "summary"));

    // One outcome per probe, seq 1..=50, replies or timeouts only.
    let by_seq: BTreeMap<u64, &Value> = streamed
        .iter()
        .map(|m| (m["seq"].as_u64().expect("seq"), m))
        .collect();
    assert_eq!(by_seq.len(), 50, "one sample per probe: {streamed:?}");
    assert_eq!(
        by_seq.keys().copied().collect::<Vec<_>>(),
        (1..=50).collect::<Vec<_>>()
    );
    let replies: Vec<f64> = streamed
        .iter()
        .filter(|m| m["type"] == "reply")
        .map(|m| m["rtt_ms"].as_f64().expect("rtt_ms"))
        .collect();
    let timeouts = streamed.iter().filter(|m| m["type"] == "timeout").count();
    assert_eq!(
        replies.len() + timeouts,
        50,
        "only replies and timeouts: {streamed:?}"
    );

    // The stored copy holds the same samples and the same summary.
    let (status, stored) = get_json(&c, &d.url(&format!("/api/v1/sessions/{id}")));
    assert_eq!(status, 200);
    assert_eq!(stored["status"], "completed");
    assert_eq!(stored["samples"].as_array().expect("samples"), streamed);
    assert_eq!(stored["sample_count"], 50);
    let summary = &stored["summary"];
    for key in [
        "sent",
        "received",
        "lost",
        "loss_ratio",
        "rtt_ms",
        "jitter_ms",
    ] {
        assert_eq!(summary[key], last[key], "summary field {key}");
    }
    assert_eq!(summary["sent"], 50);
    assert_eq!(summary["received"].as_u64(), Some(replies.len() as u64));
    assert_eq!(summary["lost"].as_u64(), Some(timeouts as u64));

    // The profile: the responder's drops are exactly the timeouts, within the binomial interval.
    let log: Vec<_> = net
        .log()
        .into_iter()
        .filter(|e| e.dst.to_string() == LOSSY)
        .collect();
    assert_eq!(log.len(), 50, "the responder saw every probe");
    let dropped = log.iter().filter(|e| e.action == "dropped").count();
    assert_eq!(dropped, timeouts, "timeouts equal the responder's drops");
    let (lo, hi) = support::binomial_interval(50, 0.1);
    assert!(
        (lo as usize..=hi as usize).contains(&timeouts),
        "{timeouts} lost of 50, outside the 99.9 % interval [{lo}, {hi}]"
    );
    let err = net.timing_error();
    let mean = replies.iter().sum::<f64>() / replies.len() as f64;
    let min = replies.iter().copied().fold(f64::INFINITY, f64::min);
    let ceiling = 20.0 + err.max.as_secs_f64() * 1e3 + 5.0;
    assert!(min >= 20.0, "an RTT below the 20 ms delay: {min}");
    assert!(
        mean <= ceiling,
        "mean RTT {mean:.3} ms above 20 ms + responder error {:?} + 5 ms",
        err.max
    );
    let avg = summary["rtt_ms"]["avg"].as_f64().expect("rtt avg");
    assert!(
        (avg - mean).abs() < 0.01,
        "summary avg {avg} vs samples {mean}"
    );

    // A late reader of the ended session gets the same replay, the summary and a normal close.
    let (again, end) = follow(
        &d.ws_url(&format!("/api/v1/sessions/{id}/live")),
        Duration::from_secs(10),
    );
    assert_eq!(end, WsEnd::Close(1000));
    assert_eq!(&again[..again.len() - 1], streamed);
    assert_eq!(again.last().map(|m| &m["type"]), Some(&json!("summary")));
}
