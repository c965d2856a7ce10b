//! Templates over HTTP: `/v1/templates` (create, list), `/v1/templates/{id}` (read, change, delete) and
//! `/v1/templates/{id}/preview`. Every route is for the caller's own account.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use smsgate_core::consent::Category;
use smsgate_services::{ContactSpec, PreviewFor, TemplatePatch, TemplateSpec};
use smsgate_store::Template;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::json::{JsonBody, time_json};
use crate::views::ErrorView;
use crate::{AppState, Caller};

/// A template.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateView {
    pub id: String,
    pub name: String,
    /// The body, with merge fields: `{{ name }}`, `{{ fields.plan }}`, `{{ data.order_id }}`, filters such as
    /// `default("there")` and `date("%a %H:%M")`.
    pub body: String,
    /// `transactional` or `marketing`.
    pub category: String,
    #[schema(value_type = String)]
    pub created_at: Value,
    #[schema(value_type = String)]
    pub updated_at: Value,
}

fn template_view(t: Template) -> TemplateView {
    TemplateView {
        id: t.id,
        name: t.name,
        body: t.body,
        category: t.category.as_str().into(),
        created_at: time_json(t.created_at),
        updated_at: time_json(t.updated_at),
    }
}

/// The account's templates.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateList {
    pub data: Vec<TemplateView>,
}

fn category(c: Option<&str>) -> Result<Option<Category>, ApiError> {
    c.map(|c| {
        Category::requested(c)
            .ok_or_else(|| ApiError::invalid("invalid_category", "category must be \"transactional\" or \"marketing\""))
    })
    .transpose()
}

/// `POST /v1/templates`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TemplateBody {
    name: String,
    body: String,
    /// `transactional` (the default) or `marketing`.
    category: Option<String>,
}

/// Create a template; a body that does not parse is 422 `invalid_template` with its line and column.
#[utoipa::path(post, path = "/v1/templates", request_body = TemplateBody,
    responses((status = CREATED, body = TemplateView), (status = CONFLICT, body = ErrorView),
              (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn create_template(
    State(state): State<AppState>,
    Caller(caller): Caller,
    JsonBody { value: body, .. }: JsonBody<TemplateBody>,
) -> Result<impl IntoResponse, ApiError> {
    let spec = TemplateSpec {
        name: body.name,
        body: body.body,
        category: category(body.category.as_deref())?.unwrap_or_default(),
    };
    let t = state.templates.create(caller.id, spec).await?;
    Ok((StatusCode::CREATED, Json(template_view(t))))
}

/// The account's templates, by name.
#[utoipa::path(get, path = "/v1/templates", responses((status = OK, body = TemplateList)))]
pub(crate) async fn list_templates(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<TemplateList>, ApiError> {
    let data = state.templates.list(caller.id).await?.into_iter().map(template_view).collect();
    Ok(Json(TemplateList { data }))
}

/// A template.
#[utoipa::path(get, path = "/v1/templates/{id}", responses((status = OK, body = TemplateView), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn get_template(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<TemplateView>, ApiError> {
    Ok(Json(template_view(state.templates.get(caller.id, &id).await?)))
}

/// `PATCH /v1/templates/{id}`: what is given replaces what is there.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TemplatePatchBody {
    name: Option<String>,
    body: Option<String>,
    category: Option<String>,
}

/// Change a template.
#[utoipa::path(patch, path = "/v1/templates/{id}", request_body = TemplatePatchBody,
    responses((status = OK, body = TemplateView), (status = NOT_FOUND, body = ErrorView),
              (status = CONFLICT, body = ErrorView), (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn update_template(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    JsonBody { value: body, .. }: JsonBody<TemplatePatchBody>,
) -> Result<Json<TemplateView>, ApiError> {
    let patch = TemplatePatch { name: body.name, body: body.body, category: category(body.category.as_deref())? };
    Ok(Json(template_view(state.templates.update(caller.id, &id, patch).await?)))
}

/// Delete a template.
#[utoipa::path(delete, path = "/v1/templates/{id}", responses((status = NO_CONTENT), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn delete_template(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.templates.delete(caller.id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/templates/{id}/preview`: for a contact of the account (`contact_id`), or one given (`contact`, as
/// `POST /v1/contacts` takes it, not stored), or nobody; with a send's `data`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PreviewBody {
    contact_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    contact: Option<Map<String, Value>>,
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
}

/// A rendered template.
#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewView {
    pub text: String,
    /// `gsm7`, `ucs2`, ...
    pub encoding: String,
    pub segments: u32,
    /// The route's price per segment times the segments, for the contact's number; null when no route prices it.
    pub cost: Option<f64>,
    /// Merge fields the template names that the contact and data lack (they rendered empty, or as their default).
    pub missing_fields: Vec<String>,
}

/// Who a preview is for, from a request's `contact_id` or `contact`.
fn preview_for(contact_id: Option<String>, contact: Option<Map<String, Value>>) -> Result<PreviewFor, ApiError> {
    Ok(match (contact_id, contact) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid("invalid_body", "give contact_id or contact, not both"));
        }
        (Some(id), None) => PreviewFor::Contact(id),
        (None, Some(c)) => {
            let text = |k: &str| c.get(k).and_then(Value::as_str).map(String::from);
            let spec = ContactSpec {
                phone: text("phone").ok_or_else(|| ApiError::invalid("invalid_body", "contact needs a phone"))?,
                name: text("name"),
                email: text("email"),
                time_zone: text("time_zone"),
                fields: c.get("fields").and_then(Value::as_object).cloned().unwrap_or_default(),
                tags: Vec::new(),
            };
            PreviewFor::Given(spec)
        }
        (None, None) => PreviewFor::Nobody,
    })
}

fn preview_view(p: smsgate_services::templates::Preview) -> PreviewView {
    PreviewView {
        text: p.text,
        encoding: p.encoding,
        segments: p.segments,
        cost: p.cost_micros.map(|c| c as f64 / 1_000_000.0),
        missing_fields: p.missing,
    }
}

/// Render a template as a send would: the text, its encoding, segments and cost, and the missing merge fields.
#[utoipa::path(post, path = "/v1/templates/{id}/preview", request_body = PreviewBody,
    responses((status = OK, body = PreviewView), (status = NOT_FOUND, body = ErrorView),
              (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn preview_template(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    JsonBody { value: body, .. }: JsonBody<PreviewBody>,
) -> Result<Json<PreviewView>, ApiError> {
    let who = preview_for(body.contact_id, body.contact)?;
    let data = body.data.unwrap_or(Value::Object(Map::new()));
    Ok(Json(preview_view(state.templates.preview(caller.id, &id, who, &data).await?)))
}

/// `POST /v1/templates/preview`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BodyPreviewBody {
    /// The body being written.
    body: String,
    contact_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    contact: Option<Map<String, Value>>,
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
}

/// Render a body that is not saved, as `/v1/templates/{id}/preview` does a template (the dashboard's live
/// preview): 422 `invalid_template` with the line and column while it does not parse.
#[utoipa::path(post, path = "/v1/templates/preview", request_body = BodyPreviewBody,
    responses((status = OK, body = PreviewView), (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn preview_body(
    State(state): State<AppState>,
    Caller(caller): Caller,
    JsonBody { value: body, .. }: JsonBody<BodyPreviewBody>,
) -> Result<Json<PreviewView>, ApiError> {
    let who = preview_for(body.contact_id, body.contact)?;
    let data = body.data.unwrap_or(Value::Object(Map::new()));
    Ok(Json(preview_view(state.templates.preview_body(caller.id, &body.body, who, &data).await?)))
}
