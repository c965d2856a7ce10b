//! JSON in and out: the request body extractor with clear errors, and the message's JSON form.

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use serde_json::Value;
use smsgate_core::{Event, Message, Timestamp};

use crate::error::ApiError;
use crate::views::{EventView, MessageView};

/// The most a request body may be.
pub const MAX_BODY: usize = 1024 * 1024;
/// The most a batch request body may be.
pub const MAX_BATCH_BODY: usize = 32 * 1024 * 1024;

/// A JSON request body: 415 unless `Content-Type: application/json`, 413 past `LIMIT` ([`MAX_BODY`] unless the route says otherwise), 400 when it is not
/// JSON, 422 when it is JSON of the wrong shape. Keeps the raw octets (for idempotency hashes).
#[derive(Debug)]
pub struct JsonBody<T, const LIMIT: usize = MAX_BODY> {
    pub value: T,
    pub raw: Vec<u8>,
}

impl<S: Send + Sync, T: DeserializeOwned, const LIMIT: usize> FromRequest<S> for JsonBody<T, LIMIT> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        let is_json =
            req.headers().get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| {
                ct.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
        if !is_json {
            // Read what was sent, within the limit, so a keep-alive connection stays usable for the next request.
            let _ = axum::body::to_bytes(req.into_body(), LIMIT).await;
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as Content-Type: application/json",
            ));
        }
        let raw = axum::body::to_bytes(req.into_body(), LIMIT).await.map_err(|_| {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("the body exceeds {LIMIT} octets"))
        })?;
        let value = serde_json::from_slice(&raw).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => ApiError::invalid("invalid_field", e.to_string()),
            _ => ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", e.to_string()),
        })?;
        Ok(JsonBody { value, raw: raw.to_vec() })
    }
}

/// A page's place and size, for the lists that page by id (campaigns, automations).
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageQuery {
    /// The `next_cursor` of the page before.
    pub(crate) cursor: Option<String>,
    /// 1 to 500 (100 when not given).
    pub(crate) limit: Option<u32>,
}

/// A time as RFC 3339 in UTC with milliseconds.
pub fn time_json(t: Timestamp) -> Value {
    match DateTime::<Utc>::from_timestamp_millis(t.0) {
        Some(dt) => Value::String(dt.to_rfc3339_opts(SecondsFormat::Millis, true)),
        None => Value::Null,
    }
}

/// An RFC 3339 time from a request field.
pub fn parse_time(field: &'static str, s: &str) -> Result<Timestamp, ApiError> {
    DateTime::parse_from_rfc3339(s).map(|dt| Timestamp(dt.timestamp_millis())).map_err(|_| {
        ApiError::invalid(
            match field {
                "send_at" => "invalid_send_at",
                _ => "invalid_time",
            },
            format!("{field} must be an RFC 3339 time such as 2026-12-01T09:30:00Z"),
        )
    })
}

/// A message as the API shows it; with its journey when `events` is given.
pub fn message_view(m: &Message, events: Option<&[Event]>) -> MessageView {
    let time = |t: Timestamp| time_json(t).as_str().map(String::from).unwrap_or_default();
    MessageView {
        id: m.id.to_string(),
        direction: m.direction.as_str().into(),
        status: m.status.as_str().into(),
        to: m.to.clone(),
        from: m.from.clone(),
        body: m.body.clone(),
        encoding: m.encoding.clone(),
        segments: m.segments,
        price: m.price_micros.map(|p| p as f64 / 1_000_000.0),
        connector: m.connector.clone(),
        carrier_id: m.carrier_id.clone(),
        error_code: m.error_code.clone(),
        reference: m.reference.clone(),
        callback_url: m.callback_url.clone(),
        callback_statuses: m
            .callback_statuses
            .map(|c| c.statuses().into_iter().map(|s| s.as_str().to_string()).collect()),
        send_at: m.send_at.map(time),
        expires_at: m.expires_at.map(time),
        attempts: m.attempts,
        category: m.category.as_str().into(),
        created_at: time(m.created_at),
        updated_at: time(m.updated_at),
        events: events.map(|events| {
            events
                .iter()
                .map(|e| EventView { status: e.status.as_str().into(), at: time(e.at), detail: e.detail.clone() })
                .collect()
        }),
    }
}
