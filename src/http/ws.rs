//! WebSocket streams: one session's samples (`/api/v1/sessions/{id}/live`) and the configured
//! monitors' samples (`/api/v1/live?target=a,b`, alias `/live`).
//!
//! Each client has a forwarder (reads the broadcast, never blocks) and a writer (sends to the
//! socket with a timeout) joined by a small bounded queue. A client that does not keep up loses
//! messages, is told `{"type":"lagged","missed":N}`, and is closed with 1008 (policy violation)
//! when it stays behind; nothing it does can slow the engine or grow the daemon's memory.
//! A client that breaks the protocol gets a close frame before the connection goes: 1002
//! (protocol error), 1007 (text that is not UTF-8 or not JSON) or 1009 (over [`MAX_INBOUND`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::http::error::ApiError;
use crate::http::sessions::manager_and_id;
use crate::sample::Sample;
use crate::session::SessionRecord;
use crate::session::manager::{LiveMsg, Subscription};
use crate::state::{App, WsSlot};

/// Largest message or frame a client may send (it has nothing to say beyond pongs).
pub const MAX_INBOUND: usize = 4 * 1024;
/// Messages queued for one client before it starts losing them.
pub const CLIENT_QUEUE: usize = 256;
/// A send that takes longer than this means the client is gone: the connection is dropped.
/// Longer than [`STALL_LIMIT`] on purpose, so that a reader who paused and comes back still gets
/// its lag note and the 1008 close after what was buffered, whatever the machine's load; memory
/// stays bounded meanwhile (the queue and the socket's write buffer are both bounded).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Times a client may be told it lagged before it is closed.
pub const MAX_LAGS: u32 = 3;
/// A client whose queue stays full this long is closed.
pub const STALL_LIMIT: Duration = Duration::from_secs(10);
/// How long a session's reader waits, at shutdown, for the session's summary before closing.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);
/// Keepalive ping period; no pong for two periods closes the connection.
pub const PING_EVERY: Duration = Duration::from_secs(20);

const POLICY_VIOLATION: u16 = 1008;
const GOING_AWAY: u16 = 1001;
const NORMAL: u16 = 1000;
const PROTOCOL_ERROR: u16 = 1002;
const INVALID_DATA: u16 = 1007;
const MESSAGE_TOO_BIG: u16 = 1009;

fn too_many_clients() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "too_many_clients",
        "too many live clients connected; retry later",
    )
}

fn limit(ws: WebSocketUpgrade) -> WebSocketUpgrade {
    ws.max_message_size(MAX_INBOUND).max_frame_size(MAX_INBOUND)
}

/// `GET /api/v1/sessions/{id}/live` (WebSocket): samples so far, new samples, the summary, close.
#[utoipa::path(
    get, path = "/api/v1/sessions/{id}/live", tag = "live",
    params(crate::http::sessions::SessionPath),
    responses(
        (status = 101, description = "WebSocket: JSON samples, then {\"type\":\"summary\"}, then close 1000"),
        (status = 400, description = "Malformed id", body = crate::http::error::ErrorBody),
        (status = 404, description = "No such session", body = crate::http::error::ErrorBody),
        (status = 503, description = "Too many live clients", body = crate::http::error::ErrorBody),
    )
)]
pub async fn session_live(
    State(app): State<App>,
    Path(crate::http::sessions::SessionPath { id }): Path<crate::http::sessions::SessionPath>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let (m, id) = manager_and_id(&app, &id).await?;
    let slot = app.try_ws_slot().ok_or_else(too_many_clients)?;
    let sub = m
        .subscribe(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no session {id}")))?;
    let shutdown = app.shutdown_token().clone();
    Ok(limit(ws).on_upgrade(move |socket| session_stream(socket, sub, slot, shutdown)))
}

/// Query of the monitors' live stream.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LiveQuery {
    /// Comma-separated target names; all targets when absent.
    pub target: Option<String>,
}

/// `GET /api/v1/live?target=a,b` (WebSocket): live samples of the configured monitors.
#[utoipa::path(
    get, path = "/api/v1/live", tag = "live",
    params(LiveQuery),
    responses(
        (status = 101, description = "WebSocket: JSON samples of the configured monitors"),
        (status = 400, description = "Invalid parameter", body = crate::http::error::ErrorBody),
        (status = 503, description = "Too many live clients", body = crate::http::error::ErrorBody),
    )
)]
pub async fn monitors_live(
    State(app): State<App>,
    query: Result<Query<LiveQuery>, axum::extract::rejection::QueryRejection>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let Query(q) =
        query.map_err(|e| ApiError::bad_request(format!("invalid query: {}", e.body_text())))?;
    let filter: Option<HashSet<String>> = q.target.map(|t| {
        t.split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    });
    let slot = app.try_ws_slot().ok_or_else(too_many_clients)?;
    let rx = app.live().subscribe();
    let shutdown = app.shutdown_token().clone();
    Ok(limit(ws).on_upgrade(move |socket| monitor_stream(socket, rx, filter, slot, shutdown)))
}

fn json<T: serde::Serialize>(v: &T) -> Message {
    Message::Text(Utf8Bytes::from(
        serde_json::to_string(v).unwrap_or_default(),
    ))
}

fn summary_message(record: &SessionRecord) -> Message {
    let mut v = record
        .summary
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or_else(|| serde_json::json!({"type": "summary"}));
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "session_id".into(),
            serde_json::Value::String(record.id.to_string()),
        );
        obj.insert(
            "status".into(),
            serde_json::Value::String(record.status.to_string()),
        );
    }
    Message::Text(Utf8Bytes::from(v.to_string()))
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

/// The close frame that answers a read error: 1009 for a message or frame over
/// [`MAX_INBOUND`], 1007 for text that is not UTF-8, 1002 for any other breach of the protocol;
/// `None` when the connection itself is gone and no frame can reach the client.
fn close_for(e: axum::Error) -> Option<(u16, &'static str)> {
    use tungstenite::error::{Error as WsError, ProtocolError};
    let inner = e.into_inner();
    match inner.downcast_ref::<WsError>()? {
        WsError::Capacity(_) => Some((MESSAGE_TOO_BIG, "message too big")),
        WsError::Utf8(_) => Some((INVALID_DATA, "text is not UTF-8")),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(_) => Some((PROTOCOL_ERROR, "protocol error")),
        _ => None,
    }
}

/// What the forwarder queues for the writer.
enum Out {
    Msg(Message),
    Close(u16, &'static str),
}

/// How the forwarder ended a client, for the writer to say after the messages already queued:
/// a close frame offered with `try_send` is lost when the queue is full, and the writer would
/// otherwise close with 1000 once the queue ends.
#[derive(Clone, Default)]
struct Ending(Arc<parking_lot::Mutex<Option<EndNote>>>);

/// Messages missed since the last lag note, close code, close reason.
type EndNote = (u64, u16, &'static str);

impl Ending {
    /// Records the first ending: messages missed since the last note, close code and reason.
    fn set(&self, missed: u64, code: u16, reason: &'static str) {
        self.0.lock().get_or_insert((missed, code, reason));
    }

    fn take(&self) -> Option<EndNote> {
        self.0.lock().take()
    }
}

/// Tracks a client's lag: messages lost since it was last told, and how often it was told.
struct Lag {
    missed: u64,
    lags: u32,
    full_since: Option<Instant>,
    ending: Ending,
}

impl Lag {
    /// Queues `msg`, or counts it lost; returns false when the client must be closed.
    fn offer(&mut self, q: &mpsc::Sender<Out>, msg: Message) -> bool {
        if self.missed > 0 {
            let note = json(&serde_json::json!({"type": "lagged", "missed": self.missed}));
            if q.try_send(Out::Msg(note)).is_ok() {
                self.missed = 0;
                self.lags += 1;
                if self.lags >= MAX_LAGS {
                    self.ending.set(0, POLICY_VIOLATION, "client too slow");
                    let _ = q.try_send(Out::Close(POLICY_VIOLATION, "client too slow"));
                    return false;
                }
            }
        }
        match q.try_send(Out::Msg(msg)) {
            Ok(()) => {
                self.full_since = None;
                true
            }
            Err(_) => {
                self.missed += 1;
                let since = *self.full_since.get_or_insert_with(Instant::now);
                since.elapsed() < STALL_LIMIT
            }
        }
    }
}

/// Sends queued messages; pings; ends on close, error, send timeout or a missing pong.
async fn writer(
    socket: WebSocket,
    mut q: mpsc::Receiver<Out>,
    done: CancellationToken,
    ending: Ending,
) {
    let (mut tx, mut rx) = socket.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut last_pong = Instant::now();
    loop {
        tokio::select! {
            out = q.recv() => {
                let (msg, last) = match out {
                    Some(Out::Msg(m)) => (m, false),
                    Some(Out::Close(code, reason)) => (close(code, reason), true),
                    None => {
                        let (missed, code, reason) = ending.take().unwrap_or((0, NORMAL, "done"));
                        if missed > 0 {
                            let note = json(&serde_json::json!({"type": "lagged", "missed": missed}));
                            let sent = tokio::time::timeout(SEND_TIMEOUT, tx.send(note)).await;
                            if !matches!(sent, Ok(Ok(()))) {
                                break;
                            }
                        }
                        (close(code, reason), true)
                    }
                };
                let sent = tokio::time::timeout(SEND_TIMEOUT, tx.send(msg)).await;
                if !matches!(sent, Ok(Ok(()))) || last {
                    break;
                }
            }
            inbound = rx.next() => match inbound {
                Some(Ok(Message::Pong(_))) => last_pong = Instant::now(),
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(e)) => {
                    // The frame is answered before the connection goes, as RFC 6455 7.1.7 asks.
                    if let Some((code, reason)) = close_for(e) {
                        let _ = tokio::time::timeout(Duration::from_secs(1), tx.send(close(code, reason))).await;
                    }
                    break;
                }
                // Messages are JSON both ways; text that is not is invalid data (1007).
                Some(Ok(Message::Text(t))) if serde_json::from_str::<serde::de::IgnoredAny>(&t).is_err() => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), tx.send(close(INVALID_DATA, "text is not JSON"))).await;
                    break;
                }
                // Clients have nothing to say; pings are answered by the library.
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if last_pong.elapsed() > PING_EVERY * 2 {
                    let _ = tokio::time::timeout(Duration::from_secs(1), tx.send(close(POLICY_VIOLATION, "no pong"))).await;
                    break;
                }
                let sent = tokio::time::timeout(SEND_TIMEOUT, tx.send(Message::Ping(Default::default()))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    break;
                }
            }
        }
    }
    done.cancel();
}

/// One connected client: the queue to its writer task, how far behind it is, and how it ends.
struct Client {
    q: mpsc::Sender<Out>,
    done: CancellationToken,
    ending: Ending,
    lag: Lag,
    writer: tokio::task::JoinHandle<()>,
    /// Held until the client is gone.
    _slot: WsSlot,
}

impl Client {
    /// Starts the writer for `socket` and returns the forwarder's side.
    fn start(socket: WebSocket, slot: WsSlot) -> Self {
        let (q, qrx) = mpsc::channel(CLIENT_QUEUE);
        let done = CancellationToken::new();
        let ending = Ending::default();
        let writer = tokio::spawn(writer(socket, qrx, done.clone(), ending.clone()));
        let lag = Lag {
            missed: 0,
            lags: 0,
            full_since: None,
            ending: ending.clone(),
        };
        Self {
            q,
            done,
            ending,
            lag,
            writer,
            _slot: slot,
        }
    }

    /// Ends the stream now with `code`, `missed` samples short, without waiting on the queue.
    fn close_now(&self, missed: u64, code: u16, reason: &'static str) {
        self.ending.set(missed, code, reason);
        let _ = self.q.try_send(Out::Close(code, reason));
    }

    /// Lets the writer send what is queued, then waits for it.
    async fn finish(self) {
        drop(self.q);
        let _ = self.writer.await;
    }
}

async fn session_stream(
    socket: WebSocket,
    sub: Subscription,
    slot: WsSlot,
    shutdown: CancellationToken,
) {
    let mut c = Client::start(socket, slot);
    match sub {
        Subscription::Ended(detail) => {
            // Ended sessions replay from the store; the queue applies back-pressure here since
            // nothing else is produced for this client.
            for s in &detail.samples {
                if c.q.send(Out::Msg(json(s))).await.is_err() {
                    return;
                }
            }
            let _ = c.q.send(Out::Msg(summary_message(&detail.record))).await;
            let _ = c.q.send(Out::Close(NORMAL, "session ended")).await;
        }
        Subscription::Running(replay, mut rx) => {
            let mut open = true;
            for s in replay {
                if !c.lag.offer(&c.q, json(&*s)) {
                    open = false;
                    break;
                }
            }
            // At shutdown the manager interrupts the session, whose last samples and summary
            // then still come: wait for them (bounded), and close as going away.
            let mut going_away: Option<Instant> = None;
            while open {
                let wait_end = going_away.unwrap_or_else(Instant::now);
                tokio::select! {
                    msg = rx.recv() => match msg {
                        Ok(LiveMsg::Sample(s)) => open = c.lag.offer(&c.q, json(&*s)),
                        Ok(LiveMsg::End(record)) => {
                            let code = if going_away.is_some() { GOING_AWAY } else { NORMAL };
                            let _ = c.q.send(Out::Msg(summary_message(&record))).await;
                            let _ = c.q.send(Out::Close(code, "session ended")).await;
                            open = false;
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => c.lag.missed += n,
                        Err(broadcast::error::RecvError::Closed) => {
                            let _ = c.q.send(Out::Close(NORMAL, "session ended")).await;
                            open = false;
                        }
                    },
                    () = c.done.cancelled() => open = false,
                    () = shutdown.cancelled(), if going_away.is_none() => {
                        going_away = Some(Instant::now() + SHUTDOWN_WAIT);
                    }
                    () = tokio::time::sleep_until(wait_end), if going_away.is_some() => {
                        c.close_now(0, GOING_AWAY, "server shutting down");
                        open = false;
                    }
                }
            }
            if c.lag.lags >= MAX_LAGS
                || c.lag.full_since.is_some_and(|t| t.elapsed() >= STALL_LIMIT)
            {
                c.close_now(c.lag.missed, POLICY_VIOLATION, "client too slow");
            }
        }
    }
    c.finish().await;
}

async fn monitor_stream(
    socket: WebSocket,
    mut rx: broadcast::Receiver<Arc<Sample>>,
    filter: Option<HashSet<String>>,
    slot: WsSlot,
    shutdown: CancellationToken,
) {
    let mut c = Client::start(socket, slot);
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Ok(s) => {
                    if filter.as_ref().is_some_and(|f| !f.contains(&s.target)) {
                        continue;
                    }
                    if !c.lag.offer(&c.q, json(&*s)) {
                        c.close_now(c.lag.missed, POLICY_VIOLATION, "client too slow");
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => c.lag.missed += n,
                Err(broadcast::error::RecvError::Closed) => break,
            },
            () = c.done.cancelled() => break,
            () = shutdown.cancelled() => {
                c.close_now(0, GOING_AWAY, "server shutting down");
                break;
            }
        }
    }
    c.finish().await;
}
