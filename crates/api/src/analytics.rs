//! Analytics over HTTP: `GET /v1/analytics`, an account's numbers over time from the rollups, by group.

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use smsgate_services::analytics;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::json::{parse_time, time_json};
use crate::views::ErrorView;
use crate::{AppState, Caller};

/// `GET /v1/analytics`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct AnalyticsQuery {
    /// Comma-separated: `sent`, `delivered`, `undelivered`, `failed`, `expired`, `delivery_rate`, `latency_p50`,
    /// `latency_p95`, `cost`, `replies`, `clicks`, `opt_outs`; all when not given.
    metric: Option<String>,
    /// `hour` or `day` (UTC; `day` when not given).
    by: Option<String>,
    /// `campaign`, `connector`, `country` or `sender`; one group, `all`, when not given.
    group: Option<String>,
    /// RFC 3339; the week before `to` when not given.
    from: Option<String>,
    /// RFC 3339, exclusive; now when not given.
    to: Option<String>,
}

/// One point: the bucket's start and the metrics asked.
#[derive(Debug, Serialize, ToSchema)]
pub struct PointView {
    #[schema(value_type = String)]
    pub t: Value,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub metrics: Map<String, Value>,
}

/// One group's series.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeriesView {
    /// The campaign's id, the connector's name, the country (ISO 3166), the sender; `""` for none; `all` without a
    /// group.
    pub group: String,
    pub points: Vec<PointView>,
}

/// The series.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnalyticsView {
    pub data: Vec<SeriesView>,
}

/// The account's numbers over time, a point a bucket of the range (zeros where nothing happened), from rollups kept
/// as statuses change: what a count over the messages would say.
#[utoipa::path(get, path = "/v1/analytics", params(AnalyticsQuery),
    responses((status = OK, body = AnalyticsView), (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn get_analytics(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(q): Query<AnalyticsQuery>,
) -> Result<Json<AnalyticsView>, ApiError> {
    let query = analytics::Query {
        metric: q.metric,
        by: q.by,
        group: q.group,
        from: q.from.as_deref().map(|s| parse_time("from", s)).transpose()?,
        to: q.to.as_deref().map(|s| parse_time("to", s)).transpose()?,
    };
    let series = state.analytics.series(caller.id, &query).await?;
    let data = series
        .into_iter()
        .map(|s| SeriesView {
            group: s.group,
            points: s.points.into_iter().map(|(t, metrics)| PointView { t: time_json(t), metrics }).collect(),
        })
        .collect();
    Ok(Json(AnalyticsView { data }))
}
