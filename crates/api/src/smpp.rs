//! SMPP credentials: what an account's client applications bind to smsgate's SMPP server with
//! (`POST`/`GET /v1/smpp/credentials`, `GET`/`DELETE /v1/smpp/credentials/{system_id}`). The password is kept as an
//! Argon2 hash and never shown again.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};
use smsgate_core::access::{IpRanges, hash_password};
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

/// Printable ASCII without spaces, 1 to `max` characters.
fn printable(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_graphic())
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
    if !printable(&body.system_id, 15) {
        return Err(ApiError::invalid("invalid_system_id", "system_id must be 1 to 15 printable ASCII characters"));
    }
    if !printable(&body.password, 8) {
        return Err(ApiError::invalid(
            "invalid_password",
            "password must be 1 to 8 printable ASCII characters (SMPP 3.4 allows no more)",
        ));
    }
    if let Some(ips) = &body.allowed_ips {
        IpRanges::parse(ips).map_err(|e| ApiError::invalid("invalid_allowed_ips", e))?;
    }
    if body.max_binds == Some(0) {
        return Err(ApiError::invalid("invalid_max_binds", "max_binds must be at least 1"));
    }
    if body.throughput.is_some_and(|t| !(t > 0.0 && t.is_finite())) {
        return Err(ApiError::invalid(
            "invalid_throughput",
            "throughput must be a positive number of submits a second",
        ));
    }
    // Argon2 takes tens of milliseconds on purpose: off the async workers.
    let password = body.password.clone();
    let password_hash =
        tokio::task::spawn_blocking(move || hash_password(&password)).await.map_err(ApiError::internal)?;
    let credential = SmppCredential {
        system_id: body.system_id,
        account_id: caller.id,
        password_hash,
        allowed_ips: body.allowed_ips,
        max_binds: body.max_binds,
        throughput: body.throughput,
        created_at: state.engine.now(),
    };
    if !state.store.create_smpp_credential(&credential).await.map_err(ApiError::internal)? {
        return Err(ApiError::new(StatusCode::CONFLICT, "system_id_taken", "that system_id is taken"));
    }
    Ok((StatusCode::CREATED, Json(view(&credential))))
}

/// The caller's SMPP credentials (without passwords).
#[utoipa::path(get, path = "/v1/smpp/credentials", responses((status = OK, body = Object)))]
pub(crate) async fn list_credentials(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<impl IntoResponse, ApiError> {
    let all = state.store.smpp_credentials(caller.id).await.map_err(ApiError::internal)?;
    Ok(Json(json!({"data": all.iter().map(view).collect::<Vec<_>>()})))
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such SMPP credentials")
}

/// One of the caller's SMPP credentials.
#[utoipa::path(get, path = "/v1/smpp/credentials/{system_id}", params(("system_id" = String, Path)),
    responses((status = OK, body = Object), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn get_credential(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(system_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let found = state.store.smpp_credential(&system_id).await.map_err(ApiError::internal)?;
    let c = found.filter(|c| c.account_id == caller.id).ok_or_else(not_found)?;
    Ok(Json(view(&c)))
}

/// Remove SMPP credentials; new binds with them are refused.
#[utoipa::path(delete, path = "/v1/smpp/credentials/{system_id}", params(("system_id" = String, Path)),
    responses((status = NO_CONTENT), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn delete_credential(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(system_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    if !state.store.delete_smpp_credential(caller.id, &system_id).await.map_err(ApiError::internal)? {
        return Err(not_found());
    }
    Ok(StatusCode::NO_CONTENT)
}
