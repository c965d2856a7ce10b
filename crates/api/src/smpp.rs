//! SMPP credentials: what an account's client applications bind to smsgate's SMPP server with
//! (`POST`/`GET /v1/smpp/credentials`, `GET`/`DELETE /v1/smpp/credentials/{system_id}`). The password is kept as an
//! Argon2 hash and never shown again.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};
use smsgate_services::CredentialSpec;
use smsgate_services::binds::BindKey;
use smsgate_store::SmppCredential;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::json::time_json;
use crate::views::ErrorView;
use crate::{AppState, Caller};

/// `POST /v1/smpp/credentials`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CredentialBody {
    /// 1 to 15 printable ASCII characters, unique on the server.
    system_id: String,
    /// 1 to 8 printable ASCII characters (SMPP 3.4 allows no more).
    password: String,
    /// Addresses or CIDR ranges binds may come from; absent: anywhere.
    allowed_ips: Option<Vec<String>>,
    /// Binds at once; absent: no limit.
    max_binds: Option<u32>,
    /// Submits per second over all its binds, above which submits are answered ESME_RTHROTTLED; absent: no limit.
    throughput: Option<f64>,
}

fn view(c: &SmppCredential) -> Value {
    json!({"system_id": c.system_id, "allowed_ips": c.allowed_ips, "max_binds": c.max_binds,
           "throughput": c.throughput, "created_at": time_json(c.created_at)})
}

/// Add SMPP credentials for the caller's account.
#[utoipa::path(post, path = "/v1/smpp/credentials", request_body = CredentialBody,
    responses((status = CREATED, body = Object), (status = CONFLICT, body = ErrorView),
              (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn create_credential(
    State(state): State<AppState>,
    Caller(caller): Caller,
    crate::json::JsonBody { value: body, .. }: crate::json::JsonBody<CredentialBody>,
) -> Result<impl IntoResponse, ApiError> {
    let spec = CredentialSpec {
        system_id: body.system_id,
        password: body.password,
        allowed_ips: body.allowed_ips,
        max_binds: body.max_binds,
        throughput: body.throughput,
    };
    let credential = state.admin.create_credential(caller.id, spec).await?;
    Ok((StatusCode::CREATED, Json(view(&credential))))
}

/// The caller's SMPP credentials (without passwords).
#[utoipa::path(get, path = "/v1/smpp/credentials", responses((status = OK, body = Object)))]
pub(crate) async fn list_credentials(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<impl IntoResponse, ApiError> {
    let all = state.admin.credentials(caller.id).await?;
    Ok(Json(json!({"data": all.iter().map(view).collect::<Vec<_>>()})))
}

/// One of the caller's SMPP credentials.
#[utoipa::path(get, path = "/v1/smpp/credentials/{system_id}", params(("system_id" = String, Path)),
    responses((status = OK, body = Object), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn get_credential(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(system_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(view(&state.admin.credential(caller.id, &system_id).await?)))
}

/// Remove SMPP credentials; new binds with them are refused.
#[utoipa::path(delete, path = "/v1/smpp/credentials/{system_id}", params(("system_id" = String, Path)),
    responses((status = NO_CONTENT), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn delete_credential(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(system_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    state.admin.delete_credential(caller.id, &system_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn lockout_view(l: &smsgate_services::binds::Lockout) -> Value {
    let (kind, value) = match &l.key {
        BindKey::SystemId(s) => ("system_id", s.clone()),
        BindKey::Address(a) => ("address", a.to_string()),
    };
    json!({"kind": kind, "value": value, "failures": l.failures, "until": time_json(l.until)})
}

/// SMPP binds locked out after failed tries, on this node: by `system_id` and by address, each with its failures
/// and when it ends. Admin key only.
#[utoipa::path(get, path = "/v1/smpp/lockouts", responses((status = OK, body = Object), (status = FORBIDDEN, body = ErrorView)))]
pub(crate) async fn list_lockouts(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<impl IntoResponse, ApiError> {
    crate::require_admin(&caller)?;
    let all = state.admin.bind_lockouts();
    Ok(Json(json!({"data": all.iter().map(lockout_view).collect::<Vec<_>>()})))
}

/// Lift every lockout on this node and forget the failed binds. Admin key only.
#[utoipa::path(delete, path = "/v1/smpp/lockouts", responses((status = NO_CONTENT), (status = FORBIDDEN, body = ErrorView)))]
pub(crate) async fn clear_lockouts(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<impl IntoResponse, ApiError> {
    crate::require_admin(&caller)?;
    state.admin.binds().clear();
    Ok(StatusCode::NO_CONTENT)
}
