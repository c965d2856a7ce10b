//! [`Conversations`]: an account's two-way threads, one per contact number and business number (or sender ID).
//! A conversation begins when the contact texts one of the account's numbers (filed as the automations' worker reads
//! inbound messages, within a second) or when the account writes through `POST /v1/conversations`; its messages are
//! the account's messages between the two, both ways, whatever sent them (REST, SMPP, a campaign, an automation, a
//! reply here). Replies go through the same admission as every message. Unread counts are counted, not kept: the
//! inbound messages after the newest one marked read.

use std::sync::Arc;

use smsgate_core::admission::Request;
use smsgate_core::consent::Category;
use smsgate_core::{AccountId, Timestamp};
use smsgate_store::{Contact, Conversation, ConversationMessage, InboundText, Span, Store};

use crate::error::{Result, ServiceError};
use crate::messages::{Messages, Submitted};

/// The most unread messages counted (more reads as this many).
pub const UNREAD_CAP: u32 = 1000;
/// The most conversations or messages a page holds.
pub const MAX_PAGE: u32 = 200;

/// A conversation with what a list shows of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationView {
    pub conversation: Conversation,
    /// The account's contact with the handset's number, if it has one.
    pub contact: Option<Contact>,
    pub unread: u64,
    /// The newest message either way.
    pub last: Option<ConversationMessage>,
}

/// What a reply or a first message says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    pub body: String,
    /// `transactional` (when not given) or `marketing`.
    pub category: Option<String>,
    /// The sender's `Idempotency-Key` and a hash of its request.
    pub idempotency: Option<(String, String)>,
}

fn no_conversation() -> ServiceError {
    ServiceError::not_found("not_found", "no such conversation")
}

/// The conversations of accounts.
#[derive(Debug, Clone)]
pub struct Conversations {
    messages: Messages,
    store: Arc<dyn Store>,
}

impl Conversations {
    pub fn new(messages: Messages, store: Arc<dyn Store>) -> Conversations {
        Conversations { messages, store }
    }

    /// Files an inbound message in its conversation (made if it is the first).
    pub async fn file(&self, t: &InboundText) -> Result<()> {
        let c = Conversation {
            id: uuid::Uuid::now_v7().to_string(),
            account_id: t.account_id,
            handset: t.from.clone(),
            address: t.to.clone(),
            last_activity_at: t.at,
            read_through: None,
            created_at: t.at,
        };
        self.store.file_conversation(&c).await?;
        Ok(())
    }

    /// Notes a text the account sent a handset from `address` in their conversation, if they have one.
    pub async fn touch(&self, account: AccountId, handset: &str, address: &str, at: Timestamp) -> Result<()> {
        self.store.touch_conversation(account, handset, address, at).await?;
        Ok(())
    }

    async fn find(&self, account: AccountId, id: &str) -> Result<Conversation> {
        self.store.conversation(account, id).await?.ok_or_else(no_conversation)
    }

    async fn view(&self, conversation: Conversation) -> Result<ConversationView> {
        let contact = self.store.contact_by_phone(conversation.account_id, &conversation.handset).await?;
        let unread = self.store.unread(&conversation, UNREAD_CAP).await?;
        let last = self.store.conversation_messages(&conversation, Span::Latest, 1).await?.pop();
        Ok(ConversationView { conversation, contact, unread, last })
    }

    /// An account's conversations, newest activity first, after `cursor` (the last one's `next_cursor`).
    pub async fn list(
        &self,
        account: AccountId,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<ConversationView>, Option<String>)> {
        let limit = limit.clamp(1, MAX_PAGE);
        let after = match cursor {
            None => None,
            Some(c) => {
                let (at, id) = c
                    .split_once(':')
                    .and_then(|(at, id)| Some((Timestamp(at.parse().ok()?), id)))
                    .ok_or_else(|| ServiceError::invalid("invalid_cursor", "cursor is a next_cursor given before"))?;
                Some((at, id))
            }
        };
        let page = self.store.conversations(account, after, limit).await?;
        let next = (page.len() == limit as usize)
            .then(|| page.last().map(|c| format!("{}:{}", c.last_activity_at.0, c.id)))
            .flatten();
        let mut out = Vec::with_capacity(page.len());
        for c in page {
            out.push(self.view(c).await?);
        }
        Ok((out, next))
    }

    pub async fn get(&self, account: AccountId, id: &str) -> Result<ConversationView> {
        let c = self.find(account, id).await?;
        self.view(c).await
    }

    /// A page of a conversation's messages, both ways, oldest first.
    pub async fn messages(
        &self,
        account: AccountId,
        id: &str,
        span: Span,
        limit: u32,
    ) -> Result<Vec<ConversationMessage>> {
        let c = self.find(account, id).await?;
        Ok(self.store.conversation_messages(&c, span, limit.clamp(1, MAX_PAGE)).await?)
    }

    /// Marks every inbound message of a conversation so far read.
    pub async fn mark_read(&self, account: AccountId, id: &str) -> Result<ConversationView> {
        let mut c = self.find(account, id).await?;
        if let Some(newest) = self.store.newest_inbound(&c).await? {
            self.store.mark_read(&c, newest).await?;
            c.read_through = Some(c.read_through.map_or(newest, |r| r.max(newest)));
        }
        self.view(c).await
    }

    /// Replies in a conversation: a text from its number to its contact, through the same admission as every
    /// message; the conversation is read through what it answers.
    pub async fn reply(&self, account: AccountId, id: &str, reply: Reply) -> Result<Submitted> {
        let c = self.find(account, id).await?;
        let sent = self.send(account, &c.handset, &c.address, reply).await?;
        if let Some(newest) = self.store.newest_inbound(&c).await? {
            self.store.mark_read(&c, newest).await?;
        }
        Ok(sent)
    }

    /// Begins (or goes on with) the conversation between `from` and `to` with a text: the conversation and the
    /// text.
    pub async fn start(
        &self,
        account: AccountId,
        to: &str,
        from: &str,
        reply: Reply,
    ) -> Result<(ConversationView, Submitted)> {
        let sent = self.send(account, to, from, reply).await?;
        let m = sent.message();
        let c = Conversation {
            id: uuid::Uuid::now_v7().to_string(),
            account_id: account,
            handset: m.to.clone(),
            address: m.from.clone(),
            last_activity_at: m.created_at,
            read_through: None,
            created_at: m.created_at,
        };
        let c = self.store.file_conversation(&c).await?;
        Ok((self.view(c).await?, sent))
    }

    async fn send(&self, account: AccountId, to: &str, from: &str, reply: Reply) -> Result<Submitted> {
        let category = match reply.category.as_deref() {
            None => Category::default(),
            Some(c) => Category::requested(c)
                .ok_or_else(|| ServiceError::invalid("invalid_category", "category is transactional or marketing"))?,
        };
        let request =
            Request { to: to.to_string(), from: from.to_string(), body: reply.body, category, ..Request::default() };
        let sent = self.messages.submit(account, &request, reply.idempotency).await?;
        let m = sent.message();
        self.touch(account, &m.to, &m.from, m.created_at).await?;
        Ok(sent)
    }
}
