//! `GET /api/v1/outages`: the monitors' outage history (issue 18), newest first, filtered by
//! target and time, paginated with a cursor like the sessions list.

use std::collections::HashMap;
use std::time::SystemTime;

use axum::Json;
use axum::extract::{Query, State};

use crate::http::error::ApiError;
use crate::http::sessions::{ListErrors, cursor, manager, page_params, param};
use crate::session::outages::{OutagePage, OutageQuery};
use crate::state::App;

/// Query of the outage list.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OutagesQuery {
    /// Only this target (its name).
    pub target: Option<String>,
    /// Only outages still going on at or after this time (RFC 3339).
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Only outages that began before this time (RFC 3339).
    #[param(format = DateTime)]
    pub until: Option<String>,
    /// Outages per page (1..=1000, default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Cursor: the `next_cursor` of the previous page.
    #[param(minimum = 1)]
    pub before: Option<i64>,
}

const PARAMS: [&str; 5] = ["target", "since", "until", "limit", "before"];

fn time(q: &HashMap<String, String>, key: &str) -> Result<Option<SystemTime>, ApiError> {
    param(
        q,
        key,
        "an RFC 3339 time (e.g. 2026-01-02T15:04:05Z)",
        |v| {
            // Any RFC 3339 time, with its offset and fraction (what the schema's date-time
            // format allows). As a bound, a time before 1970 is 1970 (no outage is older) and
            // one past what the clock holds (year 2554) is that limit.
            time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
                .ok()
                .map(|t| {
                    let nanos = t.unix_timestamp_nanos().clamp(0, i128::from(u64::MAX));
                    let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
                    SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(nanos)
                })
        },
    )
}

/// List stored outages of the monitors, newest first.
#[utoipa::path(
    get, path = "/api/v1/outages", tag = "monitors",
    params(OutagesQuery),
    responses(
        (status = 200, description = "One page of outages", body = OutagePage),
        ListErrors,
    )
)]
pub async fn list(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<OutagePage>, ApiError> {
    let limit = page_params(&q, &PARAMS)?;
    let before = cursor(&q, "an outage id", |v| {
        v.parse::<i64>().ok().filter(|n| *n >= 1)
    })?;
    let query = OutageQuery {
        target: q.get("target").cloned(),
        since: time(&q, "since")?,
        until: time(&q, "until")?,
        before,
        limit,
    };
    let m = manager(&app).await?;
    Ok(Json(m.store().outages(query).await?))
}
