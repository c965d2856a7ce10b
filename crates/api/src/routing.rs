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
use smsgate_core::routing::{Decision, Route, RouteMatch, RouteTarget};
use smsgate_engine::Engine;
use smsgate_store::{ConnectorRecord, Store};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::json::{JsonBody, time_json};
use crate::views::ErrorView;
use crate::{AppState, Caller, require_admin};

/// The most characters of a connector's or route's name.
const MAX_NAME: usize = 64;

/// Names are what operators type and logs show: letters, digits, `-`, `_`, `.`.
fn check_name(what: &'static str, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(what, format!("name {name:?} must be 1 to {MAX_NAME} letters, digits, '-', '_' or '.'")))
    }
}

fn not_found(what: &str, name: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no {what} named {name:?}"))
}

/// Puts the stored change in force on this node now.
async fn reload(state: &AppState) -> Result<(), ApiError> {
    state.engine.reload().await.map_err(ApiError::internal)
}

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

/// A new connector from a body `{"name", "kind", ...settings}`, checked.
fn new_connector(engine: &Engine, mut settings: Map<String, Value>) -> Result<ConnectorRecord, ApiError> {
    let text = |v: Option<Value>, field: &str| match v {
        Some(Value::String(s)) => Ok(s),
        _ => Err(ApiError::invalid("invalid_connector", format!("{field} must be a string"))),
    };
    let name = text(settings.remove("name"), "name")?;
    let kind = text(settings.remove("kind"), "kind")?;
    check_name("invalid_connector", &name)?;
    connector_record(engine, &name, &kind, settings)
}

/// The settings of a connector body: everything but `name` and `kind`, checked by building the connector.
fn connector_record(
    engine: &Engine,
    name: &str,
    kind: &str,
    settings: Map<String, Value>,
) -> Result<ConnectorRecord, ApiError> {
    let now = engine.now();
    let record = ConnectorRecord {
        name: name.to_string(),
        kind: kind.to_string(),
        settings: Value::Object(settings).to_string(),
        created_at: now,
        updated_at: now,
    };
    engine.registry().check(&record).map_err(|e| ApiError::invalid("invalid_connector", e))?;
    Ok(record)
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
    let record = new_connector(&state.engine, value)?;
    let name = record.name.clone();
    if !state.store.insert_connector(&record).await.map_err(ApiError::internal)? {
        return Err(ApiError::new(StatusCode::CONFLICT, "connector_exists", format!("a connector is named {name:?}")));
    }
    reload(&state).await?;
    Ok((StatusCode::CREATED, Json(connector_view(&state, &record))))
}

/// Every connector.
#[utoipa::path(get, path = "/v1/connectors", responses((status = OK, body = Object)))]
pub(crate) async fn list_connectors(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&caller)?;
    let all = state.store.connectors().await.map_err(ApiError::internal)?;
    Ok(Json(json!({"data": all.iter().map(|c| connector_view(&state, c)).collect::<Vec<_>>()})))
}

async fn stored_connector(state: &AppState, name: &str) -> Result<ConnectorRecord, ApiError> {
    let all = state.store.connectors().await.map_err(ApiError::internal)?;
    all.into_iter().find(|c| c.name == name).ok_or_else(|| not_found("connector", name))
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
    let record = stored_connector(&state, &name).await?;
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
    let stored = stored_connector(&state, &name).await?;
    let mut settings = match serde_json::from_str::<Value>(&stored.settings) {
        Ok(Value::Object(s)) => s,
        _ => Map::new(),
    };
    for (key, v) in value {
        match key.as_str() {
            "name" | "kind" if v.as_str() == Some(if key == "name" { &stored.name } else { &stored.kind }) => {}
            "name" | "kind" => {
                return Err(ApiError::invalid("invalid_connector", format!("{key} cannot change; delete and create")));
            }
            _ if v.is_null() => {
                settings.remove(&key);
            }
            _ => {
                settings.insert(key, v);
            }
        }
    }
    let record = ConnectorRecord {
        created_at: stored.created_at,
        ..connector_record(&state.engine, &name, &stored.kind, settings)?
    };
    if !state.store.update_connector(&record).await.map_err(ApiError::internal)? {
        return Err(not_found("connector", &name));
    }
    reload(&state).await?;
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
    let routes = state.store.routes().await.map_err(ApiError::internal)?;
    let users: Vec<&str> =
        routes.iter().filter(|r| r.connectors.iter().any(|t| t.name == name)).map(|r| r.name.as_str()).collect();
    if !users.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "connector_in_use",
            format!("routes {users:?} use connector {name:?}; change them first"),
        ));
    }
    if !state.store.delete_connector(&name).await.map_err(ApiError::internal)? {
        return Err(not_found("connector", &name));
    }
    reload(&state).await?;
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

/// `POST /v1/routes`, and `PATCH` (where every field is optional and `name` may be left out).
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

fn route_match(body: MatchBody) -> Result<RouteMatch, ApiError> {
    let bad = |m: String| ApiError::invalid("invalid_route", m);
    let prefix = body.prefix.map(|p| {
        let digits = p.strip_prefix('+').unwrap_or(&p);
        if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            Err(bad(format!("match.prefix {p:?} must be digits, with or without a leading +")))
        } else {
            Ok(format!("+{digits}"))
        }
    });
    let country = body.country.map(|c| {
        if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) {
            Ok(c.to_ascii_uppercase())
        } else {
            Err(bad(format!("match.country {c:?} must be an ISO 3166 alpha-2 code such as GB")))
        }
    });
    let account = body
        .account
        .map(|a| AccountId::parse(&a).ok_or_else(|| bad(format!("match.account {a:?} is not an account id"))));
    Ok(RouteMatch {
        prefix: prefix.transpose()?,
        country: country.transpose()?,
        sender: body.sender.filter(|s| !s.is_empty()),
        account: account.transpose()?,
    })
}

async fn route_targets(store: &dyn Store, body: Vec<TargetBody>) -> Result<Vec<RouteTarget>, ApiError> {
    let known = store.connectors().await.map_err(ApiError::internal)?;
    let bad = |m: String| ApiError::invalid("invalid_route", m);
    if body.is_empty() {
        return Err(bad("connectors must name at least one connector".into()));
    }
    let mut out: Vec<RouteTarget> = Vec::with_capacity(body.len());
    for t in body {
        if !known.iter().any(|c| c.name == t.name) {
            return Err(ApiError::invalid("unknown_connector", format!("no connector named {:?}", t.name)));
        }
        if out.iter().any(|o| o.name == t.name) {
            return Err(bad(format!("connector {:?} is listed twice", t.name)));
        }
        let price_micros = match t.price {
            None => None,
            Some(p) if p.is_finite() && (0.0..=1_000_000.0).contains(&p) => Some((p * 1_000_000.0).round() as i64),
            Some(p) => return Err(bad(format!("price {p} must be a number from 0"))),
        };
        out.push(RouteTarget {
            name: t.name,
            priority: t.priority.unwrap_or(0),
            weight: t.weight.unwrap_or(1),
            price_micros,
        });
    }
    Ok(out)
}

/// A new route from its body, checked (its connectors must exist); placed after every route there is unless it
/// gives a position.
async fn new_route(store: &dyn Store, body: RouteBody) -> Result<Route, ApiError> {
    let name = body.name.ok_or_else(|| ApiError::invalid("invalid_route", "name is required"))?;
    check_name("invalid_route", &name)?;
    let connectors = route_targets(store, body.connectors.unwrap_or_default()).await?;
    let matches = route_match(body.matches.unwrap_or_default())?;
    let routes = store.routes().await.map_err(ApiError::internal)?;
    let last = routes.iter().filter(|r| r.name != smsgate_core::routing::DEFAULT_ROUTE).map(|r| r.position).max();
    let position = body.position.unwrap_or_else(|| last.map_or(0, |p| p.saturating_add(10)));
    Ok(Route { name, position, matches, connectors })
}

/// Creates the connectors and routes a config file gives (each as the API takes it) that the database does not
/// have by name yet; those it has stay as they are (they are managed over the API). Returns what it created;
/// errors name the entry and what is wrong with it.
pub async fn seed(
    store: &dyn Store,
    engine: &Engine,
    connectors: Vec<Map<String, Value>>,
    routes: Vec<Map<String, Value>>,
) -> Result<Vec<String>, String> {
    let mut created = Vec::new();
    for (i, body) in connectors.into_iter().enumerate() {
        let record = new_connector(engine, body).map_err(|e| format!("connectors[{i}]: {}", e.message))?;
        if store.insert_connector(&record).await.map_err(|e| e.to_string())? {
            created.push(format!("connector {}", record.name));
        }
    }
    for (i, body) in routes.into_iter().enumerate() {
        let body: RouteBody = serde_json::from_value(Value::Object(body)).map_err(|e| format!("routes[{i}]: {e}"))?;
        if let Some(name) = &body.name
            && store.routes().await.map_err(|e| e.to_string())?.iter().any(|r| &r.name == name)
        {
            continue;
        }
        let route = new_route(store, body).await.map_err(|e| format!("routes[{i}]: {}", e.message))?;
        if store.insert_route(&route, engine.now()).await.map_err(|e| e.to_string())? {
            created.push(format!("route {}", route.name));
        }
    }
    Ok(created)
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
    let route = new_route(state.store.as_ref(), body).await?;
    let name = route.name.clone();
    if !state.store.insert_route(&route, state.engine.now()).await.map_err(ApiError::internal)? {
        return Err(ApiError::new(StatusCode::CONFLICT, "route_exists", format!("a route is named {name:?}")));
    }
    reload(&state).await?;
    Ok((StatusCode::CREATED, Json(route_view(&route))))
}

/// Every route, in the order they are tried.
#[utoipa::path(get, path = "/v1/routes", responses((status = OK, body = Object)))]
pub(crate) async fn list_routes(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&caller)?;
    let routes = state.store.routes().await.map_err(ApiError::internal)?;
    let table = smsgate_core::routing::RoutingTable::new(routes);
    Ok(Json(json!({"data": table.routes().iter().map(route_view).collect::<Vec<_>>()})))
}

async fn stored_route(state: &AppState, name: &str) -> Result<Route, ApiError> {
    let routes = state.store.routes().await.map_err(ApiError::internal)?;
    routes.into_iter().find(|r| r.name == name).ok_or_else(|| not_found("route", name))
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
    Ok(Json(route_view(&stored_route(&state, &name).await?)))
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
    let mut route = stored_route(&state, &name).await?;
    if body.name.as_ref().is_some_and(|n| n != &name) {
        return Err(ApiError::invalid("invalid_route", "name cannot change; delete and create"));
    }
    if let Some(m) = body.matches {
        route.matches = route_match(m)?;
    }
    if let Some(c) = body.connectors {
        route.connectors = route_targets(state.store.as_ref(), c).await?;
    }
    if let Some(p) = body.position {
        route.position = p;
    }
    if !state.store.update_route(&route, state.engine.now()).await.map_err(ApiError::internal)? {
        return Err(not_found("route", &name));
    }
    reload(&state).await?;
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
    if !state.store.delete_route(&name).await.map_err(ApiError::internal)? {
        return Err(not_found("route", &name));
    }
    reload(&state).await?;
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
    let to = smsgate_core::admission::normalize_destination(
        &q.to,
        state.ingress.policy().default_region,
        state.ingress.policy().strict_numbers,
    )
    .map_err(|r| ApiError::invalid(r.code.as_str(), r.message))?;
    let account = match q.account {
        Some(a) => AccountId::parse(&a)
            .ok_or_else(|| ApiError::invalid("invalid_field", format!("account {a:?} is not an account id")))?,
        None => caller.id,
    };
    let from = q.from.unwrap_or_else(|| "smsgate".into());
    let r = state.engine.registry().resolve(&to, &from, account);
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
    /// The routes the account may use, by name; `null`: all.
    routes: Option<Vec<String>>,
}

/// Limit an account to named routes (`{"routes": ["uk", "backup"]}`), or lift the limit (`{"routes": null}`).
/// Admin only.
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
    let account = AccountId::parse(&id).ok_or_else(|| not_found("account", &id))?;
    if let Some(names) = &body.routes {
        let routes = state.store.routes().await.map_err(ApiError::internal)?;
        if let Some(unknown) = names.iter().find(|n| !routes.iter().any(|r| &r.name == *n)) {
            return Err(ApiError::invalid("unknown_route", format!("no route named {unknown:?}")));
        }
    }
    if !state.store.set_account_routes(account, body.routes.as_deref()).await.map_err(ApiError::internal)? {
        return Err(not_found("account", &id));
    }
    reload(&state).await?;
    state.keys.clear();
    let account =
        state.store.account(account).await.map_err(ApiError::internal)?.ok_or_else(|| not_found("account", &id))?;
    Ok(Json(json!({"id": account.id.to_string(), "name": account.name, "is_admin": account.is_admin,
                   "created_at": time_json(account.created_at), "routes": account.routes})))
}
