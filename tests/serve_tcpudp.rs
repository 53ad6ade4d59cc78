//! TCP and UDP monitors in the daemon, on loopback: two daemons measure each other over UDP echo
//! (each answering with `--udp-echo.listen-address`), a closed TCP port counts refusals, an open
//! one (the daemon's own web port) answers, and `pingscope_target_info` shows kind and port. The
//! daemons monitor only TCP and UDP, so they would start without ICMP permission too.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

mod support;

use std::time::Duration;

use support::daemon::{Daemon, SESSIONS};
use support::{free_port, wait_until, write_config};

fn config(peer_echo: u16, closed: u16, web: u16) -> String {
    format!(
        "defaults: {{interval: 100ms, timeout: 500ms}}
targets:
  - {{name: peer, host: 127.0.0.1, kind: udp, port: {peer_echo}, udp: {{mode: echo}}}}
  - {{name: refused, host: 127.0.0.1, kind: tcp, port: {closed}}}
  - {{name: web, host: 127.0.0.1, kind: tcp, port: {web}}}
  - {{name: closed-udp, host: ::1, kind: udp, port: {closed}}}
{SESSIONS}"
    )
}

/// A UDP port that nothing listens on.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap()
}

#[test]
fn two_daemons_measure_each_other_and_tcp_monitors_count_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let (echo_a, echo_b) = (free_udp_port(), free_udp_port());
    let (web_a, web_b) = (free_port(), free_port());
    let closed = free_port();
    let a_dir = dir.path().join("a");
    let b_dir = dir.path().join("b");
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let a_cfg = write_config(&a_dir, "a.yml", &config(echo_b, closed, web_a));
    let b_cfg = write_config(&b_dir, "b.yml", &config(echo_a, closed, web_b));
    let echo = |p: u16| format!("--udp-echo.listen-address=127.0.0.1:{p}");
    let a = Daemon::start_on(&a_cfg, web_a, &[&echo(echo_a)]);
    let b = Daemon::start_on(&b_cfg, web_b, &[&echo(echo_b)]);
    for (d, peer_port) in [(&a, echo_b), (&b, echo_a)] {
        let count = |name: &str, target: &str| d.scrape().get(name, &[("target", target)]);
        let ok = wait_until(Duration::from_secs(10), || {
            ["peer", "refused", "web", "closed-udp"]
                .iter()
                .all(|t| count("pingscope_rtt_seconds_count", t).unwrap_or(0.0) >= 10.0)
        });
        assert!(ok, "replies on every monitor:\n{}", d.metrics_text());
        // The peer's echo may have come up after the first probes: count losses from now on.
        let before = d.scrape();
        let lost =
            |s: &support::expo::Scrape, t: &str| s.get("pingscope_lost_total", &[("target", t)]);
        let got = |t: &str| count("pingscope_rtt_seconds_count", t).unwrap_or(0.0);
        let base = got("peer");
        assert!(wait_until(Duration::from_secs(10), || got("peer") >= base + 10.0));
        let s = d.scrape();
        for t in ["peer", "web", "closed-udp"] {
            assert_eq!(lost(&s, t), lost(&before, t), "{t}: lost while both run");
        }
        // Every reply of the closed port is a refusal; the open port has none.
        let refused = s
            .get("pingscope_tcp_refused_total", &[("target", "refused")])
            .unwrap();
        let replies = s
            .get("pingscope_rtt_seconds_count", &[("target", "refused")])
            .unwrap();
        assert!(
            refused >= 10.0 && (replies - refused).abs() <= 1.0,
            "{refused} of {replies}"
        );
        // Created at zero for a TCP target; a UDP target has none.
        for (t, want) in [("web", Some(0.0)), ("peer", None)] {
            let got = s.get("pingscope_tcp_refused_total", &[("target", t)]);
            assert_eq!(got, want, "{t}");
        }
        let peer_port = peer_port.to_string();
        let info = [
            ("target", "peer"),
            ("kind", "udp"),
            ("port", peer_port.as_str()),
        ];
        assert_eq!(s.get("pingscope_target_info", &info), Some(1.0));
        let text = d.metrics_text();
        assert!(
            text.lines().any(|l| l.starts_with("pingscope_target_info{")
                && l.contains("target=\"web\"")
                && l.contains("kind=\"tcp\"")),
            "{text}"
        );
    }
}

/// The daemon on `web` with `yaml` and the session store (`dir/c.yml`), and these flags.
fn daemon_on(dir: &std::path::Path, web: u16, yaml: &str, args: &[&str]) -> Daemon {
    let cfg = write_config(dir, "c.yml", &format!("{yaml}{SESSIONS}"));
    Daemon::start_on(&cfg, web, args)
}

#[test]
fn probe_and_sessions_run_tcp_and_udp() {
    let dir = tempfile::tempdir().unwrap();
    let web = free_port();
    let closed = free_udp_port();
    let d = daemon_on(
        dir.path(),
        web,
        &format!(
            "targets: []\nprobe_profiles:\n  web: {{kind: tcp, port: {web}, count: 3, interval: 50ms, timeout: 500ms}}\n"
        ),
        &[],
    );
    // The daemon's own web port is the open TCP port; a profile names it, or the query does.
    let port = web.to_string();
    let closed = closed.to_string();
    for query in [
        vec![("target", "127.0.0.1"), ("module", "web")],
        vec![
            ("target", "127.0.0.1"),
            ("kind", "tcp"),
            ("port", port.as_str()),
        ],
        vec![
            ("target", "::1"),
            ("kind", "udp"),
            ("port", closed.as_str()),
        ],
    ] {
        let a = d.probe(&query);
        assert_eq!(a.status, 200, "{query:?}: {}", a.body);
        assert_eq!(
            a.metric("probe_success"),
            Some(1.0),
            "{query:?}: {}",
            a.body
        );
        assert!(
            a.metric("probe_packets_received").unwrap_or(0.0) >= 1.0,
            "{}",
            a.body
        );
    }
    let body = serde_json::json!({
        "target": "127.0.0.1", "kind": "tcp", "port": web, "count": 3, "interval": "100ms"
    });
    let (status, rec) = d.post_json("/api/v1/sessions", &body);
    assert_eq!(status, 201, "{rec}");
    let id = rec["id"].as_str().unwrap().to_owned();
    let mut detail = serde_json::Value::Null;
    assert!(wait_until(Duration::from_secs(5), || {
        let (_, _, text) = d.get(&format!("/api/v1/sessions/{id}"));
        detail = serde_json::from_str(&text).unwrap_or_default();
        detail["status"] == "completed"
    }));
    let params = &detail["params"];
    assert_eq!(
        (&params["kind"], &params["port"]),
        (&serde_json::json!("tcp"), &serde_json::json!(web))
    );
    assert_eq!(detail["summary"]["received"], 3, "{detail}");
}

/// A burst of 10,000 datagrams that are not probe requests (malformed, answers, oversized) at a
/// daemon's UDP echo port: none is answered, the echo goes on answering probes (ours and the
/// daemon's own UDP echo monitor's; a loaded machine may drop one of those in the burst, as a
/// full receive buffer would), and the daemon's memory stays where it was.
#[test]
fn the_udp_echo_port_ignores_a_burst_of_junk_without_growing() {
    let dir = tempfile::tempdir().unwrap();
    let echo = free_udp_port();
    let mut d = daemon_on(
        dir.path(),
        free_port(),
        &format!(
            "defaults: {{interval: 100ms, timeout: 500ms}}\ntargets:\n  - {{name: self, host: 127.0.0.1, kind: udp, port: {echo}, udp: {{mode: echo}}}}\n"
        ),
        &[&format!("--udp-echo.listen-address=127.0.0.1:{echo}")],
    );
    let got = |d: &Daemon| {
        d.scrape()
            .get("pingscope_rtt_seconds_count", &[("target", "self")])
            .unwrap_or(0.0)
    };
    assert!(
        wait_until(Duration::from_secs(10), || got(&d) >= 20.0),
        "{}",
        d.metrics_text()
    );
    let rss_before = d.rss_kib();

    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let good = pingscope::engine::udp::echo_request(9, 1, 64);
    let junk = support::udp_echo_junk();
    let to = format!("127.0.0.1:{echo}");
    for i in 0..10_000 {
        client.send_to(&junk[i % junk.len()], &to).unwrap();
        if i % 100 == 99 {
            // Paced, so the burst reaches the responder rather than a full receive buffer.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let mut buf = [0u8; 10_000];
    assert!(
        client.recv_from(&mut buf).is_err(),
        "a junk datagram was answered"
    );
    assert!(d.alive(), "the daemon died:\n{}", d.log());
    // The echo still answers probes, its own monitor's and ours.
    client.send_to(&good, &to).unwrap();
    let (n, _) = client.recv_from(&mut buf).expect("a probe is still echoed");
    assert_eq!(n, good.len());
    let base = got(&d);
    assert!(wait_until(Duration::from_secs(5), || got(&d) >= base + 10.0));
    let rss_after = d.rss_kib();
    assert!(
        rss_after <= rss_before + 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}
