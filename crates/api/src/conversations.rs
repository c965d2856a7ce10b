//! Conversations over HTTP: `/v1/conversations` (the account's threads, newest activity first, with unread counts;
//! begin one), `/v1/conversations/{id}` and its `/messages` (read both ways in order, reply) and `/read`. Every route
//! is for the caller's own account.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use smsgate_core::MessageId;
use smsgate_services::ConversationView;
use smsgate_services::conversations::Reply;
use smsgate_store::{ConversationMessage, Span};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::json::{JsonBody, message_view, time_json};
use crate::views::{ErrorView, MessageView};
use crate::{AppState, Caller, idempotency_of};

/// A conversation as lists show it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationBody {
    pub id: String,
    /// The contact's number.
    pub phone: String,
    /// The account's number (or sender ID) it is with.
    pub number: String,
    /// The account's contact with that number, if any, and its name.
    pub contact_id: Option<String>,
    pub name: Option<String>,
    /// Inbound messages after the newest marked read (counted to 1,000).
    pub unread: u64,
    /// The newest message either way.
    pub last_message: Option<ConversationMessageView>,
    #[schema(value_type = String)]
    pub last_activity_at: Value,
    #[schema(value_type = String)]
    pub created_at: Value,
}

/// A message of a conversation: the message, and the campaign or automation it was sent for (or, inbound, answers).
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationMessageView {
    #[serde(flatten)]
    pub message: MessageView,
    pub campaign_id: Option<String>,
    pub automation_id: Option<String>,
}

fn message_body(m: &ConversationMessage) -> ConversationMessageView {
    ConversationMessageView {
        message: message_view(&m.message, None),
        campaign_id: m.origin.campaign.clone(),
        automation_id: m.origin.automation.clone(),
    }
}

fn conversation_body(v: ConversationView) -> ConversationBody {
    let c = v.conversation;
    ConversationBody {
        id: c.id,
        phone: c.handset,
        number: c.address,
        contact_id: v.contact.as_ref().map(|c| c.id.clone()),
        name: v.contact.and_then(|c| c.name),
        unread: v.unread,
        last_message: v.last.as_ref().map(message_body),
        last_activity_at: time_json(c.last_activity_at),
        created_at: time_json(c.created_at),
    }
}

/// `GET /v1/conversations`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// The `next_cursor` of the page before.
    cursor: Option<String>,
    /// 1 to 200 (50 when not given).
    limit: Option<u32>,
}

/// A page of conversations.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationPage {
    pub data: Vec<ConversationBody>,
    pub next_cursor: Option<String>,
}

/// The account's conversations, newest activity first, each with its unread count and newest message.
#[utoipa::path(get, path = "/v1/conversations", params(ListQuery),
    responses((status = OK, body = ConversationPage), (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn list_conversations(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<ConversationPage>, ApiError> {
    let (page, next_cursor) = state.conversations.list(caller.id, q.cursor.as_deref(), q.limit.unwrap_or(50)).await?;
    Ok(Json(ConversationPage { data: page.into_iter().map(conversation_body).collect(), next_cursor }))
}

/// `POST /v1/conversations`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartBody {
    /// The contact's number.
    to: String,
    /// One of the account's numbers or sender IDs.
    from: String,
    body: String,
    /// `transactional` (when not given) or `marketing`.
    category: Option<String>,
}

/// A conversation and the message just sent in it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Started {
    pub conversation: ConversationBody,
    pub message: MessageView,
}

/// Begin (or go on with) the conversation between a number of the account's and a contact, with a text; admitted
/// like every message. An `Idempotency-Key` header makes retries safe.
#[utoipa::path(post, path = "/v1/conversations", request_body = StartBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeats with the same key and body return the first message")),
    responses((status = CREATED, body = Started), (status = FORBIDDEN, body = ErrorView),
              (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn start_conversation(
    State(state): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
    JsonBody { value: body, raw }: JsonBody<StartBody>,
) -> Result<impl IntoResponse, ApiError> {
    let reply = Reply { body: body.body, category: body.category, idempotency: idempotency_of(&headers, &raw)? };
    let (view, sent) = state.conversations.start(caller.id, &body.to, &body.from, reply).await?;
    let started = Started { conversation: conversation_body(view), message: message_view(sent.message(), None) };
    Ok((StatusCode::CREATED, Json(started)))
}

/// A conversation with its unread count and newest message.
#[utoipa::path(get, path = "/v1/conversations/{id}",
    responses((status = OK, body = ConversationBody), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn get_conversation(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<ConversationBody>, ApiError> {
    Ok(Json(conversation_body(state.conversations.get(caller.id, &id).await?)))
}

/// `GET /v1/conversations/{id}/messages`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct MessagesQuery {
    /// The messages before this one (older); neither: the newest.
    before: Option<String>,
    /// The messages after this one (newer).
    after: Option<String>,
    /// 1 to 200 (50 when not given).
    limit: Option<u32>,
}

/// A page of a conversation's messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePage {
    /// Oldest first.
    pub data: Vec<ConversationMessageView>,
    /// Give as `before` for the page of older messages; none when this page reached the first.
    pub earlier: Option<String>,
}

/// A conversation's messages both ways, whatever sent them (REST, SMPP, a campaign, an automation, a reply), oldest
/// first: the newest `limit`, or those `before` or `after` a message.
#[utoipa::path(get, path = "/v1/conversations/{id}/messages", params(MessagesQuery),
    responses((status = OK, body = MessagePage), (status = NOT_FOUND, body = ErrorView),
              (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn conversation_messages(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Query(q): Query<MessagesQuery>,
) -> Result<Json<MessagePage>, ApiError> {
    let id_of = |s: &str| {
        MessageId::parse(s).ok_or_else(|| ApiError::invalid("invalid_cursor", "before and after are message ids"))
    };
    let span = match (q.before.as_deref(), q.after.as_deref()) {
        (None, None) => Span::Latest,
        (Some(b), None) => Span::Before(id_of(b)?),
        (None, Some(a)) => Span::After(id_of(a)?),
        (Some(_), Some(_)) => return Err(ApiError::invalid("invalid_cursor", "give before or after, not both")),
    };
    let limit = q.limit.unwrap_or(50);
    let page = state.conversations.messages(caller.id, &id, span, limit).await?;
    let earlier = (!matches!(span, Span::After(_)) && page.len() == limit as usize)
        .then(|| page.first().map(|m| m.message.id.to_string()))
        .flatten();
    Ok(Json(MessagePage { data: page.iter().map(message_body).collect(), earlier }))
}

/// `POST /v1/conversations/{id}/messages`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplyBody {
    body: String,
    /// `transactional` (when not given) or `marketing`.
    category: Option<String>,
}

/// Reply in a conversation: a text from its number to its contact, admitted like every message (a contact who
/// opted out is 422 `recipient_opted_out`); what it answers is marked read. An `Idempotency-Key` header makes retries
/// safe.
#[utoipa::path(post, path = "/v1/conversations/{id}/messages", request_body = ReplyBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeats with the same key and body return the first message")),
    responses((status = CREATED, body = MessageView), (status = NOT_FOUND, body = ErrorView),
              (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn reply(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody { value: body, raw }: JsonBody<ReplyBody>,
) -> Result<impl IntoResponse, ApiError> {
    let reply = Reply { body: body.body, category: body.category, idempotency: idempotency_of(&headers, &raw)? };
    let sent = state.conversations.reply(caller.id, &id, reply).await?;
    Ok((StatusCode::CREATED, Json(message_view(sent.message(), None))))
}

/// Mark a conversation's inbound messages so far read.
#[utoipa::path(post, path = "/v1/conversations/{id}/read",
    responses((status = OK, body = ConversationBody), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn mark_read(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<ConversationBody>, ApiError> {
    Ok(Json(conversation_body(state.conversations.mark_read(caller.id, &id).await?)))
}
