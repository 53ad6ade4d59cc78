//! Session WebSockets against the real daemon in the test network: a session followed live
//! agrees with its stored copy and with the responder's profile; a client that reads nothing
//! is told it lagged and is closed while the daemon's memory stays bounded.
// Tests block their own thread while the daemon works.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::print_stderr,
    clippy::disallowed_methods
)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use support::TestNet;
use support::api::{WsEnd, base_config, client, follow, get_json, post_json};
use support::daemon::Daemon;

const LOSSY: &str = "198.18.0.30";

#[test]
fn followed_session_matches_store_and_profile() {
    let Some(net) = TestNet::start_and_enter(&json!({
        "seed": 7,
        "hosts": {LOSSY: {"delay": "20ms", "loss": 0.1}}
    })) else {
        return;
    };
    let port = support::free_port();
    let d = Daemon::start_on(
        &support::write_config(net.dir(), "pingscope.yml", &base_config(16)),
        port,
        &["--log.level", "warn"],
    );
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
    let floor = 20.0 - support::ARRIVAL_LEAD.as_secs_f64() * 1e3;
    assert!(
        min >= floor,
        "an RTT below the 20 ms delay (less the arrival lead): {min}"
    );
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

/// Reads text messages until the stream ends or `within` passes (`None`); sleeps `pace` after each.
async fn read_until<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    msgs: &mut Vec<Value>,
    within: Duration,
    pace: Duration,
) -> Option<WsEnd>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return None,
            Ok(None) => return Some(WsEnd::Dropped("end of stream".into())),
            Ok(Some(Err(e))) => return Some(WsEnd::Dropped(e.to_string())),
            Ok(Some(Ok(Message::Text(t)))) => {
                msgs.push(serde_json::from_str(t.as_str()).expect("JSON message"));
                if !pace.is_zero() {
                    tokio::time::sleep(pace).await;
                }
            }
            Ok(Some(Ok(Message::Close(f)))) => {
                return Some(WsEnd::Close(f.map_or(1005, |f| u16::from(f.code))));
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// A WebSocket over a socket whose receive buffer is tiny (set before connecting, so the window
/// the daemon sees is small from the start).
async fn tiny_window_client(
    d: &Daemon,
    path: &str,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", d.port()).parse().expect("address");
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(2048).expect("SO_RCVBUF");
    sock.connect(&addr.into()).expect("connect");
    sock.set_nonblocking(true).expect("non-blocking");
    let stream = tokio::net::TcpStream::from_std(sock.into()).expect("tokio stream");
    let (ws, _) = tokio_tungstenite::client_async(d.ws_url(path), stream)
        .await
        .expect("handshake");
    ws
}

/// Samples the daemon's RSS every 200 ms for `t`.
async fn sample_rss(d: &Daemon, t: Duration, rss: &mut Vec<u64>) {
    let end = tokio::time::Instant::now() + t;
    while tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200)).await;
        rss.push(d.rss_kib());
    }
}

#[test]
fn reader_that_reads_nothing_is_lagged_and_closed() {
    const STALL: Duration = Duration::from_secs(14);
    const CLIENTS: usize = 20;
    let Some(net) = TestNet::start_and_enter(&json!({"default": {"delay": "1ms"}})) else {
        return;
    };
    let port = support::free_port();
    // 500 loopback monitors at 100 ms: about 5,000 samples a second on /api/v1/live.
    let mut config = base_config(4);
    config.push_str("defaults:\n  interval: 100ms\n  timeout: 1s\ntargets:\n");
    for i in 0..500 {
        config.push_str(&format!(
            "  - host: 127.0.{}.{}\n",
            1 + i / 250,
            1 + i % 250
        ));
    }
    let d = Daemon::start_on(
        &support::write_config(net.dir(), "pingscope.yml", &config),
        port,
        &["--log.level", "warn"],
    );
    std::thread::sleep(Duration::from_secs(2));
    support::api::runtime().block_on(async {
        // The source's rate and message size, from a reader that reads as fast as it can (on a
        // loaded machine it may lag too: what it missed counts towards the rate).
        let mut normal = Vec::new();
        let (mut ws, _) = tokio_tungstenite::connect_async(d.ws_url("/api/v1/live"))
            .await
            .expect("connect");
        let t0 = std::time::Instant::now();
        let _ = read_until(&mut ws, &mut normal, Duration::from_secs(1), Duration::ZERO).await;
        let elapsed = t0.elapsed().as_secs_f64();
        drop(ws);
        let missed: u64 = normal
            .iter()
            .filter(|m| m["type"] == "lagged")
            .filter_map(|m| m["missed"].as_u64())
            .sum();
        normal.retain(|m| m["type"] != "lagged");
        let rate = (normal.len() as u64 + missed) as f64 / elapsed;
        let avg_len = normal.iter().map(|m| m.to_string().len()).sum::<usize>() as f64
            / (normal.len().max(1) as f64);

        // CLIENTS readers that read nothing for STALL, then read what reached them.
        let mut readers = Vec::new();
        for _ in 0..CLIENTS {
            readers.push(tiny_window_client(&d, "/api/v1/live").await);
        }
        let mut rss = vec![d.rss_kib()];
        sample_rss(&d, STALL, &mut rss).await;
        let drained = futures_util::future::join_all(readers.iter_mut().map(|ws| async move {
            let mut msgs = Vec::new();
            let end = read_until(ws, &mut msgs, Duration::from_secs(20), Duration::ZERO).await;
            (msgs, end)
        }))
        .await;
        let notes = |m: &[Value]| {
            m.iter()
                .filter(|m| m["type"] == "lagged")
                .map(|m| m["missed"].as_u64().unwrap_or(0))
                .collect::<Vec<_>>()
        };
        for (i, (msgs, end)) in drained.iter().enumerate() {
            eprintln!(
                "reader {i}: {} messages, notes {:?}, end {end:?}",
                msgs.len(),
                notes(msgs)
            );
        }
        let growth = rss
            .iter()
            .max()
            .copied()
            .unwrap_or(0)
            .saturating_sub(rss[0]);
        eprintln!("source {rate} msg/s of {avg_len:.0} B; rss KiB {:?}", rss);

        // Every one is closed: 1008, or dropped when not even the close frame could be written.
        for (i, (msgs, end)) in drained.iter().enumerate() {
            assert!(
                matches!(end, Some(WsEnd::Close(1008)) | Some(WsEnd::Dropped(_))),
                "reader {i} not closed: {end:?}"
            );
            assert!(
                msgs.len() as f64 <= rate * STALL.as_secs_f64(),
                "reader {i} got {} messages",
                msgs.len()
            );
            // A note says how much was lost since the last one: never zero.
            assert!(
                notes(msgs).iter().all(|n| *n > 0),
                "reader {i}: {:?}",
                notes(msgs)
            );
        }
        // A policy close comes after the reader was told it lagged.
        for (i, (msgs, end)) in drained.iter().enumerate() {
            if *end == Some(WsEnd::Close(1008)) {
                assert!(
                    !notes(msgs).is_empty(),
                    "reader {i} closed 1008 without a lagged note"
                );
            }
        }
        let noted = drained.iter().filter(|(m, _)| !notes(m).is_empty()).count();
        assert!(
            noted > CLIENTS / 2,
            "only {noted} of {CLIENTS} readers were told they lagged"
        );
        // Memory: bounded per client, not by what the clients missed. Each missed about
        // rate × STALL × avg_len bytes; the daemon may keep a small part of that (plus the
        // allocator's own growth, up to 24 MiB). The source must be fast enough that keeping
        // everything would break the bound clearly.
        let missed_kib = rate * STALL.as_secs_f64() * avg_len / 1024.0 * CLIENTS as f64;
        let bound = (missed_kib / 2.0).max(24.0 * 1024.0);
        assert!(
            missed_kib > 1.5 * bound,
            "source too slow ({rate:.0} messages/s) to show a bound: {missed_kib:.0} KiB missed"
        );
        assert!(
            (growth as f64) < bound,
            "RSS grew {growth} KiB (bound {bound:.0}) while {CLIENTS} clients missed {missed_kib:.0} KiB"
        );
    });
}
