//! The audit log over HTTP: every change made through the API — any request but a read, other than sending and
//! canceling messages — that succeeded is kept with the account and key that made it ([`record_changes`], a
//! middleware, so that no route can be forgotten), and the operator reads it (`GET /v1/audit`).

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Query, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use smsgate_core::AccountId;
use smsgate_services::audit::Change;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::json::{MAX_BODY, time_json};
use crate::views::ErrorView;
use crate::{AppState, Caller};

/// Where the key's extractor leaves who made the request, for the middleware to read once it is answered.
#[derive(Debug, Clone, Default)]
pub(crate) struct ActorSlot(Arc<Mutex<Option<(AccountId, String)>>>);

impl ActorSlot {
    pub(crate) fn fill(&self, account: AccountId, key_id: String) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((account, key_id));
    }

    fn take(&self) -> Option<(AccountId, String)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Whether a request changes something the audit log keeps.
fn audited(method: &Method, path: &str) -> bool {
    let reads = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    !reads && path.starts_with("/v1/") && !path.starts_with("/v1/messages") && !path.starts_with("/v1/session")
}

/// Keeps every change that succeeded in the audit log, with its body (secrets replaced).
pub(crate) async fn record_changes(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !audited(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    // An import's body is a file streamed to disk: kept out of memory, and out of the log.
    let (bytes, body) = if parts.uri.path() == "/v1/contacts/import" {
        (axum::body::Bytes::new(), Some(body))
    } else {
        match axum::body::to_bytes(body, MAX_BODY).await {
            Ok(b) => (b, None),
            Err(_) => {
                return axum::response::IntoResponse::into_response(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("the body exceeds {MAX_BODY} octets"),
                ));
            }
        }
    };
    let slot = ActorSlot::default();
    parts.extensions.insert(slot.clone());
    let route = parts.extensions.get::<axum::extract::MatchedPath>().map(|p| p.as_str().to_string());
    let action = format!("{} {}", parts.method, route.as_deref().unwrap_or(parts.uri.path()));
    let target = parts.uri.path().to_string();
    let logged = serde_json::from_slice(&bytes).ok();
    let body = body.unwrap_or_else(|| axum::body::Body::from(bytes));
    let response = next.run(Request::from_parts(parts, body)).await;
    if response.status().is_success() {
        let (actor_account, actor_key) = slot.take().unzip();
        let status = response.status().as_u16();
        let change = Change { actor_account, actor_key, action, target, status, body: logged };
        if let Err(e) = state.admin.record_change(change).await {
            // The change is made; only its record is missing. The log keeps what the table could not.
            tracing::error!(error = %e, "writing the audit log failed");
        }
    }
    response
}

/// Query of `GET /v1/audit`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    /// Only the changes this account made.
    account_id: Option<String>,
    /// 1 to 1000; default 50.
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// One change.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub id: String,
    #[schema(value_type = String)]
    pub at: serde_json::Value,
    pub account_id: Option<String>,
    pub key_id: Option<String>,
    /// Method and route: `POST /v1/routes`.
    pub action: String,
    /// The path: `/v1/routes/uk`.
    pub target: String,
    pub status: u16,
    /// The request's body, secrets replaced.
    #[schema(value_type = Object)]
    pub detail: Option<serde_json::Value>,
}

/// A page of the audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditList {
    pub data: Vec<AuditView>,
    pub next_cursor: Option<String>,
}

/// Who changed what, newest first. Admin key only.
#[utoipa::path(get, path = "/v1/audit", params(AuditQuery),
    responses((status = OK, body = AuditList), (status = FORBIDDEN, body = ErrorView)))]
pub(crate) async fn list_audit(
    State(state): State<AppState>,
    Caller(caller): Caller,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditList>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    let actor = q
        .account_id
        .as_deref()
        .map(|a| {
            AccountId::parse(a)
                .ok_or_else(|| ApiError::invalid("invalid_account_id", "account_id is not an account id"))
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(50);
    let page = state.admin.audit(&caller, actor, q.cursor.as_deref(), limit).await?;
    let next_cursor = (page.len() == limit as usize).then(|| page.last().map(|e| e.id.clone())).flatten();
    let data = page
        .into_iter()
        .map(|e| AuditView {
            id: e.id,
            at: time_json(e.at),
            account_id: e.actor_account.map(|a| a.to_string()),
            key_id: e.actor_key,
            action: e.action,
            target: e.target,
            status: e.status,
            detail: e.detail.and_then(|d| serde_json::from_str(&d).ok()),
        })
        .collect();
    Ok(Json(AuditList { data, next_cursor }))
}
