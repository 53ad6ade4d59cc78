//! Sessions across daemon restarts: a session running at SIGTERM, or at `kill -9`, comes back
//! `interrupted` with its samples; completed sessions are intact.
// Tests block their own thread while the daemon works.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::print_stderr,
    clippy::disallowed_methods
)]

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use reqwest::blocking::Client;
use serde_json::{Value, json};
use support::TestNet;
use support::api::{WsEnd, base_config, client, follow, get_json, page_ids, post_json, wait_ended};
use support::daemon::Daemon;

const HOST: &str = "198.18.0.20";

fn start(c: &Client, d: &Daemon, body: &Value) -> String {
    let (status, rec) = post_json(c, &d.url("/api/v1/sessions"), body);
    assert_eq!(status, 201, "{rec}");
    rec["id"].as_str().expect("id").to_owned()
}

/// Waits (bounded) until the running session has at least `n` samples; returns them.
fn wait_samples(c: &Client, d: &Daemon, id: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, detail) = get_json(c, &d.url(&format!("/api/v1/sessions/{id}")));
        assert_eq!(detail["status"], "running", "{detail}");
        let samples = detail["samples"].as_array().cloned().unwrap_or_default();
        if samples.len() >= n {
            return samples;
        }
        assert!(
            Instant::now() < deadline,
            "session {id} has {} samples",
            samples.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Seqs 1..=n, each once: the stored samples are a gapless prefix of the session.
#[track_caller]
fn assert_prefix(samples: &[Value]) {
    let seqs: Vec<u64> = samples
        .iter()
        .map(|s| s["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}

/// The stored samples of an interrupted session: the `seen` ones first and unchanged, numbered in
/// order, as many as its `sample_count`.
fn assert_interrupted_keeps<'a>(after: &'a Value, seen: &[Value], when: &str) -> &'a [Value] {
    assert_eq!(after["status"], "interrupted", "{after}");
    let stored = after["samples"].as_array().expect("samples");
    assert!(
        stored.len() >= seen.len(),
        "{} stored, {} seen {when}",
        stored.len(),
        seen.len()
    );
    assert_eq!(
        &stored[..seen.len()],
        seen,
        "samples seen {when} are stored as they were"
    );
    assert_prefix(stored);
    assert_eq!(
        after["sample_count"].as_u64(),
        Some(stored.len() as u64),
        "{after}"
    );
    stored
}

fn get(c: &Client, d: &Daemon, id: &str) -> Value {
    let (status, body) = get_json(c, &d.url(&format!("/api/v1/sessions/{id}")));
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn running_sessions_come_back_interrupted() {
    let Some(net) = TestNet::start_and_enter(&json!({"default": {"delay": "5ms"}})) else {
        return;
    };
    let port = support::free_port();
    let mut d = Daemon::start_on(
        &support::write_config(net.dir(), "pingscope.yml", &base_config(8)),
        port,
        &["--log.level", "warn"],
    );
    let c = client();

    let done = start(
        &c,
        &d,
        &json!({"target": HOST, "count": 5, "interval": "10ms"}),
    );
    let done_before = wait_ended(&c, &d, &done, Duration::from_secs(10));
    assert_eq!(done_before["status"], "completed");
    assert_eq!(done_before["samples"].as_array().map(Vec::len), Some(5));

    // SIGTERM during a long session: a live reader is closed, the daemon exits 0 in the grace period.
    let long = json!({"target": HOST, "count": 2000, "interval": "20ms"});
    let a = start(&c, &d, &long);
    wait_samples(&c, &d, &a, 20);
    let ws_url = d.ws_url(&format!("/api/v1/sessions/{a}/live"));
    // Spawned from the entered thread, so it connects inside the namespace too.
    let reader = std::thread::spawn(move || follow(&ws_url, Duration::from_secs(20)));
    std::thread::sleep(Duration::from_millis(300));
    let seen = wait_samples(&c, &d, &a, 30);
    let t = Instant::now();
    let status = d.signal_and_wait(Signal::SIGTERM, Duration::from_secs(10));
    eprintln!("SIGTERM: exited {status} after {:?}", t.elapsed());
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let (msgs, end) = reader.join().expect("reader thread");
    eprintln!("live reader: {} messages, then {end:?}", msgs.len());
    assert!(
        matches!(end, WsEnd::Close(1001) | WsEnd::Close(1000)),
        "live reader ended with {end:?}"
    );
    assert!(
        msgs.len() >= seen.len(),
        "reader got {} messages",
        msgs.len()
    );
    let last = msgs.last().expect("messages");
    assert_eq!(
        last["type"], "summary",
        "the reader gets the summary before the close: {last}"
    );
    assert_eq!(last["status"], "interrupted", "{last}");

    let mut d = d.restart();
    let after = get(&c, &d, &a);
    assert!(
        after["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{after}"
    );
    let stored = assert_interrupted_keeps(&after, &seen, "before SIGTERM");
    // The streamed samples (all but a closing summary) are the stored ones.
    let streamed: Vec<&Value> = msgs.iter().filter(|m| m["type"] != "summary").collect();
    assert_eq!(streamed, stored.iter().collect::<Vec<_>>());
    assert_eq!(
        get(&c, &d, &done),
        done_before,
        "a completed session survives SIGTERM"
    );
    let a_after_term = after.clone();

    // kill -9 during a long session: samples from up to ~1 s before the kill are stored.
    let b = start(&c, &d, &long);
    let seen = wait_samples(&c, &d, &b, 30);
    std::thread::sleep(Duration::from_millis(1000));
    let status = d.signal_and_wait(Signal::SIGKILL, Duration::from_secs(5));
    eprintln!("kill -9 after {} samples seen 1 s earlier", seen.len());
    assert!(!status.success());

    let d = d.restart();
    let after = get(&c, &d, &b);
    eprintln!("after kill -9: {} samples stored", after["sample_count"]);
    assert_interrupted_keeps(&after, &seen, "1 s before kill -9");
    assert_eq!(
        get(&c, &d, &done),
        done_before,
        "a completed session survives kill -9"
    );
    assert_eq!(
        get(&c, &d, &a),
        a_after_term,
        "an interrupted session survives kill -9"
    );

    // The list shows all three, newest first.
    let (_, page) = get_json(&c, &d.url("/api/v1/sessions"));
    assert_eq!(page_ids(&page), [b.as_str(), a.as_str(), done.as_str()]);
}

// The daemon claims its database at start (a second daemon on it is refused then) and opens it
// at the first use of sessions, so a daemon that never runs one never loads SQLite.
#[test]
fn the_store_is_claimed_at_start_and_opened_at_first_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("sessions.db");
    // One database for both daemons: the second one's config names the first one's folder.
    let config = base_config(4).replace("{{DIR}}", &dir.path().display().to_string());
    let a = Daemon::start_on(
        &support::write_config(dir.path(), "pingscope.yml", &config),
        support::free_port(),
        &["--log.level", "warn"],
    );
    let c = client();
    assert!(
        dir.path().join("sessions.db-lock").exists(),
        "no lock file: not claimed"
    );
    assert!(!db.exists(), "opened before any use");

    // A second daemon on the same database: monitors run, sessions answer 503 with the reason.
    let other = tempfile::tempdir().expect("tempdir");
    let b = Daemon::start_on(
        &support::write_config(other.path(), "pingscope.yml", &config),
        support::free_port(),
        &["--log.level", "warn"],
    );
    let (status, body) = get_json(&c, &b.url("/api/v1/sessions"));
    assert_eq!(status, 503, "{body}");
    assert!(body.to_string().contains("in use"), "{body}");
    let (status, _) = get_json(&c, &b.url("/-/healthy"));
    assert_eq!(status, 200);

    // The first use opens it.
    let (status, body) = get_json(&c, &a.url("/api/v1/sessions"));
    assert_eq!(status, 200, "{body}");
    assert!(db.exists(), "not opened at first use");
    let (status, _) = get_json(&c, &a.url("/api/v1/sessions"));
    assert_eq!(status, 200);
}
