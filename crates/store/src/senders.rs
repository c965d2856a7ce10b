//! Senders: the numbers and sender IDs accounts own, and each account's sender policy. Cold-path SQL, written
//! once ([`Database`]); the services keep what an account owns in memory for a few seconds.

use async_trait::async_trait;
use smsgate_core::senders::{AddressKind, SenderPolicy, SenderStatus, address_key};
use smsgate_core::{AccountId, Timestamp};

use crate::Result;
use crate::schema::corrupt;
use crate::sql::{Database, Row, values};

/// A number or sender ID registered to an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    pub id: String,
    pub account_id: AccountId,
    pub kind: AddressKind,
    /// As it is sent from: E.164, a short code's digits, a sender ID.
    pub address: String,
    /// The connector its inbound messages arrive on; `None`: any.
    pub connector: Option<String>,
    pub status: SenderStatus,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Which senders a list holds.
#[derive(Debug, Clone, Default)]
pub struct SenderFilter {
    /// Only this account's.
    pub account: Option<AccountId>,
    /// Numbers (long and short codes) when true, sender IDs when false; `None`: both.
    pub numbers: Option<bool>,
}

/// Numbers, sender IDs and sender policies.
#[async_trait]
pub trait SenderStore: Send + Sync {
    /// Registers a sender; false when its address is registered already (to any account, in any status).
    async fn insert_sender(&self, sender: &Sender) -> Result<bool>;

    /// A sender by id.
    async fn sender(&self, id: &str) -> Result<Option<Sender>>;

    /// Senders, oldest first.
    async fn senders(&self, filter: &SenderFilter) -> Result<Vec<Sender>>;

    /// The sender registered with this address (compared by [`address_key`]), in any status.
    async fn sender_by_address(&self, address: &str) -> Result<Option<Sender>>;

    /// Sets a sender's status; false if there is no such sender.
    async fn set_sender_status(&self, id: &str, status: SenderStatus, now: Timestamp) -> Result<bool>;

    /// Removes a sender; false if there was none.
    async fn delete_sender(&self, id: &str) -> Result<bool>;

    /// Sets an account's sender policy; false if there is no such account.
    async fn set_sender_policy(&self, account: AccountId, policy: SenderPolicy) -> Result<bool>;
}

const COLUMNS: &str = "id, account_id, kind, address, connector, status, created_at, updated_at";

fn sender_of(r: &Row) -> Result<Sender> {
    let kind: String = r.get("kind")?;
    let status: String = r.get("status")?;
    Ok(Sender {
        id: r.get("id")?,
        account_id: r.account_id("account_id")?,
        kind: AddressKind::parse(&kind).ok_or_else(|| corrupt(format!("sender kind {kind:?}")))?,
        address: r.get("address")?,
        connector: r.get("connector")?,
        status: SenderStatus::parse(&status).ok_or_else(|| corrupt(format!("sender status {status:?}")))?,
        created_at: r.timestamp("created_at")?,
        updated_at: r.timestamp("updated_at")?,
    })
}

#[async_trait]
impl<D: Database> SenderStore for D {
    async fn insert_sender(&self, s: &Sender) -> Result<bool> {
        let n = self.execute(
            "INSERT INTO senders (id, account_id, kind, address, address_key, connector, status, created_at, \
             updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (address_key) DO NOTHING",
            values![
                &s.id,
                s.account_id,
                s.kind.as_str(),
                &s.address,
                address_key(&s.address),
                s.connector.as_deref(),
                s.status.as_str(),
                s.created_at,
                s.updated_at,
            ],
        );
        Ok(n.await? == 1)
    }

    async fn sender(&self, id: &str) -> Result<Option<Sender>> {
        let sql = format!("SELECT {COLUMNS} FROM senders WHERE id = ?");
        self.query_one(&sql, values![id]).await?.as_ref().map(sender_of).transpose()
    }

    async fn senders(&self, filter: &SenderFilter) -> Result<Vec<Sender>> {
        let mut sql = format!("SELECT {COLUMNS} FROM senders WHERE 1 = 1");
        let mut params = Vec::new();
        if let Some(account) = filter.account {
            sql.push_str(" AND account_id = ?");
            params.push(account.into());
        }
        match filter.numbers {
            Some(true) => sql.push_str(" AND kind <> 'alphanumeric'"),
            Some(false) => sql.push_str(" AND kind = 'alphanumeric'"),
            None => {}
        }
        sql.push_str(" ORDER BY created_at, id");
        self.query(&sql, params).await?.iter().map(sender_of).collect()
    }

    async fn sender_by_address(&self, address: &str) -> Result<Option<Sender>> {
        let sql = format!("SELECT {COLUMNS} FROM senders WHERE address_key = ?");
        self.query_one(&sql, values![address_key(address)]).await?.as_ref().map(sender_of).transpose()
    }

    async fn set_sender_status(&self, id: &str, status: SenderStatus, now: Timestamp) -> Result<bool> {
        let n = self
            .execute("UPDATE senders SET status = ?, updated_at = ? WHERE id = ?", values![status.as_str(), now, id]);
        Ok(n.await? == 1)
    }

    async fn delete_sender(&self, id: &str) -> Result<bool> {
        Ok(self.execute("DELETE FROM senders WHERE id = ?", values![id]).await? == 1)
    }

    async fn set_sender_policy(&self, account: AccountId, policy: SenderPolicy) -> Result<bool> {
        let n = self.execute("UPDATE accounts SET sender_policy = ? WHERE id = ?", values![policy.as_str(), account]);
        Ok(n.await? == 1)
    }
}
