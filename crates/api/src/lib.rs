//! The HTTP API, REST v1 (JSON, `Authorization: Bearer <api key>`): messages, inbound messages, accounts and keys,
//! the simulated network's handsets, and health. Only this crate knows JSON and HTTP; every send goes through
//! [`smsgate_core::admission::admit`] and is committed by the store before the answer.
//!
//! Errors are `{"error": {"code": "...", "message": "..."}}` with an explicit status and a stable code; internal
//! error text never reaches a client (it is logged).

mod analytics;
pub mod audit;
mod automations;
mod campaigns;
mod contacts;
mod conversations;
mod dashboard;
mod error;
pub mod fuzzing;
mod json;
pub mod keys;
mod links;
mod plan;
pub mod routing;
pub mod senders;
pub mod server;
mod smpp;
mod templates;
pub mod users;
pub mod views;
pub mod webhooks;

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use smsgate_connectors::sim::SimNetwork;
use smsgate_core::access::Scope;
use smsgate_core::admission::Request;
use smsgate_core::consent::Category;
use smsgate_core::{Direction, MessageId, Status, Timestamp};
use smsgate_engine::Engine;
use smsgate_engine::ingress::Prepared;
pub use smsgate_services::keys::{generate_key, hash_key, key_prefix};
use smsgate_services::{Admin, Messages, Submitted};
use smsgate_store::{Account, ListFilter};

pub use error::ApiError;
use json::{JsonBody, MAX_BATCH_BODY, message_view, parse_time, time_json};
pub use keys::KeyCache;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use views::{
    AccountList, AccountView, BatchView, ErrorView, HandsetMessageView, HealthView, InboxView, KeyInfoView, KeyList,
    KeyView, ListView, MessageView, ReplyAcceptedView,
};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Messages: sending, canceling, reading; shared with every other way in.
    pub messages: Messages,
    /// Accounts, keys, routing, credentials and webhook settings.
    pub admin: Admin,
    /// Contacts, lists, segments, consent and compliance settings.
    pub contacts: smsgate_services::Contacts,
    /// Message templates.
    pub templates: smsgate_services::Templates,
    /// Campaigns.
    pub campaigns: smsgate_services::Campaigns,
    /// Automations and the events that trigger them.
    pub automations: smsgate_services::Automations,
    /// Two-way threads with contacts.
    pub conversations: smsgate_services::Conversations,
    /// Numbers over time, from the rollups.
    pub analytics: smsgate_services::Analytics,
    /// Short links.
    pub links: smsgate_services::links::Links,
    /// The engine, for what only it knows (the connectors in force, their health).
    pub engine: Engine,
    /// The simulated network, when it is the connector.
    pub sim: Option<Arc<SimNetwork>>,
    /// Renders the engine's counters and histograms, when a recorder is installed.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The accounts of recently used API keys.
    pub keys: KeyCache,
    /// When set, `/metrics` answers only `Authorization: Bearer <this>`.
    pub metrics_token: Option<Arc<str>>,
    /// Dashboard users and their sessions.
    pub users: smsgate_services::Users,
}

/// The document's frame; the paths come from the handlers' `#[utoipa::path]`.
#[derive(OpenApi)]
#[openapi(info(
    title = "smsgate",
    description = "smsgate REST API v1. Every route but /healthz, /metrics, /openapi.json and /l/{code} takes \
                   `Authorization: Bearer <api key>`. Errors are {\"error\": {\"code\", \"message\"}}."
))]
struct ApiDoc;

/// The API's routes, and the OpenAPI document generated from the same handlers.
pub fn router_and_openapi(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let audit_state = state.clone();
    let (router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(metrics_text))
        .routes(routes!(send_message, list_outbound))
        .routes(routes!(send_batch))
        .routes(routes!(plan::plan_text))
        .routes(routes!(get_message, cancel_message))
        .routes(routes!(list_inbound))
        .routes(routes!(create_account, list_accounts))
        .routes(routes!(create_key, list_keys))
        .routes(routes!(revoke_key))
        .routes(routes!(handset_inbox))
        .routes(routes!(handset_reply))
        .routes(routes!(routing::create_connector, routing::list_connectors))
        .routes(routes!(routing::get_connector, routing::update_connector, routing::delete_connector))
        .routes(routes!(routing::create_route, routing::list_routes))
        .routes(routes!(routing::resolve_route))
        .routes(routes!(routing::update_account))
        .routes(routes!(webhooks::put_webhooks, webhooks::get_webhooks))
        .routes(routes!(webhooks::rotate_secret))
        .routes(routes!(webhooks::list_callbacks))
        .routes(routes!(webhooks::recent_deliveries))
        .routes(routes!(smpp::create_credential, smpp::list_credentials))
        .routes(routes!(smpp::get_credential, smpp::delete_credential))
        .routes(routes!(smpp::list_lockouts, smpp::clear_lockouts))
        .routes(routes!(audit::list_audit))
        .routes(routes!(routing::get_route, routing::update_route, routing::delete_route))
        .routes(routes!(senders::create_number, senders::list_numbers))
        .routes(routes!(senders::get_number, senders::delete_number))
        .routes(routes!(senders::create_sender_id, senders::list_sender_ids))
        .routes(routes!(senders::get_sender_id, senders::delete_sender_id))
        .routes(routes!(senders::approve_sender_id))
        .routes(routes!(senders::reject_sender_id))
        .routes(routes!(contacts::create_contact, contacts::list_contacts))
        .routes(routes!(contacts::export_contacts))
        // An import's file may be far larger than any JSON body: streamed to disk, bounded by the handler.
        .merge(
            OpenApiRouter::new()
                .routes(routes!(contacts::import_contacts))
                .layer(axum::extract::DefaultBodyLimit::max(contacts::MAX_IMPORT_BODY)),
        )
        .routes(routes!(contacts::get_contact, contacts::update_contact, contacts::delete_contact))
        .routes(routes!(contacts::contact_consent))
        .routes(routes!(contacts::export_contact))
        .routes(routes!(contacts::erase_contact))
        .routes(routes!(contacts::get_job))
        .routes(routes!(contacts::create_list, contacts::list_lists))
        .routes(routes!(contacts::get_list, contacts::delete_list))
        .routes(routes!(contacts::add_members))
        .routes(routes!(contacts::remove_member))
        .routes(routes!(contacts::create_segment, contacts::list_segments))
        .routes(routes!(contacts::get_segment, contacts::delete_segment))
        .routes(routes!(contacts::segment_contacts))
        .routes(routes!(contacts::list_opt_outs, contacts::create_opt_out))
        .routes(routes!(contacts::delete_opt_out))
        .routes(routes!(contacts::get_compliance, contacts::put_compliance))
        .routes(routes!(templates::create_template, templates::list_templates))
        .routes(routes!(templates::get_template, templates::update_template, templates::delete_template))
        .routes(routes!(templates::preview_template))
        .routes(routes!(templates::preview_body))
        .routes(routes!(campaigns::create_campaign, campaigns::list_campaigns))
        .routes(routes!(campaigns::get_campaign, campaigns::delete_campaign))
        .routes(routes!(campaigns::start_campaign))
        .routes(routes!(campaigns::pause_campaign))
        .routes(routes!(campaigns::resume_campaign))
        .routes(routes!(campaigns::cancel_campaign))
        .routes(routes!(campaigns::test_campaign))
        .routes(routes!(campaigns::campaign_runs))
        .routes(routes!(campaigns::campaign_report))
        .routes(routes!(links::get_link_settings, links::put_link_settings))
        .routes(routes!(links::follow_link))
        .routes(routes!(automations::create_automation, automations::list_automations))
        .routes(routes!(automations::get_automation, automations::delete_automation))
        .routes(routes!(automations::enable_automation))
        .routes(routes!(automations::disable_automation))
        .routes(routes!(automations::automation_runs))
        .routes(routes!(automations::post_event))
        .routes(routes!(conversations::list_conversations, conversations::start_conversation))
        .routes(routes!(conversations::get_conversation))
        .routes(routes!(conversations::conversation_messages, conversations::reply))
        .routes(routes!(conversations::mark_read))
        .routes(routes!(analytics::get_analytics))
        .routes(routes!(users::create_user, users::list_users))
        .routes(routes!(users::get_user, users::update_user, users::delete_user))
        .routes(routes!(users::sign_in, users::get_session, users::sign_out))
        .routes(routes!(users::change_password))
        .with_state(state)
        .split_for_parts();
    let document = Arc::new(api.to_pretty_json().unwrap_or_else(|_| "{}".into()));
    let router = router
        .route(
            "/openapi.json",
            get(move || {
                let document = document.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], (*document).clone()) }
            }),
        )
        .route("/", get(dashboard::index))
        .route("/assets/{*path}", get(dashboard::asset))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(axum::middleware::from_fn_with_state(audit_state, audit::record_changes))
        .layer(axum::middleware::from_fn(time_request));
    (router, api)
}

/// Metric names the API reports.
pub mod metric {
    /// Seconds from a request's arrival to its answer, by method, route (its path pattern) and status class.
    pub const HTTP_DURATION: &str = "smsgate_http_request_duration_seconds";
}

/// Records how long the server took to answer, so that its own latency can be told from a client's.
async fn time_request(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let started = std::time::Instant::now();
    let method = request.method().as_str().to_string();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    let class = match response.status().as_u16() {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::histogram!(metric::HTTP_DURATION, "method" => method, "route" => route, "status" => class)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The API's routes.
pub fn router(state: AppState) -> Router {
    router_and_openapi(state).0
}

/// The account behind the request's API key, which has the scope the route asks for ([`scope_of`]).
#[derive(Debug, Clone)]
pub struct Caller(pub Account);

/// The id of the request's API key (after [`Caller`] or [`CallerKey`]), for routes that keep it as evidence.
#[derive(Debug, Clone)]
pub struct KeyId(pub String);

/// The caller and its key's scopes, for the routes that act on keys.
#[derive(Debug, Clone)]
pub struct CallerKey(pub Account, pub smsgate_core::access::Scopes);

/// Who a request is from, beyond its account (in the request's extensions after [`Caller`] or [`CallerKey`]): an
/// API key, or a dashboard user signed in with the session cookie.
#[derive(Debug, Clone)]
pub enum Principal {
    Key,
    User { signed_in: Box<smsgate_store::SignedIn>, token: String },
}

/// Routes that change or reveal the account's settings (API keys, webhooks and their secret, SMPP credentials,
/// users; changing senders and account settings): for dashboard users, `admin` and `owner` only. API keys are
/// judged by their scopes alone.
pub fn is_settings_route(method: &axum::http::Method, route: &str) -> bool {
    let any = ["/v1/accounts", "/v1/webhooks", "/v1/smpp", "/v1/users"];
    let changes = ["/v1/settings", "/v1/numbers", "/v1/sender-ids"];
    any.iter().any(|p| route.starts_with(p))
        || (method != axum::http::Method::GET && changes.iter().any(|p| route.starts_with(p)))
}

/// The scope a route asks of the key: `send` to send or cancel, `read` for any other GET, `manage` to change the
/// account's settings, and `admin` for the operator's routes (asked only of the admin account's keys: other
/// accounts are refused by the route itself, 403 `forbidden`).
pub fn scope_of(method: &axum::http::Method, route: &str) -> Scope {
    use axum::http::Method;
    let operator = ["/v1/accounts", "/v1/connectors", "/v1/routes", "/v1/sim/", "/v1/audit", "/v1/smpp/lockouts"];
    let is_keys = route.starts_with("/v1/accounts/{id}/keys");
    if !is_keys && operator.iter().any(|p| route.starts_with(p))
        || (route.starts_with("/v1/numbers") && method != Method::GET)
        || route.ends_with("/approve")
        || route.ends_with("/reject")
    {
        return Scope::Admin;
    }
    match (method, route) {
        (
            &Method::POST,
            "/v1/messages"
            | "/v1/messages/batch"
            | "/v1/events"
            | "/v1/conversations"
            | "/v1/conversations/{id}/messages",
        )
        | (&Method::DELETE, "/v1/messages/{id}") => Scope::Send,
        (
            &Method::POST,
            "/v1/conversations/{id}/read"
            | "/v1/messages/plan"
            | "/v1/session/password"
            | "/v1/templates/preview"
            | "/v1/templates/{id}/preview",
        ) => Scope::Read,
        _ if is_keys => Scope::Manage,
        (&Method::GET, _) => Scope::Read,
        _ => Scope::Manage,
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        CallerKey::from_request_parts(parts, state).await.map(|CallerKey(account, _)| Caller(account))
    }
}

impl FromRequestParts<AppState> for CallerKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let (account, scopes, key_id) = authenticate(parts, state).await?;
        if let Some(slot) = parts.extensions.get::<audit::ActorSlot>() {
            slot.fill(account.id, key_id.clone());
        }
        parts.extensions.insert(KeyId(key_id));
        if let Some(rate) = account.requests_per_second
            && let Some(hash) = parts.extensions.get::<KeyHash>()
            && let Err(wait) = state.keys.take_request(&hash.0, rate)
        {
            return Err(ApiError::rate_limited("this key's requests a second", wait));
        }
        let route = parts.extensions.get::<axum::extract::MatchedPath>().map(|p| p.as_str().to_string());
        let needed = scope_of(&parts.method, route.as_deref().unwrap_or(""));
        if let Some(Principal::User { signed_in, .. }) = parts.extensions.get::<Principal>()
            && signed_in.user.role < smsgate_core::access::Role::Admin
            && is_settings_route(&parts.method, route.as_deref().unwrap_or(""))
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("the {} role cannot see or change the account's settings", signed_in.user.role.as_str()),
            ));
        }
        let applies = needed != Scope::Admin || account.is_admin;
        if applies && !scopes.contains(needed) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!("this key lacks the {} scope this route needs", needed.as_str()),
            ));
        }
        Ok(CallerKey(account, scopes))
    }
}

/// The keyed hash of the request's key, once it is known.
#[derive(Debug, Clone)]
struct KeyHash(String);

/// The account and scopes of the request's key, from this node's cache or the store.
async fn authenticate(parts: &mut Parts, state: &AppState) -> Result<keys::KeyHolder, ApiError> {
    {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let Some(header) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
            return match users::session_token(&parts.headers) {
                Some(token) => signed_in(parts, state, token).await,
                None => Err(unauthorized("missing Authorization: Bearer <api key>")),
            };
        };
        parts.extensions.insert(Principal::Key);
        let key = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| unauthorized("Authorization must be Bearer <api key>"))?;
        let hash = state.admin.key_hash(key);
        parts.extensions.insert(KeyHash(hash.clone()));
        if let Some(found) = state.keys.get(&hash) {
            return Ok(found);
        }
        match state.admin.authenticate(key).await {
            Ok(Some(a)) => {
                let found = (a.account.clone(), a.scopes(), a.key.id.clone());
                state.keys.put(&hash, found.clone());
                Ok(found)
            }
            Ok(None) => Err(unauthorized("unknown or revoked API key")),
            Err(e) => Err(ApiError::internal(e)),
        }
    }
}

/// The account and scopes of a dashboard user's session: the scopes of their role. A request that changes
/// anything must carry the session's CSRF token and come from no other site.
async fn signed_in(parts: &mut Parts, state: &AppState, token: String) -> Result<keys::KeyHolder, ApiError> {
    let Some(signed_in) = state.users.session(&token).await? else {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "your session has ended; sign in again"));
    };
    let safe = matches!(parts.method, axum::http::Method::GET | axum::http::Method::HEAD);
    if !safe {
        let given = parts.headers.get(users::CSRF_HEADER).and_then(|h| h.to_str().ok()).unwrap_or("");
        if users::cross_site(&parts.headers) || !users::same_secret(given, &signed_in.session.csrf_token) {
            return Err(users::csrf_failed());
        }
    }
    let scopes = signed_in.user.role.scopes(signed_in.account.is_admin);
    let holder = (signed_in.account.clone(), scopes, format!("user:{}", signed_in.user.id));
    parts.extensions.insert(Principal::User { signed_in: Box::new(signed_in), token });
    Ok(holder)
}

/// Whether the server answers.
#[utoipa::path(get, path = "/healthz", responses((status = OK, body = HealthView)))]
async fn healthz() -> Json<HealthView> {
    Json(HealthView { status: "ok".into() })
}

/// `GET /metrics`, Prometheus text: the messages still on their way by status and the queue depth, read from the
/// store at scrape time (so they are right for every node sharing the database); then this node's counters and
/// histograms, among them every status change it recorded (`smsgate_status_changes_total`).
///
/// With a `metrics_token` set, only `Authorization: Bearer <token>` is answered (401 otherwise).
#[utoipa::path(get, path = "/metrics", responses((status = OK, description = "Prometheus text format", content_type = "text/plain"),
    (status = UNAUTHORIZED, body = ErrorView)))]
async fn metrics_text(State(state): State<AppState>, headers: HeaderMap) -> Result<impl IntoResponse, ApiError> {
    if let Some(token) = &state.metrics_token {
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or("");
        if !users::same_secret(given, token) {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "/metrics needs the metrics token"));
        }
    }
    let counts = state.messages.pending().await?;
    let mut out = String::from(
        "# HELP smsgate_messages Messages on their way (not yet final), by status, across all nodes.\n\
         # TYPE smsgate_messages gauge\n",
    );
    for status in [Status::Scheduled, Status::Queued, Status::Sending, Status::Sent] {
        let n = counts.iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| *n);
        out.push_str(&format!("smsgate_messages{{status=\"{status}\"}} {n}\n"));
    }
    let depth: i64 = counts.iter().filter(|(s, _)| matches!(s, Status::Queued | Status::Sending)).map(|(_, n)| n).sum();
    out.push_str("# HELP smsgate_queue_depth Messages queued or being sent.\n# TYPE smsgate_queue_depth gauge\n");
    out.push_str(&format!("smsgate_queue_depth {depth}\n"));
    let outbox = state.admin.pending_callbacks().await?;
    metrics::gauge!(webhooks::metric::OUTBOX).set(outbox as f64);
    let now = std::time::Instant::now();
    for live in state.engine.registry().connectors() {
        let (name, r) = (live.record.name.clone(), &live.runtime);
        let in_flight = r.counters.in_flight.load(std::sync::atomic::Ordering::Relaxed);
        metrics::gauge!(smsgate_engine::metric::CONNECTOR_IN_FLIGHT, "connector" => name.clone()).set(in_flight as f64);
        let up = if r.health(now).up { 1.0 } else { 0.0 };
        metrics::gauge!(smsgate_engine::metric::CONNECTOR_UP, "connector" => name).set(up);
    }
    if let Some(handle) = &state.metrics {
        out.push_str(&handle.render());
    }
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}

/// The body of `POST /v1/messages`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SendBody {
    /// The destination: E.164, or a national number in the server's default region.
    to: String,
    /// Alphanumeric (up to 11 characters), a short code (3 to 8 digits) or an international number.
    from: String,
    /// The text.
    body: String,
    /// When to send it, RFC 3339; absent or past: now.
    send_at: Option<String>,
    /// Seconds it may wait before it expires.
    validity: Option<i64>,
    /// Where status webhooks go (http or https).
    callback_url: Option<String>,
    /// Which status changes call back (to `callback_url`, else the account's status URL): one or more of
    /// `sending`, `sent`, `delivered`, `undelivered`, `failed`, `expired`, `canceled`; absent: every one.
    callback_statuses: Option<Vec<String>>,
    /// Your own reference, kept with the message.
    reference: Option<String>,
    /// `transactional` (the default) or `marketing`: marketing waits for the recipient's allowed hours and never
    /// goes to a number that opted out.
    category: Option<String>,
}

const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Send a message. It is committed to disk before the answer; an `Idempotency-Key` header makes retries safe.
#[utoipa::path(post, path = "/v1/messages", request_body = SendBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeats with the same key and body return the first message")),
    responses(
        (status = CREATED, body = MessageView),
        (status = BAD_REQUEST, body = ErrorView), (status = UNAUTHORIZED, body = ErrorView),
        (status = CONFLICT, body = ErrorView), (status = PAYLOAD_TOO_LARGE, body = ErrorView),
        (status = UNSUPPORTED_MEDIA_TYPE, body = ErrorView), (status = UNPROCESSABLE_ENTITY, body = ErrorView),
    ))]
async fn send_message(
    State(state): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
    JsonBody { value: body, raw }: JsonBody<SendBody>,
) -> Result<impl IntoResponse, ApiError> {
    let idempotency = idempotency_of(&headers, &raw)?;
    let request = request_of(body)?;
    let submitted = state.messages.submit(caller.id, &request, idempotency).await?;
    let (Submitted::New(message) | Submitted::Repeated(message)) = submitted;
    Ok((StatusCode::CREATED, Json(message_view(&message, None))))
}

/// The `Idempotency-Key` header, if any, with a hash of the request's body.
pub(crate) fn idempotency_of(headers: &HeaderMap, raw: &[u8]) -> Result<Option<(String, String)>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else { return Ok(None) };
    let key = v.to_str().ok().filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY).ok_or_else(|| {
        ApiError::invalid("invalid_idempotency_key", "Idempotency-Key must be 1 to 255 visible characters")
    })?;
    Ok(Some((key.to_string(), hex::encode(Sha256::digest(raw)))))
}

/// The admission request a body makes.
fn request_of(body: SendBody) -> Result<Request, ApiError> {
    let send_at = body.send_at.as_deref().map(|s| parse_time("send_at", s)).transpose()?;
    let category = match body.category.as_deref() {
        None => Category::default(),
        Some(c) => Category::requested(c).ok_or_else(|| {
            ApiError::invalid("invalid_category", "category must be \"transactional\" or \"marketing\"")
        })?,
    };
    Ok(Request {
        to: body.to,
        from: body.from,
        body: body.body,
        send_at,
        validity_secs: body.validity,
        callback_url: body.callback_url,
        callback_statuses: body.callback_statuses,
        reference: body.reference,
        category,
    })
}

/// Admits one body for an account and builds the message to store.
async fn prepare(
    state: &AppState,
    account: smsgate_core::AccountId,
    item: Value,
    now: Timestamp,
) -> Result<Prepared, ApiError> {
    let body =
        serde_json::from_value::<SendBody>(item).map_err(|e| ApiError::invalid("invalid_field", e.to_string()))?;
    Ok(state.messages.prepare(account, &request_of(body)?, now).await?)
}

/// The most messages one batch may hold.
pub const MAX_BATCH: usize = 10_000;

/// The body of `POST /v1/messages/batch`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    /// 1 to 10,000 messages, each as for `POST /v1/messages`.
    #[schema(value_type = Vec<SendBody>)]
    messages: Vec<Value>,
}

/// `POST /v1/messages/batch`: every item admitted on its own; the admitted ones stored in one transaction; one
/// result per item, in order: the message, or `{"error": {...}}`.
#[utoipa::path(post, path = "/v1/messages/batch", request_body = BatchBody,
    responses((status = OK, body = BatchView), (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
async fn send_batch(
    State(state): State<AppState>,
    Caller(caller): Caller,
    JsonBody { value: body, .. }: JsonBody<BatchBody, MAX_BATCH_BODY>,
) -> Result<Json<BatchView>, ApiError> {
    if body.messages.is_empty() || body.messages.len() > MAX_BATCH {
        return Err(ApiError::invalid("invalid_batch", format!("messages must hold 1 to {MAX_BATCH} items")));
    }
    let now = state.engine.now();
    let mut results: Vec<Result<usize, ApiError>> = Vec::with_capacity(body.messages.len());
    let mut to_store = Vec::new();
    for item in body.messages {
        let prepared = prepare(&state, caller.id, item, now).await;
        results.push(prepared.map(|p| {
            to_store.push(p);
            to_store.len() - 1
        }));
    }
    let stored = state.messages.submit_many(to_store, now).await?;
    let data: Vec<Value> = results
        .into_iter()
        .map(|r| match r {
            Ok(i) => serde_json::to_value(message_view(&stored[i], None)).unwrap_or(Value::Null),
            Err(e) => json!({"error": {"code": e.code, "message": e.message}}),
        })
        .collect();
    Ok(Json(BatchView { data }))
}

fn parse_id(id: &str) -> Result<MessageId, ApiError> {
    MessageId::parse(id).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such message"))
}

/// A message with its journey.
#[utoipa::path(get, path = "/v1/messages/{id}", params(("id" = String, Path)),
    responses((status = OK, body = MessageView), (status = NOT_FOUND, body = ErrorView)))]
async fn get_message(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<MessageView>, ApiError> {
    let id = parse_id(&id)?;
    let (message, events) = state.messages.journey(caller.id, id).await?;
    Ok(Json(message_view(&message, Some(&events))))
}

/// Cancel a scheduled or queued message.
#[utoipa::path(delete, path = "/v1/messages/{id}", params(("id" = String, Path)),
    responses((status = OK, body = MessageView), (status = NOT_FOUND, body = ErrorView), (status = CONFLICT, body = ErrorView)))]
async fn cancel_message(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<MessageView>, ApiError> {
    let id = parse_id(&id)?;
    state.messages.cancel(caller.id, id, "canceled by the sender").await?;
    let (message, events) = state.messages.journey(caller.id, id).await?;
    Ok(Json(message_view(&message, Some(&events))))
}

/// Query parameters of the message lists.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only this status.
    status: Option<String>,
    /// Only to this number (E.164; `+` as `%2B`).
    to: Option<String>,
    /// Only from this sender.
    from: Option<String>,
    /// Created at or after, RFC 3339.
    since: Option<String>,
    /// Created before, RFC 3339.
    until: Option<String>,
    /// 1 to 1000; default 50.
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Sent messages, newest first.
#[utoipa::path(get, path = "/v1/messages", params(ListQuery),
    responses((status = OK, body = ListView), (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
async fn list_outbound(
    state: State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ListView>, ApiError> {
    list(state, caller, query, Direction::Outbound).await
}

/// Received messages, newest first.
#[utoipa::path(get, path = "/v1/inbound", params(ListQuery),
    responses((status = OK, body = ListView), (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
async fn list_inbound(
    state: State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ListView>, ApiError> {
    list(state, caller, query, Direction::Inbound).await
}

const MAX_LIMIT: u32 = 1000;

async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
    direction: Direction,
) -> Result<Json<ListView>, ApiError> {
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
    let page = state.messages.list(caller.id, &filter, cursor, limit).await?;
    let next = (page.len() == limit as usize).then(|| page.last().map(|m| m.id.to_string())).flatten();
    let data = page.iter().map(|m| message_view(m, None)).collect();
    Ok(Json(ListView { data, next_cursor: next }))
}

pub(crate) fn require_admin(caller: &Account) -> Result<(), ApiError> {
    if caller.is_admin {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only the admin key manages accounts, keys, connectors and routes",
        ))
    }
}

/// The body of `POST /v1/accounts`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AccountBody {
    name: String,
    /// `owned` (the default): it sends only from numbers and sender IDs it owns; `any`: from any sender.
    sender_policy: Option<String>,
}

fn time_string(t: Timestamp) -> String {
    time_json(t).as_str().map(String::from).unwrap_or_default()
}

fn account_view(a: &Account) -> AccountView {
    AccountView {
        id: a.id.to_string(),
        name: a.name.clone(),
        is_admin: a.is_admin,
        created_at: time_string(a.created_at),
        sender_policy: a.sender_policy.as_str().into(),
        requests_per_second: a.requests_per_second,
        messages_per_second: a.messages_per_second,
    }
}

/// A sender policy by its name: `owned` or `any`.
pub(crate) fn sender_policy(name: &str) -> Result<smsgate_core::senders::SenderPolicy, ApiError> {
    smsgate_core::senders::SenderPolicy::parse(name)
        .ok_or_else(|| ApiError::invalid("invalid_sender_policy", "sender_policy must be \"owned\" or \"any\""))
}

/// Create an account (a tenant). Admin key only.
#[utoipa::path(post, path = "/v1/accounts", request_body = AccountBody,
    responses((status = CREATED, body = AccountView), (status = FORBIDDEN, body = ErrorView)))]
async fn create_account(
    State(state): State<AppState>,
    Caller(caller): Caller,
    JsonBody { value: body, .. }: JsonBody<AccountBody>,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&caller)?;
    let policy = body.sender_policy.as_deref().map(sender_policy).transpose()?;
    let mut account = state.admin.create_account(&body.name).await?;
    if let Some(policy) = policy {
        account = state.admin.set_sender_policy(&caller, account.id, policy).await?;
    }
    Ok((StatusCode::CREATED, Json(account_view(&account))))
}

/// Every account, oldest first. Admin key (or an operator's session) only.
#[utoipa::path(get, path = "/v1/accounts",
    responses((status = OK, body = AccountList), (status = FORBIDDEN, body = ErrorView)))]
async fn list_accounts(State(state): State<AppState>, Caller(caller): Caller) -> Result<Json<AccountList>, ApiError> {
    require_admin(&caller)?;
    let accounts = state.admin.accounts().await?;
    Ok(Json(AccountList { data: accounts.iter().map(account_view).collect() }))
}

/// The body of `POST /v1/accounts/{id}/keys` (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    /// What it is for, to recognise it in a list.
    name: Option<String>,
    /// Any of `send`, `read`, `manage` (and `admin`, for the admin account's keys); absent: all of them. At most
    /// the calling key's own.
    scopes: Option<Vec<String>>,
}

fn account_path(id: &str) -> Result<smsgate_core::AccountId, ApiError> {
    smsgate_core::AccountId::parse(id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such account"))
}

fn key_view(k: &smsgate_store::ApiKey, is_admin: bool) -> KeyInfoView {
    KeyInfoView {
        id: k.id.clone(),
        account_id: k.account_id.to_string(),
        prefix: k.prefix.clone(),
        name: k.name.clone(),
        scopes: k.scopes_for(is_admin).names().into_iter().map(String::from).collect(),
        created_at: time_string(k.created_at),
        last_used_at: k.last_used_at.map(time_string),
        revoked_at: k.revoked_at.map(time_string),
    }
}

/// Create an API key for an account; the key is shown this once. The admin key, for any account; an account's
/// key with the `manage` scope, for its own.
#[utoipa::path(post, path = "/v1/accounts/{id}/keys", params(("id" = String, Path)), request_body = Option<KeyBody>,
    responses((status = CREATED, body = KeyView), (status = FORBIDDEN, body = ErrorView), (status = NOT_FOUND, body = ErrorView),
              (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
async fn create_key(
    State(state): State<AppState>,
    CallerKey(caller, scopes): CallerKey,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let id = account_path(&id)?;
    let body: KeyBody = if body.iter().all(u8::is_ascii_whitespace) {
        KeyBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid("invalid_field", e.to_string()))?
    };
    let wanted = body
        .scopes
        .as_deref()
        .map(smsgate_core::access::Scopes::parse)
        .transpose()
        .map_err(|e| ApiError::invalid("invalid_scopes", e.to_string()))?;
    let spec = smsgate_services::KeySpec { name: body.name, scopes: wanted };
    let smsgate_services::NewKey { key, record } = state.admin.create_key(&caller, scopes, id, spec).await?;
    let owner_is_admin = caller.is_admin && caller.id == id;
    let info = key_view(&record, owner_is_admin);
    Ok((
        StatusCode::CREATED,
        Json(KeyView {
            id: record.id,
            account_id: record.account_id.to_string(),
            key,
            prefix: record.prefix,
            name: info.name,
            scopes: info.scopes,
            created_at: time_string(record.created_at),
        }),
    ))
}

/// An account's keys, revoked ones too; never the keys themselves.
#[utoipa::path(get, path = "/v1/accounts/{id}/keys", params(("id" = String, Path)),
    responses((status = OK, body = KeyList), (status = FORBIDDEN, body = ErrorView), (status = NOT_FOUND, body = ErrorView)))]
async fn list_keys(
    State(state): State<AppState>,
    CallerKey(caller, scopes): CallerKey,
    Path(id): Path<String>,
) -> Result<Json<KeyList>, ApiError> {
    let id = account_path(&id)?;
    let keys = state.admin.keys(&caller, scopes, id).await?;
    let is_admin = state.admin.account(id).await?.is_admin;
    Ok(Json(KeyList { data: keys.iter().map(|k| key_view(k, is_admin)).collect() }))
}

/// Revoke a key: refused from now on by this node, within ten seconds by the others.
#[utoipa::path(delete, path = "/v1/accounts/{id}/keys/{key_id}", params(("id" = String, Path), ("key_id" = String, Path)),
    responses((status = OK, body = KeyInfoView), (status = FORBIDDEN, body = ErrorView), (status = NOT_FOUND, body = ErrorView)))]
async fn revoke_key(
    State(state): State<AppState>,
    CallerKey(caller, scopes): CallerKey,
    Path((id, key_id)): Path<(String, String)>,
) -> Result<Json<KeyInfoView>, ApiError> {
    let id = account_path(&id)?;
    let revoked = state.admin.revoke_key(&caller, scopes, id, &key_id).await?;
    state.keys.clear();
    let is_admin = state.admin.account(id).await?.is_admin;
    Ok(Json(key_view(&revoked, is_admin)))
}

/// The simulated network, for the operator only (a handset's inbox holds every tenant's texts, and a reply is an
/// inbound message in whichever account owns the number it is sent to), and only while a connector of kind `sim`
/// is in force.
fn sim<'a>(state: &'a AppState, caller: &Account) -> Result<&'a Arc<SimNetwork>, ApiError> {
    if !caller.is_admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only the admin key drives the simulated network's handsets",
        ));
    }
    let disabled =
        || ApiError::new(StatusCode::NOT_FOUND, "sim_disabled", "the simulated network is not a connector in force");
    let configured = state.engine.registry().connectors().iter().any(|c| c.record.kind == "sim");
    if !configured {
        return Err(disabled());
    }
    state.sim.as_ref().ok_or_else(disabled)
}

/// What a virtual handset of the simulated network received. Admin key only.
#[utoipa::path(get, path = "/v1/sim/handsets/{number}/messages", params(("number" = String, Path)),
    responses((status = OK, body = InboxView), (status = FORBIDDEN, body = ErrorView), (status = NOT_FOUND, body = ErrorView)))]
async fn handset_inbox(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(number): Path<String>,
) -> Result<Json<InboxView>, ApiError> {
    let data = sim(&state, &caller)?
        .inbox(&number)
        .iter()
        .map(|m| HandsetMessageView {
            connector: m.connector.clone(),
            from: m.from.clone(),
            body: m.body.clone(),
            carrier_id: m.carrier_id.clone(),
            received_at: time_string(m.at),
        })
        .collect();
    Ok(Json(InboxView { number, data }))
}

/// The body of a handset's reply.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReplyBody {
    /// The sender or number it replies to.
    to: String,
    body: String,
}

/// A virtual handset texts back; the text arrives as an inbound message. Admin key only.
#[utoipa::path(post, path = "/v1/sim/handsets/{number}/reply", params(("number" = String, Path)), request_body = ReplyBody,
    responses((status = ACCEPTED, body = ReplyAcceptedView), (status = FORBIDDEN, body = ErrorView), (status = NOT_FOUND, body = ErrorView), (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
async fn handset_reply(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(number): Path<String>,
    JsonBody { value: body, .. }: JsonBody<ReplyBody>,
) -> Result<impl IntoResponse, ApiError> {
    let sim = sim(&state, &caller)?;
    if body.body.is_empty() {
        return Err(ApiError::invalid("empty_body", "body is empty"));
    }
    if body.to.trim().is_empty() {
        return Err(ApiError::invalid("invalid_destination", "to is empty"));
    }
    sim.reply(&number, &body.to, &body.body)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stopping", e.to_string()))?;
    Ok((StatusCode::ACCEPTED, Json(ReplyAcceptedView { status: "accepted".into(), from: number, to: body.to })))
}
