//! Dashboard users and sign-in over HTTP: `/v1/users` (create, list), `/v1/users/{id}` (read, change, remove),
//! and `/v1/session` (sign in, who am I, sign out).
//!
//! A signed-in browser holds the session's token in the `smsgate_session` cookie (HttpOnly, SameSite=Strict, Secure
//! when served over TLS). The API takes the cookie wherever it takes an API key, with the scopes of the user's role
//! ([`smsgate_core::access::Role::scopes`]); a request that changes anything carries the session's CSRF token in
//! `X-CSRF-Token` as well, and a request whose `Origin` is another site is refused.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use smsgate_core::AccountId;
use smsgate_core::access::{Role, Scopes};
use smsgate_services::{Actor, ServiceError, UserPatch, UserSpec};
use smsgate_store::{SignedIn, User};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::json::{JsonBody, time_json};
use crate::views::ErrorView;
use crate::{AppState, Caller, CallerKey, Principal};

/// The cookie a signed-in browser keeps its session's token in.
pub const SESSION_COOKIE: &str = "smsgate_session";
/// The header a cookie-authenticated request that changes anything carries the session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A dashboard user. The password is never shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub account_id: String,
    pub email: String,
    /// `owner`, `admin`, `member` or `viewer`.
    pub role: String,
    #[schema(value_type = String)]
    pub created_at: Value,
    #[schema(value_type = Option<String>)]
    pub last_sign_in_at: Value,
}

pub(crate) fn user_view(u: &User) -> UserView {
    UserView {
        id: u.id.clone(),
        account_id: u.account_id.to_string(),
        email: u.email.clone(),
        role: u.role.as_str().into(),
        created_at: time_json(u.created_at),
        last_sign_in_at: u.last_sign_in_at.map_or(Value::Null, time_json),
    }
}

/// An account's users.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    pub data: Vec<UserView>,
}

/// `POST /v1/users`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserBody {
    email: String,
    /// 10 to 256 characters.
    password: String,
    /// `owner`, `admin`, `member` or `viewer`.
    role: String,
    /// The account, for the operator creating another account's user; the caller's by default.
    account_id: Option<String>,
}

/// `PATCH /v1/users/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserPatchBody {
    role: Option<String>,
    password: Option<String>,
}

fn role(r: &str) -> Result<Role, ApiError> {
    Role::parse(r).map_err(|e| ApiError::invalid("invalid_role", e.to_string()))
}

/// Who the request is from, for the user routes.
fn actor(caller: smsgate_store::Account, scopes: Scopes, principal: Option<&Principal>) -> Actor {
    match principal {
        Some(Principal::User { signed_in, .. }) => Actor::User { account: caller, user: signed_in.user.clone() },
        _ => Actor::Key { account: caller, scopes },
    }
}

/// Create a user: with an API key of the account (the `manage` scope), the operator's key for any account
/// (`account_id`), or signed in as an `owner` (any role) or `admin` (no owners). 409 `email_taken` when the email
/// has a user already.
#[utoipa::path(post, path = "/v1/users", request_body = UserBody,
    responses((status = CREATED, body = UserView), (status = CONFLICT, body = ErrorView),
              (status = FORBIDDEN, body = ErrorView), (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn create_user(
    State(state): State<AppState>,
    CallerKey(caller, scopes): CallerKey,
    principal: Option<axum::Extension<Principal>>,
    JsonBody { value: body, .. }: JsonBody<UserBody>,
) -> Result<impl IntoResponse, ApiError> {
    let account_id = body
        .account_id
        .as_deref()
        .map(|a| {
            AccountId::parse(a).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such account"))
        })
        .transpose()?;
    let spec = UserSpec { account_id, email: body.email, password: body.password, role: role(&body.role)? };
    let actor = actor(caller, scopes, principal.as_deref());
    let user = state.users.create(&actor, spec).await?;
    Ok((StatusCode::CREATED, Json(user_view(&user))))
}

/// The account's users, by email.
#[utoipa::path(get, path = "/v1/users", responses((status = OK, body = UserList)))]
pub(crate) async fn list_users(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<UserList>, ApiError> {
    let users = state.users.list(caller.id).await?;
    Ok(Json(UserList { data: users.iter().map(user_view).collect() }))
}

/// One of the account's users.
#[utoipa::path(get, path = "/v1/users/{id}", params(("id" = String, Path)),
    responses((status = OK, body = UserView), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn get_user(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    Ok(Json(user_view(&state.users.get(caller.id, &id).await?)))
}

/// Change a user's role or password. A user changes their own password (their other sessions end); a role is
/// changed by someone whose role manages the old and the new one, never one's own; an account keeps an owner (409
/// `last_owner`).
#[utoipa::path(patch, path = "/v1/users/{id}", params(("id" = String, Path)), request_body = UserPatchBody,
    responses((status = OK, body = UserView), (status = NOT_FOUND, body = ErrorView),
              (status = FORBIDDEN, body = ErrorView), (status = CONFLICT, body = ErrorView)))]
pub(crate) async fn update_user(
    State(state): State<AppState>,
    CallerKey(caller, scopes): CallerKey,
    principal: Option<axum::Extension<Principal>>,
    Path(id): Path<String>,
    JsonBody { value: body, .. }: JsonBody<UserPatchBody>,
) -> Result<Json<UserView>, ApiError> {
    let patch = UserPatch { role: body.role.as_deref().map(role).transpose()?, password: body.password };
    let token = match principal.as_deref() {
        Some(Principal::User { token, .. }) => Some(token.clone()),
        _ => None,
    };
    let actor = actor(caller, scopes, principal.as_deref());
    let user = state.users.update(&actor, &id, patch, token.as_deref()).await?;
    Ok(Json(user_view(&user)))
}

/// Remove a user; their sessions end. An account keeps an owner (409 `last_owner`).
#[utoipa::path(delete, path = "/v1/users/{id}", params(("id" = String, Path)),
    responses((status = NO_CONTENT), (status = NOT_FOUND, body = ErrorView), (status = FORBIDDEN, body = ErrorView),
              (status = CONFLICT, body = ErrorView)))]
pub(crate) async fn delete_user(
    State(state): State<AppState>,
    CallerKey(caller, scopes): CallerKey,
    principal: Option<axum::Extension<Principal>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let actor = actor(caller, scopes, principal.as_deref());
    state.users.delete(&actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A signed-in session: the user, their account, the CSRF token to send in `X-CSRF-Token`, and when it ends.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// Always true here.
    pub signed_in: bool,
    pub user: UserView,
    pub account: SessionAccountView,
    pub csrf_token: String,
    #[schema(value_type = String)]
    pub expires_at: Value,
}

/// The account a session is in.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionAccountView {
    pub id: String,
    pub name: String,
    /// The operator's account: connectors, routes and every account.
    pub is_admin: bool,
}

fn session_view(s: &SignedIn) -> SessionView {
    SessionView {
        signed_in: true,
        user: user_view(&s.user),
        account: SessionAccountView {
            id: s.account.id.to_string(),
            name: s.account.name.clone(),
            is_admin: s.account.is_admin,
        },
        csrf_token: s.session.csrf_token.clone(),
        expires_at: time_json(s.session.expires_at),
    }
}

/// `POST /v1/session`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignInBody {
    email: String,
    password: String,
}

/// The `Set-Cookie` value of a session's token (or, with `None`, of its removal).
fn session_cookie(token: Option<&str>, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = match token {
        // The token is hex: nothing in it needs quoting.
        Some(token) => format!(
            "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            smsgate_services::users::SESSION_MAX / 1000
        ),
        None => format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    };
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("smsgate_session=; Max-Age=0"))
}

/// Whether the cookie is to be `Secure`: the request came over TLS, or through a proxy that says it did
/// (`X-Forwarded-Proto: https`; a false claim only keeps the cookie from a plain-HTTP caller that made it).
fn secure(over_tls: bool, headers: &HeaderMap) -> bool {
    over_tls
        || headers
            .get("x-forwarded-proto")
            .and_then(|h| h.to_str().ok())
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

/// The value of the session cookie, if the request has one.
pub(crate) fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Whether two secrets are the same, compared by their hashes: the comparison says nothing of how much was right.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    Sha256::digest(a.as_bytes()) == Sha256::digest(b.as_bytes())
}

/// Whether a request comes from another site: its `Origin` (sent by browsers with every request that changes
/// anything) names a host other than the one it was sent to (`Host`, or `X-Forwarded-Host` from a proxy in
/// front; a browser cannot set that header on another site's request without a CORS preflight, which this server
/// never allows).
pub(crate) fn cross_site(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(axum::http::header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return false;
    };
    if origin == "null" {
        return true;
    }
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    let named =
        |h: &str| headers.get(h).and_then(|v| v.to_str().ok()).map(|v| v.split(',').next().unwrap_or("").trim());
    ![named("host"), named("x-forwarded-host")].into_iter().flatten().any(|h| h.eq_ignore_ascii_case(origin_host))
}

/// Sign in with email and password: the session cookie is set, and the answer holds the CSRF token. 401
/// `invalid_credentials` for a wrong email or password (the same for both); after five wrong passwords in a row, 429
/// `too_many_attempts` for 15 minutes.
#[utoipa::path(post, path = "/v1/session", request_body = SignInBody,
    responses((status = OK, body = SessionView), (status = UNAUTHORIZED, body = ErrorView),
              (status = TOO_MANY_REQUESTS, body = ErrorView), (status = FORBIDDEN, body = ErrorView)))]
pub(crate) async fn sign_in(
    State(state): State<AppState>,
    tls: Option<axum::Extension<crate::server::OverTls>>,
    headers: HeaderMap,
    JsonBody { value: body, .. }: JsonBody<SignInBody>,
) -> Result<impl IntoResponse, ApiError> {
    if cross_site(&headers) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "cross_site", "sign in from the server's own pages"));
    }
    let new = match state.users.sign_in(&body.email, &body.password).await {
        Ok(new) => new,
        Err(ServiceError::RateLimited { retry_after }) => {
            let mut e = ApiError::rate_limited("the wrong passwords allowed", retry_after);
            e.code = "too_many_attempts";
            e.message = "too many wrong passwords; try again later".into();
            return Err(e);
        }
        Err(e) => return Err(e.into()),
    };
    let cookie = session_cookie(Some(&new.token), secure(tls.is_some(), &headers));
    Ok(([(SET_COOKIE, cookie)], Json(session_view(&new.signed_in))))
}

/// The request's session: signed in (`"signed_in": true` and the session), or `{"signed_in": false}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum SessionState {
    SignedIn(Box<SessionView>),
    SignedOut {
        /// Always false here.
        signed_in: bool,
    },
}

/// The signed-in session of the request's cookie — its user, account and CSRF token — or `{"signed_in": false}`
/// (200 either way: a page asks this before it knows, and a browser reports every 401 as an error).
#[utoipa::path(get, path = "/v1/session", responses((status = OK, body = SessionState)))]
pub(crate) async fn get_session(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<SessionState>, ApiError> {
    let found = match session_token(&headers) {
        Some(token) => state.users.session(&token).await?,
        None => None,
    };
    Ok(Json(match found {
        Some(s) => SessionState::SignedIn(Box::new(session_view(&s))),
        None => SessionState::SignedOut { signed_in: false },
    }))
}

/// Sign out: the session ends and the cookie is removed. Needs `X-CSRF-Token` like any change; answers 204 even if
/// the session had ended.
#[utoipa::path(delete, path = "/v1/session",
    responses((status = NO_CONTENT), (status = FORBIDDEN, body = ErrorView)))]
pub(crate) async fn sign_out(
    State(state): State<AppState>,
    tls: Option<axum::Extension<crate::server::OverTls>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    if let Some(token) = session_token(&headers)
        && let Some(signed_in) = state.users.session(&token).await?
    {
        let given = headers.get(CSRF_HEADER).and_then(|h| h.to_str().ok()).unwrap_or("");
        if !same_secret(given, &signed_in.session.csrf_token) {
            return Err(csrf_failed());
        }
        state.users.sign_out(&token).await?;
    }
    Ok((StatusCode::NO_CONTENT, [(SET_COOKIE, session_cookie(None, secure(tls.is_some(), &headers)))]))
}

/// `POST /v1/session/password`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PasswordBody {
    current_password: String,
    /// 10 to 256 characters.
    new_password: String,
}

/// Change the signed-in user's own password, given the current one (403 `wrong_password` otherwise); their other
/// sessions end. Only with a session (any role), never with an API key.
#[utoipa::path(post, path = "/v1/session/password", request_body = PasswordBody,
    responses((status = NO_CONTENT), (status = FORBIDDEN, body = ErrorView), (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn change_password(
    State(state): State<AppState>,
    Caller(_caller): Caller,
    principal: Option<axum::Extension<Principal>>,
    JsonBody { value: body, .. }: JsonBody<PasswordBody>,
) -> Result<StatusCode, ApiError> {
    let Some(Principal::User { token, .. }) = principal.as_deref() else {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "not_a_session", "a user changes their password signed in"));
    };
    state.users.change_password(token, &body.current_password, &body.new_password).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) fn csrf_failed() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "csrf_failed",
        "a signed-in request that changes anything needs the session's X-CSRF-Token",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        assert_eq!(session_token(&headers(&[("cookie", "a=1; smsgate_session=abc; b=2")])), Some("abc".into()));
        assert_eq!(session_token(&headers(&[("cookie", "a=1"), ("cookie", "smsgate_session=x")])), Some("x".into()));
        assert_eq!(session_token(&headers(&[("cookie", "smsgate_session=")])), None);
        assert_eq!(session_token(&headers(&[("cookie", "my_smsgate_session=x")])), None);
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_over_tls() {
        let c = session_cookie(Some("ab12"), true);
        let c = c.to_str().unwrap();
        assert!(c.starts_with("smsgate_session=ab12;") && c.contains("HttpOnly") && c.contains("SameSite=Strict"));
        assert!(c.ends_with("; Secure"));
        assert!(!session_cookie(Some("ab12"), false).to_str().unwrap().contains("Secure"));
        assert!(session_cookie(None, false).to_str().unwrap().contains("Max-Age=0"));
    }

    #[test]
    fn another_sites_origin_is_told() {
        assert!(!cross_site(&headers(&[("host", "127.0.0.1:8080")])), "no Origin: not a browser's cross-site call");
        assert!(!cross_site(&headers(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")])));
        assert!(cross_site(&headers(&[("host", "127.0.0.1:8080"), ("origin", "https://evil.example")])));
        assert!(cross_site(&headers(&[("host", "127.0.0.1:8080"), ("origin", "null")])));
        let proxied = [
            ("host", "127.0.0.1:8080"),
            ("x-forwarded-host", "sms.example.com"),
            ("origin", "https://sms.example.com"),
        ];
        assert!(!cross_site(&headers(&proxied)), "behind a proxy that names the host it was asked for");
        assert!(cross_site(&headers(&[("host", "127.0.0.1:8080"), ("origin", "https://sms.example.com")])));
    }
}
