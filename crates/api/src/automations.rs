//! Automations over HTTP: `/v1/automations` (create, list), `/v1/automations/{id}` (read with counters, delete),
//! `/enable`, `/disable`, `/runs` (each contact's way through it, step by step), and `POST /v1/events`, what the
//! account's own systems tell. Every route is for the caller's own account.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use smsgate_services::automations::{EventSpec, MAX_PAGE};
use smsgate_services::{AutomationSpec, AutomationView};
use smsgate_store::AutomationRun;
use utoipa::{IntoParams, ToSchema};

use crate::contacts::ContactBody;
use crate::error::ApiError;
use crate::json::{JsonBody, PageQuery, time_json};
use crate::views::ErrorView;
use crate::{AppState, Caller};

/// An automation with its counters.
#[derive(Debug, Serialize, ToSchema)]
pub struct AutomationBody {
    pub id: String,
    pub name: String,
    pub enabled: bool,
    /// `{"type": "keyword" | "event" | "date_field" | "schedule", ...}`.
    #[schema(value_type = Object)]
    pub trigger: Value,
    /// `[{"type": "send" | "wait" | "branch" | "tag" | "untag" | "add_to_list" | "remove_from_list" | "webhook",
    /// ...}]`.
    #[schema(value_type = Vec<Object>)]
    pub steps: Value,
    /// A schedule's next firing.
    #[schema(value_type = Option<String>)]
    pub next_run_at: Value,
    /// Runs by state: `runs`, `active`, `waiting`, `completed`, `canceled`, `failed`.
    #[schema(value_type = Object)]
    pub stats: Value,
    #[schema(value_type = String)]
    pub created_at: Value,
    #[schema(value_type = String)]
    pub updated_at: Value,
}

fn automation_body(v: AutomationView) -> AutomationBody {
    let a = v.automation;
    AutomationBody {
        id: a.id,
        name: a.name,
        enabled: a.enabled,
        trigger: serde_json::to_value(&v.spec.trigger).unwrap_or_default(),
        steps: serde_json::to_value(&v.spec.steps).unwrap_or_default(),
        next_run_at: a.next_run_at.map_or(Value::Null, time_json),
        stats: serde_json::to_value(&v.stats).unwrap_or_default(),
        created_at: time_json(a.created_at),
        updated_at: time_json(a.updated_at),
    }
}

/// Create an automation: `{"name", "trigger": {"type", ...}, "steps": [{"type", ...}, ...], "enabled"?}`.
#[utoipa::path(post, path = "/v1/automations", request_body = Object,
    responses((status = CREATED, body = AutomationBody), (status = FORBIDDEN, body = ErrorView),
              (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn create_automation(
    State(state): State<AppState>,
    Caller(caller): Caller,
    JsonBody { value: spec, .. }: JsonBody<AutomationSpec>,
) -> Result<impl IntoResponse, ApiError> {
    let v = state.automations.create(caller.id, spec).await?;
    Ok((StatusCode::CREATED, Json(automation_body(v))))
}

/// A page of automations.
#[derive(Debug, Serialize, ToSchema)]
pub struct AutomationPage {
    pub data: Vec<AutomationBody>,
    pub next_cursor: Option<String>,
}

/// The account's automations, oldest first.
#[utoipa::path(get, path = "/v1/automations", params(PageQuery),
    responses((status = OK, body = AutomationPage), (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn list_automations(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(q): Query<PageQuery>,
) -> Result<Json<AutomationPage>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let page = state.automations.list(caller.id, q.cursor.as_deref(), limit).await?;
    let next_cursor = (page.len() == limit as usize).then(|| page.last().map(|v| v.automation.id.clone())).flatten();
    Ok(Json(AutomationPage { data: page.into_iter().map(automation_body).collect(), next_cursor }))
}

/// An automation with its runs counted by state.
#[utoipa::path(get, path = "/v1/automations/{id}",
    responses((status = OK, body = AutomationBody), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn get_automation(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<AutomationBody>, ApiError> {
    Ok(Json(automation_body(state.automations.get(caller.id, &id).await?)))
}

/// Delete an automation and its runs (what they sent stays).
#[utoipa::path(delete, path = "/v1/automations/{id}", responses((status = NO_CONTENT), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn delete_automation(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.automations.delete(caller.id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// React to the trigger again (a schedule's next firing counts from now).
#[utoipa::path(post, path = "/v1/automations/{id}/enable",
    responses((status = OK, body = AutomationBody), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn enable_automation(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<AutomationBody>, ApiError> {
    Ok(Json(automation_body(state.automations.set_enabled(caller.id, &id, true).await?)))
}

/// Stop reacting to the trigger; runs under way go on.
#[utoipa::path(post, path = "/v1/automations/{id}/disable",
    responses((status = OK, body = AutomationBody), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn disable_automation(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<AutomationBody>, ApiError> {
    Ok(Json(automation_body(state.automations.set_enabled(caller.id, &id, false).await?)))
}

/// `GET /v1/automations/{id}/runs`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunsQuery {
    /// Only this contact's runs.
    contact_id: Option<String>,
    cursor: Option<String>,
    /// 1 to 500 (100 when not given).
    limit: Option<u32>,
}

/// One contact's way through an automation.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunBody {
    pub id: String,
    pub automation_id: String,
    pub contact_id: String,
    /// `active` (its next step due at `due_at`), `waiting` (for a reply until `due_at`), `completed`, `canceled`,
    /// `failed`.
    pub state: String,
    /// What started it: `event:{key}`, `message:{id}`, `date:{contact}:{subject}:{time}`, `schedule:{time}:{contact}`.
    pub trigger: String,
    /// The next step, as its path in the steps (`2`, or `2.0.1` inside a branch's first case).
    pub position: String,
    #[schema(value_type = Option<String>)]
    pub due_at: Value,
    /// The trigger's data (the event's, the inbound message).
    #[schema(value_type = Object)]
    pub data: Value,
    /// The last reply, while the run goes on with it.
    pub reply: Option<String>,
    /// Each step taken: `step`, `type`, `at`, `outcome`, and what it made (`message_id`, `detail`, ...).
    #[schema(value_type = Vec<Object>)]
    pub steps: Value,
    /// Why it ended before its last step (`code`, `message`).
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    #[schema(value_type = String)]
    pub created_at: Value,
    #[schema(value_type = String)]
    pub updated_at: Value,
}

fn run_body(r: AutomationRun) -> RunBody {
    RunBody {
        id: r.id,
        automation_id: r.automation_id,
        contact_id: r.contact_id,
        state: r.state,
        trigger: r.trigger_key,
        position: r.position,
        due_at: r.due_at.map_or(Value::Null, time_json),
        data: serde_json::from_str(&r.data).unwrap_or_default(),
        reply: r.reply,
        steps: serde_json::from_str(&r.log).unwrap_or_default(),
        error: r.error.and_then(|e| serde_json::from_str(&e).ok()),
        created_at: time_json(r.created_at),
        updated_at: time_json(r.updated_at),
    }
}

/// A page of runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunPage {
    pub data: Vec<RunBody>,
    pub next_cursor: Option<String>,
}

/// An automation's runs (of one contact with `contact_id`), oldest first, each with its steps.
#[utoipa::path(get, path = "/v1/automations/{id}/runs", params(RunsQuery),
    responses((status = OK, body = RunPage), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn automation_runs(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Query(q): Query<RunsQuery>,
) -> Result<Json<RunPage>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let runs = state.automations.runs(caller.id, &id, q.contact_id.as_deref(), q.cursor.as_deref(), limit).await?;
    let next_cursor = (runs.len() == limit as usize).then(|| runs.last().map(|r| r.id.clone())).flatten();
    Ok(Json(RunPage { data: runs.into_iter().map(run_body).collect(), next_cursor }))
}

/// `POST /v1/events`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventBody {
    /// Such as `appointment.booked`: 1 to 64 of `A-Z a-z 0-9 . _ - :`.
    name: String,
    contact_id: Option<String>,
    /// A contact by number (made, or updated with what is given).
    contact: Option<ContactBody>,
    /// The event's own data, a JSON object (`{{ data.order_id }}` in templates).
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
    /// The same key again starts nothing new and answers what the first did.
    idempotency_key: Option<String>,
}

/// What an event did.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub id: String,
    pub name: String,
    pub contact_id: String,
    #[schema(value_type = Object)]
    pub data: Value,
    pub idempotency_key: String,
    /// The key was used before: this is the first event's answer, and nothing new was done.
    pub duplicate: bool,
    /// Runs started; runs stored for a changed date (`moved`); runs canceled (by a cancel event or a move); and
    /// the automations that could not use the event (`errors`: `automation_id`, `code`, `message`).
    pub started: Vec<String>,
    pub moved: Vec<String>,
    pub canceled: Vec<String>,
    #[schema(value_type = Vec<Object>)]
    pub errors: Value,
    #[schema(value_type = String)]
    pub created_at: Value,
}

/// Tell smsgate something happened (`appointment.booked`, `order.shipped`): the account's automations with an
/// `event` trigger of that name start a run for the contact; `date_field` triggers set, move or cancel what waits.
#[utoipa::path(post, path = "/v1/events", request_body = EventBody,
    responses((status = ACCEPTED, body = EventView), (status = OK, body = EventView, description = "a repeated key"),
              (status = NOT_FOUND, body = ErrorView), (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn post_event(
    State(state): State<AppState>,
    Caller(caller): Caller,
    JsonBody { value: body, .. }: JsonBody<EventBody>,
) -> Result<impl IntoResponse, ApiError> {
    let spec = EventSpec {
        name: body.name,
        contact_id: body.contact_id,
        contact: body.contact.map(ContactBody::into_spec),
        data: body.data,
        idempotency_key: body.idempotency_key,
    };
    let out = state.automations.event(caller.id, spec).await?;
    let e = out.event;
    let ids = |k: &str| -> Vec<String> {
        out.outcome[k]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    let view = EventView {
        started: ids("started"),
        moved: ids("moved"),
        canceled: ids("canceled"),
        errors: out.outcome.get("errors").cloned().unwrap_or_else(|| Value::Array(Vec::new())),
        id: e.id,
        name: e.name,
        contact_id: e.contact_id,
        data: serde_json::from_str(&e.data).unwrap_or_default(),
        idempotency_key: e.idempotency_key,
        duplicate: out.duplicate,
        created_at: time_json(e.created_at),
    };
    let status = if out.duplicate { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((status, Json(view)))
}
