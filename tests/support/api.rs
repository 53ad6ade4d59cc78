//! The HTTP side of the API tests, for the daemon and the in-process app alike: clients, JSON
//! requests, the error-shape assertions, `/probe` answers, WebSocket followers, and the configs
//! the API tests share.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::expo::Scrape;

/// Something serving the pingscope HTTP API: the daemon, or the in-process app.
pub trait Endpoint {
    /// `http://ADDR` + `path`.
    fn url(&self, path: &str) -> String;
}

/// A blocking HTTP client (30 s timeout, no proxy); build it after `TestNet::enter`.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .expect("an HTTP client")
}

/// The status of a plain `GET path` over HTTP/1.1, without an HTTP library (usable anywhere,
/// inside a runtime too); `None` when the exchange fails.
pub fn raw_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// POST a JSON body; returns (status, JSON body or Null).
pub fn post_json(
    c: &reqwest::blocking::Client,
    url: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = c.post(url).json(body).send().expect("POST");
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(serde_json::Value::Null))
}

/// GET; returns (status, JSON body or Null).
pub fn get_json(c: &reqwest::blocking::Client, url: &str) -> (u16, serde_json::Value) {
    let r = c.get(url).send().expect("GET");
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(serde_json::Value::Null))
}

/// Waits (bounded) until the session is no longer `running`; returns its detail.
pub fn wait_ended(
    c: &reqwest::blocking::Client,
    d: &impl Endpoint,
    id: &str,
    within: Duration,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = get_json(c, &d.url(&format!("/api/v1/sessions/{id}")));
        assert_eq!(status, 200, "GET session {id}: {body}");
        if body["status"] != "running" {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "session {id} still running after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One `/probe` answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
    pub elapsed: Duration,
}

impl Answer {
    /// The value of one exposition series, e.g. `probe_rtt_seconds{stat="min"}`.
    pub fn metric(&self, series: &str) -> Option<f64> {
        Scrape::parse(&self.body).exact(series)
    }

    /// Like [`Answer::metric`], panicking with the whole body when the series is missing.
    pub fn must(&self, series: &str) -> f64 {
        self.metric(series).unwrap_or_else(|| {
            panic!(
                "no {series} in the answer ({}):\n{}",
                self.status, self.body
            )
        })
    }

    /// The `error.message` of a JSON error answer.
    pub fn error_message(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {}", self.body));
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The `error.code` of a JSON error answer.
    pub fn error_code(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(&self.body).unwrap_or_default();
        v["error"]["code"].as_str().unwrap_or_default().to_owned()
    }
}

/// `GET /probe` on `at` with this client.
pub fn probe_with(
    c: &reqwest::blocking::Client,
    at: &impl Endpoint,
    query: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> Answer {
    let mut req = c.get(at.url("/probe")).query(query);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let started = Instant::now();
    let resp = req
        .send()
        .unwrap_or_else(|e| panic!("GET /probe {query:?}: {e}"));
    let status = resp.status().as_u16();
    let content_type = content_type(&resp);
    let body = resp.text().unwrap_or_default();
    Answer {
        status,
        content_type,
        body,
        elapsed: started.elapsed(),
    }
}

/// How a followed WebSocket ended.
#[derive(Debug, Clone, PartialEq)]
pub enum WsEnd {
    /// A close frame with this code.
    Close(u16),
    /// The connection ended without a close frame (or with a protocol error).
    Dropped(String),
    /// `within` passed first.
    TimedOut,
}

/// A current-thread tokio runtime; build it after `TestNet::enter`.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Connects to `url` and reads every text message until the stream ends (bounded by `within`).
pub fn follow(url: &str, within: Duration) -> (Vec<serde_json::Value>, WsEnd) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    runtime().block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .unwrap_or_else(|e| panic!("WebSocket {url}: {e}"));
        let mut msgs = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, ws.next()).await {
                Err(_) => return (msgs, WsEnd::TimedOut),
                Ok(None) => return (msgs, WsEnd::Dropped("end of stream".into())),
                Ok(Some(Err(e))) => return (msgs, WsEnd::Dropped(e.to_string())),
                Ok(Some(Ok(Message::Text(t)))) => msgs.push(
                    serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("non-JSON message {t:?}: {e}")),
                ),
                Ok(Some(Ok(Message::Close(frame)))) => {
                    let code = frame.map_or(1005, |f| u16::from(f.code));
                    return (msgs, WsEnd::Close(code));
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    })
}

/// The host the session configs deny.
pub const DENIED_HOST: &str = "198.18.0.99";

/// The `sessions:` and `access:` parts of a session test config (fast intervals, the test
/// ranges and loopback allowed, [`DENIED_HOST`] denied), the store under `{{DIR}}`.
pub fn base_config(max_active: usize) -> String {
    format!(
        "sessions:\n  database: \"{{{{DIR}}}}/sessions.db\"\n  max_active: {max_active}\n  max_duration: 10m\n  min_interval: 10ms\n\
         access:\n  allow: [198.18.0.0/15, \"2001:db8::/32\", 127.0.0.0/8]\n  deny: [{DENIED_HOST}/32]\n"
    )
}

/// A `/probe` test config: no monitors, sessions under `{{DIR}}`, a 10 ms minimum interval,
/// one extra probe profile (`three`), these access rules and this DNS server (never the system
/// resolver: without a test DNS server it points at a closed loopback port).
pub fn probe_config(access: &str, dns: Option<std::net::SocketAddr>) -> String {
    let dns = dns.map_or_else(|| "127.0.0.1:1".to_owned(), |a| a.to_string());
    format!(
        r#"
dns:
  servers: ["{dns}"]
sessions:
  database: "{{{{DIR}}}}/sessions.db"
  min_interval: 10ms
access:
{access}
probe_profiles:
  three:
    count: 3
    interval: 20ms
    timeout: 300ms
"#
    )
}

/// Access rules allowing only the test ranges.
pub const TEST_RANGES: &str = r#"  allow: [198.18.0.0/15, "2001:db8::/32"]
  deny: []"#;

/// Asserts the error shape, status, code and exact message.
#[track_caller]
pub fn assert_error(got: &(u16, Value), status: u16, code: &str, message: &str) {
    let (s, body) = got;
    assert_eq!(*s, status, "status of {body}");
    assert_eq!(body["error"]["code"], code, "code of {body}");
    assert_eq!(body["error"]["message"], message, "message of {body}");
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(1),
        "only `error`: {body}"
    );
    let keys: Vec<&str> = body["error"]
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert!(
        keys.iter()
            .all(|k| ["code", "message", "field"].contains(k))
            && body["error"].get("field").is_none_or(Value::is_string),
        "code, message and at most a field name: {body}"
    );
}

/// Asserts the error shape and status, and that the message contains every fragment.
#[track_caller]
pub fn assert_error_has(got: &(u16, Value), status: u16, code: &str, fragments: &[&str]) {
    let (s, body) = got;
    assert_eq!(*s, status, "status of {body}");
    assert_eq!(body["error"]["code"], code, "code of {body}");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    for f in fragments {
        assert!(msg.contains(f), "message {msg:?} lacks {f:?}");
    }
}

/// POST raw bytes with an optional Content-Type; (status, JSON body or Null).
pub fn send_raw(
    c: &reqwest::blocking::Client,
    url: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut req = c.post(url).body(body);
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    let r = req.send().expect("POST");
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

/// DELETE; (status, JSON body or Null).
pub fn delete(c: &reqwest::blocking::Client, url: &str) -> (u16, Value) {
    let r = c.delete(url).send().expect("DELETE");
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

/// Starts a session (expects 201) and returns its id.
pub fn start_session(c: &reqwest::blocking::Client, d: &impl Endpoint, body: Value) -> String {
    let (status, rec) = post_json(c, &d.url("/api/v1/sessions"), &body);
    assert_eq!(status, 201, "{rec}");
    rec["id"].as_str().expect("id").to_owned()
}

/// Asks to stop session `id`; (status, JSON body or Null).
pub fn stop_session(c: &reqwest::blocking::Client, d: &impl Endpoint, id: &str) -> (u16, Value) {
    post_json(
        c,
        &d.url(&format!("/api/v1/sessions/{id}/stop")),
        &serde_json::json!({}),
    )
}

/// The session ids on a page of `GET /api/v1/sessions`, in its order.
pub fn page_ids(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].as_str().expect("id"))
        .collect()
}

/// A session id of the right form that no daemon issued.
pub fn unknown_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A response's `Content-Type`, or "" when it has none (or one that is not text).
pub fn content_type(resp: &reqwest::blocking::Response) -> String {
    resp.headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// `(ttl, row[key])` of each hop row (a session summary's `hops`, or rows read off a page).
pub fn ttl_and<'a>(rows: &'a [Value], key: &str) -> Vec<(u64, &'a str)> {
    rows.iter()
        .map(|r| {
            let ttl = r["ttl"].as_u64().unwrap_or_else(|| panic!("no ttl in {r}"));
            let value = r[key].as_str().unwrap_or_else(|| panic!("no {key} in {r}"));
            (ttl, value)
        })
        .collect()
}

/// The strings of the JSON array `v` (other items skipped); fails when `v` is no array.
pub fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .filter_map(Value::as_str)
        .collect()
}
