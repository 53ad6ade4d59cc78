//! The telemetry path: text by default, protobuf (native histograms) when the scraper asks.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::app::App;

/// `GET /metrics`.
pub async fn metrics(State(app): State<App>, headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = crate::metrics::negotiate(accept);
    let registry = app.metrics().clone();
    // Encoding 10,000 targets takes milliseconds of CPU: keep it off the async workers.
    let encoded = tokio::task::spawn_blocking(move || registry.encode(format)).await;
    match encoded {
        Ok(Ok(body)) => ([(header::CONTENT_TYPE, format.content_type())], body).into_response(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "encoding metrics failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding metrics failed: {e}\n"),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "metrics encoder task failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding metrics failed\n",
            )
                .into_response()
        }
    }
}
