//! The HTTP API, REST v1 (JSON, `Authorization: Bearer <api key>`): messages, inbound messages, accounts and keys,
//! the simulated network's handsets, and health. Only this crate knows JSON and HTTP; every send goes through
//! [`smsgate_core::admission::admit`] and is committed by the store before the answer.
//!
//! Errors are `{"error": {"code": "...", "message": "..."}}` with an explicit status and a stable code; internal
//! error text never reaches a client (it is logged).

mod error;
mod json;

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use smsgate_connectors::sim::SimNetwork;
use smsgate_core::admission::{Policy, Request, admit};
use smsgate_core::{Direction, Message, MessageId, Status, Timestamp};
use smsgate_engine::{Engine, timestamp_now};
use smsgate_store::{Account, Changes, Inserted, ListFilter, NewMessage, Store};

pub use error::ApiError;
use json::{JsonBody, MAX_BATCH_BODY, message_json, parse_time, time_json};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub engine: Engine,
    /// The simulated network, when it is the connector.
    pub sim: Option<Arc<SimNetwork>>,
    pub policy: Arc<Policy>,
    /// Renders the engine's counters and histograms, when a recorder is installed.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

/// The API's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/v1/messages", post(send_message).get(list_outbound))
        .route("/v1/messages/batch", post(send_batch))
        .route("/v1/messages/{id}", get(get_message).delete(cancel_message))
        .route("/v1/inbound", get(list_inbound))
        .route("/v1/accounts", post(create_account))
        .route("/v1/accounts/{id}/keys", post(create_key))
        .route("/v1/sim/handsets/{number}/messages", get(handset_inbox))
        .route("/v1/sim/handsets/{number}/reply", post(handset_reply))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(state)
}

/// A new API key and the hash the store keeps of it: `sk_` and 64 hex digits of randomness.
pub fn generate_key() -> (String, String) {
    let key = format!("sk_{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let hash = hash_key(&key);
    (key, hash)
}

/// The SHA-256 of a key, hex. Keys carry 244 random bits, so a fast hash is enough: nothing to brute-force.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The first characters of a key, safe to show.
pub fn key_prefix(key: &str) -> String {
    key.chars().take(10).collect()
}

/// The account behind the request's API key.
#[derive(Debug, Clone)]
pub struct Caller(pub Account);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("missing Authorization: Bearer <api key>"))?;
        let key = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| unauthorized("Authorization must be Bearer <api key>"))?;
        match state.store.account_by_key_hash(&hash_key(key)).await {
            Ok(Some(account)) => Ok(Caller(account)),
            Ok(None) => Err(unauthorized("unknown or revoked API key")),
            Err(e) => Err(ApiError::internal(e)),
        }
    }
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /metrics`, Prometheus text: messages by status and the queue depth, read from the store at scrape time
/// (so they are right for every node sharing the database), then this node's counters and histograms.
async fn metrics_text(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let counts = state.store.count_by_status().await.map_err(ApiError::internal)?;
    let mut out =
        String::from("# HELP smsgate_messages Messages in the store by status.\n# TYPE smsgate_messages gauge\n");
    for status in Status::ALL {
        let n = counts.iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| *n);
        out.push_str(&format!("smsgate_messages{{status=\"{status}\"}} {n}\n"));
    }
    let depth: i64 = counts.iter().filter(|(s, _)| matches!(s, Status::Queued | Status::Sending)).map(|(_, n)| n).sum();
    out.push_str("# HELP smsgate_queue_depth Messages queued or being sent.\n# TYPE smsgate_queue_depth gauge\n");
    out.push_str(&format!("smsgate_queue_depth {depth}\n"));
    if let Some(handle) = &state.metrics {
        out.push_str(&handle.render());
    }
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}

/// The body of `POST /v1/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    to: String,
    from: String,
    body: String,
    send_at: Option<String>,
    validity: Option<i64>,
    callback_url: Option<String>,
    reference: Option<String>,
}

const MAX_IDEMPOTENCY_KEY: usize = 255;

async fn send_message(
    State(state): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
    JsonBody { value: body, raw }: JsonBody<SendBody>,
) -> Result<impl IntoResponse, ApiError> {
    let idempotency = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v.to_str().ok().filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY).ok_or_else(|| {
                ApiError::invalid("invalid_idempotency_key", "Idempotency-Key must be 1 to 255 visible characters")
            })?;
            Some((key.to_string(), hex::encode(Sha256::digest(&raw))))
        }
    };
    let now = timestamp_now();
    let (message, detail) = prepare(&state, caller.id, body, now)?;
    let inserted = state
        .store
        .insert_messages(&[NewMessage { message: message.clone(), detail, idempotency }])
        .await
        .map_err(ApiError::internal)?;
    match inserted.first() {
        Some(Inserted::Duplicate { id, same_request: true }) => {
            let original = state.store.message(caller.id, *id).await.map_err(ApiError::internal)?;
            let original = original.ok_or_else(|| ApiError::internal("idempotent original vanished"))?;
            Ok((StatusCode::CREATED, Json(message_json(&original, None))))
        }
        Some(Inserted::Duplicate { .. }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request",
        )),
        _ => {
            state.engine.wake();
            Ok((StatusCode::CREATED, Json(message_json(&message, None))))
        }
    }
}

/// Admits one request and builds the message to store, with its first event's detail.
fn prepare(
    state: &AppState,
    account: smsgate_core::AccountId,
    body: SendBody,
    now: Timestamp,
) -> Result<(Message, String), ApiError> {
    let send_at = body.send_at.as_deref().map(|s| parse_time("send_at", s)).transpose()?;
    let request = Request {
        to: body.to,
        from: body.from,
        body: body.body,
        send_at,
        validity_secs: body.validity,
        callback_url: body.callback_url,
        reference: body.reference,
    };
    let admitted = admit(&request, &state.policy, now).map_err(|r| ApiError::invalid(r.code.as_str(), r.message))?;
    let message = Message {
        id: MessageId::generate(),
        account_id: account,
        direction: Direction::Outbound,
        to: admitted.to,
        from: admitted.from,
        body: admitted.body,
        encoding: admitted.encoding,
        segments: admitted.segments,
        price_micros: None,
        connector: None,
        carrier_id: None,
        status: admitted.status,
        error_code: None,
        reference: admitted.reference,
        callback_url: admitted.callback_url,
        send_at: admitted.send_at,
        expires_at: Some(admitted.expires_at),
        attempts: 0,
        created_at: now,
        updated_at: now,
    };
    let detail = match admitted.status {
        Status::Scheduled => "accepted; scheduled".to_string(),
        _ => "accepted".to_string(),
    };
    Ok((message, detail))
}

/// The most messages one batch may hold.
pub const MAX_BATCH: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    messages: Vec<Value>,
}

/// `POST /v1/messages/batch`: every item admitted on its own; the admitted ones stored in one transaction; one
/// result per item, in order: the message, or `{"error": {...}}`.
async fn send_batch(
    State(state): State<AppState>,
    Caller(caller): Caller,
    JsonBody { value: body, .. }: JsonBody<BatchBody, MAX_BATCH_BODY>,
) -> Result<Json<Value>, ApiError> {
    if body.messages.is_empty() || body.messages.len() > MAX_BATCH {
        return Err(ApiError::invalid("invalid_batch", format!("messages must hold 1 to {MAX_BATCH} items")));
    }
    let now = timestamp_now();
    let mut results: Vec<Result<usize, ApiError>> = Vec::with_capacity(body.messages.len());
    let mut to_store = Vec::new();
    for item in body.messages {
        let prepared = serde_json::from_value::<SendBody>(item)
            .map_err(|e| ApiError::invalid("invalid_field", e.to_string()))
            .and_then(|b| prepare(&state, caller.id, b, now));
        results.push(prepared.map(|(message, detail)| {
            to_store.push(NewMessage { message, detail, idempotency: None });
            to_store.len() - 1
        }));
    }
    if !to_store.is_empty() {
        state.store.insert_messages(&to_store).await.map_err(ApiError::internal)?;
        state.engine.wake();
    }
    let data: Vec<Value> = results
        .into_iter()
        .map(|r| match r {
            Ok(i) => message_json(&to_store[i].message, None),
            Err(e) => json!({"error": {"code": e.code, "message": e.message}}),
        })
        .collect();
    Ok(Json(json!({"data": data})))
}

fn parse_id(id: &str) -> Result<MessageId, ApiError> {
    MessageId::parse(id).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such message"))
}

async fn get_message(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let message = state.store.message(caller.id, id).await.map_err(ApiError::internal)?;
    let message = message.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such message"))?;
    let events = state.store.events(id).await.map_err(ApiError::internal)?;
    Ok(Json(message_json(&message, Some(&events))))
}

async fn cancel_message(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such message");
    let message = state.store.message(caller.id, id).await.map_err(ApiError::internal)?.ok_or_else(not_found)?;
    let moved = state
        .store
        .transition(id, Status::Canceled, timestamp_now(), "canceled by the sender", &Changes::default())
        .await
        .map_err(ApiError::internal)?;
    if !moved {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_cancelable",
            format!("the message is {}; only scheduled or queued messages can be canceled", message.status),
        ));
    }
    let message = state.store.message(caller.id, id).await.map_err(ApiError::internal)?.ok_or_else(not_found)?;
    let events = state.store.events(id).await.map_err(ApiError::internal)?;
    Ok(Json(message_json(&message, Some(&events))))
}

/// Query parameters of the message lists.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    to: Option<String>,
    from: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn list_outbound(
    state: State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    list(state, caller, query, Direction::Outbound).await
}

async fn list_inbound(
    state: State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    list(state, caller, query, Direction::Inbound).await
}

const MAX_LIMIT: u32 = 1000;

async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
    direction: Direction,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    let status = q
        .status
        .as_deref()
        .map(|s| Status::parse(s).ok_or_else(|| ApiError::invalid("invalid_status", format!("unknown status {s:?}"))))
        .transpose()?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid("invalid_limit", format!("limit must be 1 to {MAX_LIMIT}")));
    }
    let cursor = q
        .cursor
        .as_deref()
        .map(|c| MessageId::parse(c).ok_or_else(|| ApiError::invalid("invalid_cursor", "cursor is not a message id")))
        .transpose()?;
    let filter = ListFilter {
        direction: Some(direction),
        status,
        to: q.to,
        from: q.from,
        since: q.since.as_deref().map(|s| parse_time("since", s)).transpose()?,
        until: q.until.as_deref().map(|s| parse_time("until", s)).transpose()?,
    };
    let page = state.store.list_messages(caller.id, &filter, cursor, limit).await.map_err(ApiError::internal)?;
    let next = (page.len() == limit as usize).then(|| page.last().map(|m| m.id.to_string())).flatten();
    let data: Vec<Value> = page.iter().map(|m| message_json(m, None)).collect();
    Ok(Json(json!({"data": data, "next_cursor": next})))
}

fn require_admin(caller: &Account) -> Result<(), ApiError> {
    if caller.is_admin {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "only the admin key manages accounts and keys"))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountBody {
    name: String,
}

fn account_json(a: &Account) -> Value {
    json!({"id": a.id.to_string(), "name": a.name, "is_admin": a.is_admin, "created_at": time_json(a.created_at)})
}

async fn create_account(
    State(state): State<AppState>,
    Caller(caller): Caller,
    JsonBody { value: body, .. }: JsonBody<AccountBody>,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&caller)?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid("invalid_name", "name must be 1 to 200 characters"));
    }
    let account = state.store.create_account(name, false, timestamp_now()).await.map_err(ApiError::internal)?;
    Ok((StatusCode::CREATED, Json(account_json(&account))))
}

async fn create_key(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&caller)?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such account");
    let id = smsgate_core::AccountId::parse(&id).ok_or_else(not_found)?;
    let account = state.store.account(id).await.map_err(ApiError::internal)?.ok_or_else(not_found)?;
    let (key, hash) = generate_key();
    let record = state
        .store
        .create_api_key(account.id, &hash, &key_prefix(&key), timestamp_now())
        .await
        .map_err(ApiError::internal)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": record.id,
            "account_id": account.id.to_string(),
            "key": key,
            "prefix": record.prefix,
            "created_at": time_json(record.created_at),
        })),
    ))
}

fn sim(state: &AppState) -> Result<&Arc<SimNetwork>, ApiError> {
    state.sim.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "sim_disabled", "the simulated network is not this server's connector")
    })
}

async fn handset_inbox(
    State(state): State<AppState>,
    Caller(_): Caller,
    Path(number): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let data: Vec<Value> = sim(&state)?
        .inbox(&number)
        .iter()
        .map(|m| json!({"from": m.from, "body": m.body, "carrier_id": m.carrier_id, "received_at": time_json(m.at)}))
        .collect();
    Ok(Json(json!({"number": number, "data": data})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyBody {
    to: String,
    body: String,
}

async fn handset_reply(
    State(state): State<AppState>,
    Caller(_): Caller,
    Path(number): Path<String>,
    JsonBody { value: body, .. }: JsonBody<ReplyBody>,
) -> Result<impl IntoResponse, ApiError> {
    if body.body.is_empty() {
        return Err(ApiError::invalid("empty_body", "body is empty"));
    }
    if body.to.trim().is_empty() {
        return Err(ApiError::invalid("invalid_destination", "to is empty"));
    }
    sim(&state)?
        .reply(&number, &body.to, &body.body)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stopping", e.to_string()))?;
    Ok((StatusCode::ACCEPTED, Json(json!({"status": "accepted", "from": number, "to": body.to}))))
}

/// Milliseconds now, for callers that need a [`Timestamp`] without the engine.
pub fn now() -> Timestamp {
    timestamp_now()
}
