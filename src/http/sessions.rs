//! The sessions API: start, list, get, stop, delete (and the seed's aliases, same handlers).

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::http::error::{ApiError, ErrorBody};
use crate::session::manager::{SessionManager, StartRequest};
use crate::session::{Page, SessionDetail, SessionId, SessionRecord, SessionStatus};
use crate::state::App;

/// JSON body extractor whose rejections use the API's error shape and name the field.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(r: &JsonRejection) -> ApiError {
    match r {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON with Content-Type: application/json",
        ),
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::bad_request(format!("invalid JSON body: {}", e.body_text()))
        }
        JsonRejection::JsonDataError(e) => {
            ApiError::bad_request(format!("invalid body: {}", e.body_text()))
        }
        JsonRejection::BytesRejection(_) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "request body larger than {} bytes",
                crate::http::MAX_BODY_BYTES
            ),
        ),
        other => ApiError::bad_request(format!("invalid body: {other}")),
    }
}

pub(crate) async fn manager(app: &App) -> Result<SessionManager, ApiError> {
    app.sessions().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            format!("sessions are unavailable: {e}"),
        )
    })
}

/// The `{id}` path parameter of the session routes. Handlers take it as `Path<SessionPath>`:
/// with `Path<String>` utoipa derived a second, undocumented `id` beside this one.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SessionPath {
    /// Session id (a UUIDv7, as returned when the session started).
    // The seed's `/results/{session_id}` is served by the same handler.
    #[serde(alias = "session_id")]
    #[param(
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-7[0-9a-fA-F]{3}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub id: String,
}

/// The manager and the parsed `{id}` of a session route.
pub(crate) async fn manager_and_id(
    app: &App,
    raw: &str,
) -> Result<(SessionManager, SessionId), ApiError> {
    Ok((manager(app).await?, parse_id(raw)?))
}

/// A session route's manager and parsed `{id}`, extracted before its handler runs, refused as
/// [`manager_and_id`] refuses them.
#[derive(Debug)]
pub struct SessionAt {
    pub(crate) m: SessionManager,
    pub(crate) id: SessionId,
}

impl FromRequestParts<App> for SessionAt {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Response> {
        let Path(SessionPath { id }) = Path::<SessionPath>::from_request_parts(parts, app)
            .await
            .map_err(IntoResponse::into_response)?;
        let (m, id) = manager_and_id(app, &id)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Self { m, id })
    }
}

/// The errors every `/api/v1/sessions/{id}` route may answer with.
#[derive(utoipa::IntoResponses)]
#[expect(dead_code, reason = "only the OpenAPI document reads it")]
pub(crate) enum IdErrors {
    #[response(status = 400, description = "Malformed id")]
    Malformed(ErrorBody),
    #[response(status = 404, description = "No such session")]
    NotFound(ErrorBody),
    #[response(status = 503, description = "Store unavailable")]
    Unavailable(ErrorBody),
}

/// The errors of the paginated lists.
#[derive(utoipa::IntoResponses)]
#[expect(dead_code, reason = "only the OpenAPI document reads it")]
pub(crate) enum ListErrors {
    #[response(status = 400, description = "Invalid parameter")]
    Invalid(ErrorBody),
    #[response(status = 503, description = "Store unavailable")]
    Unavailable(ErrorBody),
}

pub(crate) fn parse_id(raw: &str) -> Result<SessionId, ApiError> {
    // Only the hyphenated form the API hands out: the other spellings Uuid parses are not in
    // the spec's pattern, and accepting them would answer requests the spec calls invalid.
    let hyphenated = raw.len() == 36 && raw.bytes().filter(|b| *b == b'-').count() == 4;
    match raw.parse::<SessionId>() {
        Ok(id) if hyphenated => Ok(id),
        _ => Err(ApiError::bad_request(format!(
            "invalid session id \"{raw}\": expected a UUIDv7 as returned at start"
        ))),
    }
}

/// Start a session.
#[utoipa::path(
    post, path = "/api/v1/sessions", tag = "sessions",
    request_body = StartRequest,
    responses(
        (status = 201, description = "Session started; Location names it", body = SessionRecord,
         headers(("Location" = String, description = "URL of the session"))),
        (status = 400, description = "Invalid field", body = ErrorBody),
        (status = 403, description = "Target denied by the access lists", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Target does not resolve", body = ErrorBody),
        (status = 429, description = "sessions.max_active reached", body = ErrorBody),
        (status = 503, description = "Store unavailable or shutting down", body = ErrorBody),
    )
)]
pub async fn start(
    State(app): State<App>,
    ApiJson(req): ApiJson<StartRequest>,
) -> Result<Response, ApiError> {
    let m = manager(&app).await?;
    let config = app.config();
    let record = m.start(req, &config, &app.resolver()).await?;
    let location = format!("/api/v1/sessions/{}", record.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(record),
    )
        .into_response())
}

/// Query of the history list.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Sessions per page (1..=1000, default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Cursor: the `next_cursor` of the previous page.
    #[param(
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-7[0-9a-fA-F]{3}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub before: Option<String>,
}

/// List stored sessions, newest first.
#[utoipa::path(
    get, path = "/api/v1/sessions", tag = "sessions",
    params(ListQuery),
    responses(
        (status = 200, description = "One page of history", body = Page),
        ListErrors,
    )
)]
pub async fn list(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Page>, ApiError> {
    let m = manager(&app).await?;
    let limit = page_params(&q, &["limit", "before"])?;
    let before = cursor(&q, "a session id", |b| parse_id(b).ok())?;
    let page = m.store().list(limit, before).await?;
    Ok(Json(page))
}

/// Refuses a parameter not in `known`; returns `limit` (1..=1000, default 50). Shared by the
/// paginated lists.
pub(crate) fn page_params(q: &HashMap<String, String>, known: &[&str]) -> Result<u32, ApiError> {
    for key in q.keys() {
        if !known.contains(&key.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown parameter \"{key}\" (use {})",
                known.join(", ")
            )));
        }
    }
    match q.get("limit") {
        None => Ok(50),
        Some(v) => match v.parse::<u32>() {
            Ok(n @ 1..=1000) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "invalid parameter \"limit\": \"{v}\" is not in 1..=1000"
            ))),
        },
    }
}

/// The `before` cursor of a paginated list, read by `parse`; `what` names the ids it takes.
pub(crate) fn cursor<T>(
    q: &HashMap<String, String>,
    what: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>, ApiError> {
    param(q, "before", what, parse)
}

/// The query parameter `key`, read by `parse`; `None` when absent. A value `parse` refuses is a
/// 400 that says what the parameter takes (`what`). Shared by the paginated lists.
pub(crate) fn param<T>(
    q: &HashMap<String, String>,
    key: &str,
    what: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>, ApiError> {
    q.get(key)
        .map(|v| {
            parse(v).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid parameter \"{key}\": \"{v}\" is not {what}"
                ))
            })
        })
        .transpose()
}

/// Get a session with every sample.
#[utoipa::path(
    get, path = "/api/v1/sessions/{id}", tag = "sessions",
    params(SessionPath),
    responses(
        (status = 200, description = "The session", body = SessionDetail),
        IdErrors,
    )
)]
pub async fn get(SessionAt { m, id }: SessionAt) -> Result<Json<SessionDetail>, ApiError> {
    Ok(Json(detail(&m, id).await?))
}

/// A session with every sample, running or stored.
pub(crate) async fn detail(m: &SessionManager, id: SessionId) -> Result<SessionDetail, ApiError> {
    if let Some((record, samples)) = m.running_record(id) {
        return Ok(SessionDetail {
            record,
            samples: samples.iter().map(|s| (**s).clone()).collect(),
        });
    }
    m.store()
        .get(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no session {id}")))
}

/// Stop a running session.
#[utoipa::path(
    post, path = "/api/v1/sessions/{id}/stop", tag = "sessions",
    params(SessionPath),
    responses(
        (status = 202, description = "Stopping; the live stream ends with the summary", body = SessionRecord),
        (status = 409, description = "The session is not running", body = ErrorBody),
        IdErrors,
    )
)]
pub async fn stop(SessionAt { m, id }: SessionAt) -> Result<Response, ApiError> {
    if m.stopping(id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_stopped",
            format!("session {id} is already stopped; it is ending"),
        ));
    }
    if let Some((record, _)) = m.running_record(id) {
        m.stop(id);
        return Ok((StatusCode::ACCEPTED, Json(record)).into_response());
    }
    match m.store().get(id).await? {
        Some(d) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_running",
            format!("session {id} is not running (status {})", d.record.status),
        )),
        None => Err(ApiError::not_found(format!("no session {id}"))),
    }
}

/// Delete a stored session.
#[utoipa::path(
    delete, path = "/api/v1/sessions/{id}", tag = "sessions",
    params(SessionPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 409, description = "Still running: stop it first", body = ErrorBody),
        IdErrors,
    )
)]
pub async fn delete(SessionAt { m, id }: SessionAt) -> Result<StatusCode, ApiError> {
    if m.running_record(id).is_some() {
        return Err(running_conflict(id));
    }
    match m.store().delete(id).await {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Err(ApiError::not_found(format!("no session {id}"))),
        Err(crate::session::StoreError::SessionRunning(_)) => Err(running_conflict(id)),
        Err(e) => Err(e.into()),
    }
}

fn running_conflict(id: SessionId) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "session_running",
        format!("session {id} is {}; stop it first", SessionStatus::Running),
    )
}
