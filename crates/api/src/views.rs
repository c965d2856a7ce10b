//! The shapes the API answers with. They are what `/openapi.json` documents: the handlers return these types,
//! so the document and the answers cannot drift apart.

use serde::Serialize;
use utoipa::ToSchema;

/// A message, as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessageView {
    /// Sortable id (UUIDv7).
    pub id: String,
    /// `outbound` or `inbound`.
    pub direction: String,
    /// `scheduled`, `queued`, `sending`, `sent`, `delivered`, `undelivered`, `failed`, `expired`, `canceled` or
    /// `received`.
    pub status: String,
    /// E.164 for outbound messages.
    pub to: String,
    pub from: String,
    pub body: String,
    /// `gsm7`, `ucs2`, or a GSM 7-bit national table such as `gsm7-turkish`.
    pub encoding: String,
    pub segments: u32,
    /// Price in the account's currency, once known.
    pub price: Option<f64>,
    /// The connector that took it.
    pub connector: Option<String>,
    /// The carrier's id for it.
    pub carrier_id: Option<String>,
    /// Why it failed or was undelivered.
    pub error_code: Option<String>,
    pub reference: Option<String>,
    pub callback_url: Option<String>,
    /// The status changes that call back; null: every one.
    pub callback_statuses: Option<Vec<String>>,
    /// RFC 3339.
    pub send_at: Option<String>,
    /// RFC 3339.
    pub expires_at: Option<String>,
    pub attempts: u32,
    /// `transactional`, `marketing`, or `reply` (smsgate's automatic reply to a keyword).
    pub category: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// The journey, oldest first; on `GET /v1/messages/{id}` and `DELETE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<EventView>>,
}

/// One step of a journey.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventView {
    pub status: String,
    /// RFC 3339.
    pub at: String,
    pub detail: String,
}

/// A page of messages.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ListView {
    pub data: Vec<MessageView>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// The results of a batch, one per item, in order: a message, or an error.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BatchView {
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<serde_json::Value>,
}

/// An error.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorView {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable: `invalid_destination`, `unauthorized`, ...
    pub code: String,
    /// For people.
    pub message: String,
}

/// An account.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccountView {
    pub id: String,
    pub name: String,
    pub is_admin: bool,
    pub created_at: String,
    /// `owned`: it sends only from its own numbers and sender IDs; `any`: from any sender.
    pub sender_policy: String,
    /// Requests a second each of its keys may make; null: no limit.
    pub requests_per_second: Option<u32>,
    /// Messages a second it may send on every way in together; null: no limit.
    pub messages_per_second: Option<u32>,
}

/// The accounts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccountList {
    pub data: Vec<AccountView>,
}

/// A new API key; `key` is shown this once.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub account_id: String,
    pub key: String,
    /// The key's public part (`sk_...`), to recognise it in a list; nothing of its secret part.
    pub prefix: String,
    pub name: Option<String>,
    pub scopes: Vec<String>,
    pub created_at: String,
}

/// An API key as listed: never the key itself.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyInfoView {
    pub id: String,
    pub account_id: String,
    /// The key's public part; empty for keys made by earlier versions.
    pub prefix: String,
    pub name: Option<String>,
    pub scopes: Vec<String>,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

/// An account's keys.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyList {
    pub data: Vec<KeyInfoView>,
}

/// A virtual handset's inbox.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InboxView {
    pub number: String,
    pub data: Vec<HandsetMessageView>,
}

/// A message a virtual handset received.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HandsetMessageView {
    /// The connector whose carrier took it.
    pub connector: String,
    pub from: String,
    pub body: String,
    pub carrier_id: String,
    pub received_at: String,
}

/// A reply the simulated network accepted.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplyAcceptedView {
    pub status: String,
    pub from: String,
    pub to: String,
}

/// Health.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HealthView {
    pub status: String,
}
