//! API keys: made, listed, revoked and scoped; checked on every request. A key is `sk_` and its id's first
//! characters (its public part, shown in lists), `_`, and 64 hex digits of randomness. Only a keyed hash of it is
//! stored — HMAC-SHA256 with the server's secret ([`Admin::key_secret`]) — so a copy of the database alone lets
//! nobody test guesses. Keys of earlier versions (stored as a plain SHA-256) are re-hashed the first time they
//! are used.

use std::sync::Arc;

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use smsgate_core::AccountId;
use smsgate_core::access::{Scope, Scopes};
use smsgate_store::{Account, ApiKey};

use crate::admin::Admin;
use crate::error::{Result, ServiceError};

/// The name the key from `SMSGATE_ADMIN_KEY` is stored under: a different one at the next start replaces it.
pub const ENV_KEY_NAME: &str = "SMSGATE_ADMIN_KEY";

/// How stale a key's `last_used_at` may be before a request writes it again.
const TOUCH_EVERY_MS: i64 = 60_000;

/// The most characters of a key's name.
pub const MAX_KEY_NAME: usize = 100;

/// A new API key: the key itself (shown once) and its record.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub key: String,
    pub record: ApiKey,
}

/// A key that checked out: its account and record.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub account: Account,
    pub key: ApiKey,
}

impl Authenticated {
    /// What the key may do.
    pub fn scopes(&self) -> Scopes {
        self.key.scopes_for(self.account.is_admin)
    }
}

/// What a new key is to be.
#[derive(Debug, Clone, Default)]
pub struct KeySpec {
    pub name: Option<String>,
    /// `None`: every scope the account's keys may have.
    pub scopes: Option<Scopes>,
}

/// The SHA-256 of a key, hex: how keys were stored before they were hashed with the server's secret.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A key of the earlier form and its plain hash (for tests and tools that write a key straight into a store).
pub fn generate_key() -> (String, String) {
    let key = format!("sk_{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let hash = hash_key(&key);
    (key, hash)
}

/// What of a key of the earlier form is safe to show: nothing of its secret part.
pub fn key_prefix(_key: &str) -> String {
    String::new()
}

/// 32 random bytes, for a process that was given no secret.
pub(crate) fn random_secret() -> Arc<[u8]> {
    let mut bytes = Vec::with_capacity(32);
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes.into()
}

impl Admin {
    /// The keyed hash of a key, hex: what is stored, and what a node's cache of keys is keyed by.
    pub fn key_hash(&self, key: &str) -> String {
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&self.key_secret).expect("HMAC takes keys of any length");
        mac.update(key.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The account and record of an unrevoked key; `None` for a key the store does not know.
    pub async fn authenticate(&self, key: &str) -> Result<Option<Authenticated>> {
        let now = self.now();
        let found = match self.store.api_key_by_hash(&self.key_hash(key)).await? {
            Some(found) => Some(found),
            None => {
                // A key of an earlier version: stored by its plain hash. Re-hashed now, so this happens once.
                let legacy = self.store.api_key_by_hash(&hash_key(key)).await?;
                if let Some((_, k)) = &legacy {
                    self.store.rehash_api_key(&k.id, &self.key_hash(key)).await?;
                }
                legacy
            }
        };
        let Some((account, mut key)) = found else { return Ok(None) };
        if key.last_used_at.is_none_or(|t| now.0 - t.0 >= TOUCH_EVERY_MS) {
            self.store.touch_api_key(&key.id, now).await?;
            key.last_used_at = Some(now);
        }
        Ok(Some(Authenticated { account, key }))
    }

    /// Whether `caller` (with `scopes`) may manage `account`'s keys: the operator any account's, an account its
    /// own with the `manage` scope.
    fn may_manage_keys(caller: &Account, scopes: Scopes, account: AccountId) -> Result<()> {
        if caller.is_admin && scopes.contains(Scope::Admin) {
            return Ok(());
        }
        if caller.id == account && scopes.contains(Scope::Manage) {
            return Ok(());
        }
        if caller.id == account {
            return Err(ServiceError::forbidden("insufficient_scope", "managing keys needs the manage scope"));
        }
        Err(ServiceError::not_found("not_found", "no such account"))
    }

    /// A new key for an account, shown once. Its scopes are at most the caller's own and those the account's keys
    /// may have (`admin` only for the admin account).
    pub async fn create_key(
        &self,
        caller: &Account,
        scopes: Scopes,
        account: AccountId,
        spec: KeySpec,
    ) -> Result<NewKey> {
        Self::may_manage_keys(caller, scopes, account)?;
        let owner = self.account(account).await?;
        if let Some(name) = &spec.name
            && (name.trim().is_empty() || name.chars().count() > MAX_KEY_NAME)
        {
            return Err(ServiceError::invalid("invalid_name", format!("name must be 1 to {MAX_KEY_NAME} characters")));
        }
        if let Some(wanted) = spec.scopes {
            if wanted.is_empty() {
                return Err(ServiceError::invalid(
                    "invalid_scopes",
                    "scopes needs one or more of send, read, manage, admin",
                ));
            }
            if !Scopes::all_for(owner.is_admin).covers(wanted) {
                return Err(ServiceError::invalid(
                    "invalid_scopes",
                    "only keys of the admin account may have the admin scope",
                ));
            }
            if !scopes.covers(wanted) {
                return Err(ServiceError::forbidden(
                    "insufficient_scope",
                    "a key cannot make a key with scopes it does not have",
                ));
            }
        }
        self.add_key(account, spec).await
    }

    /// A new key for an account known to exist.
    pub(crate) async fn add_key(&self, account: AccountId, spec: KeySpec) -> Result<NewKey> {
        let id = uuid::Uuid::now_v7();
        // The public part: the id's last characters (its first are the time), which tell keys apart in a list.
        let public = format!("sk_{}", &id.simple().to_string()[24..]);
        let key = format!("{public}_{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let record = ApiKey {
            id: id.hyphenated().to_string(),
            account_id: account,
            prefix: public,
            name: spec.name.map(|n| n.trim().to_string()),
            scopes: spec.scopes,
            created_at: self.now(),
            last_used_at: None,
            revoked_at: None,
        };
        self.store.insert_api_key(&record, &self.key_hash(&key)).await?;
        Ok(NewKey { key, record })
    }

    /// An account's keys, revoked ones too (never the keys themselves).
    pub async fn keys(&self, caller: &Account, scopes: Scopes, account: AccountId) -> Result<Vec<ApiKey>> {
        Self::may_manage_keys(caller, scopes, account)?;
        self.account(account).await?;
        Ok(self.store.api_keys(account).await?)
    }

    /// Revokes an account's key: refused at once on this node, within seconds on the others.
    pub async fn revoke_key(
        &self,
        caller: &Account,
        scopes: Scopes,
        account: AccountId,
        key_id: &str,
    ) -> Result<ApiKey> {
        Self::may_manage_keys(caller, scopes, account)?;
        if !self.store.revoke_api_key(account, key_id, self.now()).await? {
            return Err(ServiceError::not_found("not_found", "no such key, or revoked already"));
        }
        let all = self.store.api_keys(account).await?;
        all.into_iter().find(|k| k.id == key_id).ok_or_else(|| ServiceError::not_found("not_found", "no such key"))
    }

    /// How many unrevoked keys an account has.
    pub async fn key_count(&self, account: AccountId) -> Result<i64> {
        Ok(self.store.key_count(account).await?)
    }

    /// Stores a key the operator chose (from the environment) for an account, named [`ENV_KEY_NAME`]; the key
    /// itself is not kept.
    pub async fn add_known_key(&self, account: AccountId, key: &str) -> Result<ApiKey> {
        let record = ApiKey {
            id: uuid::Uuid::now_v7().hyphenated().to_string(),
            account_id: account,
            prefix: String::new(),
            name: Some(ENV_KEY_NAME.into()),
            scopes: None,
            created_at: self.now(),
            last_used_at: None,
            revoked_at: None,
        };
        self.store.insert_api_key(&record, &self.key_hash(key)).await?;
        Ok(record)
    }

    /// A new key for an account, when it has none: the admin's first.
    pub async fn first_key(&self, account: AccountId) -> Result<Option<NewKey>> {
        if self.key_count(account).await? > 0 {
            return Ok(None);
        }
        Ok(Some(self.add_key(account, KeySpec { name: Some("first".into()), scopes: None }).await?))
    }

    /// Makes sure the admin account exists and has a key: `known_key` (the operator's choice) when given — a
    /// different one from the last start's replaces it —; else a new key the first time, returned to be shown
    /// once. A known key that is another account's is [`ServiceError::Conflict`] `key_taken`. Accounts made
    /// before every account had a webhook secret get theirs.
    pub async fn bootstrap(&self, known_key: Option<&str>) -> Result<Option<NewKey>> {
        let admin = self.admin_account().await?;
        // Secrets written before they were sealed are sealed now.
        let resealed = self.store.reseal_secrets().await?;
        if resealed > 0 {
            tracing::info!(rows = resealed, "secrets kept as given by an earlier version were sealed");
        }
        for account in self.store.accounts_without_webhook_secret().await? {
            self.store.ensure_webhook_secret(account, &crate::admin::new_secret(), self.now()).await?;
        }
        let Some(key) = known_key else { return self.first_key(admin.id).await };
        let current = match self.authenticate(key).await? {
            Some(a) if a.account.id != admin.id => {
                return Err(ServiceError::conflict("key_taken", "the admin key is already another account's"));
            }
            Some(a) => a.key,
            None => self.add_known_key(admin.id, key).await?,
        };
        for old in self.store.api_keys(admin.id).await? {
            let from_env = old.name.as_deref() == Some(ENV_KEY_NAME);
            if from_env && old.id != current.id && old.revoked_at.is_none() {
                self.store.revoke_api_key(admin.id, &old.id, self.now()).await?;
            }
        }
        Ok(None)
    }
}
