//! Lifecycle endpoints as in Prometheus' own exporters, and a small landing page.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use crate::state::{App, ReloadError};

/// `GET /-/healthy`: the process is up.
pub async fn healthy() -> &'static str {
    "Healthy\n"
}

/// `GET /-/ready`: the first round of probes is done.
pub async fn ready(State(app): State<App>) -> Response {
    if app.scheduler().ready() {
        (StatusCode::OK, "Ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "Not ready: first round of probes still running\n",
        )
            .into_response()
    }
}

/// `POST /-/reload`: re-read the config; an invalid one is rejected and the running one stays.
/// The body is the outcome's text, the same line the daemon logs.
pub async fn reload(State(app): State<App>) -> Response {
    match app.reload().await {
        Ok(outcome) => (StatusCode::OK, format!("{outcome}\n")).into_response(),
        Err(e) => (reload_status(&e), format!("{e}\n")).into_response(),
    }
}

/// The status of a rejected reload; the one place reload errors meet HTTP. 500 for each, as
/// Prometheus' own `/-/reload` answers a config it cannot apply.
fn reload_status(error: &ReloadError) -> StatusCode {
    match error {
        ReloadError::Invalid { .. }
        | ReloadError::Resolver(_)
        | ReloadError::TimedOut { .. }
        | ReloadError::Aborted => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `GET /`: links to everything the daemon serves.
pub async fn landing(State(app): State<App>) -> Html<String> {
    let telemetry = app.telemetry_path();
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>pingscope</title>
<style>body{{font-family:system-ui,sans-serif;max-width:42rem;margin:2rem auto;padding:0 1rem;line-height:1.5}}
@media (prefers-color-scheme: dark){{body{{background:#111;color:#ddd}}a{{color:#8cf}}}}</style></head>
<body><h1>pingscope</h1><p>ICMP reachability, RTT, loss and jitter for Prometheus. Version {version}.</p>
<ul>
<li><a href="{telemetry}">{telemetry}</a>: metrics of the configured monitors</li>
<li><a href="/probe?target=127.0.0.1">/probe?target=127.0.0.1</a>: an ad-hoc multi-packet probe (blackbox style)</li>
<li><a href="/api/v1/targets">/api/v1/targets</a>: configured monitors and their window statistics</li>
<li><a href="/api/v1/sessions">/api/v1/sessions</a>: on-demand sessions</li>
<li><a href="/-/healthy">/-/healthy</a> · <a href="/-/ready">/-/ready</a></li>
</ul></body></html>
"#,
        version = env!("CARGO_PKG_VERSION"),
    ))
}
