//! The limits on what clients can make the server hold: body size (413), header size and count
//! (431), slow headers (connection closed), request timeout (503, `/probe` exempt), and the
//! connection cap (extra connections wait in the backlog). Loopback only.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

mod support;

use std::time::{Duration, Instant};

use pingscope::http::serve::{Limits, ServeOptions};
use support::daemon::Daemon;
use support::web::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server with the default limits but what `set` changes.
async fn start_limited(set: impl FnOnce(&mut Limits)) -> Server {
    let mut limits = Limits::default();
    set(&mut limits);
    start(ServeOptions {
        limits,
        ..ServeOptions::default()
    })
    .await
}

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

async fn send(addr: std::net::SocketAddr, request: &[u8]) -> Reply {
    exchange(TcpStream::connect(addr).await.unwrap(), request)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_gets_413() {
    let server = start_limited(|l| l.max_body_bytes = 1024).await;
    let ok = send(server.addr, &post("/echo", &[b'a'; 1024])).await;
    assert_eq!((ok.status, ok.body.as_str()), (200, "1024\n"));
    let big = send(server.addr, &post("/echo", &[b'a'; 1025])).await;
    assert_eq!(big.status, 413, "{}", big.head);
    // The unread rest of the body makes the connection unusable: the answer must say so.
    assert!(
        big.head.to_ascii_lowercase().contains("connection: close"),
        "{}",
        big.head
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_or_too_many_headers_get_431() {
    let server = start_limited(|l| {
        l.max_header_bytes = 8192;
        l.max_headers = 16;
    })
    .await;
    let small = format!(
        "GET / HTTP/1.1\r\nHost: test\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
        "p".repeat(4000)
    );
    assert_eq!(send(server.addr, small.as_bytes()).await.status, 200);

    let big = format!(
        "GET / HTTP/1.1\r\nHost: test\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
        "p".repeat(20_000)
    );
    let r = send(server.addr, big.as_bytes()).await;
    assert_eq!(r.status, 431, "{}", r.head);

    let mut many = String::from("GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for i in 0..40 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let r = send(server.addr, many.as_bytes()).await;
    assert_eq!(r.status, 431, "{}", r.head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off() {
    let server = start_limited(|l| l.header_read_timeout = Duration::from_millis(400)).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: te")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(IO_TIMEOUT, stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection stayed open");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "unexpected answer: {text:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_gets_503_but_probe_keeps_its_own_budget() {
    let server = start_limited(|l| l.request_timeout = Duration::from_millis(300)).await;
    let started = Instant::now();
    let r = get_plain(server.addr, "/slow", None).await;
    assert_eq!(r.status, 503, "{}", r.head);
    assert!(started.elapsed() < Duration::from_secs(3));
    let body: serde_json::Value = serde_json::from_str(&r.body).expect("JSON error body");
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");

    let probe = get_plain(server.addr, "/probe", None).await;
    assert_eq!((probe.status, probe.body.as_str()), (200, "probe done\n"));
    assert_eq!(get_plain(server.addr, "/", None).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_until_a_slot_frees() {
    let server = start_limited(|l| l.max_connections = 2).await;
    // Two idle connections take both slots (connect completes in the kernel either way).
    let idle_a = TcpStream::connect(server.addr).await.unwrap();
    let idle_b = TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let waiting = tokio::spawn({
        let addr = server.addr;
        async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            let r = exchange(stream, &get_request("/", None)).await;
            (r, Instant::now())
        }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !waiting.is_finished(),
        "a third connection was served past the cap of 2"
    );

    let freed = Instant::now();
    drop(idle_a);
    let (reply, answered) = tokio::time::timeout(IO_TIMEOUT, waiting)
        .await
        .expect("the waiting connection was never served")
        .unwrap();
    assert_eq!(reply.unwrap().status, 200);
    assert!(answered >= freed);
    drop(idle_b);
}

#[test]
fn limit_flags_reject_nonsense_with_exit_64() {
    for (flag, value) in [
        ("--web.max-connections", "0"),
        ("--web.max-header-bytes", "100"),
        ("--web.max-request-body-bytes", "0"),
        ("--web.request-timeout", "0s"),
        ("--web.max-probes", "0"),
        ("--web.max-ws-clients", "many"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pingscope"))
            .args(["serve", "--web.listen-address", "127.0.0.1:0", flag, value])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
}

/// Reads an answer's head only (the connection may stay open, as an accepted upgrade does).
async fn status_of(addr: std::net::SocketAddr, request: &[u8]) -> (u16, TcpStream) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let read_head = async {
        while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
            if stream.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            head.push(byte[0]);
        }
    };
    tokio::time::timeout(IO_TIMEOUT, read_head).await.unwrap();
    let text = String::from_utf8_lossy(&head);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    (status, stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_and_websocket_caps_follow_their_flags() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &loopback_config(dir.path()),
        &["--web.max-probes", "1", "--web.max-ws-clients", "1"],
    );
    let probe = "/probe?target=127.0.0.1&count=4&interval=300ms";
    let (a, b) = tokio::join!(
        get_plain(daemon.addr(), probe, None),
        get_plain(daemon.addr(), probe, None)
    );
    let mut statuses = [a.status, b.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 429], "{}\n{}", a.head, b.head);

    let upgrade = b"GET /live HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let (first, _open) = status_of(daemon.addr(), upgrade).await;
    assert_eq!(first, 101);
    let (second, _) = status_of(daemon.addr(), upgrade).await;
    assert_eq!(second, 503);
}
