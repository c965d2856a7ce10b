//! Conversations: one per contact number and business number of an account, filed as inbound messages are read and
//! as the account writes through them; their messages are the account's messages between the two numbers, read in
//! order through the indexes of each direction. Cold-path SQL, written once ([`Database`]).

use async_trait::async_trait;
use smsgate_core::{AccountId, Message, MessageId, Timestamp};

use crate::Result;
use crate::messages::{Origin, message_of};
use crate::schema::{MESSAGE_COLUMNS, chain_clause};
use crate::sql::{Database, Row, values};

/// A conversation between a handset and one of the account's numbers (or sender IDs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub id: String,
    pub account_id: AccountId,
    /// The contact's number.
    pub handset: String,
    /// Ours.
    pub address: String,
    pub last_activity_at: Timestamp,
    /// The newest inbound message read; `None`: none.
    pub read_through: Option<MessageId>,
    pub created_at: Timestamp,
}

/// A message of a conversation, with what it was sent for (or answers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationMessage {
    pub message: Message,
    pub origin: Origin,
}

/// Which messages of a conversation a page holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// The newest.
    Latest,
    /// Those before this one (older).
    Before(MessageId),
    /// Those after this one (newer).
    After(MessageId),
}

/// Conversations.
#[async_trait]
pub trait ConversationStore: Send + Sync {
    /// Files activity in the conversation of `c`'s account, handset and address: makes it (as `c`) if there is
    /// none, else moves its last activity to `c`'s if later. The conversation as it is now.
    async fn file_conversation(&self, c: &Conversation) -> Result<Conversation>;

    /// Moves a conversation's last activity to `at` if later, if there is one; whether there was.
    async fn touch_conversation(&self, account: AccountId, handset: &str, address: &str, at: Timestamp)
    -> Result<bool>;

    /// An account's conversation by id.
    async fn conversation(&self, account: AccountId, id: &str) -> Result<Option<Conversation>>;

    /// An account's conversations, newest activity first, after the one at `after` (its activity and id).
    async fn conversations(
        &self,
        account: AccountId,
        after: Option<(Timestamp, &str)>,
        limit: u32,
    ) -> Result<Vec<Conversation>>;

    /// A page of a conversation's messages, both ways, oldest first.
    async fn conversation_messages(&self, c: &Conversation, span: Span, limit: u32)
    -> Result<Vec<ConversationMessage>>;

    /// How many of a conversation's inbound messages came after what was read (at most `cap` counted).
    async fn unread(&self, c: &Conversation, cap: u32) -> Result<u64>;

    /// The newest inbound message of a conversation, if any.
    async fn newest_inbound(&self, c: &Conversation) -> Result<Option<MessageId>>;

    /// Marks a conversation read through `message` (an inbound message of it).
    async fn mark_read(&self, c: &Conversation, message: MessageId) -> Result<()>;

    /// Deletes an account's conversations with `handset` (the person was erased); how many.
    async fn forget_conversations(&self, account: AccountId, handset: &str) -> Result<u64>;

    /// Deletes an account's conversations with no activity since `before` (their messages' retention passed).
    async fn purge_conversations(&self, account: AccountId, before: Timestamp) -> Result<u64>;
}

const COLUMNS: &str = "id, account_id, handset, address, last_activity_at, read_through, created_at";

/// The later of a column and the same column of the row `excluded` from an insert, written for both databases.
const LATER_ACTIVITY: &str = "CASE WHEN excluded.last_activity_at > conversations.last_activity_at \
     THEN excluded.last_activity_at ELSE conversations.last_activity_at END";

fn conversation_of(r: &Row) -> Result<Conversation> {
    let read: String = r.get("read_through")?;
    Ok(Conversation {
        id: r.get("id")?,
        account_id: r.account_id("account_id")?,
        handset: r.get("handset")?,
        address: r.get("address")?,
        last_activity_at: r.timestamp("last_activity_at")?,
        read_through: MessageId::parse(&read),
        created_at: r.timestamp("created_at")?,
    })
}

fn conversation_message_of(r: &Row) -> Result<ConversationMessage> {
    Ok(ConversationMessage {
        message: message_of(r)?,
        origin: Origin { campaign: r.get("campaign_id")?, automation: r.get("automation_id")? },
    })
}

/// The two halves of a conversation's messages: what the account sent the handset from the address (through its
/// chain, [`chain_clause`]: handset, account and address first), and what the handset sent the address (through the
/// index of inbound senders).
fn halves(cmp: &str, order: &str, limit: u32) -> [String; 2] {
    let columns = format!("{MESSAGE_COLUMNS}, campaign_id, automation_id");
    [
        format!(
            // `account_id || ''`: a condition no index serves, so that the planner looks the chain's few ids up
            // rather than reading every message of the account through its index (300 ms at a million).
            "{chain}SELECT {columns} FROM messages WHERE id IN (SELECT id FROM chain) AND to_addr = ? AND id {cmp} ? \
             AND from_addr = ? AND account_id || '' = ? ORDER BY id {order} LIMIT {limit}",
            chain = chain_clause(true)
        ),
        format!(
            "SELECT {columns} FROM messages WHERE from_addr = ? AND direction = 'inbound' AND id {cmp} ? \
             AND to_addr = ? AND account_id = ? ORDER BY id {order} LIMIT {limit}"
        ),
    ]
}

#[async_trait]
impl<D: Database> ConversationStore for D {
    async fn file_conversation(&self, c: &Conversation) -> Result<Conversation> {
        self.execute(
            &format!(
                "INSERT INTO conversations ({COLUMNS}) VALUES (?, ?, ?, ?, ?, '', ?) \
                 ON CONFLICT (account_id, handset, address) DO UPDATE SET last_activity_at = {LATER_ACTIVITY}"
            ),
            values![&c.id, c.account_id, &c.handset, &c.address, c.last_activity_at, c.created_at],
        )
        .await?;
        let sql = format!("SELECT {COLUMNS} FROM conversations WHERE account_id = ? AND handset = ? AND address = ?");
        let row = self.query_one(&sql, values![c.account_id, &c.handset, &c.address]).await?;
        row.as_ref()
            .map(conversation_of)
            .transpose()?
            .ok_or_else(|| crate::schema::corrupt("a conversation filed is gone"))
    }

    async fn touch_conversation(
        &self,
        account: AccountId,
        handset: &str,
        address: &str,
        at: Timestamp,
    ) -> Result<bool> {
        let n = self
            .execute(
                "UPDATE conversations SET last_activity_at = CASE WHEN last_activity_at < ? THEN ? \
                 ELSE last_activity_at END WHERE account_id = ? AND handset = ? AND address = ?",
                values![at, at, account, handset, address],
            )
            .await?;
        Ok(n == 1)
    }

    async fn conversation(&self, account: AccountId, id: &str) -> Result<Option<Conversation>> {
        let sql = format!("SELECT {COLUMNS} FROM conversations WHERE id = ? AND account_id = ?");
        self.query_one(&sql, values![id, account]).await?.as_ref().map(conversation_of).transpose()
    }

    async fn conversations(
        &self,
        account: AccountId,
        after: Option<(Timestamp, &str)>,
        limit: u32,
    ) -> Result<Vec<Conversation>> {
        let (sql, params) = match after {
            None => (
                format!(
                    "SELECT {COLUMNS} FROM conversations WHERE account_id = ? \
                     ORDER BY last_activity_at DESC, id DESC LIMIT {limit}"
                ),
                values![account],
            ),
            Some((at, id)) => (
                format!(
                    "SELECT {COLUMNS} FROM conversations WHERE account_id = ? \
                     AND (last_activity_at < ? OR (last_activity_at = ? AND id < ?)) \
                     ORDER BY last_activity_at DESC, id DESC LIMIT {limit}"
                ),
                values![account, at, at, id],
            ),
        };
        self.query(&sql, params).await?.iter().map(conversation_of).collect()
    }

    async fn conversation_messages(
        &self,
        c: &Conversation,
        span: Span,
        limit: u32,
    ) -> Result<Vec<ConversationMessage>> {
        // The newest first when reading back from a point (or from the end), then put in order.
        let (cmp, order, from) = match span {
            Span::Latest => ("<", "DESC", "~".to_string()),
            Span::Before(id) => ("<", "DESC", id.to_string()),
            Span::After(id) => (">", "ASC", id.to_string()),
        };
        let [outbound, inbound] = halves(cmp, order, limit);
        let mut all = Vec::new();
        let chain = values![&c.handset, c.account_id, &c.address];
        let params = chain.into_iter().chain(values![&c.handset, &from, &c.address, c.account_id]).collect();
        for r in self.query(&outbound, params).await? {
            all.push(conversation_message_of(&r)?);
        }
        for r in self.query(&inbound, values![&c.handset, &from, &c.address, c.account_id]).await? {
            all.push(conversation_message_of(&r)?);
        }
        all.sort_by_key(|m| m.message.id);
        if order == "DESC" {
            let skip = all.len().saturating_sub(limit as usize);
            all.drain(..skip);
        } else {
            all.truncate(limit as usize);
        }
        Ok(all)
    }

    async fn unread(&self, c: &Conversation, cap: u32) -> Result<u64> {
        let read = c.read_through.map(|id| id.to_string()).unwrap_or_default();
        let sql = format!(
            "SELECT COUNT(*) AS n FROM (SELECT 1 FROM messages WHERE from_addr = ? AND direction = 'inbound' \
             AND id > ? AND to_addr = ? AND account_id = ? LIMIT {cap}) unread"
        );
        let row = self.query_one(&sql, values![&c.handset, read, &c.address, c.account_id]).await?;
        row.map_or(Ok(0), |r| r.count("n"))
    }

    async fn newest_inbound(&self, c: &Conversation) -> Result<Option<MessageId>> {
        let sql = "SELECT id FROM messages WHERE from_addr = ? AND direction = 'inbound' AND to_addr = ? \
                   AND account_id = ? ORDER BY id DESC LIMIT 1";
        let row = self.query_one(sql, values![&c.handset, &c.address, c.account_id]).await?;
        row.map(|r| r.message_id("id")).transpose()
    }

    async fn mark_read(&self, c: &Conversation, message: MessageId) -> Result<()> {
        // Never back: a mark from an older view leaves a newer one.
        self.execute(
            "UPDATE conversations SET read_through = ? WHERE id = ? AND account_id = ? AND read_through < ?",
            values![message, &c.id, c.account_id, message],
        )
        .await?;
        Ok(())
    }

    async fn forget_conversations(&self, account: AccountId, handset: &str) -> Result<u64> {
        self.execute("DELETE FROM conversations WHERE account_id = ? AND handset = ?", values![account, handset]).await
    }

    async fn purge_conversations(&self, account: AccountId, before: Timestamp) -> Result<u64> {
        self.execute(
            "DELETE FROM conversations WHERE account_id = ? AND last_activity_at < ?",
            values![account, before],
        )
        .await
    }
}
