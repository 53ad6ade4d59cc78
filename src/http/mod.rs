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

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
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

/// Builds the router over the app handle. The `/api/v1` routes are built at the first request
/// under `/api/v1/` ([`LazyApi`]).
pub fn router(app: App) -> Router {
    let telemetry = app.telemetry_path().to_owned();
    let api = LazyApi::new(app.clone());
    Router::new()
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
        .fallback(move |request: Request| api.clone().serve(request))
        .with_state(app)
}

/// The `/api/v1` routes with their OpenAPI document, built at the first request under
/// `/api/v1/` and kept. Building them runs utoipa's schema code for every route and writes the
/// document as JSON, code run once that stays resident and heap it leaves behind: done at
/// start, that was 0.6–1.1 MB of the idle RSS of a daemon that is only scraped
/// (bench/results/idle-2026-12-06-lazy-api.txt).
#[derive(Clone)]
struct LazyApi {
    app: App,
    built: Arc<OnceLock<Router>>,
}

impl LazyApi {
    fn new(app: App) -> Self {
        Self {
            app,
            built: Arc::default(),
        }
    }

    /// Serves a request no other route took: the API's when its path is under `/api/v1/`, else
    /// the JSON 404 every unknown path gets.
    async fn serve(self, request: Request) -> Response {
        if !request.uri().path().starts_with("/api/v1/") {
            return error::not_found(request.uri().clone())
                .await
                .into_response();
        }
        let api = self.built.get_or_init(|| api_router(self.app.clone()));
        match api.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// [`api`]'s routes over `app`, with the route serving their document.
fn api_router(app: App) -> Router {
    let (api, spec) = api();
    // Kept as the JSON it is served as: the document's tree is half a megabyte of maps, after
    // the receive batches the most an idle daemon's heap held, for an endpoint read now and then.
    let spec: Result<Bytes, Arc<str>> = serde_json::to_vec(&spec)
        .map(Bytes::from)
        .map_err(|e| e.to_string().into());
    api.route(
        "/api/v1/openapi.json",
        get(move || async move { openapi_json(&spec) }),
    )
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

    async fn get(router: &Router, path: &str) -> (StatusCode, serde_json::Value) {
        let request = Request::get(path).body(axum::body::Body::empty()).unwrap();
        let r = router.clone().oneshot(request).await.unwrap();
        let status = r.status();
        (status, serde_json::from_slice(&body(r).await).unwrap())
    }

    #[tokio::test]
    async fn the_api_is_built_at_its_first_request_and_serves_as_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "targets: []\nsessions: {{database: {}}}\n",
            dir.path().join("sessions.db").display()
        );
        let config = crate::config::parse_str(&yaml, "pingscope.yml", dir.path()).unwrap();
        let fake = crate::engine::fake::FakePinger::new();
        let app = App::start(crate::state::AppOptions::default(), config, Arc::new(fake))
            .await
            .unwrap();
        let lazy = LazyApi::new(app.clone());
        let fallback = {
            let lazy = lazy.clone();
            Router::new().fallback(move |request: Request| lazy.clone().serve(request))
        };
        let (status, e) = get(&fallback, "/nowhere").await;
        assert_eq!(
            (status, &e["error"]["code"]),
            (StatusCode::NOT_FOUND, &"not_found".into())
        );
        assert!(
            lazy.built.get().is_none(),
            "a path outside the API built it"
        );

        let (status, targets) = get(&fallback, "/api/v1/targets").await;
        assert_eq!(status, StatusCode::OK, "{targets}");
        assert!(targets.is_array() || targets.is_object(), "{targets}");
        let built = lazy.built.get().map(std::ptr::from_ref);
        assert!(built.is_some(), "the first API request built the routes");

        // A path parameter reaches its handler alone (the fallback matched no route of its own).
        let whole = router(app.clone());
        let (status, e) = get(&whole, "/api/v1/sessions/not-a-session").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
        let message = e["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("invalid session id \"not-a-session\""),
            "{e}"
        );
        let (status, doc) = get(&fallback, "/api/v1/openapi.json").await;
        assert_eq!(status, StatusCode::OK);
        assert!(doc["paths"]["/api/v1/sessions/{id}"].is_object(), "{doc}");
        let (status, e) = get(&fallback, "/api/v1/nowhere").await;
        assert_eq!(
            (status, &e["error"]["code"]),
            (StatusCode::NOT_FOUND, &"not_found".into())
        );
        assert_eq!(
            lazy.built.get().map(std::ptr::from_ref),
            built,
            "built once"
        );
        app.shutdown().await;
    }
}
