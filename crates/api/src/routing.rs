//! `/v1/connectors` and `/v1/routes`: the admin's API for where messages go. Every change is stored first, then
//! put in force on this node at once (other nodes read it within seconds); `GET /v1/routes/resolve` explains the
//! choice for a given message.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use smsgate_core::AccountId;
use smsgate_core::routing::{Decision, Route};
use smsgate_services::{MatchSpec, RouteSpec, TargetSpec};
use smsgate_store::ConnectorRecord;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::json::{JsonBody, time_json};
use crate::views::ErrorView;
use crate::{AppState, Caller, require_admin};

/// A connector as the API shows it: its name, kind and settings at the top level, as they were given.
fn connector_view(state: &AppState, record: &ConnectorRecord) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), json!(record.name));
    out.insert("kind".into(), json!(record.kind));
    if let Ok(Value::Object(settings)) = serde_json::from_str::<Value>(&record.settings) {
        out.extend(settings);
    }
    // A carrier password is written, never shown.
    if out.get("password").is_some_and(|p| !p.is_null()) {
        out.insert("password".into(), json!("********"));
    }
    let live = state.engine.registry().connector(&record.name);
    let in_force = live.as_ref().is_some_and(|l| l.record.settings == record.settings);
    out.insert("in_force".into(), json!(in_force));
    if let Some(live) = live {
        let link = live.connector.link();
        if !link.is_null() {
            out.insert("link".into(), link);
        }
        let r = &live.runtime;
        let health = r.health(std::time::Instant::now());
        let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        out.insert(
            "health".into(),
            json!({"up": health.up, "consecutive_failures": health.consecutive_failures,
                   "next_probe_in_ms": health.down_for.map(|d| d.as_millis() as u64)}),
        );
        let c = &r.counters;
        out.insert(
            "counters".into(),
            json!({"submitted": n(&c.submitted), "accepted": n(&c.accepted), "rejected": n(&c.rejected),
                   "temporary_errors": n(&c.temporary_errors), "put_back": n(&c.put_back),
                   "in_flight": n(&c.in_flight)}),
        );
    }
    out.insert("created_at".into(), time_json(record.created_at));
    out.insert("updated_at".into(), time_json(record.updated_at));
    Value::Object(out)
}

/// Create a connector: `{"name", "kind": "sim", ...its kind's settings, "throughput"?, "window"?}`. Admin only.
#[utoipa::path(post, path = "/v1/connectors", request_body = Object,
    responses((status = CREATED, body = Object), (status = CONFLICT, body = ErrorView),
        (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn create_connector(
    State(state): State<AppState>,
    Caller(caller): Caller,
    JsonBody { value, .. }: JsonBody<Map<String, Value>>,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&caller)?;
    let record = state.admin.create_connector(value).await?;
    Ok((StatusCode::CREATED, Json(connector_view(&state, &record))))
}

/// Every connector.
#[utoipa::path(get, path = "/v1/connectors", responses((status = OK, body = Object)))]
pub(crate) async fn list_connectors(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&caller)?;
    let all = state.admin.connectors().await?;
    Ok(Json(json!({"data": all.iter().map(|c| connector_view(&state, c)).collect::<Vec<_>>()})))
}

/// One connector.
#[utoipa::path(get, path = "/v1/connectors/{name}", params(("name" = String, Path)),
    responses((status = OK, body = Object), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn get_connector(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&caller)?;
    let record = state.admin.connector(&name).await?;
    Ok(Json(connector_view(&state, &record)))
}

/// Change a connector's settings: the fields given replace the stored ones, `null` removes one (back to its
/// default). `name` and `kind` stay. Admin only.
#[utoipa::path(patch, path = "/v1/connectors/{name}", params(("name" = String, Path)), request_body = Object,
    responses((status = OK, body = Object), (status = NOT_FOUND, body = ErrorView),
        (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn update_connector(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    JsonBody { value, .. }: JsonBody<Map<String, Value>>,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&caller)?;
    let record = state.admin.update_connector(&name, value).await?;
    Ok(Json(connector_view(&state, &record)))
}

/// Delete a connector; refused while a route names it. Admin only.
#[utoipa::path(delete, path = "/v1/connectors/{name}", params(("name" = String, Path)),
    responses((status = NO_CONTENT), (status = NOT_FOUND, body = ErrorView), (status = CONFLICT, body = ErrorView)))]
pub(crate) async fn delete_connector(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&caller)?;
    state.admin.delete_connector(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A route's connector as requests give it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TargetBody {
    name: String,
    /// Lower is preferred (default 0).
    priority: Option<u32>,
    /// Share of traffic among equals (default 1).
    weight: Option<u32>,
    /// Price of one segment, in the currency's units (0.0075).
    price: Option<f64>,
}

/// What a route matches, as requests give it.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MatchBody {
    prefix: Option<String>,
    country: Option<String>,
    sender: Option<String>,
    account: Option<String>,
}

/// `POST /v1/routes`, and `PATCH` (where every field is optional and `name` may be left out): the OpenAPI shape of
/// [`RouteSpec`], which the admin service checks.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteBody {
    name: Option<String>,
    #[serde(rename = "match")]
    matches: Option<MatchBody>,
    connectors: Option<Vec<TargetBody>>,
    /// Where it is tried: lower first (default: after every route there is); `default` is always last.
    position: Option<i64>,
}

fn route_view(r: &Route) -> Value {
    let targets: Vec<Value> = r
        .connectors
        .iter()
        .map(|t| {
            json!({"name": t.name, "priority": t.priority, "weight": t.weight,
                   "price": t.price_micros.map(|p| p as f64 / 1_000_000.0)})
        })
        .collect();
    let m = &r.matches;
    let mut matches = Map::new();
    for (k, v) in [("prefix", &m.prefix), ("country", &m.country), ("sender", &m.sender)] {
        if let Some(v) = v {
            matches.insert(k.into(), json!(v));
        }
    }
    if let Some(a) = m.account {
        matches.insert("account".into(), json!(a.to_string()));
    }
    json!({"name": r.name, "position": r.position, "match": matches, "connectors": targets})
}

/// Create a route: `{"name", "match": {"prefix"?, "country"?, "sender"?, "account"?}, "connectors": [{"name",
/// "priority"?, "weight"?, "price"?}], "position"?}`. Admin only.
#[utoipa::path(post, path = "/v1/routes", request_body = RouteBody,
    responses((status = CREATED, body = Object), (status = CONFLICT, body = ErrorView),
        (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn create_route(
    State(state): State<AppState>,
    Caller(caller): Caller,
    JsonBody { value: body, .. }: JsonBody<RouteBody>,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&caller)?;
    let route = state.admin.create_route(body.into()).await?;
    Ok((StatusCode::CREATED, Json(route_view(&route))))
}

/// Every route, in the order they are tried.
#[utoipa::path(get, path = "/v1/routes", responses((status = OK, body = Object)))]
pub(crate) async fn list_routes(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&caller)?;
    let routes = state.admin.routes().await?;
    Ok(Json(json!({"data": routes.iter().map(route_view).collect::<Vec<_>>()})))
}

/// One route.
#[utoipa::path(get, path = "/v1/routes/{name}", params(("name" = String, Path)),
    responses((status = OK, body = Object), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn get_route(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&caller)?;
    Ok(Json(route_view(&state.admin.route(&name).await?)))
}

/// Change a route: `match`, `connectors` and `position` each replace the stored one when given. Admin only.
#[utoipa::path(patch, path = "/v1/routes/{name}", params(("name" = String, Path)), request_body = RouteBody,
    responses((status = OK, body = Object), (status = NOT_FOUND, body = ErrorView),
        (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn update_route(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    JsonBody { value: body, .. }: JsonBody<RouteBody>,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&caller)?;
    let route = state.admin.update_route(&name, body.into()).await?;
    Ok(Json(route_view(&route)))
}

/// Delete a route (the `default` route too: what no route matches then fails with `no_route`). Admin only.
#[utoipa::path(delete, path = "/v1/routes/{name}", params(("name" = String, Path)),
    responses((status = NO_CONTENT), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn delete_route(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&caller)?;
    state.admin.delete_route(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The message `GET /v1/routes/resolve` asks about.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResolveQuery {
    /// The destination, as a message would give it.
    to: String,
    /// The sender (default: `smsgate`).
    from: Option<String>,
    /// The account sending (default: the caller's).
    account: Option<String>,
}

/// Which route and connector a message would take now, and why. Admin only.
#[utoipa::path(get, path = "/v1/routes/resolve", params(ResolveQuery),
    responses((status = OK, body = Object), (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn resolve_route(
    State(state): State<AppState>,
    Caller(caller): Caller,
    query: Result<Query<ResolveQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&caller)?;
    let Query(q) = query.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    let policy = state.messages.policy();
    let to = smsgate_core::admission::normalize_destination(&q.to, policy.default_region, policy.strict_numbers)
        .map_err(|r| ApiError::invalid(r.code.as_str(), r.message))?;
    let account = match q.account {
        Some(a) => AccountId::parse(&a)
            .ok_or_else(|| ApiError::invalid("invalid_field", format!("account {a:?} is not an account id")))?,
        None => caller.id,
    };
    let from = q.from.unwrap_or_else(|| "smsgate".into());
    let r = state.admin.resolve(&to, &from, account);
    let (decision, route, connector, price) = match &r.decision {
        Decision::Connector { route, connector, price_micros } => {
            ("connector", Some(route.clone()), Some(connector.clone()), price_micros.map(|p| p as f64 / 1_000_000.0))
        }
        Decision::Unavailable { route } => ("unavailable", Some(route.clone()), None, None),
        Decision::NoRoute => ("no_route", None, None, None),
    };
    Ok(Json(json!({"to": to, "from": from, "account": account.to_string(), "decision": decision,
                   "route": route, "connector": connector, "price": price, "why": r.why})))
}

/// `PATCH /v1/accounts/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccountPatch {
    /// The routes the account may use, by name; `null`: all; absent: unchanged.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>)]
    routes: Option<Option<Vec<String>>>,
    /// `owned`: it sends only from numbers and sender IDs it owns; `any`: from any sender; absent: unchanged.
    sender_policy: Option<String>,
    /// Requests a second each of its API keys may make (429 `rate_limited` past it); null: no limit.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>)]
    requests_per_second: Option<Option<u32>>,
    /// Messages a second it may send, REST and SMPP together; null: no limit.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>)]
    messages_per_second: Option<Option<u32>>,
}

/// A field that is present, even as `null` (absent stays `None` by `#[serde(default)]`).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Limit an account to named routes (`{"routes": ["uk", "backup"]}`), or lift the limit (`{"routes": null}`);
/// set its sender policy (`{"sender_policy": "owned"}`). Admin only.
#[utoipa::path(patch, path = "/v1/accounts/{id}", params(("id" = String, Path)), request_body = AccountPatch,
    responses((status = OK, body = Object), (status = NOT_FOUND, body = ErrorView),
        (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn update_account(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    JsonBody { value: body, .. }: JsonBody<AccountPatch>,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&caller)?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no account named {id:?}"));
    let account = AccountId::parse(&id).ok_or_else(not_found)?;
    let policy = body.sender_policy.as_deref().map(crate::sender_policy).transpose()?;
    let mut found = state.admin.account(account).await?;
    if let Some(routes) = &body.routes {
        found = state.admin.set_account_routes(account, routes.as_deref()).await?;
    }
    if let Some(policy) = policy {
        found = state.admin.set_sender_policy(&caller, account, policy).await?;
    }
    if body.requests_per_second.is_some() || body.messages_per_second.is_some() {
        let requests = body.requests_per_second.unwrap_or(found.requests_per_second);
        let messages = body.messages_per_second.unwrap_or(found.messages_per_second);
        found = state.admin.set_account_rates(&caller, account, requests, messages).await?;
    }
    let account = found;
    state.keys.clear();
    Ok(Json(json!({"id": account.id.to_string(), "name": account.name, "is_admin": account.is_admin,
                   "created_at": time_json(account.created_at), "routes": account.routes,
                   "sender_policy": account.sender_policy.as_str(),
                   "requests_per_second": account.requests_per_second,
                   "messages_per_second": account.messages_per_second})))
}

impl From<RouteBody> for RouteSpec {
    fn from(b: RouteBody) -> RouteSpec {
        RouteSpec {
            name: b.name,
            matches: b.matches.map(|m| MatchSpec {
                prefix: m.prefix,
                country: m.country,
                sender: m.sender,
                account: m.account,
            }),
            connectors: b.connectors.map(|c| {
                c.into_iter()
                    .map(|t| TargetSpec { name: t.name, priority: t.priority, weight: t.weight, price: t.price })
                    .collect()
            }),
            position: b.position,
        }
    }
}
