//! [`ApiError`]: an HTTP status, a stable machine-readable code and a sentence, as JSON.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use smsgate_services::ServiceError;
use smsgate_store::StoreError;

/// An error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds to wait before trying again (a `Retry-After` header), for 429.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after: None }
    }

    /// 429 `rate_limited`, with `Retry-After` in whole seconds (at least one).
    pub fn rate_limited(what: &str, wait: std::time::Duration) -> ApiError {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        ApiError {
            retry_after: Some(secs.max(1)),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", format!("over {what}; try again later"))
        }
    }

    /// 422: a field is invalid.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 500, logging the cause; the client sees no internal text.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(%cause, "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the server's log")
    }
}

/// A service's refusal as its HTTP answer: not found 404, invalid 422, conflict 409, forbidden 403, unauthorized 401; a failure of
/// the store or the engine 500, logged, its text kept from the client.
impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> ApiError {
        match e {
            ServiceError::NotFound { code, message } => ApiError::new(StatusCode::NOT_FOUND, code, message),
            ServiceError::Invalid { code, message } => ApiError::invalid(code, message),
            ServiceError::Rejected(r) => ApiError::invalid(r.code.as_str(), r.message),
            ServiceError::Conflict { code, message } => ApiError::new(StatusCode::CONFLICT, code, message),
            ServiceError::Forbidden { code, message } => ApiError::new(StatusCode::FORBIDDEN, code, message),
            ServiceError::Unauthorized { code, message } => ApiError::new(StatusCode::UNAUTHORIZED, code, message),
            ServiceError::RateLimited { retry_after } => {
                ApiError::rate_limited("the account's messages a second", retry_after)
            }
            e @ (ServiceError::Store(_) | ServiceError::Engine(_)) => ApiError::internal(e),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, Json(json!({"error": {"code": self.code, "message": self.message}}))).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        response
    }
}
