//! Tenancy and keys: accounts, their API keys, and the routes an account may use. Cold-path SQL, written once
//! for both databases ([`Database`]).

use async_trait::async_trait;
use smsgate_core::access::Scopes;
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
    /// Requests a second each of its API keys may make; `None`: no limit.
    pub requests_per_second: Option<u32>,
    /// Messages a second it may send, on every way in together; `None`: no limit.
    pub messages_per_second: Option<u32>,
}

/// An API key's record; the key itself is never stored, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub account_id: AccountId,
    /// The key's public part (`sk_` and its id's first characters), to recognise it in a list; nothing of its
    /// secret part. Empty for keys of earlier versions.
    pub prefix: String,
    pub name: Option<String>,
    /// What it may do; `None`: every scope its account's keys may have.
    pub scopes: Option<Scopes>,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

impl ApiKey {
    /// The scopes it has, for an account that is (or is not) the admin's.
    pub fn scopes_for(&self, is_admin: bool) -> Scopes {
        let all = Scopes::all_for(is_admin);
        self.scopes.map_or(all, |s| s.and(all))
    }
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

    /// Every account, oldest first.
    async fn accounts(&self) -> Result<Vec<Account>>;

    /// Stores a key's hash for an account: unnamed, with every scope.
    async fn create_api_key(&self, account: AccountId, key_hash: &str, prefix: &str, now: Timestamp) -> Result<ApiKey>;

    /// Stores a key's record and hash.
    async fn insert_api_key(&self, key: &ApiKey, key_hash: &str) -> Result<()>;

    /// The account and record of the unrevoked key with this hash.
    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<(Account, ApiKey)>>;

    /// An account's keys, revoked ones too, oldest first.
    async fn api_keys(&self, account: AccountId) -> Result<Vec<ApiKey>>;

    /// Revokes an account's key; false if it has no unrevoked key by this id.
    async fn revoke_api_key(&self, account: AccountId, key_id: &str, now: Timestamp) -> Result<bool>;

    /// Records that a key was used.
    async fn touch_api_key(&self, key_id: &str, now: Timestamp) -> Result<()>;

    /// Replaces a key's stored hash (a key of an earlier version, re-hashed when it is used).
    async fn rehash_api_key(&self, key_id: &str, key_hash: &str) -> Result<()>;

    /// How many unrevoked keys an account has.
    async fn key_count(&self, account: AccountId) -> Result<i64>;

    /// The account whose unrevoked key has this hash.
    async fn account_by_key_hash(&self, key_hash: &str) -> Result<Option<Account>>;

    /// The accounts limited to named routes, with their routes.
    async fn route_limits(&self) -> Result<Vec<(AccountId, Vec<String>)>>;

    /// Limits an account to the named routes (`None`: all); false if there is no such account.
    async fn set_account_routes(&self, account: AccountId, routes: Option<&[String]>) -> Result<bool>;

    /// Sets an account's rate limits (`None`: none); false if there is no such account.
    async fn set_account_rates(
        &self,
        account: AccountId,
        requests_per_second: Option<u32>,
        messages_per_second: Option<u32>,
    ) -> Result<bool>;
}

const KEY_COLUMNS: &str = "k.id AS key_id, k.account_id AS key_account, k.prefix, k.name AS key_name, k.scopes, k.created_at AS key_created, \
     k.last_used_at, k.revoked_at";

fn key_of(r: &Row) -> Result<ApiKey> {
    let scopes: Option<String> = r.get("scopes")?;
    let scopes = scopes
        .map(|s| Scopes::parse(&s.split(',').filter(|n| !n.is_empty()).collect::<Vec<_>>()))
        .transpose()
        .map_err(|e| corrupt(format!("api key scopes: {e}")))?;
    Ok(ApiKey {
        id: r.get("key_id")?,
        account_id: r.account_id("key_account")?,
        prefix: r.get("prefix")?,
        name: r.get("key_name")?,
        scopes,
        created_at: r.timestamp("key_created")?,
        last_used_at: r.get::<Option<i64>>("last_used_at")?.map(Timestamp),
        revoked_at: r.get::<Option<i64>>("revoked_at")?.map(Timestamp),
    })
}

pub(crate) const ACCOUNT_COLUMNS: &str =
    "a.id, a.name, a.is_admin, a.created_at, a.routes, a.sender_policy, a.requests_per_second, a.messages_per_second";

pub(crate) fn account_of(r: &Row) -> Result<Account> {
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
        requests_per_second: r.get::<Option<i64>>("requests_per_second")?.map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        messages_per_second: r.get::<Option<i64>>("messages_per_second")?.map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
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
            requests_per_second: None,
            messages_per_second: None,
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

    async fn accounts(&self) -> Result<Vec<Account>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts a ORDER BY a.created_at, a.id");
        self.query(&sql, Vec::new()).await?.iter().map(account_of).collect()
    }

    async fn create_api_key(&self, account: AccountId, key_hash: &str, prefix: &str, now: Timestamp) -> Result<ApiKey> {
        let key = ApiKey {
            id: uuid::Uuid::now_v7().hyphenated().to_string(),
            account_id: account,
            prefix: prefix.to_string(),
            name: None,
            scopes: None,
            created_at: now,
            last_used_at: None,
            revoked_at: None,
        };
        self.insert_api_key(&key, key_hash).await?;
        Ok(key)
    }

    async fn insert_api_key(&self, key: &ApiKey, key_hash: &str) -> Result<()> {
        let scopes = key.scopes.map(|s| s.names().join(","));
        self.execute(
            "INSERT INTO api_keys (id, account_id, key_hash, prefix, name, scopes, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
            values![&key.id, key.account_id, key_hash, &key.prefix, key.name.as_deref(), scopes, key.created_at],
        )
        .await?;
        Ok(())
    }

    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<(Account, ApiKey)>> {
        let sql = format!(
            "SELECT {ACCOUNT_COLUMNS}, {KEY_COLUMNS} FROM api_keys k JOIN accounts a ON a.id = k.account_id \
             WHERE k.key_hash = ? AND k.revoked_at IS NULL"
        );
        let row = self.query_one(&sql, values![key_hash]).await?;
        row.as_ref().map(|r| Ok((account_of(r)?, key_of(r)?))).transpose()
    }

    async fn api_keys(&self, account: AccountId) -> Result<Vec<ApiKey>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.account_id = ? ORDER BY k.created_at, k.id");
        self.query(&sql, values![account]).await?.iter().map(key_of).collect()
    }

    async fn revoke_api_key(&self, account: AccountId, key_id: &str, now: Timestamp) -> Result<bool> {
        let n = self.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE account_id = ? AND id = ? AND revoked_at IS NULL",
            values![now, account, key_id],
        );
        Ok(n.await? == 1)
    }

    async fn touch_api_key(&self, key_id: &str, now: Timestamp) -> Result<()> {
        self.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", values![now, key_id]).await?;
        Ok(())
    }

    async fn rehash_api_key(&self, key_id: &str, key_hash: &str) -> Result<()> {
        self.execute("UPDATE api_keys SET key_hash = ? WHERE id = ?", values![key_hash, key_id]).await?;
        Ok(())
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

    async fn set_account_rates(
        &self,
        account: AccountId,
        requests_per_second: Option<u32>,
        messages_per_second: Option<u32>,
    ) -> Result<bool> {
        let n = self.execute(
            "UPDATE accounts SET requests_per_second = ?, messages_per_second = ? WHERE id = ?",
            values![requests_per_second.map(i64::from), messages_per_second.map(i64::from), account],
        );
        Ok(n.await? == 1)
    }
}
