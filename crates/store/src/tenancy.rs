//! Tenancy and keys: accounts, their API keys, and the routes an account may use. Cold-path SQL, written once
//! for both databases ([`Database`]).

use async_trait::async_trait;
use smsgate_core::senders::SenderPolicy;
use smsgate_core::{AccountId, Timestamp};

use crate::Result;
use crate::schema::{corrupt, routes_json, routes_of};
use crate::sql::{Database, Row, values};

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    pub name: String,
    /// The admin account manages accounts and keys.
    pub is_admin: bool,
    pub created_at: Timestamp,
    /// The routes the account may use, by name; `None`: all.
    pub routes: Option<Vec<String>>,
    /// Whether it may send from senders it does not own.
    pub sender_policy: SenderPolicy,
}

/// An API key's record; the key itself is never stored, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub account_id: AccountId,
    pub prefix: String,
    pub created_at: Timestamp,
}

/// Accounts and their keys.
#[async_trait]
pub trait TenancyStore: Send + Sync {
    /// Creates an account. The admin account may send from any sender; others only from their own until the
    /// operator says otherwise.
    async fn create_account(&self, name: &str, is_admin: bool, now: Timestamp) -> Result<Account>;

    /// The account with this id.
    async fn account(&self, id: AccountId) -> Result<Option<Account>>;

    /// The admin account, if one was created.
    async fn admin_account(&self) -> Result<Option<Account>>;

    /// Stores a key's hash for an account.
    async fn create_api_key(&self, account: AccountId, key_hash: &str, prefix: &str, now: Timestamp) -> Result<ApiKey>;

    /// How many unrevoked keys an account has.
    async fn key_count(&self, account: AccountId) -> Result<i64>;

    /// The account whose unrevoked key has this hash.
    async fn account_by_key_hash(&self, key_hash: &str) -> Result<Option<Account>>;

    /// The accounts limited to named routes, with their routes.
    async fn route_limits(&self) -> Result<Vec<(AccountId, Vec<String>)>>;

    /// Limits an account to the named routes (`None`: all); false if there is no such account.
    async fn set_account_routes(&self, account: AccountId, routes: Option<&[String]>) -> Result<bool>;
}

const ACCOUNT_COLUMNS: &str = "a.id, a.name, a.is_admin, a.created_at, a.routes, a.sender_policy";

fn account_of(r: &Row) -> Result<Account> {
    Ok(Account {
        id: r.account_id("id")?,
        name: r.get("name")?,
        is_admin: r.get::<i64>("is_admin")? != 0,
        created_at: r.timestamp("created_at")?,
        routes: routes_of(r.get("routes")?)?,
        sender_policy: {
            let p: String = r.get("sender_policy")?;
            SenderPolicy::parse(&p).ok_or_else(|| corrupt(format!("sender_policy {p:?}")))?
        },
    })
}

#[async_trait]
impl<D: Database> TenancyStore for D {
    async fn create_account(&self, name: &str, is_admin: bool, now: Timestamp) -> Result<Account> {
        let sender_policy = if is_admin { SenderPolicy::Any } else { SenderPolicy::Owned };
        let account = Account {
            id: AccountId::generate(),
            name: name.to_string(),
            is_admin,
            created_at: now,
            routes: None,
            sender_policy,
        };
        self.execute(
            "INSERT INTO accounts (id, name, is_admin, created_at, sender_policy) VALUES (?, ?, ?, ?, ?)",
            values![account.id, name, is_admin, now, sender_policy.as_str()],
        )
        .await?;
        Ok(account)
    }

    async fn account(&self, id: AccountId) -> Result<Option<Account>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.id = ?");
        self.query_one(&sql, values![id]).await?.as_ref().map(account_of).transpose()
    }

    async fn admin_account(&self) -> Result<Option<Account>> {
        let sql =
            format!("SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.is_admin = 1 ORDER BY a.created_at LIMIT 1");
        self.query_one(&sql, Vec::new()).await?.as_ref().map(account_of).transpose()
    }

    async fn create_api_key(&self, account: AccountId, key_hash: &str, prefix: &str, now: Timestamp) -> Result<ApiKey> {
        let key = ApiKey {
            id: uuid::Uuid::now_v7().hyphenated().to_string(),
            account_id: account,
            prefix: prefix.to_string(),
            created_at: now,
        };
        self.execute(
            "INSERT INTO api_keys (id, account_id, key_hash, prefix, created_at) VALUES (?, ?, ?, ?, ?)",
            values![&key.id, account, key_hash, prefix, now],
        )
        .await?;
        Ok(key)
    }

    async fn key_count(&self, account: AccountId) -> Result<i64> {
        let sql = "SELECT COUNT(*) AS n FROM api_keys WHERE account_id = ? AND revoked_at IS NULL";
        match self.query_one(sql, values![account]).await? {
            Some(r) => r.get("n"),
            None => Ok(0),
        }
    }

    async fn account_by_key_hash(&self, key_hash: &str) -> Result<Option<Account>> {
        let sql = format!(
            "SELECT {ACCOUNT_COLUMNS} FROM api_keys k JOIN accounts a ON a.id = k.account_id \
             WHERE k.key_hash = ? AND k.revoked_at IS NULL"
        );
        self.query_one(&sql, values![key_hash]).await?.as_ref().map(account_of).transpose()
    }

    async fn route_limits(&self) -> Result<Vec<(AccountId, Vec<String>)>> {
        let rows = self.query("SELECT id, routes FROM accounts WHERE routes IS NOT NULL", Vec::new()).await?;
        rows.iter().map(|r| Ok((r.account_id("id")?, routes_of(r.get("routes")?)?.unwrap_or_default()))).collect()
    }

    async fn set_account_routes(&self, account: AccountId, routes: Option<&[String]>) -> Result<bool> {
        let n =
            self.execute("UPDATE accounts SET routes = ? WHERE id = ?", values![routes_json(routes), account]).await?;
        Ok(n == 1)
    }
}
