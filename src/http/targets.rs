//! `GET /api/v1/targets` (alias `GET /servers`): configured monitors with their window stats.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use crate::sample::{Sample, secs_to_ms as ms};
use crate::state::App;

/// One monitored address.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TargetView {
    /// Target name (the `target` label).
    pub target: String,
    /// Host as configured.
    pub host: String,
    /// Address probed.
    pub ip: String,
    /// Custom labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Probe interval, in the config's duration format.
    pub interval: String,
    /// What kind of probe.
    pub kind: crate::probe::ProbeKind,
    /// The port of a `tcp` or `udp` monitor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Probes sent since the monitor (re)started.
    pub sent: u64,
    /// Settled probes in the window.
    pub window_probes: usize,
    /// Loss ratio over the window.
    pub loss_ratio: f64,
    /// RTT statistics over the window, in milliseconds.
    pub rtt_ms: Option<WindowRttMs>,
    /// The last sample.
    pub last: Option<Sample>,
}

/// Window RTT statistics in milliseconds.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WindowRttMs {
    /// Smallest.
    pub min: f64,
    /// Mean.
    pub avg: f64,
    /// Largest.
    pub max: f64,
    /// Standard deviation.
    pub stddev: f64,
    /// Median.
    pub p50: f64,
}

/// A target whose host does not resolve right now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UnresolvedView {
    /// Target name.
    pub target: String,
    /// Host as configured.
    pub host: String,
    /// Why.
    pub error: String,
}

/// The response of `GET /api/v1/targets`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TargetsResponse {
    /// Every monitored address.
    pub targets: Vec<TargetView>,
    /// Targets that do not resolve.
    pub unresolved: Vec<UnresolvedView>,
}

/// `GET /api/v1/targets`: the configured monitors with their window statistics.
#[utoipa::path(
    get, path = "/api/v1/targets", tag = "monitors",
    responses((status = 200, description = "Every monitored address", body = TargetsResponse))
)]
pub async fn list(State(app): State<App>) -> Json<TargetsResponse> {
    let targets = app
        .scheduler()
        .snapshot()
        .into_iter()
        .map(|s| TargetView {
            target: s.target,
            host: s.host,
            ip: s.ip.to_string(),
            labels: s.labels.into_iter().collect(),
            interval: humantime::format_duration(s.interval)
                .to_string()
                .replace(' ', ""),
            kind: s.kind,
            port: s.port,
            sent: s.sent,
            window_probes: s.window.probes,
            loss_ratio: s.window.loss_ratio,
            rtt_ms: s.window.rtt.map(|r| WindowRttMs {
                min: ms(r.min),
                avg: ms(r.mean),
                max: ms(r.max),
                stddev: ms(r.stddev),
                p50: ms(r.p50),
            }),
            last: s.last,
        })
        .collect();
    let unresolved = app
        .scheduler()
        .resolve_failures()
        .into_iter()
        .map(|f| UnresolvedView {
            target: f.target,
            host: f.host,
            error: f.error,
        })
        .collect();
    Json(TargetsResponse {
        targets,
        unresolved,
    })
}
