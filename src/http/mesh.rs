//! `GET /api/v1/mesh`: the mesh matrix for the page. This instance's row comes from its own
//! monitors of the peers; each peer's row from that peer's `/api/v1/targets`, fetched here
//! (server-side, so the browser talks to one origin) at once for every peer and each bounded
//! by `mesh.web_timeout`: a slow or dead peer shows as such and never holds the answer longer.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use crate::sample::secs_to_ms as ms;
use crate::state::App;

/// Largest peer answer read (a peer with thousands of monitors stays well below).
const MAX_PEER_BODY: usize = 8 << 20;
/// The label naming the pinging instance (`crate::mesh::SOURCE_LABEL`).
const SOURCE: &str = "source";

/// One cell of the matrix: from a source to one target.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MeshCell {
    /// The peer pinged (its `target` label).
    pub target: String,
    /// Settled probes in the window.
    pub window_probes: usize,
    /// Loss ratio over the window.
    pub loss_ratio: f64,
    /// Mean RTT over the window, in milliseconds.
    pub rtt_ms: Option<f64>,
}

/// How a row was obtained.
#[derive(Debug, Serialize, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RowState {
    /// This instance's own monitors.
    Local,
    /// The peer answered.
    Ok,
    /// The peer did not answer within `mesh.web_timeout`.
    Timeout,
    /// The peer could not be reached or gave a bad answer.
    Error,
}

/// One row: what one instance sees of its peers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MeshRow {
    /// The pinging instance (its `source` label), or the peer's address when it gave none.
    pub source: String,
    /// The peer asked (`None` for this instance's own row).
    pub peer: Option<String>,
    pub state: RowState,
    /// Why the row is missing, for `timeout` and `error`.
    pub error: Option<String>,
    /// How long the peer took to answer, in milliseconds.
    pub fetch_ms: Option<f64>,
    pub cells: Vec<MeshCell>,
}

/// The response of `GET /api/v1/mesh`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MeshResponse {
    /// Whether `mesh:` is configured.
    pub enabled: bool,
    /// This instance's `source` label.
    pub source: Option<String>,
    /// This instance first, then each peer it monitors.
    pub rows: Vec<MeshRow>,
}

/// `GET /api/v1/mesh`: loss and RTT from this instance and from each of its peers to theirs.
#[utoipa::path(
    get, path = "/api/v1/mesh", tag = "monitors",
    responses((status = 200, description = "The mesh matrix", body = MeshResponse))
)]
pub async fn matrix(State(app): State<App>) -> Json<MeshResponse> {
    let config = app.config();
    let Some(mesh) = &config.mesh else {
        return Json(MeshResponse {
            enabled: false,
            source: None,
            rows: Vec::new(),
        });
    };
    let source = app.mesh_name();
    let peers = app.mesh_peers();
    let names: std::collections::HashSet<&str> = peers.iter().map(|p| &*p.name).collect();
    let cells = app
        .scheduler()
        .snapshot()
        .into_iter()
        .filter(|s| names.contains(s.target.as_str()))
        .map(|s| MeshCell {
            target: s.target,
            window_probes: s.window.probes,
            loss_ratio: s.window.loss_ratio,
            rtt_ms: s.window.rtt.map(|r| ms(r.mean)),
        })
        .collect();
    let mut rows = vec![MeshRow {
        source: source.clone().unwrap_or_default(),
        peer: None,
        state: RowState::Local,
        error: None,
        fetch_ms: None,
        cells,
    }];
    let fetches = peers.iter().map(|peer| {
        let (port, timeout) = (mesh.web_port, mesh.web_timeout);
        async move { peer_row(&peer.name, &peer.host, port, timeout).await }
    });
    rows.extend(futures_util::future::join_all(fetches).await);
    Json(MeshResponse {
        enabled: true,
        source,
        rows,
    })
}

/// What this reads of a peer's `/api/v1/targets`.
#[derive(Deserialize)]
struct PeerTargets {
    targets: Vec<PeerTarget>,
}

#[derive(Deserialize)]
struct PeerTarget {
    target: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    window_probes: usize,
    loss_ratio: f64,
    rtt_ms: Option<PeerRtt>,
}

#[derive(Deserialize)]
struct PeerRtt {
    avg: f64,
}

async fn peer_row(name: &str, host: &str, port: u16, timeout: Duration) -> MeshRow {
    let started = tokio::time::Instant::now();
    let outcome = tokio::time::timeout(timeout, fetch_targets(host, port)).await;
    let fetch_ms = Some(ms(started.elapsed().as_secs_f64()));
    let row = |state, error: Option<String>, source: String, cells| MeshRow {
        source,
        peer: Some(name.to_owned()),
        state,
        error,
        fetch_ms,
        cells,
    };
    match outcome {
        Err(_) => row(
            RowState::Timeout,
            Some(format!(
                "no answer within {}",
                crate::duration::format_duration(timeout)
            )),
            name.to_owned(),
            Vec::new(),
        ),
        Ok(Err(e)) => row(RowState::Error, Some(e), name.to_owned(), Vec::new()),
        Ok(Ok(t)) => {
            let mesh: Vec<PeerTarget> = t
                .targets
                .into_iter()
                .filter(|t| t.labels.contains_key(SOURCE))
                .collect();
            let source = mesh
                .first()
                .and_then(|t| t.labels.get(SOURCE).cloned())
                .unwrap_or_else(|| name.to_owned());
            let cells = mesh
                .into_iter()
                .map(|t| MeshCell {
                    target: t.target,
                    window_probes: t.window_probes,
                    loss_ratio: t.loss_ratio,
                    rtt_ms: t.rtt_ms.map(|r| r.avg),
                })
                .collect();
            row(RowState::Ok, None, source, cells)
        }
    }
}

/// `GET http://HOST:PORT/api/v1/targets` over one HTTP/1.1 connection (plain HTTP: a peer
/// behind TLS or basic auth shows as an error row).
async fn fetch_targets(host: &str, port: u16) -> Result<PeerTargets, String> {
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("{host}:{port}: {e}"))?;
    // Aborted when this fetch ends or is dropped (its timeout): a dead peer keeps no task.
    let _driver = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(conn));
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let request = axum::http::Request::get("/api/v1/targets")
        .header(axum::http::header::HOST, authority)
        .header(axum::http::header::ACCEPT, "application/json")
        .body(axum::body::Body::empty())
        .map_err(|e| e.to_string())?;
    async {
        let resp = send
            .send_request(request)
            .await
            .map_err(|e| format!("{host}:{port}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{host}:{port} answered {}", resp.status()));
        }
        let body = axum::body::to_bytes(axum::body::Body::new(resp.into_body()), MAX_PEER_BODY)
            .await
            .map_err(|e| format!("{host}:{port}: reading the answer: {e}"))?;
        serde_json::from_slice::<PeerTargets>(&body)
            .map_err(|e| format!("{host}:{port}: not a targets answer: {e}"))
    }
    .await
}
