//! The HTTP surface: `router(state)` builds every route; `serve(listeners, router, shutdown)`
//! runs it until the shutdown token fires.
//!
//! One file per concern: [`admin`] (`/-/healthy`, `/-/ready`, `/-/reload`, landing page),
//! [`metrics`] (the telemetry path), [`targets`] (`/api/v1/targets`), [`error`] (the JSON error
//! shape every API route answers with).

pub mod admin;
pub mod error;
pub mod metrics;
pub mod probe;
pub mod targets;

use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;

use crate::app::App;

/// Largest request body accepted by any route.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Builds the router over the app handle.
pub fn router(app: App) -> Router {
    let telemetry = app.telemetry_path().to_owned();
    Router::new()
        .route("/", get(admin::landing))
        .route("/-/healthy", get(admin::healthy).head(admin::healthy))
        .route("/-/ready", get(admin::ready).head(admin::ready))
        .route("/-/reload", post(admin::reload).put(admin::reload))
        .route(&telemetry, get(metrics::metrics))
        .route("/probe", get(probe::probe))
        .route("/api/v1/targets", get(targets::list))
        .route("/servers", get(targets::list))
        .fallback(error::not_found)
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .with_state(app)
}

/// Serves `router` on every listener until `shutdown` fires, then lets requests in progress
/// finish for at most `grace`.
pub async fn serve(
    listeners: Vec<TcpListener>,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let mut servers = tokio::task::JoinSet::new();
    for listener in listeners {
        let router = router.clone();
        let shutdown = shutdown.clone();
        servers.spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await
        });
    }
    let drain = async {
        let mut result = Ok(());
        while let Some(joined) = servers.join_next().await {
            match joined {
                Ok(Err(e)) => result = Err(e),
                Err(e) => result = Err(std::io::Error::other(e)),
                Ok(Ok(())) => {}
            }
        }
        result
    };
    tokio::pin!(drain);
    tokio::select! {
        r = &mut drain => r,
        () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_seconds = grace.as_secs_f64(), "requests still running after the grace period; closing");
            Ok(())
        }
    }
}
