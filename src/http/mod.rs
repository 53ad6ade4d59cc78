//! The HTTP surface: `router(state)` builds every route; `serve(listeners, router, shutdown)`
//! runs it until the shutdown token fires; [`serve::serve_with`] does the same with a web config
//! (TLS, basic auth) and limits.
//!
//! One file per concern: [`admin`] (`/-/healthy`, `/-/ready`, `/-/reload`, the endpoint list at
//! `/about`), [`ui`] (the live page at `/`),
//! [`metrics`] (the telemetry path), [`targets`] (`/api/v1/targets`), [`paths`] (a path monitor's hops and history, a path session's responder names), [`mesh`] (`/api/v1/mesh`), [`outages`] (`/api/v1/outages`), [`error`] (the JSON error
//! shape every API route answers with).

pub mod admin;
pub mod compress;
pub mod error;
pub mod mesh;
pub mod metrics;
pub mod outages;
pub mod paths;
pub mod probe;
mod probe_path;
pub mod serve;
pub mod sessions;
pub mod targets;
pub mod ui;
pub mod webconfig;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::App;

/// Largest request body accepted by any route, unless `--web.max-request-body-bytes` says
/// otherwise (the limit is applied by [`serve::layered`]).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The OpenAPI document's fixed part; paths come from the routes registered below.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "pingscope API",
        description = "On-demand ping sessions, their history and live streams, and the configured monitors.",
        license(name = "MIT OR Apache-2.0")
    ),
    tags(
        (name = "sessions", description = "On-demand ping sessions and their stored history"),
        (name = "live", description = "WebSocket streams of samples"),
        (name = "monitors", description = "The configured monitors")
    )
)]
struct ApiDoc;

/// The `/api/v1` routes together with the OpenAPI document describing exactly them.
pub fn api() -> (Router<App>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(sessions::start, sessions::list))
        .routes(routes!(sessions::get, sessions::delete))
        .routes(routes!(sessions::stop))
        .routes(routes!(ws::session_live))
        .routes(routes!(ws::monitors_live))
        .routes(routes!(targets::list))
        .routes(routes!(mesh::matrix))
        .routes(routes!(paths::monitor_path))
        .routes(routes!(paths::session_names))
        .routes(routes!(outages::list))
        .split_for_parts()
}

/// Builds the router over the app handle.
pub fn router(app: App) -> Router {
    let telemetry = app.telemetry_path().to_owned();
    let (api, spec) = api();
    let spec = Arc::new(spec);
    Router::new()
        .merge(api)
        .route(
            "/api/v1/openapi.json",
            get(move || async move { Json(spec.as_ref().clone()) }),
        )
        // The seed's routes, served by the same handlers.
        .route("/start_test", post(sessions::start))
        .route("/results/{session_id}", get(sessions::get))
        .route("/servers", get(targets::list))
        .route("/live", get(ws::monitors_live))
        .route("/", get(ui::index))
        .route("/ui/{file}", get(ui::file))
        .route("/about", get(admin::landing))
        .route("/-/healthy", get(admin::healthy).head(admin::healthy))
        .route("/-/ready", get(admin::ready).head(admin::ready))
        .route("/-/reload", post(admin::reload))
        .route(&telemetry, get(metrics::metrics))
        .route("/probe", get(probe::probe))
        .fallback(error::not_found)
        .with_state(app)
}

/// Serves `router` on every listener until `shutdown` fires, then lets requests in progress
/// finish for at most `grace`. Default limits, no web config.
pub async fn serve(
    listeners: Vec<TcpListener>,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let options = serve::ServeOptions::default();
    let router = serve::layered(router, &options);
    serve::serve_with(listeners, router, shutdown, grace, options).await
}
