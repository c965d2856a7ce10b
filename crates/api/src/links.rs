//! Short links over HTTP: `GET /l/{code}` (public: the redirect a text's reader follows, recording the click) and
//! `/v1/settings/links` (the account's link base URL).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::json::JsonBody;
use crate::views::ErrorView;
use crate::{AppState, Caller};

/// An account's link settings.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkSettingsView {
    /// The account's own base URL (such as `https://go.example.com`), or null for the server's.
    pub base_url: Option<String>,
    /// The base its short links use: `BASE/l/CODE`.
    pub effective_base_url: String,
}

fn view(s: smsgate_services::links::LinkSettings) -> LinkSettingsView {
    LinkSettingsView { base_url: s.base_url, effective_base_url: s.effective }
}

/// The account's link settings.
#[utoipa::path(get, path = "/v1/settings/links", responses((status = OK, body = LinkSettingsView)))]
pub(crate) async fn get_link_settings(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<LinkSettingsView>, ApiError> {
    Ok(Json(view(state.links.settings(caller.id).await?)))
}

/// `PUT /v1/settings/links`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LinkSettingsBody {
    /// An `http` or `https` URL that reaches this server's `/l/` (a domain of the business's, proxied here); null
    /// for the server's own.
    base_url: Option<String>,
}

/// Set the base URL of the account's short links; 422 `invalid_base_url`.
#[utoipa::path(put, path = "/v1/settings/links", request_body = LinkSettingsBody,
    responses((status = OK, body = LinkSettingsView), (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn put_link_settings(
    State(state): State<AppState>,
    Caller(caller): Caller,
    JsonBody { value: body, .. }: JsonBody<LinkSettingsBody>,
) -> Result<Json<LinkSettingsView>, ApiError> {
    let now = state.messages.now();
    Ok(Json(view(state.links.set_base(caller.id, body.base_url.as_deref(), now).await?)))
}

/// A short link: 302 to its URL, the visit recorded (for the text's message, contact and campaign); 404 for a code
/// that is no link. Needs no key: it is what a text's reader opens.
#[utoipa::path(get, path = "/l/{code}", responses((status = FOUND), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn follow_link(
    State(state): State<AppState>,
    Path(code): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok());
    let now = state.messages.now();
    match state.links.visit(&code, agent, now).await? {
        Some(url) => Ok((
            StatusCode::FOUND,
            [
                (header::LOCATION, url.as_str()),
                (header::CACHE_CONTROL, "no-store"),
                (header::REFERRER_POLICY, "no-referrer"),
            ],
        )
            .into_response()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such link")),
    }
}
