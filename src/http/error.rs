//! The JSON error shape of every API route: `{"error": {"code": "...", "message": "..."}}`, with
//! `"field"` naming the request field at fault when one is.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An API error: a status, a stable machine code and a message that names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code, e.g. `invalid_parameter`, `not_found`, `forbidden`, `too_many_sessions`.
    pub code: &'static str,
    /// Human message.
    pub message: String,
    /// The request field at fault, when the refusal is about one.
    pub field: Option<&'static str>,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// 400 for a bad field.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_parameter", message)
    }

    /// 403 for a target the access lists refuse, naming the rule.
    pub fn denied(target: &str, ip: std::net::IpAddr, why: &crate::config::Denied) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("target {target} ({ip}) {why}"),
        )
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail {
    code: String,
    message: String,
    /// The request field at fault, when the refusal is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                field: self.field.map(str::to_owned),
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// Fallback for unknown paths.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

/// Gives a 413 made by a body limit layer (plain text, before any handler ran) the API's JSON
/// error shape; responses that already are JSON pass unchanged.
pub async fn json_body_too_large(
    axum::extract::State(limit): axum::extract::State<usize>,
    response: Response,
) -> Response {
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return response;
    }
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let mut response = if is_json {
        response
    } else {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body larger than {limit} bytes"),
        )
        .into_response()
    };
    // The rest of the body was never read, so the connection cannot carry another request:
    // say so, or a keep-alive client sends its next request into a closing socket.
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

impl From<crate::probe::RequestError> for ApiError {
    /// A refused request is the caller's fault: 400 with the rule's own message.
    fn from(e: crate::probe::RequestError) -> Self {
        Self {
            field: Some(e.field),
            ..Self::bad_request(e.message)
        }
    }
}

impl From<crate::session::StoreError> for ApiError {
    /// The store failed or is unavailable: 503, the request may be retried.
    fn from(e: crate::session::StoreError) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            format!("session store: {e}"),
        )
    }
}

impl From<crate::session::manager::StartError> for ApiError {
    fn from(e: crate::session::manager::StartError) -> Self {
        use crate::session::manager::StartError as E;
        let message = e.to_string();
        match e {
            E::Invalid(e) => e.into(),
            E::ShuttingDown => Self::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message),
            E::TooMany { .. } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_sessions", message)
            }
            E::Unresolvable { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unresolvable_target",
                message,
            ),
            E::Denied { .. } => Self::new(StatusCode::FORBIDDEN, "forbidden", message),
            E::Store(e) => e.into(),
        }
    }
}
