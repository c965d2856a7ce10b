//! Campaigns over HTTP: `/v1/campaigns` (create, list), `/v1/campaigns/{id}` (read with live numbers, delete),
//! `/start`, `/pause`, `/resume`, `/cancel`, `/test`, `/runs`. Every route is for the caller's own account.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use smsgate_services::campaigns::MAX_PAGE;
use smsgate_services::{CampaignSpec, CampaignView, RunView, Stats};
use utoipa::ToSchema;

use crate::contacts::csv_rows;
use crate::error::ApiError;
use crate::json::{JsonBody, PageQuery, message_view, time_json};
use crate::views::{ErrorView, MessageView};
use crate::{AppState, Caller};

/// A campaign with its live numbers.
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignBody {
    pub id: String,
    pub name: String,
    /// `draft`, `scheduled`, `running`, `paused`, `completed`, `canceled`.
    pub state: String,
    /// `lists`, `segments`, `contacts`, `exclude` (the same three).
    #[schema(value_type = Object)]
    pub audience: Value,
    pub template_id: Option<String>,
    pub body: Option<String>,
    pub from: Option<String>,
    pub sender_pool: Option<Vec<String>>,
    pub category: String,
    #[schema(value_type = Option<Object>)]
    pub schedule: Option<Value>,
    pub throughput: Option<u32>,
    /// `default`, `skip` or `fail`.
    pub on_missing_field: String,
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
    /// When a scheduled campaign runs next.
    #[schema(value_type = Option<String>)]
    pub next_run_at: Value,
    /// Why the campaign stopped on its own (`code`, `message`, and what it concerns), if it did.
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    /// Its run under way, or its last.
    pub current_run: Option<String>,
    #[schema(value_type = Object)]
    pub stats: Value,
    #[schema(value_type = String)]
    pub created_at: Value,
    #[schema(value_type = String)]
    pub updated_at: Value,
}

/// Numbers as JSON, the cost in the account's currency.
fn stats_json(s: &Stats) -> Value {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    #[allow(clippy::cast_precision_loss)] // A cost in millionths fits a double's 53 bits for any real bill.
    let cost = s.cost_micros as f64 / 1_000_000.0;
    v["cost"] = serde_json::json!(cost);
    if let Some(o) = v.as_object_mut() {
        o.remove("cost_micros");
    }
    v
}

fn campaign_body(v: CampaignView, with_stats: bool) -> CampaignBody {
    let c = v.campaign;
    let s = v.spec;
    CampaignBody {
        id: c.id,
        name: c.name,
        state: c.state,
        audience: serde_json::to_value(&s.audience).unwrap_or_default(),
        template_id: s.template_id,
        body: s.body,
        from: s.from,
        sender_pool: s.sender_pool,
        category: s.category.unwrap_or_default(),
        schedule: s.schedule.map(|x| serde_json::to_value(x).unwrap_or_default()),
        throughput: s.throughput,
        on_missing_field: serde_json::to_value(s.on_missing_field)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        data: s.data,
        next_run_at: c.next_run_at.map_or(Value::Null, time_json),
        error: c.error.and_then(|e| serde_json::from_str(&e).ok()),
        current_run: c.current_run,
        stats: if with_stats { stats_json(&v.stats) } else { Value::Null },
        created_at: time_json(c.created_at),
        updated_at: time_json(c.updated_at),
    }
}

/// Create a campaign (a `draft`): `{"name", "audience": {"lists"?, "segments"?, "contacts"?, "exclude"?},
/// "template_id" | "body", "from" | "sender_pool", "category", "schedule"?: {"at"? | "cron"?, "time_zone"?},
/// "throughput"?, "on_missing_field"?: "default" | "skip" | "fail", "data"?}`.
#[utoipa::path(post, path = "/v1/campaigns", request_body = Object,
    responses((status = CREATED, body = CampaignBody), (status = FORBIDDEN, body = ErrorView),
              (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn create_campaign(
    State(state): State<AppState>,
    Caller(caller): Caller,
    JsonBody { value: spec, .. }: JsonBody<CampaignSpec>,
) -> Result<impl IntoResponse, ApiError> {
    let v = state.campaigns.create(caller.id, spec).await?;
    Ok((StatusCode::CREATED, Json(campaign_body(v, true))))
}

/// A page of campaigns (without their numbers; `GET /v1/campaigns/{id}` has them).
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignPage {
    pub data: Vec<CampaignBody>,
    pub next_cursor: Option<String>,
}

/// The account's campaigns, oldest first.
#[utoipa::path(get, path = "/v1/campaigns", params(PageQuery),
    responses((status = OK, body = CampaignPage), (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn list_campaigns(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(q): Query<PageQuery>,
) -> Result<Json<CampaignPage>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    let page = state.campaigns.list(caller.id, q.cursor.as_deref(), limit).await?;
    let next_cursor = (page.len() == limit as usize && limit <= MAX_PAGE)
        .then(|| page.last().map(|v| v.campaign.id.clone()))
        .flatten();
    Ok(Json(CampaignPage { data: page.into_iter().map(|v| campaign_body(v, false)).collect(), next_cursor }))
}

/// A campaign with its live numbers: audience, pending, skipped by why, queued, waiting, sent, delivered,
/// undelivered, failed, canceled and cost.
#[utoipa::path(get, path = "/v1/campaigns/{id}", responses((status = OK, body = CampaignBody), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn get_campaign(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<CampaignBody>, ApiError> {
    Ok(Json(campaign_body(state.campaigns.get(caller.id, &id).await?, true)))
}

/// Delete a campaign that is not running or paused (its texts stay).
#[utoipa::path(delete, path = "/v1/campaigns/{id}",
    responses((status = NO_CONTENT), (status = NOT_FOUND, body = ErrorView), (status = CONFLICT, body = ErrorView)))]
pub(crate) async fn delete_campaign(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.campaigns.delete(caller.id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Start a draft (or run a completed or canceled campaign again): now, or armed for its schedule.
#[utoipa::path(post, path = "/v1/campaigns/{id}/start",
    responses((status = OK, body = CampaignBody), (status = NOT_FOUND, body = ErrorView), (status = CONFLICT, body = ErrorView)))]
pub(crate) async fn start_campaign(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<CampaignBody>, ApiError> {
    Ok(Json(campaign_body(state.campaigns.start(caller.id, &id).await?, true)))
}

/// Pause a running campaign: no new text within a second; its texts still queued are taken back until resumed.
#[utoipa::path(post, path = "/v1/campaigns/{id}/pause",
    responses((status = OK, body = CampaignBody), (status = NOT_FOUND, body = ErrorView), (status = CONFLICT, body = ErrorView)))]
pub(crate) async fn pause_campaign(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<CampaignBody>, ApiError> {
    Ok(Json(campaign_body(state.campaigns.pause(caller.id, &id).await?, true)))
}

/// Resume a paused campaign where it stopped.
#[utoipa::path(post, path = "/v1/campaigns/{id}/resume",
    responses((status = OK, body = CampaignBody), (status = NOT_FOUND, body = ErrorView), (status = CONFLICT, body = ErrorView)))]
pub(crate) async fn resume_campaign(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<CampaignBody>, ApiError> {
    Ok(Json(campaign_body(state.campaigns.resume(caller.id, &id).await?, true)))
}

/// Cancel a campaign: what was sent stays sent, the rest is marked canceled.
#[utoipa::path(post, path = "/v1/campaigns/{id}/cancel",
    responses((status = OK, body = CampaignBody), (status = NOT_FOUND, body = ErrorView), (status = CONFLICT, body = ErrorView)))]
pub(crate) async fn cancel_campaign(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<CampaignBody>, ApiError> {
    Ok(Json(campaign_body(state.campaigns.cancel(caller.id, &id).await?, true)))
}

/// `POST /v1/campaigns/{id}/test`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TestBody {
    /// The number to send the test to (made from its contact, if the account has one).
    to: String,
}

/// Send the campaign's text once to a number, through the same admission; not counted in its numbers.
#[utoipa::path(post, path = "/v1/campaigns/{id}/test", request_body = TestBody,
    responses((status = CREATED, body = MessageView), (status = NOT_FOUND, body = ErrorView),
              (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn test_campaign(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    JsonBody { value: body, .. }: JsonBody<TestBody>,
) -> Result<impl IntoResponse, ApiError> {
    let sent = state.campaigns.test(caller.id, &id, &body.to).await?;
    Ok((StatusCode::CREATED, Json(message_view(sent.message(), None))))
}

/// One run of a campaign.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunBody {
    pub id: String,
    /// `running`, `pausing`, `paused`, `canceling`, `canceled`, `completed`.
    pub state: String,
    /// Whether its audience is read in full.
    pub materialized: bool,
    #[schema(value_type = Object)]
    pub stats: Value,
    #[schema(value_type = String)]
    pub started_at: Value,
    #[schema(value_type = Option<String>)]
    pub finished_at: Value,
}

/// A campaign's runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunList {
    pub data: Vec<RunBody>,
}

fn run_body(v: RunView) -> RunBody {
    let mut stats = stats_json(&v.stats);
    // A run's texts are counted by its recipients; what became of them is the campaign's.
    if let Some(o) = stats.as_object_mut() {
        for k in ["texts", "waiting", "sent", "delivered", "undelivered", "failed", "cost"] {
            o.remove(k);
        }
    }
    RunBody {
        id: v.run.id,
        state: v.run.state,
        materialized: v.run.materialized,
        stats,
        started_at: time_json(v.run.started_at),
        finished_at: v.run.finished_at.map_or(Value::Null, time_json),
    }
}

/// A campaign's runs (one for a campaign sent once; one a time for a recurring one), oldest first.
#[utoipa::path(get, path = "/v1/campaigns/{id}/runs", responses((status = OK, body = RunList), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn campaign_runs(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<RunList>, ApiError> {
    let data = state.campaigns.runs(caller.id, &id).await?.into_iter().map(run_body).collect();
    Ok(Json(RunList { data }))
}

/// The report's columns.
const REPORT_HEADER: [&str; 13] = [
    "run_id",
    "contact_id",
    "phone",
    "name",
    "state",
    "reason",
    "sender",
    "message_id",
    "status",
    "error_code",
    "cost",
    "updated_at",
    "clicks",
];

fn report_line(r: &smsgate_store::ReportRow) -> Vec<String> {
    #[allow(clippy::cast_precision_loss)] // A price in millionths fits a double for any real bill.
    let cost = r.price_micros.map(|p| (p as f64 / 1_000_000.0).to_string()).unwrap_or_default();
    vec![
        r.run_id.clone(),
        r.contact_id.clone(),
        r.phone.clone().unwrap_or_default(),
        r.name.clone().unwrap_or_default(),
        r.state.clone(),
        r.reason.clone().unwrap_or_default(),
        r.sender.clone().unwrap_or_default(),
        r.message_id.clone().unwrap_or_default(),
        r.status.map(|s| s.as_str().to_string()).unwrap_or_default(),
        r.error_code.clone().unwrap_or_default(),
        cost,
        r.updated_at.map(|t| time_json(t).as_str().unwrap_or("").to_string()).unwrap_or_default(),
        r.clicks.to_string(),
    ]
}

/// A campaign's report as CSV, one line a recipient of each run (`run_id, contact_id, phone, name, state, reason,
/// sender, message_id, status, error_code, cost, updated_at, clicks`), streamed a page at a time.
#[utoipa::path(get, path = "/v1/campaigns/{id}/report.csv",
    responses((status = OK, content_type = "text/csv", body = String), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn campaign_report(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    use futures_util::StreamExt;
    const PAGE: u32 = 1000;
    let runs = state.campaigns.run_ids(caller.id, &id).await?;
    let campaigns = state.campaigns.clone();
    let head = csv_rows(&[REPORT_HEADER.iter().map(|h| h.to_string()).collect()]);
    // (the runs left, the order number reached in the first, whether a page failed)
    let pages = futures_util::stream::unfold((runs, -1i64, false), move |(mut runs, after, failed)| {
        let campaigns = campaigns.clone();
        async move {
            if failed || runs.is_empty() {
                return None;
            }
            match campaigns.report_page(&runs[0], after, PAGE).await {
                Ok(page) => {
                    let next = match page.last() {
                        Some(last) if page.len() == PAGE as usize => last.seq,
                        _ => {
                            runs.remove(0);
                            -1
                        }
                    };
                    let lines: Vec<Vec<String>> = page.iter().map(report_line).collect();
                    Some((Ok::<_, std::io::Error>(csv_rows(&lines)), (runs, next, false)))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a campaign report failed part-way");
                    Some((Err(std::io::Error::other("report failed")), (runs, after, true)))
                }
            }
        }
    });
    let body = axum::body::Body::from_stream(
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(head) }).chain(pages),
    );
    Ok(axum::response::Response::builder()
        .header(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")
        .header(axum::http::header::CONTENT_DISPOSITION, "attachment; filename=\"campaign.csv\"")
        .body(body)
        .unwrap_or_default())
}
