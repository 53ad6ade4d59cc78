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

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
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
    // Kept as the JSON it is served as: the document's tree is half a megabyte of maps, after
    // the receive batches the most an idle daemon's heap held, for an endpoint read now and then.
    let spec: Result<Bytes, Arc<str>> = serde_json::to_vec(&spec)
        .map(Bytes::from)
        .map_err(|e| e.to_string().into());
    Router::new()
        .merge(api)
        .route(
            "/api/v1/openapi.json",
            get(move || async move { openapi_json(&spec) }),
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

/// The OpenAPI document as built with the router, or the reason it could not be written.
fn openapi_json(spec: &Result<Bytes, Arc<str>>) -> Response {
    match spec {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json.clone()).into_response(),
        Err(why) => error::ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the OpenAPI document could not be written: {why}"),
        )
        .into_response(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(r: Response) -> Vec<u8> {
        axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .map(|b| b.to_vec())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn the_openapi_document_is_served_as_json_written_once() {
        let (_, doc) = api();
        let written = serde_json::to_vec(&doc)
            .map(Bytes::from)
            .map_err(|e| e.to_string().into());
        let r = openapi_json(&written);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let served: serde_json::Value = serde_json::from_slice(&body(r).await).unwrap();
        // The whole document, every route of api() in it.
        assert_eq!(served, serde_json::to_value(&doc).unwrap());
        assert!(
            served["paths"]["/api/v1/sessions/{id}"].is_object(),
            "{served}"
        );

        let r = openapi_json(&Err("no".into()));
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let e: serde_json::Value = serde_json::from_slice(&body(r).await).unwrap();
        assert_eq!(e["error"]["code"], "internal", "{e}");
    }
}
