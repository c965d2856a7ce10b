//! Numbers and sender IDs an account owns: `POST`/`GET /v1/numbers`, `GET`/`DELETE /v1/numbers/{id}` (the operator
//! assigns numbers); `POST`/`GET /v1/sender-ids`, `GET`/`DELETE /v1/sender-ids/{id}` and
//! `POST /v1/sender-ids/{id}/approve|reject` (accounts ask for sender IDs, the operator approves them).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use smsgate_core::AccountId;
use smsgate_services::{NumberSpec, SenderClass};
use smsgate_store::Sender;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::json::{JsonBody, time_json};
use crate::views::ErrorView;
use crate::{AppState, Caller};

/// A number an account owns.
#[derive(Debug, Serialize, ToSchema)]
pub struct NumberView {
    pub id: String,
    /// E.164, or a short code's digits.
    pub number: String,
    /// `long_code` or `short_code`.
    pub kind: String,
    pub account_id: String,
    /// The connector its inbound messages arrive on; null: any.
    pub connector: Option<String>,
    #[schema(value_type = String)]
    pub created_at: serde_json::Value,
}

/// A sender ID an account owns or asked for.
#[derive(Debug, Serialize, ToSchema)]
pub struct SenderIdView {
    pub id: String,
    pub sender_id: String,
    pub account_id: String,
    /// `active`, `pending` (waiting for the operator) or `rejected`.
    pub status: String,
    #[schema(value_type = String)]
    pub created_at: serde_json::Value,
    #[schema(value_type = String)]
    pub updated_at: serde_json::Value,
}

/// A list of numbers.
#[derive(Debug, Serialize, ToSchema)]
pub struct NumberList {
    pub data: Vec<NumberView>,
}

/// A list of sender IDs.
#[derive(Debug, Serialize, ToSchema)]
pub struct SenderIdList {
    pub data: Vec<SenderIdView>,
}

fn number_view(s: &Sender) -> NumberView {
    NumberView {
        id: s.id.clone(),
        number: s.address.clone(),
        kind: s.kind.as_str().into(),
        account_id: s.account_id.to_string(),
        connector: s.connector.clone(),
        created_at: time_json(s.created_at),
    }
}

fn sender_id_view(s: &Sender) -> SenderIdView {
    SenderIdView {
        id: s.id.clone(),
        sender_id: s.address.clone(),
        account_id: s.account_id.to_string(),
        status: s.status.as_str().into(),
        created_at: time_json(s.created_at),
        updated_at: time_json(s.updated_at),
    }
}

fn account_id(field: &str, id: &str) -> Result<AccountId, ApiError> {
    AccountId::parse(id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{field} {id:?} names no account")))
}

/// `POST /v1/numbers`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NumberBody {
    /// E.164 (`+` and digits) or a short code (3 to 8 digits).
    number: String,
    /// The account that owns it: what it sends from this number is allowed, and what is sent to it is its own.
    account_id: String,
    /// The connector its inbound messages arrive on; absent: any.
    connector: Option<String>,
}

/// Query of the lists.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct SenderQuery {
    /// Only this account's (the admin key; an account sees its own only).
    account_id: Option<String>,
}

/// The senders of a class a list query asks for, as the caller may see them.
async fn listed(
    state: &AppState,
    caller: &smsgate_store::Account,
    query: Result<Query<SenderQuery>, axum::extract::rejection::QueryRejection>,
    class: SenderClass,
) -> Result<Vec<Sender>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    let account = q.account_id.as_deref().map(|a| account_id("account_id", a)).transpose()?;
    Ok(state.admin.senders(caller, class, account).await?)
}

/// Assign a long number or short code to an account. Admin key only.
#[utoipa::path(post, path = "/v1/numbers", request_body = NumberBody,
    responses((status = CREATED, body = NumberView), (status = FORBIDDEN, body = ErrorView),
              (status = CONFLICT, body = ErrorView), (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn create_number(
    State(state): State<AppState>,
    Caller(caller): Caller,
    JsonBody { value: body, .. }: JsonBody<NumberBody>,
) -> Result<impl IntoResponse, ApiError> {
    let account = account_id("account_id", &body.account_id)?;
    let spec = NumberSpec { number: body.number, account, connector: body.connector };
    let number = state.admin.assign_number(&caller, spec).await?;
    Ok((StatusCode::CREATED, Json(number_view(&number))))
}

/// Numbers: every account's for the admin key, else the caller's.
#[utoipa::path(get, path = "/v1/numbers", params(SenderQuery), responses((status = OK, body = NumberList)))]
pub(crate) async fn list_numbers(
    State(state): State<AppState>,
    Caller(caller): Caller,
    query: Result<Query<SenderQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<NumberList>, ApiError> {
    let all = listed(&state, &caller, query, SenderClass::Number).await?;
    Ok(Json(NumberList { data: all.iter().map(number_view).collect() }))
}

/// One number.
#[utoipa::path(get, path = "/v1/numbers/{id}", params(("id" = String, Path)),
    responses((status = OK, body = NumberView), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn get_number(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<NumberView>, ApiError> {
    Ok(Json(number_view(&state.admin.sender(&caller, SenderClass::Number, &id).await?)))
}

/// Take a number back from its account; what is sent to it afterwards is the operator's. Admin key only.
#[utoipa::path(delete, path = "/v1/numbers/{id}", params(("id" = String, Path)),
    responses((status = OK, body = NumberView), (status = FORBIDDEN, body = ErrorView), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn delete_number(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<NumberView>, ApiError> {
    Ok(Json(number_view(&state.admin.remove_sender(&caller, SenderClass::Number, &id).await?)))
}

/// `POST /v1/sender-ids`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SenderIdBody {
    /// 1 to 11 letters, digits, spaces or `- _ . & ' ! # @ +`, at least one a letter.
    sender_id: String,
    /// The account it is for (the admin key); absent: the caller's.
    account_id: Option<String>,
}

/// Register an alphanumeric sender ID. The admin key registers one for any account, in force at once; an account
/// asks for its own, `pending` until the operator approves it (unless the server is set not to ask).
#[utoipa::path(post, path = "/v1/sender-ids", request_body = SenderIdBody,
    responses((status = CREATED, body = SenderIdView), (status = FORBIDDEN, body = ErrorView),
              (status = CONFLICT, body = ErrorView), (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn create_sender_id(
    State(state): State<AppState>,
    Caller(caller): Caller,
    JsonBody { value: body, .. }: JsonBody<SenderIdBody>,
) -> Result<impl IntoResponse, ApiError> {
    let account = body.account_id.as_deref().map(|a| account_id("account_id", a)).transpose()?;
    let sender = state.admin.register_sender_id(&caller, &body.sender_id, account).await?;
    Ok((StatusCode::CREATED, Json(sender_id_view(&sender))))
}

/// Sender IDs: every account's for the admin key, else the caller's.
#[utoipa::path(get, path = "/v1/sender-ids", params(SenderQuery), responses((status = OK, body = SenderIdList)))]
pub(crate) async fn list_sender_ids(
    State(state): State<AppState>,
    Caller(caller): Caller,
    query: Result<Query<SenderQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SenderIdList>, ApiError> {
    let all = listed(&state, &caller, query, SenderClass::SenderId).await?;
    Ok(Json(SenderIdList { data: all.iter().map(sender_id_view).collect() }))
}

/// One sender ID.
#[utoipa::path(get, path = "/v1/sender-ids/{id}", params(("id" = String, Path)),
    responses((status = OK, body = SenderIdView), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn get_sender_id(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<SenderIdView>, ApiError> {
    Ok(Json(sender_id_view(&state.admin.sender(&caller, SenderClass::SenderId, &id).await?)))
}

/// Remove a sender ID (its account or the admin key).
#[utoipa::path(delete, path = "/v1/sender-ids/{id}", params(("id" = String, Path)),
    responses((status = OK, body = SenderIdView), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn delete_sender_id(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<SenderIdView>, ApiError> {
    Ok(Json(sender_id_view(&state.admin.remove_sender(&caller, SenderClass::SenderId, &id).await?)))
}

/// Approve a sender ID: it is in force at once. Admin key only.
#[utoipa::path(post, path = "/v1/sender-ids/{id}/approve", params(("id" = String, Path)),
    responses((status = OK, body = SenderIdView), (status = FORBIDDEN, body = ErrorView), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn approve_sender_id(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<SenderIdView>, ApiError> {
    Ok(Json(sender_id_view(&state.admin.decide_sender_id(&caller, &id, true).await?)))
}

/// Reject a sender ID: it stays `rejected` (and its name taken) until deleted. Admin key only.
#[utoipa::path(post, path = "/v1/sender-ids/{id}/reject", params(("id" = String, Path)),
    responses((status = OK, body = SenderIdView), (status = FORBIDDEN, body = ErrorView), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn reject_sender_id(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<SenderIdView>, ApiError> {
    Ok(Json(sender_id_view(&state.admin.decide_sender_id(&caller, &id, false).await?)))
}
