//! `POST /v1/messages/plan`: how a text would be sent — its encoding, segments, characters and cost — without
//! sending it; what the dashboard's send form counts as one types.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::json::JsonBody;
use crate::views::ErrorView;
use crate::{AppState, Caller};

/// The most characters a text to plan may have: far past the 255 segments a message may have.
const MAX_PLAN_BODY: usize = 40_000;

/// `POST /v1/messages/plan`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanBody {
    /// The text.
    body: String,
    /// The destination (E.164), to price the text by the route it would take.
    to: Option<String>,
}

/// A text's plan.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanView {
    /// `gsm7` (with its national language tables when they fit better, such as `gsm7-turkish-locking`), or `ucs2`.
    pub encoding: String,
    pub segments: u32,
    /// Characters, as people count them.
    pub characters: u32,
    /// The route's price a segment times the segments, for `to`; null without `to` or when no route prices it.
    pub cost: Option<f64>,
}

/// How a text would be encoded, split and priced, as admission would plan it; nothing is sent or kept.
#[utoipa::path(post, path = "/v1/messages/plan", request_body = PlanBody,
    responses((status = OK, body = PlanView), (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn plan_text(
    State(state): State<AppState>,
    Caller(caller): Caller,
    JsonBody { value: body, .. }: JsonBody<PlanBody>,
) -> Result<Json<PlanView>, ApiError> {
    if body.body.chars().count() > MAX_PLAN_BODY {
        return Err(ApiError::invalid(
            "body_too_long",
            format!("a text to plan has at most {MAX_PLAN_BODY} characters"),
        ));
    }
    let p = state.messages.plan(caller.id, &body.body, body.to.as_deref())?;
    Ok(Json(PlanView {
        encoding: p.encoding,
        segments: p.segments,
        characters: p.characters,
        cost: p.cost_micros.map(|c| c as f64 / 1_000_000.0),
    }))
}
