//! The accept loop and the layers every request goes through: connection cap, TLS, header
//! limits, basic auth and response headers from the web config, request timeout, body limit.
//!
//! Connections beyond the cap are not accepted: they wait in the kernel's listen backlog until a
//! slot frees (a client sees a slow connect, never a reset), so a flood cannot exhaust file
//! descriptors or memory.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use tower_http::limit::RequestBodyLimitLayer;

use super::error::ApiError;
use super::webconfig::WebConfig;

/// Limits on what clients can make the server hold. Every one has a `--web.*` flag.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body (413 beyond).
    pub max_body_bytes: usize,
    /// Largest request head, request line and headers together (431 beyond). At least 8192.
    pub max_header_bytes: usize,
    /// Most request headers (431 beyond).
    pub max_headers: usize,
    /// Time to receive a request's headers, and to finish a TLS handshake (connection closed
    /// beyond).
    pub header_read_timeout: Duration,
    /// Time a handler may take to start its answer (503 beyond). Not applied to `/probe`, which
    /// keeps to its own scrape-timeout budget, nor to WebSocket upgrades.
    pub request_timeout: Duration,
    /// Connections open at once; beyond it new ones wait in the listen backlog.
    pub max_connections: usize,
}

/// Smallest read buffer hyper accepts.
pub const MIN_HEADER_BYTES: usize = 8192;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: super::MAX_BODY_BYTES,
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 1024,
        }
    }
}

/// What the server runs with besides the router.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// `--web.config.file`, when given.
    pub web_config: Option<WebConfig>,
    /// `--web.health-without-auth`: `/-/healthy` answers without credentials.
    pub health_without_auth: bool,
    /// The limits.
    pub limits: Limits,
}

/// Wraps `router` in the layers of `options` (auth outermost, so nothing runs unauthenticated).
pub fn layered(router: Router, options: &ServeOptions) -> Router {
    let limits = &options.limits;
    let router = router
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(RequestBodyLimitLayer::new(limits.max_body_bytes))
        .layer(middleware::map_response_with_state(
            limits.max_body_bytes,
            super::error::json_body_too_large,
        ))
        .layer(middleware::from_fn_with_state(
            limits.request_timeout,
            timeout,
        ));
    match &options.web_config {
        Some(web) => router.layer(middleware::from_fn_with_state(
            Guard {
                web: web.clone(),
                health_without_auth: options.health_without_auth,
                verifying: Arc::new(tokio::sync::Semaphore::new(VERIFY_SLOTS)),
            },
            guard,
        )),
        None => router,
    }
}

// bcrypt checks at once; more wait, so a password flood cannot take every blocking thread.
const VERIFY_SLOTS: usize = 4;

#[derive(Clone)]
struct Guard {
    web: WebConfig,
    health_without_auth: bool,
    verifying: Arc<tokio::sync::Semaphore>,
}

async fn guard(State(g): State<Guard>, request: Request, next: Next) -> Response {
    let current = g.web.current().await;
    let loaded = match &*current {
        Ok(l) => l,
        Err(_) => {
            // The reason is logged once, when the file was read; clients learn nothing of it.
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "web config is invalid; see the server log\n",
            )
                .into_response();
        }
    };
    let exempt = g.health_without_auth && request.uri().path() == "/-/healthy";
    let mut response = if loaded.auth_required() && !exempt {
        if authorized(&g, &current, request.headers()).await {
            next.run(request).await
        } else {
            let mut r = (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"pingscope\""),
            );
            r
        }
    } else {
        next.run(request).await
    };
    for (name, value) in &loaded.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

async fn authorized(
    g: &Guard,
    current: &super::webconfig::Current,
    headers: &axum::http::HeaderMap,
) -> bool {
    let Some((user, password)) = basic_credentials(headers) else {
        return false;
    };
    if let Ok(l) = &**current
        && l.verified_before(&user, &password)
    {
        return true;
    }
    let Ok(_slot) = g.verifying.acquire().await else {
        return false;
    };
    let current = current.clone();
    tokio::task::spawn_blocking(move || match &*current {
        Ok(l) => l.verify(&user, &password),
        Err(_) => false,
    })
    .await
    .unwrap_or(false)
}

fn basic_credentials(headers: &axum::http::HeaderMap) -> Option<(String, String)> {
    use base64::Engine as _;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

async fn timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    let long_lived =
        request.uri().path() == "/probe" || request.headers().contains_key(header::UPGRADE);
    if long_lived {
        return next.run(request).await;
    }
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            format!(
                "the request took longer than {}",
                humantime::format_duration(limit)
            ),
        )
        .into_response(),
    }
}

/// Serves `router` (already [`layered`]) on every listener until `shutdown` fires, then lets
/// connections finish for at most `grace`.
pub async fn serve_with(
    listeners: Vec<TcpListener>,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
    options: ServeOptions,
) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(options.limits.max_connections));
    let tracker = TaskTracker::new();
    for listener in listeners {
        tracker.spawn(accept_loop(
            listener,
            router.clone(),
            shutdown.clone(),
            options.clone(),
            slots.clone(),
            tracker.clone(),
        ));
    }
    tracker.close();
    shutdown.cancelled().await;
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            grace_seconds = grace.as_secs_f64(),
            "requests still running after the grace period; closing"
        );
    }
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    options: ServeOptions,
    slots: Arc<tokio::sync::Semaphore>,
    tracker: TaskTracker,
) {
    loop {
        // The slot is taken before accepting: past the cap, connections wait in the backlog.
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s { Ok(s) => s, Err(_) => return },
            () = shutdown.cancelled() => return,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let shutdown = shutdown.clone();
        let options = options.clone();
        tracker.spawn(async move {
            let _slot = slot;
            let tls = match &options.web_config {
                Some(w) if w.tls() => w.tls_config().await,
                _ => None,
            };
            match tls {
                Some(config) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    let handshake = tokio::time::timeout(
                        options.limits.header_read_timeout,
                        acceptor.accept(stream),
                    );
                    match handshake.await {
                        Ok(Ok(tls)) => connection(tls, router, &options.limits, shutdown).await,
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
                    }
                }
                None => connection(stream, router, &options.limits, shutdown).await,
            }
        });
    }
}

async fn connection<S>(stream: S, router: Router, limits: &Limits, shutdown: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        router.clone().oneshot(request.map(Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(MIN_HEADER_BYTES))
        .max_headers(limits.max_headers);
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(value: &str) -> Option<(String, String)> {
        let mut h = axum::http::HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).ok()?);
        basic_credentials(&h)
    }

    #[test]
    fn basic_credentials_are_parsed_strictly() {
        // "alice:pa:ss" — the password may hold colons, the user may not.
        assert_eq!(
            creds("Basic YWxpY2U6cGE6c3M="),
            Some(("alice".into(), "pa:ss".into()))
        );
        assert_eq!(
            creds("basic YWxpY2U6"),
            Some(("alice".into(), String::new()))
        );
        assert_eq!(creds("Bearer YWxpY2U6cGFzcw=="), None);
        assert_eq!(creds("Basic not base64!"), None);
        // "alice" without a colon.
        assert_eq!(creds("Basic YWxpY2U="), None);
        assert_eq!(creds("Basic"), None);
    }
}
