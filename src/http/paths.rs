//! The page's path views: `GET /api/v1/targets/{name}/path` (a path monitor's hop table and its
//! recent paths, per address) and `GET /api/v1/sessions/{id}/names` (the reverse names of a
//! path session's responders). Names come from the daemon's reverse-name cache within
//! [`NAMES_BUDGET`]; one that is not known by then is left out, and the page shows the address.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;

use crate::http::error::{ApiError, ErrorBody};
use crate::http::sessions::{IdErrors, SessionAt, SessionPath, detail};
use crate::probe::path::HopSummary;
use crate::sample::{SampleType, rfc3339};
use crate::scheduler::{PathView, PathViewError};
use crate::state::App;

/// How long a request waits for reverse names it does not know yet.
pub const NAMES_BUDGET: Duration = Duration::from_millis(500);
/// Most distinct addresses one request looks up.
pub const MAX_NAMES: usize = 256;

/// The `{name}` path parameter: a configured target's name.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TargetPath {
    /// Target name (the `target` label).
    pub name: String,
}

/// A path monitor: each of its addresses' hops and recent paths.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PathMonitorView {
    /// Target name.
    pub target: String,
    /// Host as configured.
    pub host: String,
    /// One entry per monitored address; empty while the host does not resolve.
    pub addresses: Vec<PathAddressView>,
}

/// One traced address.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PathAddressView {
    /// The address traced.
    pub ip: String,
    /// Rounds so far.
    pub rounds: u64,
    /// The TTL at which the destination answered last (the path's length in hops).
    pub length: Option<u8>,
    /// The current path id (as `pingscope_path_info{path_id}`).
    pub path_id: Option<String>,
    /// Path changes counted (as `pingscope_path_changes_total`).
    pub changes: u64,
    /// One row per (TTL, responder) since the monitor started, in TTL order: ECMP branches are
    /// rows under the same TTL.
    pub hops: Vec<HopRow>,
    /// The recent paths, newest first (at most 32).
    pub history: Vec<PathChangeView>,
}

/// One row of the hop table.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HopRow {
    /// The figures.
    #[serde(flatten)]
    pub hop: HopSummary,
    /// The responder's reverse name, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// True when this hop loses probes that the later hops do not: a router rate-limiting or
    /// not answering ICMP, not a problem on the path.
    pub rate_limited: bool,
    /// True when the responder is on the current path (false for a branch or path since left).
    pub current: bool,
}

/// One path the address took.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PathChangeView {
    /// RFC 3339 time of the round that first showed it.
    pub at: String,
    /// Its id.
    pub path_id: String,
    /// Its length in hops, if the destination answered.
    pub length: Option<u8>,
    /// True when `pingscope_path_changes_total` counted it; false for the first path and for
    /// responders first seen.
    pub changed: bool,
    /// Per TTL, who answered there.
    pub hops: Vec<HistoryHop>,
}

/// One TTL of a past path.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryHop {
    /// The TTL.
    pub ttl: u8,
    /// Who answered there; empty when nobody did.
    pub responders: Vec<Responder>,
}

/// A responder and its reverse name.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Responder {
    /// Its address.
    pub ip: String,
    /// Its reverse name, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The reverse names of a session's responders.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionNames {
    /// Address → name, for the responders whose name is known.
    pub names: BTreeMap<String, String>,
}

async fn lookup(app: &App, ips: BTreeSet<IpAddr>) -> HashMap<IpAddr, String> {
    let ips: Vec<IpAddr> = ips.into_iter().take(MAX_NAMES).collect();
    if ips.is_empty() {
        return HashMap::new();
    }
    app.hop_names()
        .names(&app.resolver(), &ips, NAMES_BUDGET)
        .await
}

fn address_view(v: PathView, names: &HashMap<IpAddr, String>) -> PathAddressView {
    let current = &v.current;
    let hops = v
        .hops
        .into_iter()
        .map(|hop| HopRow {
            name: hop.responder.and_then(|ip| names.get(&ip).cloned()),
            rate_limited: hop.loss_ratio > 0.0 && !hop.loss_persists,
            current: hop
                .responder
                .is_some_and(|ip| current.get(&hop.ttl).is_some_and(|s| s.contains(&ip))),
            hop,
        })
        .collect();
    let history = v
        .history
        .iter()
        .rev()
        .map(|e| PathChangeView {
            at: rfc3339(e.at),
            path_id: e.path_id.clone(),
            length: e.length,
            changed: e.changed,
            hops: e
                .hops
                .iter()
                .map(|(ttl, set)| HistoryHop {
                    ttl: *ttl,
                    responders: set
                        .iter()
                        .map(|ip| Responder {
                            ip: ip.to_string(),
                            name: names.get(ip).cloned(),
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect();
    PathAddressView {
        ip: v.ip.to_string(),
        rounds: v.rounds,
        length: v.length,
        path_id: v.path_id,
        changes: v.changes,
        hops,
        history,
    }
}

/// `GET /api/v1/targets/{name}/path`: a path monitor's live hop table and recent paths.
#[utoipa::path(
    get, path = "/api/v1/targets/{name}/path", tag = "monitors",
    params(TargetPath),
    responses(
        (status = 200, description = "The monitor's hops and recent paths, per address", body = PathMonitorView),
        (status = 400, description = "The monitor is not of kind path", body = ErrorBody),
        (status = 404, description = "No monitor has that name", body = ErrorBody),
    )
)]
pub async fn monitor_path(
    State(app): State<App>,
    Path(TargetPath { name }): Path<TargetPath>,
) -> Result<Json<PathMonitorView>, ApiError> {
    let (host, views) = app
        .scheduler()
        .path_views(&name)
        .await
        .map_err(|e| match e {
            PathViewError::NoTarget(_) => ApiError::not_found(e.to_string()),
            PathViewError::NotPath(..) => {
                ApiError::new(StatusCode::BAD_REQUEST, "not_a_path_monitor", e.to_string())
            }
        })?;
    let ips: BTreeSet<IpAddr> = views
        .iter()
        .flat_map(|v| {
            v.hops.iter().filter_map(|h| h.responder).chain(
                v.history
                    .iter()
                    .flat_map(|e| e.hops.values().flatten().copied()),
            )
        })
        .collect();
    let names = lookup(&app, ips).await;
    Ok(Json(PathMonitorView {
        target: name,
        host,
        addresses: views.into_iter().map(|v| address_view(v, &names)).collect(),
    }))
}

/// `GET /api/v1/sessions/{id}/names`: reverse names of the responders a session's hop samples
/// name so far.
#[utoipa::path(
    get, path = "/api/v1/sessions/{id}/names", tag = "sessions",
    params(SessionPath),
    responses(
        (status = 200, description = "Names of the session's responders that have one", body = SessionNames),
        IdErrors,
    )
)]
pub async fn session_names(
    State(app): State<App>,
    SessionAt { m, id }: SessionAt,
) -> Result<Json<SessionNames>, ApiError> {
    let ips: BTreeSet<IpAddr> = detail(&m, id)
        .await?
        .samples
        .iter()
        .filter(|s| s.kind == SampleType::Hop)
        .filter_map(|s| s.from)
        .collect();
    let names = lookup(&app, ips).await;
    Ok(Json(SessionNames {
        names: names
            .into_iter()
            .map(|(ip, n)| (ip.to_string(), n))
            .collect(),
    }))
}
